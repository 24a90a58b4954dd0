//! System calls that change the filesystem: mkdir, mkdirat, rmdir, unlink, unlinkat, rename,
//! renameat, renameat2, link, linkat, symlink, symlinkat, chmod, fchmod, fchmodat, chown, fchown,
//! lchown, fchownat, utimensat, truncate, umask, sync, syncfs, statfs, fstatfs.
//!
//! Paths are made absolute as in `path.rs`; the root filesystem does the work (`kcore::ext2`), and
//! its errors become Linux's (EROFS on a read-only mount, ENOSPC, EEXIST, ENOTEMPTY, EISDIR, ENOTDIR,
//! ENAMETOOLONG, EMLINK, ELOOP; EIO and a log line for corruption).
#![deny(unsafe_code)]

use super::file::{copy_to_user, file, user_cstr};
use super::path::{absolute, AT_FDCWD};
use super::SysResult;
use crate::fs::{self, ext2file::Ext2File, mount, now, parent_of, Mount, Path};
use crate::proc::with_current;
use alloc::rc::Rc;
use kcore::errno::Errno;
use kcore::ext2::Inode;

const AT_SYMLINK_NOFOLLOW: u32 = 0x100;
const AT_REMOVEDIR: u32 = 0x200;
const AT_SYMLINK_FOLLOW: u32 = 0x400;
const AT_EMPTY_PATH: u32 = 0x1000;
const RENAME_NOREPLACE: u32 = 1;

/// `path` (a user string) made absolute against `dirfd`.
fn user_path(dirfd: i64, path: u64) -> Result<Path, Errno> {
    absolute(dirfd, user_cstr(path)?)
}

/// The inode at `path` and its mount (`follow`: through a final symlink). EPERM for a path the VFS
/// serves from elsewhere (/proc, device nodes).
fn inode_at(path: &Path, follow: bool) -> Result<(Rc<Mount>, Inode), Errno> {
    if mount::by_dev(fs::lstat(path)?.dev).is_none() {
        return Err(Errno::EPERM);
    }
    mount::resolve(path, follow)
}

/// The inode behind descriptor `fd` and its mount (EPERM for files of no mounted filesystem).
fn inode_of_fd(fd: i64) -> Result<(Rc<Mount>, Inode), Errno> {
    let f = file(fd)?;
    let e = f.downcast::<Ext2File>().ok_or(Errno::EPERM)?;
    Ok((e.mount().clone(), e.inode()?))
}

pub fn sys_mkdirat(dirfd: i64, path: u64, mode: u32) -> SysResult {
    let path = user_path(dirfd, path)?;
    let (mnt, mut dir, name) = parent_of(&path)?;
    let perm = (mode & 0o7777 & !with_current(|p| p.cwd.umask())) as u16;
    let now = now();
    let dev = mnt.dev;
    mnt.with(|fs| {
        let made = fs.mkdir(&mut dir, name, perm, now)?;
        // Pages an earlier file of this inode number left in the cache (unlinked while dirty) are
        // not this directory's: written back onto its blocks they would overwrite its entries.
        crate::mm::pagecache::invalidate(dev, made.ino, 0);
        Ok(0)
    })
}

pub fn sys_unlinkat(dirfd: i64, path: u64, flags: u32) -> SysResult {
    if flags & !AT_REMOVEDIR != 0 {
        return Err(Errno::EINVAL);
    }
    let path = user_path(dirfd, path)?;
    let (mnt, mut dir, name) = parent_of(&path)?;
    let now = now();
    if flags & AT_REMOVEDIR != 0 {
        if name == b"." {
            return Err(Errno::EINVAL);
        }
        busy_if_mount_point(&mnt, &dir, name)?;
        mnt.with(|fs| fs.rmdir(&mut dir, name, now)).map(|_| 0)
    } else {
        mnt.with(|fs| fs.unlink(&mut dir, name, now)).map(|_| 0)
    }
}

pub fn sys_renameat2(olddir: i64, old: u64, newdir: i64, new: u64, flags: u32) -> SysResult {
    if flags & !RENAME_NOREPLACE != 0 {
        // RENAME_EXCHANGE and RENAME_WHITEOUT are not supported.
        return Err(Errno::EINVAL);
    }
    let old = user_path(olddir, old)?;
    let new = user_path(newdir, new)?;
    let (omnt, mut odir, oname) = parent_of(&old)?;
    let (nmnt, mut ndir, nname) = parent_of(&new)?;
    if omnt.id != nmnt.id {
        return Err(Errno::EXDEV);
    }
    busy_if_mount_point(&omnt, &odir, oname)?;
    busy_if_mount_point(&nmnt, &ndir, nname)?;
    let now = now();
    let noreplace = flags & RENAME_NOREPLACE != 0;
    omnt.with(|fs| {
        if odir.ino == ndir.ino {
            fs.rename(&mut odir, oname, None, nname, noreplace, now)
        } else {
            fs.rename(&mut odir, oname, Some(&mut ndir), nname, noreplace, now)
        }
    })
    .map(|_| 0)
}

pub fn sys_linkat(olddir: i64, old: u64, newdir: i64, new: u64, flags: u32) -> SysResult {
    if flags & !(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    let oldp = user_cstr(old)?;
    let (tmnt, mut target) = if oldp.is_empty() && flags & AT_EMPTY_PATH != 0 {
        inode_of_fd(olddir)?
    } else {
        inode_at(&absolute(olddir, oldp)?, flags & AT_SYMLINK_FOLLOW != 0)?
    };
    let new = user_path(newdir, new)?;
    let (mnt, mut dir, name) = parent_of(&new)?;
    if tmnt.id != mnt.id {
        return Err(Errno::EXDEV);
    }
    let now = now();
    mnt.with(|fs| fs.link(&mut target, &mut dir, name, now))
        .map(|_| 0)
}

pub fn sys_symlinkat(target: u64, newdir: i64, linkpath: u64) -> SysResult {
    let target = user_cstr(target)?;
    let path = user_path(newdir, linkpath)?;
    let (mnt, mut dir, name) = parent_of(&path)?;
    let now = now();
    let dev = mnt.dev;
    mnt.with(|fs| {
        let made = fs.symlink(&mut dir, name, &target, now)?;
        // As for mkdir: an earlier file's dirty pages are not the link's (a fast symlink's block
        // pointers are its target's text: their write-back failed with EIO at every sync).
        crate::mm::pagecache::invalidate(dev, made.ino, 0);
        Ok(0)
    })
}

/// chmod, fchmod, fchmodat: the permission bits (and setuid/setgid/sticky).
pub fn sys_fchmodat(dirfd: i64, path: u64, mode: u32) -> SysResult {
    let (mnt, mut inode) = inode_at(&user_path(dirfd, path)?, true)?;
    set_attr(
        &mnt,
        &mut inode,
        Some(mode as u16),
        (None, None),
        (None, None),
    )
}

pub fn sys_fchmod(fd: i64, mode: u32) -> SysResult {
    let (mnt, mut inode) = inode_of_fd(fd)?;
    set_attr(
        &mnt,
        &mut inode,
        Some(mode as u16),
        (None, None),
        (None, None),
    )
}

/// An owner argument: -1 leaves it unchanged; ids past 16 bits do not fit this filesystem's fields.
fn id(v: u32) -> Result<Option<u16>, Errno> {
    match v {
        u32::MAX => Ok(None),
        v => u16::try_from(v).map(Some).map_err(|_| Errno::EINVAL),
    }
}

pub fn sys_fchownat(dirfd: i64, path: u64, uid: u32, gid: u32, flags: u32) -> SysResult {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    let p = user_cstr(path)?;
    let (mnt, mut inode) = if p.is_empty() && flags & AT_EMPTY_PATH != 0 {
        inode_of_fd(dirfd)?
    } else {
        inode_at(&absolute(dirfd, p)?, flags & AT_SYMLINK_NOFOLLOW == 0)?
    };
    set_attr(&mnt, &mut inode, None, (id(uid)?, id(gid)?), (None, None))
}

pub fn sys_fchown(fd: i64, uid: u32, gid: u32) -> SysResult {
    let (mnt, mut inode) = inode_of_fd(fd)?;
    set_attr(&mnt, &mut inode, None, (id(uid)?, id(gid)?), (None, None))
}

fn set_attr(
    mnt: &Mount,
    inode: &mut Inode,
    perm: Option<u16>,
    owner: (Option<u16>, Option<u16>),
    times: (Option<u32>, Option<u32>),
) -> SysResult {
    let now = now();
    mnt.with(|fs| fs.set_attr(inode, perm, owner, times, now))
        .map(|_| 0)
}

const UTIME_NOW: i64 = (1 << 30) - 1;
const UTIME_OMIT: i64 = (1 << 30) - 2;

/// utimensat: times[0] atime, times[1] mtime (NULL: both now; UTIME_NOW, UTIME_OMIT); a NULL path
/// is the descriptor itself (futimens).
pub fn sys_utimensat(dirfd: i64, path: u64, times: u64, flags: u32) -> SysResult {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    let now = now();
    let (atime, mtime) = if times == 0 {
        (Some(now), Some(now))
    } else {
        let b: [u8; 32] = crate::mm::uaccess::read_val(times)?;
        let word = |o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[o..o + 8]);
            i64::from_le_bytes(w)
        };
        let pick = |sec: i64, nsec: i64| -> Result<Option<u32>, Errno> {
            match nsec {
                UTIME_NOW => Ok(Some(now)),
                UTIME_OMIT => Ok(None),
                0..=999_999_999 => Ok(Some(sec as u32)),
                _ => Err(Errno::EINVAL),
            }
        };
        (pick(word(0), word(8))?, pick(word(16), word(24))?)
    };
    let (mnt, mut inode) = if path == 0 {
        inode_of_fd(dirfd)?
    } else {
        let p = user_cstr(path)?;
        if p.is_empty() && flags & AT_EMPTY_PATH != 0 {
            inode_of_fd(dirfd)?
        } else {
            inode_at(&absolute(dirfd, p)?, flags & AT_SYMLINK_NOFOLLOW == 0)?
        }
    };
    if atime.is_none() && mtime.is_none() {
        return Ok(0);
    }
    set_attr(&mnt, &mut inode, None, (None, None), (atime, mtime))
}

/// truncate(path, len).
pub fn sys_truncate(path: u64, len: i64) -> SysResult {
    if len < 0 {
        return Err(Errno::EINVAL);
    }
    let (mnt, mut inode) = inode_at(&user_path(AT_FDCWD, path)?, true)?;
    if inode.is_dir() {
        return Err(Errno::EISDIR);
    }
    if !inode.is_reg() {
        return Err(Errno::EINVAL);
    }
    let now = now();
    fs::ext2file::truncate_pages(&mnt, inode.ino, len as u64)?;
    mnt.with(|fs| fs.truncate(&mut inode, len as u64, now))?;
    fs::ext2file::truncated(&mnt, inode.ino, len as u64);
    Ok(0)
}

pub fn sys_umask(mask: u32) -> SysResult {
    Ok(with_current(|p| p.cwd.set_umask(mask)) as u64)
}

/// sync: every filesystem written back, every disk flushed.
pub fn sys_sync() -> SysResult {
    crate::proc::harvest_all_dirty();
    fs::sync_all().map(|_| 0)
}

/// syncfs: the filesystem holding `fd` (others' files: nothing to do).
pub fn sys_syncfs(fd: i64) -> SysResult {
    let dev = file(fd)?.ops.stat().dev;
    crate::proc::harvest_all_dirty();
    match mount::by_dev(dev) {
        Some(m) => m.sync().map(|_| 0),
        None => Ok(0),
    }
}

/// EBUSY when `name` in `dir` is a mount point (rmdir and rename of one, as Linux).
fn busy_if_mount_point(mnt: &Mount, dir: &Inode, name: &[u8]) -> Result<(), Errno> {
    if matches!(name, b"." | b"..") {
        return Ok(());
    }
    let ino = mnt.with(|fs| fs.lookup(dir, name))?;
    match ino {
        Some(i) if mount::is_mount_point(mnt, i) => Err(Errno::EBUSY),
        _ => Ok(()),
    }
}

const PROC_SUPER_MAGIC: u64 = 0x9fa0;
const ST_RDONLY: u64 = 1;

/// The 120-byte `struct statfs` of the filesystem holding a file with device number `dev`.
fn statfs_bytes(dev: u64) -> Result<[u8; 120], Errno> {
    let mut b = [0u8; 120];
    let mut put = |o: usize, v: u64| b[o..o + 8].copy_from_slice(&v.to_le_bytes());
    put(56, dev);
    put(64, 255);
    if let Some(m) = mount::by_dev(dev) {
        let st = m.statfs();
        put(0, st.magic);
        put(8, st.bsize);
        put(16, st.blocks);
        put(24, st.bfree);
        put(32, st.bavail);
        put(40, st.files);
        put(48, st.ffree);
        put(72, st.bsize);
        put(80, if m.writable() { 0 } else { ST_RDONLY });
    } else {
        put(
            0,
            if dev == 4 {
                PROC_SUPER_MAGIC
            } else {
                mount::TMPFS_MAGIC
            },
        );
        put(8, 4096);
        put(72, 4096);
    }
    Ok(b)
}

pub fn sys_statfs(path: u64, buf: u64) -> SysResult {
    let path = user_path(AT_FDCWD, path)?;
    let dev = fs::open(&path, fs::O_NOCTTY, 0)?.ops.stat().dev;
    copy_to_user(buf, &statfs_bytes(dev)?).map(|_| 0)
}

pub fn sys_fstatfs(fd: i64, buf: u64) -> SysResult {
    let dev = file(fd)?.ops.stat().dev;
    copy_to_user(buf, &statfs_bytes(dev)?).map(|_| 0)
}
