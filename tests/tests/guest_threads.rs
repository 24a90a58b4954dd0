//! Threads, futexes and memory protection on the project's guest kernel (issue #16), checked
//! differentially: the C programs in `rootfs/c/` are built static with glibc (`NAME-glibc`) and with
//! musl (`NAME-musl`) by `scripts/build-rootfs.sh`, run on the host and in the guest (as init's child:
//! `init -- run /bin/NAME-LIBC`), and must print the same lines: `mprotect` (protection, guard pages,
//! fault codes, splitting and merging areas, copy-on-write), `mmapfile` (file mappings, madvise,
//! mincore, msync, mremap, pread64), `sigwait` (rt_sigsuspend, rt_sigtimedwait, sigpending, tkill),
//! `threads` (pthreads: mutex and condvar counter, semaphores, join/detach, signals to a thread and
//! to the process, fork and exit from a thread, a robust mutex whose owner died, /proc/PID/task,
//! futex errors), `uaccess` (a buffer unmapped by one thread while another's read, write or socket
//! call copies to or from it: a count or EFAULT, never a kernel fault), `execthread` (execve from a
//! thread: the caller takes the group's pid, the other threads are gone, the parent sees one exit; a
//! leader that exits before its thread leaves its children to the group), `groupstop` (group-wide
//! stop and continue: SIGSTOP/SIGTSTP to the process or one thread stop all its threads, blocked
//! and spinning ones, with the leader alive or gone; wait4 reports the stop and the continue once),
//! `schedattr` (sched_setattr/sched_getattr on one thread: nice and policy, the KEEP flags, Linux's
//! errors), and the Rust program `rthreads` (std::thread with Mutex, Condvar, mpsc, Barrier). A threaded job
//! under busybox ash's job control (Ctrl-Z, jobs, bg, kill -TSTP %1, fg) stops and continues as a
//! whole.
//!
//! The artifacts come from `scripts/build-guest-kernel.sh` and `scripts/build-rootfs.sh`; without them
//! the tests skip (and fail when `CI` is set).

use std::time::Duration;

use tests::{assert_same_lines_with, host_output, wait_until, GuestImages, Vm};

const T: Duration = Duration::from_secs(120);

/// Runs `/bin/PROG` on the host and in the guest and compares the lines starting with `PREFIX: `;
/// the program must end with `PREFIX: done` and exit 0 on both. Returns the guest's console (None when
/// the artifacts are missing).
fn same_on_host_and_guest(prog: &str, prefix: &str) -> Option<String> {
    let images = GuestImages::for_vm()?;
    let mut host = tests::host_command(images.host_program(&format!("bin/{prog}")));
    let host = host_output(&mut host, &format!("{prefix}: done"));
    let guest = images.run_program(&[], &format!("/bin/{prog}"), T);
    assert_same_lines_with(&format!("{prefix}: "), &guest.stdout, &host);
    guest.assert_no_missing_syscall();
    guest.assert_ran_to_the_end(&format!("/bin/{prog}"));
    Some(guest.stdout)
}

/// MAP_SHARED|MAP_ANONYMOUS across fork (pages touched before and after it, mprotect, madvise,
/// a grandchild), a shared futex and process-shared pthread mutex and condition variable.
#[test]
fn shared_anonymous_memory_and_futexes_across_fork_match_the_host_glibc() {
    let _ = same_on_host_and_guest("shmem-glibc", "shmem");
}

#[test]
fn shared_anonymous_memory_and_futexes_across_fork_match_the_host_musl() {
    let _ = same_on_host_and_guest("shmem-musl", "shmem");
}

#[test]
fn mprotect_and_guard_pages_match_the_host_glibc() {
    let _ = same_on_host_and_guest("mprotect-glibc", "mprotect");
}

#[test]
fn mprotect_and_guard_pages_match_the_host_musl() {
    let _ = same_on_host_and_guest("mprotect-musl", "mprotect");
}

#[test]
fn file_mappings_madvise_mremap_match_the_host_glibc() {
    let _ = same_on_host_and_guest("mmapfile-glibc", "mmapfile");
}

#[test]
fn file_mappings_madvise_mremap_match_the_host_musl() {
    let _ = same_on_host_and_guest("mmapfile-musl", "mmapfile");
}

#[test]
fn sigsuspend_and_sigtimedwait_match_the_host_glibc() {
    let _ = same_on_host_and_guest("sigwait-glibc", "sigwait");
}

#[test]
fn sigsuspend_and_sigtimedwait_match_the_host_musl() {
    let _ = same_on_host_and_guest("sigwait-musl", "sigwait");
}

#[test]
fn posix_threads_match_the_host_glibc() {
    let _ = same_on_host_and_guest("threads-glibc", "threads");
}

#[test]
fn posix_threads_match_the_host_musl() {
    let _ = same_on_host_and_guest("threads-musl", "threads");
}

#[test]
fn rust_std_threads_match_the_host() {
    let _ = same_on_host_and_guest("rthreads", "rthreads");
}

/// The blocked pipe write and read of `uaccess` resume after their buffer was unmapped: the kernel's
/// copy faults and stops at its fixup (counted at power-off), and the calls return a count or EFAULT.
fn unmapped_during_a_copy(prog: &str) {
    let Some(out) = same_on_host_and_guest(prog, "uaccess") else {
        return;
    };
    let fixups: u64 = out
        .lines()
        .find_map(|l| l.split("fixup: ").nth(1))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(fixups >= 2, "no user copy resumed at its fixup:\n{out}");
}

#[test]
fn a_buffer_unmapped_during_a_copy_is_efault_glibc() {
    unmapped_during_a_copy("uaccess-glibc");
}

#[test]
fn a_buffer_unmapped_during_a_copy_is_efault_musl() {
    unmapped_during_a_copy("uaccess-musl");
}

#[test]
fn execve_from_a_thread_and_an_early_leader_exit_match_the_host_glibc() {
    let _ = same_on_host_and_guest("execthread-glibc", "execthread");
}

#[test]
fn execve_from_a_thread_and_an_early_leader_exit_match_the_host_musl() {
    let _ = same_on_host_and_guest("execthread-musl", "execthread");
}

#[test]
fn sched_setattr_and_getattr_per_thread_match_the_host_glibc() {
    let _ = same_on_host_and_guest("schedattr-glibc", "schedattr");
}

#[test]
fn sched_setattr_and_getattr_per_thread_match_the_host_musl() {
    let _ = same_on_host_and_guest("schedattr-musl", "schedattr");
}

#[test]
fn group_stop_and_continue_match_the_host_glibc() {
    let _ = same_on_host_and_guest("groupstop-glibc", "groupstop");
}

#[test]
fn group_stop_and_continue_match_the_host_musl() {
    let _ = same_on_host_and_guest("groupstop-musl", "groupstop");
}

/// Types `line` into the guest's ash and returns the console from there to the marker that the
/// `echo` typed after it prints (the marker's echo differs from its output, see guest_busybox.rs).
fn ash_run(vm: &mut Vm, n: &mut u32, line: &str) -> String {
    *n += 1;
    let mark = format!("@{}", 1000 + *n);
    let before = vm.stdout().len();
    vm.send(format!("{line}; echo @$((1000 + {}))\r", *n).as_bytes());
    assert!(
        wait_until(T, || vm.stdout()[before..].contains(&mark)),
        "typed {line:?}; console:\n{}",
        vm.stdout()
    );
    let out = vm.stdout()[before..].replace('\r', "");
    out[..out.find(&mark).unwrap()].to_string()
}

/// Waits until the console shows `text` after byte `since`.
fn shown_after(vm: &Vm, since: usize, text: &str) {
    assert!(
        wait_until(T, || vm.stdout()[since..].contains(text)),
        "waited for {text:?}; console:\n{}",
        vm.stdout()
    );
}

/// The states of groupstop's threads as `/proc/*/task/*/stat` show them: "T T T T" when stopped.
const STATES: &str =
    "awk '/groupstop/ {printf \"%s \", $3} END {print \"|\"}' /proc/[0-9]*/task/*/stat";

#[test]
fn a_threaded_job_stops_and_continues_under_ash_job_control() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let mut vm = Vm::spawn(&images.run_args(&[], "/bin/ash"));
    vm.wait_for_output("/ # ", T);
    let mut n = 0;
    // The job: four threads until /tmp/groupstop-go exists.
    let before = vm.stdout().len();
    vm.send(b"/bin/groupstop-musl job\r");
    shown_after(&vm, before, "groupstop: job ready");
    // Ctrl-Z: SIGTSTP to the foreground group stops all four threads; ash sees the stop (wait4).
    let before = vm.stdout().len();
    vm.send(b"\x1a");
    shown_after(&vm, before, "Stopped");
    let out = ash_run(&mut vm, &mut n, "jobs");
    assert!(
        out.lines()
            .any(|l| l.contains("Stopped") && l.contains("groupstop")),
        "{out}"
    );
    let out = ash_run(&mut vm, &mut n, STATES);
    assert!(out.contains("T T T T |"), "{out}");
    // bg: SIGCONT continues every thread; the job runs in the background.
    let out = ash_run(&mut vm, &mut n, "bg");
    assert!(out.contains("groupstop"), "{out}");
    let mut states = String::new();
    let running = wait_until(T, || {
        states = ash_run(&mut vm, &mut n, STATES);
        states
            .lines()
            .any(|l| l.ends_with('|') && !l.contains('T') && l.len() > 4)
    });
    assert!(running, "{states}");
    let out = ash_run(&mut vm, &mut n, "jobs");
    assert!(
        out.lines()
            .any(|l| l.contains("Running") && l.contains("groupstop")),
        "{out}"
    );
    // SIGTSTP to the background job (kill %1) stops it again, all four threads.
    ash_run(&mut vm, &mut n, "kill -TSTP %1");
    let mut out = String::new();
    let stopped = wait_until(T, || {
        out = ash_run(&mut vm, &mut n, "jobs");
        out.lines()
            .any(|l| l.contains("Stopped") && l.contains("groupstop"))
    });
    assert!(stopped, "{out}");
    let out = ash_run(&mut vm, &mut n, STATES);
    assert!(out.contains("T T T T |"), "{out}");
    // fg continues it in the foreground, where it finishes.
    let out = ash_run(
        &mut vm,
        &mut n,
        "touch /tmp/groupstop-go; fg; echo status=$?",
    );
    assert!(out.contains("groupstop: job threads joined 3"), "{out}");
    assert!(out.contains("status=0"), "{out}");
    vm.send(b"exit\r");
    let out = vm.wait(T);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
}
