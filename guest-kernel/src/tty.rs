//! The console as a terminal, for now: reads wait for input from the UART (or virtio-console).
//! Line discipline, job control and termios come with the processes issue.
#![deny(unsafe_code)]

/// Reads at least one byte of console input into `buf`, waiting for it.
pub fn read(buf: &mut [u8]) -> usize {
    if buf.is_empty() {
        return 0;
    }
    loop {
        let n = crate::drivers::serial::read_buffered(buf);
        if n > 0 {
            return n;
        }
        let n = crate::drivers::virtio::console_read(buf);
        if n > 0 {
            return n;
        }
        crate::arch::cpu::enable_and_halt();
    }
}
