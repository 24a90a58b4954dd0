//! The io_uring engine ([`IoEngine::Async`], Firecracker's `io_engine: Async`): every run becomes an
//! `IORING_OP_READV`/`WRITEV` entry, all the runs of a notify batch are submitted with one `io_uring_enter`,
//! and completions signal an EventFd registered with the ring. [`engine`] fails where io_uring is
//! unavailable (old kernel, seccomp, `kernel.io_uring_disabled`); the device then falls back to the
//! synchronous engine.

use std::io;
use std::os::fd::AsRawFd;

use io_uring::{opcode, types, IoUring, Probe};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::out_of_order::{Job, OutOfOrder, Submitter};
use super::IoEngine;

/// The io_uring submitter; `unsubmitted` counts the entries pushed since the last `io_uring_enter`.
pub struct Uring {
    ring: Box<IoUring>,
    unsubmitted: usize,
    completion_evt: EventFd,
}

/// An out-of-order engine over an io_uring of `entries` submission entries (a power of two), with room
/// for as many runs in flight. Fails where io_uring, or its READV/WRITEV operations, are unavailable.
pub fn engine(entries: u32) -> io::Result<OutOfOrder<Uring>> {
    // COOP_TASKRUN (Linux 5.19): completions are posted when this thread next enters the kernel rather
    // than by interrupting it; without it the ring still works.
    let ring = match IoUring::builder().setup_coop_taskrun().build(entries) {
        Ok(r) => r,
        Err(_) => IoUring::new(entries)?,
    };
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    if !probe.is_supported(opcode::Readv::CODE) || !probe.is_supported(opcode::Writev::CODE) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring without READV/WRITEV",
        ));
    }
    let completion_evt = EventFd::new(EFD_NONBLOCK)?;
    ring.submitter()
        .register_eventfd(completion_evt.as_raw_fd())?;
    let capacity = ring.params().sq_entries() as usize;
    Ok(OutOfOrder::new(
        Uring {
            ring: Box::new(ring),
            unsubmitted: 0,
            completion_evt,
        },
        capacity,
    ))
}

impl Submitter for Uring {
    const KIND: IoEngine = IoEngine::Async;

    fn push(&mut self, job: Job, _idle: bool) {
        let count = job.iov_count as u32;
        let entry = if job.write {
            opcode::Writev::new(types::Fd(job.fd), job.iov, count)
                .offset(job.offset)
                .build()
        } else {
            opcode::Readv::new(types::Fd(job.fd), job.iov, count)
                .offset(job.offset)
                .build()
        }
        .user_data(job.user_data);
        // SAFETY: the entry's iovec array and the buffers it describes live until the run completes: the
        // array is owned by the request in `OutOfOrder::slots`, which is removed only after its last
        // completion (and the engine is drained before the device drops guest memory or the disk). The
        // queue has room: `has_room` bounds the runs in flight by its capacity.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        assert!(pushed.is_ok(), "submission queue full despite has_room");
        self.unsubmitted += 1;
    }

    fn submit(&mut self) -> io::Result<()> {
        while self.unsubmitted > 0 {
            match self.ring.submit() {
                Ok(n) => self.unsubmitted -= n.min(self.unsubmitted),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn reap(&mut self, results: &mut Vec<(u64, i32)>) {
        results.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
    }

    fn wait(&mut self) -> io::Result<()> {
        match self.ring.submitter().submit_and_wait(1) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn abandon(&mut self) {
        self.unsubmitted = 0;
    }

    fn completion_evt(&self) -> &EventFd {
        &self.completion_evt
    }
}
