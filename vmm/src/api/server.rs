//! The API's socket side: binds the Unix socket (mode 0600; a stale socket file is replaced, a live one is
//! an error), accepts on its own thread and serves each connection on a thread of its own, so a silent or
//! slow client holds only its own thread (reads time out after [`READ_TIMEOUT`], a request must be complete
//! within [`http::REQUEST_DEADLINE`]).
//!
//! Fairness: at most [`MAX_CONNECTIONS`] connections are served at once. When a new client finds them all
//! taken, the connection that has been reading (an idle keep-alive connection, or a client trickling its
//! request) for the longest is closed to make room, so clients that send slowly cannot keep a prompt one
//! out; only when every connection is waiting for the VMM thread's answer is the newcomer told so (503).
//!
//! A connection thread parses a request ([`super::http`]), routes it ([`super::routes::route`]) and sends
//! the [`Action`] to the VMM thread as an [`ApiRequest`] over a channel, writing to an EventFd the VMM
//! thread watches ([`ApiChannel`]); the answer comes back on a per-request channel.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
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
    reply: SyncSender<Outcome>,
}

impl ApiRequest {
    /// Sends the answer back to the connection (which may have gone).
    pub fn respond(self, outcome: Outcome) {
        let _ = self.reply.send(outcome);
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
    pub fn take(&self) -> Vec<ApiRequest> {
        let _ = self.evt.read();
        self.rx.try_iter().collect()
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
    let (tx, rx) = mpsc::channel();
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
    tx: Sender<ApiRequest>,
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
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("api-conn".into())
            .spawn(move || {
                crate::seccomp::inherited(crate::seccomp::ThreadKind::Api);
                serve(stream, &s);
                s.active.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            shared.active.fetch_sub(1, Ordering::AcqRel);
            log::warn!("API: cannot start a connection thread: {e}");
        }
    }
}

/// Serves one connection until it closes, fails, goes silent, or is evicted to make room.
fn serve(mut stream: UnixStream, shared: &Shared) {
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
    let mut buf = Vec::new();
    loop {
        entry.reading(Some(Instant::now()));
        let request = http::read_request(&mut stream, &mut buf);
        entry.reading(None);
        let (outcome, keep_alive) = match request {
            Ok(req) => (
                route(&req.method, &req.path, &req.body).and_then(|a| call(shared, a)),
                req.keep_alive,
            ),
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
        let written = match outcome {
            Ok(Reply::Empty) => http::write_response(&mut stream, 204, "", keep_alive),
            Ok(Reply::Json(body)) => http::write_response(&mut stream, 200, &body, keep_alive),
            Err(e) => {
                shared.metrics.errors.fetch_add(1, Ordering::Relaxed);
                log::debug!("API: answering {}: {e}", e.status());
                http::write_response(&mut stream, e.status(), &e.body(), keep_alive)
            }
        };
        if written.is_err() || !keep_alive {
            return;
        }
    }
}

/// Hands `action` to the VMM thread and waits for its answer.
fn call(shared: &Shared, action: Action) -> Outcome {
    let (reply, answer) = mpsc::sync_channel(1);
    shared
        .tx
        .send(ApiRequest { action, reply })
        .map_err(|_| ApiError::Unavailable)?;
    shared.evt.write(1).map_err(|_| ApiError::Unavailable)?;
    answer
        .recv_timeout(REPLY_TIMEOUT)
        .map_err(|_| ApiError::Unavailable)?
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
            if let Some(r) = channel.take().pop() {
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
