//! The kernel heap: a `linked_list_allocator` over physically contiguous fresh frames reached through the
//! direct map (so heap buffers can be handed to virtio devices by address).

use super::{frame, phys_to_virt, PAGE_SIZE};
use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::NonNull;
use linked_list_allocator::Heap;

struct KernelHeap(UnsafeCell<Heap>);

// SAFETY: single CPU, and interrupt handlers never allocate, so no two heap operations interleave.
unsafe impl Sync for KernelHeap {}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(UnsafeCell::new(Heap::empty()));

// SAFETY: `Heap` returns properly sized and aligned blocks from memory it owns exclusively.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the Sync impl: no concurrent access.
        let heap = unsafe { &mut *self.0.get() };
        heap.allocate_first_fit(layout)
            .map(|p| p.as_ptr())
            .unwrap_or(core::ptr::null_mut())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this layout (GlobalAlloc contract); no concurrent access.
        unsafe { (*self.0.get()).deallocate(NonNull::new_unchecked(ptr), layout) }
    }
}

/// Gives the heap `bytes` of fresh contiguous memory. Returns false if memory ran out.
pub fn init(bytes: u64) -> bool {
    let pages = bytes / PAGE_SIZE;
    let Some(pa) = frame::alloc_contiguous(pages) else {
        return false;
    };
    // SAFETY: the frames are fresh, exclusively ours, mapped by the direct map; called once at boot.
    unsafe { (*HEAP.0.get()).init(phys_to_virt(pa) as *mut u8, (pages * PAGE_SIZE) as usize) };
    true
}

/// (size, used) bytes of the heap.
pub fn stats() -> (usize, usize) {
    // SAFETY: reads two counters; no concurrent access (see the Sync impl).
    let heap = unsafe { &*HEAP.0.get() };
    (heap.size(), heap.used())
}

/// A kernel stack of `bytes` from the heap, or `None` if the heap cannot spare it (fork then fails
/// with EAGAIN instead of the kernel dying on an allocation failure).
pub fn try_alloc_stack(bytes: usize) -> Option<alloc::boxed::Box<[core::mem::MaybeUninit<u8>]>> {
    // Keep a reserve for everything else the kernel allocates.
    const RESERVE: usize = 512 * 1024;
    let (size, used) = stats();
    if size - used < bytes + RESERVE {
        return None;
    }
    Some(alloc::boxed::Box::new_uninit_slice(bytes))
}
