//! The boot-time marker port (Firecracker's convention): when the guest writes to it, the VMM logs how long
//! the guest took to get there, measured from the start of the `microvm` process.

use std::time::Instant;

use crate::bus::BusDevice;

/// The boot-time marker device.
pub struct BootMarker {
    start: Instant,
    enabled: bool,
}

impl BootMarker {
    /// `start` is when the VMM process started; nothing is logged unless `enabled`.
    pub fn new(start: Instant, enabled: bool) -> Self {
        Self { start, enabled }
    }
}

impl BusDevice for BootMarker {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) {
        if self.enabled {
            let us = self.start.elapsed().as_micros();
            log::info!(target: "boot_timer", "guest boot time: {us} us since process start");
        }
    }
}
