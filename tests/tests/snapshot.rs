//! Snapshot and restore (`PUT /snapshot/create`, `PUT /snapshot/load`, `microvm --restore`): a VM paused,
//! saved, its `microvm` killed, and a new `microvm` carrying on from the saved state; clones side by side;
//! and each bad file refused with one clear line and nothing started.
//!
//! A guest streaming writes to its disk is snapshotted mid-stream (no acknowledged write lost; two clones
//! each onto its own copy of the disk); a restored guest answers pings on the TAP.
//!
//! The test guest's `count` mode prints a counter every 10 PIT ticks (so the PIT, the PIC and the vCPU's
//! registers must come back) and exits with status 57 on Ctrl-Alt-Del (the i8042 after restore). The
//! guest-kernel test restores a shell with a process counting in user space and checks its files and
//! CLOCK_MONOTONIC.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tests::api::{restore_args, Client, TmpPath};
use tests::{require_kvm, run, wait_until, GuestImages, Vm};

const PVH: &str = env!("GUEST_PVH");
const T: Duration = Duration::from_secs(30);
/// The guest's exit status after it saw Ctrl-Alt-Del.
const CTRL_ALT_DEL_EXIT: i32 = 57;

fn tmp(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("microvm-snap-{}-{n}-{name}", std::process::id()))
}

/// A `microvm` restoring a snapshot from the command line, running.
fn restore(state: &Path, mem: &Path, extra: &[&str]) -> Vm {
    Vm::spawn(&restore_args(state, mem, extra))
}

/// `microvm --api-sock` with extra args; waits for the socket.
fn spawn_api(extra: &[&str]) -> (Vm, TmpPath) {
    let sock = TmpPath(tmp("api.sock"));
    let vm = tests::api::spawn_with_api(&sock, extra, T);
    (vm, sock)
}

fn counts(vm: &Vm) -> Vec<u64> {
    tests::api::counts(&vm.stdout())
}

/// Boots the counting guest, pauses it at count >= 3 and snapshots it; returns (state, mem, last count).
fn counting_snapshot(vcpus: &str) -> (PathBuf, PathBuf, u64) {
    let (vm, sock) = spawn_api(&[
        "--kernel",
        PVH,
        "--cmdline",
        "count",
        "--vcpus",
        vcpus,
        "--mem",
        "64",
    ]);
    let c = Client::connect(&sock);
    vm.wait_for_output("count 3\n", T);
    // Not while running.
    let (state, mem) = (tmp("state"), tmp("mem"));
    // No snapshot_type: Full, as Firecracker's default.
    let body = format!(
        r#"{{"snapshot_path": "{}", "mem_file_path": "{}"}}"#,
        state.display(),
        mem.display()
    );
    let r = c.request("PUT", "/snapshot/create", &body);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.fault().contains("pause the VM"), "{r:?}");
    let last = c.pause_settled(&vm, T);
    let t0 = Instant::now();
    c.ok("PUT", "/snapshot/create", &body);
    eprintln!("snapshot created in {:?}", t0.elapsed());
    // The old microvm is killed: the new one owes it nothing.
    vm.signal(libc::SIGKILL);
    drop(vm.wait(T));
    assert_eq!(
        std::fs::metadata(&mem).unwrap().len(),
        64 << 20,
        "the memory file is guest RAM"
    );
    (state, mem, last)
}

#[test]
fn restored_guest_counts_on_from_where_it_was() {
    if !require_kvm() {
        return;
    }
    let (state, mem, last) = counting_snapshot("2");
    // CLI restore, running at once.
    let vm = restore(&state, &mem, &[]);
    assert!(
        wait_until(T, || counts(&vm).len() >= 3),
        "the restored guest does not count: {}",
        vm.stdout()
    );
    let after = counts(&vm);
    // No restart: the first count is the next one, and none is lost or repeated.
    assert_eq!(after[0], last + 1, "{after:?}");
    assert!(after.windows(2).all(|w| w[1] == w[0] + 1), "{after:?}");
    // The i8042 and its IRQ work after restore.
    vm.signal(libc::SIGTERM);
    let out = vm.wait(T);
    assert!(out.code.is_some(), "{out:?}");

    // Two clones of the same snapshot side by side, through the API, paused until resumed.
    let clones: Vec<(Vm, TmpPath)> = (0..2).map(|_| spawn_api(&[])).collect();
    for (vm, sock) in &clones {
        let c = Client::connect(sock);
        let body = format!(
            r#"{{"snapshot_path": "{}", "mem_backend": {{"backend_type": "File", "backend_path": "{}"}}, "resume_vm": false}}"#,
            state.display(),
            mem.display()
        );
        c.ok("PUT", "/snapshot/load", &body);
        let info = c.request("GET", "/", "");
        assert!(info.body.contains("\"Paused\""), "{info:?}");
        assert!(
            !wait_until(Duration::from_millis(300), || !counts(vm).is_empty()),
            "a clone loaded paused ran"
        );
        c.ok("PATCH", "/vm", r#"{"state": "Resumed"}"#);
    }
    for (vm, sock) in clones {
        assert!(
            wait_until(T, || counts(&vm).len() >= 2),
            "a clone does not count: {}",
            vm.stdout()
        );
        assert_eq!(counts(&vm)[0], last + 1);
        let c = Client::connect(&sock);
        c.ok("PUT", "/actions", r#"{"action_type": "SendCtrlAltDel"}"#);
        let out = vm.wait(T);
        assert_eq!(out.code, Some(CTRL_ALT_DEL_EXIT), "{out:?}");
    }
    for f in [state, mem] {
        std::fs::remove_file(f).unwrap();
    }
}

/// Each bad input gets one line (exit 1 on the CLI, 400 with fault_message on the API) and nothing runs.
#[test]
fn bad_snapshot_files_are_refused_with_one_line() {
    if !require_kvm() {
        return;
    }
    let (state, mem, _) = counting_snapshot("1");
    let good = std::fs::read(&state).unwrap();
    let cli = |state: &Path, mem: &Path| {
        let out = run(&restore_args(state, mem, &[]), T);
        assert_eq!(out.code, Some(1), "{out:?}");
        assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");
        assert!(out.stdout.is_empty(), "the guest ran: {out:?}");
        out.stderr
    };
    let bad = tmp("bad");
    // Another format version.
    let mut v = good.clone();
    v[8] = 9;
    std::fs::write(&bad, &v).unwrap();
    let e = cli(&bad, &mem);
    assert!(e.contains("format version 9"), "{e}");
    // Truncated.
    std::fs::write(&bad, &good[..good.len() / 2]).unwrap();
    let e = cli(&bad, &mem);
    assert!(e.contains("truncated"), "{e}");
    // One bit flipped in the body.
    let mut v = good.clone();
    let mid = v.len() / 2;
    v[mid] ^= 1;
    std::fs::write(&bad, &v).unwrap();
    let e = cli(&bad, &mem);
    assert!(e.contains("checksum"), "{e}");
    // Not a snapshot.
    std::fs::write(&bad, b"hello, this is no snapshot at all").unwrap();
    let e = cli(&bad, &mem);
    assert!(e.contains("not a microvm snapshot"), "{e}");
    // A memory file of the wrong size.
    let short = tmp("short-mem");
    std::fs::write(&short, vec![0u8; 1 << 20]).unwrap();
    let e = cli(&state, &short);
    assert!(e.contains("is 1048576 bytes"), "{e}");
    // The API answers 400 with the same line, and stays ready for a good load.
    let (vm, sock) = spawn_api(&[]);
    let c = Client::connect(&sock);
    let load = |state: &Path, mem: &Path| {
        format!(
            r#"{{"snapshot_path": "{}", "mem_file_path": "{}", "resume_vm": true}}"#,
            state.display(),
            mem.display()
        )
    };
    let r = c.request("PUT", "/snapshot/load", &load(&state, &short));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.fault().contains("is 1048576 bytes"), "{r:?}");
    let r = c.request(
        "PUT",
        "/snapshot/load",
        &format!(
            r#"{{"snapshot_path": "{}", "mem_backend": {{"backend_type": "Uffd", "backend_path": "/x"}}}}"#,
            state.display()
        ),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.fault().contains("Uffd"), "{r:?}");
    let r = c.request(
        "PUT",
        "/snapshot/load",
        &format!(
            r#"{{"snapshot_path": "{}", "mem_file_path": "{}", "network_overrides": [{{"iface_id": "eth9", "host_dev_name": "x"}}]}}"#,
            state.display(),
            mem.display()
        ),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.fault().contains("eth9"), "{r:?}");
    c.ok("PUT", "/snapshot/load", &load(&state, &mem));
    assert!(wait_until(T, || counts(&vm).len() >= 2), "{}", vm.stdout());
    // Loading twice is refused.
    let r = c.request("PUT", "/snapshot/load", &load(&state, &mem));
    assert_eq!(r.status, 400, "{r:?}");
    c.ok("PUT", "/actions", r#"{"action_type": "SendCtrlAltDel"}"#);
    assert_eq!(vm.wait(T).code, Some(CTRL_ALT_DEL_EXIT));
    for f in [state, mem, bad, short] {
        std::fs::remove_file(f).unwrap();
    }
}

/// The output of `cmd` run on the guest's console shell (between two markers).
fn shell(vm: &mut Vm, cmd: &str, tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let tag = format!("{tag}{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let (begin, end) = (format!("<{tag}>\n"), format!("</{tag}>\n"));
    vm.send(format!("echo '<{tag}>'; {cmd}; echo '</{tag}>'\n").as_bytes());
    assert!(
        wait_until(Duration::from_secs(60), || vm.stdout().contains(&end)),
        "no answer to {cmd:?}: {}",
        vm.stdout()
    );
    let out = vm.stdout();
    let stop = out.rfind(&end).unwrap();
    let start = out[..stop].rfind(&begin).unwrap() + begin.len();
    out[start..stop].to_owned()
}

fn uptime(vm: &mut Vm, tag: &str) -> f64 {
    let text = shell(vm, "cat /proc/uptime", tag);
    text.split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad /proc/uptime: {text:?}"))
}

/// (PID, state) of each `cfs-share` process in `ps`.
fn hogs(vm: &mut Vm, tag: &str) -> Vec<(u32, String)> {
    shell(vm, "ps -o pid,stat,args", tag)
        .lines()
        .filter(|l| l.contains("cfs-share"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].parse().unwrap(), f[1].to_owned())
        })
        .collect()
}

/// The project's guest kernel with its shell and a CPU-bound process: paused, saved, microvm killed,
/// restored by a new microvm. The same processes go on (same PIDs), the shell
/// answers, the disk reads the same files, and the guest's monotonic clock has not gone backwards.
#[test]
fn guest_kernel_shell_and_processes_survive_restore() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let sock = TmpPath(tmp("gk.sock"));
    let mut args = images.shell_args(&["--api-sock", sock.to_str().unwrap()]);
    args.extend(["--mem".into(), "128".into()]);
    let mut vm = Vm::spawn(&args);
    vm.wait_for_output(
        "init: starting /bin/sh on the console",
        Duration::from_secs(120),
    );
    vm.wait_for_output("\n/ # ", Duration::from_secs(60));
    // A CPU-bound child counting for 1000 s, in the background.
    vm.send(b"cfs-share 1000 0 &\n");
    assert!(wait_until(Duration::from_secs(60), || {
        !hogs(&mut vm, "h0").is_empty()
    }));
    let before_hogs = hogs(&mut vm, "h1");
    let before_up = uptime(&mut vm, "u1");
    let motd = shell(&mut vm, "cat /etc/motd", "m1");
    assert!(!motd.is_empty());

    let c = Client::connect(&sock);
    c.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
    // A command typed while the VM is paused, longer than the 8250's 64-byte FIFO: the FIFO takes the
    // first part, the VMM holds the rest, and the snapshot carries both.
    let tail = "x".repeat(80);
    vm.send(format!("echo typed-while-''paused-{tail}\n").as_bytes());
    assert!(
        wait_until(T, || vm.unread_input() == 0),
        "microvm does not read its input while paused"
    );
    let (state, mem) = (tmp("gk-state"), tmp("gk-mem"));
    assert_eq!(c.snapshot("Full", &state, &mem).status, 204);
    vm.signal(libc::SIGKILL);
    drop(vm.wait(T));

    let mut vm = restore(&state, &mem, &[]);
    // The echo's output (the shell's prompt may precede it on its line), not the tty's echo of the
    // command, which has the quotes.
    let typed = format!("typed-while-paused-{tail}");
    assert!(
        wait_until(Duration::from_secs(60), || vm
            .stdout()
            .lines()
            .any(|l| l.trim_end().ends_with(&typed))),
        "the input typed while paused did not reach the restored shell: {}",
        vm.stdout()
    );
    assert_eq!(shell(&mut vm, "echo alive", "a"), "alive\n");
    let after_hogs = hogs(&mut vm, "h2");
    let pids = |h: &[(u32, String)]| h.iter().map(|x| x.0).collect::<Vec<_>>();
    assert_eq!(pids(&after_hogs), pids(&before_hogs), "{}", vm.stdout());
    let after_up = uptime(&mut vm, "u2");
    assert!(
        after_up >= before_up,
        "CLOCK_MONOTONIC went back: {before_up} -> {after_up}"
    );
    assert_eq!(shell(&mut vm, "cat /etc/motd", "m2"), motd);
    vm.send(b"poweroff\n");
    let out = vm.wait(Duration::from_secs(60));
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    for f in [state, mem] {
        std::fs::remove_file(f).unwrap();
    }
}

fn restore_first_count(state: &Path, mem: &Path) -> u64 {
    let vm = restore(state, mem, &[]);
    assert!(
        wait_until(T, || counts(&vm).len() >= 2),
        "the restored guest does not count: {}",
        vm.stdout()
    );
    let first = counts(&vm)[0];
    vm.signal(libc::SIGKILL);
    drop(vm.wait(T));
    first
}

/// Bytes a file really occupies on disk (a sparse file's holes take none).
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// The `memwalk` guest's disk: sector S holds S in each of its 64-bit words.
fn walk_disk() -> PathBuf {
    let disk = tmp("walk-disk");
    let bytes: Vec<u8> = (0..8192u64)
        .flat_map(|s| std::iter::repeat_n(s, 64))
        .flat_map(u64::to_le_bytes)
        .collect();
    std::fs::write(&disk, bytes).unwrap();
    disk
}

/// Restores a `memwalk` snapshot and lets it run 3 counts (each checks all 128 of its pages); returns
/// the first count and the restored VM's output, or the output if the guest found a page wrong.
fn restore_walk(state: &Path, mem: &Path) -> Result<u64, String> {
    let vm = restore(state, mem, &[]);
    let done = wait_until(T, || {
        counts(&vm).len() >= 3 || vm.stdout().contains("memwalk: bad")
    });
    vm.signal(libc::SIGKILL);
    let out = vm.wait(T);
    if !done || out.stdout.contains("memwalk: bad") {
        return Err(out.stdout);
    }
    let first = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("count ")?.trim().parse().ok());
    Ok(first.expect("counted"))
}

/// Runs the paused VM until it has printed `more` counts after `from`, then pauses it again and returns
/// the last count.
fn run_counts(c: &Client, vm: &Vm, from: u64, more: u64) -> u64 {
    c.ok("PATCH", "/vm", r#"{"state": "Resumed"}"#);
    assert!(
        wait_until(T, || counts(vm).last() >= Some(&(from + more))),
        "{}",
        vm.stdout()
    );
    c.pause_settled(vm, T)
}

fn rebase_snap(base: &Path, diff: &Path) -> std::process::Output {
    std::process::Command::new(tests::microvm_bin().with_file_name("rebase-snap"))
        .args(["--base-file", base.to_str().unwrap()])
        .args(["--diff-file", diff.to_str().unwrap()])
        .output()
        .unwrap()
}

/// Each Diff holds the pages written since the last snapshot, Full or Diff (as Firecracker's), by the
/// guest or by a device: the `memwalk` guest writes a counter page per count and has its disk read a
/// sector into a page per count, 64 pages of each round robin, and checks all of them every count.
/// Full, Diff1, Diff2: Full + Diff1 laid on with `rebase-snap` restores the state at Diff1, + Diff2 the
/// latest; Diff2 holds no page written only before Diff1; and Full + Diff2 without Diff1 restores a
/// guest that finds its pages wrong (so the restored guests' checks can fail).
#[test]
fn each_diff_holds_the_pages_written_since_the_last_snapshot() {
    if !require_kvm() {
        return;
    }
    let disk = walk_disk();
    let disk_arg = format!("{},id=data", disk.display());
    let (vm, sock) = spawn_api(&[
        "--kernel",
        PVH,
        "--cmdline",
        "count memwalk",
        "--mem",
        "64",
        "--disk",
        &disk_arg,
    ]);
    let c = Client::connect(&sock);
    vm.wait_for_output("count 3\n", T);
    let pages_at = vm
        .stdout()
        .lines()
        .find_map(|l| u64::from_str_radix(l.strip_prefix("memwalk: pages at 0x")?, 16).ok())
        .expect("memwalk prints where its pages are");
    let c0 = c.pause_settled(&vm, T);
    let [s0, m0, s1, m1, s2, m2, base] = ["s0", "m0", "s1", "m1", "s2", "m2", "base"].map(tmp);
    // No Full snapshot yet: nothing to diff against.
    let r = c.snapshot("Diff", &s1, &m1);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.fault().contains("needs a Full snapshot"), "{r:?}");
    assert_eq!(c.snapshot("Full", &s0, &m0).status, 204);
    // The Full memory file is sparse: the pages the guest never wrote are holes.
    assert_eq!(std::fs::metadata(&m0).unwrap().len(), 64 << 20);
    assert!(allocated(&m0) < 12 << 20, "{} bytes", allocated(&m0));
    let full = std::fs::read(&m0).unwrap();
    let c1 = run_counts(&c, &vm, c0, 4);
    assert_eq!(c.snapshot("Diff", &s1, &m1).status, 204);
    let c2 = run_counts(&c, &vm, c1, 4);
    assert_eq!(c.snapshot("Diff", &s2, &m2).status, 204);
    vm.signal(libc::SIGKILL);
    drop(vm.wait(T));
    assert_eq!(
        std::fs::read(&m0).unwrap(),
        full,
        "the Full memory file changed"
    );
    assert!(c2 - c0 < 50, "the counts wrapped the 64 pages: {c0} {c2}");

    // Before printing count n the guest wrote n + 1 into counter page (n + 1) % 64; a pause may land
    // between that write and the print, so the interval of Diff1 surely holds c0 + 3 ..= c1 + 1, and
    // Diff2 surely none of those whose page was not written again: c1 + 1 ..= c2 + 2.
    let counter = |file: &[u8], m: u64| {
        let at = (pages_at + (m % 64) * 16 * 4096) as usize;
        u64::from_le_bytes(file[at..at + 8].try_into().unwrap())
    };
    let d1 = std::fs::read(&m1).unwrap();
    let d2 = std::fs::read(&m2).unwrap();
    let again: Vec<u64> = (c1 + 1..=c2 + 2).map(|m| m % 64).collect();
    let only_before: Vec<u64> = (c0 + 3..=c1 + 1)
        .filter(|m| !again.contains(&(m % 64)))
        .collect();
    assert!(only_before.len() >= 2, "{c0} {c1} {c2}");
    for &m in &only_before {
        assert_eq!(counter(&d1, m), m, "Diff1 lacks counter {m}");
        assert_eq!(
            counter(&d2, m),
            0,
            "Diff2 holds counter {m}, written before Diff1"
        );
    }
    for m in c1 + 3..=c2 + 1 {
        assert_eq!(counter(&d2, m), m, "Diff2 lacks counter {m}");
    }
    for m in [&m1, &m2] {
        assert_eq!(std::fs::metadata(m).unwrap().len(), 64 << 20);
        let pages = allocated(m) / 4096;
        assert!((1..512).contains(&pages), "{pages} pages in a Diff");
    }

    // Full + Diff1 is the state at Diff1, + Diff2 the latest.
    std::fs::copy(&m0, &base).unwrap();
    let out = rebase_snap(&base, &m1);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(restore_walk(&s1, &base), Ok(c1 + 1));
    let out = rebase_snap(&base, &m2);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(restore_walk(&s2, &base), Ok(c2 + 1));
    // Without Diff1 the counter and read pages of its interval are stale: the guest says so.
    std::fs::copy(&m0, &base).unwrap();
    assert!(rebase_snap(&base, &m2).status.success());
    let out = restore_walk(&s2, &base).expect_err("Full + Diff2 without Diff1 passed the checks");
    assert!(out.contains("memwalk: bad"), "{out}");
    // A diff file of another length is refused with one line.
    let out = rebase_snap(&base, &s2);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    for f in [s0, m0, s1, m1, s2, m2, base, disk] {
        std::fs::remove_file(f).unwrap();
    }
}

/// The sectors the `blkloop` guest has seen completed, in order, from its console output `out` (whole
/// lines only: the guest may be paused in the middle of one).
fn acks(out: &str) -> Vec<u64> {
    let whole = &out[..out.rfind('\n').map_or(0, |i| i + 1)];
    whole
        .lines()
        .filter_map(|l| u64::from_str_radix(l.strip_prefix("blk: acked ")?, 16).ok())
        .collect()
}

/// Whether sector `n` of `disk` holds what `blkloop` writes there (the number `n` in every word).
fn sector_written(disk: &[u8], n: u64) -> bool {
    let s = &disk[n as usize * 512..(n as usize + 1) * 512];
    s.chunks(8).all(|w| w == n.to_le_bytes())
}

/// Restores the `blkloop` snapshot with its disk overridden by `disk`, running.
fn restore_onto(state: &Path, mem: &Path, disk: &Path) -> Vm {
    let drive = format!("data={}", disk.display());
    restore(state, mem, &["--drive-override", &drive])
}

/// A guest writing its disk as fast as it can is paused and snapshotted in the middle of the stream
/// (requests in flight are completed before the save): every write it saw acknowledged is in the disk
/// file. Two clones then restore the one snapshot side by side, each onto its own copy of the disk: each
/// carries on with the next sector, no acknowledgement skipped or repeated, writing only its own copy.
#[test]
fn a_snapshot_during_disk_writes_loses_no_acknowledged_write_and_clones_write_their_own_disks() {
    if !require_kvm() {
        return;
    }
    const SECTORS: u64 = 16000;
    let disk = tmp("disk");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len((SECTORS + 1) * 512))
        .unwrap();
    // io_uring and O_DIRECT: a write is really in flight (in the kernel) for a while after its notify.
    let disk_arg = format!(
        "{},id=data,io_engine=async,cache_type=direct",
        disk.display()
    );
    let cmdline = format!("blkloop={SECTORS}");
    let (vm, sock) = spawn_api(&[
        "--kernel",
        PVH,
        "--cmdline",
        &cmdline,
        "--mem",
        "64",
        "--disk",
        &disk_arg,
    ]);
    let c = Client::connect(&sock);
    assert!(
        wait_until(T, || acks(&vm.stdout()).len() >= 30),
        "the guest does not write: {}",
        vm.stdout()
    );
    // The snapshot follows the pause at once, so that a write may still be in flight.
    c.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
    let (state, mem) = (tmp("state"), tmp("mem"));
    assert_eq!(c.snapshot("Full", &state, &mem).status, 204);
    assert!(vm.output_settles(Duration::from_millis(150), T));
    vm.signal(libc::SIGKILL);
    let out_before = vm.stdout();
    let before = acks(&out_before);
    drop(vm.wait(T));
    let last = *before.last().unwrap();
    assert_eq!(before, (1..=last).collect::<Vec<_>>());
    assert!(last < SECTORS, "the stream ended before the snapshot");
    let at_snapshot = std::fs::read(&disk).unwrap();
    for n in 1..=last {
        assert!(
            sector_written(&at_snapshot, n),
            "acknowledged write {n} is not on the disk"
        );
    }

    let copies = [tmp("clone1"), tmp("clone2")];
    for c in &copies {
        std::fs::copy(&disk, c).unwrap();
    }
    let clones: Vec<Vm> = copies
        .iter()
        .map(|c| restore_onto(&state, &mem, c))
        .collect();
    for vm in &clones {
        assert!(
            wait_until(T, || acks(&vm.stdout()).len() >= 30),
            "a clone does not write: {}",
            vm.stdout()
        );
    }
    let mut lasts = vec![];
    for vm in clones {
        vm.signal(libc::SIGKILL);
        // The clone's console carries on the original's (a line cut by the pause ends there): every
        // acknowledgement once, in order, none lost or done twice across the restore.
        let all = acks(&(out_before.clone() + &vm.stdout()));
        drop(vm.wait(T));
        let end = *all.last().unwrap();
        assert!(
            end > last + 10,
            "the clone wrote too little: {end} after {last}"
        );
        assert_eq!(all, (1..=end).collect::<Vec<_>>());
        lasts.push(end);
    }
    for (copy, end) in copies.iter().zip(&lasts) {
        let d = std::fs::read(copy).unwrap();
        for n in 1..=*end {
            assert!(sector_written(&d, n), "clone write {n} missing");
        }
    }
    // The original disk saw nothing of the clones.
    assert_eq!(std::fs::read(&disk).unwrap(), at_snapshot);
    for f in [state, mem, disk].iter().chain(&copies) {
        std::fs::remove_file(f).unwrap();
    }
}

/// A guest answering on a TAP is snapshotted and its microvm killed; the restored one answers pings on
/// the same TAP (in a network namespace of its own), and again on another TAP given by
/// `--net-override`.
#[test]
fn the_restored_network_answers_pings_on_the_tap() {
    if !require_kvm() {
        return;
    }
    let Some(ns) = tests::Netns::new("snap") else {
        return;
    };
    let sock = TmpPath(tmp("net-api.sock"));
    let net = format!("tap={},id=eth0", tests::TAP);
    let vm = ns.spawn(&[
        "--kernel",
        PVH,
        "--mem",
        "32",
        "--net",
        &net,
        "--api-sock",
        sock.to_str().unwrap(),
        "--cmdline",
        "netecho netip=10.0.0.2 halt",
    ]);
    vm.wait_for_output("net: echo ready", T);
    ns.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "10", "10.0.0.2"]);
    let c = Client::connect(&sock);
    c.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
    // 40 datagrams sent to the paused guest: microvm reads from the TAP into the guest's free receive
    // buffers (up to 32), then one more frame, which waits in the device for a buffer (the rest stay in
    // the TAP's queue, dropped when the old microvm dies). The snapshot carries every frame read: the
    // restored guest echoes those in its memory and, once it posts buffers again, the one from the
    // device's saved state.
    let before = tap_tx_packets(&ns);
    let (tx, echoes) = std::sync::mpsc::channel();
    drop(ns.enter_thread(move || {
        let s = std::net::UdpSocket::bind("10.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        for i in 0..40 {
            s.send_to(format!("paused-{i}").as_bytes(), "10.0.0.2:7")
                .unwrap();
        }
        let mut buf = [0u8; 64];
        while let Ok(n) = tests::retry_interrupted(|| s.recv(&mut buf)) {
            if tx
                .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                .is_err()
            {
                break;
            }
        }
    }));
    let mut read = 0;
    assert!(
        wait_until(T, || {
            let now = tap_tx_packets(&ns) - before;
            let settled = now == read && now > 0;
            read = now;
            settled
        }),
        "microvm did not read the frames from the TAP"
    );
    // The guest ran out of receive buffers: the last frame read waits in the device.
    let r = c.request("GET", "/metrics", "");
    let m: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(
        m["net"]["eth0"]["rx_no_buffers"].as_u64() >= Some(1),
        "no frame waits for a buffer: {m}"
    );
    let (state, mem) = (tmp("net-state"), tmp("net-mem"));
    assert_eq!(c.snapshot("Full", &state, &mem).status, 204);
    vm.signal(libc::SIGKILL);
    drop(vm.wait(T));
    let restore = |extra: &[&str]| ns.spawn(&restore_args(&state, &mem, extra));
    let vm = restore(&[]);
    let mut got = Vec::new();
    while got.len() < read as usize {
        match echoes.recv_timeout(T) {
            Ok(p) => got.push(p),
            Err(_) => break,
        }
    }
    got.sort_by_key(|p| p[7..].parse::<u32>().unwrap());
    let want: Vec<String> = (0..read).map(|i| format!("paused-{i}")).collect();
    assert_eq!(got, want, "{}", vm.stdout());
    ns.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "10", "10.0.0.2"]);
    vm.signal(libc::SIGKILL);
    drop(vm.wait(T));
    // Another TAP, with the address moved to it.
    ip_in(&ns, &["link", "del", tests::TAP]);
    ip_in(&ns, &["tuntap", "add", "dev", "snaptap1", "mode", "tap"]);
    ip_in(&ns, &["addr", "add", "10.0.0.1/24", "dev", "snaptap1"]);
    ip_in(&ns, &["link", "set", "snaptap1", "up"]);
    let vm = restore(&["--net-override", "eth0=snaptap1"]);
    ns.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "10", "10.0.0.2"]);
    vm.signal(libc::SIGKILL);
    drop(vm.wait(T));
    for f in [state, mem] {
        std::fs::remove_file(f).unwrap();
    }
}

/// Frames the TAP has handed to its reader (microvm) so far.
fn tap_tx_packets(ns: &tests::Netns) -> u64 {
    let path = format!("/sys/class/net/{}/statistics/tx_packets", tests::TAP);
    let out = ns.command("cat").arg(&path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn ip_in(ns: &tests::Netns, args: &[&str]) {
    let mut a = vec!["-n", ns.name.as_str()];
    a.extend(args);
    tests::ip(&a);
}

/// A restored VM snapshotted again onto the very files it was restored from (its guest RAM is mapped from
/// that memory file): the new snapshot restores the later state. A Diff taken after the restore (no Full
/// in this process) holds the pages written since, and rebased onto the memory file restored from gives
/// the same state.
#[test]
fn a_restored_vm_snapshots_over_its_own_files() {
    if !require_kvm() {
        return;
    }
    let (state, mem, last) = counting_snapshot("1");
    let base = tmp("base");
    std::fs::copy(&mem, &base).unwrap();
    let (vm, sock) = spawn_api(&[]);
    let c = Client::connect(&sock);
    c.ok(
        "PUT",
        "/snapshot/load",
        &format!(
            r#"{{"snapshot_path": "{}", "mem_file_path": "{}", "resume_vm": true}}"#,
            state.display(),
            mem.display()
        ),
    );
    assert!(wait_until(T, || counts(&vm).last() >= Some(&(last + 3))));
    let second = c.pause_settled(&vm, T);
    let (diff_state, diff_mem) = (tmp("dstate"), tmp("dmem"));
    assert_eq!(c.snapshot("Diff", &diff_state, &diff_mem).status, 204);
    assert_eq!(c.snapshot("Full", &state, &mem).status, 204);
    // The old VM still runs correctly on its memory after the snapshot replaced the file under it.
    c.ok("PATCH", "/vm", r#"{"state": "Resumed"}"#);
    assert!(
        wait_until(T, || counts(&vm).last() >= Some(&(second + 3))),
        "the snapshotted VM stopped counting: {}",
        vm.stdout()
    );
    vm.signal(libc::SIGKILL);
    drop(vm.wait(T));
    assert_eq!(restore_first_count(&state, &mem), second + 1);
    let out = std::process::Command::new(tests::microvm_bin().with_file_name("rebase-snap"))
        .args(["--base-file", base.to_str().unwrap()])
        .args(["--diff-file", diff_mem.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(restore_first_count(&diff_state, &base), second + 1);
    for f in [state, mem, base, diff_state, diff_mem] {
        std::fs::remove_file(f).unwrap();
    }
}
