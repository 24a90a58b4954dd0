//! A process's memory areas (Linux's VMAs): sorted, non-overlapping page ranges with their protection
//! (`PROT_*`), private or shared, and their backing (anonymous, or a file from an offset). Pure
//! bookkeeping, tested on the host: the kernel changes the page tables for the ranges these calls
//! report (`mm::paging`), this module only says which addresses are what.
//!
//! As Linux does, neighbouring areas that agree in everything (protection, sharing, and anonymous or
//! the same file at contiguous offsets) are merged after every change, so `mprotect` of a middle page
//! and back leaves one area, and `/proc/PID/maps` shows what Linux shows.

extern crate alloc;
use crate::ext2::Inode;
use alloc::collections::{btree_map, BTreeMap};
use alloc::rc::Rc;
use core::cell::Cell;

pub const PROT_READ: u32 = 1;
pub const PROT_WRITE: u32 = 2;
pub const PROT_EXEC: u32 = 4;
/// Linux's PROT_GROWSDOWN / PROT_GROWSUP: accepted by mprotect (they extend the range to the area's
/// edge on Linux; here areas do not grow, so they change nothing).
pub const PROT_GROWSDOWN: u32 = 0x0100_0000;
pub const PROT_GROWSUP: u32 = 0x0200_0000;

const PAGE: u64 = 4096;
/// Lowest address `find_gap` hands out (Linux's default vm.mmap_min_addr).
pub const MMAP_MIN_ADDR: u64 = 0x10000;

/// What backs an area's pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    /// Zero-filled on first touch.
    Anonymous,
    /// A file's bytes from `offset` (the file offset of the area's start).
    File {
        /// Device number (major << 8 | minor), for /proc/PID/maps.
        dev: u32,
        /// The file (its number and where its blocks are).
        inode: Rc<Inode>,
        offset: u64,
        path: Rc<[u8]>,
        /// The file was open for writing: a shared mapping of it may be (or become) writable.
        may_write: bool,
        /// Keeps the file alive while it is mapped.
        hold: FileHold,
    },
}

/// What keeps a mapped file alive (Linux's `vma->vm_file`): the kernel's open file, opaque here.
/// The pieces of a split area and a forked child's copy share it; the file is let go (and an
/// unlinked one freed) when the last of them goes: munmap, exec or exit. It is not part of what an
/// area maps, so it never makes two areas compare unequal.
#[derive(Clone, Default)]
pub struct FileHold(pub Option<Rc<dyn core::any::Any>>);

impl PartialEq for FileHold {
    fn eq(&self, _: &FileHold) -> bool {
        true
    }
}

impl Eq for FileHold {}

impl core::fmt::Debug for FileHold {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(if self.0.is_some() {
            "FileHold"
        } else {
            "FileHold(none)"
        })
    }
}

/// One memory area `[start, end)`, page-aligned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// PROT_READ | PROT_WRITE | PROT_EXEC.
    pub prot: u32,
    /// MAP_SHARED (writes reach the backing and other mappings of it).
    pub shared: bool,
    pub backing: Backing,
}

impl Vma {
    /// A private anonymous area.
    pub fn anonymous(start: u64, end: u64, prot: u32) -> Vma {
        Vma {
            start,
            end,
            prot,
            shared: false,
            backing: Backing::Anonymous,
        }
    }

    pub fn readable(&self) -> bool {
        self.prot & PROT_READ != 0
    }

    /// A shared mapping of a file opened for writing: stores through it change the file (its
    /// pages may be written whatever the protection is now: mprotect can make them writable).
    pub fn writes_file(&self) -> bool {
        self.shared
            && matches!(
                self.backing,
                Backing::File {
                    may_write: true,
                    ..
                }
            )
    }

    pub fn writable(&self) -> bool {
        self.prot & PROT_WRITE != 0
    }

    pub fn executable(&self) -> bool {
        self.prot & PROT_EXEC != 0
    }

    /// The file offset of the area's start (0 for anonymous memory).
    pub fn offset(&self) -> u64 {
        match &self.backing {
            Backing::Anonymous => 0,
            Backing::File { offset, .. } => *offset,
        }
    }

    /// Whether `next` continues this area so that the two can be one.
    fn continues_into(&self, next: &Vma) -> bool {
        if self.end != next.start || self.prot != next.prot || self.shared != next.shared {
            return false;
        }
        match (&self.backing, &next.backing) {
            (Backing::Anonymous, Backing::Anonymous) => true,
            (
                Backing::File {
                    dev, inode, offset, ..
                },
                Backing::File {
                    dev: d2,
                    inode: i2,
                    offset: o2,
                    ..
                },
            ) => dev == d2 && inode.ino == i2.ino && offset + (self.end - self.start) == *o2,
            _ => false,
        }
    }

    /// Cuts the area at `at` (inside it): `self` keeps `[start, at)`, the result is `[at, end)`.
    fn split_off(&mut self, at: u64) -> Vma {
        let mut upper = self.clone();
        upper.start = at;
        if let Backing::File { offset, .. } = &mut upper.backing {
            *offset += at - self.start;
        }
        self.end = at;
        upper
    }
}

/// Why an `mprotect` stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unmapped {
    /// The range `[start, done)` was changed; `done` is not mapped (Linux's ENOMEM).
    pub done: u64,
}

/// Linux's default vm.max_map_count. As Linux checks it: an mmap or brk that adds an area fails
/// with ENOMEM once the process has more than this many (do_mmap's `map_count > max`, so the count
/// can reach one more), a split (munmap of a hole inside an area, mprotect of part of one) once it
/// has this many (split_vma's `map_count >= max`).
pub const MAX_MAP_COUNT: usize = 65530;

/// How a change grows a process's area count, for Linux's max_map_count checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Growth {
    /// Adds an area (mmap, brk): refused when the process has more than [`MAX_MAP_COUNT`]
    /// already (so an mmap can reach one more); `hole`: it first unmaps a hole inside one area
    /// (MAP_FIXED), checked as munmap checks it.
    Add { hole: bool },
    /// Splits areas, ending with up to this many more (munmap cutting a hole: 1; mprotect: one
    /// per split): refused when that would pass [`MAX_MAP_COUNT`]. A change that adds none is
    /// never refused, so a process above the limit can always unmap.
    Split(usize),
}

/// How far a growing stack stays from the area below it (Linux's stack_guard_gap: 256 pages).
pub const STACK_GUARD_GAP: u64 = 256 * PAGE;

/// Where the last top-down search for a gap ended (Linux 2.6's `mm->free_area_cache` and
/// `cached_hole_size`), so that the next one need not walk every area from the top again.
///
/// Invariant: below `top`, every free range lying above `addr` is at most `hole` bytes long. So a
/// request for more than `hole` bytes cannot fit above `addr`, and its search starts at the area
/// just above `addr` (the gap under that area may reach above `addr`: it is looked at whole). A
/// request that may fit above (at most `hole` bytes) searches from `top`. Adding areas only
/// shrinks free ranges; an unmap raises `addr` to the end of what it freed, so the ranges above are
/// the ones that were there before. Unlike Linux 2.6's hint (which could hand out a lower address
/// than the highest gap), the answer is always the highest gap, the one a full walk finds.
#[derive(Clone, Copy, Debug, Default)]
struct GapHint {
    /// The `top` this hint was made for (another `top` starts afresh).
    top: u64,
    addr: u64,
    hole: u64,
}

/// A process's areas, sorted by address: a B-tree keyed by start address (`alloc`'s `BTreeMap`),
/// so that finding, adding, splitting and removing an area costs O(log n) however many there are
/// (a process may have [`MAX_MAP_COUNT`]; a sorted vector moved megabytes per insert there).
///
/// It counts its shared mappings of files opened for writing ([`Vma::writes_file`]) as areas come
/// and go (mmap, munmap, splits and merges of mprotect and munmap, mremap), and a fork's copy
/// carries the count: the kernel asks [`VmaList::writes_files`] before it walks page tables for
/// pages written through such mappings (munmap, msync, exit), which is most often none.
#[derive(Clone, Debug, Default)]
pub struct VmaList {
    map: BTreeMap<u64, Vma>,
    /// Interior-mutable: `find_gap` only reads the areas but moves the hint along.
    hint: Cell<GapHint>,
    /// How many of the areas are [`Vma::writes_file`].
    file_writers: usize,
}

/// Bytes of one B-tree node at most, as `alloc` lays them out: up to 11 keys and values, a parent
/// pointer, two `u16`s, and (internal nodes) 12 child pointers. An estimate from `alloc`'s private
/// layout (B = 6), used only to ask the heap for room before the tree grows.
const NODE_BYTES: usize =
    11 * (core::mem::size_of::<u64>() + core::mem::size_of::<Vma>()) + 16 + 12 * 8;

/// Most levels a B-tree of `n` entries can have: every node but the root holds at least 5
/// entries (6 children), so a tree of height h holds at least 2 * 6^(h-1) - 1.
fn max_height(n: usize) -> usize {
    let mut h = 1;
    let mut fewest = 2 * 6 - 1; // fewest entries in a tree of height h + 1
    while fewest <= n {
        h += 1;
        fewest = fewest.saturating_mul(6).saturating_add(5);
    }
    h
}

impl VmaList {
    pub fn new() -> VmaList {
        VmaList::default()
    }

    pub fn iter(&self) -> btree_map::Values<'_, u64, Vma> {
        self.map.values()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether any area is a shared mapping of a file opened for writing ([`Vma::writes_file`]).
    pub fn writes_files(&self) -> bool {
        self.file_writers > 0
    }

    /// Adds `vma` to the map at its start, counted.
    fn put(&mut self, vma: Vma) {
        self.file_writers += vma.writes_file() as usize;
        self.map.insert(vma.start, vma);
    }

    /// Removes the area starting at `start` from the map, counted.
    fn take(&mut self, start: u64) -> Option<Vma> {
        let v = self.map.remove(&start)?;
        self.file_writers -= v.writes_file() as usize;
        Some(v)
    }

    /// Heap bytes a copy of the list (fork) takes at most: its nodes, each at least 5 entries full
    /// but the root.
    pub fn clone_bytes(&self) -> usize {
        let leaves = self.len() / 5 + 1;
        // Internal nodes: at most a fifth of the nodes below them, per level.
        (leaves + leaves / 5 + max_height(self.len())) * NODE_BYTES
    }

    /// How an operation on `[start, end)` changes the number of areas at most: its edges that fall
    /// inside an area split it (`splits`, the entries the list needs while it works), and the count
    /// it may end with above today's (`grows`: an unmap inside one area leaves two pieces).
    pub fn splits(&self, start: u64, end: u64) -> (usize, usize) {
        // Most changes start at an area's start: one exact lookup finds it.
        let first = self.map.get(&start).or_else(|| self.find(start));
        let one = first.is_some_and(|v| v.start < start && end < v.end);
        let splits_start = first.is_some_and(|v| v.start < start);
        // `end` inside the area holding `start`, or inside another one (one more lookup).
        let splits_end =
            first.is_some_and(|v| end < v.end) || self.find(end).is_some_and(|v| v.start < end);
        (
            usize::from(splits_start) + usize::from(splits_end),
            usize::from(one),
        )
    }

    /// Makes room for `entries` more areas in the list, and checks that the process may grow as
    /// `growth` says (Linux's max_map_count checks, see [`Growth`]); false if not, or if the tree's
    /// new nodes might need more memory than `room(bytes)` grants (the kernel's heap: the caller
    /// fails with ENOMEM instead of the kernel dying on an allocation failure). A B-tree cannot
    /// reserve ahead: each insert may split a node on every level and add a root, so that much is
    /// asked for per entry.
    pub fn make_room(
        &mut self,
        entries: usize,
        growth: Growth,
        room: impl FnOnce(usize) -> bool,
    ) -> bool {
        let n = self.len();
        let within = match growth {
            Growth::Add { hole } => n <= MAX_MAP_COUNT && !(hole && n >= MAX_MAP_COUNT),
            Growth::Split(0) => true,
            Growth::Split(more) => n + more <= MAX_MAP_COUNT,
        };
        within && (entries == 0 || room(entries * (max_height(n + entries) + 1) * NODE_BYTES))
    }

    /// The area with the highest start at or below `addr`, with its start.
    fn at_or_below(&self, addr: u64) -> Option<&Vma> {
        self.map.range(..=addr).next_back().map(|(_, v)| v)
    }

    /// The area containing `addr`.
    pub fn find(&self, addr: u64) -> Option<&Vma> {
        self.at_or_below(addr).filter(|v| addr < v.end)
    }

    /// The first area that ends above `addr`: the one containing it, else the next one up.
    fn first_ending_above(&self, addr: u64) -> Option<&Vma> {
        self.find(addr).or_else(|| {
            addr.checked_add(1)
                .and_then(|a| self.map.range(a..).next().map(|(_, v)| v))
        })
    }

    /// Whether no area overlaps `[start, end)`.
    pub fn is_free(&self, start: u64, end: u64) -> bool {
        self.overlapping(start, end).next().is_none()
    }

    /// The areas overlapping `[start, end)`, in address order.
    pub fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = &Vma> {
        // From the area holding `start` (if any), every area that starts below `end`. Most ranges
        // start at an area's start: one exact lookup finds it.
        let from = if self.map.contains_key(&start) {
            start
        } else {
            self.find(start).map_or(start, |v| v.start)
        };
        self.map.range(from..end.max(from)).map(|(_, v)| v)
    }

    /// Whether areas cover all of `[start, end)` without a hole.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        let mut at = start;
        for v in self.overlapping(start, end) {
            if v.start > at {
                return false;
            }
            at = v.end;
        }
        at >= end
    }

    /// Total mapped bytes (VmSize).
    pub fn total(&self) -> u64 {
        self.iter().map(|v| v.end - v.start).sum()
    }

    /// Adds an area over a free range (the caller unmaps first), merging it with its neighbours.
    /// Empty areas are ignored.
    pub fn insert(&mut self, vma: Vma) {
        if vma.start >= vma.end {
            return;
        }
        debug_assert!(self.is_free(vma.start, vma.end));
        let (start, end) = (vma.start, vma.end);
        // Looked up once each (every lookup is a walk down the tree, emulated in the guest): the
        // area starting at `end` is taken in if the new one continues into it, and the new one
        // (so extended) is taken into the area ending at `start` if that continues into it.
        let next = self
            .map
            .get(&end)
            .is_some_and(|n| vma.continues_into(n))
            .then(|| self.take(end))
            .flatten();
        let new_end = next.map_or(end, |n| n.end);
        match self.map.range_mut(..start).next_back() {
            Some((_, prev)) if prev.continues_into(&vma) => prev.end = new_end,
            _ => {
                let mut vma = vma;
                vma.end = new_end;
                self.put(vma);
            }
        }
    }

    /// Merges the area starting at `at` into the one ending there, if the two can be one.
    fn merge_at(&mut self, at: u64) {
        let Some(next) = self.map.get(&at) else {
            return;
        };
        let Some((&prev_start, prev)) = self.map.range(..at).next_back() else {
            return;
        };
        if !prev.continues_into(next) {
            return;
        }
        if let Some(next) = self.take(at) {
            if let Some(prev) = self.map.get_mut(&prev_start) {
                prev.end = next.end;
            }
        }
    }

    /// Splits areas so that `at` is a boundary.
    fn split_at(&mut self, at: u64) {
        let Some((_, v)) = self.map.range_mut(..at).next_back() else {
            return;
        };
        if at < v.end {
            let upper = v.split_off(at);
            self.put(upper);
        }
    }

    /// Removes `[start, end)` from every area (munmap), splitting the ones that straddle an edge.
    /// Returns whether anything was mapped there.
    pub fn unmap(&mut self, start: u64, end: u64) -> bool {
        if start >= end {
            return false;
        }
        let mut any = false;
        match self.map.entry(start) {
            // The common case, one whole area: found and removed in one walk down the tree.
            btree_map::Entry::Occupied(e) if e.get().end == end => {
                self.file_writers -= e.remove().writes_file() as usize;
                any = true;
            }
            _ => {
                self.split_at(start);
                self.split_at(end);
                while let Some((&s, _)) = self.map.range(start..end).next() {
                    self.take(s);
                    any = true;
                }
            }
        }
        if any {
            // What is free above the hint now reaches at most `end` (see GapHint).
            let mut h = self.hint.get();
            h.addr = h.addr.max(end);
            self.hint.set(h);
        }
        any
    }

    /// mprotect: sets `prot` on `[start, end)`. As Linux, the areas from `start` on are changed up to
    /// the first hole; a hole (or `start` itself unmapped) is reported with how far it got.
    pub fn protect(&mut self, start: u64, end: u64, prot: u32) -> Result<(), Unmapped> {
        if start >= end {
            return Ok(());
        }
        // How far the areas cover `[start, end)` without a hole.
        let mut done = start;
        for v in self.overlapping(start, end) {
            if v.start > done {
                break;
            }
            done = v.end.min(end);
        }
        if done > start {
            self.split_at(start);
            self.split_at(done);
            for (_, v) in self.map.range_mut(start..done) {
                v.prot = prot;
            }
            // Merge at every boundary from `start` to `done`, the outer two included.
            let mut at = start;
            while let Some((&s, _)) = self.map.range(at..=done.max(at)).next() {
                self.merge_at(s);
                at = s + 1;
            }
        }
        if done < end {
            Err(Unmapped { done })
        } else {
            Ok(())
        }
    }

    /// Grows the stack down to cover `addr` (Linux's expand_stack for a VM_GROWSDOWN area): the
    /// stack is the run of anonymous areas reaching up to `top`; an address below its lowest area,
    /// at or above `top - limit` (RLIMIT_STACK) and at least [`STACK_GUARD_GAP`] above the next
    /// accessible area below gets the range from its page to that area, with the area's
    /// protection. Returns whether it grew.
    pub fn grow_down(&mut self, addr: u64, top: u64, limit: u64) -> bool {
        let page = addr & !(PAGE - 1);
        let Some(v) = self.first_ending_above(addr) else {
            return false;
        };
        let stack = v.start > addr
            && matches!(v.backing, Backing::Anonymous)
            && !v.shared
            && page >= top.saturating_sub(limit)
            && self.covers(v.start, top);
        let below = self.map.range(..v.start).next_back().map(|(_, b)| b);
        if !stack || below.is_some_and(|b| b.prot != 0 && page < b.end + STACK_GUARD_GAP) {
            return false;
        }
        let (end, prot) = (v.start, v.prot);
        self.insert(Vma::anonymous(page, end, prot));
        true
    }

    /// The highest `len`-byte free range ending at or below `top` (Linux's top-down allocation), and
    /// at or above [`MMAP_MIN_ADDR`].
    pub fn find_gap(&self, len: u64, top: u64) -> Option<u64> {
        self.find_gap_walk(len, top).0
    }

    /// [`find_gap`](Self::find_gap), and how many areas it looked at (for the tests: with the hint
    /// it stays small for repeated top-down mappings, where a walk from `top` grows with the count).
    fn find_gap_walk(&self, len: u64, top: u64) -> (Option<u64>, usize) {
        let Some(len) = len.checked_add(PAGE - 1).map(|l| l & !(PAGE - 1)) else {
            return (None, 0);
        };
        let h = self.hint.get();
        let (from, mut hole) = if h.top == top && len > h.hole {
            (h.addr, h.hole)
        } else {
            (u64::MAX, 0)
        };
        // The top of the first gap to look at: the start of the area just above `from`.
        let mut hi = self
            .map
            .range(from..)
            .next()
            .map_or(u64::MAX, |(&s, _)| s)
            .min(top);
        let mut visited = 0;
        let mut found = None;
        for v in self.map.range(..hi).rev() {
            let v = v.1;
            visited += 1;
            let gap = hi.saturating_sub(v.end.max(MMAP_MIN_ADDR));
            if gap >= len {
                found = Some(hi - len);
                break;
            }
            hole = hole.max(gap);
            hi = v.start;
        }
        if found.is_none() {
            let gap = hi.saturating_sub(MMAP_MIN_ADDR);
            if gap >= len {
                found = Some(hi - len);
            } else {
                hole = hole.max(gap);
            }
        }
        // Everything free above the new hint is at most `hole` long: the gaps walked past, and
        // those above `from` (by the invariant). Found: the hint is the top of the gap used; not
        // found: every gap was too small, the hint is 0.
        self.hint.set(GapHint {
            top,
            addr: found.map_or(0, |a| a + len),
            hole,
        });
        (found, visited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stack_grows_down_to_its_limit_and_not_into_other_areas() {
        const TOP: u64 = 0x7fff_0000_0000;
        let mut l = VmaList::new();
        l.insert(Vma::anonymous(TOP - 0x21000, TOP, 3));
        l.insert(Vma::anonymous(TOP - 0x100_0000, TOP - 0x0f0_0000, 3));
        // A touch well below the stack's start (a big frame) covers the whole range, one area.
        assert!(l.grow_down(TOP - 0x40_0123, TOP, 8 << 20));
        assert_eq!(
            l.find(TOP - 0x40_0123).map(|v| (v.start, v.end)),
            Some((TOP - 0x40_1000, TOP))
        );
        assert_eq!(l.len(), 2);
        // Below the limit, into the other area, or inside an area: no.
        assert!(!l.grow_down(TOP - (8 << 20) - 1, TOP, 8 << 20));
        assert!(!l.grow_down(TOP - 0x0f0_0000 - 8, TOP, 0x200_0000));
        assert!(!l.grow_down(TOP - 0x10, TOP, 8 << 20));
        // Within the guard gap above the other area: no; just past it: grows.
        assert!(!l.grow_down(TOP - 0x0f0_0000, TOP, 0x200_0000));
        assert!(!l.grow_down(TOP - 0x0e0_0001, TOP, 0x200_0000));
        assert!(l.grow_down(TOP - 0x0e0_0000, TOP, 0x200_0000));
        assert_eq!(l.len(), 2);
        // Not a stack: the area above does not reach `top`.
        let mut m = VmaList::new();
        m.insert(Vma::anonymous(0x10000, 0x20000, 3));
        assert!(!m.grow_down(0x8000, TOP, 8 << 20));
    }

    const RW: u32 = PROT_READ | PROT_WRITE;

    fn ranges(l: &VmaList) -> Vec<(u64, u64, u32)> {
        l.iter().map(|v| (v.start, v.end, v.prot)).collect()
    }

    fn file(start: u64, end: u64, offset: u64) -> Vma {
        Vma {
            start,
            end,
            prot: PROT_READ,
            shared: false,
            backing: Backing::File {
                dev: 0xfe00,
                inode: Rc::new(Inode {
                    ino: 12,
                    ..Inode::default()
                }),
                offset,
                path: Rc::from(&b"/bin/x"[..]),
                may_write: false,
                hold: FileHold::default(),
            },
        }
    }

    #[test]
    fn insert_merges_neighbours_and_find_uses_half_open_ranges() {
        let mut l = VmaList::new();
        l.insert(Vma::anonymous(0x3000, 0x4000, RW));
        l.insert(Vma::anonymous(0x1000, 0x2000, RW));
        l.insert(Vma::anonymous(0x2000, 0x3000, RW));
        assert_eq!(ranges(&l), [(0x1000, 0x4000, RW)]);
        l.insert(Vma::anonymous(0x4000, 0x5000, PROT_READ));
        assert_eq!(l.len(), 2);
        assert_eq!(l.find(0x3fff).unwrap().prot, RW);
        assert_eq!(l.find(0x4000).unwrap().prot, PROT_READ);
        assert!(l.find(0x5000).is_none());
        assert!(l.find(0xfff).is_none());
        l.insert(Vma::anonymous(0x6000, 0x6000, RW));
        assert_eq!(l.len(), 2, "empty areas are not kept");
    }

    #[test]
    fn protect_splits_and_merges_back() {
        let mut l = VmaList::new();
        l.insert(Vma::anonymous(0x10000, 0x14000, 0));
        l.protect(0x11000, 0x13000, RW).unwrap();
        assert_eq!(
            ranges(&l),
            [
                (0x10000, 0x11000, 0),
                (0x11000, 0x13000, RW),
                (0x13000, 0x14000, 0)
            ]
        );
        l.protect(0x11000, 0x12000, 0).unwrap();
        assert_eq!(l.len(), 3);
        l.protect(0x12000, 0x13000, 0).unwrap();
        assert_eq!(ranges(&l), [(0x10000, 0x14000, 0)]);
    }

    #[test]
    fn protect_stops_at_the_first_hole_as_linux() {
        let mut l = VmaList::new();
        l.insert(Vma::anonymous(0x10000, 0x12000, RW));
        l.insert(Vma::anonymous(0x13000, 0x14000, RW));
        assert_eq!(
            l.protect(0x11000, 0x14000, PROT_READ),
            Err(Unmapped { done: 0x12000 })
        );
        assert_eq!(
            ranges(&l),
            [
                (0x10000, 0x11000, RW),
                (0x11000, 0x12000, PROT_READ),
                (0x13000, 0x14000, RW)
            ]
        );
        // Start unmapped: nothing changes.
        assert_eq!(
            l.protect(0x12000, 0x14000, 0),
            Err(Unmapped { done: 0x12000 })
        );
        assert_eq!(l.find(0x13000).unwrap().prot, RW);
    }

    #[test]
    fn the_count_of_shared_writable_file_areas_follows_splits_merges_and_unmaps() {
        fn shared_rw(start: u64, end: u64, offset: u64) -> Vma {
            let mut v = file(start, end, offset);
            v.shared = true;
            if let Backing::File { may_write, .. } = &mut v.backing {
                *may_write = true;
            }
            v
        }
        fn counted(l: &VmaList) -> usize {
            l.iter().filter(|v| v.writes_file()).count()
        }
        let mut l = VmaList::new();
        l.insert(Vma::anonymous(0x100000, 0x104000, PROT_READ));
        l.insert(file(0x200000, 0x204000, 0));
        assert!(!l.writes_files());
        l.insert(shared_rw(0x400000, 0x408000, 0));
        assert!(l.writes_files());
        // mprotect of the middle: three areas, then merged back into one.
        l.protect(0x402000, 0x404000, PROT_READ | PROT_WRITE)
            .unwrap();
        assert_eq!((l.file_writers, counted(&l)), (3, 3));
        l.protect(0x402000, 0x404000, PROT_READ).unwrap();
        assert_eq!((l.file_writers, counted(&l)), (1, 1));
        // munmap of a hole inside it, then the hole mapped again (merges), then pieces unmapped.
        l.unmap(0x401000, 0x402000);
        assert_eq!((l.file_writers, counted(&l)), (2, 2));
        l.insert(shared_rw(0x401000, 0x402000, 0x1000));
        assert_eq!((l.file_writers, counted(&l)), (1, 1));
        let copy = l.clone();
        l.unmap(0x400000, 0x404000);
        assert_eq!((l.file_writers, counted(&l)), (1, 1));
        l.unmap(0x404000, 0x408000);
        assert!(!l.writes_files());
        assert_eq!(counted(&l), 0);
        // A fork's copy keeps its own count.
        assert!(copy.writes_files());
        assert_eq!(copy.file_writers, counted(&copy));
    }

    #[test]
    fn unmap_splits_areas_and_keeps_file_offsets() {
        let mut l = VmaList::new();
        l.insert(file(0x400000, 0x404000, 0));
        assert!(l.unmap(0x401000, 0x402000));
        assert!(!l.unmap(0x401000, 0x402000));
        let v: Vec<_> = l.iter().map(|v| (v.start, v.end, v.offset())).collect();
        assert_eq!(v, [(0x400000, 0x401000, 0), (0x402000, 0x404000, 0x2000)]);
        // The same file at contiguous offsets merges again; a different offset does not.
        l.insert(file(0x401000, 0x402000, 0x1000));
        assert_eq!(l.len(), 1);
        l.unmap(0x401000, 0x402000);
        l.insert(file(0x401000, 0x402000, 0x5000));
        assert_eq!(l.len(), 3);
        assert!(l.unmap(0, u64::MAX));
        assert!(l.is_empty());
    }

    #[test]
    fn covers_and_overlapping_see_holes() {
        let mut l = VmaList::new();
        l.insert(Vma::anonymous(0x10000, 0x12000, RW));
        l.insert(Vma::anonymous(0x12000, 0x13000, PROT_READ));
        l.insert(Vma::anonymous(0x14000, 0x15000, RW));
        assert!(l.covers(0x10000, 0x13000));
        assert!(l.covers(0x11000, 0x12800));
        assert!(!l.covers(0x11000, 0x14800));
        assert!(!l.covers(0xf000, 0x11000));
        assert!(l.covers(0x14000, 0x15000));
        assert!(!l.covers(0x14000, 0x15001));
        let o: Vec<_> = l.overlapping(0x11000, 0x14001).map(|v| v.start).collect();
        assert_eq!(o, [0x10000, 0x12000, 0x14000]);
        assert_eq!(l.overlapping(0x13000, 0x14000).count(), 0);
    }

    #[test]
    fn find_gap_is_top_down_and_reuses_holes() {
        let mut l = VmaList::new();
        let top = 0x7f00_0000_0000;
        let a = l.find_gap(0x3000, top).unwrap();
        assert_eq!(a, top - 0x3000);
        l.insert(Vma::anonymous(a, a + 0x3000, RW));
        let b = l.find_gap(0x1000, top).unwrap();
        assert_eq!(b, a - 0x1000);
        l.insert(Vma::anonymous(b, b + 0x1000, PROT_READ));
        l.unmap(a + 0x1000, a + 0x2000);
        assert_eq!(l.find_gap(0x1000, top), Some(a + 0x1000));
        assert_eq!(l.find_gap(0x2000, top), Some(b - 0x2000));
        assert!(l.is_free(a + 0x1000, a + 0x2000));
        assert!(!l.is_free(a, a + 0x1001));
        assert_eq!(l.find_gap(top, top), None);
        assert_eq!(l.find_gap(u64::MAX, top), None);
        // Areas above `top` do not matter.
        let mut h = VmaList::new();
        h.insert(Vma::anonymous(top + 0x1000, top + 0x2000, RW));
        assert_eq!(h.find_gap(0x1000, top), Some(top - 0x1000));
        assert_eq!(h.total(), 0x1000);
    }

    #[test]
    fn splits_and_room_follow_max_map_count_and_the_heap() {
        let mut l = VmaList::new();
        l.insert(Vma::anonymous(0x1000, 0x5000, RW));
        // Inside one area: two splits, one more area at the end.
        assert_eq!(l.splits(0x2000, 0x3000), (2, 1));
        // From its start, or over its end: one split, no more areas.
        assert_eq!(l.splits(0x1000, 0x3000), (1, 0));
        assert_eq!(l.splits(0x3000, 0x9000), (1, 0));
        assert_eq!(l.splits(0x1000, 0x5000), (0, 0));
        // The heap refuses: no room. It is asked for at least a node per entry.
        assert!(!l.make_room(1, Growth::Split(1), |_| false));
        assert!(
            l.make_room(0, Growth::Split(0), |_| false),
            "nothing added, nothing asked"
        );
        let mut asked = 0;
        assert!(l.make_room(2, Growth::Split(1), |bytes| {
            asked = bytes;
            true
        }));
        assert!(asked >= 2 * NODE_BYTES);
    }

    /// The pattern of `memtest kobjects maps`: one-page mappings of alternating protection, each
    /// placed by `find_gap` as the kernel's mmap does, until the count refuses one.
    fn map_until_full(l: &mut VmaList, top: u64) -> usize {
        let mut most_visited = 0;
        loop {
            // mmap: Linux's do_mmap refuses once the count is above max_map_count.
            if !l.make_room(1, Growth::Add { hole: false }, |_| true) {
                return most_visited;
            }
            let (at, visited) = l.find_gap_walk(PAGE, top);
            let at = at.unwrap();
            most_visited = most_visited.max(visited);
            let prot = if l.len().is_multiple_of(2) {
                PROT_READ
            } else {
                RW
            };
            l.insert(Vma::anonymous(at, at + PAGE, prot));
        }
    }

    #[test]
    fn max_map_count_areas_then_enomem_and_each_gap_search_looks_at_few() {
        const TOP: u64 = 0x7f00_0000_0000;
        let mut l = VmaList::new();
        // A stack above, as a process has.
        l.insert(Vma::anonymous(TOP + 0x10_0000, TOP + 0x20_0000, RW));
        let most_visited = map_until_full(&mut l, TOP);
        // As Linux (measured: 65531 areas in all on the host), the count reaches one more than
        // max_map_count by mmap.
        assert_eq!(l.len(), MAX_MAP_COUNT + 1);
        // Timing-free complexity: the hint means each search looked at the area above and the
        // one just made, not at every area from the top.
        assert!(most_visited <= 2, "{most_visited} areas looked at");
        // No change that adds an area or splits one is allowed now; one that adds none is: the
        // pages can be unmapped (the kernel once refused munmap here, so nothing could be freed).
        assert!(!l.make_room(1, Growth::Add { hole: false }, |_| true));
        assert!(!l.make_room(2, Growth::Split(1), |_| true));
        assert!(l.make_room(0, Growth::Split(0), |_| true));
        // One below the limit: an mmap may still add (to the limit + 1), a split may not pass it.
        let last = l.iter().next().unwrap().start;
        assert!(l.unmap(last, last + PAGE));
        assert_eq!(l.len(), MAX_MAP_COUNT);
        assert!(l.make_room(1, Growth::Add { hole: false }, |_| true));
        assert!(!l.make_room(1, Growth::Add { hole: true }, |_| true));
        assert!(!l.make_room(2, Growth::Split(1), |_| true));
        let last = l.iter().next().unwrap().start;
        assert!(l.unmap(last, last + PAGE));
        assert!(l.make_room(2, Growth::Split(1), |_| true));
        assert!(!l.make_room(2, Growth::Split(2), |_| true));
        // Unmapping a page and mapping again reuses that hole (the highest gap), found at once.
        let hole = l.iter().nth(1000).unwrap().start;
        assert!(l.unmap(hole, hole + PAGE));
        assert_eq!(l.find_gap(PAGE, TOP), Some(hole));
        // Everything unmapped in the order it was made: the list is empty, the top free again.
        let starts: Vec<u64> = l.iter().map(|v| v.start).collect();
        for s in starts.iter().rev() {
            l.unmap(*s, *s + PAGE);
        }
        assert_eq!(l.len(), 1);
        assert_eq!(l.find_gap(PAGE, TOP), Some(TOP - PAGE));
    }

    /// The highest gap by a plain walk over every area (what `find_gap` must always answer).
    fn highest_gap(l: &VmaList, len: u64, top: u64) -> Option<u64> {
        let len = len.checked_add(PAGE - 1)? & !(PAGE - 1);
        let mut hi = top;
        for v in l.iter().rev() {
            if v.start >= hi {
                continue;
            }
            if hi.saturating_sub(v.end.max(MMAP_MIN_ADDR)) >= len {
                return Some(hi - len);
            }
            hi = v.start;
        }
        (hi.saturating_sub(MMAP_MIN_ADDR) >= len).then(|| hi - len)
    }

    #[test]
    fn find_gap_with_its_hint_always_answers_the_highest_gap() {
        // Random mmaps of random sizes (placed by find_gap, or fixed), munmaps and mprotects in a
        // small address space: after each, find_gap for a few sizes equals a walk over every area.
        const TOP: u64 = 0x100_0000;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut l = VmaList::new();
        let mut found = 0;
        for step in 0..20_000 {
            let pages = 1 + rand(8) * rand(4);
            let len = pages * PAGE;
            match rand(10) {
                0..=4 => {
                    let want = highest_gap(&l, len, TOP);
                    assert_eq!(l.find_gap(len, TOP), want, "step {step}");
                    if let Some(at) = want {
                        found += 1;
                        let prot = rand(2) as u32 + 1;
                        l.insert(Vma::anonymous(at, at + len, prot));
                    }
                }
                5 => {
                    let at = MMAP_MIN_ADDR + rand((TOP - MMAP_MIN_ADDR) / PAGE) * PAGE;
                    let end = (at + len).min(TOP);
                    l.unmap(at, end);
                    l.insert(Vma::anonymous(at, end, RW));
                }
                6..=8 => {
                    let at = rand(TOP / PAGE) * PAGE;
                    l.unmap(at, at + len);
                }
                _ => {
                    let at = rand(TOP / PAGE) * PAGE;
                    let _ = l.protect(at, at + len, rand(3) as u32);
                }
            }
            // Areas stay sorted, apart and merged.
            let v: Vec<&Vma> = l.iter().collect();
            for w in v.windows(2) {
                assert!(
                    w[0].end <= w[1].start && !w[0].continues_into(w[1]),
                    "step {step}"
                );
            }
            for probe in [1, 2, 5, 16] {
                assert_eq!(
                    l.find_gap(probe * PAGE, TOP),
                    highest_gap(&l, probe * PAGE, TOP),
                    "step {step}, {probe} pages"
                );
            }
        }
        assert!(found > 1000, "{found}");
    }
}
