//! What code below the process table (the terminal, the drivers) may ask of it: the calling task's
//! ids and whether the console is its controlling terminal, signals to a process or a process group,
//! and two questions about groups and sessions (Linux's tty_jobctrl.c asks the same of
//! `current->signal` and the pid hash).
//!
//! The process table installs these operations at boot ([`install`]), as the scheduler installs the
//! wait queues' (`sync::waitqueue`), so the terminal and the drivers name no part of `proc` and the
//! kernel's imports have no circle through them. Before [`install`] (early boot) there is no task:
//! [`current`] is all zeros and signals go nowhere.
#![deny(unsafe_code)]

use super::KCell;

/// Init's process id.
pub const INIT_PID: u32 = 1;

/// The signals (Linux's numbers on x86-64) the terminal and the drivers send.
pub const SIGHUP: u32 = 1;
pub const SIGINT: u32 = 2;
pub const SIGQUIT: u32 = 3;
pub const SIGCONT: u32 = 18;
pub const SIGTSTP: u32 = 20;
pub const SIGTTIN: u32 = 21;
pub const SIGTTOU: u32 = 22;

/// The calling task as the terminal and the drivers see it (the fields of `proc::Process`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Current {
    /// The task's own id (a thread's tid).
    pub pid: u32,
    /// Its process (thread group) id.
    pub tgid: u32,
    pub ppid: u32,
    pub sid: u32,
    pub pgid: u32,
    /// Whether the console is its controlling terminal.
    pub ctty: bool,
}

/// What the process table offers.
#[derive(Clone, Copy)]
pub struct Processes {
    pub current: fn() -> Current,
    /// Marks whether the console is the calling task's controlling terminal.
    pub set_ctty: fn(bool),
    /// Sends a signal from the kernel to a process: (pid, signal).
    pub signal_process: fn(u32, u32),
    /// Sends a signal to every process of a group: (pgid, signal).
    pub signal_group: fn(u32, u32),
    /// Whether the calling task ignores or blocks the signal.
    pub ignores: fn(u32) -> bool,
    /// Whether the calling task's process group is orphaned (POSIX: no member has a parent in
    /// another group of the same session).
    pub group_orphaned: fn() -> bool,
    /// The session of process group `pgid` (or, with no such group, of the process with that id).
    pub session_of_group: fn(u32) -> Option<u32>,
    /// No process of session `sid` has the console as its controlling terminal any more.
    pub release_ctty: fn(u32),
}

static PROCESSES: KCell<Option<Processes>> = KCell::new(None);

/// Called once by the process table at boot.
pub fn install(p: Processes) {
    *PROCESSES.borrow_mut() = Some(p);
}

fn ops() -> Option<Processes> {
    PROCESSES.try_borrow().ok().and_then(|p| *p)
}

/// The calling task (all zeros before the process table is up).
pub fn current() -> Current {
    ops().map_or_else(Current::default, |o| (o.current)())
}

pub fn set_ctty(on: bool) {
    if let Some(o) = ops() {
        (o.set_ctty)(on);
    }
}

pub fn signal_process(pid: u32, sig: u32) {
    if let Some(o) = ops() {
        (o.signal_process)(pid, sig);
    }
}

pub fn signal_group(pgid: u32, sig: u32) {
    if let Some(o) = ops() {
        (o.signal_group)(pgid, sig);
    }
}

pub fn ignores(sig: u32) -> bool {
    ops().is_some_and(|o| (o.ignores)(sig))
}

pub fn group_orphaned() -> bool {
    ops().is_some_and(|o| (o.group_orphaned)())
}

pub fn session_of_group(pgid: u32) -> Option<u32> {
    ops().and_then(|o| (o.session_of_group)(pgid))
}

pub fn release_ctty(sid: u32) {
    if let Some(o) = ops() {
        (o.release_ctty)(sid);
    }
}
