//! Pipes: a bounded byte buffer shared by a read end and a write end (each an open file description,
//! shared across dup and fork). Readers block while it is empty and a writer exists (EOF after the last
//! writer goes); writers block while it is full, and get EPIPE plus SIGPIPE once no reader is left.
#![deny(unsafe_code)]

use crate::proc::{sched, signal, Chan};
use alloc::collections::VecDeque;
use alloc::rc::Rc;
use core::cell::RefCell;
use core::sync::atomic::{AtomicU64, Ordering};
use kcore::errno::Errno;

/// Linux's default pipe capacity.
pub const PIPE_BUF_SIZE: usize = 65536;

/// The buffer both ends share.
pub struct Pipe {
    id: u64,
    data: VecDeque<u8>,
    readers: usize,
    writers: usize,
}

/// One end of a pipe; dropping it (the last descriptor of its open file description closed) tells the
/// other side.
pub struct PipeEnd {
    pub pipe: Rc<RefCell<Pipe>>,
    pub write: bool,
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        let id = {
            let mut p = self.pipe.borrow_mut();
            if self.write {
                p.writers -= 1;
            } else {
                p.readers -= 1;
            }
            p.id
        };
        sched::wake(Chan::Pipe(id));
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Pipe {
    /// The wait channel of this pipe.
    pub fn chan(&self) -> Chan {
        Chan::Pipe(self.id)
    }

    /// poll(2) readiness of one end: (readable or EOF, writable, hang-up / no readers).
    pub fn poll(&self, write: bool) -> (bool, bool, bool) {
        if write {
            (
                false,
                self.readers > 0 && self.data.len() < PIPE_BUF_SIZE,
                self.readers == 0,
            )
        } else {
            (
                !self.data.is_empty() || self.writers == 0,
                false,
                self.writers == 0,
            )
        }
    }
}

/// A new pipe: (read end, write end).
pub fn new() -> (PipeEnd, PipeEnd) {
    let id = NEXT_ID.load(Ordering::Relaxed);
    NEXT_ID.store(id + 1, Ordering::Relaxed);
    let pipe = Rc::new(RefCell::new(Pipe {
        id,
        data: VecDeque::new(),
        readers: 1,
        writers: 1,
    }));
    (
        PipeEnd {
            pipe: pipe.clone(),
            write: false,
        },
        PipeEnd { pipe, write: true },
    )
}

/// Reads what is buffered (at least one byte), blocking while empty and a writer remains; 0 at EOF.
pub fn read(pipe: &Rc<RefCell<Pipe>>, buf: &mut [u8], nonblock: bool) -> Result<usize, Errno> {
    if buf.is_empty() {
        return Ok(0);
    }
    loop {
        let id = {
            let mut p = pipe.borrow_mut();
            if !p.data.is_empty() {
                let n = buf.len().min(p.data.len());
                for (i, b) in p.data.drain(..n).enumerate() {
                    buf[i] = b;
                }
                let id = p.id;
                drop(p);
                sched::wake(Chan::Pipe(id));
                return Ok(n);
            }
            if p.writers == 0 {
                return Ok(0);
            }
            p.id
        };
        if nonblock {
            return Err(Errno::EAGAIN);
        }
        if signal::pending_for_current() {
            return Err(Errno::ERESTARTSYS);
        }
        sched::block(Chan::Pipe(id));
    }
}

/// Writes all of `buf`, blocking while full; EPIPE (and SIGPIPE) without readers.
pub fn write(pipe: &Rc<RefCell<Pipe>>, buf: &[u8], nonblock: bool) -> Result<usize, Errno> {
    let mut done = 0;
    loop {
        let id = {
            let mut p = pipe.borrow_mut();
            if p.readers == 0 {
                drop(p);
                signal::send_kernel(crate::proc::current_pid(), signal::SIGPIPE);
                return if done > 0 {
                    Ok(done)
                } else {
                    Err(Errno::EPIPE)
                };
            }
            let room = PIPE_BUF_SIZE - p.data.len();
            let n = room.min(buf.len() - done);
            p.data.extend(&buf[done..done + n]);
            done += n;
            p.id
        };
        sched::wake(Chan::Pipe(id));
        if done == buf.len() {
            return Ok(done);
        }
        if nonblock {
            return if done > 0 {
                Ok(done)
            } else {
                Err(Errno::EAGAIN)
            };
        }
        if signal::pending_for_current() {
            return if done > 0 {
                Ok(done)
            } else {
                Err(Errno::ERESTARTSYS)
            };
        }
        sched::block(Chan::Pipe(id));
    }
}
