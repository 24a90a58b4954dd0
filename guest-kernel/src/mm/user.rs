//! User memory for the loader and the fault handler: mapping runs of fresh frames and reaching mapped
//! user pages through the direct map.

use super::paging::{AddressSpace, MapError};
use super::{frame, phys_slice_mut, PAGE_SIZE};
use alloc::vec::Vec;

/// Maps `pages` physically contiguous frames at `va` and returns a kernel view of them (through the
/// direct map), so the loader can read file data into them with one device request. The frames are
/// zero but for the first `keep` bytes, which the caller overwrites (they may hold old contents).
pub fn map_fresh_run(
    aspace: &mut AddressSpace,
    va: u64,
    pages: u64,
    flags: u64,
    keep: u64,
) -> Result<&'static mut [u8], MapError> {
    let pa = frame::alloc_run(pages, 0..keep).ok_or(MapError::OutOfMemory)?;
    if let Err(e) = aspace.map_run(va, pa, pages, flags) {
        // Frames that made it into the page tables go with the address space; the rest go back now.
        for i in 0..pages {
            let p = pa + i * PAGE_SIZE;
            if aspace.translate(va + i * PAGE_SIZE).map(|(f, _)| f) != Some(p) {
                frame::free(p);
            }
        }
        return Err(e);
    }
    // SAFETY: the frames were just allocated and belong to this address space alone; the kernel writes
    // them only while loading, before the process runs.
    Ok(unsafe { phys_slice_mut(pa, (pages * PAGE_SIZE) as usize) })
}

/// Maps one zeroed frame (recycled or fresh) at `va` and returns a kernel view of it, for a file
/// page to be read into.
pub fn map_zeroed_page(
    aspace: &mut AddressSpace,
    va: u64,
    flags: u64,
) -> Result<&'static mut [u8], MapError> {
    let pa = frame::alloc_zeroed().ok_or(MapError::OutOfMemory)?;
    aspace
        .map(va & !(PAGE_SIZE - 1), pa, flags)
        .inspect_err(|_| frame::free(pa))?;
    // SAFETY: the frame was just allocated and is mapped only here; the caller fills it before the
    // process runs again.
    Ok(unsafe { phys_slice_mut(pa, PAGE_SIZE as usize) })
}

/// Maps one zeroed frame at `va` (demand paging of anonymous memory).
pub fn map_zero_page(aspace: &mut AddressSpace, va: u64, flags: u64) -> Result<(), MapError> {
    let pa = frame::alloc_zeroed().ok_or(MapError::OutOfMemory)?;
    aspace
        .map(va & !(PAGE_SIZE - 1), pa, flags)
        .inspect_err(|_| frame::free(pa))
}

/// Unmaps `[start, end)` and frees the frames.
pub fn unmap_range(aspace: &mut AddressSpace, start: u64, end: u64) {
    aspace.unmap_range(start, end, frame::put);
}

/// A kernel view of the mapped user page containing `va`.
pub fn page_bytes(aspace: &AddressSpace, va: u64) -> Option<&'static mut [u8]> {
    let (pa, _) = aspace.translate(va & !(PAGE_SIZE - 1))?;
    // SAFETY: the page is mapped in `aspace`, whose owner (the caller) is not running concurrently.
    Some(unsafe { phys_slice_mut(pa, PAGE_SIZE as usize) })
}

/// Copies `[start, end)` of `aspace` (another process's memory: /proc/PID/cmdline and environ read
/// its argument and environment strings, as Linux's `access_remote_vm` does); the copy stops at the
/// first page that is not mapped.
pub fn read_area(aspace: &AddressSpace, start: u64, end: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut va = start;
    while va < end {
        let Some(page) = page_bytes(aspace, va) else {
            break;
        };
        let off = (va & (PAGE_SIZE - 1)) as usize;
        let n = (PAGE_SIZE as usize - off).min((end - va) as usize);
        out.extend_from_slice(&page[off..off + n]);
        va += n as u64;
    }
    out
}
