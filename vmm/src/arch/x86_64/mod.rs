//! x86_64: the guest physical layout, boot-time CPU state (registers, segments, page tables), CPUID, MSRs and
//! the MP table.

pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;

use vm_memory::GuestAddress;

/// E820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// E820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

/// One entry of the guest's physical memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryMapEntry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// The guest RAM regions for `mem_size` bytes: below the 32-bit MMIO hole, and the rest above 4 GiB.
pub fn ram_regions(mem_size: u64) -> Vec<(GuestAddress, usize)> {
    let low = mem_size.min(layout::MMIO_HOLE_START);
    let mut regions = vec![(GuestAddress(0), low as usize)];
    if mem_size > low {
        regions.push((
            GuestAddress(layout::HIGH_RAM_START),
            (mem_size - low) as usize,
        ));
    }
    regions
}

/// End of RAM below the MMIO hole.
pub fn low_ram_end(mem_size: u64) -> u64 {
    mem_size.min(layout::MMIO_HOLE_START)
}

/// The memory map the guest is told about (e820 / PVH memmap): conventional memory below the EBDA, RAM from
/// 1 MiB to the hole, and RAM above 4 GiB. The legacy hole (EBDA, VGA, BIOS) is left out.
pub fn memory_map(mem_size: u64) -> Vec<MemoryMapEntry> {
    let mut map = vec![MemoryMapEntry {
        addr: 0,
        size: layout::EBDA_START,
        kind: E820_RAM,
    }];
    let low_end = low_ram_end(mem_size);
    if low_end > layout::HIMEM_START {
        map.push(MemoryMapEntry {
            addr: layout::HIMEM_START,
            size: low_end - layout::HIMEM_START,
            kind: E820_RAM,
        });
    }
    if mem_size > low_end {
        map.push(MemoryMapEntry {
            addr: layout::HIGH_RAM_START,
            size: mem_size - low_end,
            kind: E820_RAM,
        });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn small_guest_is_one_region_below_the_hole() {
        assert_eq!(ram_regions(128 * MIB), vec![(GuestAddress(0), 128 << 20)]);
        let map = memory_map(128 * MIB);
        assert_eq!(map.len(), 2);
        assert_eq!(map[0].size, 0x9_fc00);
        assert_eq!(map[1].addr, MIB);
        assert_eq!(map[1].addr + map[1].size, 128 * MIB);
    }

    #[test]
    fn large_guest_continues_above_4g() {
        let regions = ram_regions(4 * GIB);
        assert_eq!(regions[0], (GuestAddress(0), 3 << 30));
        assert_eq!(regions[1], (GuestAddress(4 * GIB), 1 << 30));
        let map = memory_map(4 * GIB);
        assert_eq!(map[2].addr, 4 * GIB);
        assert_eq!(map[2].size, GIB);
        let total: u64 = regions.iter().map(|r| r.1 as u64).sum();
        assert_eq!(total, 4 * GIB);
        // Nothing the guest is told is RAM overlaps the MMIO hole.
        for e in map {
            assert!(e.addr + e.size <= layout::MMIO_HOLE_START || e.addr >= layout::HIGH_RAM_START);
        }
    }
}
