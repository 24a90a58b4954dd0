//! toolbox: the few small commands of the guest that busybox (the rootfs's userland) has no applet for,
//! in one static executable chosen by the name it runs as (/bin/nice, /bin/zombie and /bin/forkbomb
//! are symlinks to it) or by its first argument (`toolbox schedps`, also on the host).
//!
//! Commands: `nice [-n N] CMD [ARGS]` (runs CMD with its nice value raised by N, default 10; without
//! CMD prints the current nice value: Debian's busybox has no nice applet), `schedps` (the scheduler's
//! view of every process: PID NI PRI, CPU time, vruntime and context switches in ms from
//! /proc/PID/sched), cpuinfo (OSXSAVE, AVX and XCR0 as user mode sees them), the demos `zombie` (a
//! child exits unwaited: `ps` shows it as Z; the parent exits and init reaps it) and `forkbomb N`
//! (forks until N children or EAGAIN, then kills and reaps them all), and the measurement `getppid N`
//! (N getppid calls: the wall time of the cheapest system call).

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args[0].rsplit('/').next().unwrap_or("").to_string();
    let (cmd, rest) = if name == "toolbox" {
        match args.get(1) {
            Some(c) => (c.clone(), args[2..].to_vec()),
            None => {
                eprintln!("usage: toolbox COMMAND [ARGS]");
                std::process::exit(2);
            }
        }
    } else {
        (name, args[1..].to_vec())
    };
    let code = match cmd.as_str() {
        "schedps" => schedps(),
        "nice" => nice(&rest),
        "zombie" => zombie(),
        "getppid" => getppid(rest.first().and_then(|s| s.parse().ok()).unwrap_or(10_000)),
        "cpuinfo" => {
            let r = std::arch::x86_64::__cpuid(1);
            let osxsave = r.ecx & (1 << 27) != 0;
            let xcr0 = if osxsave {
                // SAFETY: OSXSAVE is set, so xgetbv is allowed.
                unsafe { std::arch::x86_64::_xgetbv(0) }
            } else {
                0
            };
            println!(
                "cpuinfo: osxsave {osxsave} avx {} xcr0 {xcr0:#x}",
                r.ecx & (1 << 28) != 0
            );
            0
        }
        "forkbomb" => forkbomb(rest.first().and_then(|s| s.parse().ok()).unwrap_or(100)),
        other => {
            eprintln!("toolbox: {other}: unknown command");
            127
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

/// `getppid N`: N getppid calls in a loop (the cheapest system call: the cost of the syscall path);
/// prints the wall time per call.
fn getppid(n: u64) -> i32 {
    let t = std::time::Instant::now();
    for _ in 0..n {
        // SAFETY: getppid has no arguments and cannot fail.
        std::hint::black_box(unsafe { libc::getppid() });
    }
    let ns = t.elapsed().as_nanos() as u64 / n.max(1);
    println!("getppid: {n} calls, {ns} ns each");
    0
}

/// The pids in /proc, ascending; `None` (after a message) when /proc cannot be read.
fn proc_pids() -> Option<Vec<u32>> {
    match std::fs::read_dir("/proc") {
        Ok(rd) => {
            let mut pids: Vec<u32> = rd
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect();
            pids.sort();
            Some(pids)
        }
        Err(e) => {
            eprintln!("ps: /proc: {e}");
            None
        }
    }
}

/// The caller's nice value (getpriority through glibc: errno tells -1 from an error).
fn get_nice(pid: u32) -> Result<i32, std::io::Error> {
    // SAFETY: errno is thread-local; getpriority has no memory arguments.
    unsafe {
        *libc::__errno_location() = 0;
        let n = libc::getpriority(libc::PRIO_PROCESS, pid);
        if n == -1 && *libc::__errno_location() != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n)
    }
}

fn set_nice(pid: u32, nice: i32) -> Result<(), std::io::Error> {
    // SAFETY: setpriority has no memory arguments.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, pid, nice) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn nice(args: &[String]) -> i32 {
    use std::os::unix::process::CommandExt;
    let (adj, cmd) = match args {
        [n, v, rest @ ..] if n == "-n" => (v.parse::<i32>().ok(), rest),
        rest => (Some(10), rest),
    };
    let Some(adj) = adj else {
        eprintln!("usage: nice [-n N] [COMMAND [ARG]...]");
        return 125;
    };
    let cur = match get_nice(0) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("nice: cannot get niceness: {e}");
            return 125;
        }
    };
    let Some((prog, rest)) = cmd.split_first() else {
        println!("{cur}");
        return 0;
    };
    if let Err(e) = set_nice(0, (cur + adj).clamp(-20, 19)) {
        eprintln!("nice: cannot set niceness: {e}");
        return 125;
    }
    let e = std::process::Command::new(prog).args(rest).exec();
    eprintln!("nice: {prog}: {e}");
    if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// `schedps`: the scheduler's view of every process, from /proc/PID/sched.
fn schedps() -> i32 {
    let Some(pids) = proc_pids() else {
        return 1;
    };
    println!("  PID  NI PRI     RUNTIME    VRUNTIME  SWITCH  INVOL CMD");
    for pid in pids {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/sched")) else {
            continue;
        };
        let get = |name: &str| {
            text.lines()
                .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let comm = text
            .lines()
            .next()
            .and_then(|l| l.rsplit_once(" ("))
            .map(|(c, _)| c.to_string())
            .unwrap_or_default();
        let prio: i32 = get("prio").parse().unwrap_or(120);
        // Runtime and vruntime in ms with three decimals (the file has six).
        let ms = |s: String| match s.split_once('.') {
            Some((w, f)) => format!("{w}.{}", &f[..f.len().min(3)]),
            None => s,
        };
        println!(
            "{pid:>5} {:>3} {:>3} {:>11} {:>11} {:>7} {:>6} {comm}",
            prio - 120,
            prio - 100,
            ms(get("se.sum_exec_runtime")),
            ms(get("se.vruntime")),
            get("nr_switches"),
            get("nr_involuntary_switches"),
        );
    }
    0
}

fn zombie() -> i32 {
    // SAFETY: single-threaded program.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: leaves the child at once.
        unsafe { libc::_exit(0) };
    }
    println!("zombie: child {child} exits; the parent does not wait for it");
    std::thread::sleep(std::time::Duration::from_millis(100));
    let _ = std::io::stdout().flush();
    // SAFETY: single-threaded program.
    let _ = std::process::Command::new("ps")
        .args(["-o", "pid,ppid,stat,args"])
        .status();
    println!("zombie: parent exits without reaping {child}");
    0
}

fn forkbomb(limit: u32) -> i32 {
    let mut children = Vec::new();
    let mut why = "limit";
    while children.len() < limit as usize {
        // SAFETY: single-threaded program.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            loop {
                // SAFETY: pause just sleeps until killed.
                unsafe { libc::pause() };
            }
        }
        if pid < 0 {
            why = if std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) {
                "EAGAIN"
            } else {
                "error"
            };
            break;
        }
        children.push(pid);
    }
    println!("forkbomb: {} children ({why})", children.len());
    for &c in &children {
        // SAFETY: kill takes plain integers.
        unsafe { libc::kill(c, libc::SIGKILL) };
    }
    let mut reaped = 0;
    for &c in &children {
        let mut s = 0;
        // SAFETY: waiting for our own child.
        if unsafe { libc::waitpid(c, &mut s, 0) } == c {
            reaped += 1;
        }
    }
    println!("forkbomb: killed and reaped {reaped}");
    0
}
