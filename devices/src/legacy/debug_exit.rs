//! The debug-exit port: a one-byte write ends the VM, and `microvm` exits with that byte as its status.
//! Tests use it to report a result from inside the guest.

use std::sync::Arc;

use super::ExitSignal;
use crate::bus::BusDevice;

/// The debug-exit device.
pub struct DebugExit {
    exit: Arc<ExitSignal>,
}

impl DebugExit {
    /// A device that raises `exit` on any write.
    pub fn new(exit: Arc<ExitSignal>) -> Self {
        Self { exit }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let Some(&code) = data.first() {
            log::debug!("guest wrote {code} to the debug-exit port");
            self.exit.request(i32::from(code));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_write_sets_the_exit_code() {
        let exit = Arc::new(ExitSignal::new().unwrap());
        let mut dev = DebugExit::new(exit.clone());
        assert_eq!(exit.code(), None);
        dev.write(0, &[42]);
        dev.write(0, &[7]);
        assert_eq!(exit.code(), Some(42));
        assert_eq!(exit.eventfd().read().unwrap(), 2);
    }
}
