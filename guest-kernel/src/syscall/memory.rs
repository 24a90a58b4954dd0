//! Memory system calls: brk, mmap (anonymous, private or shared, and files: private copy-on-write,
//! shared read-only),
//! munmap, mprotect, mremap, madvise, mincore, msync. The process's areas
//! (`kcore::vma::VmaList`) say what each address is; the page tables follow them: pages are mapped on
//! first touch (`proc::resolve_fault`), and munmap/mprotect change the entries already present.
#![deny(unsafe_code)]

use super::SysResult;
use crate::arch::layout::{USER_END, USER_MMAP_TOP};
use crate::mm::{page_up, user, PAGE_SIZE};
use crate::proc::{harvest_dirty, with_current, with_mm, Mm};
use alloc::vec::Vec;
use kcore::errno::Errno;
use kcore::vma::{
    Backing, Growth, Vma, PROT_EXEC, PROT_GROWSDOWN, PROT_GROWSUP, PROT_READ, PROT_WRITE,
};

const MAP_SHARED: u32 = 0x01;
const MAP_PRIVATE: u32 = 0x02;
const MAP_TYPE: u32 = 0x0f;
const MAP_FIXED: u32 = 0x10;
const MAP_ANONYMOUS: u32 = 0x20;
const MAP_FIXED_NOREPLACE: u32 = 0x10_0000;
/// Largest brk heap.
const BRK_LIMIT: u64 = 1 << 30;
const PROT_RWX: u32 = PROT_READ | PROT_WRITE | PROT_EXEC;

/// Linux's default overcommit heuristic (OVERCOMMIT_GUESS): a single request for more pages than
/// there is RAM (no swap here) cannot be backed and fails with ENOMEM; smaller ones are granted and
/// the OOM killer deals with what later runs out (`proc::oom`).
fn enough_memory(bytes: u64) -> bool {
    bytes / PAGE_SIZE <= crate::mm::frame::stats().0
}

/// What a change of areas does, for the checks before it (`room_for_areas`).
#[derive(Clone, Copy)]
enum Change {
    /// mmap, brk: one area more (after unmapping what MAP_FIXED covers).
    Add,
    /// munmap.
    Unmap,
    /// mprotect: splits at both edges.
    Protect,
    /// mremap: splits the old area and the destination at most twice each and adds one.
    Move,
}

/// Room for `change` of `[start, end)`, which splits the areas straddling its edges: within
/// Linux's max_map_count as Linux checks it (`kcore::vma::Growth`), and the kernel heap can hold
/// the longer list. ENOMEM otherwise, as Linux answers both (a user could otherwise grow the list,
/// one small mapping at a time, until the kernel's heap ran out).
fn room_for_areas(p: &mut Mm, start: u64, end: u64, change: Change) -> Result<(), Errno> {
    let (splits, hole) = p.vmas.splits(start, end);
    let (entries, growth) = match change {
        Change::Add => (splits + 1, Growth::Add { hole: hole > 0 }),
        Change::Unmap => (splits, Growth::Split(hole)),
        Change::Protect => (splits, Growth::Split(splits)),
        // Linux's move_vma wants room for 3 more areas besides.
        Change::Move => (splits + 3, Growth::Split(hole + 3)),
    };
    if p.vmas
        .make_room(entries, growth, crate::mm::heap::can_spare)
    {
        Ok(())
    } else {
        Err(Errno::ENOMEM)
    }
}

/// brk: moves the end of the heap area; returns the (possibly unchanged) break.
pub fn sys_brk(addr: u64) -> SysResult {
    with_mm(|p| {
        if addr < p.brk_start || addr > p.brk_start + BRK_LIMIT {
            return Ok(p.brk);
        }
        let old_end = page_up(p.brk);
        let new_end = page_up(addr);
        if new_end > old_end {
            if !p.vmas.is_free(old_end, new_end)
                || !enough_memory(new_end - old_end)
                || room_for_areas(p, old_end, new_end, Change::Add).is_err()
            {
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

/// What a file mapping maps: the open file's answer (EBADF; EACCES for a write-only descriptor or a
/// writable shared mapping of what is not open for writing; ENODEV for what cannot be mapped).
fn file_backing(fd: i64, offset: u64, shared: bool, prot: u32) -> Result<Backing, Errno> {
    let f = with_current(|p| p.fds.get(fd))?;
    f.ops.mmap(&f, offset, shared, prot)
}

/// mmap: anonymous mappings (zero-filled on first touch; shared ones keep their frames shared with
/// the children a fork makes: `proc::populate_shared_anonymous` and the page tables' `SHARED` bit)
/// and file mappings (a file's pages read on first touch: private ones are the process's own
/// copies, shared ones read-only, as the root filesystem is).
pub fn sys_mmap(addr: u64, len: u64, prot: u32, flags: u32, fd: i64, off: u64) -> SysResult {
    if len == 0 {
        return Err(Errno::EINVAL);
    }
    let kind = flags & MAP_TYPE;
    if kind != MAP_PRIVATE && kind != MAP_SHARED && kind != MAP_SHARED | MAP_PRIVATE {
        return Err(Errno::EINVAL);
    }
    let shared = kind != MAP_PRIVATE;
    let len = page_len(len).ok_or(Errno::ENOMEM)?;
    let backing = if flags & MAP_ANONYMOUS != 0 {
        Backing::Anonymous
    } else {
        if !off.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        if off.checked_add(len).is_none_or(|e| e > i64::MAX as u64) {
            return Err(Errno::EOVERFLOW);
        }
        file_backing(fd, off, shared, prot)?
    };
    // Private writable memory is what has to be backed (Linux's VM_ACCOUNT).
    if (flags & MAP_ANONYMOUS != 0 || (!shared && prot & PROT_WRITE != 0)) && !enough_memory(len) {
        return Err(Errno::ENOMEM);
    }
    let fixed = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0;
    let t0 = crate::cost::start();
    let r = with_mm(|p| {
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
            room_for_areas(p, addr, addr + len, Change::Add)?;
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
        // A free range (the hint was checked, the gap is one): nothing to split, only the count
        // and the heap to check.
        if !fixed
            && !p
                .vmas
                .make_room(1, Growth::Add { hole: false }, crate::mm::heap::can_spare)
        {
            return Err(Errno::ENOMEM);
        }
        p.vmas.insert(Vma {
            start,
            end: start + len,
            prot: prot & PROT_RWX,
            shared,
            backing,
        });
        Ok(start)
    });
    crate::cost::record(crate::cost::Cost::Mmap, t0);
    r
}

/// Unmaps `[start, end)`: the areas and the pages (what was written through shared file mappings
/// made dirty in the page cache first).
fn unmap_area(p: &mut Mm, start: u64, end: u64) {
    harvest_dirty(&mut p.aspace, &p.vmas, start, end);
    let t0 = crate::cost::start();
    let unmapped = p.vmas.unmap(start, end);
    crate::cost::record(crate::cost::Cost::VmaUnmap, t0);
    if unmapped {
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
    let t0 = crate::cost::start();
    let r = with_mm(|p| {
        room_for_areas(p, addr, end, Change::Unmap)?;
        unmap_area(p, addr, end);
        Ok(0)
    });
    crate::cost::record(crate::cost::Cost::Munmap, t0);
    r
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
    with_mm(|p| {
        // A shared file mapping of a file not open for writing (or of tmpfs) cannot become
        // writable (Linux: EACCES, the area lacks VM_MAYWRITE).
        if prot & PROT_WRITE != 0
            && p.vmas.overlapping(addr, end).any(|v| {
                v.shared
                    && matches!(
                        v.backing,
                        Backing::File {
                            may_write: false,
                            ..
                        }
                    )
            })
        {
            return Err(Errno::EACCES);
        }
        room_for_areas(p, addr, end, Change::Protect)?;
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

/// `[addr, addr + len)` page-aligned and whole: (start, end), EINVAL for a misaligned address or an
/// impossible length.
fn page_range(addr: u64, len: u64) -> Result<(u64, u64), Errno> {
    if !addr.is_multiple_of(PAGE_SIZE) {
        return Err(Errno::EINVAL);
    }
    let len = page_len(len).ok_or(Errno::EINVAL)?;
    let end = addr.checked_add(len).ok_or(Errno::EINVAL)?;
    Ok((addr, end))
}

const MADV_DONTNEED: u32 = 4;
const MADV_FREE: u32 = 8;

/// madvise: MADV_DONTNEED (and MADV_FREE on private anonymous memory, EINVAL elsewhere) drops the
/// pages, so private anonymous pages read back as zero and private file pages as the file's bytes
/// again; shared anonymous pages stay (their contents remain, as Linux finds them again in its
/// shmem object); the hints that change
/// nothing a program can see (NORMAL, RANDOM, SEQUENTIAL, WILLNEED, MERGEABLE, UNMERGEABLE,
/// HUGEPAGE, NOHUGEPAGE, DONTDUMP, DODUMP, COLD, PAGEOUT, POPULATE_*) are accepted. Others, the
/// fork-time ones included (not implemented), are EINVAL. ENOMEM when part of the range is unmapped
/// (after the rest was done, as Linux).
pub fn sys_madvise(addr: u64, len: u64, advice: u32) -> SysResult {
    let (start, end) = page_range(addr, len)?;
    match advice {
        MADV_DONTNEED | MADV_FREE => {}
        0..=3 | 12..=17 | 20..=23 => {
            let mapped = with_mm(|p| p.vmas.covers(start, end));
            return if mapped || start == end {
                Ok(0)
            } else {
                Err(Errno::ENOMEM)
            };
        }
        _ => return Err(Errno::EINVAL),
    }
    with_mm(|p| {
        // (start, end, private anonymous, shared anonymous)
        let pieces: Vec<(u64, u64, bool, bool)> = p
            .vmas
            .overlapping(start, end)
            .map(|v| {
                let anon = v.backing == Backing::Anonymous;
                (
                    v.start.max(start),
                    v.end.min(end),
                    anon && !v.shared,
                    anon && v.shared,
                )
            })
            .collect();
        if advice == MADV_FREE && pieces.iter().any(|&(_, _, private, _)| !private) {
            return Err(Errno::EINVAL);
        }
        harvest_dirty(&mut p.aspace, &p.vmas, start, end);
        for &(a, b, _, shared_anon) in &pieces {
            // Shared anonymous pages keep their contents (Linux re-reads them from the shmem
            // object); dropping them here would unshare them.
            if !shared_anon {
                user::unmap_range(&mut p.aspace, a, b);
            }
        }
        if start == end || p.vmas.covers(start, end) {
            Ok(0)
        } else {
            Err(Errno::ENOMEM)
        }
    })
}

/// mincore: one byte per page, 1 where the page is mapped in this process (file pages: mapped here,
/// not "in the page cache", which this kernel does not have). ENOMEM for unmapped parts.
pub fn sys_mincore(addr: u64, len: u64, vec: u64) -> SysResult {
    let (start, end) = page_range(addr, len)?;
    let bytes = with_mm(|p| {
        if !p.vmas.covers(start, end) {
            return Err(Errno::ENOMEM);
        }
        Ok((start..end)
            .step_by(PAGE_SIZE as usize)
            .map(|va| p.aspace.translate(va).is_some() as u8)
            .collect::<Vec<u8>>())
    })?;
    super::file::copy_to_user(vec, &bytes)?;
    Ok(0)
}

const MS_ASYNC: u32 = 1;
const MS_INVALIDATE: u32 = 2;
const MS_SYNC: u32 = 4;

/// msync: the pages of shared file mappings in the range written through them become dirty in the
/// page cache (they are its frames), and with MS_SYNC those files' dirty pages in the range are
/// written back now (MS_ASYNC leaves them to the periodic write-back, as Linux's msync leaves
/// them to its flusher). EINVAL for a misaligned address, unknown flags or MS_SYNC with MS_ASYNC,
/// ENOMEM for unmapped parts (after the rest was done).
pub fn sys_msync(addr: u64, len: u64, flags: u32) -> SysResult {
    if flags & !(MS_ASYNC | MS_INVALIDATE | MS_SYNC) != 0
        || flags & (MS_ASYNC | MS_SYNC) == MS_ASYNC | MS_SYNC
    {
        return Err(Errno::EINVAL);
    }
    let (start, end) = page_range(addr, len)?;
    // (device, inode, first page, last page) of each shared file mapping in the range.
    let (files, covered) = with_mm(|p| {
        harvest_dirty(&mut p.aspace, &p.vmas, start, end);
        let files: Vec<(u32, u32, u64, u64)> = p
            .vmas
            .overlapping(start, end)
            .filter(|v| v.shared)
            .filter_map(|v| match &v.backing {
                Backing::File {
                    dev, inode, offset, ..
                } => {
                    let (a, b) = (v.start.max(start), v.end.min(end));
                    let first = (offset + (a - v.start)) / PAGE_SIZE;
                    Some((*dev, inode.ino, first, first + (b - a) / PAGE_SIZE - 1))
                }
                Backing::Anonymous => None,
            })
            .collect();
        (files, p.vmas.covers(start, end))
    });
    if flags & MS_SYNC != 0 {
        for (dev, ino, first, last) in files {
            if let Some(m) = crate::fs::mount::by_dev(dev as u64).filter(|m| m.disk.is_some()) {
                // As fsync: the pages, then the metadata and a FLUSH (Linux's vfs_fsync_range).
                crate::fs::writeback::write_back_range(&m, ino, first, last)?;
                m.with(|fs| fs.sync())?;
            }
        }
    }
    if covered {
        Ok(0)
    } else {
        Err(Errno::ENOMEM)
    }
}

const MREMAP_MAYMOVE: u32 = 1;
const MREMAP_FIXED: u32 = 2;

/// The area `v` moved or resized to start at `start` for `len` bytes, `from` being where the moved
/// part began in `v` (file offsets follow).
fn area_at(v: &Vma, from: u64, start: u64, len: u64) -> Vma {
    let mut n = v.clone();
    n.start = start;
    n.end = start + len;
    if let Backing::File { offset, .. } = &mut n.backing {
        *offset += from - v.start;
    }
    n
}

/// mremap: shrinks in place, grows in place when the pages after the area are free, else moves the
/// area (MREMAP_MAYMOVE; MREMAP_FIXED to `new_addr`) with its pages, entries and all. The old range
/// must lie in one area (EFAULT). EINVAL as Linux for bad flags, misalignment, a zero new length,
/// overlapping fixed ranges; MREMAP_DONTUNMAP and old length 0 (duplicating shared memory) are not
/// implemented: EINVAL. ENOMEM when it cannot grow and may not move.
pub fn sys_mremap(old: u64, old_len: u64, new_len: u64, flags: u32, new_addr: u64) -> SysResult {
    if flags & !(MREMAP_MAYMOVE | MREMAP_FIXED) != 0
        || (flags & MREMAP_FIXED != 0 && flags & MREMAP_MAYMOVE == 0)
        || !old.is_multiple_of(PAGE_SIZE)
    {
        return Err(Errno::EINVAL);
    }
    let old_len = page_len(old_len).ok_or(Errno::EINVAL)?;
    let new_len = page_len(new_len).ok_or(Errno::EINVAL)?;
    if new_len == 0 || old_len == 0 {
        return Err(Errno::EINVAL);
    }
    let old_end = old.checked_add(old_len).ok_or(Errno::EINVAL)?;
    with_mm(|p| {
        let v = p.vmas.find(old).cloned().ok_or(Errno::EFAULT)?;
        if old_end > v.end {
            return Err(Errno::EFAULT);
        }
        // Whatever it does, it splits the old area and the destination at most twice each and
        // adds one.
        room_for_areas(p, old, old_end, Change::Move)?;
        if flags & MREMAP_FIXED != 0 {
            let (dst, dst_end) = page_range(new_addr, new_len)?;
            if dst_end > USER_END {
                return Err(Errno::EINVAL);
            }
            if dst < old_end && old < dst_end {
                return Err(Errno::EINVAL);
            }
            unmap_area(p, dst, dst_end);
            return Ok(move_area(p, &v, old, old_len, dst, new_len));
        }
        if new_len <= old_len {
            unmap_area(p, old + new_len, old_end);
            return Ok(old);
        }
        let grow_end = old.checked_add(new_len).ok_or(Errno::ENOMEM)?;
        if old_end == v.end && grow_end <= USER_END && p.vmas.is_free(old_end, grow_end) {
            p.vmas
                .insert(area_at(&v, old_end, old_end, grow_end - old_end));
            return Ok(old);
        }
        if flags & MREMAP_MAYMOVE == 0 {
            return Err(Errno::ENOMEM);
        }
        let dst = p
            .vmas
            .find_gap(new_len, USER_MMAP_TOP)
            .ok_or(Errno::ENOMEM)?;
        Ok(move_area(p, &v, old, old_len, dst, new_len))
    })
}

/// Moves `[old, old + old_len)` of area `v` to `dst` as an area of `new_len` bytes (pages past
/// `new_len` are dropped); returns `dst`.
fn move_area(p: &mut Mm, v: &Vma, old: u64, old_len: u64, dst: u64, new_len: u64) -> u64 {
    let keep = old_len.min(new_len);
    unmap_area(p, old + keep, old + old_len);
    p.vmas.unmap(old, old + keep);
    p.aspace.move_range(old, dst, keep);
    p.vmas.insert(area_at(v, old, dst, new_len));
    dst
}
