//! The calls orchestrators make after the VM has started, against the project's guest kernel.
//!
//! `PATCH /drives/{id}`: firecracker-containerd boots with placeholder drives and points them at the
//! container's image once it has one. Here the guest runs busybox ash; a drive starts on a 64 KiB file,
//! is PATCHed to a 192 KiB file with other contents (the guest kernel logs the config-change interrupt
//! and the new capacity; `wc -c < /dev/vdb` and the bytes read change), then to the same file grown in
//! place (the old descriptor's lock must not refuse it); a path that does not open is a 400 and the drive
//! keeps working; unknown ids, mismatched ids and PATCH before InstanceStart are 400s; a rate limiter
//! PATCHed in reads back from `GET /vm/config`.
//!
//! Then the two orchestrators' call sequences, replayed as their code makes them (README, "Using microvm
//! under Kata or firecracker-containerd", lists them), against the guest kernel with busybox ash and a
//! vsock echo server on port 1024 as the stand-in for their in-guest agents, reached as they reach it
//! (`CONNECT 1024` on the vsock device's Unix socket):
//! - Kata (src/runtime/virtcontainers/fc.go): a config file with `machine-config` carrying the old
//!   `ht_enabled`, the root image as a read-only non-root drive `rootfs`, a pool of eight empty placeholder
//!   drives `drive_0`..`drive_7`, `logger` and `metrics` on FIFOs Kata opened first; `microvm --api-sock
//!   --config-file` with a `vsock` section (the old `vsock_id` in it); `GET /` polled every 10 ms until the
//!   VM runs (Kata gives up after 10 s); the agent connection; a block
//!   device hot-plugged as `PATCH /drives/drive_0` onto an image and unplugged by patching it back to
//!   its empty placeholder; SIGTERM (Kata waits 15 s).
//! - firecracker-containerd (runtime/service.go through firecracker-go-sdk, runtime/drive_handler.go):
//!   `microvm --api-sock --id`; `GET /machine-config` polled until the socket answers; `PUT /logger`,
//!   `PUT /metrics`, `PUT /machine-config`, `PUT /boot-source`, `PUT /drives/root_drive`, the stub drives
//!   (ids the base32 of their file names, `ctrstub0` and a drive-mount stub with a rate limiter, each a
//!   512-byte file naming itself), `PUT /vsock`, `PUT /actions InstanceStart`, the agent connection; a
//!   container's image is `PATCH`ed onto the
//!   stub and back on release; `FlushMetrics`; shutdown by `SendCtrlAltDel`.

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

/// The agent connection: `CONNECT 1024` on the vsock device's Unix socket until the guest's listener
/// (started from the shell just before) answers `OK`, then a line echoed through it.
fn agent_round_trip(uds: &Path) {
    use std::io::{BufRead, BufReader};
    let mut answered = None;
    assert!(
        wait_until(T, || {
            let Ok(mut s) = UnixStream::connect(uds) else {
                return false;
            };
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            if s.write_all(b"CONNECT 1024\n").is_err() {
                return false;
            }
            let mut line = String::new();
            let mut r = BufReader::new(s.try_clone().unwrap());
            if r.read_line(&mut line).is_err() || !line.starts_with("OK ") {
                return false;
            }
            answered = Some((s, r));
            true
        }),
        "the guest's agent port 1024 never answered CONNECT"
    );
    let (mut s, mut r) = answered.unwrap();
    s.write_all(b"agent: hello\n").unwrap();
    let mut echo = String::new();
    r.read_line(&mut echo).unwrap();
    assert_eq!(echo, "agent: hello\n");
}

/// Reads whatever the FIFO holds now.
fn drain(fifo: &mut std::fs::File) -> String {
    use std::io::Read;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = fifo.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Makes a FIFO and opens it as the orchestrators do before starting the VMM (read, non-blocking).
fn fifo(name: &str) -> (PathBuf, std::fs::File) {
    use std::os::unix::fs::OpenOptionsExt;
    let path = tmp(name);
    let _ = std::fs::remove_file(&path);
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .unwrap();
    (path, f)
}

#[test]
fn kata_containers_call_sequence() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let (log_path, mut log) = fifo("kata-logs.fifo");
    let (metrics_path, mut metrics) = fifo("kata-metrics.fifo");
    let hvsock = tmp("kata.hvsock");
    // createDiskPool: empty files (os.Create) as the placeholders' backends.
    let mut drives = vec![
        serde_json::json!({"drive_id": "rootfs", "is_read_only": true,
        "is_root_device": false, "path_on_host": images.disk}),
    ];
    let mut placeholders = Vec::new();
    for i in 0..8 {
        let p = tmp(&format!("drive_{i}"));
        std::fs::File::create(&p).unwrap();
        drives.push(
            serde_json::json!({"drive_id": format!("drive_{i}"), "is_read_only": false,
            "is_root_device": false, "path_on_host": p}),
        );
        placeholders.push(p);
    }
    // fcKernelParams (our kernel's root is /dev/vda itself, not Kata's partitioned image's vda1).
    let boot_args = "console=ttyS0 pci=off reboot=k panic=1 iommu=off net.ifnames=0 \
                     random.trust_cpu=on acpi=off root=/dev/vda -- run /bin/ash";
    let config = serde_json::json!({
        "boot-source": {"kernel_image_path": images.kernel, "boot_args": boot_args},
        "drives": drives,
        "machine-config": {"ht_enabled": false, "mem_size_mib": 128, "vcpu_count": 1},
        "logger": {"level": "Error", "log_path": log_path},
        "metrics": {"metrics_path": metrics_path},
        // fcAddVsock: the hybrid vsock, CID 3, with the pre-1.0 vsock_id.
        "vsock": {"guest_cid": 3, "uds_path": hvsock, "vsock_id": "root"},
    });
    let config_path = tmp("fcConfig.json");
    let _ = std::fs::remove_file(&hvsock);
    std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let sock = tmp("kata.sock");
    let mut vm = Vm::spawn(&[
        "--api-sock",
        sock.to_str().unwrap(),
        "--config-file",
        config_path.to_str().unwrap(),
    ]);
    // waitVMMRunning: DescribeInstance every 10 ms, 10 s at most.
    let t0 = std::time::Instant::now();
    let mut info = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), || {
            if UnixStream::connect(&sock).is_err() {
                return false;
            }
            let (status, body) = api(&sock, "GET", "/", "");
            info = serde_json::from_str(&body).unwrap_or_default();
            status == 200 && info["state"] == "Running"
        }),
        "GET / never said Running: {info}"
    );
    assert!(
        info["id"].is_string() && info["vmm_version"].is_string(),
        "{info}"
    );
    eprintln!("kata: the VMM answered Running after {:?}", t0.elapsed());
    vm.wait_for_output("/ # ", T);
    // The agent (its stand-in: an echo server on vsock port 1024), reached as Kata reaches it.
    type_and_wait(&mut vm, "vsock-glibc server 1024 &", "/ # ");
    agent_round_trip(&hvsock);
    type_and_wait(&mut vm, "wc -c < /dev/vdb", "\n0\n");

    // hotplugBlockDevice(AddDevice): the placeholder is patched onto the container's image.
    let image = image("kata-container.img", 128 << 10, b"KATA-CONTAINER");
    let body = format!(
        r#"{{"drive_id": "drive_0", "path_on_host": "{}"}}"#,
        image.display()
    );
    assert_eq!(api(&sock, "PATCH", "/drives/drive_0", &body).0, 204);
    vm.wait_for_output("virtio-blk: vdb: capacity changed from 0 to 256 sectors", T);
    type_and_wait(&mut vm, "head -c 14 /dev/vdb; echo", "KATA-CONTAINER\n");
    // RemoveDevice: back to the placeholder, so the image is released on the host.
    let body = format!(
        r#"{{"drive_id": "drive_0", "path_on_host": "{}"}}"#,
        placeholders[0].display()
    );
    assert_eq!(api(&sock, "PATCH", "/drives/drive_0", &body).0, 204);
    vm.wait_for_output("virtio-blk: vdb: capacity changed from 256 to 0 sectors", T);
    type_and_wait(&mut vm, "wc -c < /dev/vdb", "\n0\n");

    // fcEnd: SIGTERM, 15 s.
    vm.signal(libc::SIGTERM);
    let out = vm.wait(Duration::from_secs(15));
    assert_eq!(out.code, Some(143), "{}", out.stderr);
    assert!(!sock.exists());
    // The metrics FIFO got the exit line, which Kata's updateMetrics parses as JSON.
    let lines = drain(&mut metrics);
    let last: serde_json::Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    // Firecracker's sections, which Kata's FirecrackerMetrics reads: the rootfs drive was read.
    assert!(last["block_drive_0"].is_object(), "{last}");
    assert!(
        last["block_rootfs"]["read_count"].as_u64().unwrap() > 0,
        "{last}"
    );
    // Level Error: nothing went wrong, so nothing was logged.
    assert_eq!(drain(&mut log), "");
}

#[test]
fn firecracker_containerd_call_sequence() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let (log_path, mut log) = fifo("fcc-log.fifo");
    let (metrics_path, mut metrics) = fifo("fcc-metrics.fifo");
    let sock = tmp("fcc.sock");
    let mut vm = Vm::spawn(&["--api-sock", sock.to_str().unwrap(), "--id", "fcc-vm-1"]);
    // firecracker-go-sdk's waitForSocket: the socket exists and GET /machine-config answers.
    assert!(wait_until(T, || UnixStream::connect(&sock).is_ok()
        && api(&sock, "GET", "/machine-config", "").0 == 200));
    let put = |path: &str, body: serde_json::Value| {
        let (status, e) = api(&sock, "PUT", path, &body.to_string());
        assert_eq!(status, 204, "PUT {path} {body}: {e}");
    };
    put(
        "/logger",
        serde_json::json!({"log_path": log_path, "level": "Debug", "show_level": true,
                           "show_log_origin": true}),
    );
    put(
        "/metrics",
        serde_json::json!({"metrics_path": metrics_path}),
    );
    put(
        "/machine-config",
        serde_json::json!({"vcpu_count": 1, "mem_size_mib": 128, "smt": false}),
    );
    put(
        "/boot-source",
        serde_json::json!({"kernel_image_path": images.kernel,
                           "boot_args": "console=ttyS0 reboot=k panic=1 -- run /bin/ash"}),
    );
    put(
        "/drives/root_drive",
        serde_json::json!({"drive_id": "root_drive", "path_on_host": images.disk,
                           "is_root_device": true, "is_read_only": true}),
    );
    // Stub drives: base32 of the stub file's name as the id, a 512-byte file naming its drive.
    let mut stubs = Vec::new();
    for (name, id, limiter) in [
        ("ctrstub0", "MN2HE43UOVRDA", serde_json::Value::Null),
        (
            "drivemntstub0",
            "MRZGS5TFNVXHI43UOVRDA",
            serde_json::json!({"bandwidth": {"size": 1048576, "refill_time": 1000}}),
        ),
    ] {
        let stub = image(name, 512, format!("stub:{id}").as_bytes());
        let mut d = serde_json::json!({"drive_id": id, "path_on_host": stub,
                                       "is_root_device": false, "is_read_only": false});
        if !limiter.is_null() {
            d["rate_limiter"] = limiter;
        }
        put(&format!("/drives/{id}"), d);
        stubs.push((id, stub));
    }
    let uds = tmp("fcc.vsock");
    let _ = std::fs::remove_file(&uds);
    put(
        "/vsock",
        serde_json::json!({"guest_cid": 3, "uds_path": uds, "vsock_id": "agent_api"}),
    );
    put(
        "/actions",
        serde_json::json!({"action_type": "InstanceStart"}),
    );
    vm.wait_for_output("/ # ", T);
    type_and_wait(&mut vm, "vsock-glibc server 1024 &", "/ # ");
    agent_round_trip(&uds);
    // The agent finds its stub drives by their contents.
    type_and_wait(&mut vm, "head -c 18 /dev/vdb; echo", "stub:MN2HE43UOVRDA\n");
    type_and_wait(
        &mut vm,
        "head -c 26 /dev/vdc; echo",
        "stub:MRZGS5TFNVXHI43UOVRDA\n",
    );

    // CreateContainer: the container's image onto the stub (UpdateGuestDrive), then mounted by the agent.
    let (id, stub) = &stubs[0];
    let image = image("fcc-container.img", 64 << 10, b"CONTAINER-IMAGE");
    let patch = |path: &Path| {
        let body = format!(
            r#"{{"drive_id": "{id}", "path_on_host": "{}"}}"#,
            path.display()
        );
        let (status, e) = api(&sock, "PATCH", &format!("/drives/{id}"), &body);
        assert_eq!(status, 204, "{e}");
    };
    patch(&image);
    vm.wait_for_output("virtio-blk: vdb: capacity changed from 1 to 128 sectors", T);
    type_and_wait(&mut vm, "head -c 15 /dev/vdb; echo", "CONTAINER-IMAGE\n");
    // Release: back to the stub.
    patch(stub);
    vm.wait_for_output("virtio-blk: vdb: capacity changed from 128 to 1 sectors", T);
    type_and_wait(&mut vm, "head -c 18 /dev/vdb; echo", "stub:MN2HE43UOVRDA\n");

    let (status, _) = api(
        &sock,
        "PUT",
        "/actions",
        r#"{"action_type": "FlushMetrics"}"#,
    );
    assert_eq!(status, 204);
    let line: serde_json::Value =
        serde_json::from_str(drain(&mut metrics).lines().next().unwrap()).unwrap();
    assert!(
        line["block_MN2HE43UOVRDA"]["read_count"].as_u64().unwrap() >= 3,
        "{line}"
    );
    let (_, config) = api(&sock, "GET", "/vm/config", "");
    assert!(
        config.contains("fcc-container") || config.contains("ctrstub0"),
        "{config}"
    );

    // StopVM: SendCtrlAltDel; the guest restarts, which ends the VM.
    let (status, e) = api(
        &sock,
        "PUT",
        "/actions",
        r#"{"action_type": "SendCtrlAltDel"}"#,
    );
    assert_eq!(status, 204, "{e}");
    let out = vm.wait(T);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let log = drain(&mut log);
    assert!(log.contains("[fcc-vm-1:"), "{log}");
}
