//! The kernel heap: a `linked_list_allocator` over physically contiguous fresh frames reached through the
//! direct map (so heap buffers can be handed to virtio devices by address), with a free list per
//! power-of-two size class (16 bytes to 32 KiB) in front of it. A freed block goes onto its class's
//! list and the next allocation of that class takes it back: a few instructions instead of a walk of the
//! allocator's hole list, which costs per hole in emulated kernel mode (fork, exit and wait4 allocate and
//! free a PCB, a kernel stack, a context and a few vectors per process). Cached blocks are never given
//! back to the underlying heap; [`stats`] counts them as free. `alloc_zeroed` clears only memory that was
//! handed out before: above the high-water mark the heap is still as fresh (zero) as at boot.

use super::{frame, phys_to_virt, PAGE_SIZE};
use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::NonNull;
use linked_list_allocator::Heap;

/// Size classes: 2^MIN_SHIFT .. 2^MAX_SHIFT bytes.
const MIN_SHIFT: u32 = 4;
const MAX_SHIFT: u32 = 15;
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;

struct Inner {
    heap: Heap,
    /// Per class, the first free cached block (its first word links the next); null if none.
    free: [*mut u8; CLASSES],
    /// Bytes sitting in the class lists.
    cached: usize,
    /// The end of the highest block the underlying heap ever handed out: memory above it is still
    /// fresh (zero) but for the header of the hole that starts there (see [`GlobalAlloc::alloc_zeroed`]).
    high_water: usize,
}

struct KernelHeap(UnsafeCell<Inner>);

/// The size class of `layout`, if it has one: the smallest power of two holding it, whose alignment
/// (the block is aligned to its size, up to a page) satisfies the layout's.
fn class(layout: Layout) -> Option<usize> {
    let size = layout.size().max(layout.align()).max(1 << MIN_SHIFT);
    let shift = usize::BITS - (size - 1).leading_zeros();
    (shift <= MAX_SHIFT && layout.align() <= 4096).then(|| (shift - MIN_SHIFT) as usize)
}

/// The layout a class's blocks are taken from the underlying heap with.
fn class_layout(c: usize) -> Layout {
    let size = 1usize << (c as u32 + MIN_SHIFT);
    // The size is a power of two; alignment up to a page.
    Layout::from_size_align(size, size.min(4096)).unwrap_or(Layout::new::<u64>())
}

// SAFETY: single CPU, and interrupt handlers never allocate, so no two heap operations interleave.
unsafe impl Sync for KernelHeap {}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(UnsafeCell::new(Inner {
    heap: Heap::empty(),
    free: [core::ptr::null_mut(); CLASSES],
    cached: 0,
    high_water: 0,
}));

/// Bytes at the start of the heap's top hole that hold its header (linked_list_allocator's `Hole`: size
/// and next pointer, 16 bytes; kept generous against rounding of block ends).
const HOLE_HEADER: usize = 64;

impl Inner {
    /// A block from the underlying heap (null if it has no room), raising the high-water mark.
    fn take(&mut self, layout: Layout) -> *mut u8 {
        match self.heap.allocate_first_fit(layout) {
            Ok(p) => {
                let ptr = p.as_ptr();
                self.high_water = self.high_water.max(ptr as usize + layout.size());
                ptr
            }
            Err(()) => core::ptr::null_mut(),
        }
    }

    /// Gives every block in the class lists back to the underlying heap, where free neighbours
    /// merge, so that memory cached for one size can serve any (Linux shrinks its slab caches when
    /// memory is short). Without it, the 32 KiB kernel stacks a fork bomb left in their list kept
    /// the heap "full" for every other allocation after all those processes had gone.
    fn drain_classes(&mut self) {
        for c in 0..CLASSES {
            while !self.free[c].is_null() {
                let block = self.free[c];
                // SAFETY: a cached block links the next in its first word.
                self.free[c] = unsafe { (block as *const *mut u8).read() };
                // SAFETY: the block came from the underlying heap with its class's layout and is
                // no longer in any list.
                unsafe {
                    self.heap
                        .deallocate(NonNull::new_unchecked(block), class_layout(c))
                };
            }
        }
        self.cached = 0;
    }
}

// SAFETY: `Heap` returns properly sized and aligned blocks from memory it owns exclusively.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the Sync impl: no concurrent access.
        let inner = unsafe { &mut *self.0.get() };
        let Some(c) = class(layout) else {
            return inner.take(layout);
        };
        let block = inner.free[c];
        if !block.is_null() {
            // SAFETY: a cached block is at least 16 bytes, aligned, and links the next in its first word.
            inner.free[c] = unsafe { (block as *mut *mut u8).read() };
            inner.cached -= 1 << (c as u32 + MIN_SHIFT);
            return block;
        }
        inner.take(class_layout(c))
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: see the Sync impl: no concurrent access.
        let inner = unsafe { &mut *self.0.get() };
        match class(layout) {
            Some(c) => {
                // SAFETY: `ptr` is a block of class `c` (GlobalAlloc contract: same layout as at
                // allocation), so it holds a pointer and is ours to reuse.
                unsafe { (ptr as *mut *mut u8).write(inner.free[c]) };
                inner.free[c] = ptr;
                inner.cached += 1 << (c as u32 + MIN_SHIFT);
            }
            // SAFETY: `ptr` came from the underlying heap with this layout.
            None => unsafe { inner.heap.deallocate(NonNull::new_unchecked(ptr), layout) },
        }
    }

    /// Zeroes only what may not be zero: a block (or the part of it) below the high-water mark was in
    /// use before, and the first bytes at the mark hold the allocator's header of the hole starting
    /// there; everything above is fresh memory, zero since boot (the heap was made of fresh frames).
    /// Zeroing in kernel mode is emulated (~50 ms per MiB), so a 256 KiB socket buffer from fresh memory
    /// costs nothing instead of ~13 ms.
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the Sync impl: no concurrent access.
        let high_water = unsafe { (*self.0.get()).high_water };
        // SAFETY: same contract as ours.
        let ptr = unsafe { self.alloc(layout) };
        if ptr.is_null() {
            return ptr;
        }
        let (start, end) = (ptr as usize, ptr as usize + layout.size());
        // Class blocks may come back from the class lists whatever their address: always zeroed.
        let dirty_end = if class(layout).is_some() {
            end
        } else {
            end.min(start.max(high_water) + HOLE_HEADER)
        };
        // SAFETY: [start, dirty_end) lies inside the block just allocated for `layout`.
        unsafe { core::ptr::write_bytes(ptr, 0, dirty_end - start) };
        ptr
    }
}

/// Gives the heap `bytes` of fresh contiguous memory. Returns false if memory ran out.
pub fn init(bytes: u64) -> bool {
    let pages = bytes / PAGE_SIZE;
    let Some(pa) = frame::alloc_contiguous(pages) else {
        return false;
    };
    // SAFETY: the frames are fresh, exclusively ours, mapped by the direct map; called once at boot.
    unsafe {
        (*HEAP.0.get())
            .heap
            .init(phys_to_virt(pa) as *mut u8, (pages * PAGE_SIZE) as usize)
    };
    true
}

/// (size, used) bytes of the heap; blocks cached in the class lists count as free.
pub fn stats() -> (usize, usize) {
    // SAFETY: reads counters; no concurrent access (see the Sync impl).
    let inner = unsafe { &*HEAP.0.get() };
    (inner.heap.size(), inner.heap.used() - inner.cached)
}

/// Heap bytes that user-sized requests (kernel stacks for fork, pipe rings, sendfile's buffer) leave
/// for everything else the kernel allocates: those fail (EAGAIN, ENOMEM) first, so that the small
/// allocations a system call makes on its way (a path, a descriptor slot, a wait-queue entry) still
/// find room when a user has filled the heap.
const RESERVE: usize = 512 * 1024;

/// Whether the heap has `bytes` to spare beyond the reserve. Besides the user-sized requests here,
/// the system calls that make small objects a user can make without end but for memory (open
/// descriptions, memory areas, epoll entries) ask it first and fail with ENOMEM, as Linux's do when
/// their slab allocation fails, so only the kernel's own short-lived allocations reach the reserve.
/// When the underlying heap is short, the class lists are drained into it first.
pub fn can_spare(bytes: usize) -> bool {
    // SAFETY: no concurrent access (see the Sync impl); no reference into the heap's state is held
    // elsewhere while this runs.
    let inner = unsafe { &mut *HEAP.0.get() };
    let room = |i: &Inner| i.heap.size().saturating_sub(i.heap.used()) >= bytes + RESERVE;
    if room(inner) {
        return true;
    }
    if inner.cached == 0 {
        return false;
    }
    inner.drain_classes();
    room(inner)
}

/// A kernel stack of `bytes` from the heap, or `None` if the heap cannot spare it (fork then fails
/// with EAGAIN instead of the kernel dying on an allocation failure).
pub fn try_alloc_stack(bytes: usize) -> Option<alloc::boxed::Box<[core::mem::MaybeUninit<u8>]>> {
    let cached_stack = class(Layout::array::<u8>(bytes).unwrap_or(Layout::new::<u8>()))
        // SAFETY: as above.
        .is_some_and(|c| unsafe { !(*HEAP.0.get()).free[c].is_null() });
    if !cached_stack && !can_spare(bytes) {
        return None;
    }
    Some(alloc::boxed::Box::new_uninit_slice(bytes))
}

/// `len` zero bytes on the heap, or `None` if the heap cannot spare them beyond its reserve (the
/// caller fails with ENOMEM instead of the kernel dying on an allocation failure). Fresh heap memory is not cleared again.
pub fn try_zeroed_bytes(len: usize) -> Option<alloc::boxed::Box<[u8]>> {
    let layout = Layout::array::<u8>(len).ok()?;
    if len == 0 {
        return Some(alloc::boxed::Box::default());
    }
    if !can_spare(len) {
        return None;
    }
    // SAFETY: a nonzero-sized layout; the global allocator is ours.
    let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` is a fresh, zeroed allocation of `len` bytes with `layout`, owned by the box.
    Some(unsafe { alloc::boxed::Box::from_raw(core::ptr::slice_from_raw_parts_mut(p, len)) })
}
