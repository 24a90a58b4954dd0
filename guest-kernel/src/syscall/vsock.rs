//! The socket system calls on AF_VSOCK sockets (`crate::net::vsock_sock`): `socket(AF_VSOCK, ...)`
//! and every socket call whose descriptor is a vsock socket come here from [`super::dispatch`]
//! ([`owns`]); read, write, close and poll go through the ordinary file calls.
#![deny(unsafe_code)]

use super::file::copy_to_user;
use super::net::{iovec, put_timeval_opt, put_u32_opt, read_msghdr, read_timeval, read_u32};
use super::SysResult;
use crate::fs::file::{ReadBuf, WriteBuf};
use crate::mm::uaccess::{self, UserReader, UserWriter};
use crate::net::vsock_sock::{self as vsock, SockRef};
use crate::proc::with_current;
use kcore::errno::Errno;
use kcore::vsock::{AddrError, SockaddrVm, AF_VSOCK, SOCKADDR_VM_LEN};

const SOCK_STREAM: u32 = 1;
const SOCK_NONBLOCK: u32 = 0o4000;
const SOCK_CLOEXEC: u32 = 0o2000000;
const MSG_PEEK: u32 = 0x2;
const MSG_DONTWAIT: u32 = 0x40;
const MSG_NOSIGNAL: u32 = 0x4000;
const SOL_SOCKET: u32 = 1;
const SO_TYPE: u32 = 3;
const SO_ERROR: u32 = 4;
const SO_SNDBUF: u32 = 7;
const SO_RCVBUF: u32 = 8;
const SO_RCVTIMEO: u32 = 20;
const SO_SNDTIMEO: u32 = 21;
/// Linux's AF_VSOCK option level.
const AF_VSOCK_LEVEL: u32 = 40;

/// Whether system call `nr` with arguments `a` is for an AF_VSOCK socket.
pub fn owns(nr: u64, a: &[u64; 6]) -> bool {
    if nr == 41 {
        return a[0] as u32 == u32::from(AF_VSOCK);
    }
    let fd = a[0] as i32 as i64;
    with_current(|p| p.fds.get(fd))
        .ok()
        .is_some_and(|f| vsock::vsock_of(&f).is_some())
}

/// Runs socket call `nr` on a vsock socket ([`owns`] said yes).
pub fn dispatch(nr: u64, a: &[u64; 6]) -> SysResult {
    let fd = a[0] as i32 as i64;
    match nr {
        41 => sys_socket(a[1] as u32, a[2] as u32),
        42 => {
            let s = sock(fd)?;
            let to = read_addr(a[1], a[2] as u32)?;
            vsock::connect(&s, to, nonblocking(fd)?).map(|_| 0)
        }
        43 => sys_accept4(fd, a[1], a[2], 0),
        288 => sys_accept4(fd, a[1], a[2], a[3] as u32),
        44 => sys_sendto(fd, a[1], a[2], a[3] as u32, a[4], a[5] as u32),
        45 => sys_recvfrom(fd, a[1], a[2], a[3] as u32, a[5]),
        46 => sys_sendmsg(fd, a[1], a[2] as u32),
        47 => sys_recvmsg(fd, a[1], a[2] as u32),
        48 => vsock::shutdown(&sock(fd)?, a[1] as u32).map(|_| 0),
        49 => {
            let s = sock(fd)?;
            let at = read_addr(a[1], a[2] as u32)?;
            vsock::bind(&s, at).map(|_| 0)
        }
        50 => vsock::listen(&sock(fd)?, a[1] as i32).map(|_| 0),
        51 => {
            let at = sock(fd)?.borrow().local_addr();
            write_addr(a[1], a[2], at).map(|_| 0)
        }
        52 => {
            let at = sock(fd)?.borrow().peer_addr()?;
            write_addr(a[1], a[2], at).map(|_| 0)
        }
        54 => sys_setsockopt(fd, a[1] as u32, a[2] as u32, a[3], a[4] as u32),
        55 => sys_getsockopt(fd, a[1] as u32, a[2] as u32, a[3], a[4]),
        _ => Err(Errno::ENOSYS),
    }
}

fn sock(fd: i64) -> Result<SockRef, Errno> {
    let f = with_current(|p| p.fds.get(fd))?;
    vsock::vsock_of(&f).ok_or(Errno::ENOTSOCK)
}

fn nonblocking(fd: i64) -> Result<bool, Errno> {
    Ok(with_current(|p| p.fds.get(fd))?.nonblocking())
}

fn install(s: SockRef, flags: u32) -> SysResult {
    let f = vsock::vsock_file(s, flags & SOCK_NONBLOCK != 0);
    with_current(|p| p.fds.insert(f, flags & SOCK_CLOEXEC != 0)).map(|fd| fd as u64)
}

fn sys_socket(ty: u32, protocol: u32) -> SysResult {
    let flags = ty & !0xf;
    if flags & !(SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
        return Err(Errno::EINVAL);
    }
    if ty & 0xf != SOCK_STREAM {
        return Err(Errno::ESOCKTNOSUPPORT);
    }
    if protocol != 0 {
        return Err(Errno::EPROTONOSUPPORT);
    }
    install(vsock::new()?, flags)
}

fn read_addr(va: u64, len: u32) -> Result<SockaddrVm, Errno> {
    let n = (len as usize).min(SOCKADDR_VM_LEN);
    let mut raw = [0u8; SOCKADDR_VM_LEN];
    uaccess::copy_from_user(&mut raw[..n], va)?;
    SockaddrVm::parse(&raw[..n]).map_err(|e| match e {
        AddrError::TooShort => Errno::EINVAL,
        AddrError::Family => Errno::EAFNOSUPPORT,
    })
}

/// Writes `a` to (`va`, `*lenp`), truncated to the caller's length; `*lenp` becomes the full length.
fn write_addr(va: u64, lenp: u64, a: SockaddrVm) -> Result<(), Errno> {
    if va == 0 || lenp == 0 {
        return Ok(());
    }
    let len = read_u32(lenp)?;
    let b = a.to_bytes();
    let n = (len as usize).min(b.len());
    copy_to_user(va, &b[..n])?;
    copy_to_user(lenp, &(SOCKADDR_VM_LEN as u32).to_le_bytes())
}

fn sys_accept4(fd: i64, addr: u64, lenp: u64, flags: u32) -> SysResult {
    if flags & !(SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
        return Err(Errno::EINVAL);
    }
    let s = sock(fd)?;
    let (conn, peer) = vsock::accept(&s, nonblocking(fd)?)?;
    let nfd = install(conn, flags)?;
    write_addr(addr, lenp, peer)?;
    Ok(nfd)
}

/// User memory as the destination of a receive (a validated writer; each copy fault-safe).
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

/// User memory as the source of a send (a validated reader; each copy fault-safe).
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

fn sys_sendto(fd: i64, buf: u64, len: u64, flags: u32, addr: u64, alen: u32) -> SysResult {
    let s = sock(fd)?;
    if addr != 0 && alen != 0 {
        // A stream socket takes no destination (Linux: EISCONN when connected, else EOPNOTSUPP).
        let connected = s.borrow().peer_addr().is_ok();
        return Err(if connected {
            Errno::EISCONN
        } else {
            Errno::EOPNOTSUPP
        });
    }
    let nonblock = nonblocking(fd)? || flags & MSG_DONTWAIT != 0;
    let res = vsock::send(
        &s,
        &mut UserIn(UserReader::new(buf, len as usize)?),
        nonblock,
    );
    super::net::sigpipe(res, flags & MSG_NOSIGNAL != 0).map(|n| n as u64)
}

fn sys_recvfrom(fd: i64, buf: u64, len: u64, flags: u32, lenp: u64) -> SysResult {
    let s = sock(fd)?;
    let nonblock = nonblocking(fd)? || flags & MSG_DONTWAIT != 0;
    let n = vsock::recv(
        &s,
        &mut UserOut(UserWriter::new(buf, len as usize)?),
        nonblock,
        flags & MSG_PEEK != 0,
    )?;
    // A stream socket reports no source address.
    if lenp != 0 {
        copy_to_user(lenp, &0u32.to_le_bytes())?;
    }
    Ok(n as u64)
}

fn sys_sendmsg(fd: i64, msg: u64, flags: u32) -> SysResult {
    let (_, _, iov, iovlen) = read_msghdr(msg)?;
    let mut total = 0;
    for i in 0..iovlen.min(1024) {
        let (base, len) = iovec(iov, i)?;
        match sys_sendto(fd, base, len, flags, 0, 0) {
            Ok(n) => {
                total += n;
                if n < len {
                    break;
                }
            }
            Err(e) if total == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(total)
}

fn sys_recvmsg(fd: i64, msg: u64, flags: u32) -> SysResult {
    let (_, _, iov, iovlen) = read_msghdr(msg)?;
    let mut total = 0;
    for i in 0..iovlen.min(1024) {
        let (base, len) = iovec(iov, i)?;
        let fl = if i > 0 { flags | MSG_DONTWAIT } else { flags };
        match sys_recvfrom(fd, base, len, fl, 0) {
            Ok(n) => {
                total += n;
                if n < len {
                    break;
                }
            }
            Err(e) if i == 0 => return Err(e),
            Err(_) => break,
        }
    }
    // msg_namelen 0 (no source address), msg_flags 0.
    copy_to_user(msg + 8, &0u32.to_le_bytes())?;
    copy_to_user(msg + 48, &0u32.to_le_bytes())?;
    Ok(total)
}

fn sys_setsockopt(fd: i64, level: u32, name: u32, val: u64, len: u32) -> SysResult {
    let s = sock(fd)?;
    match (level, name) {
        (SOL_SOCKET, SO_RCVTIMEO) => s.borrow_mut().rcv_timeout = read_timeval(val, len)?,
        (SOL_SOCKET, SO_SNDTIMEO) => s.borrow_mut().snd_timeout = read_timeval(val, len)?,
        // Buffer sizes and the like: accepted, the buffers are fixed.
        (SOL_SOCKET | AF_VSOCK_LEVEL, _) => {}
        _ => return Err(Errno::ENOPROTOOPT),
    }
    Ok(0)
}

fn sys_getsockopt(fd: i64, level: u32, name: u32, val: u64, lenp: u64) -> SysResult {
    let s = sock(fd)?;
    if let (SOL_SOCKET, SO_RCVTIMEO | SO_SNDTIMEO) = (level, name) {
        let t = if name == SO_RCVTIMEO {
            s.borrow().rcv_timeout
        } else {
            s.borrow().snd_timeout
        }
        .unwrap_or(0);
        return put_timeval_opt(t, val, lenp);
    }
    let v: u32 = match (level, name) {
        (SOL_SOCKET, SO_ERROR) => s.borrow_mut().take_error().map_or(0, |e| e.0 as u32),
        (SOL_SOCKET, SO_TYPE) => SOCK_STREAM,
        (SOL_SOCKET, SO_SNDBUF | SO_RCVBUF) => vsock::RCVBUF,
        (SOL_SOCKET, _) => 0,
        _ => return Err(Errno::ENOPROTOOPT),
    };
    put_u32_opt(v, val, lenp)
}
