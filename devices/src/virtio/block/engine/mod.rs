//! The I/O engines of virtio-blk, behind one interface ([`Engine`]): the device pops a request and hands
//! it to its engine, which answers [`Submit::Done`] (carried out already: put it on the used ring) or
//! [`Submit::Submitted`] (it completes later, in any order, and comes back through [`Engine::complete`]
//! when the engine's completion EventFd fires, event token `Block::COMPLETION`).
//!
//! - [`sync`]: [`IoEngine::Sync`], every request at once on the VMM thread.
//! - [`uring`]: [`IoEngine::Async`], reads and writes through io_uring, a notify batch per `io_uring_enter`.
//! - [`pool`]: [`IoEngine::Threads`], reads and writes on a pool of worker threads (QEMU's `aio=threads`),
//!   inline when that is cheaper.
//!
//! The last two share [`out_of_order`]: a read or write whose data lies plainly in a host file
//! (`DiskFile::plain_runs`: all of a raw image, the allocated clusters of a qcow2 image) becomes one
//! `preadv`/`pwritev` per host run, and a request is answered once all its runs are done; anything else
//! waits for every request in flight, then runs synchronously.
//!
//! An engine never takes more than it can hold: the device pops a chain only when [`Engine::has_room`]
//! says a request of [`MAX_RUNS`] runs still fits; otherwise the rest waits on the avail ring until
//! completions make room. Runs only touch the guest buffers the device validated (`request::slices`), and
//! the device drains the engine ([`Engine::drain`]) before it lets go of guest memory (reset, drop). A short
//! transfer (end of file, a signal) is finished synchronously.

mod out_of_order;
mod pool;
mod sync;
mod uring;

use vmm_sys_util::eventfd::EventFd;

use super::request::{Request, RequestType};
use crate::disk::DiskFile;
use crate::GuestMemoryMmap;
use virtio_bindings::virtio_blk::VIRTIO_BLK_ID_BYTES;

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

/// What an engine did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submit {
    /// Carried out (status written): put it on the used ring now.
    Done(Completion),
    /// In flight: it comes back through [`Engine::complete`] or [`Engine::drain`].
    Submitted,
}

/// A block device's I/O engine.
pub trait Engine: Send + std::fmt::Debug {
    /// Which engine this is.
    fn kind(&self) -> IoEngine;
    /// Whether a request of up to [`MAX_RUNS`] runs still fits.
    fn has_room(&self) -> bool;
    /// Carries out `req` (chain `head`) or starts it. Requests that completed meanwhile (an out-of-order
    /// engine drains before serving a request synchronously) are appended to `done`, ahead of a
    /// [`Submit::Done`] answer.
    fn submit(
        &mut self,
        mem: &GuestMemoryMmap,
        disk: &mut dyn DiskFile,
        id: &[u8; VIRTIO_BLK_ID_BYTES as usize],
        req: &Request,
        head: u16,
        done: &mut Vec<Completion>,
    ) -> Submit;
    /// Starts what the batch's submits queued (one `io_uring_enter`, one hand-over to the workers); if that
    /// fails, the requests in flight are failed into `done`.
    fn kick(&mut self, mem: &GuestMemoryMmap, done: &mut Vec<Completion>);
    /// Appends the requests that have completed (their status is written).
    fn complete(&mut self, mem: &GuestMemoryMmap, done: &mut Vec<Completion>);
    /// Waits until every request in flight has completed, appending them to `done`.
    fn drain(&mut self, mem: &GuestMemoryMmap, done: &mut Vec<Completion>);
    /// The EventFd signalled when requests complete (out-of-order engines).
    fn completion_evt(&self) -> Option<&EventFd>;
    /// Requests in flight.
    fn in_flight(&self) -> usize;
    /// The thread pool's runs done inline and runs handed to workers.
    fn pool_counts(&self) -> Option<(u64, u64)> {
        None
    }
}

/// The engine `kind` for the device `id` (for messages): `Async` falls back to `Sync`, with a warning,
/// where io_uring is unavailable. `entries` bounds the runs in flight; `workers` the pool's threads.
pub fn create(
    kind: IoEngine,
    id: &str,
    entries: u32,
    workers: usize,
) -> std::io::Result<Box<dyn Engine>> {
    Ok(match kind {
        IoEngine::Sync => Box::new(sync::SyncEngine),
        IoEngine::Async => match uring::engine(entries) {
            Ok(e) => Box::new(e),
            Err(e) => {
                log::warn!(
                    "virtio-blk {id:?}: io_uring unavailable ({e}); using the synchronous engine"
                );
                Box::new(sync::SyncEngine)
            }
        },
        IoEngine::Threads => Box::new(pool::engine(workers, entries as usize)?),
    })
}
