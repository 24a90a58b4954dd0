//! Time: the TSC (calibrated at boot) for timestamps and clocks, and the timer interrupt.
//!
//! The LAPIC timer runs one-shot: it is armed for the next tick (every 1/HZ s, counted in `jiffies`) or
//! for the earliest sleeper's deadline when that comes first, so a task sleeping 10 ms wakes at its
//! deadline rather than at the next tick after it (up to 1/HZ late).

use core::sync::atomic::{AtomicU64, Ordering};

static TSC_BOOT: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds per TSC tick as a 32.32 fixed-point multiplier (0 until calibrated).
static TSC_MULT: AtomicU64 = AtomicU64::new(0);
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static JIFFIES: AtomicU64 = AtomicU64::new(0);
static HZ: AtomicU64 = AtomicU64::new(100);
/// When the next tick is due, and when the timer is armed to fire (ns since boot).
static NEXT_TICK: AtomicU64 = AtomicU64::new(0);
static ARMED_AT: AtomicU64 = AtomicU64::new(u64::MAX);

/// Records the TSC at the first instruction of Rust code.
pub fn init_early() {
    TSC_BOOT.store(crate::arch::cpu::rdtsc(), Ordering::Relaxed);
}

/// Sets the TSC frequency and the tick rate.
pub fn set_calibration(tsc_hz: u64, hz: u64) {
    TSC_HZ.store(tsc_hz, Ordering::Relaxed);
    TSC_MULT.store(
        ((1_000_000_000u128 << 32) / tsc_hz.max(1) as u128) as u64,
        Ordering::Relaxed,
    );
    HZ.store(hz, Ordering::Relaxed);
}

/// The calibrated TSC frequency (Hz).
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Converts a TSC tick count to nanoseconds.
pub fn tsc_to_ns(d: u64) -> u64 {
    ((d as u128 * TSC_MULT.load(Ordering::Relaxed) as u128) >> 32) as u64
}

/// Nanoseconds since boot (0 before calibration).
pub fn now_ns() -> u64 {
    tsc_now_ns(crate::arch::cpu::rdtsc())
}

/// Nanoseconds since boot at TSC value `tsc` (a caller that has read the TSC already).
pub fn tsc_now_ns(tsc: u64) -> u64 {
    tsc_to_ns(tsc.wrapping_sub(TSC_BOOT.load(Ordering::Relaxed)))
}

/// Starts the timer: the first tick one period from now.
pub fn start_timer(lapic_hz: u64) {
    crate::arch::apic::init_timer(lapic_hz);
    let first = now_ns() + tick_ns();
    NEXT_TICK.store(first, Ordering::Relaxed);
    arm_at(first);
}

/// The tick period in ns.
fn tick_ns() -> u64 {
    1_000_000_000 / hz().max(1)
}

/// Arms the timer to fire at `at` (ns since boot).
fn arm_at(at: u64) {
    ARMED_AT.store(at, Ordering::Relaxed);
    crate::arch::apic::arm_timer(at.saturating_sub(now_ns()));
}

/// Called by the timer interrupt: true if a tick is due (then `jiffies` advanced), false if the timer
/// fired only for a sleeper's deadline. The caller re-arms with [`rearm`].
pub fn timer_fired(now: u64) -> bool {
    let next = NEXT_TICK.load(Ordering::Relaxed);
    if now < next {
        return false;
    }
    // One CPU: plain loads and stores (no locked instruction to emulate). A tick the host kept us
    // from taking in time is not made up: the next one is a period from now.
    JIFFIES.store(JIFFIES.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    let period = tick_ns();
    let after = next + period;
    NEXT_TICK.store(
        if after > now { after } else { now + period },
        Ordering::Relaxed,
    );
    true
}

/// Re-arms the timer after it fired: for the next tick, or `wake` (the earliest sleeper's deadline,
/// u64::MAX for none) if that is sooner.
pub fn rearm(wake: u64) {
    arm_at(NEXT_TICK.load(Ordering::Relaxed).min(wake));
}

/// A sleeper's deadline: fire at `at` if the timer is armed for later.
pub fn wake_by(at: u64) {
    if at < ARMED_AT.load(Ordering::Relaxed) {
        arm_at(at);
    }
}

/// Timer interrupts since the timer started.
pub fn jiffies() -> u64 {
    JIFFIES.load(Ordering::Relaxed)
}

/// The tick rate.
pub fn hz() -> u64 {
    HZ.load(Ordering::Relaxed)
}

/// CLOCK_REALTIME minus the time since boot (ns): set at boot from the VMM's wall clock
/// ([`init_wall_clock`]) and by clock_settime.
static REALTIME_OFFSET: AtomicU64 = AtomicU64::new(0);

/// Reads the wall clock the VMM offers (kvm-clock, else the CMOS RTC); without one, CLOCK_REALTIME
/// starts at the epoch. Returns the source's name.
pub fn init_wall_clock() -> Option<&'static str> {
    let (wall, source) = crate::arch::clock::wall_clock_now()?;
    crate::arch::random_stir(wall);
    REALTIME_OFFSET.store(wall.saturating_sub(now_ns()), Ordering::Relaxed);
    Some(source)
}

/// Wall-clock time (CLOCK_REALTIME), ns since the epoch.
pub fn realtime_ns() -> u64 {
    now_ns().wrapping_add(REALTIME_OFFSET.load(Ordering::Relaxed))
}

/// Sets CLOCK_REALTIME to `ns` since the epoch (clock_settime, settimeofday).
pub fn set_realtime_ns(ns: u64) {
    REALTIME_OFFSET.store(ns.wrapping_sub(now_ns()), Ordering::Relaxed);
}
