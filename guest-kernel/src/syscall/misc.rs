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

/// uname's release and version (also /proc/version).
pub const UNAME_RELEASE: &str = "6.5.0-microvm";
pub const UNAME_VERSION: &str = "#1 SMP microvm guest kernel";

pub fn sys_uname(buf: u64) -> SysResult {
    let mut u = [0u8; 6 * 65];
    let fields: [&[u8]; 6] = [
        b"Linux",
        b"microvm",
        UNAME_RELEASE.as_bytes(),
        UNAME_VERSION.as_bytes(),
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
            // What the root filesystem holds goes to the disk first (Linux's emergency sync happens
            // in user space; init here does not sync).
            if let Err(e) = crate::fs::sync_all() {
                kprintln!(
                    "VFS: sync at power-off failed: errno {}",
                    kcore::fmt::Dec(e.0 as u64)
                );
            }
            let d = &crate::fs::DISK_STATS;
            let ld = |i: usize| d[i].load(core::sync::atomic::Ordering::Relaxed);
            let reqs = ld(0) + ld(1) + ld(2);
            kprintln!(
                "vfs: {} disk reads, {} writes, {} flushes, {} ns each (kernel time, emulated)",
                kcore::fmt::Dec(ld(0)),
                kcore::fmt::Dec(ld(1)),
                kcore::fmt::Dec(ld(2)),
                kcore::fmt::Dec(crate::time::tsc_to_ns(ld(3)) / reqs.max(1))
            );
            let pc = &crate::mm::pagecache::STATS;
            let lp = |i: usize| pc[i].load(core::sync::atomic::Ordering::Relaxed);
            kprintln!(
                "pagecache: {} pages, {} hits, {} pages read in, {} evicted, {} written back",
                kcore::fmt::Dec(lp(0)),
                kcore::fmt::Dec(lp(1)),
                kcore::fmt::Dec(lp(2)),
                kcore::fmt::Dec(lp(3)),
                kcore::fmt::Dec(lp(6))
            );
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
            crate::net::vsock::report();
            kprintln!("reboot: Power down");
            crate::arch::cpu::reset()
        }
        CMD_RESTART => {
            // As at power-off: dirty pages and metadata reach the disk before the reset.
            if let Err(e) = crate::fs::sync_all() {
                kprintln!(
                    "VFS: sync at reboot failed: errno {}",
                    kcore::fmt::Dec(e.0 as u64)
                );
            }
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
        // REALTIME, REALTIME_COARSE, REALTIME_ALARM, TAI (no leap seconds known: TAI = REALTIME).
        0 | 5 | 8 | 11 => crate::time::realtime_ns(),
        // MONOTONIC, MONOTONIC_RAW, MONOTONIC_COARSE, BOOTTIME, BOOTTIME_ALARM.
        1 | 4 | 6 | 7 | 9 => crate::time::now_ns(),
        // Process (all its threads) and thread CPU time, and other processes' CPU clocks.
        _ => super::sched::cpu_clock_ns(clock as i32)?,
    };
    copy_to_user(tp, &timespec(ns)).map(|_| 0)
}

/// clock_settime: only CLOCK_REALTIME is settable (by root; every process is root here); EINVAL for
/// the other clocks and for a bad timespec, as Linux.
pub fn sys_clock_settime(clock: u32, tp: u64) -> SysResult {
    let ns = read_timespec(tp)?;
    if clock != 0 {
        return Err(Errno::EINVAL);
    }
    crate::time::set_realtime_ns(ns);
    Ok(0)
}

/// settimeofday(tv, tz): sets CLOCK_REALTIME from a timeval (the timezone is ignored, as Linux does
/// beyond its warp_clock quirk).
pub fn sys_settimeofday(tv: u64, _tz: u64) -> SysResult {
    if tv == 0 {
        return Ok(0);
    }
    let b = read_user::<16>(tv)?;
    let sec = i64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]));
    let usec = i64::from_le_bytes(b[8..].try_into().unwrap_or([0; 8]));
    if sec < 0 || !(0..1_000_000).contains(&usec) {
        return Err(Errno::EINVAL);
    }
    crate::time::set_realtime_ns((sec as u64).saturating_mul(1_000_000_000) + usec as u64 * 1000);
    Ok(0)
}

fn read_user<const N: usize>(va: u64) -> Result<[u8; N], Errno> {
    crate::mm::uaccess::read_val(va)
}

fn read_timespec(tp: u64) -> Result<u64, Errno> {
    let b = read_user::<16>(tp)?;
    let sec = i64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]));
    let nsec = i64::from_le_bytes(b[8..].try_into().unwrap_or([0; 8]));
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return Err(Errno::EINVAL);
    }
    Ok((sec as u64).saturating_mul(1_000_000_000) + nsec as u64)
}

/// sysinfo(2): uptime (whole seconds rounded up, as Linux's), load averages (16.16 fixed point,
/// SI_LOAD_SHIFT), memory in pages of `mem_unit` bytes (4096): shared is tmpfs's pages (Shmem in
/// /proc/meminfo), no buffers, no swap; the number of tasks.
pub fn sys_sysinfo(info: u64) -> SysResult {
    let (total, used) = crate::mm::frame::stats();
    let up = crate::time::now_ns().div_ceil(1_000_000_000);
    let shared = crate::fs::tmpfs::SHMEM_PAGES.load(core::sync::atomic::Ordering::Relaxed);
    let loads = crate::proc::sched::load_averages().sysinfo();
    let procs = crate::proc::with_table(|t| t.len());
    let mut b = [0u8; 112];
    b[0..8].copy_from_slice(&up.to_le_bytes());
    for (i, l) in loads.iter().enumerate() {
        b[8 + i * 8..16 + i * 8].copy_from_slice(&l.to_le_bytes());
    }
    b[32..40].copy_from_slice(&total.to_le_bytes());
    b[40..48].copy_from_slice(&(total - used).to_le_bytes());
    b[48..56].copy_from_slice(&shared.to_le_bytes());
    b[80..82].copy_from_slice(&(procs.min(u16::MAX as usize) as u16).to_le_bytes());
    b[104..108].copy_from_slice(&4096u32.to_le_bytes());
    copy_to_user(info, &b).map(|_| 0)
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
        let [sp, flags, size] = crate::mm::uaccess::read_val::<[u64; 3]>(ss)?;
        Some((sp, flags as u32, size))
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

/// getrandom(buf, len, flags): GRND_NONBLOCK, GRND_RANDOM and GRND_INSECURE are accepted (the
/// generator never blocks: `arch::random_bytes`), others EINVAL; at most 32 MiB - 1 per call, as
/// Linux's urandom.
pub fn sys_getrandom(buf: u64, len: u64, flags: u32) -> SysResult {
    const GRND_ALL: u32 = 0x7;
    if flags & !GRND_ALL != 0 || flags & 0x6 == 0x6 {
        return Err(Errno::EINVAL);
    }
    let len = len.min((32 << 20) - 1);
    super::file::check_user(buf, len, true)?;
    let mut b = [0u8; 256];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(256) as usize;
        crate::arch::random_bytes(&mut b[..n]);
        copy_to_user(buf + done, &b[..n])?;
        done += n as u64;
    }
    Ok(len)
}
