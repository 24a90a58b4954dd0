//! The VM's devices, by the bus they sit on: [`mmio::MmioDeviceManager`] the virtio devices (MMIO windows,
//! IRQs, ioeventfds, command-line entries), [`pio::PortIoDeviceManager`] the legacy port-I/O devices (8250
//! UART, i8042, debug-exit, boot-time marker). The builder asks each for its devices and its bus; every
//! address, port and IRQ comes from [`crate::arch::x86_64::layout`].

pub mod mmio;
pub mod pio;

pub use mmio::{DeviceError, MmioDeviceManager};
pub use pio::{PioError, PortIoDeviceManager};
