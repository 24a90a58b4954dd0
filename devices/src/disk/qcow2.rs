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
//!
//! The data path for clusters that are already allocated in the top image and writable in place (qcow2's
//! COPIED flag: refcount 1) bypasses imago: a small direct-mapped cache ([`MapCache`]) maps guest clusters
//! to host offsets, filled from imago's own `get_mapping`, and such requests go to the image file with one
//! `preadv`/`pwritev` per host-contiguous run, straight between the file and guest memory. Everything else
//! (unallocated, zero, compressed and backing-file clusters, shared clusters, allocation, COW) goes through
//! imago's `readv`/`writev`. imago never moves a COPIED data cluster on a write (it writes into it in
//! place); only discard and write-zeroes change such mappings, and they empty the cache. Without the bypass
//! a 4 KiB request spent about 1,300 (read) to 1,900 (write) more user-space instructions in imago than the
//! raw backend (LRU hash lookup of the L2 table, `IoVector` construction and splitting, allocations), which
//! was most of the gap to raw at high IOPS. With [`CacheMode::Direct`] that data path uses a second,
//! `O_DIRECT` descriptor of the image whenever a request meets its alignment; imago's metadata (and data it
//! moves itself) stays in the page cache. The same runs are what [`DiskFile::plain_runs`] hands to the
//! asynchronous engine.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use imago::file::File as ImagoFile;
use imago::format::gate::ImplicitOpenGate;
use imago::io_buffers::{IoVector, IoVectorMut};
use imago::qcow2::Qcow2;
use imago::{FormatAccess, FormatDriverBuilder, Mapping, Storage, StorageOpenOptions};
use vm_memory::VolatileSlice;

use crate::virtio::LogLimiter;

use super::qcow2_meta::check_image;
pub use super::qcow2_meta::{check_header, HeaderInfo};
use super::raw::{push_iovecs, transfer_iovecs};
use super::{
    check_range, open_locked, total_len, CacheMode, DirectFile, DiskError, DiskFile, Result,
};

/// Longest backing chain we follow.
const MAX_CHAIN_DEPTH: u32 = 32;

/// What the gate saw while imago opened a backing chain: the images in it (canonical paths, the top one
/// first), and why it refused one, for a short error in place of imago's nested contexts.
#[derive(Debug, Default)]
struct ChainState {
    images: Vec<PathBuf>,
    refused: Option<DiskError>,
}

/// Opens implicit dependencies (backing images) read-only only, and nothing else; refuses a backing file
/// that is already in the chain (a loop: an image naming itself, or a -> b -> a) and qcow2 backing images
/// whose metadata fails the checks the top image passed.
#[derive(Debug, Clone, Default)]
pub struct ReadOnlyGate {
    depth: u32,
    chain: Arc<Mutex<ChainState>>,
}

impl ReadOnlyGate {
    fn state(&self) -> std::sync::MutexGuard<'_, ChainState> {
        self.chain.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers why an image was refused and turns it into imago's error type.
    fn refuse(&self, e: DiskError) -> io::Error {
        let err = io::Error::other(e.to_string());
        self.state().refused.get_or_insert(e);
        err
    }
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
            let path = builder.get_image_path().unwrap_or_default();
            return Err(self.refuse(DiskError::Unsupported {
                path,
                reason: format!("backing chain longer than {MAX_CHAIN_DEPTH} images"),
            }));
        }
        if F::FORMAT == imago::format::Format::Qcow2 {
            if let Some(path) = builder.get_image_path() {
                let checked = std::fs::File::open(&path)
                    .map_err(|source| DiskError::Open {
                        path: path.clone(),
                        source,
                    })
                    .and_then(|f| check_image(&path, &f, false));
                if let Err(e) = checked {
                    return Err(self.refuse(e));
                }
            }
        }
        let inner = builder.open(ReadOnlyGate {
            depth: self.depth + 1,
            chain: self.chain.clone(),
        })?;
        Ok(FormatAccess::new(inner))
    }

    fn open_storage(&mut self, opts: StorageOpenOptions) -> io::Result<ImagoFile> {
        if opts.get_writable() {
            return Err(io::Error::other(
                "refusing to open an implicitly referenced file for writing (external data files are not supported)",
            ));
        }
        if let Some(name) = opts.get_filename() {
            if let Ok(canonical) = name.canonicalize() {
                let mut st = self.state();
                if st.images.contains(&canonical) {
                    let image = st.images.last().cloned().unwrap_or_default();
                    let e = io::Error::other("backing file loop");
                    st.refused.get_or_insert(DiskError::BackingLoop {
                        path: image,
                        backing: name.to_path_buf(),
                    });
                    return Err(e);
                }
                st.images.push(canonical);
            }
        }
        ImagoFile::open(opts)
    }
}

/// At most this many slots in a [`MapCache`] (16 B each: 256 KiB, covering 1 GiB of 64 KiB clusters).
#[cfg(not(test))]
const MAP_CACHE_MAX_SLOTS: usize = 1 << 14;
/// Small in unit tests, so that they exercise slot conflicts.
#[cfg(test)]
const MAP_CACHE_MAX_SLOTS: usize = 64;

/// Guest cluster -> host offset of data clusters allocated in the top image and writable in place.
///
/// Direct-mapped by guest cluster index; a slot holds `[guest cluster + 1, host offset]` (a tag of 0 is an
/// empty slot). Zeroed allocation, so untouched slots cost no memory.
struct MapCache {
    slots: Vec<[u64; 2]>,
    mask: usize,
}

impl MapCache {
    fn new(clusters: u64) -> Self {
        let n = usize::try_from(clusters.max(1))
            .unwrap_or(usize::MAX)
            .checked_next_power_of_two()
            .unwrap_or(MAP_CACHE_MAX_SLOTS)
            .min(MAP_CACHE_MAX_SLOTS);
        Self {
            slots: vec![[0; 2]; n],
            mask: n - 1,
        }
    }

    fn get(&self, cluster: u64) -> Option<u64> {
        let [tag, host] = self.slots[cluster as usize & self.mask];
        (tag == cluster + 1).then_some(host)
    }

    fn insert(&mut self, cluster: u64, host: u64) {
        self.slots[cluster as usize & self.mask] = [cluster + 1, host];
    }

    /// Forgets the clusters `first..=last`.
    fn remove(&mut self, first: u64, last: u64) {
        if last - first >= self.mask as u64 {
            return self.clear();
        }
        for c in first..=last {
            let slot = &mut self.slots[c as usize & self.mask];
            if slot[0] == c + 1 {
                *slot = [0; 2];
            }
        }
    }

    fn clear(&mut self) {
        self.slots.fill([0; 2]);
    }
}

/// Scratch iovecs for one request; empty between calls.
struct IovScratch(Vec<libc::iovec>);

// SAFETY: the vector only holds pointers while a read or write call runs on the thread that owns the disk
// (it is cleared before the call returns), so no pointer ever crosses threads with it.
unsafe impl Send for IovScratch {}

/// A qcow2 disk image and its backing chain.
pub struct Qcow2File {
    access: FormatAccess<ImagoFile>,
    size: u64,
    read_only: bool,
    path: PathBuf,
    /// A second descriptor of the top image file (same open file description as imago's), for the direct
    /// data path.
    file: std::fs::File,
    /// The `O_DIRECT` descriptor of the top image with [`CacheMode::Direct`].
    direct_file: Option<DirectFile>,
    /// The image file's length as last seen; the direct path never reaches past it.
    file_len: u64,
    cluster_bits: u32,
    map: MapCache,
    /// Host-contiguous runs `(host offset, length)` of the current request.
    runs: Vec<(u64, u64)>,
    iovs: IovScratch,
    /// Rate limit of the warnings about damaged metadata met by requests.
    warn: LogLimiter,
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
    /// Opens `path` and its backing chain with the page cache; a writable image is locked exclusively.
    pub fn open(path: &Path, read_only: bool) -> Result<Self> {
        Self::open_with(path, read_only, CacheMode::Writeback)
    }

    /// Opens `path` and its backing chain with the given cache mode for the direct data path.
    pub fn open_with(path: &Path, read_only: bool, cache: CacheMode) -> Result<Self> {
        let file = open_locked(path, read_only)?;
        let direct_file = match cache {
            CacheMode::Writeback => None,
            CacheMode::Direct => Some(DirectFile::reopen(path, &file, read_only)?),
        };
        let info = check_image(path, &file, !read_only)?;
        let opts = StorageOpenOptions::new().filename(path).write(!read_only);
        let qcow2_err = |source| DiskError::Qcow2Open {
            path: path.to_path_buf(),
            source,
        };
        let plain_file = file.try_clone().map_err(DiskError::Io)?;
        let file_len = plain_file.metadata().map_err(DiskError::Io)?.len();
        let storage = ImagoFile::from_open_file(file, opts.clone()).map_err(qcow2_err)?;
        let gate = ReadOnlyGate::default();
        if let Ok(canonical) = path.canonicalize() {
            gate.state().images.push(canonical);
        }
        let image = Qcow2::<ImagoFile>::builder(storage)
            .write(!read_only)
            .storage_open_options(opts)
            .open(gate.clone())
            .map_err(|e| match gate.state().refused.take() {
                // The gate's own reason, without imago's context for every level of the chain.
                Some(refused) => refused,
                None => qcow2_err(e),
            })?;
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
            file: plain_file,
            direct_file,
            file_len,
            cluster_bits: info.cluster_bits,
            map: MapCache::new(size.div_ceil(1 << info.cluster_bits)),
            runs: Vec::new(),
            iovs: IovScratch(Vec::new()),
            warn: LogLimiter::default(),
        })
    }

    /// Looks up the host cluster of the guest cluster at `pos` through imago and caches the mapping of
    /// `[pos, end)` as far as it is one run of allocated, in-place writable data clusters of the top image.
    /// Returns the host offset of `pos`'s cluster, or `None` when it is not such a cluster.
    fn fill_map(&mut self, pos: u64, end: u64) -> Result<Option<u64>> {
        let cs = 1u64 << self.cluster_bits;
        let (host, len) = match self.access.get_mapping(pos, end - pos) {
            // `writable` means a COPIED data cluster of the top image (any mapping through a backing file
            // is not writable), so the storage is the top image file.
            Ok((
                Mapping::Raw {
                    offset,
                    writable: true,
                    ..
                },
                len,
            )) => (offset, len),
            Ok(_) => return Ok(None),
            Err(e) => return Err(DiskError::Io(e)),
        };
        let in_off = pos & (cs - 1);
        if len == 0 || host < in_off || !(host - in_off).is_multiple_of(cs) {
            return Ok(None);
        }
        let host_cluster = host - in_off;
        let clusters = (in_off + len).div_ceil(cs);
        // A data cluster past the end of the file (possible in a damaged image): leave it to imago.
        let host_end = host_cluster.saturating_add(clusters * cs);
        if host_end > self.file_len {
            self.file_len = self.file.metadata().map_err(DiskError::Io)?.len();
            if host_end > self.file_len {
                return Ok(None);
            }
        }
        let first = pos >> self.cluster_bits;
        for i in 0..clusters {
            self.map.insert(first + i, host_cluster + i * cs);
        }
        Ok(Some(host_cluster))
    }

    /// Fills `self.runs` with the host-contiguous runs `(host offset, length)` of `[offset, offset + len)`
    /// when all of it lies in allocated, in-place writable data clusters of the top image (from the mapping
    /// cache, asking imago on a miss). Returns `false` when some part is not such a cluster.
    fn map_runs(&mut self, offset: u64, len: u64) -> Result<bool> {
        let cb = self.cluster_bits;
        let cs = 1u64 << cb;
        let end = offset + len;
        let mut pos = offset;
        self.runs.clear();
        while pos < end {
            let host_cluster = match self.map.get(pos >> cb) {
                Some(h) => h,
                None => match self.fill_map(pos, end)? {
                    Some(h) => h,
                    None => return Ok(false),
                },
            };
            let in_off = pos & (cs - 1);
            let n = (cs - in_off).min(end - pos);
            let host = host_cluster + in_off;
            match self.runs.last_mut() {
                Some((start, run)) if *start + *run == host => *run += n,
                _ => self.runs.push((host, n)),
            }
            pos += n;
        }
        Ok(true)
    }

    /// The descriptor for the runs in `self.runs` and `bufs`: the `O_DIRECT` one when there is one and they
    /// fit its alignment, else the buffered one.
    fn data_file(&self, bufs: &[VolatileSlice<'_>]) -> &std::fs::File {
        match &self.direct_file {
            Some(d) if d.fits(bufs, &self.runs) => &d.file,
            _ => &self.file,
        }
    }

    /// Serves a request from the mapping cache when all of it lies in allocated, in-place writable data
    /// clusters of the top image: one `preadv`/`pwritev` per host-contiguous run. Returns `false`, having
    /// done no I/O, when some part is not such a cluster.
    fn direct(
        &mut self,
        offset: u64,
        len: u64,
        bufs: &[VolatileSlice<'_>],
        write: bool,
    ) -> Result<bool> {
        if !self.map_runs(offset, len)? {
            return Ok(false);
        }
        let mut iovs = std::mem::take(&mut self.iovs.0);
        push_iovecs(&mut iovs, bufs);
        let res = transfer_runs(self.data_file(bufs), &self.runs, &mut iovs, write);
        iovs.clear();
        self.iovs.0 = iovs;
        res.map(|()| true).map_err(DiskError::Io)
    }

    /// Fails a request whose range maps to data past the end of the file that holds it (the top image or a
    /// backing image): imago would read such data as zeroes (and write it far past the end). Metadata
    /// tables were checked at open; this catches the data clusters an L2 table points to. Only requests
    /// that do not take the direct path come here (that path checks its runs against the file length).
    fn check_mappings(&mut self, offset: u64, len: u64) -> Result<()> {
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let (mapping, n) = self
                .access
                .get_mapping(pos, end - pos)
                .map_err(DiskError::Io)?;
            let bad = match mapping {
                Mapping::Raw {
                    storage,
                    offset: host,
                    ..
                } => {
                    let file_len = storage.size().map_err(DiskError::Io)?;
                    host.checked_add(n)
                        .is_none_or(|e| e > file_len)
                        .then(|| (host, file_len, storage.get_filename()))
                }
                _ => None,
            };
            if let Some((host, file_len, file)) = bad {
                let file = file.unwrap_or_else(|| self.path.clone());
                let reason = format!(
                    "guest offset {pos:#x} maps to {file:?} at {host:#x}+{n:#x}, beyond its end ({file_len:#x})"
                );
                self.warn.warn(format_args!(
                    "qcow2 {:?}: {reason}; failing the request",
                    self.path
                ));
                return Err(DiskError::Corrupt {
                    path: self.path.clone(),
                    reason,
                });
            }
            if n == 0 {
                break;
            }
            pos += n;
        }
        Ok(())
    }

    /// An image whose virtual size is less than one cluster: imago 0.2.6's zeroing of a partial cluster
    /// (`soft_ensure_zero`) then steps its aligned end back by a whole cluster below zero (an overflow
    /// panic with debug assertions, a wrapped end without: found by the `qcow2_image` fuzz target, kept as
    /// `crash-discard-tiny-image`), so such images are zeroed by writing zeroes.
    fn smaller_than_a_cluster(&self) -> bool {
        self.size < 1u64 << self.cluster_bits
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

/// Transfers the bytes described by `iovs`, in order, to or from the host runs `(offset, length)` in
/// `file` (the runs' lengths add up to the iovecs' total). `iovs` is consumed (its contents are unspecified
/// afterwards).
fn transfer_runs(
    file: &std::fs::File,
    runs: &[(u64, u64)],
    iovs: &mut [libc::iovec],
    write: bool,
) -> io::Result<()> {
    if let [(host, _)] = runs {
        return transfer_iovecs(file, *host, iovs, write);
    }
    // The first iovec not yet (fully) transferred; earlier runs may have advanced it in place.
    let mut next = 0;
    for &(host, len) in runs {
        let first = next;
        let mut left = len as usize;
        while left > 0 && left >= iovs[next].iov_len {
            left -= iovs[next].iov_len;
            next += 1;
        }
        if left == 0 {
            transfer_iovecs(file, host, &mut iovs[first..next], write)?;
        } else {
            // The run ends inside iovs[next]: transfer its first `left` bytes now, the rest later.
            let whole = iovs[next];
            iovs[next].iov_len = left;
            transfer_iovecs(file, host, &mut iovs[first..=next], write)?;
            iovs[next] = libc::iovec {
                // SAFETY: `left` < iov_len, so the pointer stays inside the same buffer.
                iov_base: unsafe { (whole.iov_base as *mut u8).add(left) } as *mut libc::c_void,
                iov_len: whole.iov_len - left,
            };
        }
    }
    Ok(())
}

impl DiskFile for Qcow2File {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_vectored(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> Result<()> {
        let len = total_len(bufs);
        check_range(offset, len, self.size)?;
        if len == 0 || self.direct(offset, len, bufs, false)? {
            return Ok(());
        }
        self.check_mappings(offset, len)?;
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
        let len = total_len(bufs);
        check_range(offset, len, self.size)?;
        if len == 0 || self.direct(offset, len, bufs, true)? {
            return Ok(());
        }
        self.check_mappings(offset, len)?;
        let bufs: Vec<&VolatileSlice<'_>> = bufs.iter().filter(|b| !b.is_empty()).collect();
        let (iov, _guard) = IoVector::from_volatile_slice(bufs.iter().copied());
        // imago may allocate clusters or copy them (COW) here. It never moves a cluster the cache holds, but
        // forget the range anyway so the cache only ever holds what imago reported after the last change.
        let cb = self.cluster_bits;
        self.map.remove(offset >> cb, (offset + len - 1) >> cb);
        self.access.writev(iov, offset).map_err(DiskError::Io)
    }

    fn plain_runs(
        &mut self,
        offset: u64,
        bufs: &[VolatileSlice<'_>],
        write: bool,
        runs: &mut Vec<(u64, u64)>,
    ) -> Result<Option<RawFd>> {
        let len = total_len(bufs);
        if (write && self.read_only) || len == 0 || check_range(offset, len, self.size).is_err() {
            return Ok(None);
        }
        if !self.map_runs(offset, len)? {
            return Ok(None);
        }
        runs.extend_from_slice(&self.runs);
        Ok(Some(self.data_file(bufs).as_raw_fd()))
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
        self.check_mappings(offset, len)?;
        // Discarding changes (and frees) cluster mappings.
        self.map.clear();
        if self.smaller_than_a_cluster() {
            return self.fill_zeroes(offset, len);
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
        self.check_mappings(offset, len)?;
        // Zeroing changes (and may free) cluster mappings.
        self.map.clear();
        if self.smaller_than_a_cluster() {
            return self.fill_zeroes(offset, len);
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
    use crate::disk::tests::temp_path;
    use std::process::Command;

    /// Creates a qcow2 image with `qemu-img`; `None` (and a note) where qemu-img is not installed.
    fn qemu_img_create(name: &str, opts: &str, size: &str) -> Option<PathBuf> {
        let p = temp_path(name);
        let _ = std::fs::remove_file(&p);
        match Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-o", opts])
            .arg(&p)
            .arg(size)
            .status()
        {
            Ok(s) if s.success() => Some(p),
            Ok(s) => panic!("qemu-img create failed: {s}"),
            Err(_) => {
                eprintln!("qemu-img not installed; skipping");
                None
            }
        }
    }

    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n.max(1)
        }
    }

    /// Splits `buf` into up to four slices at random points (some possibly empty).
    fn split<'a>(rng: &mut Rng, buf: &'a mut [u8]) -> Vec<VolatileSlice<'a>> {
        let mut cuts: Vec<usize> = (0..3)
            .map(|_| rng.below(buf.len() as u64 + 1) as usize)
            .collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut rest = buf;
        let mut at = 0;
        for c in cuts {
            let (a, b) = rest.split_at_mut(c - at);
            out.push(VolatileSlice::from(a));
            rest = b;
            at = c;
        }
        out.push(VolatileSlice::from(rest));
        out
    }

    /// Random vectored reads, writes, discards and write-zeroes against an in-memory model, on fresh images
    /// (so guest-adjacent clusters land in scattered host clusters and requests span several host runs) and
    /// with a mapping cache smaller than the image (slot conflicts): the direct path and imago's must agree.
    #[test]
    fn direct_path_matches_model_on_fragmented_images() {
        for (i, opts) in [
            "compat=1.1,cluster_size=4k",
            "compat=0.10,cluster_size=512",
            "compat=1.1,cluster_size=64k",
        ]
        .into_iter()
        .enumerate()
        {
            let Some(p) = qemu_img_create(&format!("direct-{i}.qcow2"), opts, "4M") else {
                return;
            };
            let size = 4usize << 20;
            let mut model = vec![0u8; size];
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 + i as u64);
            let mut d = Qcow2File::open(&p, false).unwrap();
            for step in 0..3000u32 {
                let max = if rng.below(4) == 0 { 300_000 } else { 20_000 };
                let len = 1 + rng.below(max) as usize;
                let off = rng.below((size - len) as u64) as usize;
                match rng.below(20) {
                    0 => {
                        d.discard(off as u64, len as u64).unwrap();
                        model[off..off + len].fill(0);
                    }
                    1 => {
                        d.write_zeroes(off as u64, len as u64, rng.below(2) == 0)
                            .unwrap();
                        model[off..off + len].fill(0);
                    }
                    2..=9 => {
                        let mut buf: Vec<u8> =
                            (0..len).map(|j| (step as usize * 31 + j) as u8).collect();
                        let slices = split(&mut rng, &mut buf);
                        d.write_vectored(off as u64, &slices).unwrap();
                        model[off..off + len].copy_from_slice(&buf);
                    }
                    _ => {
                        let mut buf = vec![0xeeu8; len];
                        let slices = split(&mut rng, &mut buf);
                        d.read_vectored(off as u64, &slices).unwrap();
                        drop(slices);
                        assert!(
                            buf == model[off..off + len],
                            "{opts}: read {off}+{len} at step {step}"
                        );
                    }
                }
            }
            d.flush().unwrap();
            drop(d);
            let mut d = Qcow2File::open(&p, true).unwrap();
            let mut all = vec![0u8; size];
            d.read_at(&mut all, 0).unwrap();
            assert!(all == model, "{opts}: contents after reopening");
        }
    }
}
