#!/usr/bin/env python3
"""What the seccomp filters cost (issue 21): the same runs with the built-in filters and with --no-seccomp,
side by side, alternating so that the load of the moment falls on both alike.

1. Start: a trivial PVH guest that triple-faults at once (scripts/bench-start.py's), PAIRS pairs:
   exec -> first KVM_RUN (--boot-timer) and exec -> exit (reaped).
2. Guest kernel boot: build/guest-kernel with build/rootfs.qcow2 running /bin/true, BOOTS pairs: exec ->
   the kernel's boot-time marker write ("guest boot time: N us", --boot-timer), i.e. just before init's
   first instruction, and the CPU time (user + system) of the whole run, from wait4.
3. API latency: two VMs at once running the test guest's `count` mode, one with every thread filtered
   (VMM, API, vCPU) and one with --no-seccomp; ROUNDS rounds (fresh VMs each) of N requests to each (GET /
   and GET /vm/config, one at a time on one connection per VM), alternating between the two VMs request by
   request, so that both see the same moment's load (measured one mode after the other, the p50 moved by
   up to 2x between runs with either mode ahead: where the scheduler put the threads, not the filters); the
   median over rounds of each round's p50 and p99; and the CPU time per request of each VM's threads but
   its vCPUs (/proc/PID/task/TID/schedstat, in ns), which wall-clock noise does not reach.
4. One syscall (ioctl KVM_RUN, write; on a bad descriptor) without and with the vcpu filter, in a C loop.
5. Installing each thread kind's filter (the seccomp(2) call itself, in a C program): paid once per thread,
   and for a vCPU before its first KVM_RUN (the kernel checks the program and, since Linux 5.11, runs it
   for every syscall number to find those it always allows, so its cost grows with the program's length).

Prints medians and the ratio filtered / unfiltered (target: under 1.02). Needs /dev/kvm, gcc and ld, the
release build (built here) and the test guest (cargo test -p tests --no-run builds it).
Environment: PAIRS (default 40), BOOTS (40), ROUNDS (20), N (1000).
"""
import glob, importlib.util, os, select, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAIRS = int(os.environ.get("PAIRS", "40"))
BOOTS = int(os.environ.get("BOOTS", "40"))
ROUNDS = int(os.environ.get("ROUNDS", "20"))
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


def start_api_vm(microvm, guest, extra, sock):
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
    return p, c


def host_cpu_ns(pid):
    """CPU time (ns, from each thread's /proc schedstat: exact, not in clock ticks) of every thread of
    microvm `pid` but its vCPUs: what serving API requests costs the host, whatever the guest does."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().startswith("vcpu"):
                    continue
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return total


def api_round(microvm, guest, tmp, n):
    """Both modes at once: one VM with the filters and one without run side by side, and the requests
    alternate between them one by one (which goes first alternates too), so that whatever the machine is
    doing at a given moment falls on both alike. Returns ({mode: [round-trip us]}, {mode: CPU us per
    request of the VMM's non-vCPU threads})."""
    vms = {m: start_api_vm(microvm, guest, MODES[m], f"{tmp}/api-{i}.sock") for i, m in enumerate(MODES)}
    times = {m: [] for m in MODES}
    cpu0 = {m: host_cpu_ns(vms[m][0].pid) for m in MODES}
    for i in range(n):
        order = list(MODES) if i % 2 == 0 else list(MODES)[::-1]
        for m in order:
            path = "/" if (i // 2) % 2 == 0 else "/vm/config"
            t0 = time.perf_counter_ns()
            vms[m][1].get(path)
            times[m].append((time.perf_counter_ns() - t0) / 1000)
    cpu = {m: (host_cpu_ns(vms[m][0].pid) - cpu0[m]) / n / 1000 for m in MODES}
    for p, _ in vms.values():
        p.kill()
        p.wait()
    return times, cpu


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


INSTALL_BENCH = r"""
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
static struct sock_filter prog[] = {PROGRAM};
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e6 + t.tv_nsec / 1e3; }
int main(void) {
    for (int i = 0; i < 21; i++) {
        pid_t p = fork();
        if (p == 0) {
            struct sock_fprog fp = { sizeof(prog) / sizeof(prog[0]), prog };
            prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            double t0 = now();
            if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fp)) _exit(1);
            double t1 = now();
            char b[32];
            int l = snprintf(b, sizeof b, "%.1f\n", t1 - t0);
            write(1, b, l);
            _exit(0);
        }
        waitpid(p, 0, 0);
    }
    return 0;
}
"""


def filter_programs():
    """{kind: BPF instructions} from the seccomp_filters.rs build.rs generated for the release build."""
    import re
    outs = glob.glob(f"{ROOT}/target/x86_64-unknown-linux-musl/release/build/vmm-*/out/seccomp_filters.rs")
    if not outs:
        return {}
    text = open(max(outs, key=os.path.getmtime)).read()
    progs = {}
    for m in re.finditer(r'\("(\w+)", &\[(.*?)\]\)', text, re.S):
        progs[m.group(1)] = re.findall(r"\((\d+), (\d+), (\d+), (\d+)\)", m.group(2))
    return progs


def install_cost(tmp):
    """{kind: (instructions, median us)} of installing each thread kind's filter (seccomp(2) in a fresh
    child, 21 times): what a filtered thread pays once, before its first syscall under the filter."""
    out = {}
    for kind, insns in filter_programs().items():
        with open(f"{tmp}/inst.c", "w") as f:
            f.write(INSTALL_BENCH.replace("PROGRAM", ", ".join("{%s, %s, %s, %su}" % i for i in insns)))
        subprocess.run(["gcc", "-O2", "-o", f"{tmp}/inst", f"{tmp}/inst.c"], check=True)
        r = subprocess.run([f"{tmp}/inst"], capture_output=True, text=True, check=True).stdout
        out[kind] = (len(insns), median([float(x) for x in r.split()]))
    return out


def syscall_cost(tmp):
    """What one syscall costs without and with the built vcpu filter (a C loop; the program is the BPF
    build.rs generated for the release build)."""
    import re
    outs = glob.glob(f"{ROOT}/target/x86_64-unknown-linux-musl/release/build/vmm-*/out/seccomp_filters.rs")
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
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "vmm", "--target", "x86_64-unknown-linux-musl", "--bin", "microvm"], cwd=ROOT, check=True)
    microvm = f"{ROOT}/target/x86_64-unknown-linux-musl/release/microvm"
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
        api = {m: ([], [], []) for m in MODES}  # per round: p50, p99, CPU per request
        for i in range(ROUNDS):
            t, cpu = api_round(microvm, guest, tmp, N)
            for m in MODES:
                api[m][0].append(median(t[m]))
                api[m][1].append(p99(t[m]))
                api[m][2].append(cpu[m])
        per_syscall = syscall_cost(tmp)
        installs = install_cost(tmp)

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
    row("API: CPU per request, VMM and API threads", median(api[f][2]), median(api[n][2]), "us")
    if per_syscall:
        print(f"one syscall through the vcpu filter: ioctl(KVM_RUN) {per_syscall[0]:.0f} -> {per_syscall[1]:.0f} ns, "
              f"write {per_syscall[2]:.0f} -> {per_syscall[3]:.0f} ns (best of 5 x 2,000,000, on a bad descriptor)")
    if installs:
        print("installing a filter (seccomp(2), median of 21): " +
              ", ".join(f"{k} {n} instructions {us:.0f} us" for k, (n, us) in installs.items()))


if __name__ == "__main__":
    main()
