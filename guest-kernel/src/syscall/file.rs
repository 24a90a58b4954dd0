//! File system calls: read, write, open, openat, close, fstat, stat, newfstatat, lseek, readv, writev,
//! ioctl, poll, access, getcwd, readlink.
#![deny(unsafe_code)]

use super::SysResult;
use crate::fs::{self, FileRef};
use crate::mm::uaccess;
use crate::proc::with_current;
use alloc::vec::Vec;
use kcore::errno::Errno;

const AT_FDCWD: i64 = -100;
const AT_EMPTY_PATH: u32 = 0x1000;
const AT_SYMLINK_NOFOLLOW: u32 = 0x100;
const PATH_MAX: usize = 4096;

/// Checks a user range in the current process, faulting in anonymous pages.
pub fn check_user(va: u64, len: u64, write: bool) -> Result<(), Errno> {
    with_current(|p| {
        let (aspace, vmas) = (&mut p.aspace, &p.vmas);
        uaccess::check(aspace, va, len, write, |aspace, page| {
            let Some(v) = vmas.iter().find(|v| v.start <= page && page < v.end) else {
                return false;
            };
            v.kind == crate::proc::VmaKind::Anonymous
                && crate::mm::user::map_zero_page(
                    aspace,
                    page,
                    crate::mm::paging::user_flags(v.writable, v.executable),
                )
                .is_ok()
        })
    })
}

/// Copies a NUL-terminated string (at most PATH_MAX bytes) from user memory.
pub fn user_cstr(va: u64) -> Result<Vec<u8>, Errno> {
    let mut out = Vec::new();
    let mut page_checked = 0u64;
    loop {
        let a = va + out.len() as u64;
        if a & !0xfff != page_checked {
            check_user(a, 1, false)?;
            page_checked = a & !0xfff;
        }
        let chunk_end = (a | 0xfff) + 1;
        let bytes = uaccess_slice(a, chunk_end - a);
        match bytes.iter().position(|&b| b == 0) {
            Some(n) => {
                out.extend_from_slice(&bytes[..n]);
                return Ok(out);
            }
            None => out.extend_from_slice(bytes),
        }
        if out.len() > PATH_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
    }
}

fn uaccess_slice(va: u64, len: u64) -> &'static [u8] {
    crate::mm::uaccess::checked_slice(va, len as usize)
}

/// Writes `bytes` to user memory at `va`.
pub fn copy_to_user(va: u64, bytes: &[u8]) -> Result<(), Errno> {
    check_user(va, bytes.len() as u64, true)?;
    crate::mm::uaccess::checked_slice_mut(va, bytes.len()).copy_from_slice(bytes);
    Ok(())
}

fn file(fd: i64) -> Result<FileRef, Errno> {
    with_current(|p| p.fds.get(fd))
}

pub fn sys_read(fd: i64, buf: u64, len: u64) -> SysResult {
    let f = file(fd)?;
    if f.borrow().flags & fs::O_ACCMODE == fs::O_WRONLY {
        return Err(Errno::EBADF);
    }
    check_user(buf, len, true)?;
    let dst = crate::mm::uaccess::checked_slice_mut(buf, len as usize);
    let n = fs::read(&mut f.borrow_mut(), dst)?;
    Ok(n as u64)
}

pub fn sys_write(fd: i64, buf: u64, len: u64) -> SysResult {
    let f = file(fd)?;
    check_user(buf, len, false)?;
    let src = uaccess_slice(buf, len);
    let n = fs::write(&mut f.borrow_mut(), src)?;
    Ok(n as u64)
}

fn iovecs(iov: u64, cnt: u64) -> Result<Vec<(u64, u64)>, Errno> {
    if cnt > 1024 {
        return Err(Errno::EINVAL);
    }
    check_user(iov, cnt * 16, false)?;
    let raw = uaccess_slice(iov, cnt * 16);
    Ok(raw
        .chunks_exact(16)
        .map(|c| {
            let mut a = [0u8; 8];
            let mut b = [0u8; 8];
            a.copy_from_slice(&c[..8]);
            b.copy_from_slice(&c[8..]);
            (u64::from_le_bytes(a), u64::from_le_bytes(b))
        })
        .collect())
}

pub fn sys_readv(fd: i64, iov: u64, cnt: u64) -> SysResult {
    let mut total = 0;
    for (base, len) in iovecs(iov, cnt)? {
        let n = sys_read(fd, base, len)?;
        total += n;
        if n < len {
            break;
        }
    }
    Ok(total)
}

pub fn sys_writev(fd: i64, iov: u64, cnt: u64) -> SysResult {
    let mut total = 0;
    for (base, len) in iovecs(iov, cnt)? {
        total += sys_write(fd, base, len)?;
    }
    Ok(total)
}

fn absolute(dirfd: i64, path: Vec<u8>) -> Result<Vec<u8>, Errno> {
    if path.first() == Some(&b'/') {
        return Ok(path);
    }
    if dirfd != AT_FDCWD {
        // Directory descriptors come with getdents (processes issue); only cwd-relative for now.
        return Err(Errno::ENOSYS);
    }
    let mut abs = with_current(|p| p.cwd.clone());
    if abs.last() != Some(&b'/') {
        abs.push(b'/');
    }
    abs.extend_from_slice(&path);
    Ok(abs)
}

pub fn sys_openat(dirfd: i64, path: u64, flags: u32, _mode: u32) -> SysResult {
    let path = absolute(dirfd, user_cstr(path)?)?;
    if path.is_empty() {
        return Err(Errno::ENOENT);
    }
    let f = fs::open(&path, flags)?;
    let fd = with_current(|p| p.fds.insert(f, flags & fs::O_CLOEXEC != 0))?;
    Ok(fd as u64)
}

pub fn sys_open(path: u64, flags: u32, mode: u32) -> SysResult {
    sys_openat(AT_FDCWD, path, flags, mode)
}

pub fn sys_close(fd: i64) -> SysResult {
    with_current(|p| p.fds.close(fd)).map(|_| 0)
}

pub fn sys_fstat(fd: i64, statbuf: u64) -> SysResult {
    let st = fs::stat(&file(fd)?.borrow());
    copy_to_user(statbuf, &st.to_bytes()).map(|_| 0)
}

fn stat_path(path: Vec<u8>, statbuf: u64, nofollow: bool) -> SysResult {
    let f = fs::open(&path, if nofollow { fs::O_NOFOLLOW } else { 0 });
    let st = match f {
        Ok(f) => fs::stat(&f.borrow()),
        Err(Errno::ELOOP) if nofollow => {
            let inode = fs::with_root(|fs| fs.resolve(&path, false))?;
            fs::stat(&fs::OpenFile {
                kind: fs::FileKind::Ext2(inode),
                offset: 0,
                flags: 0,
            })
        }
        Err(e) => return Err(e),
    };
    copy_to_user(statbuf, &st.to_bytes()).map(|_| 0)
}

pub fn sys_stat(path: u64, statbuf: u64, nofollow: bool) -> SysResult {
    stat_path(absolute(AT_FDCWD, user_cstr(path)?)?, statbuf, nofollow)
}

pub fn sys_newfstatat(dirfd: i64, path: u64, statbuf: u64, flags: u32) -> SysResult {
    let p = user_cstr(path)?;
    if p.is_empty() && flags & AT_EMPTY_PATH != 0 {
        return sys_fstat(dirfd, statbuf);
    }
    stat_path(
        absolute(dirfd, p)?,
        statbuf,
        flags & AT_SYMLINK_NOFOLLOW != 0,
    )
}

pub fn sys_lseek(fd: i64, offset: i64, whence: u32) -> SysResult {
    fs::lseek(&mut file(fd)?.borrow_mut(), offset, whence)
}

pub fn sys_ioctl(fd: i64, _cmd: u32, _arg: u64) -> SysResult {
    file(fd)?;
    // Terminal ioctls come with the tty (processes issue).
    Err(Errno::ENOTTY)
}

/// poll: every descriptor is reported as ready for what it asked (console and files never block
/// writes; reads of an idle console would, which nothing needs yet).
pub fn sys_poll(fds: u64, nfds: u64, _timeout: i64) -> SysResult {
    if nfds > 1024 {
        return Err(Errno::EINVAL);
    }
    check_user(fds, nfds * 8, true)?;
    let raw = crate::mm::uaccess::checked_slice_mut(fds, (nfds * 8) as usize);
    let mut ready = 0;
    for e in raw.chunks_exact_mut(8) {
        let fd = i32::from_le_bytes([e[0], e[1], e[2], e[3]]) as i64;
        let events = u16::from_le_bytes([e[4], e[5]]);
        let revents: u16 = if fd < 0 {
            0
        } else if file(fd).is_err() {
            0x20 // POLLNVAL
        } else {
            events & 0x4 // POLLOUT
        };
        e[6..8].copy_from_slice(&revents.to_le_bytes());
        if revents != 0 {
            ready += 1;
        }
    }
    Ok(ready)
}

pub fn sys_access(path: u64, _mode: u32) -> SysResult {
    let path = absolute(AT_FDCWD, user_cstr(path)?)?;
    fs::open(&path, 0).map(|_| 0)
}

pub fn sys_getcwd(buf: u64, size: u64) -> SysResult {
    let mut cwd = with_current(|p| p.cwd.clone());
    cwd.push(0);
    if (cwd.len() as u64) > size {
        return Err(Errno::ERANGE);
    }
    copy_to_user(buf, &cwd)?;
    Ok(cwd.len() as u64)
}

pub fn sys_readlink(path: u64, buf: u64, size: u64) -> SysResult {
    let path = absolute(AT_FDCWD, user_cstr(path)?)?;
    let inode = fs::with_root(|fs| fs.resolve(&path, false))?;
    if !inode.is_symlink() {
        return Err(Errno::EINVAL);
    }
    let target = fs::with_root(|fs| fs.read_link(&inode))?;
    let n = target.len().min(size as usize);
    copy_to_user(buf, &target[..n])?;
    Ok(n as u64)
}
