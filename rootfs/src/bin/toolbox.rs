//! toolbox: the guest's small commands in one static executable, chosen by the name it runs as
//! (/bin/echo, /bin/ps, ... are symlinks to it) or by its first argument (`toolbox ps`, on the host).
//!
//! Commands: echo, cat, ls, true, false, sleep, kill, ps (from /proc: PID PPID STAT NI TIME CMD, where
//! TIME is user + system CPU time; `ps -s` shows the scheduler's view instead: PID NI PRI, CPU time,
//! vruntime and context switches in ms from /proc/PID/sched), `nice [-n N] CMD [ARGS]` (runs CMD with
//! its nice value raised by N, default 10; without CMD prints the current nice value),
//! `renice [-n] N [-p] PID...` (sets the nice value of running processes),
//! cpuinfo (OSXSAVE, AVX and XCR0 as user mode sees them),
//! poweroff (asks init: SIGUSR2, or `-f` calls reboot(2) directly), and the demos `zombie` (a child
//! exits unwaited: ps shows it as Z; the parent exits and init reaps it) and `forkbomb N` (forks until N
//! children or EAGAIN, then kills and reaps them all), and the measurement `getppid N` (N getppid calls:
//! the wall time of the cheapest system call).

use std::io::{Read, Write};

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
        "echo" => {
            println!("{}", rest.join(" "));
            0
        }
        "true" => 0,
        "false" => 1,
        "cat" => cat(&rest),
        "ls" => ls(&rest),
        "sleep" => {
            let secs: f64 = rest.first().and_then(|s| s.parse().ok()).unwrap_or(1.0);
            std::thread::sleep(std::time::Duration::from_secs_f64(secs));
            0
        }
        "kill" => kill(&rest),
        "ps" if rest.first().is_some_and(|a| a == "-s") => ps_sched(),
        "ps" => ps(),
        "nice" => nice(&rest),
        "renice" => renice(&rest),
        "poweroff" => poweroff(&rest),
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

fn cat(files: &[String]) -> i32 {
    let mut out = std::io::stdout().lock();
    let mut code = 0;
    let mut copy = |r: &mut dyn Read| {
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => {
                    if out.write_all(&buf[..n]).is_err() {
                        return false;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    };
    if files.is_empty() {
        copy(&mut std::io::stdin().lock());
    }
    for f in files {
        match std::fs::File::open(f) {
            Ok(mut file) => {
                if !copy(&mut file) {
                    code = 1;
                }
            }
            Err(e) => {
                eprintln!("cat: {f}: {e}");
                code = 1;
            }
        }
    }
    code
}

fn ls(dirs: &[String]) -> i32 {
    let dirs = if dirs.is_empty() {
        vec![".".to_string()]
    } else {
        dirs.to_vec()
    };
    let mut code = 0;
    for d in &dirs {
        match std::fs::read_dir(d) {
            Ok(rd) => {
                let mut names: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                for n in names {
                    println!("{n}");
                }
            }
            Err(e) => {
                eprintln!("ls: {d}: {e}");
                code = 1;
            }
        }
    }
    code
}

fn signal_number(s: &str) -> Option<i32> {
    let s = s.trim_start_matches('-');
    if let Ok(n) = s.parse() {
        return Some(n);
    }
    let s = s.trim_start_matches("SIG");
    Some(match s {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        _ => return None,
    })
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

fn kill(args: &[String]) -> i32 {
    let mut sig = libc::SIGTERM;
    let mut targets = args;
    if let Some(first) = args.first() {
        if first.starts_with('-') && first.len() > 1 && first != "-1" {
            match signal_number(first) {
                Some(s) => sig = s,
                None => {
                    eprintln!("kill: {first}: invalid signal");
                    return 1;
                }
            }
            targets = &args[1..];
        }
    }
    if targets.is_empty() {
        eprintln!("usage: kill [-SIGNAL] PID...");
        return 2;
    }
    let mut code = 0;
    for t in targets {
        let Ok(pid) = t.parse::<i32>() else {
            eprintln!("kill: {t}: not a pid");
            code = 1;
            continue;
        };
        // SAFETY: kill takes plain integers.
        if unsafe { libc::kill(pid, sig) } != 0 {
            eprintln!("kill: ({pid}): {}", std::io::Error::last_os_error());
            code = 1;
        }
    }
    code
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

fn ps() -> i32 {
    let Some(pids) = proc_pids() else {
        return 1;
    };
    println!("  PID  PPID STAT  NI     TIME CMD");
    for pid in pids {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // proc(5) numbering: state 3, ppid 4, utime 14, stime 15, nice 19.
        let field = |n: usize| f.get(n - 3).copied().unwrap_or("0");
        let ticks: u64 =
            field(14).parse::<u64>().unwrap_or(0) + field(15).parse::<u64>().unwrap_or(0);
        let secs = ticks / 100;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let state = field(3);
        let cmd = if state == "Z" {
            format!("[{comm}] <defunct>")
        } else if args.is_empty() {
            format!("[{comm}]")
        } else {
            args.join(" ")
        };
        println!(
            "{pid:>5} {:>5} {:<4} {:>3} {:>2}:{:02}:{:02} {cmd}",
            field(4),
            state,
            field(19),
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        );
    }
    0
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

fn renice(args: &[String]) -> i32 {
    let mut value = None;
    let mut pids = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-n" => value = it.next().and_then(|v| v.parse::<i32>().ok()),
            "-p" => {}
            v if value.is_none() => value = v.parse::<i32>().ok(),
            p => match p.parse::<u32>() {
                Ok(p) => pids.push(p),
                Err(_) => {
                    eprintln!("renice: bad pid: {p}");
                    return 1;
                }
            },
        }
    }
    let Some(value) = value.filter(|_| !pids.is_empty()) else {
        eprintln!("usage: renice [-n] PRIORITY [-p] PID...");
        return 1;
    };
    let mut code = 0;
    for pid in pids {
        let old = match get_nice(pid) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("renice: failed to get priority for {pid} (process ID): {e}");
                code = 1;
                continue;
            }
        };
        match set_nice(pid, value) {
            Ok(()) => println!(
                "{pid} (process ID) old priority {old}, new priority {}",
                get_nice(pid).unwrap_or(value)
            ),
            Err(e) => {
                eprintln!("renice: failed to set priority for {pid} (process ID): {e}");
                code = 1;
            }
        }
    }
    code
}

/// `ps -s`: the scheduler's view of every process, from /proc/PID/sched.
fn ps_sched() -> i32 {
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

fn poweroff(args: &[String]) -> i32 {
    if args.iter().any(|a| a == "-f") {
        // SAFETY: reboot(2) with the documented magic numbers; no argument for POWER_OFF.
        unsafe { libc::reboot(libc::RB_POWER_OFF) };
        eprintln!("poweroff: {}", std::io::Error::last_os_error());
        return 1;
    }
    // SAFETY: kill takes plain integers: SIGUSR2 asks init to power off (as busybox init).
    if unsafe { libc::kill(1, libc::SIGUSR2) } != 0 {
        eprintln!("poweroff: {}", std::io::Error::last_os_error());
        return 1;
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
    let ps_pid = unsafe { libc::fork() };
    if ps_pid == 0 {
        std::process::exit(ps());
    }
    let mut s = 0;
    // SAFETY: waiting for the ps child only.
    unsafe { libc::waitpid(ps_pid, &mut s, 0) };
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
