//! Local APIC (xAPIC MMIO) and IOAPIC, the LAPIC timer (periodic at HZ) and TSC/LAPIC calibration against
//! PIT channel 2. The legacy 8259 PICs are masked.

use super::cpu::{inb, outb, rdtsc};
use super::layout::*;

const LAPIC_ID: usize = 0x20;
const LAPIC_EOI: usize = 0xb0;
const LAPIC_SVR: usize = 0xf0;
const LAPIC_LVT_TIMER: usize = 0x320;
const LAPIC_TIMER_INIT: usize = 0x380;
const LAPIC_TIMER_CURRENT: usize = 0x390;
const LAPIC_TIMER_DIVIDE: usize = 0x3e0;
const TIMER_PERIODIC: u32 = 1 << 17;
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

/// Measures the TSC and the LAPIC timer (divide by 1) against `ms` milliseconds of PIT channel 2.
/// Falls back to 1 GHz for both when there is no PIT (the gate bit never changes).
pub fn calibrate(ms: u64) -> Calibration {
    let count = PIT_HZ * ms / 1000;
    lapic_write(LAPIC_TIMER_DIVIDE, 0xb);
    lapic_write(LAPIC_LVT_TIMER, MASKED);
    let gate = inb(PIT_GATE_PORT) & !0x03;
    outb(PIT_GATE_PORT, gate | 0x01);
    outb(PIT_COMMAND_PORT, 0xb0); // channel 2, lobyte/hibyte, mode 0
    outb(PIT_CH2_PORT, count as u8);
    outb(PIT_CH2_PORT, (count >> 8) as u8);
    outb(PIT_GATE_PORT, gate);
    outb(PIT_GATE_PORT, gate | 0x01);
    let t0 = rdtsc();
    lapic_write(LAPIC_TIMER_INIT, u32::MAX);
    let mut spins = 0u64;
    while inb(PIT_GATE_PORT) & 0x20 == 0 && spins < 10_000_000 {
        spins += 1;
    }
    let t1 = rdtsc();
    let elapsed_lapic = (u32::MAX - lapic_read(LAPIC_TIMER_CURRENT)) as u64;
    lapic_write(LAPIC_TIMER_INIT, 0);
    if spins == 0 || t1 - t0 < 1000 {
        return Calibration { tsc_hz: 1_000_000_000, lapic_hz: 1_000_000_000 };
    }
    Calibration {
        tsc_hz: (t1 - t0) * 1000 / ms,
        lapic_hz: elapsed_lapic * 1000 / ms,
    }
}

/// Starts the periodic LAPIC timer at `hz` interrupts per second.
pub fn start_timer(lapic_hz: u64, hz: u64) {
    let init = (lapic_hz / hz.max(1)).clamp(1, u32::MAX as u64) as u32;
    lapic_write(LAPIC_TIMER_DIVIDE, 0xb);
    lapic_write(LAPIC_LVT_TIMER, TIMER_VECTOR as u32 | TIMER_PERIODIC);
    lapic_write(LAPIC_TIMER_INIT, init);
}
