//! `execloop N`: N fork/exec/exit/wait cycles of a tiny static executable (no libc, a few pages), for
//! the kernel's frame-reuse test. Run without arguments it is `/bin/true`: it exits 0 at once, and that
//! is what each child execs (`/bin/execloop` with no arguments). Each cycle: fork; the child execs;
//! the parent waits for it and checks the pid and the status (0). Around the cycles (after 10 cycles
//! to warm up caches) it reads MemFree and Slab (the kernel heap in use) from /proc/meminfo and prints
//! `execloop: N fork/exec/exit cycles, F failed, T us each; MemFree B -> A kB; Slab B -> A kB`.
//! It exits 0 if no cycle failed and both counters are where they started.
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

static PATH: &[u8] = b"/bin/execloop\0";
static MEMINFO: &[u8] = b"/proc/meminfo\0";

fn syscall4(nr: u64, a: u64, b: u64, c: u64, d: u64) -> i64 {
    let r: i64;
    // SAFETY: a plain Linux system call; `syscall` clobbers rcx and r11.
    unsafe {
        asm!("syscall", inlateout("rax") nr as i64 => r, in("rdi") a, in("rsi") b, in("rdx") c,
             in("r10") d, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    r
}

fn write(s: &[u8]) {
    syscall4(1, 1, s.as_ptr() as u64, s.len() as u64, 0);
}

fn exit(code: i32) -> ! {
    syscall4(231, code as u64, 0, 0, 0);
    loop {}
}

fn now_us() -> u64 {
    let mut ts = [0u64; 2];
    syscall4(228, 1, ts.as_mut_ptr() as u64, 0, 0);
    ts[0] * 1_000_000 + ts[1] / 1000
}

/// Failures reported so far (the first few are printed).
static mut REPORTED: u32 = 0;

/// Prints what went wrong in a failed cycle (the first 5 only).
fn report(what: &[u8], a: i64, b: i64) {
    // SAFETY: single-threaded program.
    unsafe {
        REPORTED += 1;
        if REPORTED > 5 {
            return;
        }
    }
    write(b"execloop: failed cycle: ");
    write(what);
    write(b" ");
    num(a as u64);
    write(b" ");
    num(b as u64);
    write(b"\n");
}

/// One cycle: whether the child was forked, exec'd, exited 0 and was reaped.
fn cycle() -> bool {
    let argv: [u64; 2] = [PATH.as_ptr() as u64, 0];
    let envp: [u64; 1] = [0];
    let pid = syscall4(57, 0, 0, 0, 0);
    if pid == 0 {
        syscall4(
            59,
            PATH.as_ptr() as u64,
            argv.as_ptr() as u64,
            envp.as_ptr() as u64,
            0,
        );
        exit(127);
    }
    if pid < 0 {
        report(b"fork error", -pid, 0);
        return false;
    }
    let mut status: i32 = -1;
    let waited = syscall4(61, pid as u64, &mut status as *mut i32 as u64, 0, 0);
    if waited != pid {
        report(b"wait4 returned (negated, pid)", -waited, pid);
        return false;
    }
    if status != 0 {
        report(b"status (pid, status)", pid, status as i64);
        return false;
    }
    true
}

/// The number after `key` in /proc/meminfo (kB), or u64::MAX if it cannot be read.
fn meminfo(key: &[u8]) -> u64 {
    let mut buf = [0u8; 1024];
    let fd = syscall4(2, MEMINFO.as_ptr() as u64, 0, 0, 0);
    if fd < 0 {
        return u64::MAX;
    }
    let n = syscall4(0, fd as u64, buf.as_mut_ptr() as u64, buf.len() as u64, 0);
    syscall4(3, fd as u64, 0, 0, 0);
    if n <= 0 {
        return u64::MAX;
    }
    let text = &buf[..n as usize];
    let mut i = 0;
    while i + key.len() <= text.len() {
        if &text[i..i + key.len()] == key && (i == 0 || text[i - 1] == b'\n') {
            let mut j = i + key.len();
            while j < text.len() && text[j] == b' ' {
                j += 1;
            }
            return parse(&text[j..]);
        }
        i += 1;
    }
    u64::MAX
}

fn parse(s: &[u8]) -> u64 {
    let mut n = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            break;
        }
        n = n * 10 + (c - b'0') as u64;
    }
    n
}

fn cstr_len(s: *const u8) -> usize {
    let mut n = 0;
    // SAFETY: `s` is a NUL-terminated argument string from the kernel.
    unsafe {
        while *s.add(n) != 0 {
            n += 1;
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

fn num(n: u64) {
    let mut b = [0u8; 20];
    write(decimal(n, &mut b));
}

extern "C" fn main(sp: *const u64) -> ! {
    // SAFETY: the initial stack: argc, then argv pointers.
    let argc = unsafe { *sp };
    if argc < 2 {
        exit(0);
    }
    // SAFETY: argv[1] exists (argc >= 2) and is NUL-terminated.
    let n = unsafe {
        let a = *sp.add(2) as *const u8;
        parse(core::slice::from_raw_parts(a, cstr_len(a)))
    };
    let mut failed = 0;
    for _ in 0..10 {
        failed += !cycle() as u64;
    }
    let (free0, slab0) = (meminfo(b"MemFree:"), meminfo(b"Slab:"));
    let t0 = now_us();
    for _ in 0..n {
        failed += !cycle() as u64;
    }
    let t1 = now_us();
    let (free1, slab1) = (meminfo(b"MemFree:"), meminfo(b"Slab:"));
    write(b"execloop: ");
    num(n);
    write(b" fork/exec/exit cycles, ");
    num(failed);
    write(b" failed, ");
    num((t1 - t0) / n.max(1));
    write(b" us each; MemFree ");
    num(free0);
    write(b" -> ");
    num(free1);
    write(b" kB; Slab ");
    num(slab0);
    write(b" -> ");
    num(slab1);
    write(b" kB\n");
    let same = free0 == free1 && slab0 == slab1 && free0 != u64::MAX && slab0 != u64::MAX;
    exit(if failed == 0 && same { 0 } else { 1 })
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(101)
}

// The compiler turns the byte loops above into calls to these; written in asm so they cannot become
// calls to themselves.
global_asm!(
    ".globl memset",
    "memset:",
    "mov r8, rdi",
    "mov eax, esi",
    "mov rcx, rdx",
    "rep stosb",
    "mov rax, r8",
    "ret",
    ".globl bcmp",
    "bcmp:",
    "mov rcx, rdx",
    "xor eax, eax",
    "repe cmpsb",
    "setne al",
    "ret",
    ".globl strlen",
    "strlen:",
    "mov rdx, rdi",
    "xor eax, eax",
    "mov rcx, -1",
    "repne scasb",
    "sub rdi, rdx",
    "lea rax, [rdi - 1]",
    "ret",
);

/// The prebuilt `core` was built with unwinding and names these; with panic=abort they never run.
#[no_mangle]
extern "C" fn rust_eh_personality() {}
#[no_mangle]
extern "C" fn _Unwind_Resume() -> ! {
    exit(101)
}
