//! Shared harness of the devices fuzz targets: a small guest-driver language that the fuzzer writes.
//!
//! An input is a flags byte followed by operations. With flag bit 0 the harness first initialises the
//! device as a driver would ([`devices::virtio::test_utils::init_device`], every offered feature, or none
//! but VERSION_1 with bit 1, each queue at the place [`queue_layout`] gives), so short inputs already reach
//! request processing; without it the input must program the transport itself. Bits 3 and up are the
//! target's own (virtio-blk: the backend and the engine). Each operation starts with a tag byte (`tag % 6`):
//! - 0 `Write off:u16 val:u32`: a 32-bit MMIO register write (offset modulo the 0x200-byte window); a write
//!   to QueueNotify (0x50) then runs the device's queue processing, as the ioeventfd would.
//! - 1 `Read off:u16`: an MMIO register read.
//! - 2 `Mem addr:u16 len:u8 bytes`: copies `len` bytes into guest memory at `addr` (descriptor tables,
//!   rings, request headers, data: all guest memory is fuzzer-controlled).
//! - 3 `Kick which:u8`: runs the device's processing for queue `which` without a register write.
//! - 4 `Input len:u16 bytes`: host-side input for the device (a frame from the TAP for virtio-net,
//!   console input for virtio-console; ignored by virtio-blk), then processing.
//! - 5 `Avail queue:u8 head:u16`: publishes descriptor `head` on the queue's available ring at the standard
//!   layout (ring slot = the avail index, then index + 1), the common step of a driver's request.
//!
//! [`Op::encode`] writes the same language, for the seed generator (`examples/gen_seeds.rs`) and the
//! regression test that replays every corpus file on stable (`tests/corpora.rs`).

use std::sync::{Arc, Mutex};

use devices::bus::BusDevice;
use devices::virtio::test_utils::{init_device, QueueLayout};
use devices::virtio::MmioTransport;
use devices::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};

pub mod targets;

/// Guest memory size: small so random 16-bit addresses land in it.
pub const MEM_SIZE: usize = 64 * 1024;
/// Queue size the standard layout uses.
pub const QUEUE_SIZE: u16 = 16;
/// Data buffers of seeds live from here up.
pub const DATA_BASE: u64 = 0x4000;

/// Where queue `i` lives in the standard layout: 0x1000 bytes per queue.
pub fn queue_layout(i: usize) -> QueueLayout {
    let base = 0x1000 * i as u64;
    QueueLayout {
        size: QUEUE_SIZE,
        desc: GuestAddress(base),
        avail: GuestAddress(base + 0x200),
        used: GuestAddress(base + 0x400),
    }
}

/// One driver operation (see the module doc for the encoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// MMIO register write.
    Write(u16, u32),
    /// MMIO register read.
    Read(u16),
    /// Guest memory write.
    Mem(u16, Vec<u8>),
    /// Process a queue.
    Kick(u8),
    /// Host-side input.
    Input(Vec<u8>),
    /// Publish a descriptor head on a queue's available ring.
    Avail(u8, u16),
}

impl Op {
    /// Appends the encoding of `self` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Op::Write(off, v) => {
                out.push(0);
                out.extend_from_slice(&off.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            Op::Read(off) => {
                out.push(1);
                out.extend_from_slice(&off.to_le_bytes());
            }
            Op::Mem(addr, bytes) => {
                // Longer writes become several operations.
                for (i, c) in bytes.chunks(255).enumerate() {
                    out.push(2);
                    out.extend_from_slice(&(addr + (i * 255) as u16).to_le_bytes());
                    out.push(c.len() as u8);
                    out.extend_from_slice(c);
                }
            }
            Op::Kick(q) => out.extend_from_slice(&[3, *q]),
            Op::Input(bytes) => {
                out.push(4);
                out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
                out.extend_from_slice(bytes);
            }
            Op::Avail(q, head) => {
                out.extend_from_slice(&[5, *q]);
                out.extend_from_slice(&head.to_le_bytes());
            }
        }
    }
}

/// Encodes a whole input: flags, then operations.
pub fn encode(flags: u8, ops: &[Op]) -> Vec<u8> {
    let mut out = vec![flags];
    for op in ops {
        op.encode(&mut out);
    }
    out
}

/// Decodes operations until the input runs out (a truncated last operation is dropped).
pub fn decode(mut data: &[u8]) -> Vec<Op> {
    let mut ops = Vec::new();
    fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if data.len() < n {
            return None;
        }
        let (a, b) = data.split_at(n);
        *data = b;
        Some(a)
    }
    let u16_at = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]);
    while let Some(&[tag]) = take(&mut data, 1) {
        let op = match tag % 6 {
            0 => take(&mut data, 6)
                .map(|b| Op::Write(u16_at(b), u32::from_le_bytes([b[2], b[3], b[4], b[5]]))),
            1 => take(&mut data, 2).map(|b| Op::Read(u16_at(b))),
            2 => take(&mut data, 3).and_then(|h| {
                take(&mut data, usize::from(h[2])).map(|b| Op::Mem(u16_at(h), b.to_vec()))
            }),
            3 => take(&mut data, 1).map(|b| Op::Kick(b[0])),
            4 => take(&mut data, 2).and_then(|h| {
                take(&mut data, usize::from(u16_at(h))).map(|b| Op::Input(b.to_vec()))
            }),
            _ => take(&mut data, 3).map(|b| Op::Avail(b[0], u16_at(&b[1..]))),
        };
        match op {
            Some(op) => ops.push(op),
            None => break,
        }
    }
    ops
}

/// What a fuzzed device does besides its registers.
pub trait Device {
    /// Number of queues.
    fn queues(&self) -> usize;
    /// Processes queue `q` (after a notify).
    fn process(&mut self, q: usize);
    /// Host-side input (TAP frame, console input), then processing.
    fn input(&mut self, bytes: &[u8]);
}

/// Runs one input against `transport` in front of `dev`. Returns the sum of the used-ring indexes of the
/// queues at the standard layout afterwards (how many chains the device completed there), which the
/// regression test checks for the seeds.
pub fn run(
    data: &[u8],
    mem: &GuestMemoryMmap,
    transport: &mut MmioTransport,
    dev: &mut dyn Device,
) -> usize {
    let Some((&flags, rest)) = data.split_first() else {
        return 0;
    };
    let nq = dev.queues();
    if flags & 1 == 1 {
        let layouts: Vec<QueueLayout> = (0..nq).map(queue_layout).collect();
        let features = if flags & 2 == 2 { 0 } else { u64::MAX };
        init_device(transport, features, &layouts);
    }
    // The next free slot of each queue's available ring, for `Avail`.
    let mut avail_idx = vec![0u16; nq];
    for op in decode(rest) {
        match op {
            Op::Write(off, v) => {
                let off = u64::from(off) % 0x200;
                transport.write(off, &v.to_le_bytes());
                if off == 0x50 {
                    dev.process(v as usize % nq.max(1));
                }
            }
            Op::Read(off) => {
                let mut b = [0u8; 4];
                transport.read(u64::from(off) % 0x200, &mut b);
            }
            Op::Mem(addr, bytes) => {
                let _ = mem.write_slice(&bytes, GuestAddress(u64::from(addr)));
            }
            Op::Kick(q) => dev.process(usize::from(q) % nq.max(1)),
            Op::Input(bytes) => dev.input(&bytes),
            Op::Avail(q, head) => {
                let q = usize::from(q) % nq.max(1);
                let l = queue_layout(q);
                let idx = avail_idx[q];
                let slot = 4 + 2 * u64::from(idx % QUEUE_SIZE);
                let _ = mem.write_obj(head, GuestAddress(l.avail.0 + slot));
                avail_idx[q] = idx.wrapping_add(1);
                let _ = mem.write_obj(avail_idx[q], GuestAddress(l.avail.0 + 2));
                dev.process(q);
            }
        }
    }
    (0..nq)
        .map(|q| {
            let at = GuestAddress(queue_layout(q).used.0 + 2);
            usize::from(mem.read_obj::<u16>(at).unwrap_or(0))
        })
        .sum()
}

/// Guest memory for one input.
pub fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("fuzz guest memory")
}

/// Locks a device mutex, ignoring poisoning (a panic ends the fuzz run anyway).
pub fn lock<T: ?Sized>(m: &Arc<Mutex<T>>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A scratch file path for this process (tmpfs when there is one).
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    // Unique per call: the regression test replays corpora on several threads of one process.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!("microvm-fuzz-{}-{n}-{name}", std::process::id()))
}
