//! Bad input to `microvm`: each case gets one line on stderr naming the problem, and exit status 1.
//! Most are caught before KVM is opened, so they run on any host.

use std::process::Command;
use std::time::Duration;

use tests::{is_root, microvm_bin, require_kvm, run, Vm};

const T: Duration = Duration::from_secs(30);
const PVH: &str = env!("GUEST_PVH");
const ELF64: &str = env!("GUEST_ELF64");
const BZIMAGE: &str = env!("GUEST_BZIMAGE");

/// Runs microvm with `args` and checks it fails with exactly one line containing `needle`.
fn fails_with(args: &[&str], needle: &str) {
    let out = run(args, T);
    assert_eq!(out.code, Some(1), "exit status for {args:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line for {args:?}: {:?}", out.stderr);
    assert!(lines[0].starts_with("microvm: "), "{}", lines[0]);
    assert!(
        lines[0].contains(needle),
        "{:?} should mention {needle:?}",
        lines[0]
    );
    assert!(!out.stderr.contains("panicked"));
}

fn temp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("microvm-cli-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn missing_and_unreadable_kernels() {
    fails_with(
        &["--kernel", "/nonexistent/kernel"],
        "cannot open kernel /nonexistent/kernel",
    );
    fails_with(&["--kernel", "/"], "cannot read kernel /");
    fails_with(&["--cmdline", "x"], "--kernel");
}

#[test]
fn unrecognised_kernel_formats() {
    let text = temp("text", b"just some text, not a kernel\n");
    fails_with(
        &["--kernel", text.to_str().unwrap()],
        "not a recognised format",
    );
    let truncated = temp("trunc", &std::fs::read(PVH).unwrap()[..40]);
    fails_with(
        &["--kernel", truncated.to_str().unwrap()],
        "not a 64-bit little-endian x86_64 ELF",
    );
    let empty = temp("empty", b"");
    fails_with(
        &["--kernel", empty.to_str().unwrap()],
        "not a recognised format",
    );
    for p in [text, truncated, empty] {
        std::fs::remove_file(p).unwrap();
    }
}

#[test]
fn boot_protocol_the_kernel_lacks() {
    fails_with(
        &["--kernel", ELF64, "--boot", "pvh"],
        "has no PVH entry note",
    );
    fails_with(&["--kernel", BZIMAGE, "--boot", "pvh"], "is a bzImage");
    fails_with(&["--kernel", PVH, "--boot", "uefi"], "invalid value 'uefi'");
}

#[test]
fn memory_too_small_or_too_large() {
    fails_with(
        &["--kernel", PVH, "--mem", "1"],
        "--mem must be at least 2 MiB",
    );
    fails_with(&["--kernel", PVH, "--mem", "lots"], "invalid value 'lots'");
    fails_with(&["--kernel", PVH, "--mem", "100000000"], "too large");
    fails_with(
        &["--kernel", PVH, "--mem", "1000000"],
        "more than this host's",
    );
    // A 3 MiB kernel does not fit in 2 MiB of RAM.
    let mut big = std::fs::read(BZIMAGE).unwrap();
    big.resize(big.len() + (3 << 20), 0);
    let big = temp("big", &big);
    fails_with(
        &["--kernel", big.to_str().unwrap(), "--mem", "2"],
        "raise --mem",
    );
    std::fs::remove_file(big).unwrap();
}

#[test]
fn initrd_problems() {
    fails_with(
        &["--kernel", PVH, "--initrd", "/nonexistent/initrd"],
        "cannot read initrd",
    );
    // Larger than the guest's RAM, which holds the test guest (4.4 MiB of bss) with room to spare.
    let big = temp("initrd", &vec![0u8; 17 << 20]);
    fails_with(
        &[
            "--kernel",
            PVH,
            "--mem",
            "16",
            "--initrd",
            big.to_str().unwrap(),
        ],
        "does not fit",
    );
    std::fs::remove_file(big).unwrap();
}

#[test]
fn command_line_too_long() {
    let long = "x".repeat(2048);
    fails_with(&["--kernel", PVH, "--cmdline", &long], "at most 2047");
}

#[test]
fn vcpu_counts() {
    fails_with(
        &["--kernel", PVH, "--vcpus", "0"],
        "--vcpus must be at least 1",
    );
    fails_with(
        &["--kernel", PVH, "--vcpus", "33"],
        "more than microvm supports (32)",
    );
    fails_with(&["--kernel", PVH, "--vcpus", "300"], "invalid value '300'");
}

#[test]
fn unknown_flags_and_levels() {
    fails_with(
        &["--kernel", PVH, "--frobnicate"],
        "unexpected argument '--frobnicate'",
    );
    fails_with(
        &["--kernel", PVH, "--log-level", "loud"],
        "invalid value 'loud'",
    );
}

#[test]
fn help_and_version_succeed() {
    let out = run(&["--help"], T);
    assert_eq!(out.code, Some(0));
    assert!(out.stdout.contains("--kernel <PATH>"));
    let out = run(&["--version"], T);
    assert_eq!(out.code, Some(0));
    assert!(out.stdout.starts_with("microvm "));
}

#[test]
fn no_kvm_device() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to hide /dev/kvm in a mount namespace");
        return;
    }
    // A private mount namespace with an empty /dev: /dev/kvm does not exist there.
    let vm = Vm::spawn_cmd(
        Command::new("unshare")
            .args([
                "-m",
                "sh",
                "-c",
                "mount -t tmpfs none /dev && exec \"$0\" \"$@\"",
            ])
            .arg(microvm_bin())
            .args(["--kernel", PVH]),
    );
    let out = vm.wait(T);
    assert_eq!(out.code, Some(1));
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("/dev/kvm does not exist"),
        "{}",
        out.stderr
    );
}

#[test]
fn no_permission_for_kvm() {
    if !is_root() || !require_kvm() {
        eprintln!("SKIPPED: needs root (to switch to an unprivileged user) and /dev/kvm");
        return;
    }
    let meta = std::fs::metadata("/dev/kvm").unwrap();
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o006 != 0 {
        eprintln!("SKIPPED: /dev/kvm is open to everyone on this host");
        return;
    }
    // The guest kernel must be readable by that user: copy it somewhere world-readable.
    let kernel = temp("kernel-for-nobody", &std::fs::read(PVH).unwrap());
    let bin = temp("microvm-for-nobody", &std::fs::read(microvm_bin()).unwrap());
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&kernel, std::fs::Permissions::from_mode(0o644)).unwrap();
    let vm = Vm::spawn_cmd(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .args(["--kernel", kernel.to_str().unwrap()]),
    );
    let out = vm.wait(T);
    std::fs::remove_file(kernel).unwrap();
    std::fs::remove_file(bin).unwrap();
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("no permission to open /dev/kvm"),
        "{}",
        out.stderr
    );
}
