/* Entry points of the test guests.
 *   pvh_start32: PVH entry, 32-bit protected mode, paging off, EBX = hvm_start_info. Builds identity page
 *                tables for 4 GiB, enters long mode, calls guest_main(0, ebx).
 *   _start64:    Linux 64-bit entry (ELF e_entry, bzImage +0x200), RSI = zero page. Calls guest_main(1, rsi).
 * Also the interrupt stubs: vector 32 (PIT through the PIC) counts ticks, vector 33 (i8042 keyboard through
 * the PIC) collects scancodes, every other vector reports an unexpected exception. */
    .section .text.pvh32, "ax"
    .code32
    .globl pvh_start32
pvh_start32:
    mov %ebx, %esi
    /* PML4[0] -> PDPT; PDPT[0..3] -> PD0..PD3; PDs map 2 MiB pages. */
    mov $pml4, %edi
    lea pdpt + 3, %eax
    mov %eax, (%edi)
    mov $pdpt, %edi
    mov $pds + 3, %eax
    mov $4, %ecx
1:  mov %eax, (%edi)
    add $4096, %eax
    add $8, %edi
    loop 1b
    mov $pds, %edi
    mov $0x83, %eax          /* present, writable, 2 MiB page */
    xor %edx, %edx           /* high half of the physical address */
    mov $2048, %ecx
2:  mov %eax, (%edi)
    mov %edx, 4(%edi)
    add $0x200000, %eax
    adc $0, %edx
    add $8, %edi
    loop 2b
    mov $pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x220, %eax          /* PAE | OSFXSR */
    mov %eax, %cr4
    mov $0xc0000080, %ecx    /* EFER */
    rdmsr
    or $0x100, %eax          /* LME */
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax     /* PG | PE */
    mov %eax, %cr0
    lgdt gdt_ptr
    ljmp $0x08, $long_mode

    .code64
long_mode:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $stack_top, %rsp
    xor %edi, %edi           /* boot kind 0: PVH */
    /* RSI holds the start info address, zero-extended by the 32-bit mov. */
    call guest_main
3:  hlt
    jmp 3b

    .section .text.entry64, "ax"
    .globl _start64
_start64:
    mov $stack_top, %rsp
    mov %cr4, %rax
    or $0x200, %rax          /* OSFXSR */
    mov %rax, %cr4
    mov $1, %edi             /* boot kind 1: Linux */
    call guest_main
4:  hlt
    jmp 4b

    .text
    .globl irq0_stub
irq0_stub:
    push %rax
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %r8
    push %r9
    push %r10
    push %r11
    call on_tick
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rax
    iretq

    .globl irq1_stub
irq1_stub:
    push %rax
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %r8
    push %r9
    push %r10
    push %r11
    call on_key
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rax
    iretq

    .globl unexpected_stub
unexpected_stub:
    call on_unexpected
5:  hlt
    jmp 5b

    /* An SSE instruction that KVM's instruction emulator cannot run: on hosts that emulate guest kernel
       code (see ENVIRONMENT.md) this vCPU dies with KVM_EXIT_INTERNAL_ERROR right here. */
    .globl emulation_failure
    .type emulation_failure, @function
emulation_failure:
    pxor %xmm0, %xmm0
    ret
    .size emulation_failure, . - emulation_failure

    .globl load_idt
load_idt:
    lidt (%rdi)
    ret

    .section .rodata
    .p2align 3
gdt:
    .quad 0
    .quad 0x00af9b000000ffff   /* 0x08: 64-bit code */
    .quad 0x00cf93000000ffff   /* 0x10: data */
gdt_ptr:
    .word gdt_ptr - gdt - 1
    .long gdt

    .bss
    .p2align 12
pml4: .skip 4096
pdpt: .skip 4096
pds:  .skip 4 * 4096
stack: .skip 16384
stack_top:
