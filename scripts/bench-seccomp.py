#!/usr/bin/env python3
"""What the seccomp filters cost (issue 21): the same runs with the built-in filters and with --no-seccomp,
side by side, alternating so that the load of the moment falls on both alike.

1. Start: a trivial PVH guest that triple-faults at once (scripts/bench-start.py's), PAIRS pairs:
   exec -> first KVM_RUN (--boot-timer) and exec -> exit (reaped).
2. Guest kernel boot: build/guest-kernel with build/rootfs.qcow2, BOOTS pairs: exec -> the kernel's
   boot-time marker write ("guest boot time: N us", --boot-timer), i.e. just before init's first
   instruction.
3. API latency: a VM running the test guest's `count` mode (every thread filtered: VMM, API, vCPU),
   ROUNDS rounds of N requests (GET / and GET /vm/config alternately, one at a time on one connection)
   per mode, alternating modes each round; p50 and p99 of the round trip.

Prints medians and the ratio filtered / unfiltered (target: under 1.02). Needs /dev/kvm, gcc and ld, the
release build (built here) and the test guest (cargo test -p tests --no-run builds it).
Environment: PAIRS (default 40), BOOTS (10), ROUNDS (6), N (1000).
"""
import glob, importlib.util, os, select, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAIRS = int(os.environ.get("PAIRS", "40"))
BOOTS = int(os.environ.get("BOOTS", "10"))
ROUNDS = int(os.environ.get("ROUNDS", "6"))
N = int(os.environ.get("N", "1000"))
MODES = {"filters": [], "no-seccomp": ["--no-seccomp"]}

spec = importlib.util.spec_from_file_location("bench_start", f"{ROOT}/scripts/bench-start.py")
bench_start = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_start)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def p99(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))] if xs else float("nan")


def guest_boot_ms(microvm, extra):
    kernel, disk = f"{ROOT}/build/guest-kernel", f"{ROOT}/build/rootfs.qcow2"
    cmd = [microvm, "--kernel", kernel, "--disk", f"{disk},ro", "--boot-timer", "--serial", "off",
           "--cmdline", "console=ttyS0 root=/dev/vda -- run /bin/true"] + extra
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err, deadline, us = b"", time.time() + 120, None
    while time.time() < deadline and us is None:
        r, _, _ = select.select([p.stderr], [], [], 0.5)
        if r:
            chunk = os.read(p.stderr.fileno(), 65536)
            if not chunk:
                break
            err += chunk
            for line in err.decode(errors="replace").splitlines():
                if "guest boot time: " in line:
                    us = int(line.split("guest boot time: ")[1].split()[0])
    p.kill()
    p.wait()
    return None if us is None else us / 1000


class Client:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.buf = b""

    def get(self, path):
        self.s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.s.recv(65536)
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        while len(rest) < length:
            rest += self.s.recv(65536)
        self.buf = rest[length:]
        assert head.startswith(b"HTTP/1.1 200"), head


def api_round(microvm, guest, extra, tmp, n):
    sock = f"{tmp}/api.sock"
    p = subprocess.Popen([microvm, "--kernel", guest, "--cmdline", "count", "--serial", "off",
                          "--api-sock", sock] + extra,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while not os.path.exists(sock) and time.time() < deadline:
        time.sleep(0.005)
    c = Client(sock)
    c.get("/")  # the VM runs: every thread has its filter
    times = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        c.get("/" if i % 2 == 0 else "/vm/config")
        times.append((time.perf_counter_ns() - t0) / 1000)
    p.kill()
    p.wait()
    return times


def main():
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "vmm", "--bin", "microvm"], cwd=ROOT, check=True)
    microvm = f"{ROOT}/target/release/microvm"
    guests = glob.glob(f"{ROOT}/target/debug/build/tests-*/out/guest-pvh.elf")
    if not guests:
        sys.exit("the test guest is missing: run cargo test -p tests --no-run first")
    guest = max(guests, key=os.path.getmtime)
    with tempfile.TemporaryDirectory() as tmp:
        triple = bench_start.build_guest(tmp)
        start = {m: ([], []) for m in MODES}
        for i in range(PAIRS):
            order = list(MODES) if i % 2 == 0 else list(MODES)[::-1]
            for m in order:
                kvm_run, total, _ = bench_start.run_trivial([microvm, "--kernel", triple] + MODES[m], True)
                if kvm_run is not None:
                    start[m][0].append(kvm_run)
                start[m][1].append(total)
        boot = {m: [] for m in MODES}
        if os.path.exists(f"{ROOT}/build/guest-kernel"):
            for i in range(BOOTS):
                order = list(MODES) if i % 2 == 0 else list(MODES)[::-1]
                for m in order:
                    ms = guest_boot_ms(microvm, MODES[m])
                    if ms is not None:
                        boot[m].append(ms)
        api = {m: [] for m in MODES}
        for i in range(ROUNDS):
            order = list(MODES) if i % 2 == 0 else list(MODES)[::-1]
            for m in order:
                api[m].extend(api_round(microvm, guest, MODES[m], tmp, N))

    load = os.getloadavg()[0]
    print(f"load average {load:.1f}; {PAIRS} start pairs, {BOOTS} boot pairs, {ROUNDS}x{N} API requests per mode")
    print(f"{'figure':44} {'filters':>10} {'no-seccomp':>11} {'ratio':>7}")

    def row(name, a, b, unit):
        print(f"{name:44} {a:>8.3f}{unit} {b:>9.3f}{unit} {a / b:>7.3f}")

    f, n = "filters", "no-seccomp"
    row("trivial guest: exec -> first KVM_RUN p50", median(start[f][0]), median(start[n][0]), "ms")
    row("trivial guest: exec -> exit p50", median(start[f][1]), median(start[n][1]), "ms")
    if boot[f] and boot[n]:
        row("guest kernel: exec -> boot marker p50", median(boot[f]), median(boot[n]), "ms")
    row("API round trip (VM running) p50", median(api[f]), median(api[n]), "us")
    row("API round trip (VM running) p99", p99(api[f]), p99(api[n]), "us")


if __name__ == "__main__":
    main()
