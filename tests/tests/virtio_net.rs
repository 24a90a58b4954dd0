//! virtio-net end to end on KVM: the test guest's polling driver (tests/guests/virtio_net.c) answers ARP,
//! ICMP echo and UDP on a TAP, and the host side of each test talks to it from inside a network namespace of
//! its own (`ip netns add`, a TAP with an address in it, `microvm` run there with `ip netns exec`), so no
//! packet can leave the machine. Sockets are made in the namespace by a thread that `setns`es into it.
//!
//! Asserted: byte-for-byte UDP round trips of frames of every size up to 1514 bytes, one by one and in
//! bursts, with one buffer per frame, merged small buffers and without MRG_RXBUF; ICMP echo; the device's
//! counters in GET /metrics against the guest's own counts; malformed receive and transmit chains from the
//! guest are dropped, counted and logged, and the device works again after the guest resets it; a missing or
//! busy TAP ends `microvm` with one line and status 1; a guest that never posts receive buffers while the host floods its TAP leaves the VMM
//! thread idle, the API answering and the serial console and disk working. The namespace tests need root
//! and `ip` and skip without them.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tests::{require_kvm, retry_interrupted, run, wait_until, Netns, Vm};

const T: Duration = Duration::from_secs(60);
const PVH: &str = env!("GUEST_PVH");
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const GUEST_MAC: &str = "06:00:00:00:00:02";
const TAP: &str = tests::TAP;

/// A UDP socket on the host's address talking to the guest's `port`.
fn udp_to_guest(ns: &Netns, port: u16) -> UdpSocket {
    let s = ns.enter(move || {
        let s = UdpSocket::bind((HOST_IP, 0)).unwrap();
        s.connect((GUEST_IP, port)).unwrap();
        s
    });
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// A little PRNG so payloads differ and every run reproduces.
fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// UDP payload sizes from 0 to 1472 (frames of 42 to 1514 bytes), the edges included.
fn sizes(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).map(|i| (i * 211 + i / 7) % 1473).collect();
    v.extend([0, 1, 17, 18, 1471, 1472]);
    v
}

/// GET `path` on the API socket.
fn api_get(sock: &Path, path: &str) -> serde_json::Value {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    serde_json::from_str(body).unwrap()
}

fn api_put(sock: &Path, path: &str, body: &str) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

fn sock_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("microvm-net-{tag}-{}.sock", std::process::id()))
}

/// Starts the test guest (32 MiB) in `ns` with `cmdline`, its network device `eth0` on the TAP with
/// address GUEST_MAC, and the API on `sock`.
fn spawn_net_guest(ns: &Netns, sock: &Path, cmdline: &str) -> Vm {
    let net = format!("tap={TAP},mac={GUEST_MAC},id=eth0");
    ns.spawn(&[
        "--kernel",
        PVH,
        "--mem",
        "32",
        "--net",
        &net,
        "--api-sock",
        sock.to_str().unwrap(),
        "--cmdline",
        cmdline,
    ])
}

/// The numbers in the guest's "net: stop rx N frames B bytes, tx M frames C bytes" line.
fn guest_counts(stdout: &str) -> [u64; 4] {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("net: stop"))
        .expect("no stop line");
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    [n[0], n[1], n[2], n[3]]
}

/// Sends an ICMP echo request to the guest from a raw socket in the namespace and waits for the reply;
/// returns the reply's ICMP message.
fn ping(ns: &Netns, seq: u16, data: &[u8]) -> Vec<u8> {
    // SAFETY: socket() has no memory-safety preconditions; the descriptor is owned at once.
    let fd = ns.enter(|| unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        OwnedFd::from_raw_fd(fd)
    });
    let mut msg = vec![8u8, 0, 0, 0, 0x12, 0x34];
    msg.extend(seq.to_be_bytes());
    msg.extend(data);
    let sum = checksum(&msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(GUEST_IP).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: the buffer and address are valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(n, msg.len() as isize);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        // SAFETY: `buf` is valid for its length; MSG_DONTWAIT never blocks.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        let pkt = &buf[..n as usize];
        let ihl = usize::from(pkt[0] & 15) * 4;
        let icmp = &pkt[ihl..];
        if pkt[12..16] == GUEST_IP.octets() && icmp[0] == 0 && icmp[6..8] == seq.to_be_bytes() {
            return icmp.to_vec();
        }
    }
    panic!("no echo reply for seq {seq}");
}

/// The Internet checksum.
fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Boots the echo guest with `extra` on its command line, then: single round trips of every size, a
/// burst, ICMP echo, a second VMM refused the busy TAP, and the counters against the guest's.
fn echo_round_trips(tag: &str, extra: &str) {
    if !require_kvm() {
        return;
    }
    let Some(ns) = Netns::new(tag) else { return };
    let sock = sock_path(tag);
    let vm = spawn_net_guest(&ns, &sock, &format!("netecho netip=10.0.0.2 {extra} halt"));
    vm.wait_for_output("net: echo ready", T);

    let udp = udp_to_guest(&ns, 7);
    let mut sent = (0u64, 0u64);
    let mut buf = vec![0u8; 2048];
    for (i, &len) in sizes(250).iter().enumerate() {
        let data = payload(i as u64, len);
        udp.send(&data).unwrap();
        let n = retry_interrupted(|| udp.recv(&mut buf))
            .unwrap_or_else(|e| panic!("frame {i} ({len} bytes): {e}"));
        assert_eq!(&buf[..n], &data[..], "frame {i} of {len} bytes");
        sent = (sent.0 + 1, sent.1 + 42 + len as u64);
    }
    // A burst: the guest's 32 buffers fill up and frames wait in the TAP, none lost.
    let burst: Vec<Vec<u8>> = (0..48)
        .map(|i| payload(1000 + i, 1472 - i as usize * 13))
        .collect();
    for d in &burst {
        udp.send(d).unwrap();
    }
    for (i, d) in burst.iter().enumerate() {
        let n = retry_interrupted(|| udp.recv(&mut buf))
            .unwrap_or_else(|e| panic!("burst frame {i}: {e}"));
        assert_eq!(&buf[..n], &d[..], "burst frame {i}");
        sent = (sent.0 + 1, sent.1 + 42 + d.len() as u64);
    }
    // The host pings the guest.
    for seq in 0..5u16 {
        let data = payload(u64::from(seq) + 77, 56);
        let reply = ping(&ns, seq, &data);
        assert_eq!(&reply[8..], &data[..]);
        assert_eq!(checksum(&reply), 0, "the reply's checksum is valid");
    }
    // The TAP is ours while this VM runs.
    let second = ns.spawn(&[
        "--kernel",
        PVH,
        "--net",
        &format!("tap={TAP}"),
        "--cmdline",
        "exit=0",
    ]);
    let out = second.wait(T);
    assert_eq!(out.code, Some(1));
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("is busy"), "{}", out.stderr);

    udp_to_guest(&ns, 9).send(b"stop").unwrap();
    vm.wait_for_output("halting", T);
    let [rx_frames, rx_bytes, tx_frames, tx_bytes] = guest_counts(&vm.stdout());
    // What the guest got: our frames, the ARP request(s), the pings and the stop datagram.
    assert!(rx_frames > sent.0 + 5, "{rx_frames}");
    assert!(rx_bytes >= sent.1, "{rx_bytes}");
    let m = api_get(&sock, "/metrics");
    let eth0 = &m["net"]["eth0"];
    assert_eq!(eth0["rx_packets"], rx_frames, "{m}");
    assert_eq!(eth0["rx_bytes"], rx_bytes, "{m}");
    assert_eq!(eth0["tx_packets"], tx_frames, "{m}");
    assert_eq!(eth0["tx_bytes"], tx_bytes, "{m}");
    for zero in ["rx_dropped", "tx_dropped", "malformed"] {
        assert_eq!(eth0[zero], 0, "{zero}: {m}");
    }
    vm.signal(libc::SIGTERM);
    let out = vm.wait(T);
    assert_eq!(out.code, Some(143));
    let _ = std::fs::remove_file(sock);
}

#[test]
fn virtio_net_echo_one_buffer_per_frame() {
    echo_round_trips("whole", "");
}

#[test]
fn virtio_net_echo_merged_small_buffers() {
    // 128-byte buffers: a 1514-byte frame spans 13 of them.
    echo_round_trips("merged", "netbuf=128");
}

#[test]
fn virtio_net_echo_without_mrg_rxbuf() {
    echo_round_trips("nomrg", "netnomrg");
}

#[test]
fn virtio_net_missing_tap_is_a_one_line_error() {
    let out = run(
        &[
            "--kernel",
            PVH,
            "--net",
            "tap=mvmnotap7,id=eth3",
            "--cmdline",
            "exit=0",
        ],
        T,
    );
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr.trim_end(),
        "microvm: network interface \"eth3\": TAP device \"mvmnotap7\" does not exist \
         (create it with: ip tuntap add dev mvmnotap7 mode tap)"
    );
    let out = run(&["--kernel", PVH, "--net", "mac=06:00:00:00:00:01"], T);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("missing tap=NAME"), "{}", out.stderr);
}

/// CPU time (user + system, in clock ticks) of the VMM thread (the main thread, whose tid is the pid).
fn vmm_thread_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 (utime, stime) are 11 and 12 after the state field.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn virtio_net_guest_without_receive_buffers_does_not_stall_the_vmm() {
    if !require_kvm() {
        return;
    }
    let Some(ns) = Netns::new("norx") else { return };
    let disk = std::env::temp_dir().join(format!("microvm-net-norx-{}.raw", std::process::id()));
    std::fs::write(&disk, vec![0x5au8; 1 << 20]).unwrap();
    // Configured through the API this time.
    let sock = sock_path("norx");
    let mut vm = ns.spawn(&["--api-sock", sock.to_str().unwrap()]);
    assert!(wait_until(T, || sock.exists()));
    let put = |path: &str, body: String| {
        let r = api_put(&sock, path, &body);
        assert!(r.starts_with("HTTP/1.1 204"), "{path}: {r}");
    };
    put(
        "/boot-source",
        format!(
            r#"{{"kernel_image_path": "{PVH}", "boot_args": "netnorx echo blkread=0 exit=0"}}"#
        ),
    );
    put(
        "/drives/vda",
        format!(
            r#"{{"drive_id": "vda", "path_on_host": "{}", "is_root_device": false}}"#,
            disk.display()
        ),
    );
    put(
        "/network-interfaces/eth0",
        format!(r#"{{"iface_id": "eth0", "host_dev_name": "{TAP}", "guest_mac": "{GUEST_MAC}"}}"#),
    );
    put("/actions", r#"{"action_type": "InstanceStart"}"#.into());
    vm.wait_for_output("net: up without receive buffers", T);

    // Flood the TAP: the guest cannot take anything (no ARP answers either, hence the static entry).
    ns.static_neighbour("10.0.0.2", GUEST_MAC);
    let udp = udp_to_guest(&ns, 7);
    udp.set_nonblocking(true).unwrap();
    for i in 0..3000u64 {
        let _ = udp.send(&payload(i, 1000));
    }
    assert!(wait_until(T, || {
        api_get(&sock, "/metrics")["net"]["eth0"]["rx_no_buffers"] != 0
    }));
    // The VMM thread idles while frames wait in the TAP: it does not poll a TAP it cannot empty.
    let before = vmm_thread_ticks(vm.pid());
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let used = vmm_thread_ticks(vm.pid()) - before;
    let t0 = Instant::now();
    let m = api_get(&sock, "/metrics");
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "the API answers at once"
    );
    // Clock ticks are 10 ms: a spinning thread would use about 100 in a second; allow a quarter.
    let limit = start.elapsed().as_millis() as u64 / 40;
    assert!(
        used <= limit,
        "the VMM thread used {used} ticks in {:?}",
        start.elapsed()
    );
    let eth0 = &m["net"]["eth0"];
    assert_eq!(eth0["rx_packets"], 0, "{m}");
    assert_eq!(eth0["rx_dropped"], 0, "{m}");
    // The rest of the VM works: the serial console (through the VMM thread) and the disk.
    vm.send(b"still here\n");
    vm.wait_for_output("echo: still here", T);
    let out = vm.wait(T);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("blk: read sector 0: 5a5a5a5a5a5a5a5a"),
        "{}",
        out.stdout
    );
    let _ = std::fs::remove_file(disk);
}

#[test]
fn virtio_net_malformed_chains_from_a_real_guest_are_dropped_and_counted() {
    if !require_kvm() {
        return;
    }
    let Some(ns) = Netns::new("bad") else { return };
    let sock = sock_path("bad");
    let vm = spawn_net_guest(&ns, &sock, "netbad netecho netip=10.0.0.2 halt");
    vm.wait_for_output("net: bad chains posted", T);
    // The guest answers no ARP in this phase: a static entry lets the datagrams through.
    ns.static_neighbour("10.0.0.2", GUEST_MAC);
    let udp = udp_to_guest(&ns, 7);
    // The first two frames meet the bad receive chains and are dropped; the third is delivered.
    for i in 0..3 {
        udp.send(&payload(i, 100)).unwrap();
    }
    vm.wait_for_output("net: echo ready", T);
    assert!(
        vm.stdout()
            .contains("net: bad chains returned, rx lengths 0 0 154, tx lengths 0 0 0"),
        "{}",
        vm.stdout()
    );
    // The guest reset the device and set it up again: it works.
    let mut buf = [0u8; 2048];
    for i in 0..20u64 {
        let data = payload(100 + i, 10 + 70 * i as usize);
        udp.send(&data).unwrap();
        let n = retry_interrupted(|| udp.recv(&mut buf)).unwrap();
        assert_eq!(&buf[..n], &data[..]);
    }
    let m = api_get(&sock, "/metrics");
    let eth0 = &m["net"]["eth0"];
    assert_eq!(eth0["malformed"], 5, "{m}");
    assert_eq!(eth0["rx_dropped"], 2, "{m}");
    assert_eq!(eth0["tx_dropped"], 3, "{m}");
    assert_eq!(eth0["rx_packets"], 21, "{m}");
    assert_eq!(eth0["tx_packets"], 20, "{m}");
    udp_to_guest(&ns, 9).send(b"stop").unwrap();
    vm.wait_for_output("halting", T);
    vm.signal(libc::SIGTERM);
    let out = vm.wait(T);
    assert_eq!(out.code, Some(143));
    for warning in [
        "virtio-net mvtap0: dropped a received frame: device-readable descriptor in a receive chain",
        "virtio-net mvtap0: dropped a received frame: descriptor 0xfff0000000+0x800 is outside guest memory",
        "virtio-net mvtap0: dropped a transmit chain: device-writable descriptor in a transmit chain",
        "virtio-net mvtap0: dropped a transmit chain: descriptor 0xfff0000000+0x40 is outside guest memory",
        "virtio-net mvtap0: dropped a transmit chain: transmit chain of 20 bytes is shorter",
    ] {
        assert!(out.stderr.contains(warning), "{warning}: {}", out.stderr);
    }
    let _ = std::fs::remove_file(sock);
}
