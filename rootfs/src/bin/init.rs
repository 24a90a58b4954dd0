//! /sbin/init: the first user program. Prints a banner, shows /etc/motd and powers the machine off.
//!
//! Run as PID 1 in the guest it calls `reboot(POWER_OFF)`. Anywhere else (the host, or a test) it stops
//! after printing, so it can be run as an ordinary program.
//!
//! Arguments (the kernel passes the command-line words after `--`): `crash` makes it write through a null
//! pointer after the banner, to test how the kernel handles a faulting process.

use std::io::Write;

fn main() {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "init: microvm init starting (pid {})",
        std::process::id()
    );
    match std::fs::read_to_string(rootfs::MOTD_PATH) {
        Ok(motd) => {
            let _ = out.write_all(motd.as_bytes());
        }
        Err(e) => {
            let _ = writeln!(out, "init: cannot read {}: {e}", rootfs::MOTD_PATH);
        }
    }
    let _ = out.flush();
    drop(out);
    if std::env::args().skip(1).any(|a| a == "crash") {
        println!("init: writing through a null pointer");
        // SAFETY: none: this deliberately faults (the kernel must kill the process, as SIGSEGV would).
        unsafe { std::ptr::null_mut::<u64>().write_volatile(1) };
    }
    if std::process::id() == 1 {
        println!("init: powering off");
        power_off();
    }
}

/// Asks the kernel to power off (never returns on success).
fn power_off() {
    use rootfs::reboot::*;
    // SAFETY: reboot(2) takes plain integers and a null argument for POWER_OFF.
    let r = unsafe { libc_syscall(169, MAGIC1 as u64, MAGIC2 as u64, CMD_POWER_OFF as u64) };
    eprintln!("init: reboot failed ({r})");
    std::process::exit(1);
}

/// A raw three-argument system call.
///
/// # Safety
/// The arguments must be valid for system call `nr`.
unsafe fn libc_syscall(nr: u64, a: u64, b: u64, c: u64) -> i64 {
    let ret: i64;
    // SAFETY: guaranteed by the caller; `syscall` clobbers rcx and r11.
    unsafe {
        std::arch::asm!("syscall", inlateout("rax") nr as i64 => ret, in("rdi") a, in("rsi") b, in("rdx") c,
            lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}
