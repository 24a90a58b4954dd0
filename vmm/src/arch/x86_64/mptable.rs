//! The Intel MultiProcessor Specification (v1.4) table, written into the EBDA when the guest has more than
//! one vCPU, so that a kernel without ACPI finds its processors, the IOAPIC and the interrupt routing.
//!
//! Written by hand: it is a few fixed-layout records, and no maintained crate produces it.

use vm_memory::{Bytes, GuestAddress};

use super::layout;
use devices::GuestMemoryMmap;

const SPEC_REV: u8 = 4;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
/// Processor signature (family 6) and feature flags (FPU, APIC) for the processor entries.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
const ISA_BUS_ID: u8 = 0;
/// Bytes available in the EBDA for the table.
const EBDA_SIZE: usize = (layout::LOW_RAM_END - layout::EBDA_START) as usize;

/// The table does not fit.
#[derive(Debug, thiserror::Error)]
pub enum MpTableError {
    #[error("an MP table for {0} vCPUs does not fit in the EBDA")]
    TooManyCpus(u8),
    #[error("cannot write the MP table into guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, b| acc.wrapping_add(*b))
        .wrapping_neg()
}

/// Builds the floating pointer followed by the configuration table, for placement at `base`.
pub fn build(base: u64, cpu_count: u8) -> Result<Vec<u8>, MpTableError> {
    let ioapic_id = cpu_count;
    let mut entries: Vec<u8> = Vec::new();
    for cpu in 0..cpu_count {
        entries.extend([ENTRY_PROCESSOR, cpu, APIC_VERSION]);
        entries.push(CPU_ENABLED | if cpu == 0 { CPU_BOOTSTRAP } else { 0 });
        entries.extend(CPU_SIGNATURE.to_le_bytes());
        entries.extend(CPU_FEATURES.to_le_bytes());
        entries.extend([0u8; 8]);
    }
    entries.extend([ENTRY_BUS, ISA_BUS_ID]);
    entries.extend(b"ISA   ");
    entries.extend([ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend((layout::IOAPIC_START as u32).to_le_bytes());
    for irq in 0..layout::IOAPIC_PINS as u8 {
        let kind = if irq == 0 {
            INT_TYPE_EXTINT
        } else {
            INT_TYPE_INT
        };
        entries.extend([
            ENTRY_IO_INTERRUPT,
            kind,
            0,
            0,
            ISA_BUS_ID,
            irq,
            ioapic_id,
            irq,
        ]);
    }
    entries.extend([
        ENTRY_LOCAL_INTERRUPT,
        INT_TYPE_EXTINT,
        0,
        0,
        ISA_BUS_ID,
        0,
        0xff,
        0,
    ]);
    entries.extend([
        ENTRY_LOCAL_INTERRUPT,
        INT_TYPE_NMI,
        0,
        0,
        ISA_BUS_ID,
        0,
        0xff,
        1,
    ]);
    let entry_count = u16::from(cpu_count) + 2 + layout::IOAPIC_PINS as u16 + 2;

    const FLOATING_LEN: usize = 16;
    const HEADER_LEN: usize = 44;
    let table_len = HEADER_LEN + entries.len();
    if FLOATING_LEN + table_len > EBDA_SIZE {
        return Err(MpTableError::TooManyCpus(cpu_count));
    }
    let table_addr = base + FLOATING_LEN as u64;

    let mut header = Vec::with_capacity(table_len);
    header.extend(b"PCMP");
    header.extend((table_len as u16).to_le_bytes());
    header.extend([SPEC_REV, 0]);
    header.extend(b"MICROVM ");
    header.extend(b"000000000000");
    header.extend([0u8; 4 + 2]); // OEM table pointer and size.
    header.extend(entry_count.to_le_bytes());
    header.extend((layout::LAPIC_START as u32).to_le_bytes());
    header.extend([0u8; 4]); // Extended table length, checksum, reserved.
    header.extend(entries);
    header[7] = checksum(&header);

    let mut out = Vec::with_capacity(FLOATING_LEN + table_len);
    out.extend(b"_MP_");
    out.extend((table_addr as u32).to_le_bytes());
    out.extend([1, SPEC_REV, 0, 0, 0, 0, 0, 0]);
    out[10] = checksum(&out);
    out.extend(header);
    Ok(out)
}

/// Writes the MP table for `cpu_count` vCPUs into the EBDA.
pub fn setup(mem: &GuestMemoryMmap, cpu_count: u8) -> Result<(), MpTableError> {
    let table = build(layout::EBDA_START, cpu_count)?;
    mem.write_slice(&table, GuestAddress(layout::EBDA_START))
        .map_err(MpTableError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn checksums_and_counts_are_right() {
        let t = build(layout::EBDA_START, 2).unwrap();
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(sum(&t[..16]), 0);
        let ptr = u32::from_le_bytes(t[4..8].try_into().unwrap()) as u64;
        assert_eq!(ptr, layout::EBDA_START + 16);
        let table = &t[16..];
        assert_eq!(&table[..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert_eq!(sum(table), 0);
        let count = u16::from_le_bytes([table[34], table[35]]);
        assert_eq!(count, 2 + 2 + 24 + 2);
        assert_eq!(len, 44 + 2 * 20 + 8 + 8 + 24 * 8 + 2 * 8);
        // The first processor is the bootstrap processor, the second is not.
        assert_eq!(table[44 + 3], CPU_ENABLED | CPU_BOOTSTRAP);
        assert_eq!(table[64 + 3], CPU_ENABLED);
    }

    #[test]
    fn refuses_tables_larger_than_the_ebda() {
        assert!(build(layout::EBDA_START, 36).is_ok());
        assert!(matches!(
            build(layout::EBDA_START, 200),
            Err(MpTableError::TooManyCpus(200))
        ));
    }
}
