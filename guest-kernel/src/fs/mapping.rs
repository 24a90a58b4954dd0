//! What the filesystems ask of the memory mappings of their files (Linux's `unmap_mapping_range`
//! and the write-protection of `clear_page_dirty_for_io`). The mappings live in the processes'
//! address spaces, above the filesystems, so `proc` installs these operations at boot
//! ([`install`]) and the filesystem code names no part of it.
//!
//! - [`unmap_file_pages`]: a file was truncated (or its pages dropped): every mapping of it, shared
//!   or private, loses its pages from a page index on, so a later access past the end of the file
//!   is SIGBUS and a file that grows again reads its new contents (zeros) there.
//! - [`page_mkwrite`] and [`mapped_page_written`]: the filesystem's part of a write through a
//!   shared mapping (blocks, dirty page, times), called by the fault handler and the harvest.
//! - [`write_protect_mapped`]: before a write-back, every page of a shared disk-file mapping that a
//!   write fault made writable is made read-only again (its dirty bit, if set, makes the cache page
//!   dirty), so the next write through it faults, dirties the page again and updates the file's
//!   times, as Linux's page_mkwrite does after its write-back cleaned the page.
//! - [`size_growing`]: a write or a truncation is about to grow a file past a block boundary inside
//!   the page holding its end (blocks smaller than a page): that page is made read-only in every
//!   shared mapping, so a store into the part that becomes file data faults and gets its blocks
//!   (Linux's pagecache_isize_extended).
#![deny(unsafe_code)]

use super::now;
use crate::mm::{pagecache, PAGE_SIZE};
use crate::sync::KCell;
use kcore::errno::Errno;
use kcore::ext2::Inode;

/// The operations `proc` provides.
#[derive(Clone, Copy)]
pub struct MappingOps {
    /// `(dev, ino, len, harvest)`: inode `ino` on device `dev` is now `len` bytes long: every
    /// mapping of it unmaps its pages from the one holding the end on (a private copy of that page
    /// the process wrote stays, as on Linux); with `harvest`, what was written through a shared
    /// mapping of them is made a dirty cache page first.
    pub unmap_file_pages: fn(u32, u32, u64, bool),
    /// Write-protects every writable page of the shared disk-file mappings, if any was made
    /// writable since the last time.
    pub write_protect_mapped: fn(),
    /// `(dev, ino, idx)`: page `idx` of inode `ino` on device `dev` is made read-only in every
    /// shared mapping of it, what was written through them first made a dirty cache page.
    pub write_protect_file_page: fn(u32, u32, u64),
}

static OPS: KCell<Option<MappingOps>> = KCell::new(None);

/// Installs the operations (at boot, by `proc`).
pub fn install(ops: MappingOps) {
    *OPS.borrow_mut() = Some(ops);
}

fn ops() -> Option<MappingOps> {
    OPS.try_borrow().ok().and_then(|o| *o)
}

/// See [`MappingOps::unmap_file_pages`].
pub fn unmap_file_pages(dev: u32, ino: u32, len: u64, harvest: bool) {
    if let Some(o) = ops() {
        (o.unmap_file_pages)(dev, ino, len, harvest);
    }
}

/// See [`MappingOps::write_protect_mapped`].
pub fn write_protect_mapped() {
    if let Some(o) = ops() {
        (o.write_protect_mapped)();
    }
}

/// The size of inode `ino` on device `dev` (a disk's filesystem, blocks of `block_size` bytes) is
/// about to grow from `from` to `to` bytes (a write past the end, or a truncation up), before the
/// filesystem changes it: Linux's pagecache_isize_extended. With blocks smaller than a page, the
/// page holding the old end may be mapped writable with blocks allocated only up to the old end
/// (its write fault reserved no more: the rest was past the end). The part of it that becomes file
/// data would be written through that mapping without a fault, and its blocks found missing only
/// at write-back, where a full disk could only drop the data. So that page is made read-only in
/// every shared mapping first (what was written through them becomes a dirty cache page while the
/// size is still the old one, its blocks all there): the next store faults, and [`page_mkwrite`]
/// allocates the blocks up to the new end or answers SIGBUS. Nothing to do when the old end's
/// block reaches the end of the page or covers the new end, or when blocks are a page or larger
/// (the write fault at the old end allocated the whole page then).
pub fn size_growing(dev: u32, ino: u32, block_size: u64, from: u64, to: u64) {
    if from >= to || block_size >= PAGE_SIZE || block_size == 0 {
        return;
    }
    let rounded = from.div_ceil(block_size) * block_size;
    if to <= rounded || rounded.is_multiple_of(PAGE_SIZE) {
        return;
    }
    if let Some(o) = ops() {
        (o.write_protect_file_page)(dev, ino, from / PAGE_SIZE);
    }
}

/// Page `idx` of inode `ino` on device `dev` (frame `pa`) was written through a shared mapping
/// (its page-table entry's dirty bit, found at msync, munmap, exit or the write-protection before a
/// write-back): the page becomes dirty for write-back. The first write fault made it writable
/// ([`page_mkwrite`]: blocks allocated, page dirty), so this is only a safety net: the blocks
/// under it are allocated if they are still a hole (the file grew under a page already writable,
/// with blocks smaller than a page) when the filesystem is not in use. The part past the end of
/// the file is not the file's and is not written. Nothing happens when the cache no longer holds
/// that frame as that page (the disk written underneath) or the file has no links left (nobody
/// can read those pages from the disk).
pub fn mapped_page_written(dev: u32, ino: u32, idx: u64, pa: u64) {
    let key = (dev, ino, idx);
    let Some(mnt) = super::mount::by_dev(dev as u64).filter(|_| pagecache::holds(key, pa)) else {
        return;
    };
    if !mnt.idle() {
        // A filesystem call under way: the write-protection of the page holding the end of a file
        // that a write is about to grow ([`size_growing`], inside the write's reservation). The
        // page went through page_mkwrite (blocks up to the old end) when it became writable.
        pagecache::mark_dirty(key, pa);
        mnt.mark_touched();
        return;
    }
    let now = now();
    let r = mnt.with_quiet(|fs| {
        let mut inode = fs.inode(ino)?;
        let start = idx * PAGE_SIZE;
        if start >= inode.size || inode.links == 0 {
            return Ok(0);
        }
        let len = (inode.size - start).min(PAGE_SIZE) as usize;
        fs.reserve(&mut inode, start, len, now)
    });
    match r {
        Ok(0) => {}
        Ok(_) => {
            pagecache::mark_dirty(key, pa);
            mnt.mark_touched();
        }
        Err(e) => crate::kprintln!(
            "VFS: a page written through a shared mapping (inode {}, page {}) is lost: errno {}",
            kcore::fmt::Dec(ino as u64),
            kcore::fmt::Dec(idx),
            kcore::fmt::Dec(e.0 as u64)
        ),
    }
}

/// Why a write fault on a shared file page cannot make it writable ([`page_mkwrite`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MkwriteError {
    /// The page is past the end of the file, or no block can be had for it (ENOSPC): SIGBUS, as
    /// Linux's `block_page_mkwrite` returns VM_FAULT_SIGBUS.
    Bus,
    /// The mapped frame is no longer the cache's page (the disk was written underneath): the
    /// fault unmaps it and the access is retried (Linux's VM_FAULT_NOPAGE).
    Stale,
}

/// The first write through a shared mapping to page `idx` (frame `pa`) of inode `ino` on device
/// `dev`, before its page-table entry becomes writable (Linux's `page_mkwrite` and
/// `file_update_time`): on ext2 the blocks under the page are allocated now (a hole, e.g. after
/// ftruncate: ENOSPC is SIGBUS here, not a write lost later) and the cache page becomes dirty, so
/// the periodic write-back writes it; on both ext2 and tmpfs the file's mtime and ctime become now
/// (each time the entry is made writable again: after a write-back write-protected it on ext2, or
/// a read fault mapped it read-only).
pub fn page_mkwrite(dev: u32, ino: u32, idx: u64, pa: u64) -> Result<(), MkwriteError> {
    let Some(mnt) = super::mount::by_dev(dev as u64) else {
        return Err(MkwriteError::Bus);
    };
    let key = (dev, ino, idx);
    let cached = mnt.disk.is_some();
    if cached && !pagecache::holds(key, pa) {
        return Err(MkwriteError::Stale);
    }
    let now = now();
    let r = mnt.with_quiet(|fs| {
        let mut inode = fs.inode(ino)?;
        let start = idx * PAGE_SIZE;
        if start >= inode.size {
            return Err(kcore::ext2::Ext2Error::Invalid);
        }
        // An unlinked file (held by its mappings) is written nowhere: its pages stay clean.
        let keep = cached && inode.links > 0;
        if keep {
            let len = (inode.size - start).min(PAGE_SIZE) as usize;
            if fs.reserve(&mut inode, start, len, now)? < len {
                return Err(kcore::ext2::Ext2Error::NoSpace);
            }
        }
        // file_update_time: only when a second has passed (the times' granularity here).
        if inode.mtime != now || inode.ctime != now {
            fs.set_attr(&mut inode, None, (None, None), (None, Some(now)), now)?;
        }
        Ok(keep)
    });
    match r {
        Ok(keep) => {
            if keep {
                pagecache::mark_dirty(key, pa);
                mnt.mark_touched();
            }
            Ok(())
        }
        // The filesystem in use: a write fault taken inside a filesystem call. No path takes
        // one today: a system call validates its user buffer for writing (these write faults
        // included) before it touches the filesystem (`mm::uaccess::UserWriter::new`), copies to
        // user memory with no filesystem borrowed (a cached read holds only the page cache), and
        // the disk is polled without giving the CPU away (guest_fs's
        // `a_read_into_a_mapped_hole_reaches_the_disk`: read() from a file into a mapped hole of
        // another). Were one added, the page would become writable here with no blocks reserved,
        // and its data would be lost at write-back: a kernel call must not copy to user memory
        // with the filesystem borrowed.
        Err(Errno::EBUSY) => Ok(()),
        Err(_) => Err(MkwriteError::Bus),
    }
}

/// Whether files of device `dev` are in the page cache (a disk's filesystem, not tmpfs): their
/// shared mappings are write-protected after a write-back and harvested for dirty bits.
pub fn is_cached_dev(dev: u32) -> bool {
    super::mount::by_dev(dev as u64).is_some_and(|m| m.disk.is_some())
}

/// Inode `ino` of device `dev` as it is now (a file mapping's fault: its size and blocks may have
/// changed since the mmap), if the filesystem is mounted and not in use.
pub fn current_inode(dev: u32, ino: u32) -> Option<Inode> {
    let mnt = super::mount::by_dev(dev as u64)?;
    mnt.with_quiet(|fs| fs.inode(ino)).ok()
}
