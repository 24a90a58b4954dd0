//! A socket as an open file: read/write are recv/send, poll is its readiness. The socket calls find
//! the socket behind a descriptor by downcasting ([`socket_of`]); the VFS never names sockets.
#![deny(unsafe_code)]

use super::socket::{self, SocketRef};
use crate::fs::file::{add_queue, poll_mask, FileOps, FileRef, OpenFile, ReadBuf, Stat, WriteBuf};
use crate::fs::{O_NONBLOCK, O_RDWR};
use crate::sync::waitqueue::WaitQueue;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::any::Any;
use kcore::errno::Errno;

/// The open-file side of a socket.
pub struct SocketFile(pub SocketRef);

impl FileOps for SocketFile {
    fn read(&self, file: &OpenFile, buf: &mut dyn ReadBuf) -> Result<usize, Errno> {
        // The socket code copies into user memory itself (through the caller's writer); the kernel
        // never reads a socket into a buffer of its own.
        let dst = buf.user_writer().ok_or(Errno::EINVAL)?;
        socket::recv(&self.0, dst, file.nonblocking(), false).map(|(n, _)| n)
    }

    fn write(&self, file: &OpenFile, buf: &mut dyn WriteBuf) -> Result<usize, Errno> {
        let src = buf.user_reader().ok_or(Errno::EINVAL)?;
        // EPIPE raises SIGPIPE in the system call layer (`syscall::file::sys_write`).
        socket::send(&self.0, src, None, file.nonblocking())
    }

    fn seekable(&self) -> bool {
        false
    }

    fn pollable(&self) -> bool {
        true
    }

    fn poll(&self, _file: &OpenFile, queues: &mut Vec<WaitQueue>, _depth: u32) -> u16 {
        if let Some(q) = socket::wait_queue(&self.0) {
            add_queue(queues, q);
        }
        let (r, w, hup, err) = socket::readiness(&self.0);
        poll_mask(r, w, hup, err)
    }

    fn stat(&self) -> Stat {
        Stat {
            dev: 8,
            ino: 1,
            nlink: 1,
            mode: 0o140777,
            blksize: 4096,
            ..Stat::default()
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A new open file description for a socket.
pub fn socket_file(s: SocketRef, nonblock: bool) -> FileRef {
    OpenFile::new(
        Rc::new(SocketFile(s)),
        O_RDWR | if nonblock { O_NONBLOCK } else { 0 },
        None,
    )
}

/// The socket behind an open file and whether the file is non-blocking.
pub fn socket_of(f: &OpenFile) -> Option<(SocketRef, bool)> {
    f.downcast::<SocketFile>()
        .map(|s| (s.0.clone(), f.nonblocking()))
}
