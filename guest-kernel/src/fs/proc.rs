//! /proc: process and system information generated when a file is opened (a snapshot the reader then
//! reads with offsets, as Linux's seq files look to a simple reader). Directories: `/proc` (one entry per
//! process, `self`, `uptime`, `meminfo`), `/proc/PID` (`stat`, `status`, `cmdline`, `sched`, `maps`,
//! `task`) and `/proc/PID/task/TID` (the same files for one thread). CPU times
//! and scheduler statistics come from the scheduler's entity of the process (`proc::sched::entity`).
#![deny(unsafe_code)]

use crate::arch::layout::USER_STACK_TOP;
use crate::proc::{self, Pid, State};
use alloc::vec::Vec;
use kcore::errno::Errno;
use kcore::procfs::{self, ProcInfo, SchedInfo};

/// A /proc directory.
#[derive(Clone, Copy, Debug)]
pub enum ProcDir {
    Root,
    /// `/proc/PID`, or `/proc/PID/task/TID` (a thread's).
    Pid(u32),
    /// `/proc/PID/task`: one directory per thread.
    Task(u32),
}

/// What an open /proc path is.
pub enum ProcFile {
    Dir(ProcDir),
    Data(Vec<u8>),
}

const PID_FILES: [&[u8]; 5] = [b"cmdline", b"maps", b"sched", b"stat", b"status"];

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
    r.0.threads = threads(Pid(r.0.tgid)).len() as u32;
    Some(r)
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
                // ttyS0 (4, 64) and its foreground group if it is the controlling terminal.
                tty_nr: if p.ctty { (4 << 8) | 64 } else { 0 },
                tpgid: if p.ctty { fg } else { -1 },
                tgid: p.tgid.0,
                threads: 0,
            },
            p.cmdline.clone(),
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

/// `/proc/PID/maps`: the process's areas, named as Linux names them (the file's path, `[heap]` for the
/// area around the break, `[stack]` for the one holding the initial stack).
fn maps(pid: Pid) -> Vec<u8> {
    use kcore::vma::Backing;
    proc::with_proc(pid, |p| {
        let mm = p.mm.borrow();
        let lines: Vec<procfs::MapLine<'_>> = mm
            .vmas
            .iter()
            .map(|v| {
                let (dev, ino, name) = match &v.backing {
                    Backing::File {
                        dev, inode, path, ..
                    } => (*dev, inode.ino as u64, Some(&path[..])),
                    Backing::Anonymous => {
                        let name: Option<&[u8]> = if v.start <= mm.brk && v.end >= mm.brk_start {
                            Some(b"[heap]")
                        } else if v.start < USER_STACK_TOP && USER_STACK_TOP <= v.end {
                            Some(b"[stack]")
                        } else {
                            None
                        };
                        (0, 0, name)
                    }
                };
                procfs::MapLine {
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
            .collect();
        procfs::maps(&lines)
    })
    .unwrap_or_default()
}

/// Opens `path` (which starts with /proc).
pub fn open(path: &[u8]) -> Result<ProcFile, Errno> {
    let rest = path.strip_prefix(b"/proc").ok_or(Errno::ENOENT)?;
    let parts: Vec<&[u8]> = rest
        .split(|&c| c == b'/')
        .filter(|s| !s.is_empty())
        .collect();
    match parts.as_slice() {
        [] => Ok(ProcFile::Dir(ProcDir::Root)),
        [b"uptime"] => {
            let up = crate::time::now_ns();
            Ok(ProcFile::Data(procfs::uptime(up, 0)))
        }
        [b"meminfo"] => {
            let (total, used) = crate::mm::frame::stats();
            let heap_used = crate::mm::heap::stats().1 as u64;
            Ok(ProcFile::Data(procfs::meminfo(
                total * 4,
                (total - used) * 4,
                heap_used.div_ceil(1024),
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

/// File `f` of `/proc/PID` (or of a thread's directory).
fn pid_file(pid: u32, f: &[u8]) -> Result<ProcFile, Errno> {
    let (i, cmdline, sched) = info(Pid(pid)).ok_or(Errno::ENOENT)?;
    match f {
        b"stat" => Ok(ProcFile::Data(procfs::stat(&i))),
        b"status" => Ok(ProcFile::Data(procfs::status(&i))),
        b"cmdline" => Ok(ProcFile::Data(cmdline)),
        b"maps" => Ok(ProcFile::Data(maps(Pid(pid)))),
        b"sched" => Ok(ProcFile::Data(procfs::sched(&sched))),
        _ => Err(Errno::ENOENT),
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
            out.push((3, DT_REG, b"uptime".to_vec()));
            out.push((4, DT_REG, b"meminfo".to_vec()));
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
            // A process's directory has its threads' (a thread's own has none).
            if proc::with_proc(Pid(pid), |p| p.tgid == p.pid).unwrap_or(false) {
                out.push(((pid as u64) << 8 | 0xff, DT_DIR, b"task".to_vec()));
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
