//! Process system calls: fork/vfork (clone: `thread.rs`), execve, exit/exit_group, wait4, kill/tgkill, process groups
//! and sessions, signal actions and masks, rt_sigreturn, sleeping, sched_yield, prctl.
#![deny(unsafe_code)]

use super::file::{copy_to_user, user_cstr};
use super::SysResult;
use crate::arch::trap::TrapFrame;
use crate::proc::exit::Waited;
use crate::proc::signal::{self, SigAction};
use crate::proc::{self, sched, with_current, with_table, Pid, State};
use kcore::errno::Errno;

pub fn sys_fork(frame: &TrapFrame) -> SysResult {
    proc::fork::fork(frame, 0, 0).map(|p| p.0 as u64)
}

pub fn sys_vfork(frame: &TrapFrame) -> SysResult {
    proc::fork::vfork(frame, 0, 0).map(|p| p.0 as u64)
}

fn read_u64(va: u64) -> Result<u64, Errno> {
    crate::mm::uaccess::read_val(va)
}

pub fn sys_execve(frame: &mut TrapFrame, path: u64, argv: u64, envp: u64) -> SysResult {
    let name = user_cstr(path)?;
    let path = super::path::absolute_path(name.clone())?;
    let (mut strs, argc) = super::args::collect(argv, envp, name.len() as u64, 1)?;
    if proc::exec::needs_tunable(&strs[argc..]) {
        strs.push(proc::exec::ArgStr::Kernel(proc::exec::NO_AVX_TUNABLE));
    }
    let (a, e) = strs.split_at(argc);
    proc::exec::exec_current(frame, &path, a, e).map(|_| 0)
}

pub fn sys_exit(code: i32) -> SysResult {
    proc::exit::exit_current(kcore::wait::exited(code))
}

pub fn sys_wait4(pid: i32, status: u64, options: u32, rusage: u64) -> SysResult {
    match proc::exit::wait(pid, options)? {
        Waited::None => Ok(0),
        Waited::Child(p, s, usage) => {
            if status != 0 {
                crate::mm::uaccess::write_val(status, &s)?;
            }
            if rusage != 0 {
                copy_to_user(rusage, &super::sched::rusage_bytes(&usage))?;
            }
            Ok(p.0 as u64)
        }
    }
}

pub fn sys_kill(pid: i32, sig: u32) -> SysResult {
    signal::kill(pid, sig).map(|_| 0)
}

/// tgkill: a signal to thread `tid` of group `tgid` (ESRCH if it is not one of its threads).
pub fn sys_tgkill(tgid: i32, tid: i32, sig: u32) -> SysResult {
    if tgid <= 0 || tid <= 0 {
        return Err(Errno::EINVAL);
    }
    let group = proc::with_proc(Pid(tid as u32), |p| p.tgid).ok_or(Errno::ESRCH)?;
    if group != Pid(tgid as u32) {
        return Err(Errno::ESRCH);
    }
    signal::send_thread(Pid(tid as u32), sig).map(|_| 0)
}

/// tkill: a signal to thread `tid` (every process is one thread here, so its pid; musl's raise).
pub fn sys_tkill(tid: i32, sig: u32) -> SysResult {
    if tid <= 0 {
        return Err(Errno::EINVAL);
    }
    signal::send_thread(Pid(tid as u32), sig).map(|_| 0)
}

fn target(pid: i32) -> Result<Pid, Errno> {
    if pid < 0 {
        return Err(Errno::EINVAL);
    }
    Ok(if pid == 0 {
        proc::current_pid()
    } else {
        Pid(pid as u32)
    })
}

pub fn sys_getpgid(pid: i32) -> SysResult {
    let t = target(pid)?;
    proc::with_proc(t, |p| p.pgid.0 as u64).ok_or(Errno::ESRCH)
}

pub fn sys_getsid(pid: i32) -> SysResult {
    let t = target(pid)?;
    proc::with_proc(t, |p| p.sid.0 as u64).ok_or(Errno::ESRCH)
}

pub fn sys_setsid() -> SysResult {
    let me = proc::current_pid();
    with_table(|t| {
        if t.values().any(|p| p.pgid == me) {
            return Err(Errno::EPERM);
        }
        let p = t.get_mut(&me).ok_or(Errno::ESRCH)?;
        p.sid = me;
        p.pgid = me;
        // A new session has no controlling terminal.
        p.ctty = false;
        Ok(me.0 as u64)
    })
}

/// setpgid: the caller or one of its children (not after exec: not tracked), within the session.
pub fn sys_setpgid(pid: i32, pgid: i32) -> SysResult {
    if pgid < 0 {
        return Err(Errno::EINVAL);
    }
    let me = proc::current_pid();
    let t = target(pid)?;
    let pg = if pgid == 0 { t } else { Pid(pgid as u32) };
    with_table(|tab| {
        let my_sid = tab.get(&me).map(|p| p.sid).ok_or(Errno::ESRCH)?;
        let p = tab.get(&t).ok_or(Errno::ESRCH)?;
        if t != me && p.ppid != me {
            return Err(Errno::ESRCH);
        }
        if p.sid != my_sid || p.sid == t {
            return Err(Errno::EPERM);
        }
        if pg != t && !tab.values().any(|q| q.pgid == pg && q.sid == my_sid) {
            return Err(Errno::EPERM);
        }
        tab.get_mut(&t).ok_or(Errno::ESRCH)?.pgid = pg;
        Ok(0)
    })
}

fn read_sigaction(va: u64) -> Result<SigAction, Errno> {
    Ok(SigAction {
        handler: read_u64(va)?,
        flags: read_u64(va + 8)?,
        restorer: read_u64(va + 16)?,
        mask: read_u64(va + 24)?,
    })
}

pub fn sys_rt_sigaction(sig: u32, act: u64, oldact: u64, sigsetsize: u64) -> SysResult {
    if sigsetsize != 8 {
        return Err(Errno::EINVAL);
    }
    let new = if act != 0 {
        Some(read_sigaction(act)?)
    } else {
        None
    };
    let old = signal::sigaction(sig, new)?;
    if oldact != 0 {
        let mut b = [0u8; 32];
        for (i, v) in [old.handler, old.flags, old.restorer, old.mask]
            .iter()
            .enumerate()
        {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        copy_to_user(oldact, &b)?;
    }
    Ok(0)
}

pub fn sys_rt_sigprocmask(how: u32, set: u64, oldset: u64, sigsetsize: u64) -> SysResult {
    if sigsetsize != 8 {
        return Err(Errno::EINVAL);
    }
    let new = if set != 0 { Some(read_u64(set)?) } else { None };
    let old = signal::sigprocmask(how, new)?;
    if oldset != 0 {
        copy_to_user(oldset, &old.to_le_bytes())?;
    }
    Ok(0)
}

pub fn sys_rt_sigreturn(frame: &mut TrapFrame) -> SysResult {
    match signal::sigreturn(frame) {
        Ok(rax) => Ok(rax),
        Err(_) => proc::exit::die(kcore::wait::signaled(signal::SIGSEGV, false)),
    }
}

/// Sleeps until `deadline`. Interrupted: writes the time left to `rem` (if not 0) and returns
/// ERESTART_RESTARTBLOCK: EINTR if a handler runs, else restart_syscall sleeps on to the same deadline.
fn sleep_ns(deadline: u64, rem: u64) -> SysResult {
    if sched::sleep_until(deadline) {
        return Ok(0);
    }
    proc::with_current(|p| p.restart_sleep = Some((deadline, rem)));
    if rem != 0 {
        let left = deadline.saturating_sub(crate::time::now_ns());
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&(left / 1_000_000_000).to_le_bytes());
        b[8..].copy_from_slice(&(left % 1_000_000_000).to_le_bytes());
        copy_to_user(rem, &b)?;
    }
    Err(Errno::ERESTART_RESTARTBLOCK)
}

/// restart_syscall: continues a sleep interrupted by a signal that ran no handler.
pub fn sys_restart_syscall() -> SysResult {
    match proc::with_current(|p| p.restart_sleep.take()) {
        Some((deadline, rem)) => sleep_ns(deadline, rem),
        None => Err(Errno::EINTR),
    }
}

fn read_timespec(va: u64) -> Result<u64, Errno> {
    let s = read_u64(va)? as i64;
    let ns = read_u64(va + 8)? as i64;
    if s < 0 || !(0..1_000_000_000).contains(&ns) {
        return Err(Errno::EINVAL);
    }
    Ok((s as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ns as u64))
}

pub fn sys_nanosleep(req: u64, rem: u64) -> SysResult {
    let d = read_timespec(req)?;
    sleep_ns(crate::time::now_ns().saturating_add(d), rem)
}

const TIMER_ABSTIME: u32 = 1;

pub fn sys_clock_nanosleep(clock: u32, flags: u32, req: u64, rem: u64) -> SysResult {
    if !matches!(clock, 0 | 1 | 7) {
        return Err(Errno::EINVAL);
    }
    let d = read_timespec(req)?;
    if flags & TIMER_ABSTIME != 0 {
        // An absolute sleep is restarted with the same arguments (Linux: ERESTARTNOHAND).
        return if sched::sleep_until(d) {
            Ok(0)
        } else {
            Err(Errno::ERESTARTNOHAND)
        };
    }
    sleep_ns(crate::time::now_ns().saturating_add(d), rem)
}

/// rt_sigsuspend: sleeps with `set` as the mask until a signal is delivered: EINTR after its handler
/// (whose frame restores the old mask); a signal without handler (ignored, stop/continue) restores it
/// and restarts the call.
pub fn sys_rt_sigsuspend(set: u64, sigsetsize: u64) -> SysResult {
    if sigsetsize != 8 {
        return Err(Errno::EINVAL);
    }
    let mask = read_u64(set)?;
    signal::suspend_mask(mask);
    while !signal::pending_for_current() {
        sched::block(proc::Chan::Signal);
    }
    Err(Errno::ERESTARTNOHAND)
}

/// rt_sigtimedwait: takes a pending signal of `set` (blocked or not) and returns its number, with a
/// siginfo (signo; si_code 0, SI_USER: the sender is not recorded) when `info` is given; waits for
/// one up to `timeout` (EAGAIN when it passes; no timeout: for ever). A signal outside the set that
/// runs a handler interrupts it: EINTR, not restarted, as Linux.
pub fn sys_rt_sigtimedwait(set: u64, info: u64, timeout: u64, sigsetsize: u64) -> SysResult {
    if sigsetsize != 8 {
        return Err(Errno::EINVAL);
    }
    let set = read_u64(set)? & !signal::UNWAITABLE;
    let deadline = if timeout != 0 {
        Some(crate::time::now_ns().saturating_add(read_timespec(timeout)?))
    } else {
        None
    };
    loop {
        if let Some(sig) = signal::take_pending(set) {
            if info != 0 {
                let mut si = [0u8; 128];
                si[..4].copy_from_slice(&sig.to_le_bytes());
                copy_to_user(info, &si)?;
            }
            return Ok(sig as u64);
        }
        if signal::pending_for_current() {
            return Err(Errno::EINTR);
        }
        if deadline.is_some_and(|d| crate::time::now_ns() >= d) {
            return Err(Errno::EAGAIN);
        }
        signal::set_waiting(set);
        match deadline {
            Some(d) => sched::block_any(alloc::vec![proc::Chan::Signal], Some(d)),
            None => sched::block(proc::Chan::Signal),
        }
        signal::set_waiting(0);
    }
}

/// rt_sigpending: the blocked signals that are pending.
pub fn sys_rt_sigpending(set: u64, sigsetsize: u64) -> SysResult {
    if sigsetsize > 8 {
        return Err(Errno::EINVAL);
    }
    let b = signal::pending_blocked().to_le_bytes();
    copy_to_user(set, &b[..sigsetsize as usize])?;
    Ok(0)
}

/// pause: sleeps until a signal runs a handler (then EINTR; other signals restart it).
pub fn sys_pause() -> SysResult {
    while !signal::pending_for_current() {
        sched::block(proc::Chan::Signal);
    }
    Err(Errno::ERESTARTNOHAND)
}

pub fn sys_sched_yield() -> SysResult {
    sched::yield_now();
    Ok(0)
}

const PR_SET_NAME: u32 = 15;
const PR_GET_NAME: u32 = 16;
const PR_SET_CHILD_SUBREAPER: u32 = 36;
const PR_GET_CHILD_SUBREAPER: u32 = 37;

pub fn sys_prctl(option: u32, arg2: u64) -> SysResult {
    match option {
        PR_SET_CHILD_SUBREAPER => {
            with_current(|p| p.subreaper = arg2 != 0);
            Ok(0)
        }
        PR_GET_CHILD_SUBREAPER => {
            let v = with_current(|p| p.subreaper) as u32;
            copy_to_user(arg2, &v.to_le_bytes()).map(|_| 0)
        }
        PR_SET_NAME => {
            let mut n = user_cstr(arg2)?;
            n.truncate(15);
            with_current(|p| p.name = n);
            Ok(0)
        }
        PR_GET_NAME => {
            let mut n = with_current(|p| p.name.clone());
            n.truncate(15);
            n.resize(16, 0);
            copy_to_user(arg2, &n).map(|_| 0)
        }
        _ => Err(Errno::EINVAL),
    }
}

#[allow(dead_code)]
fn _states(s: State) -> bool {
    s == State::Zombie
}
