//! The legacy port-I/O devices of one VM: the 8250 UART (COM1), the i8042 (keyboard IRQ, reset and
//! Ctrl-Alt-Del), the debug-exit port and the boot-time marker, each on its ports of the PIO bus, the UART
//! and the i8042 with an irqfd for their IRQ.
//!
//! [`PortIoDeviceManager::new`] creates the devices and the bus without KVM (they need only the VM's
//! [`ExitSignal`], the UART's output and the process start time); [`PortIoDeviceManager::register_irqs`]
//! then connects their IRQs to KVM's irqchip. Ports and IRQs come from `arch::x86_64::layout`.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::x86_64::layout;
use crate::introspect::channel::{ChannelPort, GuestChannel};
use crate::introspect::trace::{TracePort, Tracer};
use devices::bus::{Bus, BusError};
use devices::legacy::{BootMarker, DebugExit, ExitSignal, Serial, I8042};

/// Errors from creating or wiring the port-I/O devices.
#[derive(Debug, thiserror::Error)]
pub enum PioError {
    #[error("cannot create an eventfd for a port-I/O device: {0}")]
    EventFd(#[source] std::io::Error),
    #[error("cannot place a port-I/O device on the bus: {0}")]
    Bus(#[source] BusError),
    #[error("cannot connect IRQ {irq} to KVM: {source}")]
    Irqfd {
        irq: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// The VM's port-I/O devices and their bus.
pub struct PortIoDeviceManager {
    /// The PIO bus the vCPUs dispatch `in`/`out` exits to.
    pub bus: Bus,
    pub serial: Arc<Mutex<Serial>>,
    /// Signalled when the guest has emptied the UART's receive FIFO.
    pub serial_drained: EventFd,
    /// The keyboard controller (Ctrl-Alt-Del from the API).
    pub i8042: Arc<Mutex<I8042>>,
    serial_irq: EventFd,
    i8042_irq: EventFd,
    /// The guest kernel's introspection channel (`GET /guest/processes`).
    pub guest_channel: Arc<GuestChannel>,
}

impl PortIoDeviceManager {
    /// Creates the four devices on their ports. `serial_out` receives the UART's output; `start` is when
    /// the process started and `boot_timer` whether the marker logs (`--boot-timer`).
    pub fn new(
        exit: &Arc<ExitSignal>,
        serial_out: Box<dyn Write + Send>,
        start: Instant,
        boot_timer: bool,
    ) -> Result<Self, PioError> {
        let eventfd = || EventFd::new(EFD_NONBLOCK).map_err(PioError::EventFd);
        let serial_irq = eventfd()?;
        let serial_drained = eventfd()?;
        let serial = Arc::new(Mutex::new(Serial::new(
            serial_irq.try_clone().map_err(PioError::EventFd)?,
            serial_drained.try_clone().map_err(PioError::EventFd)?,
            serial_out,
        )));
        let i8042_irq = eventfd()?;
        let i8042 = Arc::new(Mutex::new(I8042::new(
            exit.clone(),
            i8042_irq.try_clone().map_err(PioError::EventFd)?,
        )));
        let mut bus = Bus::new();
        let mut insert = |device, port: u16, len: u16| {
            bus.insert(device, port.into(), len.into())
                .map_err(PioError::Bus)
        };
        insert(serial.clone(), layout::SERIAL_PORT, layout::SERIAL_PORT_LEN)?;
        insert(i8042.clone(), layout::I8042_PORT, layout::I8042_PORT_LEN)?;
        insert(
            Arc::new(Mutex::new(DebugExit::new(exit.clone()))),
            layout::DEBUG_EXIT_PORT,
            layout::DEBUG_EXIT_PORT_LEN,
        )?;
        insert(
            Arc::new(Mutex::new(BootMarker::new(start, boot_timer))),
            layout::BOOT_MARKER_PORT,
            layout::BOOT_MARKER_PORT_LEN,
        )?;
        let guest_channel = Arc::new(GuestChannel::new(eventfd()?, eventfd()?));
        insert(
            Arc::new(Mutex::new(ChannelPort(guest_channel.clone()))),
            layout::INTROSPECT_PORT,
            layout::INTROSPECT_PORT_LEN,
        )?;
        Ok(Self {
            bus,
            serial,
            serial_drained,
            i8042,
            serial_irq,
            i8042_irq,
            guest_channel,
        })
    }

    /// Places the syscall tracer (`PUT`/`GET /guest/trace`) on its ports; it reads the guest's ring in
    /// `mem`.
    pub fn attach_tracer(
        &mut self,
        mem: devices::GuestMemoryMmap,
    ) -> Result<Arc<Tracer>, PioError> {
        let tracer = Arc::new(Tracer::new(mem));
        self.bus
            .insert(
                Arc::new(Mutex::new(TracePort(tracer.clone()))),
                layout::TRACE_PORT.into(),
                layout::TRACE_PORT_LEN.into(),
            )
            .map_err(PioError::Bus)?;
        Ok(tracer)
    }

    /// Connects the UART's and the i8042's IRQs to KVM's irqchip.
    pub fn register_irqs(&self, vm_fd: &VmFd) -> Result<(), PioError> {
        for (evt, irq) in [
            (&self.serial_irq, layout::SERIAL_IRQ),
            (&self.i8042_irq, layout::I8042_IRQ),
            (self.guest_channel.irq(), layout::INTROSPECT_IRQ),
        ] {
            vm_fd
                .register_irqfd(evt, irq)
                .map_err(|source| PioError::Irqfd { irq, source })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_sit_on_their_layout_ports() {
        let exit = Arc::new(ExitSignal::new().unwrap());
        let pio = PortIoDeviceManager::new(&exit, Box::new(std::io::sink()), Instant::now(), false)
            .unwrap();
        let mut byte = [0u8];
        for (port, len) in [
            (layout::SERIAL_PORT, layout::SERIAL_PORT_LEN),
            (layout::I8042_PORT, layout::I8042_PORT_LEN),
            (layout::BOOT_MARKER_PORT, layout::BOOT_MARKER_PORT_LEN),
        ] {
            assert!(pio.bus.read(port.into(), &mut byte), "{port:#x}");
            assert!(pio.bus.read(u64::from(port + len - 1), &mut byte));
            assert!(!pio.bus.read(u64::from(port + len), &mut byte));
        }
        assert!(!pio
            .bus
            .read(u64::from(layout::DEBUG_EXIT_PORT - 1), &mut byte));
        // A write to the debug-exit port ends the VM with that status.
        assert!(pio.bus.write(layout::DEBUG_EXIT_PORT.into(), &[7]));
        assert_eq!(exit.code(), Some(7));
    }
}
