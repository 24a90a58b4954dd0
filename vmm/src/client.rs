//! The client side of `microvm translate`, `microvm memory` and `microvm ps`: one HTTP/1.1 `GET` on the
//! API's Unix socket, and the answer formatted for a terminal (the page walk level by level; memory as
//! `xxd` prints it; the guest's tasks as a table). `main.rs` prints what these functions return.
//! `microvm trace` ([`trace`]) turns tracing on, polls `GET /guest/trace` and prints strace's lines.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::introspect::{decode_hex, xxd};

/// How long the client waits for the VMM's answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A client request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the API socket: {0}")]
    Io(#[source] std::io::Error),
    #[error("the VMM's answer is not HTTP/1.1 with a length: {0:?}")]
    BadResponse(String),
    #[error("{status}: {message}")]
    Status { status: u16, message: String },
    #[error("the VMM's answer is not the expected JSON: {0}")]
    BadJson(String),
}

/// `GET path` on the API socket `sock`; the body of a 200, or the VMM's `fault_message`.
pub fn get(sock: &Path, path: &str) -> Result<Value, ClientError> {
    request(sock, "GET", path, "")
}

/// One request on the API socket `sock`; the JSON body of a 2xx (null for none), or the VMM's
/// `fault_message`.
pub fn request(sock: &Path, method: &str, path: &str, body: &str) -> Result<Value, ClientError> {
    let mut s = UnixStream::connect(sock).map_err(|source| ClientError::Connect {
        path: sock.display().to_string(),
        source,
    })?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(ClientError::Io)?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(ClientError::Io)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(ClientError::Io)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| ClientError::BadResponse(text.chars().take(80).collect()))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::BadResponse(head.chars().take(80).collect()))?;
    if status == 204 || (status == 200 && body.trim().is_empty()) {
        return Ok(Value::Null);
    }
    let value: Value =
        serde_json::from_str(body).map_err(|e| ClientError::BadJson(e.to_string()))?;
    if status != 200 {
        let message = value["fault_message"].as_str().unwrap_or(body).to_owned();
        return Err(ClientError::Status { status, message });
    }
    Ok(value)
}

fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name].as_str().unwrap_or("-")
}

/// `microvm translate`'s report of a `GET /vm/translate` answer.
pub fn format_translation(v: &Value) -> String {
    let mut out = format!(
        "vCPU {} (CPL {}): CR3 {}  CR4 {}  EFER {}  paging {}\n",
        v["vcpu"],
        v["cpl"],
        field(v, "cr3"),
        field(v, "cr4"),
        field(v, "efer"),
        field(v, "paging")
    );
    out.push_str(&format!("GVA {}\n", field(v, "gva")));
    for l in v["levels"].as_array().into_iter().flatten() {
        let flags: Vec<&str> = l["flags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        out.push_str(&format!(
            "  {:<6}[{:>3}] @ {:<14} = {:<20} {}\n",
            field(l, "level"),
            l["index"].as_u64().unwrap_or(0),
            field(l, "entry_gpa"),
            field(l, "entry"),
            flags.join(" ")
        ));
    }
    match v["gpa"].as_str() {
        Some(gpa) => {
            let size = v["page_size"].as_u64().unwrap_or(0);
            let size = match size {
                s if s >= 1 << 30 => format!("{} GiB", s >> 30),
                s if s >= 1 << 20 => format!("{} MiB", s >> 20),
                s => format!("{} KiB", s >> 10),
            };
            let yes = |k: &str, t: &'static str, f: &'static str| {
                if v[k].as_bool() == Some(true) {
                    t
                } else {
                    f
                }
            };
            out.push_str(&format!(
                "GPA {gpa} ({size} page, {} {} {})\n",
                yes("writable", "writable", "read-only"),
                yes("user", "user", "supervisor"),
                yes("executable", "executable", "no-execute"),
            ));
            out.push_str(&format!("HVA {}\n", field(v, "hva")));
            out.push_str(&format!(
                "HPA {} ({})\n",
                field(v, "hpa"),
                field(v, "hpa_note")
            ));
        }
        None => out.push_str(&format!("not mapped: {}\n", field(v, "stopped"))),
    }
    let k = &v["kvm_translate"];
    out.push_str(&format!(
        "KVM_TRANSLATE: {} ({})\n",
        if k["valid"].as_bool() == Some(true) {
            field(k, "gpa")
        } else {
            "invalid"
        },
        if v["agrees_with_kvm"].as_bool() == Some(true) {
            "agrees"
        } else {
            "DIFFERS"
        }
    ));
    if let Some(note) = v["kvm_note"].as_str() {
        out.push_str(&format!("  ({note})\n"));
    }
    out
}

/// `microvm ps`'s table of a `GET /guest/processes` answer: one line per task, times in ms, sizes in
/// KiB.
pub fn format_processes(v: &Value) -> String {
    let mut out = String::from(
        "  PID  TGID  PPID S  NI  VRUNTIME_MS   UTIME_MS   STIME_MS    VSZ_KB   RSS_KB COMMAND\n",
    );
    let n = |p: &Value, k: &str| p[k].as_u64().unwrap_or(0);
    for p in v["processes"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:>5} {:>5} {:>5} {} {:>3} {:>12} {:>10} {:>10} {:>9} {:>8} {}\n",
            n(p, "pid"),
            n(p, "tgid"),
            n(p, "ppid"),
            p["state"].as_str().unwrap_or("?"),
            p["nice"].as_i64().unwrap_or(0),
            n(p, "vruntime_ns") / 1_000_000,
            n(p, "utime_ns") / 1_000_000,
            n(p, "stime_ns") / 1_000_000,
            n(p, "vsize") / 1024,
            n(p, "rss_pages") * 4,
            p["command"].as_str().unwrap_or("")
        ));
    }
    if v["truncated"].as_bool() == Some(true) {
        out.push_str(&format!(
            "({} tasks in all: the guest's buffer held the first {})\n",
            v["total"],
            v["processes"].as_array().map_or(0, Vec::len)
        ));
    }
    out
}

/// `microvm memory`'s report of a `GET /vm/memory` answer, as `xxd` prints it.
pub fn format_memory(v: &Value) -> Result<String, ClientError> {
    let gpa = v["gpa"]
        .as_str()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .ok_or_else(|| ClientError::BadJson("no gpa".into()))?;
    let bytes = v["hex"]
        .as_str()
        .and_then(decode_hex)
        .ok_or_else(|| ClientError::BadJson("no hex".into()))?;
    Ok(xxd(gpa, &bytes))
}

/// What `microvm trace` was asked.
#[derive(Debug, Clone, Default)]
pub struct TraceOptions {
    pub pids: Vec<u32>,
    pub follow: bool,
    pub syscalls: Vec<String>,
    /// `-t`: the wall-clock time (UTC) of each call.
    pub time: bool,
    /// `-T`: the time spent in each call.
    pub durations: bool,
    /// Print the API's events as JSON lines.
    pub json: bool,
    /// Stop after this long (otherwise when `stop` is set).
    pub duration: Option<Duration>,
}

/// How often `microvm trace` reads the VMM's buffer.
const POLL: Duration = Duration::from_millis(100);

/// `microvm trace`: turns tracing on with the filters, prints each event as strace does until `stop`
/// is set or the duration has passed, turns tracing off, and returns the summary line
/// (events, and those dropped by the guest and by the VMM).
pub fn trace(
    sock: &Path,
    opts: &TraceOptions,
    stop: &std::sync::atomic::AtomicBool,
    out: &mut dyn Write,
) -> Result<String, ClientError> {
    let body = serde_json::json!({
        "enabled": true, "pids": opts.pids, "follow_children": opts.follow,
        "syscalls": opts.syscalls,
    });
    let on = request(sock, "PUT", "/guest/trace", &body.to_string())?;
    let mut next = on["from"].as_u64().unwrap_or(0);
    let deadline = opts.duration.map(|d| std::time::Instant::now() + d);
    let mut printed = 0u64;
    let mut lost = 0u64;
    let mut last;
    loop {
        let done = stop.load(std::sync::atomic::Ordering::Relaxed)
            || deadline.is_some_and(|d| std::time::Instant::now() >= d);
        // Read until the VMM has nothing more (several answers when the guest was busy).
        loop {
            let v = get(sock, &format!("/guest/trace?from={next}"))?;
            let events = v["events"].as_array().cloned().unwrap_or_default();
            lost += v["lost"].as_u64().unwrap_or(0);
            for e in &events {
                let line = if opts.json {
                    e.to_string()
                } else {
                    format_event(e, opts.time, opts.durations)
                };
                writeln!(out, "{line}").map_err(ClientError::Io)?;
                printed += 1;
            }
            next = v["next"].as_u64().unwrap_or(next);
            last = v;
            if events.len() < crate::introspect::trace::ANSWER_EVENTS {
                break;
            }
        }
        out.flush().map_err(ClientError::Io)?;
        if done {
            break;
        }
        std::thread::sleep(POLL);
    }
    let off = serde_json::json!({"enabled": false});
    request(sock, "PUT", "/guest/trace", &off.to_string())?;
    let n = |k: &str| last[k].as_u64().unwrap_or(0);
    Ok(format!(
        "{printed} events; dropped: {} in the guest (its ring was full), {} in the VMM ({} not read \
         in time), {} malformed",
        n("dropped_guest"),
        n("dropped_vmm"),
        lost,
        n("malformed")
    ))
}

/// One event as strace -f prints it: `[pid N] [HH:MM:SS ]call = ret[ <secs>]`.
pub fn format_event(e: &Value, time: bool, durations: bool) -> String {
    let n = |k: &str| e[k].as_u64().unwrap_or(0);
    let mut line = format!("[pid {}] ", n("pid"));
    if time {
        let secs = n("realtime_ns") / 1_000_000_000;
        line.push_str(&format!(
            "{:02}:{:02}:{:02} ",
            secs / 3600 % 24,
            secs / 60 % 60,
            secs % 60
        ));
    }
    line.push_str(e["call"].as_str().unwrap_or("?"));
    line.push_str(" = ");
    line.push_str(e["ret"].as_str().unwrap_or("?"));
    if durations && !e["result"].is_null() {
        let d = n("exit_ns").saturating_sub(n("entry_ns"));
        line.push_str(&format!(
            " <{}.{:06}>",
            d / 1_000_000_000,
            d % 1_000_000_000 / 1000
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_lines_are_strace_lines() {
        let e = serde_json::json!({"seq": 0, "pid": 12, "tgid": 12, "call": "openat(AT_FDCWD, \"/x\", O_RDONLY)",
            "ret": "-1 ENOENT (No such file or directory)", "result": -2, "entry_ns": 1_000,
            "exit_ns": 2_501_000, "realtime_ns": 3_723_000_000_000u64});
        assert_eq!(
            format_event(&e, false, false),
            "[pid 12] openat(AT_FDCWD, \"/x\", O_RDONLY) = -1 ENOENT (No such file or directory)"
        );
        assert_eq!(
            format_event(&e, true, true),
            "[pid 12] 01:02:03 openat(AT_FDCWD, \"/x\", O_RDONLY) = -1 ENOENT (No such file or \
             directory) <0.002500>"
        );
        let e = serde_json::json!({"pid": 3, "call": "exit_group(0)", "ret": "?", "result": null});
        assert_eq!(format_event(&e, false, true), "[pid 3] exit_group(0) = ?");
    }

    #[test]
    fn translation_report_names_every_level() {
        let v = serde_json::json!({
            "vcpu": 0, "gva": "0xffffffff80100000", "cr0": "0x80050033", "cr3": "0x1000",
            "cr4": "0x20", "efer": "0xd01", "paging": "4-level",
            "levels": [
                {"level": "PML4E", "index": 511, "entry_gpa": "0x1ff8", "entry": "0x2003",
                 "flags": ["P", "RW"]},
                {"level": "PDPTE", "index": 510, "entry_gpa": "0x2ff0", "entry": "0x3003",
                 "flags": ["P", "RW"]},
                {"level": "PDE", "index": 0, "entry_gpa": "0x3000", "entry": "0x83",
                 "flags": ["P", "RW", "PS"]}],
            "gpa": "0x100000", "page_size": 2097152, "writable": true, "user": false,
            "executable": true, "stopped": null, "hva": "0x7f0000100000", "hpa": null,
            "hpa_note": "no CAP_SYS_ADMIN",
            "kvm_translate": {"valid": true, "gpa": "0x100000"}, "agrees_with_kvm": true
        });
        let text = format_translation(&v);
        assert!(text.contains("PDE   [  0] @ 0x3000"), "{text}");
        assert!(
            text.contains("GPA 0x100000 (2 MiB page, writable supervisor executable)"),
            "{text}"
        );
        assert!(text.contains("KVM_TRANSLATE: 0x100000 (agrees)"), "{text}");
        let v = serde_json::json!({"vcpu": 0, "gpa": null, "stopped": "not present at PTE",
            "kvm_translate": {"valid": false, "gpa": null}, "agrees_with_kvm": true});
        let text = format_translation(&v);
        assert!(text.contains("not mapped: not present at PTE"), "{text}");
        assert!(text.contains("KVM_TRANSLATE: invalid (agrees)"), "{text}");
    }

    #[test]
    fn process_table_has_one_line_per_task() {
        let v = serde_json::json!({"processes": [
            {"pid": 1, "tgid": 1, "ppid": 0, "state": "S", "nice": -5, "vruntime_ns": 2_500_000,
             "utime_ns": 1_000_000, "stime_ns": 3_000_000, "vsize": 8192, "rss_pages": 3,
             "command": "init"}], "total": 9, "truncated": true});
        let text = format_processes(&v);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "    1     1     0 S  -5            2          1          3         8       12 init"
        );
        assert!(lines[2].contains("9 tasks in all"), "{text}");
    }

    #[test]
    fn memory_report_is_xxd() {
        let v = serde_json::json!({"gpa": "0x100", "len": 2, "hex": "4142"});
        assert_eq!(
            format_memory(&v).unwrap(),
            "00000100: 4142                                     AB\n"
        );
    }
}
