//! Device drivers: the 8250 console UART and virtio-mmio devices (block, console, net, vsock) found on the command line.

pub mod i8042;
pub mod introspect;
pub mod serial;
pub mod trace;
pub mod virtio;
pub mod virtio_net;
pub mod virtio_vsock;

use crate::arch::layout::{COM1_IRQ, I8042_KBD_IRQ, INTROSPECT_IRQ};
use core::sync::atomic::{AtomicU32, Ordering};

/// The network device's IRQ (u32::MAX: none).
static NET_IRQ: AtomicU32 = AtomicU32::new(u32::MAX);

/// Routes the network device's IRQ to the stack.
pub fn set_net_irq(irq: u8) {
    NET_IRQ.store(irq as u32, Ordering::Relaxed);
    crate::arch::apic::route_irq(irq);
}

/// The vsock device's IRQ (u32::MAX: none).
static VSOCK_IRQ: AtomicU32 = AtomicU32::new(u32::MAX);

/// Routes the vsock device's IRQ to AF_VSOCK.
pub fn set_vsock_irq(irq: u8) {
    VSOCK_IRQ.store(irq as u32, Ordering::Relaxed);
    crate::arch::apic::route_irq(irq);
}

/// Handles device interrupt `irq` (an IOAPIC pin).
pub fn irq(irq: u8) {
    if irq as u32 == NET_IRQ.load(Ordering::Relaxed) {
        crate::net::irq();
    }
    virtio::block_irq(irq);
    if irq as u32 == VSOCK_IRQ.load(Ordering::Relaxed) {
        crate::net::vsock::irq();
    }
    if irq == I8042_KBD_IRQ {
        i8042::irq();
    }
    if irq == INTROSPECT_IRQ {
        introspect::irq();
    }
    if irq == COM1_IRQ {
        serial::irq();
        crate::tty::input_arrived();
    }
}
