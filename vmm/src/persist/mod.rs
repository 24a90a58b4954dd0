//! Snapshots: the one module that writes and reads snapshot files.
//!
//! A snapshot is two files. The **state file** is a 24-byte header followed by a JSON body:
//!
//! | bytes  | field                                             |
//! |--------|---------------------------------------------------|
//! | 0..8   | magic `MVMSNAP\0`                                 |
//! | 8..12  | format version, u32 little endian ([`VERSION`])   |
//! | 12..20 | body length in bytes, u64 little endian           |
//! | 20..24 | CRC-32 (IEEE) of the body, u32 little endian      |
//! | 24..   | body: [`Snapshot`] as JSON                        |
//!
//! The body holds the configuration (machine, boot source, drives, network interfaces), KVM's VM state
//! (PICs, IOAPIC, PIT, clock), every vCPU's state and every device's ([`DevicesState`]); each device's part
//! is the device's own serde type with its own version. JSON keeps the format readable with `tail -c +25`;
//! KVM's structs are hex strings of their bytes ([`crate::vstate::hex`]; format version 2, version 1 had
//! arrays of byte numbers, three times slower to read): ~20 KiB per vCPU, read in about 0.3 ms.
//!
//! The **memory file** ([`memfile`]) is guest RAM, raw (`mem_size_mib` MiB, regions in guest-physical order, the MMIO
//! hole left out). A restore maps it `MAP_PRIVATE` ([`memory::from_file`]): pages come in on first touch,
//! a guest write copies the page, and clones restored from one memory file share its unmodified pages
//! through the page cache.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::builder::Vm;
use crate::config::VmConfig;
use crate::vstate::memory::{self, MemoryError};
use memfile::MemFileError;

pub mod memfile;
use crate::vstate::vcpu::SaveError;
use crate::vstate::vcpu_state::VcpuState;
use crate::vstate::vm::{self, VmState, VmStateError};
use devices::legacy::{I8042State, SerialDeviceState};
use devices::virtio::persist::MmioTransportState;
use devices::GuestMemoryMmap;

/// The state file's first bytes.
pub const MAGIC: [u8; 8] = *b"MVMSNAP\0";
/// The state file format this build writes and reads.
pub const VERSION: u32 = 2;
const HEADER_LEN: usize = 24;
/// How long the paused vCPU threads get to save their state.
const VCPU_SAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A snapshot cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("snapshot file {path:?}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0:?} is not a microvm snapshot state file (bad magic)")]
    Magic(PathBuf),
    #[error(
        "snapshot file {path:?} has format version {found}; this microvm reads version {VERSION}"
    )]
    Version { path: PathBuf, found: u32 },
    #[error("snapshot file {path:?} is truncated: {len} bytes, the header says {want}")]
    Truncated { path: PathBuf, len: u64, want: u64 },
    #[error("snapshot file {0:?} is corrupt (checksum mismatch)")]
    Checksum(PathBuf),
    #[error("snapshot file {path:?} cannot be decoded: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode the snapshot: {0}")]
    Encode(#[source] serde_json::Error),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    MemFile(#[from] MemFileError),
    #[error(transparent)]
    VmState(#[from] VmStateError),
    #[error("cannot save the vCPUs: {0}")]
    Vcpus(#[from] SaveError),
    #[error("cannot read KVM's MSR list: {0}")]
    MsrList(#[source] kvm_ioctls::Error),
    #[error("vsock_override given, but the snapshot has no vsock device")]
    NoVsock,
    #[error("network_overrides names interface {0:?}, which the snapshot does not have")]
    NoSuchInterface(String),
    #[error("drive_overrides names drive {0:?}, which the snapshot does not have")]
    NoSuchDrive(String),
    #[error("a Diff snapshot needs a Full snapshot (or a restore) of this VM first")]
    NoDiffBase,
}

/// The devices' states.
#[derive(Serialize, Deserialize)]
pub struct DevicesState {
    pub serial: SerialDeviceState,
    pub i8042: I8042State,
    /// Each virtio-mmio transport with its device's queues, in slot order.
    pub virtio: Vec<MmioTransportState>,
    /// Host input the VMM had read from stdin that the guest's console had not taken (the 8250's FIFO
    /// or the virtio console's queue was full): given to the console first after a restore.
    #[serde(default)]
    pub host_input: Vec<u8>,
    /// The introspection channel and trace ring (absent from older files: unregistered).
    #[serde(default)]
    pub introspect: crate::introspect::IntrospectState,
}

/// Everything in a state file.
#[derive(Serialize, Deserialize)]
pub struct Snapshot {
    pub config: VmConfig,
    pub vm: VmState,
    pub vcpus: Vec<VcpuState>,
    pub devices: DevicesState,
}

/// A network interface attached to another TAP at load (Firecracker's `network_overrides`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkOverride {
    pub iface_id: String,
    pub host_dev_name: String,
}

/// A drive opened from another file at load (for clones, each with its own copy of a writable disk).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveOverride {
    pub drive_id: String,
    pub path_on_host: PathBuf,
}

/// What to restore, from the API's `PUT /snapshot/load` or the CLI's `--restore`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadParams {
    pub snapshot_path: PathBuf,
    pub mem_file_path: PathBuf,
    pub resume_vm: bool,
    pub network_overrides: Vec<NetworkOverride>,
    pub drive_overrides: Vec<DriveOverride>,
    /// Firecracker's `vsock_override`: the vsock device's new `uds_path`.
    pub vsock_override: Option<PathBuf>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.to_owned(),
        source,
    }
}

/// CRC-32 of IEEE 802.3 (zlib's), eight bytes at a time from tables ("slicing-by-8"): about 20 us for a
/// state file of 25 KiB. Not crc32fast, whose first call detects the CPU's features with `CPUID`, an
/// instruction that traps to the hypervisor in a VM: about 75 us of every restore on this nested host.
fn crc32(bytes: &[u8]) -> u32 {
    /// `TABLES[0]` is the byte-at-a-time table; `TABLES[k][i]` is the CRC of byte `i` followed by `k`
    /// zero bytes.
    const TABLES: [[u32; 256]; 8] = {
        let mut t = [[0u32; 256]; 8];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[0][i] = c;
            i += 1;
        }
        let mut k = 1;
        while k < 8 {
            let mut i = 0;
            while i < 256 {
                let prev = t[k - 1][i];
                t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
                i += 1;
            }
            k += 1;
        }
        t
    };
    let byte = |c: u32, b: u8| TABLES[0][usize::from(c as u8 ^ b)] ^ (c >> 8);
    let mut c = !0u32;
    let mut chunks = bytes.chunks_exact(8);
    for w in &mut chunks {
        let lo = c ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        c = TABLES[7][usize::from(lo as u8)]
            ^ TABLES[6][usize::from((lo >> 8) as u8)]
            ^ TABLES[5][usize::from((lo >> 16) as u8)]
            ^ TABLES[4][usize::from((lo >> 24) as u8)]
            ^ TABLES[3][usize::from(w[4])]
            ^ TABLES[2][usize::from(w[5])]
            ^ TABLES[1][usize::from(w[6])]
            ^ TABLES[0][usize::from(w[7])];
    }
    !chunks.remainder().iter().fold(c, |c, &b| byte(c, b))
}

/// Encodes `snapshot` as a state file's bytes.
pub fn encode(snapshot: &Snapshot) -> Result<Vec<u8>, PersistError> {
    let body = serde_json::to_vec(snapshot).map_err(PersistError::Encode)?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a state file's bytes (`path` only names it in errors): magic, version, length, checksum, body.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Snapshot, PersistError> {
    if bytes.len() < HEADER_LEN || bytes[..8] != MAGIC {
        if bytes.len() < HEADER_LEN
            && MAGIC.starts_with(&bytes[..bytes.len().min(8)])
            && !bytes.is_empty()
        {
            return Err(PersistError::Truncated {
                path: path.to_owned(),
                len: bytes.len() as u64,
                want: HEADER_LEN as u64,
            });
        }
        return Err(PersistError::Magic(path.to_owned()));
    }
    let word = |r: std::ops::Range<usize>| -> [u8; 8] {
        let mut w = [0u8; 8];
        w[..r.len()].copy_from_slice(&bytes[r]);
        w
    };
    let version = u64::from_le_bytes(word(8..12)) as u32;
    if version != VERSION {
        return Err(PersistError::Version {
            path: path.to_owned(),
            found: version,
        });
    }
    let len = u64::from_le_bytes(word(12..20));
    let crc = u64::from_le_bytes(word(20..24)) as u32;
    let body = &bytes[HEADER_LEN..];
    if body.len() as u64 != len {
        return Err(PersistError::Truncated {
            path: path.to_owned(),
            len: bytes.len() as u64,
            want: HEADER_LEN as u64 + len,
        });
    }
    if crc32(body) != crc {
        return Err(PersistError::Checksum(path.to_owned()));
    }
    serde_json::from_slice(body).map_err(|source| PersistError::Decode {
        path: path.to_owned(),
        source,
    })
}

/// Reads and checks a state file.
pub fn read_state(path: &Path) -> Result<Snapshot, PersistError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_err(path))?;
    decode(path, &bytes)
}

/// Full or Diff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotKind {
    /// All of guest RAM goes to a new memory file (sparse: zero pages are holes); guest RAM is then
    /// mapped copy-on-write from that file, so that a later Diff finds the pages written since.
    Full,
    /// A new memory file of guest RAM's length holding only the pages written since the last snapshot
    /// (Full or Diff) or the restore of this VM, holes elsewhere ([`memfile`] says how they are found);
    /// [`memfile::rebase`] (the `rebase-snap` tool) lays the Diffs onto the Full snapshot's memory file
    /// in the order they were taken, which then restores the latest state laid on.
    Diff,
}

/// Takes a snapshot of a paused VM: drains the devices, saves every vCPU (on its own thread), KVM's
/// VM state and the devices, writes the state file, then the memory file (for a Full all non-zero pages,
/// for a Diff the pages written since; holes elsewhere). Returns the bytes of guest memory written.
pub fn create(
    vm: &Vm,
    config: &VmConfig,
    vcpu_count: usize,
    snapshot_path: &Path,
    mem_file_path: &Path,
    kind: SnapshotKind,
    host_input: Vec<u8>,
) -> Result<u64, PersistError> {
    let virtio = vm.devices.save();
    let msr_list = vm
        .kvm
        .get_msr_index_list()
        .map_err(PersistError::MsrList)?
        .as_slice()
        .to_vec();
    let vcpus = vm
        .pause
        .save_vcpus(vcpu_count, msr_list, VCPU_SAVE_TIMEOUT)?;
    let snapshot = Snapshot {
        config: config.clone(),
        vm: vm::save_state(&vm.vm_fd)?,
        vcpus,
        devices: DevicesState {
            serial: vm.serial.lock().unwrap_or_else(|e| e.into_inner()).save(),
            i8042: vm.i8042.lock().unwrap_or_else(|e| e.into_inner()).save(),
            virtio,
            host_input,
            introspect: crate::introspect::save(&vm.guest_channel, &vm.tracer),
        },
    };
    let bytes = encode(&snapshot)?;
    // Both files are written beside their paths and renamed into place: guest RAM may be mapped from
    // the very memory file being replaced (a restored VM, or a Full snapshot's remap), and truncating
    // that file would take the pages the guest has not written out from under it.
    let state_tmp = Temp::new(snapshot_path);
    let mem_tmp = Temp::new(mem_file_path);
    std::fs::File::create(&state_tmp.0)
        .and_then(|mut f| f.write_all(&bytes))
        .map_err(io_err(snapshot_path))?;
    let mem_file = std::fs::File::create(&mem_tmp.0).map_err(io_err(mem_file_path))?;
    let written = match kind {
        SnapshotKind::Full => memfile::dump(&vm.mem, &mem_file)?,
        SnapshotKind::Diff => memfile::dump_written(&vm.mem, &mem_file)?,
    };
    mem_file.sync_data().map_err(io_err(mem_file_path))?;
    drop(mem_file);
    // Guest RAM is mapped back onto the file just written (see memfile): opened before the rename, so
    // that the mapping is of this file whatever happens to its path.
    let written_file = std::fs::File::open(&mem_tmp.0).map_err(io_err(mem_file_path))?;
    mem_tmp.rename()?;
    state_tmp.rename()?;
    match kind {
        SnapshotKind::Full => memfile::remap_onto_file(&vm.mem, &written_file)?,
        SnapshotKind::Diff => {
            memfile::remap_runs(&vm.mem, &written_file, &written.runs)?;
        }
    }
    Ok(written.bytes)
}

/// A file written beside `path` (`PATH.tmp-PID`), renamed onto it when complete, removed if not.
struct Temp<'a>(PathBuf, &'a Path);

impl<'a> Temp<'a> {
    fn new(path: &'a Path) -> Self {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".tmp-{}", std::process::id()));
        Temp(PathBuf::from(name), path)
    }

    fn rename(self) -> Result<(), PersistError> {
        std::fs::rename(&self.0, self.1).map_err(io_err(self.1))
    }
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        // Gone already once renamed.
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Reads a snapshot for restoring: the state file checked, the overrides applied to its configuration,
/// and the memory file mapped (its size checked). Nothing is started here.
pub fn load(params: &LoadParams) -> Result<(VmConfig, Snapshot, GuestMemoryMmap), PersistError> {
    let snapshot = read_state(&params.snapshot_path)?;
    let mut config = snapshot.config.clone();
    for o in &params.network_overrides {
        let iface = config
            .network_interfaces
            .iter_mut()
            .find(|n| n.iface_id == o.iface_id)
            .ok_or_else(|| PersistError::NoSuchInterface(o.iface_id.clone()))?;
        iface.host_dev_name = o.host_dev_name.clone();
    }
    for o in &params.drive_overrides {
        let drive = config
            .drives
            .iter_mut()
            .find(|d| d.drive_id == o.drive_id)
            .ok_or_else(|| PersistError::NoSuchDrive(o.drive_id.clone()))?;
        drive.path_on_host = o.path_on_host.clone();
    }
    if let Some(path) = &params.vsock_override {
        config.vsock.as_mut().ok_or(PersistError::NoVsock)?.uds_path = path.clone();
    }
    let mem = memory::from_file(&params.mem_file_path, config.machine.mem_size_mib)?;
    Ok((config, snapshot, mem))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            config: VmConfig::default(),
            vm: VmState {
                pic_master: Default::default(),
                pic_slave: Default::default(),
                ioapic: Default::default(),
                pit: Default::default(),
                clock: kvm_bindings::kvm_clock_data {
                    clock: 12345,
                    ..Default::default()
                },
            },
            vcpus: vec![],
            devices: DevicesState {
                serial: SerialDeviceState::default(),
                i8042: I8042State::default(),
                virtio: vec![MmioTransportState::default()],
                host_input: b"typed".to_vec(),
                introspect: Default::default(),
            },
        }
    }

    #[test]
    fn crc32_is_ieee() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"{}"), 0xa3a6_bf43);
        // Past the eight-byte steps, against zlib's.
        let text = b"The quick brown fox jumps over the lazy dog, and then some more!!!";
        assert_eq!(crc32(text), 0x85f2_a7f5);
    }

    #[test]
    fn encode_decode_and_every_bad_file() {
        let p = Path::new("s");
        let good = encode(&snapshot()).unwrap();
        assert_eq!(&good[..8], b"MVMSNAP\0");
        let back = decode(p, &good).unwrap();
        assert_eq!(back.vm.clock.clock, 12345);
        assert_eq!(back.devices.host_input, b"typed");
        assert_eq!(encode(&back).unwrap(), good);

        let mut v = good.clone();
        v[8] = 1;
        assert!(matches!(
            decode(p, &v),
            Err(PersistError::Version { found: 1, .. })
        ));
        assert!(matches!(
            decode(p, &good[..good.len() - 1]),
            Err(PersistError::Truncated { .. })
        ));
        assert!(matches!(
            decode(p, &good[..10]),
            Err(PersistError::Truncated { .. })
        ));
        let mut v = good.clone();
        let last = v.len() - 2;
        v[last] ^= 0x20;
        assert!(matches!(decode(p, &v), Err(PersistError::Checksum(_))));
        assert!(matches!(decode(p, b""), Err(PersistError::Magic(_))));
        assert!(matches!(
            decode(p, b"not a snapshot, not at all"),
            Err(PersistError::Magic(_))
        ));
        // A body that checks out but is not a snapshot.
        let mut v = good[..HEADER_LEN].to_vec();
        v[12..20].copy_from_slice(&2u64.to_le_bytes());
        v[20..24].copy_from_slice(&crc32(b"{}").to_le_bytes());
        v.extend_from_slice(b"{}");
        assert!(matches!(decode(p, &v), Err(PersistError::Decode { .. })));
    }
}
