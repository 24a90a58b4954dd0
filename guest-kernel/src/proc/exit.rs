//! Process exit and reaping: `exit_current` (free memory and files, reparent the children to the nearest
//! subreaper or init, become a zombie, tell the parent) and `wait4` (find a matching child, reap it).
#![deny(unsafe_code)]

use super::signal::{self, SIGCHLD};
use super::{sched, Chan, Pid, State, INIT_PID};
use crate::cost::{self, Cost};
use crate::mm::paging::AddressSpace;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use kcore::errno::Errno;
use kcore::wait::{Selector, VALID_OPTIONS, WCONTINUED, WNOHANG, WUNTRACED};

type Table = BTreeMap<Pid, Box<super::Process>>;

/// Ends the whole thread group of the current thread with `status` (exit_group, a fatal signal):
/// the other threads are killed (SIGKILL, taken when they next run) and the leader will report
/// `status`. Never returns.
pub fn exit_group(status: i32) -> ! {
    let pid = super::current_pid();
    let tgid = super::with_current(|p| p.tgid);
    let others: Vec<Pid> = super::with_table(|t| {
        let mut others = Vec::new();
        for q in t.values_mut() {
            if q.tgid != tgid {
                continue;
            }
            q.group_exit = Some(status);
            if q.pid != pid && q.state != State::Zombie {
                others.push(q.pid);
            } else if q.pid != pid {
                // A leader that already exited reports the group's status.
                q.exit_status = Some(status);
            }
        }
        others
    });
    for o in others {
        let _ = signal::send_thread(o, signal::SIGKILL);
    }
    exit_current(status)
}

/// [`exit_group`] unless the group is already ending (a thread killed by it just exits).
pub fn die(status: i32) -> ! {
    if super::with_current(|p| p.group_exit.is_some()) {
        exit_current(status)
    }
    exit_group(status)
}

/// The end of a thread that is not its group's leader: it clears its tid word (waking a joiner),
/// gives up its share of the memory and files and leaves at once (no zombie, no SIGCHLD). If it was
/// the last and the leader has already exited, the group's parent learns of it now.
fn exit_thread(pid: Pid, tgid: Pid, status: i32) -> ! {
    AddressSpace::activate_kernel();
    let (files, mm) = super::with_current(|p| {
        (
            core::mem::take(&mut p.fds),
            core::mem::replace(&mut p.mm, super::Mm::none()),
        )
    });
    super::drop_mm(mm);
    drop(files);
    let leader_parent = super::with_table(|t| {
        if let Some(p) = t.get_mut(&pid) {
            p.state = State::Zombie;
            p.exit_status = Some(status);
            p.ppid = Pid(0);
        }
        let others = t
            .values()
            .any(|q| q.tgid == tgid && q.pid != pid && q.pid != tgid && q.state != State::Zombie);
        match t.get(&tgid) {
            Some(l) if !others && l.state == State::Zombie => Some(l.ppid),
            _ => None,
        }
    });
    sched::bury(pid);
    // A group stop may have been waiting for this thread only.
    signal::complete_group_stop(tgid);
    if let Some(ppid) = leader_parent {
        // The group ends with this thread: what the leader's exit left for the end happens now.
        group_ended(tgid, ppid);
    }
    sched::schedule();
    unreachable!("an exited thread ran again");
}

/// The last thread of group `tgid` is gone (its leader exited before): the leader's children go to
/// the reaper now, as Linux reparents a thread's children to another live thread of its group and
/// only the group's end hands them on; the terminal and record locks are let go; the parent learns
/// of the zombie.
fn group_ended(tgid: Pid, ppid: Pid) {
    let (sid, ctty) = super::with_proc(tgid, |p| (p.sid, p.ctty)).unwrap_or((Pid(0), false));
    crate::tty::exiting(tgid.0, sid.0, ctty);
    crate::fs::lock::exited(u64::from(tgid.0));
    signal::group_dead(tgid);
    reparent_children(tgid);
    notify_parent(tgid, ppid);
}

/// A process (its last thread gone) is a zombie now: its parent gets SIGCHLD and a wake, or reaps it
/// at once when it ignores SIGCHLD.
fn notify_parent(pid: Pid, ppid: Pid) {
    if signal::parent_reaps_at_once(ppid) {
        super::with_table(|t| {
            if let Some(p) = t.get_mut(&pid) {
                p.ppid = Pid(0);
            }
        });
        sched::bury(pid);
    } else {
        signal::send_kernel(ppid, SIGCHLD);
    }
    sched::wake(Chan::Child(ppid));
}

/// Ends the current thread with wait status `status` (Linux encoding); for a group's only or last
/// thread, the process. Never returns.
pub fn exit_current(status: i32) -> ! {
    let t0 = cost::start();
    let pid = super::current_pid();
    if pid == INIT_PID {
        panic!(
            "Attempted to kill init! exitcode={}",
            kcore::fmt::HexPad(status as u32 as u64, 8)
        );
    }
    let (tgid, clear_tid, robust, group_status) = super::with_current(|p| {
        (
            p.tgid,
            core::mem::take(&mut p.clear_child_tid),
            core::mem::take(&mut p.robust_list),
            p.group_exit,
        )
    });
    super::futex::forget(pid);
    signal::exiting();
    if robust != 0 {
        crate::syscall::thread::robust_cleanup(robust, pid);
    }
    // CLONE_CHILD_CLEARTID: the tid word becomes 0 and one waiter is woken (pthread_join).
    if clear_tid != 0 && crate::syscall::file::copy_to_user(clear_tid, &0u32.to_le_bytes()).is_ok()
    {
        super::futex::wake_address(clear_tid, 1);
    }
    if tgid != pid {
        exit_thread(pid, tgid, status);
    }
    let status = group_status.unwrap_or(status);
    // Other threads still running: the leader waits as a zombie, reported when the last one ends.
    let threads_left = super::with_table(|t| {
        t.values()
            .any(|q| q.tgid == pid && q.pid != pid && q.state != State::Zombie)
    });
    super::fork::release_vfork_parent();
    if !threads_left {
        let (sid, ctty) = super::with_current(|p| (p.sid, p.ctty));
        crate::tty::exiting(pid.0, sid.0, ctty);
    }
    // Memory and files go now; the PCB and kernel stack stay until the parent reaps the zombie.
    AddressSpace::activate_kernel();
    let (files, mm) = super::with_current(|p| {
        (
            core::mem::take(&mut p.fds),
            core::mem::replace(&mut p.mm, super::Mm::none()),
        )
    });
    let t1 = cost::start();
    super::drop_mm(mm);
    cost::record(Cost::Release, t1);
    drop(files);
    let ppid = super::with_table(|t| {
        let p = t.get_mut(&pid);
        p.map(|p| {
            p.state = State::Zombie;
            p.exit_status = Some(status);
            p.ppid
        })
        .unwrap_or(INIT_PID)
    });
    if !threads_left {
        crate::fs::lock::exited(u64::from(pid.0));
        signal::group_dead(pid);
        reparent_children(pid);
        notify_parent(pid, ppid);
    } else {
        signal::complete_group_stop(pid);
    }
    cost::record(Cost::Exit, t0);
    sched::schedule();
    unreachable!("a zombie ran again");
}

/// Hands `pid`'s children to the nearest living subreaper among its ancestors, else init (zombies
/// among them are reported to it), and sends SIGHUP then SIGCONT to the process groups this orphans
/// that have a stopped member. `pid` is a zombie by now.
fn reparent_children(pid: Pid) {
    let (reaper, orphaned) = super::with_table(|t| {
        let ppid = t.get(&pid).map(|p| p.ppid).unwrap_or(INIT_PID);
        // The nearest living subreaper among the ancestors, else init.
        let mut reaper = INIT_PID;
        let mut a = ppid;
        while a.0 > 1 {
            match t.get(&a) {
                Some(p) if p.subreaper && p.state != State::Zombie => {
                    reaper = a;
                    break;
                }
                Some(p) => a = p.ppid,
                None => break,
            }
        }
        let mut zombies = false;
        let mut child_groups = Vec::new();
        for c in t.values_mut() {
            if c.ppid == pid && c.tgid != pid {
                c.ppid = reaper;
                zombies |= c.state == State::Zombie;
                child_groups.push((c.pgid, c.sid));
            }
        }
        // Many children usually share a few groups: check each group once.
        child_groups.sort_unstable();
        child_groups.dedup();
        let orphaned = newly_orphaned_groups(t, pid, &child_groups);
        (zombies.then_some(reaper), orphaned)
    });
    for g in orphaned {
        let _ = signal::send_group(g, signal::SIGHUP);
        let _ = signal::send_group(g, signal::SIGCONT);
    }
    if let Some(r) = reaper {
        // Zombies handed over are reported to their new parent.
        signal::send_kernel(r, SIGCHLD);
        sched::wake(Chan::Child(r));
    }
}

/// Whether process group `pgid` is orphaned (POSIX): no member other than `ignore` has a parent in
/// another group of the same session (Linux's will_become_orphaned_pgrp; zombies and init's children
/// do not count).
fn group_orphaned(t: &Table, pgid: Pid, ignore: Option<Pid>) -> bool {
    !t.values().any(|q| {
        q.pgid == pgid
            && Some(q.pid) != ignore
            && q.state != State::Zombie
            && q.ppid != INIT_PID
            && t.get(&q.ppid)
                .is_some_and(|parent| parent.pgid != pgid && parent.sid == q.sid)
    })
}

/// Whether the current process's group is orphaned (its job-control stops are discarded, its
/// background terminal access fails with EIO).
pub fn current_group_orphaned() -> bool {
    let pgid = super::with_current(|p| p.pgid);
    super::with_table(|t| group_orphaned(t, pgid, None))
}

/// The groups that `pid`'s exit orphans and that have a stopped member: they get SIGHUP then SIGCONT
/// (Linux's kill_orphaned_pgrp, called for the exiting process's own group and for each reparented
/// child's). `child_groups` are the (pgid, sid) of its children, already reparented.
fn newly_orphaned_groups(t: &Table, pid: Pid, child_groups: &[(Pid, Pid)]) -> Vec<Pid> {
    let Some(me) = t.get(&pid) else {
        return Vec::new();
    };
    let (pgid, sid) = (me.pgid, me.sid);
    let stopped = |g: Pid| t.values().any(|q| q.pgid == g && q.state == State::Stopped);
    let mut out = Vec::new();
    // Our own group, if our parent (another group of the session) was its link.
    if t.get(&me.ppid)
        .is_some_and(|parent| parent.pgid != pgid && parent.sid == sid)
        && group_orphaned(t, pgid, Some(pid))
        && stopped(pgid)
    {
        out.push(pgid);
    }
    // Our children's groups, if we (in another group of their session) were their link.
    for &(g, s) in child_groups {
        if g != pgid && s == sid && group_orphaned(t, g, None) && stopped(g) {
            out.push(g);
        }
    }
    out
}

/// What getrusage and wait4 report of a process: CPU times in ns and context switch counts (the
/// kernel keeps no page-fault or RSS statistics: those fields are 0).
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub utime: u64,
    pub stime: u64,
    pub nvcsw: u64,
    pub nivcsw: u64,
}

impl Usage {
    /// `pid`'s own usage (RUSAGE_SELF).
    pub fn own(pid: Pid) -> Usage {
        sched::entity(pid).map_or(Usage::default(), |e| Usage {
            utime: e.utime(),
            stime: e.stime,
            nvcsw: e.nr_voluntary_switches,
            nivcsw: e.nr_involuntary_switches,
        })
    }

    /// The usage of `pid`'s reaped children (RUSAGE_CHILDREN); `csw` is its `children_csw`.
    pub fn children(pid: Pid, csw: [u64; 2]) -> Usage {
        let (utime, stime) =
            sched::entity(pid).map_or((0, 0), |e| (e.children_utime, e.children_stime));
        Usage {
            utime,
            stime,
            nvcsw: csw[0],
            nivcsw: csw[1],
        }
    }

    /// Both of the above (what wait4 reports of the child it returns: Linux's RUSAGE_BOTH).
    pub fn both(pid: Pid, csw: [u64; 2]) -> Usage {
        let (a, b) = (Usage::own(pid), Usage::children(pid, csw));
        Usage {
            utime: a.utime + b.utime,
            stime: a.stime + b.stime,
            nvcsw: a.nvcsw + b.nvcsw,
            nivcsw: a.nivcsw + b.nivcsw,
        }
    }
}

/// What wait4 found.
pub enum Waited {
    /// A child changed state: (pid, status, its usage and its reaped descendants').
    Child(Pid, i32, Usage),
    /// WNOHANG and no child has changed state yet.
    None,
}

/// wait4's core: waits for a child matching `pid` (Linux's pid forms) per `options`.
pub fn wait(pid: i32, options: u32) -> Result<Waited, Errno> {
    if options & !VALID_OPTIONS != 0 {
        return Err(Errno::EINVAL);
    }
    // The cost counter leaves out the time spent blocked: the start moves on by it.
    let mut t0 = cost::start();
    let (me, own_pgid) = super::with_current(|p| (p.tgid, p.pgid.0));
    let sel = kcore::wait::selector(pid, own_pgid).ok_or(Errno::ESRCH)?;
    loop {
        let found = super::with_table(|t| {
            let mut any = false;
            let mut hit = None;
            // Threads are not children; a leader whose threads still run is not done yet.
            let running_threads: Vec<Pid> = t
                .values()
                .filter(|q| q.tgid != q.pid && q.state != State::Zombie)
                .map(|q| q.tgid)
                .collect();
            for c in t.values_mut() {
                if c.ppid != me || c.tgid != c.pid || !sel.matches(c.pid.0, c.pgid.0) {
                    continue;
                }
                any = true;
                if c.state == State::Zombie && !running_threads.contains(&c.pid) {
                    hit = Some((c.pid, c.exit_status.unwrap_or(0), true, c.children_csw));
                    break;
                }
                if let Some(s) = c.stop_report {
                    let stop = s & 0xff == 0x7f;
                    if (stop && options & WUNTRACED != 0) || (!stop && options & WCONTINUED != 0) {
                        c.stop_report = None;
                        hit = Some((c.pid, s, false, c.children_csw));
                        break;
                    }
                }
            }
            let hit = hit.map(|(p, status, reaped, csw)| {
                // Read before the scheduler forgets a reaped child.
                let usage = Usage::both(p, csw);
                if reaped {
                    t.remove(&p);
                    sched::release(p, Some(me));
                    if let Some(parent) = t.get_mut(&me) {
                        parent.children_csw[0] += usage.nvcsw;
                        parent.children_csw[1] += usage.nivcsw;
                    }
                }
                (p, status, usage)
            });
            (any, hit)
        });
        match found {
            (_, Some((p, status, usage))) => {
                cost::record(Cost::Wait, t0);
                return Ok(Waited::Child(p, status, usage));
            }
            (false, None) => return Err(Errno::ECHILD),
            (true, None) if options & WNOHANG != 0 => return Ok(Waited::None),
            (true, None) => {}
        }
        if signal::pending_for_current() {
            return Err(Errno::ERESTARTSYS);
        }
        let blocked = cost::start();
        sched::block(Chan::Child(me));
        t0 = t0.wrapping_add(cost::start().wrapping_sub(blocked));
    }
}

/// The pids of `pid`'s children (for tests and /proc).
#[allow(dead_code)]
pub fn children(pid: Pid) -> Vec<Pid> {
    super::with_table(|t| {
        t.values()
            .filter(|c| c.ppid == pid)
            .map(|c| c.pid)
            .collect()
    })
}

#[allow(dead_code)]
fn _unused(_: Selector) {}
