//! cfs-share T NICE...: forks one CPU-bound child per nice value, lets them run T seconds side by side,
//! and prints each child's share of the CPU time they got together. The times come from each child's
//! own CPU-time clock (`clock_getcpuclockid`), read by the parent at a common start and end instant;
//! then the children are killed. On the host run it pinned to one CPU (`taskset -c 0 cfs-share 5 0 5`).
//!
//! Output: `cfs-share: nice N: P.PP% (C ms)` per child, in argument order.

use rootfs::sched::{monotonic_ns, sleep_until_ns, spin};
use std::io::Write;

/// The CPU time (ns) of process `pid` from its CPU-time clock.
fn cpu_time_of(pid: libc::pid_t) -> Option<u64> {
    let mut clock: libc::clockid_t = 0;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both calls write one value into our locals.
    unsafe {
        if libc::clock_getcpuclockid(pid, &mut clock) != 0
            || libc::clock_gettime(clock, &mut ts) != 0
        {
            return None;
        }
    }
    Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

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
    let mut children = Vec::new();
    for &nice in &nices {
        // SAFETY: the child only sets its priority and spins until it is killed.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            eprintln!("cfs-share: fork: {}", std::io::Error::last_os_error());
            std::process::exit(1);
        }
        if pid == 0 {
            // SAFETY: the child's own priority.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
            loop {
                spin(10_000_000);
            }
        }
        children.push(pid);
    }
    // Let them settle, then measure T seconds.
    sleep_until_ns(monotonic_ns() + 100_000_000);
    let before: Vec<Option<u64>> = children.iter().map(|&p| cpu_time_of(p)).collect();
    sleep_until_ns(monotonic_ns() + (secs * 1e9) as u64);
    let after: Vec<Option<u64>> = children.iter().map(|&p| cpu_time_of(p)).collect();
    for &pid in &children {
        // SAFETY: killing and reaping our own children.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    let used: Vec<u64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| match (b, a) {
            (Some(b), Some(a)) => a.saturating_sub(*b),
            _ => 0,
        })
        .collect();
    if before.iter().chain(&after).any(Option::is_none) {
        eprintln!("cfs-share: cannot read a child's CPU-time clock");
        std::process::exit(1);
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
