//! Memory reliability of the project's guest kernel (build/guest-kernel + build/rootfs.qcow2 under
//! microvm): freed frames are allocated again (fork/exec/exit cycles and console commands leave the
//! kernel's frame and heap counters where they started), user-sized requests are bounded, and running
//! out of memory is handled as Linux handles it. Each case reads the kernel's counters (MemFree and
//! Slab, the kernel heap, from /proc/meminfo) before and after.
//!
//! The counts here are modest so CI stays short; guest-kernel/README.md records the 10,000-cycle runs
//! (`MEMTEST_CYCLES=10000 cargo test -p tests --test guest_memory -- --nocapture`).

use std::time::Duration;

use tests::{run, GuestImages, Vm};

const T: Duration = Duration::from_secs(120);

/// Cycles and commands to run: `MEMTEST_CYCLES`, else `default`.
fn cycles(default: u64) -> u64 {
    std::env::var("MEMTEST_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Boots with init running `args` as its child (`init -- run ARGS`).
fn boot_running(args: &str, timeout: Duration) -> Option<tests::Output> {
    let images = GuestImages::for_vm()?;
    let cmdline = format!("console=ttyS0 root=/dev/vda -- run {args}");
    Some(run(&images.args(&[], &cmdline), timeout))
}

/// (MemFree, Slab) in kB from the last /proc/meminfo printed since `from`.
fn meminfo_since(out: &str, from: usize) -> (u64, u64) {
    let field = |key: &str| -> u64 {
        out[from..]
            .lines()
            .rfind(|l| l.starts_with(key))
            .and_then(|l| l[key.len()..].split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in:\n{}", &out[from..]))
    };
    (field("MemFree:"), field("Slab:"))
}

#[test]
fn fork_exec_exit_cycles_reuse_frames_and_leak_nothing() {
    // Before frames were reused, the 83rd exec failed with ENOMEM (each exec took fresh frames only).
    let n = cycles(300);
    let Some(out) = boot_running(
        &format!("/bin/execloop {n}"),
        Duration::from_secs(60 + n / 5),
    ) else {
        return;
    };
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("execloop: "))
        .unwrap_or_else(|| panic!("no execloop line:\n{}", out.stdout));
    eprintln!("{line}");
    assert!(
        line.starts_with(&format!("execloop: {n} fork/exec/exit cycles, 0 failed,")),
        "{line}"
    );
    // MemFree and Slab where they started (execloop exits 1 otherwise; checked here for the message).
    let counts: Vec<&str> = line.split("; ").skip(1).collect();
    for c in &counts {
        let parts: Vec<&str> = c.split_whitespace().collect();
        assert_eq!(parts[1], parts[3], "{line}");
    }
    assert_eq!(counts.len(), 2, "{line}");
    assert!(
        out.stdout.contains("init: /bin/execloop exited (exit 0)"),
        "{}",
        out.stdout
    );
    assert_eq!(out.code, Some(0), "{}", out.stdout);
}

#[test]
fn console_shell_commands_leak_nothing() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    // Each command is a fork of the shell and an exec of echo: ~0.3 s here.
    let n = cycles(120);
    let mut vm = Vm::spawn(&images.args(&[], "console=ttyS0 root=/dev/vda -- rc"));
    vm.wait_for_output("# ", T);
    // Warm up (the shell's own buffers, the kernel's caches), then read the counters.
    for i in 0..5 {
        vm.send(format!("echo warm{i}\n").as_bytes());
        vm.wait_for_output(&format!("warm{i}\n# "), T);
    }
    vm.send(b"cat /proc/meminfo\n");
    vm.wait_for_output("Slab:", T);
    vm.wait_for_output(" kB\n# ", T);
    let before = meminfo_since(&vm.stdout(), 0);
    let started = std::time::Instant::now();
    for i in 0..n {
        let mark = vm.stdout().len();
        vm.send(format!("echo cmd{i}\n").as_bytes());
        let what = format!("\ncmd{i}\n# ");
        assert!(wait_since(&mut vm, mark, &what), "{}", vm.stdout());
    }
    let each = started.elapsed() / n as u32;
    let mark = vm.stdout().len();
    vm.send(b"cat /proc/meminfo\n");
    assert!(wait_since(&mut vm, mark, "Slab:"), "{}", vm.stdout());
    assert!(wait_since(&mut vm, mark, " kB\n# "), "{}", vm.stdout());
    let after = meminfo_since(&vm.stdout(), mark);
    eprintln!(
        "{n} shell commands, {each:?} each; (MemFree, Slab) kB before {before:?}, after {after:?}"
    );
    assert_eq!(
        before, after,
        "frames or kernel heap leaked over {n} commands"
    );
    // The shell can still start programs and power off.
    vm.send(b"poweroff\n");
    let out = vm.wait(T);
    assert!(out.stdout.contains("init: powering off"), "{}", out.stdout);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
}

/// Waits until `what` appears in the output after byte `from`.
fn wait_since(vm: &mut Vm, from: usize, what: &str) -> bool {
    tests::wait_until(T, || {
        let s = vm.stdout();
        s.len() > from && s[from..].contains(what)
    })
}
