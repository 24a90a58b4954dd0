//! An in-memory [`DiskFile`] for tests and fuzz targets.

use vm_memory::VolatileSlice;

use super::{check_range, total_len, DiskError, DiskFile, Result};

/// A disk held in a `Vec<u8>`.
#[derive(Debug, Clone, Default)]
pub struct MemDisk {
    /// The disk contents.
    pub data: Vec<u8>,
    /// Refuse writes.
    pub read_only: bool,
    /// Number of flushes seen.
    pub flushes: u64,
}

impl MemDisk {
    /// A zeroed disk of `size` bytes.
    pub fn new(size: usize, read_only: bool) -> Self {
        Self {
            data: vec![0; size],
            read_only,
            flushes: 0,
        }
    }
}

impl DiskFile for MemDisk {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_vectored(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> Result<()> {
        check_range(offset, total_len(bufs), self.size())?;
        let mut pos = offset as usize;
        for b in bufs {
            b.copy_from(&self.data[pos..pos + b.len()]);
            pos += b.len();
        }
        Ok(())
    }

    fn write_vectored(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> Result<()> {
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        check_range(offset, total_len(bufs), self.size())?;
        let mut pos = offset as usize;
        for b in bufs {
            b.copy_to(&mut self.data[pos..pos + b.len()]);
            pos += b.len();
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.flushes += 1;
        Ok(())
    }

    fn supports_discard(&self) -> bool {
        !self.read_only
    }

    fn discard(&mut self, offset: u64, len: u64) -> Result<()> {
        self.write_zeroes(offset, len, true)
    }

    fn supports_write_zeroes(&self) -> bool {
        !self.read_only
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, _unmap: bool) -> Result<()> {
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        check_range(offset, len, self.size())?;
        self.data[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
}
