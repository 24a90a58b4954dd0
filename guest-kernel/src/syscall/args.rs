//! execve's argument and environment strings, bounded as Linux bounds them (fs/exec.c) and never
//! copied into the kernel heap: each string is found in place in the calling process's memory (a
//! fault-safe scan for its NUL, `mm::uaccess::user_str`) and the loader copies it straight into the
//! new program's stack frames (the old address space stays active until the new one is complete). The
//! kernel keeps only the list of `UserStr` handles (address and length), 16 bytes per string.
//!
//! Linux's limits: at most a quarter of the stack limit (8 MiB -> 2 MiB, but at least 128 KiB) for
//! all strings, NULs and pointers, the filename included; `MAX_ARG_STRLEN` (32 pages) per string;
//! `MAX_ARG_STRINGS` strings per list. Past any of them: E2BIG.

use crate::mm::uaccess::{self, UserStr};
use crate::proc::exec::ArgStr;
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
    uaccess::read_val(va)
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

/// The NUL-terminated user string at `va` (its NUL not counted): E2BIG past `MAX_ARG_STRLEN` (NUL
/// included), EFAULT if unmapped before its end.
fn user_str(va: u64) -> Result<UserStr, Errno> {
    uaccess::user_str(va, MAX_ARG_STRLEN as usize, Errno::E2BIG)
}

/// The strings of execve's `argv` and `envp` (user arrays) for `filename_len` bytes of filename, in
/// one list: `argv` first, then `envp`, then room for `extra` more; and the number of `argv` strings.
pub fn collect(
    argv: u64,
    envp: u64,
    filename_len: u64,
    extra: usize,
) -> Result<(Vec<ArgStr<'static>>, usize), Errno> {
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
        out.push(ArgStr::User(s));
    }
    for i in 0..argc {
        let s = user_str(read_ptr(argv + 8 * i)?)?;
        take(s.len() as u64)?;
        out.push(ArgStr::User(s));
    }
    out.rotate_left(envc as usize);
    Ok((out, argc as usize))
}
