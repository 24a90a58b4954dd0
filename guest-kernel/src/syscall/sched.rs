//! Scheduling and CPU-time calls: getpriority/setpriority (nice), sched_{get,set}scheduler and
//! sched_{get,set}param for the fair-class policies, sched_get_priority_{min,max}, the CPU-time clocks,
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
