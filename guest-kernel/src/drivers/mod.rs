//! Device drivers: the 8250 console UART and virtio-mmio devices (block, console) found on the command line.

pub mod serial;
pub mod virtio;

use crate::arch::layout::COM1_IRQ;

/// Handles device interrupt `irq` (an IOAPIC pin).
pub fn irq(irq: u8) {
    if irq == COM1_IRQ {
        serial::irq();
        crate::tty::input_arrived();
    }
}
