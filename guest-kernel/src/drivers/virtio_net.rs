//! The virtio-net driver: one receive and one transmit queue of `virtio-drivers`' [`VirtQueue`], with the
//! feature negotiation done here (the crate's own net drivers cannot ask for checksum offload).
//!
//! Buffers are whole frames: without MRG_RXBUF every receive buffer holds the largest frame (12-byte
//! header + 65550 bytes), so the link can run with a 64 KiB MTU, and every buffer is a fixed run of
//! contiguous frames from the frame allocator (never freed, already zero), shared with the device by its
//! physical address. A received frame is read in place ([`NetDevice::take_rx`] hands out its slot; the
//! stack reads it and [`NetDevice::repost`] gives it back); a frame to send is built in place in a free
//! transmit slot ([`NetDevice::transmit`]). With `VIRTIO_NET_F_CSUM` the TCP/UDP checksum is left to the
//! host (the header asks for it and the packet carries the pseudo-header sum), which saves the
//! emulated kernel a pass over every payload; received checksums are not verified (the host computed
//! them, on a link inside the machine).
//!
//! Interrupts: only for received frames; transmit slots are reclaimed when a new frame needs one.

use super::virtio::KernelHal;
use crate::mm::{frame, phys_to_virt};
use alloc::vec::Vec;
use bitflags::bitflags;
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::mmio::MmioTransport;
use virtio_drivers::transport::Transport;

/// Descriptors per queue (one per buffer).
const QUEUE_SIZE: usize = 16;
/// The virtio-net header with VERSION_1 (`num_buffers` included); a legacy device (QEMU's virtio-mmio
/// by default) without MRG_RXBUF uses the first 10 bytes only.
pub const HDR_LEN: usize = 12;
const LEGACY_HDR_LEN: usize = 10;
/// Largest Ethernet frame: a 65535-byte IP packet and its 14-byte Ethernet header.
pub const MAX_FRAME: usize = 65535 + 14;
const BUF_PAGES: u64 = (HDR_LEN + MAX_FRAME).div_ceil(4096) as u64;
const BUF_LEN: usize = BUF_PAGES as usize * 4096;
const QUEUE_RX: u16 = 0;
const QUEUE_TX: u16 = 1;

bitflags! {
    /// The feature bits this driver knows.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Features: u64 {
        const CSUM = 1 << 0;
        const MAC = 1 << 5;
        const STATUS = 1 << 16;
        const VERSION_1 = 1 << 32;
    }
}

/// A DMA buffer: `BUF_LEN` bytes at a physical address, mapped by the direct map.
#[derive(Clone, Copy)]
struct Buf(u64);

impl Buf {
    fn alloc() -> Option<Buf> {
        frame::alloc_contiguous(BUF_PAGES).map(Buf)
    }

    /// The buffer's bytes.
    ///
    /// # Safety
    /// The caller must not create a second live reference to the same buffer, and the device must not
    /// own it (it is not on a queue) unless the reference is only handed to the queue.
    #[allow(clippy::mut_from_ref)]
    unsafe fn bytes(&self) -> &'static mut [u8] {
        // SAFETY: BUF_LEN bytes of frames the allocator gave this buffer forever, mapped by the
        // direct map; exclusivity is the caller's promise.
        unsafe { core::slice::from_raw_parts_mut(phys_to_virt(self.0) as *mut u8, BUF_LEN) }
    }
}

/// Why the device could not be set up.
#[derive(Debug)]
pub enum InitError {
    NoMemory,
    Queue,
}

/// A virtio-net device and its buffers.
pub struct NetDevice {
    transport: MmioTransport<'static>,
    rx: VirtQueue<KernelHal, QUEUE_SIZE>,
    tx: VirtQueue<KernelHal, QUEUE_SIZE>,
    /// Receive buffers by slot; `rx_slot_of[token]` is the slot on the queue under that token.
    rx_bufs: Vec<Buf>,
    rx_slot_of: [usize; QUEUE_SIZE],
    /// Transmit buffers: those not on the queue, and for each queue token the slot and length in flight.
    tx_bufs: Vec<Buf>,
    tx_free: Vec<usize>,
    tx_in_flight: [(usize, usize); QUEUE_SIZE],
    mac: [u8; 6],
    csum_offload: bool,
    /// The header's length on this device (12, or 10 for legacy).
    hdr_len: usize,
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub tx_no_room: u64,
}

impl NetDevice {
    /// Negotiates features, sets up both queues and posts every receive buffer.
    pub fn new(mut transport: MmioTransport<'static>) -> Result<NetDevice, InitError> {
        let features = transport.begin_init(Features::all());
        let mut mac = [0u8; 6];
        if features.contains(Features::MAC) {
            for (i, b) in mac.iter_mut().enumerate() {
                *b = transport.read_config_space::<u8>(i).unwrap_or(0);
            }
        } else {
            mac = [0x06, 0, 0, 0, 0, 0x02];
        }
        let rx =
            VirtQueue::new(&mut transport, QUEUE_RX, false, false).map_err(|_| InitError::Queue)?;
        let mut tx =
            VirtQueue::new(&mut transport, QUEUE_TX, false, false).map_err(|_| InitError::Queue)?;
        // Transmit completions are collected lazily: no interrupt for them.
        tx.set_dev_notify(false);
        transport.finish_init();
        let alloc = |n| (0..n).map(|_| Buf::alloc()).collect::<Option<Vec<_>>>();
        let rx_bufs = alloc(QUEUE_SIZE).ok_or(InitError::NoMemory)?;
        let tx_bufs = alloc(QUEUE_SIZE).ok_or(InitError::NoMemory)?;
        let mut dev = NetDevice {
            transport,
            rx,
            tx,
            rx_bufs,
            rx_slot_of: [0; QUEUE_SIZE],
            tx_bufs,
            tx_free: (0..QUEUE_SIZE).collect(),
            tx_in_flight: [(0, 0); QUEUE_SIZE],
            mac,
            csum_offload: features.contains(Features::CSUM),
            hdr_len: if features.contains(Features::VERSION_1) {
                HDR_LEN
            } else {
                LEGACY_HDR_LEN
            },
            rx_frames: 0,
            tx_frames: 0,
            tx_no_room: 0,
        };
        for slot in 0..QUEUE_SIZE {
            dev.repost(slot);
        }
        Ok(dev)
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Whether TCP/UDP transmit checksums are left to the host.
    pub fn csum_offload(&self) -> bool {
        self.csum_offload
    }

    /// Acknowledges the device's interrupt.
    pub fn ack_interrupt(&mut self) {
        let _ = self.transport.ack_interrupt();
    }

    /// The next received frame: its slot and the frame (without the virtio header). The slot stays
    /// off the queue until [`NetDevice::repost`].
    pub fn take_rx(&mut self) -> Option<(usize, &'static [u8])> {
        let token = self.rx.peek_used()?;
        let slot = self.rx_slot_of[token as usize % QUEUE_SIZE];
        let buf = self.rx_bufs[slot];
        // SAFETY: the buffer under this token is the one added in `repost`; the device is done with it.
        let bytes = unsafe { buf.bytes() };
        // SAFETY: the same single buffer that `repost` added under this token.
        let len = unsafe { self.rx.pop_used(token, &[], &mut [bytes]) }.ok()? as usize;
        self.rx_frames += 1;
        let len = len.clamp(self.hdr_len, BUF_LEN);
        // SAFETY: the buffer is off the queue and only read until it is reposted.
        Some((slot, unsafe { &buf.bytes()[self.hdr_len..len] }))
    }

    /// Gives a receive slot back to the device.
    pub fn repost(&mut self, slot: usize) {
        // SAFETY: the slot is off the queue and nobody reads it any more (the caller is done with it).
        let bytes = unsafe { self.rx_bufs[slot].bytes() };
        // SAFETY: the buffer stays valid forever and is not touched until it comes back in take_rx.
        if let Ok(token) = unsafe { self.rx.add(&[], &mut [bytes]) } {
            self.rx_slot_of[token as usize % QUEUE_SIZE] = slot;
            if self.rx.should_notify() {
                self.transport.notify(QUEUE_RX);
            }
        }
    }

    /// Collects transmit buffers the device has finished with.
    fn reclaim_tx(&mut self) {
        while let Some(token) = self.tx.peek_used() {
            let (slot, len) = self.tx_in_flight[token as usize % QUEUE_SIZE];
            // SAFETY: the buffer added under this token, with the same length.
            let bytes = unsafe { &self.tx_bufs[slot].bytes()[..len] };
            // SAFETY: the same single buffer that `transmit` added under this token.
            if unsafe { self.tx.pop_used(token, &[bytes], &mut []) }.is_err() {
                break;
            }
            self.tx_free.push(slot);
        }
    }

    /// Whether a frame could be sent now.
    pub fn can_transmit(&mut self) -> bool {
        if self.tx_free.is_empty() {
            self.reclaim_tx();
        }
        !self.tx_free.is_empty()
    }

    /// Builds a `len`-byte frame with `f` in a free transmit buffer and queues it. When no buffer is
    /// free the frame is built in a scratch buffer and dropped (the caller checked `can_transmit`).
    pub fn transmit<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let len = len.min(MAX_FRAME);
        let Some(slot) = self.can_transmit().then(|| self.tx_free.pop()).flatten() else {
            self.tx_no_room += 1;
            let mut scratch = alloc::vec![0u8; len];
            return f(&mut scratch);
        };
        // SAFETY: a free slot belongs to nobody else until it is queued below.
        let bytes = unsafe { self.tx_bufs[slot].bytes() };
        let h = self.hdr_len;
        let r = f(&mut bytes[h..h + len]);
        bytes[..h].fill(0);
        if self.csum_offload {
            kcore::net::request_checksum(&mut bytes[..h + len], h);
        }
        let packet = &bytes[..h + len];
        // SAFETY: the buffer stays valid forever and is not touched until reclaim_tx pops it.
        match unsafe { self.tx.add(&[packet], &mut []) } {
            Ok(token) => {
                self.tx_in_flight[token as usize % QUEUE_SIZE] = (slot, h + len);
                self.tx_frames += 1;
                if self.tx.should_notify() {
                    self.transport.notify(QUEUE_TX);
                }
            }
            Err(_) => {
                self.tx_no_room += 1;
                self.tx_free.push(slot);
            }
        }
        r
    }
}
