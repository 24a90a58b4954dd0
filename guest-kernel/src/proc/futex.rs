//! futex(2): one wait queue per futex word, keyed by the address space and the address for private
//! futexes (FUTEX_PRIVATE_FLAG) and by the physical address for shared ones (so processes sharing a
//! page meet on it). A waiter sits in its futex's queue, blocked on `Chan::Futex`; a wake takes
//! waiters off the queue in order and wakes exactly those (`sched::wake_pid`), so a waiter that finds
//! itself off the queue was woken by the futex, and one still on it by a signal or its timeout.
//!
//! Operations: WAIT, WAKE, WAIT_BITSET, WAKE_BITSET, REQUEUE, CMP_REQUEUE, WAKE_OP; relative (WAIT)
//! and absolute (WAIT_BITSET, CLOCK_MONOTONIC or FUTEX_CLOCK_REALTIME) timeouts. PI futexes and
//! FUTEX_WAIT_REQUEUE_PI: ENOSYS.
#![deny(unsafe_code)]

use super::{sched, Chan, Pid};
use crate::sync::KCell;
use alloc::collections::{BTreeMap, VecDeque};
use kcore::errno::Errno;

/// A futex: (address-space root, user address) when private, (0, physical address) when shared.
type Key = (u64, u64);

/// The waiters of each futex, in arrival order, with their bitsets.
static QUEUES: KCell<BTreeMap<Key, VecDeque<(Pid, u32)>>> = KCell::new(BTreeMap::new());
/// Which futex each waiter waits on (a requeue moves it).
static WAITING: KCell<BTreeMap<Pid, Key>> = KCell::new(BTreeMap::new());

pub const FUTEX_WAIT: u32 = 0;
pub const FUTEX_WAKE: u32 = 1;
pub const FUTEX_REQUEUE: u32 = 3;
pub const FUTEX_CMP_REQUEUE: u32 = 4;
pub const FUTEX_WAKE_OP: u32 = 5;
pub const FUTEX_WAIT_BITSET: u32 = 9;
pub const FUTEX_WAKE_BITSET: u32 = 10;
pub const FUTEX_PRIVATE_FLAG: u32 = 128;
pub const FUTEX_CLOCK_REALTIME: u32 = 256;
const BITSET_ALL: u32 = u32::MAX;

/// The futex at user address `uaddr` of the current process (`shared`: by physical address).
pub fn key(uaddr: u64, shared: bool) -> Result<Key, Errno> {
    if !uaddr.is_multiple_of(4) {
        return Err(Errno::EINVAL);
    }
    crate::syscall::file::check_user(uaddr, 4, false)?;
    super::with_mm(|mm| {
        if shared {
            let (pa, _) = mm.aspace.translate(uaddr).ok_or(Errno::EFAULT)?;
            Ok((0, pa + (uaddr & 0xfff)))
        } else {
            Ok((mm.aspace.root(), uaddr))
        }
    })
}

/// Reads the futex word at `uaddr`.
pub fn read_word(uaddr: u64) -> Result<u32, Errno> {
    crate::mm::uaccess::read_val(uaddr)
}

/// How a wait ended early.
pub enum WaitEnd {
    /// A signal is pending.
    Signal,
    /// The deadline passed.
    Timeout,
}

/// Waits on futex `k` (the word was checked by the caller) until a wake, a signal or `deadline`
/// (ns since boot).
pub fn wait(k: Key, bitset: u32, deadline: Option<u64>) -> Result<(), WaitEnd> {
    let me = super::current_pid();
    QUEUES
        .borrow_mut()
        .entry(k)
        .or_default()
        .push_back((me, bitset));
    WAITING.borrow_mut().insert(me, k);
    loop {
        if !WAITING.borrow().contains_key(&me) {
            return Ok(());
        }
        let end = if super::signal::pending_for_current() {
            Some(WaitEnd::Signal)
        } else if deadline.is_some_and(|d| crate::time::now_ns() >= d) {
            Some(WaitEnd::Timeout)
        } else {
            None
        };
        if let Some(end) = end {
            leave(me);
            return Err(end);
        }
        match deadline {
            Some(d) => sched::block_any(alloc::vec![Chan::Futex], Some(d)),
            None => sched::block(Chan::Futex),
        }
    }
}

/// Takes `pid` off the queue it waits in.
fn leave(pid: Pid) {
    if let Some(k) = WAITING.borrow_mut().remove(&pid) {
        let mut queues = QUEUES.borrow_mut();
        if let Some(q) = queues.get_mut(&k) {
            q.retain(|&(p, _)| p != pid);
            if q.is_empty() {
                queues.remove(&k);
            }
        }
    }
}

/// Wakes up to `n` waiters of `k` whose bitset meets `bitset`; returns how many.
pub fn wake(k: Key, n: u32, bitset: u32) -> u32 {
    let mut woken = alloc::vec::Vec::new();
    {
        let mut queues = QUEUES.borrow_mut();
        if let Some(q) = queues.get_mut(&k) {
            let mut i = 0;
            while i < q.len() && (woken.len() as u32) < n {
                if q[i].1 & bitset != 0 {
                    if let Some((p, _)) = q.remove(i) {
                        woken.push(p);
                    }
                } else {
                    i += 1;
                }
            }
            if q.is_empty() {
                queues.remove(&k);
            }
        }
        let mut waiting = WAITING.borrow_mut();
        for p in &woken {
            waiting.remove(p);
        }
    }
    for &p in &woken {
        sched::wake_pid(p, false);
    }
    woken.len() as u32
}

/// Wakes up to `nr_wake` waiters of `from` and moves up to `nr_requeue` of the rest to `to`;
/// returns how many were woken or moved.
pub fn requeue(from: Key, to: Key, nr_wake: u32, nr_requeue: u32) -> u32 {
    let woken = wake(from, nr_wake, BITSET_ALL);
    let mut moved = 0;
    let mut queues = QUEUES.borrow_mut();
    let mut waiting = WAITING.borrow_mut();
    let mut taken = VecDeque::new();
    if let Some(q) = queues.get_mut(&from) {
        while moved < nr_requeue {
            let Some(w) = q.pop_front() else { break };
            taken.push_back(w);
            moved += 1;
        }
        if q.is_empty() {
            queues.remove(&from);
        }
    }
    for &(p, _) in &taken {
        waiting.insert(p, to);
    }
    if !taken.is_empty() {
        queues.entry(to).or_default().extend(taken);
    }
    woken + moved
}

/// A private wake of `n` waiters at `uaddr` in the current address space (CLONE_CHILD_CLEARTID at
/// thread exit, robust-list cleanup).
pub fn wake_address(uaddr: u64, n: u32) {
    let root = super::with_mm(|mm| mm.aspace.root());
    wake((root, uaddr), n, BITSET_ALL);
    // A shared waiter on the same word (a non-private wait) is woken too.
    if let Some((pa, _)) = super::with_mm(|mm| mm.aspace.translate(uaddr)) {
        wake((0, pa + (uaddr & 0xfff)), n, BITSET_ALL);
    }
}

/// FUTEX_WAKE_OP's operation on the old value of the second word, and its comparison.
pub fn wake_op_apply(old: u32, encoded: u32) -> (u32, bool) {
    let op = (encoded >> 28) & 0xf;
    let cmp = (encoded >> 24) & 0xf;
    // 12-bit signed arguments.
    let sext = |v: u32| ((v << 20) as i32 >> 20) as u32;
    let mut oparg = sext((encoded >> 12) & 0xfff);
    let cmparg = sext(encoded & 0xfff);
    if op & 8 != 0 {
        oparg = 1u32.checked_shl(oparg).unwrap_or(0);
    }
    let new = match op & 7 {
        0 => oparg,
        1 => old.wrapping_add(oparg),
        2 => old | oparg,
        3 => old & !oparg,
        _ => old ^ oparg,
    };
    let (o, c) = (old as i32, cmparg as i32);
    let hit = match cmp {
        0 => o == c,
        1 => o != c,
        2 => o < c,
        3 => o <= c,
        4 => o > c,
        _ => o >= c,
    };
    (new, hit)
}

/// Whether WAKE_OP's encoded operation and comparison are valid (op 0-4, cmp 0-5).
pub fn wake_op_valid(encoded: u32) -> bool {
    (encoded >> 28) & 7 <= 4 && (encoded >> 24) & 0xf <= 5
}

/// A thread that dies while waiting (killed) leaves its queue.
pub fn forget(pid: Pid) {
    leave(pid);
}
