//! Time: the TSC (calibrated at boot) for timestamps and clocks, and the LAPIC timer tick (`jiffies`).

use core::sync::atomic::{AtomicU64, Ordering};

static TSC_BOOT: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds per TSC tick as a 32.32 fixed-point multiplier (0 until calibrated).
static TSC_MULT: AtomicU64 = AtomicU64::new(0);
static JIFFIES: AtomicU64 = AtomicU64::new(0);
static HZ: AtomicU64 = AtomicU64::new(100);

/// Records the TSC at the first instruction of Rust code.
pub fn init_early() {
    TSC_BOOT.store(crate::arch::cpu::rdtsc(), Ordering::Relaxed);
}

/// Sets the TSC frequency and the tick rate.
pub fn set_calibration(tsc_hz: u64, hz: u64) {
    TSC_MULT.store(
        ((1_000_000_000u128 << 32) / tsc_hz.max(1) as u128) as u64,
        Ordering::Relaxed,
    );
    HZ.store(hz, Ordering::Relaxed);
}

/// Converts a TSC tick count to nanoseconds.
pub fn tsc_to_ns(d: u64) -> u64 {
    ((d as u128 * TSC_MULT.load(Ordering::Relaxed) as u128) >> 32) as u64
}

/// Nanoseconds since boot (0 before calibration).
pub fn now_ns() -> u64 {
    let d = crate::arch::cpu::rdtsc().wrapping_sub(TSC_BOOT.load(Ordering::Relaxed));
    ((d as u128 * TSC_MULT.load(Ordering::Relaxed) as u128) >> 32) as u64
}

/// Called by the LAPIC timer interrupt.
pub fn tick() {
    // One CPU: a plain load and store (no locked instruction to emulate).
    JIFFIES.store(JIFFIES.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// Timer interrupts since the timer started.
pub fn jiffies() -> u64 {
    JIFFIES.load(Ordering::Relaxed)
}

/// The tick rate.
pub fn hz() -> u64 {
    HZ.load(Ordering::Relaxed)
}

/// Wall-clock time: boot time is taken as the epoch until an RTC driver exists.
pub fn realtime_ns() -> u64 {
    now_ns()
}
