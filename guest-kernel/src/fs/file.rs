//! The file-operations trait (Linux's `file_operations`): what every open file is to the VFS.
//!
//! An open file description ([`OpenFile`]) holds an `Rc<dyn FileOps>` plus its offset and flags; the
//! object behind it (a root filesystem file or directory, a pipe end, the console, a socket, a /proc
//! file, /dev/null) implements the operations it supports and inherits the defaults (the errors Linux
//! gives for the rest). The VFS and the system calls name none of them: they call the trait.
//!
//! Data moves through [`ReadBuf`]/[`WriteBuf`] handles: for user memory the system call layer's handle
//! wraps a `mm::uaccess` reader or writer (validated when the call starts, every copy fault-safe), so
//! an operation that sleeps holds no view of user memory across the sleep.
#![deny(unsafe_code)]

use crate::mm::uaccess::{UserReader, UserWriter};
use crate::sync::waitqueue::WaitQueue;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::any::Any;
use core::cell::Cell;
use kcore::errno::Errno;
use kcore::vma::Backing;

pub const POLLIN: u16 = 0x1;
pub const POLLPRI: u16 = 0x2;
pub const POLLOUT: u16 = 0x4;
pub const POLLERR: u16 = 0x8;
pub const POLLHUP: u16 = 0x10;
pub const POLLNVAL: u16 = 0x20;
pub const POLLRDNORM: u16 = 0x40;
pub const POLLWRNORM: u16 = 0x100;

/// Where the bytes of a read go (user memory, or a kernel buffer).
pub trait ReadBuf {
    /// How many bytes the caller wants at most.
    fn len(&self) -> usize;
    /// Delivers `bytes` at offset `at` of the buffer (checked just before the copy for user memory).
    fn put(&mut self, at: usize, bytes: &[u8]) -> Result<(), Errno>;
    /// The whole buffer as one writable slice, when the file can fill it in place: a kernel buffer
    /// only (user memory is reached by copying, never through a slice). None: use `put`.
    fn direct(&mut self) -> Result<Option<&mut [u8]>, Errno> {
        Ok(None)
    }
    /// The user memory behind the buffer, for files whose code copies to it itself (sockets); None
    /// for a kernel buffer.
    fn user_writer(&mut self) -> Option<&mut UserWriter> {
        None
    }
}

/// Where the bytes of a write come from.
pub trait WriteBuf {
    /// How many bytes there are.
    fn len(&self) -> usize;
    /// Fills `dst` with the bytes at offset `at` (checked just before the copy for user memory).
    fn get(&mut self, at: usize, dst: &mut [u8]) -> Result<(), Errno>;
    /// The user memory behind the buffer (see [`ReadBuf::user_writer`]).
    fn user_reader(&mut self) -> Option<&mut UserReader> {
        None
    }
}

/// A kernel buffer as the destination of a read.
pub struct KernelBuf<'a>(pub &'a mut [u8]);

impl ReadBuf for KernelBuf<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn put(&mut self, at: usize, bytes: &[u8]) -> Result<(), Errno> {
        self.0
            .get_mut(at..at + bytes.len())
            .ok_or(Errno::EFAULT)?
            .copy_from_slice(bytes);
        Ok(())
    }
    fn direct(&mut self) -> Result<Option<&mut [u8]>, Errno> {
        Ok(Some(self.0))
    }
}

/// A kernel buffer as the source of a write.
pub struct KernelBytes<'a>(pub &'a [u8]);

impl WriteBuf for KernelBytes<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn get(&mut self, at: usize, dst: &mut [u8]) -> Result<(), Errno> {
        dst.copy_from_slice(self.0.get(at..at + dst.len()).ok_or(Errno::EFAULT)?);
        Ok(())
    }
}

/// Adds `q` to a poll's list of queues to sleep on (once).
pub fn add_queue(queues: &mut Vec<WaitQueue>, q: WaitQueue) {
    if !queues.contains(&q) {
        queues.push(q);
    }
}

/// The poll mask for a file's readiness: readable (POLLIN|POLLRDNORM), writable (POLLOUT|POLLWRNORM),
/// hung up (POLLHUP), in error (POLLERR).
pub fn poll_mask(readable: bool, writable: bool, hup: bool, err: bool) -> u16 {
    let mut events = 0;
    if readable {
        events |= POLLIN | POLLRDNORM;
    }
    if writable {
        events |= POLLOUT | POLLWRNORM;
    }
    if hup {
        events |= POLLHUP;
    }
    if err {
        events |= POLLERR;
    }
    events
}

/// One directory entry: inode number, DT_* type, name.
pub type DirEntry = (u64, u8, Vec<u8>);

/// The operations of an open file. Every method has Linux's answer for a file that does not support it
/// as its default.
pub trait FileOps: Any {
    /// Reads at the description's offset and advances it. The default reads at the offset with
    /// `read_at` (ESPIPE files must override).
    fn read(&self, file: &OpenFile, buf: &mut dyn ReadBuf) -> Result<usize, Errno> {
        let n = self.read_at(file, file.offset(), buf)?;
        file.set_offset(file.offset() + n as u64);
        Ok(n)
    }
    /// Writes at the description's offset (at the end with O_APPEND) and advances it.
    fn write(&self, file: &OpenFile, buf: &mut dyn WriteBuf) -> Result<usize, Errno> {
        let off = if file.flags() & super::O_APPEND != 0 {
            self.stat().size as u64
        } else {
            file.offset()
        };
        let n = self.write_at(file, off, buf)?;
        file.set_offset(off + n as u64);
        Ok(n)
    }
    /// pread: at `offset`, the description's offset unchanged. ESPIPE for streams.
    fn read_at(
        &self,
        _file: &OpenFile,
        _offset: u64,
        _buf: &mut dyn ReadBuf,
    ) -> Result<usize, Errno> {
        Err(Errno::ESPIPE)
    }
    /// pwrite: at `offset`.
    fn write_at(
        &self,
        _file: &OpenFile,
        _offset: u64,
        _buf: &mut dyn WriteBuf,
    ) -> Result<usize, Errno> {
        Err(Errno::ESPIPE)
    }
    /// Whether read_at/write_at (pread/pwrite, lseek) are meaningful: false for pipes, sockets, ttys.
    fn seekable(&self) -> bool {
        true
    }
    /// The poll(2) events that hold now (all of them: the caller masks what was asked for); the
    /// wait queues woken when they change are added to `queues` (none: the file never blocks, so it
    /// is always ready). `depth` counts nested epoll instances.
    fn poll(&self, _file: &OpenFile, _queues: &mut Vec<WaitQueue>, _depth: u32) -> u16 {
        POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM
    }
    /// Whether the file has a real poll method (pipes, ttys, sockets, epoll): epoll_ctl refuses the
    /// rest (regular files, directories, /proc, /dev/null) with EPERM, as Linux does.
    fn pollable(&self) -> bool {
        false
    }
    /// A device-specific ioctl (FIONBIO, FIOCLEX and FIONCLEX are handled above it).
    fn ioctl(&self, _file: &OpenFile, _cmd: u32, _arg: u64) -> Result<u64, Errno> {
        Err(Errno::ENOTTY)
    }
    /// What a file mapping at `offset` maps (ENODEV: not mappable).
    fn mmap(
        &self,
        _file: &OpenFile,
        _offset: u64,
        _shared: bool,
        _prot: u32,
    ) -> Result<Backing, Errno> {
        Err(Errno::ENODEV)
    }
    /// fstat.
    fn stat(&self) -> Stat;
    /// The new offset for lseek (SEEK_SET 0, SEEK_CUR 1, SEEK_END 2). The default works from `stat`'s
    /// size; ESPIPE for what is not seekable.
    fn seek(&self, file: &OpenFile, offset: i64, whence: u32) -> Result<u64, Errno> {
        if !self.seekable() {
            return Err(Errno::ESPIPE);
        }
        let base = match whence {
            0 => 0,
            1 => file.offset() as i64,
            2 => self.stat().size,
            _ => return Err(Errno::EINVAL),
        };
        let new = base.checked_add(offset).ok_or(Errno::EINVAL)?;
        if new < 0 {
            return Err(Errno::EINVAL);
        }
        file.set_offset(new as u64);
        Ok(new as u64)
    }
    /// ftruncate (EINVAL for what is not a regular file).
    fn truncate(&self, _file: &OpenFile, _len: u64) -> Result<(), Errno> {
        Err(Errno::EINVAL)
    }
    /// fsync/fdatasync: data (and metadata unless `data_only`) on stable storage.
    fn sync(&self, _file: &OpenFile, _data_only: bool) -> Result<(), Errno> {
        Ok(())
    }
    /// The entries of a directory (ENOTDIR for the rest).
    fn readdir(&self, _file: &OpenFile) -> Result<Vec<DirEntry>, Errno> {
        Err(Errno::ENOTDIR)
    }
    /// Whether this is a directory (open with O_WRONLY/O_RDWR is EISDIR, read is EISDIR).
    fn is_dir(&self) -> bool {
        self.stat().mode & 0o170000 == 0o040000
    }
    /// For callers that need the concrete object (the socket calls find their socket this way).
    fn as_any(&self) -> &dyn Any;
}

/// An open file description: shared by `Rc` between descriptors, so dup and fork share the offset.
pub struct OpenFile {
    pub ops: Rc<dyn FileOps>,
    offset: Cell<u64>,
    /// O_ACCMODE | O_APPEND | O_NONBLOCK ... as given to open.
    flags: Cell<u32>,
    /// The path it was opened by (a root filesystem file), for /proc/PID/maps of its mappings.
    pub path: Option<Rc<[u8]>>,
    /// It has held a description (F_OFD_SETLK) or flock(2) lock: its last close releases them.
    locked: Cell<bool>,
}

pub type FileRef = Rc<OpenFile>;

impl Drop for OpenFile {
    /// The last descriptor of the description is gone: its description and flock locks go.
    fn drop(&mut self) {
        if self.locked.get() {
            let st = self.ops.stat();
            let owner = kcore::lock::OFD | (self as *const OpenFile as u64 & !kcore::lock::OFD);
            super::lock::description_closed(super::lock::file_key(st.dev, st.ino), owner);
        }
    }
}

impl OpenFile {
    /// A new description of `ops` with `flags`.
    pub fn new(ops: Rc<dyn FileOps>, flags: u32, path: Option<Rc<[u8]>>) -> FileRef {
        Rc::new(OpenFile {
            ops,
            offset: Cell::new(0),
            flags: Cell::new(flags),
            path,
            locked: Cell::new(false),
        })
    }

    /// The owner of this description's locks (`kcore::lock::OFD` and its address: unique while it
    /// is open); marks it as holding locks, so its last close releases them.
    pub fn lock_owner(&self) -> u64 {
        self.locked.set(true);
        kcore::lock::OFD | (self as *const OpenFile as u64 & !kcore::lock::OFD)
    }
    pub fn offset(&self) -> u64 {
        self.offset.get()
    }
    pub fn set_offset(&self, off: u64) {
        self.offset.set(off)
    }
    pub fn flags(&self) -> u32 {
        self.flags.get()
    }
    pub fn set_flags(&self, flags: u32) {
        self.flags.set(flags)
    }
    pub fn nonblocking(&self) -> bool {
        self.flags() & super::O_NONBLOCK != 0
    }
    /// Opened for reading (O_RDONLY or O_RDWR).
    pub fn readable(&self) -> bool {
        self.flags() & super::O_ACCMODE != super::O_WRONLY
    }
    /// Opened for writing (O_WRONLY or O_RDWR).
    pub fn writable(&self) -> bool {
        matches!(
            self.flags() & super::O_ACCMODE,
            super::O_WRONLY | super::O_RDWR
        )
    }
    /// The object behind the description as a `T`, if it is one.
    pub fn downcast<T: 'static>(&self) -> Option<&T> {
        self.ops.as_any().downcast_ref::<T>()
    }
}

/// Linux `struct stat` (x86-64), the fields this kernel fills.
#[derive(Clone, Copy, Default)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: i64,
    pub blksize: i64,
    pub blocks: i64,
    pub atime: i64,
    pub mtime: i64,
    pub ctime: i64,
}

impl Stat {
    /// The 144-byte `struct stat` image.
    pub fn to_bytes(self) -> [u8; 144] {
        let mut b = [0u8; 144];
        let mut put = |o: usize, v: u64| b[o..o + 8].copy_from_slice(&v.to_le_bytes());
        put(0, self.dev);
        put(8, self.ino);
        put(16, self.nlink);
        put(24, self.mode as u64 | ((self.uid as u64) << 32));
        put(32, self.gid as u64);
        put(40, self.rdev);
        put(48, self.size as u64);
        put(56, self.blksize as u64);
        put(64, self.blocks as u64);
        put(72, self.atime as u64);
        put(88, self.mtime as u64);
        put(104, self.ctime as u64);
        b
    }
}
