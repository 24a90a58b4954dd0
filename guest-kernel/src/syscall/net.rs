//! Socket system calls (AF_INET only): socket, bind, listen, accept, accept4, connect, sendto, recvfrom,
//! sendmsg, recvmsg, shutdown, getsockname, getpeername, setsockopt, getsockopt. The sockets themselves
//! are `crate::net::socket`; read/write/close/poll on them go through the ordinary file calls.
#![deny(unsafe_code)]

use super::file::copy_to_user;
use super::SysResult;
use crate::mm::uaccess::{self, UserReader, UserWriter};
use crate::net::socket::{self, Addr, Proto, SocketRef};
use crate::proc::with_current;
use kcore::errno::Errno;

const AF_INET: u16 = 2;
const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
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
const IPPROTO_IP: u32 = 0;
const IPPROTO_TCP: u32 = 6;
const SOCKADDR_IN_LEN: u32 = 16;

pub(super) fn read_u32(va: u64) -> Result<u32, Errno> {
    uaccess::read_val(va)
}

/// A `struct sockaddr_in` from user memory.
fn read_addr(va: u64, len: u32) -> Result<Addr, Errno> {
    if len < SOCKADDR_IN_LEN {
        return Err(Errno::EINVAL);
    }
    let b: [u8; SOCKADDR_IN_LEN as usize] = uaccess::read_val(va)?;
    if u16::from_le_bytes([b[0], b[1]]) != AF_INET {
        return Err(Errno::EAFNOSUPPORT);
    }
    Ok(Addr {
        port: u16::from_be_bytes([b[2], b[3]]),
        ip: [b[4], b[5], b[6], b[7]],
    })
}

/// Writes `a` as a `struct sockaddr_in` to (`va`, `*lenp`), truncated to the caller's length, and
/// sets `*lenp` to the full length (nothing when `va` is NULL).
fn write_addr(va: u64, lenp: u64, a: Addr) -> Result<(), Errno> {
    if va == 0 || lenp == 0 {
        return Ok(());
    }
    let len = read_u32(lenp)?;
    let mut b = [0u8; SOCKADDR_IN_LEN as usize];
    b[..2].copy_from_slice(&AF_INET.to_le_bytes());
    b[2..4].copy_from_slice(&a.port.to_be_bytes());
    b[4..8].copy_from_slice(&a.ip);
    let n = (len as usize).min(b.len());
    copy_to_user(va, &b[..n])?;
    copy_to_user(lenp, &SOCKADDR_IN_LEN.to_le_bytes())
}

/// The socket behind `fd` and whether its file is non-blocking.
fn sock(fd: i64) -> Result<(SocketRef, bool), Errno> {
    let f = with_current(|p| p.fds.get(fd))?;
    crate::net::file::socket_of(&f).ok_or(Errno::ENOTSOCK)
}

fn install(s: SocketRef, flags: u32) -> SysResult {
    let f = crate::net::file::socket_file(s, flags & SOCK_NONBLOCK != 0);
    with_current(|p| p.fds.insert(f, flags & SOCK_CLOEXEC != 0)).map(|fd| fd as u64)
}

pub fn sys_socket(domain: u32, ty: u32, protocol: u32) -> SysResult {
    if domain != AF_INET as u32 {
        return Err(Errno::EAFNOSUPPORT);
    }
    let flags = ty & !0xf;
    if flags & !(SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
        return Err(Errno::EINVAL);
    }
    let proto = match (ty & 0xf, protocol) {
        (SOCK_STREAM, 0 | 6) => Proto::Tcp,
        (SOCK_DGRAM, 0 | 17) => Proto::Udp,
        (SOCK_STREAM | SOCK_DGRAM, _) => return Err(Errno::EPROTONOSUPPORT),
        _ => return Err(Errno::EINVAL),
    };
    install(socket::new(proto)?, flags)
}

pub fn sys_bind(fd: i64, addr: u64, len: u32) -> SysResult {
    let (s, _) = sock(fd)?;
    let a = read_addr(addr, len)?;
    let r = s.borrow_mut().bind(a);
    r.map(|_| 0)
}

pub fn sys_listen(fd: i64, backlog: i32) -> SysResult {
    let (s, _) = sock(fd)?;
    let r = s.borrow_mut().listen(backlog);
    r.map(|_| 0)
}

pub fn sys_accept4(fd: i64, addr: u64, lenp: u64, flags: u32) -> SysResult {
    if flags & !(SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
        return Err(Errno::EINVAL);
    }
    let (s, nonblock) = sock(fd)?;
    if s.borrow().proto != Proto::Tcp {
        return Err(Errno::EOPNOTSUPP);
    }
    let (conn, peer) = socket::Socket::accept(&s, nonblock)?;
    let fd = install(conn, flags)?;
    write_addr(addr, lenp, peer)?;
    Ok(fd)
}

pub fn sys_connect(fd: i64, addr: u64, len: u32) -> SysResult {
    let (s, nonblock) = sock(fd)?;
    let a = read_addr(addr, len)?;
    socket::Socket::connect(&s, a, nonblock).map(|_| 0)
}

pub fn sys_sendto(fd: i64, buf: u64, len: u64, flags: u32, addr: u64, alen: u32) -> SysResult {
    let (s, nonblock) = sock(fd)?;
    let to = if addr != 0 && s.borrow().proto == Proto::Udp {
        Some(read_addr(addr, alen)?)
    } else {
        None
    };
    let src = UserReader::new(buf, len as usize)?;
    let res = socket::send(&s, &src, to, nonblock || flags & MSG_DONTWAIT != 0);
    sigpipe(res, flags & MSG_NOSIGNAL != 0).map(|n| n as u64)
}

/// A send that failed with EPIPE raises SIGPIPE in the caller unless MSG_NOSIGNAL (Linux's
/// sk_stream_error).
pub fn sigpipe(res: Result<usize, Errno>, nosignal: bool) -> Result<usize, Errno> {
    if res == Err(Errno::EPIPE) && !nosignal {
        // To the writing thread, not its process (Linux's send_sig(SIGPIPE, current)).
        let _ = crate::proc::signal::send_thread(
            crate::proc::current_pid(),
            crate::proc::signal::SIGPIPE,
        );
    }
    res
}

pub fn sys_recvfrom(fd: i64, buf: u64, len: u64, flags: u32, addr: u64, lenp: u64) -> SysResult {
    let (s, nonblock) = sock(fd)?;
    let mut dst = UserWriter::new(buf, len as usize)?;
    let (n, from) = socket::recv(
        &s,
        &mut dst,
        nonblock || flags & MSG_DONTWAIT != 0,
        flags & MSG_PEEK != 0,
    )?;
    if let Some(from) = from {
        write_addr(addr, lenp, from)?;
    }
    Ok(n as u64)
}

/// The parts of a `struct msghdr` used here: (name, namelen, iov, iovlen).
pub(super) fn read_msghdr(va: u64) -> Result<(u64, u32, u64, u64), Errno> {
    let q: [u64; 7] = uaccess::read_val(va)?;
    Ok((q[0], q[1] as u32, q[2], q[3]))
}

pub(super) fn iovec(iov: u64, i: u64) -> Result<(u64, u64), Errno> {
    let [base, len] = uaccess::read_val::<[u64; 2]>(iov.checked_add(i * 16).ok_or(Errno::EFAULT)?)?;
    Ok((base, len))
}

/// sendmsg: each iovec in turn (a datagram socket takes exactly one); no control messages.
pub fn sys_sendmsg(fd: i64, msg: u64, flags: u32) -> SysResult {
    let (name, namelen, iov, iovlen) = read_msghdr(msg)?;
    let (s, _) = sock(fd)?;
    if s.borrow().proto == Proto::Udp && iovlen != 1 {
        return Err(Errno::EINVAL);
    }
    let mut total = 0;
    for i in 0..iovlen.min(1024) {
        let (base, len) = iovec(iov, i)?;
        let n = sys_sendto(fd, base, len, flags, name, namelen);
        match n {
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

/// recvmsg: into the first iovec (stream sockets fill the following ones while data is there).
pub fn sys_recvmsg(fd: i64, msg: u64, flags: u32) -> SysResult {
    let (name, _, iov, iovlen) = read_msghdr(msg)?;
    let mut total = 0;
    for i in 0..iovlen.min(1024) {
        let (base, len) = iovec(iov, i)?;
        let lenp = if name != 0 { msg + 8 } else { 0 };
        let fl = if i > 0 { flags | MSG_DONTWAIT } else { flags };
        match sys_recvfrom(fd, base, len, fl, name, lenp) {
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
    // msg_flags: nothing truncated or out of band to report.
    uaccess::write_val(msg + 48, &0u32)?;
    Ok(total)
}

pub fn sys_shutdown(fd: i64, how: u32) -> SysResult {
    let (s, _) = sock(fd)?;
    let r = s.borrow_mut().shutdown(how);
    r.map(|_| 0)
}

pub fn sys_getsockname(fd: i64, addr: u64, lenp: u64) -> SysResult {
    let (s, _) = sock(fd)?;
    let a = s.borrow().local_addr();
    write_addr(addr, lenp, a).map(|_| 0)
}

pub fn sys_getpeername(fd: i64, addr: u64, lenp: u64) -> SysResult {
    let (s, _) = sock(fd)?;
    let a = s.borrow().peer_addr()?;
    write_addr(addr, lenp, a).map(|_| 0)
}

/// A `struct timeval` option value as ns (None: no timeout).
pub(super) fn read_timeval(va: u64, len: u32) -> Result<Option<u64>, Errno> {
    if len < 16 {
        return Err(Errno::EINVAL);
    }
    let [sec, usec] = uaccess::read_val::<[i64; 2]>(va)?;
    if !(0..1_000_000).contains(&usec) {
        return Err(Errno::EDOM);
    }
    let ns = (sec.max(0) as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(usec as u64 * 1000);
    Ok((ns > 0).then_some(ns))
}

/// getsockopt's answer for a timeout option: a `struct timeval` from `ns` (0: none), cut to the caller's
/// length, which is updated.
pub(super) fn put_timeval_opt(ns: u64, val: u64, lenp: u64) -> SysResult {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
    b[8..].copy_from_slice(&(ns % 1_000_000_000 / 1000).to_le_bytes());
    let n = (read_u32(lenp)? as usize).min(16);
    copy_to_user(val, &b[..n])?;
    copy_to_user(lenp, &(n as u32).to_le_bytes())?;
    Ok(0)
}

/// getsockopt's answer for an int option, cut to the caller's length, which is updated.
pub(super) fn put_u32_opt(v: u32, val: u64, lenp: u64) -> SysResult {
    let n = (read_u32(lenp)? as usize).min(4);
    copy_to_user(val, &v.to_le_bytes()[..n])?;
    copy_to_user(lenp, &(n as u32).to_le_bytes())?;
    Ok(0)
}

/// setsockopt: SO_RCVTIMEO and SO_SNDTIMEO are kept; other SOL_SOCKET, IPPROTO_TCP and IPPROTO_IP
/// options are accepted and ignored (SO_REUSEADDR among them: a port is free again as soon as no open
/// socket holds it; TCP_NODELAY: Nagle is always off).
pub fn sys_setsockopt(fd: i64, level: u32, name: u32, val: u64, len: u32) -> SysResult {
    let (s, _) = sock(fd)?;
    match (level, name) {
        (SOL_SOCKET, SO_RCVTIMEO) => s.borrow_mut().rcv_timeout = read_timeval(val, len)?,
        (SOL_SOCKET, SO_SNDTIMEO) => s.borrow_mut().snd_timeout = read_timeval(val, len)?,
        (SOL_SOCKET | IPPROTO_TCP | IPPROTO_IP, _) => {}
        _ => return Err(Errno::ENOPROTOOPT),
    }
    Ok(0)
}

pub fn sys_getsockopt(fd: i64, level: u32, name: u32, val: u64, lenp: u64) -> SysResult {
    let (s, _) = sock(fd)?;
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
        (SOL_SOCKET, SO_TYPE) => match s.borrow().proto {
            Proto::Tcp => SOCK_STREAM,
            Proto::Udp => SOCK_DGRAM,
        },
        (SOL_SOCKET, SO_SNDBUF | SO_RCVBUF) => 256 * 1024,
        (SOL_SOCKET | IPPROTO_TCP | IPPROTO_IP, _) => 0,
        _ => return Err(Errno::ENOPROTOOPT),
    };
    put_u32_opt(v, val, lenp)
}
