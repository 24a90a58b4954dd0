//! Thread system calls: clone and clone3 (threads, processes sharing memory, vfork, fork), futex,
//! gettid, set_tid_address, set_robust_list/get_robust_list, exit_group.
#![deny(unsafe_code)]

use super::file::{check_user, copy_to_user};
use super::SysResult;
use crate::arch::trap::TrapFrame;
use crate::proc::fork::{self, CloneArgs};
use crate::proc::futex::{self, WaitEnd};
use crate::proc::{self, with_current};
use kcore::errno::Errno;

fn read_u64(va: u64) -> Result<u64, Errno> {
    crate::mm::uaccess::read_val(va)
}

/// clone(flags, stack, parent_tid, child_tid, tls).
pub fn sys_clone(
    frame: &TrapFrame,
    flags: u64,
    stack: u64,
    ptid: u64,
    ctid: u64,
    tls: u64,
) -> SysResult {
    clone(
        frame,
        CloneArgs {
            flags: flags & !0xff,
            stack,
            ptid,
            ctid,
            tls,
        },
    )
}

/// clone3(args, size): `struct clone_args` (flags, pidfd, child_tid, parent_tid, exit_signal, stack,
/// stack_size, tls, ...). The stack is given by its lowest address and size.
pub fn sys_clone3(frame: &TrapFrame, args: u64, size: u64) -> SysResult {
    const VER0: u64 = 64;
    if !(VER0..=4096).contains(&size) {
        return Err(Errno::EINVAL);
    }
    let f = |i: u64| read_u64(args + 8 * i);
    let (flags, child_tid, parent_tid, exit_signal) = (f(0)?, f(2)?, f(3)?, f(4)?);
    let (stack, stack_size, tls) = (f(5)?, f(6)?, f(7)?);
    // The signal goes in exit_signal, not in the flags; fields past the first version must be 0.
    if flags & 0xff != 0 || exit_signal > 64 || (stack == 0) != (stack_size == 0) {
        return Err(Errno::EINVAL);
    }
    for i in 8..size / 8 {
        if f(i)? != 0 {
            return Err(Errno::EINVAL);
        }
    }
    clone(
        frame,
        CloneArgs {
            flags,
            stack: if stack == 0 { 0 } else { stack + stack_size },
            ptid: parent_tid,
            ctid: child_tid,
            tls,
        },
    )
}

fn clone(frame: &TrapFrame, a: CloneArgs) -> SysResult {
    use fork::{
        CLONE_CHILD_SETTID, CLONE_PARENT_SETTID, CLONE_SIGHAND, CLONE_THREAD, CLONE_VFORK, CLONE_VM,
    };
    // Linux's copy_process checks.
    if a.flags & CLONE_THREAD != 0 && a.flags & CLONE_SIGHAND == 0 {
        return Err(Errno::EINVAL);
    }
    if a.flags & CLONE_SIGHAND != 0 && a.flags & CLONE_VM == 0 {
        return Err(Errno::EINVAL);
    }
    let tid = if a.flags & CLONE_VFORK != 0 {
        let mut f = *frame;
        if a.stack != 0 {
            f.rsp = a.stack;
        }
        if a.flags & CLONE_VM != 0 {
            fork::vfork(&f, a.flags, a.ctid)?
        } else {
            // vfork without shared memory: a fork whose parent waits (rare; treated as fork).
            fork::fork(&f, a.flags, a.ctid)?
        }
    } else if a.flags & CLONE_VM != 0 {
        let tid = fork::clone_shared(frame, &a)?;
        if a.flags & CLONE_CHILD_SETTID != 0 && a.ctid != 0 {
            // The memory is shared: the child's word is ours.
            let _ = copy_to_user(a.ctid, &tid.0.to_le_bytes());
        }
        tid
    } else {
        let mut f = *frame;
        if a.stack != 0 {
            f.rsp = a.stack;
        }
        fork::fork(&f, a.flags, a.ctid)?
    };
    if a.flags & CLONE_PARENT_SETTID != 0 && a.ptid != 0 {
        let _ = copy_to_user(a.ptid, &tid.0.to_le_bytes());
    }
    Ok(tid.0 as u64)
}

pub fn sys_gettid() -> SysResult {
    Ok(proc::current_pid().0 as u64)
}

/// set_tid_address: where to clear the tid and wake a futex when this thread exits; returns the tid.
pub fn sys_set_tid_address(addr: u64) -> SysResult {
    with_current(|p| {
        p.clear_child_tid = addr;
        Ok(p.pid.0 as u64)
    })
}

/// set_robust_list(head, len): kept per thread (len must be 24, Linux's struct robust_list_head);
/// at thread death the list's futexes are marked FUTEX_OWNER_DIED and a waiter is woken.
pub fn sys_set_robust_list(head: u64, len: u64) -> SysResult {
    if len != 24 {
        return Err(Errno::EINVAL);
    }
    with_current(|p| p.robust_list = head);
    Ok(0)
}

/// get_robust_list(pid, head_ptr, len_ptr): the current thread's (pid 0) or another's list head.
pub fn sys_get_robust_list(pid: i32, head_ptr: u64, len_ptr: u64) -> SysResult {
    let head = if pid == 0 {
        with_current(|p| p.robust_list)
    } else {
        proc::with_proc(proc::Pid(pid as u32), |p| p.robust_list).ok_or(Errno::ESRCH)?
    };
    copy_to_user(head_ptr, &head.to_le_bytes())?;
    copy_to_user(len_ptr, &24u64.to_le_bytes())?;
    Ok(0)
}

pub fn sys_exit_group(code: i32) -> SysResult {
    proc::exit::exit_group(kcore::wait::exited(code))
}

fn read_timespec(va: u64) -> Result<u64, Errno> {
    let s = read_u64(va)? as i64;
    let ns = read_u64(va + 8)? as i64;
    if s < 0 || !(0..1_000_000_000).contains(&ns) {
        return Err(Errno::EINVAL);
    }
    Ok((s as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ns as u64))
}

/// futex(uaddr, op, val, timeout_or_val2, uaddr2, val3).
pub fn sys_futex(uaddr: u64, op: u32, val: u32, timeout: u64, uaddr2: u64, val3: u32) -> SysResult {
    let shared = op & futex::FUTEX_PRIVATE_FLAG == 0;
    let realtime = op & futex::FUTEX_CLOCK_REALTIME != 0;
    let cmd = op & !(futex::FUTEX_PRIVATE_FLAG | futex::FUTEX_CLOCK_REALTIME);
    if realtime && cmd != futex::FUTEX_WAIT && cmd != futex::FUTEX_WAIT_BITSET {
        return Err(Errno::ENOSYS);
    }
    match cmd {
        futex::FUTEX_WAIT | futex::FUTEX_WAIT_BITSET => {
            let bitset = if cmd == futex::FUTEX_WAIT {
                u32::MAX
            } else {
                val3
            };
            if bitset == 0 {
                return Err(Errno::EINVAL);
            }
            // WAIT's timeout is relative (CLOCK_MONOTONIC), WAIT_BITSET's absolute on its clock.
            let deadline = if timeout == 0 {
                None
            } else {
                let t = read_timespec(timeout)?;
                let now = crate::time::now_ns();
                Some(if cmd == futex::FUTEX_WAIT {
                    now.saturating_add(t)
                } else if realtime {
                    now.saturating_add(t.saturating_sub(crate::time::realtime_ns()))
                } else {
                    t
                })
            };
            let k = futex::key(uaddr, shared)?;
            if futex::read_word(uaddr)? != val {
                return Err(Errno::EAGAIN);
            }
            match futex::wait(k, bitset, deadline) {
                Ok(()) => Ok(0),
                Err(WaitEnd::Timeout) => Err(Errno::ETIMEDOUT),
                // Without a timeout the wait restarts after a handler with SA_RESTART (Linux:
                // ERESTARTSYS); with one, EINTR.
                Err(WaitEnd::Signal) if deadline.is_none() => Err(Errno::ERESTARTSYS),
                Err(WaitEnd::Signal) => Err(Errno::EINTR),
            }
        }
        futex::FUTEX_WAKE | futex::FUTEX_WAKE_BITSET => {
            let bitset = if cmd == futex::FUTEX_WAKE {
                u32::MAX
            } else {
                val3
            };
            if bitset == 0 {
                return Err(Errno::EINVAL);
            }
            let k = futex::key(uaddr, shared)?;
            Ok(futex::wake(k, val, bitset) as u64)
        }
        futex::FUTEX_REQUEUE | futex::FUTEX_CMP_REQUEUE => {
            let nr_requeue = timeout as u32;
            if (val as i32) < 0 || (nr_requeue as i32) < 0 {
                return Err(Errno::EINVAL);
            }
            let k1 = futex::key(uaddr, shared)?;
            let k2 = futex::key(uaddr2, shared)?;
            if cmd == futex::FUTEX_CMP_REQUEUE && futex::read_word(uaddr)? != val3 {
                return Err(Errno::EAGAIN);
            }
            Ok(futex::requeue(k1, k2, val, nr_requeue) as u64)
        }
        futex::FUTEX_WAKE_OP => {
            if !futex::wake_op_valid(val3) {
                return Err(Errno::ENOSYS);
            }
            let k1 = futex::key(uaddr, shared)?;
            let k2 = futex::key(uaddr2, shared)?;
            check_user(uaddr2, 4, true)?;
            let old = futex::read_word(uaddr2)?;
            let (new, hit) = futex::wake_op_apply(old, val3);
            copy_to_user(uaddr2, &new.to_le_bytes())?;
            let mut n = futex::wake(k1, val, u32::MAX);
            if hit {
                n += futex::wake(k2, timeout as u32, u32::MAX);
            }
            Ok(n as u64)
        }
        _ => Err(Errno::ENOSYS),
    }
}

const FUTEX_WAITERS: u32 = 0x8000_0000;
const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
/// Most robust-list entries walked (Linux's ROBUST_LIST_LIMIT).
const ROBUST_LIST_LIMIT: u32 = 2048;

/// Robust futexes at thread death (Linux's exit_robust_list): every lock on the list `head` (and
/// the one in `list_op_pending`) still owned by `tid` gets FUTEX_OWNER_DIED, and one waiter is woken
/// if it had FUTEX_WAITERS, so the next locker gets EOWNERDEAD. A bad list just ends the walk.
pub fn robust_cleanup(head: u64, tid: proc::Pid) {
    let Ok(first) = read_u64(head) else { return };
    let Ok(offset) = read_u64(head + 8) else {
        return;
    };
    let pending = read_u64(head + 16).unwrap_or(0);
    let mut entry = first;
    let mut n = 0;
    let handle = |e: u64| {
        let word = e.wrapping_add(offset);
        let Ok(v) = futex::read_word(word) else {
            return;
        };
        if v & FUTEX_TID_MASK != tid.0 {
            return;
        }
        let new = (v & FUTEX_WAITERS) | FUTEX_OWNER_DIED;
        if copy_to_user(word, &new.to_le_bytes()).is_ok() && v & FUTEX_WAITERS != 0 {
            futex::wake_address(word, 1);
        }
    };
    while entry != head && entry != 0 && n < ROBUST_LIST_LIMIT {
        let next = read_u64(entry).unwrap_or(0);
        if entry != pending {
            handle(entry);
        }
        entry = next;
        n += 1;
    }
    if pending != 0 {
        handle(pending);
    }
}
