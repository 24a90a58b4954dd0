//! Files: the ext2 root filesystem on a virtio block device, the console, open file descriptions and the
//! per-process file descriptor table.
//!
//! `open` resolves a path to an [`OpenFile`] (shared by `Rc` between descriptors, so dup/fork share the
//! offset as on Linux); `read`/`write`/`lseek`/`fstat` act on it.
#![deny(unsafe_code)]

pub mod epoll;
pub mod fd;
pub mod lock;
pub mod pipe;
pub mod proc;

use crate::drivers::virtio;
use crate::sync::KCell;
use alloc::rc::Rc;
use core::cell::RefCell;
use kcore::errno::Errno;
use kcore::ext2::{BlockRead, Ext2, Ext2Error, Inode};

/// The block device under the root filesystem (index into the virtio block devices).
pub struct Disk {
    index: usize,
}

impl BlockRead for Disk {
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Ext2Error> {
        virtio::with_block(self.index, |d| d.read(offset / 512, buf))
            .ok_or(Ext2Error::Io)?
            .map_err(|_| Ext2Error::Io)
    }
}

static ROOT: KCell<Option<Ext2<Disk>>> = KCell::new(None);

/// Why mounting the root failed.
#[derive(Debug)]
pub enum MountError {
    /// `root=` names no known device.
    NoDevice,
    /// The filesystem could not be read.
    Ext2(Ext2Error),
}

/// Mounts the root filesystem from `root=/dev/vdX`.
pub fn mount_root(root: &str) -> Result<(), MountError> {
    let letter = root
        .strip_prefix("/dev/vd")
        .and_then(|s| s.bytes().next())
        .ok_or(MountError::NoDevice)?;
    let index = letter.checked_sub(b'a').ok_or(MountError::NoDevice)? as usize;
    virtio::with_block(index, |_| ()).ok_or(MountError::NoDevice)?;
    let fs = Ext2::open(Disk { index }).map_err(MountError::Ext2)?;
    *ROOT.borrow_mut() = Some(fs);
    Ok(())
}

/// Runs `f` on the root filesystem.
pub fn with_root<R>(f: impl FnOnce(&mut Ext2<Disk>) -> Result<R, Ext2Error>) -> Result<R, Errno> {
    let mut root = ROOT.borrow_mut();
    let fs = root.as_mut().ok_or(Errno::ENOENT)?;
    f(fs).map_err(errno)
}

/// The errno for a filesystem error.
pub fn errno(e: Ext2Error) -> Errno {
    match e {
        Ext2Error::NotFound => Errno::ENOENT,
        Ext2Error::NotDir => Errno::ENOTDIR,
        Ext2Error::Loop => Errno::ELOOP,
        _ => Errno::EIO,
    }
}

/// What an open file description refers to.
pub enum FileKind {
    /// The console (8250 UART, or virtio-console with `console=hvc0`).
    Console,
    /// /dev/null.
    Null,
    /// A file or directory on the root filesystem.
    Ext2(Inode),
    /// One end of a pipe.
    Pipe(pipe::PipeEnd),
    /// A /proc directory or file.
    Proc(proc::ProcFile),
    /// A network socket.
    Socket(crate::net::socket::SocketRef),
    /// An epoll instance.
    Epoll(Rc<RefCell<epoll::Epoll>>),
}

/// An open file description.
pub struct OpenFile {
    pub kind: FileKind,
    pub offset: u64,
    /// O_ACCMODE | O_APPEND | O_NONBLOCK ... as given to open.
    pub flags: u32,
    /// The path it was opened by (a root filesystem file), for /proc/PID/maps of its mappings.
    pub path: Option<Rc<[u8]>>,
}

pub type FileRef = Rc<RefCell<OpenFile>>;

pub const O_ACCMODE: u32 = 3;
pub const O_WRONLY: u32 = 1;
pub const O_RDWR: u32 = 2;
pub const O_CREAT: u32 = 0o100;
pub const O_TRUNC: u32 = 0o1000;
pub const O_DIRECTORY: u32 = 0o200000;
pub const O_NOFOLLOW: u32 = 0o400000;
pub const O_CLOEXEC: u32 = 0o2000000;
pub const O_NONBLOCK: u32 = 0o4000;
pub const O_NOCTTY: u32 = 0o400;

/// A new pipe: (read end, write end) open file descriptions.
pub fn pipe(flags: u32) -> (FileRef, FileRef) {
    let (r, w) = pipe::new();
    let mk = |kind, acc| {
        Rc::new(RefCell::new(OpenFile {
            kind,
            offset: 0,
            flags: acc | (flags & O_NONBLOCK),
            path: None,
        }))
    };
    (mk(FileKind::Pipe(r), 0), mk(FileKind::Pipe(w), O_WRONLY))
}

/// What a read or write may block on: taken out of the open file so no borrow is held while blocked
/// (another process may use the same open file description meanwhile).
pub enum Blocking {
    Console,
    Pipe(Rc<RefCell<pipe::Pipe>>, bool),
}

/// The blocking object behind an open file, if any.
pub fn blocking(f: &FileRef) -> Option<Blocking> {
    let f = f.borrow();
    match &f.kind {
        FileKind::Console => Some(Blocking::Console),
        FileKind::Pipe(e) => Some(Blocking::Pipe(e.pipe.clone(), f.flags & O_NONBLOCK != 0)),
        _ => None,
    }
}

/// The socket behind an open file and whether it is non-blocking.
pub fn socket(f: &FileRef) -> Option<(crate::net::socket::SocketRef, bool)> {
    let f = f.borrow();
    match &f.kind {
        FileKind::Socket(s) => Some((s.clone(), f.flags & O_NONBLOCK != 0)),
        _ => None,
    }
}

/// A new open file description for a socket.
pub fn socket_file(s: crate::net::socket::SocketRef, nonblock: bool) -> FileRef {
    Rc::new(RefCell::new(OpenFile {
        kind: FileKind::Socket(s),
        offset: 0,
        flags: O_RDWR | if nonblock { O_NONBLOCK } else { 0 },
        path: None,
    }))
}

/// Reads from a console or pipe without holding the open file borrowed.
pub fn read_blocking(b: &Blocking, buf: &mut [u8]) -> Result<usize, Errno> {
    match b {
        Blocking::Console => crate::tty::read(buf),
        Blocking::Pipe(p, nb) => pipe::read(p, buf, *nb),
    }
}

/// Writes to a console or pipe without holding the open file borrowed.
pub fn write_blocking(b: &Blocking, buf: &[u8]) -> Result<usize, Errno> {
    match b {
        Blocking::Console => crate::tty::write(buf),
        Blocking::Pipe(p, nb) => pipe::write(p, buf, *nb),
    }
}

/// A new description of the console.
pub fn console() -> FileRef {
    Rc::new(RefCell::new(OpenFile {
        kind: FileKind::Console,
        offset: 0,
        flags: O_RDWR,
        path: None,
    }))
}

/// Opens an absolute path.
pub fn open(path: &[u8], flags: u32) -> Result<FileRef, Errno> {
    let kind = match path {
        b"/dev/console" | b"/dev/tty" | b"/dev/ttyS0" => FileKind::Console,
        b"/dev/null" => FileKind::Null,
        p if p == b"/proc" || p.starts_with(b"/proc/") => {
            if flags & O_ACCMODE != 0 {
                return Err(Errno::EACCES);
            }
            let f = proc::open(p)?;
            if flags & O_DIRECTORY != 0 && !matches!(f, proc::ProcFile::Dir(_)) {
                return Err(Errno::ENOTDIR);
            }
            FileKind::Proc(f)
        }
        _ => {
            let inode = with_root(|fs| fs.resolve(path, flags & O_NOFOLLOW == 0));
            let inode = match inode {
                Err(Errno::ENOENT) if flags & O_CREAT != 0 => return Err(Errno::EROFS),
                other => other?,
            };
            if flags & O_DIRECTORY != 0 && !inode.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            if inode.is_symlink() {
                return Err(Errno::ELOOP);
            }
            if flags & O_ACCMODE != 0 || flags & O_TRUNC != 0 {
                return Err(if inode.is_dir() {
                    Errno::EISDIR
                } else {
                    Errno::EROFS
                });
            }
            FileKind::Ext2(inode)
        }
    };
    let path = matches!(kind, FileKind::Ext2(_)).then(|| Rc::from(path));
    Ok(Rc::new(RefCell::new(OpenFile {
        kind,
        offset: 0,
        flags: flags & !O_CLOEXEC,
        path,
    })))
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

/// The stat of an open file.
pub fn stat(f: &OpenFile) -> Stat {
    match &f.kind {
        FileKind::Console => Stat {
            dev: 5,
            ino: 1,
            nlink: 1,
            mode: 0o020620,
            rdev: (5 << 8) | 1,
            blksize: 1024,
            ..Stat::default()
        },
        FileKind::Pipe(_) => Stat {
            dev: 12,
            ino: 3,
            nlink: 1,
            mode: 0o010600,
            blksize: 4096,
            ..Stat::default()
        },
        FileKind::Proc(p) => Stat {
            dev: 4,
            ino: 1,
            nlink: 1,
            mode: match p {
                proc::ProcFile::Dir(_) => 0o040555,
                proc::ProcFile::Data(_) => 0o100444,
            },
            blksize: 1024,
            ..Stat::default()
        },
        // An anonymous inode, as Linux's anon_inode:[eventpoll] (mode 0600, no type bits).
        FileKind::Epoll(_) => Stat {
            dev: 13,
            ino: 1,
            nlink: 1,
            mode: 0o600,
            blksize: 4096,
            ..Stat::default()
        },
        FileKind::Socket(_) => Stat {
            dev: 8,
            ino: 1,
            nlink: 1,
            mode: 0o140777,
            blksize: 4096,
            ..Stat::default()
        },
        FileKind::Null => Stat {
            dev: 5,
            ino: 2,
            nlink: 1,
            mode: 0o020666,
            rdev: (1 << 8) | 3,
            blksize: 4096,
            ..Stat::default()
        },
        FileKind::Ext2(i) => Stat {
            dev: (254 << 8),
            ino: i.ino as u64,
            nlink: i.links as u64,
            mode: i.mode as u32,
            uid: i.uid as u32,
            gid: i.gid as u32,
            size: i.size as i64,
            blksize: 4096,
            blocks: i.sectors as i64,
            atime: i.atime as i64,
            mtime: i.mtime as i64,
            ctime: i.ctime as i64,
            ..Stat::default()
        },
    }
}

/// Reads from an open file at its offset into `buf` (a kernel view of user memory).
pub fn read(f: &mut OpenFile, buf: &mut [u8]) -> Result<usize, Errno> {
    match &f.kind {
        FileKind::Console => crate::tty::read(buf),
        FileKind::Pipe(_) | FileKind::Socket(_) => Err(Errno::EBADF),
        FileKind::Epoll(_) => Err(Errno::EINVAL),
        FileKind::Proc(proc::ProcFile::Dir(_)) => Err(Errno::EISDIR),
        FileKind::Proc(proc::ProcFile::Data(d)) => {
            let start = (f.offset as usize).min(d.len());
            let n = buf.len().min(d.len() - start);
            buf[..n].copy_from_slice(&d[start..start + n]);
            f.offset += n as u64;
            Ok(n)
        }
        FileKind::Null => Ok(0),
        FileKind::Ext2(inode) => {
            if inode.is_dir() {
                return Err(Errno::EISDIR);
            }
            let inode = inode.clone();
            let n = with_root(|fs| fs.read_at(&inode, f.offset, buf))?;
            f.offset += n as u64;
            Ok(n)
        }
    }
}

/// Writes `buf` to an open file.
pub fn write(f: &mut OpenFile, buf: &[u8]) -> Result<usize, Errno> {
    match &f.kind {
        FileKind::Console => crate::tty::write(buf),
        FileKind::Null => Ok(buf.len()),
        FileKind::Epoll(_) => Err(Errno::EINVAL),
        FileKind::Ext2(_) | FileKind::Pipe(_) | FileKind::Proc(_) | FileKind::Socket(_) => {
            Err(Errno::EBADF)
        }
    }
}

/// Moves the offset (SEEK_SET 0, SEEK_CUR 1, SEEK_END 2).
pub fn lseek(f: &mut OpenFile, offset: i64, whence: u32) -> Result<u64, Errno> {
    let size = match &f.kind {
        FileKind::Ext2(i) => i.size as i64,
        FileKind::Proc(proc::ProcFile::Data(d)) => d.len() as i64,
        FileKind::Proc(proc::ProcFile::Dir(_)) => 0,
        _ => return Err(Errno::ESPIPE),
    };
    let base = match whence {
        0 => 0,
        1 => f.offset as i64,
        2 => size,
        _ => return Err(Errno::EINVAL),
    };
    let new = base.checked_add(offset).ok_or(Errno::EINVAL)?;
    if new < 0 {
        return Err(Errno::EINVAL);
    }
    f.offset = new as u64;
    Ok(f.offset)
}

/// The entries of an open directory: (inode, DT_* type, name).
pub fn dir_entries(f: &OpenFile) -> Result<alloc::vec::Vec<(u64, u8, alloc::vec::Vec<u8>)>, Errno> {
    match &f.kind {
        FileKind::Ext2(inode) if inode.is_dir() => {
            let inode = inode.clone();
            let entries = with_root(|fs| fs.read_dir(&inode))?;
            Ok(entries
                .into_iter()
                .map(|e| {
                    let dt = match e.file_type {
                        1 => 8,
                        2 => 4,
                        3 => 2,
                        4 => 6,
                        5 => 1,
                        6 => 12,
                        7 => 10,
                        _ => 0,
                    };
                    (e.ino as u64, dt, e.name)
                })
                .collect())
        }
        FileKind::Proc(proc::ProcFile::Dir(d)) => Ok(proc::list(*d)),
        _ => Err(Errno::ENOTDIR),
    }
}
