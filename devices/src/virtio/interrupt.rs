//! The interrupt a virtio-mmio device raises: a bit in InterruptStatus plus a pulse on an irqfd.
//!
//! The device sets [`VirtioInterrupt::USED_RING`] after adding buffers to a used ring, or
//! [`VirtioInterrupt::CONFIG_CHANGE`] after changing its configuration (or needing a reset), and writes
//! the `EventFd`, which the VMM registered with KVM as an irqfd for the device's IRQ line. The driver reads
//! InterruptStatus and acknowledges bits through InterruptACK, both served by the transport from the same
//! shared atomic.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Interrupt state shared between a transport and its device.
#[derive(Debug)]
pub struct VirtioInterrupt {
    status: AtomicU32,
    irq_evt: EventFd,
}

impl VirtioInterrupt {
    /// InterruptStatus bit 0: a used ring was updated.
    pub const USED_RING: u32 = 1;
    /// InterruptStatus bit 1: the configuration changed.
    pub const CONFIG_CHANGE: u32 = 2;

    /// A new interrupt with its own irqfd `EventFd`.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            status: AtomicU32::new(0),
            irq_evt: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// The EventFd to register as the irqfd of the device's IRQ.
    pub fn irq_evt(&self) -> &EventFd {
        &self.irq_evt
    }

    /// Sets `bits` in InterruptStatus and pulses the IRQ.
    pub fn trigger(&self, bits: u32) -> io::Result<()> {
        self.status.fetch_or(bits, Ordering::SeqCst);
        self.irq_evt.write(1)
    }

    /// Signals that a used ring changed, logging (not failing) if the EventFd cannot be written.
    pub fn signal_used_queue(&self) {
        if let Err(e) = self.trigger(Self::USED_RING) {
            log::error!("virtio: cannot signal used queue: {e}");
        }
    }

    /// Signals a configuration change.
    pub fn signal_config_change(&self) {
        if let Err(e) = self.trigger(Self::CONFIG_CHANGE) {
            log::error!("virtio: cannot signal config change: {e}");
        }
    }

    /// The current InterruptStatus.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK: clears the acknowledged bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Clears all bits (device reset).
    pub fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_sets_bits_and_pulses_ack_clears() {
        let i = VirtioInterrupt::new().unwrap();
        i.signal_used_queue();
        i.signal_config_change();
        assert_eq!(i.status(), 3);
        assert_eq!(i.irq_evt().read().unwrap(), 2);
        i.ack(VirtioInterrupt::USED_RING);
        assert_eq!(i.status(), VirtioInterrupt::CONFIG_CHANGE);
        i.clear();
        assert_eq!(i.status(), 0);
    }
}
