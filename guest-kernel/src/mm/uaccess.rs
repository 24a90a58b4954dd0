//! Typed access to user memory (Asterinas's `VmReader`/`VmWriter`, Linux's `copy_{from,to}_user`).
//!
//! The kernel never holds a slice into user memory. Validation of a range of the current process
//! ([`validate`], through the hook the process layer installs: each page mapped user-accessible and
//! writable for a write, else made so by the process's areas, demand paging and copy-on-write, else
//! EFAULT) is the only way to get a [`UserReader`] or [`UserWriter`], and copying is the only way to
//! use one: `read`/`read_val` into kernel memory, `write`/`write_val` out of it.
//!
//! A copy survives the range changing under it (another thread's `munmap` or `mprotect` while the
//! caller slept between validation and copy): the copy routine itself is fault-safe
//! (`arch::mem::copy_user`, an exception-table fixup, as Linux's). A page fault at a user address on
//! its string instructions stops the copy short; the handle then asks the process's areas to make
//! that page usable (a page unmapped by the areas, or a copy-on-write page another fork made
//! read-only in the meantime) and goes on, or reports the bytes copied so far (EFAULT when none).
//! Partial progress is a count, as Linux's `copy_to_user` returning the bytes not copied.

use super::paging::{AddressSpace, USER, WRITABLE};
use super::PAGE_SIZE;
use crate::arch::layout::USER_END;
use crate::arch::mem;
use crate::sync::KCell;
use alloc::vec::Vec;
use core::mem::MaybeUninit;
use kcore::errno::Errno;

/// Checks `[va, va + len)`; a page not usable as it is goes to `resolve(aspace, page)`, which makes it
/// usable or says it cannot be (the process layer's validation hook is built on this).
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

/// Validates `[va, va + len)` of the current process for reading (`write` false) or writing;
/// `may_sleep`: whether it may wait for the OOM killer's victim when a page finds no frame (not
/// when called from inside a copy, whose caller may hold borrows of shared objects).
pub type Validator = fn(va: u64, len: u64, write: bool, may_sleep: bool) -> Result<(), Errno>;

fn no_process(_: u64, _: u64, _: bool, _: bool) -> Result<(), Errno> {
    Err(Errno::EFAULT)
}

static VALIDATOR: KCell<Validator> = KCell::new(no_process);

/// Installs the process layer's validation (at boot, before any process runs).
pub fn install(v: Validator) {
    *VALIDATOR.borrow_mut() = v;
}

/// Checks a user range of the current process, faulting pages in as its areas allow: EFAULT when
/// some page cannot be used.
/// A page that finds no frame invokes the OOM killer, as a user-mode fault does, and is tried again.
pub fn validate(va: u64, len: u64, write: bool) -> Result<(), Errno> {
    let v = *VALIDATOR.borrow();
    v(va, len, write, true)
}

/// [`validate`] for a page that faulted inside a copy: no sleeping.
fn revalidate(page: u64, write: bool) -> Result<(), Errno> {
    let v = *VALIDATOR.borrow();
    v(page, 1, write, false)
}

/// Plain data: any bit pattern is a valid value and it has no padding, so it can be copied in from
/// user memory byte for byte.
///
/// # Safety
/// Implement only for types for which every byte pattern of their size is a valid value.
pub unsafe trait Pod: Copy {}

// SAFETY: integers accept every bit pattern.
unsafe impl Pod for u8 {}
// SAFETY: as above.
unsafe impl Pod for u16 {}
// SAFETY: as above.
unsafe impl Pod for u32 {}
// SAFETY: as above.
unsafe impl Pod for u64 {}
// SAFETY: as above.
unsafe impl Pod for i32 {}
// SAFETY: as above.
unsafe impl Pod for i64 {}
// SAFETY: an array of plain data is plain data (no padding between elements).
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}

/// Copies between `kernel` (`n` bytes) and the user range at `user` in the direction given, resolving
/// pages that fault on the way; returns the bytes copied (fewer than `n` only when a page cannot be
/// made usable).
fn copy(kernel: *mut u8, user: u64, n: usize, to_user: bool) -> usize {
    let mut done = 0;
    let mut retried = u64::MAX;
    while done < n {
        let (k, u) = (kernel.wrapping_add(done), (user + done as u64) as *mut u8);
        let left = if to_user {
            // SAFETY: the kernel side is `n` valid bytes (the callers pass a kernel slice of that
            // length); the user side is below USER_END (checked when the handle was made) and a
            // fault there stops the copy.
            unsafe { mem::copy_user(u, k, n - done) }
        } else {
            // SAFETY: as above, in the other direction.
            unsafe { mem::copy_user(k, u, n - done) }
        };
        done = n - left;
        if left == 0 {
            break;
        }
        // The page that faulted: resolve it once through the areas (demand paging, copy-on-write),
        // then go on; a page that faults again, or cannot be resolved, ends the copy.
        let page = mem::last_copy_fault() & !(PAGE_SIZE - 1);
        if page == retried || revalidate(page, to_user).is_err() {
            break;
        }
        retried = page;
    }
    done
}

/// Checks the range against the user half and validates it.
fn make(va: u64, len: usize, write: bool) -> Result<(), Errno> {
    let end = va.checked_add(len as u64).ok_or(Errno::EFAULT)?;
    if end > USER_END {
        return Err(Errno::EFAULT);
    }
    validate(va, len as u64, write)
}

/// A validated range of the current process's memory to copy from, with a cursor.
pub struct UserReader {
    va: u64,
    len: usize,
    pos: usize,
}

impl UserReader {
    /// Validates `[va, va + len)` for reading (EFAULT when some page cannot be read).
    pub fn new(va: u64, len: usize) -> Result<Self, Errno> {
        make(va, len, false)?;
        Ok(UserReader { va, len, pos: 0 })
    }

    /// Bytes in the range.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes after the cursor.
    pub fn remaining(&self) -> usize {
        self.len - self.pos
    }

    /// Copies `dst.len()` bytes at offset `at` of the range (not moving the cursor), all or EFAULT.
    pub fn read_exact_at(&self, at: usize, dst: &mut [u8]) -> Result<(), Errno> {
        match self.read_at(at, dst)? {
            n if n == dst.len() => Ok(()),
            _ => Err(Errno::EFAULT),
        }
    }

    /// Copies up to `dst.len()` bytes at offset `at` of the range (not moving the cursor): the bytes
    /// copied, fewer than asked only at the end of the range or at a page that faulted; EFAULT when
    /// a fault stopped it before the first byte.
    pub fn read_at(&self, at: usize, dst: &mut [u8]) -> Result<usize, Errno> {
        let n = dst.len().min(self.len.saturating_sub(at));
        if n == 0 {
            return Ok(0);
        }
        match copy(dst.as_mut_ptr(), self.va + at as u64, n, false) {
            0 => Err(Errno::EFAULT),
            done => Ok(done),
        }
    }

    /// Reads one value at the cursor and moves past it (EFAULT past the end or at a fault).
    pub fn read_val<T: Pod>(&mut self) -> Result<T, Errno> {
        let mut v = MaybeUninit::<T>::uninit();
        let size = core::mem::size_of::<T>();
        if self.remaining() < size {
            return Err(Errno::EFAULT);
        }
        if size > 0
            && copy(
                v.as_mut_ptr().cast(),
                self.va + self.pos as u64,
                size,
                false,
            ) != size
        {
            return Err(Errno::EFAULT);
        }
        self.pos += size;
        // SAFETY: all `size` bytes were written by the copy and `T: Pod` accepts any bytes.
        Ok(unsafe { v.assume_init() })
    }
}

/// A validated range of the current process's memory to copy into, with a cursor.
pub struct UserWriter {
    va: u64,
    len: usize,
    pos: usize,
}

impl UserWriter {
    /// Validates `[va, va + len)` for writing (EFAULT when some page cannot be written; pages are
    /// faulted in and copied-on-write now).
    pub fn new(va: u64, len: usize) -> Result<Self, Errno> {
        make(va, len, true)?;
        Ok(UserWriter { va, len, pos: 0 })
    }

    /// Bytes in the range.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes after the cursor.
    pub fn remaining(&self) -> usize {
        self.len - self.pos
    }

    /// Copies `src` to offset `at` of the range (not moving the cursor): the bytes copied, fewer only
    /// at the end of the range or at a page that faulted; EFAULT when a fault stopped the first byte.
    pub fn write_at(&self, at: usize, src: &[u8]) -> Result<usize, Errno> {
        let n = src.len().min(self.len.saturating_sub(at));
        if n == 0 {
            return Ok(0);
        }
        // The kernel side is only read: the copy routine takes one pointer type for both directions.
        match copy(src.as_ptr().cast_mut(), self.va + at as u64, n, true) {
            0 => Err(Errno::EFAULT),
            done => Ok(done),
        }
    }

    /// Copies all of `src` to offset `at`, or EFAULT.
    pub fn write_all_at(&self, at: usize, src: &[u8]) -> Result<(), Errno> {
        match self.write_at(at, src)? {
            n if n == src.len() => Ok(()),
            _ => Err(Errno::EFAULT),
        }
    }

    /// Writes one value at the cursor and moves past it (EFAULT past the end or at a fault).
    pub fn write_val<T: Pod>(&mut self, v: &T) -> Result<(), Errno> {
        let size = core::mem::size_of::<T>();
        if self.remaining() < size {
            return Err(Errno::EFAULT);
        }
        // SAFETY: a Pod value is `size` initialized bytes.
        let bytes = unsafe { core::slice::from_raw_parts((v as *const T).cast::<u8>(), size) };
        self.write_all_at(self.pos, bytes)?;
        self.pos += size;
        Ok(())
    }
}

/// Reads one value from user address `va`.
pub fn read_val<T: Pod>(va: u64) -> Result<T, Errno> {
    UserReader::new(va, core::mem::size_of::<T>())?.read_val()
}

/// Writes one value to user address `va`.
pub fn write_val<T: Pod>(va: u64, v: &T) -> Result<(), Errno> {
    UserWriter::new(va, core::mem::size_of::<T>())?.write_val(v)
}

/// Copies `dst.len()` bytes from user address `va`, all or EFAULT.
pub fn copy_from_user(dst: &mut [u8], va: u64) -> Result<(), Errno> {
    UserReader::new(va, dst.len())?.read_exact_at(0, dst)
}

/// Copies `src` to user address `va`, all or EFAULT.
pub fn copy_to_user(va: u64, src: &[u8]) -> Result<(), Errno> {
    UserWriter::new(va, src.len())?.write_all_at(0, src)
}

/// A NUL-terminated string in the current process's memory, found by [`user_str`] (its length
/// without the NUL); read only by copying.
#[derive(Clone, Copy, Debug)]
pub struct UserStr {
    va: u64,
    len: usize,
}

impl UserStr {
    /// Its length without the NUL.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Copies its first `dst.len()` bytes (at most its length) into `dst`, all or EFAULT.
    pub fn copy_to(&self, dst: &mut [u8]) -> Result<(), Errno> {
        if dst.len() > self.len {
            return Err(Errno::EFAULT);
        }
        match copy(dst.as_mut_ptr(), self.va, dst.len(), false) {
            n if n == dst.len() => Ok(()),
            _ => Err(Errno::EFAULT),
        }
    }
}

/// Finds the NUL-terminated user string at `va`, looking at most `max` bytes: `Err(too_long)` when
/// there is no NUL in them, EFAULT at an unreadable page before the NUL. The scan reads user memory
/// in place with a fault-safe `repne scasb`, one page at a time, each page validated first.
pub fn user_str(va: u64, max: usize, too_long: Errno) -> Result<UserStr, Errno> {
    let mut len = 0usize;
    while len < max {
        let a = va.checked_add(len as u64).ok_or(Errno::EFAULT)?;
        if a >= USER_END {
            return Err(Errno::EFAULT);
        }
        validate(a, 1, false)?;
        let chunk = (((a | (PAGE_SIZE - 1)) + 1 - a) as usize).min(max - len);
        // SAFETY: the chunk lies within one user page below USER_END; a fault stops the scan.
        match unsafe { mem::user_find_nul(a as *const u8, chunk) } {
            Ok(Some(i)) => return Ok(UserStr { va, len: len + i }),
            Ok(None) => len += chunk,
            Err(()) => return Err(Errno::EFAULT),
        }
    }
    Err(too_long)
}

/// Copies the NUL-terminated user string at `va` (without its NUL) into a new vector, looking at most
/// `max` bytes (see [`user_str`]); ENOMEM when the heap cannot hold it.
pub fn read_cstr(va: u64, max: usize, too_long: Errno) -> Result<Vec<u8>, Errno> {
    let s = user_str(va, max, too_long)?;
    let mut out = Vec::new();
    out.try_reserve_exact(s.len).map_err(|_| Errno::ENOMEM)?;
    out.resize(s.len, 0);
    s.copy_to(&mut out)?;
    Ok(out)
}
