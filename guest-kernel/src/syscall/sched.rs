//! Scheduling and CPU-time calls: getpriority/setpriority (nice), sched_{get,set}scheduler,
//! sched_{get,set}param and sched_{get,set}attr for the fair-class policies (each on one thread, as
//! Linux's: a tid names a thread), sched_get_priority_{min,max}, the CPU-time clocks,
//! times and getrusage. The numbers come from the scheduler's entities (`proc::sched::entity`).
#![deny(unsafe_code)]

use super::file::copy_to_user;
use super::SysResult;
use crate::proc::exit::Usage;
use crate::proc::{self, sched, Pid};
use alloc::vec::Vec;
use kcore::errno::Errno;
use kcore::sched::SchedPolicy;

const PRIO_PROCESS: u32 = 0;
const PRIO_PGRP: u32 = 1;
const PRIO_USER: u32 = 2;

/// The pids `which`/`who` names (everyone runs as root, so PRIO_USER is every process for uid 0).
fn prio_targets(which: u32, who: u32) -> Result<Vec<Pid>, Errno> {
    let me = proc::current_pid();
    let pids = match which {
        PRIO_PROCESS => {
            let pid = if who == 0 { me } else { Pid(who) };
            proc::with_proc(pid, |_| ()).map_or(Vec::new(), |_| alloc::vec![pid])
        }
        PRIO_PGRP => {
            let pgid = if who == 0 {
                proc::with_current(|p| p.pgid)
            } else {
                Pid(who)
            };
            proc::with_table(|t| {
                t.values()
                    .filter(|p| p.pgid == pgid)
                    .map(|p| p.pid)
                    .collect()
            })
        }
        PRIO_USER if who == 0 => proc::with_table(|t| t.keys().copied().collect()),
        PRIO_USER => Vec::new(),
        _ => return Err(Errno::EINVAL),
    };
    if pids.is_empty() {
        return Err(Errno::ESRCH);
    }
    Ok(pids)
}

/// getpriority: the raw syscall returns 20 - nice (1..=40) of the highest-priority match; glibc turns
/// it back into the nice value.
pub fn sys_getpriority(which: u32, who: u32) -> SysResult {
    let best = prio_targets(which, who)?
        .into_iter()
        .filter_map(|p| sched::entity(p).map(|e| e.nice))
        .min()
        .ok_or(Errno::ESRCH)?;
    Ok((20 - best) as u64)
}

/// setpriority: sets the nice value (clamped to -20..=19) of every match. Everything runs as root, so
/// lowering nice is allowed.
pub fn sys_setpriority(which: u32, who: u32, nice: i32) -> SysResult {
    let nice = nice.clamp(-20, 19);
    for p in prio_targets(which, who)? {
        if let Some(e) = sched::entity(p) {
            sched::set_nice(p, nice, e.policy);
        }
    }
    Ok(0)
}

/// The process `pid` names for the sched_* calls (0: the caller).
fn sched_target(pid: i32) -> Result<(Pid, kcore::sched::Entity), Errno> {
    if pid < 0 {
        return Err(Errno::EINVAL);
    }
    let pid = if pid == 0 {
        proc::current_pid()
    } else {
        Pid(pid as u32)
    };
    sched::entity(pid).map(|e| (pid, e)).ok_or(Errno::ESRCH)
}

/// Reads `struct sched_param` (one int, the static priority: 0 for the fair-class policies).
fn read_sched_priority(param: u64) -> Result<i32, Errno> {
    if param == 0 {
        return Err(Errno::EINVAL);
    }
    crate::mm::uaccess::read_val::<i32>(param)
}

/// sched_setscheduler: SCHED_NORMAL, SCHED_BATCH and SCHED_IDLE (priority 0; SCHED_RESET_ON_FORK is
/// accepted and ignored). The real-time and deadline policies are EINVAL: there is no RT class.
pub fn sys_sched_setscheduler(pid: i32, policy: i32, param: u64) -> SysResult {
    const SCHED_RESET_ON_FORK: i32 = 0x4000_0000;
    // Linux's order: bad arguments, then a missing process, then an unsupported policy or priority.
    if policy < 0 || pid < 0 {
        return Err(Errno::EINVAL);
    }
    let prio = read_sched_priority(param)?;
    let (pid, e) = sched_target(pid)?;
    let policy =
        SchedPolicy::from_raw((policy & !SCHED_RESET_ON_FORK) as u32).ok_or(Errno::EINVAL)?;
    if prio != 0 {
        return Err(Errno::EINVAL);
    }
    sched::set_nice(pid, e.nice, policy);
    Ok(0)
}

pub fn sys_sched_getscheduler(pid: i32) -> SysResult {
    Ok(sched_target(pid)?.1.policy as u64)
}

/// sched_setparam: only priority 0 exists in the fair class.
pub fn sys_sched_setparam(pid: i32, param: u64) -> SysResult {
    if pid < 0 {
        return Err(Errno::EINVAL);
    }
    let prio = read_sched_priority(param)?;
    sched_target(pid)?;
    if prio != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(0)
}

pub fn sys_sched_getparam(pid: i32, param: u64) -> SysResult {
    if param == 0 || pid < 0 {
        return Err(Errno::EINVAL);
    }
    sched_target(pid)?;
    copy_to_user(param, &0i32.to_le_bytes()).map(|_| 0)
}

/// `struct sched_attr`: its first version (48 bytes) and the one this kernel knows (56: with
/// util_min and util_max, always 0 here, as Linux without utilization clamping reports them).
const SCHED_ATTR_SIZE_VER0: u32 = 48;
const SCHED_ATTR_SIZE: u32 = 56;
const SCHED_FLAG_KEEP_POLICY: u64 = 0x08;
const SCHED_FLAG_KEEP_PARAMS: u64 = 0x10;
const SCHED_FLAG_UTIL_CLAMP: u64 = 0x60;
/// Every flag Linux knows (SCHED_FLAG_ALL | SCHED_FLAG_SUGOV): others are EINVAL.
const SCHED_FLAGS_KNOWN: u64 = 0x7f | 0x1000_0000;
/// Largest `struct sched_attr` a caller may pass (a page).
const SCHED_ATTR_MAX: u32 = 4096;

/// sched_setattr's E2BIG: the kernel's size written back into the caller's `size` field.
fn sched_attr_too_big(uattr: u64) -> SysResult {
    let _ = copy_to_user(uattr, &SCHED_ATTR_SIZE.to_le_bytes());
    Err(Errno::E2BIG)
}

/// sched_setattr: the policy and nice value of one thread from a `struct sched_attr`, with Linux's
/// checks in Linux's order: a NULL attr, pid < 0 or flags: EINVAL; a size (0 meaning the first
/// version) below 48 or above a page, or nonzero bytes past the 56 known: E2BIG with 56 written
/// back; a negative policy: EINVAL; no such thread: ESRCH; then an unknown policy (the real-time and
/// deadline ones too: there is no such class here), unknown flags or a priority: EINVAL;
/// utilization clamps: EOPNOTSUPP. SCHED_FLAG_KEEP_POLICY keeps the policy; KEEP_PARAMS keeps both
/// policy and nice, as Linux's __sched_setscheduler then skips __setscheduler_params. Nice is
/// clamped to -20..=19.
pub fn sys_sched_setattr(pid: i32, uattr: u64, flags: u32) -> SysResult {
    if uattr == 0 || pid < 0 || flags != 0 {
        return Err(Errno::EINVAL);
    }
    let mut size: u32 = crate::mm::uaccess::read_val(uattr)?;
    if size == 0 {
        size = SCHED_ATTR_SIZE_VER0;
    }
    if !(SCHED_ATTR_SIZE_VER0..=SCHED_ATTR_MAX).contains(&size) {
        return sched_attr_too_big(uattr);
    }
    let mut raw = [0u8; SCHED_ATTR_SIZE as usize];
    let known = size.min(SCHED_ATTR_SIZE) as usize;
    crate::mm::uaccess::copy_from_user(&mut raw[..known], uattr)?;
    let mut at = SCHED_ATTR_SIZE as u64;
    while at < u64::from(size) {
        let mut chunk = [0u8; 64];
        let len = (u64::from(size) - at).min(64) as usize;
        crate::mm::uaccess::copy_from_user(&mut chunk[..len], uattr + at)?;
        if chunk[..len].iter().any(|&b| b != 0) {
            return sched_attr_too_big(uattr);
        }
        at += len as u64;
    }
    let word = |i: usize| u32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
    let policy = word(4);
    let sflags = u64::from(word(8)) | u64::from(word(12)) << 32;
    let nice = (word(16) as i32).clamp(-20, 19);
    let priority = word(20);
    if sflags & SCHED_FLAG_UTIL_CLAMP != 0 && size < SCHED_ATTR_SIZE {
        return Err(Errno::EINVAL);
    }
    if (policy as i32) < 0 {
        return Err(Errno::EINVAL);
    }
    let (pid, e) = sched_target(pid)?;
    let policy = if sflags & SCHED_FLAG_KEEP_POLICY != 0 {
        e.policy
    } else {
        SchedPolicy::from_raw(policy).ok_or(Errno::EINVAL)?
    };
    if sflags & !SCHED_FLAGS_KNOWN != 0 || priority != 0 {
        return Err(Errno::EINVAL);
    }
    if sflags & SCHED_FLAG_UTIL_CLAMP != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    if sflags & SCHED_FLAG_KEEP_PARAMS == 0 {
        sched::set_nice(pid, nice, policy);
    }
    Ok(0)
}

/// sched_getattr: one thread's `struct sched_attr` (policy, nice; the rest 0), `size` bytes of it at
/// most, its `size` field saying how many were written and any bytes beyond the 56 known cleared.
/// EINVAL for a NULL attr, pid < 0, flags or a size below 48 or above a page; ESRCH for no thread.
pub fn sys_sched_getattr(pid: i32, uattr: u64, size: u32, flags: u32) -> SysResult {
    if uattr == 0
        || pid < 0
        || !(SCHED_ATTR_SIZE_VER0..=SCHED_ATTR_MAX).contains(&size)
        || flags != 0
    {
        return Err(Errno::EINVAL);
    }
    let (_, e) = sched_target(pid)?;
    let written = size.min(SCHED_ATTR_SIZE);
    let mut raw = [0u8; SCHED_ATTR_SIZE as usize];
    raw[0..4].copy_from_slice(&written.to_le_bytes());
    raw[4..8].copy_from_slice(&(e.policy as u32).to_le_bytes());
    raw[16..20].copy_from_slice(&e.nice.to_le_bytes());
    copy_to_user(uattr, &raw[..written as usize])?;
    let mut at = u64::from(written);
    while at < u64::from(size) {
        let len = (u64::from(size) - at).min(64) as usize;
        copy_to_user(uattr + at, &[0u8; 64][..len])?;
        at += len as u64;
    }
    Ok(0)
}

/// sched_get_priority_max/min: 0 for the fair policies, 1..99 for FIFO and RR (as Linux answers even
/// though this kernel has no RT class).
pub fn sys_sched_get_priority(policy: i32, max: bool) -> SysResult {
    match policy {
        0 | 3 | 5 => Ok(0),
        1 | 2 => Ok(if max { 99 } else { 1 }),
        _ => Err(Errno::EINVAL),
    }
}

/// The CPU-time clocks: CLOCK_PROCESS_CPUTIME_ID and CLOCK_THREAD_CPUTIME_ID (one thread per process)
/// of the caller, and the clocks of other processes (`clock_getcpuclockid`'s negative ids:
/// `~pid << 3 | type`, type 0 PROF (user + system), 1 VIRT (user), 2 SCHED (runtime)).
pub fn cpu_clock_ns(clock: i32) -> Result<u64, Errno> {
    let (pid, kind) = match clock {
        // CLOCK_PROCESS_CPUTIME_ID: every running thread of the group (the time of threads that
        // have exited is not kept).
        2 => {
            let tgid = proc::with_current(|p| p.tgid);
            let threads: alloc::vec::Vec<Pid> = proc::with_table(|t| {
                t.values()
                    .filter(|q| q.tgid == tgid && q.state != proc::State::Zombie)
                    .map(|q| q.pid)
                    .collect()
            });
            return Ok(threads
                .into_iter()
                .filter_map(sched::entity)
                .map(|e| e.sum_exec_runtime)
                .sum());
        }
        3 => (proc::current_pid(), 2),
        c if c < 0 => {
            let pid = !(c >> 3);
            let kind = c & 3;
            if kind == 3 || pid < 0 {
                return Err(Errno::EINVAL);
            }
            let pid = if pid == 0 {
                proc::current_pid()
            } else {
                Pid(pid as u32)
            };
            (pid, kind)
        }
        _ => return Err(Errno::EINVAL),
    };
    let e = sched::entity(pid).ok_or(Errno::EINVAL)?;
    Ok(match kind {
        1 => e.utime(),
        _ => e.sum_exec_runtime,
    })
}

/// User and system time of the caller and of its reaped children (ns).
fn own_times() -> (u64, u64, u64, u64) {
    sched::entity(proc::current_pid()).map_or((0, 0, 0, 0), |e| {
        (e.utime(), e.stime, e.children_utime, e.children_stime)
    })
}

/// times: the four times in clock ticks (USER_HZ = 100); returns ticks since boot.
pub fn sys_times(buf: u64) -> SysResult {
    let (u, s, cu, cs) = own_times();
    if buf != 0 {
        let mut b = [0u8; 32];
        for (i, v) in [u, s, cu, cs].iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&(v / 10_000_000).to_le_bytes());
        }
        copy_to_user(buf, &b)?;
    }
    Ok(crate::time::now_ns() / 10_000_000)
}

fn timeval(ns: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
    b[8..].copy_from_slice(&((ns % 1_000_000_000) / 1000).to_le_bytes());
    b
}

/// `struct rusage` (144 bytes): ru_utime, ru_stime, 14 longs of which this kernel fills the last two
/// (ru_nvcsw, ru_nivcsw); ru_maxrss, the fault and I/O counts stay 0 (not tracked).
pub fn rusage_bytes(u: &Usage) -> [u8; 144] {
    let mut b = [0u8; 144];
    b[..16].copy_from_slice(&timeval(u.utime));
    b[16..32].copy_from_slice(&timeval(u.stime));
    b[128..136].copy_from_slice(&u.nvcsw.to_le_bytes());
    b[136..144].copy_from_slice(&u.nivcsw.to_le_bytes());
    b
}

/// getrusage: RUSAGE_SELF/THREAD (0, 1) the caller, RUSAGE_CHILDREN (-1) its reaped children and their
/// reaped descendants (what wait4 reported of them).
pub fn sys_getrusage(who: i32, usage: u64) -> SysResult {
    let me = proc::current_pid();
    let u = match who {
        0 | 1 => Usage::own(me),
        -1 => Usage::children(me, proc::with_current(|p| p.children_csw)),
        _ => return Err(Errno::EINVAL),
    };
    copy_to_user(usage, &rusage_bytes(&u)).map(|_| 0)
}

/// clock_getres: 1 ns for every clock this kernel reads from the TSC (glibc's clock_getcpuclockid
/// probes a process's CPU clock with it: EINVAL if that process does not exist).
pub fn sys_clock_getres(clock: i32, res: u64) -> SysResult {
    match clock {
        0 | 1 | 4..=7 => {}
        _ => {
            cpu_clock_ns(clock)?;
        }
    }
    if res != 0 {
        let mut b = [0u8; 16];
        b[8..].copy_from_slice(&1u64.to_le_bytes());
        copy_to_user(res, &b)?;
    }
    Ok(0)
}
