//! The C memory functions the compiler and `core` call: `memcpy`, `memmove`, `memset`, `memcmp`, `bcmp`.
//! Written with string instructions in inline assembly so the compiler cannot turn them back into calls
//! to themselves.

use core::arch::asm;

/// # Safety
/// `dst` and `src` must be valid for `n` bytes and not overlap.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid; `rep movsq` then `rep movsb` copy forwards
    // (each repetition is emulated here, so whole quadwords first).
    unsafe {
        asm!("rep movsq", "mov ecx, {tail:e}", "rep movsb",
             tail = in(reg) n & 7,
             inout("rcx") n >> 3 => _, inout("rdi") dst => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// `dst` and `src` must be valid for `n` bytes; they may overlap.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: a forward copy is correct when dst is below src or the ranges do not overlap.
        return unsafe { memcpy(dst, src, n) };
    }
    // SAFETY: copy backwards (DF set): whole quadwords from the end first, then the bytes left at the
    // start (each repetition is emulated here, so a byte-wise backward copy would cost 8 times as much).
    // Going down, every source byte is read before the overlapping destination overwrites it.
    unsafe {
        let tail = n & 7;
        asm!("std", "rep movsq", "cld",
             inout("rcx") n >> 3 => _, inout("rdi") dst.add(n).wrapping_sub(8) => _,
             inout("rsi") src.add(n).wrapping_sub(8) => _, options(nostack));
        if tail != 0 {
            asm!("std", "rep movsb", "cld",
                 inout("rcx") tail => _, inout("rdi") dst.add(tail - 1) => _,
                 inout("rsi") src.add(tail - 1) => _, options(nostack));
        }
    }
    dst
}

/// # Safety
/// `dst` must be valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    let byte = c as u8 as u64;
    let pattern = byte * 0x0101_0101_0101_0101;
    // SAFETY: the caller guarantees the range is valid; quadwords first, then the tail bytes.
    unsafe {
        asm!("rep stosq", "mov ecx, {tail:e}", "rep stosb",
             tail = in(reg) n & 7,
             inout("rcx") n >> 3 => _, inout("rdi") dst => _, in("rax") pattern,
             options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// `a` and `b` must be valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n and the caller guarantees both ranges are valid.
        let (x, y) = unsafe {
            (
                core::ptr::read_volatile(a.add(i)),
                core::ptr::read_volatile(b.add(i)),
            )
        };
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

/// # Safety
/// `a` and `b` must be valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// Zeroes one 4 KiB page with `rep stosq` (512 iterations instead of 4096).
///
/// # Safety
/// `page` must be a writable, 8-byte-aligned 4 KiB region.
pub unsafe fn zero_page(page: *mut u8) {
    // SAFETY: the caller guarantees the page is valid and writable.
    unsafe {
        asm!("rep stosq", inout("rcx") 512usize => _, inout("rdi") page => _, in("rax") 0u64,
             options(nostack, preserves_flags));
    }
}

/// Zeroes `n` quadwords at `p` with `rep stosq`.
///
/// # Safety
/// `p` must be valid for `n` writable, aligned `u64`s.
pub unsafe fn zero_u64s(p: *mut u64, n: usize) {
    // SAFETY: the caller guarantees the range is valid and writable.
    unsafe {
        asm!("rep stosq", inout("rcx") n => _, inout("rdi") p => _, in("rax") 0u64,
             options(nostack, preserves_flags));
    }
}

/// The index of the first nonzero entry of `table[from..end]` (`end` if none), found with `repe scasq`:
/// one emulated iteration per entry instead of a loop of several instructions (page-table walks over
/// mostly empty tables are most of fork's and exit's kernel time here).
///
/// # Safety
/// `table` must point to at least `end` readable `u64`s, `from <= end`.
pub unsafe fn first_nonzero(table: *const u64, from: usize, end: usize) -> usize {
    if from >= end {
        return end;
    }
    let left: usize;
    // SAFETY: the caller guarantees the range is readable; DF is clear in the kernel.
    unsafe {
        asm!("repe scasq",
             inout("rcx") end - from => left, inout("rdi") table.add(from) => _, in("rax") 0u64,
             options(nostack, readonly));
    }
    // rcx counts down once per compared entry; if the last compared one was nonzero, it is at
    // end - left - 1; if all were zero, left == 0 and the last compare was equal.
    let idx = end - left - 1;
    // SAFETY: idx < end.
    if unsafe { *table.add(idx) } != 0 {
        idx
    } else {
        end
    }
}

/// The prebuilt `core` was compiled with unwinding: these symbols must exist, but with panic=abort they
/// are never called.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}

#[no_mangle]
pub extern "C" fn _Unwind_Resume() -> ! {
    super::cpu::debug_exit(0x7f)
}

/// The index of the first zero byte of `s` (`None` if it has none), found with `repne scasb`: one
/// emulated iteration per byte instead of a loop of several instructions (execve scans up to 2 MiB of
/// argument strings).
pub fn find_nul(s: &[u8]) -> Option<usize> {
    if s.is_empty() {
        return None;
    }
    let left: usize;
    // SAFETY: reads only `s`; DF is clear in the kernel.
    unsafe {
        asm!("repne scasb",
             inout("rcx") s.len() => left, inout("rdi") s.as_ptr() => _, in("al") 0u8,
             options(nostack, readonly));
    }
    // rcx counts down once per byte compared, the matching one included.
    let scanned = s.len() - left;
    (s[scanned - 1] == 0).then(|| scanned - 1)
}
