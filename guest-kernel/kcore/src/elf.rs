//! Static ELF64 executables for x86-64: the file header and program headers turned into a load plan.
//!
//! Accepted: ET_EXEC (loaded at its link addresses) and ET_DYN without PT_INTERP (static-pie, loaded at
//! [`DYN_BASE`]; it relocates itself). The kernel maps [`ElfImage::segments`] shifted by
//! [`ElfImage::bias`] and builds the initial stack with [`ElfImage::phdr_addr`] and [`ElfImage::entry`].

extern crate alloc;
use alloc::vec::Vec;
use core::fmt;

/// Where a static-pie executable's lowest segment is placed (Linux uses 2/3 of TASK_SIZE).
pub const DYN_BASE: u64 = 0x5555_5555_4000;
/// Size of an ELF64 program header.
pub const PHENT_SIZE: u64 = 56;

const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_PHDR: u32 = 6;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;

/// Segment permission bits (p_flags).
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;

/// Why a file is not a loadable executable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Shorter than its own headers say.
    Truncated,
    /// No `\x7fELF` magic.
    BadMagic,
    /// Not 64-bit little-endian x86-64.
    WrongArch,
    /// Neither ET_EXEC nor ET_DYN.
    NotExecutable,
    /// Has PT_INTERP: dynamically linked programs are not supported.
    Dynamic,
    /// A segment with filesz > memsz, a misaligned offset or an address outside user space.
    BadSegment,
    /// No PT_LOAD segment.
    NoSegments,
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ElfError::Truncated => "truncated ELF headers",
            ElfError::BadMagic => "not an ELF file",
            ElfError::WrongArch => "not an ELF64 x86-64 little-endian file",
            ElfError::NotExecutable => "not ET_EXEC or ET_DYN",
            ElfError::Dynamic => "dynamically linked (PT_INTERP) executables are not supported",
            ElfError::BadSegment => "malformed PT_LOAD segment",
            ElfError::NoSegments => "no PT_LOAD segment",
        })
    }
}

/// One PT_LOAD segment, with unrelocated addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub filesz: u64,
    pub offset: u64,
    pub flags: u32,
}

/// A parsed executable: what the loader needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfImage {
    /// True for ET_DYN (static-pie).
    pub pie: bool,
    /// Added to every address of the file: 0 for ET_EXEC.
    pub bias: u64,
    /// Entry point, relocated.
    pub entry: u64,
    /// Address of the program headers in the loaded image, relocated (for AT_PHDR).
    pub phdr_addr: u64,
    /// Number of program headers (AT_PHNUM).
    pub phnum: u64,
    /// PT_LOAD segments, unrelocated (add `bias`).
    pub segments: Vec<Segment>,
}

fn u16_at(b: &[u8], o: usize) -> Result<u16, ElfError> {
    b.get(o..o + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(ElfError::Truncated)
}

fn u32_at(b: &[u8], o: usize) -> Result<u32, ElfError> {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(ElfError::Truncated)
}

fn u64_at(b: &[u8], o: usize) -> Result<u64, ElfError> {
    let s = b.get(o..o + 8).ok_or(ElfError::Truncated)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

/// How many bytes from the start of the file [`parse`] needs (the header and all program headers).
pub fn headers_len(head: &[u8]) -> Result<usize, ElfError> {
    let phoff = u64_at(head, 32)?;
    let phentsize = u16_at(head, 54)? as u64;
    let phnum = u16_at(head, 56)? as u64;
    let end = phoff
        .checked_add(phentsize.checked_mul(phnum).ok_or(ElfError::Truncated)?)
        .ok_or(ElfError::Truncated)?;
    usize::try_from(end.max(64)).map_err(|_| ElfError::Truncated)
}

/// Parses the headers at the start of an executable; `user_end` is the first address above user space.
pub fn parse(file: &[u8], user_end: u64) -> Result<ElfImage, ElfError> {
    if file.len() < 64 {
        return Err(ElfError::Truncated);
    }
    if file[..4] != *b"\x7fELF" {
        return Err(ElfError::BadMagic);
    }
    if file[4] != 2 || file[5] != 1 || u16_at(file, 18)? != EM_X86_64 {
        return Err(ElfError::WrongArch);
    }
    let pie = match u16_at(file, 16)? {
        ET_EXEC => false,
        ET_DYN => true,
        _ => return Err(ElfError::NotExecutable),
    };
    let entry = u64_at(file, 24)?;
    let phoff = u64_at(file, 32)?;
    let phentsize = u16_at(file, 54)? as u64;
    let phnum = u16_at(file, 56)? as u64;
    if phentsize != PHENT_SIZE {
        return Err(ElfError::WrongArch);
    }
    if headers_len(file)? > file.len() {
        return Err(ElfError::Truncated);
    }
    let mut segments = Vec::new();
    let mut phdr_vaddr = None;
    for i in 0..phnum {
        let o = (phoff + i * phentsize) as usize;
        let p_type = u32_at(file, o)?;
        match p_type {
            PT_INTERP => return Err(ElfError::Dynamic),
            PT_PHDR => phdr_vaddr = Some(u64_at(file, o + 16)?),
            PT_LOAD => {
                let seg = Segment {
                    flags: u32_at(file, o + 4)?,
                    offset: u64_at(file, o + 8)?,
                    vaddr: u64_at(file, o + 16)?,
                    filesz: u64_at(file, o + 32)?,
                    memsz: u64_at(file, o + 40)?,
                };
                if seg.filesz > seg.memsz || seg.offset % 4096 != seg.vaddr % 4096 {
                    return Err(ElfError::BadSegment);
                }
                if seg.memsz > 0 {
                    segments.push(seg);
                }
            }
            _ => {}
        }
    }
    let lowest = segments
        .iter()
        .map(|s| s.vaddr & !0xfff)
        .min()
        .ok_or(ElfError::NoSegments)?;
    let bias = if pie {
        DYN_BASE.wrapping_sub(lowest)
    } else {
        0
    };
    for s in &segments {
        let end = s
            .vaddr
            .checked_add(s.memsz)
            .and_then(|e| e.checked_add(bias))
            .ok_or(ElfError::BadSegment)?;
        if end > user_end || s.vaddr.wrapping_add(bias) < 0x1000 {
            return Err(ElfError::BadSegment);
        }
    }
    // Without PT_PHDR, the headers are wherever the segment holding file offset `phoff` puts them.
    let phdr_vaddr = match phdr_vaddr {
        Some(v) => v,
        None => segments
            .iter()
            .find(|s| s.offset <= phoff && phoff + phnum * phentsize <= s.offset + s.filesz)
            .map(|s| s.vaddr + (phoff - s.offset))
            .unwrap_or(0),
    };
    Ok(ElfImage {
        pie,
        bias,
        entry: entry.wrapping_add(bias),
        phdr_addr: if phdr_vaddr == 0 {
            0
        } else {
            phdr_vaddr.wrapping_add(bias)
        },
        phnum,
        segments,
    })
}

impl ElfImage {
    /// First page-aligned address above every segment (where brk starts).
    pub fn end(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| (s.vaddr + s.memsz + self.bias + 0xfff) & !0xfff)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a minimal ELF64 file: header + the given program headers (type, flags, offset, vaddr,
    /// filesz, memsz).
    pub(crate) fn build(
        e_type: u16,
        entry: u64,
        phdrs: &[(u32, u32, u64, u64, u64, u64)],
    ) -> Vec<u8> {
        let mut f = vec![0u8; 64 + phdrs.len() * 56];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[6] = 1;
        f[16..18].copy_from_slice(&e_type.to_le_bytes());
        f[18..20].copy_from_slice(&62u16.to_le_bytes());
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[52..54].copy_from_slice(&64u16.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        for (i, p) in phdrs.iter().enumerate() {
            let o = 64 + i * 56;
            f[o..o + 4].copy_from_slice(&p.0.to_le_bytes());
            f[o + 4..o + 8].copy_from_slice(&p.1.to_le_bytes());
            f[o + 8..o + 16].copy_from_slice(&p.2.to_le_bytes());
            f[o + 16..o + 24].copy_from_slice(&p.3.to_le_bytes());
            f[o + 32..o + 40].copy_from_slice(&p.4.to_le_bytes());
            f[o + 40..o + 48].copy_from_slice(&p.5.to_le_bytes());
        }
        f
    }

    const TOP: u64 = 0x7fff_ffff_f000;

    #[test]
    fn static_exec() {
        let f = build(
            2,
            0x401000,
            &[
                (PT_LOAD, PF_R | PF_X, 0, 0x400000, 0x2000, 0x2000),
                (PT_LOAD, PF_R | PF_W, 0x2000, 0x403000, 0x100, 0x3000),
            ],
        );
        let img = parse(&f, TOP).unwrap();
        assert!(!img.pie);
        assert_eq!(img.bias, 0);
        assert_eq!(img.entry, 0x401000);
        assert_eq!(
            img.phdr_addr, 0x400040,
            "headers found through the first segment"
        );
        assert_eq!(img.phnum, 2);
        assert_eq!(img.segments.len(), 2);
        assert_eq!(img.end(), 0x406000);
    }

    #[test]
    fn static_pie_is_relocated() {
        let f = build(
            3,
            0x1100,
            &[
                (PT_PHDR, PF_R, 64, 64, 112 + 56, 112 + 56),
                (PT_LOAD, PF_R | PF_X, 0, 0, 0x2000, 0x2000),
            ],
        );
        let img = parse(&f, TOP).unwrap();
        assert!(img.pie);
        assert_eq!(img.bias, DYN_BASE);
        assert_eq!(img.entry, DYN_BASE + 0x1100);
        assert_eq!(img.phdr_addr, DYN_BASE + 64);
    }

    #[test]
    fn rejects_what_it_cannot_run() {
        assert_eq!(parse(b"short", TOP), Err(ElfError::Truncated));
        let mut f = build(2, 0, &[(PT_LOAD, PF_R, 0, 0x400000, 0x1000, 0x1000)]);
        f[0] = 0;
        assert_eq!(parse(&f, TOP), Err(ElfError::BadMagic));
        let f = build(1, 0, &[(PT_LOAD, PF_R, 0, 0x400000, 0x1000, 0x1000)]);
        assert_eq!(parse(&f, TOP), Err(ElfError::NotExecutable));
        let f = build(2, 0, &[(PT_INTERP, PF_R, 0, 0, 0, 0)]);
        assert_eq!(parse(&f, TOP), Err(ElfError::Dynamic));
        let f = build(2, 0, &[(PT_LOAD, PF_R, 0, 0x400000, 0x2000, 0x1000)]);
        assert_eq!(parse(&f, TOP), Err(ElfError::BadSegment));
        let f = build(2, 0, &[(PT_LOAD, PF_R, 0, TOP - 0x1000, 0x1000, 0x2000)]);
        assert_eq!(parse(&f, TOP), Err(ElfError::BadSegment));
        let f = build(2, 0, &[]);
        assert_eq!(parse(&f, TOP), Err(ElfError::NoSegments));
    }

    /// Links a tiny static program with the host's C compiler (skips when there is none).
    fn link(tag: &str, flags: &[&str]) -> Option<Vec<u8>> {
        let dir = std::env::temp_dir().join(format!("kcore-elf-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("t.c");
        std::fs::write(
            &src,
            "int data = 7; char bss[100000];\nvoid _start(void) { for (;;) bss[data]++; }\n",
        )
        .unwrap();
        let out = dir.join("t");
        let ok = std::process::Command::new("cc")
            .args(flags)
            .args(["-nostdlib", "-O1", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        let bytes = ok.then(|| std::fs::read(&out).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
        if bytes.is_none() {
            eprintln!("SKIPPED: no C compiler to link a {tag} test program");
        }
        bytes
    }

    #[test]
    fn parses_linker_output_static_and_static_pie() {
        if let Some(f) = link("exec", &["-static", "-no-pie"]) {
            let img = parse(&f, TOP).unwrap();
            assert!(!img.pie);
            assert!(img.entry >= 0x400000);
            assert!(img.phdr_addr != 0 && img.phnum >= 2);
            let bss = img.segments.iter().find(|s| s.flags & PF_W != 0).unwrap();
            assert!(
                bss.memsz >= 100000 && bss.filesz < bss.memsz,
                "bss is memsz beyond filesz"
            );
        }
        if let Some(f) = link("pie", &["-static-pie", "-fPIE"]) {
            let img = parse(&f, TOP).unwrap();
            assert!(img.pie);
            assert_eq!(
                img.bias,
                DYN_BASE - img.segments.iter().map(|s| s.vaddr & !0xfff).min().unwrap()
            );
            assert!(img.entry > DYN_BASE && img.phdr_addr > DYN_BASE);
        }
    }

    #[test]
    fn parses_a_real_host_executable_if_static() {
        // The test binary itself is dynamically linked on most hosts: it must be refused cleanly.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        match parse(&me, TOP) {
            Ok(img) => assert!(img.entry != 0),
            Err(e) => assert_eq!(e, ElfError::Dynamic),
        }
    }
}
