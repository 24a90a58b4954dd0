//! Kernel cost counters: how often a piece of kernel work ran and the TSC time it took (kernel mode is
//! instruction-emulated on the development hosts, so these are what make fork, exit and faults slow or
//! fast). Printed at power-off; `Cost::Pages*` count pages instead of time.

use core::sync::atomic::{AtomicU64, Ordering};

/// What is measured.
#[derive(Clone, Copy)]
pub enum Cost {
    /// fork/vfork/clone, the whole system call.
    Fork,
    /// `AddressSpace::fork_cow` (part of Fork); its pages are counted in `ForkPages`.
    ForkCow,
    /// `exit_current` up to the switch away (freeing memory and files included).
    Exit,
    /// Freeing an address space (part of Exit and execve).
    Release,
    /// wait4 without the time spent blocked.
    Wait,
    /// A write fault on a copy-on-write page that copied it.
    CowCopy,
    /// A write fault on a copy-on-write page nobody else shares any more (no copy).
    CowReuse,
    /// A fault on a missing anonymous page (a fresh zero page).
    ZeroFault,
    /// User pages shared by fork_cow.
    ForkPages,
    /// The policy's part of a switch alone (`Cfs::pick_next`: charge, put back, pick).
    CfsPick,
    /// The policy's part of a timer tick alone (`Cfs::tick`).
    CfsTick,
    /// Pieces of a context switch (`proc::sched::switch`), timed only with [`SWITCH_PIECES`]: the clock
    /// read and kernel-time accounting; the pick (the policy with its counters and the tag); choosing
    /// the contexts; `switch_to` up to the next task's first instruction (kernel stack, CR3, FS base,
    /// registers, x87/SSE state); `finish_switch`.
    SwClock,
    SwPick,
    SwPrepare,
    SwCpu,
    SwFinish,
    /// A system call from user mode, trap entry to the return to user mode, when it did not switch
    /// tasks (the syscall path itself: entry, dispatch, the call, signal delivery, exit accounting).
    Syscall,
    /// A timer interrupt taken in user mode, entry to return, when it did not switch tasks.
    TickTrap,
    /// `signal::deliver` alone, on every return to user mode.
    Deliver,
    /// mprotect's work on the areas and the page tables (the system call without entry and exit).
    Mprotect,
    /// A fault on a missing page of a file mapping (the file's pages read into fresh frames).
    FileFault,
    /// Pages mapped by file faults (the faulting ones and their fault-around).
    FileFaultPages,
    /// A piece of a write into the page cache (`Ext2File::write_cached`, up to 64 KiB), whole.
    CacheWrite,
    /// Its block allocation alone (`Ext2::reserve`).
    CacheReserve,
    /// Its copies into cached pages alone.
    CacheCopy,
    /// One write-back of a run of dirty pages (up to 128 KiB: copy out, extents, device write).
    WriteBack,
    /// Pages written back.
    WriteBackPages,
    /// A cached read (`Ext2File::read_cached`, one read call), whole.
    CacheRead,
    /// mmap's work on the areas (the checks, the gap, the insert; without entry and exit).
    Mmap,
    /// munmap's work on the areas and the page tables (without entry and exit).
    Munmap,
    /// `VmaList::unmap` alone (part of munmap, and of mmap's and brk's unmapping).
    VmaUnmap,
}

const N: usize = 31;
const NAMES: [&str; N] = [
    "fork",
    "fork_cow",
    "exit",
    "release",
    "wait4",
    "cow_copy",
    "cow_reuse",
    "zero_fault",
    "fork_pages",
    "cfs_pick",
    "cfs_tick",
    "sw_clock",
    "sw_pick",
    "sw_prepare",
    "sw_cpu",
    "sw_finish",
    "syscall",
    "tick_trap",
    "deliver",
    "mprotect",
    "file_fault",
    "file_fault_pages",
    "cache_write",
    "cache_reserve",
    "cache_copy",
    "write_back",
    "write_back_pages",
    "cache_read",
    "mmap",
    "munmap",
    "vma_unmap",
];

static COUNT: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
static TSC: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];

fn add(c: &AtomicU64, v: u64) {
    // One CPU, interrupts off: a plain load and store (no locked instruction to emulate).
    c.store(c.load(Ordering::Relaxed).wrapping_add(v), Ordering::Relaxed);
}

/// The start of a measurement.
pub fn start() -> u64 {
    crate::arch::cpu::rdtsc()
}

/// Ends a measurement started at `t0`.
pub fn record(what: Cost, t0: u64) {
    add(&COUNT[what as usize], 1);
    add(
        &TSC[what as usize],
        crate::arch::cpu::rdtsc().wrapping_sub(t0),
    );
}

/// Whether the context switch times its pieces (`Cost::Sw*`). Off: the five marks cost about 25 us of
/// emulated kernel time, some 7 % of a switch; turn it on to see where a switch's time goes.
pub const SWITCH_PIECES: bool = false;

/// Whether every return to user mode times `signal::deliver` alone (`Cost::Deliver`). Off: the mark
/// costs a few microseconds of emulated kernel time on every trap.
pub const DELIVER_TIMING: bool = false;

/// Consecutive pieces of one path that started at TSC value `.0`: each [`Split::mark`] charges the
/// time since the previous mark to its counter (only with [`SWITCH_PIECES`]).
pub struct Split(pub u64);

impl Split {
    pub fn mark(&mut self, what: Cost) {
        if !SWITCH_PIECES {
            return;
        }
        let t = crate::arch::cpu::rdtsc();
        add(&COUNT[what as usize], 1);
        add(&TSC[what as usize], t.wrapping_sub(self.0));
        self.0 = t;
    }
}

/// Ends a measurement of `what` whose start (TSC) `t0` the caller already has, at TSC `t1`.
pub fn record_span(what: Cost, t0: u64, t1: u64) {
    add(&COUNT[what as usize], 1);
    add(&TSC[what as usize], t1.wrapping_sub(t0));
}

/// Adds `n` to a counting (not timed) entry.
pub fn count(what: Cost, n: u64) {
    add(&COUNT[what as usize], n);
}

/// Prints every counter that ran: `cost: NAME N times, NS ns each`.
pub fn report() {
    for (i, name) in NAMES.iter().enumerate() {
        let n = COUNT[i].load(Ordering::Relaxed);
        if n == 0 {
            continue;
        }
        let ns = crate::time::tsc_to_ns(TSC[i].load(Ordering::Relaxed));
        crate::kprintln!(
            "cost: {} {} times, {} ns each",
            name,
            kcore::fmt::Dec(n),
            kcore::fmt::Dec(ns / n)
        );
    }
    let faults = crate::arch::mem::copy_faults();
    if faults != 0 {
        crate::kprintln!(
            "fixup: {} user copies faulted and resumed at their fixup",
            kcore::fmt::Dec(faults)
        );
    }
}
