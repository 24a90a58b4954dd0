//! `httpd PORT [ROOT]`: a small HTTP/1.0 server for files under ROOT (default /srv), one connection at a
//! time. GET and HEAD; `200` with Content-Length, `404` for what is missing, `400`/`405` for the rest.
//! Each response closes its connection.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};

/// Largest request header accepted.
const MAX_HEADER: usize = 16 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(port) = args.get(1).and_then(|p| p.parse::<u16>().ok()) else {
        eprintln!("usage: httpd PORT [ROOT]");
        std::process::exit(2);
    };
    let root = PathBuf::from(args.get(2).map_or("/srv", String::as_str));
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("httpd: bind port {port}: {e}");
            std::process::exit(1);
        }
    };
    println!("httpd: serving {} on port {port}", root.display());
    for conn in listener.incoming() {
        match conn {
            Ok(c) => {
                if let Err(e) = serve(c, &root) {
                    eprintln!("httpd: {e}");
                }
            }
            Err(e) => eprintln!("httpd: accept: {e}"),
        }
    }
}

/// Reads the request header (up to the blank line).
fn read_header(c: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        if buf.len() > MAX_HEADER {
            return Ok(None);
        }
        let n = c.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// The file for a request path: under `root`, no `..`.
fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split('?').next()?;
    let rel = Path::new(path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(rel))
}

fn respond(c: &mut TcpStream, status: &str, body: &[u8]) -> std::io::Result<()> {
    write!(
        c,
        "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    c.write_all(body)
}

fn serve(mut c: TcpStream, root: &Path) -> std::io::Result<()> {
    let Some(header) = read_header(&mut c)? else {
        return respond(&mut c, "400 Bad Request", b"bad request\n");
    };
    let mut words = header.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return respond(&mut c, "405 Method Not Allowed", b"method not allowed\n");
    }
    let file = resolve(root, target)
        .filter(|p| p.is_file())
        .and_then(|p| File::open(p).ok());
    let Some(mut file) = file else {
        return respond(&mut c, "404 Not Found", b"not found\n");
    };
    let len = file.metadata()?.len();
    write!(
        c,
        "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )?;
    if method == "GET" {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            c.write_all(&buf[..n])?;
        }
    }
    Ok(())
}
