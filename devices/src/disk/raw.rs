//! Raw images: the file is the disk, byte for byte.
//!
//! Reads and writes go straight between the file and guest memory with `preadv`/`pwritev` (no bounce
//! buffer); flush is `fdatasync`; discard punches holes and write-zeroes uses `FALLOC_FL_ZERO_RANGE`, falling
//! back to hole punching or plain zero writes where the file system lacks them.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use vm_memory::VolatileSlice;

use super::{
    check_range, open_locked, total_len, CacheMode, DirectFile, DiskError, DiskFile, Result,
};

/// At most this many iovecs go into one `preadv`/`pwritev` (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// A raw disk image.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    size: u64,
    read_only: bool,
    /// Cleared after the file system said it cannot punch holes.
    can_punch: bool,
    /// The `O_DIRECT` descriptor with [`CacheMode::Direct`].
    direct: Option<DirectFile>,
}

impl RawFile {
    /// Opens `path` with the page cache; a writable image is locked exclusively.
    pub fn open(path: &Path, read_only: bool) -> Result<Self> {
        Self::open_with(path, read_only, CacheMode::Writeback)
    }

    /// Opens `path` with the given cache mode; a writable image is locked exclusively.
    pub fn open_with(path: &Path, read_only: bool, cache: CacheMode) -> Result<Self> {
        let file = open_locked(path, read_only)?;
        let direct = match cache {
            CacheMode::Writeback => None,
            CacheMode::Direct => Some(DirectFile::reopen(path, &file, read_only)?),
        };
        Ok(Self {
            direct,
            ..Self::from_file(file, read_only)?
        })
    }

    /// The descriptor that moves `bufs` at `offset`: the `O_DIRECT` one when there is one and the request
    /// fits its alignment, else the buffered one.
    fn data_file(&self, offset: u64, bufs: &[VolatileSlice<'_>]) -> &File {
        match &self.direct {
            Some(d) if d.fits(bufs, &[(offset, total_len(bufs))]) => &d.file,
            _ => &self.file,
        }
    }

    /// Wraps an already opened (and, if writable, already locked) file.
    pub fn from_file(mut file: File, read_only: bool) -> Result<Self> {
        use std::io::Seek;
        let size = file.seek(io::SeekFrom::End(0)).map_err(DiskError::Io)?;
        Ok(Self {
            file,
            size,
            read_only,
            can_punch: true,
            direct: None,
        })
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        // SAFETY: fallocate only acts on the file behind a descriptor we own; it touches no memory of ours.
        let ret = unsafe {
            libc::fallocate64(
                self.file.as_raw_fd(),
                mode,
                offset as libc::off64_t,
                len as libc::off64_t,
            )
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn write_zero_bytes(&mut self, mut offset: u64, len: u64) -> Result<()> {
        const CHUNK: u64 = 1 << 20;
        let zeroes = vec![0u8; CHUNK.min(len) as usize];
        let end = offset + len;
        while offset < end {
            let n = (end - offset).min(CHUNK) as usize;
            self.write_at(&zeroes[..n], offset)?;
            offset += n as u64;
        }
        Ok(())
    }
}

/// Transfers all of `bufs` between the file and memory at `offset`, retrying short transfers and EINTR.
fn transfer_all(
    file: &File,
    offset: u64,
    bufs: &[VolatileSlice<'_>],
    write: bool,
) -> io::Result<()> {
    let mut iovs = Vec::with_capacity(bufs.len());
    push_iovecs(&mut iovs, bufs);
    transfer_iovecs(file, offset, &mut iovs, write)
}

/// Appends one iovec per non-empty buffer of `bufs`.
///
/// The pointers stay valid while `bufs` is borrowed; guest memory is never unmapped under a device.
pub(crate) fn push_iovecs(iovs: &mut Vec<libc::iovec>, bufs: &[VolatileSlice<'_>]) {
    iovs.extend(bufs.iter().filter(|b| !b.is_empty()).map(|b| libc::iovec {
        iov_base: b.ptr_guard_mut().as_ptr() as *mut libc::c_void,
        iov_len: b.len(),
    }));
}

/// Transfers all of `iovs` between the file and memory at `offset` (`preadv`/`pwritev`, at most `IOV_MAX`
/// iovecs per call), retrying short transfers and EINTR. Advances the iovecs it has done with, so their
/// contents are unspecified afterwards.
///
/// Every iovec must describe memory that is mapped and borrowed for the duration of the call (guest memory
/// behind a `VolatileSlice`, or a buffer the caller lent): `preadv` writes only inside those ranges and
/// `pwritev` only reads them.
pub(crate) fn transfer_iovecs(
    file: &File,
    mut offset: u64,
    iovs: &mut [libc::iovec],
    write: bool,
) -> io::Result<()> {
    let mut start = 0;
    while start < iovs.len() {
        let cnt = (iovs.len() - start).min(IOV_MAX);
        let iov = &iovs[start..start + cnt];
        // SAFETY: every iovec describes memory that is mapped and borrowed for this call (the caller's
        // contract above). preadv writes only inside those ranges, pwritev only reads them.
        let ret = unsafe {
            if write {
                libc::pwritev64(
                    file.as_raw_fd(),
                    iov.as_ptr(),
                    cnt as libc::c_int,
                    offset as libc::off64_t,
                )
            } else {
                libc::preadv64(
                    file.as_raw_fd(),
                    iov.as_ptr(),
                    cnt as libc::c_int,
                    offset as libc::off64_t,
                )
            }
        };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if ret == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "image file ended before the disk size",
            ));
        }
        let mut done = ret as usize;
        offset += done as u64;
        while done > 0 {
            let first = &mut iovs[start];
            if done >= first.iov_len {
                done -= first.iov_len;
                start += 1;
            } else {
                // SAFETY: `done` < iov_len, so the advanced pointer stays inside the same buffer.
                first.iov_base =
                    unsafe { (first.iov_base as *mut u8).add(done) } as *mut libc::c_void;
                first.iov_len -= done;
                done = 0;
            }
        }
    }
    Ok(())
}

impl DiskFile for RawFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_vectored(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> Result<()> {
        check_range(offset, total_len(bufs), self.size)?;
        transfer_all(self.data_file(offset, bufs), offset, bufs, false).map_err(DiskError::Io)
    }

    fn write_vectored(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> Result<()> {
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        check_range(offset, total_len(bufs), self.size)?;
        transfer_all(self.data_file(offset, bufs), offset, bufs, true).map_err(DiskError::Io)
    }

    fn plain_runs(
        &mut self,
        offset: u64,
        bufs: &[VolatileSlice<'_>],
        write: bool,
        runs: &mut Vec<(u64, u64)>,
    ) -> Result<Option<RawFd>> {
        let len = total_len(bufs);
        if (write && self.read_only) || check_range(offset, len, self.size).is_err() {
            return Ok(None);
        }
        runs.push((offset, len));
        Ok(Some(self.data_file(offset, bufs).as_raw_fd()))
    }

    fn flush(&mut self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data().map_err(DiskError::Io)
    }

    fn supports_discard(&self) -> bool {
        !self.read_only && self.can_punch
    }

    fn discard(&mut self, offset: u64, len: u64) -> Result<()> {
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        check_range(offset, len, self.size)?;
        match self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        ) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                self.can_punch = false;
                // Discarded data must still read back as zeroes.
                self.write_zero_bytes(offset, len)
            }
            Err(e) => Err(DiskError::Io(e)),
        }
    }

    fn supports_write_zeroes(&self) -> bool {
        !self.read_only
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> Result<()> {
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        check_range(offset, len, self.size)?;
        if len == 0 {
            return Ok(());
        }
        if unmap && self.can_punch {
            return self.discard(offset, len);
        }
        match self.fallocate(
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        ) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                self.write_zero_bytes(offset, len)
            }
            Err(e) => Err(DiskError::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::tests::temp_path;

    fn image(name: &str, len: usize) -> std::path::PathBuf {
        let p = temp_path(name);
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, data).unwrap();
        p
    }

    #[test]
    fn vectored_round_trip_and_bounds() {
        let p = image("rt.raw", 64 * 1024);
        let mut d = RawFile::open(&p, false).unwrap();
        assert_eq!(d.size(), 64 * 1024);
        let mut a = [0u8; 100];
        let mut b = [0u8; 412];
        d.read_vectored(
            1000,
            &[
                VolatileSlice::from(&mut a[..]),
                VolatileSlice::from(&mut b[..]),
            ],
        )
        .unwrap();
        assert_eq!(a[0], (1000 % 251) as u8);
        assert_eq!(b[411], (1511 % 251) as u8);
        d.write_at(&[7u8; 512], 4096).unwrap();
        let mut c = [0u8; 512];
        d.read_at(&mut c, 4096).unwrap();
        assert_eq!(c, [7u8; 512]);
        assert!(matches!(
            d.read_at(&mut c, 64 * 1024 - 511),
            Err(DiskError::OutOfBounds { .. })
        ));
        d.flush().unwrap();
    }

    #[test]
    fn read_only_refuses_writes() {
        let p = image("ro.raw", 4096);
        let mut d = RawFile::open(&p, true).unwrap();
        assert!(matches!(d.write_at(&[1], 0), Err(DiskError::ReadOnly)));
        assert!(matches!(d.discard(0, 512), Err(DiskError::ReadOnly)));
        assert!(!d.supports_discard());
    }

    #[test]
    fn discard_and_write_zeroes_read_back_zero() {
        let p = image("dz.raw", 1 << 20);
        let mut d = RawFile::open(&p, false).unwrap();
        d.discard(4096, 8192).unwrap();
        d.write_zeroes(65536, 1000, false).unwrap();
        d.write_zeroes(200_000, 5000, true).unwrap();
        let mut buf = vec![1u8; 8192];
        d.read_at(&mut buf, 4096).unwrap();
        assert!(buf.iter().all(|&x| x == 0));
        let mut buf = vec![1u8; 1000];
        d.read_at(&mut buf, 65536).unwrap();
        assert!(buf.iter().all(|&x| x == 0));
        let mut buf = vec![1u8; 5000];
        d.read_at(&mut buf, 200_000).unwrap();
        assert!(buf.iter().all(|&x| x == 0));
        let mut one = [0u8; 1];
        d.read_at(&mut one, 66536).unwrap();
        assert_eq!(one[0], (66536 % 251) as u8);
    }
}
