//! Simple device nodes the VFS serves itself: /dev/null, /dev/zero, /dev/full, /dev/random, /dev/urandom.
#![deny(unsafe_code)]

use super::file::{FileOps, OpenFile, ReadBuf, Stat, WriteBuf};
use alloc::rc::Rc;
use core::any::Any;
use kcore::errno::Errno;

/// /dev/null: reads are at end of file, writes vanish.
pub struct Null;

impl FileOps for Null {
    fn read(&self, _file: &OpenFile, _buf: &mut dyn ReadBuf) -> Result<usize, Errno> {
        Ok(0)
    }
    fn write(&self, _file: &OpenFile, buf: &mut dyn WriteBuf) -> Result<usize, Errno> {
        Ok(buf.len())
    }
    fn read_at(
        &self,
        _file: &OpenFile,
        _offset: u64,
        _buf: &mut dyn ReadBuf,
    ) -> Result<usize, Errno> {
        Ok(0)
    }
    fn write_at(
        &self,
        _file: &OpenFile,
        _offset: u64,
        buf: &mut dyn WriteBuf,
    ) -> Result<usize, Errno> {
        Ok(buf.len())
    }
    fn seek(&self, _file: &OpenFile, _offset: i64, _whence: u32) -> Result<u64, Errno> {
        Ok(0)
    }
    fn stat(&self) -> Stat {
        Stat {
            dev: 5,
            ino: 2,
            nlink: 1,
            mode: 0o020666,
            rdev: (1 << 8) | 3,
            blksize: 4096,
            ..Stat::default()
        }
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Zeros to copy from (/dev/zero and /dev/full reads).
static ZEROS: [u8; 4096] = [0; 4096];

/// A read of zeros: the whole buffer, 4 KiB per copy.
fn zeros(buf: &mut dyn ReadBuf) -> Result<usize, Errno> {
    let n = buf.len();
    let mut done = 0;
    while done < n {
        let k = (n - done).min(ZEROS.len());
        buf.put(done, &ZEROS[..k])?;
        done += k;
    }
    Ok(n)
}

/// /dev/zero (reads give zeros, writes vanish) and /dev/full (reads give zeros, writes fail with
/// ENOSPC), as Linux's mem devices 1:5 and 1:7.
pub struct Zero {
    full: bool,
}

impl FileOps for Zero {
    fn read(&self, _file: &OpenFile, buf: &mut dyn ReadBuf) -> Result<usize, Errno> {
        zeros(buf)
    }
    fn write(&self, _file: &OpenFile, buf: &mut dyn WriteBuf) -> Result<usize, Errno> {
        if self.full {
            return Err(Errno::ENOSPC);
        }
        Ok(buf.len())
    }
    fn read_at(
        &self,
        _file: &OpenFile,
        _offset: u64,
        buf: &mut dyn ReadBuf,
    ) -> Result<usize, Errno> {
        zeros(buf)
    }
    fn write_at(
        &self,
        file: &OpenFile,
        _offset: u64,
        buf: &mut dyn WriteBuf,
    ) -> Result<usize, Errno> {
        self.write(file, buf)
    }
    fn seek(&self, _file: &OpenFile, _offset: i64, _whence: u32) -> Result<u64, Errno> {
        Ok(0)
    }
    fn stat(&self) -> Stat {
        Stat {
            dev: 5,
            ino: if self.full { 4 } else { 3 },
            nlink: 1,
            mode: 0o020666,
            rdev: (1 << 8) | if self.full { 7 } else { 5 },
            blksize: 4096,
            ..Stat::default()
        }
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// /dev/random and /dev/urandom (1:8, 1:9): the kernel's generator (`arch::random_bytes`, never
/// blocking, as Linux's since 5.6 once seeded); writes are accepted and stirred in.
pub struct Random {
    minor: u64,
}

impl FileOps for Random {
    fn read(&self, _file: &OpenFile, buf: &mut dyn ReadBuf) -> Result<usize, Errno> {
        let n = buf.len();
        let mut tmp = [0u8; 256];
        let mut done = 0;
        while done < n {
            let k = (n - done).min(tmp.len());
            crate::arch::random_bytes(&mut tmp[..k]);
            buf.put(done, &tmp[..k])?;
            done += k;
        }
        Ok(n)
    }
    fn write(&self, _file: &OpenFile, buf: &mut dyn WriteBuf) -> Result<usize, Errno> {
        let n = buf.len();
        let mut at = 0;
        while at < n {
            let k = (n - at).min(8);
            let mut tmp = [0u8; 8];
            buf.get(at, &mut tmp[..k])?;
            crate::arch::random_stir(u64::from_le_bytes(tmp));
            at += k;
        }
        Ok(n)
    }
    fn seekable(&self) -> bool {
        false
    }
    fn stat(&self) -> Stat {
        Stat {
            dev: 5,
            ino: 4 + self.minor,
            nlink: 1,
            mode: 0o020666,
            rdev: (1 << 8) | self.minor,
            blksize: 4096,
            ..Stat::default()
        }
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Registers the nodes of this file.
pub fn register() {
    super::register_device(b"/dev/null", |_| Ok(Rc::new(Null)));
    super::register_device(b"/dev/zero", |_| Ok(Rc::new(Zero { full: false })));
    super::register_device(b"/dev/full", |_| Ok(Rc::new(Zero { full: true })));
    super::register_device(b"/dev/random", |_| Ok(Rc::new(Random { minor: 8 })));
    super::register_device(b"/dev/urandom", |_| Ok(Rc::new(Random { minor: 9 })));
}
