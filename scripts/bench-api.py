#!/usr/bin/env python3
"""API latency benchmark: p50/p99 of GET / and PUT /machine-config over the Unix socket.

Starts `microvm --api-sock` (release build), sends N requests of each kind (default 10,000) on one persistent
connection, one at a time, and times each round trip (send -> whole response read) with perf_counter_ns.
The figures include this Python client's own overhead. Target (issue 5): p99 <= 1 ms.

The VM is not started (requests are answered by the VMM thread in the "Not started" state), so no KVM is
needed; with RUNNING=1 and /dev/kvm it also measures GET / while a test guest runs.

Usage: scripts/bench-api.py [N]     (env: PROFILE=debug to use the debug build, RUNNING=1)
"""
import glob, os, socket, statistics, subprocess, sys, tempfile, time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILE = os.environ.get("PROFILE", "release")
TARGET = "x86_64-unknown-linux-musl"  # the static build that ships (scripts/build.sh)


def build():
    args = ["cargo", "build", "-q", "-p", "vmm", "--target", TARGET] + (["--release"] if PROFILE == "release" else [])
    subprocess.run(args, cwd=ROOT, check=True)
    return f"{ROOT}/target/{TARGET}/{PROFILE}/microvm"


class Client:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.buf = b""

    def request(self, method, path, body=b""):
        head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n\r\n"
        self.s.sendall(head.encode() + body)
        while b"\r\n\r\n" not in self.buf:
            self.recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(self.buf) < length:
            self.recv()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, body

    def recv(self):
        chunk = self.s.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed")
        self.buf += chunk


def measure(client, method, path, body, want):
    times = []
    for _ in range(N):
        t = time.perf_counter_ns()
        status, _ = client.request(method, path, body)
        times.append(time.perf_counter_ns() - t)
        if status != want:
            raise RuntimeError(f"{method} {path}: status {status}")
    times.sort()
    pct = lambda p: times[min(len(times) - 1, int(len(times) * p / 100))] / 1000
    return pct(50), pct(99), times[-1] / 1000, statistics.mean(times) / 1000


def report(name, figures):
    p50, p99, worst, mean = figures
    verdict = "ok" if p99 <= 1000 else "OVER TARGET"
    print(f"{name:28} p50 {p50:7.1f} us   p99 {p99:7.1f} us   max {worst:8.1f} us   mean {mean:7.1f} us   [{verdict}]")
    return p99 <= 1000


def main():
    binary = build()
    tmp = tempfile.mkdtemp(prefix="microvm-bench-api-")
    sock = os.path.join(tmp, "api.sock")
    args = [binary, "--api-sock", sock]
    running = os.environ.get("RUNNING") == "1"
    if running:
        subprocess.run(["cargo", "build", "-q", "-p", "tests", "--tests"], cwd=ROOT, check=True)
        guest = max(glob.glob(f"{ROOT}/target/debug/build/tests-*/out/guest-pvh.elf"), key=os.path.getmtime)
        args += ["--kernel", guest, "--cmdline", os.environ.get("GUEST_CMDLINE", "count"), "--serial", "off"]
    vmm = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while not os.path.exists(sock):
            if time.time() > deadline:
                raise RuntimeError("the API socket did not appear")
            time.sleep(0.01)
        c = Client(sock)
        for _ in range(200):  # warm-up
            c.request("GET", "/")
        print(f"{N} requests each, one persistent connection, {PROFILE} build"
              + (", guest running" if running else ", VM not started"))
        ok = report("GET /", measure(c, "GET", "/", b"", 200))
        if not running:
            body = b'{"vcpu_count": 2, "mem_size_mib": 256, "smt": false}'
            ok &= report("PUT /machine-config", measure(c, "PUT", "/machine-config", body, 204))
        return 0 if ok else 1
    finally:
        vmm.terminate()
        vmm.wait()


if __name__ == "__main__":
    sys.exit(main())
