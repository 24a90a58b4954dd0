//! Simple device nodes the VFS serves itself: /dev/null.
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

/// Registers the nodes of this file.
pub fn register() {
    super::register_device(b"/dev/null", |_| Ok(Rc::new(Null)));
}
