//! Checks of a qcow2 image's header and metadata tables, made before imago sees the image (for the top
//! image and for every qcow2 image of its backing chain).
//!
//! imago reads past the end of a file as zeroes, and so does QEMU: an L1 table, an L2 table or a refcount
//! table that lies past the end of a damaged image would read as an empty table and the disk as zeroes.
//! Here such metadata refuses the open with a [`DiskError::Unsupported`] naming the table ("corrupt
//! metadata: ..."); data clusters past the end of the file are caught per request in `qcow2.rs`. The size
//! limits are QEMU's (`qcow2_do_open`), with its messages: a refcount table over 8 MiB ("Reference count
//! table too large"), an L1 table over 32 MiB ("Active L1 table too large"), a virtual size whose L1 table
//! would need more than `INT_MAX` entries ("Image is too big"), an L1 table too short for the virtual size
//! ("L1 table is too small"), tables whose end overflows ("Active L1 table offset invalid").

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{DiskError, Result, QCOW2_MAGIC};

/// qcow2 incompatible feature bits (header offset 72, v3 only).
const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;

/// QEMU's `QCOW_MAX_L1_SIZE`: 32 MiB of L1 entries.
const MAX_L1_BYTES: u64 = 32 << 20;
/// QEMU's `QCOW_MAX_REFTABLE_SIZE`: 8 MiB of refcount table.
const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// Host offset bits of an L1 entry (bits 9..=55).
const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

/// The parts of a qcow2 header we check before opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderInfo {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual disk size.
    pub size: u64,
    /// Whether a backing file is named.
    pub has_backing: bool,
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    (u64::from(be32(b, at)) << 32) | u64::from(be32(b, at + 4))
}

/// Checks the fixed part of a qcow2 header (the first 104 bytes; v2 headers use the first 72).
pub fn check_header(path: &Path, hdr: &[u8]) -> Result<HeaderInfo> {
    let unsupported = |reason: String| DiskError::Unsupported {
        path: path.to_path_buf(),
        reason,
    };
    if hdr.len() < 72 || hdr[..4] != QCOW2_MAGIC {
        return Err(unsupported("no qcow2 magic".into()));
    }
    let version = be32(hdr, 4);
    if version != 2 && version != 3 {
        return Err(unsupported(format!("qcow2 version {version}")));
    }
    let cluster_bits = be32(hdr, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(unsupported(format!(
            "cluster_bits {cluster_bits} (cluster sizes 512 B to 2 MiB are supported)"
        )));
    }
    let method = be32(hdr, 32);
    if method != 0 {
        return Err(DiskError::Encrypted {
            path: path.to_path_buf(),
            method,
        });
    }
    if version == 3 {
        if hdr.len() < 104 {
            return Err(unsupported("truncated v3 header".into()));
        }
        let incompat = be64(hdr, 72);
        let named = [
            (INCOMPAT_DIRTY, "dirty bit set (lazy refcounts, not closed cleanly); repair with `qemu-img check -r all`"),
            (INCOMPAT_CORRUPT, "image marked corrupt"),
            (INCOMPAT_DATA_FILE, "external data file"),
            (INCOMPAT_COMPRESSION, "compression type other than zlib"),
            (INCOMPAT_EXTL2, "extended L2 entries (subclusters)"),
        ];
        for (bit, what) in named {
            if incompat & bit != 0 {
                return Err(unsupported(format!("incompatible feature: {what}")));
            }
        }
        let unknown = incompat & !0x1f;
        if unknown != 0 {
            return Err(unsupported(format!(
                "unknown incompatible features {unknown:#x}"
            )));
        }
    }
    Ok(HeaderInfo {
        version,
        cluster_bits,
        size: be64(hdr, 24),
        has_backing: be64(hdr, 8) != 0,
    })
}

/// Reads `len` bytes at `offset` (the caller has checked that they lie inside the file).
fn read_table(file: &File, offset: u64, len: u64) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset)
        .map_err(DiskError::Io)?;
    Ok(buf)
}

/// Checks the L1 and refcount tables of an image whose header passed [`check_header`]: QEMU's size
/// limits, then that the tables and every L2 table and refcount block they point to lie inside the file.
/// Reads the two tables (at most 32 MiB and 8 MiB, the limits; a few KiB for usual images).
pub fn check_tables(path: &Path, file: &File, hdr: &[u8; 104]) -> Result<()> {
    let corrupt = |reason: String| DiskError::Unsupported {
        path: path.to_path_buf(),
        reason: format!("corrupt metadata: {reason}"),
    };
    let file_size = file.metadata().map_err(DiskError::Io)?.len();
    let cluster_bits = be32(hdr, 20);
    let cluster_size = 1u64 << cluster_bits;
    let size = be64(hdr, 24);

    // The refcount table (QEMU checks it first).
    let rt_offset = be64(hdr, 48);
    let rt_bytes = u64::from(be32(hdr, 56)) * cluster_size;
    if rt_bytes > MAX_REFTABLE_BYTES {
        return Err(corrupt("Reference count table too large".into()));
    }
    let rt_end = rt_offset
        .checked_add(rt_bytes)
        .filter(|&e| e <= i64::MAX as u64 && rt_offset.is_multiple_of(cluster_size));
    let Some(rt_end) = rt_end else {
        return Err(corrupt("Reference count table offset invalid".into()));
    };
    if rt_end > file_size {
        return Err(corrupt(format!(
            "refcount table at {rt_offset:#x}+{rt_bytes:#x} beyond the end of the file ({file_size:#x})"
        )));
    }

    // The L1 table.
    let l1_entries = u64::from(be32(hdr, 36));
    let l1_offset = be64(hdr, 40);
    if l1_entries * 8 > MAX_L1_BYTES {
        return Err(corrupt("Active L1 table too large".into()));
    }
    let l1_end = l1_offset
        .checked_add(l1_entries * 8)
        .filter(|&e| e <= i64::MAX as u64 && l1_offset.is_multiple_of(cluster_size));
    let Some(l1_end) = l1_end else {
        return Err(corrupt("Active L1 table offset invalid".into()));
    };
    // Bytes one L1 entry covers: an L2 table of cluster_size / 8 entries of one cluster each.
    let l1_shift = 2 * cluster_bits - 3;
    let needed = size.div_ceil(1u64 << l1_shift);
    if needed > i32::MAX as u64 {
        return Err(corrupt("Image is too big".into()));
    }
    if l1_entries < needed {
        return Err(corrupt("L1 table is too small".into()));
    }
    if l1_entries > 0 && l1_end > file_size {
        return Err(corrupt(format!(
            "L1 table at {l1_offset:#x}+{:#x} beyond the end of the file ({file_size:#x})",
            l1_entries * 8
        )));
    }

    // What the tables point to: L2 tables and refcount blocks, one cluster each.
    let tables = [
        ("L2 table", "L1", l1_offset, l1_entries * 8, L1_OFFSET_MASK),
        (
            "refcount block",
            "refcount table",
            rt_offset,
            rt_bytes,
            !0x1ff,
        ),
    ];
    for (what, table, offset, len, mask) in tables {
        let entries = read_table(file, offset, len)?;
        // Tables are mostly zeroes (a 2 MiB-cluster refcount table is 2 MiB of them): skip empty runs of
        // 64 entries with one comparison.
        for (run, chunk) in entries.chunks(512).enumerate() {
            if chunk.iter().fold(0u8, |a, &b| a | b) == 0 {
                continue;
            }
            for (j, e) in chunk.chunks_exact(8).enumerate() {
                let i = run * 64 + j;
                let at = be64(e, 0) & mask;
                if at == 0 {
                    continue;
                }
                if !at.is_multiple_of(cluster_size) {
                    return Err(corrupt(format!(
                        "{what} offset {at:#x} unaligned ({table} index {i:#x})"
                    )));
                }
                if at.saturating_add(cluster_size) > file_size {
                    return Err(corrupt(format!(
                        "{what} at {at:#x} ({table} index {i:#x}) beyond the end of the file ({file_size:#x})"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Checks that every cluster of the file is covered by an existing refcount block.
///
/// A valid image always satisfies this (qemu keeps refcounts for every cluster it writes). A corrupted one
/// that does not can send imago's allocator into unbounded recursion (it keeps allocating a cluster for the
/// missing refcount block inside the range that block itself would describe), so writable opens refuse it.
pub fn check_refcount_coverage(path: &Path, file: &File, hdr: &[u8; 104]) -> Result<()> {
    let corrupt = |reason: String| DiskError::Unsupported {
        path: path.to_path_buf(),
        reason: format!("corrupt refcount metadata: {reason}"),
    };
    let cluster_bits = be32(hdr, 20);
    let cluster_size = 1u64 << cluster_bits;
    let refcount_order = if be32(hdr, 4) >= 3 { be32(hdr, 96) } else { 4 };
    if refcount_order > 6 {
        return Err(corrupt(format!("refcount_order {refcount_order}")));
    }
    let rt_offset = be64(hdr, 48);
    let rt_clusters = u64::from(be32(hdr, 56));
    let file_size = file.metadata().map_err(DiskError::Io)?.len();
    if !rt_offset.is_multiple_of(cluster_size) || rt_clusters == 0 {
        return Err(corrupt("bad refcount table location".into()));
    }
    // Refcounts per refcount block: cluster_size * 8 / (1 << refcount_order).
    let per_block_bits = cluster_bits + 3 - refcount_order;
    let file_clusters = file_size.div_ceil(cluster_size);
    let needed = file_clusters.div_ceil(1u64 << per_block_bits).max(1);
    if needed > rt_clusters * cluster_size / 8 {
        return Err(corrupt("refcount table does not cover the file".into()));
    }
    let end = rt_offset.checked_add(needed * 8);
    if end.is_none_or(|e| e > file_size) {
        return Err(corrupt("refcount table beyond the end of the file".into()));
    }
    let entries = read_table(file, rt_offset, needed * 8)?;
    for (i, e) in entries.chunks_exact(8).enumerate() {
        let block = be64(e, 0) & !0x1ff;
        if block == 0 || !block.is_multiple_of(cluster_size) || block >= file_size {
            return Err(corrupt(format!(
                "refcount block {i} missing or invalid ({block:#x})"
            )));
        }
    }
    Ok(())
}

/// Runs every check on an open qcow2 file: the header, the tables, and for a writable open the refcount
/// coverage. Returns the header's facts.
pub fn check_image(path: &Path, file: &File, writable: bool) -> Result<HeaderInfo> {
    let mut hdr = [0u8; 104];
    let n = read_full(file, &mut hdr).map_err(DiskError::Io)?;
    let info = check_header(path, &hdr[..n])?;
    if info.version == 3 {
        check_extensions(path, file, &hdr)?;
    }
    check_tables(path, file, &hdr)?;
    if writable {
        check_refcount_coverage(path, file, &hdr)?;
    }
    Ok(info)
}

/// qcow2's feature name table header extension: entries of 48 bytes.
const EXT_FEATURE_NAMES: u32 = 0x6803_f857;

/// Walks the v3 header extensions (after `header_length`, inside the first cluster) and refuses a feature
/// name table whose length is not a multiple of its 48-byte entries: imago 0.2.6 panics on a short last
/// entry (`feat[2..]` on 1 byte; found by the `qcow2_image` fuzz target, reproducer kept in
/// `devices/fuzz/seeds/qcow2_image/crash-feature-name-table`). Other malformations imago reports itself.
fn check_extensions(path: &Path, file: &File, hdr: &[u8; 104]) -> Result<()> {
    let cluster_size = 1u64 << be32(hdr, 20);
    let mut at = u64::from(be32(hdr, 100));
    let mut ext = [0u8; 8];
    // At most a cluster's worth of 8-byte extension headers.
    for _ in 0..cluster_size / 8 {
        if at + 8 > cluster_size || file.read_exact_at(&mut ext, at).is_err() {
            break;
        }
        let (kind, len) = (be32(&ext, 0), be32(&ext, 4));
        if kind == 0 {
            break;
        }
        if kind == EXT_FEATURE_NAMES && len % 48 != 0 {
            return Err(DiskError::Unsupported {
                path: path.to_path_buf(),
                reason: format!(
                    "corrupt metadata: feature name table of {len} bytes (not a multiple of 48)"
                ),
            });
        }
        at += 8 + u64::from(len).next_multiple_of(8);
    }
    Ok(())
}

/// Reads as much of `buf` as the file has from offset 0.
fn read_full(file: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3_header(cluster_bits: u32, crypt: u32, incompat: u64) -> Vec<u8> {
        let mut h = vec![0u8; 104];
        h[..4].copy_from_slice(&QCOW2_MAGIC);
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&cluster_bits.to_be_bytes());
        h[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        h[32..36].copy_from_slice(&crypt.to_be_bytes());
        h[72..80].copy_from_slice(&incompat.to_be_bytes());
        h
    }

    #[test]
    fn header_checks_give_clear_errors() {
        let p = Path::new("x.qcow2");
        let ok = check_header(p, &v3_header(16, 0, 0)).unwrap();
        assert_eq!((ok.version, ok.cluster_bits, ok.size), (3, 16, 1 << 30));
        assert!(matches!(
            check_header(p, &v3_header(16, 2, 0)),
            Err(DiskError::Encrypted { method: 2, .. })
        ));
        for bits in [8, 22, 40] {
            assert!(matches!(
                check_header(p, &v3_header(bits, 0, 0)),
                Err(DiskError::Unsupported { .. })
            ));
        }
        for f in [1u64, 2, 4, 8, 16, 1 << 40] {
            let e = check_header(p, &v3_header(16, 0, f)).unwrap_err();
            assert!(matches!(e, DiskError::Unsupported { .. }), "{e}");
        }
        let mut v4 = v3_header(16, 0, 0);
        v4[7] = 4;
        assert!(check_header(p, &v4).is_err());
        assert!(check_header(p, &v3_header(16, 0, 0)[..50]).is_err());
    }

    /// A v3 image file with 4 KiB clusters: header in cluster 0, refcount table in 1, refcount block in 2,
    /// L1 table in 3 (entries as given), `clusters` clusters long.
    fn image(size: u64, l1: &[u64], clusters: u64) -> (std::path::PathBuf, File, [u8; 104]) {
        let mut img = vec![0u8; 0x4000.max(clusters as usize * 4096)];
        let h = v3_header(12, 0, 0);
        img[..104].copy_from_slice(&h);
        img[24..32].copy_from_slice(&size.to_be_bytes());
        img[36..40].copy_from_slice(&(l1.len() as u32).to_be_bytes());
        img[40..48].copy_from_slice(&0x3000u64.to_be_bytes());
        img[48..56].copy_from_slice(&0x1000u64.to_be_bytes());
        img[56..60].copy_from_slice(&1u32.to_be_bytes());
        img[96..100].copy_from_slice(&4u32.to_be_bytes());
        img[100..104].copy_from_slice(&104u32.to_be_bytes());
        img[0x1000..0x1008].copy_from_slice(&0x2000u64.to_be_bytes());
        for (i, e) in l1.iter().enumerate() {
            img[0x3000 + 8 * i..0x3008 + 8 * i].copy_from_slice(&e.to_be_bytes());
        }
        img.truncate(clusters as usize * 4096);
        let path = crate::disk::tests::temp_path(&format!("meta-{size}-{}-{clusters}", l1.len()));
        std::fs::write(&path, &img).unwrap();
        let file = File::open(&path).unwrap();
        let mut hdr = [0u8; 104];
        hdr.copy_from_slice(&img[..104]);
        (path, file, hdr)
    }

    #[test]
    fn tables_and_what_they_point_to_must_lie_in_the_file() {
        let p = Path::new("x.qcow2");
        // 4 KiB clusters: one L1 entry covers 2 MiB.
        let (_, f, h) = image(4 << 20, &[0, (1 << 63) | 0x4000], 5);
        check_tables(p, &f, &h).unwrap();
        let (_, f, h) = image(4 << 20, &[0, (1 << 63) | 0x5000], 5);
        let e = check_tables(p, &f, &h).unwrap_err().to_string();
        assert!(
            e.contains("L2 table at 0x5000 (L1 index 0x1) beyond the end"),
            "{e}"
        );
        // The L1 table itself cut off by the end of the file.
        let (_, f, h) = image(4 << 20, &[0, 0], 3);
        let e = check_tables(p, &f, &h).unwrap_err().to_string();
        assert!(e.contains("L1 table at 0x3000+0x10 beyond the end"), "{e}");
        // More virtual size than two L1 entries cover.
        let (_, f, h) = image((4 << 20) + 1, &[0, 0], 4);
        let e = check_tables(p, &f, &h).unwrap_err().to_string();
        assert!(e.contains("L1 table is too small"), "{e}");
        // 4 KiB clusters reach INT_MAX L1 entries at 2^31 * 2 MiB = 4 PiB.
        let (_, f, h) = image(1 << 52, &[0], 4);
        let e = check_tables(p, &f, &h).unwrap_err().to_string();
        assert!(e.contains("Image is too big"), "{e}");
    }
}
