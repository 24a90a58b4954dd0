//! `tcp-backlog PORT BACKLOG N`: tests a listen backlog. Listens on TCP PORT with `listen(fd, BACKLOG)`
//! (any int, negative included, passed to the system call as is), then blocks on a UDP datagram to the
//! same PORT (the "go": meanwhile connections can only queue), then accepts N connections in turn: reads
//! one line from each and writes it back as `echo: LINE`.
//!
//! Prints `tcp-backlog: listening on port PORT backlog BACKLOG`, `tcp-backlog: go`, `tcp-backlog:
//! accepted LINE` per connection and `tcp-backlog: done`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::fd::FromRawFd;

fn die(msg: String) -> ! {
    eprintln!("tcp-backlog: {msg}");
    std::process::exit(1);
}

/// A TCP socket bound to 0.0.0.0:`port` listening with `backlog` (std would choose its own backlog).
fn listen(port: u16, backlog: i32) -> TcpListener {
    // SAFETY: plain system calls on a descriptor this function owns; `addr` outlives the bind call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            die(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_port = port.to_be();
        if libc::bind(
            fd,
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) < 0
        {
            die(format!("bind: {}", std::io::Error::last_os_error()));
        }
        if libc::listen(fd, backlog) < 0 {
            die(format!("listen: {}", std::io::Error::last_os_error()));
        }
        TcpListener::from_raw_fd(fd)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(port), Some(backlog), Some(n)) = (
        args.first().and_then(|a| a.parse::<u16>().ok()),
        args.get(1).and_then(|a| a.parse::<i32>().ok()),
        args.get(2).and_then(|a| a.parse::<usize>().ok()),
    ) else {
        die("usage: tcp-backlog PORT BACKLOG N".into())
    };
    let l = listen(port, backlog);
    let go = UdpSocket::bind(("0.0.0.0", port)).unwrap_or_else(|e| die(format!("udp bind: {e}")));
    println!("tcp-backlog: listening on port {port} backlog {backlog}");
    let mut buf = [0u8; 16];
    go.recv_from(&mut buf)
        .unwrap_or_else(|e| die(format!("udp recv: {e}")));
    println!("tcp-backlog: go");
    for _ in 0..n {
        let (c, _) = l.accept().unwrap_or_else(|e| die(format!("accept: {e}")));
        let mut line = String::new();
        BufReader::new(&c)
            .read_line(&mut line)
            .unwrap_or_else(|e| die(format!("read: {e}")));
        let line = line.trim_end();
        (&c).write_all(format!("echo: {line}\n").as_bytes())
            .unwrap_or_else(|e| die(format!("write: {e}")));
        println!("tcp-backlog: accepted {line}");
    }
    println!("tcp-backlog: done");
}
