//! The client side of `microvm translate`, `microvm memory` and `microvm ps`: one HTTP/1.1 `GET` on the
//! API's Unix socket, and the answer formatted for a terminal (the page walk level by level; memory as
//! `xxd` prints it; the guest's tasks as a table). `main.rs` prints what these functions return.

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
    let mut s = UnixStream::connect(sock).map_err(|source| ClientError::Connect {
        path: sock.display().to_string(),
        source,
    })?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(ClientError::Io)?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
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

#[cfg(test)]
mod tests {
    use super::*;

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
