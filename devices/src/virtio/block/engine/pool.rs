//! The thread-pool engine ([`IoEngine::Threads`], QEMU's `aio=threads`): worker threads started on demand
//! (up to `Block`'s `POOL_WORKERS`) doing blocking `preadv`/`pwritev`, one run each.
//!
//! A run is done inline on the VMM thread instead when that is cheaper than two thread hand-overs: when its
//! request is alone in flight, or when it is a small page-cache transfer that `RWF_NOWAIT` can finish
//! without blocking. Of the workers, at most two per CPU copy to or from the page cache at once (see
//! [`PoolState`]); `O_DIRECT` runs may use them all. A finished run goes on a result list and signals the
//! completion EventFd; dropping the pool joins its workers. The pool runs the jobs itself on the VMM thread
//! if no worker thread can be started.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::out_of_order::{Job, OutOfOrder, Submitter};
use super::IoEngine;

/// Runs up to this size are tried inline (without blocking) by the pool engine even while others are in
/// flight: copying 128 KiB from or to the page cache takes a few microseconds, handing it to a worker and
/// back tens of microseconds on a nested host. Larger copies go to the workers, where they run in parallel.
const INLINE_MAX: u64 = 128 << 10;

/// The thread-pool submitter.
pub struct Pool {
    pool: ThreadPool,
    completion_evt: EventFd,
    /// Results of runs carried out inline on this thread, for the next `reap`.
    inline_results: Vec<(u64, i32)>,
    /// Buffered writes with `RWF_NOWAIT` were refused by the file system: do not try again.
    no_nowait_writes: bool,
    /// Runs done inline, and runs handed to the workers.
    inline_runs: u64,
    pooled_runs: u64,
}

/// An out-of-order engine over a pool of up to `workers` threads with room for `capacity` runs in flight.
/// Fails only if the EventFd cannot be created.
pub fn engine(workers: usize, capacity: usize) -> io::Result<OutOfOrder<Pool>> {
    let completion_evt = EventFd::new(EFD_NONBLOCK)?;
    let pool = ThreadPool::new(workers.max(1), completion_evt.try_clone()?);
    Ok(OutOfOrder::new(
        Pool {
            pool,
            completion_evt,
            inline_results: Vec::new(),
            no_nowait_writes: false,
            inline_runs: 0,
            pooled_runs: 0,
        },
        capacity,
    ))
}

impl Submitter for Pool {
    const KIND: IoEngine = IoEngine::Threads;

    fn push(&mut self, job: Job, idle: bool) {
        // With nothing else in flight the guest waits for this request alone: do it inline, as the
        // synchronous engine would, rather than pay for two thread hand-overs.
        if idle {
            self.inline_results.push((job.user_data, job.run(0)));
            self.inline_runs += 1;
            return;
        }
        // Small page-cache transfers: inline if that does not block (the data is cached, the write needs no
        // throttling); otherwise, or if partly done, all of it to a worker.
        if !job.direct && job.len <= INLINE_MAX && !(job.write && self.no_nowait_writes) {
            match job.run(libc::RWF_NOWAIT) {
                n if n >= 0 && n as u64 == job.len => {
                    self.inline_results.push((job.user_data, n));
                    self.inline_runs += 1;
                    return;
                }
                n if job.write && (n == -libc::EOPNOTSUPP || n == -libc::EINVAL) => {
                    self.no_nowait_writes = true;
                }
                _ => {}
            }
        }
        self.pool.queue(job);
        self.pooled_runs += 1;
    }

    fn submit(&mut self) -> io::Result<()> {
        self.pool.start();
        Ok(())
    }

    fn reap(&mut self, results: &mut Vec<(u64, i32)>) {
        results.append(&mut self.inline_results);
        results.extend(self.pool.take_results());
    }

    fn wait(&mut self) -> io::Result<()> {
        self.pool.wait_for_result();
        Ok(())
    }

    fn abandon(&mut self) {}

    fn completion_evt(&self) -> &EventFd {
        &self.completion_evt
    }

    fn pool_counts(&self) -> Option<(u64, u64)> {
        Some((self.inline_runs, self.pooled_runs))
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
    /// Whether `buffered_max` has been set from the CPU count (at the first job, not at creation: finding
    /// the CPU count reads the cgroup's CPU quota, about 25 system calls, which a boot or a restore need
    /// not wait for before the guest's first instruction).
    sized: bool,
    /// Jobs queued by `push` and not yet handed to the workers.
    pending: Vec<Job>,
}

impl ThreadPool {
    fn new(max_workers: usize, completion_evt: EventFd) -> Self {
        Self {
            shared: Arc::new(PoolShared {
                state: Mutex::new(PoolState {
                    buffered_max: max_workers,
                    ..PoolState::default()
                }),
                work: Condvar::new(),
                result: Condvar::new(),
                completion_evt,
            }),
            workers: Vec::new(),
            max_workers,
            sized: false,
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
        if !self.sized {
            // Two page-cache copies per CPU keep every CPU busy while one waits for a lock or a page.
            let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
            self.shared.lock().buffered_max = (2 * cpus).min(self.max_workers);
            self.sized = true;
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
                .spawn(move || {
                    crate::io_thread_start();
                    worker(&shared)
                });
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
