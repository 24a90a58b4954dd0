//! Segment descriptors for the boot GDT, and their translation into KVM's segment registers.

use kvm_bindings::kvm_segment;

/// Flat 64-bit code: present, DPL 0, execute/read, L=1, G=1.
pub const CODE64: (u16, u32, u32) = (0xa09b, 0, 0xfffff);
/// Flat 32-bit code: present, DPL 0, execute/read, D=1, G=1.
pub const CODE32: (u16, u32, u32) = (0xc09b, 0, 0xfffff);
/// Flat data: present, DPL 0, read/write, D=1, G=1.
pub const DATA: (u16, u32, u32) = (0xc093, 0, 0xfffff);
/// 32/64-bit TSS, busy, byte granular, base 0, 104 bytes.
pub const TSS: (u16, u32, u32) = (0x008b, 0, 0x67);

/// Selectors into the boot GDT built by [`boot_gdt`].
pub const CODE_SELECTOR: u16 = 0x08;
pub const DATA_SELECTOR: u16 = 0x10;
pub const TSS_SELECTOR: u16 = 0x18;

/// Encodes a descriptor from (flags, base, limit); `flags` holds the access byte in bits 0-7 and the
/// G/DB/L/AVL nibble in bits 12-15, as the descriptor itself lays them out.
pub fn descriptor(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (u64::from(flags), u64::from(base), u64::from(limit));
    ((base & 0xff00_0000) << (56 - 24))
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << (48 - 16))
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// The boot GDT: null, code, data, TSS. `code` is [`CODE64`] or [`CODE32`].
pub fn boot_gdt(code: (u16, u32, u32)) -> [u64; 4] {
    [
        0,
        descriptor(code.0, code.1, code.2),
        descriptor(DATA.0, DATA.1, DATA.2),
        descriptor(TSS.0, TSS.1, TSS.2),
    ]
}

/// The KVM segment register for the descriptor `entry` loaded with `selector`.
pub fn segment(entry: u64, selector: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    // The limit KVM wants is in bytes: a page-granular limit covers whole pages.
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base,
        limit,
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_usual_flat_descriptors() {
        assert_eq!(descriptor(CODE64.0, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(descriptor(CODE32.0, 0, 0xfffff), 0x00cf_9b00_0000_ffff);
        assert_eq!(descriptor(DATA.0, 0, 0xfffff), 0x00cf_9300_0000_ffff);
        assert_eq!(descriptor(0x8b, 0x1234_5678, 0x67), 0x1200_8b34_5678_0067);
    }

    #[test]
    fn segments_round_trip() {
        let cs = segment(descriptor(CODE64.0, 0, 0xfffff), CODE_SELECTOR);
        assert_eq!(
            (cs.l, cs.db, cs.g, cs.s, cs.type_, cs.present),
            (1, 0, 1, 1, 0xb, 1)
        );
        assert_eq!(cs.limit, 0xffff_ffff);
        let tss = segment(descriptor(0x8b, 0x1234_5678, 0x67), TSS_SELECTOR);
        assert_eq!(
            (tss.base, tss.limit, tss.s, tss.type_),
            (0x1234_5678, 0x67, 0, 0xb)
        );
        assert_eq!(segment(0, 0).unusable, 1);
    }
}
