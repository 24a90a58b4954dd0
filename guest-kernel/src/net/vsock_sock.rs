//! AF_VSOCK stream sockets for programs: socket, bind, listen, accept, connect, recv, send, shutdown,
//! close, poll, with Linux's semantics (af_vsock.c over the virtio transport). The protocol and the
//! tables are [`super::vsock`]; the system calls that take addresses are `syscall::vsock`.
//!
//! Errors as Linux: a connection the peer refuses (RST to our REQUEST) fails with ECONNRESET, one not
//! answered within 2 s (Linux's default connect timeout) with ETIMEDOUT; reads after the peer's
//! SHUTDOWN or RST give the data left, then 0; writes after the peer stopped receiving give EPIPE; a
//! transport reset leaves ECONNRESET as the socket's error. Blocking calls honour SO_RCVTIMEO and
//! SO_SNDTIMEO (EAGAIN) and signals (ERESTARTSYS, or EINTR with a timeout).
#![deny(unsafe_code)]

use super::vsock::{
    self as vs, header, send_control, send_packet, BUF_ALLOC, CREDIT_UPDATE_THRESHOLD,
};
use crate::drivers::virtio_vsock::MAX_PAYLOAD;
use crate::fs::file::{add_queue, poll_mask, FileOps, FileRef, OpenFile, ReadBuf, Stat, WriteBuf};
use crate::fs::{O_NONBLOCK, O_RDWR};
use crate::sync::waitqueue;
use crate::sync::WaitQueue;
use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::any::Any;
use core::cell::RefCell;
use kcore::errno::Errno;
use kcore::vsock::*;

/// How long connect waits for the peer's answer (Linux: VSOCK_DEFAULT_CONNECT_TIMEOUT).
pub const CONNECT_TIMEOUT_NS: u64 = 2_000_000_000;

/// Where a socket is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum St {
    Idle,
    Listening,
    Connecting,
    Connected,
    /// Reset or finished: no more packets.
    Closed,
}

/// One AF_VSOCK stream socket.
pub struct VSock {
    pub st: St,
    pub wq: WaitQueue,
    pub local_port: Option<u32>,
    pub peer: Option<(u64, u32)>,
    pub rx: VecDeque<u8>,
    pub fwd_cnt: u32,
    pub fwd_cnt_sent: u32,
    pub peer_buf_alloc: u32,
    pub peer_fwd_cnt: u32,
    pub tx_cnt: u32,
    pub credit_requested: bool,
    pub shut_rd: bool,
    pub shut_wr: bool,
    /// SHUTDOWN flags the peer sent (an RST counts as both).
    pub peer_shut: u32,
    pub error: Option<Errno>,
    pub backlog: VecDeque<SockRef>,
    pub backlog_max: usize,
    pub rcv_timeout: Option<u64>,
    pub snd_timeout: Option<u64>,
    /// When a connect in progress gives up (ns since boot).
    pub connect_deadline: Option<u64>,
    /// The last connect failed (refused or timed out): poll reports POLLOUT|POLLERR only, as Linux's
    /// TCP_CLOSE socket that never connected.
    pub connect_failed: bool,
}

pub type SockRef = Rc<RefCell<VSock>>;

impl VSock {
    pub fn new() -> VSock {
        VSock {
            st: St::Idle,
            wq: WaitQueue::new(),
            local_port: None,
            peer: None,
            rx: VecDeque::new(),
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            credit_requested: false,
            shut_rd: false,
            shut_wr: false,
            peer_shut: 0,
            error: None,
            backlog: VecDeque::new(),
            backlog_max: 0,
            rcv_timeout: None,
            snd_timeout: None,
            connect_deadline: None,
            connect_failed: false,
        }
    }

    fn credit(&self) -> u32 {
        credit(self.peer_buf_alloc, self.peer_fwd_cnt, self.tx_cnt)
    }

    /// A connect that was not answered in time times out (checked whenever the socket is looked at,
    /// and by the timer tick for sockets nobody looks at: [`vs::tick`]).
    fn check_connect_timeout(&mut self) {
        if self.connect_overdue(crate::time::now_ns()) {
            let _ = vs::with(|v| self.time_out(v));
        }
    }

    /// Whether this socket is connecting past its deadline.
    pub fn connect_overdue(&self, now: u64) -> bool {
        self.st == St::Connecting && self.connect_deadline.is_some_and(|d| now >= d)
    }

    /// Ends a connect that was not answered: ETIMEDOUT, an RST to the peer (a late RESPONSE then finds
    /// no connection), out of the table. The caller wakes the socket's queue.
    pub fn time_out(&mut self, v: &mut vs::Vsock) {
        self.st = St::Closed;
        self.error = Some(Errno::ETIMEDOUT);
        self.connect_failed = true;
        self.connect_deadline = None;
        let r = header(v, self, OP_RST, 0, 0);
        send_control(v, &r);
        if let Some(k) = self.key() {
            v.conns.remove(&k);
        }
    }

    fn key(&self) -> Option<vs::Key> {
        Some((self.local_port?, self.peer?.0, self.peer?.1))
    }

    /// The local address (getsockname).
    pub fn local_addr(&self) -> SockaddrVm {
        let cid = vs::with(|v| v.cid as u32).unwrap_or(VMADDR_CID_ANY);
        match self.local_port {
            Some(port) => SockaddrVm { cid, port },
            None => SockaddrVm {
                cid: VMADDR_CID_ANY,
                port: VMADDR_PORT_ANY,
            },
        }
    }

    /// The peer's address (getpeername): ENOTCONN unless connected.
    pub fn peer_addr(&self) -> Result<SockaddrVm, Errno> {
        match (self.st, self.peer) {
            (St::Connected | St::Closed, Some((cid, port))) => Ok(SockaddrVm {
                cid: cid as u32,
                port,
            }),
            _ => Err(Errno::ENOTCONN),
        }
    }

    /// SO_ERROR: the pending error, cleared.
    pub fn take_error(&mut self) -> Option<Errno> {
        self.check_connect_timeout();
        self.error.take()
    }
}

impl Default for VSock {
    fn default() -> Self {
        VSock::new()
    }
}

/// A new socket (socket(AF_VSOCK, SOCK_STREAM)).
pub fn new() -> Result<SockRef, Errno> {
    if !vs::present() {
        return Err(Errno::ENODEV);
    }
    Ok(Rc::new(RefCell::new(VSock::new())))
}

/// bind(2).
pub fn bind(s: &SockRef, a: SockaddrVm) -> Result<(), Errno> {
    let mut s = s.borrow_mut();
    if s.local_port.is_some() {
        return Err(Errno::EINVAL);
    }
    vs::with(|v| {
        if a.cid != VMADDR_CID_ANY && u64::from(a.cid) != v.cid {
            return Err(Errno::EADDRNOTAVAIL);
        }
        s.local_port = Some(v.take_port(a.port)?);
        Ok(())
    })?
}

/// listen(2).
pub fn listen(s: &SockRef, backlog: i32) -> Result<(), Errno> {
    let this = s.clone();
    let mut s = s.borrow_mut();
    match s.st {
        St::Idle | St::Listening => {}
        _ => return Err(Errno::EINVAL),
    }
    let Some(port) = s.local_port else {
        return Err(Errno::EINVAL);
    };
    s.backlog_max = backlog.max(0) as usize;
    s.st = St::Listening;
    vs::with(|v| v.listeners.insert(port, this))?;
    Ok(())
}

/// Sleeps on `wq` until woken, `deadline`, or a signal (see the module doc for the errors).
fn wait(wq: WaitQueue, deadline: Option<u64>, on_timeout: Errno) -> Result<(), Errno> {
    let interrupted = if deadline.is_some() {
        Errno::EINTR
    } else {
        Errno::ERESTARTSYS
    };
    if waitqueue::signal_pending() {
        return Err(interrupted);
    }
    if deadline.is_some_and(|d| crate::time::now_ns() >= d) {
        return Err(on_timeout);
    }
    waitqueue::wait_any(&[wq], deadline).map_err(|_| interrupted)?;
    if waitqueue::signal_pending() {
        return Err(interrupted);
    }
    Ok(())
}

fn deadline(timeout: Option<u64>) -> Option<u64> {
    timeout.map(|t| crate::time::now_ns().saturating_add(t))
}

/// accept(2): the next connection of a listener and its peer's address.
pub fn accept(s: &SockRef, nonblock: bool) -> Result<(SockRef, SockaddrVm), Errno> {
    let until = deadline(s.borrow().rcv_timeout);
    loop {
        let wq = {
            let mut l = s.borrow_mut();
            if l.st != St::Listening {
                return Err(Errno::EINVAL);
            }
            if let Some(c) = l.backlog.pop_front() {
                let peer = c
                    .borrow()
                    .peer_addr()
                    .unwrap_or(SockaddrVm { cid: 0, port: 0 });
                return Ok((c, peer));
            }
            l.wq
        };
        if nonblock {
            return Err(Errno::EAGAIN);
        }
        wait(wq, until, Errno::EAGAIN)?;
    }
}

/// connect(2).
pub fn connect(s: &SockRef, to: SockaddrVm, nonblock: bool) -> Result<(), Errno> {
    {
        let mut b = s.borrow_mut();
        b.check_connect_timeout();
        match b.st {
            St::Connected => return Err(Errno::EISCONN),
            St::Connecting => return Err(Errno::EALREADY),
            St::Listening => return Err(Errno::EINVAL),
            // Linux lets a socket whose connect failed try again.
            St::Closed | St::Idle => {}
        }
        vs::with(|v| -> Result<(), Errno> {
            if b.local_port.is_none() {
                b.local_port = Some(v.take_port(VMADDR_PORT_ANY)?);
            }
            if let Some(old) = b.key() {
                v.conns.remove(&old);
            }
            b.peer = Some((u64::from(to.cid), to.port));
            b.st = St::Connecting;
            b.error = None;
            b.peer_shut = 0;
            b.rx.clear();
            b.tx_cnt = 0;
            b.fwd_cnt = 0;
            b.peer_buf_alloc = 0;
            b.peer_fwd_cnt = 0;
            b.credit_requested = false;
            b.connect_failed = false;
            let due = crate::time::now_ns() + CONNECT_TIMEOUT_NS;
            b.connect_deadline = Some(due);
            vs::connect_deadline(due);
            let key = b.key().ok_or(Errno::EINVAL)?;
            let req = header(v, &mut b, OP_REQUEST, 0, 0);
            v.conns.insert(key, s.clone());
            send_packet(v, &req, 0, |_| Ok(()))
        })??;
    }
    if nonblock {
        return Err(Errno::EINPROGRESS);
    }
    loop {
        let (st, wq, dl) = {
            let mut b = s.borrow_mut();
            b.check_connect_timeout();
            (b.st, b.wq, b.connect_deadline)
        };
        match st {
            St::Connected => return Ok(()),
            St::Connecting => {}
            _ => {
                let e = s.borrow_mut().error.take();
                return Err(e.unwrap_or(Errno::ECONNRESET));
            }
        }
        match wait(wq, dl, Errno::ETIMEDOUT) {
            Ok(()) | Err(Errno::ETIMEDOUT) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Tells the peer what was read once enough credit was freed unannounced.
fn maybe_credit_update(s: &mut VSock) {
    if s.st == St::Connected && s.fwd_cnt.wrapping_sub(s.fwd_cnt_sent) >= CREDIT_UPDATE_THRESHOLD {
        let _ = vs::with(|v| {
            let u = header(v, s, OP_CREDIT_UPDATE, 0, 0);
            send_control(v, &u);
        });
    }
}

/// read(2)/recvfrom(2).
pub fn recv(
    s: &SockRef,
    buf: &mut dyn ReadBuf,
    nonblock: bool,
    peek: bool,
) -> Result<usize, Errno> {
    let until = deadline(s.borrow().rcv_timeout);
    loop {
        let wq = {
            let mut b = s.borrow_mut();
            b.check_connect_timeout();
            match b.st {
                St::Idle | St::Listening | St::Connecting => return Err(Errno::ENOTCONN),
                St::Connected | St::Closed => {}
            }
            if buf.len() == 0 {
                return Ok(0);
            }
            if !b.rx.is_empty() {
                let n = buf.len().min(b.rx.len());
                let (x, y) = b.rx.as_slices();
                let (a, c) = if n <= x.len() {
                    (&x[..n], &[][..])
                } else {
                    (x, &y[..n - x.len()])
                };
                buf.put(0, a)?;
                if !c.is_empty() {
                    buf.put(a.len(), c)?;
                }
                if !peek {
                    b.rx.drain(..n);
                    b.fwd_cnt = b.fwd_cnt.wrapping_add(n as u32);
                    maybe_credit_update(&mut b);
                }
                return Ok(n);
            }
            if let Some(e) = b.error.take() {
                return Err(e);
            }
            if b.shut_rd || b.peer_shut & SHUTDOWN_SEND != 0 || b.st == St::Closed {
                return Ok(0);
            }
            b.wq
        };
        if nonblock {
            return Err(Errno::EAGAIN);
        }
        wait(wq, until, Errno::EAGAIN)?;
    }
}

/// write(2)/sendto(2): everything (blocking) or what the peer's credit allows (non-blocking).
pub fn send(s: &SockRef, buf: &mut dyn WriteBuf, nonblock: bool) -> Result<usize, Errno> {
    let until = deadline(s.borrow().snd_timeout);
    let len = buf.len();
    let mut sent = 0;
    loop {
        let wq = {
            let mut b = s.borrow_mut();
            b.check_connect_timeout();
            if b.shut_wr || b.peer_shut & SHUTDOWN_RCV != 0 {
                return if sent > 0 {
                    Ok(sent)
                } else {
                    Err(Errno::EPIPE)
                };
            }
            if b.st != St::Connected {
                return if sent > 0 {
                    Ok(sent)
                } else {
                    Err(Errno::ENOTCONN)
                };
            }
            if sent == len {
                return Ok(sent);
            }
            let credit = b.credit() as usize;
            if credit > 0 {
                let n = (len - sent).min(credit).min(MAX_PAYLOAD);
                vs::with(|v| {
                    let h = header(v, &mut b, OP_RW, n as u32, 0);
                    send_packet(v, &h, n, |dst| buf.get(sent, &mut dst[..n]))
                })??;
                b.tx_cnt = b.tx_cnt.wrapping_add(n as u32);
                sent += n;
                continue;
            }
            if !b.credit_requested {
                b.credit_requested = true;
                let _ = vs::with(|v| {
                    let r = header(v, &mut b, OP_CREDIT_REQUEST, 0, 0);
                    send_control(v, &r);
                });
            }
            b.wq
        };
        if sent > 0 && nonblock {
            return Ok(sent);
        }
        if nonblock {
            return Err(Errno::EAGAIN);
        }
        if let Err(e) = wait(wq, until, Errno::EAGAIN) {
            return if sent > 0 { Ok(sent) } else { Err(e) };
        }
    }
}

/// shutdown(2): SHUT_RD 0, SHUT_WR 1, SHUT_RDWR 2.
pub fn shutdown(s: &SockRef, how: u32) -> Result<(), Errno> {
    if how > 2 {
        return Err(Errno::EINVAL);
    }
    let mut b = s.borrow_mut();
    if !matches!(b.st, St::Connected | St::Closed) {
        return Err(Errno::ENOTCONN);
    }
    let mut flags = 0;
    if how != 1 && !b.shut_rd {
        b.shut_rd = true;
        flags |= SHUTDOWN_RCV;
    }
    if how != 0 && !b.shut_wr {
        b.shut_wr = true;
        flags |= SHUTDOWN_SEND;
    }
    if flags != 0 && b.st == St::Connected {
        let _ = vs::with(|v| {
            let h = header(v, &mut b, OP_SHUTDOWN, 0, flags);
            send_control(v, &h);
        });
    }
    b.wq.wake_all();
    Ok(())
}

/// What poll sees: (readable, writable, hung up, error).
pub fn readiness(s: &SockRef) -> (bool, bool, bool, bool) {
    let mut b = s.borrow_mut();
    b.check_connect_timeout();
    let err = b.error.is_some();
    match b.st {
        St::Idle => (false, false, true, err),
        St::Listening => (!b.backlog.is_empty(), false, false, err),
        St::Connecting => (false, false, false, err),
        // A connect that failed (Linux: TCP_CLOSE, never connected): writable and the error, no
        // hang-up and nothing to read.
        St::Closed if b.connect_failed => (false, !b.shut_wr, false, err),
        St::Connected | St::Closed => {
            let eof = b.shut_rd || b.peer_shut & SHUTDOWN_SEND != 0 || b.st == St::Closed;
            let readable = !b.rx.is_empty() || eof;
            let writable = b.st == St::Connected
                && !b.shut_wr
                && b.peer_shut & SHUTDOWN_RCV == 0
                && b.credit() > 0;
            let hup = b.st == St::Closed
                || (b.shut_wr && (b.shut_rd || b.peer_shut & SHUTDOWN_SEND != 0))
                || b.peer_shut == SHUTDOWN_RCV | SHUTDOWN_SEND;
            // A socket that can no longer send is "writable" (the write fails at once), as Linux.
            let writable = writable || b.shut_wr || b.peer_shut & SHUTDOWN_RCV != 0;
            (readable, writable, hup, err)
        }
    }
}

/// The last descriptor of a socket was closed.
fn close(s: &SockRef) {
    let mut b = s.borrow_mut();
    let port = b.local_port;
    let _ = vs::with(|v| {
        {
            let this = &mut *b;
            match this.st {
                St::Listening => {
                    if let Some(p) = port {
                        v.listeners.remove(&p);
                    }
                    // Connections nobody accepted: reset.
                    for c in core::mem::take(&mut this.backlog) {
                        let mut c = c.borrow_mut();
                        let r = header(v, &mut c, OP_RST, 0, 0);
                        send_control(v, &r);
                        c.st = St::Closed;
                        if let Some(k) = c.key() {
                            v.conns.remove(&k);
                        }
                    }
                }
                St::Connected | St::Connecting => {
                    // Linux sends SHUTDOWN both ways and lets the peer answer RST; the peer's late
                    // packets then find no connection (RSTs are never answered).
                    let op = if this.st == St::Connected {
                        OP_SHUTDOWN
                    } else {
                        OP_RST
                    };
                    let h = header(v, this, op, 0, SHUTDOWN_RCV | SHUTDOWN_SEND);
                    send_control(v, &h);
                    if let Some(k) = this.key() {
                        v.conns.remove(&k);
                    }
                }
                St::Idle | St::Closed => {}
            }
            this.st = St::Closed;
        }
        if let Some(p) = port {
            v.release_port(p);
        }
    });
    b.local_port = None;
}

impl Drop for VsockFile {
    fn drop(&mut self) {
        close(&self.0);
    }
}

/// The open-file side of a vsock socket.
pub struct VsockFile(pub SockRef);

impl FileOps for VsockFile {
    fn read(&self, file: &OpenFile, buf: &mut dyn ReadBuf) -> Result<usize, Errno> {
        recv(&self.0, buf, file.nonblocking(), false)
    }

    fn write(&self, file: &OpenFile, buf: &mut dyn WriteBuf) -> Result<usize, Errno> {
        // EPIPE raises SIGPIPE in the system call layer.
        send(&self.0, buf, file.nonblocking())
    }

    fn seekable(&self) -> bool {
        false
    }

    fn pollable(&self) -> bool {
        true
    }

    fn poll(&self, _file: &OpenFile, queues: &mut Vec<WaitQueue>, _depth: u32) -> u16 {
        add_queue(queues, self.0.borrow().wq);
        let (r, w, hup, err) = readiness(&self.0);
        poll_mask(r, w, hup, err)
    }

    fn stat(&self) -> Stat {
        Stat {
            dev: 8,
            ino: 2,
            nlink: 1,
            mode: 0o140777,
            blksize: 4096,
            ..Stat::default()
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A new open file description for a vsock socket.
pub fn vsock_file(s: SockRef, nonblock: bool) -> FileRef {
    OpenFile::new(
        Rc::new(VsockFile(s)),
        O_RDWR | if nonblock { O_NONBLOCK } else { 0 },
        None,
    )
}

/// The vsock socket behind an open file.
pub fn vsock_of(f: &OpenFile) -> Option<SockRef> {
    f.downcast::<VsockFile>().map(|s| s.0.clone())
}

/// The receive buffer size reported by SO_RCVBUF.
pub const RCVBUF: u32 = BUF_ALLOC;
