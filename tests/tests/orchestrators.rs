//! The calls orchestrators make after the VM has started, against the project's guest kernel.
//!
//! `PATCH /drives/{id}`: firecracker-containerd boots with placeholder drives and points them at the
//! container's image once it has one. Here the guest runs busybox ash; a drive starts on a 64 KiB file,
//! is PATCHed to a 192 KiB file with other contents (the guest kernel logs the config-change interrupt
//! and the new capacity; `wc -c < /dev/vdb` and the bytes read change), then to the same file grown in
//! place (the old descriptor's lock must not refuse it); a path that does not open is a 400 and the drive
//! keeps working; unknown ids, mismatched ids and PATCH before InstanceStart are 400s; a rate limiter
//! PATCHed in reads back from `GET /vm/config`.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tests::{read_http_response, wait_until, GuestImages, Vm};

const T: Duration = Duration::from_secs(90);

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("microvm-orch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// One request on a fresh connection: (status, body).
fn api(sock: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    read_http_response(&mut s)
}

/// Types a command line into the guest's ash and waits for `text` in what follows.
fn type_and_wait(vm: &mut Vm, line: &str, text: &str) {
    let before = vm.stdout().len();
    vm.send(format!("{line}\r").as_bytes());
    assert!(
        wait_until(T, || vm.stdout()[before..].contains(text)),
        "typed {line:?}, waited for {text:?}; console:\n{}",
        vm.stdout()
    );
}

fn image(name: &str, len: usize, head: &[u8]) -> PathBuf {
    let path = tmp(name);
    let mut data = vec![0u8; len];
    data[..head.len()].copy_from_slice(head);
    std::fs::write(&path, data).unwrap();
    path
}

#[test]
fn patch_drives_points_a_running_guest_at_another_file() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let placeholder = image("placeholder.img", 64 << 10, b"PLACEHOLDER!");
    let real = image("real.img", 192 << 10, b"PATCHED-DISK");
    let sock = tmp("patch.sock");
    let disk = format!("{},id=data", placeholder.display());
    let sock_arg = sock.display().to_string();
    let mut vm = Vm::spawn(&images.args(
        &["--disk", &disk, "--api-sock", &sock_arg],
        "console=ttyS0 root=/dev/vda -- run /bin/ash",
    ));
    vm.wait_for_output("/ # ", T);
    type_and_wait(&mut vm, "wc -c < /dev/vdb", "65536");
    type_and_wait(&mut vm, "head -c 12 /dev/vdb; echo", "PLACEHOLDER!\n");

    // Another file: the guest sees the config change and the new size and contents.
    let body = format!(
        r#"{{"drive_id": "data", "path_on_host": "{}"}}"#,
        real.display()
    );
    assert_eq!(api(&sock, "PATCH", "/drives/data", &body).0, 204);
    vm.wait_for_output(
        "virtio-blk: vdb: capacity changed from 128 to 384 sectors",
        T,
    );
    type_and_wait(&mut vm, "wc -c < /dev/vdb", "196608");
    type_and_wait(&mut vm, "head -c 12 /dev/vdb; echo", "PATCHED-DISK\n");
    // Writes reach the new file.
    type_and_wait(
        &mut vm,
        "printf WRITTEN | dd of=/dev/vdb bs=1 seek=100 conv=notrunc 2>/dev/null; echo dd=$?",
        "dd=0",
    );
    let data = std::fs::read(&real).unwrap();
    assert_eq!(&data[100..107], b"WRITTEN", "{}", vm.stdout());
    assert_eq!(&std::fs::read(&placeholder).unwrap()[..12], b"PLACEHOLDER!");

    // The same file, grown in place.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&real)
        .unwrap()
        .set_len(256 << 10)
        .unwrap();
    assert_eq!(api(&sock, "PATCH", "/drives/data", &body).0, 204);
    vm.wait_for_output(
        "virtio-blk: vdb: capacity changed from 384 to 512 sectors",
        T,
    );
    type_and_wait(&mut vm, "wc -c < /dev/vdb", "262144");

    // Refusals: the drive is unchanged after each.
    let (status, e) = api(
        &sock,
        "PATCH",
        "/drives/data",
        r#"{"drive_id": "data", "path_on_host": "/nonexistent/x.img"}"#,
    );
    assert_eq!(status, 400, "{e}");
    assert!(e.contains("cannot use") && e.contains("x.img"), "{e}");
    let (status, e) = api(
        &sock,
        "PATCH",
        "/drives/nope",
        r#"{"drive_id": "nope", "path_on_host": "/tmp"}"#,
    );
    assert_eq!(status, 400, "{e}");
    assert!(e.contains("no drive with drive_id \\\"nope\\\""), "{e}");
    let (status, e) = api(&sock, "PATCH", "/drives/data", r#"{"drive_id": "other"}"#);
    assert_eq!(status, 400, "{e}");
    let (status, e) = api(
        &sock,
        "PATCH",
        "/drives/data",
        r#"{"drive_id": "data", "is_read_only": true}"#,
    );
    assert_eq!(status, 400, "{e}");
    assert!(e.contains("unknown field"), "{e}");
    type_and_wait(&mut vm, "head -c 12 /dev/vdb; echo", "PATCHED-DISK\n");

    // A rate limiter PATCHed in is part of the configuration.
    let (status, e) = api(
        &sock,
        "PATCH",
        "/drives/data",
        r#"{"drive_id": "data", "rate_limiter": {"ops": {"size": 100, "refill_time": 1000}}}"#,
    );
    assert_eq!(status, 204, "{e}");
    let (_, config) = api(&sock, "GET", "/vm/config", "");
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    let drive = config["drives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["drive_id"] == "data")
        .unwrap();
    assert_eq!(drive["path_on_host"], real.display().to_string());
    assert_eq!(
        drive["rate_limiter"],
        serde_json::json!({"ops": {"size": 100, "refill_time": 1000}})
    );
    type_and_wait(&mut vm, "wc -c < /dev/vdb", "262144");

    vm.send(b"exit\r");
    let out = vm.wait(T);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
}

#[test]
fn patch_is_refused_before_instance_start() {
    let sock = tmp("preboot.sock");
    let vm = Vm::spawn(&["--api-sock", sock.to_str().unwrap()]);
    assert!(wait_until(T, || UnixStream::connect(&sock).is_ok()));
    for (path, body) in [
        (
            "/drives/rootfs",
            r#"{"drive_id": "rootfs", "path_on_host": "/tmp/x"}"#,
        ),
        (
            "/network-interfaces/eth0",
            r#"{"iface_id": "eth0", "rx_rate_limiter": {"ops": {"size": 1, "refill_time": 1}}}"#,
        ),
    ] {
        let (status, e) = api(&sock, "PATCH", path, body);
        assert_eq!(status, 400, "{path}: {e}");
        assert!(e.contains("only allowed after InstanceStart"), "{e}");
    }
    vm.signal(libc::SIGTERM);
    let out = vm.wait(T);
    assert_eq!(out.code, Some(143), "{}", out.stderr);
}
