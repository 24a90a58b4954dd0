//! The out-of-order I/O engines of virtio-blk: reads and writes through io_uring or a thread pool.
//!
//! With [`IoEngine::Async`] (Firecracker's `io_engine: Async`) or [`IoEngine::Threads`] (QEMU's
//! `aio=threads`), [`Block`](super::Block) hands every read and write whose data lies plainly in a host
//! file (`DiskFile::plain_runs`: all of a raw image, the allocated clusters of a qcow2 image) to
//! [`AsyncIo`]: one `preadv`/`pwritev` per host run. The two engines differ only in who carries the runs
//! out (the `Submitter`): io_uring (`IORING_OP_READV`/`WRITEV`, all requests of a notify batch submitted
//! with one `io_uring_enter`), or a pool of worker threads started on demand (up to `Block`'s
//! `POOL_WORKERS`) doing blocking calls. The pool engine does a run inline instead when that is cheaper
//! than two thread hand-overs: when its request is alone in flight, or when it is a small page-cache
//! transfer that `RWF_NOWAIT` can finish without blocking (io_uring makes the same attempt itself). Of
//! the workers, at most two per CPU copy to or from the page cache at once (see `PoolState`); `O_DIRECT`
//! runs may use them all. Completions come back in any order; they signal an
//! EventFd that the VMM thread polls (event token `Block::COMPLETION`), and a request is answered (status
//! byte, used ring) once all its runs are done. Everything else (flush, discard, write-zeroes, GET_ID,
//! qcow2 requests that need imago) runs synchronously as with [`IoEngine::Sync`], but only after every
//! request in flight has completed ([`AsyncIo::drain`]): so a flush covers every write submitted before
//! it, and nothing changes a qcow2 mapping while a request in flight still uses it.
//!
//! The engine never takes more than it can hold: the device pops a chain from the virtqueue only when
//! [`AsyncIo::has_room`] says a request of [`MAX_RUNS`] runs still fits; otherwise the rest waits on the
//! avail ring until completions make room. Workers only touch the guest buffers the device validated
//! (`request::slices`), and the device drains the engine before it lets go of guest memory (reset, drop);
//! dropping the pool joins its workers. A short transfer (end of file, a signal) is finished
//! synchronously. [`AsyncIo::new`] fails where io_uring is unavailable (old kernel, seccomp,
//! `kernel.io_uring_disabled`) and the device falls back to the synchronous engine; the thread pool runs
//! the jobs itself on the VMM thread if no worker thread can be started.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use io_uring::{opcode, types, IoUring, Probe};
use vm_memory::{Bytes, GuestAddress, VolatileSlice};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::request::RequestType;
use crate::disk::raw::transfer_iovecs;
use crate::GuestMemoryMmap;
use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK};

/// Which engine moves a block device's data. Also the drive configuration's `io_engine` field
/// (Firecracker's `Sync` and `Async`; `Threads` is ours and the default everywhere: as fast as `Sync` at
/// queue depth 1, and faster with many requests in flight, README "Measured").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum IoEngine {
    /// One request at a time on the VMM thread (`preadv`/`pwritev`; Firecracker's default).
    Sync,
    /// io_uring: all requests of a batch in flight at once, completed out of order (falls back to `Sync`,
    /// with a warning, where io_uring is unavailable).
    Async,
    /// A pool of worker threads doing blocking `preadv`/`pwritev` (QEMU's `aio=threads`, its default),
    /// completed out of order like `Async`, with cached and lone requests done inline.
    #[default]
    Threads,
}

/// Requests whose data lies in more host runs than this are served synchronously.
pub const MAX_RUNS: usize = 8;

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

/// A request the engine has finished: what the device must put on the used ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The chain's head descriptor.
    pub head: u16,
    /// What kind of request it was.
    pub request_type: RequestType,
    /// Its data length.
    pub data_len: u64,
    /// The status written to the guest.
    pub status: u8,
    /// Bytes written into device-writable buffers (data and status).
    pub used_len: u32,
}

/// Where the runs of requests in flight are carried out.
enum Submitter {
    /// io_uring; `unsubmitted` counts the submission queue entries pushed since the last `io_uring_enter`.
    Uring {
        ring: Box<IoUring>,
        unsubmitted: usize,
    },
    /// A pool of worker threads doing blocking `preadv`/`pwritev` (QEMU's `aio=threads`).
    Pool(ThreadPool),
}

/// The requests in flight and the submitter that carries out their runs. Both submitters share the
/// bookkeeping: a run is named by `(slot << 32) | run index`, its result comes back as a byte count or a
/// negative errno, and a request is answered once all its runs are back.
pub struct AsyncIo {
    submitter: Submitter,
    completion_evt: EventFd,
    /// Most runs in flight at once.
    capacity: usize,
    slots: Vec<Option<InFlight>>,
    free_slots: Vec<usize>,
    /// Runs submitted and not yet completed (bounded by `capacity`).
    runs_in_flight: usize,
    /// Results of runs the pool engine carried out inline on this thread, for the next `complete`.
    inline_results: Vec<(u64, i32)>,
    /// Which descriptors are `O_DIRECT` (asked once per descriptor).
    direct_fds: Vec<(RawFd, bool)>,
    /// Buffered writes with `RWF_NOWAIT` were refused by the file system: do not try again.
    no_nowait_writes: bool,
    /// Runs the pool engine did inline, and runs it handed to its workers.
    inline_runs: u64,
    pooled_runs: u64,
}

/// Runs up to this size are tried inline (without blocking) by the pool engine even while others are in
/// flight: copying 128 KiB from or to the page cache takes a few microseconds, handing it to a worker and
/// back tens of microseconds on a nested host. Larger copies go to the workers, where they run in parallel.
const INLINE_MAX: u64 = 128 << 10;

impl std::fmt::Debug for AsyncIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncIo")
            .field("engine", &self.kind())
            .field("in_flight", &self.in_flight())
            .field("runs_in_flight", &self.runs_in_flight)
            .finish()
    }
}

impl AsyncIo {
    /// An io_uring of `entries` submission entries (a power of two) whose completions signal an EventFd.
    /// Fails where io_uring, or its READV/WRITEV operations, are unavailable.
    pub fn new(entries: u32) -> io::Result<Self> {
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
        Ok(Self::with(
            Submitter::Uring {
                ring: Box::new(ring),
                unsubmitted: 0,
            },
            completion_evt,
            capacity,
        ))
    }

    /// A pool of up to `workers` threads (started as requests need them) with room for `capacity` runs in
    /// flight, whose completions signal an EventFd. Fails only if the EventFd cannot be created.
    pub fn threads(workers: usize, capacity: usize) -> io::Result<Self> {
        let completion_evt = EventFd::new(EFD_NONBLOCK)?;
        let pool = ThreadPool::new(workers.max(1), completion_evt.try_clone()?);
        Ok(Self::with(Submitter::Pool(pool), completion_evt, capacity))
    }

    fn with(submitter: Submitter, completion_evt: EventFd, capacity: usize) -> Self {
        Self {
            submitter,
            completion_evt,
            capacity,
            slots: Vec::new(),
            free_slots: Vec::new(),
            runs_in_flight: 0,
            inline_results: Vec::new(),
            direct_fds: Vec::new(),
            no_nowait_writes: false,
            inline_runs: 0,
            pooled_runs: 0,
        }
    }

    /// Runs the thread pool engine did inline on the VMM thread, and runs it handed to its workers.
    pub fn pool_counts(&self) -> (u64, u64) {
        (self.inline_runs, self.pooled_runs)
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

    /// Which engine this is: [`IoEngine::Async`] (io_uring) or [`IoEngine::Threads`].
    pub fn kind(&self) -> IoEngine {
        match self.submitter {
            Submitter::Uring { .. } => IoEngine::Async,
            Submitter::Pool(_) => IoEngine::Threads,
        }
    }

    /// The EventFd signalled when completions arrive.
    pub fn completion_evt(&self) -> &EventFd {
        &self.completion_evt
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free_slots.len()
    }

    /// Whether a request of up to [`MAX_RUNS`] runs still fits. With io_uring the completion queue (twice
    /// the submission queue) then never overflows, and a push never finds the submission queue full.
    pub fn has_room(&self) -> bool {
        self.runs_in_flight + MAX_RUNS <= self.capacity
    }

    /// Queues a read or write of `bufs` against the host runs `runs` of `fd` (the runs' lengths add up to
    /// the buffers', which lie in guest memory the caller validated). The caller checked
    /// [`AsyncIo::has_room`] and that `runs` has at most [`MAX_RUNS`] entries. The runs start with the next
    /// [`AsyncIo::submit`].
    #[allow(clippy::too_many_arguments)]
    pub fn push(
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
        // With nothing else in flight the guest waits for this request alone: the pool engine does it
        // inline, as the synchronous engine would, rather than pay for two thread hand-overs.
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
            let user_data = ((slot as u64) << 32) | i as u64;
            match &mut self.submitter {
                Submitter::Uring { ring, unsubmitted } => {
                    let (ptr, n) = (iov.as_ptr(), iov.len() as u32);
                    let entry = if write {
                        opcode::Writev::new(types::Fd(fd), ptr, n)
                            .offset(run.offset)
                            .build()
                    } else {
                        opcode::Readv::new(types::Fd(fd), ptr, n)
                            .offset(run.offset)
                            .build()
                    }
                    .user_data(user_data);
                    // SAFETY: the entry's iovec array and the buffers it describes live until the run
                    // completes: the array is owned by the request in `slots`, which is removed only after
                    // its last completion (and the engine is drained before the device drops guest memory or
                    // the disk). The queue has room: `has_room` bounds the runs in flight by its capacity.
                    let pushed = unsafe { ring.submission().push(&entry) };
                    assert!(pushed.is_ok(), "submission queue full despite has_room");
                    *unsubmitted += 1;
                }
                Submitter::Pool(pool) => {
                    let job = Job {
                        user_data,
                        fd,
                        offset: run.offset,
                        iov: iov.as_ptr(),
                        iov_count: iov.len(),
                        write,
                        direct,
                    };
                    if idle {
                        self.inline_results.push((user_data, job.run(0)));
                        self.inline_runs += 1;
                        continue;
                    }
                    // Small page-cache transfers: inline if that does not block (the data is cached,
                    // the write needs no throttling); otherwise, or if partly done, all of it to a worker.
                    if !direct && run.len <= INLINE_MAX && !(write && self.no_nowait_writes) {
                        match job.run(libc::RWF_NOWAIT) {
                            n if n >= 0 && n as u64 == run.len => {
                                self.inline_results.push((user_data, n));
                                self.inline_runs += 1;
                                continue;
                            }
                            n if write && (n == -libc::EOPNOTSUPP || n == -libc::EINVAL) => {
                                self.no_nowait_writes = true;
                            }
                            _ => {}
                        }
                    }
                    pool.queue(job);
                    self.pooled_runs += 1;
                }
            }
        }
        self.runs_in_flight += req.runs.len();
        self.slots[slot] = Some(req);
    }

    /// Starts the queued runs: one `io_uring_enter`, or one hand-over to the worker threads.
    pub fn submit(&mut self) -> io::Result<()> {
        match &mut self.submitter {
            Submitter::Uring { ring, unsubmitted } => {
                while *unsubmitted > 0 {
                    match ring.submit() {
                        Ok(n) => *unsubmitted -= n.min(*unsubmitted),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Submitter::Pool(pool) => pool.start(),
        }
        Ok(())
    }

    /// Takes the completions that arrived, writes the status of every request that is now complete into
    /// guest memory and appends it to `done`.
    pub fn complete(&mut self, mem: &GuestMemoryMmap, done: &mut Vec<Completion>) {
        let results: Vec<(u64, i32)> = match &mut self.submitter {
            Submitter::Uring { ring, .. } => ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect(),
            Submitter::Pool(pool) => {
                let mut r = std::mem::take(&mut self.inline_results);
                r.extend(pool.take_results());
                r
            }
        };
        for (data, res) in results {
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
    }

    /// Waits until every request in flight has completed, appending them to `done`.
    pub fn drain(&mut self, mem: &GuestMemoryMmap, done: &mut Vec<Completion>) {
        // Runs done inline are complete already; waiting on the pool for them would never end.
        self.complete(mem, done);
        while self.in_flight() > 0 {
            if let Err(e) = self.submit() {
                // Entries the kernel refused as a whole (not per request): fail the requests they carry.
                log::error!("virtio-blk: io_uring submit failed: {e}");
                self.fail_all(mem, done);
                return;
            }
            match &mut self.submitter {
                Submitter::Uring { ring, .. } => match ring.submitter().submit_and_wait(1) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::error!("virtio-blk: waiting for io_uring completions failed: {e}");
                        self.fail_all(mem, done);
                        return;
                    }
                },
                Submitter::Pool(pool) => pool.wait_for_result(),
            }
            self.complete(mem, done);
        }
    }

    /// Last resort when the ring itself fails: reports every request in flight as failed. Only reached if
    /// `io_uring_enter` fails for a reason other than a signal, which it does not for a set-up ring.
    fn fail_all(&mut self, mem: &GuestMemoryMmap, done: &mut Vec<Completion>) {
        self.complete(mem, done);
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
        if let Submitter::Uring { unsubmitted, .. } = &mut self.submitter {
            *unsubmitted = 0;
        }
    }
}

/// One run for a worker thread: `preadv`/`pwritev` of `iov[..iov_count]` at `offset` of `fd`.
struct Job {
    user_data: u64,
    fd: RawFd,
    offset: u64,
    iov: *const libc::iovec,
    iov_count: usize,
    write: bool,
    /// On an `O_DIRECT` descriptor.
    direct: bool,
}

// SAFETY: `iov` points into the iovec array of a request in `AsyncIo::slots`, whose buffers lie in guest
// memory the device validated; both stay alive and unmoved (a `Vec`'s heap buffer) until the run's result
// has been taken back by `AsyncIo::complete`, and the engine is drained before guest memory or the disk go.
unsafe impl Send for Job {}

impl Job {
    /// Does the transfer with `preadv2`/`pwritev2` flags `flags` (once: a short one is finished by
    /// `finish_run`, as with io_uring); returns the byte count or a negative errno.
    fn run(&self, flags: libc::c_int) -> i32 {
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

/// What the VMM thread and the workers share, under one lock.
#[derive(Default)]
struct PoolState {
    /// Jobs on `O_DIRECT` descriptors: any idle worker takes one (they wait for the disk, which works
    /// on many at once).
    jobs: VecDeque<Job>,
    /// Page-cache jobs: at most `buffered_max` run at once. They are memory copies, which more threads
    /// than CPUs do not speed up, and buffered writes to one file serialize on its inode lock; more only
    /// add switching (1 MiB page-cache writes at QD32 on 2 CPUs: 6.5-6.8 GB/s with 2-8 workers, 5.9-6.2
    /// with 32).
    buffered: VecDeque<Job>,
    buffered_running: usize,
    buffered_max: usize,
    results: Vec<(u64, i32)>,
    /// Workers waiting for a job.
    idle: usize,
    /// The VMM thread is blocked in `wait_for_result` (draining).
    draining: bool,
    shutdown: bool,
}

struct PoolShared {
    state: Mutex<PoolState>,
    /// Signalled when jobs are queued or the pool shuts down.
    work: Condvar,
    /// Signalled when a result arrives.
    result: Condvar,
    completion_evt: EventFd,
}

impl PoolState {
    /// The next job a worker may start, if any.
    fn next_job(&mut self) -> Option<Job> {
        if let Some(job) = self.jobs.pop_front() {
            return Some(job);
        }
        if self.buffered_running < self.buffered_max {
            let job = self.buffered.pop_front()?;
            self.buffered_running += 1;
            return Some(job);
        }
        None
    }

    /// Jobs that workers could start now.
    fn startable(&self) -> usize {
        let buffered_room = self.buffered_max.saturating_sub(self.buffered_running);
        self.jobs.len() + self.buffered.len().min(buffered_room)
    }
}

impl PoolShared {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A worker never panics while holding the lock, and the state stays consistent if one did.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a run's result to the VMM thread. Wakes it only when needed: the EventFd when this is the
    /// first result since it last took them (it reads the EventFd before taking results, so none is left
    /// unsignalled), the condition variable only while it drains. A futex wake or an EventFd write per run
    /// is a system call that the copying on a 2-CPU host feels.
    fn post(&self, job: &Job, res: i32) {
        let (first, draining) = {
            let mut st = self.lock();
            if !job.direct {
                st.buffered_running -= 1;
            }
            st.results.push((job.user_data, res));
            (st.results.len() == 1, st.draining)
        };
        if draining {
            self.result.notify_one();
        }
        if first {
            if let Err(e) = self.completion_evt.write(1) {
                log::error!("virtio-blk: cannot signal a completion: {e}");
            }
        }
    }
}

/// Worker threads started on demand, up to a fixed number, and stopped (joined) when the pool is dropped.
struct ThreadPool {
    shared: Arc<PoolShared>,
    workers: Vec<std::thread::JoinHandle<()>>,
    max_workers: usize,
    /// Jobs queued by `push` and not yet handed to the workers.
    pending: Vec<Job>,
}

impl ThreadPool {
    fn new(max_workers: usize, completion_evt: EventFd) -> Self {
        // Two page-cache copies per CPU keep every CPU busy while one waits for a lock or a page.
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            shared: Arc::new(PoolShared {
                state: Mutex::new(PoolState {
                    buffered_max: (2 * cpus).min(max_workers),
                    ..PoolState::default()
                }),
                work: Condvar::new(),
                result: Condvar::new(),
                completion_evt,
            }),
            workers: Vec::new(),
            max_workers,
            pending: Vec::new(),
        }
    }

    fn queue(&mut self, job: Job) {
        self.pending.push(job);
    }

    /// Hands the pending jobs to the workers: wakes one idle worker per job it can start (not all of them,
    /// only to have most go back to sleep), and starts more workers (up to the limit) while such jobs
    /// outnumber idle ones. Without any worker (thread creation failed), runs the jobs on this thread.
    fn start(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let (wake, wanted) = {
            let mut st = self.shared.lock();
            for job in self.pending.drain(..) {
                if job.direct {
                    st.jobs.push_back(job);
                } else {
                    st.buffered.push_back(job);
                }
            }
            let n = st.startable();
            (n.min(st.idle), n.saturating_sub(st.idle))
        };
        for _ in 0..wake {
            self.shared.work.notify_one();
        }
        for _ in 0..wanted {
            if self.workers.len() >= self.max_workers {
                break;
            }
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name("blk-io".into())
                .stack_size(128 << 10)
                .spawn(move || worker(&shared));
            match spawned {
                Ok(h) => self.workers.push(h),
                Err(e) => {
                    log::warn!("virtio-blk: cannot start an I/O thread: {e}");
                    break;
                }
            }
        }
        if self.workers.is_empty() {
            loop {
                let job = self.shared.lock().next_job();
                let Some(job) = job else { break };
                self.shared.post(&job, job.run(0));
            }
        }
    }

    fn take_results(&mut self) -> Vec<(u64, i32)> {
        std::mem::take(&mut self.shared.lock().results)
    }

    /// Blocks until at least one result is there (the caller has runs in flight).
    fn wait_for_result(&mut self) {
        self.start();
        let mut st = self.shared.lock();
        st.draining = true;
        while st.results.is_empty() {
            st = self
                .shared
                .result
                .wait(st)
                .unwrap_or_else(|e| e.into_inner());
        }
        st.draining = false;
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        // Workers finish the jobs already queued (the device drains the engine before this anyway), then
        // see `shutdown` and return.
        self.shared.lock().shutdown = true;
        self.shared.work.notify_all();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// A worker: takes jobs until the pool shuts down and no job is left.
fn worker(shared: &PoolShared) {
    loop {
        let job = {
            let mut st = shared.lock();
            loop {
                if let Some(job) = st.next_job() {
                    break job;
                }
                if st.shutdown {
                    return;
                }
                st.idle += 1;
                st = shared.work.wait(st).unwrap_or_else(|e| e.into_inner());
                st.idle -= 1;
            }
        };
        shared.post(&job, job.run(0));
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
