//! virtio-blk with real image files under all three engines: batches of reads and writes completed in any order,
//! flush after outstanding writes, I/O errors, a guest ring holding more than the engine takes at once,
//! `O_DIRECT`, and the fallback to the synchronous engine where io_uring is unavailable.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::DescriptorTable;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::disk::tests::temp_path;
use crate::disk::{open_disk, CacheMode, DiskOptions};
use crate::virtio::block::request::slices;
use crate::virtio::mmio::MmioTransport;
use crate::virtio::test_utils::{guest_memory, init_device, read_reg, write_reg, QueueLayout};

const MEM: usize = 16 << 20;
const QSIZE: u16 = 256;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x3000;
const USED: u64 = 0x4000;
const HEADERS: u64 = 0x10_0000;
const STATUSES: u64 = 0x11_0000;
const DATA: u64 = 0x20_0000;
/// Guest data buffer of request slot `i`.
const SLOT: u64 = 64 << 10;

/// A guest driver for one device: request slot `i` uses descriptors 3i..3i+2, its header, status byte
/// and a 64 KiB data buffer at fixed addresses.
struct Driver {
    mem: GuestMemoryMmap,
    blk: Arc<Mutex<Block>>,
    t: MmioTransport,
    table: DescriptorTable<'static, GuestMemoryMmap>,
    avail_idx: u16,
    used_seen: u16,
    /// Whether the first pass over the queue left chains waiting for room in the engine.
    stalled: bool,
}

impl Driver {
    fn new(disk: Box<dyn DiskFile>, engine: IoEngine) -> Self {
        let mem = guest_memory(MEM);
        let blk = Arc::new(Mutex::new(
            Block::new(
                disk,
                &BlockConfig {
                    id: "t".into(),
                    io_engine: engine,
                    rate_limiter: Default::default(),
                },
            )
            .unwrap(),
        ));
        assert_eq!(blk.lock().unwrap().io_engine(), engine, "io_uring here");
        let mut t = MmioTransport::new(mem.clone(), blk.clone()).unwrap();
        let layout = QueueLayout {
            size: QSIZE,
            desc: GuestAddress(DESC),
            avail: GuestAddress(AVAIL),
            used: GuestAddress(USED),
        };
        let s = init_device(&mut t, u64::MAX, &[layout]);
        assert_ne!(s & crate::virtio::status::DRIVER_OK, 0);
        let leaked: &'static GuestMemoryMmap = Box::leak(Box::new(mem.clone()));
        let table = DescriptorTable::new(leaked, GuestAddress(DESC), QSIZE);
        Self {
            mem,
            blk,
            t,
            table,
            avail_idx: 0,
            used_seen: 0,
            stalled: false,
        }
    }

    /// Posts request slot `i`: `kind` at `sector` with `len` data bytes (none for a flush).
    fn post(&mut self, i: u16, kind: u32, sector: u64, len: u32) {
        let (hdr, data, st) = (
            HEADERS + 16 * u64::from(i),
            DATA + SLOT * u64::from(i),
            STATUSES + u64::from(i),
        );
        let d = 3 * i;
        let desc = |addr, len, flags: u32, next| {
            RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, next))
        };
        self.mem.write_obj(kind, GuestAddress(hdr)).unwrap();
        self.mem.write_obj(sector, GuestAddress(hdr + 8)).unwrap();
        self.mem.write_obj(0xffu8, GuestAddress(st)).unwrap();
        let n = VRING_DESC_F_NEXT;
        self.table.store(d, desc(hdr, 16, n, d + 1)).unwrap();
        if kind == VIRTIO_BLK_T_FLUSH {
            self.table
                .store(d + 1, desc(st, 1, VRING_DESC_F_WRITE, 0))
                .unwrap();
        } else {
            let dir = if kind == VIRTIO_BLK_T_IN {
                VRING_DESC_F_WRITE
            } else {
                0
            };
            self.table
                .store(d + 1, desc(data, len, n | dir, d + 2))
                .unwrap();
            self.table
                .store(d + 2, desc(st, 1, VRING_DESC_F_WRITE, 0))
                .unwrap();
        }
        let slot = u64::from(self.avail_idx % QSIZE);
        self.mem
            .write_obj(d, GuestAddress(AVAIL + 4 + 2 * slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
            .unwrap();
    }

    fn data(&self, i: u16) -> GuestAddress {
        GuestAddress(DATA + SLOT * u64::from(i))
    }

    fn status(&self, i: u16) -> u32 {
        u32::from(
            self.mem
                .read_obj::<u8>(GuestAddress(STATUSES + u64::from(i)))
                .unwrap(),
        )
    }

    /// Kicks the device and plays the VMM thread until `n` chains are on the used ring; returns them in
    /// used-ring order as (request slot, used length).
    fn kick_and_wait(&mut self, n: usize) -> Vec<(u16, u32)> {
        write_reg(&mut self.t, 0x50, 0);
        let blk = self.blk.clone();
        let _ = blk.lock().unwrap().queue_evts[0].read();
        blk.lock().unwrap().process_queue();
        self.stalled = blk.lock().unwrap().stalled;
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let used: u16 = self.mem.read_obj(GuestAddress(USED + 2)).unwrap();
            while self.used_seen != used {
                let e = USED + 4 + 8 * u64::from(self.used_seen % QSIZE);
                let id: u32 = self.mem.read_obj(GuestAddress(e)).unwrap();
                let len: u32 = self.mem.read_obj(GuestAddress(e + 4)).unwrap();
                out.push(((id / 3) as u16, len));
                self.used_seen = self.used_seen.wrapping_add(1);
            }
            if out.len() >= n {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {n} completed",
                out.len()
            );
            let b = blk.lock().unwrap();
            let evt = b
                .completion_evt()
                .expect("sync engine left chains unanswered");
            let mut pfd = libc::pollfd {
                fd: evt.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            drop(b);
            // SAFETY: one valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut pfd, 1, 1000) };
            let mut b = blk.lock().unwrap();
            let _ = b.completion_evt().unwrap().read();
            b.process_completions();
        }
        assert_eq!(out.len(), n, "more chains completed than posted");
        let isr = read_reg(&mut self.t, 0x60);
        assert_ne!(isr & VirtioInterrupt::USED_RING, 0, "interrupt raised");
        write_reg(&mut self.t, 0x64, isr);
        out
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(31) ^ seed.wrapping_mul(0x9e37)) as u8)
        .collect()
}

/// A raw image of `len` bytes of `pattern(0, len)`.
fn raw_image(name: &str, len: usize) -> PathBuf {
    let p = temp_path(name);
    std::fs::write(&p, pattern(0, len)).unwrap();
    p
}

fn open(p: &std::path::Path, cache: CacheMode) -> Box<dyn DiskFile> {
    open_disk(
        p,
        &DiskOptions {
            cache,
            ..Default::default()
        },
    )
    .unwrap()
}

const ENGINES: [IoEngine; 3] = [IoEngine::Sync, IoEngine::Async, IoEngine::Threads];

/// 64 reads and writes of 512 B to 64 KiB in one batch, on raw and qcow2, page cache and O_DIRECT: every
/// chain comes back once, with the right length and status, and the data matches.
#[test]
fn mixed_batch_completes_on_every_engine() {
    let size = 8usize << 20;
    for engine in ENGINES {
        for cache in [CacheMode::Writeback, CacheMode::Direct] {
            for format in ["raw", "qcow2"] {
                let raw = raw_image(&format!("mix-{engine:?}-{cache:?}.raw"), size);
                let path = if format == "raw" {
                    raw
                } else {
                    let q = temp_path(&format!("mix-{engine:?}-{cache:?}.qcow2"));
                    let ok = std::process::Command::new("qemu-img")
                        .args(["convert", "-q", "-O", "qcow2", "-o", "cluster_size=4096"])
                        .arg(&raw)
                        .arg(&q)
                        .status()
                        .is_ok_and(|s| s.success());
                    if !ok {
                        eprintln!("qemu-img not available; skipping qcow2");
                        continue;
                    }
                    q
                };
                let mut model = pattern(0, size);
                let mut d = Driver::new(open(&path, cache), engine);
                let mut expect = Vec::new();
                for i in 0..64u16 {
                    let len = 512u32 << (i % 8); // 512 B .. 64 KiB
                    let sector = u64::from(i) * 256 + u64::from(i % 3);
                    if i % 2 == 0 {
                        let data = pattern(u64::from(i) + 1, len as usize);
                        d.mem.write_slice(&data, d.data(i)).unwrap();
                        let at = sector as usize * 512;
                        model[at..at + len as usize].copy_from_slice(&data);
                        d.post(i, VIRTIO_BLK_T_OUT, sector, len);
                        expect.push((i, 1));
                    } else {
                        d.post(i, VIRTIO_BLK_T_IN, sector, len);
                        expect.push((i, len + 1));
                    }
                }
                let mut got = d.kick_and_wait(64);
                got.sort_unstable();
                assert_eq!(got, expect, "{engine:?} {cache:?} {format}");
                for i in 0..64u16 {
                    assert_eq!(d.status(i), VIRTIO_BLK_S_OK);
                    if i % 2 == 1 {
                        let len = 512usize << (i % 8);
                        let at = (usize::from(i) * 256 + usize::from(i % 3)) * 512;
                        let mut buf = vec![0u8; len];
                        d.mem.read_slice(&mut buf, d.data(i)).unwrap();
                        assert!(
                            buf == model[at..at + len],
                            "{engine:?} {cache:?} {format} read {i}"
                        );
                    }
                }
                // Everything written is in the image (read back through a fresh open).
                drop(d);
                let mut disk = open(&path, CacheMode::Writeback);
                let mut all = vec![0u8; size];
                disk.read_at(&mut all, 0).unwrap();
                assert!(
                    all == model,
                    "{engine:?} {cache:?} {format}: image contents"
                );
            }
        }
    }
}

/// Writes followed by a flush in one batch: the flush is answered only after every write before it, and
/// by then the data is in the file.
#[test]
fn flush_completes_after_the_writes_before_it() {
    for engine in ENGINES {
        let p = raw_image(&format!("flush-{engine:?}.raw"), 4 << 20);
        let mut d = Driver::new(open(&p, CacheMode::Writeback), engine);
        for i in 0..16u16 {
            d.mem.write_slice(&[i as u8 + 1; 65536], d.data(i)).unwrap();
            d.post(i, VIRTIO_BLK_T_OUT, u64::from(i) * 128, 65536);
        }
        d.post(16, VIRTIO_BLK_T_FLUSH, 0, 0);
        let got = d.kick_and_wait(17);
        assert_eq!(
            got.last(),
            Some(&(16, 1)),
            "{engine:?}: flush answered last"
        );
        assert_eq!(d.status(16), VIRTIO_BLK_S_OK);
        let file = std::fs::read(&p).unwrap();
        for i in 0..16usize {
            assert!(file[i * 65536..(i + 1) * 65536]
                .iter()
                .all(|&b| b == i as u8 + 1));
        }
        assert_eq!(d.blk.lock().unwrap().in_flight(), 0);
    }
}

/// A device reset while writes are in flight waits for them (their data is in the file, their status
/// written), and dropping the device afterwards stops the engine (for `Threads`: joins its workers).
#[test]
fn reset_and_drop_wait_for_requests_in_flight() {
    for engine in [IoEngine::Async, IoEngine::Threads] {
        let p = raw_image(&format!("reset-{engine:?}.raw"), 4 << 20);
        let mut d = Driver::new(open(&p, CacheMode::Writeback), engine);
        for i in 0..32u16 {
            d.mem.write_slice(&[i as u8 + 1; 65536], d.data(i)).unwrap();
            d.post(i, VIRTIO_BLK_T_OUT, u64::from(i) * 128, 65536);
        }
        write_reg(&mut d.t, 0x50, 0);
        d.blk.lock().unwrap().process_queue();
        write_reg(&mut d.t, 0x70, 0); // reset
        assert_eq!(d.blk.lock().unwrap().in_flight(), 0, "{engine:?}");
        for i in 0..32u16 {
            assert_eq!(d.status(i), VIRTIO_BLK_S_OK, "{engine:?}: request {i}");
        }
        let file = std::fs::read(&p).unwrap();
        for i in 0..32usize {
            assert!(file[i * 65536..(i + 1) * 65536]
                .iter()
                .all(|&b| b == i as u8 + 1));
        }
        let Driver { blk, t, .. } = d;
        drop(t);
        let blk = Arc::try_unwrap(blk).ok().expect("last reference");
        drop(blk);
    }
}

/// Before a snapshot the device completes the requests in flight: after `prepare_save` every write is
/// in the file, its status written and its chain on the used ring, and the saved transport state
/// carries the used-ring interrupt the guest has not seen yet. (O_DIRECT, so the writes really are in
/// flight when the snapshot begins.)
#[test]
fn a_snapshot_completes_the_requests_in_flight() {
    for engine in [IoEngine::Async, IoEngine::Threads] {
        // The writes must still be in flight when the save begins, or the test shows nothing; on a loaded
        // host they may all finish during `process_queue`: then try again on a fresh device.
        let mut attempt = 0;
        let (p, d) = loop {
            let p = raw_image(&format!("snapshot-{engine:?}.raw"), 4 << 20);
            let mut d = Driver::new(open(&p, CacheMode::Direct), engine);
            for i in 0..32u16 {
                d.mem.write_slice(&[i as u8 + 7; 65536], d.data(i)).unwrap();
                d.post(i, VIRTIO_BLK_T_OUT, u64::from(i) * 128, 65536);
            }
            write_reg(&mut d.t, 0x50, 0);
            d.blk.lock().unwrap().process_queue();
            if d.blk.lock().unwrap().in_flight() > 0 {
                break (p, d);
            }
            attempt += 1;
            assert!(attempt < 20, "{engine:?}: no write was ever in flight");
        };
        d.t.prepare_save();
        let state = d.t.save();
        assert_eq!(d.blk.lock().unwrap().in_flight(), 0, "{engine:?}");
        let used: u16 = d.mem.read_obj(GuestAddress(USED + 2)).unwrap();
        assert_eq!(used, 32, "{engine:?}");
        assert_eq!(state.queues[0].next_used, 32, "{engine:?}");
        assert_ne!(state.interrupt_status & VirtioInterrupt::USED_RING, 0);
        for i in 0..32u16 {
            assert_eq!(d.status(i), VIRTIO_BLK_S_OK, "{engine:?}: request {i}");
        }
        let file = std::fs::read(&p).unwrap();
        for i in 0..32usize {
            assert!(file[i * 65536..(i + 1) * 65536]
                .iter()
                .all(|&b| b == i as u8 + 7));
        }
    }
}

/// A request past the end of the file behind the disk (the file shrank after opening) fails with IOERR,
/// and the requests around it still succeed.
#[test]
fn io_errors_fail_only_their_request() {
    for engine in ENGINES {
        let p = raw_image(&format!("err-{engine:?}.raw"), 1 << 20);
        let mut d = Driver::new(open(&p, CacheMode::Writeback), engine);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(512 << 10)
            .unwrap();
        d.post(0, VIRTIO_BLK_T_IN, 0, 4096);
        d.post(1, VIRTIO_BLK_T_IN, 1500, 4096); // 768000.. beyond the new end
        d.post(2, VIRTIO_BLK_T_IN, 1016, 8192); // crosses the new end: a short read
        d.post(3, VIRTIO_BLK_T_IN, 8, 4096);
        let mut got = d.kick_and_wait(4);
        got.sort_unstable();
        assert_eq!(got, [(0, 4097), (1, 1), (2, 1), (3, 4097)], "{engine:?}");
        let st: Vec<u32> = (0..4).map(|i| d.status(i)).collect();
        assert_eq!(
            st,
            [
                VIRTIO_BLK_S_OK,
                VIRTIO_BLK_S_IOERR,
                VIRTIO_BLK_S_IOERR,
                VIRTIO_BLK_S_OK
            ]
        );
        let m = d.blk.lock().unwrap().metrics();
        assert_eq!(m.errors.load(Ordering::Relaxed), 2);
        assert_eq!(m.reads.load(Ordering::Relaxed), 2);
    }
}

/// A qcow2 image whose guest clusters lie in the file in reverse order, so every 32 KiB request spans 8
/// host runs: 80 of them fill the virtqueue with more than the engine takes at once (32 requests of
/// MAX_RUNS runs); the rest wait on the avail ring and are picked up as completions make room.
#[test]
fn ring_full_of_requests_is_served_in_rounds() {
    let Some(p) = qcow2_reversed("full.qcow2", 80 * 8) else {
        return;
    };
    for engine in ENGINES {
        let mut d = Driver::new(open_disk(&p, &DiskOptions::default()).unwrap(), engine);
        for i in 0..80u16 {
            d.post(i, VIRTIO_BLK_T_IN, u64::from(i) * 64, 32768);
        }
        let mut got = d.kick_and_wait(80);
        assert_eq!(d.stalled, engine != IoEngine::Sync, "the engine filled up");
        got.sort_unstable();
        assert_eq!(got, (0..80).map(|i| (i, 32769)).collect::<Vec<_>>());
        for i in 0..80u16 {
            assert_eq!(d.status(i), VIRTIO_BLK_S_OK);
            let mut buf = vec![0u8; 32768];
            d.mem.read_slice(&mut buf, d.data(i)).unwrap();
            for c in 0..8 {
                let cluster = u64::from(i) * 8 + c;
                assert!(
                    buf[c as usize * 4096..][..4096]
                        .iter()
                        .all(|&b| b == cluster as u8),
                    "{engine:?}: request {i} cluster {c}"
                );
            }
        }
    }
}

/// A 4 KiB-cluster qcow2 image of `clusters` clusters, cluster k filled with the byte k, allocated from
/// the last cluster to the first.
fn qcow2_reversed(name: &str, clusters: u64) -> Option<PathBuf> {
    let p = temp_path(name);
    let _ = std::fs::remove_file(&p);
    let ok = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096"])
        .arg(&p)
        .arg((clusters * 4096).to_string())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("qemu-img not available; skipping");
        return None;
    }
    let mut disk = open_disk(&p, &DiskOptions::default()).unwrap();
    for k in (0..clusters).rev() {
        disk.write_at(&[k as u8; 4096], k * 4096).unwrap();
    }
    disk.flush().unwrap();
    Some(p)
}

/// Where io_uring is unavailable (here: a seccomp filter on this thread makes `io_uring_setup` fail with
/// ENOSYS, as on kernels without it), asking for the asynchronous engine gives the synchronous one, which
/// serves requests as before.
#[test]
fn async_falls_back_to_sync_without_io_uring() {
    let p = raw_image("fallback.raw", 1 << 20);
    std::thread::spawn(move || {
        deny_io_uring_setup();
        let blk = Block::new(
            open(&p, CacheMode::Writeback),
            &BlockConfig {
                id: "f".into(),
                io_engine: IoEngine::Async,
                rate_limiter: Default::default(),
            },
        )
        .unwrap();
        assert_eq!(blk.io_engine(), IoEngine::Sync);
        assert!(blk.completion_evt().is_none());
        drop(blk);
        let mut d = Driver::new(open(&p, CacheMode::Writeback), IoEngine::Sync);
        d.post(0, VIRTIO_BLK_T_IN, 2, 1024);
        assert_eq!(d.kick_and_wait(1), [(0, 1025)]);
        let mut buf = [0u8; 1024];
        d.mem.read_slice(&mut buf, d.data(0)).unwrap();
        assert_eq!(&buf[..], &pattern(0, 2048)[1024..]);
    })
    .join()
    .unwrap();
}

/// Installs a seccomp filter on the calling thread only: `io_uring_setup` fails with ENOSYS.
fn deny_io_uring_setup() {
    const NR_IO_URING_SETUP: u32 = 425;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e; // EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let filter = [
        stmt(ld, 4), // seccomp_data.arch
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(ld, 0), // seccomp_data.nr
        jeq(NR_IO_URING_SETUP, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers; PR_SET_SECCOMP reads the valid program `prog`,
    // whose filter array outlives the call. Without SECCOMP_FILTER_FLAG_TSYNC only this thread is affected.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog
            ),
            0
        );
    }
}

/// With `O_DIRECT`, requests the direct descriptor cannot take (a misaligned buffer) go through the page
/// cache, and the two see each other's data.
#[test]
fn direct_cache_mode_mixes_aligned_and_misaligned_requests() {
    let p = raw_image("direct.raw", 1 << 20);
    let mut disk = open(&p, CacheMode::Direct);
    let mem = guest_memory(1 << 20); // page-aligned: O_DIRECT
    let aligned = slices(
        &mem,
        &[request::Segment {
            addr: GuestAddress(0),
            len: 8192,
        }],
    )
    .unwrap()
    .remove(0);
    let mut heap = vec![0u8; 4097];
    heap[1..].fill(7);
    disk.write_at(&heap[1..], 8192).unwrap(); // misaligned by one byte: page cache
    disk.read_vectored(4096, &[aligned]).unwrap();
    let mut back = vec![0u8; 8192];
    mem.read_slice(&mut back, GuestAddress(0)).unwrap();
    assert_eq!(&back[..4096], &pattern(0, 8192)[4096..]);
    assert!(back[4096..].iter().all(|&b| b == 7));
    mem.write_slice(&[9u8; 4096], GuestAddress(0)).unwrap();
    let aligned = slices(
        &mem,
        &[request::Segment {
            addr: GuestAddress(0),
            len: 4096,
        }],
    )
    .unwrap()
    .remove(0);
    disk.write_vectored(8192, &[aligned]).unwrap(); // O_DIRECT
    disk.read_at(&mut heap[1..], 8192).unwrap(); // page cache
    assert!(heap[1..].iter().all(|&b| b == 9));
}

/// The thread pool does a request inline when nothing else is in flight, and small page-cache runs inline
/// when they do not block (cached data, `RWF_NOWAIT`); uncached and `O_DIRECT` runs go to the workers. The
/// data is right every way.
#[test]
fn threads_engine_serves_cached_runs_inline_and_the_rest_on_workers() {
    let size = 32usize << 20;
    let p = raw_image("inline.raw", size);
    let model = pattern(0, size);
    // 16 reads of 64 KiB, 2 MiB apart (beyond readahead of each other), in one batch.
    let batch = |d: &mut Driver| {
        for i in 0..16u16 {
            d.post(i, VIRTIO_BLK_T_IN, u64::from(15 - i) * 4096, 65536);
        }
        let mut got = d.kick_and_wait(16);
        got.sort_unstable();
        assert_eq!(got, (0..16).map(|i| (i, 65537)).collect::<Vec<_>>());
        for i in 0..16u16 {
            let at = usize::from(15 - i) * (2 << 20);
            let mut buf = vec![0u8; 65536];
            d.mem.read_slice(&mut buf, d.data(i)).unwrap();
            assert!(buf == model[at..at + 65536], "read {i}");
        }
        let counts = d.blk.lock().unwrap().engine.pool_counts().unwrap();
        counts
    };
    let drop_cache = || {
        // Dirty pages stay cached: write them back first.
        let f = std::fs::File::open(&p).unwrap();
        f.sync_all().unwrap();
        // SAFETY: advice on an open descriptor; it only affects caching.
        let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(r, 0);
    };

    // Cached (the file was just written): all 16 inline.
    let mut d = Driver::new(open(&p, CacheMode::Writeback), IoEngine::Threads);
    assert_eq!(batch(&mut d), (16, 0), "cached reads");

    // Not cached: the first is inline (nothing else in flight), the rest cannot be done without
    // waiting for the disk and go to the workers.
    drop(d);
    drop_cache();
    let mut d = Driver::new(open(&p, CacheMode::Writeback), IoEngine::Threads);
    let (inline, pooled) = batch(&mut d);
    assert_eq!(inline + pooled, 16);
    assert!(
        pooled >= 8,
        "uncached reads: {inline} inline, {pooled} pooled"
    );

    // O_DIRECT always waits for the disk: only the first, alone in flight, is inline.
    drop(d);
    let mut d = Driver::new(open(&p, CacheMode::Direct), IoEngine::Threads);
    assert_eq!(batch(&mut d), (1, 15), "O_DIRECT reads");
}

/// The filters of microvm's seccomp table (vmm/resources/seccomp), compiled for this test.
static VMM_FILTERS: std::sync::OnceLock<seccompiler::BpfMap> = std::sync::OnceLock::new();

/// What a worker of the thread pool runs under in microvm: the VMM thread's filter (inherited from the
/// thread that starts it) with the worker's own on top.
fn filtered_worker_start() {
    let filters = VMM_FILTERS.get().unwrap();
    seccompiler::apply_filter(&filters["vmm"]).unwrap();
    seccompiler::apply_filter(&filters["blk_io"]).unwrap();
}

/// microvm's `blk_io` seccomp filter (stacked on its `vmm` filter, as in microvm) allows everything a
/// pool worker does: uncached, `O_DIRECT` and flushed writes and reads on workers. A denied syscall
/// raises SIGSYS, which ends this test process. (Workers of the other tests of this process that start
/// after this one run filtered too, which holds them to the same table.)
#[test]
fn threads_engine_workers_run_under_microvm_seccomp_filters() {
    let table = include_str!("../../../../vmm/resources/seccomp/x86_64.json");
    let map =
        seccompiler::compile_from_json(table.as_bytes(), seccompiler::TargetArch::x86_64).unwrap();
    let _ = VMM_FILTERS.set(map);
    crate::set_io_thread_start(filtered_worker_start);
    let size = 8usize << 20;
    let p = raw_image("filtered.raw", size);
    for cache in [CacheMode::Direct, CacheMode::Writeback] {
        let mut d = Driver::new(open(&p, cache), IoEngine::Threads);
        for i in 0..16u16 {
            d.post(i, VIRTIO_BLK_T_OUT, u64::from(i) * 256, 65536);
        }
        d.post(16, VIRTIO_BLK_T_FLUSH, 0, 0);
        let mut got = d.kick_and_wait(17);
        got.sort_unstable();
        assert_eq!(got, (0..17).map(|i| (i, 1)).collect::<Vec<_>>());
        assert_eq!(d.status(16), VIRTIO_BLK_S_OK);
        for i in 0..16u16 {
            d.post(i, VIRTIO_BLK_T_IN, u64::from(i) * 256, 65536);
        }
        assert_eq!(d.kick_and_wait(16).len(), 16);
        let (_, pooled) = d.blk.lock().unwrap().engine.pool_counts().unwrap();
        if cache == CacheMode::Direct {
            assert!(pooled > 0, "no request reached a worker");
        }
    }
}
