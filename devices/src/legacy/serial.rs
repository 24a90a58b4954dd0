//! The 8250 UART (vm-superio's emulation) at COM1, with guest output going to a writer (stdout) and input
//! pushed in by the VMM thread.
//!
//! The UART holds only a 64-byte receive FIFO, so input arrives through [`SerialInput`], which keeps what did
//! not fit and retries when the guest drains the FIFO (vm-superio's `in_buffer_empty` event wakes the VMM).

use std::collections::VecDeque;
use std::io::Write;

use vm_superio::serial::SerialEvents;
use vmm_sys_util::eventfd::EventFd;

use super::EventFdTrigger;
use crate::bus::BusDevice;

/// Signals an EventFd when the guest has emptied the receive FIFO.
pub struct FifoDrained(pub EventFd);

impl SerialEvents for FifoDrained {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        // A full counter still wakes the reader.
        let _ = self.0.write(1);
    }
}

/// The UART as a bus device.
pub struct Serial {
    inner: vm_superio::Serial<EventFdTrigger, FifoDrained, Box<dyn Write + Send>>,
}

impl Serial {
    /// A UART that raises `irq` for interrupts, signals `drained` when its receive FIFO empties, and writes
    /// guest output to `out`.
    pub fn new(irq: EventFd, drained: EventFd, out: Box<dyn Write + Send>) -> Self {
        Self {
            inner: vm_superio::Serial::with_events(EventFdTrigger(irq), FifoDrained(drained), out),
        }
    }

    /// Moves as much of `pending` into the receive FIFO as fits.
    pub fn push_input(&mut self, pending: &mut VecDeque<u8>) {
        while !pending.is_empty() && self.inner.fifo_capacity() > 0 {
            let (front, _) = pending.as_slices();
            match self.inner.enqueue_raw_bytes(front) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(e) => {
                    log::warn!("serial input dropped: {e:?}");
                    pending.clear();
                }
            }
        }
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (u8::try_from(offset), data) {
            (Ok(off), [byte]) => *byte = self.inner.read(off),
            (_, data) => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(off), [byte]) = (u8::try_from(offset), data) {
            if let Err(e) = self.inner.write(off, *byte) {
                log::warn!("serial write failed: {e:?}");
            }
        }
    }
}

/// Most input the VMM buffers for a guest that is not reading; past this, host input is not read (the
/// terminal's own buffer holds it).
pub const MAX_PENDING_INPUT: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_reaches_the_writer_and_input_waits_for_room() {
        let sink = Sink::default();
        let irq = EventFd::new(0).unwrap();
        let drained = EventFd::new(0).unwrap();
        let mut uart = Serial::new(
            irq.try_clone().unwrap(),
            drained.try_clone().unwrap(),
            Box::new(sink.clone()),
        );
        for b in b"hi" {
            uart.write(0, &[*b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hi");

        let mut pending: VecDeque<u8> = (0..100u8).collect();
        uart.push_input(&mut pending);
        assert_eq!(pending.len(), 100 - 64);
        let mut b = [0u8];
        uart.read(0, &mut b);
        assert_eq!(b[0], 0);
        // Odd-sized accesses read as all ones.
        let mut two = [0u8; 2];
        uart.read(0, &mut two);
        assert_eq!(two, [0xff, 0xff]);
    }
}
