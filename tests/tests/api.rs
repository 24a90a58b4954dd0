//! The HTTP API over a Unix socket (`microvm --api-sock`): Firecracker's boot sequence driven by
//! `curl --unix-socket` and by a small Rust client, every error class, pause/resume with the guest going on
//! afterwards, Ctrl-Alt-Del reaching the guest through the i8042, concurrent clients beside silent ones, the
//! socket's life cycle, and `--config-file`.
//!
//! The test guest's `count` mode prints a counter every 10 PIT ticks and exits with status 57 when it reads
//! the Ctrl-Alt-Del scancodes from port 0x60 on IRQ 1.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tests::{read_http_response, require_kvm, run, wait_until, Vm};

const T: Duration = Duration::from_secs(30);
const PVH: &str = env!("GUEST_PVH");
/// The guest's exit status after it saw Ctrl-Alt-Del.
const CTRL_ALT_DEL_EXIT: i32 = 57;

fn tmp(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("microvm-api-{}-{n}-{name}", std::process::id()))
}

/// A minimal HTTP/1.1 client on one persistent connection.
struct Client {
    stream: UnixStream,
}

/// Status and body of a response.
#[derive(Debug)]
struct Resp {
    status: u16,
    body: String,
}

impl Resp {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }

    fn fault(&self) -> String {
        self.json()["fault_message"]
            .as_str()
            .unwrap_or_else(|| panic!("no fault_message in {:?}", self.body))
            .to_owned()
    }
}

impl Client {
    fn connect(sock: &Path) -> Client {
        let stream = UnixStream::connect(sock).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client { stream }
    }

    fn send_raw(&mut self, bytes: &[u8]) -> Resp {
        self.stream.write_all(bytes).unwrap();
        self.read_response()
    }

    fn read_response(&mut self) -> Resp {
        let (status, body) = read_http_response(&mut self.stream);
        Resp { status, body }
    }

    fn request(&mut self, method: &str, path: &str, body: &str) -> Resp {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.send_raw(req.as_bytes())
    }

    fn get(&mut self, path: &str) -> Resp {
        self.request("GET", path, "")
    }

    fn put(&mut self, path: &str, body: &str) -> Resp {
        self.request("PUT", path, body)
    }

    fn ok(&mut self, method: &str, path: &str, body: &str) {
        let r = self.request(method, path, body);
        assert_eq!(r.status, 204, "{method} {path} {body}: {r:?}");
    }
}

/// `microvm --api-sock` with extra args; waits for the socket.
fn spawn_api(extra: &[&str]) -> (Vm, PathBuf) {
    let sock = tmp("api.sock");
    let vm = tests::api::spawn_with_api(&sock, extra, T);
    (vm, sock)
}

/// `curl --unix-socket`: returns (status, body).
fn curl(sock: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-S", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(sock)
        .args(["-X", method])
        .arg(format!("http://localhost{path}"));
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = cmd.output().expect("curl is needed (apt-get install curl)");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

fn disk_with_pattern() -> PathBuf {
    let disk = tmp("disk.raw");
    let mut data = vec![0u8; 1 << 20];
    data[..8].copy_from_slice(b"APIDISK!");
    std::fs::write(&disk, data).unwrap();
    disk
}

#[test]
fn firecracker_boot_sequence_with_curl() {
    if !require_kvm() {
        return;
    }
    let (vm, sock) = spawn_api(&[]);
    let disk = disk_with_pattern();
    let c = |m, p, b| curl(&sock, m, p, b);
    let (code, body) = c("GET", "/", None);
    assert_eq!(code, 200);
    assert!(body.contains(r#""state":"Not started""#), "{body}");
    let boot =
        format!(r#"{{"kernel_image_path": "{PVH}", "boot_args": "via-curl blkread=0 exit=42"}}"#);
    assert_eq!(c("PUT", "/boot-source", Some(&boot)).0, 204);
    let machine = r#"{"vcpu_count": 2, "mem_size_mib": 64, "smt": false}"#;
    assert_eq!(c("PUT", "/machine-config", Some(machine)).0, 204);
    let drive = format!(
        r#"{{"drive_id": "rootfs", "path_on_host": "{}", "is_root_device": true, "is_read_only": false}}"#,
        disk.display()
    );
    assert_eq!(c("PUT", "/drives/rootfs", Some(&drive)).0, 204);
    let (code, body) = c("GET", "/machine-config", None);
    assert_eq!(
        (code, body.as_str()),
        (
            200,
            r#"{"vcpu_count":2,"mem_size_mib":64,"smt":false,"track_dirty_pages":false,"huge_pages":"Transparent"}"#
        )
    );
    let (code, _) = c(
        "PUT",
        "/actions",
        Some(r#"{"action_type": "InstanceStart"}"#),
    );
    assert_eq!(code, 204);
    let out = vm.wait(T);
    assert_eq!(out.code, Some(42), "{}", out.stderr);
    assert!(out
        .stdout
        .contains("cmdline: via-curl blkread=0 exit=42 root=/dev/vda rw virtio_mmio.device="));
    // The first 8 bytes as the guest's driver prints them, little-endian ("APIDISK!").
    assert!(
        out.stdout.contains("blk: read sector 0: "),
        "{}",
        out.stdout
    );
    assert!(!sock.exists(), "the socket is removed on exit");
    std::fs::remove_file(disk).unwrap();
}

#[test]
fn rust_client_boot_state_metrics_and_ctrl_alt_del() {
    if !require_kvm() {
        return;
    }
    let (vm, sock) = spawn_api(&["--id", "vm-7"]);
    let disk = disk_with_pattern();
    let mut c = Client::connect(&sock);
    let info = c.get("/").json();
    assert_eq!(info["id"], "vm-7");
    assert_eq!(info["app_name"], "microvm");
    assert_eq!(info["state"], "Not started");
    assert!(info["vmm_version"].is_string());
    assert_eq!(c.get("/version").status, 200);
    c.ok(
        "PUT",
        "/boot-source",
        &format!(r#"{{"kernel_image_path": "{PVH}", "boot_args": "blkread=0 count"}}"#),
    );
    c.ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 32}"#,
    );
    c.ok(
        "PUT",
        "/drives/data",
        &format!(
            r#"{{"drive_id": "data", "path_on_host": "{}", "is_root_device": false, "is_read_only": true}}"#,
            disk.display()
        ),
    );
    // A TAP that does not exist is refused at once (tests/tests/virtio_net.rs uses real ones).
    let r = c.put(
        "/network-interfaces/eth0",
        r#"{"iface_id": "eth0", "host_dev_name": "mvmnotap0", "guest_mac": "06:00:ac:10:00:02"}"#,
    );
    assert_eq!(r.status, 400);
    assert!(r.fault().contains("does not exist"), "{r:?}");
    let config = c.get("/vm/config").json();
    assert_eq!(config["boot-source"]["boot_args"], "blkread=0 count");
    assert_eq!(config["machine-config"]["mem_size_mib"], 32);
    assert_eq!(config["drives"][0]["is_read_only"], true);
    assert!(config.get("network-interfaces").is_none());
    c.ok("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    assert_eq!(c.get("/").json()["state"], "Running");
    vm.wait_for_output("counting", T);

    // The configuration is fixed now.
    let r = c.put(
        "/boot-source",
        &format!(r#"{{"kernel_image_path": "{PVH}"}}"#),
    );
    assert_eq!(r.status, 400);
    assert!(r.fault().contains("after InstanceStart"), "{r:?}");
    assert_eq!(
        c.put("/actions", r#"{"action_type": "InstanceStart"}"#)
            .status,
        400
    );
    let metrics = c.get("/metrics").json();
    assert!(
        metrics["block"]["data"]["reads"].as_u64().unwrap() >= 1,
        "{metrics}"
    );
    assert!(
        metrics["api"]["requests"].as_u64().unwrap() >= 10,
        "{metrics}"
    );
    c.ok("PUT", "/actions", r#"{"action_type": "FlushMetrics"}"#);

    c.ok("PUT", "/actions", r#"{"action_type": "SendCtrlAltDel"}"#);
    let out = vm.wait(T);
    assert_eq!(out.code, Some(CTRL_ALT_DEL_EXIT), "{}", out.stderr);
    assert!(
        out.stdout.contains("keys: 14 11 e0 71\nctrl-alt-del\n"),
        "{}",
        out.stdout
    );
    std::fs::remove_file(disk).unwrap();
}

/// The last `count N` the guest printed.
fn last_count(vm: &Vm) -> Option<u64> {
    vm.stdout()
        .lines()
        .filter_map(|l| l.strip_prefix("count "))
        .filter_map(|n| n.trim().parse().ok())
        .next_back()
}

#[test]
fn pause_and_resume_keep_the_guest_running() {
    if !require_kvm() {
        return;
    }
    let (vm, sock) = spawn_api(&["--kernel", PVH, "--cmdline", "count", "--vcpus", "2"]);
    let mut c = Client::connect(&sock);
    assert_eq!(c.get("/").json()["state"], "Running");
    vm.wait_for_output("count 3\n", T);
    c.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
    assert_eq!(c.get("/").json()["state"], "Paused");
    // Idempotent, as in Firecracker.
    c.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
    // Let the pipe drain (the output stops changing for 150 ms), then the counter must stand still: it moves
    // every 100 ms when the guest runs.
    assert!(vm.output_settles(Duration::from_millis(150), T));
    let frozen = vm.stdout();
    let paused_at = last_count(&vm).unwrap();
    assert!(
        !wait_until(Duration::from_millis(600), || vm.stdout() != frozen),
        "the guest printed while paused"
    );
    c.ok("PATCH", "/vm", r#"{"state": "Resumed"}"#);
    assert_eq!(c.get("/").json()["state"], "Running");
    assert!(
        wait_until(T, || last_count(&vm) >= Some(paused_at + 3)),
        "the guest did not go on after resume: {}",
        vm.stdout()
    );
    // No count was lost or repeated: guest memory and registers were kept.
    let counts: Vec<u64> = vm
        .stdout()
        .lines()
        .filter_map(|l| l.strip_prefix("count ")?.trim().parse().ok())
        .collect();
    assert!(counts.windows(2).all(|w| w[1] == w[0] + 1), "{counts:?}");
    // Ctrl-Alt-Del while paused is delivered on resume.
    c.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
    c.ok("PUT", "/actions", r#"{"action_type": "SendCtrlAltDel"}"#);
    c.ok("PATCH", "/vm", r#"{"state": "Resumed"}"#);
    let out = vm.wait(T);
    assert_eq!(out.code, Some(CTRL_ALT_DEL_EXIT));
}

#[test]
fn every_error_class() {
    // Everything here is answered before a VM exists: no KVM needed.
    let (vm, sock) = spawn_api(&[]);
    let mut c = Client::connect(&sock);
    let bad = |c: &mut Client, method: &str, path: &str, body: &str, status: u16, needle: &str| {
        let r = c.request(method, path, body);
        assert_eq!(r.status, status, "{method} {path} {body}: {r:?}");
        let fault = r.fault();
        assert!(
            fault.contains(needle),
            "{fault:?} should contain {needle:?}"
        );
    };
    // 400: malformed JSON, unknown field, missing field, wrong type, invalid values, state violations.
    bad(
        &mut c,
        "PUT",
        "/machine-config",
        "{\"vcpu_count\": ",
        400,
        "invalid body",
    );
    bad(
        &mut c,
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 64, "x": 1}"#,
        400,
        "unknown field",
    );
    bad(
        &mut c,
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1}"#,
        400,
        "missing field",
    );
    bad(
        &mut c,
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": "1", "mem_size_mib": 64}"#,
        400,
        "invalid type",
    );
    bad(
        &mut c,
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 0, "mem_size_mib": 64}"#,
        400,
        "at least 1",
    );
    bad(
        &mut c,
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 64, "smt": true}"#,
        400,
        "smt",
    );
    bad(&mut c, "PUT", "/machine-config", "", 400, "JSON body");
    bad(
        &mut c,
        "PUT",
        "/boot-source",
        r#"{"kernel_image_path": "/nonexistent"}"#,
        400,
        "/nonexistent",
    );
    bad(
        &mut c,
        "PUT",
        "/network-interfaces/eth0",
        r#"{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "nope"}"#,
        400,
        "guest_mac",
    );
    bad(
        &mut c,
        "PUT",
        "/drives/a",
        r#"{"drive_id": "b", "path_on_host": "/x", "is_root_device": true}"#,
        400,
        "differs",
    );
    bad(
        &mut c,
        "PUT",
        "/actions",
        r#"{"action_type": "Explode"}"#,
        400,
        "unknown variant",
    );
    bad(
        &mut c,
        "PUT",
        "/actions",
        r#"{"action_type": "InstanceStart"}"#,
        400,
        "PUT /boot-source",
    );
    bad(
        &mut c,
        "PUT",
        "/actions",
        r#"{"action_type": "SendCtrlAltDel"}"#,
        400,
        "started VM",
    );
    bad(
        &mut c,
        "PATCH",
        "/vm",
        r#"{"state": "Paused"}"#,
        400,
        "started VM",
    );
    // 404 and 405.
    bad(&mut c, "GET", "/nothing/here", "", 404, "/nothing/here");
    bad(&mut c, "DELETE", "/machine-config", "", 405, "DELETE");
    bad(&mut c, "GET", "/actions", "", 405, "GET");
    // The connection survived all of that.
    assert_eq!(c.get("/").status, 200);
    // 413: refused from the Content-Length alone, and the connection is closed.
    let head = format!(
        "PUT /machine-config HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        65 * 1024
    );
    let r = c.send_raw(head.as_bytes());
    assert_eq!(r.status, 413);
    assert!(r.fault().contains("65536"));
    let mut rest = Vec::new();
    assert_eq!(
        c.stream.read_to_end(&mut rest).unwrap(),
        0,
        "closed after 413"
    );
    // Not HTTP at all: 400 and closed.
    let mut c = Client::connect(&sock);
    assert_eq!(c.send_raw(b"HELLO\r\n\r\n").status, 400);
    // curl sees the same, including the 413 for a real 70 KiB body.
    let big = format!(
        r#"{{"vcpu_count": 1, "mem_size_mib": 64, "pad": "{}"}}"#,
        "x".repeat(70 * 1024)
    );
    assert_eq!(curl(&sock, "PUT", "/machine-config", Some(&big)).0, 413);
    let (code, body) = curl(&sock, "PUT", "/machine-config", Some("{"));
    assert_eq!(code, 400);
    assert!(body.starts_with(r#"{"fault_message":"#), "{body}");
    assert_eq!(curl(&sock, "GET", "/bogus", None).0, 404);
    assert_eq!(curl(&sock, "POST", "/", None).0, 405);
    // Errors left the configuration alone.
    let machine = Client::connect(&sock).get("/machine-config").json();
    assert_eq!(
        machine,
        serde_json::json!({"vcpu_count": 1, "mem_size_mib": 128, "smt": false,
                           "track_dirty_pages": false, "huge_pages": "Transparent"})
    );
    vm.signal(libc::SIGTERM);
    assert_eq!(vm.wait(T).code, Some(143));
    assert!(!sock.exists());
}

/// The issue's case: 80 slow clients each sending a byte every 2 s (reconnecting when dropped) hold more
/// connections than the server serves at once; prompt clients must still get every answer, and the
/// tricklers are the ones closed. A new client is told 503 only when every connection waits for the VMM.
#[test]
fn slow_clients_do_not_starve_prompt_ones() {
    let (vm, sock) = spawn_api(&[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tricklers: Vec<_> = (0..80)
        .map(|_| {
            let (sock, stop) = (sock.clone(), stop.clone());
            std::thread::spawn(move || {
                let request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok(mut s) = UnixStream::connect(&sock) else {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    for b in request.iter().cycle() {
                        if stop.load(std::sync::atomic::Ordering::Relaxed)
                            || s.write_all(&[*b]).is_err()
                        {
                            break;
                        }
                        std::thread::sleep(Duration::from_secs(2));
                    }
                }
            })
        })
        .collect();
    // Let the tricklers take every slot.
    std::thread::sleep(Duration::from_secs(3));
    let t0 = Instant::now();
    let mut answered = 0;
    for _ in 0..120 {
        let r = Client::connect(&sock).get("/");
        assert_eq!(r.status, 200, "{r:?}");
        answered += 1;
    }
    let took = t0.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    eprintln!("120 GET / beside 80 trickling clients: {took:?}");
    assert_eq!(answered, 120);
    assert!(took < Duration::from_secs(30), "{took:?}");
    let metrics = Client::connect(&sock).get("/metrics").json();
    assert!(
        metrics["api"]["evicted"].as_u64().unwrap() >= 16,
        "{metrics}"
    );
    vm.signal(libc::SIGTERM);
    assert_eq!(vm.wait(T).code, Some(143));
    for t in tricklers {
        t.join().unwrap();
    }
}

#[test]
fn concurrent_clients_beside_silent_and_half_sent_ones() {
    let (vm, sock) = spawn_api(&[]);
    // One client connects and says nothing, another sends half a request.
    let mut silent = UnixStream::connect(&sock).unwrap();
    let mut half = UnixStream::connect(&sock).unwrap();
    half.write_all(b"PUT /machine-config HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"vcpu")
        .unwrap();
    let started = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&sock);
                for n in 0..100 {
                    if n % 2 == 0 {
                        assert_eq!(c.get("/").status, 200);
                    } else {
                        let body =
                            format!(r#"{{"vcpu_count": {}, "mem_size_mib": 64}}"#, 1 + i % 4);
                        assert_eq!(c.put("/machine-config", &body).status, 204);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let busy = started.elapsed();
    assert!(busy < Duration::from_secs(4), "800 requests took {busy:?}");
    // The server gives up on the silent and the half-sent connection after its read timeout (5 s).
    for s in [&mut silent, &mut half] {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut buf = Vec::new();
        let t = Instant::now();
        assert_eq!(s.read_to_end(&mut buf).unwrap(), 0);
        assert!(t.elapsed() < Duration::from_secs(10));
    }
    let metrics = Client::connect(&sock).get("/metrics").json();
    assert!(
        metrics["api"]["timeouts"].as_u64().unwrap() >= 2,
        "{metrics}"
    );
    vm.signal(libc::SIGTERM);
    assert_eq!(vm.wait(T).code, Some(143));
}

#[test]
fn socket_mode_stale_and_live_sockets() {
    let (vm, sock) = spawn_api(&[]);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // A live socket: a second microvm refuses it.
    let out = run(&["--api-sock", sock.to_str().unwrap()], T);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("another process is serving it"),
        "{}",
        out.stderr
    );
    assert!(sock.exists(), "the live socket is left alone");
    // Killed without cleanup, the socket file stays behind, stale; the next microvm replaces it.
    vm.signal(libc::SIGKILL);
    let _ = vm.wait(T);
    assert!(sock.exists());
    let vm = Vm::spawn(&["--api-sock", sock.to_str().unwrap()]);
    assert!(wait_until(T, || Client::connect_ok(&sock)));
    vm.signal(libc::SIGINT);
    assert_eq!(vm.wait(T).code, Some(130));
    assert!(!sock.exists());
    // A path that is not a socket is never removed.
    std::fs::write(&sock, "keep me").unwrap();
    let out = run(&["--api-sock", sock.to_str().unwrap()], T);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("not a socket"));
    assert_eq!(std::fs::read_to_string(&sock).unwrap(), "keep me");
    std::fs::remove_file(&sock).unwrap();
}

#[test]
fn a_vm_that_cannot_boot_ends_microvm_and_removes_the_socket() {
    let sock = tmp("fail.sock");
    let out = run(
        &[
            "--api-sock",
            sock.to_str().unwrap(),
            "--kernel",
            "/nonexistent/kernel",
        ],
        T,
    );
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .contains("cannot open kernel /nonexistent/kernel"),
        "{}",
        out.stderr
    );
    assert!(!sock.exists());
}

impl Client {
    fn connect_ok(sock: &Path) -> bool {
        UnixStream::connect(sock)
            .map(|s| {
                let mut c = Client { stream: s };
                c.get("/").status == 200
            })
            .unwrap_or(false)
    }
}

#[test]
fn config_file_boots_without_the_api() {
    if !require_kvm() {
        return;
    }
    let file = tmp("vm.json");
    std::fs::write(
        &file,
        format!(
            r#"{{"boot-source": {{"kernel_image_path": "{PVH}", "boot_args": "from-file exit=33"}},
                "machine-config": {{"vcpu_count": 2, "mem_size_mib": 48, "smt": false}},
                "drives": [],
                "network-interfaces": []}}"#
        ),
    )
    .unwrap();
    let out = run(&["--config-file", file.to_str().unwrap()], T);
    assert_eq!(out.code, Some(33), "{}", out.stderr);
    assert!(out.stdout.contains("cmdline: from-file exit=33\n"));
    // A TAP that is not there: one line naming it, exit 1.
    std::fs::write(
        &file,
        format!(
            r#"{{"boot-source": {{"kernel_image_path": "{PVH}"}},
                "network-interfaces": [{{"iface_id": "eth0", "host_dev_name": "mvmnotap9"}}]}}"#
        ),
    )
    .unwrap();
    let out = run(&["--config-file", file.to_str().unwrap()], T);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .contains("TAP device \"mvmnotap9\" does not exist"),
        "{}",
        out.stderr
    );
    // An unknown section is refused.
    std::fs::write(
        &file,
        r#"{"boot-source": {"kernel_image_path": "/k"}, "bogus": {}}"#,
    )
    .unwrap();
    let out = run(&["--config-file", file.to_str().unwrap()], T);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("unknown field `bogus`"),
        "{}",
        out.stderr
    );
    std::fs::remove_file(file).unwrap();
}

#[test]
fn a_failed_instance_start_is_a_400_and_leaves_the_vm_configurable() {
    if !require_kvm() {
        return;
    }
    let (vm, sock) = spawn_api(&[]);
    let mut c = Client::connect(&sock);
    // A file that opens (so the PUT is accepted) but is no kernel: starting fails on the configuration,
    // which is the client's to fix (400), and nothing of the VM is left behind.
    let junk = tmp("junk-kernel");
    std::fs::write(&junk, b"not a kernel at all").unwrap();
    c.ok(
        "PUT",
        "/boot-source",
        &format!(r#"{{"kernel_image_path": "{}"}}"#, junk.display()),
    );
    c.ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 32}"#,
    );
    let r = c.put("/actions", r#"{"action_type": "InstanceStart"}"#);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.fault().starts_with("cannot start the VM: "), "{r:?}");
    assert_eq!(c.get("/").json()["state"], "Not started");
    assert_eq!(c.get("/metrics").json()["block"], serde_json::json!({}));
    // The configuration can still change, and a good kernel then boots.
    c.ok(
        "PUT",
        "/boot-source",
        &format!(r#"{{"kernel_image_path": "{PVH}", "boot_args": "exit=21"}}"#),
    );
    c.ok("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    assert_eq!(vm.wait(T).code, Some(21));
    assert!(!sock.exists());
    let _ = std::fs::remove_file(junk);
}
