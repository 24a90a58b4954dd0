//! proctest's resource-usage and job-control cases: wait4's rusage and RUSAGE_CHILDREN, orphaned
//! process groups (SIGHUP then SIGCONT to a stopped one), and `proctest ttou`: SIGTTOU for a background
//! group writing with TOSTOP or changing the terminal (needs a controlling terminal: the guest's
//! console, or `script` on the host).

use super::{errno, exit, fork, wait};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

fn rusage(who: i32) -> libc::rusage {
    // SAFETY: an all-zero rusage is valid, and getrusage fills it.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut ru);
        ru
    }
}

fn us(tv: libc::timeval) -> i64 {
    tv.tv_sec * 1_000_000 + tv.tv_usec
}

/// Burns user CPU until this process has used at least `ms` of it.
fn burn_ms(ms: i64) {
    while us(rusage(libc::RUSAGE_SELF).ru_utime) < ms * 1000 {
        rootfs::sched::spin(1_000_000);
    }
}

/// wait4's rusage is the reaped child's own usage plus that of the children it waited for;
/// getrusage(RUSAGE_CHILDREN) then grows by the same.
pub fn rusage_cases(out: &dyn Fn(String)) {
    let before = rusage(libc::RUSAGE_CHILDREN);
    let c = fork();
    if c == 0 {
        let g = fork();
        if g == 0 {
            burn_ms(50);
            exit(0);
        }
        wait(g, 0);
        burn_ms(50);
        exit(0);
    }
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid, and wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointers.
    let r = unsafe { libc::wait4(c, &mut status, 0, &mut ru) };
    let after = rusage(libc::RUSAGE_CHILDREN);
    let u = us(ru.ru_utime);
    out(format!(
        "wait4 rusage: returns the child {}, ru_utime counts the child's and grandchild's 50 ms: {}, \
         ru_stime sane: {}, voluntary switches counted: {}",
        r == c,
        (100_000..10_000_000).contains(&u),
        (0..10_000_000).contains(&us(ru.ru_stime)),
        ru.ru_nvcsw >= 1
    ));
    let grew = us(after.ru_utime) - us(before.ru_utime);
    out(format!(
        "getrusage(RUSAGE_CHILDREN) after wait4 grew by its ru_utime: {}, by its ru_nvcsw: {}",
        (grew - u).abs() <= 1000,
        after.ru_nvcsw - before.ru_nvcsw == ru.ru_nvcsw
    ));
}

/// The signals handled, in order of their handlers' starts (each handler blocks the others).
static SEEN: [AtomicI32; 4] = [const { AtomicI32::new(0) }; 4];
pub static NSEEN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn record(sig: libc::c_int) {
    let i = NSEEN.fetch_add(1, Ordering::SeqCst);
    if i < SEEN.len() {
        SEEN[i].store(sig, Ordering::SeqCst);
    }
}

pub fn record_signals(sigs: &[i32]) {
    for &s in sigs {
        // SAFETY: a zeroed sigaction with a plain handler and a full mask is valid.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = record as *const () as libc::sighandler_t;
            libc::sigfillset(&mut sa.sa_mask);
            libc::sigaction(s, &sa, std::ptr::null_mut());
        }
    }
}

pub fn seen() -> Vec<i32> {
    let n = NSEEN.load(Ordering::SeqCst).min(SEEN.len());
    SEEN[..n].iter().map(|s| s.load(Ordering::SeqCst)).collect()
}

/// Writes 64 KiB of stack below the caller, so that signal frames and handlers there run without page
/// faults (a fault is a trap into the kernel, which delivers pending signals on its way back).
#[inline(never)]
fn touch_stack() {
    let mut a = [0u8; 64 * 1024];
    for i in (0..a.len()).step_by(4096) {
        a[i] = 1;
    }
    std::hint::black_box(&mut a);
}

/// Two signals pending when they are unblocked: Linux sets up both handlers' frames at once (lowest
/// signal first), so the second handler runs first and returns into the first.
pub fn nested_handler_cases(out: &dyn Fn(String)) {
    // Written now, so that the handlers' stores do not fault (copy-on-write after our forks).
    NSEEN.store(0, Ordering::SeqCst);
    for s in &SEEN {
        s.store(0, Ordering::SeqCst);
    }
    for s in [libc::SIGUSR1, libc::SIGUSR2] {
        // SAFETY: a zeroed sigaction (empty mask) with a plain handler is valid.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = record as *const () as libc::sighandler_t;
            libc::sigaction(s, &sa, std::ptr::null_mut());
        }
    }
    // SAFETY: a valid signal set; signalling ourselves.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), libc::SIGUSR2);
        libc::kill(libc::getpid(), libc::SIGUSR1);
        touch_stack();
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    out(format!(
        "SIGUSR2 and SIGUSR1 pending, then unblocked: handlers ran in the order {:?}",
        seen()
    ));
    NSEEN.store(0, Ordering::SeqCst);
    for s in [libc::SIGUSR1, libc::SIGUSR2] {
        // SAFETY: back to the default action.
        unsafe { libc::signal(s, libc::SIG_DFL) };
    }
}

/// The process left in a group about to be orphaned: stopped (recording SIGHUP and SIGCONT) or
/// running (SIGHUP's default action would kill it: its exit status tells); once adopted by
/// `subreaper` and continued it writes the signals it got and whether it was adopted to `fd`.
fn orphan_to_be(stopped: bool, subreaper: i32, fd: i32) -> ! {
    if stopped {
        record_signals(&[libc::SIGHUP, libc::SIGCONT]);
        // SAFETY: plain call.
        unsafe { libc::raise(libc::SIGSTOP) };
    } else {
        // SAFETY: plain call.
        while unsafe { libc::getppid() } != subreaper {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: plain call.
    let adopted = unsafe { libc::getppid() } == subreaper;
    let mut report: Vec<u8> = seen().iter().map(|&s| s as u8).collect();
    report.push(adopted as u8);
    // SAFETY: writing our bytes.
    unsafe { libc::write(fd, report.as_ptr().cast(), report.len()) };
    exit(0);
}

/// Waits until child `c` (in the group to be orphaned) has stopped if it is to, writes its pid to
/// `fd` and exits, orphaning the group.
fn exit_leaving(c: i32, stopped: bool, fd: i32) -> ! {
    if stopped {
        wait(c, libc::WUNTRACED);
    }
    // SAFETY: writing four bytes.
    unsafe { libc::write(fd, (&c as *const i32).cast(), 4) };
    exit(0);
}

/// Orphaned process groups (POSIX). A middle process makes its own session. Either its child, in
/// another group of that session, is left with a stopped or running member when the middle process
/// exits (the exit orphans a child's group), or that child itself makes its own group with a stopped
/// member and exits (the exit orphans the exiting process's own group). The member is adopted by us,
/// the subreaper, in another session. Stopped, the group gets SIGHUP then SIGCONT; running, nothing.
/// Needs the caller to be a child subreaper.
pub fn orphaned_group_cases(out: &dyn Fn(String)) {
    for (what, stopped, own_group) in [
        ("child's group, member stopped", true, false),
        ("child's group, member running", false, false),
        ("own group, member stopped", true, true),
    ] {
        let mut fds = [0; 2];
        // SAFETY: fds has room for two descriptors.
        unsafe { libc::pipe(fds.as_mut_ptr()) };
        let me = std::process::id() as i32;
        let m = fork();
        if m == 0 {
            // SAFETY: plain calls.
            unsafe { libc::setsid() };
            let c = fork();
            if c == 0 {
                // SAFETY: plain call.
                unsafe { libc::setpgid(0, 0) };
                if !own_group {
                    orphan_to_be(stopped, me, fds[1]);
                }
                let g = fork();
                if g == 0 {
                    orphan_to_be(stopped, me, fds[1]);
                }
                exit_leaving(g, stopped, fds[1]);
            }
            // SAFETY: plain call (the child may have done it already).
            unsafe { libc::setpgid(c, c) };
            if own_group {
                wait(c, 0);
                exit(0);
            }
            exit_leaving(c, stopped, fds[1]);
        }
        // SAFETY: closing our copy of the write end.
        unsafe { libc::close(fds[1]) };
        let (_, ms) = wait(m, 0);
        let mut c = 0i32;
        // SAFETY: reading four bytes into c.
        unsafe { libc::read(fds[0], (&mut c as *mut i32).cast(), 4) };
        let mut pfd = libc::pollfd {
            fd: fds[0],
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd. A child left stopped would never report: give up after 20 s.
        let ready = unsafe { libc::poll(&mut pfd, 1, 20_000) } == 1;
        let mut buf = [0u8; 8];
        let n = if ready {
            // SAFETY: reading into buf.
            unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) }
        } else {
            // SAFETY: killing our adopted child.
            unsafe { libc::kill(c, libc::SIGKILL) };
            0
        };
        let (r, cs) = wait(c, 0);
        let report = &buf[..n.max(0) as usize];
        let (sigs, adopted) = report.split_at(report.len().saturating_sub(1));
        out(format!(
            "orphaned group ({what}): middle {}, member got signals {:?}, adopted by us {}, \
             reaped by us {} {}",
            rootfs::describe_status(ms),
            sigs,
            adopted == [1],
            r == c,
            rootfs::describe_status(cs)
        ));
        // SAFETY: closing our descriptor.
        unsafe { libc::close(fds[0]) };
    }
}

fn termios() -> libc::termios {
    // SAFETY: an all-zero termios is valid, and tcgetattr fills it.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        libc::tcgetattr(0, &mut t);
        t
    }
}

/// tcsetattr on stdin with TOSTOP on or off: the result and errno.
pub fn set_tostop(on: bool) -> (i32, i32) {
    let mut t = termios();
    if on {
        t.c_lflag |= libc::TOSTOP;
    } else {
        t.c_lflag &= !libc::TOSTOP;
    }
    // SAFETY: a valid termios.
    let r = unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
    (r, if r < 0 { errno() } else { 0 })
}

fn sigttou(handler: libc::sighandler_t) {
    // SAFETY: a zeroed sigaction (no SA_RESTART) with a plain handler is valid.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        libc::sigaction(libc::SIGTTOU, &sa, std::ptr::null_mut());
    }
}

pub fn block_sigttou(block: bool) {
    // SAFETY: a valid signal set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTTOU);
        let how = if block {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        libc::sigprocmask(how, &set, std::ptr::null_mut());
    }
}

/// A write of `s` to stdout: its result and errno.
pub fn write_out(s: &str) -> (isize, i32) {
    // SAFETY: writing our bytes.
    let r = unsafe { libc::write(1, s.as_ptr().cast(), s.len()) };
    (r, if r < 0 { errno() } else { 0 })
}

/// tcsetpgrp(stdin, own group): result and errno.
fn tcsetpgrp_own() -> (i32, i32) {
    // SAFETY: plain calls.
    let r = unsafe { libc::tcsetpgrp(0, libc::getpgrp()) };
    (r, if r < 0 { errno() } else { 0 })
}

/// `proctest ttou`, run in the foreground of a terminal: a child in a background group sets TOSTOP and
/// tries writing and changing the terminal with SIGTTOU blocked, handled, ignored and at its default;
/// a grandchild in an orphaned group gets EIO (ENOTTY for tcsetpgrp). The results are printed once
/// TOSTOP is off again.
pub fn ttou() {
    println!("proctest: ttou: start");
    let b = fork();
    if b == 0 {
        // SAFETY: plain call.
        unsafe { libc::setpgid(0, 0) };
        let mut res = Vec::new();
        block_sigttou(true);
        res.push(format!(
            "tcsetattr TOSTOP with SIGTTOU blocked: {:?}",
            set_tostop(true)
        ));
        block_sigttou(false);

        sigttou(record as *const () as libc::sighandler_t);
        let w = write_out("proctest: ttou: this must not appear\n");
        res.push(format!("write with a handler: {w:?}, got {:?}", seen()));
        NSEEN.store(0, Ordering::SeqCst);
        res.push(format!(
            "tcsetpgrp with a handler: {:?}, got {:?}",
            tcsetpgrp_own(),
            seen()
        ));
        NSEEN.store(0, Ordering::SeqCst);
        res.push(format!(
            "tcsetattr with a handler: {:?}, got {:?}",
            set_tostop(true),
            seen()
        ));

        sigttou(libc::SIG_IGN);
        let w = write_out("proctest: ttou: written while ignoring SIGTTOU\n");
        res.push(format!("write ignoring SIGTTOU: {}", w.0 > 0));

        // At the default action the writer stops (we ignore it, the group signal does not stop us).
        let d = fork();
        if d == 0 {
            sigttou(libc::SIG_DFL);
            write_out("proctest: ttou: this must not appear either\n");
            exit(0);
        }
        let (_, s) = wait(d, libc::WUNTRACED);
        res.push(format!(
            "write at the default: {}",
            rootfs::describe_status(s)
        ));
        // SAFETY: killing our own child.
        unsafe { libc::kill(d, libc::SIGKILL) };
        wait(d, 0);

        // An orphaned group: e's child, once e has exited.
        let mut fds = [0; 2];
        // SAFETY: fds has room for two descriptors.
        unsafe { libc::pipe(fds.as_mut_ptr()) };
        let e = fork();
        if e == 0 {
            // SAFETY: plain call.
            unsafe { libc::setpgid(0, 0) };
            let epid = std::process::id() as i32;
            if fork() == 0 {
                sigttou(libc::SIG_DFL);
                // SAFETY: plain call.
                while unsafe { libc::getppid() } == epid {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                let w = write_out("proctest: ttou: this must not appear either\n");
                let p = tcsetpgrp_own();
                let a = set_tostop(true);
                let r = [w.1, p.1, a.1].map(|e| e as u8);
                // SAFETY: writing our bytes.
                unsafe { libc::write(fds[1], r.as_ptr().cast(), r.len()) };
                exit(0);
            }
            exit(0);
        }
        wait(e, 0);
        // SAFETY: closing our copy of the write end.
        unsafe { libc::close(fds[1]) };
        let mut r = [0u8; 3];
        // SAFETY: reading into r (blocks until the grandchild has written or exited).
        let n = unsafe { libc::read(fds[0], r.as_mut_ptr().cast(), 3) };
        res.push(format!(
            "orphaned group: write, tcsetpgrp, tcsetattr errno {:?}",
            &r[..n.max(0) as usize]
        ));

        block_sigttou(true);
        set_tostop(false);
        for line in res {
            println!("proctest: ttou: {line}");
        }
        exit(0);
    }
    // SAFETY: plain call (the child may have done it already).
    unsafe { libc::setpgid(b, b) };
    let (_, s) = wait(b, 0);
    println!("proctest: ttou: child {}", rootfs::describe_status(s));
}
