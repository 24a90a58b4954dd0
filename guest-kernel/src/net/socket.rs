//! Sockets for user programs (AF_INET stream and datagram), on smoltcp sockets in the [`Stack`].
//!
//! A [`Socket`] is what an open file description of kind `Socket` holds. TCP: a socket that connects gets
//! one smoltcp socket; a listening one is an accept queue in the stack ([`super::listen`]) and `accept`
//! takes the oldest connection that has got past the handshake. UDP: one smoltcp socket, bound on first
//! use. Blocking calls sleep on the socket's own wait queue (woken only when a stack run
//! changed this socket, see [`super::Stack::watch`]) and recheck; O_NONBLOCK gives EAGAIN (EINPROGRESS
//! for connect). Data is copied straight
//! between user memory and smoltcp's buffers (no bounce buffer): the user range is checked (and faulted
//! in) before each copy, and no copy spans a sleep.
//!
//! Ports: a table of the ports live sockets hold gives EADDRINUSE; ephemeral ports are 49152..65535.
//! Closing a TCP socket sends FIN and leaves the smoltcp socket to finish in the background.
#![deny(unsafe_code)]

use super::listen::{ListenId, SOMAXCONN};
use super::{poll, with_stack, Stack, Watch};
use crate::mm::uaccess::{UserReader, UserWriter};
use crate::sync::{waitqueue, KCell, WaitQueue};
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use kcore::errno::Errno;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint, Ipv4Address};

const UDP_BUF: usize = 128 * 1024;
const UDP_PACKETS: usize = 64;

/// The transport protocol.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Proto {
    Tcp,
    Udp,
}

/// An IPv4 endpoint: address (host byte order words) and port.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Addr {
    pub ip: [u8; 4],
    pub port: u16,
}

impl Addr {
    fn endpoint(self) -> IpEndpoint {
        let [a, b, c, d] = self.ip;
        IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::new(a, b, c, d)), self.port)
    }

    fn from_endpoint(e: IpEndpoint) -> Addr {
        let IpAddress::Ipv4(a) = e.addr;
        Addr {
            ip: a.octets(),
            port: e.port,
        }
    }
}

/// What the socket is doing.
enum Role {
    /// Fresh or bound.
    Idle,
    /// TCP listener: its accept queue in the stack.
    Listening(ListenId),
    /// A TCP connection (connecting, connected or closed) or a UDP socket.
    Conn(SocketHandle),
}

/// A socket.
pub struct Socket {
    /// Sleepers on this socket (woken by stack runs that change it, see `Stack::watch`).
    wq: WaitQueue,
    pub proto: Proto,
    role: Role,
    local: Option<Addr>,
    /// UDP: the connected peer.
    peer: Option<Addr>,
    /// TCP: the connection reached Established (so Closed later means reset or finished).
    connected: bool,
    /// TCP: this side sent FIN (shutdown write or close).
    shut_wr: bool,
    shut_rd: bool,
    /// A pending error for SO_ERROR (a failed non-blocking connect).
    error: Option<Errno>,
    /// `local.port` is this socket's entry in the port table (bound or auto-bound, not accepted).
    owns_port: bool,
    /// SO_RCVTIMEO and SO_SNDTIMEO in ns (None: block without limit).
    pub rcv_timeout: Option<u64>,
    pub snd_timeout: Option<u64>,
}

pub type SocketRef = Rc<RefCell<Socket>>;

/// Ports held by live sockets: (protocol, port).
static PORTS: KCell<Vec<(Proto, u16)>> = KCell::new(Vec::new());
static NEXT_EPHEMERAL: KCell<u16> = KCell::new(49152);

fn port_taken(proto: Proto, port: u16) -> bool {
    PORTS.borrow().contains(&(proto, port))
}

fn take_port(proto: Proto, port: u16) -> Result<u16, Errno> {
    if port != 0 {
        if port_taken(proto, port) {
            return Err(Errno::EADDRINUSE);
        }
        PORTS.borrow_mut().push((proto, port));
        return Ok(port);
    }
    for _ in 0..16384 {
        let p = {
            let mut n = NEXT_EPHEMERAL.borrow_mut();
            let p = *n;
            *n = if p == 65535 { 49152 } else { p + 1 };
            p
        };
        if !port_taken(proto, p) {
            PORTS.borrow_mut().push((proto, p));
            return Ok(p);
        }
    }
    Err(Errno::EADDRINUSE)
}

fn release_port(proto: Proto, port: u16) {
    let mut ports = PORTS.borrow_mut();
    if let Some(i) = ports.iter().position(|&p| p == (proto, port)) {
        ports.swap_remove(i);
    }
}

fn stack<R>(f: impl FnOnce(&mut Stack) -> R) -> Result<R, Errno> {
    with_stack(f).ok_or(Errno::ENETDOWN)
}

fn new_udp(st: &mut Stack) -> SocketHandle {
    let s = udp::Socket::new(
        udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
            vec![0u8; UDP_BUF],
        ),
        udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
            vec![0u8; UDP_BUF],
        ),
    );
    st.sockets.add(s)
}

/// The deadline (ns since boot) for a call on a socket with this timeout.
fn deadline(timeout: Option<u64>) -> Option<u64> {
    timeout.map(|t| crate::time::now_ns().saturating_add(t))
}

/// Sleeps until a stack run changes socket `this` or `deadline` passes (then `on_timeout`, EAGAIN for
/// reads and writes). A pending signal ends the call as on Linux: ERESTARTSYS without a timeout
/// (restarted after the signal unless a handler without SA_RESTART runs, then EINTR), EINTR with one.
fn wait(this: &SocketRef, deadline: Option<u64>, on_timeout: Errno) -> Result<(), Errno> {
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
    let (wq, w) = watch(this);
    let before = w.and_then(|w| with_stack(|st| st.signature(w)));
    let queues: &[WaitQueue] = match &wq {
        Some(q) => core::slice::from_ref(q),
        None => &[],
    };
    waitqueue::wait_any(queues, deadline).map_err(|_| interrupted)?;
    if waitqueue::signal_pending() {
        return Err(interrupted);
    }
    if deadline.is_none_or(|d| crate::time::now_ns() < d) {
        super::add(&super::SOCKET_WAKES, 1);
        if before.is_some() && w.and_then(|w| with_stack(|st| st.signature(w))) == before {
            super::add(&super::SOCKET_IDLE_WAKES, 1);
        }
    }
    Ok(())
}

/// Registers the calling sleeper's interest in `this`: the channel to sleep on and what the stack
/// watches for it (None while the socket has nothing in the stack: nothing but its own calls changes
/// it then).
fn watch(this: &SocketRef) -> (Option<WaitQueue>, Option<Watch>) {
    let Ok(s) = this.try_borrow() else {
        return (None, None);
    };
    let w = match (&s.role, s.proto) {
        (Role::Idle, _) => None,
        (Role::Listening(id), _) => Some(Watch::Listen(*id)),
        (Role::Conn(h), Proto::Tcp) => Some(Watch::Tcp(*h)),
        (Role::Conn(h), Proto::Udp) => Some(Watch::Udp(*h)),
    };
    if let Some(w) = w {
        with_stack(|st| st.watch(s.wq, w));
    }
    (Some(s.wq), w)
}

/// poll(2): the queue to sleep on until `this` may have changed.
pub fn wait_queue(this: &SocketRef) -> Option<WaitQueue> {
    watch(this).0
}

/// A new socket (socket(2)).
pub fn new(proto: Proto) -> Result<SocketRef, Errno> {
    if !super::present() {
        return Err(Errno::ENETDOWN);
    }
    Ok(Rc::new(RefCell::new(Socket {
        wq: WaitQueue::new(),
        proto,
        role: Role::Idle,
        local: None,
        peer: None,
        connected: false,
        shut_wr: false,
        shut_rd: false,
        error: None,
        owns_port: false,
        rcv_timeout: None,
        snd_timeout: None,
    })))
}

/// The interface's own address (what 0.0.0.0 means for getsockname on a connection).
fn our_ip() -> [u8; 4] {
    with_stack(|st| st.addr.octets()).unwrap_or([0; 4])
}

impl Socket {
    /// bind(2).
    pub fn bind(&mut self, addr: Addr) -> Result<(), Errno> {
        if self.local.is_some() {
            return Err(Errno::EINVAL);
        }
        if addr.ip != [0; 4] && addr.ip != our_ip() {
            return Err(Errno::EADDRNOTAVAIL);
        }
        let port = take_port(self.proto, addr.port)?;
        self.local = Some(Addr { ip: addr.ip, port });
        self.owns_port = true;
        if self.proto == Proto::Udp {
            self.udp_open()?;
        }
        Ok(())
    }

    /// Binds to an ephemeral port if not bound yet.
    fn autobind(&mut self) -> Result<Addr, Errno> {
        if let Some(a) = self.local {
            return Ok(a);
        }
        let port = take_port(self.proto, 0)?;
        let a = Addr { ip: [0; 4], port };
        self.local = Some(a);
        self.owns_port = true;
        Ok(a)
    }

    /// UDP: the smoltcp socket, made and bound on first use.
    fn udp_open(&mut self) -> Result<SocketHandle, Errno> {
        if let Role::Conn(h) = self.role {
            return Ok(h);
        }
        let local = self.autobind()?;
        let h = stack(|st| {
            let h = new_udp(st);
            let ep = if local.ip == [0; 4] {
                IpListenEndpoint::from(local.port)
            } else {
                Addr::endpoint(local).into()
            };
            let _ = st.sockets.get_mut::<udp::Socket>(h).bind(ep);
            h
        })?;
        self.role = Role::Conn(h);
        Ok(h)
    }

    /// listen(2).
    pub fn listen(&mut self, backlog: i32) -> Result<(), Errno> {
        if self.proto != Proto::Tcp {
            return Err(Errno::EOPNOTSUPP);
        }
        match self.role {
            Role::Listening(_) => return Ok(()),
            Role::Conn(_) => return Err(Errno::EINVAL),
            Role::Idle => {}
        }
        let local = self.autobind()?;
        // Linux: `(unsigned) backlog > somaxconn` takes somaxconn, so a negative backlog is the most.
        let backlog = usize::try_from(backlog).unwrap_or(SOMAXCONN).min(SOMAXCONN);
        let id = stack(|st| {
            st.listeners
                .open(&mut st.sockets, &mut st.pool, listen_ep(local), backlog)
        })?;
        self.role = Role::Listening(id);
        Ok(())
    }

    /// connect(2). TCP blocks until established (EINPROGRESS when non-blocking); UDP sets the peer.
    pub fn connect(this: &SocketRef, to: Addr, nonblock: bool) -> Result<(), Errno> {
        let mut s = this.borrow_mut();
        if s.proto == Proto::Udp {
            s.udp_open()?;
            s.peer = Some(to);
            return Ok(());
        }
        match s.role {
            Role::Listening(_) => return Err(Errno::EINVAL),
            Role::Conn(h) => {
                let state = stack(|st| st.sockets.get::<tcp::Socket>(h).state())?;
                return Err(match state {
                    tcp::State::SynSent => Errno::EALREADY,
                    _ if s.connected => Errno::EISCONN,
                    _ => Errno::EALREADY,
                });
            }
            Role::Idle => {}
        }
        if to.port == 0 {
            return Err(Errno::ECONNREFUSED);
        }
        let local = s.autobind()?;
        let h = stack(|st| -> Result<SocketHandle, Errno> {
            let h = st.pool.take(&mut st.sockets);
            let (sockets, iface) = (&mut st.sockets, &mut st.iface);
            let r = sockets.get_mut::<tcp::Socket>(h).connect(
                iface.context(),
                to.endpoint(),
                local.port,
            );
            if r.is_err() {
                st.pool.put(&mut st.sockets, h);
                return Err(Errno::ENETUNREACH);
            }
            Ok(h)
        })??;
        s.role = Role::Conn(h);
        let until = deadline(s.snd_timeout);
        drop(s);
        poll();
        if nonblock {
            return Err(Errno::EINPROGRESS);
        }
        loop {
            let state = stack(|st| st.sockets.get::<tcp::Socket>(h).state())?;
            match state {
                tcp::State::SynSent | tcp::State::SynReceived => {
                    wait(this, until, Errno::EINPROGRESS)?
                }
                tcp::State::Closed => return Err(Errno::ECONNREFUSED),
                _ => {
                    this.borrow_mut().connected = true;
                    return Ok(());
                }
            }
        }
    }

    /// accept(2): a connected socket and its peer.
    pub fn accept(this: &SocketRef, nonblock: bool) -> Result<(SocketRef, Addr), Errno> {
        let until = deadline(this.borrow().rcv_timeout);
        loop {
            let got = {
                let s = this.borrow();
                let Role::Listening(id) = s.role else {
                    return Err(Errno::EINVAL);
                };
                stack(|st| st.listeners.accept(&mut st.sockets, &mut st.pool, id))?
            };
            if let Some((h, peer)) = got {
                let local = this.borrow().local;
                let sock = Rc::new(RefCell::new(Socket {
                    wq: WaitQueue::new(),
                    proto: Proto::Tcp,
                    role: Role::Conn(h),
                    // The connection shares the listener's port; it does not hold it in the table.
                    local: local.map(|a| Addr {
                        ip: our_ip(),
                        port: a.port,
                    }),
                    peer: None,
                    connected: true,
                    shut_wr: false,
                    shut_rd: false,
                    error: None,
                    owns_port: false,
                    rcv_timeout: None,
                    snd_timeout: None,
                }));
                let peer = peer.map(Addr::from_endpoint).unwrap_or_default();
                return Ok((sock, peer));
            }
            if nonblock {
                return Err(Errno::EAGAIN);
            }
            wait(this, until, Errno::EAGAIN)?;
        }
    }

    fn conn(&self) -> Option<SocketHandle> {
        match self.role {
            Role::Conn(h) => Some(h),
            _ => None,
        }
    }

    /// getsockname(2).
    pub fn local_addr(&self) -> Addr {
        if let (Proto::Tcp, Some(h)) = (self.proto, self.conn()) {
            if let Ok(Some(e)) = stack(|st| st.sockets.get::<tcp::Socket>(h).local_endpoint()) {
                return Addr::from_endpoint(e);
            }
        }
        self.local.unwrap_or_default()
    }

    /// getpeername(2).
    pub fn peer_addr(&self) -> Result<Addr, Errno> {
        match (self.proto, self.conn()) {
            (Proto::Udp, _) => self.peer.ok_or(Errno::ENOTCONN),
            (Proto::Tcp, Some(h)) => stack(|st| {
                let s = st.sockets.get::<tcp::Socket>(h);
                match s.state() {
                    tcp::State::Closed | tcp::State::SynSent => None,
                    _ => s.remote_endpoint(),
                }
            })?
            .map(Addr::from_endpoint)
            .ok_or(Errno::ENOTCONN),
            _ => Err(Errno::ENOTCONN),
        }
    }

    /// SO_ERROR: the pending error, cleared.
    pub fn take_error(&mut self) -> Option<Errno> {
        if let (Proto::Tcp, Some(h), false) = (self.proto, self.conn(), self.connected) {
            let state = stack(|st| st.sockets.get::<tcp::Socket>(h).state()).ok();
            match state {
                Some(tcp::State::Closed) => {
                    self.connected = true;
                    return Some(Errno::ECONNREFUSED);
                }
                Some(tcp::State::SynSent) | Some(tcp::State::SynReceived) | None => {}
                Some(_) => self.connected = true,
            }
        }
        self.error.take()
    }

    /// shutdown(2): how = SHUT_RD 0, SHUT_WR 1, SHUT_RDWR 2.
    pub fn shutdown(&mut self, how: u32) -> Result<(), Errno> {
        if how > 2 {
            return Err(Errno::EINVAL);
        }
        let h = match (self.proto, self.conn()) {
            (Proto::Tcp, Some(h)) => h,
            (Proto::Udp, Some(_)) if self.peer.is_some() => return Ok(()),
            _ => return Err(Errno::ENOTCONN),
        };
        if how != 1 {
            self.shut_rd = true;
        }
        if how != 0 && !self.shut_wr {
            self.shut_wr = true;
            stack(|st| st.sockets.get_mut::<tcp::Socket>(h).close())?;
            poll();
        }
        self.wq.wake_all();
        Ok(())
    }
}

fn listen_ep(local: Addr) -> IpListenEndpoint {
    if local.ip == [0; 4] {
        IpListenEndpoint::from(local.port)
    } else {
        local.endpoint().into()
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let role = core::mem::replace(&mut self.role, Role::Idle);
        let proto = self.proto;
        let wq = self.wq;
        let _ = with_stack(|st| st.unwatch(wq));
        let _ = with_stack(|st| match role {
            Role::Idle => {}
            Role::Listening(id) => {
                for h in st.listeners.close(id) {
                    st.sockets.get_mut::<tcp::Socket>(h).abort();
                    st.linger(h);
                }
            }
            Role::Conn(h) if proto == Proto::Tcp => {
                st.sockets.get_mut::<tcp::Socket>(h).close();
                st.linger(h);
            }
            Role::Conn(h) => {
                st.sockets.remove(h);
            }
        });
        // Accepted connections share their listener's port and never took it.
        if let (Some(a), true) = (self.local, self.owns_port) {
            release_port(proto, a.port);
        }
        poll();
    }
}

/// Copies up to `dst.len()` bytes of received data to user memory; bytes that a fault kept from
/// reaching user memory stay in the socket.
fn tcp_recv_to_user(s: &mut tcp::Socket, dst: &UserWriter) -> usize {
    let len = dst.len();
    let mut done = 0;
    while done < len {
        let r = s.recv(|buf| {
            let n = buf.len().min(len - done);
            let copied = dst.write_at(done, &buf[..n]).unwrap_or(0);
            (copied, copied)
        });
        match r {
            Ok(n) if n > 0 => done += n,
            _ => break,
        }
        if done < len && dst.remaining() == 0 {
            break;
        }
    }
    done
}

/// Copies up to `src.len()` bytes of user memory into the send buffer: the bytes queued (a fault
/// ends the copy short), EFAULT when a fault kept the first byte from being queued.
fn tcp_send_from_user(s: &mut tcp::Socket, src: &UserReader) -> Result<usize, Errno> {
    let len = src.len();
    let mut done = 0;
    while done < len {
        let r = s.send(|buf| {
            let n = buf.len().min(len - done);
            match src.read_at(done, &mut buf[..n]) {
                Ok(copied) => (copied, Ok(copied)),
                Err(e) => (0, Err(e)),
            }
        });
        match r {
            Ok(Ok(n)) if n > 0 => done += n,
            Ok(Err(e)) if done == 0 => return Err(e),
            _ => break,
        }
    }
    Ok(done)
}

/// read(2)/recvfrom(2) on a socket into user memory (a validated writer); the sender's address for
/// UDP. EFAULT when a fault stops the copy before its first byte.
pub fn recv(
    this: &SocketRef,
    dst: &mut UserWriter,
    nonblock: bool,
    peek_only: bool,
) -> Result<(usize, Option<Addr>), Errno> {
    let until = deadline(this.borrow().rcv_timeout);
    loop {
        let (proto, h, shut_rd, connected) = {
            let s = this.borrow();
            (s.proto, s.conn(), s.shut_rd, s.connected)
        };
        let Some(h) = h else {
            return Err(if proto == Proto::Tcp {
                Errno::ENOTCONN
            } else {
                Errno::EAGAIN
            });
        };
        if shut_rd {
            return Ok((0, None));
        }
        let len = dst.len();
        enum Got {
            Data(usize, Option<Addr>),
            Eof,
            Reset,
            NotConn,
            Empty,
            Fault,
        }
        let got = stack(|st| match proto {
            Proto::Tcp => {
                let s = st.sockets.get_mut::<tcp::Socket>(h);
                if s.can_recv() {
                    let n = if peek_only {
                        match s.peek(len) {
                            Ok(b) => dst.write_at(0, b).unwrap_or(0),
                            Err(_) => 0,
                        }
                    } else {
                        let t0 = crate::arch::cpu::rdtsc();
                        let n = tcp_recv_to_user(s, dst);
                        super::add(&super::COPY_TSC, crate::arch::cpu::rdtsc().wrapping_sub(t0));
                        n
                    };
                    // Data was there: nothing copied means a fault stopped the first byte.
                    if n == 0 && len > 0 {
                        Got::Fault
                    } else {
                        Got::Data(n, None)
                    }
                } else if s.may_recv() {
                    Got::Empty
                } else {
                    match s.state() {
                        tcp::State::SynSent | tcp::State::SynReceived => Got::Empty,
                        tcp::State::Closed if !connected => Got::NotConn,
                        // Closed without our close and without FIN from the peer: a reset.
                        tcp::State::Closed if !this_shut_wr(this) => Got::Reset,
                        _ => Got::Eof,
                    }
                }
            }
            Proto::Udp => {
                let s = st.sockets.get_mut::<udp::Socket>(h);
                let r = if peek_only {
                    s.peek().map(|(b, m)| (b, m.endpoint))
                } else {
                    s.recv().map(|(b, m)| (b, m.endpoint))
                };
                match r {
                    Ok((b, from)) => {
                        let n = b.len().min(len);
                        // The datagram is consumed even when a fault cut its copy short (Linux too).
                        match dst.write_at(0, &b[..n]) {
                            Ok(n) => Got::Data(n, Some(Addr::from_endpoint(from))),
                            Err(_) => Got::Fault,
                        }
                    }
                    Err(_) => Got::Empty,
                }
            }
        })?;
        match got {
            Got::Data(n, from) => {
                // The window opened: let the stack tell the peer.
                poll();
                return Ok((n, from));
            }
            Got::Eof => return Ok((0, None)),
            Got::Fault => return Err(Errno::EFAULT),
            Got::Reset => return Err(Errno::ECONNRESET),
            Got::NotConn => return Err(Errno::ENOTCONN),
            Got::Empty if nonblock => return Err(Errno::EAGAIN),
            Got::Empty => wait(this, until, Errno::EAGAIN)?,
        }
    }
}

fn this_shut_wr(this: &SocketRef) -> bool {
    this.try_borrow().map(|s| s.shut_wr).unwrap_or(false)
}

/// write(2)/sendto(2) from user memory (a validated reader). UDP sends one datagram
/// to `to` (or the connected peer). EPIPE on a TCP connection that can no longer send (the caller
/// sends SIGPIPE unless MSG_NOSIGNAL: [`crate::syscall::net::sigpipe`]).
pub fn send(
    this: &SocketRef,
    src: &UserReader,
    to: Option<Addr>,
    nonblock: bool,
) -> Result<usize, Errno> {
    let proto = this.borrow().proto;
    let len = src.len();
    let until = deadline(this.borrow().snd_timeout);
    if proto == Proto::Udp {
        let (h, dest) = {
            let mut s = this.borrow_mut();
            let dest = to.or(s.peer).ok_or(Errno::EDESTADDRREQ)?;
            (s.udp_open()?, dest)
        };
        if len > UDP_BUF {
            return Err(Errno::EMSGSIZE);
        }
        loop {
            let r = stack(|st| {
                // The datagram is filled in place; a fault during the copy (the range changed
                // since it was validated) leaves zeros and the call reports EFAULT.
                st.sockets
                    .get_mut::<udp::Socket>(h)
                    .send(len, dest.endpoint())
                    .map(|buf| {
                        let ok = src.read_exact_at(0, buf).is_ok();
                        if !ok {
                            buf.fill(0);
                        }
                        ok
                    })
            })?;
            match r {
                Ok(false) => return Err(Errno::EFAULT),
                Ok(true) => {
                    poll();
                    return Ok(len);
                }
                Err(udp::SendError::Unaddressable) => return Err(Errno::EINVAL),
                Err(udp::SendError::BufferFull) if nonblock => return Err(Errno::EAGAIN),
                Err(udp::SendError::BufferFull) => wait(this, until, Errno::EAGAIN)?,
            }
        }
    }
    let (h, connected, shut_wr) = {
        let s = this.borrow();
        (s.conn(), s.connected, s.shut_wr)
    };
    let Some(h) = h else {
        return Err(Errno::ENOTCONN);
    };
    let pipe = || Err(Errno::EPIPE);
    if shut_wr {
        return pipe();
    }
    loop {
        let r = stack(|st| {
            let s = st.sockets.get_mut::<tcp::Socket>(h);
            if s.can_send() {
                let t0 = crate::arch::cpu::rdtsc();
                let n = tcp_send_from_user(s, src);
                super::add(&super::COPY_TSC, crate::arch::cpu::rdtsc().wrapping_sub(t0));
                n.map(Ok)
            } else if s.may_send() || matches!(s.state(), tcp::State::SynSent) {
                Ok(Ok(0))
            } else {
                Ok(Err(s.state()))
            }
        })??;
        match r {
            Ok(0) if len == 0 => return Ok(0),
            Ok(0) if nonblock => return Err(Errno::EAGAIN),
            Ok(0) => wait(this, until, Errno::EAGAIN)?,
            Ok(n) => {
                poll();
                return Ok(n);
            }
            Err(tcp::State::Closed) if !connected => return Err(Errno::ENOTCONN),
            Err(_) => return pipe(),
        }
    }
}

/// poll(2) readiness: (readable, writable, hang-up, error).
pub fn readiness(this: &SocketRef) -> (bool, bool, bool, bool) {
    let Ok(s) = this.try_borrow() else {
        return (false, false, false, false);
    };
    let r = with_stack(|st| match (&s.role, s.proto) {
        (Role::Idle, Proto::Tcp) => (false, false, true, false),
        (Role::Idle, Proto::Udp) => (false, true, false, false),
        (Role::Listening(id), _) => (st.listeners.ready(&st.sockets, *id), false, false, false),
        (Role::Conn(h), Proto::Udp) => {
            let u = st.sockets.get::<udp::Socket>(*h);
            (u.can_recv(), u.can_send(), false, false)
        }
        (Role::Conn(h), Proto::Tcp) => {
            let t = st.sockets.get::<tcp::Socket>(*h);
            let state = t.state();
            let connecting = matches!(state, tcp::State::SynSent | tcp::State::SynReceived);
            let refused = state == tcp::State::Closed && !s.connected;
            let readable = t.can_recv() || (!connecting && !t.may_recv()) || s.shut_rd;
            let writable = t.can_send() || refused || (!connecting && !t.may_send());
            let hup = state == tcp::State::Closed
                || (state == tcp::State::TimeWait)
                || (!t.may_recv() && !t.may_send() && !connecting);
            (readable, writable, hup, refused)
        }
    });
    r.unwrap_or((false, false, true, true))
}
