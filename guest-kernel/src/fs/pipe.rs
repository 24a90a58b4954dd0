//! Pipes: a bounded byte ring shared by a read end and a write end (each an open file description,
//! shared across dup and fork). Readers block while it is empty and a writer exists (EOF after the last
//! writer goes); writers block while it is full, and get EPIPE plus SIGPIPE once no reader is left.
//!
//! The ring holds at most [`PIPE_BUF_SIZE`] bytes (Linux's default capacity), taken from the kernel heap
//! at the first write (ENOMEM if the heap cannot spare it), so a write of any size moves at most that
//! much at a time: the rest waits for the reader (or is a partial write: non-blocking, or interrupted by
//! a signal). Data moves between the ring and user memory through the caller's copy functions
//! ([`write_with`], [`read_with`]), which check the user range just before each copy: no bounce buffer,
//! and no user memory held across a sleep. Writes of at most [`PIPE_BUF`] bytes are atomic.
#![deny(unsafe_code)]

use super::file::{add_queue, poll_mask, FileOps, OpenFile, ReadBuf, Stat, WriteBuf};
use crate::sync::waitqueue::{Edge, WaitQueue};
use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::any::Any;
use core::cell::RefCell;
use core::sync::atomic::{AtomicU64, Ordering};
use kcore::errno::Errno;

/// Linux's default pipe capacity.
pub const PIPE_BUF_SIZE: usize = 65536;
/// Writes up to this size are atomic (POSIX PIPE_BUF).
pub const PIPE_BUF: usize = 4096;

/// The buffer both ends share.
pub struct Pipe {
    /// Readers and writers (and pollers) of both ends sleep here.
    wq: WaitQueue,
    /// The ring: allocated at the first write.
    ring: Option<Box<[u8]>>,
    /// Where the oldest byte is, and how many bytes are queued.
    head: usize,
    len: usize,
    readers: usize,
    writers: usize,
    /// Its inode number on Linux's pipefs: each pipe its own (`stat`, `/proc/PID/fd/N` -> `pipe:[ino]`).
    ino: u64,
}

/// The next pipe's inode number.
static NEXT_INO: AtomicU64 = AtomicU64::new(PIPE_INO_BASE);
/// The first pipe inode number (Linux's pipefs numbers its inodes from a shared counter too).
const PIPE_INO_BASE: u64 = 4096;

/// One end of a pipe; dropping it (the last descriptor of its open file description closed) tells the
/// other side.
pub struct PipeEnd {
    pub pipe: Rc<RefCell<Pipe>>,
    pub write: bool,
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        let wq = {
            let mut p = self.pipe.borrow_mut();
            if self.write {
                p.writers -= 1;
            } else {
                p.readers -= 1;
            }
            p.wq
        };
        wq.wake_all();
    }
}

impl Pipe {
    /// The wait queue of this pipe.
    pub fn wait_queue(&self) -> WaitQueue {
        self.wq
    }

    /// How many read ends are open.
    pub fn readers(&self) -> usize {
        self.readers
    }

    /// poll(2) readiness of one end as Linux's pipe_poll: (readable, writable, hang-up, error). The
    /// read end is readable while bytes are queued and hung up once no writer is left (POLLHUP alone
    /// when empty); the write end is writable while a page is free and in error once no reader is left.
    pub fn poll(&self, write: bool) -> (bool, bool, bool, bool) {
        if write {
            (
                false,
                PIPE_BUF_SIZE - self.len >= PIPE_BUF,
                false,
                self.readers == 0,
            )
        } else {
            (self.len > 0, false, self.writers == 0, false)
        }
    }
}

/// A new pipe: (read end, write end).
pub fn new() -> (PipeEnd, PipeEnd) {
    let pipe = Rc::new(RefCell::new(Pipe {
        wq: WaitQueue::new(),
        ring: None,
        head: 0,
        len: 0,
        readers: 1,
        writers: 1,
        ino: NEXT_INO.fetch_add(1, Ordering::Relaxed),
    }));
    (
        PipeEnd {
            pipe: pipe.clone(),
            write: false,
        },
        PipeEnd { pipe, write: true },
    )
}

/// Reads up to `total` queued bytes (at least one), blocking while empty and a writer remains; 0 at
/// EOF. `copy(offset, bytes)` delivers the bytes that go to offset `offset` of the caller's buffer;
/// an error from it ends the read (with what was delivered so far, if anything).
pub fn read_with(
    pipe: &Rc<RefCell<Pipe>>,
    total: usize,
    nonblock: bool,
    mut copy: impl FnMut(usize, &[u8]) -> Result<(), Errno>,
) -> Result<usize, Errno> {
    if total == 0 {
        return Ok(0);
    }
    loop {
        let wq = {
            let mut p = pipe.borrow_mut();
            if p.len > 0 {
                let n = total.min(p.len);
                let (head, wq) = (p.head, p.wq);
                let ring = p.ring.as_deref().unwrap_or(&[]);
                // The queued bytes from `head` on, wrapping once.
                let first = n.min(PIPE_BUF_SIZE - head);
                let mut done = 0;
                let mut res = copy(0, &ring[head..head + first]);
                if res.is_ok() {
                    done = first;
                    if n > first {
                        res = copy(first, &ring[..n - first]);
                        if res.is_ok() {
                            done = n;
                        }
                    }
                }
                p.head = (head + done) % PIPE_BUF_SIZE;
                p.len -= done;
                drop(p);
                if done > 0 {
                    wq.wake(Edge::Out);
                    return Ok(done);
                }
                return res.map(|_| 0);
            }
            if p.writers == 0 {
                return Ok(0);
            }
            p.wq
        };
        if nonblock {
            return Err(Errno::EAGAIN);
        }
        wq.wait().map_err(|_| Errno::ERESTARTSYS)?;
    }
}

/// Writes `total` bytes, blocking while full (or, for a write of at most [`PIPE_BUF`] bytes, while it
/// would not fit whole); EPIPE without readers (the caller sends SIGPIPE); a partial count when non-blocking or
/// interrupted after some bytes went. `copy(offset, dst)` fills `dst` with the bytes at offset
/// `offset` of the caller's data; an error from it ends the write.
pub fn write_with(
    pipe: &Rc<RefCell<Pipe>>,
    total: usize,
    nonblock: bool,
    mut copy: impl FnMut(usize, &mut [u8]) -> Result<(), Errno>,
) -> Result<usize, Errno> {
    let partial = |done: usize, e: Errno| if done > 0 { Ok(done) } else { Err(e) };
    let mut done = 0;
    loop {
        let wq = {
            let mut p = pipe.borrow_mut();
            if p.readers == 0 {
                return partial(done, Errno::EPIPE);
            }
            if p.ring.is_none() && total > 0 {
                match crate::mm::heap::try_zeroed_bytes(PIPE_BUF_SIZE) {
                    Some(r) => p.ring = Some(r),
                    None => return partial(done, Errno::ENOMEM),
                }
            }
            let room = PIPE_BUF_SIZE - p.len;
            let left = total - done;
            // Atomic writes: all or (for now) nothing.
            let n = if total <= PIPE_BUF && room < left {
                0
            } else {
                room.min(left)
            };
            let tail = (p.head + p.len) % PIPE_BUF_SIZE;
            let first = n.min(PIPE_BUF_SIZE - tail);
            let mut res = Ok(());
            let mut moved = 0;
            if let Some(ring) = p.ring.as_deref_mut() {
                res = copy(done, &mut ring[tail..tail + first]);
                if res.is_ok() {
                    moved = first;
                    if n > first {
                        res = copy(done + first, &mut ring[..n - first]);
                        if res.is_ok() {
                            moved = n;
                        }
                    }
                }
            }
            p.len += moved;
            done += moved;
            let wq = p.wq;
            drop(p);
            if moved > 0 {
                wq.wake(Edge::In);
            }
            if let Err(e) = res {
                return partial(done, e);
            }
            wq
        };
        if done == total {
            return Ok(done);
        }
        if nonblock {
            return partial(done, Errno::EAGAIN);
        }
        if wq.wait().is_err() {
            return partial(done, Errno::ERESTARTSYS);
        }
    }
}

impl FileOps for PipeEnd {
    fn read(&self, file: &OpenFile, buf: &mut dyn ReadBuf) -> Result<usize, Errno> {
        if self.write {
            return Err(Errno::EBADF);
        }
        read_with(&self.pipe, buf.len(), file.nonblocking(), |at, bytes| {
            buf.put(at, bytes)
        })
    }

    fn write(&self, file: &OpenFile, buf: &mut dyn WriteBuf) -> Result<usize, Errno> {
        if !self.write {
            return Err(Errno::EBADF);
        }
        // Straight from the caller's buffer into the ring (a user range is checked again before each
        // copy: the process may have slept in between). A write cut short because the last reader
        // went is EPIPE, as Linux's pipe_write (the system call layer sends SIGPIPE).
        let len = buf.len();
        let res = write_with(&self.pipe, len, file.nonblocking(), |at, dst| {
            buf.get(at, dst)
        });
        match res {
            Ok(n) if n < len && self.pipe.borrow().readers() == 0 => Err(Errno::EPIPE),
            r => r,
        }
    }

    fn seekable(&self) -> bool {
        false
    }

    fn pollable(&self) -> bool {
        true
    }

    /// FIONREAD (either end, as Linux's pipe_ioctl): the bytes queued.
    fn ioctl(&self, _file: &OpenFile, cmd: u32, arg: u64) -> Result<u64, Errno> {
        const FIONREAD: u32 = 0x541b;
        if cmd != FIONREAD {
            return Err(Errno::ENOTTY);
        }
        let n = self.pipe.borrow().len as u32;
        crate::mm::uaccess::copy_to_user(arg, &n.to_le_bytes()).map(|_| 0)
    }

    fn poll(&self, _file: &OpenFile, queues: &mut Vec<WaitQueue>, _depth: u32) -> u16 {
        let p = self.pipe.borrow();
        add_queue(queues, p.wait_queue());
        let (r, w, hup, err) = p.poll(self.write);
        poll_mask(r, w, hup, err)
    }

    fn stat(&self) -> Stat {
        Stat {
            dev: 12,
            ino: self.pipe.borrow().ino,
            nlink: 1,
            mode: 0o010600,
            blksize: 4096,
            ..Stat::default()
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
