//! `trap_dispatch`: where every exception, interrupt and system call lands with its [`TrapFrame`].
//!
//! - `syscall` (LSTAR) and "#PF from ring 3 with RIP == LSTAR" (this host's broken `syscall`, see
//!   shared/ENVIRONMENT.md) both become a call of `crate::syscall::dispatch`.
//! - Other faults from ring 3 go to `crate::proc::user_fault` (demand paging, else the process dies).
//! - Faults in the kernel print the frame and panic.
//! - The LAPIC timer and device IRQs are acknowledged and handed to their drivers.

use super::apic;
use super::cpu::read_cr2;
use super::layout::{IRQ_VECTOR_BASE, SPURIOUS_VECTOR, TIMER_VECTOR, USER_CS, USER_DS};
use super::trap::{syscall_entry_addr, TrapFrame, SYSCALL_VECTOR};
use crate::kprintln;
use core::sync::atomic::{AtomicU64, Ordering};
use kcore::fmt::{Dec, Hex, Hex16};

const EXCEPTION_NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor overrun",
    "invalid TSS",
    "segment not present",
    "stack fault",
    "general protection",
    "page fault",
    "reserved",
    "x87 FP",
    "alignment check",
    "machine check",
    "SIMD FP",
    "virtualization",
    "control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection",
    "VMM communication",
    "security",
    "reserved",
];

/// The name of an exception vector.
pub fn exception_name(vector: u64) -> &'static str {
    EXCEPTION_NAMES
        .get(vector as usize)
        .copied()
        .unwrap_or("interrupt")
}

/// Prints every register of a trap frame.
pub fn dump_frame(f: &TrapFrame) {
    kprintln!(
        "RIP: {}:{} RSP: {}:{} RFLAGS: {}",
        Hex16(f.cs),
        Hex16(f.rip),
        Hex16(f.ss),
        Hex16(f.rsp),
        Hex16(f.rflags)
    );
    kprintln!(
        "RAX: {} RBX: {} RCX: {}",
        Hex16(f.rax),
        Hex16(f.rbx),
        Hex16(f.rcx)
    );
    kprintln!(
        "RDX: {} RSI: {} RDI: {}",
        Hex16(f.rdx),
        Hex16(f.rsi),
        Hex16(f.rdi)
    );
    kprintln!(
        "RBP: {} R08: {} R09: {}",
        Hex16(f.rbp),
        Hex16(f.r8),
        Hex16(f.r9)
    );
    kprintln!(
        "R10: {} R11: {} R12: {}",
        Hex16(f.r10),
        Hex16(f.r11),
        Hex16(f.r12)
    );
    kprintln!(
        "R13: {} R14: {} R15: {}",
        Hex16(f.r13),
        Hex16(f.r14),
        Hex16(f.r15)
    );
    kprintln!(
        "CR2: {} CR3: {} vector {} error {}",
        Hex16(read_cr2()),
        Hex16(super::cpu::read_cr3()),
        Dec(f.vector),
        Hex(f.error)
    );
}

static SYSCALLS_BY_LSTAR: AtomicU64 = AtomicU64::new(0);
static SYSCALLS_BY_FAULT: AtomicU64 = AtomicU64::new(0);

fn bump(c: &AtomicU64) {
    // One CPU, interrupts off: a plain load and store (no locked instruction to emulate).
    c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// System calls taken so far: (through the LSTAR entry, through the #PF at LSTAR).
pub fn syscall_counts() -> (u64, u64) {
    (
        SYSCALLS_BY_LSTAR.load(Ordering::Relaxed),
        SYSCALLS_BY_FAULT.load(Ordering::Relaxed),
    )
}

#[no_mangle]
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    let from_user = frame.user_mode();
    if from_user {
        crate::proc::sched::kernel_entry();
    }
    handle(frame);
    crate::proc::sched::flush_wakes();
    if from_user {
        if frame.vector == TIMER_VECTOR as u64 {
            // The periodic write-back, when due, whatever runs (see `periodic_write_back`).
            crate::fs::mount::periodic_write_back();
        }
        // A preemption the tick or a wakeup asked for happens here, before signals are delivered.
        if crate::proc::sched::need_resched() {
            crate::proc::sched::preempt();
        }
        if crate::cost::DELIVER_TIMING {
            let t = crate::cost::start();
            crate::proc::signal::deliver(frame);
            crate::cost::record(crate::cost::Cost::Deliver, t);
        } else {
            crate::proc::signal::deliver(frame);
        }
        let path = if frame.vector == SYSCALL_VECTOR {
            Some(crate::cost::Cost::Syscall)
        } else if frame.vector == TIMER_VECTOR as u64 {
            Some(crate::cost::Cost::TickTrap)
        } else {
            None
        };
        crate::proc::sched::kernel_exit(path);
    }
}

fn handle(frame: &mut TrapFrame) {
    let vector = frame.vector;
    if vector == SYSCALL_VECTOR {
        bump(&SYSCALLS_BY_LSTAR);
        crate::syscall::dispatch(frame);
        return;
    }
    if vector == 14 && frame.user_mode() && frame.rip == syscall_entry_addr() {
        // This host's `syscall`: the CPU jumped to LSTAR keeping the user CS and faulted on the fetch.
        // rcx/r11 already hold the return RIP and RFLAGS, rsp is still the user stack.
        frame.rip = frame.rcx;
        frame.rflags = frame.r11;
        frame.cs = USER_CS as u64;
        frame.ss = USER_DS as u64;
        bump(&SYSCALLS_BY_FAULT);
        crate::syscall::dispatch(frame);
        return;
    }
    match vector as u8 {
        TIMER_VECTOR => {
            apic::eoi();
            let now = crate::time::now_ns();
            let tick = crate::time::timer_fired(now);
            if tick {
                crate::tty::poll();
                crate::net::tick();
            }
            crate::proc::sched::timer(now, tick);
        }
        SPURIOUS_VECTOR => {}
        v if vector < 32 => {
            if frame.user_mode() {
                let addr = if v == 14 { read_cr2() } else { 0 };
                crate::proc::user_fault(frame, addr);
            } else if let Some(fix) = (v == 14)
                .then(|| super::mem::user_copy_fixup(frame.rip, read_cr2()))
                .flatten()
            {
                // A user copy touched a page that is not there (or not writable): it stops short and
                // returns the bytes it did not copy (Linux's exception table).
                frame.rip = fix;
            } else {
                kernel_fault(frame);
            }
        }
        v => {
            apic::eoi();
            crate::drivers::irq(v - IRQ_VECTOR_BASE);
        }
    }
}

fn kernel_fault(frame: &TrapFrame) -> ! {
    let v = frame.vector;
    if v == 14 {
        let what = if frame.error & 1 == 0 {
            "not-present page"
        } else {
            "protection violation"
        };
        let access = if frame.error & 16 != 0 {
            "instruction fetch"
        } else if frame.error & 2 != 0 {
            "write"
        } else {
            "read"
        };
        kprintln!(
            "BUG: kernel page fault at {} ({}, {}) ip {}",
            Hex(read_cr2()),
            what,
            access,
            Hex(frame.rip)
        );
    } else {
        kprintln!(
            "BUG: kernel exception {} ({}) ip {}",
            Dec(v),
            exception_name(v),
            Hex(frame.rip)
        );
    }
    dump_frame(frame);
    panic!("fatal exception in kernel mode");
}
