//! Processes and threads: the control block of a task (a thread; a process is a thread group, named
//! by its leader's pid, `tgid`), the task table and the current task, the memory a group shares
//! ([`Mm`]), user faults.
//!
//! One CPU. [`sched`] switches between tasks (CFS through `kcore::sched`), [`fork`] duplicates the
//! current process copy-on-write or makes a thread sharing its memory, [`exit`] ends a thread or a
//! group and reaps children (wait4, reparenting), [`signal`] sends and delivers signals, [`futex`]
//! keeps the futex wait queues, [`exec`] loads programs, [`oom`] picks a victim when memory is out.
//! Kernel code is never preempted: it runs with interrupts off, and only gives the CPU away in
//! [`sched::schedule`] (blocking, exit, or the timer tick taken in user mode).
#![deny(unsafe_code)]

pub mod exec;
pub mod exit;
pub mod fork;
pub mod futex;
pub mod oom;
pub mod sched;
pub mod signal;

use crate::arch::layout::USER_STACK_TOP;
use crate::arch::switch::TaskContext;
use crate::arch::trap::TrapFrame;
use crate::fs::fd::FdTable;
use crate::fs::mapping::MkwriteError;
use crate::kprintln;
use crate::mm::paging::{prot_flags, AddressSpace, DIRTY, SHARED, WRITABLE};
use crate::mm::{page_down, user, PAGE_SIZE};
use crate::sync::KCell;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::sync::atomic::{AtomicBool, Ordering};
use kcore::errno::Errno;
use kcore::fmt::{Dec, Hex};
use kcore::vma::{Backing, Vma, VmaList};

/// A process id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pid(pub u32);

/// The init process's pid.
pub const INIT_PID: Pid = Pid(1);

/// What a blocked process waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chan {
    /// A child of this pid changing state (wait4).
    Child(Pid),
    /// A wait queue (`sync::WaitQueue`, by key) owned by what is waited on: a pipe, the console, a
    /// socket, a driver.
    Queue(u64),
    /// A timeout (nanosleep); see `Process::wake_at`.
    Sleep,
    /// Only a signal (pause).
    Signal,
    /// A vfork child (this pid) execing or exiting.
    Vfork(Pid),
    /// A futex word (the waiter's queue is in `futex`; a wake names the waiters it takes).
    Futex,
}

/// What execve ran: argv joined with NULs (the first [`exec::CMDLINE_MAX`] bytes), the
/// executable's absolute path, and where the argument and environment strings
/// are in the process's memory (`[start, end)`: /proc/PID/cmdline and environ read them there, as
/// Linux's `arg_start`..`arg_end` and `env_start`..`env_end`).
#[derive(Debug, Default)]
pub struct ExecInfo {
    pub cmdline: Vec<u8>,
    pub exe: Vec<u8>,
    pub args: (u64, u64),
    pub env: (u64, u64),
}

/// Scheduling state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Runnable: running, or waiting in the run queue (the scheduler knows which; a switch does not
    /// touch the process table to say so).
    Ready,
    Blocked(Chan),
    Stopped,
    Zombie,
}

/// A process's memory: its address space, its areas (mmap, mprotect, munmap, brk; the page tables
/// follow them) and its break. Threads (CLONE_VM) share one; the last user frees the address space.
pub struct Mm {
    pub aspace: AddressSpace,
    pub vmas: VmaList,
    pub brk_start: u64,
    pub brk: u64,
}

/// A shared handle on an [`Mm`].
pub type MmRef = Rc<RefCell<Mm>>;

impl Mm {
    /// A new handle on `aspace` with `vmas`, the break at `brk_start`.
    pub fn new_ref(aspace: AddressSpace, vmas: VmaList, brk_start: u64) -> MmRef {
        Rc::new(RefCell::new(Mm {
            aspace,
            vmas,
            brk_start,
            brk: brk_start,
        }))
    }

    /// No memory (a zombie's).
    pub fn none() -> MmRef {
        Self::new_ref(AddressSpace::empty(), VmaList::new(), 0)
    }
}

/// Gives up `mm` (exit, execve): the last user frees the address space (which must not be active),
/// after its writes through shared file mappings have made their page-cache pages dirty.
pub fn drop_mm(mm: MmRef) {
    if let Ok(cell) = Rc::try_unwrap(mm) {
        let mut m = cell.into_inner();
        harvest_dirty(&mut m.aspace, &m.vmas, 0, u64::MAX);
        m.aspace.release();
    }
}

/// Set when a write fault makes a page of a shared file mapping writable; cleared by a
/// [`harvest_all_dirty`] that reached every address space. While it is clear no such page is
/// writable anywhere, so the write-protection before a write-back ([`write_protect_mapped`]) has
/// nothing to do.
static MAPPED_WRITABLE: AtomicBool = AtomicBool::new(false);

/// Every memory in the process table, once each (threads share one); None when the table is in
/// use (a filesystem call made from inside a look-up of it).
fn all_mms() -> Option<Vec<MmRef>> {
    let procs = PROCS.try_borrow().ok()?;
    let mut all: Vec<MmRef> = Vec::new();
    for p in procs.values() {
        if !all.iter().any(|m| Rc::ptr_eq(m, &p.mm)) {
            all.push(p.mm.clone());
        }
    }
    Some(all)
}

/// Every address space's writes through shared file mappings become dirty page-cache pages, and
/// those pages read-only again: sync, syncfs, fsync and fdatasync call this first, and the
/// write-back before it writes ([`write_protect_mapped`]), as Linux's clear_page_dirty_for_io
/// write-protects a page it is about to write (so the next write faults, dirties the page again
/// and updates the file's times). An address space in use at that moment (the faulting process's
/// own, when a fault's filesystem call ends in the periodic write-back) is left for the next time.
pub fn harvest_all_dirty() {
    if crate::mm::pagecache::busy() {
        return;
    }
    let Some(mms) = all_mms() else {
        return;
    };
    MAPPED_WRITABLE.store(false, Ordering::Relaxed);
    for mm in mms {
        match mm.try_borrow_mut() {
            Ok(mut m) => {
                let m = &mut *m;
                harvest_dirty(&mut m.aspace, &m.vmas, 0, u64::MAX);
            }
            Err(_) => MAPPED_WRITABLE.store(true, Ordering::Relaxed),
        }
    }
}

/// [`harvest_all_dirty`] if a write fault made a shared file page writable since the last one
/// (`fs::mapping::write_protect_mapped`, before every periodic and whole-filesystem write-back).
///
/// Why write-protection rather than only the page-table dirty bits: the first write must be seen
/// at the fault, where Linux's page_mkwrite allocates the blocks under a hole (a full disk is
/// SIGBUS there, not a write lost at write-back) and updates mtime; the dirty bits alone are
/// seen only when someone walks the tables. With no reverse map from a page to its mappings,
/// the walk over every address space takes its place, and it runs only when a page became
/// writable since the last one.
pub fn write_protect_mapped() {
    if MAPPED_WRITABLE.load(Ordering::Relaxed) {
        harvest_all_dirty();
    }
}

/// The file offset area `v` maps from, if it maps inode `ino` of device `dev`.
fn file_offset(v: &Vma, dev: u32, ino: u32) -> Option<u64> {
    match &v.backing {
        Backing::File {
            dev: d,
            inode,
            offset,
            ..
        } if *d == dev && inode.ino == ino => Some(*offset),
        _ => None,
    }
}

/// Truncation to `len` bytes (`fs::mapping::unmap_file_pages`, Linux's unmap_mapping_range with
/// even_cows): every mapping of inode `ino` on device `dev`, shared or private, loses its pages
/// from the one holding the new end on (the cache drops that page: it faults in again with zeros
/// past the end), so an access wholly past the end is SIGBUS and one after the file grows again
/// reads the file (zeros). A private copy of the page holding the end that the process wrote (its
/// dirty bit) stays, as Linux unmaps only whole pages past the end. With `harvest`, shared pages
/// written through first become dirty cache pages (the one holding the new end is written back
/// before the truncation). An address space in use at that moment keeps its pages (none is:
/// truncate and ftruncate hold none).
pub fn unmap_file_pages(dev: u32, ino: u32, len: u64, harvest: bool) {
    let Some(mms) = all_mms() else {
        return;
    };
    let from_off = page_down(len);
    let partial = len != from_off;
    for mm in mms {
        let Ok(mut m) = mm.try_borrow_mut() else {
            continue;
        };
        let m = &mut *m;
        let ranges: Vec<(u64, u64)> = m
            .vmas
            .iter()
            .filter_map(|v| {
                let offset = file_offset(v, dev, ino)?;
                let mut a = v.start.saturating_add(from_off.saturating_sub(offset));
                if !v.shared
                    && partial
                    && from_off >= offset
                    && a < v.end
                    && m.aspace.translate(a).is_some_and(|(_, f)| f & DIRTY != 0)
                {
                    a += PAGE_SIZE;
                }
                (a < v.end).then_some((a, v.end))
            })
            .collect();
        for (a, b) in ranges {
            if harvest {
                harvest_dirty(&mut m.aspace, &m.vmas, a, b);
            }
            user::unmap_range(&mut m.aspace, a, b);
        }
    }
}

/// Page `idx` of inode `ino` on device `dev` becomes read-only in every shared mapping of it, what
/// was written through them first a dirty cache page ([`harvest_dirty`]): the file is about to grow
/// past the blocks under it (`fs::mapping::size_growing`), so the next store must fault. An address
/// space in use at that moment keeps its entry (none is: write and truncate hold none).
pub fn write_protect_file_page(dev: u32, ino: u32, idx: u64) {
    let Some(mms) = all_mms() else {
        return;
    };
    let at = idx * PAGE_SIZE;
    for mm in mms {
        let Ok(mut m) = mm.try_borrow_mut() else {
            continue;
        };
        let m = &mut *m;
        let pages: Vec<u64> = m
            .vmas
            .iter()
            .filter(|v| v.writes_file())
            .filter_map(|v| {
                let offset = file_offset(v, dev, ino).filter(|&o| at >= o)?;
                let va = v.start.checked_add(at - offset)?;
                (va < v.end).then_some(va)
            })
            .collect();
        for va in pages {
            harvest_dirty(&mut m.aspace, &m.vmas, va, va + PAGE_SIZE);
        }
    }
}

/// The pages of shared disk-file mappings in `[start, end)` written through the mapping since the
/// last harvest (their page-table dirty bit, cleared now) become dirty page-cache pages, for
/// write-back to write (msync, munmap, exit, and before a write-back), and all of them read-only
/// again (the next write faults: see [`resolve_fault`]). tmpfs mappings are left as they are: their
/// pages are the file, with nothing to write back (Linux does not write-protect shmem either).
///
/// An address space with no shared mapping of a file opened for writing (the areas keep that
/// count) has nothing to harvest: most munmaps, and every exit of such a process, look no further.
pub fn harvest_dirty(aspace: &mut AddressSpace, vmas: &VmaList, start: u64, end: u64) {
    if !vmas.writes_files() {
        return;
    }
    for v in vmas.overlapping(start, end) {
        let Backing::File {
            dev,
            inode,
            offset,
            may_write: true,
            ..
        } = &v.backing
        else {
            continue;
        };
        if !v.shared || !crate::fs::mapping::is_cached_dev(*dev) {
            continue;
        }
        let (a, b) = (v.start.max(start), v.end.min(end));
        aspace.take_dirty(a, b, |va, pa| {
            let idx = (offset + (va - v.start)) / PAGE_SIZE;
            crate::fs::mapping::mapped_page_written(*dev, inode.ino, idx, pa);
        });
    }
}

/// Runs `f` on the current process's memory (the process table is not borrowed meanwhile).
pub fn with_mm<R>(f: impl FnOnce(&mut Mm) -> R) -> R {
    let mm = with_current(|p| p.mm.clone());
    let mut m = mm.borrow_mut();
    f(&mut m)
}

/// Size of each process's kernel stack.
pub const KERNEL_STACK_SIZE: usize = 32 * 1024;
/// Largest user stack (RLIMIT_STACK).
pub const STACK_LIMIT: u64 = 8 << 20;

/// The process control block.
pub struct Process {
    /// The thread id (a task: each thread is one entry of the table).
    pub pid: Pid,
    /// The thread group (the process, as getpid sees it): the leader's pid.
    pub tgid: Pid,
    /// CLONE_CHILD_CLEARTID / set_tid_address: cleared and futex-woken when the thread exits.
    pub clear_child_tid: u64,
    /// set_robust_list's head (0: none).
    pub robust_list: u64,
    /// exit_group or a fatal signal ended the group with this status (the leader reports it).
    pub group_exit: Option<i32>,
    pub ppid: Pid,
    pub pgid: Pid,
    pub sid: Pid,
    /// The console is this process's controlling terminal (see `tty`).
    pub ctty: bool,
    pub state: State,
    pub name: Vec<u8>,
    /// What the last execve ran: arguments, environment, path (/proc/PID/{cmdline,environ,exe});
    /// shared with forked children until they exec.
    pub exec: Rc<ExecInfo>,
    /// The memory: address space, areas, break (shared by the threads of a group, CLONE_VM).
    pub mm: MmRef,
    pub fds: FdTable,
    pub cwd: crate::fs::cwd::FsContext,
    pub fs_base: u64,
    /// Wait status once a zombie.
    pub exit_status: Option<i32>,
    /// A stop or continue not yet reported to wait4 (WUNTRACED / WCONTINUED).
    pub stop_report: Option<i32>,
    /// PR_SET_CHILD_SUBREAPER.
    pub subreaper: bool,
    /// Context switches (voluntary, involuntary) of reaped children and their reaped descendants
    /// (getrusage's RUSAGE_CHILDREN; their CPU times are kept by the scheduler).
    pub children_csw: [u64; 2],
    /// A vfork child: its parent waits until it execs or exits.
    pub vfork_parent: Option<Pid>,
    pub signals: signal::SigState,
    /// When a sleeping process wakes (ns since boot).
    pub wake_at: u64,
    /// A sleep interrupted by a signal: (deadline, user address for the time left), for
    /// restart_syscall.
    pub restart_sleep: Option<(u64, u64)>,
    /// jiffies at creation (for /proc/PID/stat).
    pub start_jiffies: u64,
    /// Saved kernel RSP and user x87/SSE state while switched out.
    pub ctx: Box<TaskContext>,
    /// The kernel stack (traps from ring 3 land on its top, `ctx.kstack_top`); only owned here.
    #[allow(dead_code)]
    pub kstack: Box<[core::mem::MaybeUninit<u8>]>,
}

/// The `si_code` of a SIGSEGV from a page fault (Linux's SEGV_MAPERR, SEGV_ACCERR), or SIGBUS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadAccess {
    /// No area at the address.
    Unmapped,
    /// An area whose protection forbids the access.
    Protection,
    /// No memory for the page (the out-of-memory path may make room), or no data for it.
    NoPage,
    /// A file page past the end of the file, or no room on its filesystem for a write into a
    /// hole (Linux: SIGBUS from the fault, no out-of-memory handling).
    Bus,
}

/// What a fault or a system call's user access wants of a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Exec,
}

/// Pages a file fault maps at once (the faulting one and those after it): Linux's default
/// fault_around_bytes, 64 KiB.
const FAULT_AROUND_PAGES: u64 = 16;

/// The page-table flags of a page of area `v`: its protection, and [`SHARED`] for MAP_SHARED.
pub fn page_flags(v: &Vma) -> u64 {
    prot_flags(v.prot) | if v.shared { SHARED } else { 0 }
}

/// Gives every page of the shared anonymous areas that has none yet its zeroed frame (fork: parent
/// and child must then map the same frames; a page first touched after the fork would otherwise
/// become two). Linux keeps these pages in a shmem file instead, found again by each fault.
pub fn populate_shared_anonymous(aspace: &mut AddressSpace, vmas: &VmaList) -> Result<(), Errno> {
    for v in vmas
        .iter()
        .filter(|v| v.shared && v.backing == Backing::Anonymous)
    {
        for page in (v.start..v.end).step_by(PAGE_SIZE as usize) {
            if aspace.translate(page).is_none() {
                user::map_zero_page(aspace, page, page_flags(v)).map_err(|_| Errno::ENOMEM)?;
            }
        }
    }
    Ok(())
}

/// Makes the page at `va` usable for `access` if its area allows it: demand-zero for an anonymous
/// page not yet mapped, copy-on-write for a write to a shared one. Called by the page-fault handler
/// and by system calls checking user buffers (the same rules, so a read() into a PROT_NONE buffer is
/// EFAULT where a touch of it is SIGSEGV).
pub fn resolve_fault(
    aspace: &mut AddressSpace,
    vmas: &mut VmaList,
    va: u64,
    access: Access,
) -> Result<(), BadAccess> {
    if vmas.find(va).is_none() {
        // Below the stack: it grows (up to RLIMIT_STACK), as Linux's stack area does.
        vmas.grow_down(va, USER_STACK_TOP, STACK_LIMIT);
    }
    let v = vmas.find(va).ok_or(BadAccess::Unmapped)?;
    let allowed = match access {
        Access::Read => v.prot != 0,
        Access::Write => v.writable(),
        Access::Exec => v.executable(),
    };
    if !allowed {
        return Err(BadAccess::Protection);
    }
    let page = page_down(va);
    match aspace.translate(page) {
        None => match &v.backing {
            Backing::Anonymous => {
                let t0 = crate::cost::start();
                user::map_zero_page(aspace, page, page_flags(v)).map_err(|_| BadAccess::NoPage)?;
                crate::cost::record(crate::cost::Cost::ZeroFault, t0);
                Ok(())
            }
            Backing::File {
                dev, inode, offset, ..
            } if v.shared && crate::fs::ext2file::maps_file_pages(*dev) => {
                // A shared mapping of a disk file maps the page cache's own frame (counted as one
                // more user), so every mapping, read and write of the file sees one page; past
                // the end of the file it is SIGBUS.
                // The entry is read-only until a write: a write fault first goes through
                // page_mkwrite (blocks for a hole, the page dirty, mtime), as on Linux.
                let idx = (offset + (page - v.start)) / PAGE_SIZE;
                let pa = crate::fs::ext2file::map_shared_page(*dev, inode.ino, idx).map_err(
                    |e| match e {
                        Errno::ENOMEM => BadAccess::NoPage,
                        _ => BadAccess::Bus,
                    },
                )?;
                // tmpfs has nothing to write back: its pages are mapped as the area allows (Linux
                // asks for no write notification there) and only a write fault updates mtime.
                let notify = crate::fs::mapping::is_cached_dev(*dev);
                let mut flags = page_flags(v);
                if notify {
                    flags &= !WRITABLE;
                }
                if access == Access::Write {
                    if crate::fs::mapping::page_mkwrite(*dev, inode.ino, idx, pa).is_err() {
                        crate::mm::frame::put(pa);
                        return Err(BadAccess::Bus);
                    }
                    if notify {
                        MAPPED_WRITABLE.store(true, Ordering::Relaxed);
                        flags |= WRITABLE;
                    }
                }
                aspace.map(page, pa, flags).map_err(|_| {
                    crate::mm::frame::put(pa);
                    BadAccess::NoPage
                })?;
                Ok(())
            }
            Backing::File {
                dev, inode, offset, ..
            } => {
                // The file's page, read straight into a fresh frame that is this mapping's own
                // (no page cache: private pages are copies anyway, shared ones read-only). A page
                // wholly past the end of the file is SIGBUS, as Linux. Fault-around (Linux's
                // fault_around_bytes, 64 KiB): the following pages of the area that are not mapped
                // yet come in the same device request, which is what a fault costs here.
                let t0 = crate::cost::start();
                // The file as it is now (truncated or grown since the mmap).
                let now_inode = crate::fs::mapping::current_inode(*dev, inode.ino);
                let inode = now_inode.as_ref().unwrap_or(inode);
                let off = offset + (page - v.start);
                let file_end = crate::mm::page_up(inode.size);
                if off >= file_end {
                    return Err(BadAccess::Bus);
                }
                let flags = prot_flags(v.prot);
                let mut n = 1;
                while n < FAULT_AROUND_PAGES
                    && page + n * PAGE_SIZE < v.end
                    && off + n * PAGE_SIZE < file_end
                    && aspace.translate(page + n * PAGE_SIZE).is_none()
                {
                    n += 1;
                }
                let data_end = (off + n * PAGE_SIZE).min(inode.size);
                let bytes = match user::map_fresh_run(aspace, page, n, flags, data_end - off) {
                    Ok(b) => b,
                    // No contiguous run free: the one page.
                    Err(_) if n > 1 => {
                        n = 1;
                        user::map_zeroed_page(aspace, page, flags).map_err(|_| BadAccess::NoPage)?
                    }
                    Err(_) => return Err(BadAccess::NoPage),
                };
                let data_end = (off + n * PAGE_SIZE).min(inode.size);
                if exec::read_into(*dev, inode, off, data_end, bytes).is_err() {
                    user::unmap_range(aspace, page, page + n * PAGE_SIZE);
                    return Err(BadAccess::NoPage);
                }
                crate::cost::count(crate::cost::Cost::FileFaultPages, n);
                crate::cost::record(crate::cost::Cost::FileFault, t0);
                Ok(())
            }
        },
        Some((pa, f)) => {
            if access != Access::Write || f & WRITABLE != 0 {
                // Already allowed (the area permits it and the entry follows the area).
                return Ok(());
            }
            if f & SHARED != 0 {
                // A shared page read-only in a writable area: a file page's first write since it
                // was mapped or written back (page_mkwrite), or mprotect gave the area write access.
                if let Backing::File {
                    dev, inode, offset, ..
                } = &v.backing
                {
                    let (dev, ino) = (*dev, inode.ino);
                    let idx = (offset + (page - v.start)) / PAGE_SIZE;
                    match crate::fs::mapping::page_mkwrite(dev, ino, idx, pa) {
                        Ok(()) => MAPPED_WRITABLE.store(true, Ordering::Relaxed),
                        Err(MkwriteError::Bus) => return Err(BadAccess::Bus),
                        Err(MkwriteError::Stale) => {
                            // Not the cache's page any more (the disk was written underneath):
                            // mapped again from the cache, then written.
                            user::unmap_range(aspace, page, page + PAGE_SIZE);
                            return resolve_fault(aspace, vmas, va, access);
                        }
                    }
                }
                return if aspace.make_shared_writable(page) {
                    Ok(())
                } else {
                    Err(BadAccess::Protection)
                };
            }
            match aspace.break_cow(page) {
                Ok(true) => Ok(()),
                Ok(false) => Err(BadAccess::Protection),
                Err(_) => Err(BadAccess::NoPage),
            }
        }
    }
}

/// The process table. Boxed entries: a PCB is ~2.5 KiB (64 signal actions), and B-tree nodes move
/// their values around on every insert and removal, which costs per byte in emulated kernel mode.
static PROCS: KCell<BTreeMap<Pid, Box<Process>>> = KCell::new(BTreeMap::new());
/// The running process; `None` while the idle task runs.
static CURRENT: KCell<Option<Pid>> = KCell::new(None);
static PIDS: KCell<kcore::pid::PidAlloc> =
    KCell::new(kcore::pid::PidAlloc::new(kcore::pid::PID_MAX));

/// The running process's PCB as `with_current` last found it, so that the system calls after the
/// first one since a switch need no lookup (null: look it up). A PCB is boxed, so its address stays
/// the same while it is in the table; the running process is never removed from the table (it is
/// reaped, or buried, only after the CPU has left it). Forgotten at every switch and whenever the
/// table itself is handed out or grows (`with_table`, `insert`), which is when entries may go (the
/// scheduler's own uses of the table, wakeups and `finish_switch`, change entries in place or remove
/// other processes; `finish_switch` forgets it too).
static CURRENT_PCB: KCell<*mut Process> = KCell::new(core::ptr::null_mut());

/// Forgets the cached PCB of the running process (a switch, or the table may change).
fn forget_current_pcb() {
    *CURRENT_PCB.borrow_mut() = core::ptr::null_mut();
}

/// Adds a process to the table.
pub fn insert(p: Box<Process>) {
    forget_current_pcb();
    PROCS.borrow_mut().insert(p.pid, p);
}

/// A free pid (Linux's cyclic allocation), or EAGAIN.
pub fn alloc_pid() -> Result<Pid, Errno> {
    let procs = PROCS.borrow();
    PIDS.borrow_mut()
        .alloc(|p| procs.contains_key(&Pid(p)))
        .map(Pid)
        .ok_or(kcore::errno::Errno::EAGAIN)
}

/// Runs `f` on the current process. The table stays borrowed while `f` runs, as for a lookup, so no
/// other reference to the PCB can exist meanwhile.
pub fn with_current<R>(f: impl FnOnce(&mut Process) -> R) -> R {
    let mut procs = PROCS.borrow_mut();
    let cached = *CURRENT_PCB.borrow();
    if !cached.is_null() {
        // SAFETY: `cached` points at the running process's boxed PCB, found in the table since the
        // last switch, `insert` or `with_table` (each forgets it), so the box is still in the table
        // and alive; the table is borrowed mutably above for as long as the reference lives, so no
        // other reference to this PCB exists.
        #[allow(unsafe_code)]
        let p = unsafe { &mut *cached };
        return f(p);
    }
    let pid = CURRENT.borrow().expect("a process is running");
    let p: &mut Process = procs.get_mut(&pid).expect("the current process exists");
    *CURRENT_PCB.borrow_mut() = p;
    f(p)
}

/// Runs `f` on process `pid` if it exists.
pub fn with_proc<R>(pid: Pid, f: impl FnOnce(&mut Process) -> R) -> Option<R> {
    PROCS.borrow_mut().get_mut(&pid).map(|p| f(p))
}

/// Runs `f` on the whole process table.
pub fn with_table<R>(f: impl FnOnce(&mut BTreeMap<Pid, Box<Process>>) -> R) -> R {
    forget_current_pcb();
    f(&mut PROCS.borrow_mut())
}

/// execve from thread `me` of group `tgid` (Linux's de_thread, once the other threads are gone): the
/// leader's entry (a zombie now) is freed without a report and `me` takes its pid, parent, start time
/// and children's totals. The old tid is free again.
pub fn take_over_leader(me: Pid, tgid: Pid) {
    let leader = with_table(|t| {
        let leader = t.remove(&tgid)?;
        let mut p = t.remove(&me)?;
        p.pid = tgid;
        p.ppid = leader.ppid;
        p.start_jiffies = leader.start_jiffies;
        p.children_csw = leader.children_csw;
        p.clear_child_tid = 0;
        p.robust_list = 0;
        t.insert(tgid, p);
        Some(leader)
    });
    if leader.is_some() {
        sched::release(tgid, None);
        sched::rename_current(tgid);
        forget_current_pcb();
    }
    // The leader's PCB, kernel stack and context go now (it never runs again).
    drop(leader);
}

/// The current process's pid (0 for the idle task).
pub fn current_pid() -> Pid {
    CURRENT.try_borrow().ok().and_then(|c| *c).unwrap_or(Pid(0))
}

/// A fault from ring 3 that is not a system call: demand paging and copy-on-write, else a signal.
pub fn user_fault(frame: &mut TrapFrame, addr: u64) {
    // (signal, si_code, si_addr) as Linux sends them.
    let (sig, code, info_addr) = match frame.vector {
        14 => {
            // Error code: bit 1 a write, bit 4 an instruction fetch.
            let access = if frame.error & 0x10 != 0 {
                Access::Exec
            } else if frame.error & 2 != 0 {
                Access::Write
            } else {
                Access::Read
            };
            match with_mm(|mm| resolve_fault(&mut mm.aspace, &mut mm.vmas, addr, access)) {
                Ok(()) => return,
                // No frame for the page: the OOM killer makes room (or kills this process).
                Err(BadAccess::NoPage) if oom::out_of_memory() => return,
                Err(BadAccess::Unmapped) => (signal::SIGSEGV, signal::SEGV_MAPERR, addr),
                Err(BadAccess::Protection) => (signal::SIGSEGV, signal::SEGV_ACCERR, addr),
                Err(BadAccess::NoPage | BadAccess::Bus) => {
                    (signal::SIGBUS, signal::BUS_ADRERR, addr)
                }
            }
        }
        // FPE_INTDIV and ILL_ILLOPN with the instruction's address; SI_KERNEL for the rest (#GP).
        0 => (signal::SIGFPE, 1, frame.rip),
        6 => (signal::SIGILL, 2, frame.rip),
        _ => (signal::SIGSEGV, signal::SI_KERNEL, 0),
    };
    let what = match frame.vector {
        14 if sig == signal::SIGBUS => "bus error",
        14 => "segfault",
        0 => "divide error",
        6 => "invalid opcode",
        13 => "general protection",
        v => crate::arch::interrupts::exception_name(v),
    };
    if signal::force_info(sig, code, info_addr) {
        // A handler will run (delivered on the way back to user mode).
        return;
    }
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
    exit::die(kcore::wait::signaled(sig, false));
}

/// Installs what the terminal and the drivers may ask of the process table (`sync::task`): they
/// sit below it and name no part of `proc`.
pub fn install_task_ops() {
    use crate::sync::task::{self, Current};
    crate::fs::mapping::install(crate::fs::mapping::MappingOps {
        unmap_file_pages,
        write_protect_mapped,
        write_protect_file_page,
    });
    task::install(task::Processes {
        current: || {
            with_current(|p| Current {
                pid: p.pid.0,
                tgid: p.tgid.0,
                ppid: p.ppid.0,
                sid: p.sid.0,
                pgid: p.pgid.0,
                ctty: p.ctty,
            })
        },
        set_ctty: |on| with_current(|p| p.ctty = on),
        signal_process: |pid, sig| signal::send_kernel(Pid(pid), sig),
        signal_group: |pgid, sig| {
            let _ = signal::send_group(Pid(pgid), sig);
        },
        ignores: signal::ignored_or_blocked,
        group_orphaned: exit::current_group_orphaned,
        session_of_group: |pgid| {
            let pg = Pid(pgid);
            with_table(|t| {
                t.values()
                    .find(|q| q.pgid == pg)
                    .or_else(|| t.get(&pg))
                    .map(|q| q.sid.0)
            })
        },
        release_ctty: |sid| {
            with_table(|t| {
                for p in t.values_mut().filter(|p| p.sid.0 == sid) {
                    p.ctty = false;
                }
            })
        },
    });
}
