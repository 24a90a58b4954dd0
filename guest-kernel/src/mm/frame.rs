//! The physical frame allocator: a bump pointer over the usable RAM regions of the PVH memory map, plus
//! two free lists threaded through freed frames: one of frames known to be zero (page tables cleared as
//! they are freed, [`free_zeroed`]) and one of frames with old contents. Fresh frames are known to be zero
//! (guest RAM starts zeroed); [`alloc_zeroed`] takes a zero frame first and clears a recycled one only when
//! there is none.
//!
//! Per-frame metadata, arrays taken from fresh (zero) memory at boot: frames shared copy-on-write between
//! address spaces carry a count of their extra users (raised by fork, dropped by [`put`]);
//! page-table frames carry the span of entries that may be nonzero ([`span`]/[`set_span`]), so walks
//! and clearing skip the rest of the table.

use super::{phys_to_virt, PAGE_SIZE};
use crate::arch::mem::zero_page;
use crate::sync::KCell;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

const MAX_REGIONS: usize = 32;

struct Frames {
    regions: [(u64, u64); MAX_REGIONS],
    nregions: usize,
    /// Region the bump pointer is in, and the next fresh frame there.
    current: usize,
    next: u64,
    /// Head of the free list (physical address, 0 = empty).
    free_head: u64,
    free_count: u64,
    /// Head of the list of free frames that are zero but for the link in their first word.
    zero_head: u64,
    total: u64,
    used: u64,
    /// Extra users of each frame (index: physical address / PAGE_SIZE); null until [`init_refcounts`].
    refs: *mut u16,
    nrefs: u64,
}

static FRAMES: KCell<Frames> = KCell::new(Frames {
    regions: [(0, 0); MAX_REGIONS],
    nregions: 0,
    current: 0,
    next: 0,
    free_head: 0,
    free_count: 0,
    zero_head: 0,
    total: 0,
    used: 0,
    refs: core::ptr::null_mut(),
    nrefs: 0,
});

/// Adds usable RAM `[start, end)`, minus the `reserved` ranges (sorted by start), to the allocator.
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

/// A frame with unspecified contents, and whether it is known to be zero.
fn alloc_raw() -> Option<(u64, bool)> {
    let f = &mut *FRAMES.borrow_mut();
    if f.free_head != 0 {
        let pa = f.free_head;
        // SAFETY: a free frame holds the next free frame's address in its first word.
        f.free_head = unsafe { (phys_to_virt(pa) as *const u64).read() };
        f.free_count -= 1;
        f.used += 1;
        return Some((pa, false));
    }
    bump(f, 1).map(|pa| (pa, true))
}

/// One frame with unspecified contents.
pub fn alloc() -> Option<u64> {
    alloc_raw().map(|(pa, _)| pa)
}

/// One zeroed frame.
pub fn alloc_zeroed() -> Option<u64> {
    {
        let f = &mut *FRAMES.borrow_mut();
        if f.zero_head != 0 {
            let pa = f.zero_head;
            let link = phys_to_virt(pa) as *mut u64;
            // SAFETY: a frame on the zero list is zero but for the next frame's address in its first word.
            f.zero_head = unsafe { link.replace(0) };
            f.used += 1;
            return Some(pa);
        }
    }
    let (pa, zero) = alloc_raw()?;
    if !zero {
        // SAFETY: the frame was just taken off the free list: nobody else references it.
        unsafe { zero_page(phys_to_virt(pa) as *mut u8) };
    }
    Some(pa)
}

/// `n` physically contiguous, zeroed frames (fresh memory only; never returned).
pub fn alloc_contiguous(n: u64) -> Option<u64> {
    bump(&mut FRAMES.borrow_mut(), n)
}

/// Returns a frame to the free list.
pub fn free(pa: u64) {
    let f = &mut *FRAMES.borrow_mut();
    // SAFETY: the caller gives up the frame; its first word now links the free list.
    unsafe { (phys_to_virt(pa) as *mut u64).write(f.free_head) };
    f.free_head = pa;
    f.free_count += 1;
    f.used -= 1;
}

/// Returns a frame that is all zero (a page table whose entries were cleared) to the zero list.
pub fn free_zeroed(pa: u64) {
    let f = &mut *FRAMES.borrow_mut();
    // SAFETY: the caller gives up the frame; its first word now links the zero list.
    unsafe { (phys_to_virt(pa) as *mut u64).write(f.zero_head) };
    f.zero_head = pa;
    f.used -= 1;
}

/// Counts frame `pa` as free while a cache outside this allocator keeps it for reuse.
pub fn uncount(_pa: u64) {
    FRAMES.borrow_mut().used -= 1;
}

/// Counts a frame taken back from such a cache as used again.
pub fn recount(_pa: u64) {
    FRAMES.borrow_mut().used += 1;
}

/// (total, used) frames.
pub fn stats() -> (u64, u64) {
    let f = FRAMES.borrow();
    (f.total, f.used)
}

/// Sets up the per-frame share counts for RAM below `ram_end` (fresh zeroed frames: no clearing).
pub fn init_refcounts(ram_end: u64) -> bool {
    let n = ram_end / PAGE_SIZE;
    let pages = (n * 2).div_ceil(PAGE_SIZE);
    let span_pages = (n * 4).div_ceil(PAGE_SIZE);
    let (Some(pa), Some(spans)) = (alloc_contiguous(pages), alloc_contiguous(span_pages)) else {
        return false;
    };
    let mut f = FRAMES.borrow_mut();
    f.refs = phys_to_virt(pa) as *mut u16;
    f.nrefs = n;
    SPANS.store(phys_to_virt(spans) as *mut u32, Ordering::Relaxed);
    SPAN_FRAMES.store(n, Ordering::Relaxed);
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
pub struct Batch<'a> {
    f: core::cell::RefMut<'a, Frames>,
}

/// Starts a [`Batch`].
pub fn batch() -> Batch<'static> {
    Batch {
        f: FRAMES.borrow_mut(),
    }
}

impl Batch<'_> {
    /// The share-count array and its length, for a loop that keeps them in registers (a method
    /// call per page would reload them from the allocator every time).
    pub fn share_counts(&mut self) -> (*mut u16, u64) {
        (self.f.refs, self.f.nrefs)
    }

    /// Returns frame `pa`, whose last user is gone, to the free list.
    #[inline(always)]
    pub fn free(&mut self, pa: u64) {
        let f = &mut *self.f;
        // SAFETY: the last user gives up the frame; its first word now links the free list.
        unsafe { (phys_to_virt(pa) as *mut u64).write(f.free_head) };
        f.free_head = pa;
        f.free_count += 1;
        f.used -= 1;
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
