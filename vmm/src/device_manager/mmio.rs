//! Virtio devices of one VM on the MMIO bus: window and IRQ allocation, KVM wiring, and the kernel
//! command line.
//!
//! Devices are added in a fixed order (disks in the order given, then the console, then network interfaces in
//! the order given, then the vsock device), each taking the next
//! slot: window `VIRTIO_MMIO_START + n * VIRTIO_MMIO_SIZE` and IRQ `VIRTIO_IRQ_BASE + n` from
//! `arch::x86_64::layout`. Adding a device needs only guest memory, so disks are opened (and their errors
//! reported) before KVM is touched; [`MmioDeviceManager::cmdline_entries`] then gives the
//! `virtio_mmio.device=4K@0x...:IRQ` entries for the kernel command line, and [`MmioDeviceManager::attach`] wires
//! each device to KVM (irqfd for its IRQ, one ioeventfd per queue at window + 0x50 with datamatch = queue
//! index) and puts its transport on the MMIO bus. The devices themselves run on the VMM thread as
//! event-manager subscribers ([`MmioDeviceManager::subscribers`]).

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use event_manager::MutEventSubscriber;
use kvm_ioctls::{IoEventAddress, VmFd};

use crate::arch::x86_64::layout;
use crate::config::{DriveConfig, NetConfig, VsockConfig};
use devices::bus::{Bus, BusError};
use devices::disk::{open_disk, DiskError, DiskOptions};
use devices::virtio::block::BlockError;
use devices::virtio::mmio::{MmioError, QUEUE_NOTIFY_OFFSET};
use devices::virtio::net::tap::{Tap, TapError};
use devices::virtio::net::NetError;
use devices::virtio::persist::{MmioTransportState, VirtioStateError};
use devices::virtio::vsock::VsockError;
use devices::virtio::{Block, BlockConfig, Console, MmioTransport, Net, VirtioDevice, Vsock};
use devices::GuestMemoryMmap;

/// Errors from creating or wiring virtio devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("too many virtio devices: at most {0}")]
    NoSlots(u64),
    #[error("--disk {path:?}: {source}")]
    Disk {
        path: PathBuf,
        #[source]
        source: DiskError,
    },
    #[error("cannot create a virtio-blk device: {0}")]
    Block(#[source] BlockError),
    #[error("network interface {iface:?}: {source}")]
    Tap {
        iface: String,
        #[source]
        source: TapError,
    },
    #[error("cannot create a virtio-net device: {0}")]
    Net(#[source] NetError),
    #[error("cannot create the vsock device: {0}")]
    Vsock(#[source] VsockError),
    #[error("cannot create the virtio console: {0}")]
    Console(#[source] std::io::Error),
    #[error("cannot create a virtio-mmio transport: {0}")]
    Transport(#[source] MmioError),
    #[error("cannot connect IRQ {irq} to KVM: {source}")]
    Irqfd {
        irq: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot register the notify ioeventfd at {addr:#x} (queue {queue}): {source}")]
    Ioeventfd {
        addr: u64,
        queue: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot place a virtio device on the MMIO bus: {0}")]
    Bus(#[source] BusError),
    #[error("the snapshot has {saved} virtio devices, the configuration {actual}")]
    DeviceCount { saved: usize, actual: usize },
    #[error("virtio device {slot}: {source}")]
    Restore {
        slot: usize,
        #[source]
        source: VirtioStateError,
    },
}

struct Slot {
    base: u64,
    irq: u32,
    transport: Arc<Mutex<MmioTransport>>,
    subscriber: Arc<Mutex<dyn MutEventSubscriber + Send>>,
}

/// The VM's virtio devices.
#[derive(Default)]
pub struct MmioDeviceManager {
    slots: Vec<Slot>,
    blocks: Vec<Arc<Mutex<Block>>>,
    console: Option<Arc<Mutex<Console>>>,
    nets: Vec<(String, Arc<Mutex<Net>>)>,
    vsock: Option<Arc<Mutex<Vsock>>>,
}

impl MmioDeviceManager {
    /// No devices yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens the drive's image and adds a virtio-blk device for it.
    pub fn add_block(
        &mut self,
        mem: &GuestMemoryMmap,
        drive: &DriveConfig,
    ) -> Result<Arc<Mutex<Block>>, DeviceError> {
        let opts = DiskOptions {
            read_only: drive.is_read_only,
            format: drive.format,
            cache: drive.cache_type,
        };
        let disk = open_disk(&drive.path_on_host, &opts).map_err(|source| DeviceError::Disk {
            path: drive.path_on_host.clone(),
            source,
        })?;
        let block = Arc::new(Mutex::new(
            Block::new(
                disk,
                &BlockConfig {
                    id: drive.drive_id.clone(),
                    io_engine: drive.io_engine,
                    rate_limiter: drive.rate_limiter.unwrap_or_default(),
                },
            )
            .map_err(DeviceError::Block)?,
        ));
        self.add(mem, block.clone(), block.clone())?;
        self.blocks.push(block.clone());
        Ok(block)
    }

    /// Attaches to the interface's TAP and adds a virtio-net device for it.
    pub fn add_net(
        &mut self,
        mem: &GuestMemoryMmap,
        iface: &NetConfig,
    ) -> Result<Arc<Mutex<Net>>, DeviceError> {
        let tap = Tap::open(&iface.host_dev_name).map_err(|source| DeviceError::Tap {
            iface: iface.iface_id.clone(),
            source,
        })?;
        let cfg = devices::virtio::NetConfig {
            mac: iface.mac(),
            rx_rate_limiter: iface.rx_rate_limiter.unwrap_or_default(),
            tx_rate_limiter: iface.tx_rate_limiter.unwrap_or_default(),
        };
        let net = Arc::new(Mutex::new(Net::new(tap, &cfg).map_err(DeviceError::Net)?));
        self.add(mem, net.clone(), net.clone())?;
        self.nets.push((iface.iface_id.clone(), net.clone()));
        Ok(net)
    }

    /// Listens on the vsock's Unix socket and adds a virtio-vsock device.
    pub fn add_vsock(
        &mut self,
        mem: &GuestMemoryMmap,
        cfg: &VsockConfig,
    ) -> Result<Arc<Mutex<Vsock>>, DeviceError> {
        let vsock = Arc::new(Mutex::new(
            Vsock::new(&devices::virtio::VsockConfig {
                guest_cid: cfg.guest_cid,
                uds_path: cfg.uds_path.clone(),
            })
            .map_err(DeviceError::Vsock)?,
        ));
        self.add(mem, vsock.clone(), vsock.clone())?;
        self.vsock = Some(vsock.clone());
        Ok(vsock)
    }

    /// The vsock device, if there is one.
    pub fn vsock(&self) -> Option<&Arc<Mutex<Vsock>>> {
        self.vsock.as_ref()
    }

    /// Adds the virtio console, writing guest output to `out`.
    pub fn add_console(
        &mut self,
        mem: &GuestMemoryMmap,
        out: Box<dyn Write + Send>,
    ) -> Result<Arc<Mutex<Console>>, DeviceError> {
        let console = Arc::new(Mutex::new(Console::new(out).map_err(DeviceError::Console)?));
        self.add(mem, console.clone(), console.clone())?;
        self.console = Some(console.clone());
        Ok(console)
    }

    fn add(
        &mut self,
        mem: &GuestMemoryMmap,
        device: Arc<Mutex<dyn VirtioDevice>>,
        subscriber: Arc<Mutex<dyn MutEventSubscriber + Send>>,
    ) -> Result<(), DeviceError> {
        let n = self.slots.len() as u64;
        if n >= layout::VIRTIO_MMIO_SLOTS {
            return Err(DeviceError::NoSlots(layout::VIRTIO_MMIO_SLOTS));
        }
        let transport = MmioTransport::new(mem.clone(), device).map_err(DeviceError::Transport)?;
        self.slots.push(Slot {
            base: layout::VIRTIO_MMIO_START + n * layout::VIRTIO_MMIO_SIZE,
            irq: layout::VIRTIO_IRQ_BASE + n as u32,
            transport: Arc::new(Mutex::new(transport)),
            subscriber,
        });
        Ok(())
    }

    /// The command line entries that tell the guest where the devices are, each with a leading space.
    pub fn cmdline_entries(&self) -> String {
        self.slots
            .iter()
            .map(|s| {
                format!(
                    " virtio_mmio.device={}K@{:#x}:{}",
                    layout::VIRTIO_MMIO_SIZE >> 10,
                    s.base,
                    s.irq
                )
            })
            .collect()
    }

    /// Registers each device's irqfd and notify ioeventfds with KVM and puts its window on `mmio`.
    pub fn attach(&self, vm_fd: &VmFd, mmio: &mut Bus) -> Result<(), DeviceError> {
        for slot in &self.slots {
            let t = slot.transport.lock().unwrap_or_else(|e| e.into_inner());
            vm_fd
                .register_irqfd(t.interrupt().irq_evt(), slot.irq)
                .map_err(|source| DeviceError::Irqfd {
                    irq: slot.irq,
                    source,
                })?;
            let device = t.device().lock().unwrap_or_else(|e| e.into_inner());
            let addr = slot.base + QUEUE_NOTIFY_OFFSET;
            for (queue, evt) in device.queue_events().iter().enumerate() {
                let queue = queue as u32;
                vm_fd
                    .register_ioevent(evt, &IoEventAddress::Mmio(addr), queue)
                    .map_err(|source| DeviceError::Ioeventfd {
                        addr,
                        queue,
                        source,
                    })?;
            }
            drop(device);
            drop(t);
            mmio.insert(slot.transport.clone(), slot.base, layout::VIRTIO_MMIO_SIZE)
                .map_err(DeviceError::Bus)?;
        }
        Ok(())
    }

    /// Completes every device's work in flight, then saves each transport (in slot order). The vCPUs
    /// are paused and this runs on the VMM thread, so no device runs meanwhile.
    pub fn save(&self) -> Vec<MmioTransportState> {
        self.slots
            .iter()
            .map(|s| {
                let t = s.transport.lock().unwrap_or_else(|e| e.into_inner());
                t.prepare_save();
                t.save()
            })
            .collect()
    }

    /// Restores each transport (and re-activates its device) from a snapshot, in slot order.
    pub fn restore(&self, states: &[MmioTransportState]) -> Result<(), DeviceError> {
        if states.len() != self.slots.len() {
            return Err(DeviceError::DeviceCount {
                saved: states.len(),
                actual: self.slots.len(),
            });
        }
        for (slot, (s, state)) in self.slots.iter().zip(states).enumerate() {
            s.transport
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .restore(state)
                .map_err(|source| DeviceError::Restore { slot, source })?;
        }
        Ok(())
    }

    /// The devices, to add to the VMM thread's event manager.
    pub fn subscribers(&self) -> Vec<Arc<Mutex<dyn MutEventSubscriber + Send>>> {
        self.slots.iter().map(|s| s.subscriber.clone()).collect()
    }

    /// The virtio console, if there is one.
    pub fn console(&self) -> Option<&Arc<Mutex<Console>>> {
        self.console.as_ref()
    }

    /// The network devices with their interface ids, in configuration order.
    pub fn nets(&self) -> &[(String, Arc<Mutex<Net>>)] {
        &self.nets
    }

    /// The block devices, in drive order.
    pub fn blocks(&self) -> &[Arc<Mutex<Block>>] {
        &self.blocks
    }

    /// Flushes every disk (when the VM stops); failures are logged.
    pub fn flush_disks(&self) {
        for b in &self.blocks {
            if let Err(e) = b.lock().unwrap_or_else(|e| e.into_inner()).flush_disk() {
                log::error!("flushing a disk failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    #[test]
    fn slots_irqs_and_cmdline_follow_the_layout() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let dir = std::env::temp_dir().join(format!("microvm-dm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut dm = MmioDeviceManager::new();
        for i in 0..2 {
            let path = dir.join(format!("d{i}.raw"));
            std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
            let drive = DriveConfig {
                is_read_only: i == 1,
                ..DriveConfig::new(format!("d{i}"), path)
            };
            dm.add_block(&mem, &drive).unwrap();
        }
        dm.add_console(&mem, Box::new(std::io::sink())).unwrap();
        assert_eq!(
            dm.cmdline_entries(),
            " virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 \
             virtio_mmio.device=4K@0xd0002000:7"
        );
        assert_eq!(dm.subscribers().len(), 3);
        assert!(dm.console().is_some());
        let missing = DriveConfig::new("x", dir.join("nope.raw"));
        assert!(matches!(
            dm.add_block(&mem, &missing),
            Err(DeviceError::Disk { .. })
        ));
        let no_tap = NetConfig {
            iface_id: "eth0".into(),
            host_dev_name: "mvmnotap9".into(),
            guest_mac: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        };
        let e = dm.add_net(&mem, &no_tap).err().unwrap();
        assert_eq!(
            e.to_string(),
            "network interface \"eth0\": TAP device \"mvmnotap9\" does not exist \
             (create it with: ip tuntap add dev mvmnotap9 mode tap)"
        );
        assert_eq!(dm.subscribers().len(), 3);
    }
}
