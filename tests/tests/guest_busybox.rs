//! Debian's busybox (the `busybox-static` package, copied into the rootfs by scripts/build-rootfs.sh)
//! on the project's guest kernel, checked end to end.
//!
//! The differential test runs `rootfs/files/usr/share/bbtest/diff.sh` (background jobs and `wait`,
//! exit statuses, pipes, here-documents, redirections, `find`, `tar c | tar t`, `md5sum`, `sort | uniq
//! -c`, awk, functions and loops) with the host's busybox (the same Debian package) and in the guest,
//! and requires the same output; `agree.sh` likewise checks that `free`, `top`, `ps`, `df` and
//! `uptime` show what /proc and statfs say. The other tests check what has no host twin: the system
//! tools' fields, an interactive ash session on the console typed with delays (line editing with
//! the cursor keys, kill keys, history and Tab completion, the terminal's names, Ctrl-C, background
//! jobs, Ctrl-Z, `bg` and `fg`), and the guest's wall clock against the host's. C programs (static
//! glibc and musl) must print what they print on the host: `rootfs/c/epoll.c` (epoll on a pipe, the
//! console and sockets), `fcntllock.c` and `flocks.c` (locks), `sysagree.c` (sysinfo, /proc, /dev
//! and getrandom agreeing with each other), `procsig.c` (/proc/PID/status's signal sets and VmStk).
//! Without the images the tests skip (and fail when `CI` is set).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tests::{
    assert_same_lines, assert_same_lines_with, host_output, require_kvm, wait_until, GuestImages,
    Netns, Vm, TAP,
};

const T: Duration = Duration::from_secs(120);

/// Boots with init running `args` (`init -- run ARGS`) and returns the console output.
fn boot_running(args: &str) -> Option<String> {
    let out = GuestImages::for_vm()?.run_program(&[], args, T);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    Some(out.stdout.replace('\r', ""))
}

/// The lines a script printed: without the kernel's log lines (`[ time ] ...`) and init's.
fn script_lines(console: &str) -> Vec<&str> {
    console
        .lines()
        .filter(|l| !l.starts_with('[') && !l.starts_with("init: "))
        .collect()
}

/// The part of `lines` from the line `first` to the line `last`, both included.
fn between<'a>(lines: &[&'a str], first: &str, last: &str) -> Vec<&'a str> {
    let start = lines.iter().position(|l| *l == first);
    let end = lines.iter().rposition(|l| *l == last);
    match (start, end) {
        (Some(s), Some(e)) if s <= e => lines[s..=e].to_vec(),
        _ => Vec::new(),
    }
}

fn host_busybox() -> &'static str {
    "/bin/busybox"
}

/// Runs `rootfs/files/usr/share/bbtest/SCRIPT` with the host's busybox and in the guest (`$1` the
/// root of the tree: build/rootfs-stage on the host) and requires the same lines from `first` to
/// `== done`; returns them.
fn script_matches_the_host(script: &str, first: &str) -> Option<Vec<String>> {
    let path = format!("/usr/share/bbtest/{script}");
    let console = boot_running(&format!("/bin/busybox sh {path} /"))?;
    let images = GuestImages::find().unwrap();
    let host = tests::host_command(host_busybox())
        .arg("sh")
        .arg(images.stage.join(&path[1..]))
        .arg(&images.stage)
        .output()
        .expect("the host's busybox (scripts/install-deps.sh installs busybox-static)");
    let host = String::from_utf8_lossy(&host.stdout).into_owned();
    let want = between(&host.lines().collect::<Vec<_>>(), first, "== done");
    assert!(want.len() > 20, "host output:\n{host}");
    let got = between(&script_lines(&console), first, "== done");
    assert_same_lines(&got, &want, &console);
    assert!(!console.contains("not implemented"), "{console}");
    Some(got.into_iter().map(str::to_string).collect())
}

#[test]
fn busybox_scripts_print_what_they_print_on_the_host() {
    let Some(lines) = script_matches_the_host("diff.sh", "== sleep in the background, wait") else {
        return;
    };
    assert!(lines.len() > 40, "{lines:?}");
}

/// `agree.sh`: free, top, ps, df and uptime show what /proc and statfs say, on both kernels.
#[test]
fn free_top_ps_df_and_uptime_agree_with_proc_as_on_the_host() {
    let Some(lines) = script_matches_the_host("agree.sh", "== free") else {
        return;
    };
    // Every check passed (the host's output is the same, so this is the script's own check).
    let checks: Vec<&String> = lines.iter().filter(|l| l.contains(": ")).collect();
    assert!(checks.len() >= 30, "{lines:?}");
    assert!(checks.iter().all(|l| l.ends_with(": ok")), "{lines:?}");
}

fn numbers_after(text: &str, prefix: &str) -> Vec<u64> {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"));
    line.trim_start()[prefix.len()..]
        .split_whitespace()
        .map_while(|w| w.parse().ok())
        .collect()
}

#[test]
fn free_ps_top_and_uptime_show_sane_fields() {
    let Some(console) = boot_running("/bin/busybox sh /usr/share/bbtest/tools.sh") else {
        return;
    };
    // free: total = used + free + buff/cache (kB, the page cache holds what the script read),
    // within the guest's 128 MiB, no swap.
    let mem = numbers_after(&console, "Mem:");
    assert!(mem.len() >= 5, "{console}");
    let (total, used, free, cache) = (mem[0], mem[1], mem[2], mem[4]);
    assert!((64 * 1024..=128 * 1024).contains(&total), "{console}");
    assert_eq!(total, used + free + cache, "{console}");
    assert!(used > 0 && free > total / 2, "{console}");
    assert_eq!(numbers_after(&console, "Swap:"), vec![0, 0, 0], "{console}");

    // ps: init, the script's shell and ps itself, with the user's name from /etc/passwd.
    let ps = between(&script_lines(&console), "== ps", "== top");
    assert!(
        ps.iter()
            .any(|l| l.contains("PID") && l.contains("COMMAND")),
        "{console}"
    );
    assert!(
        ps.iter()
            .any(|l| l.trim_start().starts_with("1 root") && l.contains("/sbin/init")),
        "{console}"
    );
    assert!(
        ps.iter()
            .any(|l| l.contains("root") && l.contains("/usr/share/bbtest/tools.sh")),
        "{console}"
    );

    // top -n 1 -b: the summary lines from /proc/meminfo, /proc/stat and /proc/loadavg, then the tasks.
    let top = between(&script_lines(&console), "== top", "== uptime");
    let mem_line = top
        .iter()
        .find(|l| l.starts_with("Mem: "))
        .unwrap_or_else(|| panic!("{console}"));
    assert!(
        mem_line.contains("used") && mem_line.contains("free"),
        "{console}"
    );
    let cpu_line = top
        .iter()
        .find(|l| l.starts_with("CPU:"))
        .unwrap_or_else(|| panic!("{console}"));
    assert!(cpu_line.contains("% idle"), "{console}");
    let load = top
        .iter()
        .find(|l| l.starts_with("Load average: "))
        .unwrap_or_else(|| panic!("{console}"));
    // "Load average: 0.00 0.00 0.00 1/3 12": three averages, running/total tasks, the last pid.
    let fields: Vec<&str> = load["Load average: ".len()..].split_whitespace().collect();
    assert_eq!(fields.len(), 5, "{console}");
    for f in &fields[..3] {
        let v: f64 = f.parse().unwrap();
        assert!((0.0..10.0).contains(&v), "{console}");
    }
    assert!(
        top.iter()
            .any(|l| l.contains("PID") && l.contains("COMMAND")),
        "{console}"
    );
    assert!(top.iter().any(|l| l.contains("top -n 1 -b")), "{console}");

    // uptime: the guest's clock and a load average.
    let up = between(&script_lines(&console), "== uptime", "== fd");
    // /proc/self/fd lists ls's own descriptors (0-2 and the directory it reads); the links name the
    // console, the executable and the working directory.
    let fd = between(&script_lines(&console), "== fd", "== exe");
    assert!(fd.iter().any(|l| l.starts_with("0 1 2 3")), "{console}");
    assert_eq!(fd.get(2), Some(&"/dev/ttyS0"), "{console}");
    // busybox runs readlink in the shell's process (/bin/busybox) or execs its link.
    assert!(
        fd.get(3)
            .is_some_and(|l| *l == "/bin/busybox" || l.ends_with("/readlink")),
        "{console}"
    );
    assert_eq!(fd.get(4), Some(&"/"), "{console}");
    assert!(
        up.iter()
            .any(|l| l.contains(" up ") && l.contains("load average:")),
        "{console}"
    );
    // /proc/PID/exe and cwd: the canonical paths, as Linux gives them.
    let exe = between(&script_lines(&console), "== exe", "== dev");
    assert_eq!(
        exe,
        [
            "== exe",
            "/bin/busybox",
            "/bin/busybox",
            "/bin/busybox",
            "/usr/share/bbtest",
            "== dev"
        ],
        "{console}"
    );
    // ls /dev: the device nodes, each of which exists; character and block devices.
    let dev = between(&script_lines(&console), "== dev", "== clock");
    let names: Vec<&str> = dev
        .get(1)
        .map_or(vec![], |l| l.split_whitespace().collect());
    for want in [
        "console", "full", "hvc0", "null", "random", "tty", "ttyS0", "urandom", "vda", "zero",
    ] {
        assert!(names.contains(&want), "{want} not in ls /dev: {console}");
    }
    assert!(!dev.iter().any(|l| l.starts_with("missing")), "{console}");
    assert_eq!(dev.get(2..5), Some(&["c", "c", "b"][..]), "{console}");
    // date -s moved the wall clock (clock_settime), and it runs on from there.
    let clock = between(&script_lines(&console), "== clock", "== done");
    let set: u64 = clock.get(1).and_then(|l| l.parse().ok()).unwrap_or(0);
    assert!((2_000_000_000..2_000_000_003).contains(&set), "{console}");
    assert!(!console.contains("not implemented"), "{console}");
}

#[test]
fn the_guests_date_is_the_hosts() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let vm = Vm::spawn(&images.run_args(&[], "/bin/busybox date +guest-time=%s"));
    let mut host_now = 0;
    let mut guest = None;
    assert!(
        wait_until(T, || {
            host_now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            // Complete lines only: a line still being printed would parse as a prefix of the number.
            let out = vm.stdout();
            let complete = &out[..out.rfind('\n').map_or(0, |i| i + 1)];
            guest = complete.lines().find_map(|l| {
                l.trim()
                    .strip_prefix("guest-time=")
                    .and_then(|t| t.parse::<u64>().ok())
            });
            guest.is_some()
        }),
        "{}",
        vm.stdout()
    );
    let guest = guest.unwrap();
    // Seen within 10 ms of being printed; whole seconds on both sides.
    assert!(
        guest.abs_diff(host_now) <= 1,
        "guest {guest}, host {host_now}\n{}",
        vm.stdout()
    );
    let out = vm.wait(T);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    assert!(
        out.stdout.contains("clock: wall clock from kvm-clock"),
        "{}",
        out.stdout
    );
}

/// The same on QEMU's microvm machine under TCG (scripts/run-qemu.sh), where the wall clock comes from
/// its CMOS RTC: no KVM leaves, so no kvm-clock.
#[test]
fn the_guests_date_on_qemu_microvm_is_the_hosts() {
    let Some(images) = GuestImages::find() else {
        return;
    };
    let Some(out) = images.run_on_qemu(&["--", "run", "/bin/busybox", "date", "+guest-time=%s"])
    else {
        return;
    };
    let host_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let stdout = out.stdout.replace('\r', "");
    assert!(
        stdout.contains("clock: wall clock from cmos-rtc"),
        "{stdout}"
    );
    let guest: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("guest-time=").and_then(|t| t.parse().ok()))
        .unwrap_or_else(|| panic!("{stdout}"));
    // The host's time is read after QEMU exited (well under a second after the guest printed).
    assert!(
        guest <= host_now && host_now - guest <= 2,
        "guest {guest}, host {host_now}\n{stdout}"
    );
}

/// Types `bytes` and waits until the console shows `text` after what it showed before; returns
/// the console from there on.
fn type_and_wait(vm: &mut Vm, bytes: &[u8], text: &str) -> String {
    let before = vm.stdout().len();
    vm.send(bytes);
    assert!(
        wait_until(T, || vm.stdout()[before..].contains(text)),
        "typed {:?}, waited for {text:?}; console:\n{}",
        String::from_utf8_lossy(bytes),
        vm.stdout()
    );
    vm.stdout()[before..].to_string()
}

/// An ash session typed line by line. Every line ends with `echo @N` for a fresh N, typed as
/// `echo @$((N))` so its echo on the console differs from its output: once `@N` is shown, ash has
/// run the whole line and everything it printed is there. (Waiting for a prompt or for a word the
/// command prints is not enough: ash prints job reports and prompts of earlier lines late, so such
/// a wait can be met by the previous command's output, and the next keys then race ahead of it.)
struct Session {
    vm: Vm,
    n: u32,
}

impl Session {
    /// Runs `line` and returns what the console showed from typing it to its marker.
    fn run(&mut self, line: &str) -> String {
        self.n += 1;
        let mark = format!("@{}", 1000 + self.n);
        let sep = if line.ends_with('&') { " " } else { "; " };
        let out = type_and_wait(
            &mut self.vm,
            format!("{line}{sep}echo @$((1000 + {}))\r", self.n).as_bytes(),
            &mark,
        );
        out[..out.find(&mark).unwrap()].replace('\r', "")
    }

    /// Starts `cmd` as the foreground job: an ash child that runs `setup`, prints a marker (so it
    /// has the terminal: ash gives the job the terminal before it execs it) and then runs `cmd`.
    /// Returns when the marker is shown, so Ctrl-C and Ctrl-Z typed next reach the job, and find
    /// what `setup` did done (a `trap` set after the marker could come too late: a Ctrl-Z typed
    /// before it stops the job with SIGCONT still at its default, and `bg`'s SIGCONT then runs no
    /// trap, as on Linux).
    fn foreground(&mut self, setup: &str, cmd: &str) {
        self.n += 1;
        let mark = format!("go{}", 1000 + self.n);
        let line = format!("ash -c '{setup}; echo go$((1000 + {})); {cmd}'\r", self.n);
        type_and_wait(&mut self.vm, line.as_bytes(), &mark);
    }

    /// Waits until the console has shown `text` (anywhere in the session).
    fn shown(&self, text: &str) {
        assert!(
            wait_until(T, || self.vm.stdout().contains(text)),
            "waited for {text:?}; console:\n{}",
            self.vm.stdout()
        );
    }
}

#[test]
fn an_interactive_ash_session_on_the_console() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let mut vm = Vm::spawn(&images.run_args(&[], "/bin/ash"));
    vm.wait_for_output("/ # ", T);
    // A command, typed one key at a time as a person would (ash reads the console in raw mode and
    // echoes itself; a poll on the console must wake for each key).
    let before = vm.stdout().len();
    for &k in b"echo hello $((6 * 7))" {
        vm.send(&[k]);
        std::thread::sleep(Duration::from_millis(20));
    }
    type_and_wait(&mut vm, b"\r", "hello 42\n");
    assert!(
        vm.stdout()[before..].contains("echo hello $((6 * 7))"),
        "{}",
        vm.stdout()
    );
    let mut sh = Session { vm, n: 0 };
    // Line editing: backspace (DEL) removes the typo.
    let out = sh.run("echo tpyo\x7f\x7f\x7fypo fixed");
    assert!(out.contains("typo fixed\n"), "{out}");
    // The cursor keys: two to the left, an insertion, Ctrl-E to the end (where the marker goes).
    let out = sh.run("echo abc\x1b[D\x1b[DX\x05");
    assert!(out.lines().any(|l| l == "aXbc"), "{out}");
    // Ctrl-A to the start of the line, Ctrl-K kills to its end: nothing of it runs.
    let out = sh.run("echo killed\x01\x0becho after-kill");
    assert!(out.lines().any(|l| l == "after-kill"), "{out}");
    assert!(!out.lines().any(|l| l == "killed"), "{out}");
    // Ctrl-U kills what is before the cursor, Ctrl-W the word before it.
    let out = sh.run("echo garbage\x15echo kept dropped\x17");
    assert!(out.lines().any(|l| l == "kept"), "{out}");
    assert!(
        !out.lines()
            .any(|l| l.contains("garbage") && !l.contains("echo")),
        "{out}"
    );
    // History: the up arrow brings back the previous line (with its marker), which runs again.
    sh.run("echo from-history-$((40 + 2))");
    let out = sh.run("\x1b[A");
    assert!(out.lines().any(|l| l == "from-history-42"), "{out}");
    // Tab completes a file name from the directory's entries.
    let out = sh.run("head -1 /usr/share/bbtest/agr\t");
    assert!(
        out.contains("system tools show what the kernel reports"),
        "{out}"
    );
    // The terminal: its name, /dev/tty (the controlling terminal) and /dev/console write to it,
    // its size.
    let out = sh.run("tty; echo via-tty > /dev/tty; echo via-console > /dev/console; stty size");
    for want in ["/dev/ttyS0", "via-tty", "via-console", "24 80"] {
        assert!(out.lines().any(|l| l == want), "{want}: {out}");
    }
    // Ctrl-C ends the foreground job; $? is 128 + SIGINT.
    sh.foreground(":", "exec sleep 100");
    type_and_wait(&mut sh.vm, b"\x03", "^C");
    let out = sh.run("echo status=$?");
    assert!(out.contains("status=130\n"), "{out}");
    // A background job and `jobs`.
    sh.run("sleep 60 &");
    let out = sh.run("jobs");
    assert!(
        out.lines()
            .any(|l| l.contains("Running") && l.contains("sleep 60")),
        "{out}"
    );
    // Ctrl-Z stops the foreground job (a shell that counts the SIGCONTs it gets: bg and fg send
    // one each); jobs lists it Stopped.
    sh.foreground(
        "trap \"c=\\$((c + 1)); echo cont\\$c\" CONT",
        "while :; do sleep 1; done",
    );
    type_and_wait(&mut sh.vm, b"\x1a", "Stopped");
    let out = sh.run("jobs");
    assert!(
        out.lines()
            .any(|l| l.contains("Stopped") && l.contains("trap")),
        "{out}"
    );
    // bg continues it in the background (SIGCONT): jobs reports it Running, as ash learnt from bg
    // itself and from wait4 (which must not report the old stop again).
    let out = sh.run("bg");
    assert!(out.contains("trap"), "{out}");
    if !wait_until(T, || sh.vm.stdout().contains("cont1")) {
        let ps = sh.run("ps -o pid,ppid,pgid,stat,comm");
        panic!("bg did not continue the job (no cont1); the guest's processes:\n{ps}");
    }
    let out = sh.run("jobs");
    assert!(
        out.lines()
            .any(|l| l.contains("Running") && l.contains("trap")),
        "{out}"
    );
    // fg brings it back to the foreground (terminal, then SIGCONT): once it says so, Ctrl-C ends it.
    sh.vm.send(b"fg\r");
    sh.shown("cont2");
    type_and_wait(&mut sh.vm, b"\x03", "^C");
    let out = sh.run("echo fg_status=$?");
    assert!(out.contains("fg_status=130\n"), "{out}");
    // The background job is still there: kill it by job number; then leave: init powers off.
    // (ash reports the job's end before its next prompt, which may come after the marker.)
    type_and_wait(&mut sh.vm, b"kill %1; wait\r", "Terminated");
    sh.vm.send(b"exit\r");
    let out = sh.vm.wait(T);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
}

/// Runs `rootfs/c/epoll.c` built with `libc` on the host (stdin a pipe nothing is written to, stdout a
/// pipe, as the guest's console is a terminal nobody types on) and in the guest with a network device
/// (in a network namespace: its sockets need the interface), and compares the lines.
fn epoll_matches_the_host(libc: &str) {
    if !require_kvm() {
        return;
    }
    let Some(images) = GuestImages::find() else {
        return;
    };
    let prog = format!("epoll-{libc}");
    let mut child = tests::host_command(images.host_program(&format!("bin/{prog}")))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // stdin stays open (a writer that never writes, as a terminal nobody types on) until the end.
    let stdin = child.stdin.take();
    let mut host = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut host).unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success(), "{host}");
    assert!(host.contains("epoll: done"), "{host}");
    let Some(ns) = Netns::new(&format!("ep{libc}")) else {
        return;
    };
    let vm = ns.spawn(&images.run_args(&["--net", &format!("tap={TAP}")], &format!("/bin/{prog}")));
    let out = vm.wait(T);
    let lines = |s: &str| -> Vec<String> {
        s.replace('\r', "")
            .lines()
            .filter(|l| l.starts_with("epoll: "))
            .map(str::to_string)
            .collect()
    };
    assert_same_lines(&lines(&out.stdout), &lines(&host), &out.stdout);
    assert!(!out.stdout.contains("not implemented"), "{}", out.stdout);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
}

#[test]
fn epoll_on_a_pipe_the_console_and_sockets_matches_the_host_glibc() {
    epoll_matches_the_host("glibc");
}

#[test]
fn epoll_on_a_pipe_the_console_and_sockets_matches_the_host_musl() {
    epoll_matches_the_host("musl");
}

/// Runs `rootfs/c/NAME.c` built with `libc` on the host and in the guest and compares its lines
/// (`NAME: ...`, ending with `NAME: done`).
fn c_program_matches_the_host(name: &str, libc: &str) {
    let prog = format!("{name}-{libc}");
    // In a session of its own on both kernels (no controlling terminal), started by busybox's setsid.
    let Some(console) = boot_running(&format!("/bin/busybox setsid /bin/{prog}")) else {
        return;
    };
    let images = GuestImages::find().unwrap();
    let mut host = tests::host_command("setsid");
    host.arg(images.host_program(&format!("bin/{prog}")));
    let host = host_output(&mut host, &format!("{name}: done"));
    assert_same_lines_with(&format!("{name}: "), &console, &host);
}

#[test]
fn fcntl_record_locks_match_the_host_glibc() {
    c_program_matches_the_host("fcntllock", "glibc");
}

#[test]
fn fcntl_record_locks_match_the_host_musl() {
    c_program_matches_the_host("fcntllock", "musl");
}

/// `rootfs/c/flocks.c`: flock(2), open-file-description locks and EDEADLK.
#[test]
fn flock_ofd_locks_and_deadlocks_match_the_host_glibc() {
    c_program_matches_the_host("flocks", "glibc");
}

#[test]
fn flock_ofd_locks_and_deadlocks_match_the_host_musl() {
    c_program_matches_the_host("flocks", "musl");
}

/// `rootfs/c/sysagree.c`: sysinfo, /proc (meminfo, stat, uptime, loadavg, version, filesystems,
/// cpuinfo, self/{stat,status,statm,comm,cmdline,environ,exe,cwd,fd}), the /dev nodes and getrandom
/// agree with each other and with the system calls as on the host.
#[test]
fn sysinfo_proc_dev_and_getrandom_agree_as_on_the_host_glibc() {
    c_program_matches_the_host("sysagree", "glibc");
}

#[test]
fn sysinfo_proc_dev_and_getrandom_agree_as_on_the_host_musl() {
    c_program_matches_the_host("sysagree", "musl");
}

/// `rootfs/c/procsig.c`: /proc/self/status's SigQ, SigPnd, ShdPnd (kill vs tgkill), SigBlk, SigIgn,
/// SigCgt and VmStk (the `[stack]` area of maps) as on the host; then with two threads blocking
/// SIGUSR1, kill and tgkill seen in each thread's /proc/self/task/TID/status and sigpending, and the
/// group's signal taken by the thread that unblocks it, or by the one waiting for it in sigwait.
#[test]
fn proc_status_signal_sets_and_stack_match_the_host_glibc() {
    c_program_matches_the_host("procsig", "glibc");
}

#[test]
fn proc_status_signal_sets_and_stack_match_the_host_musl() {
    c_program_matches_the_host("procsig", "musl");
}

/// `rootfs/c/waitany.c`: poll, select, pselect6 and ppoll woken by pipes, a child's exit and
/// timeouts, with signal masks; FIONREAD, readv/writev, dup3, sendfile, pread, clock_settime's
/// errors.
#[test]
fn poll_select_and_file_calls_match_the_host_glibc() {
    c_program_matches_the_host("waitany", "glibc");
}

#[test]
fn poll_select_and_file_calls_match_the_host_musl() {
    c_program_matches_the_host("waitany", "musl");
}
