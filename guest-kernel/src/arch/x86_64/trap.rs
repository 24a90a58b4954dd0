//! Trap entry and exit: IDT, the assembly stubs for every vector, the `syscall` (LSTAR) entry and the
//! common path that builds a [`TrapFrame`] and calls `trap_dispatch` in `arch::x86_64::interrupts`.
//!
//! Every vector runs on an IST stack (kernel-mode code may use the red zone). A trap from ring 3 moves its
//! hardware frame from the IST stack to the current task's kernel stack (`CPU_KSTACK_TOP`), so a task's
//! trap frame lives on its own stack and survives blocking. Return is always `iretq` via `trap_return`.

use super::gdt::{IST_DOUBLE_FAULT, IST_EXCEPTION, IST_IRQ, IST_NMI, IST_PAGE_FAULT};
use super::layout::KERNEL_CS;
use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;

/// The pseudo vector number `syscall_entry` records in [`TrapFrame::vector`].
pub const SYSCALL_VECTOR: u64 = 0x100;

/// Registers saved on trap entry, lowest address first (the layout the assembly pushes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl TrapFrame {
    /// True if the trap came from ring 3.
    pub fn user_mode(&self) -> bool {
        self.cs & 3 == 3
    }
}

// Vectors with a CPU-pushed error code: 8, 10-14, 17, 21, 29, 30.
global_asm!(
    r#"
    .section .text
    .p2align 4
trap_stubs:
    .set i, 0
    .rept 256
    .p2align 4
    .if (i == 8) || ((i >= 10) && (i <= 14)) || (i == 17) || (i == 21) || (i == 29) || (i == 30)
    .else
    pushq $0
    .endif
    pushq $i
    jmp trap_common
    .set i, i + 1
    .endr

    .section .rodata
    .p2align 3
    .global trap_stub_table
trap_stub_table:
    .set i, 0
    .rept 256
    .quad trap_stubs + i * 16
    .set i, i + 1
    .endr

    .section .text
    .global trap_common
trap_common:
    /* stack: vector, error, rip, cs, rflags, rsp, ss */
    testb $3, 24(%rsp)
    jz 1f
    /* From ring 3: move the frame to the task's kernel stack. */
    pushq %rax
    pushq %rsi
    movq %rsp, %rsi
    movq CPU_KSTACK_TOP(%rip), %rsp
    pushq 64(%rsi)
    pushq 56(%rsi)
    pushq 48(%rsi)
    pushq 40(%rsi)
    pushq 32(%rsi)
    pushq 24(%rsi)
    pushq 16(%rsi)
    pushq 8(%rsi)
    movq (%rsi), %rsi
    jmp 2f
1:  pushq %rax
2:  pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rdi
    call trap_dispatch
    .global trap_return
trap_return:
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp
    iretq

    /* `syscall` on hardware that runs it properly: rcx = user rip, r11 = user rflags, rsp = user rsp. */
    .global syscall_entry
    .p2align 4
syscall_entry:
    movq %rsp, SYSCALL_USER_RSP(%rip)
    movq CPU_KSTACK_TOP(%rip), %rsp
    pushq $0x23
    pushq SYSCALL_USER_RSP(%rip)
    pushq %r11
    pushq $0x2b
    pushq %rcx
    pushq $0
    pushq $0x100
    pushq %rax
    jmp 2b
"#,
    options(att_syntax)
);

extern "C" {
    static trap_stub_table: [u64; 256];
    fn syscall_entry();
}

#[no_mangle]
static mut SYSCALL_USER_RSP: u64 = 0;

/// The address of the `syscall` entry (what LSTAR holds; a #PF at this RIP from ring 3 is a syscall).
pub fn syscall_entry_addr() -> u64 {
    syscall_entry as *const () as u64
}

#[repr(C, align(16))]
struct Idt(UnsafeCell<[[u64; 2]; 256]>);

// SAFETY: written once at boot before interrupts are enabled; afterwards only the CPU reads it.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([[0; 2]; 256]));

fn ist_for(vector: usize) -> u8 {
    match vector {
        8 => IST_DOUBLE_FAULT,
        2 | 18 => IST_NMI,
        14 => IST_PAGE_FAULT,
        0..=31 => IST_EXCEPTION,
        _ => IST_IRQ,
    }
}

/// Fills and loads the IDT: interrupt gates (IF cleared) for all 256 vectors, each on an IST stack.
pub fn init() {
    #[repr(C, packed)]
    struct Ptr {
        limit: u16,
        base: u64,
    }
    // SAFETY: boot is single-threaded with interrupts off; the stub table is static.
    unsafe {
        let idt = &mut *IDT.0.get();
        for (v, gate) in idt.iter_mut().enumerate() {
            let h = trap_stub_table[v];
            let ist = ist_for(v) as u64;
            gate[0] = (h & 0xffff)
                | ((KERNEL_CS as u64) << 16)
                | (ist << 32)
                | (0x8e << 40)
                | (((h >> 16) & 0xffff) << 48);
            gate[1] = h >> 32;
        }
        let ptr = Ptr {
            limit: (256 * 16 - 1) as u16,
            base: idt.as_ptr() as u64,
        };
        asm!("lidt [{}]", in(reg) &ptr, options(nostack, preserves_flags));
    }
}
