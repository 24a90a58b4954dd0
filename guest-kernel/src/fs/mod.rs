//! The VFS: mounted filesystems ([`mount`]: the ext2 root on a virtio block device, other ext2
//! disks, [`tmpfs`]), open file descriptions and the per-process file descriptor table.
//!
//! `open` resolves a path to an [`OpenFile`] (shared by `Rc` between descriptors, so dup/fork share the
//! offset as on Linux) around an `Rc<dyn FileOps>` ([`file::FileOps`]): a file of a mounted
//! filesystem ([`ext2file`]), or what another subsystem registered for a path: a device node
//! ([`register_device`]: the console, /dev/null) or a whole tree ([`register_tree`]: /proc). The
//! system calls act on the description through the trait and never learn what is behind it.
#![deny(unsafe_code)]

pub mod blockdev;
pub mod cwd;
pub mod dev;
pub mod epoll;
pub mod ext2file;
pub mod fd;
pub mod file;
pub mod lock;
pub mod mapping;
pub mod mount;
pub mod path;
pub mod pipe;
pub mod proc;
pub mod tmpfs;
pub mod writeback;

pub use file::{DirEntry, FileOps, FileRef, OpenFile, Stat};
pub use mount::Mount;
pub use path::Path;

use crate::drivers::virtio;
use crate::sync::KCell;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use kcore::errno::Errno;
use kcore::ext2::{BlockDevice, Ext2, Ext2Error, Inode};

/// The block device under the root filesystem (index into the virtio block devices).
pub struct Disk {
    index: usize,
}

/// Requests the filesystems made of their disks: (reads, writes, flushes, TSC cycles spent in them).
pub static DISK_STATS: [AtomicU64; 4] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

/// Counts one request of kind `k` that started at TSC `t0`.
fn count(k: usize, t0: u64) {
    DISK_STATS[k].fetch_add(1, Ordering::Relaxed);
    DISK_STATS[3].fetch_add(
        crate::arch::cpu::rdtsc().wrapping_sub(t0),
        Ordering::Relaxed,
    );
}

impl BlockDevice for Disk {
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Ext2Error> {
        let t0 = crate::arch::cpu::rdtsc();
        let _count = Defer(move || count(0, t0));
        virtio::with_block(self.index, |d| d.read(offset / 512, buf))
            .ok_or(Ext2Error::Io)?
            .map_err(|_| Ext2Error::Io)
    }
    fn write(&mut self, offset: u64, buf: &[u8]) -> Result<(), Ext2Error> {
        let t0 = crate::arch::cpu::rdtsc();
        let _count = Defer(move || count(1, t0));
        virtio::with_block(self.index, |d| d.write(offset / 512, buf))
            .ok_or(Ext2Error::Io)?
            .map_err(|_| Ext2Error::Io)
    }
    fn flush(&mut self) -> Result<(), Ext2Error> {
        let t0 = crate::arch::cpu::rdtsc();
        let _count = Defer(move || count(2, t0));
        virtio::with_block(self.index, |d| d.flush())
            .ok_or(Ext2Error::Io)?
            .map_err(|_| Ext2Error::Io)
    }
}

/// Runs a closure when dropped (counting a request however it ends).
struct Defer<F: FnMut()>(F);

impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// Why mounting the root failed.
#[derive(Debug)]
pub enum MountError {
    /// `root=` names no known device.
    NoDevice,
    /// The filesystem could not be read.
    Ext2(Ext2Error),
}

/// The virtio disk index `/dev/vdX` names.
pub fn disk_index(path: &[u8]) -> Option<usize> {
    let rest = path.strip_prefix(b"/dev/vd")?;
    match rest {
        [c @ b'a'..=b'z'] => {
            let i = (c - b'a') as usize;
            virtio::with_block(i, |_| ()).map(|_| i)
        }
        _ => None,
    }
}

/// An ext2 filesystem on disk `index`, read-write when `rw` and both the device and the filesystem
/// allow it (else read-only, with a log line saying why). Returns it and whether it is writable.
pub fn open_ext2_disk(index: usize, name: &str, rw: bool) -> Result<(Ext2<Disk>, bool), Ext2Error> {
    let mut fs = Ext2::open(Disk { index })?;
    let mut writable = false;
    if rw {
        let device_ro = virtio::with_block(index, |d| d.readonly()).unwrap_or(true);
        if device_ro {
            crate::kprintln!("VFS: {} is a read-only device: mounted read-only", name);
            let _ = fs.set_read_only(true);
        } else if fs.set_read_only(false).is_err() {
            crate::kprintln!(
                "EXT2-fs ({}): features or state this kernel cannot write: mounted read-only",
                name
            );
        } else {
            writable = true;
        }
    } else {
        let _ = fs.set_read_only(true);
    }
    Ok((fs, writable))
}

/// Mounts the root filesystem from `root=/dev/vdX` (see [`open_ext2_disk`]). Returns whether it is
/// writable.
pub fn mount_root(root: &str, rw: bool) -> Result<bool, MountError> {
    let index = disk_index(root.as_bytes()).ok_or(MountError::NoDevice)?;
    let (fs, writable) = open_ext2_disk(index, root, rw).map_err(MountError::Ext2)?;
    mount::add(
        alloc::boxed::Box::new(fs),
        "ext2",
        root.as_bytes().to_vec(),
        b"/".to_vec(),
        None,
        Some(index),
    );
    Ok(writable)
}

/// The tmpfs mounts the kernel makes at boot: /tmp (mode 1777) and /run (0755), each on a directory
/// the root filesystem has (a missing one is skipped with a log line).
pub fn mount_boot_tmpfs() {
    for (point, mode) in [(&b"/tmp"[..], 0o1777u16), (&b"/run"[..], 0o755)] {
        let opts = tmpfs::Options {
            size: None,
            nr_inodes: None,
            mode: Some(mode),
        };
        if let Err(e) = mount_tmpfs(point, &opts) {
            crate::kprintln!(
                "VFS: no tmpfs on {}: errno {}",
                core::str::from_utf8(point).unwrap_or("?"),
                kcore::fmt::Dec(e.0 as u64)
            );
        }
    }
}

/// Mounts a new tmpfs on the directory at `point`.
pub fn mount_tmpfs(point: &[u8], opts: &tmpfs::Options) -> Result<(), Errno> {
    let (parent, dir) = mount::resolve(&Path::absolute(point), true)?;
    if !dir.is_dir() {
        return Err(Errno::ENOTDIR);
    }
    let fs = tmpfs::Tmpfs::new(opts, ram_bytes(), now());
    mount::add(
        alloc::boxed::Box::new(fs),
        "tmpfs",
        b"tmpfs".to_vec(),
        point.to_vec(),
        Some((parent, dir.ino)),
        None,
    );
    Ok(())
}

/// RAM the kernel manages, in bytes (tmpfs's default size is half of it).
pub fn ram_bytes() -> u64 {
    crate::mm::frame::stats().0 * crate::mm::PAGE_SIZE
}

/// Writes everything every filesystem holds back to its disk and flushes the disk (sync, syncfs,
/// power-off).
pub fn sync_all() -> Result<(), Errno> {
    mount::sync_all()
}

/// The wall-clock second for inode times.
pub fn now() -> u32 {
    (crate::time::realtime_ns() / 1_000_000_000) as u32
}

/// The flags of open(2).
pub const O_ACCMODE: u32 = 3;
pub const O_WRONLY: u32 = 1;
pub const O_RDWR: u32 = 2;
pub const O_CREAT: u32 = 0o100;
pub const O_EXCL: u32 = 0o200;
pub const O_NOCTTY: u32 = 0o400;
pub const O_TRUNC: u32 = 0o1000;
pub const O_APPEND: u32 = 0o2000;
pub const O_NONBLOCK: u32 = 0o4000;
pub const O_DIRECTORY: u32 = 0o200000;
pub const O_NOFOLLOW: u32 = 0o400000;
pub const O_CLOEXEC: u32 = 0o2000000;
/// Kernel-internal, never taken from user space: the opener is asked for the object only to stat it
/// (stat(2), lstat(2), listing /dev), so a node that opens conditionally (/dev/tty without a
/// controlling terminal: ENXIO) still exists, as on Linux.
pub const O_STAT_ONLY: u32 = 1 << 31;

/// Opens the device node at `path` (as open(2) flags allow).
pub type DeviceOpen = Rc<dyn Fn(u32) -> Result<Rc<dyn FileOps>, Errno>>;
/// Opens `path` inside a registered tree (`path` starts with the tree's prefix).
pub type TreeOpen = fn(path: &[u8], flags: u32) -> Result<Rc<dyn FileOps>, Errno>;

/// Device nodes and whole trees other subsystems registered at boot (their paths, their openers).
struct Registry {
    devices: Vec<(Vec<u8>, DeviceOpen)>,
    trees: Vec<(&'static [u8], TreeOpen)>,
}

static REGISTRY: KCell<Registry> = KCell::new(Registry {
    devices: Vec::new(),
    trees: Vec::new(),
});

/// Makes `path` a device node opened by `open` (boot-time registration by the owning subsystem).
pub fn register_device(
    path: impl Into<Vec<u8>>,
    open: impl Fn(u32) -> Result<Rc<dyn FileOps>, Errno> + 'static,
) {
    REGISTRY
        .borrow_mut()
        .devices
        .push((path.into(), Rc::new(open)));
}

/// Makes `prefix` and everything below it served by `open` (a pseudo filesystem such as /proc).
pub fn register_tree(prefix: &'static [u8], open: TreeOpen) {
    REGISTRY.borrow_mut().trees.push((prefix, open));
}

/// The opener registered for the path whose text is `path`, if any (devices and trees are
/// registered by name: a path in a directory goes by its text too).
fn registered(path: &[u8], flags: u32) -> Option<Result<Rc<dyn FileOps>, Errno>> {
    enum Found {
        Dev(DeviceOpen),
        Tree(TreeOpen),
    }
    let found = {
        let r = REGISTRY.borrow();
        if let Some((_, o)) = r.devices.iter().find(|(p, _)| p.as_slice() == path) {
            Some(Found::Dev(o.clone()))
        } else {
            r.trees
                .iter()
                .find(|(p, _)| {
                    path.starts_with(p) && (path.len() == p.len() || path[p.len()] == b'/')
                })
                .map(|(_, o)| Found::Tree(*o))
        }
    };
    // Called with the registry no longer borrowed: an opener may register or look up.
    found.map(|f| match f {
        Found::Dev(o) => o(flags),
        Found::Tree(o) => o(path, flags),
    })
}

/// A new pipe: (read end, write end) open file descriptions.
pub fn pipe(flags: u32) -> (FileRef, FileRef) {
    let (r, w) = pipe::new();
    (
        OpenFile::new(Rc::new(r), flags & O_NONBLOCK, None),
        OpenFile::new(Rc::new(w), O_WRONLY | (flags & O_NONBLOCK), None),
    )
}

/// The entries of the open directory `f`; for /dev also the registered device nodes (as devtmpfs
/// shows them), each with the inode number and type its stat gives.
pub fn dir_entries(f: &OpenFile) -> Result<Vec<DirEntry>, Errno> {
    const DT_CHR: u8 = 2;
    const DT_BLK: u8 = 6;
    let mut entries = f.ops.readdir(f)?;
    let mut dir = f.path.as_deref().unwrap_or_default();
    while let Some(d) = dir.strip_suffix(b"/.").or_else(|| dir.strip_suffix(b"/")) {
        dir = d;
    }
    if dir != b"/dev" {
        return Ok(entries);
    }
    let names: Vec<Vec<u8>> = REGISTRY
        .borrow()
        .devices
        .iter()
        .filter_map(|(p, _)| p.strip_prefix(b"/dev/"))
        .filter(|n| !n.contains(&b'/'))
        .map(<[u8]>::to_vec)
        .collect();
    for name in names {
        if entries.iter().any(|(_, _, n)| *n == name) {
            continue;
        }
        let path = [b"/dev/".as_slice(), &name].concat();
        let Some(Ok(ops)) = registered(&path, O_NOCTTY | O_STAT_ONLY) else {
            continue;
        };
        let st = ops.stat();
        let dt = if st.mode & 0o170000 == 0o060000 {
            DT_BLK
        } else {
            DT_CHR
        };
        entries.push((st.ino, dt, name));
    }
    Ok(entries)
}

/// The stat of `path`, following a final symlink: a lookup, not an open (a terminal found this way
/// does not become the controlling one, /dev/tty exists without one).
pub fn stat(path: &Path) -> Result<Stat, Errno> {
    if let Some(ops) = registered(path.text(), O_NOCTTY | O_STAT_ONLY) {
        return Ok(ops?.stat());
    }
    let (mnt, inode) = mount::resolve(path, true)?;
    Ok(ext2file::stat_of(mnt.dev, &inode))
}

/// Opens `path`.
pub fn open(path: &Path, flags: u32, mode: u32) -> Result<FileRef, Errno> {
    let flags = flags & !O_STAT_ONLY;
    let ops = match registered(path.text(), flags) {
        Some(ops) => {
            let ops = ops?;
            if flags & O_DIRECTORY != 0 && !ops.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            if ops.is_dir() && flags & O_ACCMODE != 0 {
                return Err(Errno::EISDIR);
            }
            ops
        }
        None => {
            let (mnt, inode) = open_inode(path, flags, mode)?;
            return Ok(OpenFile::new(
                Rc::new(ext2file::Ext2File::new(mnt, &inode)),
                flags & !(O_CLOEXEC | O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY),
                Some(Rc::from(path.text())),
            ));
        }
    };
    Ok(OpenFile::new(
        ops,
        flags & !O_CLOEXEC,
        Some(Rc::from(path.text())),
    ))
}

/// The inode `open` gives for `path` and its mount: created (O_CREAT, with `mode`), truncated
/// (O_TRUNC; `mode` has the umask applied already), checked against the access mode (EISDIR, EROFS,
/// ELOOP for O_NOFOLLOW on a link).
fn open_inode(path: &Path, flags: u32, mode: u32) -> Result<(Rc<Mount>, Inode), Errno> {
    let found = mount::resolve(path, flags & O_NOFOLLOW == 0);
    let (mnt, mut inode) = match found {
        Err(Errno::ENOENT) if flags & O_CREAT != 0 => {
            let (mnt, mut dir, name) = parent_of(path)?;
            let perm = (mode & 0o7777) as u16;
            let now = now();
            let dev = mnt.dev;
            let inode = mnt.with(|fs| {
                let made = fs.create(&mut dir, name, kcore::ext2::S_IFREG | perm, now)?;
                // Pages an earlier file of this inode number left in the cache are not this
                // file's (dropped before the periodic write-back at the end of `with` sees them).
                crate::mm::pagecache::invalidate(dev, made.ino, 0);
                Ok(made)
            })?;
            return Ok((mnt, inode));
        }
        other => other?,
    };
    if flags & (O_CREAT | O_EXCL) == O_CREAT | O_EXCL {
        return Err(Errno::EEXIST);
    }
    if flags & O_DIRECTORY != 0 && !inode.is_dir() {
        return Err(Errno::ENOTDIR);
    }
    if inode.is_symlink() {
        return Err(Errno::ELOOP);
    }
    let writing = flags & O_ACCMODE != 0 || flags & O_TRUNC != 0;
    if writing {
        if inode.is_dir() {
            return Err(Errno::EISDIR);
        }
        if !mnt.writable() {
            return Err(Errno::EROFS);
        }
    }
    if flags & O_TRUNC != 0 && inode.is_reg() && inode.size != 0 {
        let now = now();
        mnt.with(|fs| fs.truncate(&mut inode, 0, now))?;
        crate::mm::pagecache::invalidate(mnt.dev, inode.ino, 0);
        mapping::unmap_file_pages(mnt.dev, inode.ino, 0, false);
    }
    Ok((mnt, inode))
}

/// The directory holding the last component of `path`, its mount, and that component's name.
/// EEXIST-free: the caller decides what an existing name means. A path ending in `/` or naming `/`
/// has no name (EEXIST for `/`, as mkdir("/") is).
pub fn parent_of(path: &Path) -> Result<(Rc<Mount>, Inode, &[u8]), Errno> {
    let (dir, name) = path.split_last().ok_or(Errno::ENOENT)?;
    if name.is_empty() {
        return Err(Errno::EEXIST);
    }
    if name.len() > 255 {
        return Err(Errno::ENAMETOOLONG);
    }
    if registered(dir.text(), O_NOCTTY).is_some() || registered(path.trimmed(), O_NOCTTY).is_some()
    {
        return Err(Errno::EPERM);
    }
    let (mnt, dir) = mount::resolve(&dir, true)?;
    if !dir.is_dir() {
        return Err(Errno::ENOTDIR);
    }
    if dir.links == 0 {
        // A directory removed while a descriptor or working directory still names it.
        return Err(Errno::ENOENT);
    }
    Ok((mnt, dir, name))
}

/// The target of the symbolic link at `path` (EINVAL for what is not one).
pub fn read_link(path: &Path) -> Result<Vec<u8>, Errno> {
    if let Some(ops) = registered(path.text(), O_NOCTTY) {
        ops?;
        return Err(Errno::EINVAL);
    }
    let (mnt, inode) = mount::resolve(path, false)?;
    if !inode.is_symlink() {
        return Err(Errno::EINVAL);
    }
    mnt.with(|fs| fs.read_link(&inode))
}

/// The absolute `path` with every symbolic link in it resolved and `.`, `..` and repeated slashes
/// taken away: the one canonical name of what it reaches, as Linux's d_path gives it
/// (/proc/PID/exe). ELOOP after 40 links; the errors of lstat for a missing component.
pub fn canonical(path: &[u8]) -> Result<Vec<u8>, Errno> {
    const MAX_LINKS: u32 = 40;
    let join = |parts: &[Vec<u8>]| -> Vec<u8> {
        if parts.is_empty() {
            return b"/".to_vec();
        }
        let mut out = Vec::new();
        for p in parts {
            out.push(b'/');
            out.extend_from_slice(p);
        }
        out
    };
    // Components still to walk, last first; the canonical prefix walked so far.
    let mut todo: Vec<Vec<u8>> = path
        .split(|&c| c == b'/')
        .rev()
        .map(<[u8]>::to_vec)
        .collect();
    let mut done: Vec<Vec<u8>> = Vec::new();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        match part.as_slice() {
            b"" | b"." => continue,
            b".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        done.push(part);
        let here = Path::absolute(join(&done));
        // /proc's links (self, thread-self, PID/exe, cwd, fd/N) are not ext2 symlinks.
        let target = match proc::readlink(here.text()) {
            Some(target) => target?,
            None => {
                let mode = lstat(&here)?.mode & u32::from(kcore::ext2::S_IFMT);
                if mode != u32::from(kcore::ext2::S_IFLNK) {
                    continue;
                }
                read_link(&here)?
            }
        };
        links += 1;
        if links > MAX_LINKS {
            return Err(Errno::ELOOP);
        }
        done.pop();
        if target.first() == Some(&b'/') {
            done.clear();
        }
        todo.extend(target.split(|&c| c == b'/').rev().map(<[u8]>::to_vec));
    }
    Ok(join(&done))
}

/// The stat of `path` without following a final symlink (lstat): the registered objects have none.
pub fn lstat(path: &Path) -> Result<Stat, Errno> {
    if let Some(ops) = registered(path.text(), O_NOCTTY | O_NOFOLLOW | O_STAT_ONLY) {
        return Ok(ops?.stat());
    }
    let (mnt, inode) = mount::resolve(path, false)?;
    Ok(ext2file::stat_of(mnt.dev, &inode))
}
