//! The scheduler: the run queue (`kcore::sched::Cfs`, Linux 6.5's CFS), `schedule` and the context
//! switch, blocking on a [`Chan`] and waking, sleeping until a time, the timer tick, preemption on the
//! way back to user mode, CPU-time accounting, and the idle task (the boot stack, which halts until an
//! interrupt makes someone ready).
//!
//! The policy runs on a nanosecond clock (the TSC, `time::now_ns`): the kernel calls it at every tick,
//! block, wakeup, fork and switch, and it charges the running task (`update_curr`). A wakeup or tick
//! that wants the running task preempted sets [`NEED_RESCHED`]; the switch happens on the way back to
//! user mode (kernel code is never preempted). Kernel-mode time is measured at trap entry and exit
//! ([`kernel_entry`], [`kernel_exit`]) and folded into the task's statistics at the next switch, so
//! utime/stime are exact rather than tick samples.
//!
//! Kept lean: kernel code is instruction-emulated on the development hosts, so a tick is a clock read,
//! one multiply for the vruntime, a descent to the leftmost task and a few compares; no scan of the
//! process table unless a sleeper is due. A switch reads the clock once and touches no process-table
//! entry: the caller says what becomes of the running task (preempt, yield and block go straight to
//! [`switch`]; `schedule` looks the state up for the rarer callers), the running task's state stays
//! `Ready` (no write on the way in or out), the policy keeps each task's boxed `TaskContext` as its
//! tag, and that context carries the kernel stack top, CR3 and FS base the switch loads.
#![deny(unsafe_code)]

use super::{Chan, Pid, State, CURRENT, PROCS};
use crate::arch::switch::TaskContext;
use crate::sync::KCell;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kcore::sched::{Cfs, Entity, Prev, SchedPolicy, Tunables};

static POLICY: KCell<Cfs> = KCell::new(Cfs::new(Tunables::LINUX));
static IDLE: KCell<Option<Box<TaskContext>>> = KCell::new(None);
/// Exited processes nobody will wait for (their kernel stack is freed after switching away).
static DEAD: KCell<Vec<Pid>> = KCell::new(Vec::new());
/// Earliest wake-up time of a sleeper (ns), u64::MAX if none.
static NEXT_WAKE: AtomicU64 = AtomicU64::new(u64::MAX);
/// The running task should give the CPU up at the next return to user mode.
static NEED_RESCHED: AtomicBool = AtomicBool::new(false);
/// TSC when the current task last entered the kernel (or was switched in), and the kernel time (TSC
/// ticks) it spent since its last switch-in that is not yet in its statistics.
static KERNEL_SINCE: AtomicU64 = AtomicU64::new(0);
static KERNEL_TSC: AtomicU64 = AtomicU64::new(0);
/// `switch` ran since the last return to user mode (that trap's time is not one path's cost).
static SWITCHED: AtomicBool = AtomicBool::new(false);
/// Context switches so far.
static SWITCHES: AtomicU64 = AtomicU64::new(0);
/// TSC when the last switch started, and the TSC ticks all switches took (from entering `schedule`
/// to `finish_switch` on the next task: the pick, kernel stack, address space, FS base, registers).
static SWITCH_START: AtomicU64 = AtomicU64::new(0);
static SWITCH_TSC: AtomicU64 = AtomicU64::new(0);
/// Calls of `schedule` and the TSC ticks the policy's part took (charging the previous task, putting
/// it back, picking the next).
static PICKS: AtomicU64 = AtomicU64::new(0);
static PICK_TSC: AtomicU64 = AtomicU64::new(0);
/// Timer ticks handled and the TSC ticks they took (without the switches they caused).
static TICKS: AtomicU64 = AtomicU64::new(0);
static TICK_TSC: AtomicU64 = AtomicU64::new(0);

fn add(c: &AtomicU64, v: u64) {
    // One CPU, interrupts off: a plain load and store (no locked instruction to emulate).
    c.store(c.load(Ordering::Relaxed) + v, Ordering::Relaxed);
}

/// Measured kernel time (emulated on the development hosts).
pub struct Costs {
    pub switches: u64,
    /// Average ns per context switch (all of `schedule`, the pick included).
    pub switch_ns: u64,
    pub picks: u64,
    /// Average ns of the policy's part of `schedule` (charge, requeue, pick).
    pub pick_ns: u64,
    pub ticks: u64,
    /// Average ns per timer tick (without the switches it causes).
    pub tick_ns: u64,
}

pub fn costs() -> Costs {
    let avg = |c: &AtomicU64, n: u64| crate::time::tsc_to_ns(c.load(Ordering::Relaxed)) / n.max(1);
    let switches = SWITCHES.load(Ordering::Relaxed);
    let picks = PICKS.load(Ordering::Relaxed);
    let ticks = TICKS.load(Ordering::Relaxed);
    Costs {
        switches,
        switch_ns: avg(&SWITCH_TSC, switches),
        picks,
        pick_ns: avg(&PICK_TSC, picks),
        ticks,
        tick_ns: avg(&TICK_TSC, ticks),
    }
}

/// Sets the CFS tunables from the kernel command line.
pub fn init(cmdline: &str) -> Tunables {
    crate::sync::waitqueue::install(crate::sync::waitqueue::Scheduler {
        block: queue_block,
        wake: |key| wake(Chan::Queue(key)),
        signal_pending: super::signal::pending_for_current,
    });
    super::install_task_ops();
    crate::mm::uaccess::install(crate::syscall::file::validate_user);
    let t = kcore::cmdline::sched_tunables(cmdline);
    POLICY.borrow_mut().set_tunables(t);
    t
}

fn ctx_ptr(b: &mut Box<TaskContext>) -> *mut TaskContext {
    &mut **b
}

fn resched_if(preempt: bool) {
    if preempt {
        NEED_RESCHED.store(true, Ordering::Relaxed);
    }
}

/// A new process (`parent` forked it; `None` for init) joins the run queue: it inherits the parent's
/// nice value and policy and starts a slice behind (START_DEBIT); the parent keeps running. Its
/// context gets its address space and FS base, and the policy keeps where the context is.
pub fn new_task(pid: Pid, parent: Option<Pid>) {
    add(&FORKS, 1);
    let ctx = super::with_proc(pid, |p| {
        p.ctx.cr3 = p.mm.borrow().aspace.root();
        p.ctx.fs_base = p.fs_base;
        ctx_ptr(&mut p.ctx)
    })
    .expect("a new task is in the process table");
    let now = crate::time::now_ns();
    let mut policy = POLICY.borrow_mut();
    let preempt = policy.fork(now, parent.map(|p| p.0), pid.0);
    policy.set_tag(pid.0, ctx as u64);
    drop(policy);
    resched_if(preempt);
}

/// Whether a process is waiting to run.
pub fn has_ready() -> bool {
    POLICY.borrow().ready() > 0
}

/// A process's scheduling entity with its runtime up to now (`None` once reaped). The kernel time of
/// the running task not yet folded in is added to `stime`.
pub fn entity(pid: Pid) -> Option<Entity> {
    let mut e = *POLICY
        .borrow_mut()
        .entity_now(pid.0, crate::time::now_ns())?;
    if *CURRENT.borrow() == Some(pid) {
        let pending = KERNEL_TSC.load(Ordering::Relaxed)
            + crate::arch::cpu::rdtsc().wrapping_sub(KERNEL_SINCE.load(Ordering::Relaxed));
        e.stime = (e.stime + crate::time::tsc_to_ns(pending)).min(e.sum_exec_runtime);
    }
    Some(e)
}

/// Changes a process's nice value and policy.
pub fn set_nice(pid: Pid, nice: i32, policy: SchedPolicy) {
    let now = crate::time::now_ns();
    let preempt = POLICY.borrow_mut().set_weight(now, pid.0, nice, policy);
    resched_if(preempt);
}

/// The running task takes pid `new` (execve from a thread takes its leader's, which was released
/// first): its scheduling entity and the running-task record follow.
pub fn rename_current(new: Pid) -> bool {
    let ok = POLICY.borrow_mut().rename_curr(new.0);
    if ok {
        *CURRENT.borrow_mut() = Some(new);
    }
    ok
}

/// A reaped process leaves the scheduler; its CPU time counts for `parent`'s children.
pub fn release(pid: Pid, parent: Option<Pid>) {
    POLICY.borrow_mut().release(pid.0, parent.map(|p| p.0));
}

/// Trap entry from user mode: kernel time starts.
pub fn kernel_entry() {
    KERNEL_SINCE.store(crate::arch::cpu::rdtsc(), Ordering::Relaxed);
}

/// Return to user mode: kernel time ends. The trap's whole time is charged to cost counter `path`
/// unless it switched tasks (its time then belongs to two tasks and includes the switch).
pub fn kernel_exit(path: Option<crate::cost::Cost>) {
    let t = crate::arch::cpu::rdtsc();
    let since = KERNEL_SINCE.load(Ordering::Relaxed);
    add(&KERNEL_TSC, t.wrapping_sub(since));
    if SWITCHED.load(Ordering::Relaxed) {
        SWITCHED.store(false, Ordering::Relaxed);
    } else if let Some(c) = path {
        crate::cost::record_span(c, since, t);
    }
}

/// True if the running task was asked to give up the CPU.
pub fn need_resched() -> bool {
    NEED_RESCHED.load(Ordering::Relaxed)
}

/// Whether the running process may have a signal to deliver (pending and not blocked), read from its
/// context (`TaskContext::signals_ready`) without a process-table lookup: the return to user mode's
/// check, which runs after every system call, tick and fault.
pub fn current_signals_ready() -> bool {
    crate::arch::switch::signals_ready(*CURRENT_CTX.borrow())
}

/// Gives the CPU to the next ready process (or the idle task). The caller has already set the current
/// process's state (Ready: it stays runnable; Blocked or Stopped: it sleeps; Zombie: it is gone).
/// Returns when this task runs again.
pub fn schedule() {
    let kind = match *CURRENT.borrow() {
        Some(p) => match super::with_proc(p, |p| p.state).unwrap_or(State::Zombie) {
            State::Ready => Prev::Runnable,
            State::Blocked(_) | State::Stopped => Prev::Sleeping,
            State::Zombie => Prev::Dead,
        },
        None => Prev::Runnable,
    };
    switch(kind);
}

/// `schedule` for a caller that knows what happens to the current task (`kind`, matching the state
/// it set): the switch itself touches no process-table entry. The policy's tag of the picked task
/// is its boxed context, which carries its kernel stack, CR3 and FS base; the running task's
/// context is kept in `CURRENT_CTX`.
fn switch(kind: Prev) {
    flush_wakes();
    SWITCHED.store(true, Ordering::Relaxed);
    NEED_RESCHED.store(false, Ordering::Relaxed);
    let prev = *CURRENT.borrow();
    // One clock read serves the kernel-time accounting, the policy and the cost counters.
    let t = crate::arch::cpu::rdtsc();
    let mut sp = crate::cost::Split(t);
    let now = crate::time::tsc_now_ns(t);
    let mut stime = 0;
    if prev.is_some() {
        stime = crate::time::tsc_to_ns(
            KERNEL_TSC.load(Ordering::Relaxed)
                + t.wrapping_sub(KERNEL_SINCE.load(Ordering::Relaxed)),
        );
    }
    KERNEL_TSC.store(0, Ordering::Relaxed);
    KERNEL_SINCE.store(t, Ordering::Relaxed);
    sp.mark(crate::cost::Cost::SwClock);
    let mut policy = POLICY.borrow_mut();
    let t1 = crate::cost::start();
    let next = policy.pick_next(now, kind, stime).map(Pid);
    crate::cost::record(crate::cost::Cost::CfsPick, t1);
    let next_ctx = policy.curr_tag() as *mut TaskContext;
    drop(policy);
    add(&PICKS, 1);
    add(&PICK_TSC, crate::arch::cpu::rdtsc().wrapping_sub(t));
    sp.mark(crate::cost::Cost::SwPick);
    if prev == next {
        return;
    }
    let idle_ctx = if prev.is_none() || next.is_none() {
        let mut idle = IDLE.borrow_mut();
        ctx_ptr(idle.get_or_insert_with(|| Box::new(TaskContext::new())))
    } else {
        core::ptr::null_mut()
    };
    let mut cur_ctx = CURRENT_CTX.borrow_mut();
    let prev_ctx = if prev.is_some() { *cur_ctx } else { idle_ctx };
    let next_ctx = if next.is_some() { next_ctx } else { idle_ctx };
    *cur_ctx = next_ctx;
    drop(cur_ctx);
    *CURRENT.borrow_mut() = next;
    super::forget_current_pcb();
    add(&SWITCHES, 1);
    SWITCH_START.store(t, Ordering::Relaxed);
    sp.mark(crate::cost::Cost::SwPrepare);
    if crate::cost::SWITCH_PIECES {
        SPLIT_AT.store(sp.0, Ordering::Relaxed);
    }
    crate::arch::switch::switch_to(prev_ctx, next_ctx, prev.is_some(), next.is_some());
    finish_switch();
}

/// The running process's context (where `switch` saves it); unused while the idle task runs.
static CURRENT_CTX: KCell<*mut TaskContext> = KCell::new(core::ptr::null_mut());

/// Where the pieces of the last switch got to before `switch_to` (for `Cost::SwCpu`).
static SPLIT_AT: AtomicU64 = AtomicU64::new(0);

/// Runs on the new task right after a switch: frees the processes that died without a waiter.
pub fn finish_switch() {
    let mut sp = crate::cost::Split(SPLIT_AT.load(Ordering::Relaxed));
    sp.mark(crate::cost::Cost::SwCpu);
    add(
        &SWITCH_TSC,
        crate::arch::cpu::rdtsc().wrapping_sub(SWITCH_START.load(Ordering::Relaxed)),
    );
    if DEAD.borrow().is_empty() {
        sp.mark(crate::cost::Cost::SwFinish);
        return;
    }
    let dead = core::mem::take(&mut *DEAD.borrow_mut());
    let cur = *CURRENT.borrow();
    let mut keep = Vec::new();
    super::forget_current_pcb();
    let mut procs = PROCS.borrow_mut();
    for pid in dead {
        if Some(pid) == cur {
            keep.push(pid);
        } else {
            procs.remove(&pid);
            release(pid, None);
        }
    }
    drop(procs);
    DEAD.borrow_mut().extend(keep);
}

/// Marks an exited process to be freed once the CPU has left it.
pub fn bury(pid: Pid) {
    DEAD.borrow_mut().push(pid);
}

/// sched_yield: the current process goes behind the others (CFS's skip buddy) but stays runnable.
pub fn yield_now() {
    if CURRENT.borrow().is_none() {
        return;
    }
    POLICY.borrow_mut().yield_curr(crate::time::now_ns());
    // The running task's state is already Ready.
    switch(Prev::Runnable);
}

/// Preemption (on the way back to user mode): the current process is switched out but stays
/// runnable.
pub fn preempt() {
    if CURRENT.borrow().is_none() {
        NEED_RESCHED.store(false, Ordering::Relaxed);
        return;
    }
    // The running task's state is already Ready.
    switch(Prev::Runnable);
}

/// Blocks the current process on `chan` until [`wake`] (or a signal) makes it ready again.
pub fn block(chan: Chan) {
    super::with_current(|p| p.state = State::Blocked(chan));
    switch(Prev::Sleeping);
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
    let now = crate::time::now_ns();
    let mut policy = POLICY.borrow_mut();
    let mut preempt = false;
    for p in procs.values_mut() {
        if p.state == State::Blocked(chan) {
            p.state = State::Ready;
            preempt |= policy.wake(now, p.pid.0);
        }
    }
    for (pid, chans) in POLLERS.borrow().iter() {
        if chans.contains(&chan) {
            if let Some(p) = procs.get_mut(pid) {
                if matches!(p.state, State::Blocked(_)) {
                    p.state = State::Ready;
                    preempt |= policy.wake(now, pid.0);
                }
            }
        }
    }
    resched_if(preempt);
}

/// Blocks on wait queues (`sync::waitqueue`): one without deadline is a plain block.
fn queue_block(keys: &[u64], deadline: Option<u64>) {
    match (keys, deadline) {
        ([key], None) => block(Chan::Queue(*key)),
        _ => block_any(keys.iter().map(|&k| Chan::Queue(k)).collect(), deadline),
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
    set_wake(deadline);
    block(Chan::Sleep);
    POLLERS.borrow_mut().retain(|(p, _)| *p != pid);
}

/// Wakes `pid` if it is blocked (a signal arrived); also resumes a stopped one when `cont`.
pub fn wake_pid(pid: Pid, cont: bool) {
    let mut procs = PROCS.borrow_mut();
    if let Some(p) = procs.get_mut(&pid) {
        if matches!(p.state, State::Blocked(_)) || (cont && p.state == State::Stopped) {
            p.state = State::Ready;
            let preempt = POLICY.borrow_mut().wake(crate::time::now_ns(), pid.0);
            resched_if(preempt);
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
        set_wake(deadline);
        block(Chan::Sleep);
    }
}

/// Notes a sleeper's deadline: the earliest one is woken by the timer at that time.
fn set_wake(deadline: u64) {
    if deadline < NEXT_WAKE.load(Ordering::Relaxed) {
        NEXT_WAKE.store(deadline, Ordering::Relaxed);
        crate::time::wake_by(deadline);
    }
}

fn wake_sleepers(now: u64) {
    let mut next = u64::MAX;
    let mut procs = PROCS.borrow_mut();
    let mut policy = POLICY.borrow_mut();
    let mut preempt = false;
    for p in procs.values_mut() {
        if p.state == State::Blocked(Chan::Sleep) {
            if p.wake_at <= now {
                p.state = State::Ready;
                preempt |= policy.wake(now, p.pid.0);
            } else {
                next = next.min(p.wake_at);
            }
        }
    }
    resched_if(preempt);
    NEXT_WAKE.store(next, Ordering::Relaxed);
}

/// The timer interrupt at `now`: wakes due sleepers, and on a tick charges the running task (a
/// preemption it decides happens on the way back to user mode; the idle task picks up whoever is ready
/// itself). Then arms the timer for the next tick or sleeper.
pub fn timer(now: u64, tick: bool) {
    let t0 = crate::arch::cpu::rdtsc();
    if now >= NEXT_WAKE.load(Ordering::Relaxed) {
        wake_sleepers(now);
    }
    if tick {
        add(&TICKS, 1);
        update_load(now);
        if CURRENT.borrow().is_some() {
            let t1 = crate::cost::start();
            let preempt = POLICY.borrow_mut().tick(now);
            crate::cost::record(crate::cost::Cost::CfsTick, t1);
            resched_if(preempt);
        }
    }
    crate::time::rearm(NEXT_WAKE.load(Ordering::Relaxed));
    if tick {
        add(&TICK_TSC, crate::arch::cpu::rdtsc().wrapping_sub(t0));
    }
}

/// The load averages and when they are next updated (ns since boot).
static LOAD: KCell<(kcore::loadavg::LoadAvg, u64)> = KCell::new((
    kcore::loadavg::LoadAvg([0; 3]),
    kcore::loadavg::LOAD_FREQ_NS,
));

/// Tasks running or waiting to run.
pub fn nr_running() -> u64 {
    POLICY.borrow().ready() as u64 + CURRENT.borrow().is_some() as u64
}

/// Every 5 s (on a tick), folds the number of runnable tasks into the load averages (Linux's
/// calc_global_load).
fn update_load(now: u64) {
    let mut l = LOAD.borrow_mut();
    if now < l.1 {
        return;
    }
    let n = nr_running();
    while l.1 <= now {
        l.0.update(n);
        l.1 += kcore::loadavg::LOAD_FREQ_NS;
    }
}

/// The load averages (`/proc/loadavg`, sysinfo).
pub fn load_averages() -> kcore::loadavg::LoadAvg {
    LOAD.borrow().0
}

/// The idle task: runs whoever is ready, else halts until an interrupt. Never returns.
pub fn idle_loop() -> ! {
    loop {
        if has_ready() {
            schedule();
        } else {
            // Dirty file data goes to the disk while nothing else runs, when it is due.
            crate::fs::mount::periodic_write_back();
            if has_ready() {
                continue;
            }
            let t0 = crate::arch::cpu::rdtsc();
            crate::arch::cpu::enable_and_halt();
            add(&IDLE_TSC, crate::arch::cpu::rdtsc().wrapping_sub(t0));
        }
    }
}

/// TSC ticks the idle task spent halted (/proc/stat's idle, /proc/uptime's second number).
static IDLE_TSC: AtomicU64 = AtomicU64::new(0);
/// Tasks created since boot (/proc/stat's `processes`).
static FORKS: AtomicU64 = AtomicU64::new(0);

/// Nanoseconds the CPU was idle since boot.
pub fn idle_ns() -> u64 {
    crate::time::tsc_to_ns(IDLE_TSC.load(Ordering::Relaxed))
}

/// Context switches since boot.
pub fn switches() -> u64 {
    SWITCHES.load(Ordering::Relaxed)
}

/// Tasks created since boot (fork, clone, and init).
pub fn forks() -> u64 {
    FORKS.load(Ordering::Relaxed)
}
