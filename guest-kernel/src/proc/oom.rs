//! The out-of-memory killer (Linux's mm/oom_kill.c, much reduced). When a user page fault cannot get
//! a frame (demand paging or a copy-on-write copy), the process with the most resident pages (VmRSS)
//! is sent SIGKILL, never init (PID 1) nor a vfork child (it owns no memory of its own), and the
//! kernel logs it as Linux does:
//! `Out of memory: Killed process N (comm) total-vm:..kB, anon-rss:..kB, file-rss:0kB, shmem-rss:0kB,
//! UID:0 pgtables:..kB oom_score_adj:0`. Its memory is freed when it exits: at once if it is the
//! faulting process (the signal is delivered on the way back to user mode); otherwise the faulting
//! process waits for the victim to become a zombie (a few ticks at most, since SIGKILL wakes and
//! continues it) and then retries the access.
#![deny(unsafe_code)]

use super::{with_proc, with_table, Pid, State, INIT_PID};
use crate::kprintln;
use kcore::fmt::Dec;

/// Below this many free frames a fault that the memory areas allow is taken to have failed for
/// want of memory (a page table may be needed as well as the page).
const LOW_FRAMES: u64 = 8;

/// Longest wait for a victim to exit, in 10 ms steps.
const WAIT_STEPS: u32 = 200;

/// Handles a user page fault the memory areas allow but no frame could be had for: if memory is
/// indeed (nearly) gone, kills the biggest process and returns true (the faulting process returns to
/// user mode: it retries the access, or dies of its pending SIGKILL).
pub fn out_of_memory() -> bool {
    if !crate::mm::frame::fewer_free_than(LOW_FRAMES) {
        return false;
    }
    // Page-cache pages go before any process does (dirty ones written back first).
    if crate::fs::writeback::reclaim(256) > 0 {
        return true;
    }
    let Some(victim) = pick_victim() else {
        return false;
    };
    kill(victim);
    if victim != super::current_pid() {
        wait_for(victim);
    }
    true
}

/// The process with the most resident pages, init and vfork children aside.
fn pick_victim() -> Option<Pid> {
    with_table(|t| {
        t.values()
            // Processes (their leaders), not each thread of one.
            .filter(|p| {
                p.pid != INIT_PID
                    && p.tgid == p.pid
                    && p.state != State::Zombie
                    && !p.mm.borrow().aspace.is_borrowed()
            })
            .map(|p| (p.mm.borrow().aspace.mapped_pages(), p.pid))
            .filter(|&(rss, _)| rss > 0)
            .max()
            .map(|(_, pid)| pid)
    })
}

/// Logs and sends SIGKILL.
fn kill(pid: Pid) {
    let info = with_proc(pid, |p| {
        let mm = p.mm.borrow();
        (
            p.name.clone(),
            mm.vmas.total() / 1024,
            mm.aspace.mapped_pages() * 4,
        )
    });
    let Some((name, total_vm_kb, rss_kb)) = info else {
        return;
    };
    // Page-table pages: about one leaf table per 2 MiB mapped, plus the upper levels.
    let pgtables_kb = (rss_kb / 2048 + 3) * 4;
    kprintln!(
        "Out of memory: Killed process {} ({}) total-vm:{}kB, anon-rss:{}kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:{}kB oom_score_adj:0",
        Dec(pid.0 as u64),
        core::str::from_utf8(&name).unwrap_or("?"),
        Dec(total_vm_kb),
        Dec(rss_kb),
        Dec(pgtables_kb)
    );
    super::signal::send_kernel(pid, super::signal::SIGKILL);
}

/// Waits (in 10 ms sleeps) until `pid` has exited and freed its memory.
fn wait_for(pid: Pid) {
    for _ in 0..WAIT_STEPS {
        let alive = with_proc(pid, |p| p.state != State::Zombie).unwrap_or(false);
        if !alive {
            return;
        }
        if !super::sched::sleep_until(crate::time::now_ns() + 10_000_000) {
            // A signal for us: let it be delivered; the access is retried afterwards if we live.
            return;
        }
    }
}
