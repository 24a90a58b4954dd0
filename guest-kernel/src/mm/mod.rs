//! Memory management: physical frames from the PVH memory map ([`frame`]), the kernel heap ([`heap`]),
//! page tables and per-process address spaces ([`paging`]), and checked access to user memory
//! ([`uaccess`]).
//!
//! Physical memory is reached through the direct map at `PHYS_OFFSET` (2 MiB pages set up by the boot
//! code, 1 GiB pages above 4 GiB). Guest RAM starts zeroed, so frames never handed out before are not
//! cleared again: only recycled frames are.

pub mod frame;
pub mod heap;
pub mod page;
pub mod pagecache;
pub mod paging;
pub mod uaccess;
pub mod user;

use crate::arch::layout::{KERNEL_BASE, PHYS_OFFSET};

pub const PAGE_SIZE: u64 = 4096;

/// The direct-map address of a physical address.
pub fn phys_to_virt(pa: u64) -> u64 {
    pa + PHYS_OFFSET
}

/// The physical address of a kernel virtual address (direct map or kernel image).
pub fn virt_to_phys(va: u64) -> u64 {
    if va >= KERNEL_BASE {
        va - KERNEL_BASE
    } else {
        va - PHYS_OFFSET
    }
}

/// Rounds up to a page boundary.
pub fn page_up(v: u64) -> u64 {
    (v + PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

/// Rounds down to a page boundary.
pub fn page_down(v: u64) -> u64 {
    v & !(PAGE_SIZE - 1)
}

/// A mutable byte view of `len` bytes of physical memory through the direct map.
///
/// # Safety
/// The range must be RAM the caller owns exclusively for the lifetime of the slice.
pub unsafe fn phys_slice_mut<'a>(pa: u64, len: usize) -> &'a mut [u8] {
    // SAFETY: the caller guarantees ownership; the direct map covers all usable RAM.
    unsafe { core::slice::from_raw_parts_mut(phys_to_virt(pa) as *mut u8, len) }
}
