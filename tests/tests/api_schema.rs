//! microvm against Firecracker's own API schema (`tests/firecracker/swagger-definitions.json`, the
//! `definitions` of Firecracker's swagger): every field of every request body microvm serves is either
//! accepted or refused with a 400 that names it as not supported (never "unknown field"); a configuration
//! made only of Firecracker's fields reads back (`GET /`, `/version`, `/machine-config`, `/vm/config`,
//! errors) in Firecracker's schema, checked by a small schema checker (types, enums, bounds, required
//! fields, no extra fields), before and after `InstanceStart`; `PUT /logger` writes to a FIFO and
//! `PUT /metrics` to a file, as Firecracker does, and a config file's `logger` and `metrics` sections
//! take effect for every thread; SIGTERM ends the running VM with status 143.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tests::{read_http_response, require_kvm, run, wait_until, Vm};

const T: Duration = Duration::from_secs(30);
const PVH: &str = env!("GUEST_PVH");

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("microvm-fcschema-{}-{name}", std::process::id()))
}

fn definitions() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("firecracker/swagger-definitions.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["definitions"].clone()
}

/// Follows a `$ref` to its definition.
fn resolve<'a>(defs: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => &defs[r.strip_prefix("#/definitions/").unwrap()],
        None => schema,
    }
}

/// What is wrong with `value` under `schema` (swagger 2.0's subset that Firecracker's definitions use),
/// each as `path: problem`. Objects may hold no property the schema does not list.
fn check(defs: &Value, schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let schema = resolve(defs, schema);
    if let Some(e) = schema["enum"].as_array() {
        if !e.contains(value) {
            errors.push(format!("{path}: {value} is not one of {e:?}"));
        }
    }
    let ty = schema["type"].as_str().unwrap_or("object");
    let ok = match ty {
        "object" => value.is_object(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        other => panic!("{path}: schema type {other} is not handled"),
    };
    if !ok {
        errors.push(format!("{path}: {value} is not of type {ty}"));
        return;
    }
    if let Some(n) = value.as_i64() {
        if schema["minimum"].as_i64().is_some_and(|m| n < m)
            || schema["maximum"].as_i64().is_some_and(|m| n > m)
        {
            errors.push(format!("{path}: {n} is out of bounds"));
        }
    }
    if let Some(items) = value.as_array() {
        for (i, v) in items.iter().enumerate() {
            check(defs, &schema["items"], v, &format!("{path}[{i}]"), errors);
        }
    }
    let Some(obj) = value.as_object() else {
        return;
    };
    for r in schema["required"].as_array().into_iter().flatten() {
        if !obj.contains_key(r.as_str().unwrap()) {
            errors.push(format!("{path}: required field {r} is missing"));
        }
    }
    for (k, v) in obj {
        let field = format!("{path}.{k}");
        match (&schema["properties"][k], &schema["additionalProperties"]) {
            (Value::Null, Value::Null) => {
                errors.push(format!("{field}: not in Firecracker's schema"))
            }
            (Value::Null, extra) => check(defs, extra, v, &field, errors),
            (s, _) => check(defs, s, v, &field, errors),
        }
    }
}

fn assert_follows(defs: &Value, definition: &str, value: &Value) {
    let mut errors = Vec::new();
    check(defs, &defs[definition], value, definition, &mut errors);
    assert!(errors.is_empty(), "{value}\n{}", errors.join("\n"));
}

/// A minimal HTTP/1.1 client on one persistent connection.
struct Client(UnixStream);

impl Client {
    fn request(&mut self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.0.write_all(req.as_bytes()).unwrap();
        let (status, body) = read_http_response(&mut self.0);
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
        };
        (status, value)
    }

    fn ok(&mut self, method: &str, path: &str, body: &Value) {
        let r = self.request(method, path, &body.to_string());
        assert_eq!(r.0, 204, "{method} {path} {body}: {r:?}");
    }

    fn get(&mut self, defs: &Value, path: &str, definition: &str) -> Value {
        let (status, body) = self.request("GET", path, "");
        assert_eq!(status, 200, "GET {path}: {body}");
        assert_follows(defs, definition, &body);
        body
    }
}

/// Files the sample values name.
struct Files {
    disk: PathBuf,
    scratch: PathBuf,
}

/// Values to try for field `name` of schema `schema`: every enum value, both booleans, a path that
/// opens where microvm opens the file.
fn samples(defs: &Value, files: &Files, name: &str, schema: &Value) -> Vec<Value> {
    let path = |p: &Path| json!(p.to_str().unwrap());
    match name {
        "kernel_image_path" | "initrd_path" => return vec![json!(PVH)],
        "path_on_host" => return vec![path(&files.disk)],
        "log_path" | "metrics_path" | "snapshot_path" | "mem_file_path" => {
            return vec![path(&files.scratch)]
        }
        "drive_id" => return vec![json!("d1")],
        "iface_id" => return vec![json!("eth0")],
        "uds_path" => return vec![path(&files.scratch.with_extension("vsock"))],
        "host_dev_name" => return vec![json!("mvmnotap0")],
        "guest_mac" => return vec![json!("06:00:ac:10:00:02")],
        "mem_size_mib" => return vec![json!(64)],
        "mtu" => return vec![json!(1500)],
        "mem_backend" => {
            return vec![json!({"backend_type": "File", "backend_path": files.scratch})]
        }
        _ => {}
    }
    let schema = resolve(defs, schema);
    if let Some(e) = schema["enum"].as_array() {
        return e.clone();
    }
    match schema["type"].as_str().unwrap_or("object") {
        "boolean" => vec![json!(true), json!(false)],
        "integer" => vec![json!(schema["minimum"].as_i64().unwrap_or(1))],
        "string" => vec![json!("x")],
        "array" => vec![json!([])],
        _ if !schema["additionalProperties"].is_null() => vec![json!({"k": "v"})],
        _ => vec![required_body(defs, files, schema)],
    }
}

/// A body with only the required fields of `schema`.
fn required_body(defs: &Value, files: &Files, schema: &Value) -> Value {
    let mut body = serde_json::Map::new();
    for r in schema["required"].as_array().into_iter().flatten() {
        let r = r.as_str().unwrap();
        let v = samples(defs, files, r, &schema["properties"][r]).remove(0);
        body.insert(r.to_owned(), v);
    }
    Value::Object(body)
}

/// Tries every field of every body microvm serves: each is accepted (204, or a 400 about the state or the
/// host, not the body) or refused as not supported, naming the field. Returns the refused ones.
fn sweep(
    c: &mut Client,
    defs: &Value,
    files: &Files,
    bodies: &[(&str, &str, &str)],
) -> Vec<String> {
    let mut refused = Vec::new();
    for &(method, path, definition) in bodies {
        let schema = &defs[definition];
        let mut base = required_body(defs, files, schema);
        if definition == "Drive" {
            // microvm's drives are files: path_on_host is needed (checked below without it).
            base["path_on_host"] = json!(files.disk);
        }
        if definition == "SnapshotLoadParams" {
            base["mem_backend"] = json!({"backend_type": "File", "backend_path": files.scratch});
        }
        for (field, fschema) in schema["properties"].as_object().unwrap() {
            for v in samples(defs, files, field, fschema) {
                if v == json!("InstanceStart") {
                    continue;
                }
                let mut body = base.clone();
                body[field] = v.clone();
                let (status, answer) = c.request(method, path, &body.to_string());
                let what = format!("{method} {path} {body}: {status} {answer}");
                if status == 204 {
                    continue;
                }
                assert_eq!(status, 400, "{what}");
                assert_follows(defs, "Error", &answer);
                let fault = answer["fault_message"].as_str().unwrap();
                if fault.contains(field.as_str()) && fault.contains("is not supported by microvm") {
                    refused.push(format!("{definition}.{field}={v}"));
                    continue;
                }
                // Otherwise the body was taken and the state or the host said no (a TAP that does
                // not exist, a snapshot before start, pausing before start).
                assert!(!fault.starts_with("invalid body"), "{what}");
            }
        }
    }
    refused
}

#[test]
fn answers_follow_firecrackers_schema() {
    if !require_kvm() {
        return;
    }
    let defs = definitions();
    let files = Files {
        disk: tmp("disk.raw"),
        scratch: tmp("scratch"),
    };
    std::fs::write(&files.disk, vec![0u8; 1 << 20]).unwrap();
    let fifo = tmp("log.fifo");
    let metrics = tmp("metrics.json");
    let _ = std::fs::remove_file(&fifo);
    let c_fifo = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
    let mut log_reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();

    let sock = tmp("api.sock");
    let vm = Vm::spawn(&["--api-sock", sock.to_str().unwrap(), "--id", "fc-only"]);
    assert!(wait_until(T, || UnixStream::connect(&sock).is_ok()));
    let mut c = Client(UnixStream::connect(&sock).unwrap());
    c.0.set_read_timeout(Some(T)).unwrap();

    // A log path that does not open is a 400 that says so, and changes nothing.
    let (status, e) = c.request("PUT", "/logger", r#"{"log_path": "/nonexistent/dir/log"}"#);
    assert_eq!(status, 400);
    assert!(
        e["fault_message"]
            .as_str()
            .unwrap()
            .starts_with("cannot open log_path /nonexistent/dir/log"),
        "{e}"
    );

    // Errors are Firecracker's `Error`.
    let (status, e) = c.request("PUT", "/machine-config", "{");
    assert_eq!(status, 400);
    assert_follows(&defs, "Error", &e);

    // The logger writes Firecracker-shaped lines to a FIFO: a FlushMetrics without a metrics sink logs.
    c.ok(
        "PUT",
        "/logger",
        &json!({"log_path": fifo, "level": "Info", "show_level": true}),
    );
    c.ok("PUT", "/actions", &json!({"action_type": "FlushMetrics"}));
    let mut log = String::new();
    let mut buf = [0u8; 4096];
    assert!(
        wait_until(T, || {
            if let Ok(n) = log_reader.read(&mut buf) {
                log.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            log.contains('\n')
        }),
        "nothing in the log FIFO"
    );
    assert!(log.starts_with("[fc-only:"), "{log}");
    assert!(log.contains("] INFO metrics: {"), "{log}");

    c.ok(
        "PUT",
        "/boot-source",
        &json!({"kernel_image_path": PVH, "boot_args": "blkread=0 count"}),
    );
    let mut refused = sweep(
        &mut c,
        &defs,
        &files,
        &[
            ("PUT", "/machine-config", "MachineConfiguration"),
            ("PUT", "/boot-source", "BootSource"),
            ("PUT", "/drives/d1", "Drive"),
            ("PUT", "/network-interfaces/eth0", "NetworkInterface"),
            ("PUT", "/vsock", "Vsock"),
            ("PUT", "/logger", "Logger"),
            ("PUT", "/metrics", "Metrics"),
            ("PUT", "/actions", "InstanceActionInfo"),
            ("PATCH", "/vm", "Vm"),
            ("PUT", "/snapshot/create", "SnapshotCreateParams"),
            ("PUT", "/snapshot/load", "SnapshotLoadParams"),
        ],
    );
    refused.sort();
    // The README's table lists these as refused; nothing else may be.
    let expected = [
        "Drive.cache_type=\"Unsafe\"",
        "Drive.partuuid=\"x\"",
        "Drive.socket=\"x\"",
        "MachineConfiguration.cpu_template=\"C3\"",
        "MachineConfiguration.cpu_template=\"T2\"",
        "MachineConfiguration.cpu_template=\"T2A\"",
        "MachineConfiguration.cpu_template=\"T2CL\"",
        "MachineConfiguration.cpu_template=\"T2S\"",
        "MachineConfiguration.cpu_template=\"V1N1\"",
        "MachineConfiguration.huge_pages=\"2M\"",
        "NetworkInterface.mtu=1500",
        "SnapshotLoadParams.clock_realtime=true",
        "SnapshotLoadParams.huge_pages=\"2M\"",
        "SnapshotLoadParams.huge_pages=\"None\"",
        "SnapshotLoadParams.huge_pages=\"Transparent\"",
    ];
    assert_eq!(refused, expected);
    // A drive without path_on_host (a vhost-user drive in Firecracker) says why.
    let (status, e) = c.request(
        "PUT",
        "/drives/d2",
        r#"{"drive_id": "d2", "is_root_device": false}"#,
    );
    assert_eq!(status, 400);
    assert!(
        e["fault_message"]
            .as_str()
            .unwrap()
            .contains("path_on_host is required"),
        "{e}"
    );

    // A configuration of Firecracker's fields only reads back in Firecracker's schema.
    c.ok(
        "PUT",
        "/boot-source",
        &json!({"kernel_image_path": PVH, "boot_args": "blkread=0 count"}),
    );
    c.ok(
        "PUT",
        "/machine-config",
        &json!({"vcpu_count": 1, "mem_size_mib": 32}),
    );
    c.ok(
        "PUT",
        "/drives/d1",
        &json!({"drive_id": "d1", "path_on_host": files.disk, "is_root_device": false,
                "is_read_only": true}),
    );
    c.ok(
        "PUT",
        "/logger",
        &json!({"log_path": fifo, "level": "Warning", "show_level": true, "show_log_origin": true}),
    );
    c.ok(
        "PUT",
        "/metrics",
        &json!({"metrics_path": metrics, "emit_id": true, "properties": {"pod": "p1"}}),
    );
    let check_all = |c: &mut Client, state: &str| {
        assert_eq!(c.get(&defs, "/", "InstanceInfo")["state"], state);
        c.get(&defs, "/version", "FirecrackerVersion");
        let m = c.get(&defs, "/machine-config", "MachineConfiguration");
        assert_eq!(m["mem_size_mib"], 32);
        let config = c.get(&defs, "/vm/config", "FullVmConfiguration");
        assert_eq!(config["drives"][0]["path_on_host"], json!(files.disk));
        assert_eq!(config["logger"]["level"], "Warning");
        assert_eq!(config["metrics"]["properties"]["pod"], "p1");
    };
    check_all(&mut c, "Not started");
    c.ok("PUT", "/actions", &json!({"action_type": "InstanceStart"}));
    vm.wait_for_output("counting", T);
    check_all(&mut c, "Running");
    // Firecracker's PATCH bodies, after start: every field is taken (the interface does not exist here:
    // a 400 that says so, not about the body).
    let refused = sweep(
        &mut c,
        &defs,
        &files,
        &[
            ("PATCH", "/drives/d1", "PartialDrive"),
            (
                "PATCH",
                "/network-interfaces/eth0",
                "PartialNetworkInterface",
            ),
        ],
    );
    assert_eq!(refused, Vec::<String>::new());
    check_all(&mut c, "Running");
    let (status, e) = c.request(
        "PUT",
        "/metrics",
        &json!({"metrics_path": metrics}).to_string(),
    );
    assert_eq!(
        (status, e["fault_message"].as_str()),
        (
            400,
            Some("the logger and metrics are configured before InstanceStart")
        )
    );

    // Metrics lines go to the file, with the id and the properties.
    c.ok("PUT", "/actions", &json!({"action_type": "FlushMetrics"}));
    let text = std::fs::read_to_string(&metrics).unwrap();
    let line: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(line["id"], "fc-only");
    assert!(
        line["utc_timestamp_ms"].as_u64().unwrap() > 1_600_000_000_000,
        "{line}"
    );
    assert_eq!(line["properties"], json!({"pod": "p1"}));
    assert!(
        line["block_d1"]["read_count"].as_u64().unwrap() >= 1
            && line["block"]["read_count"] == line["block_d1"]["read_count"]
            && line["microvm"]["block"]["d1"]["reads"] == line["block_d1"]["read_count"],
        "{line}"
    );

    // SIGTERM ends the running VM cleanly, through the same seccomp-filtered threads.
    vm.signal(libc::SIGTERM);
    let out = vm.wait(T);
    assert_eq!(out.code, Some(143), "{}", out.stderr);
    assert!(!sock.exists());
    for f in [&files.disk, &files.scratch, &fifo, &metrics] {
        let _ = std::fs::remove_file(f);
    }
}

/// A config file's `logger` and `metrics` sections take effect before the VM is built: every thread's
/// lines (the vCPU's too, under its seccomp filter) reach the log file, none reach stderr.
#[test]
fn config_file_logger_and_metrics() {
    if !require_kvm() {
        return;
    }
    let (config, log, metrics) = (tmp("cfg.json"), tmp("cfg.log"), tmp("cfg.metrics"));
    let _ = std::fs::remove_file(&log);
    let text = json!({
        "boot-source": {"kernel_image_path": PVH, "boot_args": "exit=42"},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 32, "huge_pages": "None"},
        "logger": {"log_path": log, "level": "debug", "show_level": true},
        "metrics": {"metrics_path": metrics},
    });
    std::fs::write(&config, text.to_string()).unwrap();
    let out = run(&["--config-file", config.to_str().unwrap()], T);
    assert_eq!(out.code, Some(42), "{}", out.stderr);
    let lines = std::fs::read_to_string(&log).unwrap();
    assert!(
        lines.contains("[anonymous-instance:main] DEBUG kernel loaded"),
        "{lines}"
    );
    assert!(
        lines.contains("[anonymous-instance:vcpu0] DEBUG "),
        "{lines}"
    );
    assert!(
        !out.stderr.contains("DEBUG") && !out.stderr.contains("debug"),
        "{}",
        out.stderr
    );
    assert!(metrics.exists(), "metrics_path is created");
    // The VM ended: one line written at exit, as Firecracker writes one.
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert!(line["utc_timestamp_ms"].as_u64().is_some(), "{line}");
    for f in [&config, &log, &metrics] {
        let _ = std::fs::remove_file(f);
    }
}
