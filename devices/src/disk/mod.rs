//! Disk image backends behind one [`DiskFile`] trait.
//!
//! A block device (virtio-blk) sees a disk as a flat array of bytes with a size, and moves data between it
//! and guest memory with [`DiskFile::read_vectored`] / [`DiskFile::write_vectored`], which take the guest
//! buffers as `VolatileSlice`s so the backend can `preadv`/`pwritev` straight into guest memory. Two
//! backends exist:
//! - [`raw::RawFile`]: the image is the disk, byte for byte (`preadv`/`pwritev`, `fdatasync`,
//!   `fallocate` for discard and write-zeroes).
//! - [`qcow2::Qcow2File`]: qcow2 v2/v3 through the `imago` crate (sync build), with backing chains.
//!
//! [`open_disk`] picks the backend: from the format the user gave, else from the file's magic (never from
//! anything a guest controls besides the image contents themselves, which is what `format=` is for).
//! Writable images get an exclusive OFD lock on the whole file so a second writer fails with
//! [`DiskError::Locked`]. Nothing in this module knows about KVM or virtio: it is tested with plain files.

pub mod qcow2;
mod qcow2_meta;
pub mod raw;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use vm_memory::VolatileSlice;

pub use qcow2::Qcow2File;
pub use raw::RawFile;

/// The qcow2 magic, `QFI\xfb`, as the first four bytes of an image.
pub const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// Errors from opening or accessing a disk image.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The image file could not be opened.
    #[error("cannot open disk image {path:?}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Another process (or another open of the same file) holds the image for writing.
    #[error("disk image {path:?} is locked by another user; is it already in use by another VM?")]
    Locked { path: PathBuf },
    /// Locking the image failed for a reason other than a conflicting lock.
    #[error("cannot lock disk image {path:?}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The qcow2 image is encrypted; encryption is not supported.
    #[error(
        "qcow2 image {path:?} is encrypted (method {method}); encrypted images are not supported"
    )]
    Encrypted { path: PathBuf, method: u32 },
    /// The image header is malformed or uses a feature the backend cannot handle.
    #[error("unsupported or invalid qcow2 image {path:?}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    /// imago refused to open the qcow2 image (or its backing chain).
    #[error("cannot open qcow2 image {path:?}: {source}")]
    Qcow2Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `cache=direct` was asked for, but the image cannot be opened with `O_DIRECT`.
    #[error("cannot open disk image {path:?} with O_DIRECT (cache_type Direct): {source}")]
    Direct {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A qcow2 image's backing chain comes back to an image already in it.
    #[error("qcow2 image {path:?} names backing file {backing:?}, which is already in its backing chain (a loop)")]
    BackingLoop { path: PathBuf, backing: PathBuf },
    /// A request met qcow2 metadata that points outside the image file (a damaged image).
    #[error("qcow2 image {path:?} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// An access reaches past the end of the disk.
    #[error("access at {offset:#x}+{len:#x} is beyond the disk size {size:#x}")]
    OutOfBounds { offset: u64, len: u64, size: u64 },
    /// A write, discard or write-zeroes on a read-only disk.
    #[error("disk is read-only")]
    ReadOnly,
    /// The backend cannot do this operation (e.g. discard on a file system without hole punching).
    #[error("operation not supported by this disk backend")]
    NotSupported,
    /// The I/O itself failed.
    #[error("disk I/O failed: {0}")]
    Io(#[source] io::Error),
}

/// Result type of this module.
pub type Result<T> = std::result::Result<T, DiskError>;

/// A disk image: a flat array of `size()` bytes.
///
/// Every method checks its range against `size()` and the read-only flag first, so callers may pass
/// unchecked guest-derived ranges.
pub trait DiskFile: Send {
    /// The virtual disk size in bytes.
    fn size(&self) -> u64;
    /// Whether writes, discards and write-zeroes are refused.
    fn read_only(&self) -> bool;
    /// Fills `bufs`, in order, from the disk starting at `offset`.
    fn read_vectored(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> Result<()>;
    /// Writes `bufs`, in order, to the disk starting at `offset`.
    fn write_vectored(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> Result<()>;
    /// Makes every completed write durable (written back and `fdatasync`ed/`fsync`ed).
    fn flush(&mut self) -> Result<()>;
    /// Whether [`DiskFile::discard`] can work.
    fn supports_discard(&self) -> bool {
        false
    }
    /// Drops the data of a range; it reads back as zeroes afterwards.
    fn discard(&mut self, _offset: u64, _len: u64) -> Result<()> {
        Err(DiskError::NotSupported)
    }
    /// Whether [`DiskFile::write_zeroes`] can work.
    fn supports_write_zeroes(&self) -> bool {
        false
    }
    /// Makes a range read as zeroes; with `unmap` the backend may deallocate it.
    fn write_zeroes(&mut self, _offset: u64, _len: u64, _unmap: bool) -> Result<()> {
        Err(DiskError::NotSupported)
    }

    /// Reads into one plain buffer.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.read_vectored(offset, &[VolatileSlice::from(buf)])
    }
    /// Where a read or write of `bufs` at `offset` can go straight to a host file, with no format work and
    /// no change to the image's metadata: the file's descriptor, with the host runs `(file offset, length)`
    /// that hold the range, in guest order, appended to `runs`. `None` when the request needs the backend's
    /// own `read_vectored`/`write_vectored` (also for any request those would refuse, so they report the
    /// error). The asynchronous engine submits such requests to io_uring; the descriptor stays valid while
    /// the disk lives, and the runs stay valid until the next call that changes the image's metadata
    /// (`write_vectored`, `discard`, `write_zeroes`), which the engine only makes with nothing in flight.
    fn plain_runs(
        &mut self,
        _offset: u64,
        _bufs: &[VolatileSlice<'_>],
        _write: bool,
        _runs: &mut Vec<(u64, u64)>,
    ) -> Result<Option<RawFd>> {
        Ok(None)
    }

    /// Writes one plain buffer.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        // SAFETY: the slice covers exactly `buf`, which stays borrowed (alive) for the duration of the
        // call, and a write to the disk only reads from the slice, so the `*mut` is never written through.
        let slice = unsafe { VolatileSlice::new(buf.as_ptr() as *mut u8, buf.len()) };
        self.write_vectored(offset, &[slice])
    }
}

/// The image formats this crate understands. Also the drive configuration's `format` field (`raw`,
/// `qcow2`: `--disk format=`, the API's and config file's `"format"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// The file is the disk.
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
}

/// How data reaches the image file. Also the drive configuration's `cache_type` field (Firecracker's name;
/// `Writeback` is Firecracker's, `Direct` is ours: QEMU's `cache=none`; Firecracker's `Unsafe`, which ignores
/// flushes, is not offered).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CacheMode {
    /// Through the host page cache (buffered reads and writes; a flush writes back and syncs).
    #[default]
    Writeback,
    /// Guest data with `O_DIRECT`, bypassing the host page cache (QEMU's `cache=none`, Cloud Hypervisor's
    /// `direct=on`). Requests whose buffers, offset or length do not meet the file's `O_DIRECT` alignment,
    /// and qcow2 metadata (read and written by imago), still go through the page cache; Linux keeps the
    /// two coherent (a direct read writes back dirty cached pages of its range first, a direct write
    /// invalidates them). A flush still syncs the file.
    Direct,
}

/// How to open a disk.
#[derive(Clone, Debug, Default)]
pub struct DiskOptions {
    /// Refuse writes (and open the file read-only).
    pub read_only: bool,
    /// The format; `None` probes the file's first bytes.
    pub format: Option<ImageFormat>,
    /// Page cache or `O_DIRECT` for guest data.
    pub cache: CacheMode,
}

/// Detects the format of an image from its first bytes.
pub fn probe_format(path: &Path) -> Result<ImageFormat> {
    let file = File::open(path).map_err(|source| DiskError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut magic = [0u8; 4];
    let n = file.read_at(&mut magic, 0).map_err(DiskError::Io)?;
    Ok(if n == 4 && magic == QCOW2_MAGIC {
        ImageFormat::Qcow2
    } else {
        ImageFormat::Raw
    })
}

/// Opens a disk image with the backend its format needs.
pub fn open_disk(path: &Path, opts: &DiskOptions) -> Result<Box<dyn DiskFile>> {
    let format = match opts.format {
        Some(f) => f,
        None => probe_format(path)?,
    };
    Ok(match format {
        ImageFormat::Raw => Box::new(RawFile::open_with(path, opts.read_only, opts.cache)?),
        ImageFormat::Qcow2 => Box::new(Qcow2File::open_with(path, opts.read_only, opts.cache)?),
    })
}

/// A second descriptor of an open image file with `O_DIRECT`, and the alignment its requests need.
#[derive(Debug)]
pub(crate) struct DirectFile {
    pub(crate) file: File,
    /// Every buffer's address must be a multiple of this.
    mem_align: u64,
    /// File offsets and every buffer's length must be multiples of this.
    offset_align: u64,
}

impl DirectFile {
    /// Reopens `file` (through /proc/self/fd, so it is the same inode even if the path has changed) with
    /// `O_DIRECT`; errors when the file system cannot do direct I/O.
    pub(crate) fn reopen(path: &Path, file: &File, read_only: bool) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let err = |source: io::Error| DiskError::Direct {
            path: path.to_path_buf(),
            source,
        };
        let direct = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_DIRECT)
            .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map_err(err)?;
        // SAFETY: `statx` is a plain C struct for which all-zero bytes are a valid value.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: the descriptor is valid, the path is an empty C string (AT_EMPTY_PATH: the descriptor
        // itself), and `stx` is a writable statx the call fills.
        let ret = unsafe {
            libc::statx(
                direct.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                libc::STATX_DIOALIGN,
                &mut stx,
            )
        };
        let reported = ret == 0 && stx.stx_mask & libc::STATX_DIOALIGN != 0;
        let (mem_align, offset_align) = if reported {
            if stx.stx_dio_mem_align == 0 {
                return Err(err(io::Error::from_raw_os_error(libc::EINVAL)));
            }
            (
                u64::from(stx.stx_dio_mem_align),
                u64::from(stx.stx_dio_offset_align),
            )
        } else {
            // Kernels before 6.1 do not say; a page is enough for every common file system.
            (4096, 4096)
        };
        Ok(Self {
            file: direct,
            mem_align: mem_align.max(1),
            offset_align: offset_align.max(1),
        })
    }

    /// Whether `O_DIRECT` can move `bufs` to or from the file runs `runs`.
    pub(crate) fn fits(&self, bufs: &[VolatileSlice<'_>], runs: &[(u64, u64)]) -> bool {
        let (m, o) = (self.mem_align, self.offset_align);
        runs.iter()
            .all(|&(off, len)| off.is_multiple_of(o) && len.is_multiple_of(o))
            && bufs.iter().all(|b| {
                (b.ptr_guard().as_ptr() as u64).is_multiple_of(m)
                    && (b.len() as u64).is_multiple_of(o)
            })
    }
}

/// Opens `path` for reading (and writing unless `read_only`); a writable file is locked exclusively.
pub(crate) fn open_locked(path: &Path, read_only: bool) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(path)
        .map_err(|source| DiskError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    if !read_only {
        lock_exclusive(&file).map_err(|source| match source.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EACCES) => DiskError::Locked {
                path: path.to_path_buf(),
            },
            _ => DiskError::Lock {
                path: path.to_path_buf(),
                source,
            },
        })?;
    }
    Ok(file)
}

/// Takes an exclusive open-file-description lock on the whole file, failing at once on a conflict.
///
/// OFD locks belong to the open file (not the process), so they conflict between two opens in one process
/// too, and are released when the last descriptor of the open file is closed (including on `kill -9`).
fn lock_exclusive(file: &File) -> io::Result<()> {
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 0; // to the end of the file, however it grows
                  // SAFETY: the descriptor is valid for the life of `file`, and `fl` is a valid flock that fcntl only
                  // reads for F_OFD_SETLK.
    let ret = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Checks `[offset, offset + len)` against a disk of `size` bytes.
pub(crate) fn check_range(offset: u64, len: u64, size: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(DiskError::OutOfBounds { offset, len, size }),
    }
}

/// Total length of a set of guest buffers.
pub(crate) fn total_len(bufs: &[VolatileSlice<'_>]) -> u64 {
    bufs.iter().map(|b| b.len() as u64).sum()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("microvm-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn probes_raw_and_qcow2_by_magic() {
        let p = temp_path("probe.raw");
        std::fs::write(&p, [0u8; 512]).unwrap();
        assert_eq!(probe_format(&p).unwrap(), ImageFormat::Raw);
        let mut f = File::create(&p).unwrap();
        f.write_all(b"QFI\xfb\0\0\0\x03").unwrap();
        assert_eq!(probe_format(&p).unwrap(), ImageFormat::Qcow2);
        std::fs::write(&p, b"QF").unwrap();
        assert_eq!(probe_format(&p).unwrap(), ImageFormat::Raw);
    }

    #[test]
    fn second_writer_gets_locked_error_reader_does_not() {
        let p = temp_path("lock.raw");
        std::fs::write(&p, [0u8; 4096]).unwrap();
        let opts = DiskOptions::default();
        let first = open_disk(&p, &opts).unwrap();
        match open_disk(&p, &opts) {
            Err(DiskError::Locked { path }) => assert_eq!(path, p),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("second writer was allowed"),
        }
        let ro = DiskOptions {
            read_only: true,
            ..Default::default()
        };
        assert!(open_disk(&p, &ro).is_ok());
        drop(first);
        assert!(open_disk(&p, &opts).is_ok());
    }

    #[test]
    fn range_checks() {
        assert!(check_range(0, 512, 512).is_ok());
        assert!(check_range(1, 512, 512).is_err());
        assert!(check_range(u64::MAX, 2, u64::MAX).is_err());
    }
}
