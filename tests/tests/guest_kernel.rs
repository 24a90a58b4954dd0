//! Boots the project's own guest kernel (build/guest-kernel) with the root filesystem image
//! (build/rootfs.qcow2) to /sbin/init: under `microvm` on KVM, and under QEMU's microvm machine as a
//! second, independent VMM. Also checks that a kernel panic is reported with its location and ends the
//! VM with a nonzero status.
//!
//! The artifacts come from `scripts/build-guest-kernel.sh` and `scripts/build-rootfs.sh`. Without them
//! the tests skip with a message (and fail when `CI` is set).

use std::time::Duration;

use tests::{run, GuestImages, Output};

const T: Duration = Duration::from_secs(60);
/// What the guest kernel writes to the debug-exit port when it panics.
const PANIC_EXIT: i32 = 3;

fn boot_microvm(extra_cmdline: &str) -> Option<Output> {
    boot_microvm_with("ttyS0", extra_cmdline)
}

/// Boots under microvm with the console on `console` (`ttyS0`, or `hvc0` for virtio-console).
fn boot_microvm_with(console: &str, extra_cmdline: &str) -> Option<Output> {
    let images = GuestImages::for_vm()?;
    let kind = if console == "hvc0" {
        "virtio"
    } else {
        "serial"
    };
    let extra = ["--console", kind, "--boot-timer", "--log-level", "info"];
    let cmdline = format!("console={console} root=/dev/vda {extra_cmdline}");
    Some(run(&images.args(&extra, &cmdline), T))
}

fn assert_reached_init(stdout: &str) {
    for line in [
        "microvm guest kernel",
        "virtio-blk: vda at ",
        "VFS: mounted root (ext2 filesystem, read-only) on device /dev/vda",
        "Run /sbin/init as init process",
        "init: microvm init starting (pid 1)",
        "Welcome to microvm!",
        "init: powering off",
        "reboot: Power down",
    ] {
        assert!(stdout.contains(line), "console lacks {line:?}:\n{stdout}");
    }
    // Boot log lines carry a Linux-style timestamp.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("[    0.") && l.contains("] VFS: mounted root")),
        "no timestamped boot log line"
    );
}

#[test]
fn guest_kernel_runs_init_on_microvm() {
    let Some(out) = boot_microvm("") else { return };
    assert_reached_init(&out.stdout);
    assert_eq!(
        out.code,
        Some(0),
        "reboot(POWER_OFF) ends the VM with status 0"
    );
    let boot_us: Option<u64> = out
        .stderr
        .lines()
        .find_map(|l| l.split("guest boot time: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    let boot_us =
        boot_us.expect("microvm --boot-timer reports the boot-time marker init's start writes");
    eprintln!("boot to init: {} ms", boot_us / 1000);
    // The target on the development hosts is 1 s; allow slack for loaded CI machines.
    assert!(boot_us < 5_000_000, "boot to init took {boot_us} us");
}

#[test]
fn guest_kernel_runs_a_static_non_pie_init() {
    // /sbin/init is static-pie (ET_DYN); /sbin/init-nopie the same program as ET_EXEC.
    let Some(out) = boot_microvm("init=/sbin/init-nopie") else {
        return;
    };
    assert!(out.stdout.contains("Run /sbin/init-nopie as init process"));
    assert!(out.stdout.contains("Welcome to microvm!"));
    assert_eq!(out.code, Some(0));
}

#[test]
fn rootfs_init_also_runs_on_the_host() {
    let Some(images) = GuestImages::find() else {
        return;
    };
    let stage = images.host_program("sbin");
    for name in ["init", "init-nopie"] {
        let bin = stage.join(name);
        let out = tests::host_command(&bin).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {out:?}");
        assert!(
            stdout.contains("init: microvm init starting (pid "),
            "{stdout}"
        );
        assert!(!stdout.contains("powering off"), "only PID 1 powers off");
    }
}

#[test]
fn guest_kernel_system_calls_behave_like_linux() {
    // init's `check` runs uname, open/openat, fstat, lseek, read, close, brk/mmap, getpid and failing opens.
    let Some(out) = boot_microvm("-- check") else {
        return;
    };
    assert!(
        out.stdout
            .contains("init: uname: Linux 6.5.0-microvm x86_64"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("; fstat, lseek and read agree"));
    assert!(out.stdout.contains("init: check ok"), "{}", out.stdout);
    assert!(
        !out.stdout.contains("not implemented"),
        "init needed a missing syscall"
    );
    assert_eq!(out.code, Some(0));
}

#[test]
fn guest_kernel_writes_to_a_virtio_disk() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let scratch = std::env::temp_dir().join(format!("microvm-blktest-{}.raw", std::process::id()));
    std::fs::write(&scratch, vec![0u8; 1 << 20]).unwrap();
    let out = run(
        &images.args(
            &["--disk", scratch.to_str().unwrap()],
            "console=ttyS0 root=/dev/vda blktest=vdb",
        ),
        T,
    );
    let written = std::fs::read(&scratch).unwrap();
    std::fs::remove_file(&scratch).unwrap();
    assert!(out.stdout.contains("virtio-blk: vdb at "), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("blktest: vdb: wrote and read back 4096 bytes"),
        "{}",
        out.stdout
    );
    assert!(
        written.starts_with(b"microvm blktest microvm blktest "),
        "the write reached the image"
    );
    assert_eq!(out.code, Some(0));
}

#[test]
fn guest_kernel_takes_hz_from_the_command_line() {
    let Some(out) = boot_microvm("hz=250") else {
        return;
    };
    assert!(out.stdout.contains("HZ=250"), "{}", out.stdout);
    assert_eq!(out.code, Some(0));
}

#[test]
fn guest_kernel_panic_is_reported_with_its_location() {
    let Some(out) = boot_microvm("panic=test") else {
        return;
    };
    assert_eq!(
        out.code,
        Some(PANIC_EXIT),
        "a panic ends the VM through the debug-exit port"
    );
    assert!(out.stdout.contains(
        "Kernel panic - not syncing: test panic requested on the command line (panic=test)"
    ));
    assert!(
        out.stdout.contains("  at src/main.rs:"),
        "panic location: {}",
        out.stdout
    );
    assert!(out.stdout.contains("RSP: "), "registers: {}", out.stdout);
    assert!(!out.stdout.contains("Run /sbin/init"));
}

#[test]
fn guest_kernel_console_on_virtio_console() {
    let Some(out) = boot_microvm_with("hvc0", "") else {
        return;
    };
    assert!(out.stdout.contains("virtio-console: at "), "{}", out.stdout);
    assert!(out.stdout.contains("console [hvc0] enabled"));
    assert_reached_init(&out.stdout);
    assert!(
        !out.stderr.contains("outside guest memory"),
        "console buffers are guest-physical"
    );
    assert_eq!(out.code, Some(0));
}

#[test]
fn guest_kernel_kills_a_faulting_process() {
    // The words after `--` are init's arguments: `crash` makes it write through a null pointer.
    let Some(out) = boot_microvm("-- crash") else {
        return;
    };
    assert!(out.stdout.contains("init: writing through a null pointer"));
    assert!(
        out.stdout.contains("init[1]: segfault at 0x0 ip "),
        "user fault report: {}",
        out.stdout
    );
    assert!(out
        .stdout
        .contains("Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b"));
    assert_eq!(out.code, Some(PANIC_EXIT));
}

#[test]
fn guest_kernel_reports_a_kernel_page_fault() {
    let Some(out) = boot_microvm("panic=pagefault") else {
        return;
    };
    assert!(
        out.stdout
            .contains("BUG: kernel page fault at 0xffffc000dead0000 (not-present page, read) ip "),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("CR2: ffffc000dead0000"));
    assert!(out
        .stdout
        .contains("Kernel panic - not syncing: fatal exception in kernel mode"));
    assert_eq!(out.code, Some(PANIC_EXIT));
}

#[test]
fn guest_kernel_without_root_device_panics() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let kernel = images.kernel.to_str().unwrap();
    let out = run(
        &[
            "--kernel",
            kernel,
            "--cmdline",
            "console=ttyS0 root=/dev/vda",
        ],
        T,
    );
    assert_eq!(out.code, Some(PANIC_EXIT));
    assert!(
        out.stdout.contains("VFS: cannot open root device /dev/vda"),
        "{}",
        out.stdout
    );
}

/// Runs scripts/run-qemu.sh (QEMU `-M microvm,acpi=off`, TCG) with extra command-line words.
fn boot_qemu(extra_cmdline: &str) -> Option<Output> {
    GuestImages::find()?.run_on_qemu(&[extra_cmdline])
}

#[test]
fn guest_kernel_runs_init_on_qemu_microvm() {
    let Some(out) = boot_qemu("") else { return };
    assert_reached_init(&out.stdout);
    assert!(
        out.stdout.contains("virtio_mmio.device="),
        "QEMU announces its virtio-mmio devices"
    );
    // TCG runs `syscall` as hardware does: every system call comes through the LSTAR entry.
    assert!(
        out.stdout
            .contains("through the LSTAR entry, 0 through the #PF at LSTAR"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("syscalls: 0 through"));
    // isa-debug-exit: the guest's byte 0 becomes exit status (0 << 1) | 1.
    assert_eq!(out.code, Some(1));
}

#[test]
fn guest_kernel_panic_on_qemu_microvm() {
    let Some(out) = boot_qemu("panic=test") else {
        return;
    };
    assert!(out
        .stdout
        .contains("Kernel panic - not syncing: test panic requested"));
    assert!(out.stdout.contains("  at src/main.rs:"));
    assert_eq!(out.code, Some((PANIC_EXIT << 1) | 1));
}
