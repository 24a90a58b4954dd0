//! Memory reliability of the project's guest kernel (build/guest-kernel + build/rootfs.qcow2 under
//! microvm): freed frames are allocated again (fork/exec/exit cycles and console commands leave the
//! kernel's frame and heap counters where they started), user-sized requests are bounded, and running
//! out of memory is handled as Linux handles it. Each case reads the kernel's counters (MemAvailable,
//! free memory plus the clean page cache, and Slab, the kernel heap, from /proc/meminfo) before and after.
//!
//! fork/exec/exit runs the 10,000 cycles (160 s on a quiet machine); the console-shell count is
//! modest so CI stays short (`MEMTEST_CYCLES=N` sets both; scripts/shell-cycles.py runs 10,000 commands,
//! figures in guest-kernel/README.md).

use std::time::Duration;

use tests::{assert_same_lines_with, lines_with, GuestImages, Output, Vm, SHELL_PROMPT};

const T: Duration = Duration::from_secs(300);

/// Cycles and commands to run: `MEMTEST_CYCLES`, else `default`.
fn cycles(default: u64) -> u64 {
    std::env::var("MEMTEST_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (frames used, heap bytes used) from the kernel's power-off statistics.
fn final_counts(out: &Output) -> (u64, u64) {
    let (_, frames, heap) = tests::power_off_counts(&out.stdout);
    (frames, heap)
}

fn memtest_lines(s: &str) -> Vec<&str> {
    lines_with(s, "memtest: ")
}

/// `memtest ARGS` on the host: its `memtest:` lines.
fn on_host(images: &GuestImages, args: &[&str]) -> String {
    let out = tests::host_command(images.host_program("bin/memtest"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Boots `/bin/memtest ARGS` and checks it ran to the end without a kernel panic.
fn in_guest(args: &str, timeout: Duration) -> Option<Output> {
    let out = GuestImages::for_vm()?.run_program(&[], &format!("/bin/memtest {args}"), timeout);
    out.assert_ran_to_the_end("/bin/memtest");
    Some(out)
}

#[test]
fn execve_arguments_are_bounded_as_on_the_host() {
    // 8 MiB of arguments (E2BIG), 1 MiB (runs), exactly the 2 MiB limit and one byte more, and
    // MAX_ARG_STRLEN: the same answers as the host's kernel, and the kernel keeps no memory of them.
    let Some(once) = in_guest("args 1", T) else {
        return;
    };
    let Some(twice) = in_guest("args 2", T) else {
        return;
    };
    let images = GuestImages::find().unwrap();
    let host = on_host(&images, &["args"]);
    assert!(host.contains("E2BIG"), "{host}");
    assert_same_lines_with("memtest: ", &once.stdout, &host);
    assert_eq!(final_counts(&once), final_counts(&twice));
    let overcommit = in_guest("overcommit", T).unwrap();
    assert_same_lines_with(
        "memtest: ",
        &overcommit.stdout,
        &on_host(&images, &["overcommit"]),
    );
}

#[test]
fn bad_user_pointers_give_efault_as_on_the_host() {
    // NULL, kernel-half and unmapped pointers handed to calls that read or write user memory: EFAULT from
    // each, as on the host, and the kernel never faults on them itself (a NULL path used to panic it:
    // the string copy skipped its check for page 0).
    let Some(guest) = in_guest("badptr", T) else {
        return;
    };
    let images = GuestImages::find().unwrap();
    let host = on_host(&images, &["badptr"]);
    assert!(host.contains("EFAULT"), "{host}");
    assert_same_lines_with("memtest: ", &guest.stdout, &host);
}

#[test]
fn a_pipe_write_moves_at_most_its_capacity_at_a_time() {
    // One write(2) of many times the pipe's 64 KiB capacity (it used to be copied whole into the
    // kernel heap: 64 MiB panicked the kernel); every byte read back is checked; a non-blocking pipe
    // takes 64 KiB of 1 MiB, then EAGAIN. MEMTEST_PIPE_MIB=64 for the full reproducer.
    let mib: u64 = std::env::var("MEMTEST_PIPE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let Some(small) = in_guest("pipe 1", T) else {
        return;
    };
    let Some(big) = in_guest(&format!("pipe {mib}"), Duration::from_secs(60 + 10 * mib)) else {
        return;
    };
    let images = GuestImages::find().unwrap();
    let host = on_host(&images, &["pipe", &mib.to_string()]);
    assert_same_lines_with("memtest: ", &big.stdout, &host);
    // The pipe's ring and the processes' memory are all given back.
    assert_eq!(final_counts(&small), final_counts(&big));
}

/// (MemAvailable, Slab) in kB from the last /proc/meminfo printed since `from`. MemAvailable is free
/// memory plus the clean page cache, which memory pressure takes back (the OOM path evicts it before it
/// kills), so a page read into the cache before a measurement and evicted after it is no leak.
fn meminfo_since(out: &str, from: usize) -> (u64, u64) {
    let field = |key: &str| -> u64 {
        out[from..]
            .lines()
            .rfind(|l| l.starts_with(key))
            .and_then(|l| l[key.len()..].split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in:\n{}", &out[from..]))
    };
    (field("MemAvailable:"), field("Slab:"))
}

#[test]
fn fork_exec_exit_cycles_reuse_frames_and_leak_nothing() {
    // Before frames were reused, the 83rd exec failed with ENOMEM (each exec took fresh frames only).
    let n = cycles(10_000);
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let out = images.run_program(
        &[],
        &format!("/bin/execloop {n}"),
        Duration::from_secs(60 + n / 5),
    );
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("execloop: "))
        .unwrap_or_else(|| panic!("no execloop line:\n{}", out.stdout));
    eprintln!("{line}");
    assert!(
        line.starts_with(&format!("execloop: {n} fork/exec/exit cycles, 0 failed,")),
        "{line}"
    );
    // MemFree and Slab where they started (execloop exits 1 otherwise; checked here for the message).
    let counts: Vec<&str> = line.split("; ").skip(1).collect();
    for c in &counts {
        let parts: Vec<&str> = c.split_whitespace().collect();
        assert_eq!(parts[1], parts[3], "{line}");
    }
    assert_eq!(counts.len(), 2, "{line}");
    out.assert_ran_to_the_end("/bin/execloop");
}

/// Boots with init's full mode (`init -- rc`: a busybox ash on the console) and waits for its prompt.
fn boot_console_shell(extra: &[&str]) -> Option<Vm> {
    let images = GuestImages::for_vm()?;
    let vm = Vm::spawn(&images.shell_args(extra));
    vm.wait_for_output(SHELL_PROMPT, T);
    Some(vm)
}

/// Types `line` and waits until `what` and then a prompt appear after what was shown before; returns
/// where the output stood when it was typed.
fn type_until(vm: &mut Vm, line: &str, what: &str) -> usize {
    let mark = vm.stdout().len();
    vm.send(format!("{line}\n").as_bytes());
    let done = wait_since(vm, mark, what)
        && tests::wait_until(T, || {
            let s = vm.stdout();
            let at = mark + s[mark..].find(what).unwrap() + what.len();
            s[at - 1..].contains(SHELL_PROMPT)
        });
    assert!(
        done,
        "typed {line:?}, waited for {what:?}:\n{}",
        vm.stdout()
    );
    mark
}

// ash keeps each distinct line typed in its line-editing history (a heap allocation the shell keeps,
// not a leak), and skips a line equal to the one before it. So these tests define a shell function
// once and then type the same line, the function's name, over and over, and read /proc/meminfo only
// after WARM calls: the shell's memory is the same at both readings (its resident set, in
// /proc/PID/statm, grows by one page between the 25th and the 45th call, then stays).
const WARM: u64 = 50;

#[test]
fn console_shell_commands_leak_nothing() {
    // Each command is a fork of the shell and an exec of /bin/echo (busybox): ~0.3 s here.
    let n = cycles(120);
    let Some(mut vm) = boot_console_shell(&[]) else {
        return;
    };
    // WARM warm-up commands (the shell's own buffers: it touches its last new page of memory within
    // the first 50 calls here; the kernel's caches), then the counters; n commands; the counters
    // again (in the same state of the shell: the same call of the same function).
    let last = n + WARM;
    vm.send(
        format!(
            "c() {{ /bin/echo cmd$((i = i + 1)); case $i in {WARM}|{last}) cat /proc/meminfo;; esac; }}\n"
        )
        .as_bytes(),
    );
    let mut before = (0, 0);
    let mut started = std::time::Instant::now();
    for i in 1..=last {
        let what = if i == WARM || i == last {
            " kB\n".to_string()
        } else {
            format!("\ncmd{i}\n")
        };
        let mark = type_until(&mut vm, "c", &what);
        if i == WARM {
            before = meminfo_since(&vm.stdout(), mark);
            started = std::time::Instant::now();
        }
    }
    let each = started.elapsed() / n as u32;
    let out = vm.stdout();
    let after = meminfo_since(&out, out.rfind(&format!("\ncmd{last}\n")).unwrap());
    eprintln!(
        "{n} shell commands, {each:?} each; (MemAvailable, Slab) kB before {before:?}, after {after:?}"
    );
    assert_eq!(
        before, after,
        "frames or kernel heap leaked over {n} commands"
    );
    // The shell can still start programs and power off (busybox poweroff asks init: SIGUSR2).
    vm.send(b"poweroff\n");
    let out = vm.wait(T);
    assert!(out.stdout.contains("init: powering off"), "{}", out.stdout);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
}

/// Waits until `what` appears in the output after byte `from`.
fn wait_since(vm: &mut Vm, from: usize, what: &str) -> bool {
    tests::wait_until(T, || {
        let s = vm.stdout();
        s.len() > from && s[from..].contains(what)
    })
}

/// (MemAvailable, Slab) with MemAvailable counting the shell's own resident pages as available: the
/// console shell's memory is its own, not a leak (measured: one page more between the readings
/// around the two OOM kills, which ash reports). `out` has `/proc/$$/statm` (size, resident, ... in
/// pages) after the meminfo.
fn with_shell_pages((avail, slab): (u64, u64), out: &str) -> (u64, u64) {
    let statm: Vec<u64> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect::<Vec<u64>>()
        })
        .find(|f| f.len() == 7)
        .unwrap_or_else(|| panic!("no /proc/PID/statm in:\n{out}"));
    (avail + statm[1] * 4, slab)
}

#[test]
fn out_of_memory_kills_the_biggest_process_and_the_system_goes_on() {
    // A small guest (64 MiB) so the hog fills it quickly.
    let Some(mut vm) = boot_console_shell(&["--mem", "64"]) else {
        return;
    };
    // memtest once before the first reading: the root filesystem reader keeps what it looked up to
    // load it (an indirect block of the executable), which is a cache, not a leak. Before it, WARM
    // commands; after it the counters, the two hogs, 100 more commands (fork and exec) and the
    // counters again; each step is one call of `s` (see above).
    vm.send(
        b"s() { case $((k = k + 1)) in 51) memtest overcommit;; 52|156) cat /proc/meminfo /proc/$$/statm;; \
          53) memtest hog; echo hog=$?;; 54) memtest hog read; echo hogread=$?;; \
          *) /bin/echo after$k;; esac; }\n",
    );
    for i in 1..=WARM {
        type_until(&mut vm, "s", &format!("\nafter{i}\n"));
    }
    type_until(&mut vm, "s", "memtest: overcommit: ");
    let mark = type_until(&mut vm, "s", " kB\n");
    let before = with_shell_pages(meminfo_since(&vm.stdout(), mark), &vm.stdout()[mark..]);

    // memtest hog maps and touches 4 MiB chunks until the OOM killer picks it (the biggest process).
    let mark = vm.stdout().len();
    vm.send(b"s\n");
    assert!(
        wait_since(&mut vm, mark, "hog=137\n"),
        "the hog was not killed by SIGKILL:\n{}",
        vm.stdout()
    );
    let out = vm.stdout();
    let kill = out[mark..]
        .lines()
        .find(|l| l.contains("Out of memory: Killed process "))
        .unwrap_or_else(|| panic!("no OOM kill logged:\n{}", &out[mark..]));
    assert!(kill.contains(" (memtest) total-vm:"), "{kill}");
    for field in [
        "kB, anon-rss:",
        "kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:",
        "kB oom_score_adj:0",
    ] {
        assert!(kill.contains(field), "{kill}");
    }
    let rss_kb: u64 = kill
        .split("anon-rss:")
        .nth(1)
        .and_then(|r| r.split("kB").next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        rss_kb > 32 * 1024,
        "the victim held only {rss_kb} kB: {kill}"
    );
    assert!(!out.contains("Kernel panic"), "{out}");

    // The same with the pages brought in by the kernel (a read() buffer it checks before the
    // copy): the OOM killer ends it there too, where an EFAULT used to come back.
    let mark = vm.stdout().len();
    vm.send(b"s\n");
    assert!(
        wait_since(&mut vm, mark, "hogread=137\n"),
        "the read() hog was not killed by SIGKILL:\n{}",
        vm.stdout()
    );
    let out = vm.stdout();
    assert!(
        out[mark..].contains("Out of memory: Killed process ")
            && !out[mark..].contains("hog: read failed"),
        "{}",
        &out[mark..]
    );

    // Afterwards: 100 more commands (fork and exec), everything the hog held is free again.
    for i in 55..=156 {
        let what = if i == 156 {
            " kB\n".to_string()
        } else {
            format!("\nafter{i}\n")
        };
        type_until(&mut vm, "s", &what);
    }
    let out = vm.stdout();
    let from = out.rfind("\nafter155\n").unwrap();
    let after = with_shell_pages(meminfo_since(&out, from), &out[from..]);
    eprintln!(
        "{kill}\n(MemAvailable, Slab) kB before the hog {before:?}, after it and 100 commands {after:?}"
    );
    assert_eq!(before, after, "memory not given back after the OOM kill");
    vm.send(b"poweroff\n");
    let out = vm.wait(T);
    assert!(out.stdout.contains("init: powering off"), "{}", out.stdout);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
}

#[test]
fn a_full_kernel_heap_gives_errors_not_a_panic() {
    // Pipes with data fill the kernel heap (16 MiB in the default 128 MiB guest; 64 KiB per pipe
    // ring): the write that finds no room is ENOMEM, the calls made while the heap is full answer
    // with a result or an errno, and after everything is closed a pipe works and the guest powers off
    // (in_guest checks the exit and that the kernel did not panic). The host runs out of descriptors
    // (EMFILE) long before its memory: the lines are compared in shape only.
    let Some(out) = in_guest("kheap", T) else {
        return;
    };
    let lines = memtest_lines(&out.stdout);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("pipes with a ring, then write: ENOMEM")),
        "{}",
        out.stdout
    );
    assert!(
        lines.iter().any(|l| l.contains("kheap: while full:")),
        "{}",
        out.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("after closing them a pipe works: yes")),
        "{}",
        out.stdout
    );
    let host = on_host(&GuestImages::find().unwrap(), &["kheap"]);
    assert!(
        host.contains("after closing them a pipe works: yes"),
        "{host}"
    );
}

#[test]
fn open_files_of_many_processes_fill_the_kernel_heap_with_enomem_not_a_panic() {
    // A process holds at most 1024 descriptors, but processes are many. memtest forks children until
    // fork fails (EAGAIN: no kernel stack beside the heap's reserve), then lets each open /dev/null
    // up to its descriptor limit in turn: the open file descriptions fill the kernel heap until an
    // open fails with ENOMEM. Before, nothing stopped them at the reserve, and the allocations
    // every system call makes had no room left. A 32 MiB guest (4 MiB heap) keeps it short.
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let out = images.run_program(&["--mem", "32"], "/bin/memtest kobjects files", T);
    assert!(!out.stdout.contains("Kernel panic"), "{}", out.stdout);
    let lines = memtest_lines(&out.stdout);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("(fork: EAGAIN)") && l.ends_with("files, then open: ENOMEM")),
        "{}",
        out.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("all reaped; afterwards open and fork work: yes")),
        "{}",
        out.stdout
    );
    out.assert_ran_to_the_end("/bin/memtest");
}

/// The `kobjects maps: ... areas in all` line and the errno mmap stopped with.
fn maps_total(out: &str) -> Option<&str> {
    memtest_lines(out)
        .into_iter()
        .find(|l| l.contains("mappings, then"))
        .and_then(|l| l.split("then ").nth(1))
}

#[test]
fn memory_areas_stop_at_max_map_count_as_on_the_host() {
    // One-page mappings of alternating protection (each its own area) until mmap fails: Linux's
    // max_map_count, 65530, counted as Linux counts it (an mmap is refused once the process has
    // more than that, so 65531 areas in all, the ones it started with included), then ENOMEM; all
    // of them unmapped (never refused, even above the limit) and a mapping works again. The host
    // and the guest start with different areas (the vDSO, the C library's), so the totals are
    // compared. Before the area list was a B-tree with a gap hint this took hours in the guest.
    let Some(out) = in_guest("kobjects maps", Duration::from_secs(900)) else {
        return;
    };
    assert_eq!(
        maps_total(&out.stdout),
        Some("mmap: ENOMEM; 65531 areas in all"),
        "{}",
        out.stdout
    );
    // The host is compared only where it has Linux's default limit: a host tuned otherwise (some
    // distributions set 262144 or more) would give another total, or run out of memory first.
    let limit = std::fs::read_to_string("/proc/sys/vm/max_map_count").unwrap_or_default();
    if limit.trim() == "65530" {
        let host = on_host(&GuestImages::find().unwrap(), &["kobjects", "maps"]);
        assert_eq!(maps_total(&host), maps_total(&out.stdout), "{host}");
    } else {
        eprintln!(
            "host vm.max_map_count is {}, not 65530: the host run is skipped",
            limit.trim()
        );
    }
    assert!(
        out.stdout
            .contains("memtest: kobjects maps: afterwards a mapping works: yes"),
        "{}",
        out.stdout
    );
    // The guest goes on: a fork and an exec work, and it powers off after memtest exits (in_guest
    // checks the exit status and that the kernel did not panic).
    assert!(
        out.stdout
            .contains("memtest: kobjects maps: afterwards fork and exec: ran, exit 0"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("init: powering off"), "{}", out.stdout);
}
