//! poll, ppoll, select and pselect6 over pipes, the console, sockets and plain files.
//!
//! Each round computes every descriptor's readiness; if none is ready the process sleeps once on the
//! wait queues of all of them (`sync::waitqueue::wait_any`: a pipe's, the console's, each socket's) with
//! the timeout as deadline, and the next round rechecks. Files without a queue are always ready. The
//! signal masks of ppoll/pselect6 replace the caller's for the wait ([`with_sigmask`]). A restarted call
//! starts its timeout over.
#![deny(unsafe_code)]

use super::file::{check_user, copy_to_user};
use super::SysResult;
use crate::fs;
use crate::proc::with_current;
use crate::sync::waitqueue::{self, WaitQueue};
use alloc::vec::Vec;
use kcore::errno::Errno;

pub use crate::fs::file::{POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, POLLPRI};

/// The events of `fd` among `events` (POLLERR/POLLHUP/POLLNVAL always); the queues that will be woken
/// when they change are added to `queues`.
fn poll_one(fd: i64, events: u16, queues: &mut Vec<WaitQueue>) -> u16 {
    match with_current(|p| p.fds.get(fd)) {
        Ok(f) => poll_file(&f, events, queues, 0),
        Err(_) => POLLNVAL,
    }
}

/// The events of the open file `f` among `events` (POLLERR/POLLHUP always), adding the queues that
/// announce its changes to `queues`. An epoll instance is readable while one of its entries is ready
/// (`depth` stops the descent at one level of nesting). Files without a queue (ext2, /proc, /dev/null)
/// are always ready.
pub fn poll_file(f: &fs::FileRef, events: u16, queues: &mut Vec<WaitQueue>, depth: u32) -> u16 {
    // What was asked for, plus the conditions that are always reported.
    f.ops.poll(f, queues, depth) & (events | POLLHUP | POLLERR)
}

/// Waits until one of `fds` (fd, events) is ready, the deadline passes or a signal comes; fills in
/// the revents and returns how many are non-zero.
fn wait_ready(
    fds: &[(i64, u16)],
    revents: &mut [u16],
    deadline: Option<u64>,
) -> Result<u64, Errno> {
    loop {
        let mut ready = 0;
        let mut chans: Vec<WaitQueue> = Vec::new();
        for (i, &(fd, events)) in fds.iter().enumerate() {
            let rev = if fd < 0 {
                0
            } else {
                poll_one(fd, events, &mut chans)
            };
            revents[i] = rev;
            if rev != 0 {
                ready += 1;
            }
        }
        if ready > 0 || deadline.is_some_and(|d| crate::time::now_ns() >= d) {
            return Ok(ready);
        }
        // A signal: restarted if no handler runs, else EINTR (Linux: ERESTARTNOHAND).
        waitqueue::wait_any(&chans, deadline).map_err(|_| Errno::ERESTARTNOHAND)?;
    }
}

fn deadline_after_ns(ns: u64) -> u64 {
    crate::time::now_ns().saturating_add(ns)
}

/// A `struct timespec` / `struct timeval` at `va` as nanoseconds (`unit` ns per second fraction unit).
fn read_time(va: u64, unit: u64) -> Result<u64, Errno> {
    let [sec, frac] = crate::mm::uaccess::read_val::<[i64; 2]>(va)?;
    if sec < 0 || frac < 0 || (frac as u64).saturating_mul(unit) >= 1_000_000_000 {
        return Err(Errno::EINVAL);
    }
    Ok((sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(frac as u64 * unit))
}

fn poll_common(fds: u64, nfds: u64, deadline: Option<u64>) -> SysResult {
    if nfds > crate::fs::fd::MAX_FDS as u64 {
        return Err(Errno::EINVAL);
    }
    // Validated for writing: revents go back into the same array.
    check_user(fds, nfds * 8, true)?;
    let mut raw: Vec<u8> = Vec::new();
    raw.try_reserve_exact((nfds * 8) as usize)
        .map_err(|_| Errno::ENOMEM)?;
    raw.resize((nfds * 8) as usize, 0);
    crate::mm::uaccess::copy_from_user(&mut raw, fds)?;
    let list: Vec<(i64, u16)> = raw
        .chunks_exact(8)
        .map(|e| {
            (
                i32::from_le_bytes([e[0], e[1], e[2], e[3]]) as i64,
                u16::from_le_bytes([e[4], e[5]]),
            )
        })
        .collect();
    let mut revents = alloc::vec![0u16; list.len()];
    let n = wait_ready(&list, &mut revents, deadline)?;
    for (e, r) in raw.chunks_exact_mut(8).zip(revents) {
        e[6..8].copy_from_slice(&r.to_le_bytes());
    }
    copy_to_user(fds, &raw)?;
    Ok(n)
}

pub fn sys_poll(fds: u64, nfds: u64, timeout_ms: i64) -> SysResult {
    let deadline = (timeout_ms >= 0).then(|| deadline_after_ns(timeout_ms as u64 * 1_000_000));
    poll_common(fds, nfds, deadline)
}

pub fn sys_ppoll(fds: u64, nfds: u64, ts: u64, sigmask: u64, sigsetsize: u64) -> SysResult {
    let deadline = if ts == 0 {
        None
    } else {
        Some(deadline_after_ns(read_time(ts, 1)?))
    };
    let r = with_sigmask(sigmask, sigsetsize, || poll_common(fds, nfds, deadline));
    write_time_left(ts, deadline, 1);
    r
}

/// Writes the time left until `deadline` back over the caller's timeout at `va` (`unit` ns per
/// fraction unit: a timeval's microseconds or a timespec's nanoseconds), as Linux's
/// poll_select_finish does for select, pselect6 and ppoll (0 once it passed; a copy that fails is
/// ignored: the call's result stands). The C libraries' pselect and ppoll pass a copy.
fn write_time_left(va: u64, deadline: Option<u64>, unit: u64) {
    let Some(deadline) = deadline else {
        return;
    };
    let left = deadline.saturating_sub(crate::time::now_ns());
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(left / 1_000_000_000).to_le_bytes());
    b[8..].copy_from_slice(&((left % 1_000_000_000) / unit).to_le_bytes());
    let _ = copy_to_user(va, &b);
}

/// Runs a wait with the signal mask at `sigmask` (if not null) in place of the caller's, as ppoll,
/// pselect6 and epoll_pwait do: the old mask comes back when the call returns, or, when a signal
/// interrupts it, after that signal's handler (the handler's frame carries it; Linux's
/// saved_sigmask). EINVAL unless `sigsetsize` is 8.
pub fn with_sigmask(sigmask: u64, sigsetsize: u64, wait: impl FnOnce() -> SysResult) -> SysResult {
    if sigmask == 0 {
        return wait();
    }
    if sigsetsize != 8 {
        return Err(Errno::EINVAL);
    }
    let m: u64 = crate::mm::uaccess::read_val(sigmask)?;
    crate::proc::signal::suspend_mask(m);
    let r = wait();
    if r != Err(Errno::ERESTARTNOHAND) {
        crate::proc::signal::restore_saved_mask();
    }
    r
}

/// select and pselect6: the three fd_set bitmaps become a poll list and back.
fn select_common(nfds: u64, sets: [u64; 3], deadline: Option<u64>) -> SysResult {
    if nfds > crate::fs::fd::MAX_FDS as u64 {
        return Err(Errno::EINVAL);
    }
    let bytes = (nfds as usize).div_ceil(64) * 8;
    let mut bits: [Vec<u8>; 3] = Default::default();
    for (i, &va) in sets.iter().enumerate() {
        if va != 0 {
            // Validated for writing: the result sets go back into the same bitmaps.
            check_user(va, bytes as u64, true)?;
            let mut b = Vec::new();
            b.try_reserve_exact(bytes).map_err(|_| Errno::ENOMEM)?;
            b.resize(bytes, 0);
            crate::mm::uaccess::copy_from_user(&mut b, va)?;
            bits[i] = b;
        }
    }
    let is_set = |b: &Vec<u8>, fd: usize| b.get(fd / 8).is_some_and(|x| x & (1 << (fd % 8)) != 0);
    let mut list = Vec::new();
    for fd in 0..nfds as usize {
        let mut ev = 0;
        if is_set(&bits[0], fd) {
            ev |= POLLIN;
        }
        if is_set(&bits[1], fd) {
            ev |= POLLOUT;
        }
        if is_set(&bits[2], fd) {
            ev |= POLLPRI;
        }
        if ev != 0 {
            if with_current(|p| p.fds.get(fd as i64)).is_err() {
                return Err(Errno::EBADF);
            }
            list.push((fd as i64, ev));
        }
    }
    let mut revents = alloc::vec![0u16; list.len()];
    wait_ready(&list, &mut revents, deadline)?;
    let mut out: [Vec<u8>; 3] = [
        alloc::vec![0; bytes],
        alloc::vec![0; bytes],
        alloc::vec![0; bytes],
    ];
    let mut count = 0;
    for (&(fd, ev), &rev) in list.iter().zip(revents.iter()) {
        let fd = fd as usize;
        let hits = [
            ev & POLLIN != 0 && rev & (POLLIN | POLLHUP | POLLERR) != 0,
            ev & POLLOUT != 0 && rev & (POLLOUT | POLLERR) != 0,
            ev & POLLPRI != 0 && rev & POLLPRI != 0,
        ];
        for (set, hit) in out.iter_mut().zip(hits) {
            if hit {
                set[fd / 8] |= 1 << (fd % 8);
                count += 1;
            }
        }
    }
    for (i, &va) in sets.iter().enumerate() {
        if va != 0 {
            copy_to_user(va, &out[i])?;
        }
    }
    Ok(count)
}

pub fn sys_select(nfds: u64, r: u64, w: u64, e: u64, tv: u64) -> SysResult {
    let deadline = if tv == 0 {
        None
    } else {
        Some(deadline_after_ns(read_time(tv, 1000)?))
    };
    let res = select_common(nfds, [r, w, e], deadline);
    write_time_left(tv, deadline, 1000);
    res
}

/// pselect6: the sixth argument points at `{ const sigset_t *ss; size_t ss_len; }`.
pub fn sys_pselect6(nfds: u64, r: u64, w: u64, e: u64, ts: u64, sig: u64) -> SysResult {
    let deadline = if ts == 0 {
        None
    } else {
        Some(deadline_after_ns(read_time(ts, 1)?))
    };
    let (mask, size) = if sig == 0 {
        (0, 0)
    } else {
        let [mask, size] = crate::mm::uaccess::read_val::<[u64; 2]>(sig)?;
        (mask, size)
    };
    let res = with_sigmask(mask, size, || select_common(nfds, [r, w, e], deadline));
    write_time_left(ts, deadline, 1);
    res
}
