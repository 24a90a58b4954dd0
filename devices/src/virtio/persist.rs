//! Saved state of the virtio layer, for snapshots: each virtio queue ([`QueueState`]) and the virtio-mmio
//! transport ([`MmioTransportState`]: its registers, each queue, the interrupt status). Plain serde
//! structs; the VMM's `persist` module is the only writer of the snapshot file that carries them.
//!
//! A transport is saved from the live queues the device owns once it is active (their ring indices are
//! where the device left off) and restored by re-activating the device with queues built from those
//! states, so a restored device carries on at the same place in each ring.

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueT};

/// Version of the structs in this file; a restore refuses any other.
pub const VIRTIO_STATE_VERSION: u32 = 1;

/// Why saved virtio state cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum VirtioStateError {
    #[error("virtio state version {0} is not the supported version {VIRTIO_STATE_VERSION}")]
    Version(u32),
    #[error("the saved device has type {saved}, this one {actual}")]
    DeviceType { saved: u32, actual: u32 },
    #[error("the saved device has {saved} queues, this one {actual}")]
    QueueCount { saved: usize, actual: usize },
    #[error("invalid saved queue size {0}")]
    QueueSize(u16),
    #[error("cannot re-activate the device: {0}")]
    Activate(#[source] super::ActivateError),
    #[error("the saved device data does not fit this device: {0}")]
    Data(String),
}

/// What a device holds beyond its queues that the guest has not received yet, saved so a restore
/// loses none of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceData {
    /// Nothing pending.
    #[default]
    None,
    /// virtio-net: a frame read from the TAP (virtio-net header first) that waits for receive buffers.
    NetRxFrame(Vec<u8>),
    /// virtio-console: input not yet moved into receive buffers.
    ConsoleInput(Vec<u8>),
}

/// One virtio queue: the driver's registers and where the device is in the rings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    pub max_size: u16,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
    pub next_avail: u16,
    pub next_used: u16,
    pub event_idx: bool,
}

impl QueueState {
    /// The state of `q`.
    pub fn save(q: &Queue) -> Self {
        Self {
            max_size: q.max_size(),
            size: q.size(),
            ready: q.ready(),
            desc_table: q.desc_table(),
            avail_ring: q.avail_ring(),
            used_ring: q.used_ring(),
            next_avail: q.next_avail(),
            next_used: q.next_used(),
            event_idx: q.event_idx_enabled(),
        }
    }

    /// A queue in this state.
    pub fn restore(&self) -> Result<Queue, VirtioStateError> {
        let mut q =
            Queue::new(self.max_size).map_err(|_| VirtioStateError::QueueSize(self.max_size))?;
        q.set_size(self.size);
        q.set_ready(self.ready);
        let split = |a: u64| (Some(a as u32), Some((a >> 32) as u32));
        let (lo, hi) = split(self.desc_table);
        q.set_desc_table_address(lo, hi);
        let (lo, hi) = split(self.avail_ring);
        q.set_avail_ring_address(lo, hi);
        let (lo, hi) = split(self.used_ring);
        q.set_used_ring_address(lo, hi);
        q.set_next_avail(self.next_avail);
        q.set_next_used(self.next_used);
        q.set_event_idx(self.event_idx);
        Ok(q)
    }
}

/// A virtio-mmio transport: every driver-visible register, each queue, and whether the device is active.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmioTransportState {
    pub version: u32,
    pub device_type: u32,
    pub features_sel: u32,
    pub acked_features_sel: u32,
    pub acked_features: u64,
    pub queue_sel: u32,
    pub status: u32,
    pub config_generation: u32,
    pub active: bool,
    pub interrupt_status: u32,
    /// The device's live queues when active (with their ring indices), else the registers written so far.
    pub queues: Vec<QueueState>,
    /// What the device holds for the guest beyond the queues.
    #[serde(default)]
    pub data: DeviceData,
}
