//! Loading the kernel and telling it about the machine.
//!
//! The kernel file's format decides the boot protocol: an ELF with a PVH note boots by PVH ([`pvh`]), an ELF
//! without one at its 64-bit entry with a zero page ([`linux`]), a bzImage by the Linux boot protocol's 64-bit
//! entry. `--boot` forces a protocol where the file supports both (a PVH ELF can also boot at `e_entry`).
//! linux-loader does the loading; this module checks the file first so a bad one gets a precise message.

pub mod linux;
pub mod pvh;
pub mod symbols;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{KernelLoader, KernelLoaderResult};
use vm_memory::{GuestAddress, GuestMemoryError};

use crate::arch::x86_64::{layout, low_ram_end, regs::EntryState};
use crate::config::BootProtocol;
use devices::GuestMemoryMmap;

/// Offset of the 64-bit entry point from the start of a bzImage's protected-mode kernel.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// "HdrS" at offset 0x202 of a bzImage.
const BZIMAGE_MAGIC: &[u8; 4] = b"HdrS";
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const PAGE_SIZE: u64 = 0x1000;

/// Why a kernel cannot be booted.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot open kernel {path}: {source}")]
    OpenKernel {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read kernel {path}: {source}")]
    ReadKernel {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel {0} is not a recognised format (expected an x86_64 ELF or a bzImage)")]
    UnknownFormat(PathBuf),
    #[error("kernel {0} is not a 64-bit little-endian x86_64 ELF")]
    BadElf(PathBuf),
    #[error("kernel {path} has no PVH entry note, so it cannot boot with --boot pvh")]
    NoPvhNote { path: PathBuf },
    #[error("kernel {path} is a bzImage, which has no PVH entry; use --boot linux")]
    BzImagePvh { path: PathBuf },
    #[error("kernel {path} needs memory up to {end:#x} but the guest's RAM below 4 GiB ends at {ram_end:#x}; raise --mem")]
    KernelTooBig {
        path: PathBuf,
        end: u64,
        ram_end: u64,
    },
    #[error("kernel {path} entry point {entry:#x} is not in guest RAM (a higher-half kernel needs a PVH note)")]
    EntryOutsideRam { path: PathBuf, entry: u64 },
    #[error("cannot load kernel {path}: {source}")]
    Load {
        path: PathBuf,
        #[source]
        source: linux_loader::loader::Error,
    },
    #[error("cannot read initrd {path}: {source}")]
    ReadInitrd {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "initrd {path} ({size} bytes) does not fit in guest memory above the kernel; raise --mem"
    )]
    InitrdTooBig { path: PathBuf, size: u64 },
    #[error("kernel command line is {len} bytes; the boot protocol allows at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("cannot write boot information into guest memory: {0}")]
    GuestMemory(#[source] GuestMemoryError),
}

/// What kind of file the kernel is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    Elf,
    BzImage,
}

/// Identifies the kernel format from its first bytes.
pub fn detect_format(head: &[u8]) -> Option<KernelFormat> {
    if head.starts_with(ELF_MAGIC) {
        Some(KernelFormat::Elf)
    } else if head.get(0x202..0x206) == Some(BZIMAGE_MAGIC) {
        Some(KernelFormat::BzImage)
    } else {
        None
    }
}

/// The extent of physical memory an ELF's PT_LOAD segments occupy, from its header bytes.
/// `None` when the header is not a 64-bit little-endian x86_64 ELF.
pub fn elf_load_end(file: &mut File) -> std::io::Result<Option<u64>> {
    let mut eh = [0u8; 64];
    file.seek(SeekFrom::Start(0))?;
    if file.read_exact(&mut eh).is_err() {
        return Ok(None);
    }
    const EM_X86_64: u16 = 62;
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    if eh[4] != 2 || eh[5] != 1 || u16_at(&eh, 18) != EM_X86_64 {
        return Ok(None);
    }
    let phoff = u64_at(&eh, 32);
    let phentsize = u16_at(&eh, 54) as usize;
    let phnum = u16_at(&eh, 56) as usize;
    if phentsize < 56 {
        return Ok(None);
    }
    let mut ph = vec![0u8; phentsize * phnum];
    file.seek(SeekFrom::Start(phoff))?;
    if file.read_exact(&mut ph).is_err() {
        return Ok(None);
    }
    const PT_LOAD: u32 = 1;
    let end = ph
        .chunks_exact(phentsize)
        .filter(|p| u32::from_le_bytes(p[0..4].try_into().unwrap()) == PT_LOAD)
        .map(|p| u64_at(p, 24).saturating_add(u64_at(p, 40))) // p_paddr + p_memsz
        .max()
        .unwrap_or(0);
    Ok(Some(end))
}

/// A loaded kernel: where to enter it, and where its image ends.
pub struct LoadedKernel {
    pub protocol: BootProtocol,
    pub entry: u64,
    pub kernel_end: u64,
    /// The bzImage setup header, to copy into the zero page.
    pub setup_header: Option<linux_loader::loader::bootparam::setup_header>,
}

/// Loads the kernel at `path` into guest memory and chooses the protocol (`forced` when given).
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    path: &Path,
    forced: Option<BootProtocol>,
) -> Result<LoadedKernel, BootError> {
    let mut file = File::open(path).map_err(|source| BootError::OpenKernel {
        path: path.into(),
        source,
    })?;
    let read_err = |source| BootError::ReadKernel {
        path: path.into(),
        source,
    };
    let mut head = vec![0u8; 0x206];
    let n = read_up_to(&mut file, &mut head).map_err(read_err)?;
    head.truncate(n);
    let ram_end = low_ram_end(mem_size);
    let load_err = |source| BootError::Load {
        path: path.into(),
        source,
    };
    match detect_format(&head).ok_or_else(|| BootError::UnknownFormat(path.into()))? {
        KernelFormat::Elf => {
            let end = elf_load_end(&mut file)
                .map_err(read_err)?
                .ok_or_else(|| BootError::BadElf(path.into()))?;
            if end > ram_end {
                return Err(BootError::KernelTooBig {
                    path: path.into(),
                    end,
                    ram_end,
                });
            }
            let result: KernelLoaderResult = Elf::load(
                mem,
                None,
                &mut file,
                Some(GuestAddress(layout::HIMEM_START)),
            )
            .map_err(load_err)?;
            let pvh_entry = match result.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(addr) => Some(addr.0),
                _ => None,
            };
            let protocol = match (forced, pvh_entry) {
                (Some(BootProtocol::Pvh), None) => {
                    return Err(BootError::NoPvhNote { path: path.into() })
                }
                (Some(p), _) => p,
                (None, Some(_)) => BootProtocol::Pvh,
                (None, None) => BootProtocol::Linux,
            };
            let entry = match protocol {
                BootProtocol::Pvh => pvh_entry.unwrap_or_default(),
                BootProtocol::Linux => result.kernel_load.0,
            };
            if entry >= ram_end {
                return Err(BootError::EntryOutsideRam {
                    path: path.into(),
                    entry,
                });
            }
            Ok(LoadedKernel {
                protocol,
                entry,
                kernel_end: result.kernel_end,
                setup_header: None,
            })
        }
        KernelFormat::BzImage => {
            if forced == Some(BootProtocol::Pvh) {
                return Err(BootError::BzImagePvh { path: path.into() });
            }
            let size = file.metadata().map_err(read_err)?.len();
            let setup_sects = match head.get(0x1f1).copied().unwrap_or(0) {
                0 => 4,
                n => u64::from(n),
            };
            let end = layout::HIMEM_START + size.saturating_sub((setup_sects + 1) * 512);
            if end > ram_end {
                return Err(BootError::KernelTooBig {
                    path: path.into(),
                    end,
                    ram_end,
                });
            }
            let result = BzImage::load(
                mem,
                Some(GuestAddress(layout::HIMEM_START)),
                &mut file,
                Some(GuestAddress(layout::HIMEM_START)),
            )
            .map_err(load_err)?;
            Ok(LoadedKernel {
                protocol: BootProtocol::Linux,
                entry: result.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET,
                kernel_end: result.kernel_end,
                setup_header: result.setup_header,
            })
        }
    }
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Where an initrd went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitrdRegion {
    pub addr: u64,
    pub size: u64,
}

/// Puts the initrd at the top of RAM below the MMIO hole, page aligned, above the kernel.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel_end: u64,
    path: &Path,
) -> Result<InitrdRegion, BootError> {
    let read_err = |source| BootError::ReadInitrd {
        path: path.into(),
        source,
    };
    let data = std::fs::read(path).map_err(read_err)?;
    let size = data.len() as u64;
    let too_big = || BootError::InitrdTooBig {
        path: path.into(),
        size,
    };
    let addr = low_ram_end(mem_size)
        .checked_sub(size)
        .ok_or_else(too_big)?
        & !(PAGE_SIZE - 1);
    if addr < kernel_end.max(layout::HIMEM_START) {
        return Err(too_big());
    }
    use vm_memory::Bytes;
    mem.write_slice(&data, GuestAddress(addr))
        .map_err(BootError::GuestMemory)?;
    Ok(InitrdRegion { addr, size })
}

/// Adds kernel parameters (`extra`, each with a leading space) to `cmdline`, before any ` -- `: Linux
/// passes the words after `--` to init instead of reading them itself.
pub fn add_kernel_params(cmdline: &str, extra: &str) -> String {
    let split = if cmdline == "--" || cmdline.starts_with("-- ") {
        Some(0)
    } else {
        cmdline
            .find(" -- ")
            .or_else(|| cmdline.strip_suffix(" --").map(str::len))
    };
    match split {
        Some(at) => {
            let (kernel, init) = cmdline.split_at(at);
            let sep = if at == 0 { " " } else { "" };
            format!("{kernel}{extra}{sep}{init}")
                .trim_start()
                .to_string()
        }
        None => format!("{cmdline}{extra}"),
    }
}

/// Writes the NUL-terminated command line.
pub fn load_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<(), BootError> {
    if cmdline.len() >= layout::CMDLINE_MAX_SIZE {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            max: layout::CMDLINE_MAX_SIZE - 1,
        });
    }
    use vm_memory::Bytes;
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(layout::CMDLINE_START))
        .map_err(BootError::GuestMemory)
}

/// Writes the protocol's boot information (start info or zero page) and returns the entry state.
pub fn write_boot_info(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel: &LoadedKernel,
    cmdline: &str,
    initrd: Option<InitrdRegion>,
) -> Result<EntryState, BootError> {
    load_cmdline(mem, cmdline)?;
    match kernel.protocol {
        BootProtocol::Pvh => {
            pvh::write_start_info(mem, mem_size, initrd).map_err(BootError::GuestMemory)?;
            Ok(EntryState::Pvh {
                entry: kernel.entry,
                start_info: layout::BOOT_INFO_START,
            })
        }
        BootProtocol::Linux => {
            linux::write_zero_page(mem, mem_size, kernel.setup_header, cmdline.len(), initrd)
                .map_err(BootError::GuestMemory)?;
            Ok(EntryState::Linux64 {
                entry: kernel.entry,
                zero_page: layout::BOOT_INFO_START,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats() {
        assert_eq!(detect_format(b"\x7fELF\x02"), Some(KernelFormat::Elf));
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(detect_format(&bz), Some(KernelFormat::BzImage));
        assert_eq!(detect_format(b"MZ"), None);
        assert_eq!(detect_format(&[]), None);
    }

    #[test]
    fn initrd_goes_to_the_top_of_low_ram() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let dir = std::env::temp_dir().join(format!("microvm-initrd-{}", std::process::id()));
        std::fs::write(&dir, vec![7u8; 5000]).unwrap();
        let r = load_initrd(&mem, 16 << 20, 0x20_0000, &dir).unwrap();
        assert_eq!(r.size, 5000);
        assert_eq!(r.addr, ((16 << 20) - 5000) & !0xfff);
        assert!(matches!(
            load_initrd(&mem, 16 << 20, (16 << 20) - 4096, &dir),
            Err(BootError::InitrdTooBig { .. })
        ));
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn kernel_params_go_before_the_init_arguments() {
        let e = " virtio_mmio.device=4K@0xd0000000:5";
        assert_eq!(
            add_kernel_params("console=ttyS0", e),
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5"
        );
        assert_eq!(
            add_kernel_params("console=ttyS0 -- check x", e),
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 -- check x"
        );
        assert_eq!(
            add_kernel_params("quiet --", e),
            "quiet virtio_mmio.device=4K@0xd0000000:5 --"
        );
        assert_eq!(
            add_kernel_params("-- single", e),
            "virtio_mmio.device=4K@0xd0000000:5 -- single"
        );
        assert_eq!(add_kernel_params("a--b", ""), "a--b");
    }

    #[test]
    fn cmdline_is_nul_terminated_and_bounded() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        load_cmdline(&mem, "console=ttyS0").unwrap();
        use vm_memory::Bytes;
        let mut b = [0u8; 14];
        mem.read_slice(&mut b, GuestAddress(layout::CMDLINE_START))
            .unwrap();
        assert_eq!(&b, b"console=ttyS0\0");
        assert!(matches!(
            load_cmdline(&mem, &"x".repeat(2048)),
            Err(BootError::CmdlineTooLong { len: 2048, .. })
        ));
    }
}
