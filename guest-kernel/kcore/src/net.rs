//! Checksum offload for virtio-net transmit: the virtio-net header fields that ask the device (here the
//! host kernel behind the TAP) to finish a TCP or UDP checksum over IPv4, and the pseudo-header sum the
//! packet must carry for it (virtio 1.x, 5.1.6.2). And [`syn_dst_port`]: which received frames open a
//! TCP connection (the stack drops those for a listener whose backlog is full, as Linux does).

/// `flags` bit of the virtio-net header: the device completes the checksum.
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;

/// For a TCP or UDP packet over IPv4 in `packet` (a virtio-net header of `hdr_len` bytes, then the
/// Ethernet frame), sets NEEDS_CSUM, `csum_start` and `csum_offset` in the header and puts the folded
/// pseudo-header sum in the transport checksum field. Returns false (and changes nothing) for any other
/// packet or one whose lengths do not add up.
pub fn request_checksum(packet: &mut [u8], hdr_len: usize) -> bool {
    let Some(f) = packet.get(hdr_len..) else {
        return false;
    };
    if f.len() < 34 || f[12..14] != [0x08, 0x00] || f[14] >> 4 != 4 {
        return false;
    }
    let ihl = (f[14] & 0xf) as usize * 4;
    let total = u16::from_be_bytes([f[16], f[17]]) as usize;
    let field = match f[23] {
        6 => 16,
        17 => 6,
        _ => return false,
    };
    let start = 14 + ihl;
    if ihl < 20 || total < ihl || start + field + 2 > f.len() || 14 + total > f.len() {
        return false;
    }
    let mut sum: u32 = f[23] as u32 + (total - ihl) as u32;
    for i in (26..34).step_by(2) {
        sum += u16::from_be_bytes([f[i], f[i + 1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let at = hdr_len + start + field;
    packet[at..at + 2].copy_from_slice(&(sum as u16).to_be_bytes());
    packet[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    packet[6..8].copy_from_slice(&(start as u16).to_le_bytes());
    packet[8..10].copy_from_slice(&(field as u16).to_le_bytes());
    true
}

/// For an Ethernet frame carrying an IPv4 TCP segment with SYN set and ACK clear (a connection
/// request; the first fragment only), the destination port; None for anything else.
pub fn syn_dst_port(frame: &[u8]) -> Option<u16> {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] || frame[14] >> 4 != 4 || frame[23] != 6 {
        return None;
    }
    // A later fragment has no TCP header.
    if u16::from_be_bytes([frame[20], frame[21]]) & 0x1fff != 0 {
        return None;
    }
    let tcp = 14 + (frame[14] & 0xf) as usize * 4;
    let hdr = frame.get(tcp..tcp + 14)?;
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    (hdr[13] & (SYN | ACK) == SYN).then(|| u16::from_be_bytes([hdr[2], hdr[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Internet checksum of `data` (one's complement of the one's complement sum).
    fn inet(data: &[u8], mut sum: u32) -> u16 {
        for c in data.chunks(2) {
            sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// header (12 bytes) + Ethernet + IPv4 (20 bytes) + `proto` header and payload `l4`.
    fn packet(proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 12];
        p.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]);
        let total = 20 + l4.len() as u16;
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
        ];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&ip);
        p.extend_from_slice(l4);
        p
    }

    /// What the device does with NEEDS_CSUM: checksum from csum_start to the end, stored at the offset.
    fn device_completes(p: &mut [u8], hdr_len: usize) {
        let start = u16::from_le_bytes([p[6], p[7]]) as usize;
        let offset = u16::from_le_bytes([p[8], p[9]]) as usize;
        let f = &mut p[hdr_len..];
        let c = inet(&f[start..], 0);
        f[start + offset..start + offset + 2].copy_from_slice(&c.to_be_bytes());
    }

    /// The transport checksum computed from scratch, with the pseudo-header.
    fn expected(p: &[u8], hdr_len: usize, proto: u8, field: usize) -> u16 {
        let f = &p[hdr_len..];
        let mut l4 = f[34..].to_vec();
        l4[field] = 0;
        l4[field + 1] = 0;
        let mut pseudo = f[26..34].to_vec();
        pseudo.extend_from_slice(&[0, proto]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(&l4);
        inet(&pseudo, 0)
    }

    #[test]
    fn tcp_and_udp_checksums_come_out_right_once_the_device_finishes_them() {
        for (proto, field, len) in [
            (6u8, 16usize, 20usize),
            (6, 16, 1461),
            (17, 6, 8),
            (17, 6, 999),
        ] {
            let l4: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            for hdr_len in [12, 10] {
                let mut p = packet(proto, &l4);
                if hdr_len == 10 {
                    p.remove(0);
                    p.remove(0);
                }
                assert!(request_checksum(&mut p, hdr_len));
                assert_eq!(p[0], VIRTIO_NET_HDR_F_NEEDS_CSUM);
                assert_eq!(u16::from_le_bytes([p[6], p[7]]), 34);
                assert_eq!(u16::from_le_bytes([p[8], p[9]]) as usize, field);
                let want = expected(&p, hdr_len, proto, field);
                device_completes(&mut p, hdr_len);
                let at = hdr_len + 34 + field;
                assert_eq!(
                    u16::from_be_bytes([p[at], p[at + 1]]),
                    want,
                    "proto {proto} len {len}"
                );
            }
        }
    }

    #[test]
    fn other_packets_are_left_alone() {
        let mut icmp = packet(1, &[8, 0, 0, 0, 0, 1, 0, 1]);
        let before = icmp.clone();
        assert!(!request_checksum(&mut icmp, 12));
        assert_eq!(icmp, before);
        let mut arp = packet(6, &[0; 20]);
        arp[12 + 12] = 0x08;
        arp[12 + 13] = 0x06;
        assert!(!request_checksum(&mut arp, 12));
        // An IP total length beyond the frame.
        let mut short = packet(6, &[0; 20]);
        short[12 + 16] = 0xff;
        assert!(!request_checksum(&mut short, 12));
        assert!(!request_checksum(&mut [0u8; 8], 12));
    }

    /// An Ethernet frame with a TCP header to port 8080 with `flags`.
    fn tcp_frame(flags: u8) -> Vec<u8> {
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&8080u16.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        packet(6, &tcp)[12..].to_vec()
    }

    #[test]
    fn syn_without_ack_is_a_connection_request_to_its_port() {
        assert_eq!(syn_dst_port(&tcp_frame(0x02)), Some(8080));
        // SYN-ACK, ACK, RST, FIN|ACK: not requests.
        for flags in [0x12, 0x10, 0x04, 0x11] {
            assert_eq!(syn_dst_port(&tcp_frame(flags)), None, "flags {flags:#x}");
        }
        // UDP, a later fragment, a truncated header, ARP.
        let mut udp = tcp_frame(0x02);
        udp[23] = 17;
        assert_eq!(syn_dst_port(&udp), None);
        let mut frag = tcp_frame(0x02);
        frag[21] = 1;
        assert_eq!(syn_dst_port(&frag), None);
        assert_eq!(syn_dst_port(&tcp_frame(0x02)[..40]), None);
        let mut arp = tcp_frame(0x02);
        arp[13] = 0x06;
        assert_eq!(syn_dst_port(&arp), None);
    }
}
