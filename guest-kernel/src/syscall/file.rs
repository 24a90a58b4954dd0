//! File system calls: read, write, open, openat, close, fstat, stat, newfstatat, lseek, readv, writev,
//! ioctl, access, getcwd, readlink (poll and select: `poll.rs`; sockets: `net.rs`).
#![deny(unsafe_code)]

use super::SysResult;
use crate::fs::{self, FileRef};
use crate::mm::uaccess;
use crate::proc::{resolve_fault, with_current, with_mm, Access};
use alloc::vec::Vec;
use kcore::errno::Errno;

const AT_FDCWD: i64 = -100;
const AT_EMPTY_PATH: u32 = 0x1000;
const AT_SYMLINK_NOFOLLOW: u32 = 0x100;
const PATH_MAX: usize = 4096;

/// Checks a user range in the current process, faulting pages in as its areas allow.
pub fn check_user(va: u64, len: u64, write: bool) -> Result<(), Errno> {
    let access = if write { Access::Write } else { Access::Read };
    with_mm(|mm| {
        let (aspace, vmas) = (&mut mm.aspace, &mm.vmas);
        uaccess::check(aspace, va, len, write, |aspace, page| {
            resolve_fault(aspace, vmas, page, access).is_ok()
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

/// A zeroed kernel buffer of `len` bytes, or ENOMEM if the heap cannot spare it.
fn bounce(len: usize) -> Result<alloc::boxed::Box<[u8]>, Errno> {
    crate::mm::heap::try_zeroed_bytes(len).ok_or(Errno::ENOMEM)
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
    if let Some((s, nonblock)) = fs::socket(&f) {
        return crate::net::socket::recv(&s, buf, len as usize, nonblock, false)
            .map(|(n, _)| n as u64);
    }
    if let Some(b) = fs::blocking(&f) {
        if let fs::Blocking::Pipe(p, nonblock) = &b {
            // Straight from the pipe's ring into user memory, checked just before the copy.
            return fs::pipe::read_with(p, len as usize, *nonblock, |at, bytes| {
                copy_to_user(buf + at as u64, bytes)
            })
            .map(|n| n as u64);
        }
        // Bounce through a kernel buffer: the user pages may change while this process sleeps.
        let mut tmp = bounce((len as usize).min(fs::pipe::PIPE_BUF_SIZE))?;
        let n = fs::read_blocking(&b, &mut tmp)?;
        copy_to_user(buf, &tmp[..n])?;
        return Ok(n as u64);
    }
    let dst = crate::mm::uaccess::checked_slice_mut(buf, len as usize);
    let n = fs::read(&mut f.borrow_mut(), dst)?;
    Ok(n as u64)
}

/// pread64: a read at `offset`, leaving the file's offset as it was. ESPIPE for pipes, sockets and
/// the console, EINVAL for a negative offset.
pub fn sys_pread64(fd: i64, buf: u64, len: u64, offset: i64) -> SysResult {
    let f = file(fd)?;
    if f.borrow().flags & fs::O_ACCMODE == fs::O_WRONLY {
        return Err(Errno::EBADF);
    }
    if matches!(
        f.borrow().kind,
        fs::FileKind::Pipe(_) | fs::FileKind::Socket(_) | fs::FileKind::Console
    ) {
        return Err(Errno::ESPIPE);
    }
    if offset < 0 {
        return Err(Errno::EINVAL);
    }
    check_user(buf, len, true)?;
    let dst = crate::mm::uaccess::checked_slice_mut(buf, len as usize);
    let mut of = f.borrow_mut();
    let saved = core::mem::replace(&mut of.offset, offset as u64);
    let r = fs::read(&mut of, dst);
    of.offset = saved;
    r.map(|n| n as u64)
}

/// pwrite64: as write (nothing on the root filesystem is writable), ESPIPE where pread64 has it.
pub fn sys_pwrite64(fd: i64, buf: u64, len: u64, offset: i64) -> SysResult {
    let f = file(fd)?;
    if matches!(
        f.borrow().kind,
        fs::FileKind::Pipe(_) | fs::FileKind::Socket(_) | fs::FileKind::Console
    ) {
        return Err(Errno::ESPIPE);
    }
    if offset < 0 {
        return Err(Errno::EINVAL);
    }
    sys_write(fd, buf, len)
}

pub fn sys_write(fd: i64, buf: u64, len: u64) -> SysResult {
    let f = file(fd)?;
    if f.borrow().flags & fs::O_ACCMODE == 0
        && !matches!(f.borrow().kind, fs::FileKind::Console | fs::FileKind::Null)
    {
        return Err(Errno::EBADF);
    }
    check_user(buf, len, false)?;
    if let Some((s, nonblock)) = fs::socket(&f) {
        let res = crate::net::socket::send(&s, buf, len as usize, None, nonblock);
        return super::net::sigpipe(res, false).map(|n| n as u64);
    }
    if let Some(b) = fs::blocking(&f) {
        if let fs::Blocking::Pipe(p, nonblock) = &b {
            // At most the pipe's capacity at a time, straight from user memory into the ring (the
            // range is checked again before each copy: the process may have slept in between).
            let res = fs::pipe::write_with(p, len as usize, *nonblock, |at, dst| {
                let va = buf + at as u64;
                check_user(va, dst.len() as u64, false)?;
                dst.copy_from_slice(uaccess_slice(va, dst.len() as u64));
                Ok(())
            });
            // No reader left (EPIPE, or a write cut short by it): SIGPIPE, as Linux's pipe_write.
            if res.is_err_and(|e| e == Errno::EPIPE)
                || res.is_ok_and(|n| (n as u64) < len && p.borrow().readers() == 0)
            {
                crate::proc::signal::send_kernel(
                    crate::proc::current_pid(),
                    crate::proc::signal::SIGPIPE,
                );
            }
            return res.map(|n| n as u64);
        }
        // The console: through a bounded kernel buffer, a piece at a time.
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(fs::pipe::PIPE_BUF_SIZE as u64);
            let step = check_user(buf + done, n, false).and_then(|_| {
                let mut tmp = Vec::new();
                tmp.try_reserve_exact(n as usize)
                    .map_err(|_| Errno::ENOMEM)?;
                tmp.extend_from_slice(uaccess_slice(buf + done, n));
                fs::write_blocking(&b, &tmp)
            });
            match step {
                Ok(w) => {
                    done += w as u64;
                    if (w as u64) < n {
                        break;
                    }
                }
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            }
        }
        return Ok(done);
    }
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

/// `path` made absolute against the cwd.
pub fn absolute_path(path: Vec<u8>) -> Result<Vec<u8>, Errno> {
    absolute(AT_FDCWD, path)
}

fn absolute(dirfd: i64, path: Vec<u8>) -> Result<Vec<u8>, Errno> {
    if path.first() == Some(&b'/') {
        return Ok(path);
    }
    if dirfd != AT_FDCWD {
        // Relative to a directory descriptor: not supported yet; only cwd-relative.
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
    // /dev/tty is the caller's controlling terminal: without one, ENXIO.
    if path == b"/dev/tty" && !crate::tty::has_ctty() {
        return Err(Errno::ENXIO);
    }
    let f = fs::open(&path, flags)?;
    let fd = with_current(|p| p.fds.insert(f, flags & fs::O_CLOEXEC != 0))?;
    // The console opened by its tty name (not /dev/console, /dev/tty) without O_NOCTTY may become
    // a session leader's controlling terminal.
    if path == b"/dev/ttyS0" && flags & fs::O_NOCTTY == 0 {
        crate::tty::open_acquire(flags & fs::O_ACCMODE != fs::O_WRONLY);
    }
    Ok(fd as u64)
}

pub fn sys_open(path: u64, flags: u32, mode: u32) -> SysResult {
    sys_openat(AT_FDCWD, path, flags, mode)
}

pub fn sys_close(fd: i64) -> SysResult {
    let f = file(fd)?;
    with_current(|p| p.fds.close(fd))?;
    // POSIX: closing any descriptor of a file drops the process's record locks on it.
    let st = fs::stat(&f.borrow());
    fs::lock::closed(
        fs::lock::file_key(st.dev, st.ino),
        with_current(|p| p.tgid.0),
    );
    Ok(0)
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
                path: None,
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

pub fn sys_pipe2(fds: u64, flags: u32) -> SysResult {
    if flags & !(fs::O_CLOEXEC | fs::O_NONBLOCK) != 0 {
        return Err(Errno::EINVAL);
    }
    check_user(fds, 8, true)?;
    let (r, w) = fs::pipe(flags);
    let cloexec = flags & fs::O_CLOEXEC != 0;
    let (a, b) = with_current(|p| -> Result<(usize, usize), Errno> {
        let a = p.fds.insert(r, cloexec)?;
        match p.fds.insert(w, cloexec) {
            Ok(b) => Ok((a, b)),
            Err(e) => {
                let _ = p.fds.close(a as i64);
                Err(e)
            }
        }
    })?;
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&(a as u32).to_le_bytes());
    out[4..].copy_from_slice(&(b as u32).to_le_bytes());
    copy_to_user(fds, &out).map(|_| 0)
}

pub fn sys_dup(fd: i64) -> SysResult {
    with_current(|p| {
        let f = p.fds.get(fd)?;
        p.fds.insert(f, false).map(|n| n as u64)
    })
}

/// dup2 (flags None) and dup3.
pub fn sys_dup3(old: i64, new: i64, flags: Option<u32>) -> SysResult {
    if let Some(fl) = flags {
        if old == new || fl & !fs::O_CLOEXEC != 0 {
            return Err(Errno::EINVAL);
        }
    }
    let f = file(old)?;
    if old == new {
        return Ok(new as u64);
    }
    if !(0..fs::fd::MAX_FDS as i64).contains(&new) {
        return Err(Errno::EBADF);
    }
    let cloexec = flags.unwrap_or(0) & fs::O_CLOEXEC != 0;
    let prev = with_current(|p| p.fds.install(new as usize, f, cloexec));
    drop(prev);
    Ok(new as u64)
}

const F_DUPFD: u32 = 0;
const F_GETFD: u32 = 1;
const F_SETFD: u32 = 2;
const F_GETFL: u32 = 3;
const F_SETFL: u32 = 4;
const F_DUPFD_CLOEXEC: u32 = 1030;

pub fn sys_fcntl(fd: i64, cmd: u32, arg: u64) -> SysResult {
    let f = file(fd)?;
    match cmd {
        F_DUPFD | F_DUPFD_CLOEXEC => with_current(|p| {
            p.fds
                .insert_from(arg as usize, f, cmd == F_DUPFD_CLOEXEC)
                .map(|n| n as u64)
        }),
        F_GETFD => Ok(with_current(|p| p.fds.cloexec(fd)) as u64),
        F_SETFD => {
            with_current(|p| p.fds.set_cloexec(fd, arg & 1 != 0));
            Ok(0)
        }
        F_GETFL => Ok(f.borrow().flags as u64),
        F_SETFL => {
            let mut o = f.borrow_mut();
            o.flags =
                (o.flags & !(fs::O_NONBLOCK | 0o2000)) | (arg as u32 & (fs::O_NONBLOCK | 0o2000));
            Ok(0)
        }
        F_GETLK | F_SETLK | F_SETLKW => record_lock(&f, cmd, arg),
        _ => Err(Errno::EINVAL),
    }
}

const F_GETLK: u32 = 5;
const F_SETLK: u32 = 6;
const F_SETLKW: u32 = 7;
const F_RDLCK: i16 = 0;
const F_WRLCK: i16 = 1;
const F_UNLCK: i16 = 2;

/// F_GETLK, F_SETLK, F_SETLKW on `struct flock` at `arg` (type i16, whence i16, start i64 at 8, len
/// i64 at 16, pid i32 at 24): a read lock needs the file open for reading, a write lock for writing
/// (EBADF); EINVAL for a bad type, whence or range.
fn record_lock(f: &FileRef, cmd: u32, arg: u64) -> SysResult {
    check_user(arg, 32, true)?;
    let mut b = [0u8; 32];
    b.copy_from_slice(uaccess_slice(arg, 32));
    let ty = i16::from_le_bytes([b[0], b[1]]);
    let whence = i16::from_le_bytes([b[2], b[3]]);
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        i64::from_le_bytes(w)
    };
    let (start, len) = (word(8), word(16));
    let (acc, offset, st) = {
        let o = f.borrow();
        (o.flags & fs::O_ACCMODE, o.offset, fs::stat(&o))
    };
    let kind = match ty {
        F_RDLCK => kcore::lock::Kind::Read,
        F_WRLCK => kcore::lock::Kind::Write,
        F_UNLCK => kcore::lock::Kind::Unlock,
        _ => return Err(Errno::EINVAL),
    };
    let base = match whence {
        0 => 0,
        1 => offset as i64,
        2 => st.size,
        _ => return Err(Errno::EINVAL),
    };
    let (s, e) = kcore::lock::range(base.checked_add(start).ok_or(Errno::EINVAL)?, len)
        .ok_or(Errno::EINVAL)?;
    let key = fs::lock::file_key(st.dev, st.ino);
    let owner = with_current(|p| p.tgid.0);
    if cmd == F_GETLK {
        if kind == kcore::lock::Kind::Unlock {
            return Err(Errno::EINVAL);
        }
        let mut out = b;
        match fs::lock::test(key, owner, s, e, kind) {
            None => out[0..2].copy_from_slice(&F_UNLCK.to_le_bytes()),
            Some(l) => {
                let t = if l.kind == kcore::lock::Kind::Write {
                    F_WRLCK
                } else {
                    F_RDLCK
                };
                out[0..2].copy_from_slice(&t.to_le_bytes());
                out[2..4].copy_from_slice(&0i16.to_le_bytes());
                out[8..16].copy_from_slice(&(l.start as i64).to_le_bytes());
                let len = if l.end == u64::MAX {
                    0
                } else {
                    (l.end - l.start) as i64
                };
                out[16..24].copy_from_slice(&len.to_le_bytes());
                out[24..28].copy_from_slice(&(l.owner as i32).to_le_bytes());
            }
        }
        return copy_to_user(arg, &out).map(|_| 0);
    }
    match kind {
        kcore::lock::Kind::Read if acc == fs::O_WRONLY => return Err(Errno::EBADF),
        kcore::lock::Kind::Write if acc == 0 => return Err(Errno::EBADF),
        _ => {}
    }
    fs::lock::set(key, owner, s, e, kind, cmd == F_SETLKW).map(|_| 0)
}

/// getdents64: `struct linux_dirent64` records; the file offset counts entries.
pub fn sys_getdents64(fd: i64, buf: u64, count: u64) -> SysResult {
    let f = file(fd)?;
    let entries = fs::dir_entries(&f.borrow())?;
    let start = f.borrow().offset as usize;
    let mut out = Vec::new();
    let mut next = start;
    for (ino, dt, name) in entries.iter().skip(start) {
        let reclen = (19 + name.len() + 1 + 7) & !7;
        if out.len() + reclen > count as usize {
            break;
        }
        next += 1;
        let at = out.len();
        out.resize(at + reclen, 0);
        out[at..at + 8].copy_from_slice(&ino.to_le_bytes());
        out[at + 8..at + 16].copy_from_slice(&(next as u64).to_le_bytes());
        out[at + 16..at + 18].copy_from_slice(&(reclen as u16).to_le_bytes());
        out[at + 18] = *dt;
        out[at + 19..at + 19 + name.len()].copy_from_slice(name);
    }
    if out.is_empty() && next < entries.len() {
        return Err(Errno::EINVAL);
    }
    copy_to_user(buf, &out)?;
    f.borrow_mut().offset = next as u64;
    Ok(out.len() as u64)
}

pub fn sys_chdir(path: u64) -> SysResult {
    let mut path = absolute(AT_FDCWD, user_cstr(path)?)?;
    let inode = fs::with_root(|fs| fs.resolve(&path, true))?;
    if !inode.is_dir() {
        return Err(Errno::ENOTDIR);
    }
    while path.len() > 1 && path.last() == Some(&b'/') {
        path.pop();
    }
    with_current(|p| p.cwd = path);
    Ok(0)
}

const FIONBIO: u32 = 0x5421;
const FIONCLEX: u32 = 0x5450;
const FIOCLEX: u32 = 0x5451;

pub fn sys_ioctl(fd: i64, cmd: u32, arg: u64) -> SysResult {
    let f = file(fd)?;
    match cmd {
        FIONBIO => {
            check_user(arg, 4, false)?;
            let b = crate::mm::uaccess::checked_slice(arg, 4);
            let on = b.iter().any(|&x| x != 0);
            let mut o = f.borrow_mut();
            o.flags = if on {
                o.flags | fs::O_NONBLOCK
            } else {
                o.flags & !fs::O_NONBLOCK
            };
            return Ok(0);
        }
        FIOCLEX | FIONCLEX => {
            with_current(|p| p.fds.set_cloexec(fd, cmd == FIOCLEX));
            return Ok(0);
        }
        _ => {}
    }
    let is_tty = matches!(f.borrow().kind, fs::FileKind::Console);
    if !is_tty {
        return Err(Errno::ENOTTY);
    }
    crate::tty::ioctl(cmd, arg)
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
    if let Some(target) = fs::proc::readlink(&path) {
        let target = target?;
        let n = target.len().min(size as usize);
        copy_to_user(buf, &target[..n])?;
        return Ok(n as u64);
    }
    let inode = fs::with_root(|fs| fs.resolve(&path, false))?;
    if !inode.is_symlink() {
        return Err(Errno::EINVAL);
    }
    let target = fs::with_root(|fs| fs.read_link(&inode))?;
    let n = target.len().min(size as usize);
    copy_to_user(buf, &target[..n])?;
    Ok(n as u64)
}

/// sendfile(out, in, offset, count): copies up to `count` bytes from `in` (a file that has an offset:
/// not a pipe, socket or the console: EINVAL, as Linux requires a mappable input) to `out` through a
/// bounded kernel buffer, 64 KiB at a time. With `offset` the input's offset is left alone and the
/// value at `offset` advanced; otherwise the input's offset moves. A socket as output is EINVAL here
/// (callers fall back to read and write).
pub fn sys_sendfile(out_fd: i64, in_fd: i64, offset: u64, count: u64) -> SysResult {
    let (inf, outf) = (file(in_fd)?, file(out_fd)?);
    if inf.borrow().flags & fs::O_ACCMODE == fs::O_WRONLY
        || outf.borrow().flags & fs::O_ACCMODE == 0
            && !matches!(
                outf.borrow().kind,
                fs::FileKind::Console | fs::FileKind::Null
            )
    {
        return Err(Errno::EBADF);
    }
    if fs::blocking(&inf).is_some() || fs::socket(&inf).is_some() || fs::socket(&outf).is_some() {
        return Err(Errno::EINVAL);
    }
    let mut pos = if offset != 0 {
        check_user(offset, 8, true)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(uaccess_slice(offset, 8));
        let v = i64::from_le_bytes(b);
        if v < 0 {
            return Err(Errno::EINVAL);
        }
        Some(v as u64)
    } else {
        None
    };
    if count == 0 {
        return Ok(0);
    }
    let mut tmp = bounce((count as usize).min(fs::pipe::PIPE_BUF_SIZE))?;
    let mut done = 0u64;
    while done < count {
        let want = ((count - done) as usize).min(tmp.len());
        let n = {
            let mut of = inf.borrow_mut();
            match pos {
                Some(p) => {
                    let saved = core::mem::replace(&mut of.offset, p);
                    let r = fs::read(&mut of, &mut tmp[..want]);
                    of.offset = saved;
                    r
                }
                None => fs::read(&mut of, &mut tmp[..want]),
            }
        };
        let n = match n {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        };
        let w = match fs::blocking(&outf) {
            Some(b) => {
                let r = fs::write_blocking(&b, &tmp[..n]);
                if let (fs::Blocking::Pipe(p, _), Err(Errno::EPIPE)) = (&b, &r) {
                    if p.borrow().readers() == 0 {
                        crate::proc::signal::send_kernel(
                            crate::proc::current_pid(),
                            crate::proc::signal::SIGPIPE,
                        );
                    }
                }
                r
            }
            None => fs::write(&mut outf.borrow_mut(), &tmp[..n]),
        };
        let w = match w {
            Ok(w) => w,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        };
        // Bytes read but not written are given back to the input.
        if pos.is_none() && w < n {
            inf.borrow_mut().offset -= (n - w) as u64;
        }
        if let Some(p) = pos.as_mut() {
            *p += w as u64;
        }
        done += w as u64;
        if w < n {
            break;
        }
    }
    if let Some(p) = pos {
        copy_to_user(offset, &p.to_le_bytes())?;
    }
    Ok(done)
}
