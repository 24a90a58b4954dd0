//! Looking inside the running guest from the host (issue 22): address translation through both levels
//! (`GET /vm/translate`), guest-physical memory (`GET /vm/memory`), and the guest's processes through
//! the channel its kernel offers (`GET /guest/processes`, [`channel`]).
//!
//! Flow: the API routes `GET /vm/translate?gva=..&vcpu=..` to [`TranslateQuery`] (parsed here, a 400 when
//! malformed); the run-time controller pauses the vCPUs with the snapshot code's pause machinery (every
//! vCPU thread parked between two `KVM_RUN`s), and [`Inspector::translate`] reads the vCPU's CR0, CR3,
//! CR4 and EFER (`KVM_GET_SREGS`), walks the guest's page tables over guest memory ([`walk`], pure logic),
//! asks KVM the same question (`KVM_TRANSLATE`), and adds the second level: the host-virtual address of
//! the guest-physical page in microvm's mapping of guest RAM, and its host-physical frame from
//! `/proc/self/pagemap` when the kernel shows it (root with CAP_SYS_ADMIN) or why not. Then the vCPUs
//! go on (a VM paused before the request stays paused).
//!
//! The vCPU's file descriptor is owned by its thread; the inspector holds a duplicate of each (taken
//! before the threads start), and uses it only while that vCPU is parked, so its ioctls never wait on a
//! `KVM_RUN`. `GET /vm/memory?gpa=..&len=..` reads at most [`MAX_MEMORY_READ`] bytes of guest RAM
//! without pausing (a copy through vm-memory's volatile accessors; the guest may change the bytes
//! meanwhile).

pub mod channel;
pub mod decode;
mod names;
pub mod trace;
pub mod walk;

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;

use kvm_bindings::{kvm_sregs, kvm_translation};
use serde::Serialize;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use devices::GuestMemoryMmap;
use walk::{PagingRegs, PhysRead, Walk};

/// The most bytes one `GET /vm/memory` returns.
pub const MAX_MEMORY_READ: u64 = 4096;
/// `KVMIO`, the ioctl type of KVM.
const KVMIO: u32 = 0xae;
const PAGE: u64 = 4096;
/// `/proc/self/pagemap`: bits 0-54 the frame number, 62 swapped, 63 present.
const PM_PFN_MASK: u64 = (1 << 55) - 1;
const PM_SWAP: u64 = 1 << 62;
const PM_PRESENT: u64 = 1 << 63;

vmm_sys_util::ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_sregs);
vmm_sys_util::ioctl_iowr_nr!(KVM_TRANSLATE, KVMIO, 0x85, kvm_translation);

/// A look inside the guest cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum IntrospectError {
    /// A malformed or missing query parameter.
    #[error("{0}")]
    BadQuery(String),
    #[error("no vCPU {id}: the VM has {count} (0 to {})", count - 1)]
    UnknownVcpu { id: u64, count: usize },
    #[error("{len} bytes at guest-physical {gpa:#x} are not all guest RAM")]
    OutsideRam { gpa: u64, len: u64 },
    #[error("len {len} is over the limit of {MAX_MEMORY_READ} bytes")]
    TooLong { len: u64 },
    #[error("cannot duplicate the file descriptor of vCPU {0}: {1}")]
    Dup(u8, #[source] std::io::Error),
    #[error("vCPU {0}: {1} failed: {2}")]
    Kvm(u8, &'static str, #[source] std::io::Error),
    /// The guest's introspection channel is absent, silent, or answered garbage.
    #[error("{0}")]
    Guest(String),
}

impl IntrospectError {
    /// Whether the request was at fault (a 400) rather than the host (a 500).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            IntrospectError::BadQuery(_)
                | IntrospectError::UnknownVcpu { .. }
                | IntrospectError::OutsideRam { .. }
                | IntrospectError::TooLong { .. }
                | IntrospectError::Guest(_)
        )
    }
}

/// The introspection devices' part of a snapshot: the process channel's registered buffer and the
/// trace ring's registration, tail and settings (the buffer and the ring themselves are guest memory).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IntrospectState {
    pub version: u32,
    pub channel_buffer: Option<u64>,
    pub trace: trace::TracerState,
}

/// [`IntrospectState`]'s version.
const STATE_VERSION: u32 = 1;

/// Saves both devices' state.
pub fn save(channel: &channel::GuestChannel, tracer: &trace::Tracer) -> IntrospectState {
    IntrospectState {
        version: STATE_VERSION,
        channel_buffer: channel.save(),
        trace: tracer.save(),
    }
}

/// Restores both devices' state (an older snapshot without it: nothing registered).
pub fn restore(channel: &channel::GuestChannel, tracer: &trace::Tracer, st: &IntrospectState) {
    if st.version != STATE_VERSION && st.version != 0 {
        log::warn!(
            "introspection state version {} unknown: the guest's channels start unregistered",
            st.version
        );
        return;
    }
    channel.restore(st.channel_buffer);
    tracer.restore(&st.trace);
}

/// Parses a number as `0x`-prefixed hex or decimal.
pub fn parse_number(name: &str, text: &str) -> Result<u64, IntrospectError> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => text.parse(),
    };
    parsed.map_err(|_| {
        IntrospectError::BadQuery(format!(
            "{name}={text:?} is not a number (decimal, or hex with 0x)"
        ))
    })
}

/// The parameters of a query string, each known name at most once, no unknown ones.
pub(crate) fn query_params<'a>(
    query: &'a str,
    known: &[&str],
) -> Result<Vec<(&'a str, &'a str)>, IntrospectError> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            IntrospectError::BadQuery(format!("query parameter {part:?} has no value"))
        })?;
        if !known.contains(&k) {
            return Err(IntrospectError::BadQuery(format!(
                "unknown query parameter {k:?} (known: {})",
                known.join(", ")
            )));
        }
        if out.iter().any(|(o, _)| *o == k) {
            return Err(IntrospectError::BadQuery(format!(
                "query parameter {k:?} is given twice"
            )));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn required<'a>(params: &[(&str, &'a str)], name: &str) -> Result<&'a str, IntrospectError> {
    params
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| IntrospectError::BadQuery(format!("query parameter {name} is missing")))
}

/// `GET /vm/translate?gva=ADDR[&vcpu=N]` (vCPU 0 by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateQuery {
    pub gva: u64,
    pub vcpu: u64,
}

impl TranslateQuery {
    pub fn parse(query: &str) -> Result<Self, IntrospectError> {
        let p = query_params(query, &["gva", "vcpu"])?;
        let gva = parse_number("gva", required(&p, "gva")?)?;
        let vcpu = match p.iter().find(|(k, _)| *k == "vcpu") {
            Some((_, v)) => parse_number("vcpu", v)?,
            None => 0,
        };
        Ok(TranslateQuery { gva, vcpu })
    }
}

/// `GET /vm/memory?gpa=ADDR&len=N` (len 1 to [`MAX_MEMORY_READ`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryQuery {
    pub gpa: u64,
    pub len: u64,
}

impl MemoryQuery {
    pub fn parse(query: &str) -> Result<Self, IntrospectError> {
        let p = query_params(query, &["gpa", "len"])?;
        let gpa = parse_number("gpa", required(&p, "gpa")?)?;
        let len = parse_number("len", required(&p, "len")?)?;
        if len == 0 {
            return Err(IntrospectError::BadQuery("len must be at least 1".into()));
        }
        if len > MAX_MEMORY_READ {
            return Err(IntrospectError::TooLong { len });
        }
        Ok(MemoryQuery { gpa, len })
    }
}

/// `KVM_TRANSLATE`'s answer.
#[derive(Debug, Serialize)]
pub struct KvmTranslation {
    pub valid: bool,
    #[serde(serialize_with = "hex_opt")]
    pub gpa: Option<u64>,
}

/// The answer of `GET /vm/translate`.
#[derive(Debug, Serialize)]
pub struct Translation {
    pub vcpu: u64,
    #[serde(serialize_with = "hex")]
    pub gva: u64,
    /// The privilege level the vCPU was running at when it stopped (3: a user process, whose page
    /// tables CR3 holds).
    pub cpl: u16,
    #[serde(serialize_with = "hex")]
    pub cr0: u64,
    #[serde(serialize_with = "hex")]
    pub cr3: u64,
    #[serde(serialize_with = "hex")]
    pub cr4: u64,
    #[serde(serialize_with = "hex")]
    pub efer: u64,
    /// The guest's own walk (paging mode, levels, gpa, page size, permissions, where it stopped).
    #[serde(flatten)]
    pub walk: Walk,
    /// The host-virtual address of `gpa` in microvm's mapping of guest RAM.
    #[serde(serialize_with = "hex_opt")]
    pub hva: Option<u64>,
    /// The host-physical address of `gpa`, when the host's page tables can be read.
    #[serde(serialize_with = "hex_opt")]
    pub hpa: Option<u64>,
    /// What the host-physical lookup found, or why there is no `hpa`.
    pub hpa_note: String,
    pub kvm_translate: KvmTranslation,
    /// Whether the walk and `KVM_TRANSLATE` found the same guest-physical address (or both none); for a
    /// non-canonical address, whether KVM's answer is the walk of its canonical form (see `kvm_note`).
    pub agrees_with_kvm: bool,
    /// Why the two answers differ and still agree.
    pub kvm_note: Option<String>,
}

/// The answer of `GET /vm/memory`.
#[derive(Debug, Serialize)]
pub struct MemoryDump {
    #[serde(serialize_with = "hex")]
    pub gpa: u64,
    pub len: u64,
    /// The bytes, two lower-case hex digits each.
    pub hex: String,
}

fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

fn hex_opt<S: serde::Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => hex(v, s),
        None => s.serialize_none(),
    }
}

/// Guest RAM as the walk reads it.
struct GuestPhys<'a>(&'a GuestMemoryMmap);

impl PhysRead for GuestPhys<'_> {
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        self.0.read_obj::<u64>(GuestAddress(gpa)).ok()
    }
}

/// Duplicates of the vCPUs' file descriptors, for `KVM_GET_SREGS` and `KVM_TRANSLATE` while they are
/// parked.
pub struct Inspector {
    vcpus: Vec<OwnedFd>,
}

impl Inspector {
    /// Takes a duplicate of each vCPU's descriptor, in vCPU order (before the vCPU threads start).
    pub fn new<'a>(
        vcpus: impl Iterator<Item = &'a kvm_ioctls::VcpuFd>,
    ) -> Result<Self, IntrospectError> {
        let mut fds = Vec::new();
        for (i, fd) in vcpus.enumerate() {
            // SAFETY: the VcpuFd owns this descriptor and outlives the borrow, which ends with the clone.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) };
            fds.push(
                borrowed
                    .try_clone_to_owned()
                    .map_err(|e| IntrospectError::Dup(i as u8, e))?,
            );
        }
        Ok(Inspector { vcpus: fds })
    }

    /// The vCPU count.
    pub fn vcpu_count(&self) -> usize {
        self.vcpus.len()
    }

    /// Checks that vCPU `id` exists (before the VM is paused for it).
    pub fn check_vcpu(&self, id: u64) -> Result<(), IntrospectError> {
        if id as usize >= self.vcpus.len() || id > u8::MAX as u64 {
            return Err(IntrospectError::UnknownVcpu {
                id,
                count: self.vcpus.len(),
            });
        }
        Ok(())
    }

    /// Translates `q.gva` on vCPU `q.vcpu`. The caller has parked every vCPU.
    pub fn translate(
        &self,
        mem: &GuestMemoryMmap,
        q: &TranslateQuery,
    ) -> Result<Translation, IntrospectError> {
        self.check_vcpu(q.vcpu)?;
        let id = q.vcpu as u8;
        let fd = &self.vcpus[q.vcpu as usize];
        let mut sregs = kvm_sregs::default();
        // SAFETY: KVM_GET_SREGS writes one kvm_sregs into `sregs`, which is that size; the fd is a vCPU.
        let r = unsafe { vmm_sys_util::ioctl::ioctl_with_mut_ref(fd, KVM_GET_SREGS(), &mut sregs) };
        if r < 0 {
            return Err(IntrospectError::Kvm(
                id,
                "KVM_GET_SREGS",
                std::io::Error::last_os_error(),
            ));
        }
        let regs = PagingRegs {
            cr0: sregs.cr0,
            cr3: sregs.cr3,
            cr4: sregs.cr4,
            efer: sregs.efer,
        };
        // Our walk first: KVM's may set accessed bits in the guest's tables.
        let walk = walk::walk(&GuestPhys(mem), regs, q.gva);
        let mut tr = kvm_translation {
            linear_address: q.gva,
            ..Default::default()
        };
        // SAFETY: KVM_TRANSLATE reads and writes one kvm_translation, which `tr` is; the fd is a vCPU.
        let r = unsafe { vmm_sys_util::ioctl::ioctl_with_mut_ref(fd, KVM_TRANSLATE(), &mut tr) };
        if r < 0 {
            return Err(IntrospectError::Kvm(
                id,
                "KVM_TRANSLATE",
                std::io::Error::last_os_error(),
            ));
        }
        let kvm = KvmTranslation {
            valid: tr.valid != 0,
            gpa: (tr.valid != 0).then_some(tr.physical_address),
        };
        let (hva, hpa, hpa_note) = match walk.gpa {
            Some(gpa) => host_side(mem, gpa),
            None => (None, None, "the address is not mapped by the guest".into()),
        };
        let mut agrees = walk.gpa == kvm.gpa;
        let mut kvm_note = None;
        if !agrees
            && walk
                .stopped
                .as_deref()
                .is_some_and(|s| s.starts_with("non-canonical"))
        {
            // KVM's walker does not check canonicality: it uses the index bits alone, as if the
            // address were sign-extended from its top implemented bit.
            let bits = if walk.paging == "5-level" { 57 } else { 48 };
            let canonical = (((q.gva << (64 - bits)) as i64) >> (64 - bits)) as u64;
            let same = walk::walk(&GuestPhys(mem), regs, canonical).gpa;
            if same == kvm.gpa {
                agrees = true;
                kvm_note = Some(format!(
                    "KVM_TRANSLATE does not check canonicality: its answer is that of {canonical:#x}"
                ));
            }
        }
        Ok(Translation {
            kvm_note,
            vcpu: q.vcpu,
            gva: q.gva,
            cpl: sregs.cs.selector & 3,
            cr0: sregs.cr0,
            cr3: sregs.cr3,
            cr4: sregs.cr4,
            efer: sregs.efer,
            agrees_with_kvm: agrees,
            walk,
            hva,
            hpa,
            hpa_note,
            kvm_translate: kvm,
        })
    }
}

/// The second level: the host-virtual address of `gpa`, and its host-physical one from pagemap.
fn host_side(mem: &GuestMemoryMmap, gpa: u64) -> (Option<u64>, Option<u64>, String) {
    let Ok(hva) = mem.get_host_address(GuestAddress(gpa)) else {
        return (
            None,
            None,
            "not guest RAM (the MMIO hole, or beyond the end of RAM)".into(),
        );
    };
    let hva = hva as u64;
    let (hpa, note) = host_physical(hva);
    (Some(hva), hpa, note)
}

/// The host-physical address of host-virtual `hva` in this process, or why it is not known.
fn host_physical(hva: u64) -> (Option<u64>, String) {
    let entry = File::open("/proc/self/pagemap").and_then(|f| {
        let mut raw = [0u8; 8];
        f.read_exact_at(&mut raw, hva / PAGE * 8)?;
        Ok(u64::from_le_bytes(raw))
    });
    match entry {
        Err(e) => (None, format!("cannot read /proc/self/pagemap: {e}")),
        Ok(e) if e & PM_SWAP != 0 => (None, "the host page is swapped out".into()),
        Ok(e) if e & PM_PRESENT == 0 => (
            None,
            "the host has not backed this page yet (the guest never touched it)".into(),
        ),
        Ok(e) if e & PM_PFN_MASK == 0 => (
            None,
            "the host kernel hides frame numbers from /proc/self/pagemap without CAP_SYS_ADMIN"
                .into(),
        ),
        Ok(e) => (
            Some((e & PM_PFN_MASK) * PAGE + hva % PAGE),
            "from /proc/self/pagemap".into(),
        ),
    }
}

/// `GET /vm/memory`: `q.len` bytes of guest RAM from `q.gpa`.
pub fn read_memory(mem: &GuestMemoryMmap, q: &MemoryQuery) -> Result<MemoryDump, IntrospectError> {
    let outside = || IntrospectError::OutsideRam {
        gpa: q.gpa,
        len: q.len,
    };
    if q.len > MAX_MEMORY_READ {
        return Err(IntrospectError::TooLong { len: q.len });
    }
    q.gpa.checked_add(q.len).ok_or_else(outside)?;
    let mut buf = vec![0u8; q.len as usize];
    mem.read_slice(&mut buf, GuestAddress(q.gpa))
        .map_err(|_| outside())?;
    let hex = buf.iter().map(|b| format!("{b:02x}")).collect();
    Ok(MemoryDump {
        gpa: q.gpa,
        len: q.len,
        hex,
    })
}

/// Formats `bytes` at address `addr` as `xxd` does: 16 bytes a line, in groups of two, then the
/// printable characters.
pub fn xxd(addr: u64, bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, line) in bytes.chunks(16).enumerate() {
        out.push_str(&format!("{:08x}:", addr + i as u64 * 16));
        for pair in 0..8 {
            out.push(' ');
            for j in 0..2 {
                match line.get(pair * 2 + j) {
                    Some(b) => out.push_str(&format!("{b:02x}")),
                    None => out.push_str("  "),
                }
            }
        }
        out.push_str("  ");
        out.extend(line.iter().map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '.'
            }
        }));
        out.push('\n');
    }
    out
}

/// Decodes the `hex` field of a [`MemoryDump`].
pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_hex_and_decimal_and_refuse_the_rest() {
        assert_eq!(
            TranslateQuery::parse("gva=0xffffffff80100000&vcpu=1").unwrap(),
            TranslateQuery {
                gva: 0xffff_ffff_8010_0000,
                vcpu: 1
            }
        );
        assert_eq!(TranslateQuery::parse("gva=4096").unwrap().vcpu, 0);
        for bad in [
            "",
            "vcpu=0",
            "gva=0xzz",
            "gva=-1",
            "gva=0x1&gva=0x2",
            "gva=1&cpu=0",
            "gva",
            "gva=0x10000000000000000",
        ] {
            let e = TranslateQuery::parse(bad).unwrap_err();
            assert!(e.is_bad_input(), "{bad}: {e}");
        }
        assert_eq!(
            MemoryQuery::parse("gpa=0x1000&len=16").unwrap(),
            MemoryQuery {
                gpa: 0x1000,
                len: 16
            }
        );
        assert!(matches!(
            MemoryQuery::parse("gpa=0&len=4097"),
            Err(IntrospectError::TooLong { len: 4097 })
        ));
        assert!(MemoryQuery::parse("gpa=0&len=0").is_err());
        assert!(MemoryQuery::parse("gpa=0").is_err());
    }

    #[test]
    fn memory_reads_stay_inside_ram() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        mem.write_slice(b"hello", GuestAddress(0x100)).unwrap();
        let d = read_memory(&mem, &MemoryQuery { gpa: 0x100, len: 5 }).unwrap();
        assert_eq!(d.hex, "68656c6c6f");
        assert_eq!(decode_hex(&d.hex).unwrap(), b"hello");
        for (gpa, len) in [(0xfff0, 32), (0x20000, 1), (u64::MAX - 1, 16)] {
            let e = read_memory(&mem, &MemoryQuery { gpa, len }).unwrap_err();
            assert!(matches!(e, IntrospectError::OutsideRam { .. }), "{e}");
        }
        // The second level of a RAM page: a host-virtual address inside the mapping.
        let (hva, _, note) = host_side(&mem, 0x100);
        let base = mem.get_host_address(GuestAddress(0)).unwrap() as u64;
        assert_eq!(hva, Some(base + 0x100), "{note}");
        let (hva, hpa, note) = host_side(&mem, 0x20000);
        assert_eq!((hva, hpa), (None, None));
        assert!(note.contains("not guest RAM"));
    }

    #[test]
    fn xxd_layout() {
        let text = xxd(
            0x1000,
            b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00ab",
        );
        assert_eq!(
            text,
            "00001000: 7f45 4c46 0201 0100 0000 0000 0000 0000  .ELF............\n\
             00001010: 6162                                     ab\n"
        );
        assert_eq!(decode_hex("0g"), None);
        assert_eq!(decode_hex("abc"), None);
    }
}
