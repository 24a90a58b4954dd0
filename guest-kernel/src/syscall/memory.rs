//! Memory system calls: brk, anonymous mmap, munmap, mprotect. The process's areas
//! (`kcore::vma::VmaList`) say what each address is; the page tables follow them: pages are mapped on
//! first touch (`proc::resolve_fault`), and munmap/mprotect change the entries already present.
#![deny(unsafe_code)]

use super::SysResult;
use crate::arch::layout::{USER_END, USER_MMAP_TOP};
use crate::mm::{page_up, user, PAGE_SIZE};
use crate::proc::{with_current, Process};
use kcore::errno::Errno;
use kcore::vma::{Vma, PROT_EXEC, PROT_GROWSDOWN, PROT_GROWSUP, PROT_READ, PROT_WRITE};

const MAP_SHARED: u32 = 0x01;
const MAP_PRIVATE: u32 = 0x02;
const MAP_TYPE: u32 = 0x0f;
const MAP_FIXED: u32 = 0x10;
const MAP_ANONYMOUS: u32 = 0x20;
const MAP_FIXED_NOREPLACE: u32 = 0x10_0000;
/// Largest brk heap.
const BRK_LIMIT: u64 = 1 << 30;
const PROT_RWX: u32 = PROT_READ | PROT_WRITE | PROT_EXEC;

/// brk: moves the end of the heap area; returns the (possibly unchanged) break.
pub fn sys_brk(addr: u64) -> SysResult {
    with_current(|p| {
        if addr < p.brk_start || addr > p.brk_start + BRK_LIMIT {
            return Ok(p.brk);
        }
        let old_end = page_up(p.brk);
        let new_end = page_up(addr);
        if new_end > old_end {
            if !p.vmas.is_free(old_end, new_end) {
                return Ok(p.brk);
            }
            p.vmas
                .insert(Vma::anonymous(old_end, new_end, PROT_READ | PROT_WRITE));
        } else if new_end < old_end {
            unmap_area(p, new_end, old_end);
        }
        p.brk = addr;
        Ok(addr)
    })
}

/// `len` rounded up to pages, or None if that overflows or leaves user space.
fn page_len(len: u64) -> Option<u64> {
    let l = len.checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1);
    (l <= USER_END).then_some(l)
}

/// mmap: private anonymous mappings (zero-filled on first touch). File and shared mappings: ENODEV.
pub fn sys_mmap(addr: u64, len: u64, prot: u32, flags: u32, fd: i64, _off: u64) -> SysResult {
    if len == 0 {
        return Err(Errno::EINVAL);
    }
    let kind = flags & MAP_TYPE;
    if kind != MAP_PRIVATE && kind != MAP_SHARED && kind != MAP_SHARED | MAP_PRIVATE {
        return Err(Errno::EINVAL);
    }
    if flags & MAP_ANONYMOUS == 0 || kind != MAP_PRIVATE {
        let _ = fd;
        return Err(Errno::ENODEV);
    }
    let len = page_len(len).ok_or(Errno::ENOMEM)?;
    let fixed = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0;
    with_current(|p| {
        let start = if fixed {
            if !addr.is_multiple_of(PAGE_SIZE) {
                return Err(Errno::EINVAL);
            }
            if addr.checked_add(len).is_none_or(|e| e > USER_END) {
                return Err(Errno::ENOMEM);
            }
            if flags & MAP_FIXED == 0 && !p.vmas.is_free(addr, addr + len) {
                return Err(Errno::EEXIST);
            }
            unmap_area(p, addr, addr + len);
            addr
        } else {
            // A free, aligned hint is taken as it is (Linux), else the highest gap.
            let hint = addr & !(PAGE_SIZE - 1);
            if hint >= kcore::vma::MMAP_MIN_ADDR
                && hint.checked_add(len).is_some_and(|e| e <= USER_MMAP_TOP)
                && p.vmas.is_free(hint, hint + len)
            {
                hint
            } else {
                p.vmas.find_gap(len, USER_MMAP_TOP).ok_or(Errno::ENOMEM)?
            }
        };
        p.vmas
            .insert(Vma::anonymous(start, start + len, prot & PROT_RWX));
        Ok(start)
    })
}

/// Unmaps `[start, end)`: the areas and the pages.
fn unmap_area(p: &mut Process, start: u64, end: u64) {
    if p.vmas.unmap(start, end) {
        user::unmap_range(&mut p.aspace, start, end);
    }
}

pub fn sys_munmap(addr: u64, len: u64) -> SysResult {
    if !addr.is_multiple_of(PAGE_SIZE) || len == 0 {
        return Err(Errno::EINVAL);
    }
    let len = page_len(len).ok_or(Errno::EINVAL)?;
    let end = addr
        .checked_add(len)
        .filter(|&e| e <= USER_END)
        .ok_or(Errno::EINVAL)?;
    with_current(|p| unmap_area(p, addr, end));
    Ok(0)
}

/// mprotect: sets the protection of `[addr, addr + len)`: the areas (split and merged as needed) and
/// the pages already present. As Linux: EINVAL for a misaligned address or unknown bits, ENOMEM when
/// part of the range is not mapped (the areas before the first hole are changed).
pub fn sys_mprotect(addr: u64, len: u64, prot: u32) -> SysResult {
    if !addr.is_multiple_of(PAGE_SIZE)
        || prot & !(PROT_RWX | PROT_GROWSDOWN | PROT_GROWSUP) != 0
        || prot & (PROT_GROWSDOWN | PROT_GROWSUP) == PROT_GROWSDOWN | PROT_GROWSUP
    {
        return Err(Errno::EINVAL);
    }
    let len = page_len(len).ok_or(Errno::ENOMEM)?;
    if len == 0 {
        return Ok(0);
    }
    let end = addr.checked_add(len).ok_or(Errno::ENOMEM)?;
    let prot = prot & PROT_RWX;
    with_current(|p| {
        let t0 = crate::cost::start();
        let (done, r) = match p.vmas.protect(addr, end, prot) {
            Ok(()) => (end, Ok(0)),
            Err(u) => (u.done, Err(Errno::ENOMEM)),
        };
        if done > addr {
            p.aspace.protect_range(addr, done, prot);
        }
        crate::cost::record(crate::cost::Cost::Mprotect, t0);
        r
    })
}
