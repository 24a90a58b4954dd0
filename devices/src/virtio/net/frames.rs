//! Moving frames between a host buffer and the guest's descriptor chains: [`deliver_rx`] puts one received
//! frame (virtio-net header first) into the receive queue, [`read_tx`] gathers one transmitted frame from a
//! transmit chain.
//!
//! Both are plain functions over guest memory and a `virtio_queue::Queue`, tested with mock queues. They
//! make no assumption about descriptor framing (virtio 1.x, 2.6.4): the header may be split across
//! descriptors, and with `VIRTIO_NET_F_MRG_RXBUF` a frame spans as many receive chains as it needs, the
//! first header's `num_buffers` saying how many. Every guest range is checked before use; a chain that breaks
//! the rules (a device-readable buffer in the receive queue, a device-writable one in the transmit queue, a
//! buffer outside guest memory, a frame too short or too long) is reported as a [`ChainError`], never a
//! panic.

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use super::tap::VNET_HDR_LEN;
use crate::GuestMemoryMmap;

/// Offset of `num_buffers` in the virtio-net header.
const NUM_BUFFERS_OFFSET: usize = 10;
/// Shortest frame we pass on: an Ethernet header.
pub const MIN_FRAME_LEN: usize = 14;

/// What is wrong with a guest descriptor chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A receive chain has a device-readable descriptor.
    #[error("device-readable descriptor in a receive chain")]
    ReadableRx,
    /// A transmit chain has a device-writable descriptor.
    #[error("device-writable descriptor in a transmit chain")]
    WritableTx,
    /// A descriptor points outside guest memory.
    #[error("descriptor {addr:#x}+{len:#x} is outside guest memory")]
    BadAddress {
        /// Start.
        addr: u64,
        /// Length.
        len: u32,
    },
    /// A receive chain with no room at all.
    #[error("receive chain has no writable bytes")]
    EmptyRx,
    /// A transmitted frame shorter than its header and an Ethernet header.
    #[error("transmit chain of {0} bytes is shorter than the virtio-net and Ethernet headers")]
    ShortTx(usize),
    /// A transmitted frame longer than the device accepts.
    #[error("transmit chain is longer than {0} bytes")]
    LongTx(usize),
}

/// What became of a received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RxOutcome {
    /// In the guest's buffers, using this many chains.
    Delivered(u16),
    /// Not enough buffers yet: nothing was consumed, try again when the guest adds some.
    NoBuffers,
    /// The frame cannot be delivered and was dropped; `returned` chains went back to the guest unused
    /// (length 0).
    Dropped {
        /// Why.
        reason: RxDropReason,
        /// Chains given back with length 0.
        returned: u16,
    },
    /// The queue itself is unusable (bad ring addresses or indices); it needs a reset.
    QueueBroken(String),
}

/// Why a received frame was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RxDropReason {
    /// A malformed receive chain.
    #[error("{0}")]
    BadChain(ChainError),
    /// Without MRG_RXBUF, the first chain is smaller than the frame.
    #[error("receive buffer of {have} bytes is too small for {need} bytes (no MRG_RXBUF)")]
    BufferTooSmall {
        /// Bytes in the chain.
        have: usize,
        /// Header and frame.
        need: usize,
    },
    /// Every entry of the ring is posted and together they cannot hold the frame.
    #[error("the whole receive ring cannot hold {0} bytes")]
    RingTooSmall(usize),
}

/// Where the guest buffer bytes of one chain went.
struct Written {
    len: u32,
    /// Guest addresses of packet bytes 10 and 11 (`num_buffers`) if this chain holds them.
    num_buffers_at: [Option<GuestAddress>; 2],
}

/// Writes `packet[start..]` into the writable descriptors of `chain`, as far as it goes.
fn fill_chain(
    mem: &GuestMemoryMmap,
    chain: virtio_queue::DescriptorChain<&GuestMemoryMmap>,
    packet: &[u8],
    start: usize,
) -> Result<Written, ChainError> {
    let mut w = Written {
        len: 0,
        num_buffers_at: [None, None],
    };
    let mut pos = start;
    let mut capacity = 0u64;
    for desc in chain {
        if !desc.is_write_only() {
            return Err(ChainError::ReadableRx);
        }
        let bad = ChainError::BadAddress {
            addr: desc.addr().0,
            len: desc.len(),
        };
        if !mem.check_range(desc.addr(), desc.len() as usize) {
            return Err(bad);
        }
        capacity += u64::from(desc.len());
        let n = (desc.len() as usize).min(packet.len() - pos);
        if n == 0 {
            continue;
        }
        mem.write_slice(&packet[pos..pos + n], desc.addr())
            .map_err(|_| bad.clone())?;
        for (i, slot) in w.num_buffers_at.iter_mut().enumerate() {
            let off = NUM_BUFFERS_OFFSET + i;
            if (pos..pos + n).contains(&off) {
                *slot = desc.addr().checked_add((off - pos) as u64);
            }
        }
        pos += n;
        w.len += n as u32;
    }
    if capacity == 0 {
        return Err(ChainError::EmptyRx);
    }
    Ok(w)
}

/// Delivers `packet` (a 12-byte virtio-net header, then the frame) into the receive `queue`.
///
/// With `mrg_rxbuf` the frame may span several chains; otherwise it must fit the first one. The header's
/// `num_buffers` is set to the number of chains used before any of them is published on the used ring.
/// On [`RxOutcome::NoBuffers`] nothing was consumed (the available index is rolled back).
pub fn deliver_rx(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    packet: &[u8],
    mrg_rxbuf: bool,
) -> RxOutcome {
    let start = queue.next_avail();
    let mut used: Vec<(u16, u32)> = Vec::new();
    let mut num_buffers_at = [None, None];
    let mut written = 0usize;
    while written < packet.len() {
        let chain = match queue.iter(mem) {
            Ok(mut it) => it.next(),
            Err(e) => return RxOutcome::QueueBroken(e.to_string()),
        };
        let Some(chain) = chain else {
            // Out of buffers mid-frame: give back what we took and wait, unless the ring is already full.
            queue.set_next_avail(start);
            let posted = queue
                .avail_idx(mem, std::sync::atomic::Ordering::Acquire)
                .map(|idx| idx.0.wrapping_sub(start))
                .unwrap_or(0);
            if posted >= queue.size() && queue.size() > 0 {
                return drop_frame(mem, queue, &[], RxDropReason::RingTooSmall(packet.len()));
            }
            return RxOutcome::NoBuffers;
        };
        let head = chain.head_index();
        match fill_chain(mem, chain, packet, written) {
            Ok(w) => {
                written += w.len as usize;
                for (slot, at) in num_buffers_at.iter_mut().zip(w.num_buffers_at) {
                    if at.is_some() {
                        *slot = at;
                    }
                }
                used.push((head, w.len));
                if !mrg_rxbuf && written < packet.len() {
                    let reason = RxDropReason::BufferTooSmall {
                        have: w.len as usize,
                        need: packet.len(),
                    };
                    return drop_frame(mem, queue, &used, reason);
                }
            }
            Err(e) => {
                used.push((head, 0));
                return drop_frame(mem, queue, &used, RxDropReason::BadChain(e));
            }
        }
    }
    let n = used.len() as u16;
    let bytes = n.to_le_bytes();
    for (at, b) in num_buffers_at.iter().zip(bytes) {
        if let Some(at) = at {
            // Checked when the chain was filled.
            let _ = mem.write_obj(b, *at);
        }
    }
    for &(head, len) in &used {
        if let Err(e) = queue.add_used(mem, head, len) {
            return RxOutcome::QueueBroken(e.to_string());
        }
    }
    RxOutcome::Delivered(n)
}

/// Returns `chains` with length 0 and reports the frame as dropped.
fn drop_frame(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    chains: &[(u16, u32)],
    reason: RxDropReason,
) -> RxOutcome {
    for &(head, _) in chains {
        if let Err(e) = queue.add_used(mem, head, 0) {
            return RxOutcome::QueueBroken(e.to_string());
        }
    }
    RxOutcome::Dropped {
        reason,
        returned: chains.len() as u16,
    }
}

/// Gathers the device-readable bytes of a transmit chain into `buf` (cleared first): the virtio-net header,
/// then the frame. At most `max` bytes; the frame must be at least an Ethernet header.
pub fn read_tx(
    mem: &GuestMemoryMmap,
    chain: virtio_queue::DescriptorChain<&GuestMemoryMmap>,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<(), ChainError> {
    buf.clear();
    for desc in chain {
        if desc.is_write_only() {
            return Err(ChainError::WritableTx);
        }
        let len = desc.len() as usize;
        if buf.len() + len > max {
            return Err(ChainError::LongTx(max));
        }
        let bad = ChainError::BadAddress {
            addr: desc.addr().0,
            len: desc.len(),
        };
        if !mem.check_range(desc.addr(), len) {
            return Err(bad);
        }
        let at = buf.len();
        buf.resize(at + len, 0);
        mem.read_slice(&mut buf[at..], desc.addr())
            .map_err(|_| bad)?;
    }
    if buf.len() < VNET_HDR_LEN + MIN_FRAME_LEN {
        return Err(ChainError::ShortTx(buf.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_utils::guest_memory;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;

    const W: u32 = VRING_DESC_F_WRITE;
    const N: u32 = VRING_DESC_F_NEXT;

    fn desc(addr: u64, len: u32, flags: u32, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, next))
    }

    fn packet(frame_len: usize, seed: u8) -> Vec<u8> {
        let mut p = vec![0u8; VNET_HDR_LEN];
        p.extend((0..frame_len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)));
        p
    }

    fn used(mem: &GuestMemoryMmap, q: &MockSplitQueue<GuestMemoryMmap>, i: u64) -> (u32, u32) {
        let at = q.used_addr().unchecked_add(4 + 8 * i);
        (
            mem.read_obj(at).unwrap(),
            mem.read_obj(at.unchecked_add(4)).unwrap(),
        )
    }

    fn used_idx(mem: &GuestMemoryMmap, q: &MockSplitQueue<GuestMemoryMmap>) -> u16 {
        mem.read_obj(q.used_addr().unchecked_add(2)).unwrap()
    }

    #[test]
    fn one_buffer_holds_the_frame_and_num_buffers_is_one() {
        let mem = guest_memory(1 << 20);
        let mq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        mq.add_desc_chains(&[desc(0x10000, 1526, W, 0)], 0).unwrap();
        let mut q: Queue = mq.create_queue().unwrap();
        let p = packet(1514, 3);
        assert_eq!(deliver_rx(&mem, &mut q, &p, false), RxOutcome::Delivered(1));
        let mut got = vec![0u8; p.len()];
        mem.read_slice(&mut got, GuestAddress(0x10000)).unwrap();
        assert_eq!(&got[12..], &p[12..]);
        assert_eq!(&got[..10], &[0; 10]);
        assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1);
        assert_eq!(used(&mem, &mq, 0), (0, 1526));
        assert_eq!(used_idx(&mem, &mq), 1);
        // The ring is now empty: the next frame waits, consuming nothing.
        assert_eq!(deliver_rx(&mem, &mut q, &p, false), RxOutcome::NoBuffers);
        assert_eq!(q.next_avail(), 1);
    }

    #[test]
    fn mergeable_buffers_split_the_frame_and_even_the_header() {
        let mem = guest_memory(1 << 20);
        let mq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        // Chain 0: 7 + 200 bytes (the header is split across its two descriptors); chains 1, 2: 256 bytes.
        mq.add_desc_chains(
            &[
                desc(0x10000, 7, W | N, 1),
                desc(0x20000, 200, W, 0),
                desc(0x30000, 256, W, 0),
                desc(0x40000, 256, W, 0),
            ],
            0,
        )
        .unwrap();
        let mut q: Queue = mq.create_queue().unwrap();
        let p = packet(500, 9); // 512 bytes with the header: 207 + 256 + 49
        assert_eq!(deliver_rx(&mem, &mut q, &p, true), RxOutcome::Delivered(3));
        let mut got = vec![0u8; 512];
        mem.read_slice(&mut got[..7], GuestAddress(0x10000))
            .unwrap();
        mem.read_slice(&mut got[7..207], GuestAddress(0x20000))
            .unwrap();
        mem.read_slice(&mut got[207..463], GuestAddress(0x30000))
            .unwrap();
        mem.read_slice(&mut got[463..], GuestAddress(0x40000))
            .unwrap();
        assert_eq!(&got[12..], &p[12..]);
        assert_eq!(u16::from_le_bytes([got[10], got[11]]), 3);
        assert_eq!(used(&mem, &mq, 0), (0, 207));
        assert_eq!(used(&mem, &mq, 1), (2, 256));
        assert_eq!(used(&mem, &mq, 2), (3, 49));
    }

    #[test]
    fn too_few_buffers_roll_back_then_deliver_when_more_arrive() {
        let mem = guest_memory(1 << 20);
        let mq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        mq.add_desc_chains(&[desc(0x10000, 256, W, 0)], 0).unwrap();
        let mut q: Queue = mq.create_queue().unwrap();
        let p = packet(400, 1);
        assert_eq!(deliver_rx(&mem, &mut q, &p, true), RxOutcome::NoBuffers);
        assert_eq!(q.next_avail(), 0);
        assert_eq!(used_idx(&mem, &mq), 0);
        mq.add_desc_chains(&[desc(0x20000, 256, W, 0)], 1).unwrap();
        assert_eq!(deliver_rx(&mem, &mut q, &p, true), RxOutcome::Delivered(2));
        assert_eq!(used_idx(&mem, &mq), 2);
    }

    #[test]
    fn a_full_ring_too_small_for_the_frame_drops_it() {
        let mem = guest_memory(1 << 20);
        let mq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 2);
        mq.add_desc_chains(&[desc(0x10000, 64, W, 0), desc(0x20000, 64, W, 0)], 0)
            .unwrap();
        let mut q: Queue = mq.create_queue().unwrap();
        let out = deliver_rx(&mem, &mut q, &packet(1000, 0), true);
        assert_eq!(
            out,
            RxOutcome::Dropped {
                reason: RxDropReason::RingTooSmall(1012),
                returned: 0
            }
        );
        // The buffers stay posted for smaller frames.
        assert_eq!(
            deliver_rx(&mem, &mut q, &packet(60, 0), true),
            RxOutcome::Delivered(2)
        );
    }

    #[test]
    fn bad_receive_chains_are_returned_empty() {
        let mem = guest_memory(1 << 20);
        let mq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        mq.add_desc_chains(
            &[
                desc(0x10000, 64, 0, 0),       // device-readable
                desc(0xffff_0000, 2048, W, 0), // outside memory
                desc(0x10000, 0, W, 0),        // no room
                desc(0x10000, 100, W, 0),      // too small without MRG_RXBUF
                desc(0x10000, 2048, W, 0),     // fine
            ],
            0,
        )
        .unwrap();
        let mut q: Queue = mq.create_queue().unwrap();
        let p = packet(1000, 0);
        let reasons: Vec<_> = (0..4)
            .map(|_| match deliver_rx(&mem, &mut q, &p, false) {
                RxOutcome::Dropped { reason, returned } => {
                    assert_eq!(returned, 1);
                    reason
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(reasons[0], RxDropReason::BadChain(ChainError::ReadableRx));
        assert!(matches!(
            reasons[1],
            RxDropReason::BadChain(ChainError::BadAddress { .. })
        ));
        assert_eq!(reasons[2], RxDropReason::BadChain(ChainError::EmptyRx));
        assert_eq!(
            reasons[3],
            RxDropReason::BufferTooSmall {
                have: 100,
                need: 1012
            }
        );
        for i in 0..4 {
            assert_eq!(used(&mem, &mq, i).1, 0);
        }
        assert_eq!(deliver_rx(&mem, &mut q, &p, false), RxOutcome::Delivered(1));
    }

    #[test]
    fn transmit_chains_are_gathered_and_checked() {
        let mem = guest_memory(1 << 20);
        let mq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let p = packet(100, 5);
        mem.write_slice(&p[..20], GuestAddress(0x10000)).unwrap();
        mem.write_slice(&p[20..], GuestAddress(0x20000)).unwrap();
        mq.add_desc_chains(
            &[
                desc(0x10000, 20, N, 1),
                desc(0x20000, 92, 0, 0),
                desc(0x10000, 20, W, 0),
                desc(0x10000, 20, 0, 0),
                desc(0xffff_0000, 64, 0, 0),
                desc(0x10000, 4096, 0, 0),
            ],
            0,
        )
        .unwrap();
        let mut q: Queue = mq.create_queue().unwrap();
        let mut buf = Vec::new();
        let next = |q: &mut Queue, buf: &mut Vec<u8>| {
            let chain = q.iter(&mem).unwrap().next().unwrap();
            read_tx(&mem, chain, buf, 2048)
        };
        next(&mut q, &mut buf).unwrap();
        assert_eq!(buf, p);
        assert_eq!(next(&mut q, &mut buf), Err(ChainError::WritableTx));
        assert_eq!(next(&mut q, &mut buf), Err(ChainError::ShortTx(20)));
        assert!(matches!(
            next(&mut q, &mut buf),
            Err(ChainError::BadAddress { .. })
        ));
        assert_eq!(next(&mut q, &mut buf), Err(ChainError::LongTx(2048)));
    }
}
