//! CPUID for each vCPU: KVM's supported set, with the APIC id and topology of that vCPU, the hypervisor bit
//! and leaf, and the performance-monitoring leaf hidden (a nested host cannot give a guest a usable PMU).

use kvm_bindings::kvm_cpuid_entry2;

/// Leaf 1 ECX: running under a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX: more than one logical processor per package.
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// CLFLUSH line size in 8-byte units (64 bytes), leaf 1 EBX bits 15-8.
const CLFLUSH_LINE: u32 = 8;
/// The hypervisor leaves start here; KVM reports its signature in them.
pub const HYPERVISOR_LEAF: u32 = 0x4000_0000;
/// "KVMKVMKVM\0\0\0" in EBX, ECX, EDX.
const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];
/// Leaf 0xB level types.
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Adjusts `entries` (from `KVM_GET_SUPPORTED_CPUID`) for vCPU `cpu_id` of `cpu_count`. One package, one
/// thread per core, `cpu_count` cores. Returns whether the hypervisor leaf was missing and must be added.
pub fn filter(entries: &mut [kvm_cpuid_entry2], cpu_id: u8, cpu_count: u8) -> bool {
    let cpu_id = u32::from(cpu_id);
    let count = u32::from(cpu_count);
    // Bits needed to number the cores of the package.
    let core_bits = 32 - (count.max(1) - 1).leading_zeros();
    let mut has_hypervisor_leaf = false;
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                e.ecx |= LEAF1_ECX_HYPERVISOR;
                e.ebx = (cpu_id << 24) | (count << 16) | (CLFLUSH_LINE << 8);
                if count > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                } else {
                    e.edx &= !LEAF1_EDX_HTT;
                }
            }
            4 => {
                // Cores per package - 1 in EAX[31:26]; each cache is shared by one thread.
                e.eax = (e.eax & 0x3ff) | ((count - 1) << 26);
                if e.eax & 0x1f == 0 {
                    // Type 0: no more caches.
                    e.eax = 0;
                }
            }
            6 => {
                // No turbo or power-management controls to offer.
                e.eax &= !0b10;
                e.ecx &= !0b1000;
            }
            0xa => {
                // No PMU.
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            0xb => {
                // x2APIC topology: level 0 is threads (1 per core), level 1 cores; EDX is the x2APIC id.
                e.edx = cpu_id;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = (LEVEL_SMT << 8) | e.index;
                    }
                    1 => {
                        e.eax = core_bits;
                        e.ebx = count;
                        e.ecx = (LEVEL_CORE << 8) | e.index;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            HYPERVISOR_LEAF => has_hypervisor_leaf = true,
            _ => {}
        }
    }
    !has_hypervisor_leaf
}

/// KVM's hypervisor signature leaf, for when the supported set lacks it.
pub fn hypervisor_leaf() -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function: HYPERVISOR_LEAF,
        eax: HYPERVISOR_LEAF + 1,
        ebx: KVM_SIGNATURE[0],
        ecx: KVM_SIGNATURE[1],
        edx: KVM_SIGNATURE[2],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: 0xffff_ffff,
            ebx: 0xffff_ffff,
            ecx: 0x0000_0000,
            edx: 0xffff_ffff,
            ..Default::default()
        }
    }

    #[test]
    fn sets_apic_id_topology_and_hypervisor_bit() {
        let mut e = vec![leaf(1, 0), leaf(0xb, 0), leaf(0xb, 1), leaf(0xa, 0)];
        let missing = filter(&mut e, 1, 2);
        assert!(missing);
        assert_eq!(e[0].ebx >> 24, 1);
        assert_eq!((e[0].ebx >> 16) & 0xff, 2);
        assert_ne!(e[0].ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_ne!(e[0].edx & LEAF1_EDX_HTT, 0);
        assert_eq!((e[1].eax, e[1].ebx, e[1].ecx >> 8, e[1].edx), (0, 1, 1, 1));
        assert_eq!((e[2].eax, e[2].ebx, e[2].ecx >> 8, e[2].edx), (1, 2, 2, 1));
        assert_eq!((e[3].eax, e[3].ebx, e[3].edx), (0, 0, 0));
    }

    #[test]
    fn single_cpu_has_no_htt_and_keeps_an_existing_hypervisor_leaf() {
        let mut e = vec![leaf(1, 0), hypervisor_leaf()];
        assert!(!filter(&mut e, 0, 1));
        assert_eq!(e[0].edx & LEAF1_EDX_HTT, 0);
        assert_eq!(e[0].ebx >> 24, 0);
        let sig: Vec<u8> = [e[1].ebx, e[1].ecx, e[1].edx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        assert_eq!(&sig[..9], b"KVMKVMKVM");
    }

    #[test]
    fn core_bits_cover_the_count() {
        let mut e = vec![leaf(0xb, 1)];
        filter(&mut e, 0, 1);
        assert_eq!(e[0].eax, 0);
        filter(&mut e, 0, 3);
        assert_eq!(e[0].eax, 2);
    }
}
