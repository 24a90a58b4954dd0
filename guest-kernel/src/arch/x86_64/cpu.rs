//! Thin wrappers over privileged instructions: port I/O, MSRs, control registers, TSC, interrupts.

use core::arch::asm;

pub const MSR_EFER: u32 = 0xc000_0080;
pub const MSR_STAR: u32 = 0xc000_0081;
pub const MSR_LSTAR: u32 = 0xc000_0082;
pub const MSR_SFMASK: u32 = 0xc000_0084;
pub const MSR_FS_BASE: u32 = 0xc000_0100;

/// Writes a byte to an I/O port.
pub fn outb(port: u16, v: u8) {
    // SAFETY: port I/O has no memory effects visible to Rust; the kernel owns all devices.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    }
}

/// Reads a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as for `outb`.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
    }
    v
}

/// Reads a model-specific register.
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only called with MSRs that exist on every x86-64 CPU the kernel supports.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    }
    ((hi as u64) << 32) | lo as u64
}

/// Writes a model-specific register.
///
/// # Safety
/// The MSR and value must be valid and must not break the kernel's own invariants (e.g. EFER.LME).
pub unsafe fn wrmsr(msr: u32, v: u64) {
    // SAFETY: the caller guarantees the write is valid.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nostack, preserves_flags))
    }
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc only reads a counter.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    ((hi as u64) << 32) | lo as u64
}

/// `cpuid` leaf/subleaf -> (eax, ebx, ecx, edx).
pub fn cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    (r.eax, r.ebx, r.ecx, r.edx)
}

pub fn read_cr2() -> u64 {
    let v;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

pub fn read_cr3() -> u64 {
    let v;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

/// Loads a page-table root.
///
/// # Safety
/// `pml4` must be the physical address of a valid PML4 that maps the kernel's upper half.
pub unsafe fn write_cr3(pml4: u64) {
    // SAFETY: the caller guarantees the new tables map everything the kernel uses.
    unsafe { asm!("mov cr3, {}", in(reg) pml4, options(nostack, preserves_flags)) }
}

/// Invalidates the TLB entry for one page.
pub fn invlpg(va: u64) {
    // SAFETY: invlpg only drops a cached translation.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) }
}

/// Enables interrupts and waits for one, atomically (`sti; hlt`).
pub fn enable_and_halt() {
    // SAFETY: the IDT is installed before anyone waits for an interrupt. Not `nomem`: the interrupt
    // handlers that run in between change memory (the run queue), which the caller re-reads.
    unsafe { asm!("sti", "hlt", "cli", options(nostack)) }
}

/// Disables interrupts.
pub fn cli() {
    // SAFETY: masking interrupts is always safe.
    unsafe { asm!("cli", options(nomem, nostack)) }
}

/// Halts forever with interrupts off.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: cli; hlt just stops the CPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}

/// Ends the VM with `code` through the debug-exit port (microvm: exit status `code`; QEMU's
/// isa-debug-exit: `(code << 1) | 1`).
pub fn debug_exit(code: u8) -> ! {
    outb(super::layout::DEBUG_EXIT_PORT, code);
    halt_forever()
}

/// Resets the machine through the i8042 controller (the VMM exits 0), falling back to debug-exit 0.
pub fn reset() -> ! {
    outb(super::layout::I8042_COMMAND_PORT, 0xfe);
    debug_exit(0)
}
