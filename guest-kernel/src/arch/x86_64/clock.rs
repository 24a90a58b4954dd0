//! The wall clock at boot, from the VMM: KVM's pvclock (MSR_KVM_WALL_CLOCK_NEW gives the real time at
//! which the kvmclock read 0, MSR_KVM_SYSTEM_TIME_NEW the kvmclock now) when the KVM CPUID leaves offer
//! KVM_FEATURE_CLOCKSOURCE2 (microvm, QEMU with KVM), else the CMOS RTC at ports 0x70/0x71 (QEMU's
//! microvm machine with `rtc=on`, also under TCG). The arithmetic is `kcore::rtc`.

use super::cpu::{cpuid, inb, outb, rdtsc, wrmsr};
use super::layout::{CMOS_DATA_PORT, CMOS_INDEX_PORT, KERNEL_BASE};
use core::cell::UnsafeCell;
use kcore::rtc::{pvclock_ns, CmosTime};

const KVM_CPUID_SIGNATURE: u32 = 0x4000_0000;
const KVM_CPUID_FEATURES: u32 = 0x4000_0001;
const KVM_FEATURE_CLOCKSOURCE2: u32 = 1 << 3;
const MSR_KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;

/// Where KVM writes `pvclock_wall_clock` (offset 0: version, sec, nsec) and `pvclock_vcpu_time_info`
/// (offset 32: version, pad, tsc_timestamp, system_time, tsc_to_system_mul, tsc_shift, flags).
#[repr(C, align(64))]
struct PvArea(UnsafeCell<[u32; 16]>);

// SAFETY: written by the hypervisor and read only at boot, on one CPU, with volatile reads.
unsafe impl Sync for PvArea {}

static PV: PvArea = PvArea(UnsafeCell::new([0; 16]));

fn pv_read(i: usize) -> u32 {
    // SAFETY: `i` < 16 (callers use fixed indices); the area is a static, so the pointer is valid,
    // and volatile because the hypervisor writes it behind the compiler's back.
    unsafe { core::ptr::read_volatile((PV.0.get() as *const u32).add(i)) }
}

fn pv_read64(i: usize) -> u64 {
    pv_read(i) as u64 | (pv_read(i + 1) as u64) << 32
}

/// Whether the hypervisor is KVM with the pvclock MSRs.
fn kvm_pvclock() -> bool {
    let (max, b, c, d) = cpuid(KVM_CPUID_SIGNATURE, 0);
    let sig = [b.to_le_bytes(), c.to_le_bytes(), d.to_le_bytes()];
    if sig.concat() != *b"KVMKVMKVM\0\0\0" || max < KVM_CPUID_FEATURES {
        return false;
    }
    cpuid(KVM_CPUID_FEATURES, 0).0 & KVM_FEATURE_CLOCKSOURCE2 != 0
}

/// The real time now from KVM's pvclock, in ns since the epoch.
fn pvclock_now() -> Option<u64> {
    let phys = PV.0.get() as u64 - KERNEL_BASE;
    // SAFETY: the KVM CPUID leaves say these MSRs exist; the addresses are a static of the kernel image
    // (identity: physical = virtual - KERNEL_BASE), 64-byte aligned so neither structure crosses a page.
    unsafe {
        wrmsr(MSR_KVM_WALL_CLOCK_NEW, phys);
        wrmsr(MSR_KVM_SYSTEM_TIME_NEW, (phys + 32) | 1);
    }
    let mut result = None;
    for _ in 0..10 {
        let (v1, w1) = (pv_read(8), pv_read(0));
        if v1 & 1 != 0 || w1 & 1 != 0 {
            continue;
        }
        let wall = pv_read(1) as u64 * 1_000_000_000 + pv_read(2) as u64;
        let tsc_timestamp = pv_read64(10);
        let system_time = pv_read64(12);
        let mul = pv_read(14);
        let shift = pv_read(15) as u8 as i8;
        let tsc = rdtsc();
        if pv_read(8) == v1 && pv_read(0) == w1 && v1 != 0 {
            result = Some(wall + pvclock_ns(system_time, tsc_timestamp, mul, shift, tsc));
            break;
        }
    }
    // SAFETY: disabling the per-CPU time area (bit 0 clear) is always valid.
    unsafe { wrmsr(MSR_KVM_SYSTEM_TIME_NEW, 0) };
    result
}

fn cmos(reg: u8) -> u8 {
    // Bit 7 of the index keeps NMIs masked, as Linux's CMOS_READ.
    outb(CMOS_INDEX_PORT, reg | 0x80);
    inb(CMOS_DATA_PORT)
}

fn cmos_reading() -> Option<CmosTime> {
    // Wait out an update in progress (status A bit 7: at most ~2 ms each second).
    let mut n = 0;
    while cmos(0x0a) & 0x80 != 0 {
        n += 1;
        if n > 1000 {
            return None;
        }
    }
    Some(CmosTime {
        sec: cmos(0x00),
        min: cmos(0x02),
        hour: cmos(0x04),
        day: cmos(0x07),
        month: cmos(0x08),
        year: cmos(0x09),
        century: cmos(0x32),
        status_b: cmos(0x0b),
    })
}

/// The real time now from the CMOS RTC (whole seconds), two equal readings in a row.
fn cmos_now() -> Option<u64> {
    let mut last = cmos_reading()?;
    for _ in 0..5 {
        let t = cmos_reading()?;
        if t == last {
            return t.unix_seconds().map(|s| s * 1_000_000_000);
        }
        last = t;
    }
    None
}

/// The real time now (ns since the epoch) and where it came from, or None when the VMM offers neither.
pub fn wall_clock_now() -> Option<(u64, &'static str)> {
    if kvm_pvclock() {
        if let Some(t) = pvclock_now() {
            return Some((t, "kvm-clock"));
        }
    }
    cmos_now().map(|t| (t, "cmos-rtc"))
}
