//! The device end to end against a test driver: rings in guest memory, Unix sockets on the host.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{EventManager, SubscriberOps};
use vm_memory::{Bytes, GuestAddress};

use super::conn::BUF_ALLOC;
use super::packet::{op, Header, EVENT_TRANSPORT_RESET, HDR_LEN, HOST_CID, TYPE_STREAM};
use super::*;
use crate::virtio::mmio::MmioTransport;
use crate::virtio::test_utils::{guest_memory, init_device, write_reg, QueueLayout};

type Manager = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

const GUEST_CID: u64 = 3;
const QSIZE: u16 = 64;

/// One split virtqueue driven by the test: one descriptor per chain, a buffer per descriptor slot.
struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    bufs: u64,
    avail_idx: u16,
    used_seen: u16,
}

impl Ring {
    fn new(base: u64, bufs: u64) -> Self {
        Self {
            desc: base,
            avail: base + 16 * u64::from(QSIZE),
            used: base + 0x2000,
            bufs,
            avail_idx: 0,
            used_seen: 0,
        }
    }
    fn layout(&self) -> QueueLayout {
        QueueLayout {
            size: QSIZE,
            desc: GuestAddress(self.desc),
            avail: GuestAddress(self.avail),
            used: GuestAddress(self.used),
        }
    }
    fn buf_addr(&self, slot: u16) -> u64 {
        self.bufs + u64::from(slot) * 0x11000
    }
    /// Posts one descriptor (device-writable or not) holding `data` (or `len` bytes of room).
    fn post(&mut self, mem: &GuestMemoryMmap, data: &[u8], len: u32, write: bool) {
        let slot = self.avail_idx % QSIZE;
        let addr = self.buf_addr(slot);
        mem.write_slice(data, GuestAddress(addr)).unwrap();
        let d = self.desc + 16 * u64::from(slot);
        mem.write_obj(addr, GuestAddress(d)).unwrap();
        mem.write_obj(len, GuestAddress(d + 8)).unwrap();
        let flags: u16 = if write { 2 } else { 0 };
        mem.write_obj(flags, GuestAddress(d + 12)).unwrap();
        mem.write_obj(slot, GuestAddress(self.avail + 4 + 2 * u64::from(slot)))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2))
            .unwrap();
    }
    /// Used entries since the last call: (buffer contents up to the used length).
    fn take_used(&mut self, mem: &GuestMemoryMmap) -> Vec<Vec<u8>> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used + 2)).unwrap();
        let mut out = Vec::new();
        while self.used_seen != idx {
            let e = self.used + 4 + 8 * u64::from(self.used_seen % QSIZE);
            let id: u32 = mem.read_obj(GuestAddress(e)).unwrap();
            let len: u32 = mem.read_obj(GuestAddress(e + 4)).unwrap();
            let mut b = vec![0u8; len as usize];
            mem.read_slice(&mut b, GuestAddress(self.buf_addr(id as u16)))
                .unwrap();
            out.push(b);
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }
}

struct Rig {
    mem: GuestMemoryMmap,
    dev: Arc<Mutex<Vsock>>,
    t: MmioTransport,
    manager: Manager,
    rx: Ring,
    tx: Ring,
    evt: Ring,
    uds: PathBuf,
    _dir: TempDir,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(name: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("mvm-vsock-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

fn pkt(op: u16, src_port: u32, dst_port: u32, len: u32, buf_alloc: u32, fwd_cnt: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc,
        fwd_cnt,
    }
}

impl Rig {
    fn new(name: &str) -> Self {
        let dir = temp_dir(name);
        let uds = dir.0.join("v.sock");
        let mem = guest_memory(8 << 20);
        let dev = Arc::new(Mutex::new(
            Vsock::new(&VsockConfig {
                guest_cid: GUEST_CID,
                uds_path: uds.clone(),
            })
            .unwrap(),
        ));
        let mut t = MmioTransport::new(mem.clone(), dev.clone()).unwrap();
        let (rx, tx, evt) = (
            Ring::new(0x1_0000, 0x10_0000),
            Ring::new(0x2_0000, 0x20_0000),
            Ring::new(0x3_0000, 0x30_0000),
        );
        let s = init_device(&mut t, 0, &[rx.layout(), tx.layout(), evt.layout()]);
        assert_ne!(s & crate::virtio::status::DRIVER_OK, 0);
        let mut manager = Manager::new().unwrap();
        manager.add_subscriber(dev.clone());
        let mut r = Self {
            mem,
            dev,
            t,
            manager,
            rx,
            tx,
            evt,
            uds,
            _dir: dir,
        };
        r.settle();
        r
    }
    fn settle(&mut self) {
        for _ in 0..200 {
            if self.manager.run_with_timeout(0).unwrap() == 0 {
                return;
            }
        }
        panic!("the event loop never went idle");
    }
    fn post_rx(&mut self, n: usize, len: u32) {
        for _ in 0..n {
            self.rx.post(&self.mem, &[], len, true);
        }
        write_reg(&mut self.t, 0x50, 0);
        self.settle();
    }
    fn send(&mut self, h: Header, data: &[u8]) {
        let mut b = h.to_bytes().to_vec();
        b.extend_from_slice(data);
        let len = b.len() as u32;
        self.tx.post(&self.mem, &b, len, false);
        write_reg(&mut self.t, 0x50, 1);
        self.settle();
    }
    /// Packets the device gave the guest since the last call.
    fn received(&mut self) -> Vec<(Header, Vec<u8>)> {
        self.rx
            .take_used(&self.mem)
            .into_iter()
            .map(|b| {
                let h = Header::parse(&b).expect("a header");
                assert_eq!(b.len(), HDR_LEN + h.len as usize, "used length");
                (h, b[HDR_LEN..].to_vec())
            })
            .collect()
    }
    /// A host client connected through `CONNECT port` and accepted by the guest.
    fn host_connect(&mut self, port: u32) -> (UnixStream, u32) {
        let mut c = UnixStream::connect(&self.uds).unwrap();
        c.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
        self.settle();
        let got = self.received();
        assert_eq!(got.len(), 1, "one REQUEST");
        let req = got[0].0;
        assert_eq!(
            (req.op, req.dst_port, req.dst_cid),
            (op::REQUEST, port, GUEST_CID)
        );
        self.send(pkt(op::RESPONSE, port, req.src_port, 0, 64 * 1024, 0), &[]);
        let mut line = [0u8; 32];
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = c.read(&mut line).unwrap();
        assert_eq!(&line[..n], format!("OK {}\n", req.src_port).as_bytes());
        (c, req.src_port)
    }
}

#[test]
fn host_initiated_connection_carries_data_both_ways() {
    let mut r = Rig::new("host");
    r.post_rx(32, 4096);
    let (mut c, hport) = r.host_connect(1024);
    assert_eq!(hport, muxer::FIRST_LOCAL_PORT);
    // Bytes written right after the line are not lost to the line reader.
    c.write_all(b"ping").unwrap();
    r.settle();
    let got = r.received();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0.op, &got[0].1[..]), (op::RW, &b"ping"[..]));
    assert_eq!(got[0].0.buf_alloc, BUF_ALLOC);
    r.send(pkt(op::RW, 1024, hport, 4, 64 * 1024, 4), b"pong");
    let mut b = [0u8; 4];
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"pong");
    // The guest closes: SHUTDOWN both ways, the host sees EOF, the device answers RST.
    let mut sh = pkt(op::SHUTDOWN, 1024, hport, 0, 64 * 1024, 4);
    sh.flags = 3;
    r.send(sh, &[]);
    assert_eq!(c.read(&mut b).unwrap(), 0);
    let got = r.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0.op, op::RST);
    assert_eq!(r.dev.lock().unwrap().connections(), 0);
    assert_eq!(
        r.dev
            .lock()
            .unwrap()
            .metrics()
            .host_connects
            .load(Ordering::Relaxed),
        1
    );
    let m = r.dev.lock().unwrap().metrics();
    assert_eq!(m.rx_bytes_count.load(Ordering::Relaxed), 4);
    assert_eq!(m.tx_bytes_count.load(Ordering::Relaxed), 4);
    assert_eq!(m.conns_added.load(Ordering::Relaxed), 1);
    assert_eq!(m.conns_removed.load(Ordering::Relaxed), 1);
}

#[test]
fn guest_initiated_connection_reaches_the_port_socket() {
    let mut r = Rig::new("guest");
    r.post_rx(32, 4096);
    let port_path = format!("{}_5000", r.uds.display());
    let listener = UnixListener::bind(&port_path).unwrap();
    r.send(pkt(op::REQUEST, 777, 5000, 0, 64 * 1024, 0), &[]);
    let (mut s, _) = listener.accept().unwrap();
    let got = r.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].0.op, got[0].0.src_port, got[0].0.dst_port),
        (op::RESPONSE, 5000, 777)
    );
    r.send(pkt(op::RW, 777, 5000, 5, 64 * 1024, 0), b"hello");
    let mut b = [0u8; 5];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"hello");
    s.write_all(b"world").unwrap();
    drop(s);
    r.settle();
    let got = r.received();
    assert_eq!(got[0].0.op, op::RW);
    assert_eq!(&got[0].1, b"world");
    assert_eq!((got[1].0.op, got[1].0.flags), (op::SHUTDOWN, 2), "EOF");
    // Nothing listens on port 5001: RST.
    r.send(pkt(op::REQUEST, 778, 5001, 0, 64 * 1024, 0), &[]);
    let got = r.received();
    assert_eq!((got[0].0.op, got[0].0.dst_port), (op::RST, 778));
}

#[test]
fn bad_connect_lines_and_unknown_packets_are_refused() {
    let mut r = Rig::new("bad");
    r.post_rx(32, 4096);
    for line in [
        &b"CONNECT 4294967296\n"[..],
        b"CONNECT -1\n",
        b"CONNECT\n",
        b"HELLO 5\n",
        b"CONNECT 12 \n",
        b"CONNECT 99999999999999999999999999999999",
        b"\xff\xfe\n",
    ] {
        let mut c = UnixStream::connect(&r.uds).unwrap();
        c.write_all(line).unwrap();
        r.settle();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 8];
        // Closed: EOF, or a reset when the muxer left bytes of the line unread.
        match c.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("{line:?}: {other:?}"),
        }
    }
    assert!(r.received().is_empty(), "no REQUEST for a bad line");
    assert_eq!(
        r.dev
            .lock()
            .unwrap()
            .metrics()
            .bad_connect_lines
            .load(Ordering::Relaxed),
        7
    );

    // Packets for connections that do not exist: RST (but an RST is never answered).
    r.send(pkt(op::RW, 1, 2, 3, 4096, 0), b"abc");
    r.send(pkt(op::CREDIT_UPDATE, 1, 2, 0, u32::MAX, u32::MAX), &[]);
    r.send(pkt(op::RST, 1, 2, 0, 0, 0), &[]);
    let got = r.received();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|(h, _)| h.op == op::RST && h.dst_port == 1));
    // A wrong source CID is dropped, and so is a packet for a CID other than the host's (no RST: a
    // guest's connect there times out, as with Firecracker and vhost-vsock); a length beyond the chain
    // or the limit is dropped.
    let mut h = pkt(op::REQUEST, 1, 2, 0, 0, 0);
    h.src_cid = 42;
    r.send(h, &[]);
    let mut h = pkt(op::REQUEST, 1, 2, 0, 0, 0);
    h.dst_cid = 9;
    r.send(h, &[]);
    let h = pkt(op::RW, 1, 2, 1000, 0, 0);
    r.send(h, b"short");
    let h = pkt(op::RW, 1, 2, u32::MAX, 0, 0);
    r.send(h, b"x");
    // A chain shorter than a header.
    r.tx.post(&r.mem, b"tiny", 4, false);
    write_reg(&mut r.t, 0x50, 1);
    r.settle();
    let got = r.received();
    assert_eq!(
        got.len(),
        2,
        "the two bad lengths are reset, the rest dropped"
    );
}

#[test]
fn a_receive_buffer_too_small_for_a_header_is_returned_empty() {
    let mut r = Rig::new("small");
    let mut c = UnixStream::connect(&r.uds).unwrap();
    c.write_all(b"CONNECT 9\n").unwrap();
    r.settle();
    r.post_rx(1, 8);
    r.post_rx(1, 4096);
    let got = r.rx.take_used(&r.mem);
    assert_eq!(got.len(), 2);
    assert!(got[0].is_empty());
    assert_eq!(Header::parse(&got[1]).unwrap().op, op::REQUEST);
}

#[test]
fn a_guest_that_never_reads_blocks_the_host_writer() {
    let mut r = Rig::new("stall");
    r.post_rx(64, 4096);
    let (mut c, hport) = r.host_connect(1024);
    c.set_nonblocking(true).unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut written = 0usize;
    for _ in 0..200 {
        match c.write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                r.settle();
                post_more(&mut r);
                if c.write(&chunk).is_err() {
                    break;
                }
            }
            Err(e) => panic!("{e}"),
        }
        r.settle();
    }
    // The guest advertised 64 KiB and never returned credit: it got exactly that much.
    let got: usize = r.received().iter().map(|(_, d)| d.len()).sum();
    assert_eq!(got, 64 * 1024);
    assert!(
        written < 8 << 20,
        "the writer blocked after {written} bytes"
    );
    assert_eq!(r.dev.lock().unwrap().buffered(), 0);
    // It asked for credit; giving some resumes the flow.
    r.send(
        pkt(op::CREDIT_UPDATE, 1024, hport, 0, 64 * 1024, 32 * 1024),
        &[],
    );
    let got: usize = r.received().iter().map(|(_, d)| d.len()).sum();
    assert_eq!(got, 32 * 1024);

    fn post_more(r: &mut Rig) {
        let n = r.rx.avail_idx.wrapping_sub(r.rx.used_seen);
        if n < 32 {
            r.post_rx(16, 4096);
        }
    }
}

#[test]
fn a_guest_beyond_its_credit_is_reset_and_bounded() {
    let mut r = Rig::new("credit");
    r.post_rx(32, 4096);
    let port_path = format!("{}_6000", r.uds.display());
    let listener = UnixListener::bind(&port_path).unwrap();
    r.send(pkt(op::REQUEST, 5, 6000, 0, 4096, 0), &[]);
    let (_s, _) = listener.accept().unwrap();
    let data = vec![1u8; 60 * 1024];
    // The host app never reads: its socket buffer fills, then our buffer up to BUF_ALLOC, then RST.
    let mut reset = false;
    for _ in 0..64 {
        r.send(pkt(op::RW, 5, 6000, data.len() as u32, 4096, 0), &data);
        assert!(r.dev.lock().unwrap().buffered() <= BUF_ALLOC as usize);
        if r.received().iter().any(|(h, _)| h.op == op::RST) {
            reset = true;
            break;
        }
    }
    assert!(reset, "sending beyond the credit resets");
    assert_eq!(r.dev.lock().unwrap().buffered(), 0);
    assert_eq!(r.dev.lock().unwrap().connections(), 0);
}

#[test]
fn a_restored_device_announces_a_transport_reset() {
    let mut r = Rig::new("restore");
    r.post_rx(4, 4096);
    let state = r.t.save();
    let Rig {
        mem,
        dev,
        t,
        manager,
        mut rx,
        mut evt,
        uds,
        _dir,
        ..
    } = r;
    drop((dev, t, manager));
    let dev2 = Arc::new(Mutex::new(
        Vsock::new(&VsockConfig {
            guest_cid: GUEST_CID,
            uds_path: uds.clone(),
        })
        .unwrap(),
    ));
    let mut t2 = MmioTransport::new(mem.clone(), dev2.clone()).unwrap();
    t2.restore(&state).unwrap();
    let mut manager = Manager::new().unwrap();
    manager.add_subscriber(dev2.clone());
    evt.post(&mem, &[0xff; 8], 8, true);
    write_reg(&mut t2, 0x50, 2);
    for _ in 0..20 {
        if manager.run_with_timeout(0).unwrap() == 0 {
            break;
        }
    }
    let ev = evt.take_used(&mem);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0], EVENT_TRANSPORT_RESET.to_le_bytes());
    // The restored device works: a host connect reaches the guest's receive queue.
    let mut c = UnixStream::connect(&uds).unwrap();
    c.write_all(b"CONNECT 1\n").unwrap();
    for _ in 0..20 {
        if manager.run_with_timeout(0).unwrap() == 0 {
            break;
        }
    }
    let got = rx.take_used(&mem);
    assert_eq!(got.len(), 1);
    assert_eq!(Header::parse(&got[0]).unwrap().op, op::REQUEST);
}

#[test]
fn bad_cids_are_refused() {
    let dir = temp_dir("cid");
    for cid in [0, 1, 2, u64::from(u32::MAX), 1 << 40] {
        let e = Vsock::new(&VsockConfig {
            guest_cid: cid,
            uds_path: dir.0.join("x.sock"),
        });
        assert!(matches!(e, Err(VsockError::BadCid(_))), "cid {cid}");
    }
}

#[test]
fn an_unanswered_connect_is_closed_after_the_timeout() {
    let mut r = Rig::new("timeout");
    let mut c = UnixStream::connect(&r.uds).unwrap();
    c.write_all(b"CONNECT 9\n").unwrap();
    c.set_nonblocking(true).unwrap();
    let start = std::time::Instant::now();
    let mut b = [0u8; 8];
    let closed = loop {
        r.manager.run_with_timeout(100).unwrap();
        match c.read(&mut b) {
            Ok(0) => break true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("{other:?}"),
        }
        if start.elapsed() > muxer::CONNECT_TIMEOUT * 2 {
            break false;
        }
    };
    assert!(closed, "closed after the timeout");
    assert!(start.elapsed() >= muxer::CONNECT_TIMEOUT);
    // The guest that never took the REQUEST gets an RST instead (harmless to a guest that did).
    r.post_rx(4, 4096);
    let ops: Vec<u16> = r.received().iter().map(|(h, _)| h.op).collect();
    assert_eq!(ops, [op::RST]);
    assert_eq!(r.dev.lock().unwrap().connections(), 0);
}
