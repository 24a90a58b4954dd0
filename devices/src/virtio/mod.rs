//! Virtio devices over the MMIO transport (virtio 1.x, virtio-mmio version 2).
//!
//! Data flow: the guest driver programs a device through its 4 KiB MMIO window, served by
//! [`mmio::MmioTransport`] (a [`BusDevice`](crate::bus::BusDevice) on the VMM's MMIO bus, running on vCPU
//! threads). When the driver sets DRIVER_OK, the transport hands guest memory, the configured
//! `virtio_queue::Queue`s and a shared [`VirtioInterrupt`] to the device ([`VirtioDevice::activate`]).
//! From then on the driver kicks a queue by writing QueueNotify, which the VMM turns into a write to that
//! queue's notify `EventFd` (a KVM ioeventfd at window + 0x50 with datamatch = queue index; the transport
//! also writes the EventFd itself if the access reaches it). Each device is an event-manager
//! `MutEventSubscriber` on the VMM thread, woken by those EventFds; it processes the queue, fills the used
//! ring and raises the interrupt through an irqfd `EventFd`. A driver writing 0 to Status resets the
//! device, which drops its queues and memory until the next activation.
//!
//! Nothing the guest writes can panic the VMM: bad registers are ignored, bad descriptors or requests get an
//! error status or are dropped with a rate-limited warning ([`LogLimiter`]).

pub mod block;
pub mod console;
pub mod interrupt;
pub mod mmio;
pub mod net;
pub mod persist;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;
pub mod vsock;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use crate::GuestMemoryMmap;

pub use block::{Block, BlockConfig, BlockMetrics, IoEngine};
pub use console::Console;
pub use interrupt::VirtioInterrupt;
pub use mmio::MmioTransport;
pub use net::{Net, NetConfig, NetMetrics};
pub use vsock::{Vsock, VsockConfig, VsockMetrics, TYPE_VSOCK};

/// Virtio device ids (virtio 1.x, 5 "Device Types").
pub const TYPE_NET: u32 = 1;
/// Virtio block device id.
pub const TYPE_BLOCK: u32 = 2;
/// Virtio console device id.
pub const TYPE_CONSOLE: u32 = 3;

/// Feature bit: the device complies with virtio 1.x (mandatory for MMIO version 2).
pub const VIRTIO_F_VERSION_1: u32 = 32;

/// Device status bits (virtio 1.x, 2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest knows how to drive it.
    pub const DRIVER: u32 = 2;
    /// The driver is set up and ready to drive the device.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The guest gave up on the device.
    pub const FAILED: u32 = 0x80;
}

/// Errors from activating a device.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver did not provide as many queues as the device needs, or one is unusable.
    #[error("queue {0} is not ready or not valid in guest memory")]
    BadQueue(usize),
    /// Activation was requested twice without a reset.
    #[error("device is already active")]
    AlreadyActive,
}

/// The first `N` of the queues handed to [`VirtioDevice::activate`], in order, each ready; otherwise
/// `BadQueue` with the index of the first one missing or not ready.
pub fn ready_queues<const N: usize>(queues: Vec<Queue>) -> Result<[Queue; N], ActivateError> {
    let mut ready = Vec::with_capacity(N);
    let mut it = queues.into_iter();
    for i in 0..N {
        ready.push(
            it.next()
                .filter(|q| q.ready())
                .ok_or(ActivateError::BadQueue(i))?,
        );
    }
    // Exactly N were pushed above.
    ready.try_into().map_err(|_| ActivateError::BadQueue(N))
}

/// What a virtio device implements; the transport does the rest.
pub trait VirtioDevice: Send {
    /// The virtio device id ([`TYPE_NET`], [`TYPE_BLOCK`], [`TYPE_CONSOLE`], [`TYPE_VSOCK`]).
    fn device_type(&self) -> u32;
    /// The maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// The feature bits the device offers.
    fn avail_features(&self) -> u64;
    /// The features the driver accepted (a subset of `avail_features`, checked by the transport).
    fn set_acked_features(&mut self, features: u64);
    /// Reads device-specific configuration space at `offset` (relative to config space start).
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes device-specific configuration space.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device with the driver-configured queues.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<VirtioInterrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError>;
    /// Stops the device and forgets its queues (the driver wrote 0 to Status).
    fn reset(&mut self);
    /// One notify EventFd per queue, in queue order. The VMM registers them as ioeventfds.
    fn queue_events(&self) -> &[EventFd];
    /// The live queues of an active device, in queue order (for a snapshot); empty when inactive.
    fn saved_queues(&self) -> Vec<persist::QueueState>;
    /// Completes whatever is in flight before a snapshot (requests, writes to the disk); the vCPUs are
    /// paused, so nothing new arrives.
    fn prepare_save(&mut self) {}
    /// What the device holds for the guest beyond its queues (for a snapshot).
    fn save_data(&self) -> persist::DeviceData {
        persist::DeviceData::None
    }
    /// Takes back saved [`persist::DeviceData`], before the device is re-activated.
    fn restore_data(
        &mut self,
        data: &persist::DeviceData,
    ) -> Result<(), persist::VirtioStateError> {
        match data {
            persist::DeviceData::None => Ok(()),
            d => Err(persist::VirtioStateError::Data(format!(
                "device type {} holds no {d:?}",
                self.device_type()
            ))),
        }
    }
}

/// Whether the driver wants an interrupt for this queue's used buffers: not when it set
/// VRING_AVAIL_F_NO_INTERRUPT in the available ring's flags (virtio 1.x, 2.7.7.2; EVENT_IDX is not
/// offered). An unreadable ring gets its interrupt.
pub(crate) fn wants_interrupt(mem: &GuestMemoryMmap, queue: &Queue) -> bool {
    use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
    use vm_memory::{Bytes, GuestAddress};
    mem.read_obj::<u16>(GuestAddress(queue.avail_ring()))
        .map_or(true, |flags| {
            u16::from_le(flags) & VRING_AVAIL_F_NO_INTERRUPT as u16 == 0
        })
}

/// Signals every queue's notification eventfd once, so the thread serving the device looks at what the
/// guest has queued (after activation, a restore or a rate limiter change); a failure is logged with
/// `what` (e.g. "virtio-net: cannot kick a queue on activation").
pub(crate) fn kick_queues(evts: &[EventFd], what: &str) {
    for evt in evts {
        if let Err(e) = evt.write(1) {
            log::error!("{what}: {e}");
        }
    }
}

/// Fills `data` from `config` at `offset`, with zeroes past its end (guest reads are never out of range).
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(offset) = usize::try_from(offset) else {
        return;
    };
    if offset < config.len() {
        let n = data.len().min(config.len() - offset);
        data[..n].copy_from_slice(&config[offset..offset + n]);
    }
}

/// Lets through a burst of warnings per interval, then counts the rest and reports how many were dropped.
///
/// A guest can produce malformed requests as fast as it likes; the VMM's log must not grow with them.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    burst: u32,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new(Duration::from_secs(5), 10)
    }
}

impl LogLimiter {
    /// At most `burst` messages per `interval`.
    pub fn new(interval: Duration, burst: u32) -> Self {
        Self {
            interval,
            burst,
            window_start: None,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// Logs `args` as a warning unless the budget of this interval is spent. Returns whether it logged.
    pub fn warn(&mut self, args: fmt::Arguments<'_>) -> bool {
        let now = Instant::now();
        let expired = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= self.interval);
        if expired {
            if self.suppressed > 0 {
                log::warn!("{} similar warnings suppressed", self.suppressed);
            }
            self.window_start = Some(now);
            self.in_window = 0;
            self.suppressed = 0;
        }
        if self.in_window < self.burst {
            self.in_window += 1;
            log::warn!("{args}");
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_a_burst_then_suppresses() {
        let mut l = LogLimiter::new(Duration::from_secs(3600), 3);
        let logged = (0..10).filter(|i| l.warn(format_args!("bad {i}"))).count();
        assert_eq!(logged, 3);
        assert_eq!(l.suppressed, 7);
    }

    #[test]
    fn config_reads_are_bounded() {
        let cfg = [1u8, 2, 3, 4];
        let mut d = [0xffu8; 4];
        read_config_bytes(&cfg, 2, &mut d);
        assert_eq!(d, [3, 4, 0, 0]);
        read_config_bytes(&cfg, u64::MAX, &mut d);
        assert_eq!(d, [0; 4]);
    }
}
