//! Processes on the project's guest kernel (build/guest-kernel + build/rootfs.qcow2 under microvm):
//! fork/exec/exit/wait, signals, reparenting, pipes and the scheduler, checked end to end.
//!
//! The differential test runs rootfs's `proctest` on the host and in the guest (as a child of init:
//! `init ... run /bin/proctest`) and requires the same output: that is how Linux behaviour is checked.
//! The artifacts come from `scripts/build-guest-kernel.sh` and `scripts/build-rootfs.sh`; without them
//! the tests skip (and fail when `CI` is set).

use std::time::Duration;

use tests::{
    assert_same_lines, assert_same_lines_with, host_output, lines_with, power_off_counts, run,
    wait_until, GuestImages, Output, Vm, SHELL_PROMPT,
};

const T: Duration = Duration::from_secs(120);

/// Boots with init's full mode (`init -- rc`: /etc/rc, then a shell on the console).
fn boot_interactive() -> Option<Vm> {
    let images = GuestImages::for_vm()?;
    Some(Vm::spawn(&images.shell_args(&[])))
}

/// Boots with init running `args` as its child (`init -- run ARGS`).
fn boot_running(args: &str) -> Option<Output> {
    boot_running_for(args, T)
}

fn boot_running_for(args: &str, timeout: Duration) -> Option<Output> {
    Some(GuestImages::for_vm()?.run_program(&[], args, timeout))
}

fn proctest_lines(s: &str) -> Vec<&str> {
    lines_with(s, "proctest: ")
}

#[test]
fn process_semantics_match_the_host() {
    let Some(out) = boot_running("/bin/proctest") else {
        return;
    };
    let bin = GuestImages::find().unwrap().host_program("bin/proctest");
    let host = host_output(&mut tests::host_command(&bin), "proctest: done");
    assert_same_lines_with("proctest: ", &out.stdout, &host);
    // The segfaulting child is reported by the kernel, as Linux logs it.
    assert!(out.stdout.contains("proctest["), "{}", out.stdout);
    out.assert_no_missing_syscall();
    out.assert_ran_to_the_end("/bin/proctest");
}

#[test]
fn orphan_is_adopted_and_reaped_by_init() {
    let Some(out) = boot_running("/bin/proctest orphan") else {
        return;
    };
    assert!(
        out.stdout
            .contains("proctest: orphan: my parent exited, my parent is now 1"),
        "{}",
        out.stdout
    );
    let reaped = out
        .stdout
        .lines()
        .find(|l| l.starts_with("init: reaped PID "))
        .unwrap_or_else(|| panic!("init did not log the orphan:\n{}", out.stdout));
    assert!(reaped.ends_with("(exit 0)"), "{reaped}");
    assert_eq!(out.code, Some(0));
}

#[test]
fn fork_exit_wait_cycles_leak_neither_memory_nor_pids() {
    // forkloop: a tiny static program (a few pages), so the 10,000 cycles cost mostly the kernel's own
    // fork, exit and wait4 paths (about 5 ms each here, kernel mode being emulated).
    let Some(few) = boot_running("/bin/forkloop 5") else {
        return;
    };
    let Some(many) = boot_running_for("/bin/forkloop 10000", Duration::from_secs(900)) else {
        return;
    };
    assert!(
        few.stdout
            .contains("forkloop: 5 fork/exit/wait cycles, 0 failed"),
        "{}",
        few.stdout
    );
    assert!(
        many.stdout
            .contains("forkloop: 10000 fork/exit/wait cycles, 0 failed"),
        "{}",
        many.stdout
    );
    let (procs_few, frames_few, heap_few) = power_off_counts(&few.stdout);
    let (procs_many, frames_many, heap_many) = power_off_counts(&many.stdout);
    // Only init is left (no pid leaked: every child was reaped and its table entry freed); every frame
    // a child used (copy-on-write copies, page tables) and its kernel heap (PCB, kernel stack) came back.
    assert_eq!((procs_few, procs_many), (1, 1));
    assert!(
        frames_many <= frames_few + 1,
        "frames used: {frames_few} after 5 cycles, {frames_many} after 10000"
    );
    assert_eq!(
        heap_many, heap_few,
        "kernel heap used after 5 cycles and after 10000"
    );
    assert_eq!((few.code, many.code), (Some(0), Some(0)));
}

/// Sends `key` until `what` appears after the current output: a key typed before the shell hands the
/// job the terminal goes to the shell, which ignores it.
fn press_until(vm: &mut Vm, key: &[u8], what: &str) {
    let before = vm.stdout().len();
    press_until_since(vm, before, key, what);
}

/// [`press_until`], looking at the output since `before` (what came in between counts).
fn press_until_since(vm: &mut Vm, before: usize, key: &[u8], what: &str) {
    let seen = wait_until(T, || {
        vm.send(key);
        std::thread::sleep(Duration::from_millis(300));
        vm.stdout()[before..].contains(what)
    });
    assert!(seen, "no {what:?} after sending {key:?}:\n{}", vm.stdout());
}

/// Types `line` and waits until `what` appears in the output that follows.
fn type_and_expect(vm: &mut Vm, line: &[u8], what: &str) {
    let before = vm.stdout().len();
    vm.send(line);
    let seen = wait_until(T, || vm.stdout()[before..].contains(what));
    assert!(seen, "no {what:?} after typing {line:?}:\n{}", vm.stdout());
}

/// Waits until a line shown after byte `from` has all of `words` (ash pads its job reports, as
/// `[1]+  Stopped                    sleep 100`).
fn wait_line_with(vm: &Vm, from: usize, words: &[&str]) {
    let seen = wait_until(T, || {
        vm.stdout()[from..]
            .lines()
            .any(|l| words.iter().all(|w| l.contains(w)))
    });
    assert!(seen, "no line with {words:?}:\n{}", vm.stdout());
}

#[test]
fn job_control_on_the_console() {
    let Some(mut vm) = boot_interactive() else {
        return;
    };
    vm.wait_for_output("init: starting /bin/sh on the console", T);
    vm.wait_for_output(SHELL_PROMPT, T);

    // Ctrl-Z stops the foreground job (SIGTSTP to its group); the shell reports it and $? is 128+20.
    // The job is started in the background and brought to the foreground with fg: Ctrl-Z typed
    // while the shell has not read the command line yet would discard that line (as on Linux).
    type_and_expect(&mut vm, b"sleep 100 &\n", SHELL_PROMPT);
    type_and_expect(&mut vm, b"fg\n", "sleep 100\n");
    let before = vm.stdout().len();
    press_until(&mut vm, b"\x1a", "Stopped");
    wait_line_with(&vm, before, &["[1]+", "Stopped", "sleep 100"]);
    type_and_expect(&mut vm, b"echo stopped=$?\n", "stopped=148\n");
    let before = vm.stdout().len();
    type_and_expect(&mut vm, b"jobs; echo jobs\"\"-listed\n", "jobs-listed\n");
    wait_line_with(&vm, before, &["[1]", "Stopped", "sleep 100"]);
    // /proc shows it stopped (ps STAT T).
    let before = vm.stdout().len();
    type_and_expect(&mut vm, b"ps -o pid,stat,args | cat\n", SHELL_PROMPT);
    wait_line_with(&vm, before, &[" T ", "sleep 100"]);

    // bg continues it in the background (SIGCONT to the group), fg brings it back to the terminal,
    // where Ctrl-C interrupts it.
    type_and_expect(&mut vm, b"bg\n", "[1] sleep 100\n");
    let before = vm.stdout().len();
    type_and_expect(&mut vm, b"jobs; echo jobs\"\"-listed\n", "jobs-listed\n");
    wait_line_with(&vm, before, &["[1]", "Running", "sleep 100"]);
    type_and_expect(&mut vm, b"fg %1\n", "sleep 100\n");
    press_until(&mut vm, b"\x03", SHELL_PROMPT);
    type_and_expect(&mut vm, b"echo interrupted=$?\n", "interrupted=130\n");

    // kill %1 on a stopped job: the SIGTERM stays pending while it is stopped (as on Linux: ash
    // sends no SIGCONT with it), jobs still lists it Stopped; bg continues it and it dies of it.
    type_and_expect(&mut vm, b"sleep 100 &\n", SHELL_PROMPT);
    type_and_expect(&mut vm, b"fg\n", "sleep 100\n");
    press_until(&mut vm, b"\x1a", "Stopped");
    type_and_expect(&mut vm, b"kill %1; echo kill=$?\n", "kill=0\n");
    let before = vm.stdout().len();
    type_and_expect(&mut vm, b"jobs; echo jobs\"\"-listed\n", "jobs-listed\n");
    wait_line_with(&vm, before, &["[1]", "Stopped", "sleep 100"]);
    let before = vm.stdout().len();
    type_and_expect(&mut vm, b"bg\n", "[1] sleep 100\n");
    // The shell reports the job at a prompt after it died.
    press_until_since(&mut vm, before, b"\n", "Terminated");
    wait_line_with(&vm, before, &["[1]", "Terminated", "sleep 100"]);
    let before = vm.stdout().len();
    type_and_expect(&mut vm, b"jobs; echo jobs=$?\n", "jobs=0\n");
    assert!(
        !vm.stdout()[before..].contains("[1]"),
        "jobs still lists a job:\n{}",
        vm.stdout()
    );

    // A background job reading the terminal gets SIGTTIN, which stops it.
    let before = vm.stdout().len();
    type_and_expect(&mut vm, b"cat &\n", SHELL_PROMPT);
    press_until_since(&mut vm, before, b"\n", "Stopped");
    wait_line_with(&vm, before, &["[1]", "Stopped", "cat"]);
    // The shell may report the killed job right after the command or only at a later prompt.
    let before = vm.stdout().len();
    type_and_expect(&mut vm, b"kill -9 %1\n", SHELL_PROMPT);
    press_until_since(&mut vm, before, b"\n", "Killed");
    wait_line_with(&vm, before, &["[1]", "Killed", "cat"]);
    type_and_expect(&mut vm, b"echo still=alive\n", "still=alive\n");
}

/// SIGTTOU (`proctest ttou`): a background group writing with TOSTOP, or changing the terminal's
/// settings or foreground group, is signalled (EINTR with a handler, stopped at the default) unless it
/// blocks or ignores SIGTTOU; an orphaned group gets EIO (ENOTTY for tcsetpgrp). The guest's console
/// against a pseudo-terminal on the host (`script`, from util-linux/bsdutils).
#[test]
fn sigttou_matches_the_host() {
    let Some(guest) = proctest_on_terminals(
        "ttou",
        &[
            "proctest: ttou: child exit 0",
            "write with a handler: (-1, 4)",
        ],
    ) else {
        return;
    };
    assert!(!guest.contains("must not appear"), "{guest}");
}

/// Controlling terminals (`proctest ctty`): a new session has none (/dev/tty ENXIO, TIOCGPGRP and
/// TIOCGSID ENOTTY, no job control); TIOCSCTTY takes the terminal (EPERM while another session has
/// it, unless stolen with arg 1 as root); TIOCNOTTY and the session leader's exit hang up the
/// foreground group. The guest's console against a pseudo-terminal on the host (`script`).
#[test]
fn controlling_terminal_matches_the_host() {
    proctest_on_terminals("ctty", &["proctest: ctty: leader exit 0"]);
}

/// Init's terminal, as Linux sets it up: the kernel opens /dev/console for PID 1 (its descriptors
/// read as /dev/console) and opening /dev/console never makes a controlling terminal, so init has
/// none: /proc/1/stat's tty_nr is 0 and tpgid -1 (proc(5): no controlling terminal). The host's
/// PID 1 is not comparable (systemd or a container's init, set up by their own rules), so the values
/// are asserted as Linux documents them. The program init runs is in a session on the console's
/// own device, named by /proc/consoles (Linux's format), led by init's child: descriptors on
/// /dev/ttyS0, tty_nr 4:64 (1088), its own group in the foreground, so job control works as before.
#[test]
fn init_has_no_controlling_terminal_and_its_descriptors_are_dev_console() {
    let Some(out) = boot_running("/bin/busybox sh /usr/share/bbtest/console.sh") else {
        return;
    };
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    let console = out.stdout.replace('\r', "");
    let has = |line: &str| console.lines().any(|l| l == line);
    for fd in 0..3 {
        assert!(has(&format!("init fd {fd}: /dev/console")), "{console}");
    }
    assert!(has("init tty_nr: 0 tpgid: -1"), "{console}");
    let shell = console
        .lines()
        .find_map(|l| l.strip_prefix("shell pid: "))
        .unwrap_or_else(|| panic!("{console}"));
    let f: Vec<&str> = shell.split(' ').collect();
    // "PID pgrp: PGRP session: SID tty_nr: N tpgid: FG"
    assert_eq!(f.len(), 9, "{console}");
    let pid = f[0];
    assert_eq!([f[2], f[6], f[8]], [pid, "1088", pid], "{console}");
    assert!(
        has("session led by the shell's parent: yes, not init: yes"),
        "{console}"
    );
    assert!(has("shell fd 0: /dev/ttyS0"), "{console}");
    assert!(has("tty: /dev/ttyS0"), "{console}");
    assert!(
        has("consoles: ttyS0                -W- (EC p a)    4:64"),
        "{console}"
    );
    assert!(
        has("new session opened /dev/console: session leader yes tty_nr: 0"),
        "{console}"
    );
    assert!(has("console.sh done"), "{console}");
}

/// Runs `proctest CASE` on the guest's console and, on the host, on a pseudo-terminal (`script`, from
/// util-linux/bsdutils); checks that the host run says each of `host_says` (so the comparison is not of
/// two failures), that both print the same proctest lines, and that the guest exits 0. Returns the
/// guest's console output, or `None` when the test is skipped (no KVM).
fn proctest_on_terminals(case: &str, host_says: &[&str]) -> Option<String> {
    let out = boot_running(&format!("/bin/proctest {case}"))?;
    let bin = GuestImages::find().unwrap().host_program("bin/proctest");
    let host = tests::host_command("script")
        .args(["-qec", &format!("{} {case}", bin.display()), "/dev/null"])
        .output()
        .expect("script (util-linux) runs proctest on a pseudo-terminal");
    let host = String::from_utf8_lossy(&host.stdout).replace('\r', "");
    for line in host_says {
        assert!(host.contains(line), "{host}");
    }
    let guest = out.stdout.replace('\r', "");
    assert_same_lines(&proctest_lines(&guest), &proctest_lines(&host), &out.stdout);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    Some(guest)
}

#[test]
fn init_exiting_panics_the_kernel() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    // proctest as init: `exit 7` makes PID 1 exit.
    let cmdline = "console=ttyS0 root=/dev/vda init=/bin/proctest -- exit 7";
    let out = run(&images.args(&[], cmdline), T);
    assert!(
        out.stdout
            .contains("Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000700"),
        "{}",
        out.stdout
    );
    assert_ne!(out.code, Some(0));
}

#[test]
fn interactive_shell_on_the_console() {
    let Some(mut vm) = boot_interactive() else {
        return;
    };
    vm.wait_for_output("rc: system start", T);
    vm.wait_for_output("init: starting /bin/sh on the console", T);
    vm.wait_for_output(SHELL_PROMPT, T);

    // Each step waits for the shell's next prompt before typing on: input typed early is echoed at
    // once by the tty but read by the shell only later.
    // A pipeline (the typed line is echoed by the shell).
    vm.send(b"echo hello from a pipe | cat\n");
    vm.wait_for_output("\nhello from a pipe\n/ # ", T);

    // ps reads /proc: init, the shell (busybox ash: /bin/sh) and ps itself (an applet ash runs in a
    // child without exec: its name set by prctl, its command line still the shell's).
    let before = vm.stdout().len();
    type_and_expect(&mut vm, b"ps -o pid,ppid,stat,args\n", SHELL_PROMPT);
    wait_line_with(&vm, before, &["PID", "PPID", "STAT", "COMMAND"]);
    wait_line_with(&vm, before, &[" 1 ", " 0 ", "/sbin/init rc"]);
    wait_line_with(&vm, before, &[" S ", " /bin/sh"]);
    wait_line_with(&vm, before, &[" R ", "{ps} /bin/sh"]);

    // The status of a background job killed with SIGKILL (`wait PID`: a bare `wait` is 0).
    vm.send(b"sleep 30 & kill -9 $!; wait $!; echo killed=$?\n");
    vm.wait_for_output("killed=137\n", T);

    // Ctrl-C interrupts the foreground job, not the shell. The job is `cat` on the console, started
    // by a shell that says so first (a line typed earlier is echoed by the tty at once, far from
    // cat's copy of it); once it copies a line, it runs.
    // Ctrl-C is repeated until the shell prompts again, in case the first one came before the shell
    // made the job the foreground group.
    type_and_expect(
        &mut vm,
        b"ash -c 'echo cat-$((1 + 1)); exec cat'\n",
        "cat-2\n",
    );
    vm.send(b"ping\n");
    vm.wait_for_output("ping\nping\n", T);
    let before = vm.stdout().len();
    let interrupted = wait_until(T, || {
        vm.send(b"\x03");
        std::thread::sleep(Duration::from_millis(300));
        vm.stdout()[before..].contains(SHELL_PROMPT)
    });
    assert!(
        interrupted,
        "Ctrl-C did not interrupt cat:\n{}",
        vm.stdout()
    );
    type_and_expect(&mut vm, b"echo interrupted=$?\n", "interrupted=130\n");
    type_and_expect(&mut vm, b"echo still=alive\n", "still=alive\n");

    // Redirections, getdents64 (ls), /proc through cat.
    type_and_expect(
        &mut vm,
        b"cat < /etc/motd > /dev/null; echo redir=$?\n",
        "redir=0\n",
    );
    type_and_expect(&mut vm, b"ls /bin | cat; echo ls\"\"-done\n", "ls-done\n");
    // The rootfs's programs and busybox with its applet links (scripts/build-rootfs.sh).
    for name in [
        "toolbox",
        "zombie",
        "sh",
        "true",
        "udp-echo",
        "wakeup-latency",
        "busybox",
        "ash",
    ] {
        assert!(
            vm.stdout().contains(&format!("\n{name}\n")),
            "{name} missing from ls /bin:\n{}",
            vm.stdout()
        );
    }
    vm.send(b"cat /proc/self/status /proc/meminfo\n");
    vm.wait_for_output("Name:\tcat\n", T);
    vm.wait_for_output("State:\tR (running)\n", T);
    vm.wait_for_output("MemTotal:", T);

    // Exit status of a missing command.
    vm.send(b"nosuchcmd; echo missing=$?\n");
    vm.wait_for_output("missing=127", T);

    // poweroff asks init, which terminates everyone and powers off.
    vm.send(b"poweroff\n");
    let out = vm.wait(T);
    assert!(
        out.stdout
            .contains("init: power-off request: shutting down"),
        "{}",
        out.stdout
    );
    assert!(out
        .stdout
        .contains("init: sending SIGTERM to all processes"));
    assert!(out.stdout.contains("init: powering off"));
    assert_eq!(out.code, Some(0), "{}", out.stdout);
}

#[test]
fn zombie_shows_in_ps_and_init_reaps_it() {
    let Some(out) = boot_running("/bin/zombie") else {
        return;
    };
    let child: u32 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("zombie: child "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{}", out.stdout));
    let zline = out
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&child.to_string()))
        .unwrap_or_else(|| panic!("ps does not list {child}:\n{}", out.stdout));
    let f: Vec<&str> = zline.split_whitespace().collect();
    // busybox `ps -o pid,ppid,stat,args`: a zombie has no command line, so its name in brackets.
    assert_eq!(f[2], "Z", "{zline}");
    assert!(zline.ends_with("[zombie]"), "{zline}");
    assert!(
        out.stdout
            .contains(&format!("init: reaped PID {child} (exit 0)")),
        "{}",
        out.stdout
    );
    assert_eq!(out.code, Some(0));
}

#[test]
fn forkbomb_children_are_killed_and_reaped() {
    let Some(out) = boot_running("/bin/forkbomb 60") else {
        return;
    };
    assert!(
        out.stdout.contains("forkbomb: 60 children (limit)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("forkbomb: killed and reaped 60"),
        "{}",
        out.stdout
    );
    let (procs, _, _) = power_off_counts(&out.stdout);
    assert_eq!(procs, 1);
    assert_eq!(out.code, Some(0));
}

/// `PUT /actions SendCtrlAltDel` over the API socket; returns the HTTP status.
fn send_ctrl_alt_del(sock: &std::path::Path) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let body = r#"{"action_type": "SendCtrlAltDel"}"#;
    let req = format!(
        "PUT /actions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

#[test]
fn ctrl_alt_del_makes_init_terminate_everyone_and_power_off() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let sock = std::env::temp_dir().join(format!("microvm-cad-{}.sock", std::process::id()));
    let api = ["--api-sock", sock.to_str().unwrap()];
    let mut vm = Vm::spawn(&images.shell_args(&api));
    vm.wait_for_output("init: starting /bin/sh on the console", T);
    vm.wait_for_output(SHELL_PROMPT, T);
    vm.send(b"sleep 100 &\n");
    vm.wait_for_output("sleep 100 &\n/ # ", T);
    assert_eq!(send_ctrl_alt_del(&sock), 204);
    let out = vm.wait(T);
    assert!(
        out.stdout.contains("init: Ctrl-Alt-Del: shutting down"),
        "{}",
        out.stdout
    );
    assert!(out
        .stdout
        .contains("init: sending SIGTERM to all processes"));
    assert!(out.stdout.contains("init: powering off"));
    assert!(out.stdout.contains("reboot: Power down"));
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    let _ = std::fs::remove_file(&sock);
}

#[test]
fn forkbomb_stops_at_eagain_and_the_kernel_recovers() {
    let Some(small) = boot_running("/bin/forkbomb 1") else {
        return;
    };
    // Kernel stacks come from the kernel heap: fork fails with EAGAIN (not a kernel panic) once it
    // cannot spare one, and everything comes back when the children are gone.
    // ~130 s of emulated kernel work at load 16 (400 forks and exits): more than T.
    let Some(out) = boot_running_for("/bin/forkbomb 100000", Duration::from_secs(400)) else {
        return;
    };
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("forkbomb: ") && l.ends_with(" children (EAGAIN)"))
        .unwrap_or_else(|| panic!("fork never failed with EAGAIN:\n{}", out.stdout));
    let n: u32 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(n > 100, "{line}");
    assert!(
        out.stdout
            .contains(&format!("forkbomb: killed and reaped {n}")),
        "{}",
        out.stdout
    );
    let (procs, frames, _) = power_off_counts(&out.stdout);
    let (_, frames_small, _) = power_off_counts(&small.stdout);
    assert_eq!(procs, 1);
    assert_eq!(frames, frames_small, "frames used after the fork bomb");
    assert_eq!(out.code, Some(0));
}
