//! virtio-vsock's wire format and AF_VSOCK's address, for the guest's vsock sockets (`net::vsock`).
//! The VMM's device compiles this same file as its packet format (`devices/src/virtio/vsock/packet.rs`
//! includes it), so both sides of the queue read one definition: keep it self-contained (no `crate::`).
//!
//! - [`Header`]: the 44-byte little-endian packet header (virtio 1.2, 5.10.6).
//! - [`SockaddrVm`]: Linux's `struct sockaddr_vm` (16 bytes: family, reserved, port, cid, flags, zero).
//! - [`credit`]: how many bytes the peer can take (its `buf_alloc` less what is in flight), zero when
//!   its counters make no sense (a `fwd_cnt` ahead of what it was sent), so a bogus peer can never make
//!   the kernel send without bound.

/// Size of [`Header`] on the wire.
pub const HDR_LEN: usize = 44;
/// `AF_VSOCK`.
pub const AF_VSOCK: u16 = 40;
/// Any CID (bind), as `u32` in `sockaddr_vm`.
pub const VMADDR_CID_ANY: u32 = u32::MAX;
/// The host's CID.
pub const VMADDR_CID_HOST: u32 = 2;
/// Any port (bind: pick one).
pub const VMADDR_PORT_ANY: u32 = u32::MAX;
/// `type`: stream.
pub const TYPE_STREAM: u16 = 1;

/// Packet operations (`op`); 0 is invalid.
pub const OP_INVALID: u16 = 0;
pub const OP_REQUEST: u16 = 1;
pub const OP_RESPONSE: u16 = 2;
pub const OP_RST: u16 = 3;
pub const OP_SHUTDOWN: u16 = 4;
pub const OP_RW: u16 = 5;
pub const OP_CREDIT_UPDATE: u16 = 6;
pub const OP_CREDIT_REQUEST: u16 = 7;
/// SHUTDOWN flags: the sender receives no more / sends no more.
pub const SHUTDOWN_RCV: u32 = 1;
pub const SHUTDOWN_SEND: u32 = 2;
/// The event queue's TRANSPORT_RESET.
pub const EVENT_TRANSPORT_RESET: u32 = 0;

/// One packet header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

fn le<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

impl Header {
    /// Parses the first [`HDR_LEN`] bytes (`None` when shorter).
    pub fn parse(b: &[u8]) -> Option<Header> {
        if b.len() < HDR_LEN {
            return None;
        }
        Some(Header {
            src_cid: u64::from_le_bytes(le(b, 0)),
            dst_cid: u64::from_le_bytes(le(b, 8)),
            src_port: u32::from_le_bytes(le(b, 16)),
            dst_port: u32::from_le_bytes(le(b, 20)),
            len: u32::from_le_bytes(le(b, 24)),
            type_: u16::from_le_bytes(le(b, 28)),
            op: u16::from_le_bytes(le(b, 30)),
            flags: u32::from_le_bytes(le(b, 32)),
            buf_alloc: u32::from_le_bytes(le(b, 36)),
            fwd_cnt: u32::from_le_bytes(le(b, 40)),
        })
    }

    /// The header's wire bytes.
    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        self.write(&mut b);
        b
    }

    /// Writes the header into the first [`HDR_LEN`] bytes of `b`.
    pub fn write(&self, b: &mut [u8]) {
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
    }

    /// The RST that answers this packet (addresses swapped).
    pub fn reset_reply(&self) -> Header {
        Header {
            src_cid: self.dst_cid,
            dst_cid: self.src_cid,
            src_port: self.dst_port,
            dst_port: self.src_port,
            type_: TYPE_STREAM,
            op: OP_RST,
            ..Header::default()
        }
    }
}

/// The largest receive buffer a peer may claim (more counts as this much).
pub const MAX_PEER_BUF_ALLOC: u32 = 64 << 20;

/// The bytes a peer with `buf_alloc` and `fwd_cnt` can take after we sent it `tx_cnt` (wrapping
/// counters); zero when `fwd_cnt` claims more than was sent.
pub fn credit(buf_alloc: u32, fwd_cnt: u32, tx_cnt: u32) -> u32 {
    let in_flight = tx_cnt.wrapping_sub(fwd_cnt);
    buf_alloc.min(MAX_PEER_BUF_ALLOC).saturating_sub(in_flight)
}

/// Linux's `struct sockaddr_vm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockaddrVm {
    pub cid: u32,
    pub port: u32,
}

/// `sizeof(struct sockaddr_vm)`.
pub const SOCKADDR_VM_LEN: usize = 16;

/// Why a `sockaddr_vm` is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrError {
    /// Shorter than the structure (Linux: EINVAL).
    TooShort,
    /// Not AF_VSOCK (Linux: EAFNOSUPPORT).
    Family,
}

impl SockaddrVm {
    /// Parses a user's `sockaddr_vm` (`b` is what the caller passed, `len` bytes of it).
    pub fn parse(b: &[u8]) -> Result<SockaddrVm, AddrError> {
        if b.len() < SOCKADDR_VM_LEN {
            return Err(AddrError::TooShort);
        }
        if u16::from_le_bytes(le(b, 0)) != AF_VSOCK {
            return Err(AddrError::Family);
        }
        Ok(SockaddrVm {
            port: u32::from_le_bytes(le(b, 4)),
            cid: u32::from_le_bytes(le(b, 8)),
        })
    }

    /// The structure's bytes.
    pub fn to_bytes(self) -> [u8; SOCKADDR_VM_LEN] {
        let mut b = [0u8; SOCKADDR_VM_LEN];
        b[0..2].copy_from_slice(&AF_VSOCK.to_le_bytes());
        b[4..8].copy_from_slice(&self.port.to_le_bytes());
        b[8..12].copy_from_slice(&self.cid.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_reset_reply() {
        let h = Header {
            src_cid: 2,
            dst_cid: 3,
            src_port: 1 << 30,
            dst_port: 1024,
            len: 7,
            type_: TYPE_STREAM,
            op: OP_RW,
            flags: 0,
            buf_alloc: 262144,
            fwd_cnt: 9,
        };
        let mut b = [0u8; HDR_LEN];
        h.write(&mut b);
        assert_eq!(&b[24..28], &7u32.to_le_bytes());
        assert_eq!(Header::parse(&b), Some(h));
        assert_eq!(Header::parse(&b[..43]), None);
        let r = h.reset_reply();
        assert_eq!(
            (r.op, r.dst_cid, r.dst_port, r.src_port),
            (OP_RST, 2, 1 << 30, 1024)
        );
    }

    #[test]
    fn credit_is_clamped() {
        assert_eq!(credit(4096, 0, 0), 4096);
        assert_eq!(credit(4096, 100, 1100), 3096);
        assert_eq!(credit(4096, 0, 5000), 0);
        // fwd_cnt ahead of what was sent: nothing, even with a huge buf_alloc.
        assert_eq!(credit(u32::MAX, 5000, 100), 0);
        assert_eq!(credit(u32::MAX, 0, 0), MAX_PEER_BUF_ALLOC);
        // Wrapping counters.
        assert_eq!(credit(4096, u32::MAX - 10, 5), 4096 - 16);
    }

    #[test]
    fn sockaddr_vm() {
        let a = SockaddrVm { cid: 2, port: 1024 };
        let b = a.to_bytes();
        assert_eq!(SockaddrVm::parse(&b), Ok(a));
        assert_eq!(SockaddrVm::parse(&b[..15]), Err(AddrError::TooShort));
        let mut bad = b;
        bad[0] = 2;
        assert_eq!(SockaddrVm::parse(&bad), Err(AddrError::Family));
    }
}
