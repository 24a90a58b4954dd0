//! Files and directories of a mounted filesystem (ext2 or tmpfs) as open-file objects ([`FileOps`]).
//!
//! An open file holds its mount and names its inode by number, reading the inode (from the
//! filesystem's inode cache) at each operation, so every description of a file sees the size and
//! times the last write left. Writes go through a kernel buffer (a piece of at most [`WRITE_CHUNK`]
//! bytes at a time): on ext2 into the page cache (blocks allocated at once, the pages dirty until
//! [`writeback`] writes them), on tmpfs into its pages.
#![deny(unsafe_code)]

use super::file::{DirEntry, FileOps, OpenFile, ReadBuf, Stat, WriteBuf};
use super::mount::Mount;
use super::now;
use super::writeback;
use crate::mm::page::{OwnedFrame, OwnedRun};
use crate::mm::{pagecache, PAGE_SIZE};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::any::Any;
use kcore::errno::Errno;
use kcore::ext2::{BlockDevice, Inode, S_IFDIR, S_IFMT};
use kcore::vma::{Backing, FileHold, PROT_WRITE};

/// Most bytes one step of a write moves through the kernel.
const WRITE_CHUNK: usize = 64 * 1024;

/// An open file or directory of a mounted filesystem.
pub struct Ext2File {
    mnt: Rc<Mount>,
    ino: u32,
    /// The file type bits (they never change).
    kind: u16,
}

impl Ext2File {
    pub fn new(mnt: Rc<Mount>, inode: &Inode) -> Self {
        let _ = mnt.with(|fs| {
            fs.opened(inode.ino);
            Ok(())
        });
        Ext2File {
            mnt,
            ino: inode.ino,
            kind: inode.mode & S_IFMT,
        }
    }

    /// The inode as it is now.
    pub fn inode(&self) -> Result<Inode, Errno> {
        self.mnt.with(|fs| fs.inode(self.ino))
    }

    /// Its inode number.
    pub fn ino(&self) -> u32 {
        self.ino
    }

    /// The mount it is on.
    pub fn mount(&self) -> &Rc<Mount> {
        &self.mnt
    }

    fn with<R>(
        &self,
        f: impl FnOnce(&mut dyn super::mount::FileSystem) -> Result<R, kcore::ext2::Ext2Error>,
    ) -> Result<R, Errno> {
        self.mnt.with(f)
    }
}

impl Drop for Ext2File {
    fn drop(&mut self) {
        let ino = self.ino;
        let freed = self.mnt.with(|fs| Ok(fs.closed(ino))).unwrap_or(false);
        if freed {
            // An unlinked file's last close freed it: its cached pages (dirty ones too) go.
            pagecache::invalidate(self.mnt.dev, ino, 0);
        }
    }
}

impl Ext2File {
    /// A read through the page cache: cached pages are copied out; a missing one is read with the
    /// missing pages after it (up to `RUN_PAGES`, within the file) in one filesystem read, and kept.
    fn read_cached(&self, inode: &Inode, offset: u64, out: &mut Out) -> Result<usize, Errno> {
        let t0 = crate::cost::start();
        let r = self.read_cached_inner(inode, offset, out);
        crate::cost::record(crate::cost::Cost::CacheRead, t0);
        r
    }

    fn read_cached_inner(&self, inode: &Inode, offset: u64, out: &mut Out) -> Result<usize, Errno> {
        if offset >= inode.size {
            return Ok(0);
        }
        let n = (out.len() as u64).min(inode.size - offset) as usize;
        let dev = self.mnt.dev;
        let page = PAGE_SIZE as usize;
        let last = pagecache::index(inode.size - 1);
        let mut run: Vec<u8> = Vec::new();
        let mut done = 0;
        while done < n {
            let pos = offset + done as u64;
            let idx = pagecache::index(pos);
            let within = (pos % PAGE_SIZE) as usize;
            let step = (page - within).min(n - done);
            if out.copy_cached((dev, self.ino, idx), within, done, step)? {
                done += step;
                continue;
            }
            // A miss: this page and the missing ones after it, read with one request per run of
            // adjacent blocks.
            let mut end = idx + 1;
            while end <= last
                && end - idx < pagecache::RUN_PAGES
                && !pagecache::contains((dev, self.ino, end))
            {
                end += 1;
            }
            let len = (end - idx) as usize * page;
            let take = (len - within).min(n - done);
            // Straight into a run of frames that become the cache's pages (no clearing, no copy
            // into the cache); a single buffer when no such run is free.
            if let Some(mut frames) = OwnedRun::alloc(end - idx) {
                self.fill(inode, idx * PAGE_SIZE, frames.bytes_mut())?;
                out.put(done, &frames.bytes()[within..within + take])?;
                for (k, f) in frames.into_frames().enumerate() {
                    pagecache::insert_frame((dev, self.ino, idx + k as u64), f);
                }
                done += take;
                continue;
            }
            run.clear();
            run.try_reserve_exact(len).map_err(|_| Errno::ENOMEM)?;
            run.resize(len, 0);
            self.fill(inode, idx * PAGE_SIZE, &mut run)?;
            for (k, p) in run.chunks_exact(page).enumerate() {
                pagecache::insert((dev, self.ino, idx + k as u64), p);
            }
            out.put(done, &run[within..within + take])?;
            done += take;
        }
        Ok(n)
    }

    /// Reads the file's bytes at `start` into `dst`: [`fill`].
    fn fill(&self, inode: &Inode, start: u64, dst: &mut [u8]) -> Result<(), Errno> {
        fill(&self.mnt, inode, start, dst)
    }

    /// A write through the page cache of the `len` bytes at `boff` of `buf` to file offset `pos`:
    /// the blocks under them are allocated (the size grows), then the bytes are copied from the
    /// caller straight into the cached pages, which become dirty. A page not cached is made whole
    /// first (the part of it the write does not cover read from the disk before blocks are
    /// allocated under it); if the cache has no room for it, it is written to the disk at once.
    /// Returns the bytes written (fewer when the disk fills part way or the source faults).
    fn write_cached(
        &self,
        pos: u64,
        buf: &mut dyn WriteBuf,
        boff: usize,
        len: usize,
    ) -> Result<usize, Errno> {
        let t0 = crate::cost::start();
        let r = self.write_cached_inner(pos, buf, boff, len);
        crate::cost::record(crate::cost::Cost::CacheWrite, t0);
        r
    }

    fn write_cached_inner(
        &self,
        pos: u64,
        buf: &mut dyn WriteBuf,
        boff: usize,
        len: usize,
    ) -> Result<usize, Errno> {
        let dev = self.mnt.dev;
        let page = PAGE_SIZE as usize;
        let end = pos + len as u64;
        let (first, last) = (pagecache::index(pos), pagecache::index(end - 1));
        // The pages the write covers only in part and the cache lacks, as they are now.
        let mut partial: Vec<(u64, Vec<u8>)> = Vec::new();
        for idx in [first, last] {
            let whole = idx * PAGE_SIZE >= pos && (idx + 1) * PAGE_SIZE <= end;
            if whole
                || partial.iter().any(|(i, _)| *i == idx)
                || pagecache::contains((dev, self.ino, idx))
            {
                continue;
            }
            let mut bytes: Vec<u8> = Vec::new();
            bytes.try_reserve_exact(page).map_err(|_| Errno::ENOMEM)?;
            bytes.resize(page, 0);
            let inode = self.inode()?;
            self.fill(&inode, idx * PAGE_SIZE, &mut bytes)?;
            partial.push((idx, bytes));
        }
        let now = now();
        let t0 = crate::cost::start();
        let (inode, w, before) = self.with(|fs| {
            let mut inode = fs.inode(self.ino)?;
            let before = inode.size;
            // A write past the end: the page holding the old end must not stay writable in a
            // shared mapping over the blocks this leaves unallocated (Linux's
            // pagecache_isize_extended; the mappings' writes become dirty pages first).
            let bs = fs.ext2().map_or(0, |e| e.block_size());
            super::mapping::size_growing(dev, self.ino, bs, before, end);
            let w = fs.reserve(&mut inode, pos, len, now)?;
            Ok((inode, w, before))
        })?;
        crate::cost::record(crate::cost::Cost::CacheReserve, t0);
        let t0 = crate::cost::start();
        let mut at = 0usize;
        let mut fault = None;
        while at < w {
            let p = pos + at as u64;
            let idx = pagecache::index(p);
            let within = (p % PAGE_SIZE) as usize;
            let step = (page - within).min(w - at);
            let key = (dev, self.ino, idx);
            // The page's bytes around the write, for a page the cache does not hold.
            let mut old = |this: &Self| -> Result<Vec<u8>, Errno> {
                if let Some(k) = partial.iter().position(|(i, _)| *i == idx) {
                    return Ok(core::mem::take(&mut partial[k].1));
                }
                let mut b: Vec<u8> = Vec::new();
                b.try_reserve_exact(page).map_err(|_| Errno::ENOMEM)?;
                b.resize(page, 0);
                if step < page {
                    // (Not read before the reservation: a page cached then and evicted since.)
                    this.fill(&inode, idx * PAGE_SIZE, &mut b)?;
                }
                Ok(b)
            };
            let (mut frame, new) = match pagecache::take(key) {
                Some(f) => (f, false),
                None => match pagecache::make_room().then(OwnedFrame::alloc).flatten() {
                    Some(mut f) => {
                        if step < page {
                            f.bytes_mut().copy_from_slice(&old(self)?);
                        }
                        (f, true)
                    }
                    None => {
                        // No room: the page goes to the disk now.
                        let mut b = old(self)?;
                        if let Err(e) = buf.get(boff + at, &mut b[within..within + step]) {
                            fault = Some(e);
                            break;
                        }
                        self.write_page_now(&inode, idx, &b)?;
                        at += step;
                        continue;
                    }
                },
            };
            let r = buf.get(boff + at, &mut frame.bytes_mut()[within..within + step]);
            if r.is_ok() || !new {
                pagecache::put_dirty(key, frame, new);
            }
            if let Err(e) = r {
                fault = Some(e);
                break;
            }
            at += step;
        }
        crate::cost::record(crate::cost::Cost::CacheCopy, t0);
        if let Some(e) = fault {
            // The source faulted: the file keeps no more than was written (blocks reserved past it
            // are given back, as Linux's ext2 does after a short copy).
            let keep = before.max(pos + at as u64);
            if inode.size > keep {
                truncate_pages(&self.mnt, self.ino, keep)?;
                self.with(|fs| {
                    let mut i = fs.inode(self.ino)?;
                    fs.truncate(&mut i, keep, now)
                })?;
                truncated(&self.mnt, self.ino, keep);
            }
            if at == 0 {
                return Err(e);
            }
            return Ok(at);
        }
        if pagecache::dirty_pages() > pagecache::dirty_limit() {
            // Too much dirty data: this writer writes its filesystem back (balance_dirty_pages).
            writeback::write_back_mount(&self.mnt)?;
        }
        Ok(w)
    }

    /// Writes page `idx` (`bytes`, a whole page) to the blocks under it, when the cache could not
    /// keep it.
    fn write_page_now(&self, inode: &Inode, idx: u64, bytes: &[u8]) -> Result<(), Errno> {
        let mut buf: Vec<u8> = Vec::new();
        buf.try_reserve_exact(bytes.len())
            .map_err(|_| Errno::ENOMEM)?;
        buf.extend_from_slice(bytes);
        let start = idx * PAGE_SIZE;
        self.mnt.with_quiet(|fs| {
            let e2 = fs.ext2().ok_or(kcore::ext2::Ext2Error::Io)?;
            let bs = e2.block_size();
            for e in e2.extents(inode, start, PAGE_SIZE)? {
                if let Some(disk) = e.disk_offset {
                    let at = (e.file_offset - start) as usize;
                    let n = (e.len.div_ceil(bs) * bs).min(PAGE_SIZE - at as u64) as usize;
                    e2.device().write(disk, &buf[at..at + n])?;
                }
            }
            Ok(())
        })
    }
}

/// Reads the bytes of `inode` (on ext2 mount `mnt`) at `start` into `dst` (a kernel buffer, so the
/// device can write it directly) with one request per extent; holes and what lies past the end
/// read as zeros.
fn fill(mnt: &Mount, inode: &Inode, start: u64, dst: &mut [u8]) -> Result<(), Errno> {
    let len = dst.len();
    let extents = mnt.with(|fs| match fs.ext2() {
        Some(e) => e.extents(inode, start, len as u64),
        None => Err(kcore::ext2::Ext2Error::Io),
    })?;
    let mut at = 0usize;
    for e in extents {
        let from = (e.file_offset - start) as usize;
        dst[at..from].fill(0);
        let to = from + e.len as usize;
        match e.disk_offset {
            None => dst[from..to].fill(0),
            Some(disk) => {
                // Whole sectors (the extent may end inside one at the end of the file).
                let n = ((e.len as usize + 511) & !511).min(len - from);
                mnt.with_quiet(|fs| match fs.ext2() {
                    Some(e2) => e2.device().read(disk, &mut dst[from..from + n]),
                    None => Err(kcore::ext2::Ext2Error::Io),
                })?;
            }
        }
        at = to;
    }
    dst[at..].fill(0);
    Ok(())
}

/// Whether a shared mapping of a file of device `dev` maps the file's pages ([`map_shared_page`]):
/// a mounted filesystem's (ext2: the page cache's, tmpfs: the file's own).
pub fn maps_file_pages(dev: u32) -> bool {
    super::mount::by_dev(dev as u64).is_some()
}

/// The page-cache frame of page `idx` of inode `ino` on the filesystem of device `dev`, read in
/// if it is not cached, with one more user counted: a shared file mapping maps it (and gives it
/// back with `frame::put` when unmapped), so reads, writes and every shared mapping of the file
/// share that one page. EFAULT for a page wholly past the end of the file (SIGBUS), ENOMEM when
/// no frame is free.
pub fn map_shared_page(dev: u32, ino: u32, idx: u64) -> Result<u64, Errno> {
    let mnt = super::mount::by_dev(dev as u64).ok_or(Errno::EIO)?;
    if mnt.disk.is_none() {
        // tmpfs: the file's own page.
        return mnt.with(|fs| fs.map_page(ino, idx));
    }
    let key = (dev, ino, idx);
    if let Some(pa) = pagecache::map_page(key) {
        return Ok(pa);
    }
    let inode = mnt.with(|fs| fs.inode(ino))?;
    if idx * PAGE_SIZE >= inode.size {
        return Err(Errno::EFAULT);
    }
    let mut page: Vec<u8> = Vec::new();
    page.try_reserve_exact(PAGE_SIZE as usize)
        .map_err(|_| Errno::ENOMEM)?;
    page.resize(PAGE_SIZE as usize, 0);
    fill(&mnt, &inode, idx * PAGE_SIZE, &mut page)?;
    pagecache::insert_mapped(key, &page).ok_or(Errno::ENOMEM)
}

/// Truncation of a cached file to `len`: the page holding the new end is written back first (the
/// filesystem zeroes the rest of its last block on the disk), then the pages from it on are
/// dropped (dirty ones too: their blocks are gone, and the page at the end is read again).
pub fn truncate_pages(mnt: &Mount, ino: u32, len: u64) -> Result<(), Errno> {
    let idx = pagecache::index(len);
    // Growing: the page holding the old end is write-protected in the shared mappings (a hole
    // follows it now: Linux's truncate_setsize calls pagecache_isize_extended).
    if let Ok((size, bs)) = mnt.with_quiet(|fs| {
        let bs = fs.ext2().map_or(0, |e| e.block_size());
        Ok((fs.inode(ino)?.size, bs))
    }) {
        super::mapping::size_growing(mnt.dev, ino, bs, size, len);
    }
    // Every mapping of the file lets go of the pages from the one holding the new end (Linux's
    // unmap_mapping_range; what was written through them becomes dirty first, so the page at the
    // end is written back with it below). Past the end an access is SIGBUS then; the page at the
    // end faults in again from the cache, its tail zero.
    super::mapping::unmap_file_pages(mnt.dev, ino, len, true);
    if !len.is_multiple_of(PAGE_SIZE) {
        writeback::write_back_range(mnt, ino, idx, idx)?;
    }
    Ok(())
}

/// After the truncation: the pages at and past the new end go.
pub fn truncated(mnt: &Mount, ino: u32, len: u64) {
    pagecache::invalidate(mnt.dev, ino, pagecache::index(len));
    // Again, for a page faulted in while the write-back above waited for the disk (tmpfs: the
    // pages the truncation freed, which the mappings still held).
    super::mapping::unmap_file_pages(mnt.dev, ino, len, false);
}

/// Where a cached read delivers: straight into a kernel buffer, or through `put` (user memory).
enum Out<'a> {
    Direct(&'a mut [u8]),
    Put(&'a mut dyn ReadBuf),
}

impl Out<'_> {
    fn len(&self) -> usize {
        match self {
            Out::Direct(d) => d.len(),
            Out::Put(b) => b.len(),
        }
    }
    /// `step` bytes at `within` of cached page `key` to offset `at`; false when it is not cached.
    fn copy_cached(
        &mut self,
        key: pagecache::Key,
        within: usize,
        at: usize,
        step: usize,
    ) -> Result<bool, Errno> {
        match self {
            Out::Direct(d) => Ok(pagecache::read(key, within, &mut d[at..at + step])),
            // Straight from the cached page to the caller (a fault in the copy leaves the cache
            // as it is: see `pagecache::with_page`).
            Out::Put(b) => {
                match pagecache::with_page(key, |p| b.put(at, &p[within..within + step])) {
                    Some(r) => r.map(|_| true),
                    None => Ok(false),
                }
            }
        }
    }
    fn put(&mut self, at: usize, bytes: &[u8]) -> Result<(), Errno> {
        match self {
            Out::Direct(d) => {
                d[at..at + bytes.len()].copy_from_slice(bytes);
                Ok(())
            }
            Out::Put(b) => b.put(at, bytes),
        }
    }
}

/// The stat of inode `i` on the filesystem with device number `dev`.
pub fn stat_of(dev: u32, i: &Inode) -> Stat {
    Stat {
        dev: dev as u64,
        ino: i.ino as u64,
        nlink: i.links as u64,
        mode: i.mode as u32,
        uid: i.uid as u32,
        gid: i.gid as u32,
        size: i.size as i64,
        blksize: 4096,
        blocks: i.sectors as i64,
        atime: i.atime as i64,
        mtime: i.mtime as i64,
        ctime: i.ctime as i64,
        ..Stat::default()
    }
}

/// The DT_* type of an ext2 directory entry's file type.
fn dt_type(ext2_type: u8) -> u8 {
    match ext2_type {
        1 => 8,
        2 => 4,
        3 => 2,
        4 => 6,
        5 => 1,
        6 => 12,
        7 => 10,
        _ => 0,
    }
}

impl FileOps for Ext2File {
    fn read_at(
        &self,
        _file: &OpenFile,
        offset: u64,
        buf: &mut dyn ReadBuf,
    ) -> Result<usize, Errno> {
        if self.is_dir() {
            return Err(Errno::EISDIR);
        }
        let inode = self.inode()?;
        if self.mnt.disk.is_some() {
            if let Some(d) = buf.direct()? {
                return self.read_cached(&inode, offset, &mut Out::Direct(d));
            }
            return self.read_cached(&inode, offset, &mut Out::Put(buf));
        }
        if let Some(dst) = buf.direct()? {
            return self.with(|fs| fs.read_at(&inode, offset, dst));
        }
        // A kernel-side chunk at a time into a buffer that takes bytes by copy.
        let mut chunk = alloc::vec![0u8; buf.len().min(16384)];
        let mut done = 0;
        while done < buf.len() {
            let want = (buf.len() - done).min(chunk.len());
            let n = self.with(|fs| fs.read_at(&inode, offset + done as u64, &mut chunk[..want]))?;
            buf.put(done, &chunk[..n])?;
            done += n;
            if n < want {
                break;
            }
        }
        Ok(done)
    }

    fn write_at(
        &self,
        file: &OpenFile,
        offset: u64,
        buf: &mut dyn WriteBuf,
    ) -> Result<usize, Errno> {
        if self.is_dir() {
            return Err(Errno::EISDIR);
        }
        let len = buf.len();
        if len == 0 {
            return Ok(0);
        }
        // O_APPEND writes at the end even through pwrite (Linux's pwrite(2) BUGS section).
        let offset = if file.flags() & super::O_APPEND != 0 {
            self.inode()?.size
        } else {
            offset
        };
        offset.checked_add(len as u64).ok_or(Errno::EFBIG)?;
        // ext2 on a disk writes into the page cache; tmpfs keeps its own pages.
        let cached = self.mnt.disk.is_some();
        if cached && !self.mnt.writable() {
            return Err(Errno::EROFS);
        }
        let mut chunk: Vec<u8> = Vec::new();
        if !cached {
            chunk
                .try_reserve_exact(len.min(WRITE_CHUNK))
                .map_err(|_| Errno::ENOMEM)?;
            chunk.resize(len.min(WRITE_CHUNK), 0);
        }
        let mut done = 0;
        while done < len {
            let n = (len - done).min(WRITE_CHUNK);
            if cached {
                match self.write_cached(offset + done as u64, buf, done, n) {
                    Ok(w) => {
                        done += w;
                        if w < n {
                            break;
                        }
                        continue;
                    }
                    Err(e) if done == 0 => return Err(e),
                    Err(_) => break,
                }
            }
            let step = buf.get(done, &mut chunk[..n]).and_then(|_| {
                let now = now();
                self.with(|fs| {
                    let mut inode = fs.inode(self.ino)?;
                    fs.write_at(&mut inode, offset + done as u64, &chunk[..n], now)
                })
            });
            match step {
                Ok(w) => {
                    done += w;
                    if w < n {
                        break;
                    }
                }
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(done)
    }

    fn mmap(
        &self,
        file: &OpenFile,
        offset: u64,
        shared: bool,
        prot: u32,
    ) -> Result<Backing, Errno> {
        let inode = self.inode()?;
        if !inode.is_reg() {
            return Err(Errno::ENODEV);
        }
        // A shared mapping maps the file's pages themselves (an ext2 file's in the page cache, a
        // tmpfs file's its own), so it may be writable when the file is open for writing (else
        // EACCES, as Linux).
        let may_write = shared && file.writable();
        if !file.readable() || (shared && prot & PROT_WRITE != 0 && !may_write) {
            return Err(Errno::EACCES);
        }
        let hold = FileHold(Some(Rc::new(Ext2File::new(self.mnt.clone(), &inode))));
        Ok(Backing::File {
            dev: self.mnt.dev,
            inode: Rc::new(inode),
            offset,
            path: file.path.clone().unwrap_or_else(|| Rc::from(&b""[..])),
            may_write,
            // The mapping keeps the file open (Linux's vm_file): a file unlinked and closed while
            // mapped lives, its blocks and inode number its own, until the last piece of the area
            // goes (munmap, exec, exit).
            hold,
        })
    }

    fn stat(&self) -> Stat {
        match self.inode() {
            Ok(i) => stat_of(self.mnt.dev, &i),
            Err(_) => Stat {
                dev: self.mnt.dev as u64,
                ino: self.ino as u64,
                mode: self.kind as u32,
                ..Stat::default()
            },
        }
    }

    fn truncate(&self, _file: &OpenFile, len: u64) -> Result<(), Errno> {
        if self.is_dir() {
            return Err(Errno::EISDIR);
        }
        let now = now();
        truncate_pages(&self.mnt, self.ino, len)?;
        self.with(|fs| {
            let mut inode = fs.inode(self.ino)?;
            fs.truncate(&mut inode, len, now)
        })?;
        truncated(&self.mnt, self.ino, len);
        Ok(())
    }

    /// The file's dirty pages, then this filesystem's metadata, then the disk's cache (FLUSH).
    /// fdatasync does the same (the inode is written with the metadata).
    fn sync(&self, _file: &OpenFile, _data_only: bool) -> Result<(), Errno> {
        if self.mnt.disk.is_some() {
            writeback::write_back_inode(&self.mnt, self.ino)?;
        }
        self.with(|fs| fs.sync())
    }

    fn readdir(&self, _file: &OpenFile) -> Result<Vec<DirEntry>, Errno> {
        if !self.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let inode = self.inode()?;
        if inode.links == 0 {
            // Removed while open: ENOENT, not even `.` and `..` (Linux's IS_DEADDIR).
            return Err(Errno::ENOENT);
        }
        let entries = self.with(|fs| fs.read_dir(&inode))?;
        Ok(entries
            .into_iter()
            .map(|e| (e.ino as u64, dt_type(e.file_type), e.name))
            .collect())
    }

    fn is_dir(&self) -> bool {
        self.kind == S_IFDIR
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
