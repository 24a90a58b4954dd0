//! Writes the seed corpora of the devices fuzz targets into `seeds/<target>/` (kept in the repository):
//! valid requests for each virtio device in the harness language of `src/lib.rs`, and qcow2 images of
//! every kind microvm accepts, made by `qemu-img` and stored as the qcow2 target's sparse segments.
//! Run from devices/fuzz: `cargo run --example gen_seeds` (needs qemu-img and qemu-io).

use std::path::{Path, PathBuf};
use std::process::Command;

use devices_fuzz::{encode, queue_layout, Op, DATA_BASE};

const NEXT: u16 = 1;
const WRITE: u16 = 2;

/// One descriptor in the encoding of the split ring.
fn desc(addr: u64, len: u32, flags: u16, next: u16) -> Vec<u8> {
    let mut d = addr.to_le_bytes().to_vec();
    d.extend_from_slice(&len.to_le_bytes());
    d.extend_from_slice(&flags.to_le_bytes());
    d.extend_from_slice(&next.to_le_bytes());
    d
}

/// A chain of `(addr, len, device-writable)` buffers as descriptors `first..` of queue `q`.
fn chain(q: usize, first: u16, bufs: &[(u64, u32, bool)]) -> Op {
    let mut table = Vec::new();
    for (i, &(addr, len, w)) in bufs.iter().enumerate() {
        let last = i + 1 == bufs.len();
        let flags = if last { 0 } else { NEXT } | if w { WRITE } else { 0 };
        table.extend(desc(addr, len, flags, first + i as u16 + 1));
    }
    Op::Mem(
        (queue_layout(q).desc.0 + 16 * u64::from(first)) as u16,
        table,
    )
}

/// The register writes a driver makes to bring a device up with one queue per entry of `queues`, so
/// that seeds without the pre-initialisation flag cover the transport's own state machine.
fn register_init(queues: usize, features_lo: u32) -> Vec<Op> {
    let mut ops = vec![
        Op::Write(0x70, 0),
        Op::Read(0x00),
        Op::Read(0x04),
        Op::Read(0x08),
        Op::Write(0x70, 1),
        Op::Write(0x70, 3),
        Op::Write(0x14, 0),
        Op::Read(0x10),
        Op::Write(0x14, 1),
        Op::Read(0x10),
        Op::Write(0x24, 0),
        Op::Write(0x20, features_lo),
        Op::Write(0x24, 1),
        Op::Write(0x20, 1),
        Op::Write(0x70, 11),
        Op::Read(0x70),
    ];
    for q in 0..queues {
        let l = queue_layout(q);
        ops.extend([
            Op::Write(0x30, q as u32),
            Op::Read(0x34),
            Op::Write(0x38, u32::from(l.size)),
            Op::Write(0x80, l.desc.0 as u32),
            Op::Write(0x84, 0),
            Op::Write(0x90, l.avail.0 as u32),
            Op::Write(0x94, 0),
            Op::Write(0xa0, l.used.0 as u32),
            Op::Write(0xa4, 0),
            Op::Write(0x44, 1),
        ]);
    }
    ops.push(Op::Write(0x70, 15));
    ops
}

/// A virtio-blk request: header at DATA_BASE, data after it, status byte last.
fn blk_req(
    first: u16,
    ty: u32,
    sector: u64,
    data: &[u8],
    data_len: u32,
    to_device: bool,
) -> Vec<Op> {
    let hdr_at = DATA_BASE + 0x200 * u64::from(first);
    let data_at = 0x8000 + 0x1000 * u64::from(first % 8);
    let status_at = hdr_at + 0x100;
    let mut hdr = ty.to_le_bytes().to_vec();
    hdr.extend_from_slice(&0u32.to_le_bytes());
    hdr.extend_from_slice(&sector.to_le_bytes());
    let mut bufs = vec![(hdr_at, 16, false)];
    if data_len > 0 {
        bufs.push((data_at, data_len, !to_device));
    }
    bufs.push((status_at, 1, true));
    let mut ops = vec![Op::Mem(hdr_at as u16, hdr)];
    if !data.is_empty() {
        ops.push(Op::Mem(data_at as u16, data.to_vec()));
    }
    ops.push(chain(0, first, &bufs));
    ops
}

/// A discard or write-zeroes segment.
fn segment(sector: u64, num: u32, flags: u32) -> Vec<u8> {
    let mut s = sector.to_le_bytes().to_vec();
    s.extend_from_slice(&num.to_le_bytes());
    s.extend_from_slice(&flags.to_le_bytes());
    s
}

/// Every virtio-blk request type once, each published and processed.
fn blk_requests() -> Vec<(&'static str, Vec<Op>)> {
    let pattern: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
    let one = |name, ops: Vec<Op>| (name, [ops, vec![Op::Avail(0, 0)]].concat());
    vec![
        one("read", blk_req(0, 0, 1, &[], 1024, false)),
        one("write", blk_req(0, 1, 2, &pattern, 1024, true)),
        one("flush", blk_req(0, 4, 0, &[], 0, true)),
        one("get-id", blk_req(0, 8, 0, &[], 20, false)),
        one("discard", blk_req(0, 11, 0, &segment(8, 16, 0), 16, true)),
        one(
            "write-zeroes",
            blk_req(0, 13, 0, &segment(4, 8, 0), 16, true),
        ),
        one(
            "write-zeroes-unmap",
            blk_req(0, 13, 0, &segment(16, 64, 1), 16, true),
        ),
        one("unsupported", blk_req(0, 99, 0, &[], 512, false)),
        one("beyond-capacity", blk_req(0, 0, 1 << 40, &[], 512, false)),
        (
            "write-then-read",
            [
                blk_req(0, 1, 3, &pattern, 1024, true),
                vec![Op::Avail(0, 0)],
                blk_req(3, 0, 3, &[], 1024, false),
                vec![Op::Avail(0, 3)],
            ]
            .concat(),
        ),
    ]
}

fn write_seed(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn ethernet_frame(len: usize) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x52, 0x54, 0, 0xaa, 0xbb, 0xcc, 0x08, 0x00]);
    f.extend((14..len).map(|i| i as u8));
    f
}

fn net_seeds(dir: &Path) {
    let frame = ethernet_frame(60);
    // tx: header (12 bytes) and frame in one buffer, or split in two.
    let mut hdr_frame = vec![0u8; 12];
    hdr_frame.extend_from_slice(&frame);
    let mut csum_hdr = vec![1u8, 0, 0, 0, 0, 0, 34, 0, 16, 0, 0, 0];
    csum_hdr.extend_from_slice(&frame);
    let tx_one = vec![
        Op::Mem(DATA_BASE as u16, hdr_frame.clone()),
        chain(1, 0, &[(DATA_BASE, hdr_frame.len() as u32, false)]),
        Op::Avail(1, 0),
    ];
    let tx_split = vec![
        Op::Mem(DATA_BASE as u16, hdr_frame.clone()),
        chain(1, 0, &[(DATA_BASE, 12, false), (DATA_BASE + 12, 60, false)]),
        Op::Avail(1, 0),
    ];
    let tx_csum = vec![
        Op::Mem(DATA_BASE as u16, csum_hdr.clone()),
        chain(1, 0, &[(DATA_BASE, csum_hdr.len() as u32, false)]),
        Op::Avail(1, 0),
    ];
    // rx: buffers posted, then a frame from the host.
    let mut from_host = vec![0u8; 12];
    from_host.extend_from_slice(&ethernet_frame(98));
    let rx = vec![
        chain(0, 0, &[(0x8000, 1526, true)]),
        Op::Avail(0, 0),
        chain(0, 1, &[(0x9000, 12, true), (0x9100, 1514, true)]),
        Op::Avail(0, 1),
        Op::Input(from_host.clone()),
        Op::Input(from_host.clone()),
    ];
    // Mergeable buffers: a frame larger than one buffer spreads over several chains.
    let mut big = vec![0u8; 12];
    big.extend_from_slice(&ethernet_frame(1400));
    let rx_mrg = vec![
        chain(0, 0, &[(0x8000, 512, true)]),
        Op::Avail(0, 0),
        chain(0, 1, &[(0x8400, 512, true)]),
        Op::Avail(0, 1),
        chain(0, 2, &[(0x8800, 512, true)]),
        Op::Avail(0, 2),
        Op::Input(big),
    ];
    for (flags, suffix) in [(1u8, ""), (3, "-nofeatures")] {
        write_seed(dir, &format!("tx{suffix}"), &encode(flags, &tx_one));
        write_seed(dir, &format!("tx-split{suffix}"), &encode(flags, &tx_split));
        write_seed(dir, &format!("rx{suffix}"), &encode(flags, &rx));
    }
    write_seed(dir, "tx-csum", &encode(1, &tx_csum));
    write_seed(dir, "rx-mergeable", &encode(1, &rx_mrg));
    let mut by_regs = register_init(2, 0);
    by_regs.extend(tx_one);
    by_regs.push(Op::Write(0x50, 1));
    by_regs.extend(rx);
    write_seed(dir, "registers-tx-rx", &encode(0, &by_regs));
}

fn console_seeds(dir: &Path) {
    let text = b"hello from the guest\n".to_vec();
    let tx = vec![
        Op::Mem(DATA_BASE as u16, text.clone()),
        chain(1, 0, &[(DATA_BASE, 6, false), (DATA_BASE + 6, 15, false)]),
        Op::Avail(1, 0),
    ];
    let rx = vec![
        chain(0, 0, &[(0x8000, 4, true)]),
        Op::Avail(0, 0),
        chain(0, 1, &[(0x8100, 64, true)]),
        Op::Avail(0, 1),
        Op::Input(b"ls -l /\n".to_vec()),
        Op::Input(vec![0x03, 0x1b, b'[', b'A']),
    ];
    write_seed(dir, "tx", &encode(1, &tx));
    write_seed(dir, "rx", &encode(1, &rx));
    let mut by_regs = register_init(2, 0);
    by_regs.extend(tx);
    by_regs.push(Op::Write(0x50, 1));
    by_regs.extend(rx);
    by_regs.push(Op::Read(0x100));
    by_regs.push(Op::Write(0x70, 0));
    write_seed(dir, "registers-tx-rx-reset", &encode(0, &by_regs));
}

/// A vsock packet: the 44-byte header (guest CID 3 to the host, CID 2), then `data`.
fn vsock_pkt(
    op: u16,
    src_port: u32,
    dst_port: u32,
    buf_alloc: u32,
    fwd_cnt: u32,
    data: &[u8],
) -> Vec<u8> {
    let mut p = 3u64.to_le_bytes().to_vec();
    p.extend_from_slice(&2u64.to_le_bytes());
    p.extend_from_slice(&src_port.to_le_bytes());
    p.extend_from_slice(&dst_port.to_le_bytes());
    p.extend_from_slice(&(data.len() as u32).to_le_bytes());
    p.extend_from_slice(&1u16.to_le_bytes());
    p.extend_from_slice(&op.to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes());
    p.extend_from_slice(&buf_alloc.to_le_bytes());
    p.extend_from_slice(&fwd_cnt.to_le_bytes());
    p.extend_from_slice(data);
    p
}

fn vsock_seeds(dir: &Path) {
    // Receive buffers, then packets on the transmit queue, each its own chain.
    let mut rx = Vec::new();
    for i in 0..4u16 {
        rx.push(chain(
            0,
            i,
            &[(0x8000 + 0x1000 * u64::from(i), 0x1000, true)],
        ));
        rx.push(Op::Avail(0, i));
    }
    let tx = |pkts: &[Vec<u8>]| {
        let mut ops = Vec::new();
        for (i, p) in pkts.iter().enumerate() {
            let at = DATA_BASE + 0x400 * i as u64;
            ops.push(Op::Mem(at as u16, p.clone()));
            ops.push(chain(1, i as u16, &[(at, p.len() as u32, false)]));
            ops.push(Op::Avail(1, i as u16));
        }
        ops
    };
    // Packets for connections that do not exist, bogus credit, a length beyond the chain, a REQUEST to a
    // port nobody listens on: RSTs come back.
    let mut unknown = rx.clone();
    unknown.extend(tx(&[
        vsock_pkt(5, 1000, 2000, 4096, 0, b"abc"),
        vsock_pkt(6, 1001, 2000, u32::MAX, u32::MAX, b""),
        vsock_pkt(3, 1002, 2000, 0, 0, b""),
        vsock_pkt(1, 1003, 7777, 4096, 0, b""),
    ]));
    write_seed(dir, "unknown-connections", &encode(1, &unknown));
    // A host client connects to guest port 5 and writes; the guest accepts (RESPONSE, with the host's
    // first port), sends data, asks for credit, shuts down.
    let mut host = rx.clone();
    host.push(Op::Input(b"CONNECT 5\nhello from the host".to_vec()));
    host.extend(tx(&[
        vsock_pkt(2, 5, 1 << 30, 4096, 0, b""),
        vsock_pkt(5, 5, 1 << 30, 4096, 0, b"hello from the guest"),
        vsock_pkt(7, 5, 1 << 30, 4096, 20, b""),
        vsock_pkt(4, 5, 1 << 30, 4096, 20, b""),
    ]));
    host.push(Op::Input(b"CONNECT 4294967296\n".to_vec()));
    host.push(Op::Kick(2));
    write_seed(dir, "host-connection", &encode(1, &host));
}

fn blk_seeds(mmio: &Path, blk: &Path) {
    for (name, ops) in blk_requests() {
        write_seed(mmio, name, &encode(1, &ops));
        for (flags, backend) in [
            (0x11u8, "raw"),
            (0x21, "qcow2-v3"),
            (0x31, "qcow2-v2-overlay"),
        ] {
            write_seed(blk, &format!("{backend}-{name}"), &encode(flags, &ops));
        }
        write_seed(blk, &format!("qcow2-v3-ro-{name}"), &encode(0x61, &ops));
        // The same requests through the Sync (bit 7) and Async (bits 7 and 3) engines.
        for (flags, backend) in [
            (0x91u8, "raw-sync"),
            (0x99, "raw-async"),
            (0xa1, "qcow2-v3-sync"),
            (0xa9, "qcow2-v3-async"),
        ] {
            write_seed(blk, &format!("{backend}-{name}"), &encode(flags, &ops));
        }
    }
    // The transport's state machine driven by registers only, then a request, config reads, a reset.
    let mut by_regs = register_init(1, 0);
    by_regs.extend(blk_req(0, 0, 0, &[], 512, false));
    by_regs.extend([
        Op::Mem(0x200 + 4, vec![0]),
        Op::Mem(0x200 + 2, vec![1, 0]),
        Op::Write(0x50, 0),
        Op::Read(0x60),
        Op::Write(0x64, 1),
        Op::Read(0x100),
        Op::Read(0x104),
        Op::Read(0xfc),
        Op::Write(0x70, 0),
        Op::Read(0x70),
    ]);
    write_seed(mmio, "registers-read-reset", &encode(0, &by_regs));
}

/// Non-zero 512-byte blocks of `img` as the qcow2 target's segments.
fn sparse_segments(img: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < img.len() {
        if img[at..(at + 512).min(img.len())].iter().all(|&b| b == 0) {
            at += 512;
            continue;
        }
        let start = at;
        while at < img.len()
            && at - start < 32 * 1024
            && img[at..(at + 512).min(img.len())].iter().any(|&b| b != 0)
        {
            at += 512;
        }
        let end = at.min(img.len());
        out.extend_from_slice(&(start as u32).to_le_bytes());
        out.extend_from_slice(&((end - start) as u16).to_le_bytes());
        out.extend_from_slice(&img[start..end]);
    }
    // The file's last byte, so the file is as long as qemu-img made it.
    if let Some(last) = img.len().checked_sub(1) {
        out.extend_from_slice(&(last as u32).to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.push(img[last]);
    }
    out
}

fn qemu(tool: &str, args: &[&str]) {
    let s = Command::new(tool).args(args).status().expect(tool);
    assert!(s.success(), "{tool} {args:?}");
}

/// qcow2 images of every kind, each with a read-only and a writable sequence of requests.
fn qcow2_seeds(dir: &Path, images: &Path) {
    let tmp = std::env::temp_dir().join(format!("gen-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::copy(images.join("base.qcow2"), tmp.join("base.qcow2")).unwrap();
    std::fs::write(tmp.join("base.raw"), vec![0x77u8; 256 * 1024]).unwrap();
    let p = |n: &str| tmp.join(n).to_str().unwrap().to_owned();
    let create = |name: &str, opts: &str, size: &str| {
        qemu(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", "-o", opts, &p(name), size],
        );
    };
    let io = |name: &str, cmds: &[&str]| {
        let mut args = Vec::new();
        for c in cmds {
            args.extend(["-c", c]);
        }
        let path = p(name);
        args.push(&path);
        let out = Command::new("qemu-io")
            .args(&args)
            .output()
            .expect("qemu-io");
        assert!(out.status.success(), "qemu-io {args:?}");
    };
    create("v3-4k.qcow2", "cluster_size=4k", "256K");
    io(
        "v3-4k.qcow2",
        &[
            "write -P 0x61 0 8k",
            "write -z 64k 4k",
            "write -P 0x62 100k 6k",
        ],
    );
    create("v2-64k.qcow2", "compat=0.10", "1M");
    io("v2-64k.qcow2", &["write -P 0x63 4k 4k"]);
    create("v3-512.qcow2", "cluster_size=512", "128K");
    io("v3-512.qcow2", &["write -P 0x64 1k 3k", "write -z 8k 1k"]);
    create("v3-2m.qcow2", "cluster_size=2M", "4M");
    io("v3-2m.qcow2", &["write -P 0x65 0 512"]);
    create(
        "v3-refcount1.qcow2",
        "cluster_size=4k,refcount_bits=1",
        "256K",
    );
    io("v3-refcount1.qcow2", &["write -P 0x66 12k 4k"]);
    qemu(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=4k",
            &p("v3-4k.qcow2"),
            &p("compressed.qcow2"),
        ],
    );
    qemu(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4k",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            &p("overlay-qcow2.qcow2"),
            "256K",
        ],
    );
    io("overlay-qcow2.qcow2", &["write -P 0x67 4k 2k"]);
    qemu(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4k,compat=0.10",
            "-b",
            "base.raw",
            "-F",
            "raw",
            &p("overlay-raw.qcow2"),
            "256K",
        ],
    );
    io("overlay-raw.qcow2", &["write -P 0x68 8k 1k"]);
    // Requests: kind (0 read, 1 write, 2 discard, 3 write-zeroes, 4 write-zeroes unmap, 5 flush),
    // offset, length.
    let op = |kind: u8, off: u32, len: u16| {
        let mut o = vec![kind];
        o.extend_from_slice(&off.to_le_bytes());
        o.extend_from_slice(&len.to_le_bytes());
        o
    };
    let reads = [
        op(0, 0, 8192),
        op(0, 4096, 4096),
        op(0, 65_536, 4096),
        op(0, 100 * 1024, 8192),
    ];
    let writes = [
        op(1, 2048, 6000),
        op(0, 0, 16_384),
        op(1, 70_000, 5000),
        op(2, 8192, 8192),
        op(3, 16_384, 4096),
        op(4, 32_768, 8192),
        op(0, 0, 40_000),
        op(5, 0, 0),
    ];
    for name in [
        "v3-4k",
        "v2-64k",
        "v3-512",
        "v3-2m",
        "v3-refcount1",
        "compressed",
        "overlay-qcow2",
        "overlay-raw",
    ] {
        let img = std::fs::read(tmp.join(format!("{name}.qcow2"))).unwrap();
        let segs = sparse_segments(&img);
        let mut ro = vec![0u8, reads.len() as u8];
        ro.extend(reads.concat());
        ro.extend_from_slice(&segs);
        write_seed(dir, &format!("{name}-ro"), &ro);
        let mut rw = vec![1u8, writes.len() as u8];
        rw.extend(writes.concat());
        rw.extend_from_slice(&segs);
        write_seed(dir, &format!("{name}-rw"), &rw);
    }
    // A raw image (what microvm opens for any file without the qcow2 magic): refused by the qcow2 backend.
    let mut raw = vec![0u8, 1];
    raw.extend(op(0, 0, 512));
    raw.extend(sparse_segments(&[0x5a; 4096]));
    write_seed(dir, "raw-image", &raw);
    let _ = std::fs::remove_dir_all(&tmp);
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let seeds = root.join("seeds");
    clear_generated(&seeds);
    blk_seeds(&seeds.join("mmio_transport"), &seeds.join("blk_request"));
    net_seeds(&seeds.join("virtio_net"));
    console_seeds(&seeds.join("virtio_console"));
    vsock_seeds(&seeds.join("virtio_vsock"));
    qcow2_seeds(&seeds.join("qcow2_image"), &root.join("images"));
    for t in std::fs::read_dir(&seeds).unwrap() {
        let t = t.unwrap();
        let n = std::fs::read_dir(t.path()).unwrap().count();
        println!("{}: {n} seeds", t.file_name().to_string_lossy());
    }
}

/// Removes the generated seeds of every target, keeping the crash reproducers (`crash-*`), which are not
/// generated but kept by hand from fuzzing campaigns.
fn clear_generated(seeds: &std::path::Path) {
    let Ok(targets) = std::fs::read_dir(seeds) else {
        return;
    };
    for target in targets.flatten() {
        for seed in std::fs::read_dir(target.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if !seed.file_name().to_string_lossy().starts_with("crash-") {
                let _ = std::fs::remove_file(seed.path());
            }
        }
    }
}
