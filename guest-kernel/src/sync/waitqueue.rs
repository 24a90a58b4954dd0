//! Wait queues: how a pipe, the console, a socket or a driver lets tasks sleep until it changes,
//! without knowing the process table (xv6's opaque `chan`, Linux's `wait_queue_head_t`).
//!
//! A [`WaitQueue`] is a small copyable handle, a key unique to the object that owns it. A task waits
//! on one queue ([`WaitQueue::wait`]) or on several with a deadline ([`wait_any`], poll and select);
//! [`WaitQueue::wake_all`] makes every task waiting on it runnable, and each rechecks what it waits
//! for (wake-ups may be spurious). The scheduler (`proc::sched`) installs the three operations this
//! needs at boot ([`install`]): this module sits below the process table and names no subsystem.
#![deny(unsafe_code)]

use super::KCell;
use core::sync::atomic::{AtomicU64, Ordering};

/// What the scheduler offers the queues.
#[derive(Clone, Copy)]
pub struct Scheduler {
    /// Blocks the running task until one of the keys is woken, the deadline (ns since boot) passes
    /// or a signal arrives; returns once.
    pub block: fn(&[u64], Option<u64>),
    /// Makes every task blocked on the key runnable.
    pub wake: fn(u64),
    /// Whether the running task has a signal to handle (an interruptible wait ends).
    pub signal_pending: fn() -> bool,
}

static SCHED: KCell<Option<Scheduler>> = KCell::new(None);

/// Called once by the scheduler at boot.
pub fn install(s: Scheduler) {
    *SCHED.borrow_mut() = Some(s);
}

fn sched() -> Option<Scheduler> {
    SCHED.try_borrow().ok().and_then(|s| *s)
}

/// Keys below this are for queues in statics ([`WaitQueue::fixed`]).
const FIRST_DYNAMIC: u64 = 1 << 16;
static NEXT_KEY: AtomicU64 = AtomicU64::new(FIRST_DYNAMIC);

/// What a wake-up announces: data to read, room to write, or either (a hang-up, a state change).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    In,
    Out,
    Both,
}

/// Wake-up counts by (queue, direction), hashed into a small table: epoll's edge-triggered entries
/// report again only after their queue's count for their direction moved. Two queues may share a
/// slot, which can only cause an extra report (allowed), never a missed edge.
static EDGES: [AtomicU64; 128] = [const { AtomicU64::new(0) }; 128];

fn edge_slot(key: u64, input: bool) -> usize {
    ((key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as usize * 2 + input as usize) % EDGES.len()
}

/// A wait interrupted by a signal (the caller returns its restart code, e.g. ERESTARTSYS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted;

/// A queue of tasks waiting for one object to change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitQueue(u64);

impl WaitQueue {
    /// A queue of its own for a new object.
    pub fn new() -> WaitQueue {
        WaitQueue(NEXT_KEY.fetch_add(1, Ordering::Relaxed))
    }

    /// A queue for an object in a static: `n` must be unique among fixed queues and below 2^16.
    pub const fn fixed(n: u64) -> WaitQueue {
        assert!(n < FIRST_DYNAMIC);
        WaitQueue(n)
    }

    /// Wakes every task waiting on this queue (for either direction).
    pub fn wake_all(self) {
        self.wake(Edge::Both);
    }

    /// Wakes every task waiting on this queue, announcing `edge`.
    pub fn wake(self, edge: Edge) {
        if edge != Edge::Out {
            EDGES[edge_slot(self.0, true)].fetch_add(1, Ordering::Relaxed);
        }
        if edge != Edge::In {
            EDGES[edge_slot(self.0, false)].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(s) = sched() {
            (s.wake)(self.0);
        }
    }

    /// How many wake-ups announcing input (`input`) or output this queue has had (see [`Edge`]).
    pub fn edges(self, input: bool) -> u64 {
        EDGES[edge_slot(self.0, input)].load(Ordering::Relaxed)
    }

    /// Sleeps until this queue is woken (or spuriously); `Err` at once if a signal is pending.
    pub fn wait(self) -> Result<(), Interrupted> {
        wait_any(&[self], None)
    }
}

impl Default for WaitQueue {
    fn default() -> Self {
        WaitQueue::new()
    }
}

/// Whether the running task has a signal to handle (false before the scheduler runs).
pub fn signal_pending() -> bool {
    sched().is_some_and(|s| (s.signal_pending)())
}

/// Sleeps until one of `queues` is woken, `deadline` (ns since boot) passes, or a signal arrives
/// (`Err` at once if one is pending). Returns once: the caller rechecks its condition.
pub fn wait_any(queues: &[WaitQueue], deadline: Option<u64>) -> Result<(), Interrupted> {
    let Some(s) = sched() else {
        return Ok(());
    };
    if (s.signal_pending)() {
        return Err(Interrupted);
    }
    let mut keys = [0u64; 8];
    if queues.len() <= keys.len() {
        for (k, q) in keys.iter_mut().zip(queues) {
            *k = q.0;
        }
        (s.block)(&keys[..queues.len()], deadline);
    } else {
        let keys: alloc::vec::Vec<u64> = queues.iter().map(|q| q.0).collect();
        (s.block)(&keys, deadline);
    }
    Ok(())
}
