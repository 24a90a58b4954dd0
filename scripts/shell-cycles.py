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


def meminfo_since(mark):
    """MemFree and Slab of the /proc/meminfo that `cat` printed after byte `mark`."""
    end = wait_for(" kB\n", wait_for("Slab:", mark))
    with lock:
        text = out[mark:end].decode(errors="replace")
    free = int(re.search(r"MemFree:\s+(\d+)", text).group(1))
    slab = int(re.search(r"Slab:\s+(\d+)", text).group(1))
    return free, slab


# The console shell is busybox ash: it keeps each distinct line typed in its line-editing history (a
# heap allocation of the shell, not a leak) and skips a line equal to the one before. So one shell
# function does everything and the same line, its name, is typed every time: the shell's memory is
# the same at each reading. WARM warm-up commands as in tests/tests/guest_memory.rs (the shell touches
# its last new pages within the first 50 calls: a 10,000-command run that read after 5 saw MemFree
# 12 kB lower at the 1000th and then the same at every reading to the end), then a reading, one every
# 1000 commands and one after the last.
WARM = 50
PROMPT = "\n/ # "
wait_for(PROMPT, 0)
last = n + WARM
send(f"c() {{ /bin/echo cmd$((i = i + 1)); case $i in {WARM}|*{WARM:03}|{last}) cat /proc/meminfo;; esac; }}\n")
before = None
start = time.time()
for i in range(1, last + 1):
    with lock:
        mark = len(out)
    send("c\n")
    wait_for(PROMPT, wait_for(f"\ncmd{i}\n", mark) - 1)
    if i == WARM or i == last or i % 1000 == WARM:
        reading = meminfo_since(mark)
        if i == WARM:
            before = reading
            print(f"before: MemFree {before[0]} kB, Slab {before[1]} kB", flush=True)
            start = time.time()
        elif i < last:
            each = (time.time() - start) / (i - WARM)
            print(f"{i - WARM} commands, {each:.3f} s each: MemFree {reading[0]} kB, Slab {reading[1]} kB",
                  flush=True)
        else:
            after = reading
    with lock:
        # Keep the buffer small: only the tail is ever searched.
        if len(out) > 1 << 20:
            del out[: len(out) - (1 << 16)]
each = (time.time() - start) / max(n, 1)
print(f"{n} commands, {each:.3f} s each: MemFree {after[0]} kB, Slab {after[1]} kB", flush=True)
with lock:
    mark = len(out)
send("poweroff\n")
vm.wait(timeout=300)
with lock:
    tail = out[mark:].decode(errors="replace")
for line in tail.splitlines():
    # The kernel's own counters at power-off: where a command's time goes (fork, exec, exit, wait4,
    # page faults, system calls, context switches).
    if "frames used" in line or "cost:" in line or "sched:" in line:
        print(line.strip())
shutil.rmtree(tmp)
ok = before == after and vm.returncode == 0
print("frames and heap back where they started" if ok else "LEAK or bad exit", flush=True)
sys.exit(0 if ok else 1)
