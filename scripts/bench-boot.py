#!/usr/bin/env python3
"""Boot benchmark: microvm side by side with QEMU's microvm machine, on the same PVH test guest.

Per VMM, over N runs (medians, and min/max):
  - exec -> first KVM_RUN (microvm only: it logs CLOCK_MONOTONIC at vCPU 0's first KVM_RUN)
  - exec -> the guest's first line on the serial console
  - exec -> the boot-time marker (microvm only; the guest writes port 0x3f0)
  - VMM memory overhead: RSS of every mapping except guest RAM, read from /proc/PID/smaps while the guest
    idles, for a 128 MiB guest.
Targets (issue 2): first KVM_RUN <= 5 ms median, overhead <= 5 MiB.
"""
import glob, os, select, shutil, statistics, subprocess, sys, time

RUNS = int(os.environ.get("RUNS", "20"))
MEM_MIB = 128
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def guest():
    subprocess.run(["cargo", "build", "-q", "-p", "tests"], cwd=ROOT, check=True)
    return max(glob.glob(f"{ROOT}/target/debug/build/tests-*/out/guest-pvh.elf"), key=os.path.getmtime)


def overhead_kib(pid, ram_bytes):
    """RSS of all mappings except the guest RAM mapping (an anonymous mapping of exactly the RAM size)."""
    total, size, rss = 0, 0, 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts[0]) > 8 and not parts[0].endswith(":"):
                if size != ram_bytes:
                    total += rss
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                size, rss = hi - lo, 0
            elif parts[0] == "Rss:":
                rss = int(parts[1])
    if size != ram_bytes:
        total += rss
    return total


def run_once(cmd, ready_text, want_kvm_run):
    t0 = time.monotonic_ns()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = b"", b""
    first_line = None
    deadline = time.time() + 30
    while time.time() < deadline:
        r, _, _ = select.select([p.stdout, p.stderr], [], [], 0.5)
        for f in r:
            chunk = os.read(f.fileno(), 65536)
            if f is p.stdout:
                out += chunk
                if first_line is None and b"test guest:" in out:
                    first_line = (time.monotonic_ns() - t0) / 1e6
            else:
                err += chunk
        if ready_text in out:
            break
    time.sleep(0.2)  # let the guest settle into its idle loop
    kib = overhead_kib(p.pid, MEM_MIB << 20)
    p.kill()
    p.wait()
    kvm_run = marker = None
    for line in err.decode(errors="replace").splitlines():
        if "first KVM_RUN" in line and want_kvm_run:
            ns = int(line.split("CLOCK_MONOTONIC ")[1].split()[0])
            kvm_run = (ns - t0) / 1e6
        if "guest boot time:" in line:
            marker = int(line.split("guest boot time: ")[1].split()[0]) / 1e3
    return kvm_run, first_line, marker, kib


def summary(name, values, unit):
    values = [v for v in values if v is not None]
    if not values:
        return f"  {name:<28} n/a"
    return (f"  {name:<28} median {statistics.median(values):8.2f} {unit}"
            f"   (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})")


def bench(label, cmd, want_kvm_run):
    rows = [run_once(cmd, b"halting", want_kvm_run) for _ in range(RUNS)]
    print(label)
    print(summary("exec -> first KVM_RUN", [r[0] for r in rows], "ms"))
    print(summary("exec -> first guest line", [r[1] for r in rows], "ms"))
    print(summary("process start -> marker", [r[2] for r in rows], "ms"))
    print(summary("memory overhead (non-RAM RSS)", [r[3] / 1024 for r in rows], "MiB"))


def main():
    g = guest()
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "vmm", "--target", "x86_64-unknown-linux-musl"], cwd=ROOT, check=True)
    microvm = f"{ROOT}/target/x86_64-unknown-linux-musl/release/microvm"
    print(f"guest: {g}\nruns: {RUNS}, guest memory {MEM_MIB} MiB\n")
    bench("microvm", [microvm, "--kernel", g, "--mem", str(MEM_MIB), "--boot-timer",
                      "--cmdline", "marker halt"], True)
    qemu = shutil.which("qemu-system-x86_64")
    if qemu:
        bench("qemu-system-x86_64 -M microvm (peer)",
              [qemu, "-M", "microvm,acpi=off,x-option-roms=off,rtc=off", "-accel", "kvm",
               "-m", str(MEM_MIB), "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio",
               "-kernel", g, "-append", "marker halt"], False)
    else:
        print("qemu-system-x86_64 not installed (scripts/install-deps.sh installs it): no peer figures")


if __name__ == "__main__":
    sys.exit(main())
