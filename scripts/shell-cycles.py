#!/usr/bin/env python3
"""Runs N commands through the guest's console shell (`init -- rc`) one at a time, reading
/proc/meminfo (MemFree and Slab, the kernel's free frames and heap in use) before, every 1000
commands and after, then powers the guest off and prints the kernel's `frames used` / `heap used`
line. Issue #24: frames and heap must come back where they started.

    scripts/shell-cycles.py [N] [KERNEL] [DISK]     (defaults: 10000, build/guest-kernel,
                                                     build/rootfs.qcow2; MICROVM=path to the binary)

The disk is copied first (the guest mounts it read-only anyway). CI runs a few hundred commands in
tests/tests/guest_memory.rs (MEMTEST_CYCLES); this script is the long run."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
kernel = sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "build/guest-kernel")
disk = sys.argv[3] if len(sys.argv) > 3 else os.path.join(root, "build/rootfs.qcow2")
microvm = os.environ.get("MICROVM") or next(
    p for p in (os.path.join(root, "target", d, "microvm") for d in ("release", "debug"))
    if os.path.exists(p))

tmp = tempfile.mkdtemp()
copy = os.path.join(tmp, "rootfs.qcow2")
shutil.copy(disk, copy)
vm = subprocess.Popen(
    [microvm, "--kernel", kernel, "--disk", copy, "--cmdline", "console=ttyS0 root=/dev/vda -- rc"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
out = bytearray()
lock = threading.Lock()


def reader():
    while True:
        b = vm.stdout.read1(65536)
        if not b:
            return
        with lock:
            out.extend(b)


threading.Thread(target=reader, daemon=True).start()


def wait_for(text, since, timeout=300):
    end = time.time() + timeout
    while time.time() < end:
        with lock:
            i = out.find(text.encode(), since)
        if i >= 0:
            return i + len(text)
        if vm.poll() is not None:
            break
        time.sleep(0.01)
    with lock:
        tail = out[-3000:].decode(errors="replace")
    sys.exit(f"timed out waiting for {text!r}; console tail:\n{tail}")


def send(s):
    vm.stdin.write(s.encode())
    vm.stdin.flush()


def meminfo():
    with lock:
        mark = len(out)
    send("cat /proc/meminfo\n")
    end = wait_for(" kB\n# ", wait_for("Slab:", mark))
    with lock:
        text = out[mark:end].decode(errors="replace")
    free = int(re.search(r"MemFree:\s+(\d+)", text).group(1))
    slab = int(re.search(r"Slab:\s+(\d+)", text).group(1))
    return free, slab


wait_for("# ", 0)
for i in range(5):
    with lock:
        mark = len(out)
    send(f"echo warm{i}\n")
    wait_for(f"warm{i}\n# ", mark)
before = meminfo()
print(f"before: MemFree {before[0]} kB, Slab {before[1]} kB", flush=True)
start = time.time()
for i in range(n):
    with lock:
        mark = len(out)
    send(f"echo cmd{i}\n")
    wait_for(f"\ncmd{i}\n# ", mark)
    if (i + 1) % 1000 == 0 and i + 1 < n:
        free, slab = meminfo()
        each = (time.time() - start) / (i + 1)
        print(f"{i + 1} commands, {each:.3f} s each: MemFree {free} kB, Slab {slab} kB", flush=True)
    with lock:
        # Keep the buffer small: only the tail is ever searched.
        if len(out) > 1 << 20:
            del out[: len(out) - (1 << 16)]
each = (time.time() - start) / max(n, 1)
after = meminfo()
print(f"{n} commands, {each:.3f} s each: MemFree {after[0]} kB, Slab {after[1]} kB", flush=True)
with lock:
    mark = len(out)
send("poweroff\n")
vm.wait(timeout=300)
with lock:
    tail = out[mark:].decode(errors="replace")
for line in tail.splitlines():
    if "frames used" in line:
        print(line.strip())
shutil.rmtree(tmp)
ok = before == after and vm.returncode == 0
print("frames and heap back where they started" if ok else "LEAK or bad exit", flush=True)
sys.exit(0 if ok else 1)
