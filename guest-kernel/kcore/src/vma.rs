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
use alloc::rc::Rc;
use alloc::vec::Vec;

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

/// Most areas a process may have (Linux's default vm.max_map_count): an mmap, munmap or mprotect
/// that would need more fails with ENOMEM.
pub const MAX_MAP_COUNT: usize = 65530;

/// How far a growing stack stays from the area below it (Linux's stack_guard_gap: 256 pages).
pub const STACK_GUARD_GAP: u64 = 256 * PAGE;

/// A process's areas, sorted by address.
#[derive(Clone, Debug, Default)]
pub struct VmaList {
    v: Vec<Vma>,
}

impl VmaList {
    pub fn new() -> VmaList {
        VmaList { v: Vec::new() }
    }

    pub fn iter(&self) -> core::slice::Iter<'_, Vma> {
        self.v.iter()
    }

    pub fn len(&self) -> usize {
        self.v.len()
    }

    pub fn is_empty(&self) -> bool {
        self.v.is_empty()
    }

    /// How an operation on `[start, end)` changes the number of areas at most: its edges that fall
    /// inside an area split it (`splits`, the entries the list needs while it works), and the count
    /// it may end with above today's (`grows`: an unmap inside one area leaves two pieces).
    pub fn splits(&self, start: u64, end: u64) -> (usize, usize) {
        let inside = |at: u64| self.find(at).is_some_and(|v| v.start < at);
        let splits = usize::from(inside(start)) + usize::from(inside(end));
        let one = self
            .find(start)
            .is_some_and(|v| v.start < start && end < v.end);
        (splits, usize::from(one))
    }

    /// Makes room for `entries` more areas in the list, and checks that the process may end up with
    /// `grows` more (MAX_MAP_COUNT); false if not, or if a longer list would need more memory than
    /// `room(bytes)` grants (the kernel's heap: the caller fails with ENOMEM instead of the kernel
    /// dying on an allocation failure).
    pub fn make_room(
        &mut self,
        entries: usize,
        grows: usize,
        room: impl FnOnce(usize) -> bool,
    ) -> bool {
        if self.v.len() + grows > MAX_MAP_COUNT {
            return false;
        }
        let need = self.v.len() + entries;
        if need <= self.v.capacity() {
            return true;
        }
        let cap = need.max(self.v.capacity() * 2);
        room(cap * core::mem::size_of::<Vma>())
            && self.v.try_reserve_exact(cap - self.v.len()).is_ok()
    }

    /// Index of the first area that ends above `addr`.
    fn first_ending_above(&self, addr: u64) -> usize {
        self.v.partition_point(|v| v.end <= addr)
    }

    /// The area containing `addr`.
    pub fn find(&self, addr: u64) -> Option<&Vma> {
        let i = self.first_ending_above(addr);
        self.v.get(i).filter(|v| v.start <= addr)
    }

    /// Whether no area overlaps `[start, end)`.
    pub fn is_free(&self, start: u64, end: u64) -> bool {
        let i = self.first_ending_above(start);
        self.v.get(i).is_none_or(|v| v.start >= end)
    }

    /// The areas overlapping `[start, end)`, in address order.
    pub fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = &Vma> {
        let i = self.first_ending_above(start);
        self.v[i..].iter().take_while(move |v| v.start < end)
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
        self.v.iter().map(|v| v.end - v.start).sum()
    }

    /// Adds an area over a free range (the caller unmaps first), merging it with its neighbours.
    /// Empty areas are ignored.
    pub fn insert(&mut self, vma: Vma) {
        if vma.start >= vma.end {
            return;
        }
        debug_assert!(self.is_free(vma.start, vma.end));
        let i = self.first_ending_above(vma.start);
        self.v.insert(i, vma);
        self.merge_around(i, i + 1);
    }

    /// Splits areas so that `at` is a boundary.
    fn split_at(&mut self, at: u64) {
        let i = self.first_ending_above(at);
        if let Some(v) = self.v.get_mut(i) {
            if v.start < at {
                let upper = v.split_off(at);
                self.v.insert(i + 1, upper);
            }
        }
    }

    /// Merges mergeable neighbours among areas `lo - 1 ..= hi` (indices, clamped).
    fn merge_around(&mut self, lo: usize, hi: usize) {
        let mut i = lo.saturating_sub(1);
        let mut hi = hi.min(self.v.len().saturating_sub(1));
        while i < hi {
            if self.v[i].continues_into(&self.v[i + 1]) {
                let next = self.v.remove(i + 1);
                self.v[i].end = next.end;
                hi -= 1;
            } else {
                i += 1;
            }
        }
    }

    /// Removes `[start, end)` from every area (munmap), splitting the ones that straddle an edge.
    /// Returns whether anything was mapped there.
    pub fn unmap(&mut self, start: u64, end: u64) -> bool {
        if start >= end || self.is_free(start, end) {
            return false;
        }
        self.split_at(start);
        self.split_at(end);
        let lo = self.first_ending_above(start);
        let hi = self.v.partition_point(|v| v.start < end);
        self.v.drain(lo..hi);
        true
    }

    /// mprotect: sets `prot` on `[start, end)`. As Linux, the areas from `start` on are changed up to
    /// the first hole; a hole (or `start` itself unmapped) is reported with how far it got.
    pub fn protect(&mut self, start: u64, end: u64, prot: u32) -> Result<(), Unmapped> {
        if start >= end {
            return Ok(());
        }
        // How far the areas cover `[start, end)` without a hole.
        let mut done = start;
        let mut i = self.first_ending_above(start);
        while done < end {
            match self.v.get(i) {
                Some(v) if v.start <= done => {
                    done = v.end.min(end);
                    i += 1;
                }
                _ => break,
            }
        }
        if done > start {
            self.split_at(start);
            self.split_at(done);
            let lo = self.first_ending_above(start);
            let hi = self.v.partition_point(|v| v.start < done);
            for v in &mut self.v[lo..hi] {
                v.prot = prot;
            }
            self.merge_around(lo, hi);
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
        let i = self.first_ending_above(addr);
        let Some(v) = self.v.get(i) else {
            return false;
        };
        let stack = v.start > addr
            && matches!(v.backing, Backing::Anonymous)
            && !v.shared
            && page >= top.saturating_sub(limit)
            && self.covers(v.start, top);
        let below = i.checked_sub(1).and_then(|j| self.v.get(j));
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
        let len = len.checked_add(PAGE - 1)? & !(PAGE - 1);
        let mut hi = top;
        for v in self.v.iter().rev() {
            if v.start >= hi {
                hi = hi.min(v.start);
                continue;
            }
            if v.end <= hi && hi - v.end >= len {
                return Some(hi - len);
            }
            hi = hi.min(v.start);
        }
        (hi >= MMAP_MIN_ADDR && hi - MMAP_MIN_ADDR >= len).then(|| hi - len)
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
        // The heap refuses: no room, nothing grown.
        let cap = l.v.capacity();
        assert!(!l.make_room(cap, 1, |_| false));
        assert_eq!(l.v.capacity(), cap);
        assert!(l.make_room(cap, 1, |bytes| bytes >= cap * core::mem::size_of::<Vma>()));
        assert!(l.v.capacity() > cap);
        // At MAX_MAP_COUNT areas one more is refused, a change that adds none is not.
        let mut full = VmaList::new();
        for i in 0..MAX_MAP_COUNT as u64 {
            let prot = if i % 2 == 0 { RW } else { PROT_READ };
            full.v
                .push(Vma::anonymous(0x1000 * (i + 1), 0x1000 * (i + 2), prot));
        }
        assert!(!full.make_room(1, 1, |_| true));
        assert!(full.make_room(1, 0, |_| true));
    }
}
