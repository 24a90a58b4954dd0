//! virtio-vsock end to end: `microvm` with a vsock device, clients on its Unix socket.
//!
//! With the PVH test guest (no vsock driver): the device is configured from the flag, the API and a config
//! file and reads back in `GET /vm/config`; its Unix socket closes a malformed `CONNECT` line or a port out of
//! range at once, and a `CONNECT` the guest never answers after the timeout, while the VM runs on.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tests::{read_http_response, require_kvm, wait_until, Vm};

const T: Duration = Duration::from_secs(60);
const PVH: &str = env!("GUEST_PVH");

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("microvm-vsock-{}-{name}", std::process::id()))
}

/// Reads until EOF (or a reset, which also closes), within `timeout`; returns what came.
fn read_to_close(s: &mut UnixStream, timeout: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut out = Vec::new();
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&b[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("the socket was not closed within {timeout:?}: {e}"),
        }
    }
}

fn api(sock: &PathBuf, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    read_http_response(&mut s)
}

#[test]
fn the_host_side_refuses_bad_lines_and_times_out_unanswered_connects() {
    if !require_kvm() {
        return;
    }
    let uds = tmp("a.sock");
    let api_sock = tmp("a.api");
    let vm = Vm::spawn(&[
        "--kernel",
        PVH,
        "--cmdline",
        "count",
        "--vsock",
        &format!("cid=3,uds={}", uds.display()),
        "--api-sock",
        api_sock.to_str().unwrap(),
    ]);
    vm.wait_for_output("counting", T);
    assert!(wait_until(T, || UnixStream::connect(&uds).is_ok()));
    let (status, body) = api(&api_sock, "GET", "/vm/config", "");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["vsock"],
        serde_json::json!({"guest_cid": 3, "uds_path": uds.to_str().unwrap()})
    );
    for line in [
        "CONNECT x\n",
        "CONNECT 4294967296\n",
        "GET / HTTP/1.0\r\n\r\n",
    ] {
        let mut c = UnixStream::connect(&uds).unwrap();
        c.write_all(line.as_bytes()).unwrap();
        assert_eq!(read_to_close(&mut c, T), b"", "{line:?}");
    }
    // The guest has no driver: the REQUEST is never answered, and the client is closed after 5 s.
    let start = Instant::now();
    let mut c = UnixStream::connect(&uds).unwrap();
    c.write_all(b"CONNECT 1024\n").unwrap();
    assert_eq!(read_to_close(&mut c, T), b"");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(4), "closed after {waited:?}");
    let (status, _) = api(&api_sock, "GET", "/", "");
    assert_eq!(status, 200, "the VMM still answers");
    let n = vm.stdout().matches("count ").count();
    assert!(wait_until(T, || vm.stdout().matches("count ").count() > n));
    drop(vm);
    let _ = std::fs::remove_file(&uds);
}

#[test]
fn put_vsock_before_start_and_refused_after() {
    if !require_kvm() {
        return;
    }
    let uds = tmp("b.sock");
    let api_sock = tmp("b.api");
    let vm = Vm::spawn(&["--api-sock", api_sock.to_str().unwrap()]);
    assert!(wait_until(T, || UnixStream::connect(&api_sock).is_ok()));
    let body = format!(
        r#"{{"vsock_id": "vsock0", "guest_cid": 3, "uds_path": "{}"}}"#,
        uds.display()
    );
    let (status, answer) = api(
        &api_sock,
        "PUT",
        "/vsock",
        r#"{"guest_cid": 2, "uds_path": "x"}"#,
    );
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("guest_cid 2 is reserved"), "{answer}");
    let (status, answer) = api(&api_sock, "PUT", "/vsock", r#"{"guest_cid": 3}"#);
    assert_eq!(status, 400, "{answer}");
    assert_eq!(api(&api_sock, "PUT", "/vsock", &body).0, 204);
    let boot = format!(r#"{{"kernel_image_path": "{PVH}", "boot_args": "count"}}"#);
    assert_eq!(api(&api_sock, "PUT", "/boot-source", &boot).0, 204);
    let start = r#"{"action_type": "InstanceStart"}"#;
    assert_eq!(api(&api_sock, "PUT", "/actions", start).0, 204);
    vm.wait_for_output("counting", T);
    assert!(UnixStream::connect(&uds).is_ok());
    let (status, answer) = api(&api_sock, "PUT", "/vsock", &body);
    assert_eq!(status, 400, "{answer}");
    assert!(vm.stdout().contains("virtio_mmio.device=4K@0xd0000000:5"));
    drop(vm);
    let _ = std::fs::remove_file(&uds);
}
