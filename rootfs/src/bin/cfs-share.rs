//! cfs-share T NICE...: forks one CPU-bound child per nice value, lets them run T seconds side by side,
//! and prints each child's share of the CPU time they got together. Each child measures itself with its
//! own CPU-time clock (CLOCK_THREAD_CPUTIME_ID) between a common start and end time, and reports it
//! through a pipe. On the host run it pinned to one CPU (`taskset -c 0 cfs-share 5 0 5`).
//!
//! Output: `cfs-share: nice N: P.PP% (C ms)` per child, in argument order.

use rootfs::sched::{cpu_time_ns, monotonic_ns, sleep_until_ns, spin};
use std::io::{Read, Write};
use std::os::fd::FromRawFd;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs: f64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let nices: Option<Vec<i32>> = args.iter().skip(1).map(|s| s.parse().ok()).collect();
    let nices = match nices {
        Some(n) if secs > 0.0 && !n.is_empty() => n,
        _ => {
            eprintln!("usage: cfs-share SECONDS NICE...");
            std::process::exit(2);
        }
    };
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into the array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        eprintln!("cfs-share: pipe: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    // Everyone starts together a little after the last fork, and stops at the same time.
    let start = monotonic_ns() + 200_000_000;
    let end = start + (secs * 1e9) as u64;
    let mut children = Vec::new();
    for (i, &nice) in nices.iter().enumerate() {
        // SAFETY: the child only runs its loop and exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            eprintln!("cfs-share: fork: {}", std::io::Error::last_os_error());
            std::process::exit(1);
        }
        if pid == 0 {
            // SAFETY: the child's own priority (it keeps the pipe's read end open: it exits soon anyway).
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
            sleep_until_ns(start);
            let c0 = cpu_time_ns();
            while monotonic_ns() < end {
                spin(1_000_000);
            }
            let used = cpu_time_ns() - c0;
            // SAFETY: fds[1] is the pipe's write end, owned by this process from here on.
            let mut w = unsafe { std::fs::File::from_raw_fd(fds[1]) };
            if let Err(e) = writeln!(w, "{i} {used}") {
                eprintln!("cfs-share: child {i}: writing the result: {e}");
            }
            // SAFETY: leave without running the parent's exit handlers.
            unsafe { libc::_exit(0) };
        }
        children.push(pid);
    }
    // SAFETY: the parent keeps only the read end.
    unsafe { libc::close(fds[1]) };
    // SAFETY: fds[0] is the pipe's read end, owned by the parent.
    let mut r = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut text = String::new();
    if let Err(e) = r.read_to_string(&mut text) {
        eprintln!("cfs-share: reading the results: {e}");
    }
    for pid in children {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if status != 0 {
            eprintln!(
                "cfs-share: child {pid}: {}",
                rootfs::describe_status(status)
            );
        }
    }
    let mut used = vec![0u64; nices.len()];
    for line in text.lines() {
        let mut f = line
            .split_whitespace()
            .map(|x| x.parse::<u64>().unwrap_or(0));
        if let (Some(i), Some(ns)) = (f.next(), f.next()) {
            if let Some(u) = used.get_mut(i as usize) {
                *u = ns;
            }
        }
    }
    let total: u64 = used.iter().sum::<u64>().max(1);
    for (nice, ns) in nices.iter().zip(&used) {
        // Integer percent with two decimals.
        let bp = ns * 10_000 / total;
        println!(
            "cfs-share: nice {nice}: {}.{:02}% ({} ms)",
            bp / 100,
            bp % 100,
            ns / 1_000_000
        );
    }
    let _ = std::io::stdout().flush();
}
