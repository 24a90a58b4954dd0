//! virtio-vsock end to end: `microvm` with a vsock device, clients on its Unix socket.
//!
//! With the PVH test guest (no vsock driver): the device is configured from the flag, the API and a config
//! file and reads back in `GET /vm/config`; its Unix socket closes a malformed `CONNECT` line or a port out of range at
//! once, and a `CONNECT` the guest never answers after the timeout, while the VM runs on.
//!
//! With the guest kernel and the rootfs program `vsock` (rootfs/c/vsock.c, glibc and musl builds): host to
//! guest through `CONNECT` to the guest's echo server, 32 connections open at once; guest to host through
//! `<uds_path>_PORT`; a guest connection to a port nobody listens on (ECONNRESET, as Linux); one to a CID
//! nobody answers for (ETIMEDOUT; non-blocking, poll and epoll woken at the 2 s deadline); bulk data
//! each way with a CRC-32 on both ends (8 MiB, or MICROVM_VSOCK_MIB); SO_RCVTIMEO (EAGAIN); a guest that never reads: the host's writes block after a bounded
//! amount and the VMM's RSS stays put, and the guest still answers on other connections.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tests::{read_http_response, require_kvm, wait_until, GuestImages, Rng, Vm};

const T: Duration = Duration::from_secs(60);
/// Host connections open at once to the guest's echo server.
const CONNS: usize = 32;
const PVH: &str = env!("GUEST_PVH");

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("microvm-vsock-{}-{name}", std::process::id()))
}

/// Reads until EOF (or a reset, which also closes), within `timeout`; returns what came.
fn read_to_close(s: &mut UnixStream, timeout: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut out = Vec::new();
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&b[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("the socket was not closed within {timeout:?}: {e}"),
        }
    }
}

fn api(sock: &PathBuf, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    read_http_response(&mut s)
}

#[test]
fn the_host_side_refuses_bad_lines_and_times_out_unanswered_connects() {
    if !require_kvm() {
        return;
    }
    let uds = tmp("a.sock");
    let api_sock = tmp("a.api");
    let vm = Vm::spawn(&[
        "--kernel",
        PVH,
        "--cmdline",
        "count",
        "--vsock",
        &format!("cid=3,uds={}", uds.display()),
        "--api-sock",
        api_sock.to_str().unwrap(),
    ]);
    vm.wait_for_output("counting", T);
    assert!(wait_until(T, || UnixStream::connect(&uds).is_ok()));
    let (status, body) = api(&api_sock, "GET", "/vm/config", "");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["vsock"],
        serde_json::json!({"guest_cid": 3, "uds_path": uds.to_str().unwrap()})
    );
    for line in [
        "CONNECT x\n",
        "CONNECT 4294967296\n",
        "GET / HTTP/1.0\r\n\r\n",
    ] {
        let mut c = UnixStream::connect(&uds).unwrap();
        c.write_all(line.as_bytes()).unwrap();
        assert_eq!(read_to_close(&mut c, T), b"", "{line:?}");
    }
    // The guest has no driver: the REQUEST is never answered, and the client is closed after 5 s.
    let start = Instant::now();
    let mut c = UnixStream::connect(&uds).unwrap();
    c.write_all(b"CONNECT 1024\n").unwrap();
    assert_eq!(read_to_close(&mut c, T), b"");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(4), "closed after {waited:?}");
    let (status, _) = api(&api_sock, "GET", "/", "");
    assert_eq!(status, 200, "the VMM still answers");
    let n = vm.stdout().matches("count ").count();
    assert!(wait_until(T, || vm.stdout().matches("count ").count() > n));
    drop(vm);
    let _ = std::fs::remove_file(&uds);
}

#[test]
fn a_config_files_vsock_section_makes_the_device() {
    if !require_kvm() {
        return;
    }
    let uds = tmp("cfg.sock");
    let cfg = tmp("cfg.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"boot-source": {{"kernel_image_path": "{PVH}", "boot_args": "count"}},
                "vsock": {{"vsock_id": "vsock0", "guest_cid": 7, "uds_path": "{}"}}}}"#,
            uds.display()
        ),
    )
    .unwrap();
    let vm = Vm::spawn(&["--config-file", cfg.to_str().unwrap()]);
    vm.wait_for_output("counting", T);
    assert!(vm.stdout().contains("virtio_mmio.device=4K@0xd0000000:5"));
    let mut c = UnixStream::connect(&uds).unwrap();
    c.write_all(b"CONNECT\n").unwrap();
    assert_eq!(read_to_close(&mut c, T), b"");
    drop(vm);
    for f in [&uds, &cfg] {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn put_vsock_before_start_and_refused_after() {
    if !require_kvm() {
        return;
    }
    let uds = tmp("b.sock");
    let api_sock = tmp("b.api");
    let vm = Vm::spawn(&["--api-sock", api_sock.to_str().unwrap()]);
    assert!(wait_until(T, || UnixStream::connect(&api_sock).is_ok()));
    let body = format!(
        r#"{{"vsock_id": "vsock0", "guest_cid": 3, "uds_path": "{}"}}"#,
        uds.display()
    );
    let (status, answer) = api(
        &api_sock,
        "PUT",
        "/vsock",
        r#"{"guest_cid": 2, "uds_path": "x"}"#,
    );
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("guest_cid 2 is reserved"), "{answer}");
    let (status, answer) = api(&api_sock, "PUT", "/vsock", r#"{"guest_cid": 3}"#);
    assert_eq!(status, 400, "{answer}");
    assert_eq!(api(&api_sock, "PUT", "/vsock", &body).0, 204);
    let boot = format!(r#"{{"kernel_image_path": "{PVH}", "boot_args": "count"}}"#);
    assert_eq!(api(&api_sock, "PUT", "/boot-source", &boot).0, 204);
    let start = r#"{"action_type": "InstanceStart"}"#;
    assert_eq!(api(&api_sock, "PUT", "/actions", start).0, 204);
    vm.wait_for_output("counting", T);
    assert!(UnixStream::connect(&uds).is_ok());
    let (status, answer) = api(&api_sock, "PUT", "/vsock", &body);
    assert_eq!(status, 400, "{answer}");
    assert!(vm.stdout().contains("virtio_mmio.device=4K@0xd0000000:5"));
    drop(vm);
    let _ = std::fs::remove_file(&uds);
}

/// CRC-32 (IEEE), as the rootfs program computes it.
fn crc32(mut crc: u32, data: &[u8]) -> u32 {
    crc = !crc;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                0xedb8_8320 ^ (crc >> 1)
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Connects through the device's socket to guest port `port`: `CONNECT`, then `OK <host_port>`.
fn host_connect(uds: &Path, port: u32) -> UnixStream {
    let mut s = UnixStream::connect(uds).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.last() != Some(&b'\n') {
        match s.read(&mut b) {
            Ok(1) => line.push(b[0]),
            other => panic!("CONNECT {port}: no OK line ({other:?}) after {line:?}"),
        }
    }
    let text = String::from_utf8(line).unwrap();
    assert!(text.starts_with("OK "), "{text:?}");
    s
}

/// The VMM's resident set in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

struct Guest {
    vm: Vm,
    uds: PathBuf,
}

impl Guest {
    fn boot(tag: &str) -> Option<Guest> {
        let images = GuestImages::for_vm()?;
        let uds = tmp(&format!("{tag}.sock"));
        let _ = std::fs::remove_file(&uds);
        let vsock = format!("cid=3,uds={}", uds.display());
        let vm = Vm::spawn(&images.shell_args(&["--mem", "256", "--vsock", &vsock]));
        vm.wait_for_output("virtio-vsock: at", T);
        vm.wait_for_output("# ", T);
        Some(Guest { vm, uds })
    }

    fn sh(&mut self, line: &str) {
        self.vm.send(format!("{line}\n").as_bytes());
    }

    /// Waits for `text` to be on the console `n` times.
    fn wait_count(&self, text: &str, n: usize) {
        let ok = wait_until(T, || self.vm.stdout().matches(text).count() >= n);
        assert!(ok, "no {n}x {text:?}; console:\n{}", self.vm.stdout());
    }

    /// The whole console line that starts with `prefix` (the last one).
    fn line(&self, prefix: &str) -> String {
        let get = || {
            let out = self.vm.stdout();
            let i = out.rfind(prefix)?;
            let len = out[i..].find('\n')?;
            Some(out[i..i + len].trim_end_matches('\r').to_string())
        };
        assert!(
            wait_until(T, || get().is_some()),
            "no line {prefix:?}; console:\n{}",
            self.vm.stdout()
        );
        get().unwrap()
    }

    fn poweroff(mut self) -> String {
        self.sh("poweroff");
        let out = self.vm.wait(T);
        assert_eq!(out.code, Some(0), "microvm: {}", out.stdout);
        let _ = std::fs::remove_file(&self.uds);
        out.stdout
    }
}

/// Host side of a guest-to-host connection: accepts one connection on `<uds>_PORT` in a thread and
/// reads it to its end; answers with `reply(received bytes)`.
fn host_port_server(
    uds: &Path,
    port: u32,
    reply: impl FnOnce(&[u8]) -> Vec<u8> + Send + 'static,
) -> std::thread::JoinHandle<Vec<u8>> {
    let path = format!("{}_{port}", uds.display());
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(&reply(&got)).unwrap();
        let _ = std::fs::remove_file(&path);
        got
    })
}

#[test]
fn guest_kernel_vsock_both_directions_bulk_and_a_reader_that_stalls() {
    let Some(mut g) = Guest::boot("guest") else {
        return;
    };
    // Host to guest: an echo server, many connections open at once (all connected before any data),
    // each written before any is read back.
    g.sh("vsock-glibc server 1024 &");
    g.wait_count("vsock: listening on port 1024", 1);
    let mut conns: Vec<UnixStream> = (0..CONNS).map(|_| host_connect(&g.uds, 1024)).collect();
    let mut rng = Rng(7);
    let payloads: Vec<Vec<u8>> = (0..conns.len())
        .map(|i| {
            (0..1000 * (i % 8 + 1))
                .map(|_| rng.below(256) as u8)
                .collect()
        })
        .collect();
    for (c, p) in conns.iter_mut().zip(&payloads) {
        c.write_all(p).unwrap();
    }
    for (c, p) in conns.iter_mut().zip(&payloads) {
        let mut back = vec![0u8; p.len()];
        c.read_exact(&mut back).unwrap();
        assert!(back == *p, "echo differs");
    }
    g.wait_count("vsock: accepted cid 2 port 10737418", conns.len());
    drop(conns);

    // Guest to host, glibc and musl builds.
    for (i, libc) in ["glibc", "musl"].iter().enumerate() {
        let port = 5000 + i as u32;
        let h = host_port_server(&g.uds, port, |got| {
            let mut r = b"host saw: ".to_vec();
            r.extend_from_slice(got);
            r
        });
        g.sh(&format!("echo hello-{libc} | vsock-{libc} client 2 {port}"));
        g.wait_count(&format!("host saw: hello-{libc}"), 1);
        assert_eq!(h.join().unwrap(), format!("hello-{libc}\n").as_bytes());
    }
    // Nothing listening on the host's side of a port: the guest's connect fails as on Linux.
    g.sh("vsock-musl connect 2 5999");
    assert_eq!(
        g.line("vsock: connect:"),
        "vsock: connect: ECONNRESET (errno 104)"
    );
    // A connect nobody answers (CID 9 is not reachable through the device, which drops the REQUEST as
    // Firecracker and vhost-vsock do): ETIMEDOUT after Linux's 2 s when blocking; non-blocking, poll
    // and epoll_wait are woken at that deadline with POLLOUT|POLLERR and SO_ERROR is ETIMEDOUT.
    g.sh("vsock-musl connect 9 5999");
    g.wait_count("vsock: connect: ETIMEDOUT (errno 110)", 1);
    for (i, how) in ["poll", "epoll"].iter().enumerate() {
        g.sh(&format!("vsock-glibc connect 9 5999 --nonblock {how}"));
        g.wait_count("vsock: nonblocking connect:", i + 1);
        let line = g.line("vsock: nonblocking connect:");
        let ms: u64 = line
            .split(" after ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line:?}"));
        assert!(
            line.starts_with("vsock: nonblocking connect: POLLOUT|POLLERR after ")
                && line.ends_with(" ms, SO_ERROR ETIMEDOUT"),
            "{how}: {line:?}"
        );
        // Woken at the deadline (the guest's clock; a tick's granularity), not at poll's own 30 s.
        assert!((1990..10_000).contains(&ms), "{how}: {line:?}");
    }

    // Bulk, host to guest.
    let mib: usize = std::env::var("MICROVM_VSOCK_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    g.sh("vsock-glibc recv 1025");
    g.wait_count("vsock: listening on port 1025", 1);
    let mut c = host_connect(&g.uds, 1025);
    let mut crc = 0;
    let start = Instant::now();
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        chunk.iter_mut().for_each(|b| *b = rng.below(256) as u8);
        crc = crc32(crc, &chunk);
        c.write_all(&chunk).unwrap();
    }
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert!(
        answer.starts_with(&format!("received {} bytes crc {crc:08x}", mib << 20)),
        "{answer:?}"
    );
    eprintln!(
        "vsock host->guest: {mib} MiB in {secs:.2} s ({:.1} MB/s)",
        (mib << 20) as f64 / secs / 1e6
    );

    // Bulk, guest to host.
    let h = host_port_server(&g.uds, 5002, |got| {
        format!(
            "host received {} bytes crc {:08x}\n",
            got.len(),
            crc32(0, got)
        )
        .into_bytes()
    });
    let start = Instant::now();
    g.sh(&format!("vsock-musl send 2 5002 {mib}"));
    // The host's reader ends with the data (each read within T); the guest's line is out by then.
    let got = h.join().unwrap();
    let secs = start.elapsed().as_secs_f64();
    let sent = g.line("vsock: sent ");
    let peer = g.line("vsock: peer: ");
    assert_eq!(got.len(), mib << 20);
    let want = format!("vsock: sent {} bytes crc {:08x}", mib << 20, crc32(0, &got));
    assert!(sent.starts_with(&want), "{sent:?} vs {want:?}");
    assert!(
        peer.contains(&format!("crc {:08x}", crc32(0, &got))),
        "{peer}"
    );
    eprintln!(
        "vsock guest->host: {mib} MiB in {secs:.2} s ({:.1} MB/s)",
        (mib << 20) as f64 / secs / 1e6
    );

    // SO_RCVTIMEO: a receiver whose peer sends nothing gives up with EAGAIN after its timeout.
    g.sh("vsock-glibc recv 1027 --timeout 1");
    g.wait_count("vsock: listening on port 1027", 1);
    let quiet = host_connect(&g.uds, 1027);
    assert_eq!(g.line("vsock: read:"), "vsock: read: EAGAIN (errno 11)");
    drop(quiet);

    // A guest that never reads: the host's writes stop after a bounded amount, the VMM's memory does
    // not grow, and the guest's other connections still work.
    g.sh("vsock-glibc noread 1026 &");
    g.wait_count("vsock: listening on port 1026", 1);
    let mut stuck = host_connect(&g.uds, 1026);
    g.wait_count("vsock: not reading", 1);
    stuck.set_nonblocking(true).unwrap();
    let rss_before = rss_kib(g.vm.pid());
    let block = vec![0x5a_u8; 64 * 1024];
    let mut written = 0usize;
    let mut idle_since = Instant::now();
    while idle_since.elapsed() < Duration::from_secs(3) {
        match stuck.write(&block) {
            Ok(n) => {
                written += n;
                idle_since = Instant::now();
                assert!(
                    written < 64 << 20,
                    "the host wrote {written} bytes into a stalled guest"
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("{e}"),
        }
    }
    let rss_after = rss_kib(g.vm.pid());
    eprintln!("vsock stalled reader: the host wrote {written} bytes; VMM RSS {rss_before} -> {rss_after} KiB");
    assert!(
        rss_after < rss_before + 8 * 1024,
        "VMM RSS grew from {rss_before} to {rss_after} KiB"
    );
    let mut again = host_connect(&g.uds, 1024);
    again.write_all(b"still here").unwrap();
    let mut back = [0u8; 10];
    again.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"still here");
    drop((again, stuck));
    let out = g.poweroff();
    assert!(out.contains("vsock: cid 3: rx "), "{out}");
}

#[test]
fn a_restored_guest_drops_its_connections_and_serves_new_ones() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let uds = tmp("snap.sock");
    let uds2 = tmp("snap2.sock");
    let api_sock = tmp("snap.api");
    let (state, mem) = (tmp("snap-state"), tmp("snap-mem"));
    let vsock = format!("cid=3,uds={}", uds.display());
    let mut vm = Vm::spawn(&images.shell_args(&[
        "--mem",
        "128",
        "--vsock",
        &vsock,
        "--api-sock",
        api_sock.to_str().unwrap(),
    ]));
    vm.wait_for_output("# ", T);
    vm.send(b"vsock-glibc server 1024 --count 2 &\n");
    vm.wait_for_output("vsock: listening on port 1024", T);
    let mut old = host_connect(&uds, 1024);
    old.write_all(b"before").unwrap();
    let mut b = [0u8; 6];
    old.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"before");
    assert_eq!(
        api(&api_sock, "PATCH", "/vm", r#"{"state": "Paused"}"#).0,
        204
    );
    let body = format!(
        r#"{{"snapshot_path": "{}", "mem_file_path": "{}"}}"#,
        state.display(),
        mem.display()
    );
    let (status, answer) = api(&api_sock, "PUT", "/snapshot/create", &body);
    assert_eq!(status, 204, "{answer}");
    vm.signal(libc::SIGKILL);
    drop(vm.wait(T));
    drop(old);

    // Restored on another socket path (Firecracker's vsock_override): the guest gets a transport reset,
    // its server sees the old connection end, and a new one works.
    let vm = Vm::spawn(&[
        "--restore",
        state.to_str().unwrap(),
        "--mem-file",
        mem.to_str().unwrap(),
        "--vsock-override",
        uds2.to_str().unwrap(),
        "--resume",
    ]);
    assert!(wait_until(T, || UnixStream::connect(&uds2).is_ok()));
    let mut new = host_connect(&uds2, 1024);
    new.write_all(b"after").unwrap();
    let mut b = [0u8; 5];
    new.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"after");
    drop(new);
    vm.wait_for_output("vsock: 2 connections served", T);
    drop(vm);
    for f in [&uds, &uds2, &state, &mem] {
        let _ = std::fs::remove_file(f);
    }
}

/// The PVH test guest's `vsockbad` (tests/guests/virtio_vsock.c) sends raw packets: for connections that do
/// not exist (RST back, none for an RST), a length beyond its chain (reset), another source CID (dropped), a
/// REQUEST nobody on the host takes (RST); then it accepts a host connection with a `fwd_cnt` far ahead of
/// anything sent (no credit: the host sends nothing), then grants 4096 bytes (the host sends exactly
/// that). The VMM answers its API throughout.
#[test]
fn a_guest_sending_bad_packets_and_bogus_credit_is_reset_never_served_beyond_credit() {
    if !require_kvm() {
        return;
    }
    let uds = tmp("bad.sock");
    let api_sock = tmp("bad.api");
    let vm = Vm::spawn(&[
        "--kernel",
        PVH,
        "--cmdline",
        "vsockbad count",
        "--vsock",
        &format!("cid=5,uds={}", uds.display()),
        "--api-sock",
        api_sock.to_str().unwrap(),
    ]);
    vm.wait_for_output("vsock: waiting for CONNECT 5", T);
    let out = vm.stdout();
    for port in [1000, 1001, 1002, 1004] {
        assert!(
            out.contains(&format!("vsock: rst for port {port}\n")),
            "{out}"
        );
    }
    let mut c = host_connect(&uds, 5);
    c.set_nonblocking(true).unwrap();
    let block = vec![0x42u8; 64 * 1024];
    let mut written = 0;
    while written < block.len() {
        match c.write(&block[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(written >= 8192, "only {written} bytes went into the socket");
    vm.wait_for_output("vsock: done", T);
    let out = vm.stdout();
    assert!(out.contains("vsock: 0 bytes with bogus credit\n"), "{out}");
    assert!(
        out.contains("vsock: 4096 bytes with 4096 credit\n"),
        "{out}"
    );
    vm.wait_for_output("counting", T);
    assert_eq!(api(&api_sock, "GET", "/", "").0, 200);
    let (status, body) = api(&api_sock, "GET", "/metrics", "");
    assert_eq!(status, 200, "{body}");
    let m: serde_json::Value = serde_json::from_str(&body).unwrap();
    let v = &m["vsock"];
    assert_eq!(v["host_connects"], 1, "{v}");
    assert_eq!(v["rx_bytes_count"], 4096, "{v}");
    assert!(v["rsts_sent"].as_u64().unwrap() >= 4, "{v}");
    assert!(v["malformed"].as_u64().unwrap() >= 2, "{v}");
    drop(vm);
    let _ = std::fs::remove_file(&uds);
}
