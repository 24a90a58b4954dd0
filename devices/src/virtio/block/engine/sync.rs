//! The synchronous engine ([`IoEngine::Sync`], Firecracker's default): every request is carried out on
//! the VMM thread when it is popped (`preadv`/`pwritev` through the disk backend), so its submit always
//! answers [`Submit::Done`]. The out-of-order engines serve the requests they cannot take the same way,
//! through [`run`].

use vmm_sys_util::eventfd::EventFd;

use super::super::request::{execute, Request};
use super::{Completion, Engine, IoEngine, Submit};
use crate::disk::DiskFile;
use crate::GuestMemoryMmap;
use virtio_bindings::virtio_blk::VIRTIO_BLK_ID_BYTES;

/// The synchronous engine: no state, nothing ever in flight.
#[derive(Debug, Default)]
pub struct SyncEngine;

/// Carries out `req` now and says what to put on the used ring.
pub(super) fn run(
    mem: &GuestMemoryMmap,
    disk: &mut dyn DiskFile,
    id: &[u8; VIRTIO_BLK_ID_BYTES as usize],
    req: &Request,
    head: u16,
) -> Completion {
    let out = execute(req, mem, disk, id);
    Completion {
        head,
        request_type: req.request_type,
        data_len: req.data_len,
        status: out.status,
        used_len: out.used_len,
    }
}

impl Engine for SyncEngine {
    fn kind(&self) -> IoEngine {
        IoEngine::Sync
    }

    fn has_room(&self) -> bool {
        true
    }

    fn submit(
        &mut self,
        mem: &GuestMemoryMmap,
        disk: &mut dyn DiskFile,
        id: &[u8; VIRTIO_BLK_ID_BYTES as usize],
        req: &Request,
        head: u16,
        _done: &mut Vec<Completion>,
    ) -> Submit {
        Submit::Done(run(mem, disk, id, req, head))
    }

    fn kick(&mut self, _mem: &GuestMemoryMmap, _done: &mut Vec<Completion>) {}

    fn complete(&mut self, _mem: &GuestMemoryMmap, _done: &mut Vec<Completion>) {}

    fn drain(&mut self, _mem: &GuestMemoryMmap, _done: &mut Vec<Completion>) {}

    fn completion_evt(&self) -> Option<&EventFd> {
        None
    }

    fn in_flight(&self) -> usize {
        0
    }
}
