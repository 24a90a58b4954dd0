//! One vsock stream connection between a guest port and a host Unix socket: its state, its credit in
//! both directions (virtio 1.2, 5.10.6.3 "Flow control") and the control packets it owes the guest.
//!
//! Pure: no file descriptors. The muxer feeds it the guest's packets ([`Conn::on_packet`]) and what
//! happened on the Unix socket ([`Conn::host_eof`], [`Conn::consumed`], [`Conn::reset`]); it answers
//! with what to do ([`Recv`]), what may be read from the socket for the guest ([`Conn::read_budget`]),
//! and the next control packet ([`Conn::next_control`]).
//!
//! Credit, guest to host: we advertise `buf_alloc` = [`BUF_ALLOC`] and `fwd_cnt` = the bytes written
//! to the Unix socket; what the guest sends beyond that is a protocol violation and resets the
//! connection, so at most [`BUF_ALLOC`] bytes wait per connection. Host to guest: we read from the Unix
//! socket only while the guest's `buf_alloc - (rx_cnt - fwd_cnt)` is positive, so a guest that never
//! reads stops the reading (the host client's writes then block in its socket), and a guest advertising
//! nonsense (a `fwd_cnt` ahead of what it was sent) gets no credit rather than unbounded credit.

use std::collections::VecDeque;

use super::packet::{credit, op, Header, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};

/// The receive buffer we advertise per connection: guest data that may wait for the Unix socket.
pub const BUF_ALLOC: u32 = 256 * 1024;
/// A CREDIT_UPDATE is sent once this much credit was freed without the guest having been told.
pub const CREDIT_UPDATE_THRESHOLD: u32 = BUF_ALLOC / 4;

/// Where a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: a REQUEST is owed or sent; waiting for the guest's RESPONSE.
    Connecting,
    /// Data flows (each direction until shut down).
    Established,
    /// Over. The connection is dropped once its owed RST (if any) went to the guest.
    Closed,
}

/// What the muxer does after a guest packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recv {
    /// Nothing beyond re-checking what the connection waits for.
    Nothing,
    /// The guest accepted a host-initiated connection: write `OK <local_port>\n` to the Unix socket.
    Accepted,
    /// Data was queued for the Unix socket.
    Data,
    /// The connection is over (closed by the guest, or reset for a protocol violation).
    Closed,
}

const P_REQUEST: u8 = 1;
const P_RESPONSE: u8 = 2;
const P_RST: u8 = 4;
const P_SHUTDOWN: u8 = 8;
const P_CREDIT_UPDATE: u8 = 16;
const P_CREDIT_REQUEST: u8 = 32;

/// One connection.
#[derive(Debug)]
pub struct Conn {
    state: State,
    guest_cid: u64,
    local_port: u32,
    peer_port: u32,
    /// Bytes of guest data written to the Unix socket (ours to advertise).
    fwd_cnt: u32,
    /// `fwd_cnt` as last told to the guest.
    fwd_cnt_sent: u32,
    /// Bytes of host data sent to the guest.
    rx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Guest data not yet written to the Unix socket (at most [`BUF_ALLOC`]).
    tx_buf: VecDeque<u8>,
    pending: u8,
    shutdown_flags: u32,
    /// The Unix socket's read side ended (SHUTDOWN SEND owed or sent).
    host_eof: bool,
    /// SHUTDOWN flags received from the guest.
    peer_shut: u32,
    /// A CREDIT_REQUEST went out and no packet came back since.
    credit_requested: bool,
}

impl Conn {
    fn new(state: State, guest_cid: u64, local_port: u32, peer_port: u32, pending: u8) -> Self {
        Self {
            state,
            guest_cid,
            local_port,
            peer_port,
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
            rx_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_buf: VecDeque::new(),
            pending,
            shutdown_flags: 0,
            host_eof: false,
            peer_shut: 0,
            credit_requested: false,
        }
    }

    /// A connection the host starts (after `CONNECT <peer_port>`): owes the guest a REQUEST.
    pub fn host_initiated(guest_cid: u64, local_port: u32, peer_port: u32) -> Self {
        Self::new(
            State::Connecting,
            guest_cid,
            local_port,
            peer_port,
            P_REQUEST,
        )
    }

    /// A connection the guest asked for with `req` and the host's socket accepted: owes a RESPONSE.
    pub fn guest_initiated(req: &Header) -> Self {
        let mut c = Self::new(
            State::Established,
            req.src_cid,
            req.dst_port,
            req.src_port,
            P_RESPONSE,
        );
        c.update_peer_credit(req);
        c
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn local_port(&self) -> u32 {
        self.local_port
    }

    pub fn peer_port(&self) -> u32 {
        self.peer_port
    }

    /// The connection is over and owes the guest nothing: the muxer may drop it.
    pub fn is_done(&self) -> bool {
        self.state == State::Closed && self.pending == 0
    }

    /// A control packet is owed to the guest.
    pub fn has_control(&self) -> bool {
        self.pending != 0
    }

    /// How much the guest can take now (its credit): its `buf_alloc` counts as at most
    /// [`MAX_PEER_BUF_ALLOC`](super::packet::MAX_PEER_BUF_ALLOC), so a `fwd_cnt` ahead of what was sent (in flight wrapping to near 2^32)
    /// leaves none; the guest kernel computes its peer's credit with the same function.
    pub fn peer_credit(&self) -> u32 {
        credit(self.peer_buf_alloc, self.peer_fwd_cnt, self.rx_cnt)
    }

    /// How many bytes may be read from the Unix socket for the guest now (0: do not read).
    pub fn read_budget(&self) -> u32 {
        if self.state != State::Established
            || self.host_eof
            || self.peer_shut & SHUTDOWN_RCV != 0
            || self.pending & P_RST != 0
        {
            return 0;
        }
        self.peer_credit()
    }

    /// The guest's credit ran out with data to send: ask it for an update (once until it answers).
    pub fn request_credit(&mut self) {
        if !self.credit_requested && self.state == State::Established {
            self.credit_requested = true;
            self.pending |= P_CREDIT_REQUEST;
        }
    }

    /// Guest data waiting for the Unix socket.
    pub fn tx_pending(&self) -> &VecDeque<u8> {
        &self.tx_buf
    }

    /// `n` bytes of [`Conn::tx_pending`] reached the Unix socket.
    pub fn consumed(&mut self, n: usize) {
        let n = n.min(self.tx_buf.len());
        self.tx_buf.drain(..n);
        self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
        if self.fwd_cnt.wrapping_sub(self.fwd_cnt_sent) >= CREDIT_UPDATE_THRESHOLD {
            self.pending |= P_CREDIT_UPDATE;
        }
        self.check_finished();
    }

    /// The guest will send no more and all it sent was written: shut the socket's write side.
    pub fn should_shut_host_write(&self) -> bool {
        self.peer_shut & SHUTDOWN_SEND != 0 && self.tx_buf.is_empty()
    }

    /// The Unix socket's read side ended: tell the guest nothing more comes.
    pub fn host_eof(&mut self) {
        if self.host_eof || self.state == State::Closed {
            return;
        }
        self.host_eof = true;
        if self.state == State::Connecting {
            // The client went away before the guest answered.
            self.reset();
            return;
        }
        self.shutdown_flags |= SHUTDOWN_SEND;
        self.pending |= P_SHUTDOWN;
        self.check_finished();
    }

    /// The Unix socket failed, or the host gave up: owe the guest an RST and close.
    pub fn reset(&mut self) {
        if self.state != State::Closed {
            self.state = State::Closed;
            self.pending = P_RST;
            self.tx_buf = VecDeque::new();
        }
    }

    /// Both directions are finished: close with an RST (as Linux does once both sides shut down).
    fn check_finished(&mut self) {
        if self.state == State::Established
            && self.tx_buf.is_empty()
            && (self.peer_shut == SHUTDOWN_RCV | SHUTDOWN_SEND
                || (self.host_eof && self.peer_shut & SHUTDOWN_SEND != 0))
        {
            self.reset();
        }
    }

    fn update_peer_credit(&mut self, h: &Header) {
        self.peer_buf_alloc = h.buf_alloc;
        self.peer_fwd_cnt = h.fwd_cnt;
        self.credit_requested = false;
    }

    /// Takes a guest packet addressed to this connection, with its payload (RW only).
    pub fn on_packet(&mut self, h: &Header, data: &[u8]) -> Recv {
        if self.state == State::Closed {
            return Recv::Closed;
        }
        self.update_peer_credit(h);
        if h.type_ != TYPE_STREAM {
            self.reset();
            return Recv::Closed;
        }
        match (self.state, h.op) {
            (_, op::RST) => {
                self.state = State::Closed;
                self.pending = 0;
                Recv::Closed
            }
            (State::Connecting, op::RESPONSE) => {
                self.state = State::Established;
                self.pending &= !P_REQUEST;
                Recv::Accepted
            }
            (State::Established, op::RW) => {
                if self.peer_shut & SHUTDOWN_SEND != 0
                    || self.tx_buf.len() + data.len() > BUF_ALLOC as usize
                {
                    // Beyond the credit we gave, or after saying it would send no more.
                    self.reset();
                    return Recv::Closed;
                }
                self.tx_buf.extend(data);
                Recv::Data
            }
            (State::Established, op::SHUTDOWN) => {
                self.peer_shut |= h.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
                self.check_finished();
                if self.state == State::Closed {
                    Recv::Closed
                } else {
                    Recv::Nothing
                }
            }
            (State::Established, op::CREDIT_UPDATE) => Recv::Nothing,
            (State::Established, op::CREDIT_REQUEST) => {
                self.pending |= P_CREDIT_UPDATE;
                Recv::Nothing
            }
            _ => {
                // A REQUEST for a live connection, a RESPONSE out of turn, an unknown op.
                self.reset();
                Recv::Closed
            }
        }
    }

    fn header(&mut self, op: u16, len: u32, flags: u32) -> Header {
        self.fwd_cnt_sent = self.fwd_cnt;
        self.pending &= !P_CREDIT_UPDATE;
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt,
        }
    }

    /// The next control packet owed to the guest, if any (taken: it is considered sent).
    pub fn next_control(&mut self) -> Option<Header> {
        let (bit, op, flags) = if self.pending & P_RST != 0 {
            (P_RST, op::RST, 0)
        } else if self.pending & P_REQUEST != 0 {
            (P_REQUEST, op::REQUEST, 0)
        } else if self.pending & P_RESPONSE != 0 {
            (P_RESPONSE, op::RESPONSE, 0)
        } else if self.pending & P_SHUTDOWN != 0 {
            (P_SHUTDOWN, op::SHUTDOWN, self.shutdown_flags)
        } else if self.pending & P_CREDIT_UPDATE != 0 {
            (P_CREDIT_UPDATE, op::CREDIT_UPDATE, 0)
        } else if self.pending & P_CREDIT_REQUEST != 0 {
            (P_CREDIT_REQUEST, op::CREDIT_REQUEST, 0)
        } else {
            return None;
        };
        self.pending &= !bit;
        if op == op::RST {
            // Nothing follows an RST.
            self.pending = 0;
        }
        Some(self.header(op, 0, flags))
    }

    /// The header of an RW packet carrying `len` bytes just read from the Unix socket.
    pub fn data_header(&mut self, len: u32) -> Header {
        self.rx_cnt = self.rx_cnt.wrapping_add(len);
        self.header(op::RW, len, 0)
    }
}

/// The RST answering a guest packet that belongs to no connection.
pub fn rst_for(h: &Header) -> Header {
    Header {
        src_cid: h.dst_cid,
        dst_cid: h.src_cid,
        src_port: h.dst_port,
        dst_port: h.src_port,
        len: 0,
        type_: TYPE_STREAM,
        op: op::RST,
        flags: 0,
        buf_alloc: 0,
        fwd_cnt: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::vsock::packet::MAX_PEER_BUF_ALLOC;

    fn pkt(op: u16, buf_alloc: u32, fwd_cnt: u32) -> Header {
        Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 5000,
            dst_port: 1 << 30,
            type_: TYPE_STREAM,
            op,
            buf_alloc,
            fwd_cnt,
            ..Header::default()
        }
    }

    #[test]
    fn host_initiated_handshake_then_data_both_ways() {
        let mut c = Conn::host_initiated(3, 1 << 30, 5000);
        let req = c.next_control().unwrap();
        assert_eq!((req.op, req.dst_cid, req.dst_port), (op::REQUEST, 3, 5000));
        assert_eq!(req.buf_alloc, BUF_ALLOC);
        assert_eq!(c.next_control(), None);
        assert_eq!(c.read_budget(), 0, "no data before the guest answers");
        assert_eq!(
            c.on_packet(&pkt(op::RESPONSE, 1000, 0), &[]),
            Recv::Accepted
        );
        assert_eq!(c.state(), State::Established);
        // Host to guest: bounded by the guest's buffer.
        assert_eq!(c.read_budget(), 1000);
        let h = c.data_header(600);
        assert_eq!((h.op, h.len), (op::RW, 600));
        assert_eq!(c.read_budget(), 400);
        c.data_header(400);
        assert_eq!(c.read_budget(), 0);
        c.request_credit();
        c.request_credit();
        assert_eq!(c.next_control().unwrap().op, op::CREDIT_REQUEST);
        assert_eq!(c.next_control(), None, "asked once");
        assert_eq!(
            c.on_packet(&pkt(op::CREDIT_UPDATE, 1000, 1000), &[]),
            Recv::Nothing
        );
        assert_eq!(c.read_budget(), 1000);
        // Guest to host: queued, forwarded, credit returned past the threshold.
        assert_eq!(c.on_packet(&pkt(op::RW, 1000, 1000), b"hello"), Recv::Data);
        assert_eq!(c.tx_pending().len(), 5);
        c.consumed(5);
        assert!(!c.has_control(), "5 bytes are below the update threshold");
        let big = vec![0u8; CREDIT_UPDATE_THRESHOLD as usize];
        c.on_packet(&pkt(op::RW, 1000, 1000), &big);
        c.consumed(big.len());
        let up = c.next_control().unwrap();
        assert_eq!(up.op, op::CREDIT_UPDATE);
        assert_eq!(up.fwd_cnt, CREDIT_UPDATE_THRESHOLD + 5);
    }

    #[test]
    fn guest_beyond_its_credit_is_reset() {
        let req = pkt(op::REQUEST, 4096, 0);
        let mut c = Conn::guest_initiated(&req);
        assert_eq!(c.next_control().unwrap().op, op::RESPONSE);
        let chunk = vec![1u8; 64 * 1024];
        for _ in 0..BUF_ALLOC as usize / chunk.len() {
            assert_eq!(c.on_packet(&pkt(op::RW, 4096, 0), &chunk), Recv::Data);
        }
        // The host socket took nothing: one more byte is beyond what we advertised.
        assert_eq!(c.on_packet(&pkt(op::RW, 4096, 0), b"x"), Recv::Closed);
        assert_eq!(c.tx_pending().len(), 0, "the buffer is freed");
        assert_eq!(c.next_control().unwrap().op, op::RST);
        assert!(c.is_done());
    }

    #[test]
    fn bogus_credit_gives_none() {
        let mut c = Conn::guest_initiated(&pkt(op::REQUEST, 4096, 0));
        c.data_header(100);
        // A fwd_cnt ahead of what it was sent: in flight wraps to huge, credit 0.
        c.on_packet(&pkt(op::CREDIT_UPDATE, u32::MAX, 5000), &[]);
        assert_eq!(c.peer_credit(), 0);
        c.on_packet(&pkt(op::CREDIT_UPDATE, u32::MAX, 100), &[]);
        assert_eq!(c.peer_credit(), MAX_PEER_BUF_ALLOC, "clamped");
        c.on_packet(&pkt(op::CREDIT_UPDATE, 4096, 40), &[]);
        assert_eq!(c.peer_credit(), 4096 - 60);
    }

    #[test]
    fn shutdowns_close_with_rst_once_both_directions_end() {
        let mut c = Conn::guest_initiated(&pkt(op::REQUEST, 4096, 0));
        c.next_control();
        c.on_packet(&pkt(op::RW, 4096, 0), b"tail");
        assert_eq!(c.on_packet(&pkt(op::SHUTDOWN, 4096, 0), &[]), Recv::Nothing);
        let mut s = pkt(op::SHUTDOWN, 4096, 0);
        s.flags = SHUTDOWN_SEND;
        assert_eq!(c.on_packet(&s, &[]), Recv::Nothing);
        assert!(!c.should_shut_host_write(), "4 bytes still to write");
        c.consumed(4);
        assert!(c.should_shut_host_write());
        assert_eq!(c.state(), State::Established, "the host may still send");
        assert!(c.read_budget() > 0);
        c.host_eof();
        assert_eq!(c.state(), State::Closed);
        assert_eq!(c.next_control().unwrap().op, op::RST);
        assert!(c.is_done());

        // Host first: SHUTDOWN SEND to the guest, then the guest's full shutdown closes.
        let mut c = Conn::guest_initiated(&pkt(op::REQUEST, 4096, 0));
        c.next_control();
        c.host_eof();
        let sh = c.next_control().unwrap();
        assert_eq!((sh.op, sh.flags), (op::SHUTDOWN, SHUTDOWN_SEND));
        assert_eq!(c.read_budget(), 0);
        s.flags = SHUTDOWN_SEND | SHUTDOWN_RCV;
        assert_eq!(c.on_packet(&s, &[]), Recv::Closed);
        // The guest's RST needs no answer.
        let mut c = Conn::guest_initiated(&pkt(op::REQUEST, 4096, 0));
        assert_eq!(c.on_packet(&pkt(op::RST, 0, 0), &[]), Recv::Closed);
        assert!(c.is_done());
    }

    #[test]
    fn out_of_turn_packets_reset() {
        for bad in [op::REQUEST, op::RESPONSE, op::INVALID, 99] {
            let mut c = Conn::guest_initiated(&pkt(op::REQUEST, 4096, 0));
            c.next_control();
            assert_eq!(c.on_packet(&pkt(bad, 0, 0), &[]), Recv::Closed, "op {bad}");
            assert_eq!(c.next_control().unwrap().op, op::RST);
        }
        let mut c = Conn::host_initiated(3, 1 << 30, 7);
        assert_eq!(c.on_packet(&pkt(op::RW, 0, 0), b"early"), Recv::Closed);
        // The guest refusing a host connection: RST, nothing owed back.
        let mut c = Conn::host_initiated(3, 1 << 30, 7);
        c.next_control();
        assert_eq!(c.on_packet(&pkt(op::RST, 0, 0), &[]), Recv::Closed);
        assert!(c.is_done());
        let r = rst_for(&pkt(op::RW, 0, 0));
        assert_eq!(
            (r.op, r.dst_cid, r.dst_port, r.src_port),
            (op::RST, 3, 5000, 1 << 30)
        );
    }
}
