//! Process exit and reaping: `exit_current` (free memory and files, reparent the children to the nearest
//! subreaper or init, become a zombie, tell the parent) and `wait4` (find a matching child, reap it).
#![deny(unsafe_code)]

use super::signal::{self, SIGCHLD};
use super::{sched, Chan, Pid, State, INIT_PID};
use crate::cost::{self, Cost};
use crate::mm::paging::AddressSpace;
use alloc::vec::Vec;
use kcore::errno::Errno;
use kcore::wait::{Selector, VALID_OPTIONS, WCONTINUED, WNOHANG, WUNTRACED};

/// Ends the current process with wait status `status` (Linux encoding). Never returns.
pub fn exit_current(status: i32) -> ! {
    let t0 = cost::start();
    let pid = super::current_pid();
    if pid == INIT_PID {
        panic!(
            "Attempted to kill init! exitcode={}",
            kcore::fmt::HexPad(status as u32 as u64, 8)
        );
    }
    super::fork::release_vfork_parent();
    // Memory and files go now; the PCB and kernel stack stay until the parent reaps the zombie.
    AddressSpace::activate_kernel();
    let (files, vmas) = super::with_current(|p| {
        let t1 = cost::start();
        p.aspace.release();
        cost::record(Cost::Release, t1);
        (core::mem::take(&mut p.fds), core::mem::take(&mut p.vmas))
    });
    drop(vmas);
    drop(files);

    let (ppid, reaper) = super::with_table(|t| {
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
        for c in t.values_mut() {
            if c.ppid == pid {
                c.ppid = reaper;
                zombies |= c.state == State::Zombie;
            }
        }
        if let Some(p) = t.get_mut(&pid) {
            p.state = State::Zombie;
            p.exit_status = Some(status);
        }
        (ppid, zombies.then_some(reaper))
    });
    if let Some(r) = reaper {
        // Zombies handed over are reported to their new parent.
        signal::send_kernel(r, SIGCHLD);
        sched::wake(Chan::Child(r));
    }
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
    cost::record(Cost::Exit, t0);
    sched::schedule();
    unreachable!("a zombie ran again");
}

/// What wait4 found.
pub enum Waited {
    /// A child changed state: (pid, status).
    Child(Pid, i32),
    /// WNOHANG and no child has changed state yet.
    None,
}

/// wait4's core: waits for a child matching `pid` (Linux's pid forms) per `options`.
pub fn wait(pid: i32, options: u32) -> Result<Waited, Errno> {
    if options & !VALID_OPTIONS != 0 {
        return Err(Errno::EINVAL);
    }
    let t0 = cost::start();
    let me = super::current_pid();
    let own_pgid = super::with_current(|p| p.pgid.0);
    let sel = kcore::wait::selector(pid, own_pgid).ok_or(Errno::ESRCH)?;
    loop {
        let found = super::with_table(|t| {
            let mut any = false;
            let mut hit = None;
            for c in t.values_mut() {
                if c.ppid != me || !sel.matches(c.pid.0, c.pgid.0) {
                    continue;
                }
                any = true;
                if c.state == State::Zombie {
                    hit = Some((c.pid, c.exit_status.unwrap_or(0), true));
                    break;
                }
                if let Some(s) = c.stop_report {
                    let stop = s & 0xff == 0x7f;
                    if (stop && options & WUNTRACED != 0) || (!stop && options & WCONTINUED != 0) {
                        c.stop_report = None;
                        hit = Some((c.pid, s, false));
                        break;
                    }
                }
            }
            if let Some((p, _, true)) = hit {
                t.remove(&p);
                sched::release(p, Some(me));
            }
            (any, hit)
        });
        match found {
            (_, Some((p, status, _))) => {
                cost::record(Cost::Wait, t0);
                return Ok(Waited::Child(p, status));
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
        cost::subtract(Cost::Wait, cost::start().wrapping_sub(blocked));
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
