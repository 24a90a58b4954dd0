//! Shared helpers of the guest's user programs. Every program here is an ordinary Rust `std` program: the
//! image builder (`scripts/build-rootfs.sh`) links them statically (`-C target-feature=+crt-static`) for
//! the guest, and they run unchanged on the host.

/// The path init reads its message of the day from.
pub const MOTD_PATH: &str = "/etc/motd";

/// `reboot(2)` commands (linux/reboot.h).
pub mod reboot {
    pub const MAGIC1: u32 = 0xfee1_dead;
    pub const MAGIC2: u32 = 0x2812_1969;
    pub const CMD_RESTART: u32 = 0x0123_4567;
    pub const CMD_POWER_OFF: u32 = 0x4321_fedc;
}

/// A wait status as text: `exit N`, `signal N` or `stopped N`.
pub fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else if libc::WIFSTOPPED(status) {
        format!("stopped {}", libc::WSTOPSIG(status))
    } else {
        format!("status {status:#x}")
    }
}

/// Clocks and busy work for the scheduler programs (`cfs-share`, `wakeup-latency`).
pub mod sched {
    fn clock_ns(clock: libc::clockid_t) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    /// CLOCK_MONOTONIC in nanoseconds.
    pub fn monotonic_ns() -> u64 {
        clock_ns(libc::CLOCK_MONOTONIC)
    }

    /// Sleeps until CLOCK_MONOTONIC reaches `t` (ns).
    pub fn sleep_until_ns(t: u64) {
        let ts = libc::timespec {
            tv_sec: (t / 1_000_000_000) as libc::time_t,
            tv_nsec: (t % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: an absolute sleep on a valid timespec; EINTR just ends it early.
        unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
    }

    /// Burns CPU in user mode: `n` iterations of a loop the compiler cannot remove (~0.3 ns each).
    pub fn spin(n: u64) {
        let mut x = 0u64;
        for i in 0..n {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
        std::hint::black_box(x);
    }
}
