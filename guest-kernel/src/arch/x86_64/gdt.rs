//! The kernel's GDT and TSS: kernel and user segments laid out for `syscall`/`sysret` (STAR), and a TSS
//! whose `rsp0` is the current task's kernel stack and whose IST slots give every exception and interrupt
//! its own stack (the prebuilt `core` uses the red zone, so a handler must never push below a kernel RSP).

use super::layout::{KERNEL_CS, KERNEL_DS, TSS_SELECTOR};
use core::arch::asm;
use core::cell::UnsafeCell;
use core::mem::size_of;

/// IST slots (1-based as in the IDT): double fault, NMI/machine check, page fault, other exceptions, IRQs.
pub const IST_DOUBLE_FAULT: u8 = 1;
pub const IST_NMI: u8 = 2;
pub const IST_PAGE_FAULT: u8 = 3;
pub const IST_EXCEPTION: u8 = 4;
pub const IST_IRQ: u8 = 5;
const IST_STACKS: usize = 5;
const IST_STACK_SIZE: usize = 16 * 1024;

#[repr(C, packed(4))]
struct Tss {
    _reserved0: u32,
    rsp: [u64; 3],
    _reserved1: u64,
    ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    iomap_base: u16,
}

#[repr(C, align(16))]
struct IstStacks([[u8; IST_STACK_SIZE]; IST_STACKS]);

/// Single-CPU kernel state that the CPU itself reads (GDT, TSS).
struct CpuTables {
    gdt: UnsafeCell<[u64; 8]>,
    tss: UnsafeCell<Tss>,
}

// SAFETY: one CPU; the tables are written once at boot (and TSS.rsp0 on task switch, with interrupts off).
unsafe impl Sync for CpuTables {}

/// The IST stacks, apart from the tables so that they land in .bss.
struct IstHolder(UnsafeCell<IstStacks>);

// SAFETY: only the CPU uses these stacks, on trap entry.
unsafe impl Sync for IstHolder {}

static IST: IstHolder = IstHolder(UnsafeCell::new(IstStacks(
    [[0; IST_STACK_SIZE]; IST_STACKS],
)));

static TABLES: CpuTables = CpuTables {
    gdt: UnsafeCell::new([
        0,
        0x00af_9a00_0000_ffff, // 0x08 kernel code 64
        0x00cf_9200_0000_ffff, // 0x10 kernel data
        0x00cf_fa00_0000_ffff, // 0x18 user code 32 (unused; STAR layout)
        0x00cf_f200_0000_ffff, // 0x20 user data
        0x00af_fa00_0000_ffff, // 0x28 user code 64
        0,                     // 0x30 TSS (low)
        0,                     // 0x38 TSS (high)
    ]),
    tss: UnsafeCell::new(Tss {
        _reserved0: 0,
        rsp: [0; 3],
        _reserved1: 0,
        ist: [0; 7],
        _reserved2: 0,
        _reserved3: 0,
        iomap_base: size_of::<Tss>() as u16,
    }),
};

/// The kernel stack top the entry code switches to for traps from ring 3 (mirrors TSS.rsp0).
#[no_mangle]
static mut CPU_KSTACK_TOP: u64 = 0;

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Loads the GDT and TSS and reloads the segment registers.
pub fn init() {
    let tss_addr = TABLES.tss.get() as u64;
    let ist_base = IST.0.get() as u64;
    // SAFETY: boot runs single-threaded with interrupts off; nothing else references the tables yet.
    unsafe {
        let tss = &mut *TABLES.tss.get();
        for i in 0..IST_STACKS {
            tss.ist[i] = ist_base + ((i + 1) * IST_STACK_SIZE) as u64;
        }
        let gdt = &mut *TABLES.gdt.get();
        let limit = (size_of::<Tss>() - 1) as u64;
        gdt[6] = limit
            | ((tss_addr & 0xff_ffff) << 16)
            | (0x89 << 40)
            | (((tss_addr >> 24) & 0xff) << 56);
        gdt[7] = tss_addr >> 32;
        let ptr = DescriptorPointer {
            limit: (size_of::<[u64; 8]>() - 1) as u16,
            base: gdt.as_ptr() as u64,
        };
        asm!(
            "lgdt [{ptr}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {ds:e}",
            "mov es, {ds:e}",
            "mov ss, {ds:e}",
            "ltr {tss:x}",
            ptr = in(reg) &ptr,
            cs = in(reg) KERNEL_CS as u64,
            tmp = out(reg) _,
            ds = in(reg) KERNEL_DS as u32,
            tss = in(reg) TSS_SELECTOR,
        );
    }
}

/// Sets the stack the CPU (TSS.rsp0) and the entry code use for traps from ring 3.
pub fn set_kernel_stack(top: u64) {
    // SAFETY: single CPU, called with interrupts off; the CPU reads rsp0 only on a ring change.
    unsafe {
        (*TABLES.tss.get()).rsp[0] = top;
        *core::ptr::addr_of_mut!(CPU_KSTACK_TOP) = top;
    }
}

/// The kernel stack top traps from ring 3 land on now (the last [`set_kernel_stack`]).
pub fn kernel_stack() -> u64 {
    // SAFETY: single CPU; a plain read of a value only this module writes.
    unsafe { *core::ptr::addr_of!(CPU_KSTACK_TOP) }
}
