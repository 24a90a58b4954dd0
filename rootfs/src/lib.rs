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
