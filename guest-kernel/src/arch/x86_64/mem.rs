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

// The fault-safe user copy (Linux's `copy_user_generic` with its exception table): `rep movsq` then
// `rep movsb`, as memcpy. A page fault at a user address on either instruction does not panic: the
// page-fault handler ([`user_copy_fixup`]) resumes at the matching fixup label, which returns the
// bytes not copied (RCX counts the repetitions left, RDX the tail still to go).
core::arch::global_asm!(
    ".section .text.copy_user, \"ax\"",
    ".global microvm_copy_user",
    "microvm_copy_user:",
    "mov rcx, rdx",
    "shr rcx, 3",
    "and edx, 7",
    ".global microvm_copy_user_q",
    "microvm_copy_user_q:",
    "rep movsq",
    "mov ecx, edx",
    ".global microvm_copy_user_b",
    "microvm_copy_user_b:",
    "rep movsb",
    "xor eax, eax",
    "ret",
    ".global microvm_copy_user_fix_q",
    "microvm_copy_user_fix_q:",
    "lea rax, [rdx + rcx * 8]",
    "ret",
    ".global microvm_copy_user_fix_b",
    "microvm_copy_user_fix_b:",
    "mov rax, rcx",
    "ret",
    // The NUL scan (Linux's strnlen_user): rdi = start, rsi = length; rax = the NUL's index, the
    // length when there is none, or -1 when a fault stopped the scan.
    ".global microvm_user_scan",
    "microvm_user_scan:",
    "mov rcx, rsi",
    "xor eax, eax",
    "test rcx, rcx",
    "jz 2f",
    ".global microvm_user_scan_i",
    "microvm_user_scan_i:",
    "repne scasb",
    "jne 2f",
    "mov rax, rsi",
    "sub rax, rcx",
    "dec rax",
    "ret",
    "2:",
    "mov rax, rsi",
    "ret",
    ".global microvm_user_scan_fix",
    "microvm_user_scan_fix:",
    "mov rax, -1",
    "ret",
    ".text",
);

extern "C" {
    fn microvm_copy_user(dst: *mut u8, src: *const u8, n: usize) -> usize;
    static microvm_copy_user_q: u8;
    static microvm_copy_user_b: u8;
    static microvm_copy_user_fix_q: u8;
    static microvm_copy_user_fix_b: u8;
    fn microvm_user_scan(p: *const u8, n: usize) -> usize;
    static microvm_user_scan_i: u8;
    static microvm_user_scan_fix: u8;
}

/// The user address of the last fault [`user_copy_fixup`] took (read by the copy's caller to resolve
/// that page and try again).
static LAST_COPY_FAULT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// Faults in a user copy resumed at a fixup since boot.
static COPY_FAULTS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Copies `n` bytes from `src` to `dst`, one of which is user memory, and returns how many bytes were
/// NOT copied (0: all of them): a page fault on the user side stops the copy instead of panicking.
/// After a short copy, [`last_copy_fault`] is the user address that faulted.
///
/// # Safety
/// The kernel side must be valid for `n` bytes; the user side must lie wholly below `USER_END`
/// (user addresses of the current address space, mapped or not). The ranges must not overlap.
pub unsafe fn copy_user(dst: *mut u8, src: *const u8, n: usize) -> usize {
    // SAFETY: guaranteed by the caller; a fault on the user side resumes at a fixup (see above).
    unsafe { microvm_copy_user(dst, src, n) }
}

/// The index of the first zero byte of the `n` user bytes at `p` (`Ok(None)` when there is none), with
/// `repne scasb`; `Err(())` when a page fault at a user address stopped the scan.
///
/// # Safety
/// `[p, p + n)` must lie wholly below `USER_END` (user addresses of the current address space).
pub unsafe fn user_find_nul(p: *const u8, n: usize) -> Result<Option<usize>, ()> {
    // SAFETY: guaranteed by the caller; a fault resumes at the fixup, which returns -1.
    match unsafe { microvm_user_scan(p, n) } {
        usize::MAX => Err(()),
        i if i == n => Ok(None),
        i => Ok(Some(i)),
    }
}

/// The user address the last interrupted user copy faulted at.
pub fn last_copy_fault() -> u64 {
    LAST_COPY_FAULT.load(core::sync::atomic::Ordering::Relaxed)
}

/// User copies that faulted and were resumed at their fixup, since boot.
pub fn copy_faults() -> u64 {
    COPY_FAULTS.load(core::sync::atomic::Ordering::Relaxed)
}

/// The exception table: for a kernel-mode page fault at `rip` on user address `addr`, the address to
/// resume at when `rip` is one of the user copy's two string instructions; None otherwise (a kernel bug).
pub fn user_copy_fixup(rip: u64, addr: u64) -> Option<u64> {
    if addr >= super::layout::USER_END {
        return None;
    }
    let q = &raw const microvm_copy_user_q as u64;
    let b = &raw const microvm_copy_user_b as u64;
    let fix = if rip == q {
        &raw const microvm_copy_user_fix_q as u64
    } else if rip == b {
        &raw const microvm_copy_user_fix_b as u64
    } else if rip == &raw const microvm_user_scan_i as u64 {
        &raw const microvm_user_scan_fix as u64
    } else {
        return None;
    };
    LAST_COPY_FAULT.store(addr, core::sync::atomic::Ordering::Relaxed);
    COPY_FAULTS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    Some(fix)
}
