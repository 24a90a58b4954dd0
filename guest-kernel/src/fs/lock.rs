//! Advisory file locks: fcntl's record locks (F_GETLK, F_SETLK, F_SETLKW: owned by the process),
//! open-file-description locks (F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW: owned by the description, in
//! the same table, so the two kinds conflict as on Linux) and flock(2) (whole-file, owned by the
//! description, a table of their own). The range logic is `kcore::lock`; files are keyed by (device,
//! inode). Waiters sleep on one wait queue woken whenever a lock is released. A process's record
//! locks on a file go when it closes any descriptor of the file (close(2)), and all of them at its
//! exit, as POSIX says; a description's locks go when its last descriptor is closed. F_SETLKW fails
//! with EDEADLK when the process it would wait for waits (through at most 10 others) for it.
#![deny(unsafe_code)]

use crate::sync::{KCell, WaitQueue};
use kcore::errno::Errno;
use kcore::lock::{Kind, Lock, LockTable};

/// Record and description locks.
static LOCKS: KCell<LockTable> = KCell::new(LockTable::new());
/// flock(2) locks.
static FLOCKS: KCell<LockTable> = KCell::new(LockTable::new());
/// F_SETLKW, F_OFD_SETLKW and blocking flock waiters.
static RELEASED: WaitQueue = WaitQueue::fixed(2);

/// The key of a file: its device and inode numbers.
pub fn file_key(dev: u64, ino: u64) -> u64 {
    dev << 40 ^ ino
}

/// F_GETLK: the first lock of another owner in the way of the request, if any.
pub fn test(file: u64, owner: u64, start: u64, end: u64, kind: Kind) -> Option<Lock> {
    LOCKS.borrow().conflict(file, owner, start, end, kind)
}

/// F_SETLK (`wait` false: EAGAIN on a conflict) and F_SETLKW (sleeps until the range is free;
/// ERESTARTSYS when a signal comes; EDEADLK when sleeping would wait for itself).
pub fn set(
    file: u64,
    owner: u64,
    start: u64,
    end: u64,
    kind: Kind,
    wait: bool,
) -> Result<(), Errno> {
    let req = Lock {
        file,
        owner,
        start,
        end,
        kind,
    };
    loop {
        if LOCKS
            .borrow()
            .conflict(file, owner, start, end, kind)
            .is_none()
        {
            // A process can cut a file into as many ranges as it likes, and `set` builds the new
            // list (up to two more locks) beside the old one: that must leave the heap's reserve
            // (Linux: ENOLCK when a lock cannot be allocated), or the kernel's allocation fails.
            let grown = (LOCKS.borrow().len() + 2) * core::mem::size_of::<Lock>();
            if !crate::mm::heap::can_spare(grown) {
                return Err(Errno::ENOLCK);
            }
            LOCKS.borrow_mut().set(file, owner, start, end, kind);
            // Shrinking, converting or releasing may free a range somebody waits for.
            RELEASED.wake_all();
            return Ok(());
        }
        if !wait {
            return Err(Errno::EAGAIN);
        }
        if LOCKS.borrow().deadlock(file, owner, start, end, kind) {
            return Err(Errno::EDEADLK);
        }
        LOCKS.borrow_mut().block(req);
        let woken = RELEASED.wait();
        LOCKS.borrow_mut().unblock(&req);
        woken.map_err(|_| Errno::ERESTARTSYS)?;
    }
}

/// flock(2) by the description `owner`: `kind` Unlock releases; `wait` false gives EAGAIN
/// (EWOULDBLOCK) when another description holds a conflicting lock, true sleeps (ERESTARTSYS when a
/// signal comes).
pub fn flock(file: u64, owner: u64, kind: Kind, wait: bool) -> Result<(), Errno> {
    loop {
        let granted = FLOCKS.borrow_mut().flock(file, owner, kind);
        // A conversion drops the old lock first, so a waiter may be free now.
        RELEASED.wake_all();
        if granted {
            return Ok(());
        }
        if !wait {
            return Err(Errno::EAGAIN);
        }
        RELEASED.wait().map_err(|_| Errno::ERESTARTSYS)?;
    }
}

/// A descriptor of `file` was closed by `owner`: its locks on the file go.
pub fn closed(file: u64, owner: u64) {
    let released = LOCKS
        .try_borrow_mut()
        .is_ok_and(|mut t| t.release_file(file, owner));
    if released {
        RELEASED.wake_all();
    }
}

/// The last descriptor of the description `owner` was closed: its description and flock locks on
/// `file` go.
pub fn description_closed(file: u64, owner: u64) {
    let record = LOCKS
        .try_borrow_mut()
        .is_ok_and(|mut t| t.release_file(file, owner));
    let whole = FLOCKS
        .try_borrow_mut()
        .is_ok_and(|mut t| t.release_file(file, owner));
    if record || whole {
        RELEASED.wake_all();
    }
}

/// `owner` exits: all its locks go.
pub fn exited(owner: u64) {
    let released = LOCKS
        .try_borrow_mut()
        .is_ok_and(|mut t| t.release_owner(owner));
    if released {
        RELEASED.wake_all();
    }
}
