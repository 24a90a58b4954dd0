//! The API's socket side: binds the Unix socket (mode 0600; a stale socket file is replaced, a live one is
//! an error), accepts on its own thread and serves each connection on a thread of its own, so a silent or
//! slow client holds only its own thread (reads time out after [`READ_TIMEOUT`], a request must be complete
//! within [`http::REQUEST_DEADLINE`]). A connection thread whose connection has closed waits for the next
//! one (up to [`MAX_IDLE_THREADS`] wait), so a client that connects for every request costs no thread
//! start.
//!
//! Fairness: at most [`MAX_CONNECTIONS`] connections are served at once. When a new client finds them all
//! taken, the connection that has been reading (an idle keep-alive connection, or a client trickling its
//! request) for the longest is closed to make room, so clients that send slowly cannot keep a prompt one
//! out; only when every connection is waiting for the VMM thread's answer is the newcomer told so (503).
//!
//! A connection thread parses a request ([`super::http`]), routes it ([`super::routes::route`]) and sends
//! the [`Action`] to the VMM thread as an [`ApiRequest`] over a channel, writing to an EventFd the VMM
//! thread watches ([`ApiChannel`]); the answer comes back on the connection's own reply channel.
//!
//! A request allocates nothing in steady state (issue 21: musl's malloc maps and unmaps pages as small
//! allocations come and go, and `mmap` is a syscall the seccomp filters check by argument): each
//! connection keeps its read buffer, parsed [`http::Request`], response buffer and reply channel for its
//! whole life; the requests' channel is bounded (its slots allocated once); JSON answers are written into
//! buffers taken from a small pool ([`json_buffer`]) and given back once sent ([`recycle`]).

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryIter};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::http::{self, HttpError, MAX_BODY};
use super::routes::{route, Action, ApiError};

/// How long a connection may stay silent (between requests or inside one).
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the VMM thread's answer (InstanceStart loads the kernel and opens disks).
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections served at once (see the module doc for what happens at the limit).
pub const MAX_CONNECTIONS: usize = 64;
/// Connection threads kept waiting for the next connection once theirs has closed.
const MAX_IDLE_THREADS: usize = 4;
/// Slots of the requests' channel: each connection has at most one request waiting for the VMM thread, so
/// a sender never waits for a slot (twice the connections, for a connection evicted while its request
/// goes in).
const REQUEST_SLOTS: usize = 2 * MAX_CONNECTIONS;
/// JSON buffers kept for reuse, and the largest capacity kept (a bigger answer's buffer is freed).
const POOL_BUFFERS: usize = 8;
const POOL_CAPACITY: usize = 64 * 1024;

/// Why the API socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("API socket {0}: another process is serving it")]
    InUse(PathBuf),
    #[error("API socket {0}: the path exists and is not a socket")]
    NotASocket(PathBuf),
    #[error("API socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the API EventFd: {0}")]
    EventFd(#[source] std::io::Error),
    #[error("cannot start the API thread: {0}")]
    Spawn(#[source] std::io::Error),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
}

/// A successful answer: 204 without a body, or 200 with JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Empty,
    Json(String),
}

/// What the VMM thread answers.
pub type Outcome = Result<Reply, ApiError>;

/// One request for the VMM thread, with the way back.
pub struct ApiRequest {
    pub action: Action,
    /// The connection's reply channel, and the request's number on it (an answer that comes after its
    /// request timed out is told apart from the next request's).
    reply: SyncSender<(u64, Outcome)>,
    seq: u64,
}

impl ApiRequest {
    /// Sends the answer back to the connection (which may have gone).
    pub fn respond(self, outcome: Outcome) {
        // The channel has one slot per connection and the connection waits for this answer, so this
        // never blocks; a full slot (a late answer to a request that timed out) drops this one.
        if let Err(mpsc::TrySendError::Full((_, Ok(Reply::Json(s))))) =
            self.reply.try_send((self.seq, outcome))
        {
            recycle(s.into_bytes());
        }
    }
}

/// JSON buffers given back by the connections once their answers are sent.
static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An empty buffer for a JSON answer: one used before when there is one, so that answering a request
/// allocates nothing in steady state. Give it back with [`recycle`] once sent.
pub fn json_buffer() -> Vec<u8> {
    POOL.lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop()
        .unwrap_or_default()
}

/// Keeps `buf` for a later [`json_buffer`] (at most [`POOL_BUFFERS`], of at most [`POOL_CAPACITY`]).
pub fn recycle(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > POOL_CAPACITY {
        return;
    }
    buf.clear();
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if pool.len() < POOL_BUFFERS {
        if pool.capacity() == 0 {
            pool.reserve_exact(POOL_BUFFERS);
        }
        pool.push(buf);
    }
}

/// Counters of the API server, for `GET /metrics`.
#[derive(Debug, Default, Serialize)]
pub struct ApiMetrics {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    /// Answers with a 4xx or 5xx status.
    pub errors: AtomicU64,
    /// Connections closed for silence or an incomplete request.
    pub timeouts: AtomicU64,
    /// Connections closed at the limit to make room for a new client (the longest reading).
    pub evicted: AtomicU64,
    /// Connection threads started (a closed connection's thread serves the next one, so this stays at
    /// the most connections open at once, and more only when over [`MAX_IDLE_THREADS`] were).
    pub threads: AtomicU64,
}

/// The bound socket; removes the socket file when dropped.
pub struct SocketGuard(PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The VMM thread's end of the API: the requests' channel and the EventFd written after each request.
/// Before the VM exists the pre-boot loop polls the EventFd; afterwards
/// [`crate::controller::RuntimeApi`] watches it in the event manager and answers at once.
pub struct ApiChannel {
    evt: Arc<EventFd>,
    rx: Receiver<ApiRequest>,
}

impl ApiChannel {
    /// The EventFd that becomes readable when requests wait.
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }

    /// Takes the requests that wait (clearing the EventFd first, so none is missed).
    pub fn take(&self) -> TryIter<'_, ApiRequest> {
        let _ = self.evt.read();
        self.rx.try_iter()
    }

    /// The next request that waits, if any (the caller clears the EventFd first).
    pub fn try_next(&self) -> Option<ApiRequest> {
        self.rx.try_recv().ok()
    }
}

/// Binds `path` with mode 0600, replacing a stale socket file.
fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    let err = |source| ServerError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ServerError::NotASocket(path.to_owned()));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(ServerError::InUse(path.to_owned()));
        }
        log::info!("replacing the stale API socket {}", path.display());
        std::fs::remove_file(path).map_err(err)?;
    }
    // The socket is created with mode 0600 from the start: the umask covers the window before chmod. The
    // API thread does not exist yet and vCPU threads create no files, so the process-wide umask is safe.
    // SAFETY: umask only swaps the process's file mode mask.
    let old = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = listener.map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// Binds the API socket and starts the accept thread. Returns the guard that removes the socket, the
/// VMM thread's end of the requests' channel, and the server's counters.
pub fn start(path: &Path) -> Result<(SocketGuard, ApiChannel, Arc<ApiMetrics>), ServerError> {
    let listener = bind(path)?;
    let guard = SocketGuard(path.to_owned());
    let evt = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(ServerError::EventFd)?);
    let (tx, rx) = mpsc::sync_channel(REQUEST_SLOTS);
    let metrics = Arc::new(ApiMetrics::default());
    let shared = Shared {
        tx,
        evt: evt.clone(),
        metrics: metrics.clone(),
        active: Arc::new(AtomicUsize::new(0)),
        conns: Arc::new(Mutex::new(Conns::default())),
    };
    // The thread installs its seccomp filter (inherited by the connection threads it starts) before it
    // accepts anything, and says whether that worked.
    let (filtered_tx, filtered) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            let r = crate::seccomp::apply(crate::seccomp::ThreadKind::Api);
            let ok = r.is_ok();
            let _ = filtered_tx.send(r);
            if ok {
                accept_loop(listener, shared);
            }
        })
        .map_err(ServerError::Spawn)?;
    filtered
        .recv()
        .map_err(|_| ServerError::Spawn(std::io::Error::other("the API thread ended")))??;
    Ok((guard, ApiChannel { evt, rx }, metrics))
}

/// What every connection thread shares.
#[derive(Clone)]
struct Shared {
    tx: SyncSender<ApiRequest>,
    evt: Arc<EventFd>,
    metrics: Arc<ApiMetrics>,
    active: Arc<AtomicUsize>,
    conns: Arc<Mutex<Conns>>,
}

/// The connections being served: each one's descriptor and since when it has been reading a request
/// (`None` while the VMM thread works on its request).
#[derive(Default)]
struct Conns {
    next_id: u64,
    open: Vec<(u64, RawFd, Option<Instant>)>,
}

impl Conns {
    fn set_reading(&mut self, id: u64, since: Option<Instant>) {
        if let Some(c) = self.open.iter_mut().find(|c| c.0 == id) {
            c.2 = since;
        }
    }

    /// Shuts down the connection that has been reading the longest (its thread then sees the end of the
    /// stream and leaves); false when every connection waits for the VMM thread.
    fn evict_longest_reading(&mut self) -> bool {
        let Some(i) = self
            .open
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.2.map(|t| (i, t)))
            .min_by_key(|&(_, t)| t)
            .map(|(i, _)| i)
        else {
            return false;
        };
        let (_, fd, _) = self.open.swap_remove(i);
        // SAFETY: the descriptor is in the table, so its connection's thread still owns it open (the
        // thread leaves the table, under this lock, before it closes the stream); shutdown changes no
        // memory and only makes the thread's pending and next reads see the end of the stream.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        true
    }
}

/// A connection's place in [`Conns`], left when dropped (before the stream is closed).
struct ConnEntry<'a> {
    conns: &'a Mutex<Conns>,
    id: u64,
}

impl ConnEntry<'_> {
    fn reading(&self, since: Option<Instant>) {
        lock(self.conns).set_reading(self.id, since);
    }
}

impl Drop for ConnEntry<'_> {
    fn drop(&mut self) {
        lock(self.conns).open.retain(|c| c.0 != self.id);
    }
}

fn lock(m: &Mutex<Conns>) -> std::sync::MutexGuard<'_, Conns> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(listener: UnixListener, shared: Shared) {
    // Connections go to idle connection threads when there are some (a client that connects for each
    // request, as curl does, costs no thread start: its clone, stack mmap and munmap, and the start-up
    // of a thread that has not run yet), to a new thread otherwise.
    let (handoff, streams) = mpsc::sync_channel::<UnixStream>(MAX_IDLE_THREADS);
    let streams = Arc::new(Mutex::new(streams));
    let idle = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log::warn!("API: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        shared.metrics.connections.fetch_add(1, Ordering::Relaxed);
        if shared.active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            if lock(&shared.conns).evict_longest_reading() {
                shared.metrics.evicted.fetch_add(1, Ordering::Relaxed);
            } else {
                shared.active.fetch_sub(1, Ordering::AcqRel);
                let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
                let e = ApiError::Busy(MAX_CONNECTIONS);
                let _ = http::write_response(&mut stream, e.status(), &e.body(), false);
                continue;
            }
        }
        // Claim an idle thread: each one counted in `idle` is in (or on its way to) `streams.recv()`.
        if idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
        {
            match handoff.try_send(stream) {
                Ok(()) => continue,
                // Not reached: at most MAX_IDLE_THREADS are idle, each taking one stream.
                Err(mpsc::TrySendError::Full(s) | mpsc::TrySendError::Disconnected(s)) => {
                    stream = s
                }
            }
        }
        shared.metrics.threads.fetch_add(1, Ordering::Relaxed);
        let s = shared.clone();
        let (streams, idle) = (streams.clone(), idle.clone());
        let spawned = std::thread::Builder::new()
            .name("api-conn".into())
            .spawn(move || {
                crate::seccomp::inherited(crate::seccomp::ThreadKind::Api);
                let mut conn = Conn::new();
                let mut stream = stream;
                loop {
                    serve(&mut stream, &s, &mut conn);
                    s.active.fetch_sub(1, Ordering::AcqRel);
                    // Stay for the next connection unless enough threads wait already (counted idle
                    // before the client sees its connection close, so that its next one finds it).
                    let stay = idle
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                            (n < MAX_IDLE_THREADS).then_some(n + 1)
                        })
                        .is_ok();
                    drop(stream);
                    if !stay {
                        return;
                    }
                    let next = streams.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match next {
                        Ok(next) => stream = next,
                        Err(_) => return,
                    }
                }
            });
        if let Err(e) = spawned {
            shared.active.fetch_sub(1, Ordering::AcqRel);
            log::warn!("API: cannot start a connection thread: {e}");
        }
    }
}

/// Serves one connection until it closes, fails, goes silent, or is evicted to make room.
fn serve(stream: &mut UnixStream, shared: &Shared, conn: &mut Conn) {
    if stream.set_read_timeout(Some(READ_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(READ_TIMEOUT)).is_err()
    {
        return;
    }
    let entry = {
        let mut conns = lock(&shared.conns);
        conns.next_id += 1;
        let id = conns.next_id;
        conns
            .open
            .push((id, stream.as_raw_fd(), Some(Instant::now())));
        ConnEntry {
            conns: &shared.conns,
            id,
        }
    };
    conn.reset();
    let req = &mut conn.request;
    loop {
        entry.reading(Some(Instant::now()));
        let request = http::read_request_into(stream, &mut conn.input, req);
        entry.reading(None);
        let (outcome, keep_alive) = match request {
            Ok(()) => match route(&req.method, &req.path, &req.body)
                .and_then(|a| conn.answers.call(shared, a))
            {
                // No answer in time: the connection closes (its reply slot may still get the answer).
                Err(ApiError::Unavailable) => (Err(ApiError::Unavailable), false),
                outcome => (outcome, req.keep_alive),
            },
            Err(HttpError::Closed) => return,
            Err(HttpError::Io(e)) => {
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) {
                    shared.metrics.timeouts.fetch_add(1, Ordering::Relaxed);
                }
                log::debug!("API connection dropped: {e}");
                return;
            }
            Err(HttpError::Malformed(m)) => (Err(ApiError::BadRequest(m)), false),
            Err(HttpError::TooLarge(_)) => (Err(ApiError::PayloadTooLarge(MAX_BODY)), false),
        };
        shared.metrics.requests.fetch_add(1, Ordering::Relaxed);
        let out = &mut conn.output;
        let written = match outcome {
            Ok(Reply::Empty) => http::write_response_with(stream, out, 204, "", keep_alive),
            Ok(Reply::Json(body)) => {
                let r = http::write_response_with(stream, out, 200, &body, keep_alive);
                recycle(body.into_bytes());
                r
            }
            Err(e) => {
                shared.metrics.errors.fetch_add(1, Ordering::Relaxed);
                log::debug!("API: answering {}: {e}", e.status());
                http::write_response_with(stream, out, e.status(), &e.body(), keep_alive)
            }
        };
        if written.is_err() || !keep_alive {
            return;
        }
    }
}

/// What a connection thread keeps from one request (and connection) to the next, so that a request
/// allocates nothing once these have grown to its size: the bytes read and not yet parsed, the parsed
/// request, the response being composed, and the channel the VMM thread answers on.
struct Conn {
    input: Vec<u8>,
    request: http::Request,
    output: Vec<u8>,
    answers: Answers,
}

/// Buffers larger than this are shrunk back when their connection ends (a 64 KiB body is not kept).
const KEPT_BUFFER: usize = 16 * 1024;

impl Conn {
    fn new() -> Self {
        Conn {
            input: Vec::with_capacity(4096),
            request: http::Request::default(),
            output: Vec::with_capacity(4096),
            answers: Answers::new(),
        }
    }

    /// Ready for the next connection.
    fn reset(&mut self) {
        self.input.clear();
        for buf in [&mut self.input, &mut self.output, &mut self.request.body] {
            if buf.capacity() > KEPT_BUFFER {
                buf.shrink_to(4096);
            }
        }
    }
}

/// The channel a connection thread's requests are answered on; each request numbered.
struct Answers {
    reply: SyncSender<(u64, Outcome)>,
    answer: Receiver<(u64, Outcome)>,
    seq: u64,
}

impl Answers {
    fn new() -> Self {
        let (reply, answer) = mpsc::sync_channel(1);
        Answers {
            reply,
            answer,
            seq: 0,
        }
    }

    /// Hands `action` to the VMM thread and waits for its answer (`Unavailable` when none comes in
    /// time; the connection is then closed, and a fresh channel replaces this one, so that the late
    /// answer cannot take the slot of the next).
    fn call(&mut self, shared: &Shared, action: Action) -> Outcome {
        self.seq += 1;
        let request = ApiRequest {
            action,
            reply: self.reply.clone(),
            seq: self.seq,
        };
        shared.tx.send(request).map_err(|_| ApiError::Unavailable)?;
        shared.evt.write(1).map_err(|_| ApiError::Unavailable)?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.answer.recv_timeout(left) {
                Ok((seq, outcome)) if seq == self.seq => return outcome,
                // An earlier request's late answer (not reached: see above).
                Ok(_) => continue,
                Err(_) => {
                    *self = Answers::new();
                    return Err(ApiError::Unavailable);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    fn temp_sock(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("microvm-api-{}-{name}.sock", std::process::id()))
    }

    #[test]
    fn socket_is_0600_stale_replaced_live_refused() {
        let path = temp_sock("bind");
        // A stale socket: bound, then its listener gone.
        drop(UnixListener::bind(&path).unwrap());
        let (guard, channel, _) = start(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(start(&path), Err(ServerError::InUse(_))));

        // A request travels to the "VMM thread" and back.
        let client = std::thread::spawn({
            let path = path.clone();
            move || {
                let mut s = UnixStream::connect(&path).unwrap();
                s.write_all(b"GET /version HTTP/1.1\r\nConnection: close\r\n\r\n")
                    .unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                out
            }
        });
        let req = loop {
            let mut fds = [libc::pollfd {
                fd: channel.eventfd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: `fds` is a valid array of one pollfd for the duration of the call.
            unsafe { libc::poll(fds.as_mut_ptr(), 1, 5000) };
            if let Some(r) = channel.take().next() {
                break r;
            }
        };
        assert_eq!(req.action, Action::GetVersion);
        req.respond(Ok(Reply::Json("{\"v\":1}".into())));
        let out = client.join().unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with("{\"v\":1}"));

        drop(guard);
        assert!(!path.exists());
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(start(&path), Err(ServerError::NotASocket(_))));
        std::fs::remove_file(&path).unwrap();
    }

    /// Answers every request with `{"n":N}` (N counting from 1), for the rest of the test process.
    fn fake_vmm(channel: ApiChannel) {
        std::thread::spawn(move || {
            let mut n = 0;
            loop {
                let mut fds = [libc::pollfd {
                    fd: channel.eventfd().as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                }];
                // SAFETY: `fds` is a valid array of one pollfd for the duration of the call.
                unsafe { libc::poll(fds.as_mut_ptr(), 1, -1) };
                for req in channel.take() {
                    n += 1;
                    let mut buf = json_buffer();
                    buf.extend_from_slice(format!("{{\"n\":{n}}}").as_bytes());
                    req.respond(Ok(Reply::Json(String::from_utf8(buf).unwrap())));
                }
            }
        });
    }

    fn request(path: &Path, keep_alive_count: usize) -> String {
        let mut s = UnixStream::connect(path).unwrap();
        for _ in 1..keep_alive_count {
            s.write_all(b"GET /version HTTP/1.1\r\n\r\n").unwrap();
        }
        s.write_all(b"GET /version HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn a_closed_connections_thread_serves_the_next_and_answers_are_in_order() {
        let path = temp_sock("reuse");
        let (guard, channel, metrics) = start(&path).unwrap();
        fake_vmm(channel);
        // One after the other: one thread serves them all.
        for _ in 0..5 {
            let out = request(&path, 1);
            assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        }
        assert_eq!(metrics.threads.load(Ordering::Relaxed), 1);
        // Three requests on one connection: each answer is its own, in order.
        let out = request(&path, 3);
        let bodies: Vec<&str> = out.split("\r\n\r\n").skip(1).collect();
        assert_eq!(bodies.len(), 3, "{out}");
        for (i, b) in bodies.iter().enumerate() {
            assert!(b.starts_with(&format!("{{\"n\":{}}}", 6 + i)), "{out}");
        }
        // Two at once: a second thread; both stay for later connections.
        let a = UnixStream::connect(&path).unwrap();
        let out = request(&path, 1);
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        drop(a);
        assert_eq!(metrics.threads.load(Ordering::Relaxed), 2);
        for _ in 0..3 {
            request(&path, 1);
        }
        assert_eq!(metrics.threads.load(Ordering::Relaxed), 2);
        assert_eq!(metrics.connections.load(Ordering::Relaxed), 11);
        drop(guard);
    }

    #[test]
    fn eviction_closes_the_longest_reading_connection_and_never_a_busy_one() {
        let (a, _a_peer) = UnixStream::pair().unwrap();
        let (b, mut b_peer) = UnixStream::pair().unwrap();
        let (c, _c_peer) = UnixStream::pair().unwrap();
        let t = Instant::now();
        let mut conns = Conns::default();
        conns
            .open
            .push((1, a.as_raw_fd(), Some(t + Duration::from_millis(10))));
        conns.open.push((2, b.as_raw_fd(), Some(t)));
        conns.open.push((3, c.as_raw_fd(), None));
        assert!(conns.evict_longest_reading());
        // The evicted connection's client sees the end of the stream.
        let mut buf = [0u8; 1];
        assert_eq!(b_peer.read(&mut buf).unwrap(), 0);
        let ids: Vec<u64> = conns.open.iter().map(|c| c.0).collect();
        assert_eq!(ids, [1, 3]);
        assert!(conns.evict_longest_reading());
        // Only the connection waiting for the VMM is left: nothing to evict.
        assert!(!conns.evict_longest_reading());
        assert_eq!(conns.open.len(), 1);
        let e = ApiError::Busy(MAX_CONNECTIONS);
        assert_eq!(e.status(), 503);
        assert!(e.to_string().contains("waiting for answers from the VMM"));
    }
}
