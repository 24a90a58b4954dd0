//! Legacy PC devices on the port I/O bus: the 8250 UART, the i8042 (reset line, Ctrl-Alt-Del), the debug-exit port
//! and the boot-time marker.
//!
//! These devices run on vCPU threads (inside a port I/O exit). Anything that must end the VM goes through one
//! shared [`ExitSignal`], which the VMM thread waits on.

mod boot_marker;
mod debug_exit;
mod i8042;
mod serial;

pub use boot_marker::BootMarker;
pub use debug_exit::DebugExit;
pub use i8042::{I8042Error, I8042State, I8042StateError, I8042};
pub use serial::{Serial, SerialDeviceState, SerialStateError, MAX_PENDING_INPUT};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// An [`EventFd`] that raises an interrupt (through KVM's irqfd) when triggered.
pub struct EventFdTrigger(pub EventFd);

impl vm_superio::Trigger for EventFdTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Why and with which status the VM ends. The first request wins; later ones are ignored.
pub struct ExitSignal {
    evt: EventFd,
    code: Mutex<Option<i32>>,
    /// Set once `code` is; lets vCPUs check after every exit without taking the lock.
    requested: AtomicBool,
}

impl ExitSignal {
    /// A signal nobody has raised yet.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            evt: EventFd::new(EFD_NONBLOCK)?,
            code: Mutex::new(None),
            requested: AtomicBool::new(false),
        })
    }

    /// Asks the VMM to end the VM with exit status `code`.
    pub fn request(&self, code: i32) {
        let mut slot = self.code.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(code);
            self.requested.store(true, Ordering::Release);
        }
        // A full eventfd counter still wakes the reader, so an error here loses nothing.
        let _ = self.evt.write(1);
    }

    /// Whether the VM has been asked to end (lock-free, for the vCPU run loop).
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// The exit status asked for, if any.
    pub fn code(&self) -> Option<i32> {
        *self.code.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The EventFd the VMM thread polls.
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}
