//! execve's argument and environment strings, bounded as Linux bounds them (fs/exec.c) and never
//! copied into the kernel heap: each string is checked in place in the calling process's memory and
//! the loader writes it straight into the new program's stack frames (the old address space stays
//! active, and nothing runs in between: one CPU, kernel code is not preempted and the loader does not
//! sleep). The kernel keeps only the list of (address, length) views, 16 bytes per string.
//!
//! Linux's limits: at most a quarter of the stack limit (8 MiB -> 2 MiB, but at least 128 KiB) for
//! all strings, NULs and pointers, the filename included; `MAX_ARG_STRLEN` (32 pages) per string;
//! `MAX_ARG_STRINGS` strings per list. Past any of them: E2BIG.

use super::file::check_user;
use crate::proc::STACK_LIMIT;
use alloc::vec::Vec;
use kcore::errno::Errno;

/// Longest single string, its NUL included (Linux: 32 pages).
pub const MAX_ARG_STRLEN: u64 = 32 * 4096;
/// Most strings in one list.
pub const MAX_ARG_STRINGS: u64 = 0x7fff_ffff;
/// The least room for arguments whatever the stack limit (Linux's ARG_MAX, 32 pages).
const ARG_MIN_ROOM: u64 = 32 * 4096;

/// Bytes the strings (with NULs), the filename and the pointers may take: Linux's
/// `bprm_stack_limits` with an 8 MiB stack limit, 2 MiB.
pub fn limit() -> u64 {
    (STACK_LIMIT / 4).clamp(ARG_MIN_ROOM, 8 * 1024 * 1024 / 4 * 3)
}

fn read_ptr(va: u64) -> Result<u64, Errno> {
    check_user(va, 8, false)?;
    let b = crate::mm::uaccess::checked_slice(va, 8);
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_le_bytes(a))
}

/// The number of pointers before the NULL in the user array at `va` (0 for a null array); E2BIG as
/// soon as the pointers alone pass `max_ptrs`.
fn count(va: u64, max_ptrs: u64) -> Result<u64, Errno> {
    if va == 0 {
        return Ok(0);
    }
    let mut n = 0;
    while read_ptr(va + 8 * n)? != 0 {
        n += 1;
        if n > MAX_ARG_STRINGS || n > max_ptrs {
            return Err(Errno::E2BIG);
        }
    }
    Ok(n)
}

/// A view of the NUL-terminated user string at `va` without its NUL: E2BIG past `MAX_ARG_STRLEN`
/// (NUL included), EFAULT if unmapped before its end.
fn user_str(va: u64) -> Result<&'static [u8], Errno> {
    let mut len = 0u64;
    loop {
        let a = va.checked_add(len).ok_or(Errno::EFAULT)?;
        let chunk = ((a | 0xfff) + 1 - a).min(MAX_ARG_STRLEN + 1 - len);
        check_user(a, chunk, false)?;
        let bytes = crate::mm::uaccess::checked_slice(a, chunk as usize);
        if let Some(i) = crate::arch::mem::find_nul(bytes) {
            len += i as u64;
            break;
        }
        len += chunk;
        if len > MAX_ARG_STRLEN {
            return Err(Errno::E2BIG);
        }
    }
    if len + 1 > MAX_ARG_STRLEN {
        return Err(Errno::E2BIG);
    }
    check_user(va, len, false)?;
    Ok(crate::mm::uaccess::checked_slice(va, len as usize))
}

/// The strings of execve's `argv` and `envp` (user arrays) for `filename_len` bytes of filename, in
/// one list: `argv` first, then `envp`, then room for `extra` more; and the number of `argv` strings.
pub fn collect(
    argv: u64,
    envp: u64,
    filename_len: u64,
    extra: usize,
) -> Result<(Vec<&'static [u8]>, usize), Errno> {
    let limit = limit();
    let argc = count(argv, limit / 8)?;
    let envc = count(envp, limit / 8)?;
    let ptr_size = (argc + envc) * 8;
    if limit <= ptr_size {
        return Err(Errno::E2BIG);
    }
    let mut room = limit - ptr_size;
    let mut take = |len: u64| -> Result<(), Errno> {
        room = room.checked_sub(len + 1).ok_or(Errno::E2BIG)?;
        Ok(())
    };
    take(filename_len)?;
    let mut out = Vec::new();
    out.try_reserve_exact((argc + envc) as usize + extra)
        .map_err(|_| Errno::ENOMEM)?;
    // Linux copies the environment first, then the arguments; the first failure is what it reports.
    for i in 0..envc {
        let s = user_str(read_ptr(envp + 8 * i)?)?;
        take(s.len() as u64)?;
        out.push(s);
    }
    for i in 0..argc {
        let s = user_str(read_ptr(argv + 8 * i)?)?;
        take(s.len() as u64)?;
        out.push(s);
    }
    out.rotate_left(envc as usize);
    Ok((out, argc as usize))
}
