//! An epoll instance: the interest list an `epoll_create1` descriptor holds. Each entry names a
//! descriptor number and the open file description behind it (weakly: the entry disappears with the
//! description, as Linux drops it when the file is released), the events asked for, the user's data
//! word, and for edge-triggered entries the wake-up counts of the file's wait queue at the last report.
//! The calls (epoll_ctl, epoll_wait) are `syscall::epoll`.
#![deny(unsafe_code)]

use super::OpenFile;
use alloc::rc::{Rc, Weak};
use alloc::vec::Vec;
use core::cell::RefCell;

pub const EPOLLIN: u32 = 0x1;
pub const EPOLLOUT: u32 = 0x4;
pub const EPOLLERR: u32 = 0x8;
pub const EPOLLHUP: u32 = 0x10;
pub const EPOLLRDHUP: u32 = 0x2000;
pub const EPOLLEXCLUSIVE: u32 = 1 << 28;
pub const EPOLLWAKEUP: u32 = 1 << 29;
pub const EPOLLONESHOT: u32 = 1 << 30;
pub const EPOLLET: u32 = 1 << 31;

/// One watched descriptor.
pub struct Entry {
    pub fd: i32,
    pub file: Weak<OpenFile>,
    pub events: u32,
    pub data: u64,
    /// EPOLLONESHOT fired: no more reports until EPOLL_CTL_MOD.
    pub disarmed: bool,
    /// EPOLLET: the queue's (input, output) wake-up counts when last reported (None: not yet).
    pub seen: Option<(u64, u64)>,
}

/// The interest list.
#[derive(Default)]
pub struct Epoll {
    pub entries: Vec<Entry>,
}

impl Epoll {
    /// The entry for descriptor `fd` open on `file`.
    pub fn find(&self, fd: i32, file: &Weak<OpenFile>) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.fd == fd && Weak::ptr_eq(&e.file, file))
    }

    /// Drops the entries whose open file description is gone.
    pub fn prune(&mut self) {
        self.entries.retain(|e| e.file.strong_count() > 0);
    }
}

/// The open-file side of an epoll instance (its operations are in `syscall::epoll`).
pub struct EpollFile(pub Rc<RefCell<Epoll>>);
