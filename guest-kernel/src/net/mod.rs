//! Networking: the `smoltcp` stack on the virtio-net device ([`crate::drivers::virtio_net`]), driven by
//! events, never by a busy loop.
//!
//! The stack runs ([`poll`]) when the device interrupts (frames arrived), when the timer tick finds the
//! deadline smoltcp asked for ([`tick`]: retransmissions, delayed ACKs, ARP retries) has passed, and after
//! every socket call that queued data or made room. Each run processes every received frame, sends what
//! the sockets have, gives the receive buffers back, and wakes every process blocked on [`Chan::Net`]
//! when a socket changed (they recheck their own socket). Sockets for user programs are in [`socket`].
//!
//! The address comes from `ip=CLIENT::GATEWAY:NETMASK::eth0:off` on the command line, else
//! 10.0.0.2/24 with gateway 10.0.0.1 (`kcore::cmdline::DEFAULT_IP`). ICMP echo requests are answered by
//! smoltcp itself. The MTU is 65535 (frames up to 65549 bytes): the host side chooses the real one with
//! the TAP's MTU, and a large one saves the emulated kernel most of its per-packet work.

pub mod socket;

use crate::drivers::virtio_net::{NetDevice, MAX_FRAME};
use crate::proc::{sched, Chan};
use crate::sync::KCell;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use kcore::cmdline::IpConfig;
use kcore::fmt::Dec;
use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::{Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
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
    pub addr: Ipv4Address,
}

static STACK: KCell<Option<Stack>> = KCell::new(None);
/// Stack runs and the TSC ticks they took; TSC ticks socket calls spent copying to and from user memory.
static RUNS: AtomicU64 = AtomicU64::new(0);
static RUN_TSC: AtomicU64 = AtomicU64::new(0);
pub static COPY_TSC: AtomicU64 = AtomicU64::new(0);

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
}
/// When smoltcp next wants to run (ns since boot), u64::MAX if never.
static DEADLINE: AtomicU64 = AtomicU64::new(u64::MAX);

/// smoltcp's view of the device for one run.
struct Phy<'a> {
    dev: &'a mut NetDevice,
    pending_rx: &'a mut Option<usize>,
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
        let (slot, frame) = self.dev.take_rx()?;
        *self.pending_rx = Some(slot);
        Some((RxTok(frame), TxTok(self.dev)))
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

/// Runs the stack: receive, transmit, timers. Wakes socket waiters when something changed.
pub fn poll() {
    let Ok(mut st) = STACK.try_borrow_mut() else {
        return;
    };
    let Some(st) = st.as_mut() else { return };
    let t0 = crate::arch::cpu::rdtsc();
    let changed = st.run();
    add(&RUNS, 1);
    add(&RUN_TSC, crate::arch::cpu::rdtsc().wrapping_sub(t0));
    if changed {
        sched::wake(Chan::Net);
    }
}

impl Stack {
    /// One run of the stack (smoltcp's poll takes every received frame and sends all it can); whether a
    /// socket may have changed.
    fn run(&mut self) -> bool {
        let mut phy = Phy {
            dev: &mut self.dev,
            pending_rx: &mut self.pending_rx,
        };
        let changed = self.iface.poll(now(), &mut phy, &mut self.sockets) != PollResult::None;
        if let Some(slot) = self.pending_rx.take() {
            self.dev.repost(slot);
        }
        self.reap_closed();
        let deadline = match self.iface.poll_at(now(), &self.sockets) {
            Some(t) => (t.total_micros().max(0) as u64).saturating_mul(1000),
            None => u64::MAX,
        };
        DEADLINE.store(deadline, Ordering::Relaxed);
        changed
    }

    /// Frees closing TCP sockets that have finished.
    fn reap_closed(&mut self) {
        let sockets = &mut self.sockets;
        self.closing.retain(|&h| {
            let done = sockets.get::<smoltcp::socket::tcp::Socket>(h).state()
                == smoltcp::socket::tcp::State::Closed;
            if done {
                sockets.remove(h);
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

/// The timer tick: runs the stack if smoltcp's deadline has passed.
pub fn tick() {
    let d = DEADLINE.load(Ordering::Relaxed);
    if d != u64::MAX && crate::time::now_ns() >= d {
        poll();
    }
}
