//! Every guest physical address, I/O port and IRQ line the VMM uses, in one place.
//!
//! Guest physical memory map (x86_64):
//! ```text
//! 0x0000_0000 ..  0x0000_0fff  real-mode IVT (left alone)
//! 0x0000_6000                  PVH hvm_start_info / Linux zero page (boot_params)
//! 0x0000_7000                  PVH memory map entries
//! 0x0000_9000 ..  0x0000_bfff  long-mode boot page tables (PML4, PDPT, PD)
//! 0x0000_9fc00.. 0x0009_ffff   EBDA: MP table when there is more than one vCPU
//! 0x0002_0000 ..  0x0002_0fff  kernel command line
//! 0x000a_0000 ..  0x000f_ffff  legacy hole (VGA, BIOS): not RAM in the e820 map
//! 0x0010_0000 ..               kernel (HIMEM_START), then RAM up to the MMIO hole
//! 0xc000_0000 ..  0xffff_ffff  32-bit MMIO hole: virtio-mmio windows from 0xd000_0000, IOAPIC, LAPIC
//! 0x1_0000_0000 ..             RAM above 4 GiB when the guest has more than fits below the hole
//! ```

/// Start of the high-memory region where kernels are loaded.
pub const HIMEM_START: u64 = 0x0010_0000;
/// The PVH `hvm_start_info` or the Linux zero page.
pub const BOOT_INFO_START: u64 = 0x6000;
/// PVH memory map entries (`hvm_memmap_table_entry`), right after the start info.
pub const PVH_MEMMAP_START: u64 = 0x7000;
/// PVH module list (initrd), after the memory map.
pub const PVH_MODLIST_START: u64 = 0x8000;
/// Long-mode identity page tables for 64-bit entry: PML4, PDPT, then four PDs (4 GiB of 2 MiB pages).
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// The boot GDT for 64-bit entry.
pub const BOOT_GDT_START: u64 = 0x500;
/// The boot IDT (empty) for 64-bit entry.
pub const BOOT_IDT_START: u64 = 0x520;
/// Initial stack pointer for 64-bit entry (top of the stack page below the boot info).
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x2_0000;
/// Longest command line, including the terminating NUL (the Linux boot protocol's limit on x86 is 2048).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Extended BIOS data area, where the MP table goes.
pub const EBDA_START: u64 = 0x9_fc00;
/// End of conventional memory: 640 KiB.
pub const LOW_RAM_END: u64 = 0xa_0000;

/// Start of the 32-bit MMIO hole; RAM below 4 GiB stops here.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// First address past 32 bits; RAM resumes here when the guest is larger than the space below the hole.
pub const HIGH_RAM_START: u64 = 0x1_0000_0000;
/// virtio-mmio device windows start here, one per device.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// Size of each virtio-mmio window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// How many virtio-mmio windows (and IRQs) the device manager hands out.
pub const VIRTIO_MMIO_SLOTS: u64 = 16;
/// IOAPIC registers.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Local APIC registers.
pub const LAPIC_START: u64 = 0xfee0_0000;

/// COM1: 8250 UART.
pub const SERIAL_PORT: u16 = 0x3f8;
/// Ports the 8250 decodes.
pub const SERIAL_PORT_LEN: u16 = 8;
/// COM1's IRQ.
pub const SERIAL_IRQ: u32 = 4;
/// i8042 data port; the command/status port is at `I8042_PORT + 4` (0x64).
pub const I8042_PORT: u16 = 0x60;
/// Ports the i8042 decodes (0x60..=0x64).
pub const I8042_PORT_LEN: u16 = 5;
/// Keyboard IRQ of the i8042.
pub const I8042_IRQ: u32 = 1;
/// Debug-exit port: a one-byte write ends the VM and `microvm` exits with that byte as its status.
/// (QEMU's isa-debug-exit sits at the same port, exiting with `(value << 1) | 1`.)
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
/// Ports the debug-exit device answers (one).
pub const DEBUG_EXIT_PORT_LEN: u16 = 1;
/// Boot-time marker port (Firecracker's): any write logs the time since the VMM started.
pub const BOOT_MARKER_PORT: u16 = 0x3f0;
/// Ports the boot-time marker answers (one).
pub const BOOT_MARKER_PORT_LEN: u16 = 1;
/// The introspection channel the guest kernel offers (`introspect::channel`): 16 ports.
pub const INTROSPECT_PORT: u16 = 0x5f0;
pub const INTROSPECT_PORT_LEN: u16 = 16;
/// Its request IRQ, past the virtio-mmio devices' IRQs.
pub const INTROSPECT_IRQ: u32 = 21;
/// The guest kernel's syscall-trace ring (`introspect::trace`): registration, doorbell, probe.
pub const TRACE_PORT: u16 = 0x600;
pub const TRACE_PORT_LEN: u16 = 8;
const _: () = assert!(INTROSPECT_IRQ as u64 >= VIRTIO_IRQ_BASE as u64 + VIRTIO_MMIO_SLOTS);
const _: () = assert!(INTROSPECT_IRQ < IOAPIC_PINS);
/// First IRQ given to virtio-mmio devices (5..=20, below the IOAPIC's 24 pins).
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// Pins of KVM's in-kernel IOAPIC.
pub const IOAPIC_PINS: u32 = 24;

/// Address KVM uses for the TSS (three pages, must be below 4 GiB and outside RAM).
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// Address of KVM's identity map page for real mode on Intel (one page, just below the TSS).
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;

// The boot structures must not overlap one another (checked at compile time).
// Zero page (4 KiB) or start info, then the PVH memory map (3 entries of 24 bytes), module list, page tables.
const _: () = assert!(BOOT_INFO_START + 0x1000 <= PVH_MEMMAP_START);
const _: () = assert!(PVH_MEMMAP_START + 3 * 24 <= PVH_MODLIST_START);
const _: () = assert!(BOOT_STACK_POINTER < PML4_START && BOOT_STACK_POINTER > PVH_MODLIST_START);
const _: () = assert!(PML4_START < PDPTE_START && PDPTE_START < PDE_START);
const _: () = assert!(PDE_START + 4 * 0x1000 <= CMDLINE_START);
const _: () = assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
const _: () =
    assert!(BOOT_GDT_START + 4 * 8 <= BOOT_IDT_START && BOOT_IDT_START + 8 <= BOOT_INFO_START);
const _: () = assert!(VIRTIO_MMIO_START >= MMIO_HOLE_START);
const _: () = assert!(VIRTIO_MMIO_START + VIRTIO_MMIO_SLOTS * VIRTIO_MMIO_SIZE <= IOAPIC_START);
const _: () = assert!(VIRTIO_IRQ_BASE as u64 + VIRTIO_MMIO_SLOTS <= IOAPIC_PINS as u64);
const _: () = assert!(KVM_IDENTITY_MAP_ADDRESS + 0x1000 <= KVM_TSS_ADDRESS);
const _: () = assert!(
    KVM_TSS_ADDRESS + 3 * 0x1000 <= IOAPIC_START || KVM_TSS_ADDRESS >= LAPIC_START + 0x1000
);
