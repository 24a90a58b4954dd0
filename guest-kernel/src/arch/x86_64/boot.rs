//! PVH entry: the 32-bit protected-mode entry point named by the Xen ELF note, the boot page tables
//! and the switch to long mode in the higher half.
//!
//! The loader enters `pvh_start32` with paging off, flat 32-bit segments and EBX holding the physical
//! address of `hvm_start_info`. The boot page tables are built by the assembler (no loops at run time,
//! every instruction here is emulated): phys 0..4 GiB is mapped with 2 MiB pages at 0 (identity, only
//! for the jump), at `PHYS_OFFSET` (the kernel's direct map) and at -2 GiB (the kernel image).
//! SSE is switched on before any Rust code runs because the prebuilt `core` uses it.

use core::arch::global_asm;

global_asm!(
    r#"
    .set KBASE, 0xffffffff80000000

    .section .note.Xen, "a", @note
    .p2align 2
    .long 4
    .long 4
    .long 18                      /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .p2align 2
    .long pvh_start32 - KBASE
    .p2align 2

    .section .text.boot, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    movl %ebx, %edi               /* hvm_start_info (physical) */
    /* CR4: PAE | OSFXSR | OSXMMEXCPT */
    movl %cr4, %eax
    orl $((1 << 5) | (1 << 9) | (1 << 10)), %eax
    movl %eax, %cr4
    movl $(boot_pml4 - KBASE), %eax
    movl %eax, %cr3
    /* EFER: LME, and NXE when the CPU has NX. */
    movl $0x80000001, %eax
    cpuid
    xorl %esi, %esi
    btl $20, %edx
    jnc 1f
    movl $(1 << 11), %esi
1:  movl $0xc0000080, %ecx
    rdmsr
    orl $(1 << 8), %eax
    orl %esi, %eax
    wrmsr
    /* CR0: PG | WP | NE | MP | PE, EM clear. */
    movl %cr0, %eax
    andl $~(1 << 2), %eax
    orl $((1 << 31) | (1 << 16) | (1 << 5) | (1 << 1) | 1), %eax
    movl %eax, %cr0
    lgdt (boot_gdt_ptr - KBASE)
    ljmp $0x08, $(boot_start64 - KBASE)

    .code64
boot_start64:
    movabs $boot_high64, %rax
    jmp *%rax

    .section .text
boot_high64:
    movl $0x10, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    xorl %eax, %eax
    movl %eax, %fs
    movl %eax, %gs
    movabs $boot_stack_top, %rsp
    movl %edi, %edi
    call kernel_main
2:  hlt
    jmp 2b

    .section .rodata
    .p2align 3
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff      /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff      /* 0x10: data */
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt - KBASE

    .section .data.boot_pt, "aw"
    .p2align 12
    .global boot_pml4
boot_pml4:
    .quad boot_pdpt_low - KBASE + 3
    .fill 255, 8, 0
    .quad boot_pdpt_low - KBASE + 3
    .fill 254, 8, 0
    .quad boot_pdpt_high - KBASE + 3
boot_pdpt_low:
    .quad boot_pd - KBASE + 3
    .quad boot_pd - KBASE + 0x1000 + 3
    .quad boot_pd - KBASE + 0x2000 + 3
    .quad boot_pd - KBASE + 0x3000 + 3
    .fill 508, 8, 0
boot_pdpt_high:
    .fill 510, 8, 0
    .quad boot_pd - KBASE + 3
    .quad boot_pd - KBASE + 0x1000 + 3
boot_pd:
    .set i, 0
    .rept 2048
    .quad (i << 21) | 0x83
    .set i, i + 1
    .endr

    .section .bss
    .p2align 12
boot_stack:
    .skip 65536
    .global boot_stack_top
boot_stack_top:
    .text
"#,
    options(att_syntax)
);
