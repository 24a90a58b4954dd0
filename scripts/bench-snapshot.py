#!/usr/bin/env python3
"""Snapshot and restore figures (issue 19): microvm beside QEMU's microvm machine, in one run.

The guest is the project's guest kernel (build/guest-kernel, build/rootfs.qcow2 attached read-only) booted to
its shell prompt. For each size (128 MiB / 1 vCPU, then 1 GiB / 2 vCPUs):
  - create: the guest is paused and a Full snapshot taken through the API (wall time of the request; the
    state file's and memory file's sizes, the memory file's allocated size: it is sparse); then resumed, one
    shell command run, paused again, and a Diff snapshot taken (time, pages it holds), laid onto a copy of the
    Full memory file with rebase-snap (time);
  - restore, RUNS times: `microvm --restore --resume`, exec -> first KVM_RUN of a restored vCPU (microvm logs
    its CLOCK_MONOTONIC with --boot-timer) and load -> vCPUs started with its three phases (its own log line);
    beside it kvm-restore-floor (scripts/kvm-restore-floor.c, built static here): a C program making exactly
    microvm's ioctl sequence for this restore (the one virtio device is the root disk) and nothing else, each
    step timed; and QEMU: the same guest booted
    on -M microvm, saved with `migrate exec:cat > FILE`, restored with `-incoming exec:cat FILE`, exec -> QMP
    query-status "running" (polled every 0.2 ms);
  - clones (128 MiB only): CLONES microvm processes restored from the one snapshot, running side by side;
    RSS and PSS of each (smaps_rollup) after a second.

Environment: RUNS (default 30), CLONES (10), SIZES (default "128:1,1024:2"). Run from the repository; needs
/dev/kvm and qemu-system-x86_64 (scripts/install-deps.sh installs it).
"""
import faulthandler, json, os, re, select, shutil, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = int(os.environ.get("RUNS", "30"))
CLONES = int(os.environ.get("CLONES", "10"))
SIZES = [tuple(int(x) for x in s.split(":")) for s in os.environ.get("SIZES", "128:1,1024:2").split(",")]
MICROVM = f"{ROOT}/target/x86_64-unknown-linux-musl/release/microvm"
READY = b"starting /bin/sh on the console"
CMDLINE = "console=ttyS0 root=/dev/vda -- rc"


def api(sock, method, path, body=None):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    data = json.dumps(body) if body is not None else ""
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n{data}".encode())
    resp = b""
    while b"\r\n\r\n" not in resp:
        resp += s.recv(65536)
    head, _, rest = resp.partition(b"\r\n\r\n")
    m = re.search(rb"Content-Length: (\d+)", head, re.I)
    n = int(m.group(1)) if m else 0
    while len(rest) < n:
        rest += s.recv(65536)
    s.close()
    status = int(head[9:12])
    assert status in (200, 204), (method, path, body, head, rest)
    return rest


def wait_for(p, text, timeout=120):
    out, deadline = b"", time.time() + timeout
    while time.time() < deadline and text not in out:
        r, _, _ = select.select([p.stdout], [], [], 0.5)
        if r:
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
    if text not in out:
        raise RuntimeError(f"never saw {text!r}: {out[-2000:]!r}")
    return out


def wait_path(path, timeout=30):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        if time.time() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.01)


def q(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p * (len(v) - 1))))]


def stop(p):
    p.kill()
    p.wait()


def microvm_snapshot(tmp, disk, mib, vcpus):
    sock = f"{tmp}/api.sock"
    p = subprocess.Popen([MICROVM, "--api-sock", sock, "--kernel", f"{ROOT}/build/guest-kernel", "--mem",
                          str(mib), "--vcpus", str(vcpus), "--disk", f"{disk},ro", "--cmdline", CMDLINE],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    wait_for(p, READY)
    wait_for(p, b"# ", 30)
    state, mem = f"{tmp}/vm.state", f"{tmp}/vm.mem"
    api(sock, "PATCH", "/vm", {"state": "Paused"})
    t0 = time.perf_counter()
    api(sock, "PUT", "/snapshot/create", {"snapshot_type": "Full", "snapshot_path": state, "mem_file_path": mem})
    full_ms = (time.perf_counter() - t0) * 1e3
    api(sock, "PATCH", "/vm", {"state": "Resumed"})
    p.stdin.write(b"echo diff-marker\n")
    p.stdin.flush()
    wait_for(p, b"diff-marker\n", 30)
    api(sock, "PATCH", "/vm", {"state": "Paused"})
    t0 = time.perf_counter()
    api(sock, "PUT", "/snapshot/create", {"snapshot_type": "Diff", "snapshot_path": f"{tmp}/diff.state",
                                          "mem_file_path": f"{tmp}/diff.mem"})
    diff_ms = (time.perf_counter() - t0) * 1e3
    stop(p)
    pages = os.stat(f"{tmp}/diff.mem").st_blocks * 512 // 4096
    subprocess.run(["cp", "--sparse=always", mem, f"{tmp}/rebased.mem"], check=True)
    t0 = time.perf_counter()
    subprocess.run([f"{ROOT}/target/x86_64-unknown-linux-musl/release/rebase-snap", "--base-file", f"{tmp}/rebased.mem", "--diff-file",
                    f"{tmp}/diff.mem"], check=True, stdout=subprocess.DEVNULL)
    rebase_ms = (time.perf_counter() - t0) * 1e3
    os.unlink(f"{tmp}/rebased.mem")
    print(f"  create: Full {full_ms:.1f} ms (state file {os.path.getsize(state) / 1024:.0f} KiB, memory file "
          f"{os.path.getsize(mem) >> 20} MiB, {os.stat(mem).st_blocks * 512 / 1048576:.1f} MiB allocated); "
          f"Diff {diff_ms:.1f} ms ({pages} pages = {pages * 4} KiB allocated); rebase-snap {rebase_ms:.1f} ms")
    return state, mem


def microvm_restore(state, mem):
    """exec -> first KVM_RUN (ms), load -> vCPUs started (ms), and the restore's phases (ms)."""
    t_exec = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    p = subprocess.Popen([MICROVM, "--restore", state, "--mem-file", mem, "--resume", "--boot-timer",
                          "--log-level", "info"],
                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err, first, load = b"", None, None
    deadline = time.time() + 30
    while time.time() < deadline and (first is None or load is None):
        r, _, _ = select.select([p.stderr], [], [], 0.5)
        if r:
            chunk = os.read(p.stderr.fileno(), 65536)
            if not chunk:
                break
            err += chunk
            m = re.search(rb"first KVM_RUN: \d+ us since process start \(CLOCK_MONOTONIC (\d+) ns\)", err)
            first = (int(m.group(1)) - t_exec) / 1e6 if m else None
            load = re.search(rb"restored in (\d+) us \(files read and mapped (\d+) us, VM and devices (\d+) us, "
                             rb"vCPU threads started (\d+) us\)", err)
    stop(p)
    if first is None or load is None:
        raise RuntimeError(f"no timing from microvm: {err!r}")
    return first, int(load.group(1)) / 1e3, [int(x) / 1e3 for x in load.groups()[1:]]


def build_floor(tmp):
    """scripts/kvm-restore-floor.c, built static: microvm's ioctl sequence for a restore, nothing else."""
    subprocess.run(["gcc", "-O2", "-static", "-o", f"{tmp}/kvm-restore-floor",
                    f"{ROOT}/scripts/kvm-restore-floor.c"], check=True)
    return f"{tmp}/kvm-restore-floor"


def floor_restore(floor, fstate, mem, mib):
    """kvm-restore-floor: exec -> first KVM_RUN (ms) and each step (ms)."""
    t_exec = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    r = subprocess.run([floor, "restore", fstate, mem, str(mib)], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30)
    err = r.stderr.decode()
    if r.returncode != 0:
        raise RuntimeError(f"kvm-restore-floor failed: {err}")
    first = (int(re.search(r"first KVM_RUN CLOCK_MONOTONIC (\d+)", err).group(1)) - t_exec) / 1e6
    steps = {m.group(1): float(m.group(2)) / 1e3 for m in re.finditer(r"step (\S+) ([\d.]+)", err)}
    return first, steps


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def qemu_cmd(qemu, disk, mib, vcpus, qmp):
    return [qemu, "-M", "microvm,acpi=off", "-accel", "kvm", "-cpu", "qemu64", "-m", str(mib), "-smp",
            str(vcpus), "-nographic", "-no-reboot", "-nodefaults", "-kernel", f"{ROOT}/build/guest-kernel",
            "-append", CMDLINE, "-serial", "stdio", "-drive", f"id=root,file={disk},format=qcow2,if=none,"
            "snapshot=on", "-device", "virtio-blk-device,drive=root", "-qmp", f"unix:{qmp},server=on,wait=off"]


class Qmp:
    def __init__(self, path):
        wait_path(path)
        self.s = socket.socket(socket.AF_UNIX)
        while True:
            try:
                self.s.connect(path)
                break
            except (ConnectionRefusedError, FileNotFoundError):
                time.sleep(0.0002)
        self.f = self.s.makefile("rwb")
        self.f.readline()
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        self.f.flush()
        while True:
            msg = json.loads(self.f.readline())
            if "return" in msg or "error" in msg:
                return msg


def qemu_snapshot(qemu, tmp, disk, mib, vcpus):
    qmp = f"{tmp}/qmp.sock"
    p = subprocess.Popen(qemu_cmd(qemu, disk, mib, vcpus, qmp), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    wait_for(p, READY)
    wait_for(p, b"# ", 30)
    c = Qmp(qmp)
    out = f"{tmp}/qemu.mig"
    t0 = time.perf_counter()
    c.cmd("migrate", uri=f"exec:cat > {out}")
    while c.cmd("query-migrate")["return"].get("status") not in ("completed", "failed"):
        time.sleep(0.001)
    ms = (time.perf_counter() - t0) * 1e3
    stop(p)
    os.unlink(qmp)
    print(f"  QEMU migrate to file: {ms:.1f} ms, {os.path.getsize(out) >> 20} MiB")
    return out


def qemu_restore(qemu, tmp, disk, mib, vcpus, mig):
    qmp = f"{tmp}/qmp-in.sock"
    if os.path.exists(qmp):
        os.unlink(qmp)
    t0 = time.perf_counter()
    p = subprocess.Popen(qemu_cmd(qemu, disk, mib, vcpus, qmp) + ["-incoming", f"exec:cat {mig}"],
                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    c = Qmp(qmp)
    while c.cmd("query-status")["return"]["status"] != "running":
        time.sleep(0.0002)
    ms = (time.perf_counter() - t0) * 1e3
    stop(p)
    return ms


def kib(pid, field):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def clones(state, mem):
    procs = [subprocess.Popen([MICROVM, "--restore", state, "--mem-file", mem, "--resume"],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(CLONES)]
    time.sleep(1.0)
    rss = [kib(p.pid, "Rss") for p in procs]
    pss = [kib(p.pid, "Pss") for p in procs]
    alive = sum(p.poll() is None for p in procs)
    for p in procs:
        stop(p)
    print(f"  {CLONES} clones of one snapshot side by side ({alive} alive after 1 s): RSS per clone "
          f"p50 {statistics.median(rss) / 1024:.1f} MiB, PSS per clone p50 {statistics.median(pss) / 1024:.1f} MiB, "
          f"PSS total {sum(pss) / 1024:.1f} MiB")


def main():
    if os.environ.get("BENCH_DEBUG"):
        faulthandler.dump_traceback_later(80)
    qemu = shutil.which("qemu-system-x86_64")
    if not (os.path.exists(MICROVM) and os.path.exists(f"{ROOT}/build/guest-kernel")):
        sys.exit("build first: cargo build --release, scripts/build-guest-kernel.sh, scripts/build-rootfs.sh")
    print(f"load average before: {load_average()}")
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        disk = f"{tmp}/rootfs.qcow2"
        shutil.copy(f"{ROOT}/build/rootfs.qcow2", disk)
        floor = build_floor(tmp)
        for mib, vcpus in SIZES:
            print(f"\n{mib} MiB, {vcpus} vCPU(s), guest kernel idle at its shell prompt")
            state, mem = microvm_snapshot(tmp, disk, mib, vcpus)
            fstate = f"{tmp}/floor.state"
            subprocess.run([floor, "save", fstate, str(vcpus)], check=True)
            firsts, loads, phases, floors, steps = [], [], [], [], []
            mig = qemu_snapshot(qemu, tmp, disk, mib, vcpus) if qemu else None
            qs = []
            for _ in range(RUNS):
                f, l, ph = microvm_restore(state, mem)
                firsts.append(f)
                loads.append(l)
                phases.append(ph)
                f, st = floor_restore(floor, fstate, mem, mib)
                floors.append(f)
                steps.append(st)
                if mig:
                    qs.append(qemu_restore(qemu, tmp, disk, mib, vcpus, mig))
            print(f"  microvm restore, exec -> first KVM_RUN, ms  p50 {q(firsts, .5):.2f}  p99 {q(firsts, .99):.2f}"
                  f"  min {min(firsts):.2f}")
            print(f"  microvm restore, load -> vCPUs started, ms  p50 {q(loads, .5):.2f}  p99 {q(loads, .99):.2f}"
                  f"  min {min(loads):.2f}")
            for i, name in enumerate(["files read and mapped", "VM and devices", "vCPU threads started"]):
                col = [ph[i] for ph in phases]
                print(f"    {name:<24} p50 {q(col, .5):.2f}  min {min(col):.2f}")
            print(f"  kvm-restore-floor, exec -> first KVM_RUN, ms p50 {q(floors, .5):.2f}  p99 {q(floors, .99):.2f}"
                  f"  min {min(floors):.2f}")
            for name in steps[0]:
                col = [st[name] for st in steps]
                print(f"    {name:<28} p50 {q(col, .5):.3f}  min {min(col):.3f}")
            summary.append((f"{mib} MiB / {vcpus} vCPU", firsts, floors, qs))
            if qs:
                print(f"  QEMU -incoming, exec -> running, ms          p50 {q(qs, .5):.2f}  p99 {q(qs, .99):.2f}"
                      f"   (microvm / QEMU p50: {q(firsts, .5) / q(qs, .5):.3f})")
            if mib == SIZES[0][0]:
                clones(state, mem)
            for f in (state, mem, fstate, f"{tmp}/diff.mem", f"{tmp}/diff.state"):
                if os.path.exists(f):
                    os.unlink(f)
            if mig:
                os.unlink(mig)
    print(f"\nload average after: {load_average()}")
    print("\nrestore, exec -> first KVM_RUN (QEMU: -> running), ms: p50 / p99 / min")
    print(f"  {'':<18} {'microvm':>22}  {'kvm-restore-floor':>22}  {'QEMU':>26}  {'microvm/QEMU p50':>17}")
    cell = lambda v: f"{q(v, .5):.2f} / {q(v, .99):.2f} / {min(v):.2f}" if v else "-"
    for name, firsts, floors, qs in summary:
        ratio = f"{q(firsts, .5) / q(qs, .5):.3f}" if qs else "-"
        print(f"  {name:<18} {cell(firsts):>22}  {cell(floors):>22}  {cell(qs):>26}  {ratio:>17}")


if __name__ == "__main__":
    main()
