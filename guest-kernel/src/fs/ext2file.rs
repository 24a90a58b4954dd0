//! Files and directories of a mounted filesystem (ext2 or tmpfs) as open-file objects ([`FileOps`]).
//!
//! An open file holds its mount and names its inode by number, reading the inode (from the
//! filesystem's inode cache) at each operation, so every description of a file sees the size and
//! times the last write left. Writes go through a kernel buffer (a piece of at most [`WRITE_CHUNK`]
//! bytes at a time) to the filesystem.
#![deny(unsafe_code)]

use super::file::{DirEntry, FileOps, OpenFile, ReadBuf, Stat, WriteBuf};
use super::mount::Mount;
use super::now;
use crate::mm::{pagecache, PAGE_SIZE};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::any::Any;
use kcore::errno::Errno;
use kcore::ext2::{Inode, S_IFDIR, S_IFMT};
use kcore::vma::{Backing, PROT_WRITE};

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
        let _ = self.mnt.with(|fs| {
            fs.closed(ino);
            Ok(())
        });
    }
}

impl Ext2File {
    /// A read through the page cache: cached pages are copied out; a missing one is read with the
    /// missing pages after it (up to `RUN_PAGES`, within the file) in one filesystem read, and kept.
    fn read_cached(&self, inode: &Inode, offset: u64, out: &mut Out) -> Result<usize, Errno> {
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
            // A miss: this page and the missing ones after it.
            let mut end = idx + 1;
            while end <= last
                && end - idx < pagecache::RUN_PAGES
                && !pagecache::contains((dev, self.ino, end))
            {
                end += 1;
            }
            let len = (end - idx) as usize * page;
            if within == 0 && len <= n - done {
                if let Some(d) = out.whole(done, len) {
                    // The run lies inside the caller's memory: read it there, then keep copies.
                    let got = self.with(|fs| fs.read_at(inode, pos, d))?;
                    if got == len {
                        for (k, p) in d.chunks_exact(page).enumerate() {
                            pagecache::insert((dev, self.ino, idx + k as u64), p);
                        }
                        done += len;
                        continue;
                    }
                    // The file shrank meanwhile: what was read is all there is.
                    return Ok(done + got);
                }
            }
            run.clear();
            run.try_reserve_exact(len).map_err(|_| Errno::ENOMEM)?;
            run.resize(len, 0);
            let got = self.with(|fs| fs.read_at(inode, idx * PAGE_SIZE, &mut run))?;
            run[got..].fill(0);
            for (k, p) in run.chunks_exact(page).enumerate() {
                pagecache::insert((dev, self.ino, idx + k as u64), p);
            }
            let take = (len - within).min(n - done);
            out.put(done, &run[within..within + take])?;
            done += take;
        }
        Ok(n)
    }

    /// `data` reached the disk at `pos`: the cached pages it covers get the same bytes.
    fn cache_update(&self, pos: u64, data: &[u8]) {
        let mut at = 0;
        while at < data.len() {
            let p = pos + at as u64;
            let within = (p % PAGE_SIZE) as usize;
            let step = (PAGE_SIZE as usize - within).min(data.len() - at);
            pagecache::update(
                (self.mnt.dev, self.ino, pagecache::index(p)),
                within,
                &data[at..at + step],
            );
            at += step;
        }
    }
}

/// Where a cached read delivers: straight into the caller's memory, or through `put` (with a bounce
/// buffer for cached pages).
enum Out<'a> {
    Direct(&'a mut [u8]),
    Put(&'a mut dyn ReadBuf, Vec<u8>),
}

impl Out<'_> {
    fn len(&self) -> usize {
        match self {
            Out::Direct(d) => d.len(),
            Out::Put(b, _) => b.len(),
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
            Out::Put(b, bounce) => {
                bounce.resize(step, 0);
                if !pagecache::read(key, within, bounce) {
                    return Ok(false);
                }
                b.put(at, bounce)?;
                Ok(true)
            }
        }
    }
    /// The caller's memory at `[at, at + len)` when it can be written in place.
    fn whole(&mut self, at: usize, len: usize) -> Option<&mut [u8]> {
        match self {
            Out::Direct(d) => d.get_mut(at..at + len),
            Out::Put(..) => None,
        }
    }
    fn put(&mut self, at: usize, bytes: &[u8]) -> Result<(), Errno> {
        match self {
            Out::Direct(d) => {
                d[at..at + bytes.len()].copy_from_slice(bytes);
                Ok(())
            }
            Out::Put(b, _) => b.put(at, bytes),
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
            return self.read_cached(&inode, offset, &mut Out::Put(buf, Vec::new()));
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
        let mut chunk: Vec<u8> = Vec::new();
        chunk
            .try_reserve_exact(len.min(WRITE_CHUNK))
            .map_err(|_| Errno::ENOMEM)?;
        chunk.resize(len.min(WRITE_CHUNK), 0);
        let mut done = 0;
        while done < len {
            let n = (len - done).min(WRITE_CHUNK);
            let step = buf.get(done, &mut chunk[..n]).and_then(|_| {
                let now = now();
                self.with(|fs| {
                    let mut inode = fs.inode(self.ino)?;
                    fs.write_at(&mut inode, offset + done as u64, &chunk[..n], now)
                })
            });
            match step {
                Ok(w) => {
                    if self.mnt.disk.is_some() {
                        self.cache_update(offset + done as u64, &chunk[..w]);
                    }
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
        // Shared mappings are read-only (no page cache to write back through yet): a writable shared
        // mapping is EACCES, as for a descriptor not open for writing.
        if !file.readable() || (shared && prot & PROT_WRITE != 0) {
            return Err(Errno::EACCES);
        }
        Ok(Backing::File {
            dev: self.mnt.dev,
            inode: Rc::new(inode),
            offset,
            path: file.path.clone().unwrap_or_else(|| Rc::from(&b""[..])),
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
        self.with(|fs| {
            let mut inode = fs.inode(self.ino)?;
            fs.truncate(&mut inode, len, now)
        })?;
        pagecache::invalidate(self.mnt.dev, self.ino, pagecache::index(len));
        Ok(())
    }

    /// File data is written through already; what is left is this filesystem's metadata and the
    /// disk's cache.
    fn sync(&self, _file: &OpenFile, _data_only: bool) -> Result<(), Errno> {
        self.with(|fs| fs.sync())
    }

    fn readdir(&self, _file: &OpenFile) -> Result<Vec<DirEntry>, Errno> {
        if !self.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let inode = self.inode()?;
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
