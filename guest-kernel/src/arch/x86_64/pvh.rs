//! The PVH boot information (`struct hvm_start_info`, Xen's arch-x86/hvm/start_info.h) the loader leaves
//! at the physical address in EBX: the command line and the memory map.

use super::layout::PHYS_OFFSET;
use crate::sync::KCell;

const START_INFO_MAGIC: u32 = 0x336e_c578;
/// E820 type of usable RAM.
pub const MEMMAP_RAM: u32 = 1;
const MAX_MEMMAP: usize = 64;
const CMDLINE_MAX: usize = 4096;

/// What the kernel keeps from the start info.
pub struct BootInfo {
    cmdline: [u8; CMDLINE_MAX],
    cmdline_len: usize,
    /// (address, size, type)
    pub memmap: [(u64, u64, u32); MAX_MEMMAP],
    pub memmap_len: usize,
}

static BOOT_INFO: KCell<BootInfo> = KCell::new(BootInfo {
    cmdline: [0; CMDLINE_MAX],
    cmdline_len: 0,
    memmap: [(0, 0, 0); MAX_MEMMAP],
    memmap_len: 0,
});

fn read<T: Copy>(pa: u64) -> T {
    // SAFETY: the loader's start info, memory map and command line are in RAM below 4 GiB, mapped by the
    // boot direct map, and nothing has allocated over them yet (called first thing at boot).
    unsafe { ((PHYS_OFFSET + pa) as *const T).read_unaligned() }
}

/// Copies the command line and memory map out of the loader's start info. Returns false if `pa` does not
/// hold a valid start info.
pub fn init(pa: u64) -> bool {
    if pa == 0 || read::<u32>(pa) != START_INFO_MAGIC {
        return false;
    }
    let version = read::<u32>(pa + 4);
    let cmdline_pa = read::<u64>(pa + 24);
    let memmap_pa = read::<u64>(pa + 40);
    let memmap_entries = read::<u32>(pa + 48) as usize;
    let mut bi = BOOT_INFO.borrow_mut();
    if cmdline_pa != 0 {
        let mut n = 0;
        while n < CMDLINE_MAX - 1 {
            let b = read::<u8>(cmdline_pa + n as u64);
            if b == 0 {
                break;
            }
            bi.cmdline[n] = b;
            n += 1;
        }
        bi.cmdline_len = n;
    }
    if version >= 1 && memmap_pa != 0 {
        let n = memmap_entries.min(MAX_MEMMAP);
        for i in 0..n {
            let e = memmap_pa + i as u64 * 24;
            bi.memmap[i] = (read::<u64>(e), read::<u64>(e + 8), read::<u32>(e + 16));
        }
        bi.memmap_len = n;
    }
    true
}

/// The kernel command line.
pub fn cmdline() -> &'static str {
    let bi = BOOT_INFO.borrow();
    let len = bi.cmdline_len;
    let ptr = bi.cmdline.as_ptr();
    drop(bi);
    // SAFETY: the buffer is a static written once by `init` before any caller; it is never changed again.
    let bytes = unsafe { core::slice::from_raw_parts(ptr, len) };
    core::str::from_utf8(bytes).unwrap_or("")
}

/// Visits the memory map without allocating (used before the heap exists).
pub fn for_each_memmap(mut f: impl FnMut(u64, u64, u32)) {
    let bi = BOOT_INFO.borrow();
    for &(a, s, t) in &bi.memmap[..bi.memmap_len] {
        f(a, s, t);
    }
}
