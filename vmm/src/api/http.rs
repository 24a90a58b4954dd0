//! A minimal HTTP/1.1 server side over any byte stream: read one request (head parsed by `httparse`, body by
//! `Content-Length`), write one response. Persistent connections, pipelining (bytes after a request stay
//! buffered for the next), `Expect: 100-continue`, and limits: a head over [`MAX_HEAD`] bytes is a 400, a body
//! over [`MAX_BODY`] bytes a 413 (answered before the body is read), and a request must arrive whole within
//! [`REQUEST_DEADLINE`] of its first byte. Per-read timeouts are the socket's (set by the server).

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// Largest request body.
pub const MAX_BODY: usize = 64 * 1024;
/// Largest request line plus headers.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most headers in one request.
const MAX_HEADERS: usize = 32;
/// Time a request may take from its first byte to its last.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// One parsed request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
}

/// Why no request could be read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The peer closed the connection between requests.
    #[error("connection closed")]
    Closed,
    /// A read failed or timed out, or the peer closed mid-request.
    #[error("connection failed: {0}")]
    Io(#[source] io::Error),
    /// The bytes are not an acceptable HTTP/1.x request: answer 400 and close.
    #[error("{0}")]
    Malformed(String),
    /// The body is over [`MAX_BODY`]: answer 413 and close.
    #[error("request body of {0} bytes is over the limit of {MAX_BODY}")]
    TooLarge(usize),
}

/// Position just after the blank line ending the head, if it has arrived.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn read_more<S: Read>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    started: Instant,
) -> Result<(), HttpError> {
    if started.elapsed() > REQUEST_DEADLINE {
        return Err(HttpError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            "request not complete in time",
        )));
    }
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(if buf.is_empty() {
                    HttpError::Closed
                } else {
                    HttpError::Io(io::ErrorKind::UnexpectedEof.into())
                })
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HttpError::Io(e)),
        }
    }
}

/// Reads the next request from `stream`. `buf` holds bytes read but not yet used; keep it across calls on the
/// same connection.
pub fn read_request<S: Read + Write>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<Request, HttpError> {
    let mut req = Request::default();
    read_request_into(stream, buf, &mut req)?;
    Ok(req)
}

/// [`read_request`] into `out`, whose strings and body keep their capacity: a connection that reuses one
/// `Request` (and `buf`) allocates nothing per request once they have grown to its requests' sizes.
pub fn read_request_into<S: Read + Write>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    out: &mut Request,
) -> Result<(), HttpError> {
    let started = Instant::now();
    let head_len = loop {
        if let Some(n) = head_end(buf) {
            break n;
        }
        if buf.len() > MAX_HEAD {
            return Err(HttpError::Malformed(format!(
                "request head is over {MAX_HEAD} bytes"
            )));
        }
        read_more(stream, buf, started)?;
    };
    if head_len > MAX_HEAD {
        return Err(HttpError::Malformed(format!(
            "request head is over {MAX_HEAD} bytes"
        )));
    }

    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(HttpError::Malformed("incomplete request head".into()))
        }
        Err(e) => return Err(HttpError::Malformed(format!("bad request head: {e}"))),
    }
    out.method.clear();
    out.method.push_str(req.method.unwrap_or_default());
    out.path.clear();
    out.path.push_str(req.path.unwrap_or_default());
    let version = req.version.unwrap_or(1);
    let mut keep_alive = version == 1;
    let mut length = 0usize;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| HttpError::Malformed(format!("header {} is not UTF-8", h.name)))?
            .trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            length = value
                .parse()
                .map_err(|_| HttpError::Malformed(format!("bad Content-Length {value:?}")))?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::Malformed(
                "Transfer-Encoding is not supported: send a Content-Length".into(),
            ));
        } else if h.name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                keep_alive = false;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                keep_alive = true;
            }
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = value.eq_ignore_ascii_case("100-continue");
        }
    }
    if length > MAX_BODY {
        return Err(HttpError::TooLarge(length));
    }
    buf.drain(..head_len);
    if expect_continue && buf.len() < length {
        stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .map_err(HttpError::Io)?;
    }
    while buf.len() < length {
        read_more(stream, buf, started)?;
    }
    out.body.clear();
    out.body.extend_from_slice(&buf[..length]);
    buf.drain(..length);
    out.keep_alive = keep_alive;
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes a response; `body` is JSON. A 204 has no body.
pub fn write_response<W: Write>(
    out: &mut W,
    status: u16,
    body: &str,
    keep_alive: bool,
) -> io::Result<()> {
    write_response_with(out, &mut Vec::new(), status, body, keep_alive)
}

/// [`write_response`] composing the response in `scratch` (cleared first; a connection keeps one, so that
/// answering allocates nothing once it has grown), sent with one write.
pub fn write_response_with<W: Write>(
    out: &mut W,
    scratch: &mut Vec<u8>,
    status: u16,
    body: &str,
    keep_alive: bool,
) -> io::Result<()> {
    scratch.clear();
    write!(
        scratch,
        "HTTP/1.1 {status} {}\r\nServer: microvm\r\n",
        reason(status)
    )?;
    if !keep_alive {
        scratch.extend_from_slice(b"Connection: close\r\n");
    }
    if status == 204 {
        scratch.extend_from_slice(b"\r\n");
    } else {
        write!(
            scratch,
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )?;
        scratch.extend_from_slice(body.as_bytes());
    }
    out.write_all(scratch)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake connection: reads come from `input` in chunks of `chunk` bytes, writes go to `output`.
    struct Fake {
        input: Vec<u8>,
        pos: usize,
        chunk: usize,
        output: Vec<u8>,
    }

    impl Fake {
        fn new(input: &[u8], chunk: usize) -> Self {
            Self {
                input: input.to_vec(),
                pos: 0,
                chunk,
                output: Vec::new(),
            }
        }
    }

    impl Read for Fake {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.chunk.min(out.len()).min(self.input.len() - self.pos);
            out[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    impl Write for Fake {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn reads_pipelined_requests_in_small_pieces() {
        let input =
            b"PUT /machine-config HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n{\"a\":1}\
                      GET / HTTP/1.1\r\nConnection: close\r\n\r\n";
        let mut s = Fake::new(input, 3);
        let mut buf = Vec::new();
        let r = read_request(&mut s, &mut buf).unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("PUT", "/machine-config")
        );
        assert_eq!(r.body, b"{\"a\":1}");
        assert!(r.keep_alive);
        let r = read_request(&mut s, &mut buf).unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/"));
        assert!(r.body.is_empty() && !r.keep_alive);
        assert!(matches!(
            read_request(&mut s, &mut buf),
            Err(HttpError::Closed)
        ));
    }

    #[test]
    fn limits_and_malformed_requests() {
        let mut buf = Vec::new();
        let big = format!(
            "PUT /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(matches!(
            read_request(&mut Fake::new(big.as_bytes(), 4096), &mut buf),
            Err(HttpError::TooLarge(n)) if n == MAX_BODY + 1
        ));
        let mut buf = Vec::new();
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(
            read_request(&mut Fake::new(long.as_bytes(), 4096), &mut buf),
            Err(HttpError::Malformed(_))
        ));
        for bad in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let mut buf = Vec::new();
            assert!(matches!(
                read_request(&mut Fake::new(bad, 4096), &mut buf),
                Err(HttpError::Malformed(_))
            ));
        }
        // Half a request, then EOF.
        let mut buf = Vec::new();
        assert!(matches!(
            read_request(
                &mut Fake::new(b"PUT / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab", 4096),
                &mut buf
            ),
            Err(HttpError::Io(_))
        ));
    }

    #[test]
    fn expect_continue_and_http10() {
        let mut s = Fake::new(
            b"PUT /a HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
            60, // The head alone: the body comes after the 100 Continue.
        );
        let mut buf = Vec::new();
        let r = read_request(&mut s, &mut buf).unwrap();
        assert_eq!(r.body, b"{}");
        assert!(!r.keep_alive);
        assert_eq!(s.output, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn writes_responses() {
        let mut out = Vec::new();
        write_response(&mut out, 204, "", true).unwrap();
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\nServer: microvm\r\n\r\n");
        let mut out = Vec::new();
        write_response(&mut out, 400, "{}", false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("Content-Length: 2\r\n\r\n{}"));
    }
}
