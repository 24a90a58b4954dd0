//! The context switch: kernel stacks, callee-saved registers and the user's x87/SSE state.
//!
//! A task not running keeps its kernel RSP in [`TaskContext::rsp`], with its callee-saved registers and a
//! return address pushed below it. The kernel itself uses no SSE, so the user's SSE state stays in the
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
    _pad: u64,
    /// FXSAVE image of the user's x87/SSE registers.
    pub fx: [u8; 512],
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
            _pad: 0,
            fx,
        }
    }
}

global_asm!(
    r#"
    .section .text
    .global switch_context
    /* switch_context(prev: *mut TaskContext [rdi], next: *const TaskContext [rsi], save_fx [edx], load_fx [ecx]) */
switch_context:
    testl %edx, %edx
    jz 1f
    fxsave64 16(%rdi)
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
    fxrstor64 16(%rsi)
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
    fn switch_context(prev: *mut TaskContext, next: *const TaskContext, save_fx: u32, load_fx: u32);
    fn task_entry();
    fn fx_save_to(area: *mut u8);
}

/// Switches from the task whose context is `prev` to the one whose context is `next`; returns when
/// something switches back to `prev`. `prev_fx`/`next_fx`: whether each side has user x87/SSE state.
///
/// The scheduler guarantees what makes this sound: both contexts are boxed and stay allocated while
/// their task can run (a task's context is freed only after the CPU has switched away from it, see
/// `proc::sched::finish_switch`), `next` was switched out by this function or prepared by
/// [`prepare_new_task`], interrupts are off, and the next task's kernel stack and address space are set.
pub fn switch_to(prev: *mut TaskContext, next: *const TaskContext, prev_fx: bool, next_fx: bool) {
    // SAFETY: see above; the scheduler is the only caller.
    unsafe { switch_context(prev, next, prev_fx as u32, next_fx as u32) }
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
    // SAFETY: `fx` is a 512-byte, 16-byte-aligned area (TaskContext is align(16), fx at offset 16).
    unsafe { fx_save_to(ctx.fx.as_mut_ptr()) }
}

/// Builds the initial kernel stack of a new task in `stack` (the new task's own, unused yet): its first
/// user context `frame` at the top, below it `task_entry` as the return address and six zero
/// callee-saved registers; stores the resulting RSP in `ctx`.
pub fn prepare_new_task(
    ctx: &mut TaskContext,
    stack: &mut [core::mem::MaybeUninit<u8>],
    frame: &TrapFrame,
) {
    let stack_top = (stack.as_mut_ptr() as u64 + stack.len() as u64) & !15;
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
