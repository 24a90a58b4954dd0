#!/usr/bin/env python3
"""Start and exit speed, memory overhead and density: microvm beside QEMU's microvm machine (issue 18).

1. Trivial guest: a PVH ELF whose first instructions load an empty IDT and execute ud2, so it triple-faults
   at once (built here with gcc and ld). microvm and QEMU run it alternately, in pairs (PAIRS pairs), so the
   load of the moment falls on both alike:
     - exec -> first KVM_RUN (microvm: it logs CLOCK_MONOTONIC at vCPU 0's first KVM_RUN with --boot-timer)
     - exec -> exit (the VMM has ended and been reaped)
   Beside them runs kvm-floor (scripts/kvm-floor.c, built static here): a C program that makes only the KVM
   calls any VMM with the in-kernel irqchip and PIT must make before its first KVM_RUN, runs the same triple
   fault and exits. It is this host's floor for both figures: what exec, KVM and the VM's destruction cost
   before any VMM code of ours.
2. Memory overhead: the guest kernel (build/guest-kernel, build/rootfs.qcow2) booted to its shell prompt
   and left idle for a second; the RSS of every mapping except guest RAM, from /proc/PID/smaps (Firecracker
   CI's method). RUNS boots each, alternating.
3. Density: 8 workers each start the trivial guest again as soon as the last one ended, for SECONDS
   seconds per VMM (microvm, QEMU, microvm, QEMU); VMs started and finished per second.

Environment: PAIRS (default 30), RUNS (3), SECONDS (5), MEM_MIB (128). Run from the repository; needs
gcc, ld, /dev/kvm and qemu-system-x86_64 (scripts/install-deps.sh installs it).
"""
import os, select, shutil, statistics, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAIRS = int(os.environ.get("PAIRS", "30"))
RUNS = int(os.environ.get("RUNS", "3"))
SECONDS = float(os.environ.get("SECONDS", "5"))
MEM_MIB = int(os.environ.get("MEM_MIB", "128"))

TRIPLE_S = r"""
    .section .text, "ax"
    .code32
    .globl pvh_start32
pvh_start32:
    lidt idt_desc
    ud2
    .section .rodata
idt_desc:
    .word 0
    .long 0
    .section .note.Xen, "a", @note
    .p2align 2
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .long pvh_start32
"""
TRIPLE_LD = """
ENTRY(pvh_start32)
SECTIONS {
    . = 0x100000;
    .text : { *(.text) }
    .rodata : { *(.rodata) }
    .note.Xen : { KEEP(*(.note.Xen)) }
    /DISCARD/ : { *(.note.GNU-stack) *(.note.gnu.*) }
}
"""


def build_guest(tmp):
    with open(f"{tmp}/t.S", "w") as f:
        f.write(TRIPLE_S)
    with open(f"{tmp}/t.ld", "w") as f:
        f.write(TRIPLE_LD)
    subprocess.run(["gcc", "-c", f"{tmp}/t.S", "-o", f"{tmp}/t.o"], check=True)
    subprocess.run(["ld", "-T", f"{tmp}/t.ld", "-o", f"{tmp}/triple.elf", f"{tmp}/t.o"], check=True)
    return f"{tmp}/triple.elf"


def build_floor(tmp):
    subprocess.run(["gcc", "-O2", "-static", "-o", f"{tmp}/kvm-floor", f"{ROOT}/scripts/kvm-floor.c"],
                   check=True)
    return f"{tmp}/kvm-floor"


def commands(microvm, qemu, kernel):
    mvm = [microvm, "--kernel", kernel, "--mem", str(MEM_MIB)]
    q = [qemu, "-M", "microvm,acpi=off,x-option-roms=off,rtc=off", "-accel", "kvm", "-m", str(MEM_MIB),
         "-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-kernel", kernel]
    return mvm, q


def run_trivial(cmd, want_kvm_run):
    t0 = time.monotonic_ns()
    p = subprocess.run(cmd + (["--boot-timer"] if want_kvm_run else []), stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t1 = time.monotonic_ns()
    kvm_run = None
    for line in p.stderr.decode(errors="replace").splitlines():
        if "first KVM_RUN" in line:
            kvm_run = (int(line.split("CLOCK_MONOTONIC ")[1].split()[0]) - t0) / 1e6
    return kvm_run, (t1 - t0) / 1e6, p.returncode


def overhead_kib(pid, ram_bytes):
    """RSS of all mappings except the guest RAM mapping (an anonymous mapping of exactly the RAM size)."""
    total, size, rss = 0, 0, 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and not parts[0].endswith(":"):
                if size != ram_bytes:
                    total += rss
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                size, rss = hi - lo, 0
            elif parts[0] == "Rss:":
                rss = int(parts[1])
    if size != ram_bytes:
        total += rss
    return total


def idle_overhead(cmd, ready):
    """Boots to `ready` on the console, idles a second, reads the overhead; None if the prompt never came."""
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out, deadline, kib = b"", time.time() + 60, None
    while time.time() < deadline and ready not in out:
        r, _, _ = select.select([p.stdout], [], [], 0.5)
        if r:
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
    if ready in out:
        time.sleep(1.0)
        kib = overhead_kib(p.pid, MEM_MIB << 20)
    p.kill()
    p.wait()
    return kib


def density(cmd):
    done, stop = [0], time.monotonic() + SECONDS
    lock = threading.Lock()

    def worker():
        while time.monotonic() < stop:
            subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            with lock:
                done[0] += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0] / (time.monotonic() - t0)


def q(values, p):
    values = sorted(v for v in values if v is not None)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(p * len(values)))]


def main():
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        print("qemu-system-x86_64 is not installed (scripts/install-deps.sh installs it)")
        return 1
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "vmm", "--target", "x86_64-unknown-linux-musl"], cwd=ROOT, check=True)
    microvm = f"{ROOT}/target/x86_64-unknown-linux-musl/release/microvm"
    tmp = tempfile.mkdtemp(prefix="bench-start-")
    kernel = build_guest(tmp)
    mvm, qm = commands(microvm, qemu, kernel)
    floor = [build_floor(tmp), str(MEM_MIB)]
    with open("/proc/loadavg") as f:
        print(f"load average before: {f.read().split()[0]}; {PAIRS} pairs, guest memory {MEM_MIB} MiB")

    kvm_run, mvm_exit, q_exit, f_run, f_exit = [], [], [], [], []
    for i in range(PAIRS):
        order = [(mvm, "microvm"), (qm, "qemu"), (floor, "floor")]
        order = order[i % 3:] + order[:i % 3]
        for cmd, who in order:
            k, e, rc = run_trivial(cmd, who == "microvm")
            if who == "microvm":
                assert rc == 2, f"microvm exited {rc}, not 2 (guest crash)"
                kvm_run.append(k)
                mvm_exit.append(e)
            elif who == "floor":
                assert rc == 2, f"kvm-floor exited {rc}, not 2"
                f_run.append(k)
                f_exit.append(e)
            else:
                q_exit.append(e)
    print("\ntrivial guest (triple fault at once), ms: p50 / p90 / min")
    print(f"  microvm   exec -> first KVM_RUN  {q(kvm_run, .5):7.2f} / {q(kvm_run, .9):7.2f} / {min(kvm_run):7.2f}")
    print(f"  kvm-floor exec -> first KVM_RUN  {q(f_run, .5):7.2f} / {q(f_run, .9):7.2f} / {min(f_run):7.2f}"
          "   (target for microvm: p50 <= 1)")
    print(f"  microvm   exec -> exit           {q(mvm_exit, .5):7.2f} / {q(mvm_exit, .9):7.2f} / {min(mvm_exit):7.2f}")
    print(f"  kvm-floor exec -> exit           {q(f_exit, .5):7.2f} / {q(f_exit, .9):7.2f} / {min(f_exit):7.2f}")
    print(f"  QEMU      exec -> exit           {q(q_exit, .5):7.2f} / {q(q_exit, .9):7.2f} / {min(q_exit):7.2f}")
    ratios = [a / b for a, b in zip(mvm_exit, q_exit)]
    print(f"  exec -> exit, microvm / QEMU: p50 of the pair ratios {statistics.median(ratios):.3f}, "
          f"ratio of the p50s {q(mvm_exit, .5) / q(q_exit, .5):.3f} (target <= 0.2)")
    print(f"  exec -> exit, kvm-floor / QEMU: ratio of the p50s {q(f_exit, .5) / q(q_exit, .5):.3f}")

    gk, disk = f"{ROOT}/build/guest-kernel", f"{ROOT}/build/rootfs.qcow2"
    if os.path.exists(gk) and os.path.exists(disk):
        ro = f"{tmp}/rootfs.qcow2"
        shutil.copy(disk, ro)
        cmdline = "console=ttyS0 root=/dev/vda -- rc"
        mcmd = [microvm, "--kernel", gk, "--mem", str(MEM_MIB), "--disk", f"{ro},ro", "--cmdline", cmdline]
        qcmd = [qemu, "-M", "microvm,acpi=off", "-accel", "kvm", "-cpu", "qemu64", "-m", str(MEM_MIB),
                "-smp", "1", "-nographic", "-no-reboot", "-nodefaults", "-kernel", gk, "-append", cmdline,
                "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
                "-drive", f"id=root,file={ro},format=qcow2,if=none,snapshot=on",
                "-device", "virtio-blk-device,drive=root"]
        ready = b"starting /bin/sh on the console"
        mk, qk = [], []
        for _ in range(RUNS):
            mk.append(idle_overhead(mcmd, ready))
            qk.append(idle_overhead(qcmd, ready))
        fmt = lambda v: " ".join("n/a" if x is None else f"{x / 1024:.2f}" for x in v)
        print("\nmemory overhead, guest kernel idle at its shell prompt (RSS outside guest RAM), MiB")
        print(f"  microvm  {fmt(mk)}   (target <= 2)")
        print(f"  QEMU     {fmt(qk)}")
    else:
        print("\nno build/guest-kernel or build/rootfs.qcow2 (scripts/build.sh): no memory figures")

    rates = {"microvm": [], "QEMU": []}
    for _ in range(2):
        rates["microvm"].append(density(mvm))
        rates["QEMU"].append(density(qm))
    print(f"\ndensity: trivial VMs started and finished per second, 8 at a time, {SECONDS:.0f} s each")
    for k, v in rates.items():
        print(f"  {k:<8} " + "  ".join(f"{x:6.1f}" for x in v))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
