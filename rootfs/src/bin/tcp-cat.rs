//! `tcp-cat HOST PORT`: like `nc`: copies stdin to a TCP connection and the connection to stdout; at
//! stdin's end it half-closes (shutdown write) and keeps copying until the peer closes.
//!
//! Test modes, for moving bulk data without a file of that size:
//! - `tcp-cat --gen BYTES HOST PORT`: sends BYTES of a fixed pseudo-random stream instead of stdin;
//! - `tcp-cat --sum HOST PORT`: sends nothing and reads the connection into a checksum instead of stdout;
//! - `tcp-cat --listen PORT [--no-read]`: accepts one connection instead of connecting (`--no-read`:
//!   then never reads it, to test a receiver that stalls);
//! - `--timeout SECS`: a read timeout on the connection (SO_RCVTIMEO); a read that times out ends it.
//!
//! Both bulk modes print `tcp-cat: sent|received N bytes crc32 XXXXXXXX in S ms` at the end (CRC-32/IEEE).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Instant;

/// CRC-32 (IEEE 802.3, reflected, as zlib's crc32), table-driven.
struct Crc32 {
    table: [u32; 256],
    value: u32,
}

impl Crc32 {
    fn new() -> Crc32 {
        let mut table = [0u32; 256];
        for (i, t) in table.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *t = c;
        }
        Crc32 { table, value: !0 }
    }

    fn update(&mut self, data: &[u8]) {
        let mut c = self.value;
        for &b in data {
            c = self.table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
        }
        self.value = c;
    }

    fn finish(&self) -> u32 {
        !self.value
    }
}

/// The `--gen` stream: xorshift64 bytes from a fixed seed (the tests compute the same).
struct Pattern(u64);

impl Pattern {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    }
}

fn die(msg: String) -> ! {
    eprintln!("tcp-cat: {msg}");
    std::process::exit(1);
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut gen = None;
    let mut sum = false;
    let mut listen = false;
    let mut no_read = false;
    let mut timeout = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--gen" => {
                gen = args.get(i + 1).and_then(|n| n.parse::<u64>().ok());
                if gen.is_none() {
                    die("--gen needs a byte count".into());
                }
                args.drain(i..i + 2);
            }
            "--timeout" => {
                timeout = args.get(i + 1).and_then(|n| n.parse::<u64>().ok());
                if timeout.is_none() {
                    die("--timeout needs seconds".into());
                }
                args.drain(i..i + 2);
            }
            "--sum" => {
                sum = true;
                args.remove(i);
            }
            "--listen" | "-l" => {
                listen = true;
                args.remove(i);
            }
            "--no-read" => {
                no_read = true;
                args.remove(i);
            }
            _ => i += 1,
        }
    }
    let conn = if listen {
        let port = args.first().and_then(|p| p.parse::<u16>().ok());
        let Some(port) = port else {
            die("usage: tcp-cat --listen PORT [--no-read]".into())
        };
        let l = TcpListener::bind(("0.0.0.0", port)).unwrap_or_else(|e| die(format!("bind: {e}")));
        println!("tcp-cat: listening on port {port}");
        let (c, peer) = l.accept().unwrap_or_else(|e| die(format!("accept: {e}")));
        println!("tcp-cat: connection from {peer}");
        if no_read {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        c
    } else {
        if args.len() != 2 {
            die("usage: tcp-cat [--gen BYTES | --sum] HOST PORT".into());
        }
        let port: u16 = args[1]
            .parse()
            .unwrap_or_else(|_| die(format!("bad port {}", args[1])));
        TcpStream::connect((args[0].as_str(), port))
            .unwrap_or_else(|e| die(format!("connect {}:{port}: {e}", args[0])))
    };
    if let Some(secs) = timeout {
        conn.set_read_timeout(Some(std::time::Duration::from_secs(secs)))
            .unwrap_or_else(|e| die(format!("SO_RCVTIMEO: {e}")));
    }
    let start = Instant::now();
    if let Some(total) = gen {
        let mut w = conn.try_clone().unwrap_or_else(|e| die(format!("{e}")));
        let mut crc = Crc32::new();
        let mut pat = Pattern(0x9e37_79b9_7f4a_7c15);
        let mut buf = vec![0u8; 256 * 1024];
        let mut left = total;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            pat.fill(&mut buf[..n]);
            crc.update(&buf[..n]);
            w.write_all(&buf[..n])
                .unwrap_or_else(|e| die(format!("send: {e}")));
            left -= n as u64;
        }
        let _ = w.shutdown(Shutdown::Write);
        // Wait for the peer to close, so everything was delivered.
        let mut sink = [0u8; 4096];
        let mut r = conn;
        while matches!(r.read(&mut sink), Ok(n) if n > 0) {}
        println!(
            "tcp-cat: sent {total} bytes crc32 {:08x} in {} ms",
            crc.finish(),
            start.elapsed().as_millis()
        );
        return;
    }
    if sum {
        let _ = conn.shutdown(Shutdown::Write);
        let mut crc = Crc32::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        let mut r = conn;
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    crc.update(&buf[..n]);
                    total += n as u64;
                }
                Err(e) => die(format!("receive: {e}")),
            }
        }
        println!(
            "tcp-cat: received {total} bytes crc32 {:08x} in {} ms",
            crc.finish(),
            start.elapsed().as_millis()
        );
        return;
    }
    // nc: one poll loop (no threads: the guest kernel has none) over stdin and the socket.
    copy_both_ways(conn);
}

fn copy_both_ways(mut conn: TcpStream) {
    use std::os::fd::AsRawFd;
    let mut stdin_open = true;
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = std::io::stdout().lock();
    loop {
        let mut fds = [
            libc::pollfd {
                fd: conn.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if stdin_open { 0 } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of two pollfd structures for the duration of the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            die(format!("poll: {}", std::io::Error::last_os_error()));
        }
        if fds[1].revents != 0 {
            // SAFETY: reading into a buffer we own, of its length.
            let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                stdin_open = false;
                let _ = conn.shutdown(Shutdown::Write);
            } else if conn.write_all(&buf[..n as usize]).is_err() {
                stdin_open = false;
            }
        }
        if fds[0].revents != 0 {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => die(format!("receive: {e}")),
            }
        }
    }
}
