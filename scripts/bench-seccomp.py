#!/usr/bin/env python3
"""What the seccomp filters cost (issue 21): the same runs with the built-in filters and with --no-seccomp,
side by side, alternating so that the load of the moment falls on both alike.

1. Start: a trivial PVH guest that triple-faults at once (scripts/bench-start.py's), PAIRS pairs:
   exec -> first KVM_RUN (--boot-timer) and exec -> exit (reaped).
2. Guest kernel boot: build/guest-kernel with build/rootfs.qcow2 running /bin/true, BOOTS pairs: exec ->
   the kernel's boot-time marker write ("guest boot time: N us", --boot-timer), i.e. just before init's
   first instruction, and the CPU time (user + system) of the whole run, from wait4.
3. API latency: a VM running the test guest's `count` mode (every thread filtered: VMM, API, vCPU),
   ROUNDS rounds of N requests (GET / and GET /vm/config alternately, one at a time on one connection)
   per mode, alternating modes each round; the median over rounds of each round's p50 and p99 (a burst
   of load from other work spoils a round's p99, not the figure).
4. One syscall (ioctl KVM_RUN, write; on a bad descriptor) without and with the vcpu filter, in a C loop.

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


def guest_boot(microvm, extra):
    """(exec -> boot marker ms, CPU time ms of the whole run) of the guest kernel running /bin/true to the
    end (init powers off when it exits)."""
    kernel, disk = f"{ROOT}/build/guest-kernel", f"{ROOT}/build/rootfs.qcow2"
    cmd = [microvm, "--kernel", kernel, "--disk", f"{disk},ro", "--boot-timer", "--serial", "off",
           "--cmdline", "console=ttyS0 root=/dev/vda -- run /bin/true"] + extra
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read().decode(errors="replace")
    _, _, ru = os.wait4(p.pid, 0)
    p.returncode = 0
    us = None
    for line in err.splitlines():
        if "guest boot time: " in line:
            us = int(line.split("guest boot time: ")[1].split()[0])
    cpu = (ru.ru_utime + ru.ru_stime) * 1000
    return (None if us is None else us / 1000), cpu


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
    if os.path.exists(sock):
        os.unlink(sock)  # left by the previous round's SIGKILL
    p = subprocess.Popen([microvm, "--kernel", guest, "--cmdline", "count", "--serial", "off",
                          "--api-sock", sock] + extra,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while True:
        try:
            c = Client(sock)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            if time.time() > deadline:
                raise
            time.sleep(0.005)
    c.get("/")  # the VM runs: every thread has its filter
    times = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        c.get("/" if i % 2 == 0 else "/vm/config")
        times.append((time.perf_counter_ns() - t0) / 1000)
    p.kill()
    p.wait()
    return times


SYSCALL_BENCH = r"""
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
static struct sock_filter prog[] = {PROGRAM};
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
static double best(int which) {
    double b = 1e18;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        for (int i = 0; i < 2000000; i++) {
            if (which) write(-1, "", 0); else ioctl(-1, 0xAE80, 0);
        }
        double x = (now() - t0) / 2000000;
        if (x < b) b = x;
    }
    return b;
}
int main(void) {
    double a = best(0), c = best(1);
    struct sock_fprog p = { sizeof(prog) / sizeof(prog[0]), prog };
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &p)) return 1;
    double b = best(0), d = best(1);
    char buf[128];
    int l = snprintf(buf, sizeof buf, "%f %f %f %f\n", a, b, c, d);
    write(1, buf, l);
    return 0;
}
"""


def syscall_cost(tmp):
    """What one syscall costs without and with the built vcpu filter (a C loop; the program is the BPF
    build.rs generated for the release build)."""
    import re
    outs = glob.glob(f"{ROOT}/target/release/build/vmm-*/out/seccomp_filters.rs")
    if not outs:
        return None
    text = open(max(outs, key=os.path.getmtime)).read()
    m = re.search(r'\("vcpu", &\[(.*?)\]\)', text, re.S)
    insns = re.findall(r"\((\d+), (\d+), (\d+), (\d+)\)", m.group(1))
    program = ", ".join("{%s, %s, %s, %su}" % i for i in insns)
    with open(f"{tmp}/sc.c", "w") as f:
        f.write(SYSCALL_BENCH.replace("PROGRAM", program))
    subprocess.run(["gcc", "-O2", "-o", f"{tmp}/sc", f"{tmp}/sc.c"], check=True)
    out = subprocess.run([f"{tmp}/sc"], capture_output=True, text=True, check=True).stdout
    return [float(x) for x in out.split()]


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
        boot = {m: ([], []) for m in MODES}
        if os.path.exists(f"{ROOT}/build/guest-kernel"):
            for i in range(BOOTS):
                order = list(MODES) if i % 2 == 0 else list(MODES)[::-1]
                for m in order:
                    ms, cpu = guest_boot(microvm, MODES[m])
                    if ms is not None:
                        boot[m][0].append(ms)
                        boot[m][1].append(cpu)
        api = {m: ([], []) for m in MODES}  # per round: p50, p99
        for i in range(ROUNDS):
            order = list(MODES) if i % 2 == 0 else list(MODES)[::-1]
            for m in order:
                t = api_round(microvm, guest, MODES[m], tmp, N)
                api[m][0].append(median(t))
                api[m][1].append(p99(t))
        per_syscall = syscall_cost(tmp)

    load = os.getloadavg()[0]
    print(f"load average {load:.1f}; {PAIRS} start pairs, {BOOTS} boot pairs, {ROUNDS}x{N} API requests per mode")
    print(f"{'figure':44} {'filters':>10} {'no-seccomp':>11} {'ratio':>7}")

    def row(name, a, b, unit):
        print(f"{name:44} {a:>8.3f}{unit} {b:>9.3f}{unit} {a / b:>7.3f}")

    f, n = "filters", "no-seccomp"
    row("trivial guest: exec -> first KVM_RUN p50", median(start[f][0]), median(start[n][0]), "ms")
    row("trivial guest: exec -> exit p50", median(start[f][1]), median(start[n][1]), "ms")
    if boot[f][0] and boot[n][0]:
        row("guest kernel: exec -> boot marker p50", median(boot[f][0]), median(boot[n][0]), "ms")
        row("guest kernel: CPU time of a run of /bin/true p50", median(boot[f][1]), median(boot[n][1]), "ms")
    row("API round trip (VM running) p50, median of rounds", median(api[f][0]), median(api[n][0]), "us")
    row("API round trip (VM running) p99, median of rounds", median(api[f][1]), median(api[n][1]), "us")
    if per_syscall:
        print(f"one syscall through the vcpu filter: ioctl(KVM_RUN) {per_syscall[0]:.0f} -> {per_syscall[1]:.0f} ns, "
              f"write {per_syscall[2]:.0f} -> {per_syscall[3]:.0f} ns (best of 5 x 2,000,000, on a bad descriptor)")


if __name__ == "__main__":
    main()
