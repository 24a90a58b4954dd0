//! The kernel heap: a `linked_list_allocator` over physically contiguous fresh frames reached through the
//! direct map (so heap buffers can be handed to virtio devices by address), with a free list per
//! power-of-two size class (16 bytes to 32 KiB) in front of it. A freed block goes onto its class's
//! list and the next allocation of that class takes it back: a few instructions instead of a walk of the
//! allocator's hole list, which costs per hole in emulated kernel mode (fork, exit and wait4 allocate and
//! free a PCB, a kernel stack, a context and a few vectors per process). Cached blocks are never given
//! back to the underlying heap; [`stats`] counts them as free.

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
}));

// SAFETY: `Heap` returns properly sized and aligned blocks from memory it owns exclusively.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the Sync impl: no concurrent access.
        let inner = unsafe { &mut *self.0.get() };
        let Some(c) = class(layout) else {
            return inner
                .heap
                .allocate_first_fit(layout)
                .map(|p| p.as_ptr())
                .unwrap_or(core::ptr::null_mut());
        };
        let block = inner.free[c];
        if !block.is_null() {
            // SAFETY: a cached block is at least 16 bytes, aligned, and links the next in its first word.
            inner.free[c] = unsafe { (block as *mut *mut u8).read() };
            inner.cached -= 1 << (c as u32 + MIN_SHIFT);
            return block;
        }
        inner
            .heap
            .allocate_first_fit(class_layout(c))
            .map(|p| p.as_ptr())
            .unwrap_or(core::ptr::null_mut())
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

/// A kernel stack of `bytes` from the heap, or `None` if the heap cannot spare it (fork then fails
/// with EAGAIN instead of the kernel dying on an allocation failure).
pub fn try_alloc_stack(bytes: usize) -> Option<alloc::boxed::Box<[core::mem::MaybeUninit<u8>]>> {
    // Keep a reserve for everything else the kernel allocates.
    const RESERVE: usize = 512 * 1024;
    // SAFETY: reads counters; no concurrent access (see the Sync impl).
    let (size, used) = unsafe {
        let inner = &*HEAP.0.get();
        (inner.heap.size(), inner.heap.used())
    };
    let cached_stack = class(Layout::array::<u8>(bytes).unwrap_or(Layout::new::<u8>()))
        // SAFETY: as above.
        .is_some_and(|c| unsafe { !(*HEAP.0.get()).free[c].is_null() });
    if !cached_stack && size - used < bytes + RESERVE {
        return None;
    }
    Some(alloc::boxed::Box::new_uninit_slice(bytes))
}
