//! Opening `/dev/kvm` and checking what this VMM needs from it.

use kvm_ioctls::{Cap, Kvm};

/// KVM is missing, inaccessible or lacks something.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    #[error("/dev/kvm does not exist: this host has no KVM (load the kvm module or enable virtualization)")]
    Missing,
    #[error("no permission to open /dev/kvm (run as root or join the group that owns it)")]
    Permission,
    #[error("cannot open /dev/kvm: {0}")]
    Open(#[source] kvm_ioctls::Error),
    #[error("KVM API version {0} is not the supported version 12")]
    ApiVersion(i32),
    #[error("KVM lacks a required capability: {0:?}")]
    MissingCap(Cap),
}

/// Capabilities the VMM relies on.
const REQUIRED_CAPS: [Cap; 6] = [
    Cap::Irqchip,
    Cap::UserMemory,
    Cap::SetTssAddr,
    Cap::Pit2,
    Cap::Ioeventfd,
    Cap::Irqfd,
];

/// Opens KVM and checks its API version and the capabilities the VMM needs.
pub fn open() -> Result<Kvm, KvmError> {
    let kvm = Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT => KvmError::Missing,
        libc::EACCES | libc::EPERM => KvmError::Permission,
        _ => KvmError::Open(e),
    })?;
    let version = kvm.get_api_version();
    if version != 12 {
        return Err(KvmError::ApiVersion(version));
    }
    if let Some(cap) = REQUIRED_CAPS.into_iter().find(|c| !kvm.check_extension(*c)) {
        return Err(KvmError::MissingCap(cap));
    }
    Ok(kvm)
}

/// Most vCPUs KVM allows in one VM.
pub fn max_vcpus(kvm: &Kvm) -> usize {
    kvm.get_max_vcpus()
}

/// vCPUs KVM recommends at most (often the host's CPU count); more work, but contend for host CPUs.
pub fn recommended_vcpus(kvm: &Kvm) -> usize {
    kvm.get_nr_vcpus()
}
