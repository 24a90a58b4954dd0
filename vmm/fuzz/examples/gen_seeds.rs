//! Writes the seed corpora of the vmm fuzz targets into `seeds/<target>/` (kept in the repository): one
//! valid request per API route (as HTTP and as route input), pipelined, `Expect: 100-continue` and
//! `Connection: close` requests, and configuration files and flags of every shape the README documents.
//! Run from vmm/fuzz: `cargo run --example gen_seeds`.

use std::path::{Path, PathBuf};

/// (method, path, body) of one valid request per route.
const REQUESTS: &[(&str, &str, &str)] = &[
    ("GET", "/", ""),
    ("GET", "/version", ""),
    ("GET", "/machine-config", ""),
    (
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 2, "mem_size_mib": 256, "smt": false}"#,
    ),
    (
        "PUT",
        "/boot-source",
        r#"{"kernel_image_path": "build/kernel", "boot_args": "console=ttyS0", "initrd_path": "initrd.img"}"#,
    ),
    (
        "PUT",
        "/drives/rootfs",
        r#"{"drive_id": "rootfs", "path_on_host": "rootfs.qcow2", "is_root_device": true, "is_read_only": false, "format": "qcow2", "io_engine": "Async", "cache_type": "Writeback"}"#,
    ),
    (
        "PUT",
        "/network-interfaces/eth0",
        r#"{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "52:54:00:12:34:56"}"#,
    ),
    ("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#),
    ("PUT", "/actions", r#"{"action_type": "SendCtrlAltDel"}"#),
    ("PUT", "/actions", r#"{"action_type": "FlushMetrics"}"#),
    ("PATCH", "/vm", r#"{"state": "Paused"}"#),
    ("PATCH", "/vm", r#"{"state": "Resumed"}"#),
    ("GET", "/vm/config", ""),
    ("GET", "/metrics?format=json", ""),
];

fn http(method: &str, path: &str, body: &str, extra: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn seed_name(method: &str, path: &str) -> String {
    let p: String = path
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{}{p}", method.to_lowercase())
}

const CONFIG: &str = r#"{
  "boot-source": {"kernel_image_path": "build/kernel", "boot_args": "console=ttyS0 quiet", "boot_protocol": "pvh"},
  "machine-config": {"vcpu_count": 2, "mem_size_mib": 512, "smt": false, "thp": true},
  "drives": [
    {"drive_id": "rootfs", "path_on_host": "rootfs.img", "is_root_device": true, "format": "raw"},
    {"drive_id": "data", "path_on_host": "data.qcow2", "is_root_device": false, "is_read_only": true, "io_engine": "Threads", "cache_type": "Direct"}
  ],
  "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "02:00:00:00:00:01"}],
  "console": "virtio",
  "serial": "off"
}"#;

fn main() {
    let seeds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds");
    clear_generated(&seeds);
    let (h, r, c) = (
        seeds.join("api_http"),
        seeds.join("api_routes"),
        seeds.join("config_json"),
    );
    for (i, &(method, path, body)) in REQUESTS.iter().enumerate() {
        let name = format!("{i:02}-{}", seed_name(method, path));
        // Read size: whole requests, and 7-byte pieces for every third.
        let chunk = if i % 3 == 0 { 6u8 } else { 255 };
        let mut bytes = vec![chunk];
        bytes.extend(http(method, path, body, "").as_bytes());
        write(&h, &name, &bytes);
        let m = ["GET", "PUT", "PATCH", "POST", "DELETE"]
            .iter()
            .position(|&x| x == method)
            .unwrap() as u8;
        let mut bytes = vec![m];
        bytes.extend(format!("{path}\n{body}").as_bytes());
        write(&r, &name, &bytes);
    }
    // All requests pipelined on one connection, then one with Expect, then Connection: close.
    let mut all = vec![255u8];
    for &(method, path, body) in REQUESTS {
        all.extend(http(method, path, body, "").as_bytes());
    }
    write(&h, "pipelined-all", &all);
    let mut cont = vec![31u8];
    cont.extend(
        http(
            "PUT",
            "/drives/d1",
            r#"{"drive_id":"d1","path_on_host":"x","is_root_device":false}"#,
            "Expect: 100-continue\r\n",
        )
        .as_bytes(),
    );
    cont.extend(http("GET", "/version", "", "Connection: close\r\n").as_bytes());
    cont.extend(http("GET", "/", "", "").as_bytes());
    write(&h, "expect-continue-close", &cont);
    let mut old = vec![255u8];
    old.extend(b"GET /version HTTP/1.0\r\n\r\n");
    write(&h, "http10", &old);
    let mut bad = vec![255u8];
    bad.extend(
        http(
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": "two"}"#,
            "Connection: keep-alive\r\n",
        )
        .as_bytes(),
    );
    bad.extend(http("DELETE", "/drives/x", "", "").as_bytes());
    bad.extend(http("GET", "/nope", "", "").as_bytes());
    write(&h, "errors", &bad);
    let mut other = vec![9u8];
    other.extend(b"OPTIONS\n/\n");
    write(&r, "other-method", &other);

    let mut cfg = vec![0u8];
    cfg.extend(CONFIG.as_bytes());
    write(&c, "config-full", &cfg);
    let mut min = vec![0u8];
    min.extend(br#"{"boot-source": {"kernel_image_path": "k"}}"#);
    write(&c, "config-minimal", &min);
    for (i, spec) in [
        "rootfs.img",
        "data.qcow2,ro,id=data,format=qcow2,io_engine=async,cache_type=direct",
        "x.img,io_engine=threads,cache_type=writeback,format=raw",
    ]
    .iter()
    .enumerate()
    {
        let mut b = vec![1u8];
        b.extend(spec.as_bytes());
        write(&c, &format!("disk-{i}"), &b);
    }
    for (i, spec) in ["tap=tap0", "tap=tap1,mac=52:54:00:ab:cd:ef,id=eth1"]
        .iter()
        .enumerate()
    {
        let mut b = vec![2u8];
        b.extend(spec.as_bytes());
        write(&c, &format!("net-{i}"), &b);
    }
    let mut mac = vec![3u8];
    mac.extend(b"02:00:00:00:00:01");
    write(&c, "mac", &mac);
    for t in std::fs::read_dir(&seeds).unwrap() {
        let t = t.unwrap();
        let n = std::fs::read_dir(t.path()).unwrap().count();
        println!("{}: {n} seeds", t.file_name().to_string_lossy());
    }
}

/// Removes the generated seeds of every target, keeping the crash reproducers (`crash-*`), which are not
/// generated but kept by hand from fuzzing campaigns.
fn clear_generated(seeds: &std::path::Path) {
    let Ok(targets) = std::fs::read_dir(seeds) else {
        return;
    };
    for target in targets.flatten() {
        for seed in std::fs::read_dir(target.path()).into_iter().flatten().flatten() {
            if !seed.file_name().to_string_lossy().starts_with("crash-") {
                let _ = std::fs::remove_file(seed.path());
            }
        }
    }
}
