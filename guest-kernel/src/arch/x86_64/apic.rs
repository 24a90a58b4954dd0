//! Local APIC (xAPIC MMIO) and IOAPIC, the LAPIC timer (one-shot, armed by `time` for the next tick or
//! the next sleeper's deadline, whichever is first) and TSC/LAPIC calibration against PIT channel 2. The
//! legacy 8259 PICs are masked.

use core::sync::atomic::{AtomicU64, Ordering};

use super::cpu::{inb, outb, rdtsc};
use super::layout::*;

const LAPIC_ID: usize = 0x20;
const LAPIC_EOI: usize = 0xb0;
const LAPIC_SVR: usize = 0xf0;
const LAPIC_LVT_TIMER: usize = 0x320;
const LAPIC_TIMER_INIT: usize = 0x380;
const LAPIC_TIMER_CURRENT: usize = 0x390;
const LAPIC_TIMER_DIVIDE: usize = 0x3e0;
const MASKED: u32 = 1 << 16;

fn lapic_ptr(reg: usize) -> *mut u32 {
    (PHYS_OFFSET + LAPIC_PHYS + reg as u64) as *mut u32
}

fn lapic_read(reg: usize) -> u32 {
    // SAFETY: the LAPIC page is mapped by the direct map (below 4 GiB); registers are 32-bit aligned.
    unsafe { lapic_ptr(reg).read_volatile() }
}

fn lapic_write(reg: usize, v: u32) {
    // SAFETY: as for lapic_read.
    unsafe { lapic_ptr(reg).write_volatile(v) }
}

fn ioapic_write(reg: u32, v: u32) {
    let base = (PHYS_OFFSET + IOAPIC_PHYS) as *mut u32;
    // SAFETY: the IOAPIC window (IOREGSEL at +0, IOWIN at +0x10) is mapped by the direct map.
    unsafe {
        base.write_volatile(reg);
        base.add(4).write_volatile(v);
    }
}

/// Signals end of interrupt to the local APIC.
pub fn eoi() {
    lapic_write(LAPIC_EOI, 0);
}

/// Masks the 8259s, enables the local APIC with the spurious vector.
pub fn init() {
    outb(PIC1_DATA_PORT, 0xff);
    outb(PIC2_DATA_PORT, 0xff);
    lapic_write(LAPIC_SVR, 0x100 | SPURIOUS_VECTOR as u32);
    let _ = lapic_read(LAPIC_ID);
}

/// Routes ISA/GSI `irq` to vector `IRQ_VECTOR_BASE + irq` on this CPU (edge, active high).
pub fn route_irq(irq: u8) {
    let vector = IRQ_VECTOR_BASE as u32 + irq as u32;
    ioapic_write(0x10 + 2 * irq as u32 + 1, 0);
    ioapic_write(0x10 + 2 * irq as u32, vector);
}

/// Frequencies measured at boot.
#[derive(Clone, Copy, Debug)]
pub struct Calibration {
    pub tsc_hz: u64,
    pub lapic_hz: u64,
}

fn pit_read_ch0() -> u16 {
    outb(PIT_COMMAND_PORT, 0x00); // latch channel 0
    let lo = inb(PIT_CH0_PORT) as u16;
    let hi = inb(PIT_CH0_PORT) as u16;
    (hi << 8) | lo
}

/// Measures the TSC and the LAPIC timer (divide by 1) against `ms` milliseconds of PIT channel 0, three
/// times, and keeps the median of each. One round alone can be wrong by orders of magnitude on a loaded
/// nested host (seen once in CI: "lapic timer: 1064 kHz" for KVM's 1 GHz, so every tick came 1000 times
/// too early and the guest drowned in timer interrupts); the median of three outvotes one bad round.
/// Falls back to 1 GHz for both when there is no PIT (the count never moves).
pub fn calibrate(ms: u64) -> Calibration {
    let mut rounds = [(0, 0); 3];
    for r in rounds.iter_mut() {
        match measure(ms) {
            Some(c) => *r = c,
            None => {
                return Calibration {
                    tsc_hz: 1_000_000_000,
                    lapic_hz: 1_000_000_000,
                }
            }
        }
    }
    let median = |mut v: [u64; 3]| {
        v.sort_unstable();
        v[1]
    };
    Calibration {
        tsc_hz: median(rounds.map(|r| r.0)),
        lapic_hz: median(rounds.map(|r| r.1)),
    }
}

/// One round of [`calibrate`]: (TSC Hz, LAPIC timer Hz) over `ms` milliseconds of PIT channel 0, read
/// back with latch commands (ports 0x40/0x43 are emulated in the hypervisor, unlike the speaker gate at
/// 0x61); IRQ 0 stays masked. None when the PIT count does not move.
fn measure(ms: u64) -> Option<(u64, u64)> {
    let want = PIT_HZ * ms / 1000;
    lapic_write(LAPIC_TIMER_DIVIDE, 0xb);
    lapic_write(LAPIC_LVT_TIMER, MASKED);
    outb(PIT_COMMAND_PORT, 0x34); // channel 0, lobyte/hibyte, mode 2 (rate generator)
    outb(PIT_CH0_PORT, 0xff);
    outb(PIT_CH0_PORT, 0xff);
    let start = pit_read_ch0();
    let t0 = rdtsc();
    lapic_write(LAPIC_TIMER_INIT, u32::MAX);
    let mut elapsed = 0u64;
    let mut last = start;
    let mut reads = 0u32;
    while elapsed < want && reads < 200_000 {
        let now = pit_read_ch0();
        // The counter counts down and reloads at 0xffff.
        elapsed += last.wrapping_sub(now) as u64;
        last = now;
        reads += 1;
    }
    let t1 = rdtsc();
    let elapsed_lapic = (u32::MAX - lapic_read(LAPIC_TIMER_CURRENT)) as u64;
    lapic_write(LAPIC_TIMER_INIT, 0);
    if elapsed < want {
        return None;
    }
    Some((
        (t1 - t0) * PIT_HZ / elapsed,
        elapsed_lapic * PIT_HZ / elapsed,
    ))
}

/// LAPIC timer counts per nanosecond as a 32.32 fixed-point multiplier.
static LAPIC_PER_NS: AtomicU64 = AtomicU64::new(0);

/// Sets the LAPIC timer up in one-shot mode (divide by 1) for a timer of `lapic_hz`; nothing fires until
/// [`arm_timer`].
pub fn init_timer(lapic_hz: u64) {
    LAPIC_PER_NS.store(
        ((lapic_hz as u128) << 32).div_ceil(1_000_000_000) as u64,
        Ordering::Relaxed,
    );
    lapic_write(LAPIC_TIMER_DIVIDE, 0xb);
    lapic_write(LAPIC_LVT_TIMER, TIMER_VECTOR as u32);
}

/// Makes the timer interrupt fire once, `delta_ns` from now (rounded up to a whole count, at least one).
/// Replaces whatever was armed.
pub fn arm_timer(delta_ns: u64) {
    let count = (delta_ns as u128 * LAPIC_PER_NS.load(Ordering::Relaxed) as u128).div_ceil(1 << 32);
    lapic_write(LAPIC_TIMER_INIT, count.clamp(1, u32::MAX as u128) as u32);
}
