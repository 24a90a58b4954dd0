//! proctest: process semantics, printed so that the output can be compared between Linux and the guest
//! kernel (the differential test runs it on both; pids are printed relative or as yes/no).
//!
//! Cases: fork/exit/wait status, wait4's errors and pid forms, WNOHANG, copy-on-write, signals
//! (handler, mask, default terminate, SIGKILL uncatchable, stop/continue), SIGCHLD SIG_IGN
//! auto-reaping, subreaper
//! reparenting, process groups and sessions, pipes (EOF, EPIPE), dup2, execve with argv, nanosleep,
//! the alternate signal stack ([`altstack`]).
//! `proctest exit N` exits with N (the execve target); `proctest forks N` runs N fork/exit/wait cycles;
//! `proctest orphan`: the parent exits at once, the child waits to be adopted and reports its new parent.
//! wait4's rusage, orphaned process groups and `proctest ttou` (SIGTTOU, on a terminal) are in [`jobs`],
//! `proctest ctty` (controlling terminals, on a terminal) in [`ctty`].

#[path = "proctest/altstack.rs"]
mod altstack;
#[path = "proctest/ctty.rs"]
mod ctty;
#[path = "proctest/jobs.rs"]
mod jobs;

use std::sync::atomic::{AtomicI32, Ordering};

static GOT: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    GOT.store(sig, Ordering::SeqCst);
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn fork() -> libc::pid_t {
    // SAFETY: single-threaded program.
    unsafe { libc::fork() }
}

fn exit(code: i32) -> ! {
    // SAFETY: ends the process without the parent's atexit handlers.
    unsafe { libc::_exit(code) }
}

fn wait(pid: libc::pid_t, options: i32) -> (libc::pid_t, i32) {
    let mut status = 0;
    // SAFETY: status is a valid out-pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, options) };
    (r, status)
}

fn handle(sig: i32, handler: libc::sighandler_t) {
    // SAFETY: a zeroed sigaction with a plain handler is valid.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("exit") => exit(args[2].parse().unwrap()),
        Some("forks") => return forks(args[2].parse().unwrap()),
        Some("orphan") => return orphan(),
        Some("ttou") => return jobs::ttou(),
        Some("ctty") => return ctty::ctty(),
        Some("altstack-after-exec") => return altstack::after_exec(&args[2]),
        Some("both") => {
            // For Command::output: a line on each of stdout and stderr, then exit 5.
            println!("to stdout");
            eprintln!("to stderr");
            exit(5);
        }
        _ => {}
    }
    let me = args[0].clone();
    let out = |s: String| println!("proctest: {s}");

    // fork, exit status, wait
    let c = fork();
    if c == 0 {
        exit(3);
    }
    let (r, s) = wait(c, 0);
    out(format!(
        "wait returns the child: {}, {}",
        r == c,
        rootfs::describe_status(s)
    ));

    // wait4 errors
    let (r, _) = wait(-1, 0);
    out(format!("wait without children: {r} errno {}", errno()));
    let (r, _) = wait(i32::MIN, 0);
    out(format!("wait INT_MIN: {r} errno {}", errno()));
    let (r, _) = wait(-1, 0x100);
    out(format!("wait bad options: {r} errno {}", errno()));

    // WNOHANG while the child runs, then SIGKILL it
    let c = fork();
    if c == 0 {
        loop {
            // SAFETY: pause just sleeps.
            unsafe { libc::pause() };
        }
    }
    let (r, _) = wait(c, libc::WNOHANG);
    out(format!("WNOHANG with a running child: {r}"));
    // SAFETY: kill with a valid pid.
    unsafe { libc::kill(c, libc::SIGKILL) };
    let (r, s) = wait(c, 0);
    out(format!(
        "killed child: {}, {}",
        r == c,
        rootfs::describe_status(s)
    ));

    // copy-on-write
    let mut value = vec![1u64; 4096];
    let c = fork();
    if c == 0 {
        value[100] = 2;
        exit(if value[100] == 2 && value[0] == 1 {
            0
        } else {
            1
        });
    }
    let (_, s) = wait(c, 0);
    value[200] = 5;
    out(format!(
        "copy-on-write: child sees its write: {}, parent unchanged: {}",
        rootfs::describe_status(s),
        value[100] == 1 && value[200] == 5
    ));

    // a child killed by SIGSEGV
    let c = fork();
    if c == 0 {
        // SAFETY: none: deliberately faults.
        unsafe { std::ptr::null_mut::<u64>().write_volatile(1) };
        exit(0);
    }
    let (_, s) = wait(c, 0);
    out(format!("null write: {}", rootfs::describe_status(s)));

    // signal handler, mask, SIGKILL uncatchable
    handle(libc::SIGUSR1, on_signal as *const () as libc::sighandler_t);
    // SAFETY: raising a signal with a handler installed.
    unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
    out(format!(
        "handler ran for signal {}",
        GOT.swap(0, Ordering::SeqCst)
    ));
    // SAFETY: sigset operations on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), libc::SIGUSR1);
        out(format!(
            "blocked: handler ran: {}",
            GOT.load(Ordering::SeqCst) != 0
        ));
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    out(format!(
        "unblocked: signal {}",
        GOT.swap(0, Ordering::SeqCst)
    ));
    // SAFETY: a zeroed sigaction.
    let r = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
        libc::sigaction(libc::SIGKILL, &sa, std::ptr::null_mut())
    };
    out(format!("sigaction(SIGKILL): {r} errno {}", errno()));
    let c = fork();
    if c == 0 {
        // SAFETY: pause just sleeps.
        unsafe { libc::pause() };
        exit(0);
    }
    // SAFETY: kill with a valid pid.
    let r0 = unsafe { libc::kill(c, 0) };
    // SAFETY: as above.
    unsafe { libc::kill(c, libc::SIGTERM) };
    let (_, s) = wait(c, 0);
    out(format!(
        "kill 0: {r0}; SIGTERM: {}",
        rootfs::describe_status(s)
    ));
    // SAFETY: kill of a reaped pid.
    let r = unsafe { libc::kill(c, 0) };
    out(format!("kill of a reaped pid: {r} errno {}", errno()));

    // SIGCHLD ignored: children are reaped at once
    handle(libc::SIGCHLD, libc::SIG_IGN);
    let c = fork();
    if c == 0 {
        exit(0);
    }
    let (r, _) = wait(c, 0);
    out(format!("SIGCHLD ignored: wait {r} errno {}", errno()));
    handle(libc::SIGCHLD, libc::SIG_DFL);

    // process groups and sessions
    let c = fork();
    if c == 0 {
        // SAFETY: plain calls.
        unsafe {
            libc::setpgid(0, 0);
            let ok = libc::getpgid(0) == libc::getpid() && libc::getpgrp() == libc::getpid();
            let sid_err = libc::setsid() == -1;
            exit(if ok && sid_err { 0 } else { 1 });
        }
    }
    let (_, s) = wait(c, 0);
    out(format!(
        "setpgid/getpgid in child, setsid as group leader fails: {}",
        rootfs::describe_status(s)
    ));
    let c = fork();
    if c == 0 {
        // SAFETY: plain calls.
        unsafe {
            let ok = libc::setsid() == libc::getpid() && libc::getsid(0) == libc::getpid();
            exit(if ok { 0 } else { 1 });
        }
    }
    let (_, s) = wait(c, 0);
    out(format!("setsid in child: {}", rootfs::describe_status(s)));
    let c = fork();
    if c == 0 {
        // SAFETY: plain call.
        unsafe { libc::setpgid(0, 0) };
        exit(4);
    }
    // SAFETY: plain call; the child may already have set it.
    unsafe { libc::setpgid(c, c) };
    let (r, s) = wait(-c, 0);
    out(format!(
        "wait for group -pgid: {}, {}",
        r == c,
        rootfs::describe_status(s)
    ));

    // subreaper: a grandchild whose parent exits comes to us
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    unsafe { libc::pipe(fds.as_mut_ptr()) };
    let me_pid = std::process::id() as i32;
    let c = fork();
    if c == 0 {
        let g = fork();
        if g == 0 {
            // Wait until the parent has exited, then report our parent.
            // SAFETY: plain calls.
            unsafe {
                while libc::getppid() != me_pid {
                    libc::usleep(1000);
                }
                let b = [1u8];
                libc::write(fds[1], b.as_ptr().cast(), 1);
            }
            exit(6);
        }
        exit(5);
    }
    let (_, s) = wait(c, 0);
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into b.
    unsafe { libc::read(fds[0], b.as_mut_ptr().cast(), 1) };
    let (r, s2) = wait(-1, 0);
    out(format!(
        "subreaper: parent {}, orphan reparented to us and reaped: {} {}",
        rootfs::describe_status(s),
        r > 0 && b[0] == 1,
        rootfs::describe_status(s2)
    ));
    // SAFETY: closing our descriptors.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }

    // pipes: data, EOF, EPIPE
    // SAFETY: fds has room for two descriptors.
    unsafe { libc::pipe(fds.as_mut_ptr()) };
    let c = fork();
    if c == 0 {
        // SAFETY: plain calls on our descriptors.
        unsafe {
            libc::close(fds[0]);
            let msg = b"hello through a pipe";
            libc::write(fds[1], msg.as_ptr().cast(), msg.len());
        }
        exit(0);
    }
    // SAFETY: plain calls on our descriptors.
    unsafe { libc::close(fds[1]) };
    let mut got = Vec::new();
    loop {
        let mut buf = [0u8; 7];
        // SAFETY: reading into buf.
        let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            out(format!(
                "pipe read {:?}, then {n} (EOF)",
                String::from_utf8_lossy(&got)
            ));
            break;
        }
        got.extend_from_slice(&buf[..n as usize]);
    }
    wait(c, 0);
    // SAFETY: plain calls.
    unsafe {
        libc::close(fds[0]);
        libc::pipe(fds.as_mut_ptr());
        libc::close(fds[0]);
        handle(libc::SIGPIPE, libc::SIG_IGN);
        let r = libc::write(fds[1], b"x".as_ptr().cast(), 1);
        out(format!("write without readers: {r} errno {}", errno()));
        handle(libc::SIGPIPE, libc::SIG_DFL);
        libc::close(fds[1]);
    }
    let c = fork();
    if c == 0 {
        // SAFETY: plain calls.
        unsafe {
            libc::pipe(fds.as_mut_ptr());
            libc::close(fds[0]);
            libc::write(fds[1], b"x".as_ptr().cast(), 1);
        }
        exit(0);
    }
    let (_, s) = wait(c, 0);
    out(format!(
        "write without readers, SIGPIPE default: {}",
        rootfs::describe_status(s)
    ));

    // dup2 + execve with argv
    let c = fork();
    if c == 0 {
        // SAFETY: plain calls; argv and envp are NUL-terminated.
        unsafe {
            let r = libc::dup2(1, 10);
            let fl = libc::fcntl(10, libc::F_GETFD);
            if r != 10 || fl != 0 {
                exit(99);
            }
            let path = std::ffi::CString::new(me.as_str()).unwrap();
            let argv = [
                path.as_ptr(),
                c"exit".as_ptr(),
                c"7".as_ptr(),
                std::ptr::null(),
            ];
            let envp = [std::ptr::null()];
            libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
        }
        exit(98);
    }
    let (_, s) = wait(c, 0);
    out(format!(
        "dup2 then execve(proctest exit 7): {}",
        rootfs::describe_status(s)
    ));
    let c = fork();
    if c == 0 {
        let argv = [c"/no/such/program".as_ptr(), std::ptr::null()];
        // SAFETY: NUL-terminated arrays.
        unsafe { libc::execve(argv[0], argv.as_ptr(), argv[1..].as_ptr()) };
        exit(errno());
    }
    let (_, s) = wait(c, 0);
    out(format!(
        "execve of a missing file: {}",
        rootfs::describe_status(s)
    ));

    // stop and continue: WUNTRACED, WCONTINUED
    let c = fork();
    if c == 0 {
        loop {
            // SAFETY: pause just sleeps.
            unsafe { libc::pause() };
        }
    }
    // SAFETY: kill with a valid pid.
    unsafe { libc::kill(c, libc::SIGSTOP) };
    let (r, s) = wait(c, libc::WUNTRACED);
    out(format!(
        "SIGSTOP: {}, {}",
        r == c,
        rootfs::describe_status(s)
    ));
    // SAFETY: as above.
    unsafe { libc::kill(c, libc::SIGCONT) };
    let (r, s) = wait(c, libc::WCONTINUED);
    out(format!(
        "SIGCONT: {}, continued {}",
        r == c,
        libc::WIFCONTINUED(s)
    ));
    // SAFETY: as above.
    unsafe { libc::kill(c, libc::SIGKILL) };
    let (_, s) = wait(c, 0);
    out(format!("then SIGKILL: {}", rootfs::describe_status(s)));

    // std::process::Command (glibc posix_spawn: clone with CLONE_VM|CLONE_VFORK)
    let st = std::process::Command::new(&me).args(["exit", "9"]).status();
    out(format!("Command::status: {:?}", st.map(|s| s.code())));
    // posix_spawn of a missing program: the vfork child reports the exec error through the memory it
    // shares with the parent, so spawning fails (ENOENT) instead of the child exiting 127.
    let r = std::process::Command::new("/nonexistent/program").status();
    out(format!(
        "Command of a missing program: {:?}",
        r.map(|s| s.code()).map_err(|e| e.kind())
    ));
    // Command::output: pipes for stdout and stderr, read with poll() on both until EOF, then wait.
    match std::process::Command::new(&me).arg("both").output() {
        Ok(o) => out(format!(
            "Command::output: {:?} stdout {:?} stderr {:?}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => out(format!("Command::output: error {e}")),
    }

    restart_cases(&out);

    // nanosleep
    let t = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(30));
    out(format!(
        "slept at least 30 ms: {}",
        t.elapsed().as_millis() >= 30
    ));
    priority_cases(&out);
    jobs::rusage_cases(&out);
    jobs::nested_handler_cases(&out);
    jobs::orphaned_group_cases(&out);
    altstack::altstack_cases(&out, &me);
    out("done".into());
}

extern "C" fn on_usr1(sig: libc::c_int) {
    GOT.store(sig, Ordering::SeqCst);
}

/// SIGUSR1's handler, with or without SA_RESTART.
fn handle_usr1(restart: bool) {
    // SAFETY: a zeroed sigaction with a plain handler is valid.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as *const () as libc::sighandler_t;
        sa.sa_flags = if restart { libc::SA_RESTART } else { 0 };
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
}

/// A child that, 50 ms after starting, sends SIGUSR1 to its parent, then after 50 ms more runs `then`
/// and exits with 7. Returns its pid.
fn poke_parent_later(then: impl FnOnce()) -> libc::pid_t {
    // SAFETY: plain calls.
    let parent = unsafe { libc::getpid() };
    let c = fork();
    if c == 0 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        // SAFETY: plain calls.
        unsafe { libc::kill(parent, libc::SIGUSR1) };
        std::thread::sleep(std::time::Duration::from_millis(50));
        then();
        exit(7);
    }
    c
}

/// System calls interrupted by a handled signal: restarted with SA_RESTART (pipe read, wait4), EINTR
/// without it, and EINTR for sleeps and poll even with it (signal(7)); a sleep restarts across
/// SIGSTOP/SIGCONT (no handler runs).
fn restart_cases(out: &dyn Fn(String)) {
    for restart in [false, true] {
        let name = if restart {
            "SA_RESTART"
        } else {
            "no SA_RESTART"
        };
        handle_usr1(restart);

        // read on a pipe; the child writes a byte after the signal
        let mut fds = [0; 2];
        // SAFETY: fds has room for two descriptors.
        unsafe { libc::pipe(fds.as_mut_ptr()) };
        GOT.store(0, Ordering::SeqCst);
        let c = poke_parent_later(|| {
            // SAFETY: writing one byte from a valid buffer.
            unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) };
        });
        let mut b = [0u8; 4];
        // SAFETY: reading into a valid buffer.
        let r = unsafe { libc::read(fds[0], b.as_mut_ptr().cast(), b.len()) };
        let e = if r < 0 { errno() } else { 0 };
        out(format!(
            "{name}: pipe read returns {r} errno {e}, handler ran {}",
            GOT.load(Ordering::SeqCst) == libc::SIGUSR1
        ));
        wait(c, 0);
        // SAFETY: closing our descriptors.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }

        // wait4 for a child that signals first and exits later
        GOT.store(0, Ordering::SeqCst);
        let c = poke_parent_later(|| {});
        let (r, s) = wait(c, 0);
        let e = if r < 0 { errno() } else { 0 };
        if r < 0 {
            wait(c, 0);
        }
        out(format!(
            "{name}: wait4 returns the child {}, errno {e}, {}",
            r == c,
            if r == c {
                rootfs::describe_status(s)
            } else {
                "-".into()
            }
        ));

        // nanosleep: EINTR either way
        let c = poke_parent_later(|| {});
        let ts = libc::timespec {
            tv_sec: 5,
            tv_nsec: 0,
        };
        // SAFETY: valid timespec; no remainder wanted.
        let r = unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
        out(format!("{name}: nanosleep returns {r} errno {}", errno()));
        wait(c, 0);

        // poll on an empty pipe without a timeout: EINTR either way
        // SAFETY: fds has room for two descriptors.
        unsafe { libc::pipe(fds.as_mut_ptr()) };
        let c = poke_parent_later(|| {});
        let mut p = libc::pollfd {
            fd: fds[0],
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, -1) };
        out(format!("{name}: poll returns {r} errno {}", errno()));
        wait(c, 0);
        // SAFETY: closing our descriptors.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
    // SAFETY: back to the default disposition.
    unsafe { libc::signal(libc::SIGUSR1, libc::SIG_DFL) };

    // A sleep stopped and continued (no handler runs) sleeps its whole time.
    let c = fork();
    if c == 0 {
        let t = std::time::Instant::now();
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 300_000_000,
        };
        // SAFETY: valid timespec.
        let r = unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
        println!(
            "proctest: nanosleep across SIGSTOP/SIGCONT returns {r}, slept it all {}",
            t.elapsed().as_millis() >= 300
        );
        exit(0);
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(c, libc::SIGSTOP) };
    wait(c, libc::WUNTRACED);
    // SAFETY: as above.
    unsafe { libc::kill(c, libc::SIGCONT) };
    wait(c, 0);
}

/// `n` fork/exit/wait cycles (memory and pid leak check).
fn forks(n: u32) {
    let mut failed = 0;
    for i in 0..n {
        let c = fork();
        if c == 0 {
            exit((i % 256) as i32);
        }
        let (r, s) = wait(c, 0);
        if r != c || !libc::WIFEXITED(s) || libc::WEXITSTATUS(s) != (i % 256) as i32 {
            failed += 1;
        }
    }
    println!("proctest: {n} fork/exit/wait cycles, {failed} failed");
}

/// The orphan demo: the child outlives its parent and is adopted (by init, or the nearest subreaper).
fn orphan() {
    let parent = std::process::id() as i32;
    let c = fork();
    if c == 0 {
        // SAFETY: plain calls.
        unsafe {
            while libc::getppid() == parent {
                libc::usleep(1000);
            }
            println!(
                "proctest: orphan: my parent exited, my parent is now {}",
                libc::getppid()
            );
        }
        exit(0);
    }
    println!("proctest: orphan: parent exits, leaving its child behind");
}

/// Nice values and scheduling policies (only what an unprivileged host user may do too: raising nice,
/// SCHED_BATCH).
fn priority_cases(out: &dyn Fn(String)) {
    // SAFETY: plain system calls without memory arguments, and sched_param structs on the stack.
    unsafe {
        let raw = |which: i32, who: i32| libc::syscall(libc::SYS_getpriority, which, who) as i64;
        let start = libc::getpriority(libc::PRIO_PROCESS, 0);
        let r = libc::setpriority(libc::PRIO_PROCESS, 0, start + 5);
        out(format!(
            "setpriority +5: {r}, nice {}, raw getpriority {}",
            libc::getpriority(libc::PRIO_PROCESS, 0) - start,
            raw(libc::PRIO_PROCESS as i32, 0) - (20 - start) as i64
        ));
        let c = fork();
        if c == 0 {
            exit(libc::getpriority(libc::PRIO_PROCESS, 0) - start);
        }
        let (_, s) = wait(c, 0);
        out(format!("a child inherits nice: +{}", libc::WEXITSTATUS(s)));
        out(format!(
            "getpriority of no such pid: {} errno {}",
            raw(libc::PRIO_PROCESS as i32, 999_999),
            errno()
        ));
        out(format!(
            "getpriority bad which: {} errno {}",
            raw(7, 0),
            errno()
        ));
        out(format!(
            "setpriority of no such pid: {} errno {}",
            libc::setpriority(libc::PRIO_PROCESS, 999_999, 0),
            errno()
        ));
        let p = libc::sched_param { sched_priority: 0 };
        out(format!(
            "sched_getscheduler: {}; to SCHED_BATCH: {}; now {}",
            libc::sched_getscheduler(0),
            libc::sched_setscheduler(0, libc::SCHED_BATCH, &p),
            libc::sched_getscheduler(0)
        ));
        let bad = libc::sched_param { sched_priority: 5 };
        out(format!(
            "SCHED_BATCH with priority 5: {} errno {}",
            libc::sched_setscheduler(0, libc::SCHED_BATCH, &bad),
            errno()
        ));
        out(format!(
            "policy 77: {} errno {}; pid -1: {} errno {}",
            libc::sched_setscheduler(0, 77, &p),
            errno(),
            libc::sched_getscheduler(-1),
            errno()
        ));
        out(format!(
            "sched_getscheduler of no such pid: {} errno {}",
            libc::sched_getscheduler(999_999),
            errno()
        ));
        let mut got = libc::sched_param { sched_priority: 9 };
        out(format!(
            "sched_getparam: {} priority {}; SCHED_OTHER priorities {}..{}",
            libc::sched_getparam(0, &mut got),
            got.sched_priority,
            libc::sched_get_priority_min(libc::SCHED_OTHER),
            libc::sched_get_priority_max(libc::SCHED_OTHER)
        ));
        out(format!(
            "back to SCHED_OTHER: {}; sched_yield: {}",
            libc::sched_setscheduler(0, libc::SCHED_OTHER, &p),
            libc::sched_yield()
        ));
    }
}
