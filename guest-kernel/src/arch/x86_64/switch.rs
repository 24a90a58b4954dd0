//! The context switch: kernel stacks, address space, FS base, callee-saved registers and the user's
//! x87/SSE state.
//!
//! A task not running keeps its kernel RSP in [`TaskContext::rsp`], with its callee-saved registers and a
//! return address pushed below it, and what the CPU must be given back when it runs again (kernel stack
//! top, CR3, FS base), saved from the CPU at the switch away; so a switch needs nothing but the two
//! contexts (no process-table lookup), and reloads CR3 and the FS base only when they differ. The kernel itself uses no SSE, so the user's SSE state stays in the
//! registers across traps and is only saved and restored (FXSAVE/FXRSTOR) when the CPU switches tasks.
//! A new task's stack is built so that the switch "returns" into `task_entry`, which calls
//! `sched_finish_switch` and leaves through `trap_return` with the task's first user [`TrapFrame`].

use super::trap::TrapFrame;
use core::arch::global_asm;

/// Where a task's switched-out state lives (boxed: its address must not move).
#[repr(C, align(16))]
pub struct TaskContext {
    /// Saved kernel stack pointer while the task is switched out.
    pub rsp: u64,
    /// Top of the task's kernel stack (TSS.rsp0 while it runs).
    pub kstack_top: u64,
    /// Its page-table root (CR3).
    pub cr3: u64,
    /// Its FS base (TLS).
    pub fs_base: u64,
    /// FXSAVE image of the user's x87/SSE registers.
    pub fx: [u8; 512],
    /// The task has a signal pending that its mask does not block (kept by `proc::signal` on every
    /// change of either): what the return to user mode checks before looking the process up.
    pub signals_ready: bool,
}

impl TaskContext {
    /// A context with the x87/SSE state Linux gives a new program (FCW 0x37f, MXCSR 0x1f80).
    pub fn new() -> Self {
        let mut fx = [0u8; 512];
        fx[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
        fx[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        fx[28..32].copy_from_slice(&0xffffu32.to_le_bytes());
        TaskContext {
            rsp: 0,
            kstack_top: 0,
            cr3: 0,
            fs_base: 0,
            fx,
            signals_ready: false,
        }
    }

    /// Resets the x87/SSE image to a new program's (execve), keeping the rest.
    pub fn reset_fx(&mut self) {
        self.fx = TaskContext::new().fx;
    }
}

// The assembly below saves and restores the FXSAVE image at offset 32.
const _: () = assert!(core::mem::offset_of!(TaskContext, fx) == 32);

global_asm!(
    r#"
    .section .text
    .global switch_context
    /* switch_context(prev: *mut TaskContext [rdi], next: *const TaskContext [rsi], save_fx [edx], load_fx [ecx]) */
switch_context:
    testl %edx, %edx
    jz 1f
    fxsave64 32(%rdi)
1:  pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq (%rsi), %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    testl %ecx, %ecx
    jz 2f
    fxrstor64 32(%rsi)
2:  ret

    .global task_entry
task_entry:
    call sched_finish_switch
    jmp trap_return

    .global fx_save_to
fx_save_to:
    fxsave64 (%rdi)
    ret
"#,
    options(att_syntax)
);

extern "C" {
    fn switch_context(prev: *mut TaskContext, next: *mut TaskContext, save_fx: u32, load_fx: u32);
    fn task_entry();
    fn fx_save_to(area: *mut u8);
}

/// Switches from the task whose context is `prev` to the one whose context is `next`; returns when
/// something switches back to `prev`. `prev_user`/`next_user`: whether each side is a user task (the
/// idle task has no user state and runs on whatever address space and FS base it finds). A user task
/// switched out keeps the CPU's kernel stack top, CR3 and FS base in its context; a user task switched
/// in gets its own back (CR3 and FS base only written when they differ).
///
/// The scheduler guarantees what makes this sound: both contexts are boxed and stay allocated while
/// their task can run (a task's context is freed only after the CPU has switched away from it, see
/// `proc::sched::finish_switch`), `next` was switched out by this function or prepared by
/// [`prepare_new_task`] with its kernel stack, CR3 and FS base filled in, and interrupts are off.
pub fn switch_to(prev: *mut TaskContext, next: *mut TaskContext, prev_user: bool, next_user: bool) {
    let cr3 = super::cpu::read_cr3();
    // SAFETY: see above; the scheduler is the only caller. `next`'s CR3 maps the kernel half like every
    // address space.
    unsafe {
        if prev_user {
            (*prev).kstack_top = super::gdt::kernel_stack();
            (*prev).cr3 = cr3;
            (*prev).fs_base = super::fs_base();
        }
        if next_user {
            super::gdt::set_kernel_stack((*next).kstack_top);
            if (*next).cr3 != cr3 {
                super::cpu::write_cr3((*next).cr3);
            }
            super::set_fs_base((*next).fs_base);
        }
        switch_context(prev, next, prev_user as u32, next_user as u32)
    }
}

/// The `signals_ready` flag of the running task's context `ctx` (the scheduler's record of which
/// context it switched in last; null before the first task ran, then false).
///
/// Sound for the reason `switch_to` is: the scheduler keeps the running task's boxed context allocated
/// while the task runs, and nothing holds a reference into it while the return path reads the flag.
pub fn signals_ready(ctx: *const TaskContext) -> bool {
    // SAFETY: see above: `ctx` is null or the running task's live context.
    !ctx.is_null() && unsafe { (*ctx).signals_ready }
}

#[no_mangle]
extern "C" fn sched_finish_switch() {
    crate::proc::sched::finish_switch();
}

/// Loads the user x87/SSE registers from `ctx` (after a signal handler returns).
pub fn restore_fx(ctx: &TaskContext) {
    // SAFETY: `fx` is 16-byte aligned; callers sanitize MXCSR so fxrstor cannot fault.
    unsafe { core::arch::asm!("fxrstor64 [{}]", in(reg) ctx.fx.as_ptr(), options(nostack)) }
}

/// Saves the current (user) x87/SSE registers into `ctx` (fork: the child starts with the parent's).
pub fn save_fx(ctx: &mut TaskContext) {
    // SAFETY: `fx` is a 512-byte, 16-byte-aligned area (TaskContext is align(16), fx at offset 32).
    unsafe { fx_save_to(ctx.fx.as_mut_ptr()) }
}

/// Builds the initial kernel stack of a new task in `stack` (the new task's own, unused yet): its first
/// user context `frame` at the top, below it `task_entry` as the return address and six zero
/// callee-saved registers; stores the resulting RSP and the stack top in `ctx` (the scheduler fills in
/// its CR3 and FS base when the task joins the run queue).
pub fn prepare_new_task(
    ctx: &mut TaskContext,
    stack: &mut [core::mem::MaybeUninit<u8>],
    frame: &TrapFrame,
) {
    let stack_top = (stack.as_mut_ptr() as u64 + stack.len() as u64) & !15;
    ctx.kstack_top = stack_top;
    assert!(stack.len() >= 512);
    // SAFETY: the writes stay within the top 240 bytes of `stack`, which we borrow mutably.
    unsafe {
        let f = (stack_top as *mut TrapFrame).sub(1);
        f.write(*frame);
        let mut sp = f as *mut u64;
        sp = sp.sub(1);
        sp.write(task_entry as *const () as u64);
        for _ in 0..6 {
            sp = sp.sub(1);
            sp.write(0);
        }
        ctx.rsp = sp as u64;
    }
}
