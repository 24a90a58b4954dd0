//! Device drivers: the 8250 console UART and virtio-mmio devices (block, console) found on the command line.

pub mod i8042;
pub mod serial;
pub mod virtio;

use crate::arch::layout::{COM1_IRQ, I8042_KBD_IRQ};

/// Handles device interrupt `irq` (an IOAPIC pin).
pub fn irq(irq: u8) {
    if irq == I8042_KBD_IRQ {
        i8042::irq();
    }
    if irq == COM1_IRQ {
        serial::irq();
        crate::tty::input_arrived();
    }
}
