//! The i8042 keyboard controller, emulated only as far as its CPU reset line: a guest writing 0xfe to the
//! command port (0x64) ends the VM with status 0, which is how Linux reboots with `reboot=k`.

use std::sync::Arc;

use super::ExitSignal;
use crate::bus::BusDevice;

/// i8042 command: pulse the CPU reset line.
const CMD_RESET_CPU: u8 = 0xfe;
/// Offset of the command/status port from the data port.
const COMMAND_OFFSET: u64 = 4;

/// The i8042 device.
pub struct I8042 {
    exit: Arc<ExitSignal>,
}

impl I8042 {
    /// A controller whose reset ends the VM through `exit`.
    pub fn new(exit: Arc<ExitSignal>) -> Self {
        Self { exit }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status 0: output buffer empty, input buffer empty. Data reads return 0.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == COMMAND_OFFSET && data.first() == Some(&CMD_RESET_CPU) {
            log::info!("guest reset the CPU through the i8042");
            self.exit.request(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_reset_command_ends_the_vm() {
        let exit = Arc::new(ExitSignal::new().unwrap());
        let mut dev = I8042::new(exit.clone());
        dev.write(0, &[CMD_RESET_CPU]);
        dev.write(COMMAND_OFFSET, &[0xd1]);
        assert_eq!(exit.code(), None);
        dev.write(COMMAND_OFFSET, &[CMD_RESET_CPU]);
        assert_eq!(exit.code(), Some(0));
    }
}
