//! Devices the VMM emulates for its guests.
//!
//! Everything here is independent of KVM: a device sees guest memory (vm-memory), EventFds for interrupts, and
//! byte-level reads and writes dispatched to it through a [`bus::Bus`]. The VMM crate creates the devices, puts
//! them on its PIO and MMIO buses, and wires their EventFds to KVM (irqfd, ioeventfd).

pub mod bus;
pub mod disk;
pub mod legacy;
pub mod virtio;

/// Guest memory as every device sees it.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;
