//! System calls that change the filesystem: mkdir, mkdirat, rmdir, unlink, unlinkat, rename,
//! renameat, renameat2, link, linkat, symlink, symlinkat, chmod, fchmod, fchmodat, chown, fchown,
//! lchown, fchownat, utimensat, truncate, umask, sync, syncfs, statfs, fstatfs.
//!
//! Paths are made absolute as in `path.rs`; the root filesystem does the work (`kcore::ext2`), and
//! its errors become Linux's (EROFS on a read-only mount, ENOSPC, EEXIST, ENOTEMPTY, EISDIR, ENOTDIR,
//! ENAMETOOLONG, EMLINK, ELOOP; EIO and a log line for corruption).
#![deny(unsafe_code)]

use super::file::{check_user, copy_to_user, file, user_cstr};
use super::path::{absolute, AT_FDCWD};
use super::SysResult;
use crate::fs::{self, ext2file::Ext2File, now, parent_of, with_root};
use crate::proc::with_current;
use alloc::vec::Vec;
use kcore::errno::Errno;
use kcore::ext2::Inode;

const AT_SYMLINK_NOFOLLOW: u32 = 0x100;
const AT_REMOVEDIR: u32 = 0x200;
const AT_SYMLINK_FOLLOW: u32 = 0x400;
const AT_EMPTY_PATH: u32 = 0x1000;
const RENAME_NOREPLACE: u32 = 1;

/// `path` (a user string) made absolute against `dirfd`.
fn user_path(dirfd: i64, path: u64) -> Result<Vec<u8>, Errno> {
    absolute(dirfd, user_cstr(path)?)
}

/// The inode at `path` (`follow`: through a final symlink). EPERM for a path the VFS serves from
/// elsewhere (/proc, device nodes).
fn inode_at(path: &[u8], follow: bool) -> Result<Inode, Errno> {
    if fs::lstat(path)?.dev != fs::ext2file::ROOT_DEV as u64 {
        return Err(Errno::EPERM);
    }
    with_root(|fs| fs.resolve(path, follow))
}

/// The root filesystem inode behind descriptor `fd` (EPERM for other files).
fn inode_of_fd(fd: i64) -> Result<Inode, Errno> {
    let f = file(fd)?;
    f.downcast::<Ext2File>().ok_or(Errno::EPERM)?.inode()
}

pub fn sys_mkdirat(dirfd: i64, path: u64, mode: u32) -> SysResult {
    let path = user_path(dirfd, path)?;
    let (mut dir, name) = parent_of(&path)?;
    let perm = (mode & 0o7777 & !with_current(|p| p.cwd.umask())) as u16;
    let now = now();
    with_root(|fs| fs.mkdir(&mut dir, name, perm, now)).map(|_| 0)
}

pub fn sys_unlinkat(dirfd: i64, path: u64, flags: u32) -> SysResult {
    if flags & !AT_REMOVEDIR != 0 {
        return Err(Errno::EINVAL);
    }
    let path = user_path(dirfd, path)?;
    let (mut dir, name) = parent_of(&path)?;
    let now = now();
    if flags & AT_REMOVEDIR != 0 {
        if name == b"." {
            return Err(Errno::EINVAL);
        }
        with_root(|fs| fs.rmdir(&mut dir, name, now)).map(|_| 0)
    } else {
        with_root(|fs| fs.unlink(&mut dir, name, now)).map(|_| 0)
    }
}

pub fn sys_renameat2(olddir: i64, old: u64, newdir: i64, new: u64, flags: u32) -> SysResult {
    if flags & !RENAME_NOREPLACE != 0 {
        // RENAME_EXCHANGE and RENAME_WHITEOUT are not supported.
        return Err(Errno::EINVAL);
    }
    let old = user_path(olddir, old)?;
    let new = user_path(newdir, new)?;
    let (mut odir, oname) = parent_of(&old)?;
    let (mut ndir, nname) = parent_of(&new)?;
    let now = now();
    let noreplace = flags & RENAME_NOREPLACE != 0;
    with_root(|fs| {
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
    let mut target = if oldp.is_empty() && flags & AT_EMPTY_PATH != 0 {
        inode_of_fd(olddir)?
    } else {
        inode_at(&absolute(olddir, oldp)?, flags & AT_SYMLINK_FOLLOW != 0)?
    };
    let new = user_path(newdir, new)?;
    let (mut dir, name) = parent_of(&new)?;
    let now = now();
    with_root(|fs| fs.link(&mut target, &mut dir, name, now)).map(|_| 0)
}

pub fn sys_symlinkat(target: u64, newdir: i64, linkpath: u64) -> SysResult {
    let target = user_cstr(target)?;
    let path = user_path(newdir, linkpath)?;
    let (mut dir, name) = parent_of(&path)?;
    let now = now();
    with_root(|fs| fs.symlink(&mut dir, name, &target, now)).map(|_| 0)
}

/// chmod, fchmod, fchmodat: the permission bits (and setuid/setgid/sticky).
pub fn sys_fchmodat(dirfd: i64, path: u64, mode: u32) -> SysResult {
    let mut inode = inode_at(&user_path(dirfd, path)?, true)?;
    set_attr(&mut inode, Some(mode as u16), (None, None), (None, None))
}

pub fn sys_fchmod(fd: i64, mode: u32) -> SysResult {
    let mut inode = inode_of_fd(fd)?;
    set_attr(&mut inode, Some(mode as u16), (None, None), (None, None))
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
    let mut inode = if p.is_empty() && flags & AT_EMPTY_PATH != 0 {
        inode_of_fd(dirfd)?
    } else {
        inode_at(&absolute(dirfd, p)?, flags & AT_SYMLINK_NOFOLLOW == 0)?
    };
    set_attr(&mut inode, None, (id(uid)?, id(gid)?), (None, None))
}

pub fn sys_fchown(fd: i64, uid: u32, gid: u32) -> SysResult {
    let mut inode = inode_of_fd(fd)?;
    set_attr(&mut inode, None, (id(uid)?, id(gid)?), (None, None))
}

fn set_attr(
    inode: &mut Inode,
    perm: Option<u16>,
    owner: (Option<u16>, Option<u16>),
    times: (Option<u32>, Option<u32>),
) -> SysResult {
    let now = now();
    with_root(|fs| fs.set_attr(inode, perm, owner, times, now)).map(|_| 0)
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
        check_user(times, 32, false)?;
        let b = super::file::uaccess_slice(times, 32);
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
    let mut inode = if path == 0 {
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
    set_attr(&mut inode, None, (None, None), (atime, mtime))
}

/// truncate(path, len).
pub fn sys_truncate(path: u64, len: i64) -> SysResult {
    if len < 0 {
        return Err(Errno::EINVAL);
    }
    let mut inode = inode_at(&user_path(AT_FDCWD, path)?, true)?;
    if inode.is_dir() {
        return Err(Errno::EISDIR);
    }
    if !inode.is_reg() {
        return Err(Errno::EINVAL);
    }
    let now = now();
    with_root(|fs| fs.truncate(&mut inode, len as u64, now)).map(|_| 0)
}

pub fn sys_umask(mask: u32) -> SysResult {
    Ok(with_current(|p| p.cwd.set_umask(mask)) as u64)
}

/// sync and syncfs: everything written through is made durable.
pub fn sys_sync() -> SysResult {
    fs::sync_all().map(|_| 0)
}

pub fn sys_syncfs(fd: i64) -> SysResult {
    file(fd)?;
    fs::sync_all().map(|_| 0)
}

const EXT2_SUPER_MAGIC: u64 = 0xef53;
const PROC_SUPER_MAGIC: u64 = 0x9fa0;
const TMPFS_MAGIC: u64 = 0x0102_1994;
const ST_RDONLY: u64 = 1;

/// The 120-byte `struct statfs` of the filesystem holding a file with device number `dev`.
fn statfs_bytes(dev: u64) -> Result<[u8; 120], Errno> {
    let mut b = [0u8; 120];
    let mut put = |o: usize, v: u64| b[o..o + 8].copy_from_slice(&v.to_le_bytes());
    if dev == fs::ext2file::ROOT_DEV as u64 {
        let (blocks, free, avail, files, ffree, bsize) = with_root(|fs| Ok(fs.statfs()))?;
        put(0, EXT2_SUPER_MAGIC);
        put(8, bsize);
        put(16, blocks);
        put(24, free);
        put(32, avail);
        put(40, files);
        put(48, ffree);
        put(56, dev);
        put(64, 255);
        put(72, bsize);
        put(80, if fs::root_writable() { 0 } else { ST_RDONLY });
    } else {
        put(
            0,
            if dev == 4 {
                PROC_SUPER_MAGIC
            } else {
                TMPFS_MAGIC
            },
        );
        put(8, 4096);
        put(56, dev);
        put(64, 255);
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
