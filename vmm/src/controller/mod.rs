//! The VMM thread's two controllers, as Firecracker separates them (`PrebootApiController`,
//! `RuntimeApiController`):
//!
//! - [`preboot::PrebootController`] owns the configuration while the VM does not exist ("Not started"). It
//!   answers requests with plain functions of the configuration (no KVM, no threads), and on
//!   `InstanceStart` says so; [`crate::run`]'s pre-boot loop then builds the VM.
//! - [`runtime::RuntimeController`] owns the running VM ("Running", "Paused"). It is reached through
//!   [`runtime::RuntimeApi`], an event subscriber of the VMM thread's event manager that reads the API's
//!   channel and answers each request on the spot.
//!
//! Errors stay typed until they become an answer: [`StartError`] says whether starting failed on the
//! configuration (400) or on the host (500).

pub mod preboot;
pub mod runtime;
mod vcpu_threads;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber};
use serde::Serialize;

use crate::api::{ApiError, ApiMetrics, Outcome, Reply};
use crate::builder::BuildError;
use crate::device_manager::DeviceError;
use devices::virtio::block::BlockMetrics;
use devices::virtio::{NetMetrics, VsockMetrics};

pub use preboot::{PrebootAnswer, PrebootController};
pub use runtime::{RuntimeApi, RuntimeController};

/// The event manager of the VMM thread.
pub type Manager = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

/// Firecracker's default instance id.
pub const DEFAULT_INSTANCE_ID: &str = "anonymous-instance";
/// The name `GET /` reports.
pub const APP_NAME: &str = "microvm";

/// Why `InstanceStart` (or booting from flags) failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("cannot set up the VMM thread's events: {0}")]
    Events(#[source] std::io::Error),
    #[error("cannot start a vCPU thread: {0}")]
    SpawnVcpu(#[source] std::io::Error),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error("cannot load the snapshot: {0}")]
    Snapshot(#[from] crate::persist::PersistError),
    #[error(transparent)]
    Introspect(crate::introspect::IntrospectError),
}

impl StartError {
    /// Whether the configuration (its values or the files it names) is at fault, rather than the host
    /// (KVM, memory, threads, file descriptors): a 400 against a 500.
    pub fn is_config_error(&self) -> bool {
        if let StartError::Snapshot(p) = self {
            // Every load error is about the files named (missing, wrong version, corrupt, wrong size).
            return !matches!(
                p,
                crate::persist::PersistError::Memory(crate::vstate::memory::MemoryError::MapFile(
                    _
                ))
            );
        }
        let StartError::Build(b) = self else {
            return false;
        };
        match b {
            BuildError::Config(_)
            | BuildError::Boot(_)
            | BuildError::TooManyVcpus { .. }
            | BuildError::MpTable(_)
            | BuildError::CmdlineTooLong { .. } => true,
            BuildError::Device(d) => matches!(
                d,
                DeviceError::NoSlots(_)
                    | DeviceError::Disk { .. }
                    | DeviceError::Tap { .. }
                    | DeviceError::DeviceCount { .. }
                    | DeviceError::Restore { .. }
            ),
            BuildError::SnapshotVcpus { .. }
            | BuildError::VcpuState(crate::vstate::vcpu_state::VcpuStateError::TscFrequency {
                ..
            })
            | BuildError::Serial(_)
            | BuildError::I8042(_) => true,
            _ => false,
        }
    }
}

impl From<&StartError> for ApiError {
    fn from(e: &StartError) -> Self {
        if e.is_config_error() {
            ApiError::StartRefused(e.to_string())
        } else {
            ApiError::StartFailed(e.to_string())
        }
    }
}

/// `GET /`.
#[derive(Serialize)]
struct Info<'a> {
    id: &'a str,
    state: &'a str,
    vmm_version: &'a str,
    app_name: &'a str,
}

/// `GET /version`.
#[derive(Serialize)]
struct Version<'a> {
    firecracker_version: &'a str,
}

/// The i8042's counters.
#[derive(Serialize, Default)]
pub struct I8042Metrics {
    /// `SendCtrlAltDel` requests carried out.
    pub ctrl_alt_del: AtomicU64,
}

/// `GET /metrics`: every counter, serialized as it is read.
#[derive(Serialize)]
struct Metrics<'a> {
    api: Option<&'a ApiMetrics>,
    block: BTreeMap<&'a str, &'a BlockMetrics>,
    net: BTreeMap<&'a str, &'a NetMetrics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vsock: Option<&'a VsockMetrics>,
    i8042: &'a I8042Metrics,
}

/// What both controllers answer the same way.
pub(crate) fn info(id: &str, state: &str) -> Outcome {
    to_json(&Info {
        id,
        state,
        vmm_version: env!("CARGO_PKG_VERSION"),
        app_name: APP_NAME,
    })
}

pub(crate) fn version() -> Outcome {
    to_json(&Version {
        firecracker_version: env!("CARGO_PKG_VERSION"),
    })
}

/// The metrics as JSON: `GET /metrics` answers it, `FlushMetrics` logs it.
pub(crate) fn metrics_json(
    api: Option<&ApiMetrics>,
    blocks: &[(String, Arc<BlockMetrics>)],
    nets: &[(String, Arc<NetMetrics>)],
    vsock: Option<&VsockMetrics>,
    i8042: &I8042Metrics,
) -> Result<String, ApiError> {
    let m = Metrics {
        api,
        block: blocks.iter().map(|(id, m)| (id.as_str(), &**m)).collect(),
        net: nets.iter().map(|(id, m)| (id.as_str(), &**m)).collect(),
        vsock,
        i8042,
    };
    serde_json::to_string(&m).map_err(|e| ApiError::Internal(e.to_string()))
}

/// Firecracker's names for the per-device counters microvm has too: (ours, Firecracker's).
const FC_BLOCK_NAMES: &[(&str, &str)] = &[
    ("reads", "read_count"),
    ("writes", "write_count"),
    ("read_bytes", "read_bytes"),
    ("write_bytes", "write_bytes"),
    ("flushes", "flush_count"),
    ("errors", "execute_fails"),
    ("dropped", "invalid_reqs_count"),
    (
        "rate_limiter_throttled_events",
        "rate_limiter_throttled_events",
    ),
];
const FC_NET_NAMES: &[(&str, &str)] = &[
    ("rx_packets", "rx_packets_count"),
    ("rx_bytes", "rx_bytes_count"),
    ("tx_packets", "tx_packets_count"),
    ("tx_bytes", "tx_bytes_count"),
    ("rx_no_buffers", "no_rx_avail_buffer"),
    ("malformed", "tx_malformed_frames"),
    ("rx_rate_limiter_throttled", "rx_rate_limiter_throttled"),
    ("tx_rate_limiter_throttled", "tx_rate_limiter_throttled"),
];

/// Firecracker's vsock counters microvm has under the same names.
const FC_VSOCK_NAMES: &[&str] = &[
    "rx_bytes_count",
    "tx_bytes_count",
    "rx_packets_count",
    "tx_packets_count",
    "conns_added",
    "conns_removed",
    "rx_read_fails",
    "tx_write_fails",
];

/// A metrics line in Firecracker's shape from microvm's metrics (the `GET /metrics` body): per device
/// `block_<drive_id>` and `net_<iface_id>` with Firecracker's counter names, `block` and `net` their sums,
/// and everything microvm counts under its own names in `microvm`.
fn firecracker_line(ours: &serde_json::Value) -> serde_json::Value {
    let mut line = serde_json::Map::new();
    for (section, names) in [("block", FC_BLOCK_NAMES), ("net", FC_NET_NAMES)] {
        let mut total = serde_json::Map::new();
        for &(_, fc) in names {
            total.insert(fc.into(), 0u64.into());
        }
        for (id, counters) in ours[section].as_object().into_iter().flatten() {
            let mut device = serde_json::Map::new();
            for &(name, fc) in names {
                let n = counters[name].as_u64().unwrap_or(0);
                device.insert(fc.into(), n.into());
                if let Some(t) = total.get_mut(fc) {
                    *t = (t.as_u64().unwrap_or(0) + n).into();
                }
            }
            line.insert(format!("{section}_{id}"), device.into());
        }
        line.insert(section.into(), total.into());
    }
    if let Some(v) = ours["vsock"].as_object() {
        let vsock: serde_json::Map<_, _> = FC_VSOCK_NAMES
            .iter()
            .map(|&n| (n.to_string(), v.get(n).cloned().unwrap_or(0u64.into())))
            .collect();
        line.insert("vsock".into(), vsock.into());
    }
    line.insert("microvm".into(), ours.clone());
    line.into()
}

/// `FlushMetrics` (and the periodic and exit flushes): one JSON line to the `metrics_path` sink in
/// Firecracker's shape ([`firecracker_line`], with `utc_timestamp_ms`, and `emit_id`'s `id` and
/// `properties`), or, with no sink configured, microvm's metrics to the log at info level.
pub(crate) fn flush_metrics(id: &str, config: &crate::config::VmConfig, line: String) -> Outcome {
    let Some(m) = &config.metrics else {
        log::info!("metrics: {line}");
        return Ok(Reply::Empty);
    };
    let ours: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut value = firecracker_line(&ours);
    if let Some(obj) = value.as_object_mut() {
        // Firecracker's lines carry the wall-clock time they were written.
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        obj.insert("utc_timestamp_ms".into(), ms.into());
        if m.emit_id {
            obj.insert("id".into(), id.into());
        }
        if let Some(p) = &m.properties {
            obj.insert("properties".into(), serde_json::json!(p));
        }
    }
    crate::logger::write_metrics(&value.to_string());
    Ok(Reply::Empty)
}

/// `value` as a JSON answer, written into a buffer from the API's pool (given back once the answer is
/// sent), so that answering allocates nothing in steady state.
pub(crate) fn to_json<T: Serialize>(value: &T) -> Outcome {
    let mut buf = crate::api::server::json_buffer();
    serde_json::to_writer(&mut buf, value).map_err(|e| ApiError::Internal(e.to_string()))?;
    // serde_json writes UTF-8 only.
    String::from_utf8(buf)
        .map(Reply::Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn metrics_serialize_every_counter_by_name() {
        let api = ApiMetrics::default();
        api.requests.store(3, Ordering::Relaxed);
        let blk = Arc::new(BlockMetrics::default());
        blk.read_bytes.store(4096, Ordering::Relaxed);
        let net = Arc::new(NetMetrics::default());
        net.rx_no_buffers.store(2, Ordering::Relaxed);
        let kbd = I8042Metrics::default();
        kbd.ctrl_alt_del.store(1, Ordering::Relaxed);
        let text = metrics_json(
            Some(&api),
            &[("vda".into(), blk)],
            &[("eth0".into(), net)],
            None,
            &kbd,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "api": {"connections": 0, "requests": 3, "errors": 0, "timeouts": 0, "evicted": 0,
                        "threads": 0},
                "block": {"vda": {"reads": 0, "writes": 0, "read_bytes": 4096, "write_bytes": 0,
                                  "flushes": 0, "errors": 0, "dropped": 0,
                                  "rate_limiter_throttled_events": 0}},
                "net": {"eth0": {"rx_packets": 0, "rx_bytes": 0, "rx_dropped": 0, "rx_no_buffers": 2,
                                 "tx_packets": 0, "tx_bytes": 0, "tx_dropped": 0, "malformed": 0,
                                 "rx_rate_limiter_throttled": 0, "tx_rate_limiter_throttled": 0}},
                "i8042": {"ctrl_alt_del": 1},
            })
        );
        let v: serde_json::Value =
            serde_json::from_str(&metrics_json(None, &[], &[], None, &kbd).unwrap()).unwrap();
        assert_eq!(v["api"], serde_json::Value::Null);
        assert_eq!(v["block"], serde_json::json!({}));
    }

    #[test]
    fn metrics_lines_use_firecrackers_names_per_device_and_in_sum() {
        let a = Arc::new(BlockMetrics::default());
        a.reads.store(3, Ordering::Relaxed);
        a.read_bytes.store(1536, Ordering::Relaxed);
        let b = Arc::new(BlockMetrics::default());
        b.reads.store(2, Ordering::Relaxed);
        b.rate_limiter_throttled_events.store(7, Ordering::Relaxed);
        let n = Arc::new(NetMetrics::default());
        n.tx_packets.store(5, Ordering::Relaxed);
        n.rx_no_buffers.store(1, Ordering::Relaxed);
        let vs = VsockMetrics::default();
        vs.rx_bytes_count.store(9, Ordering::Relaxed);
        vs.host_connects.store(1, Ordering::Relaxed);
        let ours = metrics_json(
            None,
            &[("rootfs".into(), a), ("data".into(), b)],
            &[("eth0".into(), n)],
            Some(&vs),
            &I8042Metrics::default(),
        )
        .unwrap();
        let ours: serde_json::Value = serde_json::from_str(&ours).unwrap();
        let line = firecracker_line(&ours);
        assert_eq!(line["block_rootfs"]["read_count"], 3);
        assert_eq!(line["block_rootfs"]["read_bytes"], 1536);
        assert_eq!(line["block_data"]["rate_limiter_throttled_events"], 7);
        assert_eq!(line["block"]["read_count"], 5);
        assert_eq!(line["block"]["flush_count"], 0);
        assert_eq!(line["net_eth0"]["tx_packets_count"], 5);
        assert_eq!(line["net"]["no_rx_avail_buffer"], 1);
        assert_eq!(line["vsock"]["rx_bytes_count"], 9);
        assert_eq!(
            line["vsock"].get("host_connects"),
            None,
            "not a Firecracker counter"
        );
        assert_eq!(line["microvm"]["vsock"]["host_connects"], 1);
        assert_eq!(line["microvm"], ours);
        // No devices: the sums are there, zero.
        let empty = firecracker_line(&serde_json::json!({"block": {}, "net": {}}));
        assert_eq!(empty["net"]["rx_bytes_count"], 0);
    }

    #[test]
    fn start_errors_are_400_for_the_configuration_and_500_for_the_host() {
        let cfg = StartError::Build(BuildError::TooManyVcpus {
            requested: 9,
            max: 2,
        });
        assert_eq!(ApiError::from(&cfg).status(), 400);
        let host = StartError::SpawnVcpu(std::io::Error::from_raw_os_error(libc::EAGAIN));
        assert_eq!(ApiError::from(&host).status(), 500);
        let kvm = StartError::Build(BuildError::EventFd(std::io::Error::from_raw_os_error(
            libc::EMFILE,
        )));
        assert_eq!(ApiError::from(&kvm).status(), 500);
        assert!(ApiError::from(&kvm)
            .to_string()
            .starts_with("cannot start the VM: "));
    }
}
