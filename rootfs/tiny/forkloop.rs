//! `forkloop N`: N fork/exit/wait cycles from a tiny static executable (no libc, a few pages), for the
//! kernel's leak test: fork copies fewer page-table entries and the kernel's own cost per cycle shows.
//! Each cycle: fork; the child exits at once with `i % 256`; the parent waits for it and checks the
//! pid and the status. The fork-to-wait sequence is one asm block that touches no memory, so neither
//! side writes a shared page (no copy-on-write copies) while both exist. Prints
//! `forkloop: N fork/exit/wait cycles, F failed` and exits 0 if none failed.
//!
//! Built by scripts/build-rootfs.sh with plain rustc (no_std, no_main, -nostartfiles), not by cargo.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};

// The entry point: the kernel's initial stack holds argc, argv[], NULL, envp[], ...
global_asm!(
    ".globl _start",
    "_start:",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {main}",
    "ud2",
    main = sym main,
);

/// Where wait4 stores the status. Written by the kernel only after the child is gone.
static mut STATUS: i32 = 0;

fn syscall3(nr: u64, a: u64, b: u64, c: u64) -> i64 {
    let r: i64;
    // SAFETY: a plain Linux system call; `syscall` clobbers rcx and r11.
    unsafe {
        asm!("syscall", inlateout("rax") nr as i64 => r, in("rdi") a, in("rsi") b, in("rdx") c,
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    r
}

fn write(s: &[u8]) {
    syscall3(1, 1, s.as_ptr() as u64, s.len() as u64);
}

fn exit(code: i32) -> ! {
    syscall3(231, code as u64, 0, 0);
    loop {}
}

/// One cycle: returns (the child's pid, what wait4 returned).
fn cycle(code: u64) -> (i64, i64) {
    let (child, waited): (i64, i64);
    // SAFETY: fork (57); the child (rax 0) calls exit_group (231) with `code` and never returns; the
    // parent calls wait4 (61) for the child with &STATUS and no options. No stack or memory use.
    unsafe {
        asm!(
            "mov eax, 57",
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, {code}",
            "mov eax, 231",
            "syscall",
            "ud2",
            "2:",
            "mov r8, rax",
            "mov rdi, rax",
            "mov rsi, {status}",
            "xor edx, edx",
            "xor r10d, r10d",
            "mov eax, 61",
            "syscall",
            code = in(reg) code,
            status = in(reg) core::ptr::addr_of_mut!(STATUS),
            out("rax") waited, out("r8") child,
            out("rdi") _, out("rsi") _, out("rdx") _, out("r10") _, out("rcx") _, out("r11") _,
            options(nostack),
        );
    }
    (child, waited)
}

fn parse(s: *const u8) -> u64 {
    let mut n = 0;
    let mut p = s;
    // SAFETY: `s` is a NUL-terminated argument string from the kernel.
    unsafe {
        while (*p).is_ascii_digit() {
            n = n * 10 + (*p - b'0') as u64;
            p = p.add(1);
        }
    }
    n
}

fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

extern "C" fn main(sp: *const u64) -> ! {
    // SAFETY: the initial stack: argc, then argv pointers.
    let (argc, argv1) = unsafe { (*sp, *sp.add(2) as *const u8) };
    let n = if argc > 1 { parse(argv1) } else { 1 };
    let mut failed = 0;
    for i in 0..n {
        let code = i % 256;
        let (child, waited) = cycle(code);
        // SAFETY: the only writer is the kernel, during wait4 above.
        let status = unsafe { core::ptr::addr_of!(STATUS).read_volatile() };
        if child <= 0 || waited != child || status != (code as i32) << 8 {
            failed += 1;
        }
    }
    let (mut a, mut b) = ([0u8; 20], [0u8; 20]);
    write(b"forkloop: ");
    write(decimal(n, &mut a));
    write(b" fork/exit/wait cycles, ");
    write(decimal(failed, &mut b));
    write(b" failed\n");
    exit(if failed == 0 { 0 } else { 1 })
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(101)
}

/// The prebuilt `core` was built with unwinding and names these; with panic=abort they never run.
#[no_mangle]
extern "C" fn rust_eh_personality() {}
#[no_mangle]
extern "C" fn _Unwind_Resume() -> ! {
    exit(101)
}
