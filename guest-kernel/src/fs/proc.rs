//! /proc: process and system information generated when a file is opened (a snapshot the reader then
//! reads with offsets, as Linux's seq files look to a simple reader). Directories: `/proc` (one entry per
//! process, `self`, `uptime`, `meminfo`), `/proc/PID` (`stat`, `status`, `cmdline`, `sched`, `maps`,
//! `task`) and `/proc/PID/task/TID` (the same files for one thread). CPU times
//! and scheduler statistics come from the scheduler's entity of the process (`proc::sched::entity`).
#![deny(unsafe_code)]

use super::file::{DirEntry, FileOps, OpenFile, ReadBuf, Stat};
use crate::arch::layout::USER_STACK_TOP;
use crate::proc::{self, Pid, State};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::any::Any;
use kcore::errno::Errno;
use kcore::procfs::{self, ProcInfo, SchedInfo, SigSets};

/// A /proc directory.
#[derive(Clone, Copy, Debug)]
pub enum ProcDir {
    Root,
    /// `/proc/PID`, or `/proc/PID/task/TID` (a thread's).
    Pid(u32),
    /// `/proc/PID/task`: one directory per thread.
    Task(u32),
    /// `/proc/PID/fd`: one link per open descriptor.
    Fd(u32),
}

/// What an open /proc path is.
pub enum ProcFile {
    Dir(ProcDir),
    Data(Vec<u8>),
    /// A link (`exe`, `cwd`, `fd/N`) and its target: lstat sees a symbolic link; it is not opened
    /// through (reading it is EINVAL).
    Link(Vec<u8>),
}

const PID_FILES: [&[u8]; 8] = [
    b"cmdline", b"comm", b"environ", b"maps", b"sched", b"stat", b"statm", b"status",
];

/// The files of `/proc` itself (after `self` and the process directories).
const ROOT_FILES: [&[u8]; 8] = [
    b"uptime",
    b"meminfo",
    b"stat",
    b"loadavg",
    b"cpuinfo",
    b"version",
    b"filesystems",
    b"consoles",
];

/// `/proc/stat`: CPU time summed over every task (its own and its reaped children's, which is all
/// time ever run: an exited task's times move into its parent when reaped), the idle task's halts.
fn sys_stat() -> Vec<u8> {
    let pids: Vec<Pid> = proc::with_table(|t| t.values().map(|p| p.pid).collect());
    let (mut user, mut system) = (0, 0);
    for pid in pids {
        if let Some(e) = proc::sched::entity(pid) {
            user += e.utime() + e.children_utime;
            system += e.stime + e.children_stime;
        }
    }
    let up = crate::time::now_ns();
    procfs::stat_file(&procfs::SysStat {
        user: clock_ticks(user),
        system: clock_ticks(system),
        idle: clock_ticks(proc::sched::idle_ns()),
        ctxt: proc::sched::switches(),
        btime: crate::time::realtime_ns().saturating_sub(up) / 1_000_000_000,
        processes: proc::sched::forks(),
        running: proc::sched::nr_running(),
        blocked: 0,
    })
}

/// `/proc/PID/statm` in pages: the areas' size, the resident pages, the executable's file pages.
fn statm(pid: Pid) -> Option<Vec<u8>> {
    proc::with_proc(pid, |p| {
        let mm = p.mm.borrow();
        let size = mm.vmas.total() / 4096;
        let rss = if p.state == State::Zombie {
            0
        } else {
            mm.aspace.mapped_pages()
        };
        let text: u64 = mm
            .vmas
            .iter()
            .filter(|v| v.prot & kcore::vma::PROT_EXEC != 0)
            .map(|v| (v.end - v.start) / 4096)
            .sum();
        procfs::statm(size, rss, 0, text)
    })
}

/// Nanoseconds to clock ticks (USER_HZ = 100, as Linux reports them whatever its HZ).
fn clock_ticks(ns: u64) -> u64 {
    ns / 10_000_000
}

fn parse_pid(s: &[u8]) -> Option<u32> {
    if s == b"self" {
        // The process (thread group), as Linux's /proc/self; /proc/thread-self is the thread.
        return Some(proc::with_current(|p| p.tgid.0));
    }
    if s == b"thread-self" {
        return Some(proc::current_pid().0);
    }
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    core::str::from_utf8(s).ok()?.parse().ok()
}

/// The live threads of group `tgid`.
fn threads(tgid: Pid) -> Vec<u32> {
    proc::with_table(|t| {
        t.values()
            .filter(|q| q.tgid == tgid && q.state != State::Zombie)
            .map(|q| q.pid.0)
            .collect()
    })
}

/// The process info /proc shows for `pid`, with its command line and /proc/PID/sched text.
fn info(pid: Pid) -> Option<(ProcInfo, Vec<u8>, SchedInfo)> {
    let mut r = info_of(pid)?;
    let tgid = Pid(r.0.tgid);
    r.0.threads = threads(tgid).len() as u32;
    // SigQ counts every queued signal in the system, all of the one user root's (Linux counts a
    // user's queued signals): each thread's own and each group's (once, from its leader's entry),
    // except SIGKILL, which Linux never queues (__send_signal only sets its bit). The limit is
    // RLIMIT_SIGPENDING as prlimit reports it here (unlimited).
    let queued = proc::with_table(|t| {
        t.values()
            .map(|q| {
                let s = &q.signals;
                let group = if q.pid == q.tgid {
                    s.shared_pending.get()
                } else {
                    0
                };
                let not_queued = 1u64 << (proc::signal::SIGKILL - 1);
                u64::from((s.pending & !not_queued).count_ones())
                    + u64::from((group & !not_queued).count_ones())
            })
            .sum()
    });
    r.0.signals.queued = queued;
    r.0.signals.queue_limit = u64::MAX;
    Some(r)
}

/// A thread's signal sets as /proc/PID/status shows them (SigQ's count: see [`info`]).
fn sig_sets(s: &proc::signal::SigState) -> SigSets {
    let (mut ignored, mut caught) = (0, 0);
    for sig in 1..=64u32 {
        match s.actions.get(sig).handler {
            proc::signal::SIG_DFL => {}
            proc::signal::SIG_IGN => ignored |= 1 << (sig - 1),
            _ => caught |= 1 << (sig - 1),
        }
    }
    SigSets {
        // SigPnd: the thread's own; ShdPnd: its group's.
        pending: s.pending,
        shared_pending: s.shared_pending.get(),
        blocked: s.blocked,
        ignored,
        caught,
        ..SigSets::default()
    }
}

fn info_of(pid: Pid) -> Option<(ProcInfo, Vec<u8>, SchedInfo)> {
    let fg = crate::tty::foreground() as i32;
    let e = proc::sched::entity(pid)?;
    proc::with_proc(pid, |p| {
        let state = match p.state {
            State::Ready => b'R',
            State::Blocked(_) => b'S',
            State::Stopped => b'T',
            State::Zombie => b'Z',
        };
        let mm = p.mm.borrow();
        let vsize = mm.vmas.total();
        let rss = if p.state == State::Zombie {
            0
        } else {
            mm.aspace.mapped_pages()
        };
        // The area holding the initial stack, as maps names `[stack]` (Linux's stack_vm).
        let stack = mm
            .vmas
            .iter()
            .filter(|v| v.start < USER_STACK_TOP && USER_STACK_TOP <= v.end)
            .map(|v| v.end - v.start)
            .sum();
        (
            ProcInfo {
                pid: p.pid.0,
                ppid: p.ppid.0,
                pgrp: p.pgid.0,
                session: p.sid.0,
                state,
                comm: p.name.iter().copied().take(15).collect(),
                nice: e.nice,
                utime: clock_ticks(e.utime()),
                stime: clock_ticks(e.stime),
                cutime: clock_ticks(e.children_utime),
                cstime: clock_ticks(e.children_stime),
                starttime: p.start_jiffies * 100 / crate::time::hz().max(1),
                vsize,
                rss,
                // The console's device (ttyS0 4:64, hvc0 229:0) and its foreground group if it
                // is the controlling terminal; 0 and -1 without one (init: Linux's PID 1 has none).
                tty_nr: if p.ctty {
                    crate::tty::Node::console_device().rdev() as u32
                } else {
                    0
                },
                tpgid: if p.ctty { fg } else { -1 },
                tgid: p.tgid.0,
                threads: 0,
                stack,
                signals: sig_sets(&p.signals),
            },
            p.exec.cmdline.clone(),
            SchedInfo {
                pid: p.pid.0,
                comm: p.name.iter().copied().take(15).collect(),
                exec_start: e.exec_start,
                vruntime: e.vruntime as i64,
                sum_exec_runtime: e.sum_exec_runtime,
                nr_voluntary_switches: e.nr_voluntary_switches,
                nr_involuntary_switches: e.nr_involuntary_switches,
                weight: e.load.weight,
                policy: e.policy as u32,
                nice: e.nice,
            },
        )
    })
}

/// `/proc/PID/maps`: the process's areas, named as Linux names them (the file's canonical path, as
/// d_path gives it: /bin/sleep, a link to busybox, maps /bin/busybox; `[heap]` for the area around
/// the break, `[stack]` for the one holding the initial stack).
fn maps(pid: Pid) -> Vec<u8> {
    use kcore::vma::Backing;
    struct Area {
        start: u64,
        end: u64,
        prot: u32,
        shared: bool,
        offset: u64,
        dev: u32,
        ino: u64,
        name: Option<Vec<u8>>,
    }
    // Copied out first: resolving the names reads /proc links, which borrow the process table.
    let mut areas: Vec<Area> = proc::with_proc(pid, |p| {
        let mm = p.mm.borrow();
        mm.vmas
            .iter()
            .map(|v| {
                let (dev, ino, name) = match &v.backing {
                    Backing::File {
                        dev, inode, path, ..
                    } => (*dev, inode.ino as u64, Some(path.to_vec())),
                    Backing::Anonymous => {
                        let name: Option<&[u8]> = if v.start <= mm.brk && v.end >= mm.brk_start {
                            Some(b"[heap]")
                        } else if v.start < USER_STACK_TOP && USER_STACK_TOP <= v.end {
                            Some(b"[stack]")
                        } else {
                            None
                        };
                        (0, 0, name.map(<[u8]>::to_vec))
                    }
                };
                Area {
                    start: v.start,
                    end: v.end,
                    prot: v.prot,
                    shared: v.shared,
                    offset: v.offset(),
                    dev,
                    ino,
                    name,
                }
            })
            .collect()
    })
    .unwrap_or_default();
    // One resolution per distinct file (its areas are usually adjacent).
    let mut last: Option<(Vec<u8>, Vec<u8>)> = None;
    for a in areas.iter_mut().filter(|a| a.ino != 0) {
        let Some(path) = a.name.take() else { continue };
        let name = match &last {
            Some((p, c)) if *p == path => c.clone(),
            _ => {
                let c = super::canonical(&path).unwrap_or_else(|_| path.clone());
                last = Some((path, c.clone()));
                c
            }
        };
        a.name = Some(name);
    }
    let lines: Vec<procfs::MapLine<'_>> = areas
        .iter()
        .map(|a| procfs::MapLine {
            start: a.start,
            end: a.end,
            prot: a.prot,
            shared: a.shared,
            offset: a.offset,
            dev: a.dev,
            ino: a.ino,
            name: a.name.as_deref(),
        })
        .collect();
    procfs::maps(&lines)
}

/// Whether `path` is a process's `exe` or `cwd` link (/proc/PID/..., /proc/PID/task/TID/...).
fn is_exe_or_cwd(path: &[u8]) -> bool {
    let parts: Vec<&[u8]> = path
        .strip_prefix(b"/proc")
        .unwrap_or_default()
        .split(|&c| c == b'/')
        .filter(|s| !s.is_empty())
        .collect();
    matches!(
        parts.as_slice(),
        [_, b"exe" | b"cwd"] | [_, b"task", _, b"exe" | b"cwd"]
    )
}

/// Opens `path` (which starts with /proc).
pub fn open(path: &[u8]) -> Result<ProcFile, Errno> {
    let rest = path.strip_prefix(b"/proc").ok_or(Errno::ENOENT)?;
    let parts: Vec<&[u8]> = rest
        .split(|&c| c == b'/')
        .filter(|s| !s.is_empty())
        .collect();
    if matches!(
        parts.as_slice(),
        [_, b"exe" | b"cwd"] | [_, b"fd", _] | [_, b"task", _, b"exe" | b"cwd"]
    ) {
        if let Some(target) = readlink(path) {
            return target.map(ProcFile::Link);
        }
    }
    match parts.as_slice() {
        [] => Ok(ProcFile::Dir(ProcDir::Root)),
        [b"uptime"] => {
            let up = crate::time::now_ns();
            Ok(ProcFile::Data(procfs::uptime(up, proc::sched::idle_ns())))
        }
        [b"stat"] => Ok(ProcFile::Data(sys_stat())),
        [b"loadavg"] => {
            let (tasks, last) =
                proc::with_table(|t| (t.len() as u64, t.keys().last().map_or(0, |p| p.0)));
            Ok(ProcFile::Data(proc::sched::load_averages().proc_text(
                proc::sched::nr_running(),
                tasks,
                last as u64,
            )))
        }
        [b"cpuinfo"] => Ok(ProcFile::Data(procfs::cpuinfo(&crate::arch::cpu_info(
            crate::time::tsc_hz() / 1000,
        )))),
        [b"version"] => Ok(ProcFile::Data(procfs::version(
            crate::syscall::UNAME_RELEASE,
            crate::syscall::UNAME_VERSION,
        ))),
        [b"filesystems"] => Ok(ProcFile::Data(
            b"nodev\tproc\nnodev\ttmpfs\nnodev\tdevtmpfs\n\text2\n".to_vec(),
        )),
        [b"mounts"] => Ok(ProcFile::Data(super::mount::proc_mounts())),
        [b"consoles"] => {
            let node = crate::tty::Node::console_device();
            let (name, anytime) = match node {
                crate::tty::Node::Hvc0 => ("hvc0", false),
                _ => ("ttyS0", true),
            };
            let rdev = node.rdev() as u32;
            Ok(ProcFile::Data(procfs::consoles(
                name,
                anytime,
                rdev >> 8,
                rdev & 0xff,
            )))
        }
        [b"meminfo"] => {
            let (total, used) = crate::mm::frame::stats();
            let heap_used = crate::mm::heap::stats().1 as u64;
            let shmem = super::tmpfs::SHMEM_PAGES.load(core::sync::atomic::Ordering::Relaxed);
            Ok(ProcFile::Data(procfs::meminfo(
                total * 4,
                (total - used) * 4,
                heap_used.div_ceil(1024),
                shmem * 4,
                crate::mm::pagecache::pages() * 4,
                crate::mm::pagecache::dirty_pages() * 4,
                crate::mm::pagecache::writeback_pages() * 4,
            )))
        }
        [p] => {
            let pid = parse_pid(p).ok_or(Errno::ENOENT)?;
            info(Pid(pid)).ok_or(Errno::ENOENT)?;
            Ok(ProcFile::Dir(ProcDir::Pid(pid)))
        }
        [p, b"task"] => {
            let pid = parse_pid(p).ok_or(Errno::ENOENT)?;
            info(Pid(pid)).ok_or(Errno::ENOENT)?;
            Ok(ProcFile::Dir(ProcDir::Task(pid)))
        }
        [p, b"fd"] => {
            let pid = parse_pid(p).ok_or(Errno::ENOENT)?;
            info(Pid(pid)).ok_or(Errno::ENOENT)?;
            Ok(ProcFile::Dir(ProcDir::Fd(pid)))
        }
        [p, b"task", t] => {
            let pid = parse_pid(p).ok_or(Errno::ENOENT)?;
            let tid = parse_tid(t, pid)?;
            Ok(ProcFile::Dir(ProcDir::Pid(tid)))
        }
        [p, b"task", t, f] => {
            let pid = parse_pid(p).ok_or(Errno::ENOENT)?;
            let tid = parse_tid(t, pid)?;
            pid_file(tid, f)
        }
        [p, f] => {
            let pid = parse_pid(p).ok_or(Errno::ENOENT)?;
            pid_file(pid, f)
        }
        _ => Err(Errno::ENOENT),
    }
}

/// Thread `t` of process `pid` (ENOENT if it is not one of its threads).
fn parse_tid(t: &[u8], pid: u32) -> Result<u32, Errno> {
    let tid = parse_pid(t).ok_or(Errno::ENOENT)?;
    if proc::with_proc(Pid(tid), |q| q.tgid) != Some(Pid(pid)) {
        return Err(Errno::ENOENT);
    }
    Ok(tid)
}

/// The argument (or with `environ`, the environment) strings of `pid` as they are in its memory
/// now, all of them (Linux reads `arg_start..arg_end` the same way); empty for a zombie.
fn strings(pid: Pid, environ: bool) -> Option<Vec<u8>> {
    proc::with_proc(pid, |p| {
        let (start, end) = if environ { p.exec.env } else { p.exec.args };
        match p.mm.try_borrow() {
            Ok(mm) => crate::mm::user::read_area(&mm.aspace, start, end),
            Err(_) => Vec::new(),
        }
    })
}

/// File `f` of `/proc/PID` (or of a thread's directory).
fn pid_file(pid: u32, f: &[u8]) -> Result<ProcFile, Errno> {
    let (i, cmdline, sched) = info(Pid(pid)).ok_or(Errno::ENOENT)?;
    match f {
        b"stat" => Ok(ProcFile::Data(procfs::stat(&i))),
        b"status" => Ok(ProcFile::Data(procfs::status(&i))),
        b"cmdline" => Ok(ProcFile::Data(strings(Pid(pid), false).unwrap_or(cmdline))),
        b"comm" => {
            let mut c = i.comm.clone();
            c.push(b'\n');
            Ok(ProcFile::Data(c))
        }
        b"environ" => strings(Pid(pid), true)
            .map(ProcFile::Data)
            .ok_or(Errno::ENOENT),
        b"statm" => statm(Pid(pid)).map(ProcFile::Data).ok_or(Errno::ENOENT),
        b"maps" => Ok(ProcFile::Data(maps(Pid(pid)))),
        b"sched" => Ok(ProcFile::Data(procfs::sched(&sched))),
        b"mounts" => Ok(ProcFile::Data(super::mount::proc_mounts())),
        _ => Err(Errno::ENOENT),
    }
}

/// The target of a /proc symbolic link: `self` (the process's directory), `thread-self`, and per
/// process `exe` (the executable's path as execve was given it, made absolute) and `cwd`. None when
/// `path` is no /proc link; ENOENT for a process that does not exist.
pub fn readlink(path: &[u8]) -> Option<Result<Vec<u8>, Errno>> {
    let rest = path.strip_prefix(b"/proc/")?;
    let parts: Vec<&[u8]> = rest
        .split(|&c| c == b'/')
        .filter(|s| !s.is_empty())
        .collect();
    let dec = |v: u32| {
        let mut b = [0u8; 64];
        kcore::fmt::render(v as u64, 10, 1, &mut b)
            .as_bytes()
            .to_vec()
    };
    match parts.as_slice() {
        [b"self"] => Some(Ok(dec(proc::with_current(|p| p.tgid.0)))),
        [b"thread-self"] => {
            let (tgid, tid) = proc::with_current(|p| (p.tgid.0, p.pid.0));
            let mut t = dec(tgid);
            t.extend_from_slice(b"/task/");
            t.extend_from_slice(&dec(tid));
            Some(Ok(t))
        }
        [p, b"fd", n] => {
            let r = parse_pid(p)
                .zip(parse_pid(n).filter(|_| *n != b"self" && *n != b"thread-self"))
                .and_then(|(pid, fd)| {
                    proc::with_proc(Pid(pid), |q| q.fds.get(fd as i64).ok()).flatten()
                })
                .map(|f| fd_name(&f))
                .ok_or(Errno::ENOENT);
            Some(r)
        }
        [p, f @ (b"exe" | b"cwd")] | [p, b"task", _, f @ (b"exe" | b"cwd")] => {
            let exe = *f == b"exe";
            let r =
                parse_pid(p)
                    .and_then(|pid| {
                        proc::with_proc(Pid(pid), |q| {
                            if exe {
                                q.exec.exe.clone()
                            } else {
                                q.cwd.cwd()
                            }
                        })
                    })
                    // The canonical name, as Linux's d_path gives it: a program started through a
                    // symlink (/bin/ls -> busybox) or a path with `..` names the file itself. What
                    // no longer resolves (renamed, removed) keeps the name it was reached by.
                    .map(|p| super::canonical(&p).unwrap_or(p))
                    .ok_or(Errno::ENOENT);
            Some(r)
        }
        _ => None,
    }
}

/// The file descriptor `/proc/PID/fd/N` (or `/proc/PID/task/TID/fd/N`) names, if `path` is one.
fn fd_file(path: &[u8]) -> Option<Rc<dyn FileOps>> {
    let parts: Vec<&[u8]> = path
        .strip_prefix(b"/proc")?
        .split(|&c| c == b'/')
        .filter(|s| !s.is_empty())
        .collect();
    let (pid, n) = match parts.as_slice() {
        [p, b"fd", n] | [_, b"task", p, b"fd", n] => (parse_pid(p)?, n),
        _ => return None,
    };
    let fd = parse_pid(n).filter(|_| *n != b"self" && *n != b"thread-self")?;
    proc::with_proc(Pid(pid), |q| q.fds.get(fd as i64).ok())
        .flatten()
        .map(|f| f.ops.clone())
}

/// What `/proc/PID/fd/N` points at, as Linux names it: the canonical path of the file, the device
/// node of a character device (the console by the node it was opened through, init's as its tty,
/// see `tty::Node`), `pipe:[ino]`, `socket:[ino]`, `anon_inode:[eventpoll]`.
fn fd_name(f: &super::FileRef) -> Vec<u8> {
    if let Some(p) = &f.path {
        // The canonical name (a file opened through /proc/self or a symlink names its target), as
        // Linux's d_path; one that no longer resolves keeps the name it was opened by.
        return super::canonical(p).unwrap_or_else(|_| p.to_vec());
    }
    let st = f.ops.stat();
    let num = |prefix: &[u8], v: u64| {
        let mut b = [0u8; 64];
        let mut out = prefix.to_vec();
        out.extend_from_slice(kcore::fmt::render(v, 10, 1, &mut b).as_bytes());
        out.push(b']');
        out
    };
    match st.mode & 0o170000 {
        0o010000 => num(b"pipe:[", st.ino),
        0o140000 => num(b"socket:[", st.ino),
        0o020000 => match (st.rdev >> 8, st.rdev & 0xff) {
            (1, 3) => b"/dev/null".to_vec(),
            (1, 5) => b"/dev/zero".to_vec(),
            (1, 7) => b"/dev/full".to_vec(),
            (1, 8) => b"/dev/random".to_vec(),
            (1, 9) => b"/dev/urandom".to_vec(),
            _ => crate::tty::Node::path_of(st.rdev)
                .unwrap_or(crate::console::device_name())
                .to_vec(),
        },
        0 => b"anon_inode:[eventpoll]".to_vec(),
        _ => num(b"anon_inode:[", st.ino),
    }
}

/// Directory entries: (inode number, DT_* type, name).
pub fn list(d: ProcDir) -> Vec<(u64, u8, Vec<u8>)> {
    const DT_DIR: u8 = 4;
    const DT_REG: u8 = 8;
    const DT_LNK: u8 = 10;
    let mut out = alloc::vec![(1, DT_DIR, b".".to_vec()), (1, DT_DIR, b"..".to_vec())];
    match d {
        ProcDir::Root => {
            out.push((2, DT_LNK, b"self".to_vec()));
            for (i, f) in ROOT_FILES.iter().enumerate() {
                out.push((3 + i as u64, DT_REG, f.to_vec()));
            }
            // Processes only: threads are under /proc/PID/task (as Linux lists them).
            let pids: Vec<u32> = proc::with_table(|t| {
                t.values()
                    .filter(|p| p.tgid == p.pid)
                    .map(|p| p.pid.0)
                    .collect()
            });
            for pid in pids {
                let mut b = [0u8; 64];
                let name = kcore::fmt::render(pid as u64, 10, 1, &mut b)
                    .as_bytes()
                    .to_vec();
                out.push((1000 + pid as u64, DT_DIR, name));
            }
        }
        ProcDir::Pid(pid) => {
            for (i, f) in PID_FILES.iter().enumerate() {
                out.push(((pid as u64) << 8 | i as u64, DT_REG, f.to_vec()));
            }
            out.push(((pid as u64) << 8 | 0xfc, DT_DIR, b"fd".to_vec()));
            out.push(((pid as u64) << 8 | 0xfd, DT_LNK, b"exe".to_vec()));
            out.push(((pid as u64) << 8 | 0xfe, DT_LNK, b"cwd".to_vec()));
            // A process's directory has its threads' (a thread's own has none).
            if proc::with_proc(Pid(pid), |p| p.tgid == p.pid).unwrap_or(false) {
                out.push(((pid as u64) << 8 | 0xff, DT_DIR, b"task".to_vec()));
            }
        }
        ProcDir::Fd(pid) => {
            let fds = proc::with_proc(Pid(pid), |q| q.fds.open_fds()).unwrap_or_default();
            for (fd, _) in fds {
                let mut b = [0u8; 64];
                let name = kcore::fmt::render(fd as u64, 10, 1, &mut b)
                    .as_bytes()
                    .to_vec();
                out.push(((pid as u64) << 32 | 0x8000_0000 | fd as u64, DT_LNK, name));
            }
        }
        ProcDir::Task(pid) => {
            for tid in threads(Pid(pid)) {
                let mut b = [0u8; 64];
                let name = kcore::fmt::render(tid as u64, 10, 1, &mut b)
                    .as_bytes()
                    .to_vec();
                out.push(((pid as u64) << 32 | tid as u64, DT_DIR, name));
            }
        }
    }
    out
}

impl FileOps for ProcFile {
    fn read_at(
        &self,
        _file: &OpenFile,
        offset: u64,
        buf: &mut dyn ReadBuf,
    ) -> Result<usize, Errno> {
        match self {
            ProcFile::Dir(_) => Err(Errno::EISDIR),
            ProcFile::Link(_) => Err(Errno::EINVAL),
            ProcFile::Data(d) => {
                let start = (offset.min(d.len() as u64)) as usize;
                let n = buf.len().min(d.len() - start);
                buf.put(0, &d[start..start + n])?;
                Ok(n)
            }
        }
    }

    fn stat(&self) -> Stat {
        Stat {
            dev: 4,
            ino: 1,
            nlink: 1,
            mode: match self {
                ProcFile::Dir(_) => 0o040555,
                ProcFile::Data(_) => 0o100444,
                ProcFile::Link(_) => 0o120777,
            },
            // A link's size is its target's length, as lstat reports it.
            size: match self {
                ProcFile::Link(t) => t.len() as i64,
                _ => 0,
            },
            blksize: 1024,
            ..Stat::default()
        }
    }

    /// Seeks within the snapshot taken at open (stat reports size 0, as Linux's /proc does).
    fn seek(&self, file: &OpenFile, offset: i64, whence: u32) -> Result<u64, Errno> {
        let size = match self {
            ProcFile::Dir(_) | ProcFile::Link(_) => 0,
            ProcFile::Data(d) => d.len() as i64,
        };
        let base = match whence {
            0 => 0,
            1 => file.offset() as i64,
            2 => size,
            _ => return Err(Errno::EINVAL),
        };
        let new = base
            .checked_add(offset)
            .filter(|&n| n >= 0)
            .ok_or(Errno::EINVAL)?;
        file.set_offset(new as u64);
        Ok(new as u64)
    }

    fn readdir(&self, _file: &OpenFile) -> Result<Vec<DirEntry>, Errno> {
        match self {
            ProcFile::Dir(d) => Ok(list(*d)),
            ProcFile::Data(_) | ProcFile::Link(_) => Err(Errno::ENOTDIR),
        }
    }

    fn is_dir(&self) -> bool {
        matches!(self, ProcFile::Dir(_))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Serves /proc (read-only: opening for writing is EACCES).
pub fn register() {
    super::register_tree(b"/proc", |path, flags| {
        // Followed, `/proc/PID/fd/N` is the open file itself (Linux's "magic" links): stat sees
        // the pipe, socket or file, and an open reaches it (lstat asks with O_NOFOLLOW).
        if flags & super::O_NOFOLLOW == 0 {
            if let Some(ops) = fd_file(path) {
                return Ok(ops);
            }
        }
        if flags & super::O_ACCMODE != 0 {
            return Err(Errno::EACCES);
        }
        // Followed, `exe` and `cwd` are the executable and the working directory themselves (an
        // open of /proc/self/exe reads the program, stat sees its inode), as Linux's magic links.
        if flags & super::O_NOFOLLOW == 0 && is_exe_or_cwd(path) {
            if let Some(target) = readlink(path) {
                return Ok(super::open(&super::Path::absolute(target?), flags, 0)?
                    .ops
                    .clone());
            }
        }
        Ok(Rc::new(open(path)?))
    });
}
