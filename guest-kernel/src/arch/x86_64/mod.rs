//! Everything specific to x86-64: boot entry, CPU tables, traps, APIC, port I/O, user entry.
//! All inline assembly and MSR accesses of the kernel live under this module.

pub mod apic;
mod boot;
pub mod clock;
pub mod cpu;
pub mod gdt;
pub mod interrupts;
pub mod layout;
pub mod mem;
pub mod pvh;
pub mod switch;
pub mod trap;

use cpu::{cpuid, rdmsr, wrmsr, MSR_EFER, MSR_LSTAR, MSR_SFMASK, MSR_STAR};
use layout::{KERNEL_CS, USER_DS};

/// Sets up GDT/TSS, IDT and the `syscall` MSRs.
pub fn init_cpu() {
    gdt::init();
    trap::init();
    let (_, _, _, edx) = cpuid(0x8000_0001, 0);
    if edx & (1 << 11) != 0 {
        // SAFETY: the CPU has SYSCALL; STAR/LSTAR/SFMASK point at our entry and selectors.
        unsafe {
            wrmsr(MSR_EFER, rdmsr(MSR_EFER) | 1);
            wrmsr(
                MSR_STAR,
                ((KERNEL_CS as u64) << 32) | (((USER_DS as u64 - 8) & !3) << 48),
            );
            wrmsr(MSR_LSTAR, trap::syscall_entry_addr());
            // Clear IF, TF, DF, AC on entry.
            wrmsr(MSR_SFMASK, 0x4_0700);
        }
    }
}

extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
}

/// The kernel image's virtual address range (from the linker script).
pub fn kernel_image() -> (u64, u64) {
    // Only the addresses of the linker-script symbols are taken (no read).
    (
        &raw const __kernel_start as u64,
        &raw const __kernel_end as u64,
    )
}

/// The value in MSR_FS_BASE: every write goes through [`set_fs_base`], and user mode cannot write it
/// (CR4.FSGSBASE is off), so the kernel knows it without an `rdmsr`. (A user `mov` to %fs could change
/// the base behind this; Linux assumes the same of a null selector, and no libc does it.)
static FS_BASE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Sets the FS base (arch_prctl ARCH_SET_FS, exec, a context switch); no MSR write when it already
/// holds `v` (a wrmsr is one of the costlier instructions to emulate).
pub fn set_fs_base(v: u64) {
    use core::sync::atomic::Ordering;
    if FS_BASE.load(Ordering::Relaxed) == v {
        return;
    }
    FS_BASE.store(v, Ordering::Relaxed);
    // SAFETY: FS base only affects user-mode TLS accesses; any canonical value is fine.
    unsafe { wrmsr(cpu::MSR_FS_BASE, v) }
}

/// The FS base.
pub fn fs_base() -> u64 {
    FS_BASE.load(core::sync::atomic::Ordering::Relaxed)
}

/// Whether the CPU has NX (EFER.NXE was set by the boot code).
pub fn has_nx() -> bool {
    rdmsr(MSR_EFER) & (1 << 11) != 0
}

/// AT_HWCAP: CPUID leaf 1 EDX, as Linux reports it.
pub fn hwcap() -> u64 {
    cpuid(1, 0).3 as u64
}

/// Reads the current stack and frame pointer (for panic reports).
pub fn current_sp_bp() -> (u64, u64) {
    let (sp, bp): (u64, u64);
    // SAFETY: reads two registers.
    unsafe {
        core::arch::asm!("mov {}, rsp", "mov {}, rbp", out(reg) sp, out(reg) bp, options(nomem, nostack))
    }
    (sp, bp)
}

/// Reads an address in the kernel half that nothing maps (the `panic=pagefault` self-test of the kernel
/// page-fault report).
pub fn touch_unmapped_kernel_page() {
    // SAFETY: deliberately faults: the #PF handler reports it and panics; the read never completes.
    unsafe { core::ptr::read_volatile(0xffff_c000_dead_0000 as *const u64) };
}

/// The kernel's generator (`kcore::rand`): the wall clock at boot and the TSC at every use are stirred
/// in. RDRAND is not used: the KVM emulator that runs kernel mode on this host does not execute it.
static RNG: crate::sync::KCell<kcore::rand::Rng> = crate::sync::KCell::new(kcore::rand::Rng::new());

/// Stirs `entropy` (e.g. the wall clock at boot) into the generator.
pub fn random_stir(entropy: u64) {
    RNG.borrow_mut().stir(entropy);
}

/// Random bytes (getrandom, /dev/urandom, AT_RANDOM): not cryptographically strong (see [`RNG`]).
pub fn random_bytes(out: &mut [u8]) {
    let mut r = RNG.borrow_mut();
    r.stir(cpu::rdtsc());
    r.fill(out);
}

/// Names of CPUID leaf 1 EDX bits 0..31, ECX bits 0..31 and leaf 7 EBX bits 0..31 as Linux's
/// /proc/cpuinfo spells them (empty: not shown).
const FLAGS_1_EDX: [&str; 32] = [
    "fpu", "vme", "de", "pse", "tsc", "msr", "pae", "mce", "cx8", "apic", "", "sep", "mtrr", "pge",
    "mca", "cmov", "pat", "pse36", "pn", "clflush", "", "dts", "acpi", "mmx", "fxsr", "sse",
    "sse2", "ss", "ht", "tm", "ia64", "pbe",
];
const FLAGS_1_ECX: [&str; 32] = [
    "pni",
    "pclmulqdq",
    "dtes64",
    "monitor",
    "ds_cpl",
    "vmx",
    "smx",
    "est",
    "tm2",
    "ssse3",
    "cid",
    "sdbg",
    "fma",
    "cx16",
    "xtpr",
    "pdcm",
    "",
    "pcid",
    "dca",
    "sse4_1",
    "sse4_2",
    "x2apic",
    "movbe",
    "popcnt",
    "tsc_deadline_timer",
    "aes",
    "xsave",
    "",
    "avx",
    "f16c",
    "rdrand",
    "hypervisor",
];
const FLAGS_7_EBX: [&str; 32] = [
    "fsgsbase",
    "",
    "sgx",
    "bmi1",
    "hle",
    "avx2",
    "",
    "smep",
    "bmi2",
    "erms",
    "invpcid",
    "rtm",
    "",
    "",
    "mpx",
    "",
    "avx512f",
    "avx512dq",
    "rdseed",
    "adx",
    "smap",
    "avx512ifma",
    "",
    "clflushopt",
    "clwb",
    "",
    "avx512pf",
    "avx512er",
    "avx512cd",
    "sha_ni",
    "avx512bw",
    "avx512vl",
];

/// What /proc/cpuinfo shows, from CPUID as the kernel sees it and the calibrated TSC rate.
pub fn cpu_info(khz: u64) -> kcore::procfs::CpuInfo {
    let (max, b, c, d) = cpuid(0, 0);
    let vendor = [b.to_le_bytes(), d.to_le_bytes(), c.to_le_bytes()].concat();
    let (eax, _, ecx, edx) = cpuid(1, 0);
    let base_family = (eax >> 8) & 0xf;
    let family = if base_family == 0xf {
        base_family + ((eax >> 20) & 0xff)
    } else {
        base_family
    };
    let model = if base_family == 6 || base_family == 0xf {
        ((eax >> 4) & 0xf) | ((eax >> 12) & 0xf0)
    } else {
        (eax >> 4) & 0xf
    };
    let mut model_name = alloc::vec::Vec::new();
    if cpuid(0x8000_0000, 0).0 >= 0x8000_0004 {
        for leaf in 0x8000_0002..=0x8000_0004u32 {
            let (a, b, c, d) = cpuid(leaf, 0);
            for r in [a, b, c, d] {
                model_name.extend_from_slice(&r.to_le_bytes());
            }
        }
    }
    while model_name.last().is_some_and(|&c| c == 0 || c == b' ') {
        model_name.pop();
    }
    let ebx7 = if max >= 7 { cpuid(7, 0).1 } else { 0 };
    let mut flags = alloc::vec::Vec::new();
    for (table, bits) in [
        (&FLAGS_1_EDX, edx),
        (&FLAGS_1_ECX, ecx),
        (&FLAGS_7_EBX, ebx7),
    ] {
        for (i, name) in table.iter().enumerate() {
            if bits & (1 << i) != 0 && !name.is_empty() {
                if !flags.is_empty() {
                    flags.push(b' ');
                }
                flags.extend_from_slice(name.as_bytes());
            }
        }
    }
    kcore::procfs::CpuInfo {
        vendor,
        family,
        model,
        model_name,
        stepping: eax & 0xf,
        khz,
        flags,
    }
}
