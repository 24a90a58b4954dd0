//! The KVM VM: guest memory slots, the TSS and identity-map addresses, the in-kernel irqchip (PIC, IOAPIC,
//! LAPICs) and PIT.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::arch::x86_64::layout;
use devices::GuestMemoryMmap;

/// The VM cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("KVM_CREATE_VM failed: {0}")]
    Create(#[source] kvm_ioctls::Error),
    #[error("cannot register guest memory with KVM: {0}")]
    MemorySlot(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_TSS_ADDR failed: {0}")]
    TssAddress(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_IDENTITY_MAP_ADDR failed: {0}")]
    IdentityMap(#[source] kvm_ioctls::Error),
    #[error("cannot create the in-kernel irqchip: {0}")]
    Irqchip(#[source] kvm_ioctls::Error),
    #[error("cannot create the in-kernel PIT: {0}")]
    Pit(#[source] kvm_ioctls::Error),
}

/// Creates the VM, registers `mem` with it, and creates the irqchip and PIT.
pub fn create(kvm: &Kvm, mem: &GuestMemoryMmap) -> Result<VmFd, VmError> {
    let vm = kvm.create_vm().map_err(VmError::Create)?;
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .expect("a region's start is inside guest memory");
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
            flags: 0,
        };
        // SAFETY: the host range is a live mapping owned by `mem`, which the VM outlives only as a file
        // descriptor that is closed before `mem` is dropped (both live in `Vm`, fd declared first).
        unsafe { vm.set_user_memory_region(region) }.map_err(VmError::MemorySlot)?;
    }
    vm.set_identity_map_address(layout::KVM_IDENTITY_MAP_ADDRESS)
        .map_err(VmError::IdentityMap)?;
    vm.set_tss_address(layout::KVM_TSS_ADDRESS as usize)
        .map_err(VmError::TssAddress)?;
    vm.create_irq_chip().map_err(VmError::Irqchip)?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(VmError::Pit)?;
    Ok(vm)
}
