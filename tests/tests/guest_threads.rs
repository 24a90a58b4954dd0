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
//! leader that exits before its thread leaves its children to the group), and
//! the Rust program `rthreads` (std::thread with Mutex, Condvar, mpsc, Barrier).
//!
//! The artifacts come from `scripts/build-guest-kernel.sh` and `scripts/build-rootfs.sh`; without them
//! the tests skip (and fail when `CI` is set).

use std::process::Command;
use std::time::Duration;

use tests::{run, GuestImages};

const T: Duration = Duration::from_secs(120);

/// The lines of `out` that start with `prefix`.
fn lines_with<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.starts_with(prefix)).collect()
}

/// Runs `/bin/PROG` on the host and in the guest and compares the lines starting with `PREFIX: `;
/// the program must end with `PREFIX: done` and exit 0 on both. Returns the guest's console (None when
/// the artifacts are missing).
fn same_on_host_and_guest(prog: &str, prefix: &str) -> Option<String> {
    let images = GuestImages::for_vm()?;
    let bin = images.host_program(&format!("bin/{prog}"));
    let host = Command::new(&bin).output().unwrap();
    assert!(host.status.success(), "{prog} on the host: {host:?}");
    let host = String::from_utf8_lossy(&host.stdout).into_owned();
    let prefix = format!("{prefix}: ");
    assert!(
        host.contains(&format!("{prefix}done")),
        "{prog} on the host:\n{host}"
    );
    let cmdline = format!("console=ttyS0 root=/dev/vda -- run /bin/{prog}");
    let guest = run(&images.args(&[], &cmdline), T);
    assert_eq!(
        lines_with(&guest.stdout, &prefix),
        lines_with(&host, &prefix),
        "{prog}: guest console:\n{}",
        guest.stdout
    );
    assert!(
        guest
            .stdout
            .contains(&format!("init: /bin/{prog} exited (exit 0)")),
        "{}",
        guest.stdout
    );
    assert!(
        !guest.stdout.contains("not implemented"),
        "a system call is missing:\n{}",
        guest.stdout
    );
    assert_eq!(guest.code, Some(0), "{}", guest.stdout);
    Some(guest.stdout)
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
