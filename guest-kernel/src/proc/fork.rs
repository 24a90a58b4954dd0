//! fork: a new process sharing the parent's memory copy-on-write, with a copy of its descriptor table
//! (the open file descriptions themselves are shared), dispositions, mask, cwd and groups. The child
//! starts in user mode with the parent's registers and 0 in rax.
#![deny(unsafe_code)]

use super::{sched, Pid, Process, State, KERNEL_STACK_SIZE};
use crate::arch::switch::{self, TaskContext};
use crate::arch::trap::TrapFrame;
use crate::cost::{self, Cost};
use crate::mm::user;
use alloc::boxed::Box;
use alloc::rc::Rc;
use core::cell::RefCell;
use kcore::errno::Errno;

/// clone's CLONE_CHILD_SETTID: store the child's tid at `ctid` in the child's memory.
pub const CLONE_CHILD_SETTID: u64 = 0x0100_0000;
/// clone's CLONE_VFORK: the parent waits until the child execs or exits.
pub const CLONE_VFORK: u64 = 0x4000;
pub const CLONE_VM: u64 = 0x100;
pub const CLONE_FS: u64 = 0x200;
pub const CLONE_FILES: u64 = 0x400;
pub const CLONE_SIGHAND: u64 = 0x800;
pub const CLONE_PARENT: u64 = 0x8000;
pub const CLONE_THREAD: u64 = 0x1_0000;
pub const CLONE_SETTLS: u64 = 0x8_0000;
pub const CLONE_PARENT_SETTID: u64 = 0x10_0000;
pub const CLONE_CHILD_CLEARTID: u64 = 0x20_0000;

/// What clone and clone3 were asked for (the exit signal left out: it is always SIGCHLD here).
pub struct CloneArgs {
    pub flags: u64,
    /// The new stack pointer (0: the caller's).
    pub stack: u64,
    pub ptid: u64,
    pub ctid: u64,
    pub tls: u64,
}

/// clone with CLONE_VM and without CLONE_VFORK: a thread of the caller's group (CLONE_THREAD) or a
/// process sharing its memory. The new task shares the memory (`Mm`), the descriptor table with
/// CLONE_FILES (else a copy), starts at the caller's registers with rax 0 on `stack`, with `tls` as
/// FS base (CLONE_SETTLS), its signal mask the caller's, nothing pending and no alternate stack
/// (Linux gives a new thread none), the dispositions shared with CLONE_SIGHAND (else copied).
pub fn clone_shared(frame: &TrapFrame, a: &CloneArgs) -> Result<Pid, Errno> {
    let t0 = cost::start();
    let mut kstack = crate::mm::heap::try_alloc_stack(KERNEL_STACK_SIZE).ok_or(Errno::EAGAIN)?;
    let tid = super::alloc_pid()?;
    let mut ctx = Box::new(TaskContext::new());
    switch::save_fx(&mut ctx);
    let mut child_frame = *frame;
    child_frame.rax = 0;
    if a.stack != 0 {
        child_frame.rsp = a.stack;
    }
    switch::prepare_new_task(&mut ctx, &mut kstack, &child_frame);
    let thread = a.flags & CLONE_THREAD != 0;
    let jiffies = crate::time::jiffies();
    let child = super::with_current(|p| {
        Box::new(Process {
            pid: tid,
            tgid: if thread { p.tgid } else { tid },
            clear_child_tid: if a.flags & CLONE_CHILD_CLEARTID != 0 {
                a.ctid
            } else {
                0
            },
            robust_list: 0,
            group_exit: None,
            ppid: if thread || a.flags & CLONE_PARENT != 0 {
                p.ppid
            } else {
                p.tgid
            },
            pgid: p.pgid,
            sid: p.sid,
            ctty: p.ctty,
            state: State::Ready,
            name: p.name.clone(),
            exec: p.exec.clone(),
            mm: p.mm.clone(),
            fds: if a.flags & CLONE_FILES != 0 {
                p.fds.share()
            } else {
                p.fds.clone()
            },
            cwd: if a.flags & CLONE_FS != 0 {
                p.cwd.share()
            } else {
                p.cwd.clone()
            },
            fs_base: if a.flags & CLONE_SETTLS != 0 {
                a.tls
            } else {
                p.fs_base
            },
            exit_status: None,
            stop_report: None,
            subreaper: false,
            children_csw: [0; 2],
            vfork_parent: None,
            signals: super::signal::SigState {
                actions: if a.flags & CLONE_SIGHAND != 0 {
                    p.signals.actions.share()
                } else {
                    p.signals.actions.clone()
                },
                blocked: p.signals.blocked,
                pending: 0,
                // The group's set is the group's (CLONE_THREAD); a process sharing only the
                // memory has its own.
                shared_pending: if thread {
                    p.signals.shared_pending.share()
                } else {
                    Default::default()
                },
                fault_info: None,
                saved_mask: None,
                waiting: 0,
                altstack: super::signal::AltStack::default(),
                // A thread made while its group is stopping stops too.
                jobctl_stop: p.signals.jobctl_stop,
                group_stop: Default::default(),
            },
            wake_at: 0,
            restart_sleep: None,
            start_jiffies: jiffies,
            ctx,
            kstack,
        })
    });
    super::insert(child);
    sched::new_task(tid, Some(super::current_pid()));
    cost::record(Cost::Fork, t0);
    Ok(tid)
}

/// vfork (and clone with CLONE_VM|CLONE_VFORK, as glibc's posix_spawn uses): the child runs in the
/// parent's memory (the same page tables: what it writes before exec, such as posix_spawn's error
/// code, the parent sees), and the parent waits until the child execs or exits, as Linux's vfork does.
/// No page tables are copied, so this is much cheaper than fork here.
pub fn vfork(frame: &TrapFrame, flags: u64, ctid: u64) -> Result<Pid, Errno> {
    let child = clone_process(frame, flags, ctid, true)?;
    let me = super::current_pid();
    super::with_proc(child, |c| c.vfork_parent = Some(me));
    while super::with_proc(child, |c| c.vfork_parent.is_some()).unwrap_or(false) {
        sched::block(super::Chan::Vfork(child));
    }
    Ok(child)
}

/// The current process execs or exits: a parent waiting in vfork goes on.
pub fn release_vfork_parent() {
    let (pid, parent) = super::with_current(|p| (p.pid, p.vfork_parent.take()));
    if parent.is_some() {
        sched::wake(super::Chan::Vfork(pid));
    }
}

/// Forks the current process; the child resumes from `frame` with rax = 0. Returns the child's pid.
pub fn fork(frame: &TrapFrame, flags: u64, ctid: u64) -> Result<Pid, Errno> {
    clone_process(frame, flags, ctid, false)
}

/// A new process like the current one; `share_memory`: the vfork form (see [`vfork`]), else a
/// copy-on-write copy of the address space.
fn clone_process(
    frame: &TrapFrame,
    flags: u64,
    ctid: u64,
    share_memory: bool,
) -> Result<Pid, Errno> {
    let t0 = cost::start();
    let mut kstack = crate::mm::heap::try_alloc_stack(KERNEL_STACK_SIZE).ok_or(Errno::EAGAIN)?;
    let pid = super::alloc_pid()?;
    let mut ctx = Box::new(TaskContext::new());
    switch::save_fx(&mut ctx);
    let mut child_frame = *frame;
    child_frame.rax = 0;
    switch::prepare_new_task(&mut ctx, &mut kstack, &child_frame);
    let jiffies = crate::time::jiffies();
    let child = super::with_current(|p| -> Result<Box<Process>, Errno> {
        let t1 = cost::start();
        let mut mm = p.mm.borrow_mut();
        // The copy of the area list (up to MAX_MAP_COUNT entries) must fit in the heap beside its
        // reserve (Linux's dup_mmap: ENOMEM).
        let list_bytes = mm.vmas.clone_bytes();
        if !share_memory && !crate::mm::heap::can_spare(list_bytes) {
            return Err(Errno::ENOMEM);
        }
        let aspace = if share_memory {
            mm.aspace.alias()
        } else {
            let mm = &mut *mm;
            super::populate_shared_anonymous(&mut mm.aspace, &mm.vmas)?;
            mm.aspace.fork_cow().ok_or(Errno::ENOMEM)?
        };
        let child_mm = Rc::new(RefCell::new(super::Mm {
            aspace,
            vmas: mm.vmas.clone(),
            brk_start: mm.brk_start,
            brk: mm.brk,
        }));
        drop(mm);
        cost::record(Cost::ForkCow, t1);
        Ok(Box::new(Process {
            pid,
            tgid: pid,
            clear_child_tid: 0,
            robust_list: 0,
            group_exit: None,
            // A child of a thread is the group's child (wait from any of its threads).
            ppid: p.tgid,
            pgid: p.pgid,
            sid: p.sid,
            ctty: p.ctty,
            state: State::Ready,
            name: p.name.clone(),
            exec: p.exec.clone(),
            mm: child_mm,
            fds: p.fds.clone(),
            cwd: if flags & CLONE_FS != 0 {
                p.cwd.share()
            } else {
                p.cwd.clone()
            },
            fs_base: p.fs_base,
            exit_status: None,
            stop_report: None,
            subreaper: false,
            children_csw: [0; 2],
            vfork_parent: None,
            // Dispositions, mask and alternate stack copied; nothing pending, for the child or
            // its new group.
            signals: super::signal::SigState {
                actions: p.signals.actions.clone(),
                blocked: p.signals.blocked,
                pending: 0,
                shared_pending: Default::default(),
                altstack: p.signals.altstack,
                fault_info: None,
                saved_mask: p.signals.saved_mask,
                waiting: p.signals.waiting,
                jobctl_stop: false,
                group_stop: Default::default(),
            },
            wake_at: 0,
            restart_sleep: None,
            start_jiffies: jiffies,
            ctx,
            kstack,
        }))
    })?;
    let child = child;
    if flags & CLONE_CHILD_SETTID != 0 && ctid != 0 {
        let mut mm = child.mm.borrow_mut();
        let _ = mm.aspace.break_cow(ctid & !0xfff);
        if let Some(page) = user::page_bytes(&mm.aspace, ctid) {
            let off = (ctid & 0xfff) as usize;
            if off + 4 <= page.len() {
                page[off..off + 4].copy_from_slice(&pid.0.to_le_bytes());
            }
        }
    }
    super::insert(child);
    sched::new_task(pid, Some(super::current_pid()));
    cost::record(Cost::Fork, t0);
    Ok(pid)
}
