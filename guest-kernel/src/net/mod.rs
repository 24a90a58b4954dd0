//! Networking: the `smoltcp` stack on the virtio-net device ([`crate::drivers::virtio_net`]), driven by
//! events, never by a busy loop.
//!
//! The stack runs ([`poll`]) when the device interrupts (frames arrived), when the timer tick finds the
//! deadline smoltcp asked for ([`tick`]: retransmissions, delayed ACKs, ARP retries) has passed, and after
//! every socket call that queued data or made room. Each run processes every received frame (refilling
//! the listeners' accept queues, [`listen`], after each), sends what the sockets have and gives the
//! receive buffers back. Each socket has its own wait queue (`sync::WaitQueue`): a sleeper registers what
//! it waits on ([`Stack::watch`]) and a run wakes it only if that socket's state changed (connection
//! state, bytes queued either way; a listener's queue), never for other sockets' traffic. Sockets for
//! user programs are in [`socket`].
//!
//! The address comes from `ip=CLIENT::GATEWAY:NETMASK::eth0:off` on the command line, else
//! 10.0.0.2/24 with gateway 10.0.0.1 (`kcore::cmdline::DEFAULT_IP`). ICMP echo requests are answered by
//! smoltcp itself. The MTU is 65535 (frames up to 65549 bytes): the host side chooses the real one with
//! the TAP's MTU, and a large one saves the emulated kernel most of its per-packet work.

pub mod file;
pub mod listen;
pub mod socket;
pub mod vsock;
pub mod vsock_sock;

use crate::drivers::virtio_net::{NetDevice, MAX_FRAME};
use crate::sync::KCell;
use crate::sync::WaitQueue;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use kcore::cmdline::IpConfig;
use kcore::fmt::Dec;
use listen::{ListenId, Listeners};
use smoltcp::iface::{
    Config, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet,
};
use smoltcp::phy::{Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address};

/// The stack: the device, the interface and every smoltcp socket.
pub struct Stack {
    dev: NetDevice,
    /// A receive slot whose frame the stack has finished with, not yet given back to the device.
    pending_rx: Option<usize>,
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    /// Closed TCP sockets still finishing their close (FIN, TIME-WAIT): removed once Closed.
    closing: Vec<SocketHandle>,
    /// The accept queues of listening sockets.
    pub listeners: Listeners,
    /// Closed TCP sockets for reuse.
    pub pool: TcpPool,
    /// The ports of listeners with a full queue (see [`Listeners::full_ports`]).
    full_ports: Vec<u16>,
    /// Sockets somebody sleeps on: (their wait queue, what to watch). A run that changes one wakes
    /// the queue and drops the entry.
    watches: Vec<(WaitQueue, Watch)>,
    pub addr: Ipv4Address,
}

/// What a sleeper on a socket waits to see change.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Watch {
    Tcp(SocketHandle),
    Udp(SocketHandle),
    Listen(ListenId),
}

/// The state of a watched socket a sleeper can tell apart: connection state and queued bytes (TCP),
/// queued bytes (UDP), queued and established connections (listeners).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Signature(u8, usize, usize);

/// Per-connection TCP buffers: the receive one is the advertised window (scaled).
pub const TCP_RX_BUF: usize = 256 * 1024;
pub const TCP_TX_BUF: usize = 256 * 1024;
/// Heap a new TCP socket must leave free for the rest of the kernel.
const TCP_HEAP_RESERVE: usize = 2 << 20;

static STACK: KCell<Option<Stack>> = KCell::new(None);
/// Stack runs and the TSC ticks they took; TSC ticks socket calls spent copying to and from user memory.
static RUNS: AtomicU64 = AtomicU64::new(0);
static RUN_TSC: AtomicU64 = AtomicU64::new(0);
pub static COPY_TSC: AtomicU64 = AtomicU64::new(0);
/// TCP sockets made for a connection or listener and the TSC ticks that took (their buffers above
/// all); the same for those reused from the [`TcpPool`].
static TCP_MADE: AtomicU64 = AtomicU64::new(0);
static TCP_MADE_TSC: AtomicU64 = AtomicU64::new(0);
static TCP_REUSED: AtomicU64 = AtomicU64::new(0);
static TCP_REUSED_TSC: AtomicU64 = AtomicU64::new(0);
/// Connection requests dropped because their listener's queue was full (Linux: ListenOverflows).
static SYN_DROPPED: AtomicU64 = AtomicU64::new(0);
/// Sleeps on a socket that ended (neither a signal nor the timeout), and those of them that found
/// their socket unchanged (woken for nothing).
pub static SOCKET_WAKES: AtomicU64 = AtomicU64::new(0);
pub static SOCKET_IDLE_WAKES: AtomicU64 = AtomicU64::new(0);

/// Adds `v` to a counter (one CPU: a plain load and store).
pub fn add(c: &AtomicU64, v: u64) {
    c.store(c.load(Ordering::Relaxed) + v, Ordering::Relaxed);
}

/// Prints the device counters and where the stack's kernel time went (at power-off).
pub fn report() {
    let Some((rx, tx, dropped)) = with_stack(|st| st.counters()) else {
        return;
    };
    let runs = RUNS.load(Ordering::Relaxed);
    crate::kprintln!(
        "net: eth0 rx {} frames, tx {} frames ({} dropped for want of a buffer); {} stack runs, {} us each; {} ms copying socket data (kernel time, emulated)",
        Dec(rx),
        Dec(tx),
        Dec(dropped),
        Dec(runs),
        Dec(crate::time::tsc_to_ns(RUN_TSC.load(Ordering::Relaxed)) / runs.max(1) / 1000),
        Dec(crate::time::tsc_to_ns(COPY_TSC.load(Ordering::Relaxed)) / 1_000_000)
    );
    let us_each = |n: &AtomicU64, tsc: &AtomicU64| {
        crate::time::tsc_to_ns(tsc.load(Ordering::Relaxed))
            / n.load(Ordering::Relaxed).max(1)
            / 1000
    };
    crate::kprintln!(
        "net: tcp sockets: {} made, {} us each, {} reused, {} us each; {} SYNs dropped for a full backlog; {} socket wake-ups, {} of them for nothing",
        Dec(TCP_MADE.load(Ordering::Relaxed)),
        Dec(us_each(&TCP_MADE, &TCP_MADE_TSC)),
        Dec(TCP_REUSED.load(Ordering::Relaxed)),
        Dec(us_each(&TCP_REUSED, &TCP_REUSED_TSC)),
        Dec(SYN_DROPPED.load(Ordering::Relaxed)),
        Dec(SOCKET_WAKES.load(Ordering::Relaxed)),
        Dec(SOCKET_IDLE_WAKES.load(Ordering::Relaxed))
    );
}

/// Closed TCP sockets kept for reuse, buffers and all: a new connection or listener takes one of these
/// before it makes a socket, so it neither allocates nor zeroes 512 KiB (fresh heap memory comes zero
/// without clearing, see `mm::heap`, but a freed buffer would have to be cleared: ~35 ms emulated).
/// smoltcp resets a reused socket's state and its buffers' indices on `listen`/`connect`, and never
/// shows bytes it has not received, so the old contents stay unseen.
#[derive(Default)]
pub struct TcpPool {
    free: Vec<SocketHandle>,
}

/// Most closed TCP sockets kept (16 MiB of buffers), as long as a quarter of the heap stays free.
const TCP_POOL: usize = 32;

impl TcpPool {
    /// A closed TCP socket to listen or connect with: a kept one, else a new one (Nagle off).
    pub fn take(&mut self, sockets: &mut SocketSet<'static>) -> SocketHandle {
        let t0 = crate::arch::cpu::rdtsc();
        if let Some(h) = self.free.pop() {
            add(&TCP_REUSED, 1);
            add(&TCP_REUSED_TSC, crate::arch::cpu::rdtsc().wrapping_sub(t0));
            return h;
        }
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; TCP_RX_BUF]),
            tcp::SocketBuffer::new(vec![0u8; TCP_TX_BUF]),
        );
        // Small writes go out at once (request/response programs), as with TCP_NODELAY.
        s.set_nagle_enabled(false);
        let h = sockets.add(s);
        add(&TCP_MADE, 1);
        add(&TCP_MADE_TSC, crate::arch::cpu::rdtsc().wrapping_sub(t0));
        h
    }

    /// Takes back a TCP socket nobody uses any more (aborted first if still open).
    pub fn put(&mut self, sockets: &mut SocketSet<'static>, h: SocketHandle) {
        let s = sockets.get_mut::<tcp::Socket>(h);
        if s.is_open() {
            s.abort();
        }
        let (size, used) = crate::mm::heap::stats();
        if self.free.len() < TCP_POOL && size.saturating_sub(used) >= size / 4 {
            self.free.push(h);
        } else {
            sockets.remove(h);
        }
    }

    /// Whether another TCP socket can be had: a kept one, or heap room for new buffers (and a reserve
    /// for the rest of the kernel besides).
    pub fn room(&self) -> bool {
        let (size, used) = crate::mm::heap::stats();
        !self.free.is_empty()
            || size.saturating_sub(used) >= TCP_RX_BUF + TCP_TX_BUF + TCP_HEAP_RESERVE
    }
}

/// When smoltcp next wants to run (ns since boot), u64::MAX if never.
static DEADLINE: AtomicU64 = AtomicU64::new(u64::MAX);

/// smoltcp's view of the device for one run.
struct Phy<'a> {
    dev: &'a mut NetDevice,
    pending_rx: &'a mut Option<usize>,
    /// Ports of listeners whose backlog is full: connection requests to them are dropped unseen.
    full_ports: &'a [u16],
}

struct RxTok(&'static [u8]);
struct TxTok<'a>(&'a mut NetDevice);

impl smoltcp::phy::RxToken for RxTok {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl smoltcp::phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.0.transmit(len, f)
    }
}

impl Device for Phy<'_> {
    type RxToken<'a>
        = RxTok
    where
        Self: 'a;
    type TxToken<'a>
        = TxTok<'a>
    where
        Self: 'a;

    fn receive(&mut self, _now: Instant) -> Option<(RxTok, TxTok<'_>)> {
        // smoltcp has consumed the previous frame by now: its buffer can go back.
        if let Some(slot) = self.pending_rx.take() {
            self.dev.repost(slot);
        }
        loop {
            let (slot, frame) = self.dev.take_rx()?;
            // As Linux: a SYN to a listener with a full accept queue is dropped (not answered with
            // RST, as smoltcp would with no socket listening), so the client retries later.
            if !self.full_ports.is_empty()
                && kcore::net::syn_dst_port(frame).is_some_and(|p| self.full_ports.contains(&p))
            {
                add(&SYN_DROPPED, 1);
                self.dev.repost(slot);
                continue;
            }
            *self.pending_rx = Some(slot);
            return Some((RxTok(frame), TxTok(self.dev)));
        }
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxTok<'_>> {
        self.dev.can_transmit().then_some(TxTok(self.dev))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        caps.max_burst_size = None;
        let mut cs = ChecksumCapabilities::default();
        // Received TCP/UDP checksums are not verified (see the driver); transmitted ones are the
        // host's job with checksum offload.
        let l4 = if self.dev.csum_offload() {
            Checksum::None
        } else {
            Checksum::Tx
        };
        cs.tcp = l4;
        cs.udp = l4;
        caps.checksum = cs;
        caps
    }
}

fn now() -> Instant {
    Instant::from_micros((crate::time::now_ns() / 1000) as i64)
}

/// Brings up the interface on `dev` with `ip`.
pub fn init(mut dev: NetDevice, ip: IpConfig) {
    let mac = dev.mac();
    let mut pending_rx = None;
    let mut phy = Phy {
        dev: &mut dev,
        pending_rx: &mut pending_rx,
        full_ports: &[],
    };
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    config.random_seed = crate::arch::cpu::rdtsc();
    let mut iface = Interface::new(config, &mut phy, now());
    let [a, b, c, d] = ip.addr;
    let addr = Ipv4Address::new(a, b, c, d);
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(addr.into(), ip.prefix_len));
    });
    if let Some([a, b, c, d]) = ip.gateway {
        let _ = iface
            .routes_mut()
            .add_default_ipv4_route(Ipv4Address::new(a, b, c, d));
    }
    *STACK.borrow_mut() = Some(Stack {
        dev,
        pending_rx,
        iface,
        sockets: SocketSet::new(vec![]),
        closing: Vec::new(),
        listeners: Listeners::default(),
        pool: TcpPool::default(),
        full_ports: Vec::new(),
        watches: Vec::new(),
        addr,
    });
    poll();
}

/// Whether a network interface exists.
pub fn present() -> bool {
    STACK.borrow().is_some()
}

/// Runs `f` on the stack (None without a network device).
pub fn with_stack<R>(f: impl FnOnce(&mut Stack) -> R) -> Option<R> {
    STACK.borrow_mut().as_mut().map(f)
}

/// Runs the stack: receive, transmit, timers. Wakes the sleepers of each socket the run changed.
pub fn poll() {
    let woken = {
        let Ok(mut st) = STACK.try_borrow_mut() else {
            return;
        };
        let Some(st) = st.as_mut() else { return };
        let t0 = crate::arch::cpu::rdtsc();
        let woken = st.run();
        add(&RUNS, 1);
        add(&RUN_TSC, crate::arch::cpu::rdtsc().wrapping_sub(t0));
        woken
    };
    for wq in woken {
        wq.wake_all();
    }
}

impl Stack {
    /// One run of the stack: every received frame (the listeners refilled after each, so a burst of
    /// SYNs finds a listening socket for each one the backlog allows), then everything the sockets
    /// have to send. Returns the wait queues of the watched sockets it changed.
    fn run(&mut self) -> Vec<WaitQueue> {
        let before: Vec<Signature> = self
            .watches
            .iter()
            .map(|&(_, w)| self.signature(w))
            .collect();
        let t = now();
        self.iface.poll_maintenance(t);
        self.update_full_ports();
        loop {
            let mut phy = Phy {
                dev: &mut self.dev,
                pending_rx: &mut self.pending_rx,
                full_ports: &self.full_ports,
            };
            match self
                .iface
                .poll_ingress_single(t, &mut phy, &mut self.sockets)
            {
                PollIngressSingleResult::None => break,
                PollIngressSingleResult::PacketProcessed => {}
                PollIngressSingleResult::SocketStateChanged => {
                    if !self.listeners.is_empty() {
                        self.listeners.refill(&mut self.sockets, &mut self.pool);
                        self.update_full_ports();
                    }
                }
            }
        }
        let mut phy = Phy {
            dev: &mut self.dev,
            pending_rx: &mut self.pending_rx,
            full_ports: &[],
        };
        while self.iface.poll_egress(t, &mut phy, &mut self.sockets) != PollResult::None {}
        if let Some(slot) = self.pending_rx.take() {
            self.dev.repost(slot);
        }
        self.reap_closed();
        let mut woken = Vec::new();
        if !before.is_empty() {
            for ((id, w), sig) in core::mem::take(&mut self.watches).into_iter().zip(before) {
                if self.signature(w) == sig {
                    self.watches.push((id, w));
                } else {
                    woken.push(id);
                }
            }
        }
        let deadline = match self.iface.poll_at(now(), &self.sockets) {
            Some(t) => (t.total_micros().max(0) as u64).saturating_mul(1000),
            None => u64::MAX,
        };
        DEADLINE.store(deadline, Ordering::Relaxed);
        woken
    }

    fn update_full_ports(&mut self) {
        self.full_ports.clear();
        self.listeners.full_ports(&mut self.full_ports);
    }

    /// The state of `w` its sleepers can tell apart.
    pub fn signature(&self, w: Watch) -> Signature {
        match w {
            Watch::Tcp(h) => {
                let s = self.sockets.get::<tcp::Socket>(h);
                Signature(s.state() as u8, s.recv_queue(), s.send_queue())
            }
            Watch::Udp(h) => {
                let s = self.sockets.get::<udp::Socket>(h);
                Signature(0, s.recv_queue(), s.send_queue())
            }
            Watch::Listen(id) => {
                let (queued, est) = self.listeners.signature(&self.sockets, id);
                Signature(0, queued, est)
            }
        }
    }

    /// Wakes `id` when a run changes `w` (once; the sleeper watches again if it sleeps again).
    pub fn watch(&mut self, id: WaitQueue, w: Watch) {
        match self.watches.iter_mut().find(|(i, _)| *i == id) {
            Some(e) => e.1 = w,
            None => self.watches.push((id, w)),
        }
    }

    /// Forgets the watch of queue `id` (its socket is gone).
    pub fn unwatch(&mut self, id: WaitQueue) {
        self.watches.retain(|(i, _)| *i != id);
    }

    /// Gives closing TCP sockets that have finished back to the pool.
    fn reap_closed(&mut self) {
        let (sockets, pool) = (&mut self.sockets, &mut self.pool);
        self.closing.retain(|&h| {
            let done = sockets.get::<tcp::Socket>(h).state() == tcp::State::Closed;
            if done {
                pool.put(sockets, h);
            }
            !done
        });
    }

    /// Hands a closed TCP socket over to be removed once its close has finished.
    pub fn linger(&mut self, h: SocketHandle) {
        self.closing.push(h);
    }

    /// Device counters: (frames received, frames sent, frames dropped for want of a buffer).
    pub fn counters(&self) -> (u64, u64, u64) {
        (self.dev.rx_frames, self.dev.tx_frames, self.dev.tx_no_room)
    }
}

/// The device interrupt: frames arrived.
pub fn irq() {
    if let Ok(mut st) = STACK.try_borrow_mut() {
        if let Some(st) = st.as_mut() {
            st.dev.ack_interrupt();
        }
    }
    poll();
}

/// The timer tick: runs the stack if smoltcp's deadline has passed, and times out vsock connects.
pub fn tick() {
    vsock::tick();
    let d = DEADLINE.load(Ordering::Relaxed);
    if d != u64::MAX && crate::time::now_ns() >= d {
        poll();
    }
}
