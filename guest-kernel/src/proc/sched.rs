//! The scheduler: the run queue (a `kcore::sched::Policy`, round-robin for now), `schedule` and the
//! context switch, blocking on a [`Chan`] and waking, sleeping until a time, the timer tick, and the idle
//! task (the boot stack, which halts until an interrupt makes someone ready).
//!
//! Kept lean: kernel code is instruction-emulated on the development hosts, so the tick does a counter
//! update and a compare unless a slice ends or a sleeper is due.
#![deny(unsafe_code)]

use super::{Chan, Pid, State, CURRENT, PROCS};
use crate::arch::switch::TaskContext;
use crate::sync::KCell;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use kcore::sched::{Policy, RoundRobin};

/// Round-robin time slice in timer ticks.
const SLICE_TICKS: u32 = 5;

static POLICY: KCell<RoundRobin> = KCell::new(RoundRobin::new(SLICE_TICKS));
static IDLE: KCell<Option<Box<TaskContext>>> = KCell::new(None);
/// Exited processes nobody will wait for (their kernel stack is freed after switching away).
static DEAD: KCell<Vec<Pid>> = KCell::new(Vec::new());
/// Earliest wake-up time of a sleeper (ns), u64::MAX if none.
static NEXT_WAKE: AtomicU64 = AtomicU64::new(u64::MAX);
/// Context switches so far.
static SWITCHES: AtomicU64 = AtomicU64::new(0);
/// TSC when the last switch started, and the TSC ticks all switches took (switch_to to finish_switch).
static SWITCH_START: AtomicU64 = AtomicU64::new(0);
static SWITCH_TSC: AtomicU64 = AtomicU64::new(0);
/// Timer ticks handled and the TSC ticks they took (without the switches they caused).
static TICKS: AtomicU64 = AtomicU64::new(0);
static TICK_TSC: AtomicU64 = AtomicU64::new(0);

fn add(c: &AtomicU64, v: u64) {
    c.store(c.load(Ordering::Relaxed) + v, Ordering::Relaxed);
}

/// (switches, average ns per switch, ticks, average ns per tick): measured kernel time.
pub fn costs() -> (u64, u64, u64, u64) {
    let s = SWITCHES.load(Ordering::Relaxed);
    let t = TICKS.load(Ordering::Relaxed);
    (
        s,
        crate::time::tsc_to_ns(SWITCH_TSC.load(Ordering::Relaxed)) / s.max(1),
        t,
        crate::time::tsc_to_ns(TICK_TSC.load(Ordering::Relaxed)) / t.max(1),
    )
}

fn ctx_ptr(b: &mut Box<TaskContext>) -> *mut TaskContext {
    &mut **b
}

/// Makes `pid` runnable.
pub fn make_ready(pid: Pid) {
    POLICY.borrow_mut().enqueue(pid.0);
}

/// Whether a process is waiting to run.
pub fn has_ready() -> bool {
    POLICY.borrow().ready() > 0
}

/// Gives the CPU to the next ready process (or the idle task). The caller has already set the current
/// process's state (Ready and enqueued, Blocked, Stopped or Zombie). Returns when this task runs again.
pub fn schedule() {
    flush_wakes();
    let next = POLICY.borrow_mut().pick_next().map(Pid);
    let prev = *CURRENT.borrow();
    if prev == next {
        if let Some(p) = prev {
            super::with_proc(p, |p| p.state = State::Running);
        }
        POLICY.borrow_mut().started();
        return;
    }
    let mut idle = IDLE.borrow_mut();
    let idle_ctx = ctx_ptr(idle.get_or_insert_with(|| Box::new(TaskContext::new())));
    drop(idle);
    let mut procs = PROCS.borrow_mut();
    let prev_ctx = match prev {
        Some(p) => procs.get_mut(&p).map(|p| ctx_ptr(&mut p.ctx)),
        None => Some(idle_ctx),
    };
    let Some(prev_ctx) = prev_ctx else {
        panic!("schedule: the current process is gone");
    };
    let next_ctx = match next {
        Some(n) => {
            let Some(p) = procs.get_mut(&n) else {
                panic!("schedule: a queued process is gone");
            };
            p.state = State::Running;
            crate::arch::gdt::set_kernel_stack(p.kstack_top());
            if crate::arch::cpu::read_cr3() & !0xfff != p.aspace.root() {
                p.aspace.activate();
            }
            crate::arch::set_fs_base(p.fs_base);
            ctx_ptr(&mut p.ctx)
        }
        None => idle_ctx,
    };
    drop(procs);
    *CURRENT.borrow_mut() = next;
    POLICY.borrow_mut().started();
    add(&SWITCHES, 1);
    SWITCH_START.store(crate::arch::cpu::rdtsc(), Ordering::Relaxed);
    crate::arch::switch::switch_to(prev_ctx, next_ctx, prev.is_some(), next.is_some());
    finish_switch();
}

/// Runs on the new task right after a switch: frees the processes that died without a waiter.
pub fn finish_switch() {
    add(
        &SWITCH_TSC,
        crate::arch::cpu::rdtsc().wrapping_sub(SWITCH_START.load(Ordering::Relaxed)),
    );
    let dead = core::mem::take(&mut *DEAD.borrow_mut());
    if dead.is_empty() {
        return;
    }
    let cur = *CURRENT.borrow();
    let mut keep = Vec::new();
    let mut procs = PROCS.borrow_mut();
    for pid in dead {
        if Some(pid) == cur {
            keep.push(pid);
        } else {
            procs.remove(&pid);
        }
    }
    drop(procs);
    DEAD.borrow_mut().extend(keep);
}

/// Marks an exited process to be freed once the CPU has left it.
pub fn bury(pid: Pid) {
    DEAD.borrow_mut().push(pid);
}

/// The current process yields the CPU but stays runnable.
pub fn yield_now() {
    let Some(pid) = *CURRENT.borrow() else { return };
    super::with_proc(pid, |p| p.state = State::Ready);
    make_ready(pid);
    schedule();
}

/// Blocks the current process on `chan` until [`wake`] (or a signal) makes it ready again.
pub fn block(chan: Chan) {
    super::with_current(|p| p.state = State::Blocked(chan));
    schedule();
}

/// Wakes that had to wait because the process table was in use (e.g. a pipe end dropped while a
/// descriptor table was being changed).
static DEFERRED: KCell<Vec<Chan>> = KCell::new(Vec::new());

/// Runs the deferred wake-ups (on the way back to user mode and before switching).
pub fn flush_wakes() {
    if DEFERRED.borrow().is_empty() {
        return;
    }
    let chans = core::mem::take(&mut *DEFERRED.borrow_mut());
    for c in chans {
        wake(c);
    }
}

/// Wakes every process blocked on `chan`, and every process in [`block_any`] that listed it.
pub fn wake(chan: Chan) {
    let Ok(mut procs) = PROCS.try_borrow_mut() else {
        DEFERRED.borrow_mut().push(chan);
        return;
    };
    let mut policy = POLICY.borrow_mut();
    for p in procs.values_mut() {
        if p.state == State::Blocked(chan) {
            p.state = State::Ready;
            policy.enqueue(p.pid.0);
        }
    }
    for (pid, chans) in POLLERS.borrow().iter() {
        if chans.contains(&chan) {
            if let Some(p) = procs.get_mut(pid) {
                if matches!(p.state, State::Blocked(_)) {
                    p.state = State::Ready;
                    policy.enqueue(pid.0);
                }
            }
        }
    }
}

/// Processes in [`block_any`] and the channels each waits on.
static POLLERS: KCell<Vec<(Pid, Vec<Chan>)>> = KCell::new(Vec::new());

/// Blocks the current process until any of `chans` is woken, `deadline` (ns since boot) passes, or a
/// signal arrives (poll, select). Returns once; the caller rechecks what it waits for.
pub fn block_any(chans: Vec<Chan>, deadline: Option<u64>) {
    let pid = super::current_pid();
    POLLERS.borrow_mut().push((pid, chans));
    let deadline = deadline.unwrap_or(u64::MAX);
    super::with_current(|p| p.wake_at = deadline);
    if deadline < NEXT_WAKE.load(Ordering::Relaxed) {
        NEXT_WAKE.store(deadline, Ordering::Relaxed);
    }
    block(Chan::Sleep);
    POLLERS.borrow_mut().retain(|(p, _)| *p != pid);
}

/// Wakes `pid` if it is blocked (a signal arrived); also resumes a stopped one when `cont`.
pub fn wake_pid(pid: Pid, cont: bool) {
    let mut procs = PROCS.borrow_mut();
    if let Some(p) = procs.get_mut(&pid) {
        if matches!(p.state, State::Blocked(_)) || (cont && p.state == State::Stopped) {
            p.state = State::Ready;
            POLICY.borrow_mut().enqueue(pid.0);
        }
    }
}

/// Sleeps until `deadline` (ns since boot) or a signal; true if the time was reached.
pub fn sleep_until(deadline: u64) -> bool {
    loop {
        if crate::time::now_ns() >= deadline {
            return true;
        }
        if super::signal::pending_for_current() {
            return false;
        }
        super::with_current(|p| p.wake_at = deadline);
        if deadline < NEXT_WAKE.load(Ordering::Relaxed) {
            NEXT_WAKE.store(deadline, Ordering::Relaxed);
        }
        block(Chan::Sleep);
    }
}

fn wake_sleepers(now: u64) {
    let mut next = u64::MAX;
    let mut procs = PROCS.borrow_mut();
    let mut policy = POLICY.borrow_mut();
    for p in procs.values_mut() {
        if p.state == State::Blocked(Chan::Sleep) {
            if p.wake_at <= now {
                p.state = State::Ready;
                policy.enqueue(p.pid.0);
            } else {
                next = next.min(p.wake_at);
            }
        }
    }
    NEXT_WAKE.store(next, Ordering::Relaxed);
}

/// The timer tick. `from_user`: it interrupted ring 3, so the current task may be switched out here
/// (its trap frame is on its own kernel stack).
pub fn tick(from_user: bool) {
    let t0 = crate::arch::cpu::rdtsc();
    add(&TICKS, 1);
    if NEXT_WAKE.load(Ordering::Relaxed) != u64::MAX {
        let now = crate::time::now_ns();
        if now >= NEXT_WAKE.load(Ordering::Relaxed) {
            wake_sleepers(now);
        }
    }
    if !from_user {
        add(&TICK_TSC, crate::arch::cpu::rdtsc().wrapping_sub(t0));
        return;
    }
    let Some(pid) = *CURRENT.borrow() else {
        add(&TICK_TSC, crate::arch::cpu::rdtsc().wrapping_sub(t0));
        return;
    };
    super::with_proc(pid, |p| p.ticks += 1);
    let preempt = POLICY.borrow_mut().tick();
    add(&TICK_TSC, crate::arch::cpu::rdtsc().wrapping_sub(t0));
    if preempt {
        yield_now();
    }
}

/// The idle task: runs whoever is ready, else halts until an interrupt. Never returns.
pub fn idle_loop() -> ! {
    loop {
        if has_ready() {
            schedule();
        } else {
            crate::arch::cpu::enable_and_halt();
        }
    }
}
