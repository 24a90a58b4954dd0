//! POSIX advisory record locks (fcntl F_GETLK, F_SETLK, F_SETLKW): one table for the system
//! (`kcore::lock`, the range logic), files keyed by (device, inode), owners by process (thread group)
//! id. F_SETLKW sleeps on one wait queue woken whenever a lock is released. A process's locks on a file
//! go when it closes any descriptor of the file (close(2)), and all of them at its exit, as POSIX says.
//! Not done: deadlock detection (EDEADLK), the open-file-description locks (F_OFD_*) and flock(2).
#![deny(unsafe_code)]

use crate::sync::{KCell, WaitQueue};
use kcore::errno::Errno;
use kcore::lock::{Kind, Lock, LockTable};

static LOCKS: KCell<LockTable> = KCell::new(LockTable::new());
/// F_SETLKW waiters.
static RELEASED: WaitQueue = WaitQueue::fixed(2);

/// The key of a file: its device and inode numbers.
pub fn file_key(dev: u64, ino: u64) -> u64 {
    dev << 40 ^ ino
}

/// F_GETLK: the first lock of another process in the way of the request, if any.
pub fn test(file: u64, owner: u32, start: u64, end: u64, kind: Kind) -> Option<Lock> {
    LOCKS.borrow().conflict(file, owner, start, end, kind)
}

/// F_SETLK (`wait` false: EAGAIN on a conflict) and F_SETLKW (sleeps until the range is free;
/// ERESTARTSYS when a signal comes).
pub fn set(
    file: u64,
    owner: u32,
    start: u64,
    end: u64,
    kind: Kind,
    wait: bool,
) -> Result<(), Errno> {
    loop {
        if LOCKS
            .borrow()
            .conflict(file, owner, start, end, kind)
            .is_none()
        {
            LOCKS.borrow_mut().set(file, owner, start, end, kind);
            // Shrinking, converting or releasing may free a range somebody waits for.
            RELEASED.wake_all();
            return Ok(());
        }
        if !wait {
            return Err(Errno::EAGAIN);
        }
        RELEASED.wait().map_err(|_| Errno::ERESTARTSYS)?;
    }
}

/// A descriptor of `file` was closed by `owner`: its locks on the file go.
pub fn closed(file: u64, owner: u32) {
    let released = LOCKS
        .try_borrow_mut()
        .is_ok_and(|mut t| t.release_file(file, owner));
    if released {
        RELEASED.wake_all();
    }
}

/// `owner` exits: all its locks go.
pub fn exited(owner: u32) {
    let released = LOCKS
        .try_borrow_mut()
        .is_ok_and(|mut t| t.release_owner(owner));
    if released {
        RELEASED.wake_all();
    }
}
