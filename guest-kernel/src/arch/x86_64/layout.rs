//! Fixed addresses and ports of the platform (microvm and QEMU microvm) and the kernel's virtual layout.

/// Start of the direct map of physical memory (PML4 slot 256).
pub const PHYS_OFFSET: u64 = 0xffff_8000_0000_0000;
/// Where the kernel image is linked: physical address + KERNEL_BASE.
pub const KERNEL_BASE: u64 = 0xffff_ffff_8000_0000;
/// Physical memory below this is mapped by the boot page tables' direct map.
pub const BOOT_DIRECT_MAP_END: u64 = 4 << 30;
/// First address above user space (the lower half, minus a guard page).
pub const USER_END: u64 = 0x0000_7fff_ffff_f000;
/// Top of the initial user stack.
pub const USER_STACK_TOP: u64 = 0x0000_7fff_ffff_e000;
/// Bottom of the region anonymous mmap() allocates downwards from.
pub const USER_MMAP_TOP: u64 = 0x0000_7f00_0000_0000;

pub const COM1_PORT: u16 = 0x3f8;
pub const COM1_IRQ: u8 = 4;
/// A one-byte write here ends the VM with that byte as exit status.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
/// A one-byte write here records "init starts now" in the VMM's boot timing.
pub const BOOT_MARKER_PORT: u16 = 0x3f0;
pub const I8042_COMMAND_PORT: u16 = 0x64;
pub const I8042_DATA_PORT: u16 = 0x60;
/// The keyboard's ISA IRQ (Ctrl-Alt-Del from the VMM).
pub const I8042_KBD_IRQ: u8 = 1;
/// The CMOS RTC's index and data ports.
pub const CMOS_INDEX_PORT: u16 = 0x70;
pub const CMOS_DATA_PORT: u16 = 0x71;
/// microvm's introspection channel (`drivers/introspect.rs`): 16 ports and the IRQ of its requests.
pub const INTROSPECT_PORT: u16 = 0x5f0;
pub const INTROSPECT_IRQ: u8 = 21;
/// microvm's syscall-trace ring (`drivers/trace.rs`): 8 ports (registration, doorbell, probe).
pub const TRACE_PORT: u16 = 0x600;
pub const PIT_CH0_PORT: u16 = 0x40;
pub const PIT_COMMAND_PORT: u16 = 0x43;
pub const PIT_HZ: u64 = 1_193_182;
pub const PIC1_DATA_PORT: u16 = 0x21;
pub const PIC2_DATA_PORT: u16 = 0xa1;

pub const LAPIC_PHYS: u64 = 0xfee0_0000;
pub const IOAPIC_PHYS: u64 = 0xfec0_0000;

/// Interrupt vectors: 32 + ISA IRQ for IOAPIC pins, the LAPIC timer and the spurious vector.
pub const IRQ_VECTOR_BASE: u8 = 32;
pub const TIMER_VECTOR: u8 = 0xf0;
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// Selectors of the kernel's GDT (see gdt.rs); the user ones have RPL 3.
pub const KERNEL_CS: u16 = 0x08;
pub const KERNEL_DS: u16 = 0x10;
pub const USER_DS: u16 = 0x23;
pub const USER_CS: u16 = 0x2b;
pub const TSS_SELECTOR: u16 = 0x30;
