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

/// Version of [`SerialDeviceState`].
pub const SERIAL_STATE_VERSION: u32 = 1;

/// The UART's registers and receive FIFO, for snapshots (vm-superio's `SerialState` with serde and a
/// version).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SerialDeviceState {
    pub version: u32,
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    pub in_buffer: Vec<u8>,
}

/// Why a saved UART state cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum SerialStateError {
    #[error("serial state version {0} is not the supported version {SERIAL_STATE_VERSION}")]
    Version(u32),
    #[error("cannot restore the UART: {0}")]
    Restore(String),
    #[error("cannot duplicate the UART's eventfds: {0}")]
    EventFd(#[source] std::io::Error),
}

impl Serial {
    /// The UART's state.
    pub fn save(&self) -> SerialDeviceState {
        let s = self.inner.state();
        SerialDeviceState {
            version: SERIAL_STATE_VERSION,
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }

    /// Puts the UART in the saved state, keeping its interrupt, events and output.
    pub fn restore(&mut self, s: &SerialDeviceState) -> Result<(), SerialStateError> {
        if s.version != SERIAL_STATE_VERSION {
            return Err(SerialStateError::Version(s.version));
        }
        let state = vm_superio::serial::SerialState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer.clone(),
        };
        let dup = |e: &EventFd| e.try_clone().map_err(SerialStateError::EventFd);
        let irq = dup(&self.inner.interrupt_evt().0)?;
        let drained = dup(&self.inner.events().0)?;
        let placeholder = vm_superio::Serial::with_events(
            EventFdTrigger(dup(&irq)?),
            FifoDrained(dup(&drained)?),
            Box::new(std::io::sink()) as Box<dyn Write + Send>,
        );
        let out = std::mem::replace(&mut self.inner, placeholder).into_writer();
        self.inner =
            vm_superio::Serial::from_state(&state, EventFdTrigger(irq), FifoDrained(drained), out)
                .map_err(|e| SerialStateError::Restore(format!("{e:?}")))?;
        Ok(())
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

    #[test]
    fn save_restore_save_gives_the_same_state() {
        let sink = Sink::default();
        let mut uart = Serial::new(
            EventFd::new(0).unwrap(),
            EventFd::new(0).unwrap(),
            Box::new(sink.clone()),
        );
        // Line control, scratch and a byte waiting in the FIFO.
        uart.write(3, &[0x03]);
        uart.write(7, &[0x5a]);
        uart.push_input(&mut VecDeque::from(vec![b'x']));
        let saved = uart.save();
        assert_eq!(saved.in_buffer, b"x");
        let text = serde_json::to_string(&saved).unwrap();
        let state: SerialDeviceState = serde_json::from_str(&text).unwrap();

        let sink2 = Sink::default();
        let mut other = Serial::new(
            EventFd::new(0).unwrap(),
            EventFd::new(0).unwrap(),
            Box::new(sink2.clone()),
        );
        other.restore(&state).unwrap();
        assert_eq!(other.save(), saved);
        let mut b = [0u8];
        other.read(0, &mut b);
        assert_eq!(b[0], b'x');
        // Output still goes to the restored UART's own writer.
        other.write(0, b"y");
        assert_eq!(&*sink2.0.lock().unwrap(), b"y");
        let bad = SerialDeviceState {
            version: 9,
            ..saved
        };
        assert!(matches!(
            other.restore(&bad),
            Err(SerialStateError::Version(9))
        ));
    }
}
