//! epoll: epoll_create1, epoll_ctl, epoll_wait and epoll_pwait over the files poll(2) knows (pipes, the
//! console, sockets, other epoll instances one level deep; regular files are EPERM as on Linux).
//!
//! Level-triggered entries are reported while ready. EPOLLONESHOT disarms an entry once reported,
//! until EPOLL_CTL_MOD. EPOLLET reports an entry when it is ready and its file's wait queue has announced
//! new input (or output, by the events asked for) since the last report (`sync::waitqueue::Edge`
//! counts); the counts live in a small hashed table, so an unrelated wake-up can cause an extra report
//! (harmless: an edge-triggered reader reads until EAGAIN), never a missed one. A wait computes every
//! entry's readiness and, when none is ready, sleeps once on all their queues with the timeout as
//! deadline, then looks again.
#![deny(unsafe_code)]

use super::file::{check_user, copy_to_user};
use super::poll::poll_file;
use super::SysResult;
use crate::fs::epoll::*;
use crate::fs::file::{FileOps, ReadBuf, Stat, WriteBuf};
use crate::fs::{self, FileRef, OpenFile};
use crate::proc::with_current;
use crate::sync::waitqueue::{self, WaitQueue};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use kcore::errno::Errno;

const EPOLL_CLOEXEC: u32 = fs::O_CLOEXEC;
const EPOLL_CTL_ADD: u32 = 1;
const EPOLL_CTL_DEL: u32 = 2;
const EPOLL_CTL_MOD: u32 = 3;
/// struct epoll_event is packed on x86-64: u32 events, u64 data.
const EVENT_SIZE: u64 = 12;
/// Linux's EP_MAX_EVENTS (INT_MAX / sizeof(struct epoll_event)).
const MAX_EVENTS: i64 = i32::MAX as i64 / EVENT_SIZE as i64;

pub fn sys_epoll_create1(flags: u32) -> SysResult {
    if flags & !EPOLL_CLOEXEC != 0 {
        return Err(Errno::EINVAL);
    }
    let f = OpenFile::new(
        Rc::new(EpollFile(Rc::new(RefCell::new(Epoll::default())))),
        fs::O_RDWR,
        None,
    );
    with_current(|p| p.fds.insert(f, flags & EPOLL_CLOEXEC != 0)).map(|fd| fd as u64)
}

/// epoll_create(size): size must be positive, then as epoll_create1(0).
pub fn sys_epoll_create(size: i32) -> SysResult {
    if size <= 0 {
        return Err(Errno::EINVAL);
    }
    sys_epoll_create1(0)
}

fn epoll_of(fd: i64) -> Result<Rc<RefCell<Epoll>>, Errno> {
    let f = with_current(|p| p.fds.get(fd))?;
    f.downcast::<EpollFile>()
        .map(|e| e.0.clone())
        .ok_or(Errno::EINVAL)
}

pub fn sys_epoll_ctl(epfd: i64, op: u32, fd: i64, event: u64) -> SysResult {
    let ep = epoll_of(epfd)?;
    let target: FileRef = with_current(|p| p.fds.get(fd))?;
    if fd == epfd {
        return Err(Errno::EINVAL);
    }
    // Linux: files without a poll method (regular files, directories) cannot be watched.
    if !target.ops.pollable() {
        return Err(Errno::EPERM);
    }
    // Watching an instance that watches this one would make a loop (Linux: ELOOP).
    if let Some(inner) = target.downcast::<EpollFile>() {
        if Rc::ptr_eq(&inner.0, &ep) || watches(&inner.0, &ep) {
            return Err(Errno::ELOOP);
        }
    }
    let (events, data) = if op == EPOLL_CTL_DEL {
        (0, 0)
    } else {
        let b: [u8; EVENT_SIZE as usize] = crate::mm::uaccess::read_val(event)?;
        let mut e = [0u8; 4];
        let mut d = [0u8; 8];
        e.copy_from_slice(&b[..4]);
        d.copy_from_slice(&b[4..12]);
        (u32::from_le_bytes(e), u64::from_le_bytes(d))
    };
    let weak = Rc::downgrade(&target);
    let mut ep = ep.borrow_mut();
    ep.prune();
    let at = ep.find(fd as i32, &weak);
    match op {
        EPOLL_CTL_ADD => {
            if at.is_some() {
                return Err(Errno::EEXIST);
            }
            if events & EPOLLEXCLUSIVE != 0 && events & EPOLLONESHOT != 0 {
                return Err(Errno::EINVAL);
            }
            // An entry lives as long as its file, whatever descriptor it was added by: a user can
            // make them without end but for memory. The list's growth must leave the heap's
            // reserve (Linux's ep_insert: ENOMEM when the entry cannot be allocated).
            let grown = (ep.entries.len() + 1) * 2 * core::mem::size_of::<Entry>();
            if !crate::mm::heap::can_spare(grown) || ep.entries.try_reserve(1).is_err() {
                return Err(Errno::ENOMEM);
            }
            ep.entries.push(Entry {
                fd: fd as i32,
                file: weak,
                events: events & !EPOLLWAKEUP,
                data,
                disarmed: false,
                seen: None,
            });
        }
        EPOLL_CTL_MOD => {
            let i = at.ok_or(Errno::ENOENT)?;
            if events & EPOLLEXCLUSIVE != 0 {
                return Err(Errno::EINVAL);
            }
            let e = &mut ep.entries[i];
            e.events = events & !EPOLLWAKEUP;
            e.data = data;
            e.disarmed = false;
            e.seen = None;
        }
        EPOLL_CTL_DEL => {
            let i = at.ok_or(Errno::ENOENT)?;
            ep.entries.remove(i);
        }
        _ => return Err(Errno::EINVAL),
    }
    Ok(0)
}

/// Whether `outer` watches `target` directly or through instances it watches.
fn watches(outer: &Rc<RefCell<Epoll>>, target: &Rc<RefCell<Epoll>>) -> bool {
    let Ok(o) = outer.try_borrow() else {
        return false;
    };
    o.entries.iter().any(|e| {
        let Some(f) = e.file.upgrade() else {
            return false;
        };
        match f.downcast::<EpollFile>() {
            Some(inner) => Rc::ptr_eq(&inner.0, target) || watches(&inner.0, target),
            None => false,
        }
    })
}

/// One entry's reportable events now (0 if none), adding its file's queue to `queues`; the queue is
/// returned for the edge counts.
fn entry_events(
    file: &FileRef,
    events: u32,
    queues: &mut Vec<WaitQueue>,
    depth: u32,
) -> (u32, Option<WaitQueue>) {
    let before = queues.len();
    let want = (events & 0xffff) as u16;
    let rev = poll_file(file, want, queues, depth) as u32;
    let q = if queues.len() > before {
        queues.last().copied()
    } else {
        None
    };
    (rev & (events | EPOLLERR | EPOLLHUP), q)
}

/// Whether an edge-triggered entry has something new to report, given its queue's counts.
fn new_edge(seen: Option<(u64, u64)>, q: Option<WaitQueue>, rev: u32) -> bool {
    let (Some((i, o)), Some(q)) = (seen, q) else {
        return true;
    };
    (rev & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP) != 0 && q.edges(true) != i)
        || (rev & (EPOLLOUT | EPOLLHUP | EPOLLERR) != 0 && q.edges(false) != o)
}

/// An entry as read before polling its file (the instance is not borrowed while files are polled).
struct Watched {
    file: alloc::rc::Weak<OpenFile>,
    events: u32,
    data: u64,
    disarmed: bool,
    seen: Option<(u64, u64)>,
}

fn snapshot(ep: &Rc<RefCell<Epoll>>) -> Option<Vec<Watched>> {
    let e = ep.try_borrow().ok()?;
    Some(
        e.entries
            .iter()
            .map(|e| Watched {
                file: e.file.clone(),
                events: e.events,
                data: e.data,
                disarmed: e.disarmed,
                seen: e.seen,
            })
            .collect(),
    )
}

/// Whether some entry of `ep` is ready (poll on an epoll descriptor), adding their queues.
pub fn any_ready(ep: &Rc<RefCell<Epoll>>, queues: &mut Vec<WaitQueue>, depth: u32) -> bool {
    let Some(list) = snapshot(ep) else {
        return false;
    };
    let mut ready = false;
    for w in list {
        let Some(f) = w.file.upgrade() else { continue };
        if w.disarmed {
            continue;
        }
        let (rev, q) = entry_events(&f, w.events, queues, depth);
        if rev != 0 && (w.events & EPOLLET == 0 || new_edge(w.seen, q, rev)) {
            ready = true;
        }
    }
    ready
}

/// Collects up to `max` ready entries as (events, data), updating one-shot and edge state.
fn collect(ep: &Rc<RefCell<Epoll>>, max: usize, queues: &mut Vec<WaitQueue>) -> Vec<(u32, u64)> {
    ep.borrow_mut().prune();
    let list = snapshot(ep).unwrap_or_default();
    let mut out = Vec::new();
    for (i, w) in list.into_iter().enumerate() {
        if out.len() >= max {
            break;
        }
        let Some(f) = w.file.upgrade() else { continue };
        if w.disarmed {
            continue;
        }
        let (rev, q) = entry_events(&f, w.events, queues, 1);
        if rev == 0 || (w.events & EPOLLET != 0 && !new_edge(w.seen, q, rev)) {
            continue;
        }
        out.push((rev, w.data));
        let mut e = ep.borrow_mut();
        if let Some(en) = e.entries.get_mut(i) {
            if w.events & EPOLLONESHOT != 0 {
                en.disarmed = true;
            }
            if w.events & EPOLLET != 0 {
                en.seen = q.map(|q| (q.edges(true), q.edges(false)));
            }
        }
    }
    out
}

pub fn sys_epoll_wait(epfd: i64, events: u64, max: i64, timeout_ms: i64) -> SysResult {
    if max <= 0 || max > MAX_EVENTS {
        return Err(Errno::EINVAL);
    }
    check_user(events, max as u64 * EVENT_SIZE, true)?;
    let ep = epoll_of(epfd)?;
    let deadline = (timeout_ms >= 0)
        .then(|| crate::time::now_ns().saturating_add(timeout_ms as u64 * 1_000_000));
    loop {
        let mut queues = Vec::new();
        let got = collect(&ep, max as usize, &mut queues);
        if !got.is_empty() {
            let mut buf = Vec::with_capacity(got.len() * EVENT_SIZE as usize);
            for (ev, data) in &got {
                buf.extend_from_slice(&ev.to_le_bytes());
                buf.extend_from_slice(&data.to_le_bytes());
            }
            copy_to_user(events, &buf)?;
            return Ok(got.len() as u64);
        }
        if deadline.is_some_and(|d| crate::time::now_ns() >= d) {
            return Ok(0);
        }
        // A signal: EINTR when a handler runs, else the call restarts (Linux: ERESTARTNOHAND).
        waitqueue::wait_any(&queues, deadline).map_err(|_| Errno::ERESTARTNOHAND)?;
    }
}

pub fn sys_epoll_pwait(
    epfd: i64,
    events: u64,
    max: i64,
    timeout_ms: i64,
    sigmask: u64,
    sigsetsize: u64,
) -> SysResult {
    super::poll::with_sigmask(sigmask, sigsetsize, || {
        sys_epoll_wait(epfd, events, max, timeout_ms)
    })
}

/// An epoll instance as an open file: readable while one of its entries is ready (one level of
/// nesting); no read or write (EINVAL); an anonymous inode, as Linux's anon_inode:[eventpoll].
impl FileOps for EpollFile {
    fn read(&self, _file: &OpenFile, _buf: &mut dyn ReadBuf) -> Result<usize, Errno> {
        Err(Errno::EINVAL)
    }
    fn write(&self, _file: &OpenFile, _buf: &mut dyn WriteBuf) -> Result<usize, Errno> {
        Err(Errno::EINVAL)
    }
    fn seekable(&self) -> bool {
        false
    }
    fn pollable(&self) -> bool {
        true
    }
    fn poll(&self, _file: &OpenFile, queues: &mut Vec<WaitQueue>, depth: u32) -> u16 {
        if depth == 0 && any_ready(&self.0, queues, depth + 1) {
            fs::file::POLLIN | fs::file::POLLRDNORM
        } else {
            0
        }
    }
    fn stat(&self) -> Stat {
        Stat {
            dev: 13,
            ino: 1,
            nlink: 1,
            mode: 0o600,
            blksize: 4096,
            ..Stat::default()
        }
    }
    fn as_any(&self) -> &dyn core::any::Any {
        self
    }
}
