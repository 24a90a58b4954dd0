//! The KVM VM: guest memory slots, the TSS and identity-map addresses, the in-kernel irqchip (PIC, IOAPIC,
//! LAPICs) and PIT.

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_config, kvm_pit_state2, kvm_userspace_memory_region,
    KVM_PIT_SPEAKER_DUMMY,
};
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

/// The VM's in-kernel devices and clock, for snapshots.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct VmState {
    #[serde(with = "super::hex")]
    pub pic_master: kvm_irqchip,
    #[serde(with = "super::hex")]
    pub pic_slave: kvm_irqchip,
    #[serde(with = "super::hex")]
    pub ioapic: kvm_irqchip,
    #[serde(with = "super::hex")]
    pub pit: kvm_pit_state2,
    #[serde(with = "super::hex")]
    pub clock: kvm_clock_data,
}

/// The VM's in-kernel state cannot be saved or restored.
#[derive(Debug, thiserror::Error)]
pub enum VmStateError {
    #[error("cannot read the VM's {0}: {1}")]
    Get(&'static str, #[source] kvm_ioctls::Error),
    #[error("cannot set the VM's {0}: {1}")]
    Set(&'static str, #[source] kvm_ioctls::Error),
}

const IRQCHIP_PIC_MASTER: u32 = 0;
const IRQCHIP_PIC_SLAVE: u32 = 1;
const IRQCHIP_IOAPIC: u32 = 2;

fn get_irqchip(vm: &VmFd, chip_id: u32, what: &'static str) -> Result<kvm_irqchip, VmStateError> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip)
        .map_err(|e| VmStateError::Get(what, e))?;
    Ok(chip)
}

/// Saves the PIC pair, the IOAPIC, the PIT and the KVM clock (the vCPUs are paused).
pub fn save_state(vm: &VmFd) -> Result<VmState, VmStateError> {
    Ok(VmState {
        pic_master: get_irqchip(vm, IRQCHIP_PIC_MASTER, "master PIC")?,
        pic_slave: get_irqchip(vm, IRQCHIP_PIC_SLAVE, "slave PIC")?,
        ioapic: get_irqchip(vm, IRQCHIP_IOAPIC, "IOAPIC")?,
        pit: vm.get_pit2().map_err(|e| VmStateError::Get("PIT", e))?,
        clock: vm.get_clock().map_err(|e| VmStateError::Get("clock", e))?,
    })
}

/// Restores a saved state onto a VM made by [`create`] (before its vCPUs run).
pub fn restore_state(vm: &VmFd, s: &VmState) -> Result<(), VmStateError> {
    vm.set_pit2(&s.pit)
        .map_err(|e| VmStateError::Set("PIT", e))?;
    // Only KVM_CLOCK_REALTIME could be given back; the other flags are KVM's output.
    let clock = kvm_clock_data {
        flags: 0,
        ..s.clock
    };
    vm.set_clock(&clock)
        .map_err(|e| VmStateError::Set("clock", e))?;
    for (chip, what) in [
        (&s.pic_master, "master PIC"),
        (&s.pic_slave, "slave PIC"),
        (&s.ioapic, "IOAPIC"),
    ] {
        vm.set_irqchip(chip)
            .map_err(|e| VmStateError::Set(what, e))?;
    }
    Ok(())
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
