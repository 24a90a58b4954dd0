#!/usr/bin/env python3
"""Network benchmark: microvm's virtio-net side by side with QEMU's (-M microvm, virtio-net-device over
virtio-mmio, vnet_hdr TAP), both running the same echo test guest (tests/guests/virtio_net.c: answers ARP
and ICMP echo, returns every UDP datagram) on the same TAP setup in a network namespace of its own.

Figures per VMM, measured by a client inside the namespace (host -> guest -> host):
  - ping RTT p50/p99: ICMP echo from a raw socket, one at a time (PINGS, default 2000)
  - UDP RTT p50/p99: 18-byte datagrams (60-byte frames), one at a time (same count)
  - frames/s and throughput with WINDOW datagrams in flight (default 16) for SECONDS (default 5), for
    60-byte and 1514-byte frames; every echoed payload is compared byte for byte; timeouts are counted as lost
  - the CPU time of the VMM's threads other than its vCPUs over the whole client run, per echoed frame: the
    host's cost of moving frames between the TAP and the guest (threads that exited during the run are not
    counted)

Run as root (namespaces, TAPs, raw sockets): scripts/bench-net.sh. These hosts emulate guest kernel code,
and the test guest runs in kernel mode, so the absolute numbers are low; the ratio between the VMMs is what
the figures say.
"""
import glob, json, os, shutil, socket, statistics, struct, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PINGS = int(os.environ.get("PINGS", "2000"))
WINDOW = int(os.environ.get("WINDOW", "16"))
SECONDS = float(os.environ.get("SECONDS", "5"))
GUEST_IP, HOST_IP, MAC, TAP = "10.0.0.2", "10.0.0.1", "06:00:00:00:00:02", "bntap0"


def checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p / 100))]


def ping_rtts(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(1)
    data = bytes(range(56))
    rtts, lost = [], 0
    for seq in range(n):
        hdr = struct.pack("!BBHHH", 8, 0, 0, 0x4D56, seq & 0xFFFF)
        msg = hdr[:2] + struct.pack("!H", checksum(hdr + data)) + hdr[4:] + data
        t0 = time.perf_counter_ns()
        s.sendto(msg, (GUEST_IP, 0))
        while True:
            try:
                pkt = s.recv(2048)
            except socket.timeout:
                lost += 1
                break
            icmp = pkt[(pkt[0] & 15) * 4:]
            if icmp[0] == 0 and icmp[4:8] == msg[4:8]:
                rtts.append((time.perf_counter_ns() - t0) / 1e3)
                if icmp[8:] != data:
                    raise SystemExit("ping payload corrupted")
                break
    return rtts, lost


def udp_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST_IP, 0))
    s.connect((GUEST_IP, 7))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return s


def udp_rtts(n):
    s = udp_socket()
    s.settimeout(1)
    rtts, lost = [], 0
    for i in range(n):
        data = struct.pack("!I", i) + bytes(14)
        t0 = time.perf_counter_ns()
        s.send(data)
        try:
            got = s.recv(2048)
        except socket.timeout:
            lost += 1
            continue
        rtts.append((time.perf_counter_ns() - t0) / 1e3)
        if got != data:
            raise SystemExit("UDP payload corrupted")
    return rtts, lost


def stream(payload_len, window, seconds):
    """Keeps `window` datagrams (of at least 4 bytes: a sequence number, then random bytes) in flight;
    returns (frames echoed, frame bytes, elapsed s, lost, corrupted)."""
    s = udp_socket()
    s.settimeout(0.2)
    filler = os.urandom(payload_len)
    sent = {}
    seq = 0

    def send():
        nonlocal seq
        d = struct.pack("!I", seq) + filler[4:]
        s.send(d)
        sent[seq] = d
        seq += 1

    for _ in range(window):
        send()
    done = lost = bad = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        try:
            got = s.recv(4096)
        except socket.timeout:
            lost += len(sent)
            sent.clear()
            for _ in range(window):
                send()
            continue
        k = struct.unpack("!I", got[:4])[0]
        if k not in sent:
            continue  # a late answer to a datagram already counted as lost
        if sent.pop(k) != got:
            bad += 1
        done += 1
        send()
    elapsed = time.perf_counter() - t0
    frame = 14 + 20 + 8 + payload_len
    return done, done * frame, elapsed, lost, bad


def client():
    # Warm up (ARP) and make sure the guest answers.
    rtts, lost = udp_rtts(10)
    if not rtts:
        raise SystemExit("the guest does not answer")
    out = {}
    r, lost = ping_rtts(PINGS)
    out["ping"] = {"p50": pct(r, 50), "p99": pct(r, 99), "lost": lost}
    r, lost = udp_rtts(PINGS)
    out["udp"] = {"p50": pct(r, 50), "p99": pct(r, 99), "lost": lost}
    for name, plen in [("small", 18), ("large", 1472)]:
        frames, nbytes, el, lost, bad = stream(plen, WINDOW, SECONDS)
        out[name] = {"fps": frames / el, "mbit": nbytes * 8 / el / 1e6, "lost": lost, "bad": bad,
                     "frames": frames}
    out["frames"] = 2 * PINGS + 10 + out["small"]["frames"] + out["large"]["frames"]
    print(json.dumps(out))


def vmm_ticks(pid):
    """CPU time (clock ticks) of the VMM's threads other than its vCPUs ("vcpuN" in microvm, "CPU N/KVM" in
    QEMU): what moving the frames costs the host beside running the guest."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        if comm.startswith("vcpu") or comm.startswith("CPU "):
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def sh(*args):
    subprocess.run(args, check=True)


def measure(label, cmd):
    ns = f"mvm-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
    sh("ip", "netns", "add", ns)
    vmm = None
    try:
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
           "net.ipv6.conf.default.disable_ipv6=1")
        sh("ip", "-n", ns, "tuntap", "add", "dev", TAP, "mode", "tap")
        sh("ip", "-n", ns, "addr", "add", f"{HOST_IP}/24", "dev", TAP)
        sh("ip", "-n", ns, "link", "set", TAP, "up")
        vmm = subprocess.Popen(["ip", "netns", "exec", ns] + cmd, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        out = b""
        deadline = time.time() + 30
        while b"net: echo ready" not in out and time.time() < deadline:
            chunk = os.read(vmm.stdout.fileno(), 4096)
            if not chunk:
                break
            out += chunk
        if b"net: echo ready" not in out:
            raise SystemExit(f"{label}: the guest did not come up:\n{out.decode(errors='replace')}")
        before = vmm_ticks(vmm.pid)
        res = subprocess.run(["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__), "--client"],
                             check=True, capture_output=True, text=True)
        out = json.loads(res.stdout)
        used = vmm_ticks(vmm.pid) - before
        out["cpu_us_per_frame"] = used * 1e6 / os.sysconf("SC_CLK_TCK") / out["frames"]
        return out
    finally:
        if vmm:
            vmm.kill()
            vmm.wait()
        subprocess.run(["ip", "netns", "del", ns])


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        return client()
    if os.geteuid() != 0:
        raise SystemExit("run as root: network namespaces, TAP devices and raw sockets")
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "vmm", "--target", "x86_64-unknown-linux-musl"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "-q", "-p", "tests"], cwd=ROOT, check=True)
    guest = max(glob.glob(f"{ROOT}/target/debug/build/tests-*/out/guest-pvh.elf"), key=os.path.getmtime)
    cmdline = f"netecho netip={GUEST_IP} halt"
    rows = [("microvm", measure("microvm", [f"{ROOT}/target/x86_64-unknown-linux-musl/release/microvm", "--kernel", guest,
                                            "--net", f"tap={TAP},mac={MAC}", "--cmdline", cmdline]))]
    qemu = shutil.which("qemu-system-x86_64")
    if qemu:
        rows.append(("QEMU microvm", measure("qemu", [
            qemu, "-M", "microvm,acpi=off,x-option-roms=off,rtc=off", "-accel", "kvm", "-m", "128",
            "-name", "bench,debug-threads=on",
            "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-kernel", guest,
            "-append", cmdline, "-global", "virtio-mmio.force-legacy=false",
            "-netdev", f"tap,id=n,ifname={TAP},script=no,downscript=no,vnet_hdr=on",
            "-device", f"virtio-net-device,netdev=n,mac={MAC}"])))
    else:
        print("qemu-system-x86_64 not installed: no peer figures")
    print(f"guest: {guest}\npings: {PINGS}, window {WINDOW}, {SECONDS:g} s per stream\n")
    print(f"{'figure':<34}" + "".join(f"{name:>16}" for name, _ in rows))
    lines = [
        ("ping RTT p50 (us)", lambda r: f"{r['ping']['p50']:.0f}"),
        ("ping RTT p99 (us)", lambda r: f"{r['ping']['p99']:.0f}"),
        ("UDP RTT p50 (us)", lambda r: f"{r['udp']['p50']:.0f}"),
        ("UDP RTT p99 (us)", lambda r: f"{r['udp']['p99']:.0f}"),
        ("60-byte frames/s (echoed)", lambda r: f"{r['small']['fps']:.0f}"),
        ("1514-byte frames/s (echoed)", lambda r: f"{r['large']['fps']:.0f}"),
        ("1514-byte throughput (Mbit/s)", lambda r: f"{r['large']['mbit']:.1f}"),
        ("VMM CPU outside vCPUs (us/frame)", lambda r: f"{r['cpu_us_per_frame']:.1f}"),
        ("lost / corrupted (all streams)", lambda r: f"{r['ping']['lost'] + r['udp']['lost'] + r['small']['lost'] + r['large']['lost']}/{r['small']['bad'] + r['large']['bad']}"),
    ]
    for name, f in lines:
        print(f"{name:<34}" + "".join(f"{f(r):>16}" for _, r in rows))


if __name__ == "__main__":
    sys.exit(main())
