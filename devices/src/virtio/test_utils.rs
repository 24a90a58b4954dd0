//! Test helpers: guest memory and a minimal driver that programs an [`MmioTransport`] through its registers.

use vm_memory::GuestAddress;

use super::mmio::MmioTransport;
use super::{status, VIRTIO_F_VERSION_1};
use crate::bus::BusDevice;
use crate::GuestMemoryMmap;

/// Guest memory of `size` bytes at address 0.
pub fn guest_memory(size: usize) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).expect("test guest memory")
}

/// Reads a 32-bit transport register.
pub fn read_reg(t: &mut MmioTransport, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(offset, &mut b);
    u32::from_le_bytes(b)
}

/// Writes a 32-bit transport register.
pub fn write_reg(t: &mut MmioTransport, offset: u64, v: u32) {
    t.write(offset, &v.to_le_bytes());
}

/// Where one queue's rings live, as a driver would configure them.
#[derive(Debug, Clone, Copy)]
pub struct QueueLayout {
    /// Queue size.
    pub size: u16,
    /// Descriptor table.
    pub desc: GuestAddress,
    /// Available ring.
    pub avail: GuestAddress,
    /// Used ring.
    pub used: GuestAddress,
}

/// Runs the driver side of initialisation (virtio 1.x, 3.1.1): reset, ACKNOWLEDGE, DRIVER, features
/// (`features` | VERSION_1, masked by what the device offers), FEATURES_OK, queues, DRIVER_OK.
/// Returns the final Status register.
pub fn init_device(t: &mut MmioTransport, features: u64, queues: &[QueueLayout]) -> u32 {
    write_reg(t, 0x70, 0);
    write_reg(t, 0x70, status::ACKNOWLEDGE);
    write_reg(t, 0x70, status::ACKNOWLEDGE | status::DRIVER);
    write_reg(t, 0x14, 0);
    let lo = u64::from(read_reg(t, 0x10));
    write_reg(t, 0x14, 1);
    let hi = u64::from(read_reg(t, 0x10));
    let offered = lo | (hi << 32);
    let wanted = (features | (1u64 << VIRTIO_F_VERSION_1)) & offered;
    write_reg(t, 0x24, 0);
    write_reg(t, 0x20, wanted as u32);
    write_reg(t, 0x24, 1);
    write_reg(t, 0x20, (wanted >> 32) as u32);
    let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
    write_reg(t, 0x70, s);
    if read_reg(t, 0x70) & status::FEATURES_OK == 0 {
        return read_reg(t, 0x70);
    }
    for (i, q) in queues.iter().enumerate() {
        write_reg(t, 0x30, i as u32);
        write_reg(t, 0x38, u32::from(q.size));
        write_reg(t, 0x80, q.desc.0 as u32);
        write_reg(t, 0x84, (q.desc.0 >> 32) as u32);
        write_reg(t, 0x90, q.avail.0 as u32);
        write_reg(t, 0x94, (q.avail.0 >> 32) as u32);
        write_reg(t, 0xa0, q.used.0 as u32);
        write_reg(t, 0xa4, (q.used.0 >> 32) as u32);
        write_reg(t, 0x44, 1);
    }
    write_reg(t, 0x70, s | status::DRIVER_OK);
    read_reg(t, 0x70)
}
