//! Firecracker's rate limiters enforced in a real VM: the test guest (tests/guests/virtio_blk.c,
//! `blkbulk=N`) reads 4 MiB from a drive in 64 KiB requests, one at a time, and the host times the read
//! between the guest's two marker lines. With a `bandwidth` bucket of 1 MiB/s (512 KiB per 500 ms,
//! starting full) the read cannot take less than 3.5 s; with an `ops` bucket of 16 requests/s (8 per
//! 500 ms) neither can 64 requests; without a limiter the same read is much faster.
//!
//! Network: the echo guest (tests/guests/virtio_net.c) in a namespace of its own; with a
//! `tx_rate_limiter` of 10 frames/s (5 per 500 ms) 30 echoes cannot come back in less than 2.5 s; then
//! `PATCH /network-interfaces/eth0` removes it and sets an `rx_rate_limiter` of 10 KB/s (5000 bytes per
//! 500 ms), and 30 frames of 1042 bytes cannot reach the guest in less than 2.6 s. Both throttle counters
//! show in `GET /metrics`, and the limiters read back from `GET /vm/config`.

use std::io::Write;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tests::{read_http_response, require_kvm, retry_interrupted, wait_until, Netns, Vm};

const T: Duration = Duration::from_secs(90);
const PVH: &str = env!("GUEST_PVH");
/// 64 requests of 64 KiB.
const REQUESTS: u64 = 64;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("microvm-ratelimit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Boots the test guest on a 4 MiB drive with `rate_limiter` (JSON, or empty for none) and returns how
/// long the guest took to read it all.
fn timed_bulk_read(tag: &str, rate_limiter: &str) -> Duration {
    let img = tmp(&format!("{tag}.img"));
    std::fs::File::create(&img)
        .unwrap()
        .set_len(REQUESTS * 65536)
        .unwrap();
    let limiter = if rate_limiter.is_empty() {
        String::new()
    } else {
        format!(r#", "rate_limiter": {rate_limiter}"#)
    };
    let config = tmp(&format!("{tag}.json"));
    std::fs::write(
        &config,
        format!(
            r#"{{"boot-source": {{"kernel_image_path": "{PVH}", "boot_args": "blkbulk={REQUESTS} exit=0"}},
                "machine-config": {{"vcpu_count": 1, "mem_size_mib": 32}},
                "drives": [{{"drive_id": "data", "path_on_host": "{}", "is_root_device": false,
                             "is_read_only": true{limiter}}}]}}"#,
            img.display()
        ),
    )
    .unwrap();
    let vm = Vm::spawn(&["--config-file", config.to_str().unwrap()]);
    vm.wait_for_output("blk: bulk start", T);
    let t0 = Instant::now();
    vm.wait_for_output("blk: bulk done", T);
    let took = t0.elapsed();
    let out = vm.wait(T);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    took
}

#[test]
fn drive_rate_limiters_hold_the_guest_to_their_rate() {
    if !require_kvm() {
        return;
    }
    let free = timed_bulk_read("free", "");
    let bw = timed_bulk_read(
        "bandwidth",
        r#"{"bandwidth": {"size": 524288, "refill_time": 500}}"#,
    );
    let ops = timed_bulk_read("ops", r#"{"ops": {"size": 8, "refill_time": 500}}"#);
    eprintln!("4 MiB in 64 KiB reads: unlimited {free:?}, 1 MiB/s {bw:?}, 16 ops/s {ops:?}");
    // 3.5 MiB past the first full bucket at 1 MiB/s; 56 requests past the first 8 at 16/s. The timing
    // of the marker lines on the host may shave a few ms off either end.
    assert!(bw >= Duration::from_millis(3400), "bandwidth: {bw:?}");
    assert!(ops >= Duration::from_millis(3400), "ops: {ops:?}");
    // Not slower than the rate by much more than the machine's load can explain.
    assert!(bw < Duration::from_secs(20), "bandwidth: {bw:?}");
    assert!(ops < Duration::from_secs(20), "ops: {ops:?}");
    assert!(free < bw / 2, "unlimited {free:?} against limited {bw:?}");
}

const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const GUEST_MAC: &str = "06:00:00:00:00:02";

fn api(sock: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    read_http_response(&mut s)
}

/// Sends `count` datagrams of `len` bytes at once and times until every echo is back.
fn timed_echoes(udp: &UdpSocket, count: usize, len: usize) -> Duration {
    let t0 = Instant::now();
    for i in 0..count {
        udp.send(&vec![i as u8; len]).unwrap();
    }
    let mut buf = vec![0u8; 2048];
    for i in 0..count {
        let n = retry_interrupted(|| udp.recv(&mut buf))
            .unwrap_or_else(|e| panic!("echo {i} of {count}: {e}"));
        assert_eq!(n, len);
    }
    t0.elapsed()
}

#[test]
fn interface_rate_limiters_hold_and_patch() {
    if !require_kvm() {
        return;
    }
    let Some(ns) = Netns::new("ratelim") else {
        return;
    };
    // The guest answers no ARP once the limiter holds its frames: a fixed neighbour entry.
    ns.static_neighbour("10.0.0.2", GUEST_MAC);
    let sock = tmp("net.sock");
    let config = tmp("net.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"boot-source": {{"kernel_image_path": "{PVH}", "boot_args": "netecho netip=10.0.0.2 halt"}},
                "machine-config": {{"vcpu_count": 1, "mem_size_mib": 32}},
                "network-interfaces": [{{"iface_id": "eth0", "host_dev_name": "{}", "guest_mac": "{GUEST_MAC}",
                    "tx_rate_limiter": {{"ops": {{"size": 5, "refill_time": 500}}}}}}]}}"#,
            tests::TAP
        ),
    )
    .unwrap();
    let vm = ns.spawn(&[
        "--config-file",
        config.to_str().unwrap(),
        "--api-sock",
        sock.to_str().unwrap(),
    ]);
    vm.wait_for_output("net: echo ready", T);
    let udp = ns.enter(move || {
        let s = UdpSocket::bind((HOST_IP, 0)).unwrap();
        s.connect((GUEST_IP, 7)).unwrap();
        s
    });
    udp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let tx = timed_echoes(&udp, 30, 100);

    let (status, e) = api(
        &sock,
        "PATCH",
        "/network-interfaces/eth0",
        r#"{"iface_id": "eth0", "tx_rate_limiter": {"ops": {"size": 0, "refill_time": 0}},
            "rx_rate_limiter": {"bandwidth": {"size": 5000, "refill_time": 500}}}"#,
    );
    assert_eq!(status, 204, "{e}");
    let rx = timed_echoes(&udp, 30, 1000);
    eprintln!("30 echoes: tx limited to 10 frames/s {tx:?}; rx limited to 10 KB/s {rx:?}");
    assert!(tx >= Duration::from_millis(2400), "tx: {tx:?}");
    assert!(rx >= Duration::from_millis(2500), "rx: {rx:?}");
    assert!(tx < Duration::from_secs(20) && rx < Duration::from_secs(20));

    let (_, m) = api(&sock, "GET", "/metrics", "");
    let m: serde_json::Value = serde_json::from_str(&m).unwrap();
    let eth0 = &m["net"]["eth0"];
    assert!(
        eth0["tx_rate_limiter_throttled"].as_u64().unwrap() > 0,
        "{m}"
    );
    assert!(
        eth0["rx_rate_limiter_throttled"].as_u64().unwrap() > 0,
        "{m}"
    );
    let (_, c) = api(&sock, "GET", "/vm/config", "");
    let c: serde_json::Value = serde_json::from_str(&c).unwrap();
    let iface = &c["network-interfaces"][0];
    assert!(iface.get("tx_rate_limiter").is_none(), "{c}");
    assert_eq!(
        iface["rx_rate_limiter"],
        serde_json::json!({"bandwidth": {"size": 5000, "refill_time": 500}})
    );
    let (status, e) = api(
        &sock,
        "PATCH",
        "/network-interfaces/eth9",
        r#"{"iface_id": "eth9"}"#,
    );
    assert_eq!(status, 400, "{e}");
    assert!(e.contains("no network interface"), "{e}");

    ns.enter(|| {
        let s = UdpSocket::bind((HOST_IP, 0)).unwrap();
        s.send_to(b"stop", (GUEST_IP, 9)).unwrap();
    });
    vm.wait_for_output("halting", T);
    vm.signal(libc::SIGTERM);
    let out = vm.wait(T);
    assert_eq!(out.code, Some(143), "{}", out.stderr);
    assert!(wait_until(T, || !sock.exists()));
}
