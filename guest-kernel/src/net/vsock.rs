//! AF_VSOCK: stream sockets over the virtio-vsock device ([`crate::drivers::virtio_vsock`]), the
//! transport Linux calls `virtio_transport`. The sockets themselves (their calls and their open-file
//! side) are [`super::vsock_sock`]; this module owns the device and the tables, and runs the protocol.
//!
//! Data flow: the device interrupts when packets arrive; [`irq`] takes each one, finds its connection
//! by (local port, peer CID, peer port) or a listener by port, updates the connection (data into its
//! receive buffer, state, the peer's credit), answers what needs answering (RESPONSE to a REQUEST for a
//! listener, CREDIT_UPDATE to a CREDIT_REQUEST, RST to a packet for nothing) and gives the buffer back,
//! then wakes the wait queue of every socket that changed. Sending happens in the socket calls
//! ([`send_packet`]), which build packets straight in the device's transmit buffers.
//!
//! Flow control is the spec's credit: each connection advertises a receive buffer of [`BUF_ALLOC`]
//! bytes and the bytes programs have read (`fwd_cnt`, sent in every header, and in a CREDIT_UPDATE
//! once a quarter of the buffer was freed unannounced); it sends only what the peer's credit allows
//! (`kcore::vsock::credit`, zero for nonsense counters) and asks with CREDIT_REQUEST when that is none.
//! A peer that sends beyond our buffer is reset. A TRANSPORT_RESET event (after the VM was restored
//! from a snapshot) resets every connection (ECONNRESET), as Linux does; listeners stay.
#![deny(unsafe_code)]

use super::vsock_sock::{SockRef, St, VSock};
use crate::drivers::virtio_vsock::{VsockDevError, VsockDevice};
use crate::sync::KCell;
use crate::sync::WaitQueue;
use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec::Vec;
use kcore::errno::Errno;
use kcore::vsock::*;

/// The receive buffer each connection advertises.
pub const BUF_ALLOC: u32 = 256 * 1024;
/// A CREDIT_UPDATE goes out once this much was read without the peer being told.
pub const CREDIT_UPDATE_THRESHOLD: u32 = BUF_ALLOC / 4;
/// First port handed out by an implicit bind (Linux picks above 1023 too).
const FIRST_EPHEMERAL: u32 = 49152;

/// A connection's key: (local port, peer CID, peer port).
pub type Key = (u32, u64, u32);

/// The device and every socket it carries.
pub struct Vsock {
    pub dev: VsockDevice,
    pub cid: u64,
    pub conns: BTreeMap<Key, SockRef>,
    pub listeners: BTreeMap<u32, SockRef>,
    /// Bound ports and how many sockets hold each.
    pub bound: BTreeMap<u32, u32>,
    next_port: u32,
    /// Packets dropped or reset because they made no sense.
    pub bad_packets: u64,
}

static VSOCK: KCell<Option<Vsock>> = KCell::new(None);
/// An interrupt found the tables in use: handled when that use ends ([`with`]).
static IRQ_PENDING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
/// The earliest deadline of a connect in progress (ns since boot; `u64::MAX`: none), for [`tick`].
static CONNECT_DEADLINE: core::sync::atomic::AtomicU64 =
    core::sync::atomic::AtomicU64::new(u64::MAX);

/// Starts AF_VSOCK on the device.
pub fn init(dev: VsockDevice) {
    let cid = dev.guest_cid();
    *VSOCK.borrow_mut() = Some(Vsock {
        dev,
        cid,
        conns: BTreeMap::new(),
        listeners: BTreeMap::new(),
        bound: BTreeMap::new(),
        next_port: FIRST_EPHEMERAL,
        bad_packets: 0,
    });
}

/// Whether there is a vsock device.
pub fn present() -> bool {
    VSOCK.borrow().is_some()
}

/// Runs `f` on the tables (ENODEV without a device: Linux's socket(AF_VSOCK) without a transport).
pub fn with<R>(f: impl FnOnce(&mut Vsock) -> R) -> Result<R, Errno> {
    // Never borrowed twice by design (interrupts run only outside the kernel's own code); a nested
    // use is a bug, answered with EIO rather than a panic.
    let r = {
        let mut g = VSOCK.try_borrow_mut().map_err(|_| Errno::EIO)?;
        g.as_mut().map(f).ok_or(Errno::ENODEV)
    };
    if IRQ_PENDING.swap(false, core::sync::atomic::Ordering::Relaxed) {
        irq();
    }
    r
}

impl Vsock {
    /// Takes `port` for a socket (EADDRINUSE when taken).
    pub fn take_port(&mut self, port: u32) -> Result<u32, Errno> {
        if port == VMADDR_PORT_ANY {
            for _ in 0..u16::MAX {
                let p = self.next_port;
                self.next_port = if p >= u32::MAX - 1 {
                    FIRST_EPHEMERAL
                } else {
                    p + 1
                };
                if let alloc::collections::btree_map::Entry::Vacant(e) = self.bound.entry(p) {
                    e.insert(1);
                    return Ok(p);
                }
            }
            return Err(Errno::EADDRINUSE);
        }
        match self.bound.entry(port) {
            alloc::collections::btree_map::Entry::Occupied(_) => Err(Errno::EADDRINUSE),
            alloc::collections::btree_map::Entry::Vacant(e) => {
                e.insert(1);
                Ok(port)
            }
        }
    }

    /// One more socket on `port` (an accepted connection shares its listener's port).
    pub fn share_port(&mut self, port: u32) {
        *self.bound.entry(port).or_insert(0) += 1;
    }

    pub fn release_port(&mut self, port: u32) {
        if let Some(n) = self.bound.get_mut(&port) {
            *n -= 1;
            if *n == 0 {
                self.bound.remove(&port);
            }
        }
    }
}

/// Sends one packet: `h` with `len` payload bytes that `fill` writes (ENOBUFS-like EIO when the
/// device is stuck; the fill's own error, e.g. EFAULT from user memory, is returned as is).
pub fn send_packet(
    v: &mut Vsock,
    h: &Header,
    len: usize,
    fill: impl FnOnce(&mut [u8]) -> Result<(), Errno>,
) -> Result<(), Errno> {
    let mut b = [0u8; HDR_LEN];
    h.write(&mut b);
    match v.dev.send(&b, len, fill) {
        Ok(r) => r,
        Err(VsockDevError::Stalled) | Err(_) => Err(Errno::EIO),
    }
}

/// Sends a control packet (no payload); failures are the device's and only logged by the counters.
pub fn send_control(v: &mut Vsock, h: &Header) {
    if send_packet(v, h, 0, |_| Ok(())).is_err() {
        v.bad_packets += 1;
    }
}

/// A control packet of `op` from socket `s` (its addresses and credit).
pub fn header(v: &Vsock, s: &mut VSock, op: u16, len: u32, flags: u32) -> Header {
    s.fwd_cnt_sent = s.fwd_cnt;
    let (peer_cid, peer_port) = s.peer.unwrap_or((VMADDR_CID_HOST as u64, 0));
    Header {
        src_cid: v.cid,
        dst_cid: peer_cid,
        src_port: s.local_port.unwrap_or(0),
        dst_port: peer_port,
        len,
        type_: TYPE_STREAM,
        op,
        flags,
        buf_alloc: BUF_ALLOC,
        fwd_cnt: s.fwd_cnt,
    }
}

/// The device interrupted: handles every received packet and event, then wakes the sockets that
/// changed.
pub fn irq() {
    let mut woken: Vec<WaitQueue> = Vec::new();
    {
        let Ok(mut g) = VSOCK.try_borrow_mut() else {
            IRQ_PENDING.store(true, core::sync::atomic::Ordering::Relaxed);
            return;
        };
        let Some(v) = g.as_mut() else { return };
        v.dev.ack_interrupt();
        while let Some(id) = v.dev.take_event() {
            if id == EVENT_TRANSPORT_RESET {
                transport_reset(v, &mut woken);
            }
        }
        while let Some((slot, bytes)) = v.dev.take_rx() {
            match Header::parse(bytes) {
                Some(h) if HDR_LEN + h.len as usize <= bytes.len() => {
                    let data = &bytes[HDR_LEN..HDR_LEN + h.len as usize];
                    receive(v, &h, data, &mut woken);
                }
                _ => v.bad_packets += 1,
            }
            v.dev.repost(slot);
        }
    }
    for q in woken {
        q.wake_all();
    }
}

/// Every connection is gone (the device's host side was replaced): reset them all.
fn transport_reset(v: &mut Vsock, woken: &mut Vec<WaitQueue>) {
    v.cid = v.dev.guest_cid();
    let conns = core::mem::take(&mut v.conns);
    for (_, s) in conns {
        let mut s = s.borrow_mut();
        s.st = St::Closed;
        s.peer_shut = SHUTDOWN_RCV | SHUTDOWN_SEND;
        s.error = Some(Errno::ECONNRESET);
        woken.push(s.wq);
    }
}

fn reply_rst(v: &mut Vsock, h: &Header) {
    if h.op != OP_RST {
        let r = Header {
            src_cid: v.cid,
            ..h.reset_reply()
        };
        send_control(v, &r);
    }
}

/// One packet from the peer.
fn receive(v: &mut Vsock, h: &Header, data: &[u8], woken: &mut Vec<WaitQueue>) {
    if h.dst_cid != v.cid {
        v.bad_packets += 1;
        return;
    }
    if h.type_ != TYPE_STREAM {
        v.bad_packets += 1;
        reply_rst(v, h);
        return;
    }
    let key = (h.dst_port, h.src_cid, h.src_port);
    if let Some(s) = v.conns.get(&key).cloned() {
        connection_packet(v, key, &s, h, data, woken);
        return;
    }
    if h.op == OP_REQUEST {
        if let Some(l) = v.listeners.get(&h.dst_port).cloned() {
            incoming(v, &l, h, woken);
            return;
        }
    }
    reply_rst(v, h);
}

/// A REQUEST for listener `l`: a new connected socket in its accept queue, or an RST when full.
fn incoming(v: &mut Vsock, l: &SockRef, h: &Header, woken: &mut Vec<WaitQueue>) {
    let (full, wq) = {
        let l = l.borrow();
        (l.backlog.len() > l.backlog_max, l.wq)
    };
    if full {
        reply_rst(v, h);
        return;
    }
    let mut s = VSock::new();
    s.st = St::Connected;
    s.local_port = Some(h.dst_port);
    s.peer = Some((h.src_cid, h.src_port));
    s.peer_buf_alloc = h.buf_alloc;
    s.peer_fwd_cnt = h.fwd_cnt;
    let resp = header(v, &mut s, OP_RESPONSE, 0, 0);
    v.share_port(h.dst_port);
    let s = Rc::new(core::cell::RefCell::new(s));
    v.conns
        .insert((h.dst_port, h.src_cid, h.src_port), s.clone());
    send_control(v, &resp);
    l.borrow_mut().backlog.push_back(s);
    woken.push(wq);
}

/// A packet for a known connection.
fn connection_packet(
    v: &mut Vsock,
    key: Key,
    sref: &SockRef,
    h: &Header,
    data: &[u8],
    woken: &mut Vec<WaitQueue>,
) {
    let mut s = sref.borrow_mut();
    s.peer_buf_alloc = h.buf_alloc;
    s.peer_fwd_cnt = h.fwd_cnt;
    woken.push(s.wq);
    let mut reset = false;
    let mut close = false;
    match (s.st, h.op) {
        (_, OP_RST) => {
            if s.st == St::Connecting {
                // Nothing listens there (Linux's virtio transport: ECONNRESET).
                s.error = Some(Errno::ECONNRESET);
                s.connect_failed = true;
            }
            s.peer_shut = SHUTDOWN_RCV | SHUTDOWN_SEND;
            close = true;
        }
        (St::Connecting, OP_RESPONSE) => s.st = St::Connected,
        (St::Connected, OP_RW) => {
            if s.rx.len() + data.len() > BUF_ALLOC as usize {
                // Beyond the buffer we advertised.
                v.bad_packets += 1;
                reset = true;
            } else if s.shut_rd {
                // Nobody will read it: forwarded at once.
                s.fwd_cnt = s.fwd_cnt.wrapping_add(data.len() as u32);
            } else {
                // From a slice: one bulk copy (a byte iterator would be a loop per byte in emulated code).
                s.rx.extend(data);
            }
        }
        (St::Connected, OP_SHUTDOWN) => {
            s.peer_shut |= h.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
            if s.peer_shut == SHUTDOWN_RCV | SHUTDOWN_SEND {
                // Both ways done: close with an RST, as Linux.
                let r = header(v, &mut s, OP_RST, 0, 0);
                send_control(v, &r);
                close = true;
            }
        }
        (St::Connected, OP_CREDIT_UPDATE) => s.credit_requested = false,
        (St::Connected, OP_CREDIT_REQUEST) => {
            let u = header(v, &mut s, OP_CREDIT_UPDATE, 0, 0);
            send_control(v, &u);
        }
        _ => {
            v.bad_packets += 1;
            reset = true;
        }
    }
    if reset {
        let r = header(v, &mut s, OP_RST, 0, 0);
        send_control(v, &r);
        s.error = Some(Errno::ECONNRESET);
        s.peer_shut = SHUTDOWN_RCV | SHUTDOWN_SEND;
        close = true;
    }
    if close {
        s.st = St::Closed;
        drop(s);
        v.conns.remove(&key);
    }
}

/// A connect in progress gives up at `due` (ns since boot): the tick looks then.
pub fn connect_deadline(due: u64) {
    CONNECT_DEADLINE.fetch_min(due, core::sync::atomic::Ordering::Relaxed);
}

/// The timer tick: connects past their deadline time out (ETIMEDOUT) and their waiters are woken, so
/// a program in poll or epoll on a non-blocking connect sees POLLOUT|POLLERR at the deadline (Linux's
/// `vsock_connect_timeout` work), not only once it looks at the socket again.
pub fn tick() {
    use core::sync::atomic::Ordering::Relaxed;
    let now = crate::time::now_ns();
    if now < CONNECT_DEADLINE.load(Relaxed) {
        return;
    }
    let mut woken: Vec<WaitQueue> = Vec::new();
    let mut next = u64::MAX;
    {
        // In use (never, by design, at a tick): the next tick looks again.
        let Ok(mut g) = VSOCK.try_borrow_mut() else {
            return;
        };
        let Some(v) = g.as_mut() else { return };
        let conns: Vec<SockRef> = v.conns.values().cloned().collect();
        for sref in conns {
            let Ok(mut s) = sref.try_borrow_mut() else {
                next = now;
                continue;
            };
            if s.connect_overdue(now) {
                s.time_out(v);
                woken.push(s.wq);
            } else if s.st == St::Connecting {
                next = next.min(s.connect_deadline.unwrap_or(u64::MAX));
            }
        }
    }
    CONNECT_DEADLINE.store(next, Relaxed);
    for q in woken {
        q.wake_all();
    }
}

/// Counters for the power-off report.
pub fn report() {
    let _ = with(|v| {
        crate::kprintln!(
            "vsock: cid {}: rx {} packets, tx {} packets ({} waits for a buffer), {} bad",
            kcore::fmt::Dec(v.cid),
            kcore::fmt::Dec(v.dev.rx_packets),
            kcore::fmt::Dec(v.dev.tx_packets),
            kcore::fmt::Dec(v.dev.tx_waits),
            kcore::fmt::Dec(v.bad_packets)
        );
    });
}
