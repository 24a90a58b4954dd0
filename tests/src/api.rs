//! A client of microvm's API socket for the integration tests, and what the snapshot tests (snapshot.rs,
//! jailer.rs) share: an HTTP/1.1 client (a connection per request) with Firecracker's calls, paths removed
//! on drop, and pausing a counting test guest until its output settles.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{read_http_response, wait_until, Vm};

/// A path removed when dropped (an API socket, which a killed microvm leaves behind).
pub struct TmpPath(pub PathBuf);

impl std::ops::Deref for TmpPath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TmpPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TmpPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A minimal HTTP/1.1 client: each request on a connection of its own, so that a test that waits long
/// between requests (a loaded machine) does not find its connection closed by the server, which closes a
/// connection silent for `READ_TIMEOUT` (5 s).
pub struct Client {
    sock: PathBuf,
}

/// An answer: status and body.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: String,
}

impl Resp {
    /// The `fault_message` of an error answer.
    pub fn fault(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.body).unwrap();
        v["fault_message"].as_str().unwrap().to_owned()
    }
}

impl Client {
    /// A client of the API socket `sock`, which must accept a connection now.
    pub fn connect(sock: &Path) -> Client {
        drop(UnixStream::connect(sock).unwrap());
        Client {
            sock: sock.to_owned(),
        }
    }

    pub fn request(&self, method: &str, path: &str, body: &str) -> Resp {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut stream = UnixStream::connect(&self.sock).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.write_all(req.as_bytes()).unwrap();
        let (status, body) = read_http_response(&mut stream);
        Resp { status, body }
    }

    /// A request that must answer 204.
    pub fn ok(&self, method: &str, path: &str, body: &str) {
        let r = self.request(method, path, body);
        assert_eq!(r.status, 204, "{method} {path} {body}: {r:?}");
    }

    /// `PUT /snapshot/create` of type `kind` (`Full` or `Diff`).
    pub fn snapshot(&self, kind: &str, state: &Path, mem: &Path) -> Resp {
        let body = format!(
            r#"{{"snapshot_type": "{kind}", "snapshot_path": "{}", "mem_file_path": "{}"}}"#,
            state.display(),
            mem.display()
        );
        self.request("PUT", "/snapshot/create", &body)
    }

    /// Pauses the VM, waits (up to `timeout`) for its console output to settle, and returns the last
    /// count the test guest's `count` mode printed.
    pub fn pause_settled(&self, vm: &Vm, timeout: Duration) -> u64 {
        self.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
        assert!(vm.output_settles(Duration::from_millis(150), timeout));
        *counts(&vm.stdout()).last().expect("the guest counted")
    }
}

/// Starts `microvm --api-sock SOCK EXTRA...` and waits (at most `timeout`) until the socket accepts
/// connections.
pub fn spawn_with_api(sock: &Path, extra: &[&str], timeout: Duration) -> Vm {
    let mut args = vec!["--api-sock", sock.to_str().unwrap()];
    args.extend(extra);
    let vm = Vm::spawn(&args);
    assert!(
        wait_until(timeout, || UnixStream::connect(sock).is_ok()),
        "the API socket never appeared"
    );
    vm
}

/// The numbers of the test guest's "count N" lines in `out`.
pub fn counts(out: &str) -> Vec<u64> {
    out.lines()
        .filter_map(|l| l.strip_prefix("count ")?.trim().parse().ok())
        .collect()
}

/// `--restore STATE --mem-file MEM --resume` and `extra`.
pub fn restore_args<'a>(state: &'a Path, mem: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--restore",
        state.to_str().unwrap(),
        "--mem-file",
        mem.to_str().unwrap(),
        "--resume",
    ];
    args.extend(extra);
    args
}
