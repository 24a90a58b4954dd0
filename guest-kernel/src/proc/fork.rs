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
        let aspace = if share_memory {
            mm.aspace.alias()
        } else {
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
            ppid: p.pid,
            pgid: p.pgid,
            sid: p.sid,
            ctty: p.ctty,
            state: State::Ready,
            name: p.name.clone(),
            cmdline: p.cmdline.clone(),
            mm: child_mm,
            fds: p.fds.clone(),
            cwd: p.cwd.clone(),
            fs_base: p.fs_base,
            exit_status: None,
            stop_report: None,
            subreaper: false,
            children_csw: [0; 2],
            vfork_parent: None,
            signals: super::signal::SigState {
                pending: 0,
                ..p.signals.clone()
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
