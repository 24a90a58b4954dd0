//! virtio-console end to end: the project's guest kernel (build/guest-kernel) with the root filesystem
//! (build/rootfs.qcow2) on KVM, `--console virtio` and `console=hvc0`, so the kernel switches its console
//! to hvc0 and /sbin/init's output reaches stdout through the virtio console.
//!
//! With `--serial off` the 8250's output is discarded, so everything on stdout came through hvc0: the lines
//! the kernel prints before it switches (on the UART) must be absent, the ones after present. A busybox
//! ash session runs on hvc0 as on the serial console (`tty` names /dev/hvc0; Ctrl-C ends the job).
//!
//! The artifacts come from `scripts/build-guest-kernel.sh` and `scripts/build-rootfs.sh`. Without them the
//! tests skip with a message, and fail under `MICROVM_REQUIRE_KVM=1` (or when `CI` is set).

use std::time::Duration;

use tests::{GuestImages, Output, Vm};

const T: Duration = Duration::from_secs(60);

/// Starts the guest kernel with its console on hvc0 and the 8250 in `serial` mode (`stdio` or `off`).
fn spawn_hvc0(serial: &str) -> Option<Vm> {
    let images = GuestImages::for_vm()?;
    let extra = ["--console", "virtio", "--serial", serial];
    Some(Vm::spawn(
        &images.args(&extra, "console=hvc0 root=/dev/vda"),
    ))
}

/// What init and the kernel print after the switch to hvc0, up to the power-off.
fn assert_init_ran_on_hvc0(out: &Output) {
    for line in [
        "console [hvc0] enabled",
        "Run /sbin/init as init process",
        "init: microvm init starting (pid 1)",
        "Welcome to microvm!",
        "init: powering off",
        "reboot: Power down",
    ] {
        assert!(
            out.stdout.contains(line),
            "stdout lacks {line:?}:\n{}",
            out.stdout
        );
    }
    assert_eq!(out.code, Some(0), "init's power-off ends the VM with 0");
}

#[test]
fn init_output_arrives_through_hvc0_with_the_serial_off() {
    let Some(vm) = spawn_hvc0("off") else { return };
    let out = vm.wait(T);
    assert_init_ran_on_hvc0(&out);
    // Printed before the switch, on the UART, whose output --serial off discards.
    for uart_only in ["microvm guest kernel", "virtio-console: at "] {
        assert!(
            !out.stdout.contains(uart_only),
            "{uart_only:?} should have gone to the (discarded) UART:\n{}",
            out.stdout
        );
    }
}

#[test]
fn hvc0_console_with_the_serial_on_stdio() {
    let Some(vm) = spawn_hvc0("stdio") else {
        return;
    };
    let out = vm.wait(T);
    // Both consoles write to stdout: the UART until the switch, hvc0 after it.
    assert!(out.stdout.contains("virtio-console: at "), "{}", out.stdout);
    assert_init_ran_on_hvc0(&out);
    let switch = out.stdout.find("console [hvc0] enabled").unwrap();
    let init = out.stdout.find("init: microvm init starting").unwrap();
    assert!(switch < init, "init runs after the switch to hvc0");
}

#[test]
fn host_input_goes_to_hvc0_without_disturbing_the_guest() {
    // Input typed while the guest boots goes to the virtio console's receive queue (the UART gets none),
    // before and after the driver posts receive buffers. The guest kernel's tty echoes what it receives, so
    // the echo on stdout proves the input crossed hvc0 both ways without blocking output or the power-off.
    let Some(mut vm) = spawn_hvc0("off") else {
        return;
    };
    vm.send(b"typed before the driver is up\n");
    vm.wait_for_output("console [hvc0] enabled", T);
    vm.send(b"typed into hvc0\n");
    let out = vm.wait(T);
    assert_init_ran_on_hvc0(&out);
    assert!(
        out.stdout.contains("typed before the driver is up\n"),
        "input queued before the driver came up is delivered: {}",
        out.stdout
    );
    assert!(
        out.stdout.contains("typed into hvc0\n"),
        "input reaches the guest's tty through hvc0 and is echoed: {}",
        out.stdout
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn an_ash_session_on_hvc0() {
    // busybox ash on the virtio console (the UART off): its name, typed input and line editing,
    // Ctrl-C of the foreground job, then `exit` (init powers off).
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let mut vm = Vm::spawn(&images.args(
        &["--console", "virtio", "--serial", "off"],
        "console=hvc0 root=/dev/vda -- run /bin/ash",
    ));
    vm.wait_for_output("/ # ", T);
    vm.send(b"tty; echo sum=$((6 * 7))x\x7f\r");
    vm.wait_for_output("sum=42\n", T);
    assert!(vm.stdout().contains("/dev/hvc0\n"), "{}", vm.stdout());
    // The job says when it runs (it holds the terminal then), so the Ctrl-C reaches it.
    vm.send(b"ash -c 'echo sleep''ing; exec sleep 100'\r");
    vm.wait_for_output("sleeping\n", T);
    vm.send(b"\x03");
    vm.send(b"echo status=$?\r");
    vm.wait_for_output("status=130\n", T);
    vm.send(b"exit\r");
    let out = vm.wait(T);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
}
