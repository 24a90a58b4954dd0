//! Write-back: dirty page-cache pages ([`crate::mm::pagecache`]) of ext2 files go to their blocks.
//!
//! A write allocated the blocks already (`Ext2::reserve`), so writing a page back is a lookup of
//! the file's extents and a device write; consecutive dirty pages of a file whose blocks are
//! adjacent on the disk go in one request of up to [`RUN_BYTES`]. The metadata (inodes, bitmaps,
//! directories) is the filesystem's own write-back cache, written after the data.
//!
//! When: [`write_back_range`] for fsync/fdatasync (then the metadata and a FLUSH), exec and file
//! faults (the loader reads extents straight from the disk); [`write_back_mount`] for sync, syncfs,
//! umount, remount-ro, power-off and reboot, and for a writer that finds more dirty pages than
//! [`pagecache::dirty_limit`] (Linux's balance_dirty_pages); the periodic pass (`mount`'s
//! [`WRITEBACK_NS`]) after filesystem calls, from the idle task and from the timer tick taken in
//! user mode (`mount::periodic_write_back`); [`reclaim`] under memory
//! pressure before the OOM killer.
#![deny(unsafe_code)]

use super::mount::{self, Mount};
use crate::mm::{pagecache, PAGE_SIZE};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};
use kcore::errno::Errno;
use kcore::ext2::{BlockDevice, Ext2Error};

/// The largest write request write-back makes (virtio-blk's request limit here).
const RUN_BYTES: usize = crate::drivers::virtio::MAX_REQUEST;

/// How often the periodic pass writes everything dirty back (Linux: dirty_writeback_centisecs 5 s,
/// with pages older than dirty_expire_centisecs, 30 s; here every dirty page at each pass, so data
/// is on the disk at most one period and a tick after it was written, whatever runs).
pub const WRITEBACK_NS: u64 = 5_000_000_000;

/// Set while a write-back runs (the filesystem calls it makes end in the periodic check).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Writes back the dirty pages of inode `ino` of `mnt` with page index in `[from, to]`.
pub fn write_back_range(mnt: &Mount, ino: u32, from: u64, to: u64) -> Result<(), Errno> {
    let keys = pagecache::dirty_keys((mnt.dev, ino, from), (mnt.dev, ino, to));
    write_keys(mnt, &keys)
}

/// Writes back every dirty page of inode `ino` of `mnt`.
pub fn write_back_inode(mnt: &Mount, ino: u32) -> Result<(), Errno> {
    write_back_range(mnt, ino, 0, u64::MAX)
}

/// Writes back every dirty page of the filesystem `mnt`.
pub fn write_back_mount(mnt: &Mount) -> Result<(), Errno> {
    // Pages written through shared mappings are dirty (and read-only again, so a later write
    // faults and dirties them anew) before the dirty pages are listed.
    super::mapping::write_protect_mapped();
    let keys = pagecache::dirty_keys((mnt.dev, 0, 0), (mnt.dev, u32::MAX, u64::MAX));
    write_keys(mnt, &keys)
}

/// Memory pressure: every mounted filesystem's dirty pages written back, then up to `n` clean
/// pages evicted; returns the frames freed. Nothing when the cache or a filesystem is in use (a
/// fault in the middle of a cache copy or a filesystem call).
pub fn reclaim(n: u64) -> u64 {
    if pagecache::busy() || ACTIVE.load(Ordering::Relaxed) {
        return 0;
    }
    if pagecache::dirty_pages() > 0 {
        for m in mount::all() {
            if m.disk.is_some() && m.idle() {
                if let Err(e) = write_back_mount(&m) {
                    crate::kprintln!(
                        "VFS: write-back under memory pressure failed: errno {}",
                        kcore::fmt::Dec(e.0 as u64)
                    );
                }
            }
        }
    }
    pagecache::shrink(n)
}

/// Writes the dirty pages `keys` (sorted) of `mnt` to the disk and marks them clean.
fn write_keys(mnt: &Mount, keys: &[pagecache::Key]) -> Result<(), Errno> {
    // A fault in the middle of a cache copy (the cache is borrowed) cannot write back.
    if keys.is_empty() || mnt.disk.is_none() || pagecache::busy() {
        return Ok(());
    }
    if ACTIVE.swap(true, Ordering::Relaxed) {
        // Already writing back (a nested call from inside it): the outer one finishes the job.
        return Ok(());
    }
    // A page a write has taken out of the cache (a fault in its copy from user memory brought us
    // here) stays dirty and is written later.
    let mut keys = keys.to_vec();
    keys.retain(|k| pagecache::contains(*k));
    let r = write_keys_inner(mnt, &keys);
    ACTIVE.store(false, Ordering::Relaxed);
    r
}

fn write_keys_inner(mnt: &Mount, keys: &[pagecache::Key]) -> Result<(), Errno> {
    let page = PAGE_SIZE as usize;
    // One request-sized buffer; a page at a time when memory is short.
    let mut buf: Vec<u8> = Vec::new();
    let cap = if buf.try_reserve_exact(RUN_BYTES).is_ok() {
        RUN_BYTES
    } else {
        buf.try_reserve_exact(page).map_err(|_| Errno::ENOMEM)?;
        page
    };
    buf.resize(cap, 0);
    pagecache::writeback_started(keys.len() as u64);
    let mut result = Ok(());
    let mut i = 0;
    while i < keys.len() {
        let (_, ino, first) = keys[i];
        let mut j = i + 1;
        while j < keys.len()
            && keys[j].1 == ino
            && keys[j].2 == keys[j - 1].2 + 1
            && (j - i + 1) * page <= cap
        {
            j += 1;
        }
        let t0 = crate::cost::start();
        let r = write_pages(mnt, ino, first, &keys[i..j], &mut buf);
        crate::cost::record(crate::cost::Cost::WriteBack, t0);
        crate::cost::count(crate::cost::Cost::WriteBackPages, (j - i) as u64);
        pagecache::writeback_ended((j - i) as u64);
        match r {
            Ok(()) => keys[i..j].iter().for_each(|&k| pagecache::clean(k)),
            // The pages stay dirty (a later write-back tries again); the first error is returned.
            Err(e) => {
                crate::kprintln!(
                    "VFS: page write-back failed: errno {}",
                    kcore::fmt::Dec(e.0 as u64)
                );
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        i = j;
    }
    result
}

/// Writes the consecutive dirty pages `keys` (starting at page `first` of inode `ino`) through
/// `buf`: the pages are copied in, then each extent of the file under them (clipped to the file's
/// size, rounded up to whole blocks) is one device write.
fn write_pages(
    mnt: &Mount,
    ino: u32,
    first: u64,
    keys: &[pagecache::Key],
    buf: &mut [u8],
) -> Result<(), Errno> {
    let page = PAGE_SIZE as usize;
    let start = first * PAGE_SIZE;
    let len = keys.len() * page;
    for (k, key) in keys.iter().enumerate() {
        if !pagecache::copy_out(*key, 0, &mut buf[k * page..(k + 1) * page]) {
            buf[k * page..(k + 1) * page].fill(0);
        }
    }
    mnt.with_quiet(|fs| {
        let inode = fs.inode(ino)?;
        if start >= inode.size {
            // Truncated under the pages: nothing of them is file data.
            return Ok(());
        }
        let e2 = fs.ext2().ok_or(Ext2Error::Io)?;
        let bs = e2.block_size();
        let extents = e2.extents(&inode, start, len as u64)?;
        for e in extents {
            let Some(disk) = e.disk_offset else {
                // A hole (a page of an unallocated part of a file): nothing to write.
                continue;
            };
            let at = (e.file_offset - start) as usize;
            let n = (e.len.div_ceil(bs) * bs).min((len - at) as u64) as usize;
            e2.device().write(disk, &buf[at..at + n])?;
        }
        Ok(())
    })
}
