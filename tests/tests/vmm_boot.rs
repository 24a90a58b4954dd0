//! Boots the project's test guests (tests/guests) through the `microvm` binary on KVM: every boot protocol,
//! the console both ways, timer interrupts, the memory map, initrd, exits of every kind, and signals.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tests::{require_kvm, run, Vm};

const T: Duration = Duration::from_secs(30);
const PVH: &str = env!("GUEST_PVH");
const ELF64: &str = env!("GUEST_ELF64");
const BZIMAGE: &str = env!("GUEST_BZIMAGE");

/// RAM a 128 MiB guest is told about: 639 KiB below the EBDA plus everything from 1 MiB up.
const RAM_KIB_128M: u64 = 639 + 127 * 1024;

fn boot(kernel: &str, extra: &[&str], expect_protocol: &str) {
    // Tests run in parallel: each boot gets its own initrd file.
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let initrd =
        std::env::temp_dir().join(format!("microvm-test-initrd-{}-{n}", std::process::id()));
    std::fs::write(&initrd, "INITRD-MARKER-0123").unwrap();
    let mut args = vec![
        "--kernel",
        kernel,
        "--initrd",
        initrd.to_str().unwrap(),
        "--cmdline",
        "hello ticks=5 unknown-io exit=42",
    ];
    args.extend(extra);
    let out = run(&args, T);
    std::fs::remove_file(&initrd).unwrap();
    assert_eq!(out.code, Some(42), "exit code from the debug-exit port");
    assert!(out
        .stdout
        .contains(&format!("test guest: boot={expect_protocol}\n")));
    assert!(out
        .stdout
        .contains("cmdline: hello ticks=5 unknown-io exit=42\n"));
    assert!(out
        .stdout
        .contains(&format!("memory: 2 entries, {RAM_KIB_128M} KiB RAM\n")));
    assert!(out.stdout.contains("initrd: INITRD-MARKER-0123\n"));
    assert!(
        out.stdout.contains("ticks: 5\n"),
        "PIT interrupts through the PIC and LAPIC LINT0"
    );
    assert!(
        out.stdout.contains("unknown io: ff ffffffff\n"),
        "unhandled accesses read all ones"
    );
}

#[test]
fn pvh_elf_boots_by_pvh() {
    if require_kvm() {
        boot(PVH, &[], "pvh");
    }
}

#[test]
fn elf_without_pvh_note_boots_at_its_64bit_entry() {
    if require_kvm() {
        boot(ELF64, &[], "linux");
    }
}

#[test]
fn bzimage_boots_by_the_linux_protocol() {
    if require_kvm() {
        boot(BZIMAGE, &[], "linux");
    }
}

#[test]
fn boot_flag_forces_64bit_entry_on_a_pvh_elf() {
    if require_kvm() {
        boot(PVH, &["--boot", "linux"], "linux");
    }
}

#[test]
fn two_vcpus_boot_with_an_mp_table() {
    if require_kvm() {
        boot(PVH, &["--vcpus", "2"], "pvh");
    }
}

#[test]
fn large_memory_continues_above_4g() {
    if !require_kvm() {
        return;
    }
    let out = run(
        &["--kernel", PVH, "--mem", "4096", "--cmdline", "exit=3"],
        T,
    );
    assert_eq!(out.code, Some(3));
    // 639 KiB + (3 GiB - 1 MiB) below the hole + 1 GiB above 4 GiB.
    let kib = 639 + (3 * 1024 - 1) * 1024 + 1024 * 1024;
    assert!(out
        .stdout
        .contains(&format!("memory: 3 entries, {kib} KiB RAM\n")));
}

#[test]
fn default_command_line_is_the_serial_console() {
    if !require_kvm() {
        return;
    }
    let out = run(&["--kernel", ELF64], T);
    assert_eq!(out.code, Some(0));
    assert!(out
        .stdout
        .contains("cmdline: console=ttyS0 reboot=k panic=1\n"));
}

#[test]
fn console_input_reaches_the_guest() {
    if !require_kvm() {
        return;
    }
    let mut vm = Vm::spawn(&["--kernel", PVH, "--cmdline", "echo exit=7"]);
    vm.wait_for_output("ready\n", T);
    vm.send(b"typed into the serial port\n");
    let out = vm.wait(T);
    assert_eq!(out.code, Some(7));
    assert!(out.stdout.contains("echo: typed into the serial port\n"));
}

#[test]
fn serial_off_gives_the_uart_no_input() {
    if !require_kvm() {
        return;
    }
    // The echo guest waits for a line on the UART, prints it and exits 7. With --serial off the UART
    // gets no host input, so it must still be waiting when we stop the VM.
    let mut vm = Vm::spawn(&[
        "--kernel",
        PVH,
        "--serial",
        "off",
        "--cmdline",
        "echo exit=7",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    vm.send(b"typed with the serial off\n");
    std::thread::sleep(Duration::from_millis(1500));
    vm.signal(libc::SIGTERM);
    let out = vm.wait(T);
    assert_eq!(out.code, Some(143), "stopped by SIGTERM, not by the guest");
    assert!(out.stdout.is_empty(), "the UART's output is discarded too");
}

#[test]
fn i8042_reset_ends_the_vm_with_status_0() {
    if !require_kvm() {
        return;
    }
    let out = run(&["--kernel", PVH, "--cmdline", "reset exit=9"], T);
    assert!(out.stdout.contains("resetting\n"));
    assert_eq!(out.code, Some(0));
}

#[test]
fn triple_fault_exits_2_with_registers() {
    if !require_kvm() {
        return;
    }
    let out = run(&["--kernel", PVH, "--cmdline", "triple"], T);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr
            .contains("guest crashed: shutdown (triple fault)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("<guest_main+0x"),
        "RIP resolved to a symbol"
    );
    assert!(out.stderr.contains("rip "), "register dump");
    assert!(out.stderr.contains("cr3 "));
}

/// Whether this host emulates guest kernel code (the nested, paravirtual KVM of ENVIRONMENT.md): no VMX or
/// SVM flag in /proc/cpuinfo.
fn host_emulates_guest_kernel_code() -> bool {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    !info.split_whitespace().any(|w| w == "vmx" || w == "svm")
}

#[test]
fn emulation_failure_names_rip_cpl_bytes_and_symbol() {
    if !require_kvm() {
        return;
    }
    let out = run(&["--kernel", PVH, "--cmdline", "badinsn exit=5"], T);
    if !host_emulates_guest_kernel_code() {
        // Real hardware runs the instruction.
        assert_eq!(out.code, Some(5));
        eprintln!(
            "SKIPPED: this host runs guest kernel code natively; no emulation failure to report"
        );
        return;
    }
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr
            .contains("KVM_EXIT_INTERNAL_ERROR suberror 1 (instruction emulation failed)"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("<emulation_failure+0x0> CPL 0"));
    // pxor %xmm0,%xmm0; ret
    assert!(out.stderr.contains("instruction bytes: 66 0f ef c0 c3"));
}

fn stops_cleanly_on(sig: libc::c_int, code: i32) {
    let vm = Vm::spawn(&["--kernel", ELF64, "--cmdline", "halt"]);
    vm.wait_for_output("halting\n", T);
    vm.signal(sig);
    let out = vm.wait(T);
    assert_eq!(out.code, Some(code));
}

#[test]
fn sigterm_stops_the_vm_with_143() {
    if require_kvm() {
        stops_cleanly_on(libc::SIGTERM, 143);
    }
}

#[test]
fn sigint_stops_the_vm_with_130() {
    if require_kvm() {
        stops_cleanly_on(libc::SIGINT, 130);
    }
}

#[test]
fn boot_timer_logs_the_marker() {
    if !require_kvm() {
        return;
    }
    let out = run(&["--kernel", PVH, "--boot-timer", "--cmdline", "marker"], T);
    assert_eq!(out.code, Some(0));
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("guest boot time: "))
        .expect("boot time logged");
    let us: u64 = line
        .split("guest boot time: ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(us > 0 && us < 30_000_000, "{line}");
    // Without the flag the marker is silent.
    let out = run(&["--kernel", PVH, "--cmdline", "marker"], T);
    assert!(!out.stderr.contains("guest boot time"));
}

/// The `VmFlags` line of the mapping of exactly `size` bytes in `pid`'s smaps (guest RAM: the only
/// mapping of that size in a 64 MiB guest).
fn vm_flags_of_mapping(pid: u32, size: u64) -> String {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut in_it = false;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) {
                in_it = hi - lo == size;
                continue;
            }
        }
        if in_it && first == "VmFlags:" {
            return line.to_string();
        }
    }
    panic!("no {size}-byte mapping in /proc/{pid}/smaps");
}

#[test]
fn guest_memory_asks_for_transparent_huge_pages_unless_thp_off() {
    if !require_kvm() {
        return;
    }
    for (extra, advised) in [(&[][..], true), (&["--thp", "off"][..], false)] {
        let mut args = vec!["--kernel", ELF64, "--mem", "64", "--cmdline", "halt"];
        args.extend(extra);
        let vm = Vm::spawn(&args);
        vm.wait_for_output("halting\n", T);
        let flags = vm_flags_of_mapping(vm.pid(), 64 << 20);
        vm.signal(libc::SIGTERM);
        assert_eq!(vm.wait(T).code, Some(143));
        // `hg`: the mapping was advised MADV_HUGEPAGE.
        assert_eq!(
            flags.split_whitespace().any(|f| f == "hg"),
            advised,
            "{extra:?}: {flags}"
        );
    }
}
