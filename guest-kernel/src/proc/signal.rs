//! Signals: dispositions, blocked masks and pending sets; sending (kill, tgkill, the kernel's own
//! SIGCHLD/SIGSEGV/SIGPIPE/SIGINT), and delivery on the way back to user mode: default actions
//! (terminate, ignore, stop, continue) or a user handler entered through a Linux `rt_sigframe` that
//! `rt_sigreturn` unwinds. Handlers installed with SA_ONSTACK run on the alternate signal stack
//! (`sigaltstack`).
//!
//! Two pending sets, as Linux keeps them (kernel/signal.c): each thread's own (`SigState::pending`:
//! tgkill, faults, SIGPIPE, the SIGKILL of a group's death) and its group's ([`SharedPending`]: kill,
//! the kernel's SIGCHLD and tty signals). A signal sent to the group waits there until a thread that
//! does not block it takes it: [`send`] wakes one such thread (Linux's complete_signal), and a thread
//! that unblocks it later finds it on its way back to user mode. A thread takes its own signals
//! first, then the group's (Linux's dequeue_signal).
#![deny(unsafe_code)]

use super::{sched, Pid, Process, State, INIT_PID};
use crate::arch::layout::{USER_CS, USER_DS};
use crate::arch::trap::TrapFrame;
use alloc::rc::Rc;
use core::cell::{Cell, RefCell};
use kcore::errno::Errno;

pub const SIGHUP: u32 = 1;
pub const SIGINT: u32 = 2;
pub const SIGQUIT: u32 = 3;
pub const SIGILL: u32 = 4;
pub const SIGTRAP: u32 = 5;
pub const SIGABRT: u32 = 6;
pub const SIGBUS: u32 = 7;
pub const SIGFPE: u32 = 8;
pub const SIGKILL: u32 = 9;
pub const SIGSEGV: u32 = 11;
pub const SIGPIPE: u32 = 13;
pub const SIGTERM: u32 = 15;
pub const SIGCHLD: u32 = 17;
pub const SIGCONT: u32 = 18;
pub const SIGSTOP: u32 = 19;
pub const SIGTSTP: u32 = 20;
pub const SIGTTIN: u32 = 21;
pub const SIGTTOU: u32 = 22;
pub const SIGURG: u32 = 23;
pub const SIGWINCH: u32 = 28;

pub const SIG_DFL: u64 = 0;
pub const SIG_IGN: u64 = 1;
const SA_NOCLDSTOP: u64 = 1;
const SA_NOCLDWAIT: u64 = 2;
const SA_SIGINFO: u64 = 4;
const SA_ONSTACK: u64 = 0x0800_0000;
const SA_RESTORER: u64 = 0x0400_0000;
const SA_RESTART: u64 = 0x1000_0000;
const SA_NODEFER: u64 = 0x4000_0000;
const SA_RESETHAND: u64 = 0x8000_0000;

fn bit(sig: u32) -> u64 {
    1u64 << (sig - 1)
}

const UNBLOCKABLE: u64 = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1));

/// Brings `p`'s summary for the return to user mode (`TaskContext::signals_ready`: a signal pending
/// and not blocked) up to date; called after every change of its pending set or mask, so that the
/// common return (nothing to deliver) needs no process-table lookup.
fn sync_ready(p: &mut Process) {
    p.ctx.signals_ready =
        p.signals.all_pending() & !p.signals.blocked != 0 || p.signals.jobctl_stop;
}

/// The stop signals (default action: stop the group).
const STOP_MASK: u64 =
    (1 << (SIGSTOP - 1)) | (1 << (SIGTSTP - 1)) | (1 << (SIGTTIN - 1)) | (1 << (SIGTTOU - 1));

/// A group stop (Linux's `signal->group_stop_count`, `SIGNAL_STOP_STOPPED`, `group_exit_code`),
/// kept in the group leader's entry: the stop signal that began it (0: none) and whether every
/// thread has stopped (the parent was told).
#[derive(Clone, Copy, Debug, Default)]
pub struct GroupStop {
    pub sig: u32,
    pub stopped: bool,
}

/// One signal's disposition (`struct sigaction` as the kernel sees it).
#[derive(Clone, Copy, Debug, Default)]
pub struct SigAction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// The dispositions of the 64 signals: a handle that the threads of a group share (CLONE_SIGHAND);
/// `Clone` copies them (fork).
#[derive(Debug)]
pub struct Actions(Rc<RefCell<[SigAction; 64]>>);

impl Default for Actions {
    fn default() -> Self {
        Actions(Rc::new(RefCell::new([SigAction::default(); 64])))
    }
}

impl Clone for Actions {
    fn clone(&self) -> Self {
        Actions(Rc::new(RefCell::new(*self.0.borrow())))
    }
}

impl Actions {
    /// The same dispositions (CLONE_SIGHAND).
    pub fn share(&self) -> Actions {
        Actions(self.0.clone())
    }

    /// Signal `sig`'s (1..=64) disposition.
    pub fn get(&self, sig: u32) -> SigAction {
        self.0.borrow()[(sig - 1) as usize]
    }

    pub fn set(&self, sig: u32, a: SigAction) {
        self.0.borrow_mut()[(sig - 1) as usize] = a;
    }

    /// execve: caught signals go back to SIG_DFL (the table stops being shared first).
    fn reset_for_exec(&mut self) {
        *self = self.clone();
        for a in self.0.borrow_mut().iter_mut() {
            if a.handler != SIG_IGN {
                *a = SigAction::default();
            }
        }
    }
}

/// The signals pending for a whole thread group (Linux's `signal->shared_pending`, /proc's ShdPnd):
/// a handle that the threads of a group share (CLONE_THREAD). Not `Clone`: a new process (fork)
/// starts with [`SharedPending::default`], nothing pending; a new thread takes [`share`](Self::share).
#[derive(Debug, Default)]
pub struct SharedPending(Rc<Cell<u64>>);

impl SharedPending {
    /// The same set (CLONE_THREAD).
    pub fn share(&self) -> SharedPending {
        SharedPending(self.0.clone())
    }

    /// The pending signals, one bit each (bit `sig - 1`).
    pub fn get(&self) -> u64 {
        self.0.get()
    }

    fn set(&self, v: u64) {
        self.0.set(v)
    }

    /// Forgets the signals of `mask`.
    fn remove(&self, mask: u64) {
        self.0.set(self.0.get() & !mask)
    }
}

/// A thread's signal state; `shared_pending` and `actions` are its group's.
#[derive(Debug, Default)]
pub struct SigState {
    pub actions: Actions,
    pub blocked: u64,
    /// The signals pending for this thread only (Linux's `task->pending`, /proc's SigPnd).
    pub pending: u64,
    /// The signals pending for the whole group.
    pub shared_pending: SharedPending,
    /// The alternate signal stack (inherited by fork, cleared by execve).
    pub altstack: AltStack,
    /// A fault signal forced on the process and not yet delivered: (signal, si_code, si_addr), for
    /// its siginfo.
    pub fault_info: Option<(u32, i32, u64)>,
    /// The mask rt_sigsuspend replaced (Linux's saved_sigmask): the signal frame carries it, or it
    /// comes back when the call restarts without a handler.
    pub saved_mask: Option<u64>,
    /// The signals rt_sigtimedwait waits for: they are queued even when ignored, and wake the
    /// process even when blocked (Linux's real_blocked).
    pub waiting: u64,
    /// This thread must stop with its group on its way back to user mode (Linux's
    /// JOBCTL_STOP_PENDING).
    pub jobctl_stop: bool,
    /// The group's stop (meaningful in the leader's entry only).
    pub group_stop: GroupStop,
}

impl SigState {
    /// The thread's own pending signals and its group's.
    pub fn all_pending(&self) -> u64 {
        self.pending | self.shared_pending.get()
    }

    /// Takes the lowest signal of `mask` pending for this thread, else the lowest pending for its
    /// group (Linux's dequeue_signal: the thread's own queue first).
    fn dequeue(&mut self, mask: u64) -> Option<u32> {
        let own = self.pending & mask;
        if own != 0 {
            let sig = own.trailing_zeros() + 1;
            self.pending &= !bit(sig);
            return Some(sig);
        }
        let group = self.shared_pending.get() & mask;
        if group == 0 {
            return None;
        }
        let sig = group.trailing_zeros() + 1;
        self.shared_pending.remove(bit(sig));
        Some(sig)
    }

    /// Forgets the signals of `mask` pending for this thread and for its group.
    fn discard(&mut self, mask: u64) {
        self.pending &= !mask;
        self.shared_pending.remove(mask);
    }

    /// execve: caught signals go back to SIG_DFL, ignored ones stay ignored; pending and mask stay;
    /// no alternate stack.
    pub fn reset_for_exec(&mut self) {
        self.actions.reset_for_exec();
        self.altstack = AltStack::default();
    }
}

pub const SS_ONSTACK: u32 = 1;
pub const SS_DISABLE: u32 = 2;
/// Disarm the alternate stack while a handler runs on it (restored by rt_sigreturn).
pub const SS_AUTODISARM: u32 = 1 << 31;
/// The smallest alternate stack sigaltstack accepts (x86's MINSIGSTKSZ).
pub const MINSIGSTKSZ: u64 = 2048;

/// The alternate signal stack (Linux's sas_ss_sp, sas_ss_size, sas_ss_flags).
#[derive(Clone, Copy, Debug)]
pub struct AltStack {
    pub sp: u64,
    pub size: u64,
    /// The flags as set (SS_DISABLE, maybe SS_AUTODISARM).
    pub flags: u32,
}

impl Default for AltStack {
    fn default() -> Self {
        AltStack {
            sp: 0,
            size: 0,
            flags: SS_DISABLE,
        }
    }
}

impl AltStack {
    /// Whether user stack pointer `sp` lies on the alternate stack (never with SS_AUTODISARM).
    pub fn on_stack(&self, sp: u64) -> bool {
        self.flags & SS_AUTODISARM == 0 && sp > self.sp && sp - self.sp <= self.size
    }

    /// `ss_flags` as sigaltstack reports them for a process running at `sp`.
    pub fn reported_flags(&self, sp: u64) -> u32 {
        let mode = if self.size == 0 {
            SS_DISABLE
        } else if self.on_stack(sp) {
            SS_ONSTACK
        } else {
            0
        };
        mode | (self.flags & SS_AUTODISARM)
    }

    /// A `stack_t` (ss_sp, ss_flags, ss_size) as user memory holds it.
    pub fn to_bytes(sp: u64, flags: u32, size: u64) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&sp.to_le_bytes());
        b[8..12].copy_from_slice(&flags.to_le_bytes());
        b[16..].copy_from_slice(&size.to_le_bytes());
        b
    }
}

/// sigaltstack (Linux's do_sigaltstack) for the current process running at user `sp`: sets the
/// alternate stack to `new` (ss_sp, ss_flags, ss_size) if given; returns the old one as a
/// `stack_t`. EPERM while running on it, EINVAL for flags other than SS_DISABLE/SS_ONSTACK (with
/// SS_AUTODISARM), ENOMEM for a size below MINSIGSTKSZ.
pub fn sigaltstack(new: Option<(u64, u32, u64)>, sp: u64) -> Result<[u8; 24], Errno> {
    super::with_current(|p| {
        let cur = &mut p.signals.altstack;
        let old = AltStack::to_bytes(cur.sp, cur.reported_flags(sp), cur.size);
        if let Some((ss_sp, flags, size)) = new {
            if cur.on_stack(sp) {
                return Err(Errno::EPERM);
            }
            let mode = flags & !SS_AUTODISARM;
            if mode != SS_DISABLE && mode != SS_ONSTACK && mode != 0 {
                return Err(Errno::EINVAL);
            }
            *cur = if mode == SS_DISABLE {
                AltStack {
                    sp: 0,
                    size: 0,
                    flags,
                }
            } else if size < MINSIGSTKSZ {
                return Err(Errno::ENOMEM);
            } else {
                AltStack {
                    sp: ss_sp,
                    size,
                    flags,
                }
            };
        }
        Ok(old)
    })
}

/// What a signal does by default.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Default_ {
    Terminate,
    Ignore,
    Stop,
    Continue,
}

fn default_action(sig: u32) -> Default_ {
    match sig {
        SIGCHLD | SIGURG | SIGWINCH => Default_::Ignore,
        SIGCONT => Default_::Continue,
        SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU => Default_::Stop,
        _ => Default_::Terminate,
    }
}

fn ignored(a: &SigAction, sig: u32) -> bool {
    a.handler == SIG_IGN || (a.handler == SIG_DFL && default_action(sig) == Default_::Ignore)
}

/// Whether thread `q` can take `sig` now (Linux's wants_signal): alive, not stopped, and not
/// blocking it (or waiting for it in rt_sigtimedwait, which unblocks what it waits for).
fn wants(q: &Process, sig: u32) -> bool {
    wants_any(q, bit(sig))
}

/// Whether thread `q` can take one of the signals of `mask` now (see [`wants`]).
fn wants_any(q: &Process, mask: u64) -> bool {
    !matches!(q.state, State::Zombie | State::Stopped)
        && mask & !(q.signals.blocked & !q.signals.waiting) != 0
}

/// Whether `sig` is dropped at once for thread `p` (Linux's sig_ignored): init gets only the
/// signals it has a handler for (SIGKILL included); an ignored signal is dropped unless `p`
/// blocks it or waits for it (the disposition may change before it is unblocked).
fn dropped(p: &Process, sig: u32) -> bool {
    let a = p.signals.actions.get(sig);
    if p.tgid == INIT_PID && (a.handler == SIG_DFL || a.handler == SIG_IGN) {
        return true;
    }
    let held = (p.signals.blocked | p.signals.waiting) & bit(sig) != 0;
    ignored(&a, sig) && !held && sig != SIGKILL && sig != SIGSTOP
}

/// Sends `sig` to the process (thread group) of thread `pid` (kill(2); no permission checks:
/// everyone is root). It waits in the group's [`SharedPending`] set and one thread that can take
/// it is woken, `pid` itself first, else the first in tid order (Linux's complete_signal); when
/// every thread blocks it, none is, and the first to unblock it takes it. SIGKILL also goes into
/// every thread's own set and wakes them all (Linux's complete_signal for a fatal signal: the
/// whole group dies at once). Signal 0 only checks that `pid` exists.
pub fn send(pid: Pid, sig: u32) -> Result<(), Errno> {
    if sig > 64 {
        return Err(Errno::EINVAL);
    }
    let tgid = super::with_proc(pid, |p| p.tgid).ok_or(Errno::ESRCH)?;
    if sig == 0 {
        return Ok(());
    }
    if sig == SIGCONT || sig == SIGKILL || bit(sig) & STOP_MASK != 0 {
        prepare_group(pid, sig);
    }
    /// Who is woken to take the signal.
    enum Taker {
        Nobody,
        One(Pid),
        All,
    }
    let taker = super::with_table(|t| {
        let p = t.get(&pid)?;
        // A group whose every thread has exited takes nothing (Linux: SIGNAL_GROUP_EXIT).
        let alive = |q: &Process| q.tgid == tgid && q.state != State::Zombie;
        if p.state == State::Zombie && !t.values().any(|q| alive(q)) {
            return None;
        }
        if dropped(p, sig) {
            return None;
        }
        let shared = &p.signals.shared_pending;
        shared.set(shared.get() | bit(sig));
        if sig == SIGKILL {
            for q in t.values_mut().filter(|q| alive(q)) {
                q.signals.pending |= bit(SIGKILL);
                sync_ready(q);
            }
            return Some(Taker::All);
        }
        let found = if wants(p, sig) {
            Some(pid)
        } else {
            t.values()
                .find(|q| q.tgid == tgid && wants(q, sig))
                .map(|q| q.pid)
        };
        let Some(found) = found else {
            return Some(Taker::Nobody);
        };
        let q = t.get_mut(&found)?;
        sync_ready(q);
        Some(Taker::One(found))
    });
    match taker {
        Some(Taker::One(found)) => sched::wake_pid(found, false),
        Some(Taker::All) => wake_threads(tgid, true, |q| q.state != State::Zombie),
        Some(Taker::Nobody) | None => {}
    }
    Ok(())
}

/// Sends `sig` to thread `pid` itself (tgkill, tkill, SIGPIPE, a group exit's SIGKILL): its own
/// pending set.
pub fn send_thread(pid: Pid, sig: u32) -> Result<(), Errno> {
    if sig > 64 {
        return Err(Errno::EINVAL);
    }
    if sig == SIGCONT || sig == SIGKILL || bit_of(sig) & STOP_MASK != 0 {
        prepare_group(pid, sig);
    }
    let posted = super::with_proc(pid, |p| {
        if p.state == State::Zombie || sig == 0 || dropped(p, sig) {
            return false;
        }
        p.signals.pending |= bit(sig);
        sync_ready(p);
        wants(p, sig) || sig == SIGKILL
    })
    .ok_or(Errno::ESRCH)?;
    if posted {
        sched::wake_pid(pid, sig == SIGKILL);
    }
    Ok(())
}

/// Thread `me` of group `tgid` blocked or gave up signals of its group's pending set (Linux's
/// retarget_shared_pending): another thread that can take one of `mask` (of them) is told and
/// woken, so that none waits while a thread could take it.
fn retarget(tgid: Pid, me: Pid, mask: u64) {
    let found = super::with_table(|t| {
        let shared = t.get(&tgid)?.signals.shared_pending.get() & mask;
        if shared == 0 {
            return None;
        }
        let q = t.values_mut().find(|q| {
            q.tgid == tgid && q.pid != me && !q.ctx.signals_ready && wants_any(q, shared)
        })?;
        sync_ready(q);
        Some(q.pid)
    });
    if let Some(pid) = found {
        sched::wake_pid(pid, false);
    }
}

/// `bit(sig)`, 0 for signal 0.
fn bit_of(sig: u32) -> u64 {
    if sig == 0 {
        0
    } else {
        bit(sig)
    }
}

/// What a stop, continue or kill signal does to thread `pid`'s whole group before it is queued
/// (Linux's prepare_signal): a stop signal discards pending SIGCONTs (the group's and every
/// thread's); SIGCONT and SIGKILL discard pending stop signals and any group stop in progress; SIGCONT resumes every
/// stopped thread, and after the group had stopped makes the leader report "continued" to wait4
/// (WCONTINUED) and sends the parent SIGCHLD (unless SA_NOCLDSTOP).
fn prepare_group(pid: Pid, sig: u32) {
    let Some(tgid) = super::with_proc(pid, |p| p.tgid) else {
        return;
    };
    let notify = super::with_table(|t| {
        let mut notify = None;
        for q in t.values_mut() {
            if q.tgid != tgid || (q.state == State::Zombie && q.pid != tgid) {
                continue;
            }
            if sig != SIGCONT && sig != SIGKILL {
                q.signals.discard(bit(SIGCONT));
            } else {
                q.signals.discard(STOP_MASK);
                q.signals.jobctl_stop = false;
                if q.pid == tgid {
                    let gs = core::mem::take(&mut q.signals.group_stop);
                    if sig == SIGCONT && gs.stopped {
                        q.stop_report = Some(kcore::wait::CONTINUED);
                        notify = Some(q.ppid);
                    }
                }
            }
            sync_ready(q);
        }
        notify
    });
    if sig == SIGCONT {
        wake_threads(tgid, true, |q| q.state == State::Stopped);
    }
    if let Some(ppid) = notify {
        notify_parent_cldstop(ppid);
    }
}

/// Wakes the threads of group `tgid` that `pick` selects (`cont`: stopped ones too), looking them
/// up one at a time in pid order: no list of them to allocate.
fn wake_threads(tgid: Pid, cont: bool, pick: impl Fn(&super::Process) -> bool) {
    let mut from = Pid(0);
    while let Some(pid) = super::with_table(|t| {
        t.range(from..)
            .find(|(_, q)| q.tgid == tgid && pick(q))
            .map(|(pid, _)| *pid)
    }) {
        sched::wake_pid(pid, cont);
        from = Pid(pid.0 + 1);
    }
}

/// Tells `ppid` that its child stopped or continued: SIGCHLD unless it set SA_NOCLDSTOP, and a
/// wake of its wait4.
fn notify_parent_cldstop(ppid: Pid) {
    let nocldstop = super::with_proc(ppid, |p| {
        p.signals.actions.get(SIGCHLD).flags & SA_NOCLDSTOP != 0
    })
    .unwrap_or(true);
    if !nocldstop {
        send_kernel(ppid, SIGCHLD);
    }
    sched::wake(super::Chan::Child(ppid));
}

/// A signal the kernel sends (SIGCHLD, SIGPIPE, SIGINT from the tty); a missing target is fine.
pub fn send_kernel(pid: Pid, sig: u32) {
    let _ = send(pid, sig);
}

/// Sends `sig` to every process in group `pgid`; ESRCH if there is none.
pub fn send_group(pgid: Pid, sig: u32) -> Result<(), Errno> {
    let members: alloc::vec::Vec<Pid> = super::with_table(|t| {
        t.values()
            .filter(|p| p.pgid == pgid && p.tgid == p.pid && p.state != State::Zombie)
            .map(|p| p.pid)
            .collect()
    });
    if members.is_empty() {
        return Err(Errno::ESRCH);
    }
    for m in members {
        send_kernel(m, sig);
    }
    Ok(())
}

/// kill(2): pid > 0 one process, 0 own group, -1 everyone but init and the caller, < -1 group -pid.
pub fn kill(pid: i32, sig: u32) -> Result<(), Errno> {
    if sig > 64 {
        return Err(Errno::EINVAL);
    }
    let me = super::with_current(|p| p.tgid);
    match pid {
        p if p > 0 => send(Pid(p as u32), sig),
        0 => send_group(super::with_current(|p| p.pgid), sig),
        -1 => {
            let all: alloc::vec::Vec<Pid> = super::with_table(|t| {
                t.values()
                    .filter(|p| {
                        p.pid.0 > 1 && p.tgid == p.pid && p.pid != me && p.state != State::Zombie
                    })
                    .map(|p| p.pid)
                    .collect()
            });
            if all.is_empty() {
                return Err(Errno::ESRCH);
            }
            for p in all {
                send_kernel(p, sig);
            }
            Ok(())
        }
        p if p == i32::MIN => Err(Errno::ESRCH),
        p => send_group(Pid(p.unsigned_abs()), sig),
    }
}

/// Whether `ppid` reaps its children at once (SIGCHLD ignored or SA_NOCLDWAIT).
pub fn parent_reaps_at_once(ppid: Pid) -> bool {
    super::with_proc(ppid, |p| {
        let a = p.signals.actions.get(SIGCHLD);
        a.handler == SIG_IGN || a.flags & SA_NOCLDWAIT != 0
    })
    .unwrap_or(true)
}

/// Whether the current process has a signal to handle (blocking calls return EINTR).
pub fn pending_for_current() -> bool {
    sched::current_signals_ready()
}

/// Whether SIGKILL is pending for the current thread (it dies on its way back to user mode).
pub fn fatal_pending() -> bool {
    super::with_current(|p| p.signals.pending & bit(SIGKILL) != 0)
}

/// Whether the current process ignores or blocks `sig`.
pub fn ignored_or_blocked(sig: u32) -> bool {
    super::with_current(|p| {
        p.signals.actions.get(sig).handler == SIG_IGN || p.signals.blocked & bit(sig) != 0
    })
}

/// si_code values of kernel-sent signals (Linux's siginfo.h).
pub const SI_KERNEL: i32 = 0x80;
pub const SEGV_MAPERR: i32 = 1;
pub const SEGV_ACCERR: i32 = 2;
pub const BUS_ADRERR: i32 = 2;

/// A fault signal for the current process, with the siginfo's `si_code` and `si_addr` (a page fault's
/// SEGV_MAPERR/SEGV_ACCERR and address): true if a user handler will run, false if the process must
/// die (default action, blocked or ignored: Linux's force_sig).
pub fn force_info(sig: u32, code: i32, addr: u64) -> bool {
    super::with_current(|p| {
        let a = p.signals.actions.get(sig);
        if a.handler > SIG_IGN && p.signals.blocked & bit(sig) == 0 {
            p.signals.pending |= bit(sig);
            p.signals.fault_info = Some((sig, code, addr));
            sync_ready(p);
            true
        } else {
            false
        }
    })
}

/// Delivers pending signals before returning to user mode with `frame`: every one not blocked (by
/// the mask as each handler's frame changes it), lowest number first. The common case, nothing to
/// deliver, reads only the running task's context (`sched::current_signals_ready`), not the process
/// table, and leaves the work (and its register spills) to an out-of-line function.
pub fn deliver(frame: &mut TrapFrame) {
    if sched::current_signals_ready() {
        deliver_ready(frame);
    } else if let Some(code) = interrupted_call(frame) {
        // A call interrupted by a signal that is gone by now (ignored, or taken by another path).
        finish_interrupted(frame, code, None);
    }
}

/// [`deliver`] when the running process has a signal pending and not blocked.
#[inline(never)]
fn deliver_ready(frame: &mut TrapFrame) {
    let mut restart = interrupted_call(frame);
    loop {
        let next = if sched::current_signals_ready() {
            super::with_current(|p| {
                if p.signals.jobctl_stop && p.signals.pending & bit(SIGKILL) == 0 {
                    // Another thread began a group stop: take part in it (no signal dequeued).
                    return Some((0, SigAction::default(), p.pid));
                }
                let Some(sig) = p.signals.dequeue(!p.signals.blocked) else {
                    sync_ready(p);
                    return None;
                };
                sync_ready(p);
                Some((sig, p.signals.actions.get(sig), p.pid))
            })
        } else {
            None
        };
        let Some((sig, act, pid)) = next else {
            // No handler ran: rt_sigsuspend's mask comes back (which may unblock more).
            let restored = super::with_current(|p| match p.signals.saved_mask.take() {
                Some(m) => {
                    p.signals.blocked = m;
                    sync_ready(p);
                    true
                }
                None => false,
            });
            if restored && sched::current_signals_ready() {
                continue;
            }
            if let Some(code) = restart {
                finish_interrupted(frame, code, None);
            }
            return;
        };
        if sig == 0 {
            stop_current(0);
            continue;
        }
        if sig == SIGKILL {
            super::exit::die(kcore::wait::signaled(sig, false));
        }
        match act.handler {
            SIG_IGN => continue,
            SIG_DFL => match default_action(sig) {
                Default_::Ignore | Default_::Continue => continue,
                Default_::Stop => {
                    // Init never stops; nor does an orphaned group on a job-control signal (no
                    // shell is left to continue it).
                    if pid == INIT_PID || (sig != SIGSTOP && super::exit::current_group_orphaned())
                    {
                        continue;
                    }
                    stop_current(sig);
                    continue;
                }
                Default_::Terminate => {
                    super::exit::die(kcore::wait::signaled(sig, false));
                }
            },
            _ => {
                if let Some(code) = restart.take() {
                    finish_interrupted(frame, code, Some(act.flags));
                }
                if setup_frame(frame, sig, &act).is_err() {
                    super::exit::die(kcore::wait::signaled(SIGSEGV, false));
                }
                // Like Linux, go on with the next deliverable signal: its frame goes on top of this
                // one, so its handler runs first and returns into this handler.
            }
        }
    }
}

/// `frame` is a system call's that was interrupted by a signal: its restart code.
fn interrupted_call(frame: &TrapFrame) -> Option<Errno> {
    if frame.vector != crate::arch::trap::SYSCALL_VECTOR || frame.error == NOT_A_SYSCALL {
        return None;
    }
    [
        Errno::ERESTARTSYS,
        Errno::ERESTARTNOHAND,
        Errno::ERESTART_RESTARTBLOCK,
    ]
    .into_iter()
    .find(|e| frame.rax == e.as_return())
}

/// `frame.error` after rt_sigreturn: the registers are the user's, not a system call's result.
const NOT_A_SYSCALL: u64 = u64::MAX;

/// Linux's signal(7) rules for an interrupted call: with a handler (`handler_flags`), EINTR, unless
/// the call is restartable (ERESTARTSYS) and the handler has SA_RESTART; without one (the signal was
/// ignored, or stopped and continued the process), the call restarts. A restart re-executes the
/// `syscall` instruction (2 bytes before the return address) with the original number, or
/// restart_syscall for a sleep, which then sleeps for the time left.
fn finish_interrupted(frame: &mut TrapFrame, code: Errno, handler_flags: Option<u64>) {
    let restart = match handler_flags {
        Some(flags) => code == Errno::ERESTARTSYS && flags & SA_RESTART != 0,
        None => true,
    };
    if !restart {
        frame.rax = Errno::EINTR.as_return();
        super::with_current(|p| p.restart_sleep = None);
        return;
    }
    frame.rax = if code == Errno::ERESTART_RESTARTBLOCK {
        RESTART_SYSCALL
    } else {
        frame.error
    };
    frame.rip -= 2;
}

/// restart_syscall's number.
const RESTART_SYSCALL: u64 = 219;

/// Stops the current thread with its group (Linux's do_signal_stop). `sig` is the stop signal this
/// thread dequeued, which begins a group stop unless one is under way (every other live thread is
/// then marked to stop on its way back to user mode, and woken from interruptible sleeps); 0 when
/// the thread only takes part in one. The thread that completes the stop (the last live one)
/// records the leader's report for wait4 (WUNTRACED, with the signal that began it) and tells the
/// parent. The thread sleeps until SIGCONT (or SIGKILL) wakes it.
fn stop_current(sig: u32) {
    let me = super::current_pid();
    let tgid = super::with_current(|p| {
        p.signals.jobctl_stop = false;
        sync_ready(p);
        p.tgid
    });
    let began = super::with_table(|t| {
        let began = match t.get_mut(&tgid) {
            Some(l) if l.signals.group_stop.sig == 0 && sig != 0 => {
                l.signals.group_stop = GroupStop {
                    sig,
                    stopped: false,
                };
                true
            }
            _ => false,
        };
        if began {
            for q in t.values_mut() {
                let dying = q.signals.pending & bit(SIGKILL) != 0 || q.group_exit.is_some();
                if q.tgid == tgid && q.pid != me && q.state != State::Zombie && !dying {
                    q.signals.jobctl_stop = true;
                    sync_ready(q);
                }
            }
        }
        if let Some(p) = t.get_mut(&me) {
            p.state = State::Stopped;
        }
        began
    });
    if began {
        // Out of interruptible sleeps: they end with their restart code and stop on the way out.
        wake_threads(tgid, false, |q| q.pid != me && q.signals.jobctl_stop);
    }
    complete_group_stop(tgid);
    sched::schedule();
}

/// If a group stop of `tgid` is under way and no live thread of the group is left to stop, the
/// group has stopped: the leader reports it to wait4 once and the parent is told. Called by each
/// stopping thread and by a thread that exits during a stop.
pub fn complete_group_stop(tgid: Pid) {
    let notify = super::with_table(|t| {
        let gs = t.get(&tgid)?.signals.group_stop;
        if gs.sig == 0 || gs.stopped {
            return None;
        }
        let running = t.values().any(|q| {
            q.tgid == tgid
                && !matches!(q.state, State::Stopped | State::Zombie)
                && q.signals.pending & bit(SIGKILL) == 0
        });
        if running {
            return None;
        }
        let l = t.get_mut(&tgid)?;
        l.signals.group_stop.stopped = true;
        l.stop_report = Some(kcore::wait::stopped(gs.sig));
        Some(l.ppid)
    });
    if let Some(ppid) = notify {
        notify_parent_cldstop(ppid);
    }
}

// Layout of Linux's x86-64 rt_sigframe: pretcode, ucontext (flags, link, stack_t, sigcontext, mask),
// siginfo; the FXSAVE image 64-byte aligned below it.
const UC_OFF: u64 = 8;
const UC_STACK_OFF: u64 = UC_OFF + 16;
const MCONTEXT_OFF: u64 = UC_OFF + 40;
const UC_SIGMASK_OFF: u64 = MCONTEXT_OFF + 256;
const SIGINFO_OFF: u64 = UC_SIGMASK_OFF + 128;
const FRAME_SIZE: u64 = SIGINFO_OFF + 128;
const FX_SIZE: u64 = 512;

fn gregs(f: &TrapFrame) -> [u64; 18] {
    [
        f.r8, f.r9, f.r10, f.r11, f.r12, f.r13, f.r14, f.r15, f.rdi, f.rsi, f.rbp, f.rbx, f.rdx,
        f.rax, f.rcx, f.rsp, f.rip, f.rflags,
    ]
}

fn setup_frame(frame: &mut TrapFrame, sig: u32, act: &SigAction) -> Result<(), Errno> {
    if act.flags & SA_RESTORER == 0 {
        return Err(Errno::EFAULT);
    }
    // Below the red zone, or at the top of the alternate stack for an SA_ONSTACK handler unless
    // already on it: the FXSAVE image, then the frame, aligned so that on handler entry
    // (rsp = frame) rsp + 8 is 16-byte aligned, as after a call.
    let alt = super::with_current(|p| p.signals.altstack);
    let mut sp = frame.rsp - 128;
    let nested = alt.on_stack(frame.rsp);
    let entering = act.flags & SA_ONSTACK != 0 && alt.reported_flags(sp) & !SS_AUTODISARM == 0;
    if entering {
        sp = alt.sp + alt.size;
    }
    let fx = (sp - FX_SIZE) & !63;
    let base = ((fx - FRAME_SIZE) & !15) - 8;
    // A frame that would overflow the alternate stack is refused (Linux: SIGSEGV).
    if (nested || entering) && !(base > alt.sp && base - alt.sp <= alt.size) {
        return Err(Errno::EFAULT);
    }
    let out = crate::mm::uaccess::UserWriter::new(base, (fx + FX_SIZE - base) as usize)?;
    let mut b = [0u8; FRAME_SIZE as usize];
    // uc_stack: the alternate stack as set, at the interrupted rsp.
    let uc_stack = AltStack::to_bytes(alt.sp, alt.flags, alt.size);
    b[UC_STACK_OFF as usize..UC_STACK_OFF as usize + 24].copy_from_slice(&uc_stack);
    let mut put = |off: u64, v: u64| {
        b[off as usize..off as usize + 8].copy_from_slice(&v.to_le_bytes());
    };
    put(0, act.restorer);
    for (i, v) in gregs(frame).iter().enumerate() {
        put(MCONTEXT_OFF + 8 * i as u64, *v);
    }
    // cs, gs, fs, ss as four u16
    put(
        MCONTEXT_OFF + 144,
        USER_CS as u64 | ((USER_DS as u64) << 48),
    );
    put(MCONTEXT_OFF + 152, frame.error);
    put(MCONTEXT_OFF + 160, frame.vector);
    // The mask to restore on rt_sigreturn: rt_sigsuspend's saved one if it is waiting.
    let old_mask =
        super::with_current(|p| p.signals.saved_mask.take().unwrap_or(p.signals.blocked));
    put(MCONTEXT_OFF + 168, old_mask);
    put(MCONTEXT_OFF + 176, crate::arch::cpu::read_cr2());
    put(MCONTEXT_OFF + 184, fx);
    put(UC_SIGMASK_OFF, old_mask);
    // siginfo: signo, errno, code (SI_USER = 0; a forced fault's code), then si_addr for a fault.
    let fault = super::with_current(|p| match p.signals.fault_info {
        Some((s, code, addr)) if s == sig => {
            p.signals.fault_info = None;
            Some((code, addr))
        }
        _ => None,
    });
    put(SIGINFO_OFF, sig as u64);
    if let Some((code, addr)) = fault {
        put(SIGINFO_OFF + 8, code as u32 as u64);
        put(SIGINFO_OFF + 16, addr);
    }
    out.write_all_at(0, &b)?;
    let fx_bytes = super::with_current(|p| {
        crate::arch::switch::save_fx(&mut p.ctx);
        p.ctx.fx
    });
    out.write_all_at((fx - base) as usize, &fx_bytes)?;
    super::with_current(|p| {
        let mut add = act.mask;
        if act.flags & SA_NODEFER == 0 {
            add |= bit(sig);
        }
        p.signals.blocked = (p.signals.blocked | add) & !UNBLOCKABLE;
        sync_ready(p);
        if act.flags & SA_RESETHAND != 0 {
            p.signals.actions.set(sig, SigAction::default());
        }
        if p.signals.altstack.flags & SS_AUTODISARM != 0 {
            p.signals.altstack = AltStack::default();
        }
    });
    frame.rsp = base;
    frame.rip = act.handler;
    frame.rdi = sig as u64;
    frame.rsi = base + SIGINFO_OFF;
    frame.rdx = base + UC_OFF;
    frame.rax = 0;
    let _ = SA_SIGINFO;
    Ok(())
}

/// rt_sigreturn: restores the registers, mask and x87/SSE state saved by the signal frame at rsp - 8.
pub fn sigreturn(frame: &mut TrapFrame) -> Result<u64, Errno> {
    let handler_sp = frame.rsp;
    let base = handler_sp - 8;
    // uc_stack, uc_mcontext and uc_sigmask lie together: one copy into the kernel.
    const WORDS: usize = ((UC_SIGMASK_OFF + 8 - UC_STACK_OFF) / 8) as usize;
    let words: [u64; WORDS] = crate::mm::uaccess::read_val(base + UC_STACK_OFF)?;
    let get = |off: u64| words[((off - UC_STACK_OFF) / 8) as usize];
    let g: [u64; 18] = core::array::from_fn(|i| get(MCONTEXT_OFF + 8 * i as u64));
    let mask = get(UC_SIGMASK_OFF);
    let fx = get(MCONTEXT_OFF + 184);
    [
        frame.r8, frame.r9, frame.r10, frame.r11, frame.r12, frame.r13, frame.r14, frame.r15,
        frame.rdi, frame.rsi, frame.rbp, frame.rbx, frame.rdx, frame.rax, frame.rcx, frame.rsp,
        frame.rip,
    ] = [
        g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9], g[10], g[11], g[12], g[13],
        g[14], g[15], g[16],
    ];
    // Only the arithmetic flags and DF/TF/AC may change; IF stays on.
    frame.rflags = (g[17] & 0x4_0dd5) | 0x202;
    frame.cs = USER_CS as u64;
    frame.ss = USER_DS as u64;
    frame.error = NOT_A_SYSCALL;
    // Copied outside the process table (a copy that faults validates through it); an unreadable
    // image keeps the state the task has.
    let mut image = [0u8; FX_SIZE as usize];
    if fx != 0 && crate::mm::uaccess::copy_from_user(&mut image, fx).is_ok() {
        super::with_current(|p| {
            p.ctx.fx.copy_from_slice(&image);
            // MXCSR: reserved bits set would make fxrstor fault.
            p.ctx.fx[26] = 0;
            p.ctx.fx[27] = 0;
            crate::arch::switch::restore_fx(&p.ctx);
        });
    }
    super::with_current(|p| {
        p.signals.blocked = mask & !UNBLOCKABLE;
        sync_ready(p);
    });
    // uc_stack back as the alternate stack (Linux's restore_altstack; refused, silently, if the
    // handler's rsp is on the stack now set: measured on Linux 6.18, a handler that replaced a
    // disarmed SS_AUTODISARM stack by a plain one keeps the plain one).
    let ss = (
        get(UC_STACK_OFF),
        get(UC_STACK_OFF + 8) as u32,
        get(UC_STACK_OFF + 16),
    );
    let _ = sigaltstack(Some(ss), handler_sp);
    Ok(frame.rax)
}

/// rt_sigaction.
pub fn sigaction(sig: u32, act: Option<SigAction>) -> Result<SigAction, Errno> {
    if sig == 0 || sig > 64 {
        return Err(Errno::EINVAL);
    }
    if act.is_some() && (sig == SIGKILL || sig == SIGSTOP) {
        return Err(Errno::EINVAL);
    }
    let (old, tgid) = super::with_current(|p| {
        let old = p.signals.actions.get(sig);
        if let Some(a) = act {
            p.signals.actions.set(sig, a);
        }
        (old, p.tgid)
    });
    // Now ignored: pending instances go, the group's and every thread's (Linux's do_sigaction).
    if act.is_some_and(|a| ignored(&a, sig)) {
        super::with_table(|t| {
            for q in t.values_mut().filter(|q| q.tgid == tgid) {
                q.signals.discard(bit(sig));
                sync_ready(q);
            }
        });
    }
    Ok(old)
}

/// rt_sigsuspend's first half: `mask` replaces the blocked set until a handler runs (or the call
/// restarts), the old one kept in `saved_mask`.
pub fn suspend_mask(mask: u64) {
    super::with_current(|p| {
        p.signals.saved_mask = Some(p.signals.blocked);
        p.signals.blocked = mask & !UNBLOCKABLE;
        sync_ready(p);
    })
}

/// Undoes [`suspend_mask`] when the call ends without a signal to deliver (ppoll, pselect6 and
/// epoll_pwait that found something ready or timed out: Linux's restore_saved_sigmask).
pub fn restore_saved_mask() {
    super::with_current(|p| {
        if let Some(m) = p.signals.saved_mask.take() {
            p.signals.blocked = m;
            sync_ready(p);
        }
    })
}

/// Takes the lowest pending signal in `set` (rt_sigtimedwait), if any: the thread's own first,
/// then its group's.
pub fn take_pending(set: u64) -> Option<u32> {
    super::with_current(|p| {
        let sig = p.signals.dequeue(set)?;
        sync_ready(p);
        Some(sig)
    })
}

/// Sets the signals rt_sigtimedwait waits for (see `SigState::waiting`); 0 when done.
pub fn set_waiting(set: u64) {
    super::with_current(|p| p.signals.waiting = set & !UNBLOCKABLE);
}

/// The pending signals that are blocked, the thread's and its group's (rt_sigpending).
pub fn pending_blocked() -> u64 {
    super::with_current(|p| p.signals.all_pending() & p.signals.blocked)
}

/// Signals that cannot be waited for, blocked or caught.
pub const UNWAITABLE: u64 = UNBLOCKABLE;

/// rt_sigprocmask: how 0 SIG_BLOCK, 1 SIG_UNBLOCK, 2 SIG_SETMASK.
pub fn sigprocmask(how: u32, set: Option<u64>) -> Result<u64, Errno> {
    let (old, handed_on) = super::with_current(|p| {
        let old = p.signals.blocked;
        if let Some(s) = set {
            p.signals.blocked = match how {
                0 => old | s,
                1 => old & !s,
                2 => s,
                _ => return Err(Errno::EINVAL),
            } & !UNBLOCKABLE;
            // The group's signals this thread was told of and now blocks go to another thread.
            let newly = p.signals.blocked & !old & p.signals.shared_pending.get();
            let handed_on = (p.ctx.signals_ready && newly != 0).then_some((p.tgid, p.pid, newly));
            sync_ready(p);
            Ok((old, handed_on))
        } else if how > 2 {
            Err(Errno::EINVAL)
        } else {
            Ok((old, None))
        }
    })?;
    if let Some((tgid, me, mask)) = handed_on {
        retarget(tgid, me, mask);
    }
    Ok(old)
}

/// The current thread is exiting (not with its whole group): the group's pending signals it could
/// have taken go to another thread (Linux's exit_signals).
pub fn exiting() {
    let mine = super::with_current(|p| {
        (p.ctx.signals_ready && p.group_exit.is_none()).then_some((
            p.tgid,
            p.pid,
            p.signals.shared_pending.get() & !p.signals.blocked,
        ))
    });
    if let Some((tgid, me, mask)) = mine {
        retarget(tgid, me, mask);
    }
}

/// The last thread of group `tgid` is gone: nothing is pending for the group any more.
pub fn group_dead(tgid: Pid) {
    super::with_proc(tgid, |p| p.signals.shared_pending.set(0));
}

#[allow(dead_code)]
const _UNUSED: [u32; 5] = [SIGHUP, SIGINT, SIGQUIT, SIGTRAP, SIGABRT];
#[allow(dead_code)]
const _UNUSED2: u32 = SIGTERM;
