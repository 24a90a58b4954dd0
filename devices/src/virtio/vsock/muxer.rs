//! The host side of virtio-vsock: guest connections multiplexed onto Unix sockets (Firecracker's
//! scheme, docs/vsock.md in its repository).
//!
//! - Host to guest: a client connects to `uds_path` and writes `CONNECT <port>\n`; the muxer sends the
//!   guest a REQUEST for that port from a fresh host port, and when the guest answers RESPONSE writes
//!   `OK <host_port>\n` to the client; from then on the socket is the stream. A malformed line, a port
//!   that is not a u32, an RST from the guest (nothing listening) or no answer within
//!   [`CONNECT_TIMEOUT`] closes the client's socket.
//! - Guest to host: a REQUEST to CID 2 port P connects to the Unix socket `<uds_path>_P`; nothing
//!   there is an RST.
//!
//! Everything is event-driven on one epoll instance the muxer owns (the device registers its fd with
//! the VMM thread's event manager): the listener, clients still writing their `CONNECT` line, every
//! connection's socket (readable only while the guest has credit and the connection is not already
//! waiting in the receive list; writable only while guest data waits), and a timer for the timeouts.
//! Per-connection protocol state lives in [`conn::Conn`]; the muxer does the I/O. Packets the guest
//! is owed wait as flags on their connection (bounded by [`MAX_CONNECTIONS`]) or, for the RSTs that
//! answer packets of unknown connections, in a list of at most [`MAX_PENDING_RSTS`].

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::timerfd::TimerFd;

use super::conn::{rst_for, Conn, Recv, State};
use super::packet::{op, Header, HDR_LEN, HOST_CID};
use super::{VsockError, VsockMetrics};
use crate::virtio::LogLimiter;

/// Most connections at once (Firecracker's limit); clients beyond it are closed, REQUESTs reset.
pub const MAX_CONNECTIONS: usize = 1023;
/// RSTs for unknown connections waiting for receive buffers; more are dropped.
pub const MAX_PENDING_RSTS: usize = 1024;
/// Longest `CONNECT <port>\n` line.
pub const MAX_CONNECT_LINE: usize = 32;
/// How long a client may take to send its line, and the guest to answer the REQUEST.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first host port handed to host-initiated connections (as Firecracker).
pub const FIRST_LOCAL_PORT: u32 = 1 << 30;

type Key = (u32, u32);

#[derive(Clone, Copy, Debug)]
enum Who {
    Listener,
    Timer,
    Client,
    Conn(Key),
}

struct Client {
    stream: UnixStream,
    since: Instant,
}

struct Entry {
    conn: Conn,
    stream: UnixStream,
    /// In the receive list: its socket is known readable, or it owes a control packet.
    queued: bool,
    /// The epoll interest registered (empty: not registered).
    interest: EventSet,
    host_write_shut: bool,
    /// The socket was shut down both ways (the connection is over).
    host_closed: bool,
    connecting_since: Option<Instant>,
}

/// Adds one to a counter.
fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The muxer of one vsock device.
pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    timer: TimerFd,
    timer_armed: bool,
    fds: HashMap<RawFd, Who>,
    clients: HashMap<RawFd, Client>,
    conns: HashMap<Key, Entry>,
    rxq: VecDeque<Key>,
    rsts: VecDeque<Header>,
    next_port: u32,
    metrics: Arc<VsockMetrics>,
    warn: LogLimiter,
}

/// Parses `CONNECT <port>\n` (the port a decimal u32).
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(line).ok()?;
    let s = s.strip_suffix('\n')?;
    let s = s.strip_suffix('\r').unwrap_or(s);
    let port = s.strip_prefix("CONNECT ")?;
    if port.is_empty() || port.len() > 10 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

/// Binds `path`, replacing a socket file nobody accepts on (left by a killed VMM).
fn bind(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            use std::os::unix::fs::FileTypeExt;
            let is_socket = std::fs::symlink_metadata(path)?.file_type().is_socket();
            if is_socket && UnixStream::connect(path).is_err() {
                std::fs::remove_file(path)?;
                UnixListener::bind(path)
            } else {
                Err(e)
            }
        }
        r => r,
    }
}

/// A non-blocking connect to a Unix socket (a full backlog is an error, never a wait).
fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `addr` is a valid sockaddr_un of the size passed.
    let r = unsafe {
        libc::connect(
            owned.as_raw_fd(),
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(owned))
}

impl Muxer {
    /// Listens on `uds_path` for a guest whose CID is `guest_cid`.
    pub fn new(
        guest_cid: u64,
        uds_path: &Path,
        metrics: Arc<VsockMetrics>,
    ) -> Result<Self, VsockError> {
        let listener = bind(uds_path).map_err(|source| VsockError::Bind {
            path: uds_path.to_owned(),
            source,
        })?;
        listener.set_nonblocking(true).map_err(VsockError::Io)?;
        let epoll = Epoll::new().map_err(VsockError::Io)?;
        let timer = TimerFd::new().map_err(|e| VsockError::Io(e.into()))?;
        let mut m = Self {
            guest_cid,
            uds_path: uds_path.to_owned(),
            listener,
            epoll,
            timer,
            timer_armed: false,
            fds: HashMap::new(),
            clients: HashMap::new(),
            conns: HashMap::new(),
            rxq: VecDeque::new(),
            rsts: VecDeque::new(),
            next_port: FIRST_LOCAL_PORT,
            metrics,
            warn: LogLimiter::default(),
        };
        let lfd = m.listener.as_raw_fd();
        m.ctl(ControlOperation::Add, lfd, EventSet::IN, Who::Listener)?;
        let tfd = m.timer.as_raw_fd();
        m.ctl(ControlOperation::Add, tfd, EventSet::IN, Who::Timer)?;
        Ok(m)
    }

    fn ctl(
        &mut self,
        op: ControlOperation,
        fd: RawFd,
        set: EventSet,
        who: Who,
    ) -> Result<(), VsockError> {
        let delete = matches!(op, ControlOperation::Delete);
        self.epoll
            .ctl(op, fd, EpollEvent::new(set, fd as u64))
            .map_err(VsockError::Epoll)?;
        if delete {
            self.fds.remove(&fd);
        } else {
            self.fds.insert(fd, who);
        }
        Ok(())
    }

    /// The epoll fd to watch for readability.
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// The socket path clients connect to.
    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    /// Live connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Bytes of guest data waiting for Unix sockets, over all connections.
    pub fn buffered(&self) -> usize {
        self.conns.values().map(|e| e.conn.tx_pending().len()).sum()
    }

    /// Something waits for the guest's receive buffers.
    pub fn has_rx(&self) -> bool {
        !self.rsts.is_empty() || !self.rxq.is_empty()
    }

    /// Handles whatever the epoll instance reports (without blocking).
    pub fn process_events(&mut self) {
        let mut events = [EpollEvent::default(); 32];
        loop {
            let n = match self.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.warn
                        .warn(format_args!("vsock: epoll_wait failed: {e}"));
                    return;
                }
            };
            for ev in &events[..n] {
                let fd = ev.data() as RawFd;
                let set = ev.event_set();
                match self.fds.get(&fd).copied() {
                    Some(Who::Listener) => self.accept_clients(),
                    Some(Who::Timer) => self.on_timer(),
                    Some(Who::Client) => self.read_connect_line(fd),
                    Some(Who::Conn(key)) => self.on_conn_event(key, set),
                    None => {}
                }
            }
            if n < events.len() {
                return;
            }
        }
    }

    fn accept_clients(&mut self) {
        loop {
            // SAFETY: accept4 on the listener we own, without an address; the result is checked.
            let fd = unsafe {
                libc::accept4(
                    self.listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => return,
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => continue,
                    _ => {
                        self.warn.warn(format_args!("vsock: accept failed: {e}"));
                        return;
                    }
                }
            }
            // SAFETY: `fd` was just returned by accept4 and is owned by nobody else.
            let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
            if self.clients.len() + self.conns.len() >= MAX_CONNECTIONS {
                self.warn.warn(format_args!(
                    "vsock: {MAX_CONNECTIONS} connections open; a new client is closed"
                ));
                continue;
            }
            let fd = stream.as_raw_fd();
            if self
                .ctl(ControlOperation::Add, fd, EventSet::IN, Who::Client)
                .is_err()
            {
                continue;
            }
            self.clients.insert(
                fd,
                Client {
                    stream,
                    since: Instant::now(),
                },
            );
            self.arm_timer();
        }
    }

    fn drop_client(&mut self, fd: RawFd) -> Option<Client> {
        let c = self.clients.remove(&fd)?;
        let _ = self.ctl(ControlOperation::Delete, fd, EventSet::empty(), Who::Client);
        Some(c)
    }

    /// Reads exactly the `CONNECT` line (peeked first, so bytes after it stay in the socket).
    fn read_connect_line(&mut self, fd: RawFd) {
        let mut buf = [0u8; MAX_CONNECT_LINE];
        // SAFETY: `buf` is writable for its length; `fd` is a live socket the muxer owns.
        let n = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted {
                return;
            }
            self.drop_client(fd);
            return;
        }
        let n = n as usize;
        let Some(end) = buf[..n].iter().position(|&b| b == b'\n') else {
            if n == 0 || n == buf.len() {
                // EOF before a line, or a line too long.
                if n > 0 {
                    inc(&self.metrics.bad_connect_lines);
                }
                self.drop_client(fd);
            }
            return;
        };
        let Some(mut client) = self.drop_client(fd) else {
            return;
        };
        let mut line = [0u8; MAX_CONNECT_LINE];
        if client.stream.read_exact(&mut line[..=end]).is_err() {
            return;
        }
        let Some(port) = parse_connect(&line[..=end]) else {
            inc(&self.metrics.bad_connect_lines);
            return;
        };
        let local = self.alloc_port(port);
        let key = (local, port);
        let entry = Entry {
            conn: Conn::host_initiated(self.guest_cid, local, port),
            stream: client.stream,
            queued: false,
            interest: EventSet::empty(),
            host_write_shut: false,
            host_closed: false,
            connecting_since: Some(Instant::now()),
        };
        self.conns.insert(key, entry);
        inc(&self.metrics.host_connects);
        inc(&self.metrics.conns_added);
        self.refresh(key);
    }

    fn alloc_port(&mut self, peer_port: u32) -> u32 {
        loop {
            let p = self.next_port;
            self.next_port = self.next_port.wrapping_add(1).max(FIRST_LOCAL_PORT);
            if !self.conns.contains_key(&(p, peer_port)) {
                return p;
            }
        }
    }

    fn arm_timer(&mut self) {
        if !self.timer_armed {
            let tick = Duration::from_millis(500);
            if self.timer.reset(tick, Some(tick)).is_ok() {
                self.timer_armed = true;
            }
        }
    }

    fn on_timer(&mut self) {
        let _ = self.timer.wait();
        let now = Instant::now();

        let late: Vec<RawFd> = self
            .clients
            .iter()
            .filter(|(_, c)| now.duration_since(c.since) > CONNECT_TIMEOUT)
            .map(|(fd, _)| *fd)
            .collect();
        for fd in late {
            self.drop_client(fd);
        }
        let late: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, e)| {
                e.conn.state() == State::Connecting
                    && e.connecting_since
                        .is_some_and(|t| now.duration_since(t) > CONNECT_TIMEOUT)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in late {
            if let Some(e) = self.conns.get_mut(&key) {
                e.conn.reset();
            }
            self.refresh(key);
        }
        let waiting = !self.clients.is_empty()
            || self
                .conns
                .values()
                .any(|e| e.conn.state() == State::Connecting);
        if !waiting && self.timer.clear().is_ok() {
            self.timer_armed = false;
        }
    }

    fn on_conn_event(&mut self, key: Key, set: EventSet) {
        let Some(e) = self.conns.get_mut(&key) else {
            return;
        };
        if set.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR) && !e.queued {
            e.queued = true;
            self.rxq.push_back(key);
        }
        if set.intersects(EventSet::OUT | EventSet::ERROR) {
            flush(e, &self.metrics);
        }
        self.refresh(key);
    }

    /// Re-derives what a connection waits for after anything happened to it: writes out guest data,
    /// shuts the socket's write side, puts it in the receive list, sets its epoll interest, and drops
    /// it when it is over.
    fn refresh(&mut self, key: Key) {
        let Some(e) = self.conns.get_mut(&key) else {
            return;
        };
        if !e.conn.tx_pending().is_empty() {
            flush(e, &self.metrics);
        }
        if e.conn.state() == State::Closed && !e.host_closed {
            // The host client learns at once, even while the guest has not taken the RST yet.
            e.host_closed = true;
            e.host_write_shut = true;
            let _ = e.stream.shutdown(std::net::Shutdown::Both);
        }
        if e.conn.should_shut_host_write() && !e.host_write_shut {
            e.host_write_shut = true;
            let _ = e.stream.shutdown(std::net::Shutdown::Write);
        }
        if e.conn.has_control() && !e.queued {
            e.queued = true;
            self.rxq.push_back(key);
        }
        if e.conn.is_done() {
            inc(&self.metrics.conns_removed);
            let fd = e.stream.as_raw_fd();
            let registered = !e.interest.is_empty();
            self.conns.remove(&key);
            if registered {
                let _ = self.ctl(
                    ControlOperation::Delete,
                    fd,
                    EventSet::empty(),
                    Who::Conn(key),
                );
            }
            return;
        }
        let mut want = EventSet::empty();
        if e.conn.read_budget() > 0 && !e.queued {
            want |= EventSet::IN;
        }
        if !e.conn.tx_pending().is_empty() {
            want |= EventSet::OUT;
        }
        if want == e.interest {
            return;
        }
        let fd = e.stream.as_raw_fd();
        let op = if e.interest.is_empty() {
            ControlOperation::Add
        } else if want.is_empty() {
            ControlOperation::Delete
        } else {
            ControlOperation::Modify
        };
        e.interest = want;
        if let Err(err) = self.ctl(op, fd, want, Who::Conn(key)) {
            self.warn
                .warn(format_args!("vsock: cannot watch a connection: {err}"));
            if let Some(e) = self.conns.get_mut(&key) {
                e.interest = EventSet::empty();
                e.conn.reset();
            }
        }
    }

    fn queue_rst(&mut self, h: &Header) {
        if h.op == op::RST {
            return;
        }
        if self.rsts.len() >= MAX_PENDING_RSTS {
            self.warn.warn(format_args!(
                "vsock: guest is not taking packets; an RST is dropped"
            ));
            return;
        }
        self.rsts.push_back(rst_for(h));
    }

    /// Takes one packet from the guest's transmit queue.
    pub fn on_guest_packet(&mut self, h: &Header, data: &[u8]) {
        if h.src_cid != self.guest_cid {
            inc(&self.metrics.malformed);
            self.warn.warn(format_args!(
                "vsock: packet from CID {} (the guest is {}) dropped",
                h.src_cid, self.guest_cid
            ));
            return;
        }
        if h.dst_cid != HOST_CID {
            // Nobody else is reachable through this device: dropped, as Firecracker's muxer and Linux's
            // vhost-vsock drop it (a guest's connect there times out: ETIMEDOUT after its 2 s).
            inc(&self.metrics.malformed);
            self.warn.warn(format_args!(
                "vsock: packet for CID {} (only the host, {HOST_CID}, is reachable) dropped",
                h.dst_cid
            ));
            return;
        }
        let key = (h.dst_port, h.src_port);
        if let Some(e) = self.conns.get_mut(&key) {
            match e.conn.on_packet(h, data) {
                Recv::Accepted => {
                    e.connecting_since = None;
                    let line = format!("OK {}\n", key.0);
                    // A few bytes into a fresh socket: they fit its buffer.
                    if e.stream.write_all(line.as_bytes()).is_err() {
                        e.conn.reset();
                    }
                }
                Recv::Data | Recv::Nothing | Recv::Closed => {}
            }
            self.refresh(key);
            return;
        }
        if h.op != op::REQUEST {
            self.queue_rst(h);
            return;
        }
        if self.clients.len() + self.conns.len() >= MAX_CONNECTIONS {
            self.queue_rst(h);
            return;
        }
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{}", h.dst_port));
        match connect_nonblocking(Path::new(&path)) {
            Ok(stream) => {
                self.conns.insert(
                    key,
                    Entry {
                        conn: Conn::guest_initiated(h),
                        stream,
                        queued: false,
                        interest: EventSet::empty(),
                        host_write_shut: false,
                        host_closed: false,
                        connecting_since: None,
                    },
                );
                inc(&self.metrics.guest_connects);
                inc(&self.metrics.conns_added);
                self.refresh(key);
            }
            Err(_) => self.queue_rst(h),
        }
    }

    /// Writes the next packet for the guest (header, then payload) into `buf`, which holds at least
    /// [`HDR_LEN`] bytes. Returns its length, or `None` when nothing waits.
    pub fn next_rx(&mut self, buf: &mut [u8]) -> Option<usize> {
        if buf.len() < HDR_LEN {
            return None;
        }
        if let Some(h) = self.rsts.pop_front() {
            buf[..HDR_LEN].copy_from_slice(&h.to_bytes());
            inc(&self.metrics.rsts_sent);
            return Some(HDR_LEN);
        }
        while let Some(key) = self.rxq.pop_front() {
            let Some(e) = self.conns.get_mut(&key) else {
                continue;
            };
            e.queued = false;
            let mut out = None;
            if let Some(h) = e.conn.next_control() {
                if h.op == op::RST {
                    inc(&self.metrics.rsts_sent);
                }
                buf[..HDR_LEN].copy_from_slice(&h.to_bytes());
                out = Some(HDR_LEN);
                // It may have more to say, or data: it stays in the list.
                e.queued = true;
                self.rxq.push_back(key);
            } else {
                let budget = e.conn.read_budget() as usize;
                if budget == 0 {
                    if e.conn.state() == State::Established && e.conn.peer_credit() == 0 {
                        e.conn.request_credit();
                    }
                } else {
                    let room = (buf.len() - HDR_LEN).min(budget);
                    match e.stream.read(&mut buf[HDR_LEN..HDR_LEN + room]) {
                        Ok(0) => e.conn.host_eof(),
                        Ok(n) => {
                            self.metrics
                                .rx_bytes_count
                                .fetch_add(n as u64, Ordering::Relaxed);
                            let h = e.conn.data_header(n as u32);
                            buf[..HDR_LEN].copy_from_slice(&h.to_bytes());
                            out = Some(HDR_LEN + n);
                            e.queued = true;
                            self.rxq.push_back(key);
                        }
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => {
                            e.queued = true;
                            self.rxq.push_back(key);
                        }
                        Err(_) => {
                            inc(&self.metrics.rx_read_fails);
                            e.conn.reset();
                        }
                    }
                }
            }
            self.refresh(key);
            if out.is_some() {
                return out;
            }
        }
        None
    }

    /// Forgets every connection (closing their sockets and clients'), as after a snapshot restore.
    pub fn reset_all(&mut self) {
        let fds: Vec<RawFd> = self
            .fds
            .iter()
            .filter(|(_, w)| matches!(w, Who::Client | Who::Conn(_)))
            .map(|(fd, _)| *fd)
            .collect();
        for fd in fds {
            let _ = self.ctl(ControlOperation::Delete, fd, EventSet::empty(), Who::Client);
        }
        self.clients.clear();
        self.conns.clear();
        self.rxq.clear();
        self.rsts.clear();
    }
}

/// Writes as much waiting guest data as the socket takes; a failure resets the connection.
fn flush(e: &mut Entry, m: &VsockMetrics) {
    loop {
        let (a, _) = e.conn.tx_pending().as_slices();
        if a.is_empty() {
            return;
        }
        match e.stream.write(a) {
            Ok(0) => {
                e.conn.reset();
                return;
            }
            Ok(n) => {
                m.tx_bytes_count.fetch_add(n as u64, Ordering::Relaxed);
                e.conn.consumed(n);
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                inc(&m.tx_write_fails);
                e.conn.reset();
                return;
            }
        }
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.uds_path);
    }
}
