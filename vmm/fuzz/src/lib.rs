//! Bodies of the vmm fuzz targets, callable from the libFuzzer binaries (`fuzz_targets/`) and from the
//! stable regression test that replays the seed corpora (`tests/corpora.rs`). Each returns what the seed
//! test checks, so a seed that stops reaching its code fails there.

use std::io::{self, Read, Write};

use vmm::api::http::{read_request, write_response, HttpError};
use vmm::api::routes::{route, Action};
use vmm::config::{DriveConfig, NetConfig, VmConfig};

/// A connection whose peer sends the input: reads return at most `chunk` bytes at a time (so requests
/// arrive in pieces), writes (responses, `100 Continue`) are counted and dropped.
struct Conn<'a> {
    input: &'a [u8],
    chunk: usize,
    written: usize,
}

impl Read for Conn<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl Write for Conn<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What one connection did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HttpOutcome {
    /// Requests parsed.
    pub requests: usize,
    /// Of those, requests that routed to an action.
    pub routed: usize,
    /// Statuses answered, in order (the last one may be for a request that could not be parsed).
    pub statuses: Vec<u16>,
}

/// The first byte picks the read size (1..=256 bytes), the rest is what the client sends. Requests are
/// read until the connection ends or breaks; each is routed and answered as `api::server` does (an
/// action gets a 204 here, since no VM runs).
pub fn api_http(data: &[u8]) -> HttpOutcome {
    let Some((&chunk, input)) = data.split_first() else {
        return HttpOutcome::default();
    };
    let mut conn = Conn {
        input,
        chunk: usize::from(chunk) + 1,
        written: 0,
    };
    let mut buf = Vec::new();
    let mut out = HttpOutcome::default();
    // A bound on requests per input (pipelining); each consumes at least 18 bytes.
    for _ in 0..64 {
        match read_request(&mut conn, &mut buf) {
            Ok(req) => {
                out.requests += 1;
                let (status, body) = match route(&req.method, &req.path, &req.body) {
                    Ok(_) => {
                        out.routed += 1;
                        (204, String::new())
                    }
                    Err(e) => (e.status(), e.body()),
                };
                out.statuses.push(status);
                let _ = write_response(&mut conn, status, &body, req.keep_alive);
                if !req.keep_alive {
                    break;
                }
            }
            Err(HttpError::Closed) | Err(HttpError::Io(_)) => break,
            Err(e @ HttpError::Malformed(_)) => {
                out.statuses.push(400);
                let _ = write_response(&mut conn, 400, &e.to_string(), false);
                break;
            }
            Err(e @ HttpError::TooLarge(_)) => {
                out.statuses.push(413);
                let _ = write_response(&mut conn, 413, &e.to_string(), false);
                break;
            }
        }
    }
    out
}

/// Methods the routes know, picked by the first byte (any other byte value: the method is the input's
/// next line).
const METHODS: [&str; 5] = ["GET", "PUT", "PATCH", "POST", "DELETE"];

/// `method-byte path '\n' body`: routes (method, path, body). Checks what every routed action promises:
/// a drive or interface PUT names the same id in the path and the body.
pub fn api_routes(data: &[u8]) -> Result<Action, u16> {
    let Some((&m, rest)) = data.split_first() else {
        return Err(0);
    };
    let (method, rest) = match METHODS.get(usize::from(m)) {
        Some(method) => (method.to_string(), rest),
        None => {
            let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            (
                String::from_utf8_lossy(&rest[..end]).into_owned(),
                rest.get(end + 1..).unwrap_or_default(),
            )
        }
    };
    let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let path = String::from_utf8_lossy(&rest[..end]).into_owned();
    let body = rest.get(end + 1..).unwrap_or_default();
    let res = route(&method, &path, body);
    match &res {
        Ok(Action::PutDrive(d)) => {
            assert!(path
                .split('?')
                .next()
                .unwrap_or_default()
                .ends_with(&format!("/{}", d.drive_id)));
        }
        Ok(Action::PutNetworkInterface(n)) => {
            assert!(path
                .split('?')
                .next()
                .unwrap_or_default()
                .ends_with(&format!("/{}", n.iface_id)));
        }
        Ok(_) => {}
        Err(e) => {
            let status = e.status();
            assert!((400..600).contains(&status), "{e}");
            let body: serde_json::Value =
                serde_json::from_str(&e.body()).expect("error bodies are JSON");
            assert!(body["fault_message"].is_string());
        }
    }
    res.map_err(|e| e.status())
}

/// What the configuration target reached.
#[derive(Debug, PartialEq, Eq)]
pub enum ConfigOutcome {
    /// The JSON parsed; whether it also validated.
    Json { valid: bool },
    /// The JSON did not parse.
    BadJson,
    /// A `--disk` / `--net` / MAC flag parsed (or not).
    Flag(bool),
}

/// The first byte picks the parser: 0 the `--config-file` JSON (parsed, validated, and when it parses,
/// serialized and parsed again, which must give the same configuration), 1 `--disk`, 2 `--net`, 3 a MAC.
pub fn config_json(data: &[u8]) -> ConfigOutcome {
    let Some((&kind, rest)) = data.split_first() else {
        return ConfigOutcome::BadJson;
    };
    let text = String::from_utf8_lossy(rest);
    match kind % 4 {
        0 => match serde_json::from_slice::<VmConfig>(rest) {
            Ok(cfg) => {
                let valid = cfg.validate().is_ok();
                let _ = cfg.cmdline();
                let _ = cfg.ordered_drives();
                let again = serde_json::to_string(&cfg).expect("a parsed configuration serializes");
                let back: VmConfig =
                    serde_json::from_str(&again).expect("its serialization parses");
                assert_eq!(
                    back, cfg,
                    "the configuration changed in a JSON round trip: {again}"
                );
                ConfigOutcome::Json { valid }
            }
            Err(_) => ConfigOutcome::BadJson,
        },
        1 => ConfigOutcome::Flag(DriveConfig::parse(&text).is_ok()),
        2 => ConfigOutcome::Flag(NetConfig::parse(&text).is_ok_and(|n| {
            let _ = n.mac();
            true
        })),
        _ => ConfigOutcome::Flag(vmm::config::parse_mac(&text).is_some()),
    }
}
