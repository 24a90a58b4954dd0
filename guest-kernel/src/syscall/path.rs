//! System calls that name files by path: open, openat, stat, lstat, newfstatat, statx, access,
//! faccessat, faccessat2, readlink, readlinkat, chdir, fchdir, getcwd.
//!
//! A relative path is taken from the working directory (`AT_FDCWD`, the process's `FsContext`, shared
//! by CLONE_FS threads) or from a directory descriptor (the `*at` calls). On a mounted filesystem
//! both are the directory itself (an open `Ext2File`): the path becomes an `fs::Path` that starts
//! at that directory (`fs::path::Start::Dir`) and the VFS resolves from its inode, so relative paths
//! keep working after the directory is renamed or moved, `..` is its real parent, and getcwd reports
//! where it is now (`fs::mount::path_of`), as on Linux. Elsewhere (/proc) they are path text,
//! normalized (`.` and `..` taken away textually).
#![deny(unsafe_code)]

use super::file::{copy_to_user, file, user_cstr};
use super::SysResult;
use crate::fs::cwd::Cwd;
use crate::fs::ext2file::Ext2File;
use crate::fs::file::FileOps;
use crate::fs::{self, Path, Stat};
use crate::proc::with_current;
use alloc::rc::Rc;
use alloc::vec::Vec;
use kcore::errno::Errno;

pub const AT_FDCWD: i64 = -100;
const AT_SYMLINK_NOFOLLOW: u32 = 0x100;
const AT_EACCESS: u32 = 0x200;
const AT_NO_AUTOMOUNT: u32 = 0x800;
const AT_EMPTY_PATH: u32 = 0x1000;
const AT_STATX_SYNC_TYPE: u32 = 0x6000;
/// Longest name of one path component.
const NAME_MAX: usize = 255;

/// `path` made absolute against the working directory.
pub fn absolute_path(path: Vec<u8>) -> Result<Path, Errno> {
    absolute(AT_FDCWD, path)
}

/// `path` made absolute against `dirfd` (AT_FDCWD: the working directory). ENOENT for an empty path,
/// ENAMETOOLONG for a component longer than NAME_MAX, EBADF/ENOTDIR for a bad `dirfd`.
pub fn absolute(dirfd: i64, path: Vec<u8>) -> Result<Path, Errno> {
    if path.is_empty() {
        return Err(Errno::ENOENT);
    }
    if path.split(|&c| c == b'/').any(|c| c.len() > NAME_MAX) {
        return Err(Errno::ENAMETOOLONG);
    }
    if path[0] == b'/' {
        return Ok(Path::absolute(path));
    }
    // The directory it is relative to: its path text, and the directory itself when it is on a
    // mounted filesystem.
    let (text, dir) = if dirfd == AT_FDCWD {
        let c = with_current(|p| p.cwd.get());
        (c.text, c.dir)
    } else {
        let f = file(dirfd)?;
        if !f.ops.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let text = f
            .path
            .as_deref()
            .map(<[u8]>::to_vec)
            .ok_or(Errno::ENOTDIR)?;
        (text, Some(f.ops.clone()))
    };
    if let Some(d) = dir.as_deref().and_then(as_mounted_dir) {
        // Resolved from the directory's inode, wherever it has been renamed or moved.
        return Ok(Path::in_dir(d.mount(), d.ino(), &text, &path));
    }
    let mut abs = text;
    if abs.last() != Some(&b'/') {
        abs.push(b'/');
    }
    abs.extend_from_slice(&path);
    Ok(Path::absolute(abs))
}

/// The directory of a mounted filesystem an open file is, if it is one.
fn as_mounted_dir(ops: &dyn FileOps) -> Option<&Ext2File> {
    ops.as_any()
        .downcast_ref::<Ext2File>()
        .filter(|_| ops.is_dir())
}

/// Makes the directory `ops`, entered by the (absolute) path `text`, the working directory. Its text
/// is the canonical path, the symbolic links on the way resolved, as Linux's getcwd gives it (`cd
/// /proc/self` is in /proc/PID; resolved here, before the process table is borrowed: /proc's links
/// read it); the normalized text when that fails.
fn enter(text: &[u8], ops: &Rc<dyn FileOps>) {
    let dir = as_mounted_dir(&**ops).is_some().then(|| ops.clone());
    let text = fs::canonical(text).unwrap_or_else(|_| normalize(text));
    with_current(|p| p.cwd.set_cwd(Cwd { text, dir }));
}

/// `path` with `.`, `..` and repeated slashes taken away (absolute in, absolute out).
fn normalize(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in path.split(|&c| c == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for p in &parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

pub fn sys_openat(dirfd: i64, path: u64, flags: u32, mode: u32) -> SysResult {
    let path = absolute(dirfd, user_cstr(path)?)?;
    let mode = mode & !with_current(|p| p.cwd.umask());
    let f = fs::open(&path, flags, mode)?;
    let fd = with_current(|p| p.fds.insert(f, flags & fs::O_CLOEXEC != 0))?;
    Ok(fd as u64)
}

pub fn sys_open(path: u64, flags: u32, mode: u32) -> SysResult {
    sys_openat(AT_FDCWD, path, flags, mode)
}

/// The stat of `path`, following a final symlink unless `nofollow`.
fn stat_of(path: &Path, nofollow: bool) -> Result<Stat, Errno> {
    if nofollow {
        fs::lstat(path)
    } else {
        fs::stat(path)
    }
}

/// The stat for the `*at` calls: `dirfd` itself with AT_EMPTY_PATH and an empty path.
fn stat_at(dirfd: i64, path: u64, flags: u32) -> Result<Stat, Errno> {
    let p = user_cstr(path)?;
    if p.is_empty() && flags & AT_EMPTY_PATH != 0 {
        if dirfd == AT_FDCWD {
            let c = with_current(|p| p.cwd.get());
            return match c.dir {
                Some(d) => Ok(d.stat()),
                None => stat_of(&Path::absolute(c.text), false),
            };
        }
        return Ok(file(dirfd)?.ops.stat());
    }
    stat_of(&absolute(dirfd, p)?, flags & AT_SYMLINK_NOFOLLOW != 0)
}

pub fn sys_stat(path: u64, statbuf: u64, nofollow: bool) -> SysResult {
    let st = stat_of(&absolute(AT_FDCWD, user_cstr(path)?)?, nofollow)?;
    copy_to_user(statbuf, &st.to_bytes()).map(|_| 0)
}

pub fn sys_newfstatat(dirfd: i64, path: u64, statbuf: u64, flags: u32) -> SysResult {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT) != 0 {
        return Err(Errno::EINVAL);
    }
    let st = stat_at(dirfd, path, flags)?;
    copy_to_user(statbuf, &st.to_bytes()).map(|_| 0)
}

/// STATX_BASIC_STATS: type, mode, nlink, uid, gid, atime, mtime, ctime, ino, size, blocks.
const STATX_BASIC_STATS: u32 = 0x7ff;

/// The 256-byte `struct statx` of `st`.
fn statx_bytes(st: &Stat) -> [u8; 256] {
    let mut b = [0u8; 256];
    let put32 = |b: &mut [u8; 256], o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_le_bytes());
    let put64 = |b: &mut [u8; 256], o: usize, v: u64| b[o..o + 8].copy_from_slice(&v.to_le_bytes());
    put32(&mut b, 0, STATX_BASIC_STATS);
    put32(&mut b, 4, st.blksize as u32);
    put32(&mut b, 16, st.nlink as u32);
    put32(&mut b, 20, st.uid);
    put32(&mut b, 24, st.gid);
    b[28..30].copy_from_slice(&(st.mode as u16).to_le_bytes());
    put64(&mut b, 32, st.ino);
    put64(&mut b, 40, st.size as u64);
    put64(&mut b, 48, st.blocks as u64);
    put64(&mut b, 64, st.atime as u64);
    put64(&mut b, 96, st.ctime as u64);
    put64(&mut b, 112, st.mtime as u64);
    // Linux's (major, minor) from the old 16-bit encoding this kernel's numbers use.
    put32(&mut b, 128, ((st.rdev >> 8) & 0xfff) as u32);
    put32(&mut b, 132, (st.rdev & 0xff) as u32);
    put32(&mut b, 136, ((st.dev >> 8) & 0xfff) as u32);
    put32(&mut b, 140, (st.dev & 0xff) as u32);
    b
}

/// statx: the basic stats (the mask asked for is not needed: they are all there).
pub fn sys_statx(dirfd: i64, path: u64, flags: u32, _mask: u32, buf: u64) -> SysResult {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT | AT_STATX_SYNC_TYPE) != 0
        || flags & AT_STATX_SYNC_TYPE == AT_STATX_SYNC_TYPE
    {
        return Err(Errno::EINVAL);
    }
    let st = stat_at(dirfd, path, flags)?;
    copy_to_user(buf, &statx_bytes(&st)).map(|_| 0)
}

const F_OK: u32 = 0;
const R_OK: u32 = 4;
const W_OK: u32 = 2;
const X_OK: u32 = 1;

/// access, faccessat, faccessat2: everyone is root, so what exists may be read and written (unless the
/// filesystem is read-only: EROFS for W_OK) and executed if any execute bit is set (or a directory).
pub fn sys_faccessat(dirfd: i64, path: u64, mode: u32, flags: u32) -> SysResult {
    if mode & !(F_OK | R_OK | W_OK | X_OK) != 0
        || flags & !(AT_EACCESS | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0
    {
        return Err(Errno::EINVAL);
    }
    let st = stat_at(dirfd, path, flags)?;
    if mode & X_OK != 0 && st.mode & 0o170000 != 0o040000 && st.mode & 0o111 == 0 {
        return Err(Errno::EACCES);
    }
    if mode & W_OK != 0 && fs::mount::by_dev(st.dev).is_some_and(|m| !m.writable()) {
        return Err(Errno::EROFS);
    }
    Ok(0)
}

pub fn sys_access(path: u64, mode: u32) -> SysResult {
    sys_faccessat(AT_FDCWD, path, mode, 0)
}

pub fn sys_chdir(path: u64) -> SysResult {
    let path = absolute(AT_FDCWD, user_cstr(path)?)?;
    let dir = fs::open(&path, fs::O_DIRECTORY, 0)?;
    enter(path.text(), &dir.ops);
    Ok(0)
}

pub fn sys_fchdir(fd: i64) -> SysResult {
    let f = file(fd)?;
    if !f.ops.is_dir() {
        return Err(Errno::ENOTDIR);
    }
    let text = f.path.as_deref().ok_or(Errno::ENOTDIR)?;
    enter(text, &f.ops);
    Ok(0)
}

/// The working directory's path: on a mounted filesystem found from the directory itself (its
/// text while that still names it), so a renamed or moved working directory reports where it is
/// now, and one that was removed is ENOENT, as on Linux.
pub fn sys_getcwd(buf: u64, size: u64) -> SysResult {
    let c = with_current(|p| p.cwd.get());
    let mut cwd = match c.dir.as_deref().and_then(as_mounted_dir) {
        Some(d) => fs::mount::path_of(d.mount(), d.ino(), &c.text)?,
        None => c.text,
    };
    cwd.push(0);
    if (cwd.len() as u64) > size {
        return Err(Errno::ERANGE);
    }
    copy_to_user(buf, &cwd)?;
    Ok(cwd.len() as u64)
}

pub fn sys_readlinkat(dirfd: i64, path: u64, buf: u64, size: u64) -> SysResult {
    if (size as i64) <= 0 {
        return Err(Errno::EINVAL);
    }
    let path = absolute(dirfd, user_cstr(path)?)?;
    let target = match fs::proc::readlink(path.text()) {
        Some(t) => t?,
        None => fs::read_link(&path)?,
    };
    let n = target.len().min(size as usize);
    copy_to_user(buf, &target[..n])?;
    Ok(n as u64)
}

pub fn sys_readlink(path: u64, buf: u64, size: u64) -> SysResult {
    sys_readlinkat(AT_FDCWD, path, buf, size)
}
