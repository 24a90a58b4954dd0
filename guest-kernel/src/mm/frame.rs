//! The physical frame allocator. At boot, a bump pointer over the usable RAM regions of the PVH memory
//! map hands out the first frames (the direct map's tables, then this module's own arrays); from then on
//! all free RAM belongs to a buddy allocator ([`kcore::buddy`]) with two caches of single frames in
//! front of it: a list of frames known to be zero (page tables cleared as they are freed,
//! [`free_zeroed`]) and a list of frames with old contents, both threaded through the frames' first
//! words. Single frames come from the caches (a few instructions: fork, exit and page faults use them
//! by the hundred); runs of frames ([`alloc_contiguous`], [`alloc_run`]) come from the buddy allocator;
//! a cache that holds [`CACHE_HIGH`] frames sends further frees to the buddy allocator, and a run that
//! does not fit moves both caches there first, so every freed frame can make up a run again.
//!
//! Guest RAM starts zeroed, and zeroing in emulated kernel mode costs ~50 ms per MiB, so nothing known
//! to be zero is cleared again: a bitmap marks the free frames in the buddy allocator that hold old
//! contents (fresh RAM is all unmarked), and only those are cleared when a zeroed frame or run is asked
//! for; [`alloc_zeroed`] takes a zero frame first.
//!
//! Per-frame metadata, arrays taken from fresh (zero) memory at boot: frames shared copy-on-write between
//! address spaces carry a count of their extra users (raised by fork, dropped by [`put`]);
//! page-table frames carry the span of entries that may be nonzero ([`span`]/[`set_span`]), so walks
//! and clearing skip the rest of the table.

use super::{phys_to_virt, PAGE_SIZE};
use crate::arch::mem::zero_page;
use crate::sync::KCell;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use kcore::buddy::Buddy;

const MAX_REGIONS: usize = 32;

/// Frames each single-frame cache keeps before frees go to the buddy allocator (8 MiB).
pub const CACHE_HIGH: u64 = 2048;

/// The buddy allocator and its bitmap of free frames with old contents (bit set: not known zero).
struct Pool {
    buddy: Buddy<'static>,
    dirty: &'static mut [u64],
}

impl Pool {
    fn is_dirty(&self, pfn: u64) -> bool {
        self.dirty
            .get((pfn / 64) as usize)
            .is_some_and(|w| w & (1 << (pfn % 64)) != 0)
    }

    fn mark(&mut self, pfn: u64, dirty: bool) {
        if let Some(w) = self.dirty.get_mut((pfn / 64) as usize) {
            if dirty {
                *w |= 1 << (pfn % 64);
            } else {
                *w &= !(1 << (pfn % 64));
            }
        }
    }

    /// Gives frame `pa` (zero or not) to the buddy allocator.
    fn free(&mut self, pa: u64, dirty: bool) {
        let pfn = pa / PAGE_SIZE;
        self.mark(pfn, dirty);
        self.buddy.free(pfn, 0);
    }

    /// Gives the `n` frames with old contents at `pa` to the buddy allocator as the largest aligned
    /// blocks that fit (an executable's segment run of 32 frames is one block: one merge chain
    /// instead of 32).
    fn free_run(&mut self, pa: u64, n: u64) {
        let pfn = pa / PAGE_SIZE;
        for i in 0..n {
            self.mark(pfn + i, true);
        }
        self.buddy.free_range(pfn, n);
    }
}

struct Frames {
    regions: [(u64, u64); MAX_REGIONS],
    nregions: usize,
    /// Region the bump pointer is in, and the next fresh frame there (boot only: once the buddy
    /// allocator exists, `current == nregions`).
    current: usize,
    next: u64,
    /// Head of the cache of frames with old contents (physical address, 0 = empty).
    free_head: u64,
    free_count: u64,
    /// Head of the cache of free frames that are zero but for the link in their first word.
    zero_head: u64,
    zero_count: u64,
    total: u64,
    used: u64,
    /// Extra users of each frame (index: physical address / PAGE_SIZE); null until [`init_metadata`].
    refs: *mut u16,
    nrefs: u64,
    pool: Option<Pool>,
}

static FRAMES: KCell<Frames> = KCell::new(Frames {
    regions: [(0, 0); MAX_REGIONS],
    nregions: 0,
    current: 0,
    next: 0,
    free_head: 0,
    free_count: 0,
    zero_head: 0,
    zero_count: 0,
    total: 0,
    used: 0,
    refs: core::ptr::null_mut(),
    nrefs: 0,
    pool: None,
});

/// Adds usable RAM `[start, end)`, minus the `reserved` ranges (sorted by start), to the allocator
/// (boot only, before [`init_metadata`]).
pub fn add_region(start: u64, end: u64, reserved: &[(u64, u64)]) {
    let mut s = (start + PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
    let e = end & !(PAGE_SIZE - 1);
    let f = &mut *FRAMES.borrow_mut();
    let push = |f: &mut Frames, a: u64, b: u64| {
        if a < b && f.nregions < MAX_REGIONS {
            f.regions[f.nregions] = (a, b);
            f.nregions += 1;
        }
    };
    for &(rs, re) in reserved {
        if re <= s || rs >= e {
            continue;
        }
        push(f, s, rs & !(PAGE_SIZE - 1));
        s = s.max((re + PAGE_SIZE - 1) & !(PAGE_SIZE - 1));
    }
    push(f, s, e);
    if f.nregions > 0 && f.next == 0 {
        f.current = 0;
        f.next = f.regions[0].0;
    }
    f.total = f.regions[..f.nregions]
        .iter()
        .map(|(a, b)| (b - a) / PAGE_SIZE)
        .sum();
}

fn bump(f: &mut Frames, n: u64) -> Option<u64> {
    while f.current < f.nregions {
        let (_, end) = f.regions[f.current];
        if f.next + n * PAGE_SIZE <= end {
            let pa = f.next;
            f.next += n * PAGE_SIZE;
            f.used += n;
            return Some(pa);
        }
        f.current += 1;
        if f.current < f.nregions {
            f.next = f.regions[f.current].0;
        }
    }
    None
}

impl Frames {
    /// Pops the cache of frames with old contents.
    fn pop_dirty(&mut self) -> Option<u64> {
        if self.free_head == 0 {
            return None;
        }
        let pa = self.free_head;
        // SAFETY: a cached frame holds the next one's address in its first word.
        self.free_head = unsafe { (phys_to_virt(pa) as *const u64).read() };
        self.free_count -= 1;
        Some(pa)
    }

    /// Pops the cache of zero frames (the frame comes back all zero).
    fn pop_zero(&mut self) -> Option<u64> {
        if self.zero_head == 0 {
            return None;
        }
        let pa = self.zero_head;
        let link = phys_to_virt(pa) as *mut u64;
        // SAFETY: a frame on the zero list is zero but for the next frame's address in its first word.
        self.zero_head = unsafe { link.replace(0) };
        self.zero_count -= 1;
        Some(pa)
    }

    /// One frame from the buddy allocator, and whether it is known to be zero.
    fn pop_pool(&mut self) -> Option<(u64, bool)> {
        let pool = self.pool.as_mut()?;
        let pfn = pool.buddy.alloc(0)?;
        Some((pfn * PAGE_SIZE, !pool.is_dirty(pfn)))
    }

    /// Frees a frame with old contents: to its cache, or to the buddy allocator when the cache is full.
    #[inline(always)]
    fn free_dirty(&mut self, pa: u64) {
        self.used -= 1;
        if self.free_count >= CACHE_HIGH {
            if let Some(pool) = self.pool.as_mut() {
                pool.free(pa, true);
                return;
            }
        }
        // SAFETY: the caller gives up the frame; its first word now links the cache.
        unsafe { (phys_to_virt(pa) as *mut u64).write(self.free_head) };
        self.free_head = pa;
        self.free_count += 1;
    }

    /// Frees `n` consecutive frames with old contents at `pa` to the buddy allocator as whole blocks.
    fn free_run(&mut self, pa: u64, n: u64) {
        match self.pool.as_mut() {
            Some(pool) => {
                self.used -= n;
                pool.free_run(pa, n);
            }
            None => {
                for i in 0..n {
                    self.free_dirty(pa + i * PAGE_SIZE);
                }
            }
        }
    }

    /// Moves both caches into the buddy allocator, so their frames can merge into runs.
    fn drain(&mut self) {
        if self.pool.is_none() {
            return;
        }
        while let Some(pa) = self.pop_dirty() {
            if let Some(pool) = self.pool.as_mut() {
                pool.free(pa, true);
            }
        }
        while let Some(pa) = self.pop_zero() {
            if let Some(pool) = self.pool.as_mut() {
                pool.free(pa, false);
            }
        }
    }

    /// `n` contiguous frames, their old contents still in place; the caches are drained if no run
    /// is free otherwise.
    fn take_run(&mut self, n: u64) -> Option<u64> {
        if self.pool.is_none() {
            return bump(self, n);
        }
        let mut got = self.pool.as_mut().and_then(|p| p.buddy.alloc_run(n));
        if got.is_none() && self.free_count + self.zero_count > 0 {
            self.drain();
            got = self.pool.as_mut().and_then(|p| p.buddy.alloc_run(n));
        }
        let pfn = got?;
        self.used += n;
        Some(pfn * PAGE_SIZE)
    }
}

/// A frame with unspecified contents, and whether it is known to be zero.
fn alloc_raw() -> Option<(u64, bool)> {
    let f = &mut *FRAMES.borrow_mut();
    let got = f
        .pop_dirty()
        .map(|pa| (pa, false))
        .or_else(|| f.pop_pool())
        .or_else(|| f.pop_zero().map(|pa| (pa, true)));
    match got {
        Some(g) => {
            f.used += 1;
            Some(g)
        }
        // `bump` counts its own frames.
        None => bump(f, 1).map(|pa| (pa, true)),
    }
}

/// One frame with unspecified contents.
pub fn alloc() -> Option<u64> {
    alloc_raw().map(|(pa, _)| pa)
}

/// One zeroed frame.
pub fn alloc_zeroed() -> Option<u64> {
    {
        let f = &mut *FRAMES.borrow_mut();
        if let Some(pa) = f.pop_zero() {
            f.used += 1;
            return Some(pa);
        }
    }
    let (pa, zero) = alloc_raw()?;
    if !zero {
        // SAFETY: the frame was just taken off a free list: nobody else references it.
        unsafe { zero_page(phys_to_virt(pa) as *mut u8) };
    }
    Some(pa)
}

/// `n` physically contiguous, zeroed frames.
pub fn alloc_contiguous(n: u64) -> Option<u64> {
    alloc_run(n, 0..0)
}

/// `n` physically contiguous frames, zeroed but for the bytes `keep` (offsets into the run) that the
/// caller is about to overwrite: only frames with old contents are cleared, and only outside `keep`.
pub fn alloc_run(n: u64, keep: core::ops::Range<u64>) -> Option<u64> {
    let f = &mut *FRAMES.borrow_mut();
    let pa = f.take_run(n)?;
    if let Some(pool) = f.pool.as_ref() {
        for i in 0..n {
            if !pool.is_dirty(pa / PAGE_SIZE + i) {
                continue;
            }
            let (s, e) = (i * PAGE_SIZE, (i + 1) * PAGE_SIZE);
            let page = phys_to_virt(pa + s) as *mut u8;
            if keep.start <= s && keep.end >= e {
                continue;
            }
            if keep.end <= s || keep.start >= e {
                // SAFETY: the frame is ours alone (just allocated).
                unsafe { zero_page(page) };
                continue;
            }
            let (ks, ke) = (keep.start.max(s) - s, keep.end.min(e) - s);
            // SAFETY: both pieces lie inside the frame, which is ours alone.
            unsafe {
                core::ptr::write_bytes(page, 0, ks as usize);
                core::ptr::write_bytes(page.add(ke as usize), 0, (PAGE_SIZE - ke) as usize);
            }
        }
    }
    Some(pa)
}

/// Returns a frame to the free list.
pub fn free(pa: u64) {
    FRAMES.borrow_mut().free_dirty(pa);
}

/// Returns a frame that is all zero (a page table whose entries were cleared) to the zero list.
pub fn free_zeroed(pa: u64) {
    let f = &mut *FRAMES.borrow_mut();
    f.used -= 1;
    if f.zero_count >= CACHE_HIGH {
        if let Some(pool) = f.pool.as_mut() {
            pool.free(pa, false);
            return;
        }
    }
    // SAFETY: the caller gives up the frame; its first word now links the zero list.
    unsafe { (phys_to_virt(pa) as *mut u64).write(f.zero_head) };
    f.zero_head = pa;
    f.zero_count += 1;
}

/// Counts frame `pa` as free while a cache outside this allocator keeps it for reuse.
pub fn uncount(_pa: u64) {
    FRAMES.borrow_mut().used -= 1;
}

/// Counts a frame taken back from such a cache as used again.
pub fn recount(_pa: u64) {
    FRAMES.borrow_mut().used += 1;
}

/// Whether fewer than `n` frames are free (counting the single-frame caches).
pub fn fewer_free_than(n: u64) -> bool {
    let f = FRAMES.borrow();
    f.total - f.used < n
}

/// (total, used) frames.
pub fn stats() -> (u64, u64) {
    let f = FRAMES.borrow();
    (f.total, f.used)
}

/// Sets up the per-frame metadata for RAM below `ram_end` (share counts, spans, the buddy allocator's
/// arrays and bitmap, all from fresh zeroed frames: no clearing) and hands every frame the bump pointer
/// has not given out to the buddy allocator.
pub fn init_metadata(ram_end: u64) -> bool {
    let n = ram_end / PAGE_SIZE;
    let pages = |bytes: u64| bytes.div_ceil(PAGE_SIZE);
    let (Some(pa), Some(spans), Some(next), Some(prev), Some(order), Some(dirty)) = (
        alloc_contiguous(pages(n * 2)),
        alloc_contiguous(pages(n * 4)),
        alloc_contiguous(pages(n * 4)),
        alloc_contiguous(pages(n * 4)),
        alloc_contiguous(pages(n)),
        alloc_contiguous(pages(n.div_ceil(64) * 8)),
    ) else {
        return false;
    };
    let mut f = FRAMES.borrow_mut();
    f.refs = phys_to_virt(pa) as *mut u16;
    f.nrefs = n;
    SPANS.store(phys_to_virt(spans) as *mut u32, Ordering::Relaxed);
    SPAN_FRAMES.store(n, Ordering::Relaxed);
    // SAFETY: the arrays are fresh (zero) frames just taken from the bump pointer, mapped by the
    // direct map, each big enough for `n` entries, and owned by the pool for the kernel's lifetime.
    let mut pool = unsafe {
        Pool {
            buddy: Buddy::new(
                core::slice::from_raw_parts_mut(phys_to_virt(next) as *mut u32, n as usize),
                core::slice::from_raw_parts_mut(phys_to_virt(prev) as *mut u32, n as usize),
                core::slice::from_raw_parts_mut(phys_to_virt(order) as *mut u8, n as usize),
            ),
            dirty: core::slice::from_raw_parts_mut(
                phys_to_virt(dirty) as *mut u64,
                n.div_ceil(64) as usize,
            ),
        }
    };
    for r in f.current..f.nregions {
        let (start, end) = f.regions[r];
        let start = if r == f.current { f.next } else { start };
        if start < end {
            pool.buddy
                .free_range(start / PAGE_SIZE, (end - start) / PAGE_SIZE);
        }
    }
    f.current = f.nregions;
    f.pool = Some(pool);
    true
}

/// The span array and its length, outside the allocator's cell: fork and teardown read and write
/// spans several times per page table, and a cell borrow costs a few memory instructions each time.
static SPANS: AtomicPtr<u32> = AtomicPtr::new(core::ptr::null_mut());
static SPAN_FRAMES: AtomicU64 = AtomicU64::new(0);

fn span_slot(pa: u64) -> Option<*mut u32> {
    let i = pa / PAGE_SIZE;
    let spans = SPANS.load(Ordering::Relaxed);
    // SAFETY (of the pointer arithmetic): i < the array's length keeps it inside the array.
    (i < SPAN_FRAMES.load(Ordering::Relaxed)).then(|| spans.wrapping_add(i as usize))
}

/// The entries `[lo, hi)` of page-table frame `pa` that may be nonzero (`(0, 512)` if not tracked).
pub fn span(pa: u64) -> (usize, usize) {
    match span_slot(pa) {
        Some(p) => {
            // SAFETY: `p` is inside the span array, which only this module touches.
            let s = unsafe { *p };
            ((s & 0xffff) as usize, (s >> 16) as usize)
        }
        None => (0, 512),
    }
}

/// Sets the span of page-table frame `pa` (see [`span`]).
pub fn set_span(pa: u64, lo: usize, hi: usize) {
    if let Some(p) = span_slot(pa) {
        // SAFETY: `p` is inside the span array.
        unsafe { *p = lo as u32 | (hi as u32) << 16 };
    }
}

/// Widens the span of page-table frame `pa` to include entry `i` (an entry is being installed).
pub fn widen_span(pa: u64, i: usize) {
    let (lo, hi) = span(pa);
    if hi == 0 {
        set_span(pa, i, i + 1);
    } else if i < lo || i >= hi {
        set_span(pa, lo.min(i), hi.max(i + 1));
    }
}

/// Share counts and frees for many frames under one borrow of the allocator (fork and exit walk
/// hundreds of pages; going through [`put`] for each would cost several times the instructions).
/// Frees of physically consecutive frames (a teardown walking an executable's segments, which exec
/// loads in contiguous runs) are gathered into one run that goes to the buddy allocator whole when
/// it breaks or the batch ends: freeing frame by frame to a full cache cost one buddy merge chain per
/// frame (~190 us each here, 63 ms per exit of a 1.2 MB program).
pub struct Batch<'a> {
    f: core::cell::RefMut<'a, Frames>,
    /// The run being gathered: its first frame and its length (0: none).
    run: (u64, u64),
}

/// Starts a [`Batch`].
pub fn batch() -> Batch<'static> {
    Batch {
        f: FRAMES.borrow_mut(),
        run: (0, 0),
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Batch<'_> {
    /// The share-count array and its length, for a loop that keeps them in registers (a method
    /// call per page would reload them from the allocator every time).
    pub fn share_counts(&mut self) -> (*mut u16, u64) {
        (self.f.refs, self.f.nrefs)
    }

    /// Returns frame `pa`, whose last user is gone, to the free lists.
    #[inline(always)]
    pub fn free(&mut self, pa: u64) {
        let (start, n) = self.run;
        if n != 0 && pa == start + n * PAGE_SIZE {
            self.run.1 = n + 1;
            return;
        }
        self.flush();
        self.run = (pa, 1);
    }

    /// Frees the gathered run: a single frame to its cache, a longer run to the buddy allocator.
    fn flush(&mut self) {
        let (pa, n) = core::mem::take(&mut self.run);
        match n {
            0 => {}
            1 => self.f.free_dirty(pa),
            _ => self.f.free_run(pa, n),
        }
    }
}

fn ref_slot(f: &Frames, pa: u64) -> Option<*mut u16> {
    let i = pa / PAGE_SIZE;
    // SAFETY (of the pointer arithmetic): i < nrefs keeps it inside the array.
    (i < f.nrefs).then(|| f.refs.wrapping_add(i as usize))
}

/// Whether another address space also maps frame `pa`.
pub fn is_shared(pa: u64) -> bool {
    let f = FRAMES.borrow();
    // SAFETY: `p` is inside the share-count array.
    ref_slot(&f, pa).is_some_and(|p| unsafe { *p } != 0)
}

/// One more user of frame `pa` (a shared mapping of a page-cache page); [`put`] drops it.
pub fn get(pa: u64) {
    let f = FRAMES.borrow();
    if let Some(p) = ref_slot(&f, pa) {
        // SAFETY: `p` is inside the share-count array.
        unsafe { *p = (*p).saturating_add(1) };
    }
}

/// Drops one user of frame `pa`: frees it when it was the last.
pub fn put(pa: u64) {
    let slot = ref_slot(&FRAMES.borrow(), pa);
    if let Some(p) = slot {
        // SAFETY: `p` is inside the share-count array.
        unsafe {
            if *p != 0 {
                *p -= 1;
                return;
            }
        }
    }
    free(pa);
}
