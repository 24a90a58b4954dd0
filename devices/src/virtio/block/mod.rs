//! virtio-blk: one request queue in front of a [`DiskFile`].
//!
//! The guest kicks queue 0; the notify EventFd wakes [`Block`] on the VMM thread (it is an event-manager
//! `MutEventSubscriber`, token [`Block::PROCESS_QUEUE`]); it pops each descriptor chain, parses it with
//! [`request::parse_request`] and hands it to its [`engine::Engine`], which answers "done" (carried out
//! with [`request::execute`]: returned on the used ring at once) or "submitted"; the interrupt is raised
//! once per batch. With [`IoEngine::Async`] (io_uring) or [`IoEngine::Threads`] (a thread pool) reads and
//! writes are answered as they complete, out of order, when the engine's EventFd wakes the device
//! ([`Block::COMPLETION`]); see [`engine`]. Offered features: VERSION_1, FLUSH, SEG_MAX, SIZE_MAX, BLK_SIZE,
//! RO for a read-only disk, DISCARD and WRITE_ZEROES when the backend can. Per-device counters live in
//! [`BlockMetrics`] (atomics, shared with whoever reports metrics).

pub mod engine;
pub mod request;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_ID_BYTES,
    VIRTIO_BLK_S_OK,
};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use self::engine::{Completion, Engine, Submit};
pub use self::engine::{IoEngine, MAX_RUNS};
use self::request::{parse_request, RequestType, MAX_DISCARD_SEGMENTS, SECTOR_SIZE};
use super::{
    read_config_bytes, ready_queues, wants_interrupt, ActivateError, LogLimiter, VirtioDevice,
    VirtioInterrupt, TYPE_BLOCK,
};
use crate::disk::DiskFile;
use crate::rate_limiter::{RateLimiter, RateLimiterConfig, RateLimiterError};
use crate::GuestMemoryMmap;

/// Queue size we offer.
pub const QUEUE_SIZE: u16 = 256;
/// Most data segments per request (SEG_MAX): the queue minus header and status descriptors.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Largest single segment (SIZE_MAX).
pub const SIZE_MAX: u32 = 1 << 20;
/// Largest discard / write-zeroes range per segment, in sectors.
pub const MAX_DISCARD_SECTORS: u32 = 1 << 22;

/// Errors from creating a block device.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The queue notify or completion EventFd could not be created.
    #[error("cannot create an EventFd")]
    EventFd(#[source] std::io::Error),
    /// The rate limiter could not be set up.
    #[error(transparent)]
    RateLimiter(#[from] RateLimiterError),
}

/// Counters of one block device.
/// Serialized by serde as a snapshot: each counter read once (`GET /metrics`).
#[derive(Debug, Default, serde::Serialize)]
pub struct BlockMetrics {
    /// Completed read requests.
    pub reads: AtomicU64,
    /// Completed write requests.
    pub writes: AtomicU64,
    /// Bytes read by completed read requests.
    pub read_bytes: AtomicU64,
    /// Bytes written by completed write requests.
    pub write_bytes: AtomicU64,
    /// Completed flushes.
    pub flushes: AtomicU64,
    /// Requests answered with an error status.
    pub errors: AtomicU64,
    /// Chains returned without a status (no usable status byte).
    pub dropped: AtomicU64,
    /// Times a request found the rate limiter short and waited for it (Firecracker's
    /// `rate_limiter_throttled_events`).
    pub rate_limiter_throttled_events: AtomicU64,
}

/// How to set up a block device.
#[derive(Debug, Clone, Default)]
pub struct BlockConfig {
    /// The drive id, returned by GET_ID (truncated to 20 bytes).
    pub id: String,
    /// The engine asked for; `Async` falls back to `Sync` where io_uring is unavailable.
    pub io_engine: IoEngine,
    /// Firecracker's `rate_limiter` (none: unlimited).
    pub rate_limiter: RateLimiterConfig,
}

/// Submission queue entries of a device's io_uring: room for 32 requests of [`MAX_RUNS`] runs, or for
/// every request a full virtqueue can hold when each lies in one host run (raw images, qcow2 requests
/// within one cluster run). The thread pool takes as many runs.
const URING_ENTRIES: u32 = 256;

/// Most worker threads of one device's [`IoEngine::Threads`] pool (QEMU's thread pool allows 64); they
/// start as requests in flight need them, so a guest that queues one request at a time uses one.
const POOL_WORKERS: usize = 32;

struct Active {
    mem: GuestMemoryMmap,
    interrupt: Arc<VirtioInterrupt>,
    queue: Queue,
}

/// A virtio-blk device.
pub struct Block {
    disk: Box<dyn DiskFile>,
    id: [u8; VIRTIO_BLK_ID_BYTES as usize],
    avail_features: u64,
    acked_features: u64,
    config: Vec<u8>,
    queue_evts: [EventFd; 1],
    active: Option<Active>,
    broken: bool,
    metrics: Arc<BlockMetrics>,
    warn: LogLimiter,
    /// Carries out the requests.
    engine: Box<dyn Engine>,
    /// Set when chains were left on the avail ring because the engine was full; completions resume them.
    stalled: bool,
    /// Scratch: finished requests.
    completions: Vec<Completion>,
    /// Requests wait here when their tokens are short; its timer resumes the queue.
    rate_limiter: RateLimiter,
}

impl Block {
    /// Event token of the request queue's notify EventFd.
    pub const PROCESS_QUEUE: u32 = 0;
    /// Event token of the completion EventFd ([`IoEngine::Async`], [`IoEngine::Threads`]).
    pub const COMPLETION: u32 = 1;
    /// Event token of the rate limiter's timerfd.
    pub const RATE_LIMITER: u32 = 2;

    /// A block device serving `disk`.
    pub fn new(disk: Box<dyn DiskFile>, cfg: &BlockConfig) -> Result<Self, BlockError> {
        let mut id = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let n = cfg.id.len().min(id.len());
        id[..n].copy_from_slice(&cfg.id.as_bytes()[..n]);
        let mut avail_features = (1u64 << VIRTIO_BLK_F_FLUSH)
            | (1u64 << VIRTIO_BLK_F_SEG_MAX)
            | (1u64 << VIRTIO_BLK_F_SIZE_MAX)
            | (1u64 << VIRTIO_BLK_F_BLK_SIZE);
        if disk.read_only() {
            avail_features |= 1u64 << VIRTIO_BLK_F_RO;
        } else {
            if disk.supports_discard() {
                avail_features |= 1u64 << VIRTIO_BLK_F_DISCARD;
            }
            if disk.supports_write_zeroes() {
                avail_features |= 1u64 << VIRTIO_BLK_F_WRITE_ZEROES;
            }
        }
        let config = build_config(disk.size() / SECTOR_SIZE);
        let engine = engine::create(cfg.io_engine, &cfg.id, URING_ENTRIES, POOL_WORKERS)
            .map_err(BlockError::EventFd)?;
        Ok(Self {
            disk,
            id,
            avail_features,
            acked_features: 0,
            config,
            queue_evts: [EventFd::new(EFD_NONBLOCK).map_err(BlockError::EventFd)?],
            active: None,
            broken: false,
            metrics: Arc::new(BlockMetrics::default()),
            warn: LogLimiter::default(),
            engine,
            stalled: false,
            completions: Vec::new(),
            rate_limiter: RateLimiter::new(&cfg.rate_limiter)?,
        })
    }

    /// The engine in use (`Sync` when `Async` was asked for but io_uring is unavailable).
    pub fn io_engine(&self) -> IoEngine {
        self.engine.kind()
    }

    /// The completion EventFd, with an out-of-order engine.
    pub fn completion_evt(&self) -> Option<&EventFd> {
        self.engine.completion_evt()
    }

    /// Requests submitted to the out-of-order engine and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.engine.in_flight()
    }

    /// The device's counters.
    pub fn metrics(&self) -> Arc<BlockMetrics> {
        self.metrics.clone()
    }

    /// Serves `open()`'s disk from now on (`PATCH /drives/{id}` with a `path_on_host`): requests in
    /// flight finish on the old disk, which is flushed; the capacity in config space becomes the new
    /// disk's and an active device raises a configuration-change interrupt, so the driver re-reads it.
    /// With `close_first` the old disk is closed before `open` runs (the new path is the same file, whose
    /// lock the old descriptor holds); should `open` then fail, the device has no disk (capacity 0,
    /// every request an error) until a later call succeeds. The offered features stay: they were
    /// negotiated, and a new disk without discard answers discards with an error status.
    pub fn replace_disk<E>(
        &mut self,
        close_first: bool,
        open: impl FnOnce() -> Result<Box<dyn DiskFile>, E>,
    ) -> Result<(), E> {
        self.drain_engine();
        if let Err(e) = self.disk.flush() {
            log::error!("virtio-blk: flush before changing the backing file failed: {e}");
        }
        let read_only = self.disk.read_only();
        if close_first {
            self.disk = Box::new(NoDisk { read_only });
            self.set_capacity();
        }
        let disk = open()?;
        self.disk = disk;
        self.set_capacity();
        Ok(())
    }

    /// Rewrites the capacity in config space from the disk and tells an active driver.
    fn set_capacity(&mut self) {
        let capacity = self.disk.size() / SECTOR_SIZE;
        self.config[0..8].copy_from_slice(&capacity.to_le_bytes());
        if let Some(active) = self.active.as_ref() {
            active.interrupt.signal_config_change();
        }
    }

    /// The capacity in 512-byte sectors, as config space says.
    pub fn capacity(&self) -> u64 {
        let mut c = [0u8; 8];
        c.copy_from_slice(&self.config[0..8]);
        u64::from_le_bytes(c)
    }

    /// The rate limiter's buckets in force.
    pub fn rate_limiter_config(&self) -> RateLimiterConfig {
        *self.rate_limiter.config()
    }

    /// Changes the rate limiter (`PATCH /drives/{id}`, Firecracker's rules: buckets not named stay) and
    /// resumes requests that were waiting for the old one.
    pub fn update_rate_limiter(&mut self, update: &RateLimiterConfig) -> Result<(), BlockError> {
        self.rate_limiter.update(update)?;
        self.process_queue();
        Ok(())
    }

    /// Flushes the disk (the VMM calls this when the VM stops).
    pub fn flush_disk(&mut self) -> crate::disk::Result<()> {
        self.drain_engine();
        self.disk.flush()
    }

    /// Waits for every request in flight and returns them to the guest.
    fn drain_engine(&mut self) {
        if let Some(active) = self.active.as_mut() {
            self.engine.drain(&active.mem, &mut self.completions);
            let n = self.completions.len();
            return_completions(
                active,
                &mut self.completions,
                &self.metrics,
                &mut self.warn,
                &mut self.broken,
            );
            if n > 0 {
                active.interrupt.signal_used_queue();
            }
        }
    }

    /// Answers the requests the out-of-order engine has completed (the VMM thread calls this when the
    /// completion EventFd fires), then resumes a queue that was left waiting for room; returns how many
    /// chains were completed.
    pub fn process_completions(&mut self) -> usize {
        let Some(active) = self.active.as_mut() else {
            return 0;
        };
        self.engine.complete(&active.mem, &mut self.completions);
        let mut done = return_completions(
            active,
            &mut self.completions,
            &self.metrics,
            &mut self.warn,
            &mut self.broken,
        );
        if done > 0 && wants_interrupt(&active.mem, &active.queue) {
            active.interrupt.signal_used_queue();
        }
        if self.stalled {
            done += self.process_queue();
        }
        done
    }

    /// Processes every available request; returns how many chains were completed (with the asynchronous
    /// engine, requests still in flight complete later, through [`Block::process_completions`]).
    pub fn process_queue(&mut self) -> usize {
        let Some(active) = self.active.as_mut() else {
            return 0;
        };
        if self.broken {
            return 0;
        }
        let capacity = self.disk.size() / SECTOR_SIZE;
        let mut done = 0;
        self.stalled = false;
        // The one queue loop, whatever the engine: pop, parse, submit; "done" goes on the used ring now,
        // "submitted" later, from the engine's completions.
        loop {
            if !self.engine.has_room() {
                // The rest stays on the avail ring until completions make room.
                self.stalled = true;
                break;
            }
            let chain = match active.queue.iter(&active.mem) {
                Ok(mut it) => it.next(),
                Err(e) => {
                    self.warn.warn(format_args!(
                        "virtio-blk: queue unusable ({e}); ignoring it until reset"
                    ));
                    self.broken = true;
                    break;
                }
            };
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            match parse_request(&active.mem, chain, SEG_MAX as usize + 2, capacity) {
                Ok(req) => {
                    let bytes = match req.request_type {
                        RequestType::In | RequestType::Out => req.data_len,
                        _ => 0,
                    };
                    if !self.rate_limiter.consume(bytes) {
                        // Back on the avail ring; the limiter's timer resumes the queue.
                        active.queue.go_to_previous_position();
                        self.metrics
                            .rate_limiter_throttled_events
                            .fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    match self.engine.submit(
                        &active.mem,
                        self.disk.as_mut(),
                        &self.id,
                        &req,
                        head,
                        &mut self.completions,
                    ) {
                        Submit::Submitted => continue,
                        Submit::Done(c) => self.completions.push(c),
                    }
                    done += return_completions(
                        active,
                        &mut self.completions,
                        &self.metrics,
                        &mut self.warn,
                        &mut self.broken,
                    );
                }
                Err(e) => {
                    self.warn
                        .warn(format_args!("virtio-blk: bad request: {}", e.error));
                    let used_len = match e.status {
                        Some(addr) => {
                            use vm_memory::Bytes;
                            let status = virtio_bindings::virtio_blk::VIRTIO_BLK_S_IOERR as u8;
                            if active.mem.write_obj(status, addr).is_err() {
                                self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                            }
                            self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                            1
                        }
                        None => {
                            self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                            0
                        }
                    };
                    if let Err(e) = active.queue.add_used(&active.mem, head, used_len) {
                        self.warn.warn(format_args!(
                            "virtio-blk: cannot return descriptor {head}: {e}"
                        ));
                        self.broken = true;
                    } else {
                        done += 1;
                    }
                }
            }
            if self.broken {
                break;
            }
        }
        // One io_uring_enter (or one hand-over to the workers) for the whole batch; io_uring reads served
        // from the page cache are complete when it returns, so answer what is done right away.
        self.engine.kick(&active.mem, &mut self.completions);
        self.engine.complete(&active.mem, &mut self.completions);
        done += return_completions(
            active,
            &mut self.completions,
            &self.metrics,
            &mut self.warn,
            &mut self.broken,
        );
        if done > 0 && wants_interrupt(&active.mem, &active.queue) {
            active.interrupt.signal_used_queue();
        }
        done
    }
}

/// The disk of a device whose backing file was closed for a `PATCH` and could not be opened again:
/// nothing to read or write.
struct NoDisk {
    read_only: bool,
}

impl DiskFile for NoDisk {
    fn size(&self) -> u64 {
        0
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read_vectored(
        &mut self,
        offset: u64,
        bufs: &[vm_memory::VolatileSlice<'_>],
    ) -> crate::disk::Result<()> {
        Err(no_disk(offset, bufs))
    }
    fn write_vectored(
        &mut self,
        offset: u64,
        bufs: &[vm_memory::VolatileSlice<'_>],
    ) -> crate::disk::Result<()> {
        Err(no_disk(offset, bufs))
    }
    fn flush(&mut self) -> crate::disk::Result<()> {
        Ok(())
    }
}

fn no_disk(offset: u64, bufs: &[vm_memory::VolatileSlice<'_>]) -> crate::disk::DiskError {
    crate::disk::DiskError::OutOfBounds {
        offset,
        len: bufs.iter().map(|b| b.len() as u64).sum(),
        size: 0,
    }
}

/// Puts finished requests on the used ring and counts them; returns how many were returned.
fn return_completions(
    active: &mut Active,
    completions: &mut Vec<Completion>,
    metrics: &BlockMetrics,
    warn: &mut LogLimiter,
    broken: &mut bool,
) -> usize {
    let mut n = 0;
    for c in completions.drain(..) {
        count(metrics, c.request_type, c.data_len, c.status);
        if *broken {
            continue;
        }
        if let Err(e) = active.queue.add_used(&active.mem, c.head, c.used_len) {
            warn.warn(format_args!(
                "virtio-blk: cannot return descriptor {}: {e}",
                c.head
            ));
            *broken = true;
            continue;
        }
        n += 1;
    }
    n
}

fn count(m: &BlockMetrics, t: RequestType, len: u64, status: u8) {
    if u32::from(status) != VIRTIO_BLK_S_OK {
        m.errors.fetch_add(1, Ordering::Relaxed);
        return;
    }
    match t {
        RequestType::In => {
            m.reads.fetch_add(1, Ordering::Relaxed);
            m.read_bytes.fetch_add(len, Ordering::Relaxed);
        }
        RequestType::Out => {
            m.writes.fetch_add(1, Ordering::Relaxed);
            m.write_bytes.fetch_add(len, Ordering::Relaxed);
        }
        RequestType::Flush => {
            m.flushes.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// `struct virtio_blk_config` up to and including the write-zeroes fields (60 bytes).
fn build_config(capacity: u64) -> Vec<u8> {
    let mut c = vec![0u8; 60];
    c[0..8].copy_from_slice(&capacity.to_le_bytes());
    c[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
    c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
    c[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes()); // blk_size
    c[36..40].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
    c[40..44].copy_from_slice(&MAX_DISCARD_SEGMENTS.to_le_bytes());
    c[44..48].copy_from_slice(&1u32.to_le_bytes()); // discard_sector_alignment
    c[48..52].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
    c[52..56].copy_from_slice(&MAX_DISCARD_SEGMENTS.to_le_bytes());
    c[56] = 1; // write_zeroes_may_unmap
    c
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        self.warn.warn(format_args!(
            "virtio-blk: config write at {offset:#x} ignored"
        ));
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<VirtioInterrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        let [queue] = ready_queues::<1>(queues)?;
        self.active = Some(Active {
            mem,
            interrupt,
            queue,
        });
        self.broken = false;
        // Requests may have been queued before the notify that raced with activation.
        self.process_queue();
        Ok(())
    }

    fn reset(&mut self) {
        // Requests in flight still write into guest memory: let them finish before letting go of it.
        if let Some(active) = self.active.as_ref() {
            self.engine.drain(&active.mem, &mut self.completions);
            self.completions.clear();
        }
        self.stalled = false;
        self.active = None;
        self.broken = false;
        self.acked_features = 0;
        if let Err(e) = self.disk.flush() {
            log::error!("virtio-blk: flush on reset failed: {e}");
        }
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn saved_queues(&self) -> Vec<crate::virtio::persist::QueueState> {
        self.active
            .iter()
            .map(|a| crate::virtio::persist::QueueState::save(&a.queue))
            .collect()
    }

    fn prepare_save(&mut self) {
        self.drain_engine();
        if let Err(e) = self.disk.flush() {
            log::error!("virtio-blk: flush before a snapshot failed: {e}");
        }
    }
}

impl MutEventSubscriber for Block {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            Self::PROCESS_QUEUE => {
                // The counter only says "something happened"; the ring says what.
                let _ = self.queue_evts[0].read();
                self.process_queue();
            }
            Self::COMPLETION => {
                if let Some(evt) = self.engine.completion_evt() {
                    let _ = evt.read();
                }
                self.process_completions();
            }
            Self::RATE_LIMITER => {
                self.rate_limiter.event_handler();
                self.process_queue();
            }
            other => log::warn!("virtio-blk: unexpected event token {other}"),
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let ev = Events::with_data(&self.queue_evts[0], Self::PROCESS_QUEUE, EventSet::IN);
        if let Err(e) = ops.add(ev) {
            log::error!("virtio-blk: cannot register the queue EventFd: {e:?}");
        }
        if let Some(evt) = self.engine.completion_evt() {
            let ev = Events::with_data(evt, Self::COMPLETION, EventSet::IN);
            if let Err(e) = ops.add(ev) {
                log::error!("virtio-blk: cannot register the completion EventFd: {e:?}");
            }
        }
        let ev = Events::with_data(&self.rate_limiter, Self::RATE_LIMITER, EventSet::IN);
        if let Err(e) = ops.add(ev) {
            log::error!("virtio-blk: cannot register the rate limiter's timer: {e:?}");
        }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // The kernel may still be reading from or writing to guest memory and the disk's descriptors.
        if let Some(active) = self.active.as_ref() {
            self.engine.drain(&active.mem, &mut self.completions);
        }
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod engine_tests;

#[cfg(test)]
mod tests {
    use super::request::tests::{random_desc, Rng};
    use super::*;
    use crate::bus::BusDevice;
    use crate::disk::test_utils::MemDisk;
    use crate::virtio::mmio::MmioTransport;
    use crate::virtio::test_utils::{guest_memory, init_device, read_reg, write_reg, QueueLayout};
    use std::sync::Mutex;
    use virtio_bindings::virtio_blk::{
        VIRTIO_BLK_S_IOERR, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
    };
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Address, Bytes, GuestAddress};

    const MEM: usize = 4 << 20;

    fn setup(
        disk: MemDisk,
        mem: &GuestMemoryMmap,
        q: &MockSplitQueue<GuestMemoryMmap>,
    ) -> (Arc<Mutex<Block>>, MmioTransport) {
        let blk = Arc::new(Mutex::new(
            Block::new(
                Box::new(disk),
                &BlockConfig {
                    id: "vda-serial".into(),
                    io_engine: IoEngine::Sync,
                    rate_limiter: Default::default(),
                },
            )
            .unwrap(),
        ));
        let mut t = MmioTransport::new(mem.clone(), blk.clone()).unwrap();
        let s = init_device(
            &mut t,
            u64::MAX,
            &[QueueLayout {
                size: 16,
                desc: q.desc_table_addr(),
                avail: q.avail_addr(),
                used: q.used_addr(),
            }],
        );
        assert_ne!(s & crate::virtio::status::DRIVER_OK, 0);
        (blk, t)
    }

    fn desc(addr: u64, len: u32, flags: u32, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, next))
    }

    #[test]
    fn requests_flow_through_transport_queue_and_interrupt() {
        let mem = guest_memory(MEM);
        let q = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let (blk, mut t) = setup(MemDisk::new(1 << 20, false), &mem, &q);
        // Features: RO off, FLUSH/SEG_MAX/SIZE_MAX/BLK_SIZE/DISCARD/WRITE_ZEROES on.
        let f = blk.lock().unwrap().acked_features;
        assert_eq!(f & (1 << VIRTIO_BLK_F_RO), 0);
        assert_ne!(f & (1 << VIRTIO_BLK_F_FLUSH), 0);
        assert_ne!(f & (1 << VIRTIO_BLK_F_DISCARD), 0);
        // Capacity in config space.
        let mut cap = [0u8; 8];
        t.read(0x100, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 2048);

        let (n, w) = (VRING_DESC_F_NEXT, VRING_DESC_F_WRITE);
        // Chain 0 (descriptors 0..3): write 512 bytes of 0x5a at sector 3.
        mem.write_obj(VIRTIO_BLK_T_OUT, GuestAddress(0x10_0000))
            .unwrap();
        mem.write_obj(3u64, GuestAddress(0x10_0008)).unwrap();
        mem.write_slice(&[0x5a; 512], GuestAddress(0x20_0000))
            .unwrap();
        // Chain 1 (3..6): read it back elsewhere. Chain 2 (6..9): GET_ID.
        mem.write_obj(VIRTIO_BLK_T_IN, GuestAddress(0x10_0100))
            .unwrap();
        mem.write_obj(3u64, GuestAddress(0x10_0108)).unwrap();
        mem.write_obj(VIRTIO_BLK_T_GET_ID, GuestAddress(0x10_0200))
            .unwrap();
        q.add_desc_chains(
            &[
                desc(0x10_0000, 16, n, 1),
                desc(0x20_0000, 512, n, 2),
                desc(0x30_0000, 1, w, 0),
                desc(0x10_0100, 16, n, 4),
                desc(0x21_0000, 512, n | w, 5),
                desc(0x30_0001, 1, w, 0),
                desc(0x10_0200, 16, n, 7),
                desc(0x22_0000, 20, n | w, 8),
                desc(0x30_0002, 1, w, 0),
            ],
            0,
        )
        .unwrap();
        write_reg(&mut t, 0x50, 0); // QueueNotify -> the queue EventFd
        let evt_count = blk.lock().unwrap().queue_evts[0].read().unwrap();
        assert_eq!(evt_count, 1);
        assert_eq!(blk.lock().unwrap().process_queue(), 3);

        let mut buf = [0u8; 512];
        mem.read_slice(&mut buf, GuestAddress(0x21_0000)).unwrap();
        assert_eq!(buf, [0x5a; 512]);
        let mut id = [0u8; 20];
        mem.read_slice(&mut id, GuestAddress(0x22_0000)).unwrap();
        assert_eq!(&id[..10], b"vda-serial");
        assert_eq!(&id[10..], &[0; 10]);
        for i in 0..3 {
            assert_eq!(mem.read_obj::<u8>(GuestAddress(0x30_0000 + i)).unwrap(), 0);
        }
        // Used ring: idx 3, lengths 1, 513, 21.
        let used = q.used_addr();
        assert_eq!(mem.read_obj::<u16>(used.unchecked_add(2)).unwrap(), 3);
        let len = |i: u64| {
            mem.read_obj::<u32>(used.unchecked_add(4 + i * 8 + 4))
                .unwrap()
        };
        assert_eq!((len(0), len(1), len(2)), (1, 513, 21));
        // Interrupt raised with the used-ring bit.
        assert_eq!(read_reg(&mut t, 0x60), VirtioInterrupt::USED_RING);
        let m = blk.lock().unwrap().metrics();
        assert_eq!(m.writes.load(Ordering::Relaxed), 1);
        assert_eq!(m.reads.load(Ordering::Relaxed), 1);
        assert_eq!(m.read_bytes.load(Ordering::Relaxed), 512);
        // Reset stops the device.
        write_reg(&mut t, 0x70, 0);
        assert!(blk.lock().unwrap().active.is_none());
        assert_eq!(blk.lock().unwrap().process_queue(), 0);
    }

    /// Three reads against a limiter of two requests per 200 ms: two are answered at once, the third
    /// stays on the avail ring until the limiter's timer fires.
    #[test]
    fn a_rate_limited_request_waits_on_the_ring_for_the_timer() {
        use crate::rate_limiter::TokenBucketConfig;
        let mem = guest_memory(MEM);
        let q = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let (blk, _t) = setup(MemDisk::new(1 << 20, false), &mem, &q);
        blk.lock()
            .unwrap()
            .update_rate_limiter(&RateLimiterConfig {
                bandwidth: None,
                ops: Some(TokenBucketConfig {
                    size: 2,
                    one_time_burst: None,
                    refill_time: 200,
                }),
            })
            .unwrap();
        let (n, w) = (VRING_DESC_F_NEXT, VRING_DESC_F_WRITE);
        let mut descs = Vec::new();
        for i in 0..3u64 {
            mem.write_obj(VIRTIO_BLK_T_IN, GuestAddress(0x10_0000 + i * 0x100))
                .unwrap();
            let d = i as u16 * 3;
            descs.push(desc(0x10_0000 + i * 0x100, 16, n, d + 1));
            descs.push(desc(0x20_0000 + i * 0x1000, 512, n | w, d + 2));
            descs.push(desc(0x30_0000 + i, 1, w, 0));
        }
        q.add_desc_chains(&descs, 0).unwrap();
        let t0 = std::time::Instant::now();
        assert_eq!(blk.lock().unwrap().process_queue(), 2);
        let m = blk.lock().unwrap().metrics();
        assert_eq!(m.rate_limiter_throttled_events.load(Ordering::Relaxed), 1);
        // A notify meanwhile changes nothing.
        assert_eq!(blk.lock().unwrap().process_queue(), 0);
        // The timer is readable after about 100 ms (one token's refill), then the queue resumes.
        let fd = std::os::fd::AsRawFd::as_raw_fd(&blk.lock().unwrap().rate_limiter);
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        assert_eq!(unsafe { libc::poll(&mut p, 1, 5000) }, 1);
        assert!(t0.elapsed() >= std::time::Duration::from_millis(90));
        let mut b = blk.lock().unwrap();
        b.rate_limiter.event_handler();
        assert_eq!(b.process_queue(), 1);
        assert_eq!(m.reads.load(Ordering::Relaxed), 3);
    }

    /// A new backing file: config space shows its capacity, the driver gets a config-change interrupt
    /// and reads see the new file.
    #[test]
    fn replacing_the_disk_changes_the_capacity_and_interrupts() {
        let mem = guest_memory(MEM);
        let q = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let (blk, mut t) = setup(MemDisk::new(1 << 20, false), &mem, &q);
        let irq = t.interrupt().clone();
        let _ = irq.irq_evt().read();
        let mut bigger = MemDisk::new(3 << 20, false);
        bigger.write_at(&[0x77; 512], 5 << 19).unwrap();
        blk.lock()
            .unwrap()
            .replace_disk(false, || Ok::<_, ()>(Box::new(bigger) as Box<dyn DiskFile>))
            .unwrap();
        assert_eq!(irq.irq_evt().read().unwrap(), 1);
        assert_eq!(read_reg(&mut t, 0x60), VirtioInterrupt::CONFIG_CHANGE);
        let mut cap = [0u8; 8];
        t.read(0x100, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 6144);
        // Sector 5120 exists only on the new disk.
        let (n, w) = (VRING_DESC_F_NEXT, VRING_DESC_F_WRITE);
        mem.write_obj(VIRTIO_BLK_T_IN, GuestAddress(0x10_0000))
            .unwrap();
        mem.write_obj(5120u64, GuestAddress(0x10_0008)).unwrap();
        q.add_desc_chains(
            &[
                desc(0x10_0000, 16, n, 1),
                desc(0x20_0000, 512, n | w, 2),
                desc(0x30_0000, 1, w, 0),
            ],
            0,
        )
        .unwrap();
        assert_eq!(blk.lock().unwrap().process_queue(), 1);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x30_0000)).unwrap(), 0);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x20_0000)).unwrap(), 0x77);
        // Closed first and the open fails: no disk, capacity 0, requests fail.
        let r = blk.lock().unwrap().replace_disk(true, || Err("gone"));
        assert_eq!(r, Err("gone"));
        assert_eq!(blk.lock().unwrap().capacity(), 0);
        q.add_desc_chains(
            &[
                desc(0x10_0000, 16, n, 4),
                desc(0x20_0000, 512, n | w, 5),
                desc(0x30_0000, 1, w, 0),
            ],
            3,
        )
        .unwrap();
        blk.lock().unwrap().process_queue();
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(0x30_0000)).unwrap() as u32,
            VIRTIO_BLK_S_IOERR
        );
    }

    #[test]
    fn read_only_disk_offers_ro_and_fails_writes() {
        let mem = guest_memory(MEM);
        let q = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let (blk, _t) = setup(MemDisk::new(1 << 20, true), &mem, &q);
        let f = blk.lock().unwrap().acked_features;
        assert_ne!(f & (1 << VIRTIO_BLK_F_RO), 0);
        assert_eq!(f & (1 << VIRTIO_BLK_F_DISCARD), 0);
        mem.write_obj(VIRTIO_BLK_T_OUT, GuestAddress(0x10_0000))
            .unwrap();
        q.add_desc_chains(
            &[
                desc(0x10_0000, 16, VRING_DESC_F_NEXT, 1),
                desc(0x20_0000, 512, VRING_DESC_F_NEXT, 2),
                desc(0x30_0000, 1, VRING_DESC_F_WRITE, 0),
            ],
            0,
        )
        .unwrap();
        assert_eq!(blk.lock().unwrap().process_queue(), 1);
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(0x30_0000)).unwrap() as u32,
            VIRTIO_BLK_S_IOERR
        );
        assert_eq!(
            blk.lock().unwrap().metrics().errors.load(Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn random_rings_never_panic_or_hang() {
        let mem = guest_memory(MEM);
        let q = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let (blk, mut t) = setup(MemDisk::new(1 << 20, false), &mem, &q);
        for case in 0..2000u64 {
            let mut rng = Rng(0xb10c_0000 + case);
            for i in 0..16 {
                q.desc_table()
                    .store(i, random_desc(&mut rng, i % 4, 4, MEM as u64))
                    .unwrap();
            }
            let avail = q.avail_addr();
            for i in 0..16u64 {
                let head = if rng.below(8) == 0 {
                    rng.below(1000)
                } else {
                    rng.below(16)
                } as u16;
                mem.write_obj(head, avail.unchecked_add(4 + 2 * i)).unwrap();
            }
            let cur: u16 = mem.read_obj(avail.unchecked_add(2)).unwrap();
            let bump = if rng.below(20) == 0 {
                rng.next() as u16
            } else {
                rng.below(17) as u16
            };
            mem.write_obj(cur.wrapping_add(bump), avail.unchecked_add(2))
                .unwrap();
            let processed = blk.lock().unwrap().process_queue();
            assert!(processed <= 16, "case {case}");
            if blk.lock().unwrap().broken || rng.below(50) == 0 {
                // A driver that broke the ring resets and starts over.
                write_reg(&mut t, 0x70, 0);
                mem.write_obj(0u16, avail.unchecked_add(2)).unwrap();
                mem.write_obj(0u16, q.used_addr().unchecked_add(2)).unwrap();
                init_device(
                    &mut t,
                    u64::MAX,
                    &[QueueLayout {
                        size: 16,
                        desc: q.desc_table_addr(),
                        avail,
                        used: q.used_addr(),
                    }],
                );
            }
        }
    }
}
