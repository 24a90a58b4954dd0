//! Mounts: the table of mounted filesystems and the path walk that crosses them.
//!
//! A filesystem instance (ext2 on a virtio disk, or a [`super::tmpfs::Tmpfs`]) implements
//! [`FileSystem`], an inode-level interface in the shape of `kcore::ext2` (its `Inode` is the common
//! inode record and its `Ext2Error` the common error). A [`Mount`] puts one instance in the namespace:
//! it covers a directory of its parent mount (the root mount covers nothing). [`resolve`] walks a path
//! one component at a time: entering a directory that a mount covers goes to that mount's root, and
//! `..` at a mount's root goes to the covered directory's parent, as Linux's `follow_dotdot`.
//! Symbolic links are followed here (40 at most), so an absolute link inside a mounted filesystem
//! starts again at the namespace's root.
//!
//! Open files hold their mount (`Rc<Mount>`), so umount sees them (EBUSY). Everything stays on one
//! CPU with interrupts off in the kernel, so a `RefCell` per mount is enough.
#![deny(unsafe_code)]

use super::path::{Path, Start};
use super::writeback::WRITEBACK_NS;
use super::{Disk, Errno};
use crate::sync::KCell;
use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::sync::atomic::{AtomicU64, Ordering};
use kcore::ext2::{DirEntry, Ext2, Ext2Error, Inode, MAX_SYMLINKS};
use kcore::fmt::Dec;

/// statfs(2) numbers of one filesystem.
#[derive(Clone, Copy, Debug, Default)]
pub struct StatFs {
    pub magic: u64,
    pub bsize: u64,
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
}

pub const EXT2_SUPER_MAGIC: u64 = 0xef53;
pub const TMPFS_MAGIC: u64 = 0x0102_1994;

/// A filesystem instance as the VFS uses it: inodes by number, directories by name.
pub trait FileSystem {
    /// The root directory's inode number.
    fn root_ino(&self) -> u32;
    fn inode(&mut self, ino: u32) -> Result<Inode, Ext2Error>;
    /// `name` in directory `dir` (`.` and `..` included).
    fn lookup(&mut self, dir: &Inode, name: &[u8]) -> Result<Option<u32>, Ext2Error>;
    fn read_at(&mut self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize, Ext2Error>;
    fn write_at(
        &mut self,
        inode: &mut Inode,
        offset: u64,
        data: &[u8],
        now: u32,
    ) -> Result<usize, Ext2Error>;
    /// Allocates the blocks under `[offset, offset + len)` and grows the size over them without
    /// writing data (the page cache holds it); fewer bytes when the disk fills part way.
    fn reserve(
        &mut self,
        _inode: &mut Inode,
        _offset: u64,
        _len: usize,
        _now: u32,
    ) -> Result<usize, Ext2Error> {
        Err(Ext2Error::Invalid)
    }
    fn read_dir(&mut self, dir: &Inode) -> Result<Vec<DirEntry>, Ext2Error>;
    fn read_link(&mut self, link: &Inode) -> Result<Vec<u8>, Ext2Error>;
    fn create(
        &mut self,
        dir: &mut Inode,
        name: &[u8],
        mode: u16,
        now: u32,
    ) -> Result<Inode, Ext2Error>;
    fn mkdir(
        &mut self,
        dir: &mut Inode,
        name: &[u8],
        perm: u16,
        now: u32,
    ) -> Result<Inode, Ext2Error>;
    fn rmdir(&mut self, dir: &mut Inode, name: &[u8], now: u32) -> Result<(), Ext2Error>;
    fn unlink(&mut self, dir: &mut Inode, name: &[u8], now: u32) -> Result<Inode, Ext2Error>;
    fn link(
        &mut self,
        target: &mut Inode,
        dir: &mut Inode,
        name: &[u8],
        now: u32,
    ) -> Result<(), Ext2Error>;
    fn symlink(
        &mut self,
        dir: &mut Inode,
        name: &[u8],
        target: &[u8],
        now: u32,
    ) -> Result<Inode, Ext2Error>;
    #[allow(clippy::too_many_arguments)]
    fn rename(
        &mut self,
        old_dir: &mut Inode,
        old_name: &[u8],
        new_dir: Option<&mut Inode>,
        new_name: &[u8],
        noreplace: bool,
        now: u32,
    ) -> Result<(), Ext2Error>;
    fn set_attr(
        &mut self,
        inode: &mut Inode,
        perm: Option<u16>,
        owner: (Option<u16>, Option<u16>),
        times: (Option<u32>, Option<u32>),
        now: u32,
    ) -> Result<(), Ext2Error>;
    fn truncate(&mut self, inode: &mut Inode, size: u64, now: u32) -> Result<(), Ext2Error>;
    fn statfs(&self) -> StatFs;
    fn writable(&self) -> bool;
    /// Read-only (`true`, with what is dirty written first) or read-write.
    fn set_read_only(&mut self, ro: bool) -> Result<(), Ext2Error>;
    /// Everything written back and the device flushed (fsync, sync, umount).
    fn sync(&mut self) -> Result<(), Ext2Error>;
    /// The periodic write-back (no flush).
    fn write_back(&mut self) -> Result<(), Ext2Error>;
    /// Whether its metadata holds changes not on the disk yet ([`FileSystem::write_back`] would
    /// write something).
    fn dirty(&self) -> bool {
        false
    }
    /// The device under it was written by a program (`/dev/vdX`): cached metadata is read again.
    fn device_written(&mut self) -> Result<(), Ext2Error> {
        Ok(())
    }
    /// An open file of inode `ino` appeared / went away: an inode whose last link went while it was
    /// open is freed at its last close; `closed` says whether it was.
    fn opened(&mut self, _ino: u32) {}
    fn closed(&mut self, _ino: u32) -> bool {
        false
    }
    /// The frame of page `idx` of file `ino` for a shared mapping, its share count raised for the
    /// mapping, on a filesystem whose files keep their own pages (tmpfs); the page cache serves
    /// the others (Invalid).
    fn map_page(&mut self, _ino: u32, _idx: u64) -> Result<u64, Ext2Error> {
        Err(Ext2Error::Invalid)
    }
    /// Applies a remount's data string (`size=` for tmpfs). The default takes none (EINVAL).
    fn remount(&mut self, data: &[u8], _ram: u64) -> Result<(), Ext2Error> {
        if data
            .split(|&c| c == b',')
            .all(|o| o.is_empty() || o == b"rw" || o == b"ro")
        {
            Ok(())
        } else {
            Err(Ext2Error::Invalid)
        }
    }
    /// The mount options beyond rw/ro for /proc/mounts (e.g. `,size=1024k`).
    fn options(&self) -> Vec<u8> {
        Vec::new()
    }
    /// The ext2 filesystem, for the loader's fast path (file extents read straight into frames).
    fn ext2(&mut self) -> Option<&mut Ext2<Disk>> {
        None
    }
}

impl FileSystem for Ext2<Disk> {
    fn root_ino(&self) -> u32 {
        kcore::ext2::ROOT_INO
    }
    fn inode(&mut self, ino: u32) -> Result<Inode, Ext2Error> {
        Ext2::inode(self, ino)
    }
    fn lookup(&mut self, dir: &Inode, name: &[u8]) -> Result<Option<u32>, Ext2Error> {
        Ext2::lookup(self, dir, name)
    }
    fn read_at(&mut self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize, Ext2Error> {
        Ext2::read_at(self, inode, offset, buf)
    }
    fn write_at(
        &mut self,
        inode: &mut Inode,
        offset: u64,
        data: &[u8],
        now: u32,
    ) -> Result<usize, Ext2Error> {
        Ext2::write_at(self, inode, offset, data, now)
    }
    fn reserve(
        &mut self,
        inode: &mut Inode,
        offset: u64,
        len: usize,
        now: u32,
    ) -> Result<usize, Ext2Error> {
        Ext2::reserve(self, inode, offset, len, now)
    }
    fn read_dir(&mut self, dir: &Inode) -> Result<Vec<DirEntry>, Ext2Error> {
        Ext2::read_dir(self, dir)
    }
    fn opened(&mut self, ino: u32) {
        Ext2::opened(self, ino)
    }
    fn closed(&mut self, ino: u32) -> bool {
        match Ext2::closed(self, ino, super::now()) {
            Ok(freed) => freed,
            Err(e) => {
                crate::kprintln!(
                    "VFS: freeing unlinked inode {} at its last close failed: {}",
                    kcore::fmt::Dec(ino as u64),
                    e
                );
                false
            }
        }
    }
    fn read_link(&mut self, link: &Inode) -> Result<Vec<u8>, Ext2Error> {
        Ext2::read_link(self, link)
    }
    fn device_written(&mut self) -> Result<(), Ext2Error> {
        Ext2::reload(self)
    }
    fn create(
        &mut self,
        dir: &mut Inode,
        name: &[u8],
        mode: u16,
        now: u32,
    ) -> Result<Inode, Ext2Error> {
        Ext2::create(self, dir, name, mode, now)
    }
    fn mkdir(
        &mut self,
        dir: &mut Inode,
        name: &[u8],
        perm: u16,
        now: u32,
    ) -> Result<Inode, Ext2Error> {
        Ext2::mkdir(self, dir, name, perm, now)
    }
    fn rmdir(&mut self, dir: &mut Inode, name: &[u8], now: u32) -> Result<(), Ext2Error> {
        Ext2::rmdir(self, dir, name, now)
    }
    fn unlink(&mut self, dir: &mut Inode, name: &[u8], now: u32) -> Result<Inode, Ext2Error> {
        Ext2::unlink(self, dir, name, now)
    }
    fn link(
        &mut self,
        target: &mut Inode,
        dir: &mut Inode,
        name: &[u8],
        now: u32,
    ) -> Result<(), Ext2Error> {
        Ext2::link(self, target, dir, name, now)
    }
    fn symlink(
        &mut self,
        dir: &mut Inode,
        name: &[u8],
        target: &[u8],
        now: u32,
    ) -> Result<Inode, Ext2Error> {
        Ext2::symlink(self, dir, name, target, now)
    }
    fn rename(
        &mut self,
        old_dir: &mut Inode,
        old_name: &[u8],
        new_dir: Option<&mut Inode>,
        new_name: &[u8],
        noreplace: bool,
        now: u32,
    ) -> Result<(), Ext2Error> {
        Ext2::rename(self, old_dir, old_name, new_dir, new_name, noreplace, now)
    }
    fn set_attr(
        &mut self,
        inode: &mut Inode,
        perm: Option<u16>,
        owner: (Option<u16>, Option<u16>),
        times: (Option<u32>, Option<u32>),
        now: u32,
    ) -> Result<(), Ext2Error> {
        Ext2::set_attr(self, inode, perm, owner, times, now)
    }
    fn truncate(&mut self, inode: &mut Inode, size: u64, now: u32) -> Result<(), Ext2Error> {
        Ext2::truncate(self, inode, size, now)
    }
    fn statfs(&self) -> StatFs {
        let (blocks, free, avail, inodes, free_inodes, bsize) = Ext2::statfs(self);
        StatFs {
            magic: EXT2_SUPER_MAGIC,
            bsize,
            blocks: blocks.saturating_sub(self.statfs_overhead()),
            bfree: free,
            bavail: avail,
            files: inodes,
            ffree: free_inodes,
        }
    }
    fn writable(&self) -> bool {
        Ext2::writable(self)
    }
    fn set_read_only(&mut self, ro: bool) -> Result<(), Ext2Error> {
        Ext2::set_read_only(self, ro)
    }
    fn sync(&mut self) -> Result<(), Ext2Error> {
        if Ext2::writable(self) {
            Ext2::sync(self)
        } else {
            Ok(())
        }
    }
    fn write_back(&mut self) -> Result<(), Ext2Error> {
        if FileSystem::dirty(self) {
            Ext2::write_back(self)
        } else {
            Ok(())
        }
    }
    fn dirty(&self) -> bool {
        Ext2::writable(self) && Ext2::dirty(self)
    }
    fn ext2(&mut self) -> Option<&mut Ext2<Disk>> {
        Some(self)
    }
}

/// One mounted filesystem.
pub struct Mount {
    pub id: u32,
    /// st_dev of its files (major << 8 | minor).
    pub dev: u32,
    pub fstype: &'static str,
    /// What was mounted (`/dev/vdb`, `tmpfs`), as /proc/mounts shows it.
    pub source: Vec<u8>,
    /// Where it is mounted, as text (for /proc/mounts).
    pub point: Vec<u8>,
    /// The parent mount and the inode of the directory this mount covers (None: the root mount).
    pub covers: Option<(Rc<Mount>, u32)>,
    /// The virtio disk under it (one filesystem per disk).
    pub disk: Option<usize>,
    pub root_ino: u32,
    fs: RefCell<Box<dyn FileSystem>>,
    /// Whether a write-back is owed (changed since the last one).
    touched: Cell<bool>,
}

impl Mount {
    /// Runs `f` on the filesystem (errors become Linux's); then the periodic write-back if due.
    pub fn with<R>(
        &self,
        f: impl FnOnce(&mut dyn FileSystem) -> Result<R, Ext2Error>,
    ) -> Result<R, Errno> {
        let r = {
            let mut fs = self.fs.try_borrow_mut().map_err(|_| Errno::EBUSY)?;
            f(&mut **fs).map_err(|e| errno_on(e, &self.source))
        };
        self.touched.set(true);
        periodic_write_back();
        r
    }
    /// Runs `f` on the filesystem without marking it changed or running the periodic write-back
    /// (write-back itself).
    pub fn with_quiet<R>(
        &self,
        f: impl FnOnce(&mut dyn FileSystem) -> Result<R, Ext2Error>,
    ) -> Result<R, Errno> {
        let mut fs = self.fs.try_borrow_mut().map_err(|_| Errno::EBUSY)?;
        f(&mut **fs).map_err(|e| errno_on(e, &self.source))
    }
    /// A program reads or writes the disk under this filesystem (`/dev/vdX`): its dirty pages and
    /// its dirty metadata (inodes, directories, bitmaps, counts) go to the disk first, so the
    /// device shows what the filesystem holds (Linux's filesystems keep their metadata in the block
    /// device's own cache, so a read of the device sees it at once).
    ///
    /// Nothing dirty, nothing to do: pages written through shared mappings are harvested first
    /// (a flag says whether any can be), then a filesystem with no dirty page in the cache
    /// and clean metadata is left alone, so reading `/dev/vdX` under a mounted filesystem costs
    /// three checks per read instead of a write-back pass.
    pub fn write_back_for_device(&self) -> Result<(), Errno> {
        super::mapping::write_protect_mapped();
        let metadata = self.fs.try_borrow().map_err(|_| Errno::EBUSY)?.dirty();
        if !metadata && !crate::mm::pagecache::dev_dirty(self.dev) {
            return Ok(());
        }
        super::writeback::write_back_mount(self)?;
        let mut fs = self.fs.try_borrow_mut().map_err(|_| Errno::EBUSY)?;
        fs.write_back().map_err(|e| errno_on(e, &self.source))
    }
    /// The disk under this filesystem was written by a program: the file pages cached are dropped
    /// (those mapped stay with their mappings until the next write fault) and the metadata is read
    /// again, so the filesystem sees what was written. A superblock of another geometry is not
    /// taken (one log line; the filesystem keeps its view).
    pub fn device_written(&self) {
        crate::mm::pagecache::invalidate_dev(self.dev);
        let r = match self.fs.try_borrow_mut() {
            Ok(mut fs) => fs.device_written(),
            Err(_) => Ok(()),
        };
        if let Err(e) = r {
            crate::kprintln!(
                "EXT2-fs ({}): not reloaded after a write to the device: {}",
                core::str::from_utf8(&self.source).unwrap_or("?"),
                e
            );
        }
    }
    /// Owes a write-back (a page made dirty through a shared mapping).
    pub fn mark_touched(&self) {
        self.touched.set(true);
    }
    /// Whether no filesystem call is running on it (the memory-pressure path may write it back).
    pub fn idle(&self) -> bool {
        self.fs.try_borrow_mut().is_ok()
    }
    /// fsync of everything: the dirty pages, then the metadata, then a device FLUSH (sync, syncfs,
    /// umount).
    pub fn sync(&self) -> Result<(), Errno> {
        super::writeback::write_back_mount(self)?;
        let r = self
            .fs
            .try_borrow_mut()
            .map_err(|_| Errno::EBUSY)?
            .sync()
            .map_err(|e| errno_on(e, &self.source));
        self.touched.set(false);
        r
    }
    /// The filesystem's statfs numbers.
    pub fn statfs(&self) -> StatFs {
        self.fs.borrow().statfs()
    }
    pub fn writable(&self) -> bool {
        self.fs.borrow().writable()
    }
    /// The inode of the mount's root directory.
    pub fn root(&self) -> Result<Inode, Errno> {
        self.with(|fs| fs.inode(fs.root_ino()))
    }
    /// The /proc/mounts line.
    fn line(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.source);
        out.push(b' ');
        out.extend_from_slice(&self.point);
        out.push(b' ');
        out.extend_from_slice(self.fstype.as_bytes());
        let fs = self.fs.borrow();
        out.extend_from_slice(if fs.writable() { b" rw" } else { b" ro" });
        out.extend_from_slice(b",relatime");
        out.extend_from_slice(&fs.options());
        out.extend_from_slice(b" 0 0\n");
    }
}

impl Drop for Mount {
    /// The last user of an unmounted filesystem is gone: what it still holds goes to its disk.
    fn drop(&mut self) {
        if let Err(e) = super::writeback::write_back_mount(self) {
            crate::kprintln!(
                "VFS: page write-back at unmount failed: errno {}",
                Dec(e.0 as u64)
            );
        }
        if let Err(e) = self.fs.get_mut().sync() {
            crate::kprintln!("VFS: write-back at unmount failed: {}", e);
        }
        // Pages a detached mount's open files read after the umount.
        crate::mm::pagecache::invalidate_dev(self.dev);
    }
}

/// The errno for a filesystem error. Corruption is EIO with a log line (Linux's ext2_error).
pub fn errno_on(e: Ext2Error, source: &[u8]) -> Errno {
    match e {
        Ext2Error::NotFound => Errno::ENOENT,
        Ext2Error::NotDir => Errno::ENOTDIR,
        Ext2Error::Loop => Errno::ELOOP,
        Ext2Error::NoSpace => Errno::ENOSPC,
        Ext2Error::Exists => Errno::EEXIST,
        Ext2Error::NotEmpty => Errno::ENOTEMPTY,
        Ext2Error::IsDir => Errno::EISDIR,
        Ext2Error::NameTooLong => Errno::ENAMETOOLONG,
        Ext2Error::TooManyLinks => Errno::EMLINK,
        Ext2Error::ReadOnly => Errno::EROFS,
        Ext2Error::Invalid => Errno::EINVAL,
        Ext2Error::TooBig => Errno::EFBIG,
        Ext2Error::Corrupt(what) => {
            let dev = source.strip_prefix(b"/dev/").unwrap_or(source);
            crate::kprintln!(
                "EXT2-fs error (device {}): {}",
                core::str::from_utf8(dev).unwrap_or("?"),
                what
            );
            Errno::EIO
        }
        Ext2Error::Io | Ext2Error::BadMagic | Ext2Error::Unsupported(_) => Errno::EIO,
    }
}

/// The mounted filesystems, parents before children.
static MOUNTS: KCell<Vec<Rc<Mount>>> = KCell::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// The next anonymous device number (tmpfs: 0:32, 0:33, ...).
static NEXT_ANON_DEV: AtomicU64 = AtomicU64::new(32);

/// When the filesystems were last written back.
static LAST_WRITEBACK: AtomicU64 = AtomicU64::new(0);

/// Writes back every filesystem changed since the last time (dirty pages, then metadata, no
/// flush), when [`WRITEBACK_NS`] has passed since the last pass (one clock read otherwise);
/// skipped while the page cache is in use. Called at the end of filesystem calls, from the idle
/// task (so dirty data reaches the disk while programs sleep) and from every timer tick taken in
/// user mode.
///
/// Why the tick: Linux's flusher threads wake on a timer and write back whatever else runs. This
/// kernel has no threads of its own and is never preempted, so the timer cannot start kernel work
/// at an arbitrary point; but a tick taken in user mode interrupts no kernel code and holds no
/// lock (no `KCell` borrowed, no filesystem or address space in use), and it comes every 1/HZ
/// whatever runs, a program that only computes included. So the first such tick past the period
/// writes back, on the interrupted task's kernel stack, charged to it as system time (Linux
/// charges a kworker). Nothing in it sleeps: disk requests are polled.
pub fn periodic_write_back() {
    let now = crate::time::now_ns();
    if now.saturating_sub(LAST_WRITEBACK.load(Ordering::Relaxed)) <= WRITEBACK_NS {
        return;
    }
    if crate::mm::pagecache::busy() {
        return;
    }
    LAST_WRITEBACK.store(now, Ordering::Relaxed);
    // Pages written through shared mappings become dirty and read-only (the next write faults
    // and dirties them again: Linux's clear_page_dirty_for_io), and their mounts owe a write-back.
    super::mapping::write_protect_mapped();
    let Ok(mounts) = MOUNTS.try_borrow().map(|m| m.clone()) else {
        return;
    };
    for m in mounts.iter().filter(|m| m.touched.get()) {
        if !m.idle() {
            continue;
        }
        m.touched.set(false);
        if let Err(e) = super::writeback::write_back_mount(m) {
            crate::kprintln!("VFS: page write-back failed: errno {}", Dec(e.0 as u64));
        }
        if let Ok(mut fs) = m.fs.try_borrow_mut() {
            if let Err(e) = fs.write_back() {
                crate::kprintln!("VFS: write-back failed: {}", e);
            }
        }
    }
}

/// Adds a mount. `covers`: the parent mount and the directory inode it hides (None: the root).
pub fn add(
    fs: Box<dyn FileSystem>,
    fstype: &'static str,
    source: Vec<u8>,
    point: Vec<u8>,
    covers: Option<(Rc<Mount>, u32)>,
    disk: Option<usize>,
) -> Rc<Mount> {
    let dev = match disk {
        Some(i) => (254 << 8) | (i as u32 * 16),
        None => NEXT_ANON_DEV.fetch_add(1, Ordering::Relaxed) as u32,
    };
    let m = Rc::new(Mount {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed) as u32,
        dev,
        fstype,
        source,
        point,
        covers,
        disk,
        root_ino: fs.root_ino(),
        fs: RefCell::new(fs),
        touched: Cell::new(false),
    });
    MOUNTS.borrow_mut().push(m.clone());
    m
}

/// The root mount.
pub fn root() -> Result<Rc<Mount>, Errno> {
    MOUNTS.borrow().first().cloned().ok_or(Errno::ENOENT)
}

/// The mount whose files have device number `dev`.
pub fn by_dev(dev: u64) -> Option<Rc<Mount>> {
    MOUNTS
        .borrow()
        .iter()
        .find(|m| m.dev as u64 == dev)
        .cloned()
}

/// The mount on virtio disk `index`, if any.
pub fn by_disk(index: usize) -> Option<Rc<Mount>> {
    MOUNTS
        .borrow()
        .iter()
        .find(|m| m.disk == Some(index))
        .cloned()
}

/// All mounts (parents first).
pub fn all() -> Vec<Rc<Mount>> {
    MOUNTS.borrow().clone()
}

/// The mount that covers directory `ino` of mount `parent`, if any.
fn covering(parent: &Mount, ino: u32) -> Option<Rc<Mount>> {
    MOUNTS
        .borrow()
        .iter()
        .rev()
        .find(|m| matches!(&m.covers, Some((p, i)) if p.id == parent.id && *i == ino))
        .cloned()
}

/// Whether `(m, ino)` is some mount's covered directory or a mount's root (umount, rename and rmdir
/// refuse them: EBUSY).
pub fn is_mount_point(m: &Mount, ino: u32) -> bool {
    (m.covers.is_some() && ino == m.root_ino) || covering(m, ino).is_some()
}

/// Takes mount `m` out of the namespace (EBUSY while open files or mounts on it hold it, unless
/// `detach`: then open files keep it until they close, as Linux's MNT_DETACH; mounts on it still
/// make it EBUSY). The caller holds one reference. Its filesystem is written back and the device
/// flushed (and again when the last open file of a detached mount closes).
pub fn remove(m: Rc<Mount>, detach: bool) -> Result<(), Errno> {
    if m.covers.is_none() {
        return Err(Errno::EBUSY);
    }
    let children = MOUNTS
        .borrow()
        .iter()
        .any(|c| matches!(&c.covers, Some((p, _)) if p.id == m.id));
    // The table and the caller.
    if children || (!detach && Rc::strong_count(&m) > 2) {
        return Err(Errno::EBUSY);
    }
    m.sync()?;
    MOUNTS.borrow_mut().retain(|x| x.id != m.id);
    // The disk may change before it is mounted again (same device number): no pages of it stay.
    crate::mm::pagecache::invalidate_dev(m.dev);
    Ok(())
}

/// Resolves `path` to its mount and inode, from the root or from the directory it starts at,
/// following symbolic links (the last component's too when `follow`).
pub fn resolve(path: &Path, follow: bool) -> Result<(Rc<Mount>, Inode), Errno> {
    let (m, dir) = match path.start() {
        Start::Root => {
            let m = root()?;
            let dir = m.root()?;
            (m, dir)
        }
        Start::Dir { mount, ino, .. } => {
            let m = MOUNTS
                .borrow()
                .iter()
                .find(|m| m.id == mount)
                .cloned()
                .ok_or(Errno::ENOENT)?;
            let dir = m.with(|fs| fs.inode(ino))?;
            if !dir.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            (m, dir)
        }
    };
    let mut links = 0;
    walk(m, dir, path.walked(), follow, &mut links)
}

/// The absolute path of directory `ino` of `m` (getcwd of a working directory held as an inode):
/// `hint` while it still names that directory, else found by walking `..` up and looking each
/// directory up in its parent by inode number (Linux's d_path; each step reads a directory, so
/// this runs only when the hint is stale). ENOENT for a directory that was removed.
pub fn path_of(m: &Rc<Mount>, ino: u32, hint: &[u8]) -> Result<Vec<u8>, Errno> {
    if let Ok((hm, found)) = resolve(&Path::absolute(hint), true) {
        if Rc::ptr_eq(&hm, m) && found.ino == ino {
            return Ok(hint.to_vec());
        }
    }
    let mut names: Vec<Vec<u8>> = Vec::new();
    let (mut mnt, mut ino) = (m.clone(), ino);
    // Deeper than any real tree: a loop of `..` entries in a corrupt image ends here.
    for _ in 0..4096 {
        if ino == mnt.root_ino {
            let Some((parent, covered)) = mnt.covers.clone() else {
                let mut out = Vec::new();
                for n in names.iter().rev() {
                    out.push(b'/');
                    out.extend_from_slice(n);
                }
                if out.is_empty() {
                    out.push(b'/');
                }
                return Ok(out);
            };
            mnt = parent;
            ino = covered;
            continue;
        }
        let (parent, name) = mnt.with(|fs| {
            let dir = fs.inode(ino)?;
            if dir.links == 0 {
                return Err(Ext2Error::NotFound);
            }
            let parent = fs.lookup(&dir, b"..")?.ok_or(Ext2Error::NotFound)?;
            let pdir = fs.inode(parent)?;
            let entries = fs.read_dir(&pdir)?;
            let entry = entries
                .into_iter()
                .find(|e| e.ino == ino && e.name != b"." && e.name != b"..")
                .ok_or(Ext2Error::NotFound)?;
            Ok((parent, entry.name))
        })?;
        names.push(name);
        ino = parent;
    }
    Err(Errno::ELOOP)
}

/// Walks `path` from directory `cur` of `mnt` (from the namespace's root if `path` is absolute),
/// without recursion: the components still to walk are a stack of ranges into `path` and into the
/// targets of the links met so far, so a chain of 40 links costs no kernel stack.
fn walk(
    mut mnt: Rc<Mount>,
    mut cur: Inode,
    path: &[u8],
    follow: bool,
    links: &mut u32,
) -> Result<(Rc<Mount>, Inode), Errno> {
    if path.first() == Some(&b'/') {
        mnt = root()?;
        cur = mnt.root()?;
    }
    // Link targets met so far; a component is (source: 0 the path, k the k-th target, start, end).
    let mut targets: Vec<Vec<u8>> = Vec::new();
    let mut todo: Vec<(usize, usize, usize)> = Vec::new();
    push_components(&mut todo, 0, path);
    while let Some((src, start, end)) = todo.pop() {
        let part: &[u8] = if src == 0 {
            &path[start..end]
        } else {
            &targets[src - 1][start..end]
        };
        if !cur.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        if part == b"." {
            continue;
        }
        if part == b".." {
            // From a mount's root, `..` is taken in the directory it covers.
            while cur.ino == mnt.root_ino {
                let Some((parent, ino)) = mnt.covers.clone() else {
                    break;
                };
                cur = parent.with(|fs| fs.inode(ino))?;
                mnt = parent;
            }
        }
        let next = mnt.with(|fs| {
            let ino = fs.lookup(&cur, part)?.ok_or(Ext2Error::NotFound)?;
            fs.inode(ino)
        })?;
        let last = todo.is_empty();
        if next.is_symlink() && (!last || follow) {
            *links += 1;
            if *links > MAX_SYMLINKS {
                return Err(Errno::ELOOP);
            }
            let target = mnt.with(|fs| fs.read_link(&next))?;
            if target.first() == Some(&b'/') {
                mnt = root()?;
                cur = mnt.root()?;
            }
            targets.push(target);
            push_components(&mut todo, targets.len(), &targets[targets.len() - 1]);
        } else {
            cur = next;
            // Entering a covered directory enters the (topmost) mount on it.
            while let Some(child) = covering(&mnt, cur.ino) {
                cur = child.root()?;
                mnt = child;
            }
        }
    }
    Ok((mnt, cur))
}

/// Pushes the non-empty components of `p` (source `src`) so that the first is popped first.
fn push_components(todo: &mut Vec<(usize, usize, usize)>, src: usize, p: &[u8]) {
    let at = todo.len();
    let mut start = 0;
    for (i, &c) in p.iter().chain(core::iter::once(&b'/')).enumerate() {
        if c == b'/' {
            if i > start {
                todo.push((src, start, i));
            }
            start = i + 1;
        }
    }
    todo[at..].reverse();
}

/// /proc/mounts: the root mount, /proc and /dev (served by the kernel itself), then the others in
/// the order they were mounted.
pub fn proc_mounts() -> Vec<u8> {
    let mounts = all();
    let mut out = Vec::new();
    if let Some(r) = mounts.first() {
        r.line(&mut out);
    }
    out.extend_from_slice(b"proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n");
    out.extend_from_slice(b"devtmpfs /dev devtmpfs rw,relatime,mode=755 0 0\n");
    for m in mounts.iter().skip(1) {
        m.line(&mut out);
    }
    out
}

/// Writes back every filesystem and flushes its disk (sync, power-off).
pub fn sync_all() -> Result<(), Errno> {
    let mut r = Ok(());
    for m in all() {
        let res = m.sync();
        if res.is_err() {
            r = res;
        }
    }
    r
}
