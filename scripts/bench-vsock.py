#!/usr/bin/env python3
"""vsock benchmark: the guest kernel's AF_VSOCK beside its virtio-net TCP, on the same guest
(build/guest-kernel, build/rootfs.qcow2) under microvm, one boot per measurement
(`init -- run PROG ARGS`), the VM having both a vsock device and a TAP (MTU 65520) in a network namespace:
  - vsock host -> guest: the guest's `vsock recv` reads BYTES (default 32 MiB) sent through `CONNECT`,
    CRC-32 checked at both ends
  - vsock guest -> host: the guest's `vsock send` to `<uds>_PORT`, CRC-32 checked
  - vsock round trip: ROUNDS (default 200) one-byte echoes through the guest's `vsock server`, p50/p99
  - TCP each way: as scripts/bench-net-guest.py (the rootfs's tcp-cat against a server in the namespace)
  - UDP round trip: ROUNDS one-byte datagrams echoed by the guest's udp-echo, p50/p99
Throughput is bytes / the time from the connection's start to the last byte (host clock).
QEMU's vhost-vsock is measured where the host has /dev/vhost-vsock (this development machine has not).

Run as root: scripts/bench-vsock.sh. Guest kernel code is instruction-emulated on these hosts, so absolute
figures are low; vsock against TCP on the same guest is what they say.
"""
import importlib.util, os, socket, subprocess, threading, time, zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("bng", os.path.join(ROOT, "scripts/bench-net-guest.py"))
bng = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bng)

BYTES = int(os.environ.get("BYTES", str(32 << 20)))
ROUNDS = int(os.environ.get("ROUNDS", "200"))
bng.BYTES = BYTES
KERNEL, DISK, TAP = bng.KERNEL, bng.DISK, bng.TAP


def boot(ns, uds, args):
    cmdline = "console=ttyS0 root=/dev/vda -- run " + args
    cmd = ["ip", "netns", "exec", ns, os.path.join(ROOT, "target/x86_64-unknown-linux-musl/release/microvm"), "--kernel", KERNEL,
           "--disk", DISK + ",ro", "--mem", "256", "--net", f"tap={TAP}", "--vsock", f"cid=3,uds={uds}",
           "--cmdline", cmdline]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def stop(p):
    p.kill()
    p.wait()


def connect(uds, port):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(300)
    s.connect(uds)
    s.sendall(f"CONNECT {port}\n".encode())
    line = b""
    while not line.endswith(b"\n"):
        b = s.recv(1)
        if not b:
            raise SystemExit(f"CONNECT {port}: closed")
        line += b
    assert line.startswith(b"OK "), line
    return s


def vsock_down(ns, uds):
    p = boot(ns, uds, "/bin/vsock-glibc recv 1025")
    bng.wait_line(p, "listening on port 1025")
    s = connect(uds, 1025)
    block = os.urandom(1 << 20)
    crc, total, t0 = 0, 0, time.perf_counter()
    while total < BYTES:
        n = min(len(block), BYTES - total)
        s.sendall(block[:n])
        crc = zlib.crc32(block[:n], crc)
        total += n
    s.shutdown(socket.SHUT_WR)
    answer = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        answer += b
    secs = time.perf_counter() - t0
    stop(p)
    if f"received {BYTES} bytes crc {crc:08x}".encode() not in answer:
        raise SystemExit(f"vsock down: corrupted or short: {answer!r}, host crc {crc:08x}")
    return BYTES / secs / 1e6


def vsock_up(ns, uds):
    path = f"{uds}_5002"
    if os.path.exists(path):
        os.unlink(path)
    l = socket.socket(socket.AF_UNIX)
    l.bind(path)
    l.listen(1)
    l.settimeout(300)
    p = boot(ns, uds, f"/bin/vsock-glibc send 2 5002 {BYTES >> 20}")
    c, _ = l.accept()
    c.settimeout(300)
    crc, total, t0 = 0, 0, time.perf_counter()
    while True:
        b = c.recv(1 << 20)
        if not b:
            break
        crc = zlib.crc32(b, crc)
        total += len(b)
    secs = time.perf_counter() - t0
    c.sendall(f"host received {total} bytes crc {crc:08x}\n".encode())
    line = bng.wait_line(p, "vsock: sent ")
    stop(p)
    os.unlink(path)
    if total != (BYTES >> 20 << 20) or f"crc {crc:08x}" not in line:
        raise SystemExit(f"vsock up: corrupted or short: host {total} {crc:08x}, guest {line.strip()}")
    return total / secs / 1e6


def vsock_rtt(ns, uds):
    p = boot(ns, uds, "/bin/vsock-glibc server 1024")
    bng.wait_line(p, "listening on port 1024")
    s = connect(uds, 1024)
    rtts = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        s.sendall(b"x")
        if s.recv(1) != b"x":
            raise SystemExit("vsock echo: wrong byte")
        rtts.append((time.perf_counter() - t0) * 1000)
    stop(p)
    return bng.pct(rtts, 50), bng.pct(rtts, 99)


def udp_rtt(ns, uds):
    p = boot(ns, uds, "/bin/udp-echo 7")
    bng.wait_line(p, "udp-echo: listening")
    result = {}

    def run():
        bng.enter(ns)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.connect((bng.GUEST_IP, 7))
        rtts = []
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            s.send(b"x")
            try:
                s.recv(16)
            except socket.timeout:
                continue
            rtts.append((time.perf_counter() - t0) * 1000)
        result["rtts"] = rtts

    t = threading.Thread(target=run)
    t.start()
    t.join()
    stop(p)
    return bng.pct(result["rtts"], 50), bng.pct(result["rtts"], 99)


def tcp(ns, uds, direction):
    port = 9100 if direction == "down" else 9101
    result = {}
    t = threading.Thread(target=bng.server,
                         args=(ns, port, "send" if direction == "down" else "recv", result))
    t.start()
    time.sleep(0.3)
    args = (f"/bin/tcp-cat --sum {bng.HOST_IP} {port}" if direction == "down"
            else f"/bin/tcp-cat --gen {BYTES} {bng.HOST_IP} {port}")
    p = boot(ns, uds, args)
    line = bng.wait_line(p, "tcp-cat: ", timeout=900)
    t.join()
    stop(p)
    if result.get("bytes") != BYTES or f"crc32 {result['crc']}" not in line:
        raise SystemExit(f"tcp {direction}: corrupted or short: host {result}, guest {line.strip()}")
    return BYTES / result["secs"] / 1e6


def main():
    if os.geteuid() != 0:
        raise SystemExit("run as root (network namespaces, TAP devices)")
    for f in (KERNEL, DISK):
        if not os.path.exists(f):
            raise SystemExit(f"{f} is missing: run scripts/build.sh")
    ns = f"bench-vsock-{os.getpid()}"
    uds = f"/tmp/bench-vsock-{os.getpid()}.sock"
    bng.netns(ns)
    try:
        v_down, v_up = vsock_down(ns, uds), vsock_up(ns, uds)
        v_p50, v_p99 = vsock_rtt(ns, uds)
        t_down, t_up = tcp(ns, uds, "down"), tcp(ns, uds, "up")
        u_p50, u_p99 = udp_rtt(ns, uds)
    finally:
        sh_ok = subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        del sh_ok
    load = open("/proc/loadavg").read().split()[0]
    print(f"guest kernel on microvm, {BYTES >> 20} MiB per run, {ROUNDS} round trips, load {load}")
    print(f"{'':8}{'h->g MB/s':>11}{'g->h MB/s':>11}{'RTT p50 ms':>12}{'RTT p99 ms':>12}")
    print(f"{'vsock':8}{v_down:11.2f}{v_up:11.2f}{v_p50:12.2f}{v_p99:12.2f}")
    print(f"{'TCP/UDP':8}{t_down:11.2f}{t_up:11.2f}{u_p50:12.2f}{u_p99:12.2f}   (RTT: UDP echo)")
    if os.path.exists("/dev/vhost-vsock"):
        print("QEMU vhost-vsock: /dev/vhost-vsock exists, but this script does not drive QEMU yet")
    else:
        print("QEMU vhost-vsock: not measured: this host has no /dev/vhost-vsock")


if __name__ == "__main__":
    main()
