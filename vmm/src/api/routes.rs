//! Request routing: (method, path, body) -> an [`Action`] for the VMM thread, or the [`ApiError`] to answer
//! with. Pure functions, no sockets: everything here is unit-tested below.
//!
//! Paths and bodies follow Firecracker's API (swagger `firecracker.yaml`); `GET /metrics` is our extension.
//! Bodies are parsed strictly: unknown fields, missing required fields and wrong types are 400s.

use std::path::PathBuf;

use serde::Deserialize;

use crate::introspect::trace::{TraceBody, TraceQuery, TraceSettings};
use crate::introspect::{IntrospectError, MemoryQuery, TranslateQuery};
use crate::persist::{DriveOverride, LoadParams, NetworkOverride};

use crate::config::{
    unsupported, BootSource, ConfigError, DriveConfig, LoggerConfig, MachineConfig, MetricsConfig,
    NetConfig, RateLimiterConfig, VsockConfig,
};

/// What a client asked for, parsed and checked for shape (values are checked by the VMM thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    GetInfo,
    GetVersion,
    GetMachineConfig,
    PutMachineConfig(MachineConfig),
    PutBootSource(BootSource),
    PutDrive(DriveConfig),
    PutNetworkInterface(NetConfig),
    /// `PUT /vsock` (pre-boot only).
    PutVsock(VsockConfig),
    InstanceStart,
    SendCtrlAltDel,
    FlushMetrics,
    Pause,
    Resume,
    GetVmConfig,
    GetMetrics,
    CreateSnapshot(CreateSnapshot),
    LoadSnapshot(LoadParams),
    /// `GET /vm/translate` (ours).
    Translate(TranslateQuery),
    /// `GET /vm/memory` (ours).
    ReadMemory(MemoryQuery),
    /// `GET /guest/processes` (ours).
    GuestProcesses,
    /// `PUT /guest/trace` (ours).
    PutTrace(TraceSettings),
    /// `GET /guest/trace?from=SEQ` (ours).
    GetTrace(TraceQuery),
    /// `PUT /logger` (pre-boot only).
    PutLogger(LoggerConfig),
    /// `PUT /metrics` (pre-boot only).
    PutMetrics(MetricsConfig),
    /// `PATCH /drives/{id}` (after start only).
    PatchDrive(PatchDrive),
    /// `PATCH /network-interfaces/{id}` (after start only).
    PatchNetworkInterface(PatchNetworkInterface),
}

/// `PATCH /drives/{id}`: Firecracker's `PartialDrive`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchDrive {
    pub drive_id: String,
    /// A new backing file: reopened with the drive's format, cache mode and read-only flag.
    #[serde(default)]
    pub path_on_host: Option<PathBuf>,
    /// Buckets to change (those left out stay).
    #[serde(default)]
    pub rate_limiter: Option<RateLimiterConfig>,
}

/// `PATCH /network-interfaces/{id}`: Firecracker's `PartialNetworkInterface`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchNetworkInterface {
    pub iface_id: String,
    #[serde(default)]
    pub rx_rate_limiter: Option<RateLimiterConfig>,
    #[serde(default)]
    pub tx_rate_limiter: Option<RateLimiterConfig>,
}

/// `PUT /snapshot/create`, checked for shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSnapshot {
    pub diff: bool,
    pub snapshot_path: PathBuf,
    pub mem_file_path: PathBuf,
}

/// `PUT /snapshot/create` body (Firecracker's `SnapshotCreateParams`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(default)]
    snapshot_type: SnapshotType,
    snapshot_path: PathBuf,
    mem_file_path: PathBuf,
    /// Firecracker's older bodies name a target version; accepted and ignored.
    #[serde(default)]
    #[allow(dead_code)]
    version: Option<String>,
}

#[derive(Deserialize, Default)]
enum SnapshotType {
    #[default]
    Full,
    Diff,
}

/// `PUT /snapshot/load` body (Firecracker's `SnapshotLoadParams`), plus our `drive_overrides`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadBody {
    snapshot_path: PathBuf,
    #[serde(default)]
    mem_backend: Option<MemBackend>,
    /// The older form of `mem_backend` with a file.
    #[serde(default)]
    mem_file_path: Option<PathBuf>,
    #[serde(default)]
    enable_diff_snapshots: bool,
    #[serde(default)]
    track_dirty_pages: bool,
    #[serde(default)]
    resume_vm: bool,
    #[serde(default)]
    network_overrides: Vec<NetworkOverride>,
    #[serde(default)]
    drive_overrides: Vec<DriveOverride>,
    /// Firecracker's `{"uds_path"}`: the restored vsock device listens there instead.
    #[serde(default)]
    vsock_override: Option<VsockOverride>,
    /// Firecracker's; refused (kvmclock resumes where it stopped).
    #[serde(default)]
    clock_realtime: Option<bool>,
    /// Firecracker's; only `"Snapshot"` (the snapshot's own setting) is accepted.
    #[serde(default)]
    huge_pages: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VsockOverride {
    uds_path: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemBackend {
    backend_type: BackendType,
    backend_path: PathBuf,
}

#[derive(Deserialize, PartialEq, Eq)]
enum BackendType {
    File,
    Uffd,
}

fn load_params(body: &[u8]) -> Result<LoadParams, ApiError> {
    let b: LoadBody = json(body)?;
    let unsupported = |f: &str, why: &str| ApiError::BadRequest(unsupported(f, why));
    if b.clock_realtime == Some(true) {
        return Err(unsupported(
            "clock_realtime",
            "kvmclock resumes where the snapshot stopped it",
        ));
    }
    if let Some(h) = b.huge_pages.filter(|h| h != "Snapshot") {
        return Err(unsupported(
            &format!("huge_pages {h:?}"),
            "a restored VM keeps the snapshot's setting: use \"Snapshot\"",
        ));
    }
    let mem_file_path = match (b.mem_backend, b.mem_file_path) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "give either mem_backend or mem_file_path, not both".into(),
            ))
        }
        (None, None) => {
            return Err(ApiError::BadRequest(
                "the memory file is missing: give mem_backend (or mem_file_path)".into(),
            ))
        }
        (Some(m), None) if m.backend_type == BackendType::Uffd => {
            return Err(ApiError::BadRequest(
                "mem_backend Uffd is not supported by microvm: use backend_type File".into(),
            ))
        }
        (Some(m), None) => m.backend_path,
        (None, Some(p)) => p,
    };
    // Diff snapshots need no set-up here (see persist::SnapshotKind::Diff): accepted and ignored.
    let _ = (b.track_dirty_pages, b.enable_diff_snapshots);
    Ok(LoadParams {
        snapshot_path: b.snapshot_path,
        mem_file_path,
        resume_vm: b.resume_vm,
        network_overrides: b.network_overrides,
        drive_overrides: b.drive_overrides,
        vsock_override: b.vsock_override.map(|v| v.uds_path),
    })
}

/// A request that cannot be served, with its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, unknown or missing fields, wrong types, files that cannot be opened.
    #[error("{0}")]
    BadRequest(String),
    /// A configuration that does not validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Not allowed in the VM's current state.
    #[error("{0}")]
    NotAllowed(String),
    /// `InstanceStart` failed on the configuration (a kernel or image that does not load, a busy TAP).
    #[error("cannot start the VM: {0}")]
    StartRefused(String),
    /// `InstanceStart` failed on the host (KVM, memory, threads): not the client's fault.
    #[error("cannot start the VM: {0}")]
    StartFailed(String),
    #[error("no such resource: {0}")]
    NotFound(String),
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the VMM thread did not take or answer the request in time")]
    Unavailable,
    /// Every connection the API serves at once is waiting for the VMM thread's answer.
    #[error(
        "the API is busy: all {0} connections it serves at once are waiting for answers from the VMM; \
         try again"
    )]
    Busy(usize),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_)
            | ApiError::Config(_)
            | ApiError::NotAllowed(_)
            | ApiError::StartRefused(_) => 400,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::PayloadTooLarge(_) => 413,
            ApiError::Unavailable | ApiError::Busy(_) => 503,
            ApiError::Internal(_) | ApiError::StartFailed(_) => 500,
        }
    }

    /// The body: Firecracker's `{"fault_message": "..."}`.
    pub fn body(&self) -> String {
        serde_json::json!({ "fault_message": self.to_string() }).to_string()
    }
}

/// `PUT /actions` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    action_type: ActionType,
}

#[derive(Deserialize)]
enum ActionType {
    InstanceStart,
    SendCtrlAltDel,
    FlushMetrics,
}

/// `PATCH /vm` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VmBody {
    state: VmStateBody,
}

#[derive(Deserialize)]
enum VmStateBody {
    Paused,
    Resumed,
}

fn json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest("the request needs a JSON body".into()));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))
}

/// The id in `/prefix/{id}`, which must equal the body's id.
fn check_id(kind: &str, path_id: &str, body_id: &str) -> Result<(), ApiError> {
    if path_id != body_id {
        return Err(ApiError::BadRequest(format!(
            "the {kind} in the path ({path_id:?}) differs from the one in the body ({body_id:?})"
        )));
    }
    Ok(())
}

fn check_limiter(field: &str, r: Option<&RateLimiterConfig>) -> Result<(), ApiError> {
    match r.map(RateLimiterConfig::validate) {
        Some(Err(e)) => Err(ApiError::BadRequest(format!("{field}: {e}"))),
        _ => Ok(()),
    }
}

/// Maps a request onto an [`Action`].
pub fn route(method: &str, path: &str, body: &[u8]) -> Result<Action, ApiError> {
    // Firecracker ignores a query string; so do we, except on our introspection paths.
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let bad_query = |e: IntrospectError| ApiError::BadRequest(e.to_string());
    let not_allowed = || ApiError::MethodNotAllowed {
        method: method.to_owned(),
        path: path.to_owned(),
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (segments.as_slice(), method) {
        ([""], "GET") => Ok(Action::GetInfo),
        ([""], _) => Err(not_allowed()),
        (["version"], "GET") => Ok(Action::GetVersion),
        (["version"], _) => Err(not_allowed()),
        (["machine-config"], "GET") => Ok(Action::GetMachineConfig),
        (["machine-config"], "PUT") => Ok(Action::PutMachineConfig(json(body)?)),
        (["machine-config"], _) => Err(not_allowed()),
        (["boot-source"], "PUT") => Ok(Action::PutBootSource(json(body)?)),
        (["boot-source"], _) => Err(not_allowed()),
        (["drives", id], "PUT") if !id.is_empty() => {
            // The body is the drive's configuration itself: Firecracker requires `drive_id` and
            // `is_root_device`; `io_engine` and `cache_type` are Firecracker's fields; `format` is ours.
            let d: DriveConfig = json(body)?;
            check_id("drive_id", id, &d.drive_id)?;
            Ok(Action::PutDrive(d))
        }
        (["drives", id], "PATCH") if !id.is_empty() => {
            let d: PatchDrive = json(body)?;
            check_id("drive_id", id, &d.drive_id)?;
            check_limiter("rate_limiter", d.rate_limiter.as_ref())?;
            Ok(Action::PatchDrive(d))
        }
        (["drives", id], _) if !id.is_empty() => Err(not_allowed()),
        (["network-interfaces", id], "PUT") if !id.is_empty() => {
            let n: NetConfig = json(body)?;
            check_id("iface_id", id, &n.iface_id)?;
            Ok(Action::PutNetworkInterface(n))
        }
        (["network-interfaces", id], "PATCH") if !id.is_empty() => {
            let n: PatchNetworkInterface = json(body)?;
            check_id("iface_id", id, &n.iface_id)?;
            check_limiter("rx_rate_limiter", n.rx_rate_limiter.as_ref())?;
            check_limiter("tx_rate_limiter", n.tx_rate_limiter.as_ref())?;
            Ok(Action::PatchNetworkInterface(n))
        }
        (["network-interfaces", id], _) if !id.is_empty() => Err(not_allowed()),
        (["vsock"], "PUT") => Ok(Action::PutVsock(json(body)?)),
        (["vsock"], _) => Err(not_allowed()),
        (["actions"], "PUT") => Ok(match json::<ActionBody>(body)?.action_type {
            ActionType::InstanceStart => Action::InstanceStart,
            ActionType::SendCtrlAltDel => Action::SendCtrlAltDel,
            ActionType::FlushMetrics => Action::FlushMetrics,
        }),
        (["actions"], _) => Err(not_allowed()),
        (["vm"], "PATCH") => Ok(match json::<VmBody>(body)?.state {
            VmStateBody::Paused => Action::Pause,
            VmStateBody::Resumed => Action::Resume,
        }),
        (["vm"], _) => Err(not_allowed()),
        (["vm", "config"], "GET") => Ok(Action::GetVmConfig),
        (["vm", "config"], _) => Err(not_allowed()),
        (["snapshot", "create"], "PUT") => {
            let b: CreateBody = json(body)?;
            Ok(Action::CreateSnapshot(CreateSnapshot {
                diff: matches!(b.snapshot_type, SnapshotType::Diff),
                snapshot_path: b.snapshot_path,
                mem_file_path: b.mem_file_path,
            }))
        }
        (["snapshot", "create"], _) => Err(not_allowed()),
        (["snapshot", "load"], "PUT") => Ok(Action::LoadSnapshot(load_params(body)?)),
        (["snapshot", "load"], _) => Err(not_allowed()),
        (["vm", "translate"], "GET") => Ok(Action::Translate(
            TranslateQuery::parse(query).map_err(bad_query)?,
        )),
        (["vm", "translate"], _) => Err(not_allowed()),
        (["vm", "memory"], "GET") => Ok(Action::ReadMemory(
            MemoryQuery::parse(query).map_err(bad_query)?,
        )),
        (["vm", "memory"], _) => Err(not_allowed()),
        (["guest", "processes"], "GET") => Ok(Action::GuestProcesses),
        (["guest", "processes"], _) => Err(not_allowed()),
        (["guest", "trace"], "PUT") => Ok(Action::PutTrace(
            json::<TraceBody>(body)?.check().map_err(bad_query)?,
        )),
        (["guest", "trace"], "GET") => Ok(Action::GetTrace(
            TraceQuery::parse(query).map_err(bad_query)?,
        )),
        (["guest", "trace"], _) => Err(not_allowed()),
        (["metrics"], "GET") => Ok(Action::GetMetrics),
        (["metrics"], "PUT") => Ok(Action::PutMetrics(json(body)?)),
        (["logger"], "PUT") => Ok(Action::PutLogger(json(body)?)),
        (["logger"], _) => Err(not_allowed()),
        (["metrics"], _) => Err(not_allowed()),
        // Firecracker's paths for what microvm does not implement.
        ([first, ..], _) if UNSUPPORTED_PATHS.iter().any(|(p, _)| p == first) => {
            let (what, why) = UNSUPPORTED_PATHS
                .iter()
                .find(|(p, _)| p == first)
                .map_or(("", ""), |&(p, w)| (p, w));
            Err(ApiError::BadRequest(unsupported(&format!("/{what}"), why)))
        }
        _ => Err(ApiError::NotFound(path.to_owned())),
    }
}

/// Firecracker's API paths (first segment) microvm answers with a 400 that says it does not support
/// them, rather than a 404.
const UNSUPPORTED_PATHS: &[(&str, &str)] = &[
    ("balloon", "no balloon device"),
    ("entropy", "no virtio-rng device"),
    ("mmds", "no MMDS"),
    ("cpu-config", "no CPU templates or CPUID/MSR modifiers"),
    ("pmem", "no virtio-pmem devices"),
    ("hotplug", "no memory hot-plug"),
    ("serial", "the serial console is configured with --serial"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CacheMode, IoEngine};
    use std::path::PathBuf;

    fn ok(method: &str, path: &str, body: &str) -> Action {
        route(method, path, body.as_bytes()).unwrap()
    }

    fn status(method: &str, path: &str, body: &str) -> u16 {
        route(method, path, body.as_bytes()).unwrap_err().status()
    }

    #[test]
    fn snapshot_bodies_follow_firecracker() {
        assert_eq!(
            ok(
                "PUT",
                "/snapshot/create",
                r#"{"snapshot_type": "Diff", "snapshot_path": "/s", "mem_file_path": "/m"}"#
            ),
            Action::CreateSnapshot(CreateSnapshot {
                diff: true,
                snapshot_path: "/s".into(),
                mem_file_path: "/m".into(),
            })
        );
        let Action::CreateSnapshot(c) = ok(
            "PUT",
            "/snapshot/create",
            r#"{"snapshot_path": "/s", "mem_file_path": "/m"}"#,
        ) else {
            panic!()
        };
        assert!(!c.diff, "Full is the default");
        let Action::LoadSnapshot(l) = ok(
            "PUT",
            "/snapshot/load",
            r#"{"snapshot_path": "/s", "mem_backend": {"backend_type": "File", "backend_path": "/m"},
                "resume_vm": true, "network_overrides": [{"iface_id": "eth0", "host_dev_name": "t1"}],
                "drive_overrides": [{"drive_id": "rootfs", "path_on_host": "/c.img"}]}"#,
        ) else {
            panic!()
        };
        assert_eq!(l.mem_file_path, PathBuf::from("/m"));
        assert!(l.resume_vm);
        assert_eq!(l.network_overrides[0].host_dev_name, "t1");
        assert_eq!(l.drive_overrides[0].path_on_host, PathBuf::from("/c.img"));
        let Action::LoadSnapshot(l) = ok(
            "PUT",
            "/snapshot/load",
            r#"{"snapshot_path": "/s", "mem_file_path": "/old"}"#,
        ) else {
            panic!()
        };
        assert_eq!(l.mem_file_path, PathBuf::from("/old"));
        assert!(!l.resume_vm);
        for bad in [
            r#"{"snapshot_path": "/s"}"#,
            r#"{"snapshot_path": "/s", "mem_file_path": "/m", "mem_backend": {"backend_type": "File", "backend_path": "/m"}}"#,
            r#"{"snapshot_path": "/s", "mem_backend": {"backend_type": "Uffd", "backend_path": "/u"}}"#,
            r#"{"snapshot_path": "/s", "mem_file_path": "/m", "bogus": 1}"#,
        ] {
            assert_eq!(status("PUT", "/snapshot/load", bad), 400, "{bad}");
        }
        assert_eq!(status("GET", "/snapshot/create", ""), 405);
    }

    #[test]
    fn firecracker_paths_microvm_lacks_say_so() {
        for (method, path) in [
            ("PUT", "/balloon"),
            ("GET", "/balloon/statistics"),
            ("PUT", "/entropy"),
            ("PUT", "/mmds"),
            ("PUT", "/mmds/config"),
            ("PUT", "/cpu-config"),
            ("PUT", "/pmem/p0"),
            ("PUT", "/hotplug/memory"),
        ] {
            let e = route(method, path, b"{}").unwrap_err();
            assert_eq!(e.status(), 400, "{path}");
            assert!(e.to_string().contains("is not supported by microvm"), "{e}");
        }
        assert_eq!(status("GET", "/nonexistent", ""), 404);
    }

    #[test]
    fn patch_bodies_follow_firecracker() {
        let Action::PatchDrive(d) = ok(
            "PATCH",
            "/drives/rootfs",
            r#"{"drive_id": "rootfs", "path_on_host": "/new.img",
                "rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 100}}}"#,
        ) else {
            panic!()
        };
        assert_eq!(d.path_on_host, Some(PathBuf::from("/new.img")));
        assert_eq!(d.rate_limiter.unwrap().bandwidth.unwrap().size, 1000);
        assert_eq!(
            ok("PATCH", "/drives/x", r#"{"drive_id": "x"}"#),
            Action::PatchDrive(PatchDrive {
                drive_id: "x".into(),
                path_on_host: None,
                rate_limiter: None,
            })
        );
        let Action::PatchNetworkInterface(n) = ok(
            "PATCH",
            "/network-interfaces/eth0",
            r#"{"iface_id": "eth0", "tx_rate_limiter": {"ops": {"size": 5, "refill_time": 10}}}"#,
        ) else {
            panic!()
        };
        assert!(n.rx_rate_limiter.is_none());
        assert_eq!(n.tx_rate_limiter.unwrap().ops.unwrap().size, 5);
        for (path, bad) in [
            ("/drives/a", r#"{"drive_id": "b"}"#),
            ("/drives/a", r#"{"drive_id": "a", "is_read_only": true}"#),
            ("/drives/a", r#"{"path_on_host": "/x"}"#),
            (
                "/drives/a",
                r#"{"drive_id": "a", "rate_limiter": {"ops": {"size": 1, "refill_time": 99999999999}}}"#,
            ),
            ("/network-interfaces/e", r#"{"iface_id": "f"}"#),
            ("/network-interfaces/e", r#"{"iface_id": "e", "mtu": 1500}"#),
        ] {
            assert_eq!(status("PATCH", path, bad), 400, "{bad}");
        }
    }

    #[test]
    fn routes_every_path() {
        assert_eq!(ok("GET", "/", ""), Action::GetInfo);
        assert_eq!(ok("GET", "/version", ""), Action::GetVersion);
        assert_eq!(ok("GET", "/machine-config", ""), Action::GetMachineConfig);
        assert_eq!(ok("GET", "/vm/config", ""), Action::GetVmConfig);
        assert_eq!(ok("GET", "/metrics?x=1", ""), Action::GetMetrics);
        assert_eq!(
            ok(
                "PUT",
                "/machine-config",
                r#"{"vcpu_count": 2, "mem_size_mib": 256, "smt": false}"#
            ),
            Action::PutMachineConfig(MachineConfig {
                vcpu_count: 2,
                mem_size_mib: 256,
                smt: false,
                thp: true,
                track_dirty_pages: false,
            })
        );
        let Action::PutBootSource(b) = ok(
            "PUT",
            "/boot-source",
            r#"{"kernel_image_path": "/k", "boot_args": "console=ttyS0", "initrd_path": "/i"}"#,
        ) else {
            panic!()
        };
        assert_eq!(b.kernel_image_path, PathBuf::from("/k"));
        assert_eq!(b.initrd_path, Some(PathBuf::from("/i")));
        let Action::PutDrive(d) = ok(
            "PUT",
            "/drives/rootfs",
            r#"{"drive_id": "rootfs", "path_on_host": "/r.img", "is_root_device": true,
                "is_read_only": true}"#,
        ) else {
            panic!()
        };
        assert!(d.is_root_device && d.is_read_only && d.format.is_none());
        assert_eq!(
            (d.io_engine, d.cache_type),
            (IoEngine::Threads, CacheMode::Writeback)
        );
        let Action::PutDrive(d) = ok(
            "PUT",
            "/drives/data",
            r#"{"drive_id": "data", "path_on_host": "/d.img", "is_root_device": false,
                "io_engine": "Async", "cache_type": "Direct"}"#,
        ) else {
            panic!()
        };
        assert_eq!(
            (d.io_engine, d.cache_type),
            (IoEngine::Async, CacheMode::Direct)
        );
        let Action::PutDrive(d) = ok(
            "PUT",
            "/drives/data",
            r#"{"drive_id": "data", "path_on_host": "/d.img", "is_root_device": false,
                "io_engine": "Threads"}"#,
        ) else {
            panic!()
        };
        assert_eq!(d.io_engine, IoEngine::Threads);
        let Action::PutNetworkInterface(n) = ok(
            "PUT",
            "/network-interfaces/eth0",
            r#"{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:00:00:00:01"}"#,
        ) else {
            panic!()
        };
        assert_eq!(n.host_dev_name, "tap0");
        for (body, action) in [
            ("InstanceStart", Action::InstanceStart),
            ("SendCtrlAltDel", Action::SendCtrlAltDel),
            ("FlushMetrics", Action::FlushMetrics),
        ] {
            let b = format!(r#"{{"action_type": "{body}"}}"#);
            assert_eq!(ok("PUT", "/actions", &b), action);
        }
        assert_eq!(ok("PATCH", "/vm", r#"{"state": "Paused"}"#), Action::Pause);
        assert_eq!(
            ok("PATCH", "/vm", r#"{"state": "Resumed"}"#),
            Action::Resume
        );
    }

    #[test]
    fn bad_bodies_are_400() {
        // Malformed JSON, empty body, unknown field, missing field, wrong type, unknown enum value.
        assert_eq!(status("PUT", "/machine-config", "{"), 400);
        assert_eq!(status("PUT", "/machine-config", ""), 400);
        assert_eq!(
            status(
                "PUT",
                "/machine-config",
                r#"{"vcpu_count": 1, "mem_size_mib": 128, "bogus": 1}"#
            ),
            400
        );
        assert_eq!(
            status("PUT", "/machine-config", r#"{"vcpu_count": 1}"#),
            400
        );
        assert_eq!(
            status(
                "PUT",
                "/machine-config",
                r#"{"vcpu_count": "one", "mem_size_mib": 128}"#
            ),
            400
        );
        assert_eq!(
            status(
                "PUT",
                "/machine-config",
                r#"{"vcpu_count": 300, "mem_size_mib": 1}"#
            ),
            400
        );
        assert_eq!(
            status("PUT", "/actions", r#"{"action_type": "Reboot"}"#),
            400
        );
        assert_eq!(status("PATCH", "/vm", r#"{"state": "Stopped"}"#), 400);
        assert_eq!(status("PUT", "/boot-source", r#"{"boot_args": "x"}"#), 400);
        // Bad engine or cache values are refused.
        for bad in [
            r#""io_engine": "Uring""#,
            r#""io_engine": "threads""#,
            r#""cache_type": "Unsafe""#,
        ] {
            let body = format!(
                r#"{{"drive_id": "a", "path_on_host": "/x", "is_root_device": false, {bad}}}"#
            );
            assert_eq!(status("PUT", "/drives/a", &body), 400, "{body}");
        }
        // Path and body ids must agree; Firecracker requires is_root_device.
        assert_eq!(
            status(
                "PUT",
                "/drives/a",
                r#"{"drive_id": "b", "path_on_host": "/x", "is_root_device": false}"#
            ),
            400
        );
        assert_eq!(
            status(
                "PUT",
                "/drives/a",
                r#"{"drive_id": "a", "path_on_host": "/x"}"#
            ),
            400
        );
        assert_eq!(
            status(
                "PUT",
                "/network-interfaces/eth0",
                r#"{"iface_id": "eth1", "host_dev_name": "tap0"}"#
            ),
            400
        );
        let e = route("PUT", "/machine-config", b"{").unwrap_err();
        assert!(
            e.body().starts_with(r#"{"fault_message":"invalid body: "#),
            "{}",
            e.body()
        );
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        assert_eq!(status("GET", "/nope", ""), 404);
        assert_eq!(status("GET", "/drives", ""), 404);
        assert_eq!(status("PUT", "/drives/", ""), 404);
        assert_eq!(status("GET", "/vm/config/x", ""), 404);
        assert_eq!(status("DELETE", "/", ""), 405);
        assert_eq!(status("POST", "/machine-config", ""), 405);
        assert_eq!(status("GET", "/boot-source", ""), 405);
        assert_eq!(status("GET", "/actions", ""), 405);
        assert_eq!(status("GET", "/drives/a", ""), 405);
        assert_eq!(status("PUT", "/vm", r#"{"state": "Paused"}"#), 405);
        assert_eq!(status("POST", "/metrics", ""), 405);
        assert_eq!(status("GET", "/logger", ""), 405);
        assert_eq!(ApiError::PayloadTooLarge(1).status(), 413);
    }

    #[test]
    fn introspection_queries_are_parsed_or_400() {
        assert_eq!(
            ok("GET", "/vm/translate?gva=0x1000&vcpu=1", ""),
            Action::Translate(TranslateQuery {
                gva: 0x1000,
                vcpu: 1
            })
        );
        assert_eq!(
            ok("GET", "/vm/memory?gpa=0x100000&len=64", ""),
            Action::ReadMemory(MemoryQuery {
                gpa: 0x100000,
                len: 64
            })
        );
        assert_eq!(status("GET", "/vm/translate", ""), 400);
        assert_eq!(status("GET", "/vm/translate?gva=zz", ""), 400);
        assert_eq!(status("GET", "/vm/memory?gpa=0&len=4097", ""), 400);
        assert_eq!(status("PUT", "/vm/memory?gpa=0&len=1", ""), 405);
        let e = route("GET", "/vm/memory?gpa=0&len=99999", b"").unwrap_err();
        assert!(e.to_string().contains("over the limit of 4096"), "{e}");
        assert_eq!(
            ok("GET", "/guest/trace?from=5", ""),
            Action::GetTrace(TraceQuery { from: 5 })
        );
        assert_eq!(
            ok(
                "PUT",
                "/guest/trace",
                r#"{"enabled": true, "syscalls": ["openat"]}"#
            ),
            Action::PutTrace(TraceSettings {
                enabled: true,
                pids: vec![],
                follow_children: false,
                syscalls: vec![257]
            })
        );
        assert_eq!(status("PUT", "/guest/trace", r#"{"enabled": 1}"#), 400);
        assert_eq!(
            status(
                "PUT",
                "/guest/trace",
                r#"{"enabled": true, "syscalls": ["x"]}"#
            ),
            400
        );
        assert_eq!(status("PUT", "/guest/trace", ""), 400);
        assert_eq!(status("GET", "/guest/trace?from=-1", ""), 400);
        assert_eq!(status("POST", "/guest/trace", ""), 405);
    }
}
