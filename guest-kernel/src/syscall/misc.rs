//! System information calls: getpid, getppid, uname, arch_prctl, reboot, clocks, sigaltstack, limits,
//! getrandom (fork, exec, wait, signals and sleeping are in `process.rs`).
#![deny(unsafe_code)]

use super::file::copy_to_user;
use super::SysResult;
use crate::kprintln;
use crate::proc::{self, with_current};
use kcore::errno::Errno;

/// getpid: the thread group's id (the leader's pid).
pub fn sys_getpid() -> SysResult {
    Ok(with_current(|p| p.tgid.0 as u64))
}

pub fn sys_getppid() -> SysResult {
    Ok(with_current(|p| p.ppid.0 as u64))
}

pub fn sys_uname(buf: u64) -> SysResult {
    let mut u = [0u8; 6 * 65];
    let fields: [&[u8]; 6] = [
        b"Linux",
        b"microvm",
        b"6.5.0-microvm",
        b"#1 SMP microvm guest kernel",
        b"x86_64",
        b"(none)",
    ];
    for (i, f) in fields.iter().enumerate() {
        u[i * 65..i * 65 + f.len()].copy_from_slice(f);
    }
    copy_to_user(buf, &u).map(|_| 0)
}

const ARCH_SET_FS: u32 = 0x1002;
const ARCH_GET_FS: u32 = 0x1003;

pub fn sys_arch_prctl(code: u32, addr: u64) -> SysResult {
    match code {
        ARCH_SET_FS => {
            if addr >= crate::arch::layout::USER_END {
                return Err(Errno::EPERM);
            }
            crate::arch::set_fs_base(addr);
            with_current(|p| p.fs_base = addr);
            Ok(0)
        }
        ARCH_GET_FS => copy_to_user(addr, &crate::arch::fs_base().to_le_bytes()).map(|_| 0),
        _ => Err(Errno::EINVAL),
    }
}

const REBOOT_MAGIC1: u32 = 0xfee1_dead;
const REBOOT_MAGIC2: [u32; 4] = [0x2812_1969, 0x0512_1996, 0x1604_1998, 0x2011_2000];
const CMD_RESTART: u32 = 0x0123_4567;
const CMD_HALT: u32 = 0xcdef_0123;
const CMD_POWER_OFF: u32 = 0x4321_fedc;
const CMD_CAD_ON: u32 = 0x89ab_cdef;
const CMD_CAD_OFF: u32 = 0;

pub fn sys_reboot(magic1: u32, magic2: u32, cmd: u32) -> SysResult {
    if magic1 != REBOOT_MAGIC1 || !REBOOT_MAGIC2.contains(&magic2) {
        return Err(Errno::EINVAL);
    }
    match cmd {
        CMD_POWER_OFF | CMD_HALT => {
            let (lstar, fault) = crate::arch::interrupts::syscall_counts();
            kprintln!(
                "syscalls: {} through the LSTAR entry, {} through the #PF at LSTAR",
                kcore::fmt::Dec(lstar),
                kcore::fmt::Dec(fault)
            );
            let (_, frames) = crate::mm::frame::stats();
            let c = crate::proc::sched::costs();
            kprintln!(
                "sched: {} ticks, {} ns each; {} context switches, {} ns each (kernel time, emulated)",
                kcore::fmt::Dec(c.ticks),
                kcore::fmt::Dec(c.tick_ns),
                kcore::fmt::Dec(c.switches),
                kcore::fmt::Dec(c.switch_ns)
            );
            kprintln!(
                "sched: {} picks of the next task, {} ns each (the CFS part of a switch)",
                kcore::fmt::Dec(c.picks),
                kcore::fmt::Dec(c.pick_ns)
            );
            kprintln!(
                "sched: {} context switches; {} processes; frames used {}; heap used {}",
                kcore::fmt::Dec(c.switches),
                kcore::fmt::Dec(crate::proc::with_table(|t| t.len()) as u64),
                kcore::fmt::Dec(frames),
                kcore::fmt::Dec(crate::mm::heap::stats().1 as u64)
            );
            crate::cost::report();
            crate::net::report();
            kprintln!("reboot: Power down");
            crate::arch::cpu::reset()
        }
        CMD_RESTART => {
            kprintln!("reboot: Restarting system");
            crate::arch::cpu::reset()
        }
        CMD_CAD_ON | CMD_CAD_OFF => {
            crate::drivers::i8042::set_cad_restart(cmd == CMD_CAD_ON);
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}

fn timespec(ns: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
    b[8..].copy_from_slice(&(ns % 1_000_000_000).to_le_bytes());
    b
}

pub fn sys_clock_gettime(clock: u32, tp: u64) -> SysResult {
    let ns = match clock {
        0 => crate::time::realtime_ns(),
        1 | 4 | 7 => crate::time::now_ns(), // MONOTONIC, MONOTONIC_RAW, BOOTTIME
        5 | 6 => crate::time::now_ns(),     // *_COARSE
        // Process (all its threads) and thread CPU time, and other processes' CPU clocks.
        _ => super::sched::cpu_clock_ns(clock as i32)?,
    };
    copy_to_user(tp, &timespec(ns)).map(|_| 0)
}

pub fn sys_gettimeofday(tv: u64) -> SysResult {
    if tv != 0 {
        let ns = crate::time::realtime_ns();
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
        b[8..].copy_from_slice(&((ns % 1_000_000_000) / 1000).to_le_bytes());
        copy_to_user(tv, &b)?;
    }
    Ok(0)
}

pub fn sys_time(t: u64) -> SysResult {
    let s = crate::time::realtime_ns() / 1_000_000_000;
    if t != 0 {
        copy_to_user(t, &s.to_le_bytes())?;
    }
    Ok(s)
}

/// sigaltstack(ss, old_ss): `user_sp` is the caller's stack pointer (whether it runs on the
/// alternate stack). `old_ss` is written only on success, as Linux does.
pub fn sys_sigaltstack(ss: u64, old: u64, user_sp: u64) -> SysResult {
    let new = if ss != 0 {
        super::file::check_user(ss, 24, false)?;
        let b = crate::mm::uaccess::checked_slice(ss, 24);
        let word = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        Some((word(0), word(8) as u32, word(16)))
    } else {
        None
    };
    let prev = proc::signal::sigaltstack(new, user_sp)?;
    if old != 0 {
        copy_to_user(old, &prev)?;
    }
    Ok(0)
}

pub fn sys_sched_getaffinity(_pid: u64, len: u64, mask: u64) -> SysResult {
    if len < 8 {
        return Err(Errno::EINVAL);
    }
    copy_to_user(mask, &1u64.to_le_bytes())?;
    Ok(8)
}

const RLIMIT_STACK: u32 = 3;
const RLIMIT_NOFILE: u32 = 7;
const RLIM_INFINITY: u64 = u64::MAX;

pub fn sys_prlimit64(_pid: u64, resource: u32, _new: u64, old: u64) -> SysResult {
    if resource > 15 {
        return Err(Errno::EINVAL);
    }
    if old != 0 {
        let (cur, max) = match resource {
            RLIMIT_STACK => (proc::STACK_LIMIT, RLIM_INFINITY),
            RLIMIT_NOFILE => (crate::fs::fd::MAX_FDS as u64, crate::fs::fd::MAX_FDS as u64),
            _ => (RLIM_INFINITY, RLIM_INFINITY),
        };
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&cur.to_le_bytes());
        b[8..].copy_from_slice(&max.to_le_bytes());
        copy_to_user(old, &b)?;
    }
    Ok(0)
}

pub fn sys_getrandom(buf: u64, len: u64) -> SysResult {
    let len = len.min(256);
    let mut b = [0u8; 256];
    crate::arch::random_bytes(&mut b[..len as usize]);
    copy_to_user(buf, &b[..len as usize])?;
    Ok(len)
}
