//! Checked access to user memory from system calls. A user range is usable when every page is mapped
//! user-accessible (writable for writes) in the current address space; other pages go through the
//! caller's `resolve` first (the process's areas decide: demand paging, copy-on-write, or EFAULT).

use super::paging::{AddressSpace, USER, WRITABLE};
use super::PAGE_SIZE;
use crate::arch::layout::USER_END;
use kcore::errno::Errno;

/// Checks `[va, va + len)`; a page not usable as it is goes to `resolve(aspace, page)`, which makes it
/// usable or says it cannot be.
pub fn check(
    aspace: &mut AddressSpace,
    va: u64,
    len: u64,
    write: bool,
    mut resolve: impl FnMut(&mut AddressSpace, u64) -> bool,
) -> Result<(), Errno> {
    if len == 0 {
        return Ok(());
    }
    let end = va.checked_add(len).ok_or(Errno::EFAULT)?;
    if end > USER_END {
        return Err(Errno::EFAULT);
    }
    let usable = |aspace: &AddressSpace, page: u64| {
        aspace
            .translate(page)
            .is_some_and(|(_, f)| f & USER != 0 && (!write || f & WRITABLE != 0))
    };
    let mut page = va & !(PAGE_SIZE - 1);
    while page < end {
        let ok = usable(aspace, page) || (resolve(aspace, page) && usable(aspace, page));
        if !ok {
            return Err(Errno::EFAULT);
        }
        page += PAGE_SIZE;
    }
    Ok(())
}

/// A view of user memory that [`check`] accepted (in the current address space).
///
/// # Safety
/// The range must have been checked for reading in the current address space, and stay mapped while the
/// slice lives.
pub unsafe fn user_slice<'a>(va: u64, len: usize) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    // SAFETY: guaranteed by the caller.
    unsafe { core::slice::from_raw_parts(va as *const u8, len) }
}

/// A mutable view of user memory that [`check`] accepted for writing.
///
/// # Safety
/// As for [`user_slice`], checked for writing.
pub unsafe fn user_slice_mut<'a>(va: u64, len: usize) -> &'a mut [u8] {
    if len == 0 {
        return &mut [];
    }
    // SAFETY: guaranteed by the caller.
    unsafe { core::slice::from_raw_parts_mut(va as *mut u8, len) }
}

/// A view of user memory that [`check`] accepted for reading in the current address space.
///
/// The kernel does not run other code between the check and the use that could unmap the range (one
/// CPU, no preemption in kernel mode), which is what makes this safe to call after a successful check.
pub fn checked_slice(va: u64, len: usize) -> &'static [u8] {
    // SAFETY: see above: the caller checked the range just before, in the current address space.
    unsafe { user_slice(va, len) }
}

/// A mutable view of user memory that [`check`] accepted for writing (see [`checked_slice`]).
pub fn checked_slice_mut(va: u64, len: usize) -> &'static mut [u8] {
    // SAFETY: as for checked_slice, checked for writing.
    unsafe { user_slice_mut(va, len) }
}
