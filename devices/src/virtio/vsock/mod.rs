//! virtio-vsock (device type 19): stream sockets between the guest and Unix sockets on the host.
//!
//! Three queues: receive (0, device to guest), transmit (1, guest to device) and event (2, only
//! `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`, sent after a snapshot restore because connections are not
//! saved, as Firecracker does). Config space: the guest's CID (le64).
//!
//! [`Vsock`] is an event-manager subscriber on the VMM thread with four event sources: the three
//! queues' notify EventFds and the [`muxer::Muxer`]'s epoll fd. Transmit: each chain is one packet
//! (44-byte [`packet::Header`], then `len` payload bytes, at most [`MAX_PKT_PAYLOAD`]), handed to the
//! muxer. Receive: while the muxer has something for the guest (control packets, RSTs, or data on a
//! readable socket whose connection has credit), it is written into the guest's receive chains, at
//! most [`RX_BUDGET`] per event. Nothing the guest sends grows the VMM's memory beyond the per-connection
//! credit ([`conn::BUF_ALLOC`]) and the muxer's fixed limits; a bad chain is returned and logged.

pub mod conn;
pub mod muxer;
pub mod packet;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use self::muxer::Muxer;
use self::packet::{Header, EVENT_TRANSPORT_RESET, HDR_LEN};
use super::persist::{DeviceData, VirtioStateError};
use super::{
    read_config_bytes, ready_queues, ActivateError, LogLimiter, VirtioDevice, VirtioInterrupt,
};
use crate::GuestMemoryMmap;

/// Virtio device id of a socket device.
pub const TYPE_VSOCK: u32 = 19;
/// Queue size offered for each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Largest payload of one packet, either way (Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
pub const MAX_PKT_PAYLOAD: usize = 64 * 1024;
/// Most packets moved per event in each direction before yielding to other events.
pub const RX_BUDGET: usize = 256;
/// Most transmit chains taken per event.
pub const TX_BUDGET: usize = 256;
/// Smallest CID a guest may have (0-2 are reserved: hypervisor, local, host).
pub const MIN_GUEST_CID: u64 = 3;

const RX: usize = 0;
const TX: usize = 1;
const EVT: usize = 2;

/// Errors from creating a vsock device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("guest CID {0} is reserved (the guest's CID must be at least 3 and below 2^32 - 1)")]
    BadCid(u64),
    #[error("cannot listen on the vsock socket {path:?}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("vsock epoll: {0}")]
    Epoll(#[source] io::Error),
    #[error("vsock: {0}")]
    Io(#[source] io::Error),
}

/// Counters of a vsock device, Firecracker's names where they count the same thing. Serialized by serde as
/// a snapshot (`GET /metrics`). "rx" is towards the guest, "tx" from it, as in Firecracker.
#[derive(Debug, Default, serde::Serialize)]
pub struct VsockMetrics {
    /// Packets put in the guest's receive buffers.
    pub rx_packets_count: AtomicU64,
    /// Bytes read from host sockets and sent to the guest.
    pub rx_bytes_count: AtomicU64,
    /// Packets taken from the guest's transmit queue.
    pub tx_packets_count: AtomicU64,
    /// Guest bytes written to host sockets.
    pub tx_bytes_count: AtomicU64,
    /// Connections made (host- or guest-initiated) and ended.
    pub conns_added: AtomicU64,
    pub conns_removed: AtomicU64,
    /// RSTs sent to the guest (refused connections, resets, packets for no connection).
    pub rsts_sent: AtomicU64,
    /// Host socket reads and writes that failed (the connection is reset).
    pub rx_read_fails: AtomicU64,
    pub tx_write_fails: AtomicU64,
    /// Ours: `CONNECT` requests from host clients, guest connections to `<uds_path>_PORT`, malformed
    /// `CONNECT` lines, and guest chains or packets that made no sense.
    pub host_connects: AtomicU64,
    pub guest_connects: AtomicU64,
    pub bad_connect_lines: AtomicU64,
    pub malformed: AtomicU64,
}

/// The configuration of a vsock device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockConfig {
    pub guest_cid: u64,
    pub uds_path: PathBuf,
}

struct Active {
    mem: GuestMemoryMmap,
    interrupt: Arc<VirtioInterrupt>,
    rx: Queue,
    tx: Queue,
    evt: Queue,
}

/// A virtio-vsock device.
pub struct Vsock {
    guest_cid: u64,
    muxer: Muxer,
    metrics: Arc<VsockMetrics>,
    acked_features: u64,
    queue_evts: [EventFd; 3],
    active: Option<Active>,
    /// A TRANSPORT_RESET event is owed to the guest (after a restore).
    reset_event: bool,
    broken: bool,
    buf: Vec<u8>,
    warn: LogLimiter,
}

impl Vsock {
    /// Event token of the receive queue's notify EventFd.
    pub const PROCESS_RX: u32 = 0;
    /// Event token of the transmit queue's notify EventFd.
    pub const PROCESS_TX: u32 = 1;
    /// Event token of the event queue's notify EventFd.
    pub const PROCESS_EVT: u32 = 2;
    /// Event token of the muxer's epoll fd.
    pub const BACKEND: u32 = 3;

    /// A device for the guest `cfg.guest_cid`, listening on `cfg.uds_path`.
    pub fn new(cfg: &VsockConfig) -> Result<Self, VsockError> {
        if cfg.guest_cid < MIN_GUEST_CID || cfg.guest_cid >= u64::from(u32::MAX) {
            return Err(VsockError::BadCid(cfg.guest_cid));
        }
        let evt = || EventFd::new(EFD_NONBLOCK).map_err(VsockError::Io);
        let metrics = Arc::new(VsockMetrics::default());
        Ok(Self {
            guest_cid: cfg.guest_cid,
            muxer: Muxer::new(cfg.guest_cid, &cfg.uds_path, metrics.clone())?,
            metrics,
            acked_features: 0,
            queue_evts: [evt()?, evt()?, evt()?],
            active: None,
            reset_event: false,
            broken: false,
            buf: vec![0u8; HDR_LEN + MAX_PKT_PAYLOAD],
            warn: LogLimiter::default(),
        })
    }

    /// The device's counters.
    pub fn metrics(&self) -> Arc<VsockMetrics> {
        self.metrics.clone()
    }

    /// Live connections.
    pub fn connections(&self) -> usize {
        self.muxer.connections()
    }

    /// Guest data waiting for host sockets, in bytes.
    pub fn buffered(&self) -> usize {
        self.muxer.buffered()
    }

    /// Takes every packet the guest queued (up to [`TX_BUDGET`]).
    pub fn process_tx(&mut self) -> usize {
        let Some(a) = self.active.as_mut() else {
            return 0;
        };
        if self.broken {
            return 0;
        }
        let mut done = 0;
        while done < TX_BUDGET {
            let chain = match a.tx.iter(&a.mem) {
                Ok(mut it) => it.next(),
                Err(e) => {
                    self.warn.warn(format_args!(
                        "virtio-vsock: transmit queue unusable ({e}); ignoring it until reset"
                    ));
                    self.broken = true;
                    break;
                }
            };
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            // Gather header + payload from the device-readable descriptors, bounded by our buffer.
            let mut got = 0usize;
            let mut bad = false;
            for d in chain {
                if d.is_write_only() {
                    continue;
                }
                let want = (d.len() as usize).min(self.buf.len() - got);
                if want == 0 {
                    continue;
                }
                if a.mem
                    .read_slice(&mut self.buf[got..got + want], d.addr())
                    .is_err()
                {
                    bad = true;
                    break;
                }
                got += want;
            }
            done += 1;
            if a.tx.add_used(&a.mem, head, 0).is_err() {
                self.broken = true;
                break;
            }
            self.metrics
                .tx_packets_count
                .fetch_add(1, Ordering::Relaxed);
            let hdr = (!bad).then(|| Header::parse(&self.buf[..got])).flatten();
            let Some(h) = hdr else {
                self.metrics.malformed.fetch_add(1, Ordering::Relaxed);
                self.warn.warn(format_args!(
                    "virtio-vsock: a transmit chain without a readable packet header dropped"
                ));
                continue;
            };
            let len = h.len as usize;
            if len > MAX_PKT_PAYLOAD || HDR_LEN + len > got {
                self.metrics.malformed.fetch_add(1, Ordering::Relaxed);
                self.warn.warn(format_args!(
                    "virtio-vsock: packet of {len} bytes in a chain of {got} dropped"
                ));
                // The connection it belongs to can no longer be in step: reset it.
                let mut rst = h;
                rst.len = 0;
                rst.op = packet::op::INVALID;
                self.muxer.on_guest_packet(&rst, &[]);
                continue;
            }
            let data = if h.op == packet::op::RW {
                &self.buf[HDR_LEN..HDR_LEN + len]
            } else {
                &[][..]
            };
            self.muxer.on_guest_packet(&h, data);
        }
        if done > 0 && wants_interrupt(&a.mem, &a.tx) {
            a.interrupt.signal_used_queue();
        }
        if done == TX_BUDGET {
            let _ = self.queue_evts[TX].write(1);
        }
        done
    }

    /// Moves what the muxer has for the guest into receive chains (up to [`RX_BUDGET`]).
    pub fn process_rx(&mut self) -> usize {
        let Some(a) = self.active.as_mut() else {
            return 0;
        };
        if self.broken {
            return 0;
        }
        let mut done = 0;
        while done < RX_BUDGET && self.muxer.has_rx() {
            let chain = match a.rx.iter(&a.mem) {
                Ok(mut it) => it.next(),
                Err(e) => {
                    self.warn.warn(format_args!(
                        "virtio-vsock: receive queue unusable ({e}); ignoring it until reset"
                    ));
                    self.broken = true;
                    break;
                }
            };
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            let descs: Vec<(GuestAddress, usize)> = chain
                .filter(|d| d.is_write_only())
                .map(|d| (d.addr(), d.len() as usize))
                .collect();
            let cap = descs.iter().map(|d| d.1).sum::<usize>().min(self.buf.len());
            if cap < HDR_LEN {
                self.metrics.malformed.fetch_add(1, Ordering::Relaxed);
                self.warn.warn(format_args!(
                    "virtio-vsock: a receive chain of {cap} bytes is too small for a header"
                ));
                if a.rx.add_used(&a.mem, head, 0).is_err() {
                    self.broken = true;
                    break;
                }
                done += 1;
                continue;
            }
            let Some(n) = self.muxer.next_rx(&mut self.buf[..cap]) else {
                // Nothing after all (a socket had no data): the chain goes back.
                a.rx.go_to_previous_position();
                break;
            };
            let mut off = 0;
            let mut ok = true;
            for (addr, len) in descs {
                if off == n {
                    break;
                }
                let m = len.min(n - off);
                if a.mem.write_slice(&self.buf[off..off + m], addr).is_err() {
                    ok = false;
                    break;
                }
                off += m;
            }
            if !ok {
                self.warn.warn(format_args!(
                    "virtio-vsock: a receive buffer lies outside guest memory; packet lost"
                ));
            }
            if a.rx.add_used(&a.mem, head, off as u32).is_err() {
                self.broken = true;
                break;
            }
            self.metrics
                .rx_packets_count
                .fetch_add(1, Ordering::Relaxed);
            done += 1;
        }
        if done > 0 && wants_interrupt(&a.mem, &a.rx) {
            a.interrupt.signal_used_queue();
        }
        if done == RX_BUDGET && self.muxer.has_rx() {
            let _ = self.queue_evts[RX].write(1);
        }
        done
    }

    /// What the muxer's epoll fd firing does: host sockets' events, then the receive queue (for harnesses
    /// that drive the device without an event manager, like the fuzz targets).
    pub fn process_backend(&mut self) -> usize {
        self.muxer.process_events();
        self.process_rx()
    }

    /// Sends an owed TRANSPORT_RESET if the guest has posted an event buffer.
    pub fn process_evt(&mut self) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        if !self.reset_event {
            return;
        }
        let chain = match a.evt.iter(&a.mem) {
            Ok(mut it) => it.next(),
            Err(_) => return,
        };
        let Some(mut chain) = chain else { return };
        let head = chain.head_index();
        let mut written = 0;
        if let Some(d) = chain.find(|d| d.is_write_only()) {
            if d.len() >= 4
                && a.mem
                    .write_slice(&EVENT_TRANSPORT_RESET.to_le_bytes(), d.addr())
                    .is_ok()
            {
                written = 4;
            }
        }
        if a.evt.add_used(&a.mem, head, written).is_ok() {
            a.interrupt.signal_used_queue();
        }
        self.reset_event = written == 0;
    }
}

/// Whether the driver wants an interrupt for this queue's used buffers (no EVENT_IDX is offered).
fn wants_interrupt(mem: &GuestMemoryMmap, queue: &Queue) -> bool {
    mem.read_obj::<u16>(GuestAddress(queue.avail_ring()))
        .map_or(true, |f| {
            u16::from_le(f) & VRING_AVAIL_F_NO_INTERRUPT as u16 == 0
        })
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE]
    }

    fn avail_features(&self) -> u64 {
        // VERSION_1 comes from the transport; stream sockets only (no SEQPACKET).
        0
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.guest_cid.to_le_bytes(), offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        self.warn.warn(format_args!(
            "virtio-vsock: config write at {offset:#x} ignored"
        ));
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<VirtioInterrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        let [rx, tx, evt] = ready_queues::<3>(queues)?;
        self.active = Some(Active {
            mem,
            interrupt,
            rx,
            tx,
            evt,
        });
        self.broken = false;
        // On a vCPU thread: the VMM thread picks up what is queued when it sees these.
        super::kick_queues(
            &self.queue_evts,
            "virtio-vsock: cannot kick a queue on activation",
        );
        Ok(())
    }

    fn reset(&mut self) {
        // The guest's connections are gone with its driver: so are ours.
        self.active = None;
        self.broken = false;
        self.acked_features = 0;
        self.muxer.reset_all();
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn saved_queues(&self) -> Vec<super::persist::QueueState> {
        use super::persist::QueueState;
        self.active
            .iter()
            .flat_map(|a| {
                [
                    QueueState::save(&a.rx),
                    QueueState::save(&a.tx),
                    QueueState::save(&a.evt),
                ]
            })
            .collect()
    }

    fn restore_data(&mut self, data: &DeviceData) -> Result<(), VirtioStateError> {
        match data {
            DeviceData::None => {
                // Connections are not saved: the restored guest is told its transport was reset.
                self.muxer.reset_all();
                self.reset_event = true;
                Ok(())
            }
            d => Err(VirtioStateError::Data(format!(
                "virtio-vsock holds no {d:?}"
            ))),
        }
    }
}

impl MutEventSubscriber for Vsock {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            Self::PROCESS_RX => {
                let _ = self.queue_evts[RX].read();
            }
            Self::PROCESS_TX => {
                let _ = self.queue_evts[TX].read();
                self.process_tx();
            }
            Self::PROCESS_EVT => {
                let _ = self.queue_evts[EVT].read();
                self.process_evt();
                return;
            }
            Self::BACKEND => self.muxer.process_events(),
            other => {
                log::warn!("virtio-vsock: unexpected event token {other}");
                return;
            }
        }
        self.process_rx();
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (evt, token) in
            self.queue_evts
                .iter()
                .zip([Self::PROCESS_RX, Self::PROCESS_TX, Self::PROCESS_EVT])
        {
            if let Err(e) = ops.add(Events::with_data(evt, token, EventSet::IN)) {
                log::error!("virtio-vsock: cannot register a queue EventFd: {e:?}");
            }
        }
        let fd = self.muxer.epoll_fd();
        if let Err(e) = ops.add(Events::with_data_raw(fd, Self::BACKEND, EventSet::IN)) {
            log::error!("virtio-vsock: cannot register the muxer: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests;
