//! The virtio-mmio transport, version 2 (virtio 1.x, 4.2 "Virtio Over MMIO").
//!
//! One [`MmioTransport`] serves one device's register window (4 KiB) on the MMIO bus: identification,
//! feature negotiation (FEATURES_OK is only kept if the driver accepted VERSION_1 and nothing the device did
//! not offer), queue setup through QueueSel and the per-queue registers, QueueNotify, InterruptStatus/ACK,
//! Status (0 resets) and ConfigGeneration, with device config space from offset 0x100. Registers are
//! 32-bit; other access sizes to them read as zero and are ignored on write. Queue registers can only be
//! changed before DRIVER_OK.

use std::sync::{Arc, Mutex, MutexGuard};

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::persist::{MmioTransportState, QueueState, VirtioStateError, VIRTIO_STATE_VERSION};
use super::{status, LogLimiter, VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1};
use crate::bus::BusDevice;
use crate::GuestMemoryMmap;

/// "virt" in little endian.
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// The transport version we implement (virtio 1.x).
pub const MMIO_VERSION: u32 = 2;
/// Our vendor id ("MVMM").
pub const VENDOR_ID: u32 = 0x4d4d_564d;
/// Size of one device's register window.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;
/// Offset of the QueueNotify register, where the VMM puts its ioeventfds.
pub const QUEUE_NOTIFY_OFFSET: u64 = 0x50;
/// Offset where device configuration space starts.
pub const CONFIG_SPACE_OFFSET: u64 = 0x100;

mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_AVAIL_LOW: u64 = 0x090;
    pub const QUEUE_AVAIL_HIGH: u64 = 0x094;
    pub const QUEUE_USED_LOW: u64 = 0x0a0;
    pub const QUEUE_USED_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
}

/// Errors from building a transport.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    /// The interrupt EventFd could not be created.
    #[error("cannot create the interrupt EventFd")]
    Interrupt(#[source] std::io::Error),
    /// A device queue size is not a power of two (or is zero).
    #[error("invalid maximum queue size {0}")]
    QueueSize(u16),
    /// A notify EventFd could not be duplicated.
    #[error("cannot duplicate a queue notify EventFd")]
    NotifyEvt(#[source] std::io::Error),
}

/// A virtio device's MMIO register window.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemoryMmap,
    interrupt: Arc<VirtioInterrupt>,
    notify_evts: Vec<EventFd>,
    device_type: u32,
    avail_features: u64,
    queue_max: Vec<u16>,
    features_sel: u32,
    acked_features_sel: u32,
    acked_features: u64,
    queue_sel: u32,
    queues: Vec<Queue>,
    status: u32,
    config_generation: u32,
    active: bool,
    warn: LogLimiter,
}

impl MmioTransport {
    /// Puts `device` behind a new register window; the device's static properties are read once here.
    pub fn new(
        mem: GuestMemoryMmap,
        device: Arc<Mutex<dyn VirtioDevice>>,
    ) -> Result<Self, MmioError> {
        let interrupt = Arc::new(VirtioInterrupt::new().map_err(MmioError::Interrupt)?);
        let (device_type, avail_features, queue_max, notify_evts) = {
            let d = lock(&device);
            let evts = d
                .queue_events()
                .iter()
                .map(|e| e.try_clone().map_err(MmioError::NotifyEvt))
                .collect::<Result<Vec<_>, _>>()?;
            (
                d.device_type(),
                d.avail_features() | (1u64 << VIRTIO_F_VERSION_1),
                d.queue_max_sizes().to_vec(),
                evts,
            )
        };
        let queues = queue_max
            .iter()
            .map(|&m| Queue::new(m).map_err(|_| MmioError::QueueSize(m)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            device,
            mem,
            interrupt,
            notify_evts,
            device_type,
            avail_features,
            queue_max,
            features_sel: 0,
            acked_features_sel: 0,
            acked_features: 0,
            queue_sel: 0,
            queues,
            status: 0,
            config_generation: 0,
            active: false,
            warn: LogLimiter::default(),
        })
    }

    /// The interrupt shared with the device; register `interrupt().irq_evt()` as the irqfd.
    pub fn interrupt(&self) -> &Arc<VirtioInterrupt> {
        &self.interrupt
    }

    /// The device behind this window.
    pub fn device(&self) -> &Arc<Mutex<dyn VirtioDevice>> {
        &self.device
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Whether the device is active (DRIVER_OK was accepted).
    pub fn is_active(&self) -> bool {
        self.active
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        if self.active || self.status & status::FEATURES_OK == 0 {
            // Queue layout is frozen after DRIVER_OK and meaningless before FEATURES_OK.
            return None;
        }
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            reg::MAGIC => MMIO_MAGIC,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device_type,
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.features_sel {
                0 => self.avail_features as u32,
                1 => (self.avail_features >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.status,
            reg::CONFIG_GENERATION => self.config_generation,
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.acked_features_sel = v,
            reg::DRIVER_FEATURES => {
                if self.status & status::DRIVER == 0 || self.status & status::FEATURES_OK != 0 {
                    self.warn.warn(format_args!(
                        "virtio-mmio: driver features written in status {:#x}",
                        self.status
                    ));
                    return;
                }
                let shift = match self.acked_features_sel {
                    0 => 0,
                    1 => 32,
                    _ => return,
                };
                self.acked_features &= !(0xffff_ffffu64 << shift);
                self.acked_features |= u64::from(v) << shift;
            }
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NUM => {
                if let Some(q) = self.selected_queue() {
                    q.set_size(v.min(u32::from(u16::MAX)) as u16);
                }
            }
            reg::QUEUE_READY => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(v == 1);
                }
            }
            reg::QUEUE_DESC_LOW => self.with_queue(|q| q.set_desc_table_address(Some(v), None)),
            reg::QUEUE_DESC_HIGH => self.with_queue(|q| q.set_desc_table_address(None, Some(v))),
            reg::QUEUE_AVAIL_LOW => self.with_queue(|q| q.set_avail_ring_address(Some(v), None)),
            reg::QUEUE_AVAIL_HIGH => self.with_queue(|q| q.set_avail_ring_address(None, Some(v))),
            reg::QUEUE_USED_LOW => self.with_queue(|q| q.set_used_ring_address(Some(v), None)),
            reg::QUEUE_USED_HIGH => self.with_queue(|q| q.set_used_ring_address(None, Some(v))),
            reg::QUEUE_NOTIFY => {
                // Normally an ioeventfd catches this write before it exits to us.
                if let Some(evt) = self.notify_evts.get(v as usize) {
                    if let Err(e) = evt.write(1) {
                        log::error!("virtio-mmio: cannot signal queue {v}: {e}");
                    }
                }
            }
            reg::INTERRUPT_ACK => self.interrupt.ack(v),
            reg::STATUS => self.set_status(v),
            _ => {
                self.warn.warn(format_args!(
                    "virtio-mmio: write {v:#x} to unknown register {offset:#x}"
                ));
            }
        }
    }

    fn with_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        if let Some(q) = self.selected_queue() {
            f(q);
        }
    }

    fn set_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        let mut new = v;
        if new & status::FEATURES_OK != 0 && old & status::FEATURES_OK == 0 {
            let unknown = self.acked_features & !self.avail_features;
            let version_1 = self.acked_features & (1u64 << VIRTIO_F_VERSION_1) != 0;
            if unknown != 0 || !version_1 {
                self.warn.warn(format_args!(
                    "virtio-mmio: refusing features {:#x} (offered {:#x})",
                    self.acked_features, self.avail_features
                ));
                new &= !status::FEATURES_OK;
            } else {
                lock(&self.device).set_acked_features(self.acked_features);
            }
        }
        if new & status::DRIVER_OK != 0
            && old & status::DRIVER_OK == 0
            && new & status::FEATURES_OK != 0
            && !self.active
        {
            self.activate(&mut new);
        }
        self.status = new;
    }

    fn activate(&mut self, new_status: &mut u32) {
        let bad = self
            .queues
            .iter()
            .position(|q| q.ready() && !q.is_valid(&self.mem));
        let result = match bad {
            Some(i) => Err(super::ActivateError::BadQueue(i)),
            None => {
                // The device gets the live queues; the transport keeps copies of their registers so
                // the driver reads back what it wrote.
                let queues = self
                    .queue_max
                    .iter()
                    .zip(self.queues.iter_mut())
                    .map(|(&m, q)| {
                        let shadow = register_copy(q, m);
                        std::mem::replace(q, shadow)
                    })
                    .collect();
                lock(&self.device).activate(self.mem.clone(), self.interrupt.clone(), queues)
            }
        };
        match result {
            Ok(()) => self.active = true,
            Err(e) => {
                self.warn.warn(format_args!(
                    "virtio-mmio: device type {} activation failed: {e}",
                    self.device_type
                ));
                *new_status |= status::DEVICE_NEEDS_RESET;
                self.interrupt.signal_config_change();
            }
        }
    }

    fn reset(&mut self) {
        if self.active {
            lock(&self.device).reset();
        }
        self.active = false;
        for (q, &m) in self.queues.iter_mut().zip(&self.queue_max) {
            *q = Queue::new(m).expect("size checked at construction");
        }
        self.status = 0;
        self.features_sel = 0;
        self.acked_features_sel = 0;
        self.acked_features = 0;
        self.queue_sel = 0;
        self.interrupt.clear();
    }
}

impl MmioTransport {
    /// Completes the device's work in flight (before a snapshot; the vCPUs are paused).
    pub fn prepare_save(&self) {
        lock(&self.device).prepare_save();
    }

    /// The transport's state: registers, queues (the device's live ones when active), interrupt status.
    pub fn save(&self) -> MmioTransportState {
        let device = lock(&self.device);
        let queues = if self.active {
            device.saved_queues()
        } else {
            self.queues.iter().map(QueueState::save).collect()
        };
        let data = device.save_data();
        drop(device);
        MmioTransportState {
            version: VIRTIO_STATE_VERSION,
            device_type: self.device_type,
            features_sel: self.features_sel,
            acked_features_sel: self.acked_features_sel,
            acked_features: self.acked_features,
            queue_sel: self.queue_sel,
            status: self.status,
            config_generation: self.config_generation,
            active: self.active,
            interrupt_status: self.interrupt.status(),
            queues,
            data,
        }
    }

    /// Puts a freshly built transport (and its device) in the saved `state`: an active device is
    /// activated again with the saved queues, and each of its queues is kicked once, so that requests
    /// the driver made visible while the VM was being saved are seen.
    pub fn restore(&mut self, state: &MmioTransportState) -> Result<(), VirtioStateError> {
        if state.version != VIRTIO_STATE_VERSION {
            return Err(VirtioStateError::Version(state.version));
        }
        if state.device_type != self.device_type {
            return Err(VirtioStateError::DeviceType {
                saved: state.device_type,
                actual: self.device_type,
            });
        }
        if state.queues.len() != self.queues.len() {
            return Err(VirtioStateError::QueueCount {
                saved: state.queues.len(),
                actual: self.queues.len(),
            });
        }
        let queues = state
            .queues
            .iter()
            .map(QueueState::restore)
            .collect::<Result<Vec<_>, _>>()?;
        self.features_sel = state.features_sel;
        self.acked_features_sel = state.acked_features_sel;
        self.acked_features = state.acked_features;
        self.queue_sel = state.queue_sel;
        self.status = state.status;
        self.config_generation = state.config_generation;
        self.queues = queues
            .iter()
            .zip(&self.queue_max)
            .map(|(q, &m)| register_copy(q, m))
            .collect();
        if state.status & status::FEATURES_OK != 0 {
            lock(&self.device).set_acked_features(state.acked_features);
        }
        lock(&self.device).restore_data(&state.data)?;
        if state.active {
            lock(&self.device)
                .activate(self.mem.clone(), self.interrupt.clone(), queues)
                .map_err(VirtioStateError::Activate)?;
            self.active = true;
            super::kick_queues(
                &self.notify_evts,
                "virtio-mmio: cannot kick a restored queue",
            );
        }
        if state.interrupt_status != 0 {
            // The driver has not acknowledged these yet: raise the line again.
            if let Err(e) = self.interrupt.trigger(state.interrupt_status) {
                log::error!("virtio-mmio: cannot raise a restored interrupt: {e}");
            }
        }
        Ok(())
    }
}

/// A queue with the same driver-visible registers as `q` (size, ready, ring addresses).
fn register_copy(q: &Queue, max: u16) -> Queue {
    let mut c = Queue::new(max).expect("size checked at construction");
    c.set_size(q.size());
    c.set_ready(q.ready());
    let split = |a: u64| (Some(a as u32), Some((a >> 32) as u32));
    let (lo, hi) = split(q.desc_table());
    c.set_desc_table_address(lo, hi);
    let (lo, hi) = split(q.avail_ring());
    c.set_avail_ring_address(lo, hi);
    let (lo, hi) = split(q.used_ring());
    c.set_used_ring_address(lo, hi);
    c
}

fn lock(d: &Arc<Mutex<dyn VirtioDevice>>) -> MutexGuard<'_, dyn VirtioDevice + 'static> {
    d.lock().unwrap_or_else(|e| e.into_inner())
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            lock(&self.device).read_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            self.warn.warn(format_args!(
                "virtio-mmio: {}-byte read at {offset:#x}",
                data.len()
            ));
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            lock(&self.device).write_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            self.warn.warn(format_args!(
                "virtio-mmio: {}-byte write at {offset:#x}",
                data.len()
            ));
            return;
        }
        let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        self.write_reg(offset, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_utils::{guest_memory, init_device, read_reg, write_reg, QueueLayout};
    use crate::virtio::ActivateError;
    use vm_memory::GuestAddress;

    #[derive(Default)]
    struct Fake {
        evts: Vec<EventFd>,
        acked: u64,
        activations: u32,
        resets: u32,
        config: [u8; 8],
        queue_sizes: Vec<u16>,
        live: Vec<Queue>,
    }

    impl VirtioDevice for Fake {
        fn device_type(&self) -> u32 {
            42
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &self.queue_sizes
        }
        fn avail_features(&self) -> u64 {
            0b101
        }
        fn set_acked_features(&mut self, f: u64) {
            self.acked = f;
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            crate::virtio::read_config_bytes(&self.config, offset, data);
        }
        fn write_config(&mut self, offset: u64, data: &[u8]) {
            let o = offset as usize;
            if o + data.len() <= self.config.len() {
                self.config[o..o + data.len()].copy_from_slice(data);
            }
        }
        fn activate(
            &mut self,
            _mem: GuestMemoryMmap,
            _i: Arc<VirtioInterrupt>,
            queues: Vec<Queue>,
        ) -> Result<(), ActivateError> {
            assert_eq!(queues.len(), self.queue_sizes.len());
            self.activations += 1;
            self.live = queues;
            Ok(())
        }
        fn reset(&mut self) {
            self.resets += 1;
            self.live.clear();
        }
        fn queue_events(&self) -> &[EventFd] {
            &self.evts
        }
        fn saved_queues(&self) -> Vec<crate::virtio::persist::QueueState> {
            self.live
                .iter()
                .map(crate::virtio::persist::QueueState::save)
                .collect()
        }
    }

    fn setup() -> (MmioTransport, Arc<Mutex<Fake>>) {
        let fake = Arc::new(Mutex::new(Fake {
            evts: vec![EventFd::new(0).unwrap(), EventFd::new(0).unwrap()],
            queue_sizes: vec![16, 8],
            ..Default::default()
        }));
        let t = MmioTransport::new(guest_memory(1 << 20), fake.clone()).unwrap();
        (t, fake)
    }

    fn layouts() -> Vec<QueueLayout> {
        vec![
            QueueLayout {
                size: 16,
                desc: GuestAddress(0x1000),
                avail: GuestAddress(0x2000),
                used: GuestAddress(0x3000),
            },
            QueueLayout {
                size: 8,
                desc: GuestAddress(0x4000),
                avail: GuestAddress(0x5000),
                used: GuestAddress(0x6000),
            },
        ]
    }

    #[test]
    fn save_restore_save_gives_the_same_state() {
        let (mut t, fake) = setup();
        init_device(&mut t, 0b100, &layouts());
        // The device has moved on in its rings.
        fake.lock().unwrap().live[0].set_next_avail(7);
        fake.lock().unwrap().live[0].set_next_used(5);
        t.interrupt().signal_used_queue();
        let saved = t.save();
        assert!(saved.active);
        assert_eq!(saved.queues[0].next_avail, 7);
        assert_eq!(saved.queues[0].desc_table, 0x1000);
        assert_eq!(saved.interrupt_status, 1);
        // Through JSON, as the snapshot file carries it.
        let text = serde_json::to_string(&saved).unwrap();
        let state: MmioTransportState = serde_json::from_str(&text).unwrap();

        let (mut t2, fake2) = setup();
        t2.restore(&state).unwrap();
        assert_eq!(t2.save(), saved);
        let f = fake2.lock().unwrap();
        assert_eq!(f.activations, 1);
        assert_eq!(f.acked, saved.acked_features);
        assert_eq!(f.live[0].next_used(), 5);
        drop(f);
        // Each queue was kicked once, and the driver reads back its registers.
        assert_eq!(fake2.lock().unwrap().evts[1].read().unwrap(), 1);
        write_reg(&mut t2, 0x30, 1);
        assert_eq!(read_reg(&mut t2, 0x44), 1);
        assert_eq!(read_reg(&mut t2, 0x70), saved.status);

        // A state for another device or version is refused.
        let (mut t3, _) = setup();
        let other = MmioTransportState {
            device_type: 1,
            ..state.clone()
        };
        assert!(matches!(
            t3.restore(&other),
            Err(VirtioStateError::DeviceType { .. })
        ));
        let old = MmioTransportState {
            version: 0,
            ..state
        };
        assert!(matches!(
            t3.restore(&old),
            Err(VirtioStateError::Version(0))
        ));
    }

    #[test]
    fn identification_registers() {
        let (mut t, _) = setup();
        assert_eq!(read_reg(&mut t, 0), MMIO_MAGIC);
        assert_eq!(read_reg(&mut t, 4), 2);
        assert_eq!(read_reg(&mut t, 8), 42);
        assert_eq!(read_reg(&mut t, 0xc), VENDOR_ID);
        write_reg(&mut t, 0x14, 1);
        assert_eq!(read_reg(&mut t, 0x10), 1, "VERSION_1 is bit 32");
        write_reg(&mut t, 0x14, 0);
        assert_eq!(read_reg(&mut t, 0x10), 0b101);
        write_reg(&mut t, 0x30, 1);
        assert_eq!(read_reg(&mut t, 0x34), 8);
        write_reg(&mut t, 0x30, 9);
        assert_eq!(read_reg(&mut t, 0x34), 0);
        // Non-32-bit register accesses read zero and do nothing.
        let mut b = [0xffu8; 2];
        t.read(0, &mut b);
        assert_eq!(b, [0, 0]);
        t.write(0x70, &[1]);
        assert_eq!(read_reg(&mut t, 0x70), 0);
    }

    #[test]
    fn negotiation_activation_and_reset() {
        let (mut t, fake) = setup();
        let s = init_device(&mut t, 0b100, &layouts());
        assert_eq!(s & status::DRIVER_OK, status::DRIVER_OK);
        assert_eq!(s & status::DEVICE_NEEDS_RESET, 0);
        assert!(t.is_active());
        {
            let f = fake.lock().unwrap();
            assert_eq!(f.acked, 0b100 | (1 << 32));
            assert_eq!(f.activations, 1);
        }
        // Queue registers are frozen while active.
        write_reg(&mut t, 0x30, 0);
        write_reg(&mut t, 0x44, 0);
        assert_eq!(read_reg(&mut t, 0x44), 1);
        // Notify reaches the queue's EventFd.
        write_reg(&mut t, 0x50, 1);
        assert_eq!(fake.lock().unwrap().evts[1].read().unwrap(), 1);
        write_reg(&mut t, 0x50, 7); // no such queue: ignored
                                    // Interrupt status and ack.
        t.interrupt().signal_used_queue();
        assert_eq!(read_reg(&mut t, 0x60), 1);
        write_reg(&mut t, 0x64, 1);
        assert_eq!(read_reg(&mut t, 0x60), 0);
        // Config space.
        t.write(0x102, &[9, 8]);
        let mut b = [0u8; 4];
        t.read(0x100, &mut b);
        assert_eq!(b, [0, 0, 9, 8]);
        // Reset.
        write_reg(&mut t, 0x70, 0);
        assert!(!t.is_active());
        assert_eq!(read_reg(&mut t, 0x70), 0);
        assert_eq!(fake.lock().unwrap().resets, 1);
        write_reg(&mut t, 0x30, 0);
        assert_eq!(read_reg(&mut t, 0x44), 0, "queues are reset too");
        // And it can be brought up again.
        let s = init_device(&mut t, 0, &layouts());
        assert_ne!(s & status::DRIVER_OK, 0);
        assert_eq!(fake.lock().unwrap().activations, 2);
    }

    #[test]
    fn features_ok_refused_without_version_1_or_with_unknown_bits() {
        let (mut t, fake) = setup();
        write_reg(&mut t, 0x70, status::ACKNOWLEDGE | status::DRIVER);
        write_reg(&mut t, 0x24, 0);
        write_reg(&mut t, 0x20, 0b1);
        write_reg(
            &mut t,
            0x70,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_eq!(
            read_reg(&mut t, 0x70) & status::FEATURES_OK,
            0,
            "no VERSION_1"
        );
        write_reg(&mut t, 0x24, 1);
        write_reg(&mut t, 0x20, 1);
        write_reg(&mut t, 0x24, 0);
        write_reg(&mut t, 0x20, 0b10);
        write_reg(
            &mut t,
            0x70,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_eq!(
            read_reg(&mut t, 0x70) & status::FEATURES_OK,
            0,
            "bit 1 not offered"
        );
        // DRIVER_OK without FEATURES_OK does not activate.
        write_reg(
            &mut t,
            0x70,
            status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK,
        );
        assert!(!t.is_active());
        assert_eq!(fake.lock().unwrap().activations, 0);
    }

    #[test]
    fn invalid_queue_means_needs_reset_not_activation() {
        let (mut t, fake) = setup();
        let mut l = layouts();
        l[0].desc = GuestAddress(0x1000_0000); // outside the 1 MiB of guest memory
        let s = init_device(&mut t, 0, &l);
        assert_ne!(s & status::DEVICE_NEEDS_RESET, 0);
        assert!(!t.is_active());
        assert_eq!(fake.lock().unwrap().activations, 0);
        assert_ne!(read_reg(&mut t, 0x60) & VirtioInterrupt::CONFIG_CHANGE, 0);
    }

    #[test]
    fn random_register_writes_never_panic() {
        let (mut t, _) = setup();
        let mut x: u64 = 0x1234_5678;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let off = (x % 0x140) & !3;
            let v = (x >> 20) as u32;
            let v = if x.is_multiple_of(3) { v & 0xff } else { v };
            if x.is_multiple_of(5) {
                let mut b = [0u8; 4];
                t.read(off, &mut b);
            } else {
                write_reg(&mut t, off, v);
            }
        }
    }
}
