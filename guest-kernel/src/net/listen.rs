//! TCP listeners: the accept queues of listening sockets, kept in the [`super::Stack`] so the stack can
//! refill them between two received frames.
//!
//! smoltcp takes a connection only on a socket already in Listen state, one connection per socket, and
//! answers a SYN nobody listens for with RST. A listener therefore keeps one *spare* socket listening;
//! after every received frame ([`Listeners::refill`]) a spare that took a SYN joins the listener's queue
//! and a fresh spare is made, as long as the queue has room. The queue holds the connections `accept`
//! has not taken yet, handshaking or established, in arrival order; it has room for backlog + 1 of them,
//! as on Linux (`sk_acceptq_is_full` is `>`; `listen` clamps the backlog to 0..=SOMAXCONN). So the
//! memory of a listener grows with the connections that really arrive, not with the backlog it asked
//! for: `listen(fd, 4096)` costs one socket. A full queue, or a heap without room for another
//! connection's buffers, leaves the listener without a spare: then the stack drops further SYNs to
//! its port before smoltcp sees them (smoltcp would answer RST), as Linux does, and the client retries
//! until `accept` has made room.
#![deny(unsafe_code)]

use super::TcpPool;
use alloc::vec::Vec;
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, State};
use smoltcp::wire::{IpEndpoint, IpListenEndpoint};

/// Linux's default `net.core.somaxconn`: the largest backlog `listen` takes.
pub const SOMAXCONN: usize = 4096;

/// A listener's id in the [`Listeners`] table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ListenId(u32);

struct Listener {
    id: ListenId,
    ep: IpListenEndpoint,
    /// Connections not yet accepted (past Listen), oldest first.
    queue: Vec<SocketHandle>,
    /// The socket in Listen state that takes the next SYN; None while the queue is full.
    spare: Option<SocketHandle>,
    /// How many connections the queue may hold: backlog + 1.
    limit: usize,
}

/// Every listening socket's queue.
#[derive(Default)]
pub struct Listeners {
    table: Vec<Listener>,
    next_id: u32,
}

/// Whether a queued connection can be accepted: the handshake finished (later states included: the
/// peer may have sent data and FIN already).
fn established(s: &tcp::Socket) -> bool {
    !matches!(
        s.state(),
        State::Listen | State::SynReceived | State::Closed
    )
}

impl Listeners {
    /// Starts listening on `ep` with Linux's `backlog` (already clamped to 0..=SOMAXCONN).
    pub fn open(
        &mut self,
        sockets: &mut SocketSet<'static>,
        pool: &mut TcpPool,
        ep: IpListenEndpoint,
        backlog: usize,
    ) -> ListenId {
        let id = ListenId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        let mut l = Listener {
            id,
            ep,
            queue: Vec::new(),
            spare: None,
            limit: backlog + 1,
        };
        l.refill(sockets, pool);
        self.table.push(l);
        id
    }

    fn get(&mut self, id: ListenId) -> Option<&mut Listener> {
        self.table.iter_mut().find(|l| l.id == id)
    }

    /// Whether there are listeners at all (the stack skips [`Self::refill`] otherwise).
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Moves spares that took a SYN into their queues and makes fresh spares where there is room.
    pub fn refill(&mut self, sockets: &mut SocketSet<'static>, pool: &mut TcpPool) {
        for l in &mut self.table {
            l.refill(sockets, pool);
        }
    }

    /// Takes the oldest established connection of listener `id`, with its peer.
    pub fn accept(
        &mut self,
        sockets: &mut SocketSet<'static>,
        pool: &mut TcpPool,
        id: ListenId,
    ) -> Option<(SocketHandle, Option<IpEndpoint>)> {
        let l = self.get(id)?;
        let i = l
            .queue
            .iter()
            .position(|&h| established(sockets.get::<tcp::Socket>(h)))?;
        let h = l.queue.remove(i);
        l.refill(sockets, pool);
        Some((h, sockets.get::<tcp::Socket>(h).remote_endpoint()))
    }

    /// Whether listener `id` has a connection to accept.
    pub fn ready(&self, sockets: &SocketSet<'static>, id: ListenId) -> bool {
        self.table.iter().find(|l| l.id == id).is_some_and(|l| {
            l.queue
                .iter()
                .any(|&h| established(sockets.get::<tcp::Socket>(h)))
        })
    }

    /// What a sleeper on listener `id` waits to see change: (queued, established) connections.
    pub fn signature(&self, sockets: &SocketSet<'static>, id: ListenId) -> (usize, usize) {
        self.table.iter().find(|l| l.id == id).map_or((0, 0), |l| {
            let est = l
                .queue
                .iter()
                .filter(|&&h| established(sockets.get::<tcp::Socket>(h)))
                .count();
            (l.queue.len(), est)
        })
    }

    /// Adds the ports of the listeners whose queue is full (no spare socket listening) to `out`.
    pub fn full_ports(&self, out: &mut Vec<u16>) {
        out.extend(
            self.table
                .iter()
                .filter(|l| l.spare.is_none())
                .map(|l| l.ep.port),
        );
    }

    /// Ends listener `id`: its spare and every connection not accepted, for the caller to reset.
    pub fn close(&mut self, id: ListenId) -> Vec<SocketHandle> {
        let Some(i) = self.table.iter().position(|l| l.id == id) else {
            return Vec::new();
        };
        let l = self.table.swap_remove(i);
        let mut all = l.queue;
        all.extend(l.spare);
        all
    }
}

impl Listener {
    fn refill(&mut self, sockets: &mut SocketSet<'static>, pool: &mut TcpPool) {
        if let Some(h) = self.spare {
            if sockets.get::<tcp::Socket>(h).state() != State::Listen {
                self.queue.push(h);
                self.spare = None;
            }
        }
        // A handshake reset by the peer puts smoltcp's socket back in Listen state; one that failed
        // otherwise, or a connection reset before accept, ends Closed. Neither is a connection to
        // accept: a listening one can serve as the spare, a closed one goes.
        let mut i = 0;
        while i < self.queue.len() {
            let h = self.queue[i];
            match sockets.get::<tcp::Socket>(h).state() {
                State::Listen if self.spare.is_none() => {
                    self.spare = Some(h);
                    self.queue.remove(i);
                }
                State::Listen | State::Closed => {
                    pool.put(sockets, h);
                    self.queue.remove(i);
                }
                _ => i += 1,
            }
        }
        if self.spare.is_none() && self.queue.len() < self.limit && pool.room() {
            let h = pool.take(sockets);
            let _ = sockets.get_mut::<tcp::Socket>(h).listen(self.ep);
            self.spare = Some(h);
        }
    }
}
