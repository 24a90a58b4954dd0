#!/usr/bin/env python3
"""Guest-kernel networking benchmark: the project's guest kernel (build/guest-kernel, build/rootfs.qcow2)
under microvm and under QEMU's -M microvm,acpi=off (virtio-net-device on the same kind of TAP), side by side.

Each VMM gets a network namespace with a TAP (10.0.0.1/24, MTU 65520; the guest is 10.0.0.2) and one boot
per measurement, init running a single program (`init -- run PROG ARGS`):
  - ping RTT p50/p99: PINGS (default 200) ICMP echos from the host, one at a time (the guest runs udp-echo
    and smoltcp answers the pings)
  - TCP host -> guest: the guest's `tcp-cat --sum` reads BYTES (default 32 MiB) from a server in the
    namespace and checks its CRC-32
  - TCP guest -> host: the guest's `tcp-cat --gen BYTES` sends to a server in the namespace, which checks
    the CRC-32
Throughput is bytes / the time from the connection's accept to the last byte (host clock).

Run as root: scripts/bench-net-guest.sh. Guest kernel code is instruction-emulated on these hosts, so
absolute figures are low; the ratio between the VMMs is what the figures say.
"""
import os, socket, subprocess, sys, threading, time, zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PINGS = int(os.environ.get("PINGS", "200"))
BYTES = int(os.environ.get("BYTES", str(32 << 20)))
TAP, MTU, HOST_IP, GUEST_IP = "bgtap0", "65520", "10.0.0.1", "10.0.0.2"
KERNEL = os.path.join(ROOT, "build/guest-kernel")
DISK = os.path.join(ROOT, "build/rootfs.qcow2")


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


def netns(name):
    sh("ip", "netns", "del", name, check=False)
    sh("ip", "netns", "add", name)
    sh("ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
       "net.ipv6.conf.default.disable_ipv6=1")
    sh("ip", "-n", name, "tuntap", "add", "dev", TAP, "mode", "tap")
    sh("ip", "-n", name, "addr", "add", HOST_IP + "/24", "dev", TAP)
    sh("ip", "-n", name, "link", "set", TAP, "mtu", MTU)
    sh("ip", "-n", name, "link", "set", TAP, "up")
    sh("ip", "-n", name, "link", "set", "lo", "up")


def enter(name):
    """Moves this thread into the namespace (Python threads are OS threads)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    if libc.setns(fd, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    os.close(fd)


def vmm_cmd(vmm, ns, args):
    cmdline = "console=ttyS0 root=/dev/vda -- run " + args
    if vmm == "microvm":
        cmd = [os.path.join(ROOT, "target/x86_64-unknown-linux-musl/release/microvm"), "--kernel", KERNEL, "--disk", DISK + ",ro",
               "--mem", "256", "--net", f"tap={TAP}", "--cmdline", cmdline]
    else:
        cmd = ["qemu-system-x86_64", "-M", "microvm,acpi=off", "-accel", "kvm", "-cpu", "qemu64", "-m", "256",
               "-smp", "1", "-nographic", "-no-reboot", "-nodefaults", "-kernel", KERNEL, "-append", cmdline,
               "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
               "-drive", f"id=root,file={DISK},format=qcow2,if=none,snapshot=on",
               "-device", "virtio-blk-device,drive=root",
               "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no",
               "-device", "virtio-net-device,netdev=n0"]
    return ["ip", "netns", "exec", ns] + cmd


def boot(vmm, ns, args):
    p = subprocess.Popen(vmm_cmd(vmm, ns, args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    return p


def wait_line(p, text, timeout=120):
    end = time.time() + timeout
    out = []
    while time.time() < end:
        line = p.stdout.readline()
        if not line:
            break
        out.append(line)
        if text in line:
            return line
    raise SystemExit(f"no {text!r} from the guest:\n{''.join(out)}")


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p / 100))]


def measure_ping(vmm, ns):
    p = boot(vmm, ns, "/bin/udp-echo 7")
    wait_line(p, "udp-echo: listening")
    out = sh("ip", "netns", "exec", ns, "ping", "-c", str(PINGS), "-i", "0.01", "-W", "2", GUEST_IP,
             check=False).stdout
    p.kill()
    p.wait()
    rtts = [float(l.split("time=")[1].split()[0]) for l in out.splitlines() if "time=" in l]
    if not rtts:
        raise SystemExit(f"{vmm}: no ping replies")
    return pct(rtts, 50), pct(rtts, 99), PINGS - len(rtts)


def server(ns, port, mode, result):
    enter(ns)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((HOST_IP, port))
    s.listen(1)
    s.settimeout(180)
    c, _ = s.accept()
    t0 = time.perf_counter()
    crc, total = 0, 0
    if mode == "send":
        block = os.urandom(1 << 20)
        while total < BYTES:
            n = min(len(block), BYTES - total)
            c.sendall(block[:n])
            crc = zlib.crc32(block[:n], crc)
            total += n
        c.shutdown(socket.SHUT_WR)
        while c.recv(4096):
            pass
    else:
        while True:
            b = c.recv(1 << 20)
            if not b:
                break
            crc = zlib.crc32(b, crc)
            total += len(b)
    result["secs"] = time.perf_counter() - t0
    result["crc"] = "%08x" % crc
    result["bytes"] = total
    c.close()
    s.close()


def measure_tcp(vmm, ns, direction):
    port = 9100 if direction == "down" else 9101
    result = {}
    t = threading.Thread(target=server, args=(ns, port, "send" if direction == "down" else "recv", result))
    t.start()
    time.sleep(0.3)
    args = (f"/bin/tcp-cat --sum {HOST_IP} {port}" if direction == "down"
            else f"/bin/tcp-cat --gen {BYTES} {HOST_IP} {port}")
    p = boot(vmm, ns, args)
    line = wait_line(p, "tcp-cat: ", timeout=600)
    t.join()
    p.kill()
    p.wait()
    if result.get("bytes") != BYTES or f"crc32 {result['crc']}" not in line:
        raise SystemExit(f"{vmm} {direction}: corrupted or short: host {result}, guest {line.strip()}")
    return BYTES / result["secs"] / 1e6


def main():
    if os.geteuid() != 0:
        raise SystemExit("run as root (network namespaces, TAP devices)")
    for f in (KERNEL, DISK):
        if not os.path.exists(f):
            raise SystemExit(f"{f} is missing: run scripts/build.sh")
    rows = {}
    for vmm in ("microvm", "qemu"):
        ns = f"bench-guest-{vmm}-{os.getpid()}"
        netns(ns)
        try:
            p50, p99, lost = measure_ping(vmm, ns)
            down = measure_tcp(vmm, ns, "down")
            up = measure_tcp(vmm, ns, "up")
            rows[vmm] = (p50, p99, lost, down, up)
        finally:
            sh("ip", "netns", "del", ns, check=False)
    try:
        load = open("/proc/loadavg").read().split()[0]
    except OSError:
        load = "?"
    print(f"guest kernel networking, {BYTES >> 20} MiB per TCP run, {PINGS} pings, MTU {MTU}, load {load}")
    print(f"{'':10}{'ping p50 ms':>12}{'ping p99 ms':>12}{'lost':>6}{'TCP h->g MB/s':>15}{'TCP g->h MB/s':>15}")
    for vmm, (p50, p99, lost, down, up) in rows.items():
        print(f"{vmm:10}{p50:12.2f}{p99:12.2f}{lost:6}{down:15.2f}{up:15.2f}")


if __name__ == "__main__":
    main()
