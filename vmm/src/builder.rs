//! Turns a validated [`VmConfig`] into a ready-to-run [`Vm`], in one straight line: guest memory; then, side
//! by side, the guest's part (virtio devices, kernel and boot information, none of which needs KVM, so bad
//! input is reported before KVM's errors) and KVM's part on a second thread (the VM with its memory,
//! irqchip and PIT, the vCPUs); then the port-I/O devices ([`PortIoDeviceManager`]), the virtio devices'
//! KVM wiring and the vCPUs' boot registers.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvm_bindings::CpuId;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::{layout, mptable, regs};
use crate::boot::{self, BootError};
use crate::config::{ConfigError, ConsoleKind, SerialMode, VmConfig};
use crate::device_manager::{DeviceError, MmioDeviceManager, PioError, PortIoDeviceManager};
use crate::persist::Snapshot;
use crate::vstate::kvm::{self, KvmError};
use crate::vstate::memory::{self, MemoryError};
use crate::vstate::vcpu::{self, PauseControl, Vcpu, VcpuError};
use crate::vstate::vcpu_state;
use crate::vstate::vm::{self, VmError};
use devices::bus::Bus;
use devices::legacy::{ExitSignal, Serial, I8042};
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
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    PortIo(#[from] PioError),
    #[error("the KVM setup thread panicked")]
    SetupPanicked,
    #[error("kernel command line with the device entries is {len} bytes; at most {max} fit")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("the snapshot has {saved} vCPUs, its configuration {configured}")]
    SnapshotVcpus { saved: usize, configured: u8 },
    #[error(transparent)]
    VmState(#[from] vm::VmStateError),
    #[error(transparent)]
    VcpuState(#[from] vcpu_state::VcpuStateError),
    #[error("cannot restore the UART: {0}")]
    Serial(#[from] devices::legacy::SerialStateError),
    #[error("cannot restore the i8042: {0}")]
    I8042(#[from] devices::legacy::I8042StateError),
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
    pub devices: MmioDeviceManager,
    /// Set to make every vCPU thread leave its run loop.
    pub stop: Arc<AtomicBool>,
    /// Pauses and resumes the vCPU threads.
    pub pause: Arc<PauseControl>,
    /// The keyboard controller (Ctrl-Alt-Del from the API).
    pub i8042: Arc<Mutex<I8042>>,
    /// The guest kernel's introspection channel.
    pub guest_channel: Arc<crate::introspect::channel::GuestChannel>,
    /// The guest kernel's syscall-trace ring.
    pub tracer: Arc<crate::introspect::trace::Tracer>,
}

/// The KVM side of a VM: set up on a thread of its own while the calling thread loads the kernel and
/// opens the disks (the two halves share nothing but guest memory, which neither reads here).
struct KvmParts {
    kvm: Kvm,
    vm_fd: VmFd,
    /// For a boot created with CPUID, MSRs, FPU and LAPIC set, the registers waiting for the kernel's
    /// entry; for a restore in their saved state.
    vcpus: Vec<VcpuFd>,
}

/// /dev/kvm opened and, unless the VM is restored from a snapshot (whose vCPUs carry their own CPUID),
/// `KVM_GET_SUPPORTED_CPUID` read (0.6 ms here, most of KVM's set-up cost: the host executes CPUID for
/// every leaf, and in this nested host each one traps).
type KvmBase = Result<(Kvm, Option<CpuId>), BuildError>;

fn open_kvm(cpuid: bool) -> KvmBase {
    let kvm = kvm::open()?;
    let cpuid = if cpuid {
        Some(vcpu::supported_cpuid(&kvm)?)
    } else {
        None
    };
    Ok((kvm, cpuid))
}

/// The [`prefetch_kvm`] thread, until [`setup_kvm`] takes its result.
static PREFETCH: Mutex<Option<std::thread::JoinHandle<KvmBase>>> = Mutex::new(None);

/// Starts opening /dev/kvm and reading its CPUID on a thread of its own, so that this overlaps parsing
/// the flags, mapping guest memory and loading the kernel; the first [`build_vm`] (or a restore through
/// the API) takes the result (its errors are reported there, where they would be without it). `main`
/// calls this first thing, unless it restores a snapshot (`--restore`), which needs no CPUID and would
/// only wait for the thread.
pub fn prefetch_kvm() {
    let spawned = std::thread::Builder::new()
        .name("kvm-open".into())
        .stack_size(256 << 10)
        .spawn(|| open_kvm(true));
    if let Ok(handle) = spawned {
        *PREFETCH.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
    }
}

/// Opens /dev/kvm, creates the VM with its memory, irqchip and PIT, and its vCPUs: for a boot configured
/// for the kernel's entry (CPUID, MSRs, FPU, LAPIC; the registers come later), for a restore put in the
/// snapshot's state, the VM's (PIT, clock, irqchip), then each vCPU's, with nothing set twice.
fn setup_kvm(
    mem: &GuestMemoryMmap,
    vcpu_count: u8,
    restore: Option<&Snapshot>,
) -> Result<KvmParts, BuildError> {
    let prefetched = PREFETCH.lock().unwrap_or_else(|e| e.into_inner()).take();
    let (kvm, base_cpuid) = match prefetched.map(std::thread::JoinHandle::join) {
        Some(Ok(base)) => base?,
        Some(Err(_)) => return Err(BuildError::SetupPanicked),
        None => open_kvm(restore.is_none())?,
    };
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
    let vm_fd = vm::create(&kvm, mem)?;
    let vcpus = match restore {
        Some(state) => {
            // Firecracker's order: the vCPUs exist, then the VM's state, then each vCPU's.
            let fds = (0..vcpu_count)
                .map(|id| vcpu::create_bare(&vm_fd, id))
                .collect::<Result<Vec<_>, _>>()?;
            vm::restore_state(&vm_fd, &state.vm)?;
            for (fd, saved) in fds.iter().zip(&state.vcpus) {
                vcpu_state::restore(fd, saved)?;
            }
            fds
        }
        None => {
            let base_cpuid = match base_cpuid {
                Some(c) => c,
                None => vcpu::supported_cpuid(&kvm)?,
            };
            (0..vcpu_count)
                .map(|id| vcpu::create(&vm_fd, id, vcpu_count, &base_cpuid))
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    Ok(KvmParts { kvm, vm_fd, vcpus })
}

/// What the calling thread prepares meanwhile: the virtio devices, and the kernel in guest memory.
struct GuestParts {
    devices: MmioDeviceManager,
    /// The kernel's entry; `None` when restoring (the guest is already in memory).
    entry: Option<regs::EntryState>,
}

/// Opens the disks and TAPs (their errors come before KVM's), loads the kernel and writes the boot
/// information.
fn setup_guest(
    config: &VmConfig,
    mem: &GuestMemoryMmap,
    restoring: bool,
) -> Result<GuestParts, BuildError> {
    let mem_size = config.machine.mem_size_mib << 20;
    let mut devices = MmioDeviceManager::new();
    for drive in config.ordered_drives() {
        devices.add_block(mem, &drive)?;
    }
    if config.console == ConsoleKind::Virtio {
        devices.add_console(mem, Box::new(std::io::stdout()))?;
    }
    for iface in &config.network_interfaces {
        devices.add_net(mem, iface)?;
    }
    if let Some(v) = &config.vsock {
        devices.add_vsock(mem, v)?;
    }
    if restoring {
        return Ok(GuestParts {
            devices,
            entry: None,
        });
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
        mem,
        mem_size,
        &source.kernel_image_path,
        source.boot_protocol,
    )?;
    let initrd = source
        .initrd_path
        .as_deref()
        .map(|p| boot::load_initrd(mem, mem_size, kernel.kernel_end, p))
        .transpose()?;
    let entry = boot::write_boot_info(mem, mem_size, &kernel, &cmdline, initrd)?;
    regs::write_boot_tables(mem, entry).map_err(BuildError::BootTables)?;
    log::debug!(
        "kernel loaded: {:?} entry {:#x}, end {:#x}",
        kernel.protocol,
        kernel.entry,
        kernel.kernel_end
    );
    if config.machine.vcpu_count > 1 {
        mptable::setup(mem, config.machine.vcpu_count)?;
    }
    Ok(GuestParts {
        devices,
        entry: Some(entry),
    })
}

/// Builds the VM described by `config`. `start` is when the process started (for the boot-time marker).
///
/// KVM's part ([`setup_kvm`]: about 3 ms of system calls here, most of it `KVM_GET_SUPPORTED_CPUID` and
/// the memory slot) runs on a second thread beside the guest's part ([`setup_guest`]) for a boot, after it
/// for a restore; errors of the guest's part are reported first, as when the two ran one after the other.
pub fn build_vm(config: &VmConfig, start: Instant) -> Result<Vm, BuildError> {
    config.validate()?;
    let mem = memory::create(config.machine.mem_size_mib, config.machine.thp)?;
    build(config, mem, None, start)
}

/// Rebuilds a snapshot's VM: `config` is the snapshot's (with any overrides applied) and `mem` its memory
/// file mapped by [`memory::from_file`]. The devices are created from the configuration as at boot, then
/// KVM's VM, each vCPU and each device are put in their saved states; no kernel is loaded.
pub fn restore_vm(
    config: &VmConfig,
    mem: GuestMemoryMmap,
    state: &Snapshot,
    start: Instant,
) -> Result<Vm, BuildError> {
    config.validate()?;
    if state.vcpus.len() != usize::from(config.machine.vcpu_count) {
        return Err(BuildError::SnapshotVcpus {
            saved: state.vcpus.len(),
            configured: config.machine.vcpu_count,
        });
    }
    build(config, mem, Some(state), start)
}

fn build(
    config: &VmConfig,
    mem: GuestMemoryMmap,
    restore: Option<&Snapshot>,
    start: Instant,
) -> Result<Vm, BuildError> {
    let vcpu_count = config.machine.vcpu_count;
    let (guest, kvm_parts) = if restore.is_some() {
        // Nothing to overlap: the guest's part of a restore is opening the disks and TAPs (~0.2 ms),
        // less than a thread's start and join cost on a loaded host.
        let guest = setup_guest(config, &mem, true)?;
        (Ok(guest), setup_kvm(&mem, vcpu_count, restore))
    } else {
        std::thread::scope(|s| {
            let kvm_side = std::thread::Builder::new()
                .name("kvm-setup".into())
                .spawn_scoped(s, || setup_kvm(&mem, vcpu_count, None));
            let guest = setup_guest(config, &mem, false);
            let kvm_parts = match kvm_side {
                Ok(handle) => handle.join().unwrap_or(Err(BuildError::SetupPanicked)),
                // No thread to spare: do it here.
                Err(_) => setup_kvm(&mem, vcpu_count, None),
            };
            (guest, kvm_parts)
        })
    };
    let GuestParts { devices, entry } = guest?;
    let KvmParts {
        kvm,
        vm_fd,
        vcpus: vcpu_fds,
    } = kvm_parts?;
    let source = &config.boot_source;

    let exit = Arc::new(ExitSignal::new().map_err(BuildError::EventFd)?);
    let serial_out: Box<dyn std::io::Write + Send> = match config.serial {
        SerialMode::Stdio => Box::new(std::io::stdout()),
        SerialMode::Off => Box::new(std::io::sink()),
    };
    let mut legacy = PortIoDeviceManager::new(&exit, serial_out, start, config.boot_timer)?;
    legacy.register_irqs(&vm_fd)?;
    let tracer = legacy.attach_tracer(mem.clone())?;
    let PortIoDeviceManager {
        bus: pio,
        serial,
        serial_drained,
        i8042,
        guest_channel,
        ..
    } = legacy;
    let pio = Arc::new(pio);
    let mut mmio = Bus::new();
    devices.attach(&vm_fd, &mut mmio)?;
    let mmio = Arc::new(mmio);
    if let Some(state) = restore {
        devices.restore(&state.devices.virtio)?;
        serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .restore(&state.devices.serial)?;
        i8042
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .restore(&state.devices.i8042)?;
        crate::introspect::restore(&guest_channel, &tracer, &state.devices.introspect);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let pause = Arc::new(PauseControl::default());
    let vcpus = vcpu_fds
        .into_iter()
        .zip(0..)
        .map(|(fd, id)| {
            // A restored vCPU is in its saved state already (setup_kvm).
            if let Some(entry) = entry {
                vcpu::set_boot_registers(&fd, id, entry)?;
            }
            Ok(Vcpu {
                id,
                fd,
                pio: pio.clone(),
                mmio: mmio.clone(),
                mem: mem.clone(),
                exit: exit.clone(),
                stop: stop.clone(),
                pause: pause.clone(),
                kernel_file: std::fs::File::open(&source.kernel_image_path).ok(),
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
        guest_channel,
        tracer,
    })
}
