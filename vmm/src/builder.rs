//! Turns a validated [`VmConfig`] into a ready-to-run [`Vm`], in one straight line: guest memory, kernel and
//! boot information (none of which needs KVM, so bad input is reported before KVM is touched), then KVM, the
//! VM with its irqchip and PIT, the legacy devices on the port bus, and the vCPUs.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvm_ioctls::{Kvm, VmFd};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::x86_64::{layout, mptable, regs};
use crate::boot::{self, BootError};
use crate::config::{ConfigError, ConsoleKind, SerialMode, VmConfig};
use crate::device_manager::{DeviceError, DeviceManager};
use crate::vstate::kvm::{self, KvmError};
use crate::vstate::memory::{self, MemoryError};
use crate::vstate::vcpu::{self, PauseControl, Vcpu, VcpuError};
use crate::vstate::vm::{self, VmError};
use devices::bus::{Bus, BusError};
use devices::legacy::{BootMarker, DebugExit, ExitSignal, Serial, I8042};
use devices::GuestMemoryMmap;

/// Why a VM could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Kvm(#[from] KvmError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error("--vcpus {requested} is more than KVM allows on this host ({max})")]
    TooManyVcpus { requested: u8, max: usize },
    #[error(transparent)]
    MpTable(#[from] mptable::MpTableError),
    #[error("cannot write the boot page tables: {0}")]
    BootTables(#[source] vm_memory::GuestMemoryError),
    #[error("cannot create an eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    #[error("cannot connect IRQ {irq} to KVM: {source}")]
    Irqfd {
        irq: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot place a device on the bus: {0}")]
    Bus(#[from] BusError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("kernel command line with the device entries is {len} bytes; at most {max} fit")]
    CmdlineTooLong { len: usize, max: usize },
}

/// A built VM, ready for its vCPU threads.
///
/// Field order is drop order: the vCPUs and the VM file descriptor go before the memory they map.
pub struct Vm {
    pub vcpus: Vec<Vcpu>,
    pub vm_fd: VmFd,
    pub kvm: Kvm,
    pub mem: GuestMemoryMmap,
    pub exit: Arc<ExitSignal>,
    pub serial: Arc<Mutex<Serial>>,
    /// Signalled when the guest has emptied the UART's receive FIFO.
    pub serial_drained: EventFd,
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    /// The virtio devices (their event subscribers, disks to flush at exit, the virtio console, network
    /// counters).
    pub devices: DeviceManager,
    /// Set to make every vCPU thread leave its run loop.
    pub stop: Arc<AtomicBool>,
    /// Pauses and resumes the vCPU threads.
    pub pause: Arc<PauseControl>,
    /// The keyboard controller (Ctrl-Alt-Del from the API).
    pub i8042: Arc<Mutex<I8042>>,
}

/// Builds the VM described by `config`. `start` is when the process started (for the boot-time marker).
pub fn build_vm(config: &VmConfig, start: Instant) -> Result<Vm, BuildError> {
    config.validate()?;
    let mem_size = config.machine.mem_size_mib << 20;
    let vcpu_count = config.machine.vcpu_count;

    let mem = memory::create(config.machine.mem_size_mib, config.machine.thp)?;
    // Virtio devices first: opening the disks and TAPs reports bad images and missing or busy TAPs before
    // KVM is touched, and their MMIO
    // windows go on the kernel command line.
    let mut devices = DeviceManager::new();
    for drive in config.ordered_drives() {
        devices.add_block(&mem, &drive)?;
    }
    if config.console == ConsoleKind::Virtio {
        devices.add_console(&mem, Box::new(std::io::stdout()))?;
    }
    for iface in &config.network_interfaces {
        devices.add_net(&mem, iface)?;
    }
    let cmdline = boot::add_kernel_params(
        config.cmdline(),
        &format!(
            "{}{}",
            config.root_args().unwrap_or_default(),
            devices.cmdline_entries()
        ),
    );
    if cmdline.len() >= layout::CMDLINE_MAX_SIZE {
        return Err(BuildError::CmdlineTooLong {
            len: cmdline.len(),
            max: layout::CMDLINE_MAX_SIZE - 1,
        });
    }
    let source = &config.boot_source;
    let kernel = boot::load_kernel(
        &mem,
        mem_size,
        &source.kernel_image_path,
        source.boot_protocol,
    )?;
    let initrd = source
        .initrd_path
        .as_deref()
        .map(|p| boot::load_initrd(&mem, mem_size, kernel.kernel_end, p))
        .transpose()?;
    let entry = boot::write_boot_info(&mem, mem_size, &kernel, &cmdline, initrd)?;
    regs::write_boot_tables(&mem, entry).map_err(BuildError::BootTables)?;
    log::debug!(
        "kernel loaded: {:?} entry {:#x}, end {:#x}",
        kernel.protocol,
        kernel.entry,
        kernel.kernel_end
    );

    let kvm = kvm::open()?;
    let max = kvm::max_vcpus(&kvm);
    if usize::from(vcpu_count) > max {
        return Err(BuildError::TooManyVcpus {
            requested: vcpu_count,
            max,
        });
    }
    if usize::from(vcpu_count) > kvm::recommended_vcpus(&kvm) {
        log::warn!(
            "{vcpu_count} vCPUs is more than KVM recommends on this host ({})",
            kvm::recommended_vcpus(&kvm)
        );
    }
    if vcpu_count > 1 {
        mptable::setup(&mem, vcpu_count)?;
    }
    let vm_fd = vm::create(&kvm, &mem)?;

    let exit = Arc::new(ExitSignal::new().map_err(BuildError::EventFd)?);
    let eventfd = || EventFd::new(EFD_NONBLOCK).map_err(BuildError::EventFd);
    let serial_irq = eventfd()?;
    vm_fd
        .register_irqfd(&serial_irq, layout::SERIAL_IRQ)
        .map_err(|source| BuildError::Irqfd {
            irq: layout::SERIAL_IRQ,
            source,
        })?;
    let serial_drained = eventfd()?;
    let serial = Arc::new(Mutex::new(Serial::new(
        serial_irq,
        serial_drained.try_clone().map_err(BuildError::EventFd)?,
        match config.serial {
            SerialMode::Stdio => Box::new(std::io::stdout()),
            SerialMode::Off => Box::new(std::io::sink()),
        },
    )));
    let mut pio = Bus::new();
    pio.insert(
        serial.clone(),
        layout::SERIAL_PORT.into(),
        layout::SERIAL_PORT_LEN.into(),
    )?;
    let kbd_irq = eventfd()?;
    vm_fd
        .register_irqfd(&kbd_irq, layout::I8042_IRQ)
        .map_err(|source| BuildError::Irqfd {
            irq: layout::I8042_IRQ,
            source,
        })?;
    let i8042 = Arc::new(Mutex::new(I8042::new(exit.clone(), kbd_irq)));
    pio.insert(
        i8042.clone(),
        layout::I8042_PORT.into(),
        layout::I8042_PORT_LEN.into(),
    )?;
    pio.insert(
        Arc::new(Mutex::new(DebugExit::new(exit.clone()))),
        layout::DEBUG_EXIT_PORT.into(),
        1,
    )?;
    pio.insert(
        Arc::new(Mutex::new(BootMarker::new(start, config.boot_timer))),
        layout::BOOT_MARKER_PORT.into(),
        1,
    )?;
    let pio = Arc::new(pio);
    let mut mmio = Bus::new();
    devices.attach(&vm_fd, &mut mmio)?;
    let mmio = Arc::new(mmio);

    let base_cpuid = vcpu::supported_cpuid(&kvm)?;
    let stop = Arc::new(AtomicBool::new(false));
    let pause = Arc::new(PauseControl::default());
    let vcpus = (0..vcpu_count)
        .map(|id| {
            Ok(Vcpu {
                id,
                fd: vcpu::create(&vm_fd, id, vcpu_count, &base_cpuid, entry)?,
                pio: pio.clone(),
                mmio: mmio.clone(),
                mem: mem.clone(),
                exit: exit.clone(),
                stop: stop.clone(),
                pause: pause.clone(),
                kernel_path: source.kernel_image_path.clone(),
                start,
            })
        })
        .collect::<Result<Vec<_>, BuildError>>()?;

    Ok(Vm {
        vcpus,
        vm_fd,
        kvm,
        mem,
        exit,
        serial,
        serial_drained,
        pio,
        mmio,
        devices,
        stop,
        pause,
        i8042,
    })
}
