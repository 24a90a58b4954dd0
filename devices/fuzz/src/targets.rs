//! The bodies of the fuzz targets, callable from the libFuzzer binaries (`fuzz_targets/`) and from the
//! stable regression test that replays the seed corpora (`tests/corpora.rs`).

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use devices::disk::test_utils::MemDisk;
use devices::disk::{DiskFile, Qcow2File, RawFile};
use devices::virtio::net::tap::{socket_pair, Tap};
use devices::virtio::{
    Block, BlockConfig, Console, IoEngine, MmioTransport, Net, NetConfig, Vsock, VsockConfig,
};
use vm_memory::VolatileSlice;

use crate::{guest_memory, lock, run, scratch, Device};

/// A small qcow2 v3 image (4 KiB clusters, 256 KiB): data, a zero cluster, a compressed cluster.
pub const BLK_V3: &[u8] = include_bytes!("../images/blk-v3.qcow2");
/// A qcow2 v2 image (512 B clusters, 256 KiB) over the backing file `base.qcow2` ([`BASE`]).
pub const BLK_V2_OVERLAY: &[u8] = include_bytes!("../images/blk-v2-overlay.qcow2");
/// The backing file the overlay seeds name (`base.qcow2`): qcow2 v3, 4 KiB clusters, 256 KiB, data.
pub const BASE: &[u8] = include_bytes!("../images/base.qcow2");

struct BlkDev(Arc<Mutex<Block>>);

impl Device for BlkDev {
    fn queues(&self) -> usize {
        1
    }
    fn process(&mut self, _q: usize) {
        let mut b = lock(&self.0);
        b.process_queue();
        b.process_completions();
        // The Threads and Async engines finish requests on worker threads or in the kernel: wait for every
        // request in flight, as the VMM thread would on the completion EventFd, so that each input's result
        // does not depend on timing.
        while b.in_flight() > 0 {
            if let Some(evt) = b.completion_evt() {
                let mut pfd = libc::pollfd {
                    fd: std::os::fd::AsRawFd::as_raw_fd(evt),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // A request that never completes is a bug, but a worker's disk I/O (a flush is an
                // fdatasync of a host file) can stall for seconds on a busy nested host: 5 s once
                // failed CI's fuzz smoke run with an input that replays in 1 ms. 30 s tells the two apart.
                // SAFETY: `pfd` is one valid pollfd for the duration of the call.
                if unsafe { libc::poll(&mut pfd, 1, 30_000) } <= 0 {
                    panic!("a request in flight did not complete in 30 s");
                }
                let _ = evt.read();
            }
            b.process_completions();
        }
    }
    fn input(&mut self, _bytes: &[u8]) {}
}

fn blk(data: &[u8], disk: Box<dyn DiskFile>, io_engine: IoEngine) -> usize {
    let mem = guest_memory();
    let cfg = BlockConfig {
        io_engine,
        ..BlockConfig::default()
    };
    let Ok(block) = Block::new(disk, &cfg) else {
        return 0;
    };
    let block = Arc::new(Mutex::new(block));
    let Ok(mut t) = MmioTransport::new(mem.clone(), block.clone()) else {
        return 0;
    };
    run(data, &mem, &mut t, &mut BlkDev(block))
}

/// The MMIO transport in front of virtio-blk on an in-memory disk: register sequences and guest memory.
pub fn mmio_transport(data: &[u8]) -> usize {
    blk(
        data,
        Box::new(MemDisk::new(64 * 1024, false)),
        IoEngine::default(),
    )
}

/// Writes `files` into a fresh scratch directory and returns it.
fn scratch_dir(files: &[(&str, &[u8])]) -> std::path::PathBuf {
    let dir = scratch("dir");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).expect("scratch file");
    }
    dir
}

/// virtio-blk requests through the transport to a real backend, picked by flag bits 4-5: an in-memory
/// disk, a raw file, a qcow2 v3 image, a qcow2 v2 overlay with a qcow2 backing file; bit 6 opens it
/// read-only; bit 7 picks the engine by bit 3 (`Sync`, or `Async`: io_uring), without it the default
/// (`Threads`: inline or on the worker pool). Reaches read, write, flush, discard, write-zeroes and get-id
/// on each.
pub fn blk_request(data: &[u8]) -> usize {
    let flags = data.first().copied().unwrap_or(0);
    let read_only = flags & 0x40 != 0;
    let dir = scratch_dir(&[
        ("raw.img", &[0x5a; 64 * 1024]),
        ("v3.qcow2", BLK_V3),
        ("overlay.qcow2", BLK_V2_OVERLAY),
        ("base.qcow2", BASE),
    ]);
    let disk: Option<Box<dyn DiskFile>> = match (flags >> 4) & 3 {
        0 => Some(Box::new(MemDisk::new(64 * 1024, read_only))),
        1 => RawFile::open(&dir.join("raw.img"), read_only)
            .ok()
            .map(|d| Box::new(d) as _),
        2 => Qcow2File::open(&dir.join("v3.qcow2"), read_only)
            .ok()
            .map(|d| Box::new(d) as _),
        _ => Qcow2File::open(&dir.join("overlay.qcow2"), read_only)
            .ok()
            .map(|d| Box::new(d) as _),
    };
    let disk = disk.expect("the template images open");
    let engine = match (flags & 0x80 != 0, flags & 0x08 != 0) {
        (false, _) => IoEngine::Threads,
        (true, false) => IoEngine::Sync,
        (true, true) => IoEngine::Async,
    };
    let used = blk(data, disk, engine);
    let _ = std::fs::remove_dir_all(&dir);
    used
}

struct NetDev {
    net: Arc<Mutex<Net>>,
    host: Tap,
}

impl Device for NetDev {
    fn queues(&self) -> usize {
        2
    }
    fn process(&mut self, q: usize) {
        let mut n = lock(&self.net);
        if q == 0 {
            n.process_rx();
        } else {
            n.process_tx();
            // Drain what the guest sent, as the host would.
            let mut buf = [0u8; 65_600];
            while self.host.read_frame(&mut buf).is_ok() {}
        }
    }
    fn input(&mut self, bytes: &[u8]) {
        // A frame from the host side of the TAP (virtio-net header included), as the TAP would hand it.
        let (hdr, frame) = bytes.split_at(bytes.len().min(12));
        let _ = self.host.write_frame(hdr, frame);
        lock(&self.net).process_rx();
    }
}

/// virtio-net over a socket pair standing in for the TAP: transmitted frames (tx queue) and received
/// frames (`Input`, the rx queue), with and without mergeable receive buffers and checksum offload.
pub fn virtio_net(data: &[u8]) -> usize {
    let Ok((a, b)) = socket_pair() else {
        return 0;
    };
    let tap = Tap::from_fd(a, "fuzz");
    let host = Tap::from_fd(b, "fuzz-host");
    let Ok(net) = Net::new(
        tap,
        &NetConfig {
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            rx_rate_limiter: Default::default(),
            tx_rate_limiter: Default::default(),
        },
    ) else {
        return 0;
    };
    let net = Arc::new(Mutex::new(net));
    let mem = guest_memory();
    let Ok(mut t) = MmioTransport::new(mem.clone(), net.clone()) else {
        return 0;
    };
    run(data, &mem, &mut t, &mut NetDev { net, host })
}

struct ConsoleDev(Arc<Mutex<Console>>);

impl Device for ConsoleDev {
    fn queues(&self) -> usize {
        2
    }
    fn process(&mut self, q: usize) {
        let mut c = lock(&self.0);
        if q == 0 {
            c.process_rx();
        } else {
            c.process_tx();
        }
    }
    fn input(&mut self, bytes: &[u8]) {
        lock(&self.0).enqueue_input(bytes);
    }
}

struct Sink;

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// virtio-console: guest output (tx queue) and host input (`Input`, rx queue).
pub fn virtio_console(data: &[u8]) -> usize {
    let Ok(console) = Console::new(Box::new(Sink)) else {
        return 0;
    };
    let console = Arc::new(Mutex::new(console));
    let mem = guest_memory();
    let Ok(mut t) = MmioTransport::new(mem.clone(), console.clone()) else {
        return 0;
    };
    run(data, &mem, &mut t, &mut ConsoleDev(console))
}

struct VsockDev {
    vsock: Arc<Mutex<Vsock>>,
    uds: std::path::PathBuf,
    clients: Vec<std::os::unix::net::UnixStream>,
}

impl Device for VsockDev {
    fn queues(&self) -> usize {
        3
    }
    fn process(&mut self, q: usize) {
        let mut v = lock(&self.vsock);
        match q {
            0 => {
                v.process_backend();
            }
            1 => {
                v.process_tx();
                v.process_backend();
            }
            _ => v.process_evt(),
        }
    }
    fn input(&mut self, bytes: &[u8]) {
        // A host client (at most four per input) connects to the device's socket and writes `bytes`
        // (a `CONNECT` line and data, or anything).
        if self.clients.len() < 4 {
            if let Ok(mut c) = std::os::unix::net::UnixStream::connect(&self.uds) {
                let _ = c.set_nonblocking(true);
                let _ = c.write(bytes);
                self.clients.push(c);
            }
        }
        lock(&self.vsock).process_backend();
    }
}

/// virtio-vsock with its Unix-socket muxer: packets in transmit chains (headers, payloads, credit),
/// receive chains, the event queue, and host clients (`Input`: a client writing its bytes).
pub fn virtio_vsock(data: &[u8]) -> usize {
    let dir = scratch("vsock");
    if std::fs::create_dir_all(&dir).is_err() {
        return 0;
    }
    let uds = dir.join("v.sock");
    let Ok(vsock) = Vsock::new(&VsockConfig {
        guest_cid: 3,
        uds_path: uds.clone(),
    }) else {
        let _ = std::fs::remove_dir_all(&dir);
        return 0;
    };
    let vsock = Arc::new(Mutex::new(vsock));
    let mem = guest_memory();
    let Ok(mut t) = MmioTransport::new(mem.clone(), vsock.clone()) else {
        return 0;
    };
    let mut dev = VsockDev {
        vsock,
        uds,
        clients: Vec::new(),
    };
    let used = run(data, &mem, &mut t, &mut dev);
    drop(dev);
    drop(t);
    let _ = std::fs::remove_dir_all(&dir);
    used
}

/// Largest image file the qcow2 target builds (its segments are placed modulo this).
const IMAGE_SPAN: u64 = 16 << 20;

/// The qcow2 target's input: `flags:u8 nops:u8`, then `nops` operations of 7 bytes (`kind:u8 offset:u32
/// len:u16`, little-endian), then the image as sparse segments `offset:u32 len:u16 bytes` (offset in bytes,
/// modulo 16 MiB; the file ends at the last segment's end). Sparse segments let a seed hold an image with
/// 2 MiB clusters in a few hundred bytes. Flag bit 0 opens the image writable. Returns how many requests
/// succeeded (`None` when the image did not open).
pub fn qcow2_image(data: &[u8]) -> Option<usize> {
    let (&[flags, nops], rest) = data.split_first_chunk::<2>()?;
    let nops = usize::from(nops % 16);
    let (ops, mut segs) = rest.split_at_checked(nops * 7)?;
    // Written in place, segment by segment, into a sparse file: a 2 MiB-cluster image spans several MiB
    // of which a few hundred bytes are not zero.
    let dir = scratch_dir(&[("base.qcow2", BASE)]);
    let path = dir.join("image.qcow2");
    let file = std::fs::File::create(&path).expect("scratch image");
    let mut len = 0;
    while segs.len() >= 6 {
        let off = u64::from(u32::from_le_bytes([segs[0], segs[1], segs[2], segs[3]])) % IMAGE_SPAN;
        let n = usize::from(u16::from_le_bytes([segs[4], segs[5]]));
        let bytes = &segs[6..6 + n.min(segs.len() - 6)];
        segs = &segs[6 + bytes.len()..];
        file.write_all_at(bytes, off).expect("scratch image");
        len = len.max(off + bytes.len() as u64);
    }
    file.set_len(len).expect("scratch image");
    drop(file);
    // The raw backing file: 256 KiB, its first 4 KiB not zero.
    let raw = std::fs::File::create(dir.join("base.raw")).expect("scratch base");
    raw.write_all_at(&[0x77; 4096], 0).expect("scratch base");
    raw.set_len(256 * 1024).expect("scratch base");
    drop(raw);
    let done = exercise_qcow2(&path, flags & 1 == 1, ops);
    let _ = std::fs::remove_dir_all(&dir);
    done
}

fn exercise_qcow2(path: &Path, writable: bool, ops: &[u8]) -> Option<usize> {
    let mut d = Qcow2File::open(path, !writable).ok()?;
    let mut buf = vec![0u8; 65_536];
    let mut ok = 0;
    for op in ops.chunks_exact(7) {
        let off = u64::from(u32::from_le_bytes([op[1], op[2], op[3], op[4]]));
        let len = u64::from(u16::from_le_bytes([op[5], op[6]]));
        let n = len as usize;
        let res = match op[0] % 6 {
            0 | 1 => {
                // Two buffers, so vectored paths split requests.
                let (a, b) = buf[..n].split_at_mut(n / 3);
                let bufs = [VolatileSlice::from(a), VolatileSlice::from(b)];
                if op[0] % 6 == 0 {
                    d.read_vectored(off, &bufs)
                } else {
                    d.write_vectored(off, &bufs)
                }
            }
            2 => d.discard(off, len),
            3 => d.write_zeroes(off, len, false),
            4 => d.write_zeroes(off, len, true),
            _ => d.flush(),
        };
        ok += usize::from(res.is_ok());
        buf[..n].fill(op[0]);
    }
    d.flush().ok()?;
    Some(ok)
}
