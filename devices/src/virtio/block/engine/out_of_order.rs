//! The out-of-order engines' common part: requests in flight, each split into runs (one per host-contiguous
//! piece of the file), handed to a [`Submitter`] (io_uring in [`super::uring`], the thread pool in
//! [`super::pool`]) and answered once all their runs are back, in any order.
//!
//! A run is named by `(slot << 32) | run index`; its result comes back as a byte count or a negative errno.
//! Requests that are not plain reads and writes of host file data (flush, discard, write-zeroes, GET_ID,
//! qcow2 requests that need imago) are served synchronously, but only after every request in flight has
//! completed ([`OutOfOrder::drain`]): so a flush covers every write submitted before it, and nothing
//! changes a qcow2 mapping while a request in flight still uses it.

use std::io;
use std::os::fd::RawFd;

use vm_memory::{Bytes, GuestAddress, VolatileSlice};
use vmm_sys_util::eventfd::EventFd;

use super::super::request::{slices, Request, RequestType, SECTOR_SIZE};
use super::{Completion, Engine, IoEngine, Submit, MAX_RUNS};
use crate::disk::raw::transfer_iovecs;
use crate::disk::DiskFile;
use crate::GuestMemoryMmap;
use virtio_bindings::virtio_blk::{VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK};

/// Who carries out the runs of an out-of-order engine.
pub trait Submitter: Send {
    /// Which engine this makes.
    const KIND: IoEngine;
    /// Queues a run (it starts with the next [`Submitter::submit`]), or carries it out at once and keeps
    /// its result for the next [`Submitter::reap`]. `idle`: no other request is in flight.
    fn push(&mut self, job: Job, idle: bool);
    /// Starts the queued runs: one `io_uring_enter`, or one hand-over to the worker threads.
    fn submit(&mut self) -> io::Result<()>;
    /// Appends the results that arrived.
    fn reap(&mut self, results: &mut Vec<(u64, i32)>);
    /// Blocks until at least one result is there (the caller has runs in flight).
    fn wait(&mut self) -> io::Result<()>;
    /// Forgets queued runs after a failed [`Submitter::submit`] (their requests were failed).
    fn abandon(&mut self);
    /// The EventFd signalled when results arrive.
    fn completion_evt(&self) -> &EventFd;
    /// Runs done inline on the VMM thread and runs handed to workers (the thread pool only).
    fn pool_counts(&self) -> Option<(u64, u64)> {
        None
    }
}

/// One run of a request in flight: `len` bytes at file offset `offset`, to or from `iovecs[iov]`.
#[derive(Debug)]
struct Run {
    offset: u64,
    len: u64,
    iov: std::ops::Range<usize>,
}

/// A request in flight.
struct InFlight {
    head: u16,
    status: GuestAddress,
    request_type: RequestType,
    data_len: u64,
    write: bool,
    fd: RawFd,
    runs: Vec<Run>,
    /// The guest buffers, split at run boundaries. They point into guest memory, which stays mapped while
    /// the device is active; the device drains the engine before it lets go of that memory.
    iovecs: Vec<libc::iovec>,
    /// Runs not yet completed.
    left: usize,
    failed: bool,
}

// SAFETY: the raw pointers in `iovecs` point into guest memory, which is shared by every thread of the
// VMM and outlives the request (see `InFlight::iovecs`); the struct only moves with the device that owns it.
unsafe impl Send for InFlight {}

/// One run of a request, as a submitter carries it out: `preadv`/`pwritev` of `iov[..iov_count]` at
/// `offset` of `fd`.
pub struct Job {
    pub(super) user_data: u64,
    pub(super) fd: RawFd,
    pub(super) offset: u64,
    pub(super) iov: *const libc::iovec,
    pub(super) iov_count: usize,
    pub(super) write: bool,
    /// On an `O_DIRECT` descriptor.
    pub(super) direct: bool,
    /// The run's length in bytes.
    pub(super) len: u64,
}

// SAFETY: `iov` points into the iovec array of a request in `OutOfOrder::slots`, whose buffers lie in guest
// memory the device validated; both stay alive and unmoved (a `Vec`'s heap buffer) until the run's result
// has been taken back by `OutOfOrder::complete`, and the engine is drained before guest memory or the disk go.
unsafe impl Send for Job {}

impl Job {
    /// Does the transfer with `preadv2`/`pwritev2` flags `flags` (once: a short one is finished by
    /// `finish_run`, as with io_uring); returns the byte count or a negative errno.
    pub(super) fn run(&self, flags: libc::c_int) -> i32 {
        let Ok(offset) = libc::off_t::try_from(self.offset) else {
            return -libc::EINVAL;
        };
        let count = libc::c_int::try_from(self.iov_count).unwrap_or(libc::c_int::MAX);
        loop {
            // SAFETY: `iov[..iov_count]` describes guest buffers that stay mapped while the run is in flight
            // (see `Job`'s Send impl); the kernel checks the descriptor.
            let n = unsafe {
                if self.write {
                    libc::pwritev2(self.fd, self.iov, count, offset, flags)
                } else {
                    libc::preadv2(self.fd, self.iov, count, offset, flags)
                }
            };
            if n >= 0 {
                // A request's data is below 4 GiB (SEG_MAX segments of SIZE_MAX); a run fits in an i32.
                return i32::try_from(n).unwrap_or(i32::MAX);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return -err.raw_os_error().unwrap_or(libc::EIO);
            }
        }
    }
}

/// The requests in flight and the submitter that carries out their runs.
pub struct OutOfOrder<S> {
    submitter: S,
    /// Most runs in flight at once.
    capacity: usize,
    slots: Vec<Option<InFlight>>,
    free_slots: Vec<usize>,
    /// Runs submitted and not yet completed (bounded by `capacity`).
    runs_in_flight: usize,
    /// Which descriptors are `O_DIRECT` (asked once per descriptor).
    direct_fds: Vec<(RawFd, bool)>,
    /// Scratch: results taken from the submitter, and the host runs of the request being started.
    results: Vec<(u64, i32)>,
    host_runs: Vec<(u64, u64)>,
}

impl<S: Submitter> std::fmt::Debug for OutOfOrder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutOfOrder")
            .field("engine", &S::KIND)
            .field("in_flight", &self.in_flight())
            .field("runs_in_flight", &self.runs_in_flight)
            .finish()
    }
}

impl<S: Submitter> OutOfOrder<S> {
    /// An engine with room for `capacity` runs in flight.
    pub(super) fn new(submitter: S, capacity: usize) -> Self {
        Self {
            submitter,
            capacity,
            slots: Vec::new(),
            free_slots: Vec::new(),
            runs_in_flight: 0,
            direct_fds: Vec::new(),
            results: Vec::new(),
            host_runs: Vec::new(),
        }
    }

    /// Whether `fd` was opened with `O_DIRECT` (its transfers wait for the disk, never inline).
    fn is_direct(&mut self, fd: RawFd) -> bool {
        if let Some(&(_, d)) = self.direct_fds.iter().find(|(f, _)| *f == fd) {
            return d;
        }
        // SAFETY: F_GETFL only reads the descriptor's flags; a bad descriptor gives -1.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        let d = flags != -1 && flags & libc::O_DIRECT != 0;
        self.direct_fds.push((fd, d));
        d
    }

    /// Starts `req` when it is a read or write whose data lies plainly in a host file in at most
    /// [`MAX_RUNS`] runs; `false` when it must be served synchronously.
    fn start(
        &mut self,
        mem: &GuestMemoryMmap,
        disk: &mut dyn DiskFile,
        req: &Request,
        head: u16,
    ) -> bool {
        let write = match req.request_type {
            RequestType::In => false,
            RequestType::Out => true,
            _ => return false,
        };
        if req.data_len == 0 {
            return false;
        }
        let Ok(bufs) = slices(mem, &req.data) else {
            return false;
        };
        let mut runs = std::mem::take(&mut self.host_runs);
        runs.clear();
        // An error here (a damaged qcow2 table) is reported by the synchronous path.
        let started = match disk.plain_runs(req.sector * SECTOR_SIZE, &bufs, write, &mut runs) {
            Ok(Some(fd)) if !runs.is_empty() && runs.len() <= MAX_RUNS => {
                self.push(
                    head,
                    req.status,
                    req.request_type,
                    req.data_len,
                    fd,
                    &runs,
                    &bufs,
                );
                true
            }
            _ => false,
        };
        self.host_runs = runs;
        started
    }

    /// Queues a read or write of `bufs` against the host runs `runs` of `fd` (the runs' lengths add up to
    /// the buffers', which lie in guest memory the caller validated). The caller checked
    /// [`Engine::has_room`] and that `runs` has at most [`MAX_RUNS`] entries.
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        head: u16,
        status: GuestAddress,
        request_type: RequestType,
        data_len: u64,
        fd: RawFd,
        runs: &[(u64, u64)],
        bufs: &[VolatileSlice<'_>],
    ) {
        debug_assert!(runs.len() <= MAX_RUNS && !runs.is_empty());
        let write = request_type == RequestType::Out;
        let mut req = InFlight {
            head,
            status,
            request_type,
            data_len,
            write,
            fd,
            runs: Vec::with_capacity(runs.len()),
            iovecs: Vec::with_capacity(bufs.len() + runs.len()),
            left: runs.len(),
            failed: false,
        };
        split_at_runs(bufs, runs, &mut req.iovecs, &mut req.runs);
        let idle = self.in_flight() == 0;
        let direct = self.is_direct(fd);
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        for (i, run) in req.runs.iter().enumerate() {
            let iov = &req.iovecs[run.iov.clone()];
            self.submitter.push(
                Job {
                    user_data: ((slot as u64) << 32) | i as u64,
                    fd,
                    offset: run.offset,
                    iov: iov.as_ptr(),
                    iov_count: iov.len(),
                    write,
                    direct,
                    len: run.len,
                },
                idle,
            );
        }
        self.runs_in_flight += req.runs.len();
        self.slots[slot] = Some(req);
    }

    /// Takes the completions that arrived, writes the status of every request that is now complete into
    /// guest memory and appends it to `done`.
    fn complete_runs(&mut self, mem: &GuestMemoryMmap, done: &mut Vec<Completion>) {
        let mut results = std::mem::take(&mut self.results);
        self.submitter.reap(&mut results);
        for &(data, res) in &results {
            let (slot, run) = ((data >> 32) as usize, (data & 0xffff_ffff) as usize);
            let Some(req) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
                log::error!("virtio-blk: completion for unknown request slot {slot}");
                continue;
            };
            self.runs_in_flight -= 1;
            if let Err(e) = finish_run(req, run, res) {
                log::debug!("virtio-blk: {:?} failed: {e}", req.request_type);
                req.failed = true;
            }
            req.left -= 1;
            if req.left > 0 {
                continue;
            }
            let req = self.slots[slot].take().expect("request present");
            self.free_slots.push(slot);
            let status = if req.failed {
                VIRTIO_BLK_S_IOERR
            } else {
                VIRTIO_BLK_S_OK
            } as u8;
            if mem.write_obj(status, req.status).is_err() {
                log::warn!("virtio-blk: cannot write request status");
            }
            let data = if req.write || req.failed {
                0
            } else {
                req.data_len
            };
            done.push(Completion {
                head: req.head,
                request_type: req.request_type,
                data_len: req.data_len,
                status,
                used_len: u32::try_from(data + 1).unwrap_or(u32::MAX),
            });
        }
        results.clear();
        self.results = results;
    }

    /// Last resort when the submitter itself fails: reports every request in flight as failed. Only
    /// reached if `io_uring_enter` fails for a reason other than a signal, which it does not for a set-up
    /// ring.
    fn fail_all(&mut self, mem: &GuestMemoryMmap, done: &mut Vec<Completion>) {
        self.complete_runs(mem, done);
        for slot in 0..self.slots.len() {
            if let Some(req) = self.slots[slot].take() {
                self.free_slots.push(slot);
                let status = VIRTIO_BLK_S_IOERR as u8;
                let _ = mem.write_obj(status, req.status);
                done.push(Completion {
                    head: req.head,
                    request_type: req.request_type,
                    data_len: req.data_len,
                    status,
                    used_len: 1,
                });
            }
        }
        self.runs_in_flight = 0;
        self.submitter.abandon();
    }
}

impl<S: Submitter> Engine for OutOfOrder<S> {
    fn kind(&self) -> IoEngine {
        S::KIND
    }

    fn has_room(&self) -> bool {
        // With io_uring the completion queue (twice the submission queue) then never overflows, and a push
        // never finds the submission queue full.
        self.runs_in_flight + MAX_RUNS <= self.capacity
    }

    fn submit(
        &mut self,
        mem: &GuestMemoryMmap,
        disk: &mut dyn DiskFile,
        id: &[u8; VIRTIO_BLK_ID_BYTES as usize],
        req: &Request,
        head: u16,
        done: &mut Vec<Completion>,
    ) -> Submit {
        if self.start(mem, disk, req, head) {
            return Submit::Submitted;
        }
        // Served synchronously: only after everything in flight has completed.
        self.drain(mem, done);
        Submit::Done(super::sync::run(mem, disk, id, req, head))
    }

    fn kick(&mut self, mem: &GuestMemoryMmap, done: &mut Vec<Completion>) {
        if let Err(e) = self.submitter.submit() {
            log::error!("virtio-blk: io_uring submit failed: {e}");
            self.fail_all(mem, done);
        }
    }

    fn complete(&mut self, mem: &GuestMemoryMmap, done: &mut Vec<Completion>) {
        self.complete_runs(mem, done);
    }

    fn drain(&mut self, mem: &GuestMemoryMmap, done: &mut Vec<Completion>) {
        // Runs done inline are complete already; waiting on the pool for them would never end.
        self.complete_runs(mem, done);
        while self.in_flight() > 0 {
            if let Err(e) = self.submitter.submit() {
                // Entries the kernel refused as a whole (not per request): fail the requests they carry.
                log::error!("virtio-blk: io_uring submit failed: {e}");
                self.fail_all(mem, done);
                return;
            }
            if let Err(e) = self.submitter.wait() {
                log::error!("virtio-blk: waiting for completions failed: {e}");
                self.fail_all(mem, done);
                return;
            }
            self.complete_runs(mem, done);
        }
    }

    fn completion_evt(&self) -> Option<&EventFd> {
        Some(self.submitter.completion_evt())
    }

    fn in_flight(&self) -> usize {
        self.slots.len() - self.free_slots.len()
    }

    fn pool_counts(&self) -> Option<(u64, u64)> {
        self.submitter.pool_counts()
    }
}

/// Checks one run's result; a short transfer is finished synchronously.
fn finish_run(req: &mut InFlight, run: usize, res: i32) -> io::Result<()> {
    let Some(r) = req.runs.get(run) else {
        return Err(io::Error::other("completion for an unknown run"));
    };
    if res < 0 {
        return Err(io::Error::from_raw_os_error(-res));
    }
    let done = res as u64;
    if done >= r.len {
        return Ok(());
    }
    // Rare (a signal, or the file ends early): do the rest here, on this thread.
    let mut rest: Vec<libc::iovec> = req.iovecs[r.iov.clone()].to_vec();
    let mut skip = done as usize;
    while skip > 0 {
        let first = &mut rest[0];
        if skip >= first.iov_len {
            skip -= first.iov_len;
            rest.remove(0);
        } else {
            // SAFETY: `skip` < iov_len, so the pointer stays inside the same buffer.
            first.iov_base = unsafe { (first.iov_base as *mut u8).add(skip) }.cast();
            first.iov_len -= skip;
            skip = 0;
        }
    }
    // SAFETY: the descriptor is the disk's, which outlives every request in flight (the device drains the
    // engine before dropping the disk); `File::from_raw_fd` would take ownership, so borrow it instead.
    let file = std::mem::ManuallyDrop::new(unsafe {
        <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(req.fd)
    });
    transfer_iovecs(&file, r.offset + done, &mut rest, req.write)
}

/// Splits `bufs` (in order) across the host runs `runs` (whose lengths add up to theirs): appends to
/// `iovecs` the pieces of the buffers, cut where a run ends, and one [`Run`] per host run naming its
/// pieces.
fn split_at_runs(
    bufs: &[VolatileSlice<'_>],
    runs: &[(u64, u64)],
    iovecs: &mut Vec<libc::iovec>,
    out: &mut Vec<Run>,
) {
    let mut pieces = bufs
        .iter()
        .filter(|b| !b.is_empty())
        .map(|b| (b.ptr_guard_mut().as_ptr(), b.len()));
    let mut cur: Option<(*mut u8, usize)> = None;
    for &(offset, len) in runs {
        let start = iovecs.len();
        let mut need = len as usize;
        while need > 0 {
            let Some((ptr, n)) = cur.take().or_else(|| pieces.next()) else {
                break; // The caller's lengths disagree; the run comes out short and fails.
            };
            let take = n.min(need);
            iovecs.push(libc::iovec {
                iov_base: ptr.cast(),
                iov_len: take,
            });
            if take < n {
                // SAFETY: `take` < n, so the pointer stays inside the same buffer.
                cur = Some((unsafe { ptr.add(take) }, n - take));
            }
            need -= take;
        }
        out.push(Run {
            offset,
            len,
            iov: start..iovecs.len(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_at_runs_cuts_buffers_where_runs_end() {
        let mut a = [0u8; 3000];
        let mut b = [0u8; 5192];
        let bufs = [
            VolatileSlice::from(&mut a[..]),
            VolatileSlice::from(&mut [][..]),
            VolatileSlice::from(&mut b[..]),
        ];
        let (mut iov, mut runs) = (Vec::new(), Vec::new());
        split_at_runs(&bufs, &[(0, 4096), (65536, 4096)], &mut iov, &mut runs);
        let lens: Vec<usize> = iov.iter().map(|v| v.iov_len).collect();
        assert_eq!(lens, [3000, 1096, 4096]);
        assert_eq!(runs[0].iov, 0..2);
        assert_eq!(runs[1].iov, 2..3);
        assert_eq!(runs[1].offset, 65536);
        assert_eq!(iov[2].iov_base as usize, b.as_ptr() as usize + 1096);
    }
}
