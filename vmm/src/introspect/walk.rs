//! The x86-64 page-table walk, as pure logic over guest-physical memory: from a vCPU's CR0, CR3, CR4 and
//! EFER, through PML5E (when CR4.LA57), PML4E, PDPTE, PDE and PTE, to the guest-physical address, with
//! each level's entry, its flags, and the effective permissions. 1 GiB (PDPTE.PS) and 2 MiB (PDE.PS)
//! pages end the walk early.
//!
//! A walk that stops (an entry not present, a non-canonical address, a table outside guest RAM) is a
//! plain answer with the level where it stopped, never an error: the caller reports it as it is. Nothing
//! here touches KVM; the memory is read through [`PhysRead`], so the unit tests below build page tables
//! by hand in a byte vector.

use serde::Serialize;

/// CR0.PG: paging on.
const CR0_PG: u64 = 1 << 31;
/// CR4.PAE.
const CR4_PAE: u64 = 1 << 5;
/// CR4.LA57: five-level paging.
const CR4_LA57: u64 = 1 << 12;
/// EFER.LMA: long mode active.
const EFER_LMA: u64 = 1 << 10;
/// EFER.NXE: the NX bit is honoured.
const EFER_NXE: u64 = 1 << 11;
/// Bits 51:12 of CR3 and of a table entry: the next table's (or the 4 KiB page's) physical address.
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

const P: u64 = 1;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PS: u64 = 1 << 7;
const NX: u64 = 1 << 63;

/// The named flag bits of a paging-structure entry. Bit 7 is PS in a PDPTE or PDE and PAT in a PTE; bit
/// 8 (G) counts only in an entry that maps a page.
const FLAGS: [(u64, &str); 10] = [
    (P, "P"),
    (RW, "RW"),
    (US, "US"),
    (1 << 3, "PWT"),
    (1 << 4, "PCD"),
    (1 << 5, "A"),
    (1 << 6, "D"),
    (PS, "PS"),
    (1 << 8, "G"),
    (NX, "NX"),
];

/// Reads guest-physical memory.
pub trait PhysRead {
    /// The little-endian u64 at `gpa`, or `None` outside guest RAM.
    fn read_u64(&self, gpa: u64) -> Option<u64>;
}

/// The registers the walk needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct PagingRegs {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

/// One level of the walk.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Level {
    /// `PML5E`, `PML4E`, `PDPTE`, `PDE` or `PTE`.
    pub level: &'static str,
    /// The index of the entry in its table (9 bits of the address).
    pub index: u64,
    /// Where the entry lies in guest-physical memory.
    #[serde(serialize_with = "hex")]
    pub entry_gpa: u64,
    /// The entry (absent when its table lies outside guest RAM).
    #[serde(serialize_with = "hex_opt")]
    pub entry: Option<u64>,
    /// Its set flags by name (bit 7 is `PAT` in a PTE).
    pub flags: Vec<&'static str>,
}

/// The result of a walk.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Walk {
    /// `4-level`, `5-level`, `off` (CR0.PG clear: addresses are physical), or the legacy mode that is
    /// not walked (`32-bit`, `PAE`).
    pub paging: &'static str,
    /// The levels walked, top first.
    pub levels: Vec<Level>,
    /// The guest-physical address, when the walk reached a page.
    #[serde(serialize_with = "hex_opt")]
    pub gpa: Option<u64>,
    /// The size of the page that maps the address (4096, 2 MiB or 1 GiB), when it is mapped.
    pub page_size: Option<u64>,
    /// Effective permissions over every level, when mapped: writable (all RW), user (all US), and
    /// executable (no NX when EFER.NXE).
    pub writable: Option<bool>,
    pub user: Option<bool>,
    pub executable: Option<bool>,
    /// Why the walk stopped without a page: `non-canonical`, `not present at PDE`, ...
    pub stopped: Option<String>,
}

fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

fn hex_opt<S: serde::Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => hex(v, s),
        None => s.serialize_none(),
    }
}

/// The named flags set in `entry` at `level` (0 = PTE).
fn flag_names(entry: u64, level: usize) -> Vec<&'static str> {
    FLAGS
        .iter()
        .filter(|(bit, _)| entry & bit != 0)
        .map(|&(bit, name)| if bit == PS && level == 0 { "PAT" } else { name })
        .collect()
}

const LEVEL_NAMES: [&str; 5] = ["PTE", "PDE", "PDPTE", "PML4E", "PML5E"];

/// Walks the page tables for `gva` as the vCPU with registers `regs` would.
pub fn walk(mem: &impl PhysRead, regs: PagingRegs, gva: u64) -> Walk {
    let mut w = Walk {
        paging: "off",
        levels: Vec::new(),
        gpa: None,
        page_size: None,
        writable: None,
        user: None,
        executable: None,
        stopped: None,
    };
    if regs.cr0 & CR0_PG == 0 {
        w.gpa = Some(gva);
        return w;
    }
    if regs.efer & EFER_LMA == 0 {
        w.paging = if regs.cr4 & CR4_PAE != 0 {
            "PAE"
        } else {
            "32-bit"
        };
        w.stopped = Some(format!("{} paging is not walked by microvm", w.paging));
        return w;
    }
    let (top, va_bits) = if regs.cr4 & CR4_LA57 != 0 {
        w.paging = "5-level";
        (4usize, 57u32)
    } else {
        w.paging = "4-level";
        (3usize, 48u32)
    };
    // Canonical: bits 63..va_bits-1 all equal.
    let high = (gva as i64) >> (va_bits - 1);
    if high != 0 && high != -1 {
        w.stopped = Some(format!(
            "non-canonical address (bits 63:{} differ)",
            va_bits - 1
        ));
        return w;
    }
    let nxe = regs.efer & EFER_NXE != 0;
    let (mut writable, mut user, mut nx) = (true, true, false);
    let mut table = regs.cr3 & ADDR_MASK;
    for level in (0..=top).rev() {
        let shift = 12 + 9 * level as u32;
        let index = (gva >> shift) & 0x1ff;
        let entry_gpa = table + index * 8;
        let entry = mem.read_u64(entry_gpa);
        w.levels.push(Level {
            level: LEVEL_NAMES[level],
            index,
            entry_gpa,
            entry,
            flags: entry.map(|e| flag_names(e, level)).unwrap_or_default(),
        });
        let Some(entry) = entry else {
            w.stopped = Some(format!(
                "the {} table at {table:#x} lies outside guest RAM",
                LEVEL_NAMES[level]
            ));
            return w;
        };
        if entry & P == 0 {
            w.stopped = Some(format!("not present at {}", LEVEL_NAMES[level]));
            return w;
        }
        writable &= entry & RW != 0;
        user &= entry & US != 0;
        nx |= nxe && entry & NX != 0;
        // PS maps a page at the PDPTE (1 GiB) and PDE (2 MiB); the PTE always does.
        let large = (level == 1 || level == 2) && entry & PS != 0;
        if level == 0 || large {
            let size = 1u64 << shift;
            let base = entry & ADDR_MASK & !(size - 1);
            w.gpa = Some(base | (gva & (size - 1)));
            w.page_size = Some(size);
            w.writable = Some(writable);
            w.user = Some(user);
            w.executable = Some(!nx);
            return w;
        }
        if (level == 3 || level == 4) && entry & PS != 0 {
            w.stopped = Some(format!("reserved bit PS set in the {}", LEVEL_NAMES[level]));
            return w;
        }
        table = entry & ADDR_MASK;
    }
    unreachable!("the PTE level always ends the walk")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guest RAM of a few pages, page tables written into it by hand.
    struct Ram(Vec<u8>);

    impl Ram {
        fn new(pages: usize) -> Self {
            Ram(vec![0; pages * 4096])
        }
        fn set(&mut self, gpa: u64, v: u64) {
            self.0[gpa as usize..gpa as usize + 8].copy_from_slice(&v.to_le_bytes());
        }
    }

    impl PhysRead for Ram {
        fn read_u64(&self, gpa: u64) -> Option<u64> {
            let b = self.0.get(gpa as usize..gpa as usize + 8)?;
            Some(u64::from_le_bytes(b.try_into().unwrap()))
        }
    }

    fn long_mode(cr3: u64) -> PagingRegs {
        PagingRegs {
            cr0: CR0_PG | 1,
            cr3,
            cr4: CR4_PAE,
            efer: EFER_LMA | EFER_NXE | (1 << 8),
        }
    }

    const A: u64 = 1 << 5;
    const D: u64 = 1 << 6;

    /// PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000, PT at 0x4000.
    fn tables() -> Ram {
        let mut ram = Ram::new(8);
        ram.set(0x1000, 0x2000 | P | RW | US | A);
        ram.set(0x1000 + 511 * 8, 0x2000 | P | RW | A); // the same PDPT for the top half
        ram.set(0x2000, 0x3000 | P | RW | US);
        // PDPTE 3: a 1 GiB page at 0xc000_0000.
        ram.set(0x2000 + 3 * 8, 0xc000_0000 | P | RW | PS | A | D | (1 << 8));
        ram.set(0x3000, 0x4000 | P | US);
        // PDE 2: a 2 MiB page at 0x40_0000, no-execute.
        ram.set(0x3000 + 2 * 8, 0x40_0000 | P | RW | US | PS | NX);
        // PTE 5: 4 KiB page at 0x7000, PAT bit set; PTE 6 not present.
        ram.set(0x4000 + 5 * 8, 0x7000 | P | RW | US | PS | A);
        ram
    }

    #[test]
    fn a_4k_page_through_four_levels() {
        let ram = tables();
        let w = walk(&ram, long_mode(0x1000 | 0x18), 0x5123);
        assert_eq!(w.paging, "4-level");
        assert_eq!(w.gpa, Some(0x7123));
        assert_eq!(w.page_size, Some(4096));
        assert_eq!(
            w.levels.iter().map(|l| l.level).collect::<Vec<_>>(),
            ["PML4E", "PDPTE", "PDE", "PTE"]
        );
        assert_eq!(w.levels[3].index, 5);
        assert_eq!(w.levels[3].entry_gpa, 0x4028);
        assert_eq!(w.levels[3].flags, ["P", "RW", "US", "A", "PAT"]);
        // The PDE is read-only: the page is too, whatever the PTE says.
        assert_eq!(
            (w.writable, w.user, w.executable),
            (Some(false), Some(true), Some(true))
        );
        assert_eq!(w.stopped, None);
    }

    #[test]
    fn large_pages_end_the_walk() {
        let ram = tables();
        let w = walk(&ram, long_mode(0x1000), 0x4f_fff8);
        assert_eq!(w.gpa, Some(0x4f_fff8));
        assert_eq!(w.page_size, Some(2 << 20));
        assert_eq!(w.levels.len(), 3);
        assert_eq!(w.levels[2].flags, ["P", "RW", "US", "PS", "NX"]);
        assert_eq!(w.executable, Some(false));
        // NX does not count without EFER.NXE.
        let mut regs = long_mode(0x1000);
        regs.efer &= !EFER_NXE;
        assert_eq!(walk(&ram, regs, 0x40_0000).executable, Some(true));

        let gva = 0xffff_ff80_0000_0000 | (3 << 30) | 0x1234_5678;
        let w = walk(&ram, long_mode(0x1000), gva);
        assert_eq!(w.gpa, Some(0xc000_0000 | 0x1234_5678));
        assert_eq!(w.page_size, Some(1 << 30));
        assert_eq!(w.levels[0].index, 511);
        assert_eq!(w.levels[1].flags, ["P", "RW", "A", "D", "PS", "G"]);
        // The top-half PML4E lacks US: a supervisor page.
        assert_eq!(w.user, Some(false));
    }

    #[test]
    fn not_present_and_non_canonical_are_plain_answers() {
        let ram = tables();
        let w = walk(&ram, long_mode(0x1000), 0x6000);
        assert_eq!(w.gpa, None);
        assert_eq!(w.stopped.as_deref(), Some("not present at PTE"));
        assert_eq!(w.levels.len(), 4);
        assert_eq!(w.levels[3].entry, Some(0));
        let w = walk(&ram, long_mode(0x1000), 1 << 39);
        assert_eq!(w.stopped.as_deref(), Some("not present at PML4E"));
        assert_eq!(w.levels.len(), 1);
        let w = walk(&ram, long_mode(0x1000), 0x0000_8000_0000_0000);
        assert!(w.stopped.unwrap().starts_with("non-canonical"));
        assert!(w.levels.is_empty());
        // Canonical under LA57, where bits 56:48 may differ from 47.
        let mut regs = long_mode(0x1000);
        regs.cr4 |= CR4_LA57;
        let w = walk(&ram, regs, 0x0000_8000_0000_0000);
        assert_eq!(w.paging, "5-level");
        assert_eq!(w.levels[0].level, "PML5E");
        assert_eq!((w.levels[0].index, w.levels[1].index), (0, 256));
        assert_eq!(w.stopped.as_deref(), Some("not present at PML4E"));
    }

    #[test]
    fn five_levels_and_tables_outside_ram() {
        let mut ram = tables();
        // PML5 at 0x5000 whose entry 0 points at the PML4.
        ram.set(0x5000, 0x1000 | P | RW | US);
        let mut regs = long_mode(0x5000);
        regs.cr4 |= CR4_LA57;
        let w = walk(&ram, regs, 0x5010);
        assert_eq!(w.gpa, Some(0x7010));
        assert_eq!(w.levels.len(), 5);
        // A PDE pointing at a page table past the end of RAM.
        ram.set(0x3000 + 3 * 8, 0x10_0000_0000 | P | RW);
        let w = walk(&ram, long_mode(0x1000), 3 << 21);
        assert_eq!(w.levels[3].entry, None);
        assert!(w.stopped.unwrap().contains("outside guest RAM"));
        // PS in a PML4E is reserved.
        ram.set(0x1000 + 8, 0x2000 | P | PS);
        let w = walk(&ram, long_mode(0x1000), 1 << 39);
        assert!(w.stopped.unwrap().contains("reserved bit PS"));
    }

    #[test]
    fn paging_off_and_legacy_modes() {
        let ram = tables();
        let w = walk(&ram, PagingRegs::default(), 0x1234);
        assert_eq!((w.paging, w.gpa), ("off", Some(0x1234)));
        let regs = PagingRegs {
            cr0: CR0_PG | 1,
            cr3: 0x1000,
            cr4: CR4_PAE,
            efer: 0,
        };
        let w = walk(&ram, regs, 0x1234);
        assert_eq!((w.paging, w.gpa), ("PAE", None));
        let v = serde_json::to_value(walk(&ram, long_mode(0x1000), 0x5123)).unwrap();
        assert_eq!(v["gpa"], "0x7123");
        assert_eq!(v["levels"][0]["entry"], "0x2027");
    }
}
