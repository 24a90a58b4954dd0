//! The console as a terminal, for now: reads block (the reader sleeps on `Chan::Console`) until input
//! arrives from the UART (IRQ 4) or the polled virtio-console (checked on each timer tick while
//! someone waits). Line discipline, job control and termios come later.
#![deny(unsafe_code)]

use crate::proc::{sched, signal, Chan};
use core::sync::atomic::{AtomicBool, Ordering};
use kcore::errno::Errno;

/// Someone is blocked reading the console.
static WAITING: AtomicBool = AtomicBool::new(false);

/// Reads at least one byte of console input into `buf`, blocking for it.
pub fn read(buf: &mut [u8]) -> Result<usize, Errno> {
    if buf.is_empty() {
        return Ok(0);
    }
    loop {
        let n = crate::drivers::serial::read_buffered(buf);
        if n > 0 {
            return Ok(n);
        }
        let n = crate::drivers::virtio::console_read(buf);
        if n > 0 {
            return Ok(n);
        }
        if signal::pending_for_current() {
            return Err(Errno::EINTR);
        }
        WAITING.store(true, Ordering::Relaxed);
        sched::block(Chan::Console);
    }
}

/// Console input arrived (UART interrupt), or a timer tick while a reader waits (virtio is polled).
pub fn input_arrived() {
    if WAITING.swap(false, Ordering::Relaxed) {
        sched::wake(Chan::Console);
    }
}

/// Timer tick hook: readers of the polled virtio console re-check.
pub fn poll() {
    if WAITING.load(Ordering::Relaxed) {
        input_arrived();
    }
}
