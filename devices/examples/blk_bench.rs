//! Block benchmark through the virtio-blk device model, without a VM.
//!
//! Guest memory, a split virtqueue laid out by virtio-queue's mock helpers, the MMIO transport and
//! [`Block`] over a real [`DiskFile`] backend (raw or qcow2): the loop plays the guest driver. Per batch of
//! `depth` requests it fills the request headers, publishes the chains on the avail ring, writes
//! QueueNotify (the transport writes the queue EventFd, as KVM's ioeventfd would), then runs the device
//! side as the VMM thread does (drain the EventFd, `process_queue`, which raises the irqfd), and finally
//! reads and acknowledges InterruptStatus, checks the status byte of every chain on the used ring and, as a
//! guest driver does, reuses each finished request's slot for the next request (one kick per interrupt),
//! so that `depth` requests stay outstanding, as in `qemu-img bench`. With the synchronous engine all
//! posted requests complete in one pass; with `--engine async` (or `threads`) they go to io_uring (or the
//! worker threads) at once and the loop, like the VMM thread, sleeps on the completion EventFd and runs `process_completions` when it fires.
//! `--cache direct` opens the image with `O_DIRECT` for guest data (compare with `qemu-img bench -t none`),
//! the default `writeback` uses the page cache (compare with `-t writeback`). Guest memory is advised
//! `MADV_HUGEPAGE` as the VMM advises it (`--thp on`, its default); `--no-thp` leaves it in 4 KiB pages.
//!
//! Offsets follow `qemu-img bench` (7.2): start at `--offset`, advance by `--step` after each request,
//! wrap modulo the image size, so the same arguments give the same pattern as
//! `qemu-img bench -c COUNT -d DEPTH -s SIZE -S STEP -o OFFSET [-w]`.
//!
//! Usage: `blk_bench [--format raw|qcow2] [--count N] [--depth D] [--size BYTES] [--step BYTES]
//! [--offset BYTES] [--write] [--engine sync|async|threads] [--cache writeback|direct] [--no-thp] IMAGE`. Prints one
//! line: `requests bytes seconds MiB/s IOPS p50 p99 max`, the last three the latency of a request from
//! posting it to reaping it, in microseconds.
//! Build with `--release`; `scripts/bench-blk.sh` runs the whole matrix next to `qemu-img bench`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use devices::bus::BusDevice;
use devices::disk::{open_disk, CacheMode, DiskOptions, ImageFormat};
use devices::virtio::{
    status, Block, BlockConfig, IoEngine, MmioTransport, VirtioDevice, VIRTIO_F_VERSION_1,
};
use devices::GuestMemoryMmap;
use std::os::fd::AsRawFd;
use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::DescriptorTable;
use vm_memory::{Address, Bytes, GuestAddress};

/// Ring size: room for 3 descriptors (header, data, status) per request at depth 64.
const QUEUE_SIZE: u16 = 256;
// The rings, placed by hand: `MockSplitQueue::create` computes the end of the avail ring in elements
// rather than bytes, so for queues larger than a few entries its used ring overlaps the avail ring.
const DESC_TABLE: u64 = 0x1000;
const AVAIL_RING: u64 = 0x3000;
const USED_RING: u64 = 0x4000;
const HEADERS: u64 = 0x10_0000;
const STATUSES: u64 = 0x11_0000;
const DATA: u64 = 0x20_0000;
const MAX_DEPTH: u64 = 64;
const MAX_SIZE: u64 = 1 << 20;

struct Args {
    image: PathBuf,
    format: Option<ImageFormat>,
    count: u64,
    depth: u64,
    size: u64,
    step: Option<u64>,
    offset: u64,
    write: bool,
    engine: IoEngine,
    cache: CacheMode,
    thp: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&s[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("bad size {s:?}"))
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        image: PathBuf::new(),
        format: None,
        count: 10_000,
        depth: 1,
        size: 4096,
        step: None,
        offset: 0,
        write: false,
        engine: IoEngine::Sync,
        cache: CacheMode::Writeback,
        thp: true,
    };
    let mut image = None;
    while let Some(arg) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--format" | "-f" => {
                a.format = Some(match val()?.as_str() {
                    "raw" => ImageFormat::Raw,
                    "qcow2" => ImageFormat::Qcow2,
                    f => return Err(format!("unknown format {f:?}")),
                })
            }
            "--count" | "-c" => a.count = parse_size(&val()?)?,
            "--depth" | "-d" => a.depth = parse_size(&val()?)?,
            "--size" | "-s" => a.size = parse_size(&val()?)?,
            "--step" | "-S" => a.step = Some(parse_size(&val()?)?),
            "--offset" | "-o" => a.offset = parse_size(&val()?)?,
            "--write" | "-w" => a.write = true,
            "--no-thp" => a.thp = false,
            "--engine" => {
                a.engine = match val()?.as_str() {
                    "sync" => IoEngine::Sync,
                    "async" => IoEngine::Async,
                    "threads" => IoEngine::Threads,
                    e => return Err(format!("unknown engine {e:?} (sync, async or threads)")),
                }
            }
            "--cache" => {
                a.cache = match val()?.as_str() {
                    "writeback" => CacheMode::Writeback,
                    "direct" => CacheMode::Direct,
                    c => return Err(format!("unknown cache mode {c:?} (writeback or direct)")),
                }
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s => image = Some(PathBuf::from(s)),
        }
    }
    a.image = image.ok_or("no image given")?;
    if !(1..=MAX_DEPTH).contains(&a.depth) {
        return Err(format!("depth must be 1..={MAX_DEPTH}"));
    }
    if a.size == 0 || a.size > MAX_SIZE || !a.size.is_multiple_of(512) {
        return Err(format!(
            "size must be a multiple of 512 up to {MAX_SIZE} (the device's SIZE_MAX)"
        ));
    }
    Ok(a)
}

fn reg_read(t: &mut MmioTransport, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(offset, &mut b);
    u32::from_le_bytes(b)
}

fn reg_write(t: &mut MmioTransport, offset: u64, v: u32) {
    t.write(offset, &v.to_le_bytes());
}

/// The driver side of virtio 1.x initialisation (3.1.1) for one queue; returns the final Status.
fn init_device(t: &mut MmioTransport) -> u32 {
    reg_write(t, 0x70, 0);
    reg_write(t, 0x70, status::ACKNOWLEDGE);
    reg_write(t, 0x70, status::ACKNOWLEDGE | status::DRIVER);
    reg_write(t, 0x14, 1);
    let hi = reg_read(t, 0x10);
    // Only VERSION_1: no optional feature changes the data path measured here.
    reg_write(t, 0x24, 0);
    reg_write(t, 0x20, 0);
    reg_write(t, 0x24, 1);
    reg_write(t, 0x20, hi & (1 << (VIRTIO_F_VERSION_1 - 32)));
    let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
    reg_write(t, 0x70, s);
    let regs = [(0x80, DESC_TABLE), (0x90, AVAIL_RING), (0xa0, USED_RING)];
    reg_write(t, 0x30, 0);
    reg_write(t, 0x38, u32::from(QUEUE_SIZE));
    for (reg, addr) in regs {
        reg_write(t, reg, addr as u32);
        reg_write(t, reg + 4, (addr >> 32) as u32);
    }
    reg_write(t, 0x44, 1);
    reg_write(t, 0x70, s | status::DRIVER_OK);
    reg_read(t, 0x70)
}

fn desc(addr: u64, len: u64, flags: u32, next: u16) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len as u32, flags as u16, next))
}

fn run(a: &Args) -> Result<(), String> {
    let disk = open_disk(
        &a.image,
        &DiskOptions {
            read_only: !a.write,
            format: a.format,
            cache: a.cache,
        },
    )
    .map_err(|e| e.to_string())?;
    let image_size = disk.size();
    if image_size < a.size {
        return Err("image smaller than one request".into());
    }
    let step = a.step.unwrap_or(a.size);

    let mem_size = (DATA + MAX_DEPTH * MAX_SIZE) as usize;
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), mem_size)])
        .map_err(|e| format!("guest memory: {e}"))?;
    if a.thp {
        devices::advise_huge_pages(&mem).map_err(|e| format!("guest memory: {e}"))?;
    }
    let table = DescriptorTable::new(&mem, GuestAddress(DESC_TABLE), QUEUE_SIZE);
    let blk = Arc::new(Mutex::new(
        Block::new(
            disk,
            &BlockConfig {
                io_engine: a.engine,
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())?,
    ));
    if blk.lock().unwrap().io_engine() != a.engine {
        return Err("io_uring is unavailable here".into());
    }
    let completion = blk
        .lock()
        .unwrap()
        .completion_evt()
        .map(|e| e.try_clone())
        .transpose()
        .map_err(|e| e.to_string())?;
    let mut t = MmioTransport::new(mem.clone(), blk.clone()).map_err(|e| e.to_string())?;
    if init_device(&mut t) & status::DRIVER_OK == 0 {
        return Err("device did not accept the driver".into());
    }
    let notify = blk.lock().unwrap().queue_events()[0]
        .try_clone()
        .map_err(|e| e.to_string())?;

    // Slot i: descriptors 3i (header), 3i+1 (data), 3i+2 (status), written once.
    let (req_type, data_flags) = if a.write {
        (VIRTIO_BLK_T_OUT, VRING_DESC_F_NEXT)
    } else {
        (VIRTIO_BLK_T_IN, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE)
    };
    for i in 0..a.depth {
        let d = (3 * i) as u16;
        let (hdr, data, st) = (HEADERS + 16 * i, DATA + MAX_SIZE * i, STATUSES + i);
        let store = |idx: u16, raw| table.store(idx, raw).map_err(|e| e.to_string());
        store(d, desc(hdr, 16, VRING_DESC_F_NEXT, d + 1))?;
        store(d + 1, desc(data, a.size, data_flags, d + 2))?;
        store(d + 2, desc(st, 1, VRING_DESC_F_WRITE, 0))?;
        mem.write_obj(req_type, GuestAddress(hdr)).unwrap();
        mem.write_obj(0u32, GuestAddress(hdr + 4)).unwrap();
        mem.write_slice(&vec![0xa5; a.size as usize], GuestAddress(data))
            .unwrap();
    }

    let avail = GuestAddress(AVAIL_RING);
    let used = GuestAddress(USED_RING);
    let mut avail_idx: u16 = 0;
    let mut used_seen: u16 = 0;
    let mut offset = a.offset;
    let (mut issued, mut completed) = (0u64, 0u64);
    // When each slot's request was posted, and every request's latency (post to reap), in microseconds.
    let mut posted_at = vec![Instant::now(); a.depth as usize];
    let mut latencies_us: Vec<u32> = Vec::with_capacity(a.count as usize);
    // Posts the request of slot `i` at the next offset (published by the caller).
    let mut post = |i: u64, avail_idx: &mut u16| {
        mem.write_obj(offset / 512, GuestAddress(HEADERS + 16 * i + 8))
            .unwrap();
        mem.write_obj(0xffu8, GuestAddress(STATUSES + i)).unwrap();
        let ring_slot = u64::from(*avail_idx % QUEUE_SIZE);
        mem.write_obj((3 * i) as u16, avail.unchecked_add(4 + 2 * ring_slot))
            .unwrap();
        *avail_idx = avail_idx.wrapping_add(1);
        offset = (offset + step) % image_size;
    };
    let start = Instant::now();
    for i in 0..a.depth.min(a.count) {
        post(i, &mut avail_idx);
        posted_at[i as usize] = Instant::now();
        issued += 1;
    }
    mem.write_obj(avail_idx, avail.unchecked_add(2)).unwrap();
    // Kick, as the guest would; the transport writes the queue's notify EventFd.
    reg_write(&mut t, 0x50, 0);
    while completed < a.count {
        // The VMM thread: a kick runs the queue; otherwise it sleeps until the engine completes something.
        if notify.read().is_ok() {
            blk.lock().unwrap().process_queue();
        }
        let used_idx: u16 = mem.read_obj(used.unchecked_add(2)).unwrap();
        if used_idx == used_seen {
            let Some(evt) = &completion else {
                return Err(format!(
                    "{} requests were not completed",
                    issued - completed
                ));
            };
            let mut pfd = libc::pollfd {
                fd: evt.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is one valid pollfd for the duration of the call.
            if unsafe { libc::poll(&mut pfd, 1, 10_000) } <= 0 {
                return Err("no completion within 10 s".into());
            }
            let _ = evt.read();
            blk.lock().unwrap().process_completions();
            continue;
        }
        // The guest's interrupt handler: acknowledge, reap the used ring, refill the freed slots, kick once.
        let isr = reg_read(&mut t, 0x60);
        reg_write(&mut t, 0x64, isr);
        let mut posted = false;
        while used_seen != used_idx {
            let elem = used.unchecked_add(4 + 8 * u64::from(used_seen % QUEUE_SIZE));
            let slot = u64::from(mem.read_obj::<u32>(elem).unwrap() / 3);
            used_seen = used_seen.wrapping_add(1);
            let s: u8 = mem.read_obj(GuestAddress(STATUSES + slot)).unwrap();
            if u32::from(s) != VIRTIO_BLK_S_OK {
                return Err(format!("request failed with status {s}"));
            }
            completed += 1;
            let us = posted_at[slot as usize].elapsed().as_micros();
            latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
            if issued < a.count {
                post(slot, &mut avail_idx);
                posted_at[slot as usize] = Instant::now();
                issued += 1;
                posted = true;
            }
        }
        if posted {
            mem.write_obj(avail_idx, avail.unchecked_add(2)).unwrap();
            reg_write(&mut t, 0x50, 0);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // Outside the timed loop, like qemu-img bench (which flushes only when asked): leave a clean image.
    blk.lock()
        .unwrap()
        .flush_disk()
        .map_err(|e| e.to_string())?;
    let bytes = a.count * a.size;
    latencies_us.sort_unstable();
    let pct = |p: usize| latencies_us[(latencies_us.len() - 1) * p / 100];
    println!(
        "{} {} {:.3} {:.1} {:.0} {} {} {}",
        a.count,
        bytes,
        secs,
        bytes as f64 / secs / f64::from(1 << 20),
        a.count as f64 / secs,
        pct(50),
        pct(99),
        latencies_us.last().copied().unwrap_or(0)
    );
    Ok(())
}

fn main() -> ExitCode {
    match parse_args().and_then(|a| run(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blk_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
