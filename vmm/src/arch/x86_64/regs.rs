//! Boot-time vCPU state per boot protocol: general registers, segments and control registers, FPU, and the
//! identity page tables and GDT that 64-bit entry needs in guest memory.
//!
//! The register values are computed by pure functions (unit-tested); [`write_boot_tables`] puts the tables in
//! guest memory.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

use super::gdt;
use super::layout;
use devices::GuestMemoryMmap;

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// RFLAGS bit 1 is reserved and always set.
const RFLAGS_RESERVED: u64 = 1 << 1;

/// Page-table entry bits: present, writable, and (in a PD) a 2 MiB page.
const PTE_PRESENT_RW: u64 = 0b11;
const PDE_PS: u64 = 1 << 7;
/// Page directories the boot identity map uses: 4, covering 4 GiB with 2 MiB pages.
const BOOT_PDS: u64 = 4;

/// The protocol-specific part of entry: where to start and what the kernel expects in registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryState {
    /// PVH: 32-bit protected mode, paging off, EBX = physical address of `hvm_start_info`.
    Pvh { entry: u64, start_info: u64 },
    /// Linux 64-bit boot protocol: long mode, identity-mapped, RSI = physical address of the zero page.
    Linux64 { entry: u64, zero_page: u64 },
}

/// General registers at entry.
pub fn boot_regs(state: EntryState) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    };
    match state {
        EntryState::Pvh { entry, start_info } => {
            regs.rip = entry;
            regs.rbx = start_info;
        }
        EntryState::Linux64 { entry, zero_page } => {
            regs.rip = entry;
            regs.rsi = zero_page;
            regs.rsp = layout::BOOT_STACK_POINTER;
            regs.rbp = layout::BOOT_STACK_POINTER;
        }
    }
    regs
}

/// The boot GDT for a protocol.
pub fn boot_gdt_for(state: EntryState) -> [u64; 4] {
    match state {
        EntryState::Pvh { .. } => gdt::boot_gdt(gdt::CODE32),
        EntryState::Linux64 { .. } => gdt::boot_gdt(gdt::CODE64),
    }
}

/// Segment and control registers at entry, starting from the vCPU's current `sregs` (which keep KVM's
/// APIC base and the like).
pub fn boot_sregs(state: EntryState, mut sregs: kvm_sregs) -> kvm_sregs {
    let table = boot_gdt_for(state);
    let code = gdt::segment(table[1], gdt::CODE_SELECTOR);
    let data = gdt::segment(table[2], gdt::DATA_SELECTOR);
    sregs.gdt.base = layout::BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&table) - 1) as u16;
    sregs.idt.base = layout::BOOT_IDT_START;
    sregs.idt.limit = 0;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = gdt::segment(table[3], gdt::TSS_SELECTOR);
    match state {
        EntryState::Pvh { .. } => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
        EntryState::Linux64 { .. } => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            sregs.cr3 = layout::PML4_START;
            sregs.cr4 = X86_CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
        }
    }
    sregs
}

/// The x87/SSE state at entry: the values FNINIT and a reset MXCSR give.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// Writes the boot GDT, an empty IDT, and (for 64-bit entry) page tables identity-mapping the first 4 GiB
/// with 2 MiB pages.
pub fn write_boot_tables(
    mem: &GuestMemoryMmap,
    state: EntryState,
) -> Result<(), vm_memory::GuestMemoryError> {
    let table = boot_gdt_for(state);
    for (i, entry) in table.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(layout::BOOT_GDT_START + 8 * i as u64))?;
    }
    mem.write_obj(0u64, GuestAddress(layout::BOOT_IDT_START))?;
    if let EntryState::Linux64 { .. } = state {
        mem.write_obj(
            layout::PDPTE_START | PTE_PRESENT_RW,
            GuestAddress(layout::PML4_START),
        )?;
        for pd in 0..BOOT_PDS {
            let pd_addr = layout::PDE_START + pd * 0x1000;
            mem.write_obj(
                pd_addr | PTE_PRESENT_RW,
                GuestAddress(layout::PDPTE_START + pd * 8),
            )?;
            let entries: Vec<u8> = (0..512u64)
                .flat_map(|i| (((pd << 30) + (i << 21)) | PTE_PRESENT_RW | PDE_PS).to_le_bytes())
                .collect();
            mem.write_slice(&entries, GuestAddress(pd_addr))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvh_entry_is_flat_protected_mode() {
        let st = EntryState::Pvh {
            entry: 0x0010_0000,
            start_info: layout::BOOT_INFO_START,
        };
        let regs = boot_regs(st);
        assert_eq!((regs.rip, regs.rbx, regs.rflags), (0x100000, 0x6000, 2));
        let s = boot_sregs(st, kvm_sregs::default());
        assert_eq!(s.cr0 & X86_CR0_PG, 0);
        assert_eq!(s.cr0 & X86_CR0_PE, 1);
        assert_eq!(s.efer, 0);
        assert_eq!((s.cs.db, s.cs.l, s.cs.limit), (1, 0, 0xffff_ffff));
        assert_eq!(s.tr.type_, 0xb);
    }

    #[test]
    fn linux64_entry_is_long_mode() {
        let st = EntryState::Linux64 {
            entry: 0x200000,
            zero_page: layout::BOOT_INFO_START,
        };
        let regs = boot_regs(st);
        assert_eq!((regs.rip, regs.rsi), (0x200000, 0x6000));
        let s = boot_sregs(st, kvm_sregs::default());
        assert_eq!(s.efer, EFER_LME | EFER_LMA);
        assert_eq!(s.cr3, layout::PML4_START);
        assert_eq!((s.cs.l, s.cs.db), (1, 0));
    }

    #[test]
    fn page_tables_identity_map_4g() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let st = EntryState::Linux64 {
            entry: 0,
            zero_page: 0,
        };
        write_boot_tables(&mem, st).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(layout::PML4_START)).unwrap();
        assert_eq!(pml4, layout::PDPTE_START | 3);
        let pdpte3: u64 = mem
            .read_obj(GuestAddress(layout::PDPTE_START + 24))
            .unwrap();
        assert_eq!(pdpte3, (layout::PDE_START + 0x3000) | 3);
        // The last 2 MiB page of the 4th GiB maps the LAPIC's page.
        let last: u64 = mem
            .read_obj(GuestAddress(layout::PDE_START + 0x3000 + 511 * 8))
            .unwrap();
        assert_eq!(last & !0xfff, 0xffe0_0000);
    }
}
