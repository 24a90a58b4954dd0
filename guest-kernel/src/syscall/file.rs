//! File system calls on descriptors: read, write, pread64, pwrite64, readv, writev, close, fstat, lseek,
//! pipe2, dup, dup3, fcntl, getdents64, ioctl, ftruncate, fsync (paths: `path.rs`; poll and select:
//! `poll.rs`; sockets: `net.rs`).
#![deny(unsafe_code)]

use super::SysResult;
use crate::fs::file::{KernelBuf, KernelBytes, ReadBuf, WriteBuf};
use crate::fs::{self, FileRef};
use crate::mm::uaccess::{self, UserReader, UserWriter};
use crate::proc::{resolve_fault, with_current, with_mm, Access, BadAccess};
use alloc::vec::Vec;
use kcore::errno::Errno;

/// Longest path (with its NUL), as Linux's PATH_MAX.
const PATH_MAX: usize = 4096;

/// Checks a user range in the current process, faulting pages in as its areas allow (the validation
/// behind every user-memory handle: `mm::uaccess`).
pub fn check_user(va: u64, len: u64, write: bool) -> Result<(), Errno> {
    uaccess::validate(va, len, write)
}

/// The validation `mm::uaccess` calls (installed at boot): the process's areas decide about every
/// page not usable as it is (demand paging, copy-on-write, or EFAULT). A page the areas allow but no
/// frame can be had for invokes the OOM killer, as a user-mode fault does (Linux's page allocator
/// does the same for a fault in `copy_from_user`), and is tried again; EFAULT if memory is still
/// short, or if this process was the victim (its SIGKILL ends it on the way out).
pub fn validate_user(va: u64, len: u64, write: bool, may_sleep: bool) -> Result<(), Errno> {
    let access = if write { Access::Write } else { Access::Read };
    let end = va + len;
    let mut from = va;
    loop {
        let mut no_frame = None;
        let r = with_mm(|mm| {
            let (aspace, vmas) = (&mut mm.aspace, &mut mm.vmas);
            uaccess::check(
                aspace,
                from,
                end - from,
                write,
                |aspace, page| match resolve_fault(aspace, vmas, page, access) {
                    Ok(()) => true,
                    Err(BadAccess::NoPage) => {
                        no_frame = Some(page);
                        false
                    }
                    Err(_) => false,
                },
            )
        });
        match no_frame {
            Some(page) if r.is_err() && may_sleep => {
                if !crate::proc::oom::out_of_memory() || crate::proc::signal::fatal_pending() {
                    return r;
                }
                // Room was made (page-cache pages dropped, which may be fewer than the buffer
                // needs, or a victim killed): on from the page that failed, until the buffer is in
                // or the OOM killer can do no more.
                from = page;
            }
            _ => return r,
        }
    }
}

/// Copies a NUL-terminated string (at most PATH_MAX bytes) from user memory.
pub fn user_cstr(va: u64) -> Result<Vec<u8>, Errno> {
    uaccess::read_cstr(va, PATH_MAX, Errno::ENAMETOOLONG)
}

/// Writes `bytes` to user memory at `va`.
pub fn copy_to_user(va: u64, bytes: &[u8]) -> Result<(), Errno> {
    uaccess::copy_to_user(va, bytes)
}

pub(super) fn file(fd: i64) -> Result<FileRef, Errno> {
    with_current(|p| p.fds.get(fd))
}

/// User memory as the destination of a read: validated when the call starts, each copy fault-safe.
struct UserOut(UserWriter);

impl ReadBuf for UserOut {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn put(&mut self, at: usize, bytes: &[u8]) -> Result<(), Errno> {
        self.0.write_all_at(at, bytes)
    }
    fn user_writer(&mut self) -> Option<&mut UserWriter> {
        Some(&mut self.0)
    }
}

/// User memory as the source of a write: validated when the call starts, each copy fault-safe.
struct UserIn(UserReader);

impl WriteBuf for UserIn {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn get(&mut self, at: usize, dst: &mut [u8]) -> Result<(), Errno> {
        self.0.read_exact_at(at, dst)
    }
    fn user_reader(&mut self) -> Option<&mut UserReader> {
        Some(&mut self.0)
    }
}

pub fn sys_read(fd: i64, buf: u64, len: u64) -> SysResult {
    let f = file(fd)?;
    if !f.readable() {
        return Err(Errno::EBADF);
    }
    let mut out = UserOut(UserWriter::new(buf, len as usize)?);
    f.ops.read(&f, &mut out).map(|n| n as u64)
}

/// pread64: a read at `offset`, leaving the file's offset as it was. ESPIPE for pipes, sockets and
/// the console, EINVAL for a negative offset.
pub fn sys_pread64(fd: i64, buf: u64, len: u64, offset: i64) -> SysResult {
    let f = file(fd)?;
    if !f.readable() {
        return Err(Errno::EBADF);
    }
    if !f.ops.seekable() {
        return Err(Errno::ESPIPE);
    }
    if offset < 0 {
        return Err(Errno::EINVAL);
    }
    let mut out = UserOut(UserWriter::new(buf, len as usize)?);
    f.ops.read_at(&f, offset as u64, &mut out).map(|n| n as u64)
}

/// pwrite64: a write at `offset`; ESPIPE where pread64 has it.
pub fn sys_pwrite64(fd: i64, buf: u64, len: u64, offset: i64) -> SysResult {
    let f = file(fd)?;
    if !f.writable() {
        return Err(Errno::EBADF);
    }
    if !f.ops.seekable() {
        return Err(Errno::ESPIPE);
    }
    if offset < 0 {
        return Err(Errno::EINVAL);
    }
    let mut src = UserIn(UserReader::new(buf, len as usize)?);
    f.ops
        .write_at(&f, offset as u64, &mut src)
        .map(|n| n as u64)
}

pub fn sys_write(fd: i64, buf: u64, len: u64) -> SysResult {
    let f = file(fd)?;
    if !f.writable() {
        return Err(Errno::EBADF);
    }
    let mut src = UserIn(UserReader::new(buf, len as usize)?);
    sigpipe(f.ops.write(&f, &mut src)).map(|n| n as u64)
}

/// EPIPE from a write raises SIGPIPE in the writer, as Linux's pipe_write and sockets do (a socket
/// has sent it already unless MSG_NOSIGNAL; a second SIGPIPE while one is pending is the same one).
fn sigpipe(r: Result<usize, Errno>) -> Result<usize, Errno> {
    if r == Err(Errno::EPIPE) {
        // To the writing thread, not its process (Linux's send_sig(SIGPIPE, current)).
        let _ = crate::proc::signal::send_thread(
            crate::proc::current_pid(),
            crate::proc::signal::SIGPIPE,
        );
    }
    r
}

/// sendfile(out, in, offset, count): copies up to `count` bytes from `in` (a seekable file: EINVAL
/// for pipes, sockets and the console, as Linux requires a mappable input) to `out` through a bounded
/// kernel buffer, 64 KiB at a time. With `offset` the input's offset is left alone and the value at
/// `offset` advanced; otherwise the input's offset moves. A socket as output is EINVAL here (callers
/// fall back to read and write).
pub fn sys_sendfile(out_fd: i64, in_fd: i64, offset: u64, count: u64) -> SysResult {
    let (inf, outf) = (file(in_fd)?, file(out_fd)?);
    if !inf.readable() || !outf.writable() {
        return Err(Errno::EBADF);
    }
    if !inf.ops.seekable() || crate::net::file::socket_of(&outf).is_some() {
        return Err(Errno::EINVAL);
    }
    let mut pos = if offset != 0 {
        // Validated for writing now: the new offset is written back at the end.
        check_user(offset, 8, true)?;
        let v: i64 = uaccess::read_val(offset)?;
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
    let mut tmp = crate::mm::heap::try_zeroed_bytes((count as usize).min(fs::pipe::PIPE_BUF_SIZE))
        .ok_or(Errno::ENOMEM)?;
    let mut done = 0u64;
    while done < count {
        let want = ((count - done) as usize).min(tmp.len());
        let n = match pos {
            Some(p) => inf.ops.read_at(&inf, p, &mut KernelBuf(&mut tmp[..want])),
            None => inf.ops.read(&inf, &mut KernelBuf(&mut tmp[..want])),
        };
        let n = match n {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        };
        let w = match sigpipe(outf.ops.write(&outf, &mut KernelBytes(&tmp[..n]))) {
            Ok(w) => w,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        };
        // Bytes read but not written are given back to the input.
        if pos.is_none() && w < n {
            inf.set_offset(inf.offset() - (n - w) as u64);
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

fn iovecs(iov: u64, cnt: u64) -> Result<Vec<(u64, u64)>, Errno> {
    if cnt > 1024 {
        return Err(Errno::EINVAL);
    }
    let mut r = UserReader::new(iov, (cnt * 16) as usize)?;
    let mut out = Vec::new();
    out.try_reserve_exact(cnt as usize)
        .map_err(|_| Errno::ENOMEM)?;
    for _ in 0..cnt {
        let [base, len] = r.read_val::<[u64; 2]>()?;
        out.push((base, len));
    }
    Ok(out)
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

pub fn sys_close(fd: i64) -> SysResult {
    let f = file(fd)?;
    with_current(|p| p.fds.close(fd))?;
    // POSIX: closing any descriptor of a file drops the process's record locks on it.
    let st = f.ops.stat();
    fs::lock::closed(
        fs::lock::file_key(st.dev, st.ino),
        u64::from(with_current(|p| p.tgid.0)),
    );
    Ok(0)
}

pub fn sys_fstat(fd: i64, statbuf: u64) -> SysResult {
    let st = file(fd)?.ops.stat();
    copy_to_user(statbuf, &st.to_bytes()).map(|_| 0)
}

pub fn sys_lseek(fd: i64, offset: i64, whence: u32) -> SysResult {
    let f = file(fd)?;
    f.ops.seek(&f, offset, whence)
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
        F_GETFL => Ok(f.flags() as u64),
        F_SETFL => {
            let settable = fs::O_NONBLOCK | fs::O_APPEND;
            f.set_flags((f.flags() & !settable) | (arg as u32 & settable));
            Ok(0)
        }
        F_GETLK | F_SETLK | F_SETLKW | F_OFD_GETLK | F_OFD_SETLK | F_OFD_SETLKW => {
            record_lock(&f, cmd, arg)
        }
        _ => Err(Errno::EINVAL),
    }
}

const F_GETLK: u32 = 5;
const F_SETLK: u32 = 6;
const F_SETLKW: u32 = 7;
const F_OFD_GETLK: u32 = 36;
const F_OFD_SETLK: u32 = 37;
const F_OFD_SETLKW: u32 = 38;
const F_RDLCK: i16 = 0;
const F_WRLCK: i16 = 1;
const F_UNLCK: i16 = 2;

/// F_GETLK, F_SETLK, F_SETLKW and their open-file-description forms (F_OFD_*: owned by the
/// description, l_pid must be 0 and a conflict with one reports l_pid -1) on `struct flock` at `arg`
/// (type i16, whence i16, start i64 at 8, len i64 at 16, pid i32 at 24): a read lock needs the file
/// open for reading, a write lock for writing (EBADF); EINVAL for a bad type, whence or range.
fn record_lock(f: &FileRef, cmd: u32, arg: u64) -> SysResult {
    // Validated for writing: F_GETLK writes the result back.
    check_user(arg, 32, true)?;
    let b: [u8; 32] = uaccess::read_val(arg)?;
    let ty = i16::from_le_bytes([b[0], b[1]]);
    let whence = i16::from_le_bytes([b[2], b[3]]);
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        i64::from_le_bytes(w)
    };
    let (start, len) = (word(8), word(16));
    let ofd = matches!(cmd, F_OFD_GETLK | F_OFD_SETLK | F_OFD_SETLKW);
    if ofd && i32::from_le_bytes([b[24], b[25], b[26], b[27]]) != 0 {
        return Err(Errno::EINVAL);
    }
    let (acc, offset, st) = (f.flags() & fs::O_ACCMODE, f.offset(), f.ops.stat());
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
    let owner = if ofd {
        f.lock_owner()
    } else {
        u64::from(with_current(|p| p.tgid.0))
    };
    if cmd == F_GETLK || cmd == F_OFD_GETLK {
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
                let pid = if l.owner & kcore::lock::OFD != 0 {
                    -1
                } else {
                    l.owner as i32
                };
                out[24..28].copy_from_slice(&pid.to_le_bytes());
            }
        }
        return copy_to_user(arg, &out).map(|_| 0);
    }
    match kind {
        kcore::lock::Kind::Read if acc == fs::O_WRONLY => return Err(Errno::EBADF),
        kcore::lock::Kind::Write if acc == 0 => return Err(Errno::EBADF),
        _ => {}
    }
    fs::lock::set(
        key,
        owner,
        s,
        e,
        kind,
        cmd == F_SETLKW || cmd == F_OFD_SETLKW,
    )
    .map(|_| 0)
}

const LOCK_SH: u32 = 1;
const LOCK_EX: u32 = 2;
const LOCK_NB: u32 = 4;
const LOCK_UN: u32 = 8;

/// flock(2): a whole-file lock owned by the open file description (shared by dup and fork, released
/// by LOCK_UN or its last close); any access mode may take either kind. LOCK_NB: EWOULDBLOCK instead
/// of sleeping; EINVAL for anything but one of LOCK_SH, LOCK_EX, LOCK_UN (with LOCK_NB).
pub fn sys_flock(fd: i64, op: u32) -> SysResult {
    let f = file(fd)?;
    let kind = match op & !LOCK_NB {
        LOCK_SH => kcore::lock::Kind::Read,
        LOCK_EX => kcore::lock::Kind::Write,
        LOCK_UN => kcore::lock::Kind::Unlock,
        _ => return Err(Errno::EINVAL),
    };
    let st = f.ops.stat();
    let key = fs::lock::file_key(st.dev, st.ino);
    fs::lock::flock(key, f.lock_owner(), kind, op & LOCK_NB == 0).map(|_| 0)
}

/// getdents64: `struct linux_dirent64` records; the file offset counts entries.
pub fn sys_getdents64(fd: i64, buf: u64, count: u64) -> SysResult {
    let f = file(fd)?;
    let entries = fs::dir_entries(&f)?;
    let start = f.offset() as usize;
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
    f.set_offset(next as u64);
    Ok(out.len() as u64)
}

const FIONBIO: u32 = 0x5421;
const FIONCLEX: u32 = 0x5450;
const FIOCLEX: u32 = 0x5451;

pub fn sys_ioctl(fd: i64, cmd: u32, arg: u64) -> SysResult {
    let f = file(fd)?;
    match cmd {
        FIONBIO => {
            let on = uaccess::read_val::<u32>(arg)? != 0;
            f.set_flags(if on {
                f.flags() | fs::O_NONBLOCK
            } else {
                f.flags() & !fs::O_NONBLOCK
            });
            return Ok(0);
        }
        FIOCLEX | FIONCLEX => {
            with_current(|p| p.fds.set_cloexec(fd, cmd == FIOCLEX));
            return Ok(0);
        }
        _ => {}
    }
    f.ops.ioctl(&f, cmd, arg)
}

/// ftruncate: EINVAL unless open for writing (and a regular file: the file's own answer).
pub fn sys_ftruncate(fd: i64, len: i64) -> SysResult {
    let f = file(fd)?;
    if len < 0 || !f.writable() {
        return Err(Errno::EINVAL);
    }
    f.ops.truncate(&f, len as u64).map(|_| 0)
}

/// fsync and fdatasync (`data_only`).
pub fn sys_fsync(fd: i64, data_only: bool) -> SysResult {
    let f = file(fd)?;
    // What was written through shared mappings of it is part of what fsync writes.
    crate::proc::harvest_all_dirty();
    f.ops.sync(&f, data_only).map(|_| 0)
}
