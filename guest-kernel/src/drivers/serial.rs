//! The 8250/16550 UART at COM1: polled output from the first instruction, receive interrupts (IRQ 4) into
//! a small input ring for console reads.

use crate::arch::cpu::{inb, outb};
use crate::arch::layout::COM1_PORT;
use crate::sync::KCell;

const DATA: u16 = COM1_PORT;
const IER: u16 = COM1_PORT + 1;
const FCR: u16 = COM1_PORT + 2;
const LCR: u16 = COM1_PORT + 3;
const MCR: u16 = COM1_PORT + 4;
const LSR: u16 = COM1_PORT + 5;
const LSR_DATA_READY: u8 = 1;

/// Programs 115200 8N1 with FIFOs, interrupts off.
pub fn init() {
    outb(IER, 0);
    outb(LCR, 0x80);
    outb(DATA, 1);
    outb(IER, 0);
    outb(LCR, 0x03);
    outb(FCR, 0xc7);
    outb(MCR, 0x0b);
}

/// Turns on the receive interrupt (after the IOAPIC routes IRQ 4).
pub fn enable_rx_interrupt() {
    outb(IER, 0x01);
}

/// Writes bytes. The virtual UARTs here accept every byte at once, so the transmitter is not polled.
pub fn write(bytes: &[u8]) {
    for &b in bytes {
        outb(DATA, b);
    }
}

struct Ring {
    buf: [u8; 256],
    head: usize,
    len: usize,
}

static INPUT: KCell<Ring> = KCell::new(Ring {
    buf: [0; 256],
    head: 0,
    len: 0,
});

/// IRQ 4: drains the receiver into the input ring.
pub fn irq() {
    let mut r = INPUT.borrow_mut();
    while inb(LSR) & LSR_DATA_READY != 0 {
        let b = inb(DATA);
        if r.len < r.buf.len() {
            let i = (r.head + r.len) % r.buf.len();
            r.buf[i] = b;
            r.len += 1;
        }
    }
}

/// Moves buffered input into `out`; returns how many bytes.
pub fn read_buffered(out: &mut [u8]) -> usize {
    // Also poll, in case the receive interrupt is not wired up.
    drop(INPUT.borrow());
    irq();
    let mut r = INPUT.borrow_mut();
    let n = out.len().min(r.len);
    for o in out.iter_mut().take(n) {
        *o = r.buf[r.head];
        r.head = (r.head + 1) % r.buf.len();
        r.len -= 1;
    }
    n
}
