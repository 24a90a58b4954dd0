//! Memory system calls: brk, anonymous mmap, munmap, mprotect.
#![deny(unsafe_code)]

use super::SysResult;
use crate::mm::{page_up, user, PAGE_SIZE};
use crate::proc::{with_current, Vma, VmaKind};
use kcore::errno::Errno;

const PROT_WRITE: u32 = 2;
const PROT_EXEC: u32 = 4;
const MAP_PRIVATE: u32 = 0x02;
const MAP_FIXED: u32 = 0x10;
const MAP_ANONYMOUS: u32 = 0x20;
/// Largest brk heap.
const BRK_LIMIT: u64 = 1 << 30;

/// brk: moves the end of the heap area; returns the (possibly unchanged) break.
pub fn sys_brk(addr: u64) -> SysResult {
    with_current(|p| {
        if addr < p.brk_start || addr > p.brk_start + BRK_LIMIT {
            return Ok(p.brk);
        }
        let old_end = page_up(p.brk);
        let new_end = page_up(addr);
        if p.vmas.iter().any(|v| {
            v.kind == VmaKind::Anonymous
                && v.start != p.brk_start
                && v.start < new_end
                && v.end > old_end
        }) {
            return Ok(p.brk);
        }
        if new_end < old_end {
            user::unmap_range(&mut p.aspace, new_end, old_end);
        }
        let start = p.brk_start;
        if let Some(v) = p
            .vmas
            .iter_mut()
            .find(|v| v.start == start && v.kind == VmaKind::Anonymous)
        {
            v.end = new_end.max(start);
        }
        p.brk = addr;
        Ok(addr)
    })
}

/// mmap: private anonymous mappings only (zero-filled on first touch).
pub fn sys_mmap(addr: u64, len: u64, prot: u32, flags: u32, fd: i64, _off: u64) -> SysResult {
    if len == 0 {
        return Err(Errno::EINVAL);
    }
    if flags & MAP_ANONYMOUS == 0 || flags & MAP_PRIVATE == 0 {
        let _ = fd;
        return Err(Errno::ENODEV);
    }
    let len = page_up(len);
    with_current(|p| {
        let start = if flags & MAP_FIXED != 0 {
            if !addr.is_multiple_of(PAGE_SIZE) {
                return Err(Errno::EINVAL);
            }
            unmap_area(p, addr, addr + len);
            addr
        } else {
            let s = p.mmap_top.checked_sub(len).ok_or(Errno::ENOMEM)?;
            p.mmap_top = s;
            s
        };
        p.vmas.push(Vma {
            start,
            end: start + len,
            writable: prot & PROT_WRITE != 0,
            executable: prot & PROT_EXEC != 0,
            kind: VmaKind::Anonymous,
        });
        Ok(start)
    })
}

fn unmap_area(p: &mut crate::proc::Process, start: u64, end: u64) {
    user::unmap_range(&mut p.aspace, start, end);
    let mut keep = alloc::vec::Vec::new();
    for v in p.vmas.drain(..) {
        if v.end <= start || v.start >= end || v.start == v.end {
            keep.push(v);
            continue;
        }
        if v.start < start {
            keep.push(Vma { end: start, ..v });
        }
        if v.end > end {
            keep.push(Vma { start: end, ..v });
        }
    }
    p.vmas = keep;
}

pub fn sys_munmap(addr: u64, len: u64) -> SysResult {
    if !addr.is_multiple_of(PAGE_SIZE) || len == 0 {
        return Err(Errno::EINVAL);
    }
    with_current(|p| unmap_area(p, addr, addr + page_up(len)));
    Ok(0)
}

/// mprotect: accepted without changing anything yet (permissions are enforced at mapping time).
pub fn sys_mprotect(addr: u64, _len: u64, _prot: u32) -> SysResult {
    if !addr.is_multiple_of(PAGE_SIZE) {
        return Err(Errno::EINVAL);
    }
    Ok(0)
}
