//! Names for guest addresses, from the kernel ELF's symbol table, so a vCPU that dies in the guest kernel is
//! reported as `<function+offset>`. Read only when needed (after a failure), never on the boot path.

use std::path::Path;

use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Object, ObjectSymbol, SymbolKind};

/// Function and object symbols of a kernel, sorted by address, with the physical-to-virtual offsets of its
/// segments (a kernel running before paging has RIP at physical addresses).
pub struct SymbolTable {
    symbols: Vec<(u64, u64, String)>,
    /// (p_paddr, p_vaddr, p_memsz) of each PT_LOAD.
    segments: Vec<(u64, u64, u64)>,
}

impl SymbolTable {
    /// Reads the symbols of the ELF at `path`; `None` if it is not an ELF or has no symbols.
    pub fn load(path: &Path) -> Option<Self> {
        let data = std::fs::read(path).ok()?;
        Self::parse(&data)
    }

    /// Reads the symbols of an open ELF file (with `pread` only: what a vCPU thread's filter allows).
    pub fn read(file: &std::fs::File) -> Option<Self> {
        use std::os::unix::fs::FileExt;
        let mut data = vec![0u8; 1 << 20];
        let mut len = 0;
        loop {
            if len == data.len() {
                data.resize(len * 2, 0);
            }
            match file.read_at(&mut data[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        data.truncate(len);
        Self::parse(&data)
    }

    /// Parses the symbols of an ELF image.
    pub fn parse(data: &[u8]) -> Option<Self> {
        let elf = ElfFile64::<object::Endianness>::parse(data).ok()?;
        let mut symbols: Vec<(u64, u64, String)> = elf
            .symbols()
            .filter(|s| matches!(s.kind(), SymbolKind::Text | SymbolKind::Data))
            .filter(|s| s.address() != 0)
            .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_string())))
            .collect();
        if symbols.is_empty() {
            return None;
        }
        symbols.sort_by_key(|s| s.0);
        let endian = elf.endian();
        let segments = elf
            .elf_program_headers()
            .iter()
            .filter(|p| p.p_type(endian) == object::elf::PT_LOAD)
            .map(|p| (p.p_paddr(endian), p.p_vaddr(endian), p.p_memsz(endian)))
            .collect();
        Some(Self { symbols, segments })
    }

    /// `name+0xoff` for `addr`, trying it as a virtual address and then as a physical one.
    pub fn describe(&self, addr: u64) -> Option<String> {
        self.lookup(addr).or_else(|| {
            let (p, v, _) = self
                .segments
                .iter()
                .find(|(p, _, len)| addr >= *p && addr - p < *len)?;
            self.lookup(addr - p + v)
        })
    }

    fn lookup(&self, addr: u64) -> Option<String> {
        let i = self
            .symbols
            .partition_point(|s| s.0 <= addr)
            .checked_sub(1)?;
        let (start, size, name) = &self.symbols[i];
        let off = addr - start;
        // A sized symbol must contain the address; an unsized one (asm labels) takes what follows it.
        if *size != 0 && off >= *size {
            return None;
        }
        Some(format!("{name}+{off:#x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_its_own_test_binary() {
        // The test executable is an ELF with symbols: find this very function.
        let exe = std::env::current_exe().unwrap();
        let table = SymbolTable::load(&exe).unwrap();
        // Look this function up by name (the binary is position independent, so its runtime address is not
        // its link address), then resolve an address one byte into it.
        let (start, _, name) = table
            .symbols
            .iter()
            .find(|s| s.2.contains("resolves_its_own_test_binary"))
            .cloned()
            .unwrap();
        assert_eq!(table.describe(start + 1).unwrap(), format!("{name}+0x1"));
        assert!(SymbolTable::parse(b"not an elf").is_none());
    }
}
