//! qcow2 images through the `imago` crate (sync build).
//!
//! Before imago sees the file, [`Qcow2File::open`] reads the header itself and refuses what it cannot serve
//! with a clear [`DiskError`]: encryption, unknown versions, cluster sizes outside 512 B..2 MiB, and the
//! incompatible features imago lacks (dirty/lazy refcounts, corrupt, external data file, zstd compression,
//! extended L2). imago then does the format work: L1/L2 lookups, allocation on write, zero clusters,
//! zlib-compressed clusters (read, and copy-on-write from them), refcounts.
//!
//! Backing files are opened by imago through [`ReadOnlyGate`], which only ever opens them read-only, never
//! opens external data files, and bounds the chain length. Relative backing names are resolved as qemu
//! does: against the directory of the image that names them (imago's `File::resolve_relative_path`, which
//! needs the image's path, so the top image is handed to imago together with its path).

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use imago::file::File as ImagoFile;
use imago::format::gate::ImplicitOpenGate;
use imago::io_buffers::{IoVector, IoVectorMut};
use imago::qcow2::Qcow2;
use imago::{FormatAccess, FormatDriverBuilder, Storage, StorageOpenOptions};
use vm_memory::VolatileSlice;

use super::{check_range, open_locked, total_len, DiskError, DiskFile, Result, QCOW2_MAGIC};

/// Longest backing chain we follow (also stops loops like a -> b -> a).
const MAX_CHAIN_DEPTH: u32 = 32;

/// qcow2 incompatible feature bits (header offset 72, v3 only).
const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;

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

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
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

/// Checks that every cluster of the file is covered by an existing refcount block.
///
/// A valid image always satisfies this (qemu keeps refcounts for every cluster it writes). A corrupted one
/// that does not can send imago's allocator into unbounded recursion (it keeps allocating a cluster for the
/// missing refcount block inside the range that block itself would describe), so writable opens refuse it.
fn check_refcount_coverage(path: &Path, file: &std::fs::File, hdr: &[u8; 104]) -> Result<()> {
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
    let mut entries = vec![0u8; (needed * 8) as usize];
    let end = rt_offset.checked_add(entries.len() as u64);
    if end.is_none_or(|e| e > file_size) {
        return Err(corrupt("refcount table beyond the end of the file".into()));
    }
    file.read_exact_at(&mut entries, rt_offset)
        .map_err(DiskError::Io)?;
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

/// Opens implicit dependencies (backing images) read-only only, and nothing else.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOnlyGate {
    depth: u32,
}

impl ImplicitOpenGate<ImagoFile> for ReadOnlyGate {
    fn open_format<F: FormatDriverBuilder<ImagoFile>>(
        &mut self,
        builder: F,
    ) -> io::Result<FormatAccess<ImagoFile>> {
        if builder.get_writable() {
            return Err(io::Error::other(
                "refusing to open an implicitly referenced image for writing",
            ));
        }
        if self.depth >= MAX_CHAIN_DEPTH {
            return Err(io::Error::other(format!(
                "backing chain longer than {MAX_CHAIN_DEPTH} images (loop?)"
            )));
        }
        let inner = builder.open(ReadOnlyGate {
            depth: self.depth + 1,
        })?;
        Ok(FormatAccess::new(inner))
    }

    fn open_storage(&mut self, opts: StorageOpenOptions) -> io::Result<ImagoFile> {
        if opts.get_writable() {
            return Err(io::Error::other(
                "refusing to open an implicitly referenced file for writing (external data files are not supported)",
            ));
        }
        ImagoFile::open(opts)
    }
}

/// A qcow2 disk image and its backing chain.
pub struct Qcow2File {
    access: FormatAccess<ImagoFile>,
    size: u64,
    read_only: bool,
    path: PathBuf,
}

impl std::fmt::Debug for Qcow2File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2File")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("read_only", &self.read_only)
            .finish()
    }
}

impl Qcow2File {
    /// Opens `path` and its backing chain; a writable image is locked exclusively.
    pub fn open(path: &Path, read_only: bool) -> Result<Self> {
        let file = open_locked(path, read_only)?;
        let mut hdr = [0u8; 104];
        let n = read_full(&file, &mut hdr).map_err(DiskError::Io)?;
        let info = check_header(path, &hdr[..n])?;
        if !read_only {
            check_refcount_coverage(path, &file, &hdr)?;
        }
        let opts = StorageOpenOptions::new().filename(path).write(!read_only);
        let qcow2_err = |source| DiskError::Qcow2Open {
            path: path.to_path_buf(),
            source,
        };
        let storage = ImagoFile::from_open_file(file, opts.clone()).map_err(qcow2_err)?;
        let image = Qcow2::<ImagoFile>::builder(storage)
            .write(!read_only)
            .storage_open_options(opts)
            .open(ReadOnlyGate::default())
            .map_err(qcow2_err)?;
        let access = FormatAccess::new(image);
        let size = access.size();
        if size != info.size {
            log::warn!(
                "qcow2 {path:?}: header size {} but imago reports {size}",
                info.size
            );
        }
        Ok(Self {
            access,
            size,
            read_only,
            path: path.to_path_buf(),
        })
    }

    /// Writes real zero bytes over a range (for v2 images, which have no zero clusters).
    fn fill_zeroes(&mut self, offset: u64, len: u64) -> Result<()> {
        const CHUNK: u64 = 1 << 20;
        let zeroes = vec![0u8; CHUNK.min(len) as usize];
        let mut pos = offset;
        while pos < offset + len {
            let n = (offset + len - pos).min(CHUNK) as usize;
            self.write_at(&zeroes[..n], pos)?;
            pos += n as u64;
        }
        Ok(())
    }

    fn writable(&self) -> Result<()> {
        if self.read_only {
            Err(DiskError::ReadOnly)
        } else {
            Ok(())
        }
    }
}

/// Reads as much of `buf` as the file has from offset 0.
fn read_full(file: &std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

impl DiskFile for Qcow2File {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_vectored(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> Result<()> {
        check_range(offset, total_len(bufs), self.size)?;
        // imago requires every buffer of a vector to be non-empty.
        let bufs: Vec<&VolatileSlice<'_>> = bufs.iter().filter(|b| !b.is_empty()).collect();
        if bufs.is_empty() {
            return Ok(());
        }
        let (iov, _guard) = IoVectorMut::from_volatile_slice(bufs.iter().copied());
        self.access.readv(iov, offset).map_err(DiskError::Io)
    }

    fn write_vectored(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> Result<()> {
        self.writable()?;
        check_range(offset, total_len(bufs), self.size)?;
        let bufs: Vec<&VolatileSlice<'_>> = bufs.iter().filter(|b| !b.is_empty()).collect();
        if bufs.is_empty() {
            return Ok(());
        }
        let (iov, _guard) = IoVector::from_volatile_slice(bufs.iter().copied());
        self.access.writev(iov, offset).map_err(DiskError::Io)
    }

    fn flush(&mut self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        // Write back cached metadata (L2 tables, refcount blocks), then fsync the file.
        self.access.flush().map_err(DiskError::Io)?;
        self.access.sync().map_err(DiskError::Io)
    }

    fn supports_discard(&self) -> bool {
        !self.read_only
    }

    fn discard(&mut self, offset: u64, len: u64) -> Result<()> {
        self.writable()?;
        check_range(offset, len, self.size)?;
        if len == 0 {
            return Ok(());
        }
        match self.access.discard_to_zero(offset, len) {
            Ok(()) => Ok(()),
            // v2 images have no zero clusters: discarded data must still read back as zeroes.
            Err(e) if e.kind() == io::ErrorKind::Unsupported => self.fill_zeroes(offset, len),
            Err(e) => Err(DiskError::Io(e)),
        }
    }

    fn supports_write_zeroes(&self) -> bool {
        !self.read_only
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> Result<()> {
        self.writable()?;
        check_range(offset, len, self.size)?;
        if len == 0 {
            return Ok(());
        }
        let res = if unmap {
            self.access.discard_to_zero(offset, len)
        } else {
            self.access.write_zeroes(offset, len)
        };
        match res {
            Ok(()) => Ok(()),
            // v2 images have no zero clusters: write real zeroes.
            Err(e) if e.kind() == io::ErrorKind::Unsupported => self.fill_zeroes(offset, len),
            Err(e) => Err(DiskError::Io(e)),
        }
    }
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
}
