//! wakeup-latency [HOGS [SLEEPS]]: starts HOGS CPU-bound children (default 2), then sleeps 10 ms
//! SLEEPS times (default 300) and measures how late each wakeup is: the time read after the sleep minus
//! the time asked for (each sleep is absolute, `clock_nanosleep(TIMER_ABSTIME)` until now + 10 ms, so
//! the cost of entering the sleep is not counted). Prints the median, 99th percentile and maximum. On the host run it pinned to one
//! CPU (`taskset -c 0 wakeup-latency`).
//!
//! Output: `wakeup-latency: N hogs, M sleeps of 10 ms: p50 A us, p99 B us, max C us`.

use rootfs::sched::{monotonic_ns, sleep_until_ns, spin};
use std::io::Write;

const SLEEP_NS: u64 = 10_000_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let hogs: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(2);
    let sleeps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(300);
    let mut children = Vec::new();
    for _ in 0..hogs {
        // SAFETY: the child only spins until it is killed.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            loop {
                spin(10_000_000);
            }
        }
        if pid < 0 {
            eprintln!("wakeup-latency: fork: {}", std::io::Error::last_os_error());
            break;
        }
        children.push(pid);
    }
    let mut late = Vec::with_capacity(sleeps);
    for _ in 0..sleeps {
        let intended = monotonic_ns() + SLEEP_NS;
        sleep_until_ns(intended);
        late.push(monotonic_ns().saturating_sub(intended));
    }
    for &pid in &children {
        // SAFETY: killing and reaping our own children.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    late.sort_unstable();
    let pct = |p: usize| late[(late.len() * p / 100).min(late.len() - 1)] / 1000;
    if late.is_empty() {
        eprintln!("wakeup-latency: no samples");
        std::process::exit(2);
    }
    println!(
        "wakeup-latency: {} hogs, {} sleeps of 10 ms: p50 {} us, p99 {} us, max {} us",
        children.len(),
        late.len(),
        pct(50),
        pct(99),
        late[late.len() - 1] / 1000
    );
    let _ = std::io::stdout().flush();
}
