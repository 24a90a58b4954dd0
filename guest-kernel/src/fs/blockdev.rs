//! Block devices as files: `/dev/vda`, `/dev/vdb`, ... (one per virtio block device, in command-line
//! order), readable and writable at any offset and length (partial sectors are read, changed and
//! written back), `lseek(SEEK_END)` at the capacity, `fsync` a device cache flush.
//!
//! Writes go straight to the device. Linux keeps a block device's page cache coherent with a
//! filesystem mounted on it (its metadata lives in the device's buffer cache); here a mounted
//! filesystem caches its pages and metadata itself, so a read of the device first writes the
//! filesystem's dirty pages and metadata back (`Mount::write_back_for_device`, nothing when
//! nothing is dirty), and a write first
//! does the same, then makes the filesystem drop what it cached and read its metadata again
//! (`Mount::device_written`): a program reading `/dev/vdb` sees the files, inodes, directories
//! and bitmaps as written, and one writing it is seen by the filesystem (Linux: by the metadata
//! blocks at once, by an inode once it left the inode cache).
#![deny(unsafe_code)]

use super::file::{FileOps, OpenFile, ReadBuf, Stat, WriteBuf};
use crate::drivers::virtio;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::any::Any;
use kcore::errno::Errno;

/// Bytes moved per device request at most.
const CHUNK: usize = 64 * 1024;

/// Virtio block device `index` (0 = vda).
pub struct BlockFile {
    index: usize,
}

impl BlockFile {
    /// The device's size now (the host may change it: `PATCH /drives`, a config-change interrupt).
    fn bytes(&self) -> u64 {
        virtio::with_block(self.index, |d| d.capacity_sectors()).unwrap_or(0) * 512
    }

    /// Runs a device request over the sector-aligned span around `[offset, offset + len)` with a
    /// kernel buffer (physically contiguous, as DMA needs).
    fn span(&self, offset: u64, len: usize) -> (u64, usize) {
        let start = offset & !511;
        let end = (offset + len as u64).div_ceil(512) * 512;
        (start, (end - start) as usize)
    }
}

fn io(r: Option<Result<(), virtio::IoError>>) -> Result<(), Errno> {
    r.ok_or(Errno::ENXIO)?.map_err(|_| Errno::EIO)
}

impl FileOps for BlockFile {
    fn read_at(
        &self,
        _file: &OpenFile,
        offset: u64,
        buf: &mut dyn ReadBuf,
    ) -> Result<usize, Errno> {
        let end = offset.saturating_add(buf.len() as u64).min(self.bytes());
        // A filesystem mounted from this disk writes its dirty file pages and metadata first, so
        // the disk read shows what its files, inodes, directories and bitmaps hold.
        if let Some(m) = super::mount::by_disk(self.index) {
            m.write_back_for_device()?;
        }
        let mut done = 0usize;
        let mut tmp: Vec<u8> = Vec::new();
        while offset + (done as u64) < end {
            let pos = offset + done as u64;
            let n = ((end - pos) as usize).min(CHUNK);
            let (start, span) = self.span(pos, n);
            tmp.resize(span, 0);
            io(virtio::with_block(self.index, |d| {
                d.read(start / 512, &mut tmp)
            }))?;
            let at = (pos - start) as usize;
            buf.put(done, &tmp[at..at + n])?;
            done += n;
        }
        Ok(done)
    }

    fn write_at(
        &self,
        _file: &OpenFile,
        offset: u64,
        buf: &mut dyn WriteBuf,
    ) -> Result<usize, Errno> {
        if offset >= self.bytes() && buf.len() > 0 {
            return Err(Errno::ENOSPC);
        }
        let end = offset.saturating_add(buf.len() as u64).min(self.bytes());
        // A filesystem mounted from this disk writes its dirty file pages and metadata first:
        // they cannot land on top of this write later, and they are not lost when its caches are
        // dropped after it.
        if let Some(m) = super::mount::by_disk(self.index) {
            m.write_back_for_device()?;
        }
        let mut done = 0usize;
        let mut tmp: Vec<u8> = Vec::new();
        while offset + (done as u64) < end {
            let pos = offset + done as u64;
            let n = ((end - pos) as usize).min(CHUNK);
            let (start, span) = self.span(pos, n);
            tmp.resize(span, 0);
            let at = (pos - start) as usize;
            if at != 0 || n != span {
                // A partial sector: the rest of it is what the disk holds.
                io(virtio::with_block(self.index, |d| {
                    d.read(start / 512, &mut tmp)
                }))?;
            }
            buf.get(done, &mut tmp[at..at + n])?;
            io(virtio::with_block(self.index, |d| {
                d.write(start / 512, &tmp)
            }))?;
            done += n;
        }
        // A filesystem mounted from this disk must not keep showing file pages or metadata the
        // write replaced.
        if let Some(m) = super::mount::by_disk(self.index) {
            m.device_written();
        }
        Ok(done)
    }

    fn stat(&self) -> Stat {
        Stat {
            dev: 5,
            ino: 100 + self.index as u64,
            nlink: 1,
            mode: 0o060660,
            rdev: (254 << 8) | (self.index as u64 * 16),
            blksize: 4096,
            ..Stat::default()
        }
    }

    /// lseek: SEEK_END is the capacity (stat's size is 0 for a device, as on Linux).
    fn seek(&self, file: &OpenFile, offset: i64, whence: u32) -> Result<u64, Errno> {
        let base = match whence {
            0 => 0,
            1 => file.offset() as i64,
            2 => self.bytes() as i64,
            _ => return Err(Errno::EINVAL),
        };
        let new = base
            .checked_add(offset)
            .filter(|&n| n >= 0)
            .ok_or(Errno::EINVAL)?;
        file.set_offset(new as u64);
        Ok(new as u64)
    }

    fn sync(&self, _file: &OpenFile, _data_only: bool) -> Result<(), Errno> {
        io(virtio::with_block(self.index, |d| d.flush()))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Registers `/dev/vdX` for every virtio block device.
pub fn register() {
    for index in 0..26usize {
        if virtio::with_block(index, |_| ()).is_none() {
            break;
        }
        let mut path = b"/dev/vd".to_vec();
        path.push(b'a' + index as u8);
        super::register_device(path, move |_| {
            Ok(Rc::new(BlockFile { index }) as Rc<dyn FileOps>)
        });
    }
}
