//! PVH boot: the `hvm_start_info` structure, its memory map and module list (the initrd), per the Xen PVH
//! boot ABI (xen/include/public/arch-x86/hvm/start_info.h).

use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use super::InitrdRegion;
use crate::arch::x86_64::{layout, memory_map};
use devices::GuestMemoryMmap;

/// `hvm_start_info.magic`.
pub const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// Version 1 has the memory map fields.
const START_INFO_VERSION: u32 = 1;

/// The start info for a guest of `mem_size` bytes.
pub fn start_info(
    mem_size: u64,
    initrd: Option<InitrdRegion>,
) -> (
    hvm_start_info,
    Vec<hvm_memmap_table_entry>,
    Option<hvm_modlist_entry>,
) {
    let memmap: Vec<_> = memory_map(mem_size)
        .into_iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        })
        .collect();
    let module = initrd.map(|r| hvm_modlist_entry {
        paddr: r.addr,
        size: r.size,
        ..Default::default()
    });
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: START_INFO_VERSION,
        cmdline_paddr: layout::CMDLINE_START,
        memmap_paddr: layout::PVH_MEMMAP_START,
        memmap_entries: memmap.len() as u32,
        nr_modules: u32::from(module.is_some()),
        modlist_paddr: if module.is_some() {
            layout::PVH_MODLIST_START
        } else {
            0
        },
        ..Default::default()
    };
    (info, memmap, module)
}

/// Writes the start info, memory map and module list at their places in the layout.
pub fn write_start_info(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    initrd: Option<InitrdRegion>,
) -> Result<(), GuestMemoryError> {
    let (info, memmap, module) = start_info(mem_size, initrd);
    mem.write_obj(info, GuestAddress(layout::BOOT_INFO_START))?;
    for (i, e) in memmap.iter().enumerate() {
        let at = layout::PVH_MEMMAP_START + (i * std::mem::size_of_val(e)) as u64;
        mem.write_obj(*e, GuestAddress(at))?;
    }
    if let Some(m) = module {
        mem.write_obj(m, GuestAddress(layout::PVH_MODLIST_START))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_info_describes_memory_cmdline_and_initrd() {
        let (info, map, module) = start_info(
            256 << 20,
            Some(InitrdRegion {
                addr: 0x0ff0_0000,
                size: 1234,
            }),
        );
        assert_eq!(info.magic, XEN_HVM_START_MAGIC);
        assert_eq!(info.version, 1);
        assert_eq!(info.cmdline_paddr, layout::CMDLINE_START);
        assert_eq!(info.memmap_entries, 2);
        assert_eq!(info.nr_modules, 1);
        assert_eq!(info.modlist_paddr, layout::PVH_MODLIST_START);
        assert_eq!(map[1].addr + map[1].size, 256 << 20);
        assert_eq!(module.unwrap().paddr, 0x0ff0_0000);

        let (info, _, module) = start_info(64 << 20, None);
        assert_eq!((info.nr_modules, info.modlist_paddr), (0, 0));
        assert!(module.is_none());
    }

    #[test]
    fn written_structures_fit_their_slots() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        write_start_info(&mem, 64 << 20, None).unwrap();
        let magic: u32 = mem.read_obj(GuestAddress(layout::BOOT_INFO_START)).unwrap();
        assert_eq!(magic, XEN_HVM_START_MAGIC);
    }
}
