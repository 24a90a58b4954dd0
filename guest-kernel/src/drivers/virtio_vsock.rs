//! The virtio-vsock driver: receive (0), transmit (1) and event (2) queues of `virtio-drivers`'
//! [`VirtQueue`], for the AF_VSOCK sockets of `crate::net::vsock`.
//!
//! As in [`super::virtio_net`], every buffer is a fixed run of contiguous frames (never freed) shared with
//! the device by its physical address. Receive buffers hold a whole packet (44-byte header + 64 KiB);
//! a received packet is read in place ([`VsockDevice::take_rx`]) and its slot given back
//! ([`VsockDevice::repost`]). A packet to send is built in place in a free transmit slot
//! ([`VsockDevice::send`]: the caller fills the payload straight from user memory); transmit slots are
//! reclaimed when a new packet needs one, waiting for the device (on the VMM's thread) when all are in
//! flight. The event queue holds small buffers for `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`
//! ([`VsockDevice::take_event`]).

use super::virtio::KernelHal;
use crate::mm::{frame, phys_to_virt};
use alloc::vec::Vec;
use bitflags::bitflags;
use kcore::vsock::HDR_LEN;
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::mmio::MmioTransport;
use virtio_drivers::transport::Transport;

/// Descriptors per data queue (one per buffer).
const QUEUE_SIZE: usize = 16;
/// Event buffers.
const EVENT_QUEUE_SIZE: usize = 4;
/// Largest payload of one packet (Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
pub const MAX_PAYLOAD: usize = 64 * 1024;
const BUF_PAGES: u64 = (HDR_LEN + MAX_PAYLOAD).div_ceil(4096) as u64;
const BUF_LEN: usize = BUF_PAGES as usize * 4096;
const QUEUE_RX: u16 = 0;
const QUEUE_TX: u16 = 1;
const QUEUE_EVENT: u16 = 2;
/// TSC-free bound on waiting for a transmit slot: this many polls of the used ring.
const TX_WAIT_POLLS: u64 = 50_000_000;

bitflags! {
    /// The feature bits this driver knows.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Features: u64 {
        const VERSION_1 = 1 << 32;
    }
}

/// A DMA buffer of `pages` frames at a physical address, mapped by the direct map.
#[derive(Clone, Copy)]
struct Buf(u64);

impl Buf {
    fn alloc(pages: u64) -> Option<Buf> {
        frame::alloc_contiguous(pages).map(Buf)
    }

    /// The buffer's first `len` bytes.
    ///
    /// # Safety
    /// `len` is within the buffer's frames; the caller must not create a second live reference to the
    /// same buffer, and the device must not own it unless the reference is only handed to the queue.
    #[allow(clippy::mut_from_ref)]
    unsafe fn bytes(&self, len: usize) -> &'static mut [u8] {
        // SAFETY: frames the allocator gave this buffer forever, mapped by the direct map; length and
        // exclusivity are the caller's promise.
        unsafe { core::slice::from_raw_parts_mut(phys_to_virt(self.0) as *mut u8, len) }
    }
}

/// Why the device could not be set up, or a packet not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VsockDevError {
    NoMemory,
    Queue,
    /// The device took no transmit buffer back for a long time.
    Stalled,
}

/// A virtio-vsock device and its buffers.
pub struct VsockDevice {
    transport: MmioTransport<'static>,
    rx: VirtQueue<KernelHal, QUEUE_SIZE>,
    tx: VirtQueue<KernelHal, QUEUE_SIZE>,
    event: VirtQueue<KernelHal, EVENT_QUEUE_SIZE>,
    rx_bufs: Vec<Buf>,
    rx_slot_of: [usize; QUEUE_SIZE],
    tx_bufs: Vec<Buf>,
    tx_free: Vec<usize>,
    tx_in_flight: [(usize, usize); QUEUE_SIZE],
    /// One frame cut into 16-byte event buffers.
    event_buf: Buf,
    event_slot_of: [usize; EVENT_QUEUE_SIZE],
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub tx_waits: u64,
}

impl VsockDevice {
    /// Negotiates VERSION_1, sets up the three queues and posts every receive and event buffer.
    pub fn new(mut transport: MmioTransport<'static>) -> Result<VsockDevice, VsockDevError> {
        transport.begin_init(Features::all());
        let rx = VirtQueue::new(&mut transport, QUEUE_RX, false, false)
            .map_err(|_| VsockDevError::Queue)?;
        let mut tx = VirtQueue::new(&mut transport, QUEUE_TX, false, false)
            .map_err(|_| VsockDevError::Queue)?;
        let event = VirtQueue::new(&mut transport, QUEUE_EVENT, false, false)
            .map_err(|_| VsockDevError::Queue)?;
        // Transmit completions are collected when a slot is needed: no interrupt for them.
        tx.set_dev_notify(false);
        transport.finish_init();
        let alloc = |n| {
            (0..n)
                .map(|_| Buf::alloc(BUF_PAGES))
                .collect::<Option<Vec<_>>>()
        };
        let rx_bufs = alloc(QUEUE_SIZE).ok_or(VsockDevError::NoMemory)?;
        let tx_bufs = alloc(QUEUE_SIZE).ok_or(VsockDevError::NoMemory)?;
        let event_buf = Buf::alloc(1).ok_or(VsockDevError::NoMemory)?;
        let mut dev = VsockDevice {
            transport,
            rx,
            tx,
            event,
            rx_bufs,
            rx_slot_of: [0; QUEUE_SIZE],
            tx_bufs,
            tx_free: (0..QUEUE_SIZE).collect(),
            tx_in_flight: [(0, 0); QUEUE_SIZE],
            event_buf,
            event_slot_of: [0; EVENT_QUEUE_SIZE],
            rx_packets: 0,
            tx_packets: 0,
            tx_waits: 0,
        };
        for slot in 0..QUEUE_SIZE {
            dev.repost(slot);
        }
        for slot in 0..EVENT_QUEUE_SIZE {
            dev.repost_event(slot);
        }
        Ok(dev)
    }

    /// The guest's CID from the configuration space (read again after a transport reset).
    pub fn guest_cid(&self) -> u64 {
        let lo = self.transport.read_config_space::<u32>(0).unwrap_or(0);
        let hi = self.transport.read_config_space::<u32>(4).unwrap_or(0);
        u64::from(lo) | (u64::from(hi) << 32)
    }

    /// Acknowledges the device's interrupt.
    pub fn ack_interrupt(&mut self) {
        let _ = self.transport.ack_interrupt();
    }

    /// The next received packet (header and payload as the device wrote them) and its slot, which stays
    /// off the queue until [`VsockDevice::repost`].
    pub fn take_rx(&mut self) -> Option<(usize, &'static [u8])> {
        let token = self.rx.peek_used()?;
        let slot = self.rx_slot_of[token as usize % QUEUE_SIZE];
        let buf = self.rx_bufs[slot];
        // SAFETY: the buffer under this token is the one added in `repost`; the device is done with it.
        let bytes = unsafe { buf.bytes(BUF_LEN) };
        // SAFETY: the same single buffer that `repost` added under this token.
        let len = unsafe { self.rx.pop_used(token, &[], &mut [bytes]) }.ok()? as usize;
        self.rx_packets += 1;
        // SAFETY: the buffer is off the queue and only read until it is reposted.
        Some((slot, unsafe { &buf.bytes(BUF_LEN)[..len.min(BUF_LEN)] }))
    }

    /// Gives a receive slot back to the device.
    pub fn repost(&mut self, slot: usize) {
        // SAFETY: the slot is off the queue and nobody reads it any more.
        let bytes = unsafe { self.rx_bufs[slot].bytes(BUF_LEN) };
        // SAFETY: the buffer stays valid forever and is not touched until it comes back in take_rx.
        if let Ok(token) = unsafe { self.rx.add(&[], &mut [bytes]) } {
            self.rx_slot_of[token as usize % QUEUE_SIZE] = slot;
            if self.rx.should_notify() {
                self.transport.notify(QUEUE_RX);
            }
        }
    }

    fn event_bytes(&self, slot: usize) -> &'static mut [u8] {
        // SAFETY: 16-byte piece `slot` (< EVENT_QUEUE_SIZE) of the event frame, used only for this slot.
        unsafe { &mut self.event_buf.bytes(4096)[slot * 16..slot * 16 + 16] }
    }

    fn repost_event(&mut self, slot: usize) {
        let bytes = self.event_bytes(slot);
        // SAFETY: the piece stays valid forever and is not touched until take_event pops it.
        if let Ok(token) = unsafe { self.event.add(&[], &mut [bytes]) } {
            self.event_slot_of[token as usize % EVENT_QUEUE_SIZE] = slot;
            if self.event.should_notify() {
                self.transport.notify(QUEUE_EVENT);
            }
        }
    }

    /// The next event's id, its buffer posted again.
    pub fn take_event(&mut self) -> Option<u32> {
        let token = self.event.peek_used()?;
        let slot = self.event_slot_of[token as usize % EVENT_QUEUE_SIZE];
        let bytes = self.event_bytes(slot);
        // SAFETY: the same piece that repost_event added under this token.
        let len = unsafe { self.event.pop_used(token, &[], &mut [bytes]) }.ok()? as usize;
        let id = (len >= 4).then(|| u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
        self.repost_event(slot);
        Some(id.unwrap_or(u32::MAX))
    }

    /// Collects transmit buffers the device has finished with.
    fn reclaim_tx(&mut self) {
        while let Some(token) = self.tx.peek_used() {
            let (slot, len) = self.tx_in_flight[token as usize % QUEUE_SIZE];
            // SAFETY: the buffer added under this token, with the same length.
            let bytes = unsafe { &self.tx_bufs[slot].bytes(len)[..] };
            // SAFETY: the same single buffer that `send` added under this token.
            if unsafe { self.tx.pop_used(token, &[bytes], &mut []) }.is_err() {
                break;
            }
            self.tx_free.push(slot);
        }
    }

    /// Sends a packet: `hdr` (its 44 bytes) then `len` payload bytes (at most [`MAX_PAYLOAD`]) that
    /// `fill` writes in place. Waits for a transmit slot when all are in flight.
    pub fn send<E>(
        &mut self,
        hdr: &[u8; HDR_LEN],
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<Result<(), E>, VsockDevError> {
        let len = len.min(MAX_PAYLOAD);
        let mut polls = 0u64;
        let slot = loop {
            self.reclaim_tx();
            if let Some(s) = self.tx_free.pop() {
                break s;
            }
            if polls == 0 {
                self.tx_waits += 1;
            }
            polls += 1;
            if polls > TX_WAIT_POLLS {
                return Err(VsockDevError::Stalled);
            }
            core::hint::spin_loop();
        };
        // SAFETY: a free slot belongs to nobody else until it is queued below.
        let bytes = unsafe { self.tx_bufs[slot].bytes(HDR_LEN + len) };
        bytes[..HDR_LEN].copy_from_slice(hdr);
        if let Err(e) = fill(&mut bytes[HDR_LEN..]) {
            self.tx_free.push(slot);
            return Ok(Err(e));
        }
        // SAFETY: the buffer stays valid forever and is not touched until reclaim_tx pops it.
        match unsafe { self.tx.add(&[bytes], &mut []) } {
            Ok(token) => {
                self.tx_in_flight[token as usize % QUEUE_SIZE] = (slot, HDR_LEN + len);
                self.tx_packets += 1;
                if self.tx.should_notify() {
                    self.transport.notify(QUEUE_TX);
                }
                Ok(Ok(()))
            }
            Err(_) => {
                self.tx_free.push(slot);
                Err(VsockDevError::Queue)
            }
        }
    }
}
