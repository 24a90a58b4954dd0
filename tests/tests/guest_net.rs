//! Networking in the project's guest kernel (virtio-net driver, smoltcp, sockets) end to end: each test
//! boots build/guest-kernel with build/rootfs.qcow2 under `microvm` inside a network namespace of its
//! own, with a TAP (10.0.0.1/24, MTU 65520) that the guest (10.0.0.2, the kernel's default) reaches, and
//! drives the guest's shell on the console (`init -- rc`).
//!
//! Asserted: the host pings the guest; UDP round trips through `udp-echo`; curl fetches files from the
//! guest's `httpd` byte for byte (and gets 404 for a missing one); the guest's `tcp-cat` sends its stdin to
//! a server on the host, half-closes, and prints the reply (and sees ECONNREFUSED, its read timeout, and
//! EPIPE after a reset); 100 MiB cross TCP each way with matching
//! CRC-32s; while the host floods a socket the guest never reads, the guest's console and the VMM's API
//! still answer. A listen backlog queues backlog + 1 established connections before accept, as Linux does
//! (0 gives 1; a negative one means SOMAXCONN), checked against the host's own kernel with the same
//! program; and a process sleeping on one socket is never woken by traffic for another (the kernel counts
//! wake-ups that found their socket unchanged). The namespaces need root (the tests skip without it, like tests/tests/virtio_net.rs).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tests::{require_kvm, retry_interrupted, wait_until, GuestImages, Netns, Vm, TAP};

const T: Duration = Duration::from_secs(120);
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// The largest MTU a TAP takes: big frames are what makes the emulated guest kernel fast.
const MTU: u32 = 65520;

/// A booted guest with a shell on its console, in its own namespace.
struct Guest {
    vm: Vm,
    ns: Netns,
    api: PathBuf,
}

impl Guest {
    fn boot(tag: &str) -> Option<Guest> {
        if !require_kvm() {
            return None;
        }
        let images = GuestImages::find()?;
        let ns = Netns::new(tag)?;
        ns.set_mtu(MTU);
        let api =
            std::env::temp_dir().join(format!("microvm-gnet-{tag}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&api);
        let vm = ns.spawn(&images.shell_args(&[
            "--mem",
            "256",
            "--net",
            &format!("tap={TAP}"),
            "--api-sock",
            api.to_str().unwrap(),
        ]));
        vm.wait_for_output("net: eth0 10.0.0.2/24", T);
        vm.wait_for_output("init: starting /bin/sh on the console", T);
        vm.wait_for_output("# ", T);
        Some(Guest { vm, ns, api })
    }

    /// Types `line` into the guest's shell.
    fn sh(&mut self, line: &str) {
        self.vm.send(format!("{line}\n").as_bytes());
    }

    /// Waits until the console shows `text` at least `n` times.
    fn wait_count(&self, text: &str, n: usize, timeout: Duration) {
        let ok = wait_until(timeout, || self.vm.stdout().matches(text).count() >= n);
        assert!(
            ok,
            "no {n}x {text:?} on the console; it shows:\n{}",
            self.vm.stdout()
        );
    }

    /// Waits for a whole console line with `prefix` (the guest's console is slow: a line shows up a few
    /// characters at a time) and returns it from `prefix` on (a prompt may precede it).
    fn wait_line(&self, prefix: &str, timeout: Duration) -> String {
        let complete = || {
            let out = self.vm.stdout();
            let i = out.rfind(prefix)?;
            let len = out[i..].find('\n')?;
            Some(out[i..i + len].trim_end_matches('\r').to_string())
        };
        let ok = wait_until(timeout, || complete().is_some());
        assert!(
            ok,
            "no whole line {prefix:?} on the console; it shows:\n{}",
            self.vm.stdout()
        );
        complete().unwrap()
    }

    /// GET `path` on the VMM's API socket: (status line, body).
    fn api_get(&self, path: &str) -> (String, String) {
        let mut s = UnixStream::connect(&self.api).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (
            head.lines().next().unwrap_or("").to_string(),
            body.to_string(),
        )
    }

    fn shutdown(self) {
        self.poweroff();
    }

    /// Powers the guest off; its console output.
    fn poweroff(mut self) -> String {
        self.sh("poweroff");
        let out = self.vm.wait(T);
        assert_eq!(out.code, Some(0), "microvm: {}", out.stdout);
        out.stdout
    }
}

#[test]
fn host_pings_the_guest_and_talks_to_udp_echo_and_httpd() {
    let Some(mut g) = Guest::boot("serve") else {
        return;
    };
    // ICMP: smoltcp answers echo requests, small and large.
    g.ns.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "10", "10.0.0.2"]);
    g.ns.exec(&["ping", "-c", "2", "-s", "30000", "-W", "10", "10.0.0.2"]);

    g.sh("udp-echo 7 &");
    g.wait_count("udp-echo: listening on port 7", 1, T);
    let udp = g.ns.enter(|| {
        let s = UdpSocket::bind((HOST_IP, 0)).unwrap();
        s.connect((GUEST_IP, 7)).unwrap();
        s
    });
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for (i, len) in [1usize, 100, 1472, 8000, 60000].into_iter().enumerate() {
        let msg: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
        udp.send(&msg).unwrap();
        let mut back = vec![0u8; 65536];
        let n = retry_interrupted(|| udp.recv(&mut back)).expect("no UDP echo");
        assert_eq!(&back[..n], &msg[..], "UDP echo of {len} bytes");
    }

    g.sh("httpd 80 &");
    g.wait_count("httpd: serving /srv on port 80", 1, T);
    let stage = GuestImages::find().unwrap().stage.join("srv");
    for name in ["index.html", "big.bin"] {
        let out =
            g.ns.command("curl")
                .args(["-sS", "--fail", "--max-time", "60"])
                .arg(format!("http://10.0.0.2/{name}"))
                .output()
                .unwrap();
        assert!(
            out.status.success(),
            "curl {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = std::fs::read(stage.join(name)).unwrap();
        assert!(out.stdout == want, "{name}: the fetched bytes differ");
    }
    let out =
        g.ns.command("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "30",
            ])
            .arg("http://10.0.0.2/missing")
            .output()
            .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    g.shutdown();
}

/// A TCP listener on the host's TAP address.
fn host_listener(ns: &Netns, port: u16) -> TcpListener {
    ns.enter(move || TcpListener::bind((HOST_IP, port)).unwrap())
}

#[test]
fn guest_tcp_cat_talks_to_a_host_server() {
    let Some(mut g) = Guest::boot("fetch") else {
        return;
    };
    let l = host_listener(&g.ns, 8080);
    let server = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        // The guest half-closes after its stdin: read to the end, then answer.
        let mut req = String::new();
        c.read_to_string(&mut req).unwrap();
        c.write_all(format!("reply to [{}] from the host\n", req.trim()).as_bytes())
            .unwrap();
        req
    });
    g.sh("echo hello over tcp | tcp-cat 10.0.0.1 8080");
    g.wait_count("reply to [hello over tcp] from the host", 1, T);
    assert_eq!(server.join().unwrap(), "hello over tcp\n");
    // Nothing listens on this port: the guest sees the host's RST.
    g.sh("tcp-cat 10.0.0.1 8081");
    g.wait_count("Connection refused (os error 111)", 1, T);
    // A server that never answers: the guest's read timeout (SO_RCVTIMEO) ends the read with EAGAIN.
    let l = host_listener(&g.ns, 8082);
    let silent = std::thread::spawn(move || {
        let (c, _) = l.accept().unwrap();
        std::thread::sleep(Duration::from_secs(5));
        drop(c);
    });
    g.sh("tcp-cat --timeout 1 --sum 10.0.0.1 8082");
    g.wait_count(
        "tcp-cat: receive: Resource temporarily unavailable (os error 11)",
        1,
        T,
    );
    silent.join().unwrap();
    g.shutdown();
}

/// CRC-32 (IEEE), as tcp-cat computes it.
fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *t = c;
    }
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// tcp-cat's `--gen` stream.
fn pattern(total: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(total);
    out
}

#[test]
fn hundred_mib_cross_tcp_each_way_intact() {
    const SIZE: usize = 100 << 20;
    let Some(mut g) = Guest::boot("bulk") else {
        return;
    };
    // Host -> guest: the guest checksums what arrives.
    let data: Vec<u8> = pattern(SIZE).iter().map(|b| b ^ 0x5a).collect();
    let want = crc32(&data);
    let l = host_listener(&g.ns, 9001);
    let sender = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let t = Instant::now();
        c.write_all(&data).unwrap();
        drop(c);
        t.elapsed()
    });
    let t = Instant::now();
    g.sh("tcp-cat --sum 10.0.0.1 9001");
    let line = g.wait_line("tcp-cat: received ", Duration::from_secs(600));
    let down = t.elapsed();
    sender.join().unwrap();
    assert!(
        line.starts_with(&format!("tcp-cat: received {SIZE} bytes crc32 {want:08x} ")),
        "{line}"
    );

    // Guest -> host: the host checksums what arrives.
    let l = host_listener(&g.ns, 9000);
    let receiver = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut got = Vec::with_capacity(SIZE);
        c.read_to_end(&mut got).unwrap();
        got
    });
    let t = Instant::now();
    g.sh(&format!("tcp-cat --gen {SIZE} 10.0.0.1 9000"));
    let line = g.wait_line("tcp-cat: sent ", Duration::from_secs(600));
    let up = t.elapsed();
    let got = receiver.join().unwrap();
    assert_eq!(got.len(), SIZE);
    let expect = pattern(SIZE);
    assert!(got == expect, "the bytes the host received differ");
    let crc = crc32(&got);
    assert!(
        line.starts_with(&format!("tcp-cat: sent {SIZE} bytes crc32 {crc:08x} ")),
        "{line}"
    );
    eprintln!(
        "100 MiB host->guest {:.1} s ({:.1} MB/s), guest->host {:.1} s ({:.1} MB/s)",
        down.as_secs_f64(),
        SIZE as f64 / 1e6 / down.as_secs_f64(),
        up.as_secs_f64(),
        SIZE as f64 / 1e6 / up.as_secs_f64()
    );
    g.shutdown();
}

#[test]
fn a_guest_that_stops_reading_does_not_stall_the_vmm() {
    let Some(mut g) = Guest::boot("stall") else {
        return;
    };
    g.sh("tcp-cat --listen 7001 --no-read &");
    g.wait_count("tcp-cat: listening on port 7001", 1, T);
    // The host writes until the guest's window and every buffer on the way are full, and keeps trying.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let flood = g.ns.enter_thread(move || {
        let mut c = std::net::TcpStream::connect((GUEST_IP, 7001)).unwrap();
        c.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let chunk = vec![0xa5u8; 64 * 1024];
        let mut sent = 0usize;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            match c.write(&chunk) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("flood: {e}"),
            }
        }
        sent
    });
    g.wait_count("tcp-cat: connection from 10.0.0.1:", 1, T);
    // Let the buffers fill.
    std::thread::sleep(Duration::from_secs(3));
    let (status, body) = g.api_get("/metrics");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(
        body.contains("rx_no_buffers") || body.contains("rx_packets"),
        "{body}"
    );
    let (status, _) = g.api_get("/");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    g.sh("echo still answering");
    g.wait_count("\nstill answering\n", 1, T);
    g.ns.exec(&["ping", "-c", "2", "-W", "10", "10.0.0.2"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flood.join().unwrap();
    // The guest never read, so at most its window and the buffers on the way got through.
    assert!(sent > 64 * 1024, "the flood sent only {sent} bytes");
    assert!(
        sent < 64 << 20,
        "{sent} bytes went to a socket nobody reads"
    );
    g.shutdown();
}

/// Connects to `to` up to `tries` times, one after another, stopping at the first connection that
/// is not established within a second (its SYN dropped: timed out; or refused); each sends `conn I`
/// and stays open. Nothing accepts meanwhile: the listener's queue alone takes them. Returns the
/// connections and how the first one that failed failed.
fn fill_backlog(
    ns: &Netns,
    to: SocketAddr,
    tries: usize,
) -> (Vec<TcpStream>, Option<std::io::ErrorKind>) {
    ns.enter(move || {
        let mut conns = Vec::new();
        for i in 0..tries {
            match TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
                Ok(mut c) => {
                    c.write_all(format!("conn {i}\n").as_bytes()).unwrap();
                    conns.push(c);
                }
                Err(e) => return (conns, Some(e.kind())),
            }
        }
        (conns, None)
    })
}

/// Tells tcp-backlog on `to` to start accepting, then checks every connection gets its own line back.
/// With `late`, one more client starts connecting first, while the queue is still full: its SYN is
/// dropped, and a retransmission of it gets in once accept has made room.
fn go_and_check_echoes(ns: &Netns, to: SocketAddr, conns: Vec<TcpStream>, late: bool) {
    let late = late.then(|| {
        ns.enter_thread(move || {
            let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(30)).unwrap();
            c.write_all(b"late\n").unwrap();
            c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let mut line = String::new();
            BufReader::new(c).read_line(&mut line).unwrap();
            line
        })
    });
    if late.is_some() {
        // Its first SYN goes out at once; give the thread time to send it before the go.
        std::thread::sleep(Duration::from_millis(300));
    }
    ns.enter(move || {
        let u = UdpSocket::bind((HOST_IP, 0)).unwrap();
        u.send_to(b"go", to).unwrap();
    });
    for (i, c) in conns.into_iter().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut line = String::new();
        BufReader::new(c).read_line(&mut line).unwrap();
        assert_eq!(line, format!("echo: conn {i}\n"));
    }
    if let Some(t) = late {
        assert_eq!(t.join().unwrap(), "echo: late\n");
    }
}

/// (backlog, connections tried, connections Linux queues before accept, a late client): backlog + 1;
/// 0 still takes one; a negative backlog is SOMAXCONN (4096). A connection beyond those times out (its
/// SYN dropped, not refused); a late client that keeps retrying gets in after accept.
const BACKLOGS: [(i32, usize, usize, bool); 3] =
    [(8, 10, 9, false), (0, 2, 1, true), (-1, 12, 12, false)];

#[test]
fn listen_backlog_queues_connections_like_linux_and_wakes_only_their_sleepers() {
    let Some(mut g) = Guest::boot("backlog") else {
        return;
    };
    // The host's own kernel first, with the same program, on its side of the TAP.
    let prog = GuestImages::find().unwrap().host_program("bin/tcp-backlog");
    let mut host_failures = Vec::new();
    for (i, &(backlog, tries, queued, late)) in BACKLOGS.iter().enumerate() {
        let port = 7300 + i as u16;
        let accepts = queued + late as usize;
        let mut child =
            g.ns.command(&prog)
                .args([port.to_string(), backlog.to_string(), accepts.to_string()])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(line.starts_with("tcp-backlog: listening"), "{line}");
        let to = SocketAddr::from((HOST_IP, port));
        let (conns, failure) = fill_backlog(&g.ns, to, tries);
        assert_eq!(conns.len(), queued, "host, backlog {backlog}");
        host_failures.push(failure);
        go_and_check_echoes(&g.ns, to, conns, late);
        assert!(child.wait().unwrap().success());
    }
    // The guest: the same counts.
    for (i, &(backlog, tries, queued, late)) in BACKLOGS.iter().enumerate() {
        let port = 7200 + i as u16;
        let accepts = queued + late as usize;
        g.sh(&format!("tcp-backlog {port} {backlog} {accepts} &"));
        g.wait_count(
            &format!("tcp-backlog: listening on port {port} backlog {backlog}"),
            1,
            T,
        );
        let to = SocketAddr::from((GUEST_IP, port));
        let (conns, failure) = fill_backlog(&g.ns, to, tries);
        assert_eq!(conns.len(), queued, "guest, backlog {backlog}");
        assert_eq!(
            failure, host_failures[i],
            "guest vs host, backlog {backlog}"
        );
        go_and_check_echoes(&g.ns, to, conns, late);
        g.wait_count("tcp-backlog: done", i + 1, T);
    }
    // tcp-backlog slept on its UDP socket while connections and their data reached its listener:
    // with a wait channel per socket none of that woke it (nor anyone else) for nothing.
    let out = g.poweroff();
    let stats = out
        .lines()
        .find(|l| l.contains("socket wake-ups"))
        .unwrap_or_else(|| panic!("no wake-up counts at power-off:\n{out}"));
    eprintln!("{stats}");
    assert!(stats.contains(", 0 of them for nothing"), "{stats}");
    // The SYNs of the two connections beyond a backlog, and at least the first of the late client's.
    let dropped: u32 = stats
        .split("; ")
        .find_map(|p| p.strip_suffix(" SYNs dropped for a full backlog"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no SYN drop count: {stats}"));
    assert!(dropped >= 3, "{stats}");
}
