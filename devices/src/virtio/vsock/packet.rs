//! The virtio-vsock packet header (virtio 1.2, 5.10.6 "Device Operation"): 44 little-endian bytes in front
//! of every packet on the receive and transmit queues, and the constants of the stream protocol.
//!
//! One definition for both ends of the queues: the guest kernel's `kcore::vsock`
//! (guest-kernel/kcore/src/vsock.rs, plain `no_std` Rust with no dependencies) is compiled here as
//! [`wire`], and this module names what the device uses. (The guest kernel is its own cargo workspace,
//! built with bare-metal flags, so the file is included rather than depended on as a crate.)

#[path = "../../../../guest-kernel/kcore/src/vsock.rs"]
// The guest's socket-address half (`sockaddr_vm`) is not used by the device.
#[allow(dead_code)]
pub mod wire;

pub use wire::{
    credit, Header, EVENT_TRANSPORT_RESET, HDR_LEN, MAX_PEER_BUF_ALLOC, SHUTDOWN_RCV,
    SHUTDOWN_SEND, TYPE_STREAM,
};

/// The host's CID (`VMADDR_CID_HOST`).
pub const HOST_CID: u64 = wire::VMADDR_CID_HOST as u64;

/// Packet operations (`op`).
pub mod op {
    pub use super::wire::{
        OP_CREDIT_REQUEST as CREDIT_REQUEST, OP_CREDIT_UPDATE as CREDIT_UPDATE,
        OP_INVALID as INVALID, OP_REQUEST as REQUEST, OP_RESPONSE as RESPONSE, OP_RST as RST,
        OP_RW as RW, OP_SHUTDOWN as SHUTDOWN,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_at_the_spec_offsets() {
        let h = Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 0x1122_3344,
            dst_port: 1024,
            len: 5,
            type_: TYPE_STREAM,
            op: op::RW,
            flags: SHUTDOWN_SEND,
            buf_alloc: 0x4_0000,
            fwd_cnt: 77,
        };
        let b = h.to_bytes();
        assert_eq!(b[0], 3);
        assert_eq!(b[8], 2);
        assert_eq!(&b[20..24], &1024u32.to_le_bytes());
        assert_eq!(&b[30..32], &op::RW.to_le_bytes());
        assert_eq!(Header::parse(&b), Some(h));
        assert_eq!(Header::parse(&b[..43]), None);
    }
}
