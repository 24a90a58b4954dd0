//! A vCPU's saved state, for snapshots: registers, special registers, FPU/XSAVE, XCRs, MSRs (every one
//! KVM lists in `KVM_GET_MSR_INDEX_LIST` that it can read), debug registers, LAPIC, MP state, pending
//! events, CPUID and the TSC frequency. Each KVM struct is stored as a hex string of its bytes ([`hex`]).
//!
//! [`save`] runs on the vCPU's own thread while it is parked (after one `KVM_RUN` with `immediate_exit`
//! set, so a port or MMIO access the VMM answered is completed first); [`restore`] runs on a freshly
//! created vCPU in Firecracker's order: CPUID before MSRs, registers before special registers, LAPIC
//! after them, then MP state, and the pending events last.

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs,
};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};

use super::hex;

/// `MSR_IA32_TSC_DEADLINE`: written again after the LAPIC, whose timer mode decides whether it counts.
const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
/// Most MSRs one `KVM_GET_MSRS`/`KVM_SET_MSRS` carries.
const MSR_CHUNK: usize = kvm_bindings::KVM_MAX_MSR_ENTRIES;

/// A vCPU's state cannot be saved or restored.
#[derive(Debug, thiserror::Error)]
pub enum VcpuStateError {
    #[error("vCPU {0}: cannot read {1}: {2}")]
    Get(u8, &'static str, #[source] kvm_ioctls::Error),
    #[error("vCPU {0}: cannot set {1}: {2}")]
    Set(u8, &'static str, #[source] kvm_ioctls::Error),
    #[error("vCPU {0}: the snapshot's CPUID or MSR table does not fit KVM's")]
    Table(u8),
    #[error(
        "the snapshot was taken with a TSC of {saved} kHz, this host's is {host} kHz; \
         KVM here cannot scale the TSC (no KVM_CAP_TSC_CONTROL)"
    )]
    TscFrequency { saved: u32, host: u32 },
}

/// Everything KVM holds for one vCPU.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    pub id: u8,
    #[serde(with = "hex::vec")]
    pub cpuid: Vec<kvm_cpuid_entry2>,
    #[serde(with = "hex::vec")]
    pub msrs: Vec<kvm_msr_entry>,
    #[serde(with = "hex")]
    pub regs: kvm_regs,
    #[serde(with = "hex")]
    pub sregs: kvm_sregs,
    #[serde(with = "hex")]
    pub xsave: kvm_xsave,
    #[serde(with = "hex")]
    pub xcrs: kvm_xcrs,
    #[serde(with = "hex")]
    pub debug_regs: kvm_debugregs,
    #[serde(with = "hex")]
    pub lapic: kvm_lapic_state,
    #[serde(with = "hex")]
    pub mp_state: kvm_mp_state,
    #[serde(with = "hex")]
    pub vcpu_events: kvm_vcpu_events,
    pub tsc_khz: u32,
}

/// Reads the MSRs of `indices` that KVM can read (some listed ones fail on some hosts: each is left out).
fn read_msrs(fd: &VcpuFd, id: u8, indices: &[u32]) -> Result<Vec<kvm_msr_entry>, VcpuStateError> {
    let mut out = Vec::with_capacity(indices.len());
    let mut rest: Vec<u32> = indices.to_vec();
    while !rest.is_empty() {
        let chunk: Vec<kvm_msr_entry> = rest
            .iter()
            .take(MSR_CHUNK)
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&chunk).map_err(|_| VcpuStateError::Table(id))?;
        let n = fd
            .get_msrs(&mut msrs)
            .map_err(|e| VcpuStateError::Get(id, "MSRs", e))?;
        out.extend_from_slice(&msrs.as_slice()[..n]);
        if n < chunk.len() {
            // Entry n cannot be read: skip it.
            log::debug!(
                "vCPU {id}: MSR {:#x} cannot be read; not saved",
                chunk[n].index
            );
            rest.drain(..=n);
        } else {
            rest.drain(..n);
        }
    }
    Ok(out)
}

/// Writes `entries`; an entry KVM refuses is logged and skipped (the rest are still written).
fn write_msrs(fd: &VcpuFd, id: u8, entries: &[kvm_msr_entry]) -> Result<(), VcpuStateError> {
    let mut rest = entries;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(MSR_CHUNK)];
        let msrs = Msrs::from_entries(chunk).map_err(|_| VcpuStateError::Table(id))?;
        let n = fd
            .set_msrs(&msrs)
            .map_err(|e| VcpuStateError::Set(id, "MSRs", e))?;
        if n < chunk.len() {
            log::warn!(
                "vCPU {id}: KVM refused MSR {:#x} = {:#x} on restore",
                chunk[n].index,
                chunk[n].data
            );
            rest = &rest[n + 1..];
        } else {
            rest = &rest[n..];
        }
    }
    Ok(())
}

/// Saves vCPU `id`. The caller has completed any pending I/O exit (`immediate_exit`) and keeps the
/// vCPU out of `KVM_RUN`. `msr_indices` is `KVM_GET_MSR_INDEX_LIST`.
pub fn save(fd: &VcpuFd, id: u8, msr_indices: &[u32]) -> Result<VcpuState, VcpuStateError> {
    let get = |what| move |e| VcpuStateError::Get(id, what, e);
    // MP state first (KVM may update it from pending LAPIC events), as Firecracker does.
    let mp_state = fd.get_mp_state().map_err(get("MP state"))?;
    let regs = fd.get_regs().map_err(get("registers"))?;
    let sregs = fd.get_sregs().map_err(get("special registers"))?;
    let xsave = fd.get_xsave().map_err(get("XSAVE"))?;
    let xcrs = fd.get_xcrs().map_err(get("XCRs"))?;
    let debug_regs = fd.get_debug_regs().map_err(get("debug registers"))?;
    let lapic = fd.get_lapic().map_err(get("LAPIC"))?;
    let tsc_khz = fd.get_tsc_khz().map_err(get("TSC frequency"))?;
    let msrs = read_msrs(fd, id, msr_indices)?;
    let vcpu_events = fd.get_vcpu_events().map_err(get("vCPU events"))?;
    let cpuid = fd
        .get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(get("CPUID"))?
        .as_slice()
        .to_vec();
    // Tell the guest's kvmclock (if it uses one) that the vCPU was stopped on purpose.
    if let Err(e) = fd.kvmclock_ctrl() {
        log::debug!("vCPU {id}: KVM_KVMCLOCK_CTRL: {e}");
    }
    Ok(VcpuState {
        id,
        cpuid,
        msrs,
        regs,
        sregs,
        xsave,
        xcrs,
        debug_regs,
        lapic,
        mp_state,
        vcpu_events,
        tsc_khz,
    })
}

/// Checks that this host's TSC runs at the saved rate (KVM here cannot scale it).
pub fn check_tsc(fd: &VcpuFd, state: &VcpuState) -> Result<(), VcpuStateError> {
    let host = fd
        .get_tsc_khz()
        .map_err(|e| VcpuStateError::Get(state.id, "TSC frequency", e))?;
    if host != state.tsc_khz {
        return Err(VcpuStateError::TscFrequency {
            saved: state.tsc_khz,
            host,
        });
    }
    Ok(())
}

/// Restores a saved state onto a freshly created vCPU, in Firecracker's order.
pub fn restore(fd: &VcpuFd, state: &VcpuState) -> Result<(), VcpuStateError> {
    let id = state.id;
    let set = |what| move |e| VcpuStateError::Set(id, what, e);
    check_tsc(fd, state)?;
    let cpuid = CpuId::from_entries(&state.cpuid).map_err(|_| VcpuStateError::Table(id))?;
    fd.set_cpuid2(&cpuid).map_err(set("CPUID"))?;
    write_msrs(fd, id, &state.msrs)?;
    fd.set_regs(&state.regs).map_err(set("registers"))?;
    fd.set_sregs(&state.sregs)
        .map_err(set("special registers"))?;
    // SAFETY: `state.xsave` is a whole `kvm_xsave` as KVM_GET_XSAVE returned it; KVM reads no more
    // than the struct's size.
    unsafe { fd.set_xsave(&state.xsave) }.map_err(set("XSAVE"))?;
    fd.set_xcrs(&state.xcrs).map_err(set("XCRs"))?;
    fd.set_debug_regs(&state.debug_regs)
        .map_err(set("debug registers"))?;
    fd.set_lapic(&state.lapic).map_err(set("LAPIC"))?;
    let deadline: Vec<_> = state
        .msrs
        .iter()
        .filter(|m| m.index == MSR_IA32_TSC_DEADLINE)
        .copied()
        .collect();
    write_msrs(fd, id, &deadline)?;
    fd.set_mp_state(state.mp_state).map_err(set("MP state"))?;
    fd.set_vcpu_events(&state.vcpu_events)
        .map_err(set("vCPU events"))?;
    Ok(())
}
