//! Processes: the process control block, the process table and the current process, user faults, exit.
//!
//! One CPU, one running process at a time; the scheduler (round-robin, then CFS) and fork/wait come with
//! the processes issue, and the PCB already carries what they need: parent, state, exit status, address
//! space and memory areas, file descriptors, cwd, kernel stack.
#![deny(unsafe_code)]

pub mod exec;

use crate::arch::trap::TrapFrame;
use crate::fs::fd::FdTable;
use crate::kprintln;
use crate::mm::paging::{user_flags, AddressSpace};
use crate::mm::{page_down, user};
use crate::sync::KCell;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use kcore::fmt::{Dec, Hex};

/// A process id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pid(pub u32);

/// The init process's pid.
pub const INIT_PID: Pid = Pid(1);

/// Scheduling state.
#[allow(dead_code)] // Running and Blocked come with the scheduler (processes issue).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Running,
    Ready,
    Blocked,
    Zombie,
}

/// Kinds of memory area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmaKind {
    /// Loaded from the executable (mapped at exec).
    Image,
    /// Zero-filled on first touch: stack, brk heap, anonymous mmap.
    Anonymous,
}

/// A range of user addresses with its permissions.
#[derive(Clone, Copy, Debug)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub writable: bool,
    pub executable: bool,
    pub kind: VmaKind,
}

/// Size of each process's kernel stack.
pub const KERNEL_STACK_SIZE: usize = 32 * 1024;
/// Largest user stack (RLIMIT_STACK).
pub const STACK_LIMIT: u64 = 8 << 20;

/// The process control block.
pub struct Process {
    pub pid: Pid,
    pub ppid: Pid,
    pub state: State,
    pub name: Vec<u8>,
    pub aspace: AddressSpace,
    pub vmas: Vec<Vma>,
    pub brk_start: u64,
    pub brk: u64,
    /// Next address anonymous mmap hands out (grows down).
    pub mmap_top: u64,
    pub fds: FdTable,
    pub cwd: Vec<u8>,
    pub fs_base: u64,
    pub exit_status: Option<i32>,
    /// The kernel stack (traps from ring 3 land on its top).
    pub kstack: alloc::boxed::Box<[core::mem::MaybeUninit<u8>]>,
}

impl Process {
    /// Top of the kernel stack, 16-byte aligned.
    pub fn kstack_top(&self) -> u64 {
        (self.kstack.as_ptr() as u64 + self.kstack.len() as u64) & !15
    }

    /// The memory area containing `va`.
    pub fn vma(&self, va: u64) -> Option<&Vma> {
        self.vmas.iter().find(|v| v.start <= va && va < v.end)
    }

    /// Maps the page at `va` if it lies in an anonymous area and is not mapped yet.
    pub fn fault_in(&mut self, va: u64) -> bool {
        let Some(v) = self.vma(va).copied() else {
            return false;
        };
        if v.kind != VmaKind::Anonymous {
            return false;
        }
        user::map_zero_page(
            &mut self.aspace,
            page_down(va),
            user_flags(v.writable, v.executable),
        )
        .is_ok()
    }
}

static PROCS: KCell<BTreeMap<Pid, Process>> = KCell::new(BTreeMap::new());
static CURRENT: KCell<Pid> = KCell::new(INIT_PID);

/// Adds a process to the table.
pub fn insert(p: Process) {
    PROCS.borrow_mut().insert(p.pid, p);
}

/// Runs `f` on the current process.
pub fn with_current<R>(f: impl FnOnce(&mut Process) -> R) -> R {
    let pid = *CURRENT.borrow();
    let mut procs = PROCS.borrow_mut();
    f(procs.get_mut(&pid).expect("the current process exists"))
}

/// The current process's pid.
pub fn current_pid() -> Pid {
    *CURRENT.borrow()
}

/// A fault from ring 3 that is not a system call: demand-page anonymous memory, else kill the process.
pub fn user_fault(frame: &mut TrapFrame, addr: u64) {
    let not_present = frame.error & 1 == 0;
    if frame.vector == 14 && not_present && with_current(|p| p.fault_in(addr)) {
        return;
    }
    let (signal, what) = match frame.vector {
        14 => (11, "segfault"),
        0 => (8, "divide error"),
        6 => (4, "invalid opcode"),
        13 => (11, "general protection"),
        _ => (11, crate::arch::interrupts::exception_name(frame.vector)),
    };
    let (pid, name) = with_current(|p| (p.pid, p.name.clone()));
    kprintln!(
        "{}[{}]: {} at {} ip {} sp {} error {}",
        core::str::from_utf8(&name).unwrap_or("?"),
        Dec(pid.0 as u64),
        what,
        Hex(addr),
        Hex(frame.rip),
        Hex(frame.rsp),
        Hex(frame.error)
    );
    exit_current(signal);
}

/// Ends the current process with wait status `status` (Linux encoding).
pub fn exit_current(status: i32) -> ! {
    let pid = current_pid();
    if pid == INIT_PID {
        panic!(
            "Attempted to kill init! exitcode={}",
            kcore::fmt::HexPad(status as u32 as u64, 8)
        );
    }
    // Without a scheduler there is nobody else to run.
    with_current(|p| {
        p.state = State::Zombie;
        p.exit_status = Some(status);
    });
    panic!("no runnable process left");
}
