//! The VM's configuration: plain serde structs, filled from CLI flags (and later API bodies and config
//! files), checked once by [`VmConfig::validate`] before anything is built.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::arch::x86_64::layout;

/// Default guest memory, MiB.
pub const DEFAULT_MEM_MIB: u64 = 128;
/// Default vCPU count.
pub const DEFAULT_VCPUS: u8 = 1;
/// Default kernel command line: console on the 8250, reboot through the i8042 (which ends the VM), and
/// reboot at once on panic (which also ends the VM).
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";
/// Default kernel command line with `--console virtio`.
pub const DEFAULT_CMDLINE_VIRTIO_CONSOLE: &str = "console=hvc0 reboot=k panic=1";

/// How the kernel is entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BootProtocol {
    /// The PVH entry point from the ELF note, in 32-bit protected mode.
    Pvh,
    /// The Linux 64-bit boot protocol: long mode with a zero page.
    Linux,
}

/// Guest CPU and memory. In JSON (`PUT /machine-config`, config files, `GET /machine-config`) this is
/// Firecracker's `MachineConfiguration` (see [`MachineBody`]): `huge_pages` `"None"`/`"Transparent"` is our
/// `thp`, which is also accepted under its own name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "MachineBody", into = "MachineBody")]
pub struct MachineConfig {
    pub vcpu_count: u8,
    pub mem_size_mib: u64,
    /// Simultaneous multithreading (Firecracker's field). Always false here: `true` is refused.
    pub smt: bool,
    /// Back guest RAM with transparent huge pages (ours; QEMU and Cloud Hypervisor do by default). See
    /// [`devices::advise_huge_pages`].
    pub thp: bool,
    /// Firecracker's dirty-page tracking for Diff snapshots: accepted and reported; microvm's Diff
    /// snapshots need no set-up (see `persist`), so it changes nothing.
    pub track_dirty_pages: bool,
}

/// Firecracker's `huge_pages`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    None,
    Transparent,
    #[serde(rename = "2M")]
    TwoM,
}

/// The JSON shape of [`MachineConfig`]: Firecracker's fields, plus our `thp`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineBody {
    vcpu_count: u8,
    mem_size_mib: u64,
    /// `ht_enabled` is its name before Firecracker 1.0, which Kata's client still sends.
    #[serde(default, alias = "ht_enabled")]
    smt: bool,
    #[serde(default)]
    track_dirty_pages: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    huge_pages: Option<HugePages>,
    /// Only `"None"` (no template) is accepted.
    #[serde(default, skip_serializing)]
    cpu_template: Option<String>,
    #[serde(default, skip_serializing)]
    thp: Option<bool>,
}

impl TryFrom<MachineBody> for MachineConfig {
    type Error = String;
    fn try_from(b: MachineBody) -> Result<Self, String> {
        if let Some(t) = b.cpu_template.filter(|t| t != "None") {
            return Err(format!(
                "cpu_template {t:?} is not supported by microvm (only \"None\")"
            ));
        }
        let thp = match (b.huge_pages, b.thp) {
            (Some(HugePages::TwoM), _) => {
                return Err(
                    "huge_pages \"2M\" (hugetlbfs) is not supported by microvm: use \"None\" \
                            or \"Transparent\""
                        .into(),
                )
            }
            (Some(h), Some(t)) if (h == HugePages::Transparent) != t => {
                return Err(format!("huge_pages {h:?} contradicts thp {t}"))
            }
            (Some(h), _) => h == HugePages::Transparent,
            (None, t) => t.unwrap_or(true),
        };
        Ok(Self {
            vcpu_count: b.vcpu_count,
            mem_size_mib: b.mem_size_mib,
            smt: b.smt,
            thp,
            track_dirty_pages: b.track_dirty_pages,
        })
    }
}

impl From<MachineConfig> for MachineBody {
    fn from(m: MachineConfig) -> Self {
        Self {
            vcpu_count: m.vcpu_count,
            mem_size_mib: m.mem_size_mib,
            smt: m.smt,
            track_dirty_pages: m.track_dirty_pages,
            huge_pages: Some(if m.thp {
                HugePages::Transparent
            } else {
                HugePages::None
            }),
            cpu_template: None,
            thp: None,
        }
    }
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            vcpu_count: DEFAULT_VCPUS,
            mem_size_mib: DEFAULT_MEM_MIB,
            smt: false,
            thp: true,
            track_dirty_pages: false,
        }
    }
}

/// What to boot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    pub kernel_image_path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    /// Forces a boot protocol; detected from the kernel file when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_protocol: Option<BootProtocol>,
}

/// Drive format, I/O engine and cache mode are the device model's own types (one definition, with their
/// serde names and defaults, in `devices`).
pub use devices::disk::{CacheMode, ImageFormat};
pub use devices::rate_limiter::RateLimiterConfig;
pub use devices::virtio::IoEngine;

/// A virtio-blk disk: the `--disk` flag, a config file's `drives` entry and the body of `PUT /drives/{id}`
/// (the API deserializes this very type). The first drive is the guest's /dev/vda. Its JSON is
/// Firecracker's `Drive` (see [`DriveBody`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "DriveBody", into = "DriveBody")]
pub struct DriveConfig {
    /// Also the serial the guest reads with GET_ID (at most 20 bytes).
    pub drive_id: String,
    pub path_on_host: PathBuf,
    /// The guest's root file system: this drive becomes /dev/vda and `root=/dev/vda` goes on the command line.
    /// Required in JSON, as in Firecracker.
    pub is_root_device: bool,
    pub is_read_only: bool,
    /// Detected from the file's magic when absent.
    pub format: Option<ImageFormat>,
    pub io_engine: IoEngine,
    pub cache_type: CacheMode,
    /// Firecracker's `rate_limiter`, enforced by the device (`devices::rate_limiter`).
    pub rate_limiter: Option<RateLimiterConfig>,
}

/// `cache_type` as a body may give it: Firecracker's `Unsafe` is named so that it can be refused as not
/// supported.
#[derive(Clone, Copy, Serialize, Deserialize)]
enum CacheTypeBody {
    Unsafe,
    Writeback,
    Direct,
}

/// The JSON shape of [`DriveConfig`]: Firecracker's `Drive` fields (those microvm does not support are
/// refused by name), plus our `format`. `io_engine` is written only when it is Firecracker's (`Sync`,
/// `Async`), so a drive configured with Firecracker's fields alone reads back in Firecracker's schema.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveBody {
    drive_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path_on_host: Option<PathBuf>,
    is_root_device: bool,
    #[serde(default)]
    is_read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    format: Option<ImageFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    io_engine: Option<IoEngine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache_type: Option<CacheTypeBody>,
    #[serde(default, skip_serializing)]
    partuuid: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    socket: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate_limiter: Option<RateLimiterConfig>,
}

/// The message for a Firecracker field microvm refuses.
pub fn unsupported(field: &str, what: &str) -> String {
    format!("{field} is not supported by microvm ({what})")
}

impl TryFrom<DriveBody> for DriveConfig {
    type Error = String;
    fn try_from(b: DriveBody) -> Result<Self, String> {
        if b.socket.is_some() {
            return Err(unsupported("socket", "no vhost-user-block drives"));
        }
        if b.partuuid.is_some() {
            return Err(unsupported(
                "partuuid",
                "the root device is always /dev/vda",
            ));
        }
        if let Some(r) = &b.rate_limiter {
            r.validate().map_err(|e| format!("rate_limiter: {e}"))?;
        }
        let Some(path_on_host) = b.path_on_host else {
            return Err(
                "path_on_host is required (microvm has no vhost-user-block `socket` drives)".into(),
            );
        };
        let cache_type = match b.cache_type {
            None | Some(CacheTypeBody::Writeback) => CacheMode::Writeback,
            Some(CacheTypeBody::Direct) => CacheMode::Direct,
            Some(CacheTypeBody::Unsafe) => {
                return Err(unsupported(
                    "cache_type \"Unsafe\"",
                    "flushes are always honoured: use Writeback or Direct",
                ))
            }
        };
        Ok(Self {
            drive_id: b.drive_id,
            path_on_host,
            is_root_device: b.is_root_device,
            is_read_only: b.is_read_only,
            format: b.format,
            io_engine: b.io_engine.unwrap_or_default(),
            cache_type,
            rate_limiter: b.rate_limiter,
        })
    }
}

impl From<DriveConfig> for DriveBody {
    fn from(d: DriveConfig) -> Self {
        Self {
            drive_id: d.drive_id,
            path_on_host: Some(d.path_on_host),
            is_root_device: d.is_root_device,
            is_read_only: d.is_read_only,
            format: d.format,
            io_engine: (d.io_engine != IoEngine::Threads).then_some(d.io_engine),
            cache_type: Some(match d.cache_type {
                CacheMode::Writeback => CacheTypeBody::Writeback,
                CacheMode::Direct => CacheTypeBody::Direct,
            }),
            partuuid: None,
            socket: None,
            rate_limiter: d.rate_limiter,
        }
    }
}

impl DriveConfig {
    /// A writable drive with the default engine and cache, not the root device.
    pub fn new(drive_id: impl Into<String>, path_on_host: impl Into<PathBuf>) -> Self {
        Self {
            drive_id: drive_id.into(),
            path_on_host: path_on_host.into(),
            is_root_device: false,
            is_read_only: false,
            format: None,
            io_engine: IoEngine::default(),
            cache_type: CacheMode::default(),
            rate_limiter: None,
        }
    }

    /// Parses the `--disk` syntax
    /// `PATH[,ro][,id=ID][,format=raw|qcow2][,io_engine=sync|async|threads][,cache_type=writeback|direct]`.
    /// Without `id=`, the id is empty and the caller names the drive by its position.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut parts = spec.split(',');
        let path = parts.next().unwrap_or_default();
        if path.is_empty() {
            return Err(format!("--disk {spec:?}: missing the image path"));
        }
        let mut drive = DriveConfig::new("", path);
        for opt in parts {
            match opt.split_once('=') {
                None if opt == "ro" => drive.is_read_only = true,
                Some(("id", id)) if !id.is_empty() => drive.drive_id = id.to_owned(),
                Some(("format", "raw")) => drive.format = Some(ImageFormat::Raw),
                Some(("format", "qcow2")) => drive.format = Some(ImageFormat::Qcow2),
                Some(("io_engine", "sync")) => drive.io_engine = IoEngine::Sync,
                Some(("io_engine", "async")) => drive.io_engine = IoEngine::Async,
                Some(("io_engine", "threads")) => drive.io_engine = IoEngine::Threads,
                Some(("cache_type", "writeback")) => drive.cache_type = CacheMode::Writeback,
                Some(("cache_type", "direct")) => drive.cache_type = CacheMode::Direct,
                _ => {
                    return Err(format!(
                        "--disk {spec:?}: unknown option {opt:?} (expected ro, id=ID, format=raw|qcow2, \
                         io_engine=sync|async|threads, cache_type=writeback|direct)"
                    ))
                }
            }
        }
        Ok(drive)
    }
}

/// A network interface (Firecracker's `network-interfaces` entry): a virtio-net device on an existing host
/// TAP device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "NetBody", into = "NetBody")]
pub struct NetConfig {
    pub iface_id: String,
    /// The host TAP device.
    pub host_dev_name: String,
    /// `xx:xx:xx:xx:xx:xx`, unicast; a default is chosen when absent.
    pub guest_mac: Option<String>,
    /// Firecracker's `rx_rate_limiter` (frames to the guest), enforced by the device.
    pub rx_rate_limiter: Option<RateLimiterConfig>,
    /// Firecracker's `tx_rate_limiter` (frames from the guest), enforced by the device.
    pub tx_rate_limiter: Option<RateLimiterConfig>,
}

/// The JSON shape of [`NetConfig`]: Firecracker's `NetworkInterface`; its fields microvm does not support
/// are refused by name.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetBody {
    iface_id: String,
    host_dev_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    guest_mac: Option<String>,
    #[serde(default, skip_serializing)]
    mtu: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rx_rate_limiter: Option<RateLimiterConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tx_rate_limiter: Option<RateLimiterConfig>,
}

impl TryFrom<NetBody> for NetConfig {
    type Error = String;
    fn try_from(b: NetBody) -> Result<Self, String> {
        if b.mtu.is_some() {
            return Err(unsupported("mtu", "VIRTIO_NET_F_MTU is not offered"));
        }
        for (field, v) in [
            ("rx_rate_limiter", &b.rx_rate_limiter),
            ("tx_rate_limiter", &b.tx_rate_limiter),
        ] {
            if let Some(r) = v {
                r.validate().map_err(|e| format!("{field}: {e}"))?;
            }
        }
        Ok(Self {
            iface_id: b.iface_id,
            host_dev_name: b.host_dev_name,
            guest_mac: b.guest_mac,
            rx_rate_limiter: b.rx_rate_limiter,
            tx_rate_limiter: b.tx_rate_limiter,
        })
    }
}

impl From<NetConfig> for NetBody {
    fn from(n: NetConfig) -> Self {
        Self {
            iface_id: n.iface_id,
            host_dev_name: n.host_dev_name,
            guest_mac: n.guest_mac,
            mtu: None,
            rx_rate_limiter: n.rx_rate_limiter,
            tx_rate_limiter: n.tx_rate_limiter,
        }
    }
}

/// Firecracker's logger `level` (case-insensitive; `Warn` is taken for `Warning`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub enum LogLevel {
    Off,
    Error,
    Warning,
    Info,
    Debug,
    Trace,
}

impl TryFrom<String> for LogLevel {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "off" => Self::Off,
            "error" => Self::Error,
            "warning" | "warn" => Self::Warning,
            "info" => Self::Info,
            "debug" => Self::Debug,
            "trace" => Self::Trace,
            _ => {
                return Err(format!(
                    "level {s:?} is not one of Off, Error, Warning, Info, Debug, Trace"
                ))
            }
        })
    }
}

/// Firecracker's `Logger` (`PUT /logger`, a config file's `logger`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggerConfig {
    /// A file or FIFO; stderr when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    #[serde(default)]
    pub show_level: bool,
    #[serde(default)]
    pub show_log_origin: bool,
    /// Only records of this module path (a prefix of the log target, e.g. `vmm::api`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// Firecracker's `Metrics` (`PUT /metrics`, a config file's `metrics`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// A file or FIFO each `FlushMetrics` writes one JSON line to.
    pub metrics_path: PathBuf,
    /// Add the instance id as a top-level `"id"`.
    #[serde(default)]
    pub emit_id: bool,
    /// Added as a top-level `"properties"` object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<std::collections::BTreeMap<String, String>>,
}

/// Firecracker's `Vsock` (`PUT /vsock`, a config file's `vsock`, `--vsock`): a virtio-vsock device whose
/// host side is the Unix socket `uds_path` (see README, "vsock").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// Firecracker's deprecated id: accepted and ignored, as Firecracker does.
    #[serde(default, skip_serializing)]
    pub vsock_id: Option<String>,
    /// The guest's CID, 3 or more.
    pub guest_cid: u64,
    /// Host clients connect here; guest connections to port P reach `<uds_path>_P`.
    pub uds_path: PathBuf,
}

/// Longest `uds_path`: a Unix socket path (108 bytes with its NUL) less room for `_4294967295`.
pub const MAX_VSOCK_PATH_LEN: usize = 107 - 11;

impl VsockConfig {
    /// Parses the `--vsock` syntax `cid=N,uds=PATH`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (mut cid, mut uds) = (None, None);
        for opt in spec.split(',') {
            match opt.split_once('=') {
                Some(("cid", n)) => {
                    cid = Some(
                        n.parse::<u64>()
                            .map_err(|_| format!("--vsock {spec:?}: cid {n:?} is not a number"))?,
                    )
                }
                Some(("uds", p)) if !p.is_empty() => uds = Some(PathBuf::from(p)),
                _ => {
                    return Err(format!(
                        "--vsock {spec:?}: unknown option {opt:?} (expected cid=N, uds=PATH)"
                    ))
                }
            }
        }
        match (cid, uds) {
            (Some(guest_cid), Some(uds_path)) => Ok(Self {
                vsock_id: None,
                guest_cid,
                uds_path,
            }),
            _ => Err(format!("--vsock {spec:?}: needs cid=N and uds=PATH")),
        }
    }
}

impl NetConfig {
    /// Parses the `--net` syntax `tap=NAME[,mac=MAC][,id=ID]`. Without `id=`, the id is empty and the
    /// caller names the interface by its position.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut net = NetConfig {
            iface_id: String::new(),
            host_dev_name: String::new(),
            guest_mac: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        };
        for opt in spec.split(',') {
            match opt.split_once('=') {
                Some(("tap", name)) if !name.is_empty() => net.host_dev_name = name.to_owned(),
                Some(("mac", mac)) if !mac.is_empty() => net.guest_mac = Some(mac.to_owned()),
                Some(("id", id)) if !id.is_empty() => net.iface_id = id.to_owned(),
                _ => {
                    return Err(format!(
                        "--net {spec:?}: unknown option {opt:?} (expected tap=NAME, mac=MAC, id=ID)"
                    ))
                }
            }
        }
        if net.host_dev_name.is_empty() {
            return Err(format!("--net {spec:?}: missing tap=NAME"));
        }
        Ok(net)
    }

    /// The guest's MAC: `guest_mac`, or a locally administered unicast address derived from the TAP's
    /// name (stable across runs, different for different TAPs).
    pub fn mac(&self) -> [u8; 6] {
        if let Some(m) = self.guest_mac.as_deref().and_then(parse_mac) {
            return m;
        }
        // FNV-1a over the name.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.host_dev_name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let b = h.to_le_bytes();
        [0x06, b[0], b[1], b[2], b[3], b[4]]
    }
}

/// Parses a MAC address `xx:xx:xx:xx:xx:xx` (hex, either case).
pub fn parse_mac(mac: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Longest TAP device name (IFNAMSIZ less the NUL).
pub const MAX_IFNAME_LEN: usize = 15;

/// Where the guest console is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleKind {
    /// The 8250 UART (ttyS0).
    #[default]
    Serial,
    /// A virtio console (hvc0) gets stdin; stdout gets its output.
    Virtio,
}

/// What the 8250 UART is connected to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SerialMode {
    /// Output to stdout (and input from stdin unless the console is virtio).
    #[default]
    Stdio,
    /// The UART exists but its output is discarded and it gets no input.
    Off,
}

/// Longest drive id, Firecracker's limit for resource ids (firecracker-containerd's base32 stub ids
/// pass 20 bytes); the guest's GET_ID serial is its first 20 bytes.
pub const MAX_DRIVE_ID_LEN: usize = 64;

/// Everything needed to build and run one VM.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    #[serde(rename = "boot-source")]
    pub boot_source: BootSource,
    #[serde(rename = "machine-config", default)]
    pub machine: MachineConfig,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drives: Vec<DriveConfig>,
    #[serde(
        rename = "network-interfaces",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub network_interfaces: Vec<NetConfig>,
    /// Firecracker's `vsock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockConfig>,
    /// Firecracker's `logger`, applied before the VM starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logger: Option<LoggerConfig>,
    /// Firecracker's `metrics`, applied before the VM starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
    /// Ours; written only when not the default, so a Firecracker configuration reads back in its schema.
    #[serde(default, skip_serializing_if = "is_default")]
    pub console: ConsoleKind,
    /// Ours; written only when not the default.
    #[serde(default, skip_serializing_if = "is_default")]
    pub serial: SerialMode,
    /// Log the boot-time marker.
    #[serde(skip)]
    pub boot_timer: bool,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// A configuration that cannot be built.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--vcpus must be at least 1")]
    NoVcpus,
    #[error("--vcpus {0} is more than microvm supports ({MAX_VCPUS})")]
    TooManyVcpus(u8),
    #[error("--mem must be at least {min} MiB, got {got}")]
    MemTooSmall { min: u64, got: u64 },
    #[error("--mem {got} MiB is too large: at most {max} MiB")]
    MemTooLarge { max: u64, got: u64 },
    #[error("kernel command line is {len} bytes; the boot protocol allows at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    #[error("drive id {0:?} is used twice")]
    DuplicateDriveId(String),
    #[error("drive id must not be empty")]
    EmptyDriveId,
    #[error("drive id {0:?} is longer than {MAX_DRIVE_ID_LEN} bytes")]
    DriveIdTooLong(String),
    #[error("{0} virtio devices; at most {max} fit", max = layout::VIRTIO_MMIO_SLOTS)]
    TooManyDevices(usize),
    #[error("smt (simultaneous multithreading) is not supported")]
    SmtUnsupported,
    #[error("drives {0:?} and {1:?} are both the root device")]
    TwoRootDevices(String, String),
    #[error("network interface id {0:?} is used twice")]
    DuplicateIfaceId(String),
    #[error("network interface id must not be empty")]
    EmptyIfaceId,
    #[error("host device name {0:?} must be 1 to {MAX_IFNAME_LEN} bytes")]
    BadHostDevName(String),
    #[error("host device {0:?} is used by two network interfaces")]
    DuplicateHostDev(String),
    #[error("guest_mac {0:?} is not a unicast MAC address xx:xx:xx:xx:xx:xx")]
    BadMac(String),
    #[error("guest_mac {0:?} is used by two network interfaces")]
    DuplicateMac(String),
    #[error("vsock guest_cid {0} is reserved: it must be 3 to 4294967294")]
    BadVsockCid(u64),
    #[error(
        "vsock uds_path must be 1 to {MAX_VSOCK_PATH_LEN} bytes (the ports' sockets add _PORT)"
    )]
    BadVsockPath,
}

/// Most vCPUs a VM can have: what the MP table in the EBDA can describe, rounded down (Firecracker's limit).
pub const MAX_VCPUS: u8 = 32;
/// Smallest guest: room for the boot structures below 1 MiB and a small kernel above.
pub const MIN_MEM_MIB: u64 = 2;
/// Largest guest this VMM lays out (guest physical space it maps), MiB; the host's own limit is checked
/// when memory is allocated.
pub const MAX_MEM_MIB: u64 = 1 << 20;

/// Firecracker's configuration sections (and API paths) microvm does not implement, with why: refused
/// by name rather than as unknown fields.
pub const UNSUPPORTED_SECTIONS: &[(&str, &str)] = &[
    ("balloon", "no balloon device"),
    ("entropy", "no virtio-rng device"),
    ("mmds-config", "no MMDS"),
    ("cpu-config", "no CPU templates or CPUID/MSR modifiers"),
    ("pmem", "no virtio-pmem devices"),
    ("memory-hotplug", "no memory hot-plug"),
];

impl VmConfig {
    /// Parses a configuration file's JSON (Firecracker's schema: `boot-source`, `machine-config`,
    /// `drives`, `network-interfaces`; unknown fields are errors). Only the shape is checked here;
    /// [`VmConfig::validate`] checks the values. A plain function of its input, for `--config-file` and
    /// for fuzzing.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        if let Ok(serde_json::Value::Object(sections)) = serde_json::from_str(text) {
            if let Some((section, why)) = UNSUPPORTED_SECTIONS
                .iter()
                .find(|(s, _)| sections.contains_key(*s))
            {
                return Err(serde::de::Error::custom(unsupported(section, why)));
            }
        }
        serde_json::from_str(text)
    }

    /// What the root device adds to the command line (Firecracker's `root=/dev/vda ro|rw`), unless the boot
    /// arguments name a root themselves.
    pub fn root_args(&self) -> Option<&'static str> {
        let root = self.drives.iter().find(|d| d.is_root_device)?;
        if self.cmdline().split(' ').any(|a| a.starts_with("root=")) {
            return None;
        }
        Some(if root.is_read_only {
            " root=/dev/vda ro"
        } else {
            " root=/dev/vda rw"
        })
    }

    /// The kernel command line the guest gets.
    pub fn cmdline(&self) -> &str {
        let default = match self.console {
            ConsoleKind::Serial => DEFAULT_CMDLINE,
            ConsoleKind::Virtio => DEFAULT_CMDLINE_VIRTIO_CONSOLE,
        };
        self.boot_source.boot_args.as_deref().unwrap_or(default)
    }

    /// Checks everything that can be checked without touching the host.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.machine.smt {
            return Err(ConfigError::SmtUnsupported);
        }
        if self.machine.vcpu_count == 0 {
            return Err(ConfigError::NoVcpus);
        }
        if self.machine.vcpu_count > MAX_VCPUS {
            return Err(ConfigError::TooManyVcpus(self.machine.vcpu_count));
        }
        let mem = self.machine.mem_size_mib;
        if mem < MIN_MEM_MIB {
            return Err(ConfigError::MemTooSmall {
                min: MIN_MEM_MIB,
                got: mem,
            });
        }
        if mem > MAX_MEM_MIB {
            return Err(ConfigError::MemTooLarge {
                max: MAX_MEM_MIB,
                got: mem,
            });
        }
        let cmdline = self.cmdline();
        if cmdline.contains('\0') {
            return Err(ConfigError::CmdlineNul);
        }
        let mut ids = std::collections::HashSet::new();
        for d in &self.drives {
            if d.drive_id.is_empty() {
                return Err(ConfigError::EmptyDriveId);
            }
            if d.drive_id.len() > MAX_DRIVE_ID_LEN {
                return Err(ConfigError::DriveIdTooLong(d.drive_id.clone()));
            }
            if !ids.insert(&d.drive_id) {
                return Err(ConfigError::DuplicateDriveId(d.drive_id.clone()));
            }
        }
        let mut roots = self.drives.iter().filter(|d| d.is_root_device);
        if let (Some(a), Some(b)) = (roots.next(), roots.next()) {
            return Err(ConfigError::TwoRootDevices(
                a.drive_id.clone(),
                b.drive_id.clone(),
            ));
        }
        self.validate_network()?;
        if let Some(v) = &self.vsock {
            if v.guest_cid < 3 || v.guest_cid >= u64::from(u32::MAX) {
                return Err(ConfigError::BadVsockCid(v.guest_cid));
            }
            let len = v.uds_path.as_os_str().len();
            if len == 0 || len > MAX_VSOCK_PATH_LEN {
                return Err(ConfigError::BadVsockPath);
            }
        }
        let devices = self.drives.len()
            + self.network_interfaces.len()
            + usize::from(self.vsock.is_some())
            + usize::from(self.console == ConsoleKind::Virtio);
        if devices as u64 > layout::VIRTIO_MMIO_SLOTS {
            return Err(ConfigError::TooManyDevices(devices));
        }
        // The devices the VMM adds later append to the command line; those are checked again then.
        if cmdline.len() >= layout::CMDLINE_MAX_SIZE {
            return Err(ConfigError::CmdlineTooLong {
                len: cmdline.len(),
                max: layout::CMDLINE_MAX_SIZE - 1,
            });
        }
        Ok(())
    }

    fn validate_network(&self) -> Result<(), ConfigError> {
        let (mut ids, mut devs, mut macs) = (Vec::new(), Vec::new(), Vec::new());
        for n in &self.network_interfaces {
            if n.iface_id.is_empty() {
                return Err(ConfigError::EmptyIfaceId);
            }
            if ids.contains(&&n.iface_id) {
                return Err(ConfigError::DuplicateIfaceId(n.iface_id.clone()));
            }
            ids.push(&n.iface_id);
            let dev = &n.host_dev_name;
            if dev.is_empty() || dev.len() > MAX_IFNAME_LEN || dev.contains(['/', '\0', ' ']) {
                return Err(ConfigError::BadHostDevName(dev.clone()));
            }
            if devs.contains(&dev) {
                return Err(ConfigError::DuplicateHostDev(dev.clone()));
            }
            devs.push(dev);
            if let Some(mac) = &n.guest_mac {
                match parse_mac(mac) {
                    Some(m) if m[0] & 1 == 0 => {}
                    _ => return Err(ConfigError::BadMac(mac.clone())),
                }
                let m = mac.to_ascii_lowercase();
                if macs.contains(&m) {
                    return Err(ConfigError::DuplicateMac(mac.clone()));
                }
                macs.push(m);
            }
        }
        Ok(())
    }

    /// The drives in the order the guest sees them: the root device first (/dev/vda), the others in order.
    pub fn ordered_drives(&self) -> Vec<DriveConfig> {
        let mut drives = self.drives.clone();
        drives.sort_by_key(|d| !d.is_root_device);
        drives
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VmConfig {
        VmConfig {
            boot_source: BootSource {
                kernel_image_path: "k".into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_valid() {
        let c = config();
        c.validate().unwrap();
        assert_eq!(c.cmdline(), DEFAULT_CMDLINE);
        assert_eq!(c.machine.mem_size_mib, 128);
        assert_eq!(c.machine.vcpu_count, 1);
    }

    #[test]
    fn rejects_bad_values() {
        let mut c = config();
        c.machine.vcpu_count = 0;
        assert_eq!(c.validate(), Err(ConfigError::NoVcpus));
        c.machine.vcpu_count = MAX_VCPUS + 1;
        assert_eq!(c.validate(), Err(ConfigError::TooManyVcpus(33)));
        c.machine.vcpu_count = MAX_VCPUS;
        c.validate().unwrap();
        let mut c = config();
        c.machine.mem_size_mib = 1;
        assert!(matches!(c.validate(), Err(ConfigError::MemTooSmall { .. })));
        c.machine.mem_size_mib = MAX_MEM_MIB + 1;
        assert!(matches!(c.validate(), Err(ConfigError::MemTooLarge { .. })));
        let mut c = config();
        c.boot_source.boot_args = Some("x".repeat(2048));
        assert_eq!(
            c.validate(),
            Err(ConfigError::CmdlineTooLong {
                len: 2048,
                max: 2047
            })
        );
        c.boot_source.boot_args = Some("x".repeat(2047));
        c.validate().unwrap();
        c.boot_source.boot_args = Some("a\0b".into());
        assert_eq!(c.validate(), Err(ConfigError::CmdlineNul));
    }

    #[test]
    fn parses_disk_specs_and_checks_drives() {
        let d = DriveConfig::parse("/img/a.qcow2,ro,id=root,format=qcow2").unwrap();
        assert_eq!(d.path_on_host, PathBuf::from("/img/a.qcow2"));
        assert!(d.is_read_only);
        assert_eq!(d.drive_id, "root");
        assert_eq!(d.format, Some(ImageFormat::Qcow2));
        let d = DriveConfig::parse("b.raw").unwrap();
        assert!(!d.is_read_only && d.format.is_none() && d.drive_id.is_empty());
        assert!(DriveConfig::parse("").is_err());
        assert!(DriveConfig::parse("a,rw").is_err());
        assert!(DriveConfig::parse("a,format=vmdk").is_err());
        assert!(DriveConfig::parse("a,id=").is_err());
        let d = DriveConfig::parse("a,io_engine=async,cache_type=direct").unwrap();
        assert_eq!(
            (d.io_engine, d.cache_type),
            (IoEngine::Async, CacheMode::Direct)
        );
        assert!(DriveConfig::parse("a,io_engine=Async").is_err());
        let d = DriveConfig::parse("a,io_engine=threads").unwrap();
        assert_eq!(d.io_engine, IoEngine::Threads);
        assert!(DriveConfig::parse("a,cache_type=unsafe").is_err());
        let d: DriveConfig = serde_json::from_str(
            r#"{"drive_id":"x","path_on_host":"a","is_root_device":false,"io_engine":"Async",
                "cache_type":"Direct"}"#,
        )
        .unwrap();
        assert_eq!(
            (d.io_engine, d.cache_type),
            (IoEngine::Async, CacheMode::Direct)
        );
        let e = serde_json::from_str::<DriveConfig>(
            r#"{"drive_id":"x","path_on_host":"a","is_root_device":false,"cache_type":"Unsafe"}"#,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cache_type \"Unsafe\" is not supported by microvm"),
            "{e}"
        );
        // As in Firecracker, is_root_device is required (the API's drive body is this type).
        let e = serde_json::from_str::<DriveConfig>(r#"{"drive_id":"x","path_on_host":"a"}"#)
            .unwrap_err();
        assert!(
            e.to_string().contains("missing field `is_root_device`"),
            "{e}"
        );
        // One default engine and cache for flags, API and files.
        let d: DriveConfig = serde_json::from_str(
            r#"{"drive_id":"x","path_on_host":"a","is_root_device":true,"format":"qcow2"}"#,
        )
        .unwrap();
        assert_eq!(d.io_engine, DriveConfig::parse("a").unwrap().io_engine);
        assert_eq!(
            (d.io_engine, d.cache_type, d.format),
            (
                IoEngine::Threads,
                CacheMode::Writeback,
                Some(ImageFormat::Qcow2)
            )
        );

        let mut c = config();
        c.drives = vec![
            DriveConfig::parse("a,id=x").unwrap(),
            DriveConfig::parse("b,id=x").unwrap(),
        ];
        assert_eq!(c.validate(), Err(ConfigError::DuplicateDriveId("x".into())));
        c.drives[1].drive_id = "y".repeat(64);
        c.validate().unwrap();
        c.drives[1].drive_id = "y".repeat(65);
        assert!(matches!(c.validate(), Err(ConfigError::DriveIdTooLong(_))));
        c.drives[1].drive_id = String::new();
        assert_eq!(c.validate(), Err(ConfigError::EmptyDriveId));
        c.drives[1].drive_id = "y".into();
        c.validate().unwrap();
        c.console = ConsoleKind::Virtio;
        assert_eq!(c.cmdline(), DEFAULT_CMDLINE_VIRTIO_CONSOLE);
        c.drives = (0..16)
            .map(|i| DriveConfig::parse(&format!("d,id={i}")).unwrap())
            .collect();
        assert_eq!(c.validate(), Err(ConfigError::TooManyDevices(17)));
    }

    #[test]
    fn parses_firecracker_style_json() {
        let c: VmConfig = serde_json::from_str(
            r#"{"boot-source": {"kernel_image_path": "/k", "boot_args": "console=ttyS0"},
                "machine-config": {"vcpu_count": 2, "mem_size_mib": 256}}"#,
        )
        .unwrap();
        assert_eq!(c.machine.vcpu_count, 2);
        assert_eq!(c.cmdline(), "console=ttyS0");
        assert!(serde_json::from_str::<VmConfig>(r#"{"boot-source": {}, "bogus": 1}"#).is_err());
        for (section, _) in UNSUPPORTED_SECTIONS {
            let e = VmConfig::from_json(&format!(
                r#"{{"boot-source": {{"kernel_image_path": "k"}}, "{section}": {{}}}}"#
            ))
            .unwrap_err();
            assert!(
                e.to_string()
                    .starts_with(&format!("{section} is not supported by microvm")),
                "{e}"
            );
        }
        assert!(
            VmConfig::from_json(r#"{"boot-source": {"kernel_image_path": "k"}, "bogus": 1}"#)
                .unwrap_err()
                .to_string()
                .contains("unknown field")
        );
        // What GET /vm/config writes, a config file reads back.
        let mut c = c;
        c.drives = vec![DriveConfig::parse("/r.img,id=root,ro").unwrap()];
        c.drives[0].is_root_device = true;
        c.network_interfaces = vec![NetConfig {
            iface_id: "eth0".into(),
            host_dev_name: "tap0".into(),
            guest_mac: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        }];
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(VmConfig::from_json(&text).unwrap(), c);
        assert!(VmConfig::from_json("{").is_err());
        assert!(VmConfig::from_json(
            r#"{"boot-source": {"kernel_image_path": "/k"}, "drives": [{}]}"#
        )
        .is_err());
    }

    #[test]
    fn firecracker_fields_are_honoured_or_refused_by_name() {
        let m: MachineConfig =
            serde_json::from_str(r#"{"vcpu_count": 1, "mem_size_mib": 64, "huge_pages": "None"}"#)
                .unwrap();
        assert!(!m.thp);
        let m: MachineConfig = serde_json::from_str(
            r#"{"vcpu_count": 1, "mem_size_mib": 64, "huge_pages": "Transparent",
                "track_dirty_pages": true, "cpu_template": "None"}"#,
        )
        .unwrap();
        assert!(m.thp && m.track_dirty_pages);
        let m: MachineConfig =
            serde_json::from_str(r#"{"vcpu_count": 1, "mem_size_mib": 64, "thp": false}"#).unwrap();
        assert!(!m.thp, "our own name still works");
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"vcpu_count": 1, "mem_size_mib": 64, "smt": false,
                               "track_dirty_pages": false, "huge_pages": "None"})
        );
        for (body, says) in [
            (
                r#""huge_pages": "2M""#,
                "huge_pages \"2M\" (hugetlbfs) is not supported",
            ),
            (
                r#""cpu_template": "T2""#,
                "cpu_template \"T2\" is not supported",
            ),
            (r#""huge_pages": "None", "thp": true"#, "contradicts"),
        ] {
            let text = format!(r#"{{"vcpu_count": 1, "mem_size_mib": 64, {body}}}"#);
            let e = serde_json::from_str::<MachineConfig>(&text).unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
        }
        let drive = |extra: &str| {
            serde_json::from_str::<DriveConfig>(&format!(
                r#"{{"drive_id": "d", "is_root_device": false{extra}}}"#
            ))
        };
        for (extra, says) in [
            (
                r#", "path_on_host": "a", "partuuid": "x""#,
                "partuuid is not supported by microvm",
            ),
            (r#", "socket": "/s""#, "socket is not supported by microvm"),
            (
                r#", "path_on_host": "a", "rate_limiter": {"ops": {"size": 1, "refill_time": 4294967296}}"#,
                "rate_limiter: refill_time 4294967296 ms is too long",
            ),
            (
                r#", "path_on_host": "a", "rate_limiter": {"bandwidth": {"size": 1}}"#,
                "missing field `refill_time`",
            ),
            ("", "path_on_host is required"),
        ] {
            let e = drive(extra).unwrap_err();
            assert!(e.to_string().contains(says), "{extra}: {e}");
        }
        // Only Firecracker's fields in, only Firecracker's values out.
        let d = drive(r#", "path_on_host": "a", "is_read_only": true"#).unwrap();
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!({"drive_id": "d", "path_on_host": "a", "is_root_device": false,
                               "is_read_only": true, "cache_type": "Writeback"})
        );
        let d = drive(r#", "path_on_host": "a", "io_engine": "Sync""#).unwrap();
        assert_eq!(serde_json::to_value(&d).unwrap()["io_engine"], "Sync");
        let net = |extra: &str| {
            serde_json::from_str::<NetConfig>(&format!(
                r#"{{"iface_id": "e", "host_dev_name": "t"{extra}}}"#
            ))
        };
        for (extra, says) in [
            (r#", "mtu": 1500"#, "mtu is not supported by microvm"),
            (
                r#", "rx_rate_limiter": {"ops": {"size": 1, "refill_time": 4294967296}}"#,
                "rx_rate_limiter: refill_time",
            ),
            (
                r#", "tx_rate_limiter": {"bogus": {}}"#,
                "unknown field `bogus`",
            ),
        ] {
            let e = net(extra).unwrap_err();
            assert!(e.to_string().contains(says), "{extra}: {e}");
        }
        // Rate limiters are honoured and read back as given.
        let limited = r#"{"bandwidth": {"size": 1048576, "one_time_burst": 4096, "refill_time": 1000}, "ops": {"size": 100, "refill_time": 1000}}"#;
        let d = drive(&format!(
            r#", "path_on_host": "a", "rate_limiter": {limited}"#
        ))
        .unwrap();
        assert_eq!(
            serde_json::to_value(&d).unwrap()["rate_limiter"],
            serde_json::from_str::<serde_json::Value>(limited).unwrap()
        );
        let n = net(&format!(
            r#", "rx_rate_limiter": {limited}, "tx_rate_limiter": {{"ops": {{"size": 5, "refill_time": 10}}}}"#
        ))
        .unwrap();
        let v = serde_json::to_value(&n).unwrap();
        assert_eq!(v["rx_rate_limiter"]["bandwidth"]["one_time_burst"], 4096);
        assert_eq!(v["tx_rate_limiter"]["ops"]["size"], 5);
        assert!(net(r#", "bogus": 1"#)
            .unwrap_err()
            .to_string()
            .contains("unknown field"));
        // Kata's client sends Firecracker's old name for smt.
        let m: MachineConfig =
            serde_json::from_str(r#"{"vcpu_count": 1, "mem_size_mib": 64, "ht_enabled": false}"#)
                .unwrap();
        assert!(!m.smt);
        assert!(serde_json::to_value(&m)
            .unwrap()
            .get("ht_enabled")
            .is_none());
        let l: LoggerConfig =
            serde_json::from_str(r#"{"log_path": "/l", "level": "warning", "show_level": true}"#)
                .unwrap();
        assert_eq!(l.level, Some(LogLevel::Warning));
        assert!(serde_json::from_str::<LoggerConfig>(r#"{"level": "loud"}"#).is_err());
        let c = config();
        let v = serde_json::to_value(&c).unwrap();
        assert!(v.get("console").is_none() && v.get("serial").is_none());
    }

    #[test]
    fn parses_net_specs_and_chooses_macs() {
        let n = NetConfig::parse("tap=tap0,mac=06:00:AC:10:00:02,id=eth0").unwrap();
        assert_eq!(n.host_dev_name, "tap0");
        assert_eq!(n.iface_id, "eth0");
        assert_eq!(n.mac(), [6, 0, 0xac, 0x10, 0, 2]);
        let n = NetConfig::parse("tap=tap1").unwrap();
        assert!(n.iface_id.is_empty() && n.guest_mac.is_none());
        let m = n.mac();
        assert_eq!(m[0], 0x06, "locally administered unicast");
        assert_eq!(m, NetConfig::parse("tap=tap1").unwrap().mac());
        assert_ne!(m, NetConfig::parse("tap=tap2").unwrap().mac());
        for bad in [
            "",
            "tap=",
            "mac=06:00:00:00:00:01",
            "tap=t,ro",
            "tap=t,id=",
            "dev=t",
        ] {
            assert!(NetConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn smt_root_devices_and_network_interfaces() {
        let mut c = config();
        c.machine.smt = true;
        assert_eq!(c.validate(), Err(ConfigError::SmtUnsupported));
        let mut c = config();
        c.drives = vec![
            DriveConfig::parse("a,id=a").unwrap(),
            DriveConfig::parse("b,id=b,ro").unwrap(),
        ];
        assert_eq!(c.root_args(), None);
        c.drives[1].is_root_device = true;
        assert_eq!(c.ordered_drives()[0].drive_id, "b");
        assert_eq!(c.root_args(), Some(" root=/dev/vda ro"));
        c.boot_source.boot_args = Some("root=/dev/vdb".into());
        assert_eq!(c.root_args(), None);
        c.drives[0].is_root_device = true;
        assert!(matches!(c.validate(), Err(ConfigError::TwoRootDevices(..))));

        let net = |id: &str, dev: &str, mac: Option<&str>| NetConfig {
            iface_id: id.into(),
            host_dev_name: dev.into(),
            guest_mac: mac.map(Into::into),
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        };
        let mut c = config();
        c.network_interfaces = vec![net("eth0", "tap0", Some("06:00:AC:10:00:02"))];
        c.validate().unwrap();
        for (bad, err) in [
            (net("", "tap1", None), ConfigError::EmptyIfaceId),
            (
                net("eth0", "tap1", None),
                ConfigError::DuplicateIfaceId("eth0".into()),
            ),
            (
                net("eth1", "tap0", None),
                ConfigError::DuplicateHostDev("tap0".into()),
            ),
            (
                net("eth1", "", None),
                ConfigError::BadHostDevName("".into()),
            ),
            (
                net("eth1", &"t".repeat(16), None),
                ConfigError::BadHostDevName("t".repeat(16)),
            ),
            (
                net("eth1", "tap1", Some("06:00:ac:10:00")),
                ConfigError::BadMac("06:00:ac:10:00".into()),
            ),
            (
                net("eth1", "tap1", Some("01:00:00:00:00:01")),
                ConfigError::BadMac("01:00:00:00:00:01".into()),
            ),
            (
                net("eth1", "tap1", Some("06:00:ac:10:00:02")),
                ConfigError::DuplicateMac("06:00:ac:10:00:02".into()),
            ),
        ] {
            let mut c2 = c.clone();
            c2.network_interfaces.push(bad);
            assert_eq!(c2.validate(), Err(err));
        }
        assert_eq!(
            parse_mac("0a:Bc:00:00:00:ff"),
            Some([0x0a, 0xbc, 0, 0, 0, 0xff])
        );
        assert_eq!(parse_mac("0a:bc:00:00:00:ff:00"), None);
        c.network_interfaces = (0..16)
            .map(|i| net(&format!("e{i}"), &format!("t{i}"), None))
            .collect();
        c.validate().unwrap();
        c.console = ConsoleKind::Virtio;
        assert_eq!(c.validate(), Err(ConfigError::TooManyDevices(17)));
        assert_eq!(parse_mac("0a:bc:00:00:00:f"), None);
    }

    #[test]
    fn vsock_from_flags_bodies_and_files() {
        let v = VsockConfig::parse("cid=3,uds=/tmp/v.sock").unwrap();
        assert_eq!((v.guest_cid, v.uds_path.to_str()), (3, Some("/tmp/v.sock")));
        for bad in ["cid=3", "uds=/x", "cid=x,uds=/x", "cid=3,uds=/x,port=1", ""] {
            assert!(VsockConfig::parse(bad).is_err(), "{bad:?}");
        }
        // Firecracker's body, with its deprecated vsock_id: accepted, not written back.
        let c: VmConfig = serde_json::from_str(
            r#"{"boot-source": {"kernel_image_path": "k"},
                "vsock": {"vsock_id": "vsock0", "guest_cid": 3, "uds_path": "/tmp/v.sock"}}"#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(
            serde_json::to_value(&c).unwrap()["vsock"],
            serde_json::json!({"guest_cid": 3, "uds_path": "/tmp/v.sock"})
        );
        assert!(serde_json::from_str::<VsockConfig>(
            r#"{"guest_cid": 3, "uds_path": "/x", "bogus": 1}"#
        )
        .is_err());
        let mut c = c;
        for cid in [0, 1, 2, u64::from(u32::MAX)] {
            c.vsock.as_mut().unwrap().guest_cid = cid;
            assert_eq!(c.validate(), Err(ConfigError::BadVsockCid(cid)));
        }
        c.vsock.as_mut().unwrap().guest_cid = 3;
        c.vsock.as_mut().unwrap().uds_path = PathBuf::from("/".repeat(MAX_VSOCK_PATH_LEN + 1));
        assert_eq!(c.validate(), Err(ConfigError::BadVsockPath));
    }
}
