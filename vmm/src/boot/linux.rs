//! The Linux x86 boot protocol's zero page (`struct boot_params`, Documentation/arch/x86/boot.rst) for 64-bit
//! entry: the setup header (copied from a bzImage, or made up for a plain ELF), command line, initrd and
//! e820 memory map.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use super::InitrdRegion;
use crate::arch::x86_64::{layout, memory_map};
use devices::GuestMemoryMmap;

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
/// "Undefined" boot loader id.
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;

/// The zero page for a guest of `mem_size` bytes.
pub fn zero_page(
    mem_size: u64,
    setup: Option<setup_header>,
    cmdline_len: usize,
    initrd: Option<InitrdRegion>,
) -> boot_params {
    let mut params = boot_params {
        hdr: setup.unwrap_or(setup_header {
            boot_flag: KERNEL_BOOT_FLAG_MAGIC,
            header: KERNEL_HDR_MAGIC,
            kernel_alignment: KERNEL_MIN_ALIGNMENT_BYTES,
            ..Default::default()
        }),
        ..Default::default()
    };
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.cmd_line_ptr = layout::CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some(r) = initrd {
        params.hdr.ramdisk_image = r.addr as u32;
        params.hdr.ramdisk_size = r.size as u32;
    }
    let map = memory_map(mem_size);
    for (slot, e) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.e820_entries = map.len() as u8;
    params
}

/// Writes the zero page at its place in the layout.
pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    setup: Option<setup_header>,
    cmdline_len: usize,
    initrd: Option<InitrdRegion>,
) -> Result<(), GuestMemoryError> {
    let params = zero_page(mem_size, setup, cmdline_len, initrd);
    mem.write_obj(params, GuestAddress(layout::BOOT_INFO_START))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_page_fields() {
        let p = zero_page(
            128 << 20,
            None,
            13,
            Some(InitrdRegion {
                addr: 0x700_0000,
                size: 99,
            }),
        );
        // Copy out of the packed struct before comparing.
        let (flag, magic, loader) = (p.hdr.boot_flag, p.hdr.header, p.hdr.type_of_loader);
        assert_eq!((flag, magic, loader), (0xaa55, 0x5372_6448, 0xff));
        let (ptr, len) = (p.hdr.cmd_line_ptr, p.hdr.cmdline_size);
        assert_eq!((ptr, len), (layout::CMDLINE_START as u32, 13));
        let (ri, rs) = (p.hdr.ramdisk_image, p.hdr.ramdisk_size);
        assert_eq!((ri, rs), (0x700_0000, 99));
        assert_eq!(p.e820_entries, 2);
        let e1 = p.e820_table[1];
        let (a, s, t) = (e1.addr, e1.size, e1.r#type);
        assert_eq!((a, s, t), (0x10_0000, (128 << 20) - 0x10_0000, 1));
        assert_eq!(std::mem::size_of::<boot_params>(), 4096);
    }

    #[test]
    fn bzimage_header_is_kept() {
        let hdr = setup_header {
            setup_sects: 9,
            version: 0x20f,
            ..Default::default()
        };
        let p = zero_page(64 << 20, Some(hdr), 0, None);
        let (s, v) = (p.hdr.setup_sects, p.hdr.version);
        assert_eq!((s, v), (9, 0x20f));
    }
}
