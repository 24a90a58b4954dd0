//! virtio-net over a host TAP device: one receive queue (0) and one transmit queue (1).
//!
//! [`Net`] is an event-manager `MutEventSubscriber` on the VMM thread with three event sources: the two
//! queues' notify EventFds ([`Net::PROCESS_RX`], [`Net::PROCESS_TX`]) and the TAP ([`Net::TAP`]).
//!
//! Receive: while the TAP is armed (EPOLLIN), each readiness reads frames (with their 12-byte virtio-net
//! header) into a host buffer and [`frames::deliver_rx`] copies them into the guest's receive chains, with
//! an all-zero header apart from `num_buffers` (no offloads are offered). When the guest has no room, the
//! frame stays in the buffer, the TAP is disarmed (epoll interest cleared, so frames wait in the TAP's own
//! queue and nothing spins), and the guest's next receive-queue notify delivers it and re-arms the TAP.
//! At most [`RX_BUDGET`] frames are moved per event, so a flood cannot starve the rest of the VMM thread.
//!
//! Transmit: each notify gathers every available chain ([`frames::read_tx`]) and writes it to the
//! non-blocking TAP in one `writev`, with a header that is zero except for a checksum request
//! ([`tx_header`]: with `VIRTIO_NET_F_CSUM` the guest may leave a TCP/UDP checksum to the host); a frame the TAP will not take now (EAGAIN) or
//! refuses is dropped and counted, so the VMM thread never waits for the host.
//!
//! Interrupts: one per batch of used buffers, unless the driver set VRING_AVAIL_F_NO_INTERRUPT (a polling
//! driver). Offered features: VERSION_1 (by the transport), MAC, STATUS (link always up), MRG_RXBUF, CSUM
//! (transmit checksum offload, which the host kernel completes; nothing else of the header passes). Malformed
//! chains are returned (receive: with length 0) and logged through a [`LogLimiter`]; counters are in
//! [`NetMetrics`].

pub mod frames;
pub mod tap;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS,
    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_S_LINK_UP,
};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use self::frames::{deliver_rx, read_tx, RxOutcome};
use self::tap::{Tap, VNET_HDR_LEN};
use super::{
    read_config_bytes, ready_queues, wants_interrupt, ActivateError, LogLimiter, VirtioDevice,
    VirtioInterrupt, TYPE_NET,
};
use crate::rate_limiter::{RateLimiter, RateLimiterConfig, RateLimiterError};
use crate::virtio::persist::{DeviceData, VirtioStateError};
use crate::GuestMemoryMmap;

/// Queue size we offer for both queues.
pub const QUEUE_SIZE: u16 = 256;
/// Largest header + frame we move in either direction (a 64 KiB frame and its header).
pub const MAX_PACKET: usize = VNET_HDR_LEN + 65550;
/// Most frames moved from the TAP into the guest per event.
pub const RX_BUDGET: usize = 256;
/// Most chains transmitted per event before yielding to other events (the rest is picked up at once).
pub const TX_BUDGET: usize = 256;
const RX: usize = 0;
const TX: usize = 1;

/// Errors from creating a network device.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A queue notify EventFd could not be created.
    #[error("cannot create a queue EventFd")]
    EventFd(#[source] io::Error),
    /// A rate limiter could not be set up.
    #[error(transparent)]
    RateLimiter(#[from] RateLimiterError),
}

/// Counters of one network device.
/// Serialized by serde as a snapshot: each counter read once (`GET /metrics`).
#[derive(Debug, Default, serde::Serialize)]
pub struct NetMetrics {
    /// Frames delivered to the guest.
    pub rx_packets: AtomicU64,
    /// Their bytes (Ethernet frames, without the virtio-net header).
    pub rx_bytes: AtomicU64,
    /// Frames read from the TAP and not delivered (no usable buffer could ever hold them, bad chains).
    pub rx_dropped: AtomicU64,
    /// Times a received frame found no room in the guest's buffers (the TAP is then disarmed until the
    /// guest posts more).
    pub rx_no_buffers: AtomicU64,
    /// Frames written to the TAP.
    pub tx_packets: AtomicU64,
    /// Their bytes (without the header).
    pub tx_bytes: AtomicU64,
    /// Frames the guest sent that did not reach the TAP (it would block, or refused them).
    pub tx_dropped: AtomicU64,
    /// Malformed descriptor chains (either queue).
    pub malformed: AtomicU64,
    /// Times a received frame waited for the receive rate limiter (Firecracker's
    /// `rx_rate_limiter_throttled`).
    pub rx_rate_limiter_throttled: AtomicU64,
    /// Times a frame to send waited for the transmit rate limiter (Firecracker's
    /// `tx_rate_limiter_throttled`).
    pub tx_rate_limiter_throttled: AtomicU64,
}

/// How to set up a network device.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// The guest's MAC address.
    pub mac: [u8; 6],
    /// Firecracker's `rx_rate_limiter`: frames and bytes delivered to the guest.
    pub rx_rate_limiter: RateLimiterConfig,
    /// Firecracker's `tx_rate_limiter`: frames and bytes the guest sends.
    pub tx_rate_limiter: RateLimiterConfig,
}

struct Active {
    mem: GuestMemoryMmap,
    interrupt: Arc<VirtioInterrupt>,
    rx: Queue,
    tx: Queue,
}

/// A virtio-net device backed by a TAP.
pub struct Net {
    tap: Tap,
    config: [u8; 8],
    acked_features: u64,
    queue_evts: [EventFd; 2],
    active: Option<Active>,
    broken: bool,
    /// Header and frame read from the TAP, waiting for guest buffers (`rx_len` bytes; 0 = none).
    rx_buf: Vec<u8>,
    rx_len: usize,
    /// Whether the TAP is polled for EPOLLIN.
    tap_armed: bool,
    /// The TAP reported an error or hang-up and was removed from the event loop.
    tap_dead: bool,
    tx_buf: Vec<u8>,
    metrics: Arc<NetMetrics>,
    warn: LogLimiter,
    /// A received frame waits in `rx_buf` (the TAP disarmed) while this is short.
    rx_limiter: RateLimiter,
    /// A chain to send waits on the avail ring while this is short.
    tx_limiter: RateLimiter,
}

impl Net {
    /// Event token of the receive queue's notify EventFd.
    pub const PROCESS_RX: u32 = 0;
    /// Event token of the transmit queue's notify EventFd.
    pub const PROCESS_TX: u32 = 1;
    /// Event token of the TAP.
    pub const TAP: u32 = 2;
    /// Event token of the receive rate limiter's timerfd.
    pub const RX_RATE_LIMITER: u32 = 3;
    /// Event token of the transmit rate limiter's timerfd.
    pub const TX_RATE_LIMITER: u32 = 4;

    /// A network device on `tap`.
    pub fn new(tap: Tap, cfg: &NetConfig) -> Result<Self, NetError> {
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&cfg.mac);
        config[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        let evt = || EventFd::new(EFD_NONBLOCK).map_err(NetError::EventFd);
        Ok(Self {
            tap,
            config,
            acked_features: 0,
            queue_evts: [evt()?, evt()?],
            active: None,
            broken: false,
            rx_buf: vec![0; MAX_PACKET],
            rx_len: 0,
            tap_armed: false,
            tap_dead: false,
            tx_buf: Vec::with_capacity(MAX_PACKET),
            metrics: Arc::new(NetMetrics::default()),
            warn: LogLimiter::default(),
            rx_limiter: RateLimiter::new(&cfg.rx_rate_limiter)?,
            tx_limiter: RateLimiter::new(&cfg.tx_rate_limiter)?,
        })
    }

    /// The device's counters.
    pub fn metrics(&self) -> Arc<NetMetrics> {
        self.metrics.clone()
    }

    /// The receive and transmit rate limiters' buckets in force.
    pub fn rate_limiter_configs(&self) -> (RateLimiterConfig, RateLimiterConfig) {
        (*self.rx_limiter.config(), *self.tx_limiter.config())
    }

    /// Changes the rate limiters (`PATCH /network-interfaces/{id}`; buckets not named stay). Frames
    /// that waited for the old limiters move on the next event: both queues are kicked.
    pub fn update_rate_limiters(
        &mut self,
        rx: Option<&RateLimiterConfig>,
        tx: Option<&RateLimiterConfig>,
    ) -> Result<(), NetError> {
        if let Some(rx) = rx {
            self.rx_limiter.update(rx)?;
        }
        if let Some(tx) = tx {
            self.tx_limiter.update(tx)?;
        }
        super::kick_queues(
            &self.queue_evts,
            "virtio-net: cannot kick a queue after a rate limiter change",
        );
        Ok(())
    }

    /// The host TAP's name.
    pub fn tap_name(&self) -> &str {
        self.tap.name()
    }

    /// Whether a received frame is waiting for guest buffers.
    pub fn rx_pending(&self) -> bool {
        self.rx_len > 0
    }

    fn mrg_rxbuf(&self) -> bool {
        self.acked_features & (1u64 << VIRTIO_NET_F_MRG_RXBUF) != 0
    }

    /// Moves frames from the TAP into the guest until the TAP is empty, the guest has no room, or the
    /// budget is spent. Returns whether it stopped for lack of guest buffers.
    pub fn process_rx(&mut self) -> bool {
        let mrg = self.mrg_rxbuf();
        let Some(a) = self.active.as_mut() else {
            return false;
        };
        if self.broken {
            return false;
        }
        let mut signal = false;
        let mut starved = false;
        for _ in 0..RX_BUDGET {
            if self.rx_len == 0 {
                match self.tap.read_frame(&mut self.rx_buf) {
                    Ok(n) if n < VNET_HDR_LEN + frames::MIN_FRAME_LEN => {
                        self.metrics.rx_dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Ok(n) => {
                        // No offloads were negotiated: whatever the host said, the guest gets a zero
                        // header (num_buffers is filled in on delivery).
                        self.rx_buf[..VNET_HDR_LEN].fill(0);
                        self.rx_len = n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.warn.warn(format_args!(
                            "virtio-net {}: reading the TAP failed: {e}",
                            self.tap.name()
                        ));
                        break;
                    }
                }
            }
            if !self.rx_limiter.consume((self.rx_len - VNET_HDR_LEN) as u64) {
                // The frame waits in rx_buf with the TAP disarmed until the limiter's timer fires.
                self.metrics
                    .rx_rate_limiter_throttled
                    .fetch_add(1, Ordering::Relaxed);
                starved = true;
                break;
            }
            let packet = &self.rx_buf[..self.rx_len];
            match deliver_rx(&a.mem, &mut a.rx, packet, mrg) {
                RxOutcome::Delivered(_) => {
                    self.metrics.rx_packets.fetch_add(1, Ordering::Relaxed);
                    self.metrics
                        .rx_bytes
                        .fetch_add((self.rx_len - VNET_HDR_LEN) as u64, Ordering::Relaxed);
                    self.rx_len = 0;
                    signal = true;
                }
                RxOutcome::NoBuffers => {
                    self.metrics.rx_no_buffers.fetch_add(1, Ordering::Relaxed);
                    starved = true;
                    break;
                }
                RxOutcome::Dropped { reason, returned } => {
                    self.warn.warn(format_args!(
                        "virtio-net {}: dropped a received frame: {reason}",
                        self.tap.name()
                    ));
                    self.metrics.rx_dropped.fetch_add(1, Ordering::Relaxed);
                    if matches!(reason, frames::RxDropReason::BadChain(_)) {
                        self.metrics.malformed.fetch_add(1, Ordering::Relaxed);
                    }
                    self.rx_len = 0;
                    signal |= returned > 0;
                }
                RxOutcome::QueueBroken(e) => {
                    self.warn.warn(format_args!(
                        "virtio-net {}: receive queue unusable ({e}); ignoring it until reset",
                        self.tap.name()
                    ));
                    self.broken = true;
                    break;
                }
            }
        }
        if signal && wants_interrupt(&a.mem, &a.rx) {
            a.interrupt.signal_used_queue();
        }
        starved
    }

    /// Sends every frame the guest has queued (up to [`TX_BUDGET`]); returns how many chains it completed.
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
                        "virtio-net {}: transmit queue unusable ({e}); ignoring it until reset",
                        self.tap.name()
                    ));
                    self.broken = true;
                    break;
                }
            };
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            match read_tx(&a.mem, chain, &mut self.tx_buf, MAX_PACKET) {
                Ok(()) => {
                    let len = (self.tx_buf.len() - VNET_HDR_LEN) as u64;
                    if !self.tx_limiter.consume(len) {
                        // Back on the avail ring; the limiter's timer resumes sending.
                        a.tx.go_to_previous_position();
                        self.metrics
                            .tx_rate_limiter_throttled
                            .fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    let (hdr, frame) = self.tx_buf.split_at(VNET_HDR_LEN);
                    let hdr = tx_header(hdr, frame.len(), self.acked_features);
                    match self.tap.write_frame(&hdr, frame) {
                        Ok(_) => {
                            self.metrics.tx_packets.fetch_add(1, Ordering::Relaxed);
                            self.metrics
                                .tx_bytes
                                .fetch_add(frame.len() as u64, Ordering::Relaxed);
                        }
                        Err(e) => {
                            if e.kind() != io::ErrorKind::WouldBlock {
                                self.warn.warn(format_args!(
                                    "virtio-net {}: the TAP refused a {}-byte frame: {e}",
                                    self.tap.name(),
                                    frame.len()
                                ));
                            }
                            self.metrics.tx_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Err(e) => {
                    self.warn.warn(format_args!(
                        "virtio-net {}: dropped a transmit chain: {e}",
                        self.tap.name()
                    ));
                    self.metrics.malformed.fetch_add(1, Ordering::Relaxed);
                    self.metrics.tx_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Err(e) = a.tx.add_used(&a.mem, head, 0) {
                self.warn.warn(format_args!(
                    "virtio-net {}: cannot return transmit descriptor {head}: {e}",
                    self.tap.name()
                ));
                self.broken = true;
                break;
            }
            done += 1;
        }
        if done > 0 && wants_interrupt(&a.mem, &a.tx) {
            a.interrupt.signal_used_queue();
        }
        if done == TX_BUDGET {
            // More may be waiting: come back after the other events.
            let _ = self.queue_evts[TX].write(1);
        }
        done
    }

    /// Polls the TAP exactly when frames can go somewhere: active, not broken, and not waiting for buffers.
    fn update_tap_interest(&mut self, starved: bool, ops: &mut EventOps) {
        if self.tap_dead {
            return;
        }
        let want = self.active.is_some() && !self.broken && !starved;
        if want == self.tap_armed {
            return;
        }
        let set = if want {
            EventSet::IN
        } else {
            EventSet::empty()
        };
        match ops.modify(Events::with_data(&self.tap, Self::TAP, set)) {
            Ok(()) => self.tap_armed = want,
            Err(e) => log::error!(
                "virtio-net {}: cannot change the TAP's epoll interest: {e:?}",
                self.tap.name()
            ),
        }
    }
}

/// The header written to the TAP for a guest frame of `frame_len` bytes: all zero, except that a
/// guest which negotiated `VIRTIO_NET_F_CSUM` may ask for a checksum (`NEEDS_CSUM`, `csum_start`,
/// `csum_offset`), which is passed on when it lies inside the frame (the host kernel fills it in).
/// GSO fields are never passed: no segmentation offload is offered.
fn tx_header(guest: &[u8], frame_len: usize, acked: u64) -> [u8; VNET_HDR_LEN] {
    let mut hdr = [0u8; VNET_HDR_LEN];
    if acked & (1u64 << VIRTIO_NET_F_CSUM) == 0 || guest[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM as u8 == 0
    {
        return hdr;
    }
    let start = u16::from_le_bytes([guest[6], guest[7]]) as usize;
    let offset = u16::from_le_bytes([guest[8], guest[9]]) as usize;
    if start + offset + 2 <= frame_len {
        hdr[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
        hdr[6..10].copy_from_slice(&guest[6..10]);
    }
    hdr
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn avail_features(&self) -> u64 {
        (1u64 << VIRTIO_NET_F_MAC)
            | (1u64 << VIRTIO_NET_F_STATUS)
            | (1u64 << VIRTIO_NET_F_MRG_RXBUF)
            | (1u64 << VIRTIO_NET_F_CSUM)
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        self.warn.warn(format_args!(
            "virtio-net {}: config write at {offset:#x} ignored",
            self.tap.name()
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
        let [rx, tx] = ready_queues::<2>(queues)?;
        self.active = Some(Active {
            mem,
            interrupt,
            rx,
            tx,
        });
        self.broken = false;
        // This runs on a vCPU thread; the VMM thread arms the TAP and picks up anything already queued
        // when it sees these.
        super::kick_queues(
            &self.queue_evts,
            "virtio-net: cannot kick a queue on activation",
        );
        Ok(())
    }

    fn reset(&mut self) {
        // The TAP stays armed until its next event finds the device inactive and disarms it.
        self.active = None;
        self.broken = false;
        self.acked_features = 0;
        self.rx_len = 0;
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn saved_queues(&self) -> Vec<crate::virtio::persist::QueueState> {
        use crate::virtio::persist::QueueState;
        self.active
            .iter()
            .flat_map(|a| [QueueState::save(&a.rx), QueueState::save(&a.tx)])
            .collect()
    }

    fn save_data(&self) -> DeviceData {
        if self.rx_len == 0 {
            return DeviceData::None;
        }
        DeviceData::NetRxFrame(self.rx_buf[..self.rx_len].to_vec())
    }

    fn restore_data(&mut self, data: &DeviceData) -> Result<(), VirtioStateError> {
        match data {
            DeviceData::None => self.rx_len = 0,
            DeviceData::NetRxFrame(f)
                if (VNET_HDR_LEN + frames::MIN_FRAME_LEN..=self.rx_buf.len())
                    .contains(&f.len()) =>
            {
                self.rx_buf[..f.len()].copy_from_slice(f);
                self.rx_len = f.len();
            }
            DeviceData::NetRxFrame(f) => {
                return Err(VirtioStateError::Data(format!(
                    "a saved received frame of {} bytes is out of range",
                    f.len()
                )))
            }
            DeviceData::ConsoleInput(_) => {
                return Err(VirtioStateError::Data(
                    "virtio-net holds no console input".into(),
                ))
            }
        }
        Ok(())
    }
}

impl MutEventSubscriber for Net {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let starved = match events.data() {
            Self::PROCESS_RX => {
                let _ = self.queue_evts[RX].read();
                if self.tap_armed && self.rx_len == 0 {
                    // Nothing waits for these buffers; the TAP's readiness brings the next frame.
                    return;
                }
                self.process_rx()
            }
            Self::PROCESS_TX => {
                let _ = self.queue_evts[TX].read();
                self.process_tx();
                // Sending does not change what receiving waits for.
                !self.tap_armed && self.rx_len > 0
            }
            Self::TAP => {
                if events
                    .event_set()
                    .intersects(EventSet::ERROR | EventSet::HANG_UP)
                {
                    log::error!(
                        "virtio-net {}: the TAP reported an error; no more frames are received",
                        self.tap.name()
                    );
                    if let Err(e) =
                        ops.remove(Events::with_data(&self.tap, Self::TAP, EventSet::empty()))
                    {
                        log::error!("virtio-net: cannot stop watching the TAP: {e:?}");
                    }
                    self.tap_dead = true;
                    return;
                }
                self.process_rx()
            }
            Self::RX_RATE_LIMITER => {
                self.rx_limiter.event_handler();
                self.process_rx()
            }
            Self::TX_RATE_LIMITER => {
                self.tx_limiter.event_handler();
                self.process_tx();
                !self.tap_armed && self.rx_len > 0
            }
            other => {
                log::warn!("virtio-net: unexpected event token {other}");
                return;
            }
        };
        self.update_tap_interest(starved, ops);
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (evt, token) in self
            .queue_evts
            .iter()
            .zip([Self::PROCESS_RX, Self::PROCESS_TX])
        {
            if let Err(e) = ops.add(Events::with_data(evt, token, EventSet::IN)) {
                log::error!("virtio-net: cannot register a queue EventFd: {e:?}");
            }
        }
        for (limiter, token) in [
            (&self.rx_limiter, Self::RX_RATE_LIMITER),
            (&self.tx_limiter, Self::TX_RATE_LIMITER),
        ] {
            if let Err(e) = ops.add(Events::with_data(limiter, token, EventSet::IN)) {
                log::error!("virtio-net: cannot register a rate limiter's timer: {e:?}");
            }
        }
        // Registered without interest: it is armed once the guest has activated the device.
        if let Err(e) = ops.add(Events::with_data(&self.tap, Self::TAP, EventSet::empty())) {
            log::error!("virtio-net: cannot register the TAP: {e:?}");
            self.tap_dead = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::mmio::MmioTransport;
    use crate::virtio::test_utils::{guest_memory, init_device, write_reg, QueueLayout};
    use event_manager::{EventManager, SubscriberOps};
    use std::sync::Mutex;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Address, Bytes, GuestAddress};

    type Manager = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

    #[test]
    fn tx_header_passes_only_a_checksum_request_inside_the_frame() {
        let csum = 1u64 << VIRTIO_NET_F_CSUM;
        // NEEDS_CSUM, a GSO type, csum_start 34, csum_offset 16, num_buffers.
        let guest = [1, 1, 0, 0, 0, 0, 34, 0, 16, 0, 7, 0];
        assert_eq!(
            tx_header(&guest, 100, csum),
            [1, 0, 0, 0, 0, 0, 34, 0, 16, 0, 0, 0]
        );
        assert_eq!(tx_header(&guest, 100, 0), [0; VNET_HDR_LEN]);
        // The checksum field would lie beyond the frame.
        assert_eq!(tx_header(&guest, 51, csum), [0; VNET_HDR_LEN]);
        assert_eq!(tx_header(&[0; 12], 100, csum), [0; VNET_HDR_LEN]);
    }

    struct Rig {
        net: Arc<Mutex<Net>>,
        t: MmioTransport,
        host: Tap,
        manager: Manager,
    }

    fn layout(q: &MockSplitQueue<GuestMemoryMmap>) -> QueueLayout {
        QueueLayout {
            size: 16,
            desc: q.desc_table_addr(),
            avail: q.avail_addr(),
            used: q.used_addr(),
        }
    }

    fn desc(addr: u64, len: u32, flags: u32, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, next))
    }

    fn frame(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8) ^ seed).collect()
    }

    fn rig<'a>(
        mem: &GuestMemoryMmap,
        rxq: &MockSplitQueue<'a, GuestMemoryMmap>,
        txq: &MockSplitQueue<'a, GuestMemoryMmap>,
        features: u64,
    ) -> Rig {
        let (a, b) = tap::socket_pair().unwrap();
        let net = Net::new(
            Tap::from_fd(a, "pair"),
            &NetConfig {
                mac: [6, 0, 0, 0, 0, 1],
                rx_rate_limiter: Default::default(),
                tx_rate_limiter: Default::default(),
            },
        )
        .unwrap();
        let net = Arc::new(Mutex::new(net));
        let mut t = MmioTransport::new(mem.clone(), net.clone()).unwrap();
        let s = init_device(&mut t, features, &[layout(rxq), layout(txq)]);
        assert_ne!(s & crate::virtio::status::DRIVER_OK, 0);
        let mut manager = Manager::new().unwrap();
        manager.add_subscriber(net.clone());
        Rig {
            net,
            t,
            host: Tap::from_fd(b, "host"),
            manager,
        }
    }

    impl Rig {
        /// Runs the event loop until it has nothing left to do.
        fn settle(&mut self) {
            for _ in 0..50 {
                if self.manager.run_with_timeout(0).unwrap() == 0 {
                    return;
                }
            }
            panic!("the event loop never went idle");
        }
        fn inject(&mut self, f: &[u8]) {
            // The host side puts a non-zero header in front: the guest must see zeros.
            self.host.write_frame(&[0xee; VNET_HDR_LEN], f).unwrap();
        }
        fn metric(&self, f: impl Fn(&NetMetrics) -> &AtomicU64) -> u64 {
            f(&self.net.lock().unwrap().metrics()).load(Ordering::Relaxed)
        }
    }

    #[test]
    fn config_space_and_features() {
        let mem = guest_memory(1 << 20);
        let rxq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let txq = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16);
        let mut r = rig(&mem, &rxq, &txq, 0);
        let mut cfg = [0u8; 8];
        crate::bus::BusDevice::read(&mut r.t, 0x100, &mut cfg);
        assert_eq!(cfg, [6, 0, 0, 0, 0, 1, 1, 0]);
        let n = r.net.lock().unwrap();
        assert_eq!(n.acked_features, 1u64 << crate::virtio::VIRTIO_F_VERSION_1);
        assert_eq!(n.tap_name(), "pair");
    }

    /// A frame that waits for receive buffers when the VM is saved is saved with the device and
    /// delivered by the restored one.
    #[test]
    fn a_pending_received_frame_survives_save_and_restore() {
        let mem = guest_memory(4 << 20);
        let rxq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let txq = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16);
        let mut r = rig(&mem, &rxq, &txq, 0);
        r.settle();
        let f = frame(300, 7);
        r.inject(&f);
        r.settle();
        assert!(r.net.lock().unwrap().rx_pending());
        let state = r.t.save();
        match &state.data {
            crate::virtio::persist::DeviceData::NetRxFrame(b) => {
                assert_eq!(b.len(), VNET_HDR_LEN + f.len());
                assert_eq!(&b[VNET_HDR_LEN..], &f[..]);
            }
            d => panic!("saved {d:?}"),
        }
        // The JSON round trip the snapshot file makes.
        let state: crate::virtio::persist::MmioTransportState =
            serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();

        let (a, _b) = tap::socket_pair().unwrap();
        let cfg = NetConfig {
            mac: [6, 0, 0, 0, 0, 1],
            rx_rate_limiter: Default::default(),
            tx_rate_limiter: Default::default(),
        };
        let net2 = Arc::new(Mutex::new(Net::new(Tap::from_fd(a, "new"), &cfg).unwrap()));
        let mut t2 = MmioTransport::new(mem.clone(), net2.clone()).unwrap();
        t2.restore(&state).unwrap();
        assert!(net2.lock().unwrap().rx_pending());
        rxq.add_desc_chains(&[desc(0x10_0000, 2048, VRING_DESC_F_WRITE, 0)], 0)
            .unwrap();
        net2.lock().unwrap().process_rx();
        assert!(!net2.lock().unwrap().rx_pending());
        let m = net2.lock().unwrap().metrics();
        assert_eq!(m.rx_packets.load(Ordering::Relaxed), 1);
        let mut got = vec![0u8; VNET_HDR_LEN + f.len()];
        mem.read_slice(&mut got, GuestAddress(0x10_0000)).unwrap();
        assert_eq!(&got[VNET_HDR_LEN..], &f[..]);

        // Saved data that cannot be this device's is refused.
        let (a, _b) = tap::socket_pair().unwrap();
        let net3 = Arc::new(Mutex::new(Net::new(Tap::from_fd(a, "bad"), &cfg).unwrap()));
        for bad in [
            crate::virtio::persist::DeviceData::NetRxFrame(vec![0; 3]),
            crate::virtio::persist::DeviceData::NetRxFrame(vec![0; MAX_PACKET + 1]),
            crate::virtio::persist::DeviceData::ConsoleInput(vec![1]),
        ] {
            let mut t3 = MmioTransport::new(mem.clone(), net3.clone()).unwrap();
            let mut st = state.clone();
            st.data = bad;
            assert!(matches!(t3.restore(&st), Err(VirtioStateError::Data(_))));
        }
    }

    /// One frame per 100 ms each way: the first of three passes at once, the others when the limiters'
    /// timers fire in the event loop; nothing is lost or reordered.
    #[test]
    fn rate_limiters_pace_frames_both_ways() {
        use crate::rate_limiter::TokenBucketConfig;
        use std::time::{Duration, Instant};
        let mem = guest_memory(4 << 20);
        let rxq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let txq = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16);
        let mut r = rig(&mem, &rxq, &txq, 1 << VIRTIO_NET_F_MRG_RXBUF);
        let one_per_100ms = RateLimiterConfig {
            bandwidth: None,
            ops: Some(TokenBucketConfig {
                size: 1,
                one_time_burst: None,
                refill_time: 100,
            }),
        };
        r.net
            .lock()
            .unwrap()
            .update_rate_limiters(Some(&one_per_100ms), Some(&one_per_100ms))
            .unwrap();
        assert_eq!(
            r.net.lock().unwrap().rate_limiter_configs().1,
            one_per_100ms
        );
        r.settle();
        let mut chains = Vec::new();
        for i in 0..3u64 {
            let at = GuestAddress(0x20_0000 + i * 0x1000);
            mem.write_slice(&[0; VNET_HDR_LEN], at).unwrap();
            mem.write_slice(&frame(100, i as u8), at.unchecked_add(12))
                .unwrap();
            chains.push(desc(0x20_0000 + i * 0x1000, 112, 0, 0));
        }
        txq.add_desc_chains(&chains, 0).unwrap();
        rxq.add_desc_chains(
            &(0..3)
                .map(|i| desc(0x10_0000 + i * 0x1000, 1024, VRING_DESC_F_WRITE, 0))
                .collect::<Vec<_>>(),
            0,
        )
        .unwrap();
        for i in 0..3 {
            r.inject(&frame(60, 10 + i));
        }
        let t0 = Instant::now();
        write_reg(&mut r.t, 0x50, 1);
        r.settle();
        assert_eq!(r.metric(|m| &m.tx_packets), 1);
        assert_eq!(r.metric(|m| &m.rx_packets), 1);
        let mut buf = [0u8; 256];
        let mut sent = 1;
        assert_eq!(r.host.read_frame(&mut buf).unwrap(), 112);
        while (sent < 3 || r.metric(|m| &m.rx_packets) < 3)
            && t0.elapsed() < Duration::from_secs(10)
        {
            r.manager.run_with_timeout(100).unwrap();
            while let Ok(n) = r.host.read_frame(&mut buf) {
                assert_eq!(n, 112);
                assert_eq!(&buf[12..112], &frame(100, sent as u8)[..], "in order");
                sent += 1;
            }
        }
        let took = t0.elapsed();
        assert_eq!(sent, 3);
        assert_eq!(r.metric(|m| &m.rx_packets), 3);
        assert!(took >= Duration::from_millis(190), "{took:?}");
        assert!(r.metric(|m| &m.tx_rate_limiter_throttled) >= 1);
        assert!(r.metric(|m| &m.rx_rate_limiter_throttled) >= 1);
        let mut got = [0u8; 72];
        mem.read_slice(&mut got, GuestAddress(0x10_2000)).unwrap();
        assert_eq!(&got[12..], &frame(60, 12)[..]);
    }

    #[test]
    fn receive_waits_for_buffers_without_polling_and_transmit_reaches_the_tap() {
        let mem = guest_memory(4 << 20);
        let rxq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let txq = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16);
        let mut r = rig(&mem, &rxq, &txq, 1 << VIRTIO_NET_F_MRG_RXBUF);
        r.settle();
        // Two frames arrive before the guest has posted any buffer: the first waits in the device, the
        // second in the TAP, and the disarmed TAP generates no events.
        let (f1, f2) = (frame(1514, 1), frame(60, 2));
        r.inject(&f1);
        r.inject(&f2);
        r.settle();
        assert!(r.net.lock().unwrap().rx_pending());
        assert!(!r.net.lock().unwrap().tap_armed);
        assert_eq!(r.manager.run_with_timeout(0).unwrap(), 0);
        assert_eq!(r.metric(|m| &m.rx_no_buffers), 1);
        assert_eq!(r.metric(|m| &m.rx_packets), 0);

        // Buffers of 1024 bytes: the first frame takes two of them, the second one.
        rxq.add_desc_chains(
            &[
                desc(0x10_0000, 1024, VRING_DESC_F_WRITE, 0),
                desc(0x10_1000, 1024, VRING_DESC_F_WRITE, 0),
                desc(0x10_2000, 1024, VRING_DESC_F_WRITE, 0),
            ],
            0,
        )
        .unwrap();
        write_reg(&mut r.t, 0x50, 0);
        r.settle();
        assert_eq!(r.metric(|m| &m.rx_packets), 2);
        assert_eq!(r.metric(|m| &m.rx_bytes), 1574);
        let mut got = vec![0u8; 2048];
        mem.read_slice(&mut got[..1024], GuestAddress(0x10_0000))
            .unwrap();
        mem.read_slice(&mut got[1024..], GuestAddress(0x10_1000))
            .unwrap();
        assert_eq!(&got[..10], &[0; 10]);
        assert_eq!(u16::from_le_bytes([got[10], got[11]]), 2);
        assert_eq!(&got[12..1526], &f1[..]);
        mem.read_slice(&mut got[..72], GuestAddress(0x10_2000))
            .unwrap();
        assert_eq!(&got[12..72], &f2[..]);
        let used_idx: u16 = mem.read_obj(rxq.used_addr().unchecked_add(2)).unwrap();
        assert_eq!(used_idx, 3);
        // Receiving goes on once buffers are there: the TAP is armed again.
        assert!(r.net.lock().unwrap().tap_armed);
        // One interrupt for the batch; none once the driver asks for none (it polls).
        let irq = r.t.interrupt().clone();
        assert_eq!(irq.irq_evt().read().unwrap(), 1);
        mem.write_obj(1u16, rxq.avail_addr()).unwrap();
        rxq.add_desc_chains(&[desc(0x10_3000, 1024, VRING_DESC_F_WRITE, 0)], 3)
            .unwrap();
        r.inject(&f2);
        r.settle();
        assert_eq!(r.metric(|m| &m.rx_packets), 3);
        assert!(
            irq.irq_evt().read().is_err(),
            "no interrupt with NO_INTERRUPT"
        );
        mem.write_obj(0u16, rxq.avail_addr()).unwrap();

        // Transmit: a two-descriptor chain, a chain with a writable descriptor (malformed), a short one.
        let t = frame(100, 3);
        mem.write_slice(&[0x55; VNET_HDR_LEN], GuestAddress(0x20_0000))
            .unwrap();
        mem.write_slice(&t, GuestAddress(0x20_1000)).unwrap();
        txq.add_desc_chains(
            &[
                desc(0x20_0000, 12, VRING_DESC_F_NEXT, 1),
                desc(0x20_1000, 100, 0, 0),
                desc(0x20_1000, 100, VRING_DESC_F_WRITE, 0),
                desc(0x20_1000, 20, 0, 0),
            ],
            0,
        )
        .unwrap();
        write_reg(&mut r.t, 0x50, 1);
        r.settle();
        let mut buf = [0u8; 256];
        let n = r.host.read_frame(&mut buf).unwrap();
        assert_eq!(n, 112);
        assert_eq!(&buf[..12], &[0; 12], "the TAP gets a zero header");
        assert_eq!(&buf[12..112], &t[..]);
        assert!(
            r.host.read_frame(&mut buf).is_err(),
            "only one frame was valid"
        );
        assert_eq!(r.metric(|m| &m.tx_packets), 1);
        assert_eq!(r.metric(|m| &m.tx_bytes), 100);
        assert_eq!(r.metric(|m| &m.malformed), 2);
        assert_eq!(r.metric(|m| &m.tx_dropped), 2);
        let used_idx: u16 = mem.read_obj(txq.used_addr().unchecked_add(2)).unwrap();
        assert_eq!(used_idx, 3);

        // Reset: the device stops, and the TAP's next event disarms it.
        write_reg(&mut r.t, 0x70, 0);
        r.inject(&f2);
        r.settle();
        assert!(!r.net.lock().unwrap().tap_armed);
        assert_eq!(r.manager.run_with_timeout(0).unwrap(), 0);
    }

    #[test]
    fn without_mrg_rxbuf_a_small_buffer_drops_the_frame() {
        let mem = guest_memory(4 << 20);
        let rxq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let txq = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16);
        let mut r = rig(&mem, &rxq, &txq, 0);
        rxq.add_desc_chains(
            &[
                desc(0x10_0000, 512, VRING_DESC_F_WRITE, 0),
                desc(0x10_1000, 1526, VRING_DESC_F_WRITE, 0),
            ],
            0,
        )
        .unwrap();
        r.settle();
        r.inject(&frame(1000, 0));
        r.inject(&frame(1000, 1));
        r.settle();
        assert_eq!(r.metric(|m| &m.rx_dropped), 1);
        assert_eq!(r.metric(|m| &m.rx_packets), 1);
        let mut hdr = [0u8; 12];
        mem.read_slice(&mut hdr, GuestAddress(0x10_1000)).unwrap();
        assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]), 1);
    }

    #[test]
    fn random_rings_never_panic_or_hang() {
        use crate::virtio::block::request::tests::{random_desc, Rng};
        let size = 4u64 << 20;
        let mem = guest_memory(size as usize);
        let rxq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let txq = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16);
        let mut r = rig(&mem, &rxq, &txq, u64::MAX);
        for case in 0..500u64 {
            let mut rng = Rng(0x6e65_7400 + case);
            for q in [&rxq, &txq] {
                for i in 0..16 {
                    q.desc_table()
                        .store(i, random_desc(&mut rng, i % 4, 4, size))
                        .unwrap();
                }
                let avail = q.avail_addr();
                for i in 0..16u64 {
                    let head = rng.below(20) as u16;
                    mem.write_obj(head, avail.unchecked_add(4 + 2 * i)).unwrap();
                }
                let cur: u16 = mem.read_obj(avail.unchecked_add(2)).unwrap();
                let bump = if rng.below(20) == 0 {
                    rng.next() as u16
                } else {
                    rng.below(17) as u16
                };
                mem.write_obj(cur.wrapping_add(bump), avail.unchecked_add(2))
                    .unwrap();
            }
            r.inject(&frame(14 + rng.below(1500) as usize, case as u8));
            write_reg(&mut r.t, 0x50, 0);
            write_reg(&mut r.t, 0x50, 1);
            r.settle();
            while r.host.read_frame(&mut [0u8; 2048]).is_ok() {}
            if r.net.lock().unwrap().broken || rng.below(30) == 0 {
                write_reg(&mut r.t, 0x70, 0);
                for q in [&rxq, &txq] {
                    mem.write_obj(0u16, q.avail_addr().unchecked_add(2))
                        .unwrap();
                    mem.write_obj(0u16, q.used_addr().unchecked_add(2)).unwrap();
                }
                init_device(&mut r.t, u64::MAX, &[layout(&rxq), layout(&txq)]);
            }
        }
    }
}
