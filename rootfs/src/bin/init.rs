//! /sbin/init: the first user program. Prints a banner, shows /etc/motd and powers the machine off.
//!
//! Run as PID 1 in the guest it calls `reboot(POWER_OFF)`. Anywhere else (the host, or a test) it stops
//! after printing, so it can be run as an ordinary program.
//!
//! Arguments (the kernel passes the command-line words after `--`): `check` exercises the system calls of
//! the first kernel milestone and prints what they returned (`init: check ok` when all is as on Linux);
//! `crash` makes it write through a null pointer after the banner, to test how the kernel handles a faulting
//! process; `run PROGRAM ARGS...` starts PROGRAM as a child, reaps every child (logging
//! `init: reaped PID N (STATUS)` for orphans it adopted) and powers off once PROGRAM has exited.
//!
//! As on Linux, init's descriptors are /dev/console and it has no controlling terminal; what it starts
//! (`rc`'s console shell, `run`'s program) runs in a session with the console's own device
//! (/proc/consoles) as its controlling terminal and descriptors 0-2: the shell leads its own, `run`'s
//! program is the foreground job of one a child of init leads.

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
    if std::env::args().skip(1).any(|a| a == "check") {
        match check() {
            Ok(()) => println!("init: check ok"),
            Err(e) => println!("init: check FAILED: {e}"),
        }
    }
    if std::env::args().skip(1).any(|a| a == "crash") {
        println!("init: writing through a null pointer");
        // SAFETY: none: this deliberately faults (the kernel must kill the process, as SIGSEGV would).
        unsafe { std::ptr::null_mut::<u64>().write_volatile(1) };
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "run") {
        run(&args[i + 1..]);
    }
    if args.iter().any(|a| a == "rc") && std::process::id() == 1 {
        full_init();
    }
    if std::process::id() == 1 {
        println!("init: powering off");
        power_off();
    }
}

static SHUTDOWN: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn on_shutdown_signal(sig: libc::c_int) {
    SHUTDOWN.store(sig, std::sync::atomic::Ordering::SeqCst);
}

/// The console's own terminal device, `/dev/` and the first name in /proc/consoles (`ttyS0`, or
/// `hvc0` with `console=hvc0`): what /dev/console is, under the name that can become a controlling
/// terminal (Linux never makes /dev/console one).
fn console_device() -> Option<std::ffi::CString> {
    let consoles = std::fs::read_to_string("/proc/consoles").ok()?;
    let name = consoles.split_whitespace().next()?;
    std::ffi::CString::new(format!("/dev/{name}")).ok()
}

/// In a child of init (PID 1, whose descriptors are /dev/console and which has no controlling
/// terminal, as on Linux): a session of its own with the console as its controlling terminal, and
/// descriptors 0-2 opened from the console's own device, as busybox's cttyhack and getty give a
/// shell, so that job control works and `tty` names the terminal. Opening it without O_NOCTTY as a
/// session leader makes it the controlling terminal; TIOCSCTTY (arg 1: taken from another session,
/// as root may) makes sure. `device` is [`console_device`], looked up before the fork; without it
/// the descriptors stay.
///
/// # Safety
/// Only in a freshly forked child of a single-threaded process (it changes the child's session and
/// descriptors).
unsafe fn console_session(device: Option<&std::ffi::CStr>) {
    // SAFETY: plain system calls on our own descriptors; `device` is a NUL-terminated path.
    unsafe {
        libc::setsid();
        if let Some(dev) = device {
            let fd = libc::open(dev.as_ptr(), libc::O_RDWR);
            if fd >= 0 {
                for target in 0..3 {
                    libc::dup2(fd, target);
                }
                if fd > 2 {
                    libc::close(fd);
                }
            }
        }
        libc::ioctl(0, libc::TIOCSCTTY, 1);
    }
}

/// Starts `argv` (a C string array) as a child; returns its pid.
fn spawn(argv: &[&std::ffi::CStr], new_session: bool) -> libc::pid_t {
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let env = [
        c"PATH=/sbin:/usr/sbin:/bin:/usr/bin".as_ptr(),
        c"HOME=/".as_ptr(),
        c"TERM=linux".as_ptr(),
        std::ptr::null(),
    ];
    let console = new_session.then(console_device).flatten();
    // SAFETY: single-threaded program.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: child setup; the arrays are NUL-terminated.
        unsafe {
            // SIGPIPE too: Rust's runtime ignores it in init, and an ignored signal stays
            // ignored across execve (a pipeline's writer would live on after its reader).
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGUSR2, libc::SIGPIPE] {
                libc::signal(sig, libc::SIG_DFL);
            }
            if new_session {
                console_session(console.as_deref());
            }
            libc::execve(ptrs[0], ptrs.as_ptr(), env.as_ptr());
        }
        println!(
            "init: cannot run {:?}: {}",
            argv[0],
            std::io::Error::last_os_error()
        );
        // SAFETY: leaves the child.
        unsafe { libc::_exit(127) };
    }
    pid
}

/// The full init: /etc/rc, a console shell, reaping, orderly power-off.
fn full_init() -> ! {
    // SAFETY: signal setup of PID 1: handlers without SA_RESTART so a blocked wait returns EINTR.
    unsafe {
        libc::reboot(libc::RB_DISABLE_CAD);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGUSR2] {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_shutdown_signal as *const () as libc::sighandler_t;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    let rc = spawn(&[c"/bin/sh", c"/etc/rc"], false);
    let mut shell = 0;
    let mut rc_done = false;
    loop {
        if rc_done && shell == 0 && SHUTDOWN.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            println!("init: starting /bin/sh on the console");
            shell = spawn(&[c"/bin/sh"], true);
        }
        let sig = SHUTDOWN.load(std::sync::atomic::Ordering::SeqCst);
        if sig != 0 {
            let why = match sig {
                libc::SIGINT => "Ctrl-Alt-Del",
                _ => "power-off request",
            };
            println!("init: {why}: shutting down");
            shutdown();
        }
        let mut status = 0;
        // SAFETY: status is a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
                // Nothing left to wait for (rc and the shell start from the top of the loop).
                if rc_done && shell == 0 {
                    shutdown();
                }
            }
            continue;
        }
        let st = rootfs::describe_status(status);
        if pid == rc {
            println!("init: /etc/rc finished ({st})");
            rc_done = true;
        } else if pid == shell {
            println!("init: console shell exited ({st})");
            SHUTDOWN.store(libc::SIGUSR2, std::sync::atomic::Ordering::SeqCst);
        } else {
            println!("init: reaped PID {pid} ({st})");
        }
    }
}

/// SIGTERM to everyone, a grace period, SIGKILL, reap all, power off.
fn shutdown() -> ! {
    println!("init: sending SIGTERM to all processes");
    // SAFETY: kill(-1) signals every process but init.
    unsafe { libc::kill(-1, libc::SIGTERM) };
    let reap = |rounds: u32| {
        for _ in 0..rounds {
            let mut status = 0;
            // SAFETY: status is a valid out-pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid < 0 {
                return true;
            }
            if pid == 0 {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        false
    };
    if !reap(50) {
        println!("init: sending SIGKILL to all processes");
        // SAFETY: as above.
        unsafe { libc::kill(-1, libc::SIGKILL) };
        reap(500);
    }
    println!("init: powering off");
    let _ = std::io::stdout().flush();
    power_off();
    std::process::exit(1)
}

/// Runs `argv` as a child and reaps children until it and every orphan it left have exited. As PID
/// 1 the program runs in a session of its own with the console as its controlling terminal, led by
/// [`lead_session`]; run anywhere else, it stays on the caller's terminal.
fn run(argv: &[String]) {
    let Some(prog) = argv.first() else {
        println!("init: run: no program");
        return;
    };
    let cargs: Vec<std::ffi::CString> = argv
        .iter()
        .map(|a| std::ffi::CString::new(a.as_str()).unwrap())
        .collect();
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let env = [
        c"PATH=/sbin:/usr/sbin:/bin:/usr/bin".as_ptr(),
        std::ptr::null(),
    ];
    let as_init = std::process::id() == 1;
    let console = as_init.then(console_device).flatten();
    // SAFETY: fork has no preconditions in this single-threaded program.
    let child = unsafe { libc::fork() };
    if child == 0 {
        if as_init {
            // SAFETY: a fresh child of this single-threaded program; the arrays are
            // NUL-terminated arrays of C strings.
            unsafe { lead_session(console.as_deref(), prog, &ptrs, &env) };
        }
        // SAFETY: as above.
        unsafe { exec_program(prog, &ptrs, &env) };
    }
    if child < 0 {
        println!("init: fork: {}", std::io::Error::last_os_error());
        return;
    }
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            // ECHILD: the program and every orphan it left are gone.
            return;
        }
        if pid == child {
            // As PID 1 the session's leader reported the program's end itself.
            if !as_init {
                println!("init: {prog} exited ({})", rootfs::describe_status(status));
            }
            continue;
        }
        println!(
            "init: reaped PID {pid} ({})",
            rootfs::describe_status(status)
        );
    }
}

/// Execs the program `run` starts, with SIGPIPE's default action (not the ignoring Rust's runtime
/// set up in init, which execve would keep).
///
/// # Safety
/// In a fresh child of this single-threaded program; `ptrs` and `env` are NUL-terminated arrays of
/// NUL-terminated C strings.
unsafe fn exec_program(prog: &str, ptrs: &[*const libc::c_char], env: &[*const libc::c_char]) -> ! {
    // SAFETY: guaranteed by the caller.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::execve(ptrs[0], ptrs.as_ptr(), env.as_ptr());
    }
    println!(
        "init: cannot run {prog}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: leaves the child without running the parent's exit handlers.
    unsafe { libc::_exit(127) }
}

/// The leader of the session `run` gives its program (a child of init, which has no controlling
/// terminal): it makes the session with the console ([`console_session`]), starts the program in a
/// process group of its own in the console's foreground (as a shell starts a job), waits for it and
/// logs its end as init's line, gives the foreground back to its own group and exits. So the
/// program has a terminal with job control, its orphans still go to init, and the session's end
/// (its leader's exit hangs up the foreground group) reaches no process the program left behind.
///
/// # Safety
/// As [`exec_program`].
unsafe fn lead_session(
    console: Option<&std::ffi::CStr>,
    prog: &str,
    ptrs: &[*const libc::c_char],
    env: &[*const libc::c_char],
) -> ! {
    // SAFETY: guaranteed by the caller; the rest are plain calls on our own process, group and
    // terminal, and `status` is a valid out-pointer.
    unsafe {
        console_session(console);
        // Setting the foreground from a background group stops the caller unless it ignores
        // SIGTTOU: the program may set its own group first, and we take the terminal back after.
        libc::signal(libc::SIGTTOU, libc::SIG_IGN);
        let child = libc::fork();
        if child == 0 {
            // Both sides set the group and the foreground (the shells' way), so neither order of
            // running can leave the program reading the terminal from the background.
            libc::setpgid(0, 0);
            libc::tcsetpgrp(0, libc::getpid());
            libc::signal(libc::SIGTTOU, libc::SIG_DFL);
            exec_program(prog, ptrs, env);
        }
        if child < 0 {
            println!("init: fork: {}", std::io::Error::last_os_error());
            libc::_exit(1);
        }
        libc::setpgid(child, child);
        libc::tcsetpgrp(0, child);
        let mut status = 0;
        while libc::waitpid(child, &mut status, 0) < 0 {
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
        println!("init: {prog} exited ({})", rootfs::describe_status(status));
        libc::tcsetpgrp(0, libc::getpid());
        libc::_exit(0)
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

/// Exercises uname, open/openat, fstat, lseek, read, close, brk/mmap (through the allocator), getpid,
/// and the errors of open on a read-only filesystem.
fn check() -> Result<(), String> {
    use std::io::{Read, Seek, SeekFrom};
    // SAFETY: uname fills the struct it is given.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return Err(format!("uname: {}", std::io::Error::last_os_error()));
    }
    let field = |f: &[libc::c_char]| -> String {
        f.iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8 as char)
            .collect()
    };
    println!(
        "init: uname: {} {} {}",
        field(&u.sysname),
        field(&u.release),
        field(&u.machine)
    );

    let motd = std::fs::read(rootfs::MOTD_PATH).map_err(|e| format!("read motd: {e}"))?;
    let mut f = std::fs::File::open(rootfs::MOTD_PATH).map_err(|e| format!("open: {e}"))?;
    let len = f.metadata().map_err(|e| format!("fstat: {e}"))?.len();
    if len != motd.len() as u64 {
        return Err(format!("fstat size {len} != {} bytes read", motd.len()));
    }
    let end = f
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("lseek end: {e}"))?;
    if end != len {
        return Err(format!("lseek(SEEK_END) = {end}, want {len}"));
    }
    f.seek(SeekFrom::Start(11))
        .map_err(|e| format!("lseek set: {e}"))?;
    let mut word = [0u8; 7];
    f.read_exact(&mut word)
        .map_err(|e| format!("read at 11: {e}"))?;
    if word != motd[11..18] {
        return Err(format!(
            "read after lseek: {:?}",
            String::from_utf8_lossy(&word)
        ));
    }
    if f.seek(SeekFrom::Current(-100)).is_ok() {
        return Err("lseek before the start succeeded".into());
    }
    println!(
        "init: {} is {len} bytes; fstat, lseek and read agree",
        rootfs::MOTD_PATH
    );

    match std::fs::File::open("/no/such/file") {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        other => return Err(format!("open of a missing file: {other:?}")),
    }
    if std::process::id() == 1 {
        // Only the guest's root is read-only.
        match std::fs::OpenOptions::new()
            .write(true)
            .open(rootfs::MOTD_PATH)
        {
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => {}
            other => return Err(format!("open for writing: {other:?}")),
        }
    }
    // A large allocation (mmap) and many small ones (brk), written and read back.
    let big: Vec<u64> = (0..(1u64 << 17)).collect();
    let small: Vec<Box<u64>> = (0..1000u64).map(Box::new).collect();
    let sum: u64 = big.iter().sum::<u64>() + small.iter().map(|b| **b).sum::<u64>();
    if sum != (1u64 << 17) * ((1u64 << 17) - 1) / 2 + 999 * 1000 / 2 {
        return Err("heap contents".into());
    }
    println!("init: heap ok (1 MiB mmap + 1000 small allocations)");
    Ok(())
}
