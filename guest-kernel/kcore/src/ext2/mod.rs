//! ext2 (revision 0 and 1, as `mke2fs -t ext2 -d` makes it), read and written.
//!
//! [`Ext2`] owns a [`BlockDevice`] and reads the superblock, the group descriptors, inodes, directories
//! and the direct/indirect block maps on demand. Cached: the group descriptors, the allocation bitmaps
//! of the groups touched, a few indirect blocks and inodes. The kernel reads file data straight into
//! the frames it maps ([`Ext2::extents`]).
//!
//! Writing ([`write`], [`dir`]): every change goes to the device at once (write-through: data blocks,
//! indirect blocks, inodes, directory blocks, bitmaps, then the group descriptors and the superblock's
//! free counts), ordered so that a crash between two writes leaks at most a block or an inode (marked
//! used, referenced by nothing: what `e2fsck` reclaims), never leaves a reference to a free block.
//! [`Ext2::sync`] flushes the device. A filesystem with features this code does not maintain is
//! mounted read-only ([`Ext2::writable`]).

extern crate alloc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

const EXT2_MAGIC: u16 = 0xef53;
/// Most symbolic links one path lookup follows (Linux's MAXSYMLINKS).
pub const MAX_SYMLINKS: u32 = 40;
/// The root directory's inode number.
pub const ROOT_INO: u32 = 2;
/// Incompatible features this reader understands: FILETYPE.
const INCOMPAT_SUPPORTED: u32 = 0x0002;
/// Read-only-compatible features the writer keeps right: SPARSE_SUPER, LARGE_FILE (BTREE_DIR is
/// unused by Linux). Others (huge files, gdt checksums, ...) make the filesystem read-only here.
const RO_COMPAT_SUPPORTED: u32 = 0x0001 | 0x0002 | 0x0004;
const RO_COMPAT_LARGE_FILE: u32 = 0x0002;

mod dindex;
pub mod dir;
pub mod write;
#[cfg(test)]
mod wtests;

/// File type bits of `i_mode`.
pub const S_IFMT: u16 = 0o170000;
pub const S_IFDIR: u16 = 0o040000;
pub const S_IFREG: u16 = 0o100000;
pub const S_IFLNK: u16 = 0o120000;

/// What went wrong reading or writing the filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ext2Error {
    /// No free block or inode.
    NoSpace,
    /// The name exists already.
    Exists,
    /// A directory to remove or replace is not empty.
    NotEmpty,
    /// A directory where a non-directory is needed.
    IsDir,
    /// A name longer than 255 bytes.
    NameTooLong,
    /// The link count would pass the maximum.
    TooManyLinks,
    /// The filesystem is mounted read-only (or has features this code cannot keep right).
    ReadOnly,
    /// An argument makes no sense (a directory moved under itself, `.` or `..` as a name).
    Invalid,
    /// A file would grow past what the block map can address.
    TooBig,
    /// The device failed a read.
    Io,
    /// No ext2 superblock magic.
    BadMagic,
    /// Uses an incompatible feature this reader does not know (the feature bits).
    Unsupported(u32),
    /// A path component does not exist.
    NotFound,
    /// A path component is not a directory.
    NotDir,
    /// Too many symbolic links.
    Loop,
    /// Inconsistent on-disk data.
    Corrupt(&'static str),
}

impl fmt::Display for Ext2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ext2Error::Io => f.write_str("I/O error"),
            Ext2Error::NoSpace => f.write_str("no space left on device"),
            Ext2Error::Exists => f.write_str("file exists"),
            Ext2Error::NotEmpty => f.write_str("directory not empty"),
            Ext2Error::IsDir => f.write_str("is a directory"),
            Ext2Error::NameTooLong => f.write_str("file name too long"),
            Ext2Error::TooManyLinks => f.write_str("too many links"),
            Ext2Error::ReadOnly => f.write_str("read-only filesystem"),
            Ext2Error::Invalid => f.write_str("invalid argument"),
            Ext2Error::TooBig => f.write_str("file too large"),
            Ext2Error::BadMagic => f.write_str("not an ext2 filesystem"),
            Ext2Error::Unsupported(_) => f.write_str("unsupported incompatible feature"),
            Ext2Error::NotFound => f.write_str("no such file or directory"),
            Ext2Error::NotDir => f.write_str("not a directory"),
            Ext2Error::Loop => f.write_str("too many levels of symbolic links"),
            Ext2Error::Corrupt(what) => {
                f.write_str("corrupt filesystem: ")?;
                f.write_str(what)
            }
        }
    }
}

/// The device under a filesystem. Offsets and lengths are multiples of 512.
pub trait BlockDevice {
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Ext2Error>;
    /// Writes `buf` at `offset` (ReadOnly for a device that cannot be written).
    fn write(&mut self, _offset: u64, _buf: &[u8]) -> Result<(), Ext2Error> {
        Err(Ext2Error::ReadOnly)
    }
    /// Makes every completed write durable (a disk cache flush).
    fn flush(&mut self) -> Result<(), Ext2Error> {
        Ok(())
    }
}

/// The parts of an on-disk inode the reader uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inode {
    pub ino: u32,
    pub mode: u16,
    pub uid: u16,
    pub gid: u16,
    pub size: u64,
    pub links: u16,
    pub atime: u32,
    pub mtime: u32,
    pub ctime: u32,
    /// 512-byte sectors allocated.
    pub sectors: u32,
    pub block: [u32; 15],
    /// i_flags (EXT2_INDEX_FL 0x1000: an htree-indexed directory).
    pub flags: u32,
}

impl Inode {
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
    pub fn is_reg(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u32,
    /// The FILETYPE byte (1 regular, 2 directory, 7 symlink, ...), 0 if unknown.
    pub file_type: u8,
    pub name: Vec<u8>,
}

/// A run of file data on disk: `len` bytes of the file at `file_offset` are at `disk_offset`
/// (`disk_offset == None` for a hole, which reads as zeros).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub file_offset: u64,
    pub disk_offset: Option<u64>,
    pub len: u64,
}

/// One block group's descriptor, as cached.
#[derive(Clone, Copy, Debug, Default)]
struct Group {
    block_bitmap: u32,
    inode_bitmap: u32,
    inode_table: u32,
    free_blocks: u32,
    free_inodes: u32,
    used_dirs: u32,
}

/// A mounted ext2 filesystem.
pub struct Ext2<D: BlockDevice> {
    dev: D,
    block_size: u64,
    inode_size: u64,
    inodes_per_group: u32,
    inodes_count: u32,
    blocks_count: u32,
    blocks_per_group: u32,
    first_data_block: u32,
    /// First inode number for ordinary files (11 in revision 0).
    first_ino: u32,
    /// The superblock as read (1024 bytes), written back with new counts.
    sb: Vec<u8>,
    free_blocks: u32,
    free_inodes: u32,
    groups: Vec<Group>,
    /// Group descriptors or superblock counts changed since they were last written.
    meta_dirty: bool,
    /// Something (a cached metadata block, a bitmap, the counts) may have changed since the last
    /// [`Ext2::write_back`]: set wherever one of them is marked dirty, cleared when a write-back
    /// wrote them all, so [`Ext2::dirty`] is one load (it is asked at every `/dev/vdX` access and
    /// every periodic write-back).
    unsynced: bool,
    /// Whether this code may write the filesystem (features it keeps, and not mounted read-only).
    writable: bool,
    /// Cached allocation bitmaps: (group, is-inode-bitmap, contents, dirty).
    bitmaps: Vec<(u32, bool, Vec<u8>, bool)>,
    /// Recently used inodes (write-through).
    icache: Vec<Inode>,
    /// Recently used metadata blocks (indirect, directory, inode table): (block number, contents,
    /// dirty), oldest first. Changes stay here until [`Ext2::sync`] or eviction writes them back.
    cache: Vec<(u32, Vec<u8>, bool)>,
    /// A block-sized buffer for reads that do not fill whole blocks of the caller's memory.
    scratch: Vec<u8>,
    /// Inodes open in the VFS, with their count of open files: one whose last link goes while it
    /// is open keeps its blocks until the last close (Linux's iput), see [`Ext2::closed`].
    open: Vec<(u32, u32)>,
    /// Indexes of the large directories used last ([`dindex`]).
    dindex: Vec<dindex::DirIndex>,
}

/// Where the block pointer for a file block lives.
enum Pointers {
    /// In the inode's `i_block` array.
    Inode,
    /// In this indirect block.
    Block(u32),
    /// Under a zero indirect pointer: a hole.
    Hole,
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// Metadata blocks kept (indirect blocks, directory blocks, inode table blocks): written through.
const CACHE_BLOCKS: usize = 64;
const ICACHE: usize = 32;

fn put16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

impl<D: BlockDevice> Ext2<D> {
    /// Reads the superblock and group descriptors.
    pub fn open(mut dev: D) -> Result<Self, Ext2Error> {
        let mut sb = [0u8; 1024];
        dev.read(1024, &mut sb)?;
        if le16(&sb, 56) != EXT2_MAGIC {
            return Err(Ext2Error::BadMagic);
        }
        let rev = le32(&sb, 76);
        let incompat = if rev >= 1 { le32(&sb, 96) } else { 0 };
        if incompat & !INCOMPAT_SUPPORTED != 0 {
            return Err(Ext2Error::Unsupported(incompat & !INCOMPAT_SUPPORTED));
        }
        let log = le32(&sb, 24);
        if log > 6 {
            return Err(Ext2Error::Corrupt("block size"));
        }
        let block_size = 1024u64 << log;
        let inode_size = if rev >= 1 { le16(&sb, 88) as u64 } else { 128 };
        let inodes_count = le32(&sb, 0);
        let blocks_count = le32(&sb, 4);
        let first_data_block = le32(&sb, 20);
        let blocks_per_group = le32(&sb, 32);
        let inodes_per_group = le32(&sb, 40);
        if blocks_per_group == 0
            || inodes_per_group == 0
            || inode_size < 128
            || !inode_size.is_power_of_two()
            || inode_size > block_size
            || first_data_block >= blocks_count
        {
            return Err(Ext2Error::Corrupt("superblock geometry"));
        }
        let groups = (blocks_count - first_data_block).div_ceil(blocks_per_group) as u64;
        if groups * inodes_per_group as u64 != inodes_count as u64 || groups > 1 << 20 {
            return Err(Ext2Error::Corrupt("superblock group counts"));
        }
        let gdt_bytes = (groups * 32).div_ceil(block_size) * block_size;
        let mut gdt = vec![0u8; gdt_bytes as usize];
        dev.read((first_data_block as u64 + 1) * block_size, &mut gdt)?;
        let groups: Vec<Group> = (0..groups as usize)
            .map(|g| {
                let d = &gdt[g * 32..g * 32 + 32];
                Group {
                    block_bitmap: le32(d, 0),
                    inode_bitmap: le32(d, 4),
                    inode_table: le32(d, 8),
                    free_blocks: le16(d, 12) as u32,
                    free_inodes: le16(d, 14) as u32,
                    used_dirs: le16(d, 16) as u32,
                }
            })
            .collect();
        let ro_compat = if rev >= 1 { le32(&sb, 100) } else { 0 };
        let state = le16(&sb, 58);
        Ok(Ext2 {
            dev,
            block_size,
            inode_size,
            inodes_per_group,
            inodes_count,
            blocks_count,
            blocks_per_group,
            first_data_block,
            first_ino: if rev >= 1 { le32(&sb, 84) } else { 11 },
            free_blocks: le32(&sb, 12),
            free_inodes: le32(&sb, 16),
            sb: sb.to_vec(),
            groups,
            meta_dirty: false,
            unsynced: false,
            // Only a cleanly unmounted filesystem with features kept right here is written.
            writable: ro_compat & !RO_COMPAT_SUPPORTED == 0 && state & 1 != 0 && state & 2 == 0,
            bitmaps: Vec::new(),
            icache: Vec::new(),
            cache: Vec::new(),
            scratch: vec![0u8; block_size as usize],
            open: Vec::new(),
            dindex: Vec::new(),
        })
    }

    /// The filesystem block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// The device, for reading file data the kernel located with [`Ext2::extents`].
    pub fn device(&mut self) -> &mut D {
        &mut self.dev
    }

    /// The device byte offset of inode `ino`'s on-disk record.
    fn inode_pos(&self, ino: u32) -> Result<u64, Ext2Error> {
        if ino == 0 || ino > self.inodes_count {
            return Err(Ext2Error::Corrupt("inode number"));
        }
        let group = ((ino - 1) / self.inodes_per_group) as usize;
        let index = ((ino - 1) % self.inodes_per_group) as u64;
        let table = self
            .groups
            .get(group)
            .ok_or(Ext2Error::Corrupt("inode group"))?
            .inode_table as u64;
        Ok(table * self.block_size + index * self.inode_size)
    }

    /// Reads inode `ino`.
    pub fn inode(&mut self, ino: u32) -> Result<Inode, Ext2Error> {
        if let Some(i) = self.icache.iter().position(|i| i.ino == ino) {
            return Ok(self.icache[i].clone());
        }
        let byte = self.inode_pos(ino)?;
        // The first 128 bytes of the record, from the (cached) inode table block.
        let within = (byte % self.block_size) as usize;
        let mut rec = [0u8; 128];
        rec.copy_from_slice(
            &self.meta_block((byte / self.block_size) as u32)?[within..within + 128],
        );
        let b = &rec[..];
        let mode = le16(b, 0);
        let size_lo = le32(b, 4) as u64;
        let size_hi = if mode & S_IFMT == S_IFREG {
            le32(b, 108) as u64
        } else {
            0
        };
        let mut block = [0u32; 15];
        for (i, slot) in block.iter_mut().enumerate() {
            *slot = le32(b, 40 + i * 4);
        }
        let inode = Inode {
            ino,
            mode,
            uid: le16(b, 2),
            gid: le16(b, 24),
            size: size_lo | (size_hi << 32),
            atime: le32(b, 8),
            ctime: le32(b, 12),
            mtime: le32(b, 16),
            links: le16(b, 26),
            sectors: le32(b, 28),
            block,
            flags: le32(b, 32),
        };
        self.cache_inode(&inode);
        Ok(inode)
    }

    /// Keeps `inode` in the inode cache (replacing an older copy).
    fn cache_inode(&mut self, inode: &Inode) {
        if let Some(i) = self.icache.iter().position(|i| i.ino == inode.ino) {
            self.icache.remove(i);
        } else if self.icache.len() == ICACHE {
            self.icache.remove(0);
        }
        self.icache.push(inode.clone());
    }

    /// `block` if it is a block number inside the filesystem's data area (Corrupt otherwise).
    fn check_block(&self, block: u32) -> Result<u32, Ext2Error> {
        if block < self.first_data_block || block >= self.blocks_count {
            return Err(Ext2Error::Corrupt("block number past the end"));
        }
        Ok(block)
    }

    /// The contents of indirect block `block` (cached).
    fn indirect(&mut self, block: u32) -> Result<&[u8], Ext2Error> {
        self.meta_block(block)
    }

    /// Replaces metadata block `block` (the whole block) in the cache, dirty: it reaches the disk at
    /// the next sync or when evicted.
    fn write_meta(&mut self, block: u32, data: &[u8]) -> Result<(), Ext2Error> {
        self.check_block(block)?;
        self.unsynced = true;
        if let Some(i) = self.cache.iter().rposition(|(b, _, _)| *b == block) {
            self.cache[i].1.copy_from_slice(data);
            self.cache[i].2 = true;
        } else {
            let mut raw = self.evict_one()?;
            raw.copy_from_slice(data);
            self.cache.push((block, raw, true));
        }
        Ok(())
    }

    /// Makes room for one more cached block when the cache is full (the oldest clean block goes; if
    /// all are dirty, the oldest is written back first) and returns a block-sized buffer to reuse.
    fn evict_one(&mut self) -> Result<Vec<u8>, Ext2Error> {
        if self.cache.len() < CACHE_BLOCKS {
            return Ok(vec![0u8; self.block_size as usize]);
        }
        let i = self.cache.iter().position(|e| !e.2).unwrap_or(0);
        if self.cache[i].2 {
            let (b, raw, _) = &self.cache[i];
            self.dev.write(*b as u64 * self.block_size, raw)?;
        }
        Ok(self.cache.remove(i).1)
    }

    /// Writes every dirty cached metadata block back.
    fn write_back_cache(&mut self) -> Result<(), Ext2Error> {
        for i in 0..self.cache.len() {
            if self.cache[i].2 {
                let (b, raw, _) = &self.cache[i];
                self.dev.write(*b as u64 * self.block_size, raw)?;
                self.cache[i].2 = false;
            }
        }
        Ok(())
    }

    /// The contents of metadata block `block` (cached).
    fn meta_block(&mut self, block: u32) -> Result<&[u8], Ext2Error> {
        self.check_block(block)?;
        if let Some(i) = self.cache.iter().rposition(|(b, _, _)| *b == block) {
            return Ok(&self.cache[i].1);
        }
        let mut raw = self.evict_one()?;
        self.dev.read(block as u64 * self.block_size, &mut raw)?;
        self.cache.push((block, raw, false));
        Ok(&self.cache.last().expect("just pushed").1)
    }

    /// For file block `n`: the pointer array holding its block number, its index there, and how many
    /// file blocks from `n` on that array covers.
    fn pointers(&mut self, inode: &Inode, n: u64) -> Result<(Pointers, usize, u64), Ext2Error> {
        let per = self.block_size / 4;
        if n < 12 {
            return Ok((Pointers::Inode, n as usize, 12 - n));
        }
        let mut n = n - 12;
        // (levels of indirection, root pointer)
        let (levels, root) = if n < per {
            (1, inode.block[12])
        } else if n - per < per * per {
            n -= per;
            (2, inode.block[13])
        } else {
            n -= per + per * per;
            if n >= per * per * per {
                return Err(Ext2Error::Corrupt("file block beyond triple indirect"));
            }
            (3, inode.block[14])
        };
        let mut block = root;
        for level in (1..levels).rev() {
            if block == 0 {
                break;
            }
            let span = per.pow(level);
            let idx = ((n / span) % per) as usize;
            block = le32(self.indirect(block)?, idx * 4);
        }
        let idx = (n % per) as usize;
        let count = per - idx as u64;
        if block == 0 {
            return Ok((Pointers::Hole, idx, count));
        }
        Ok((Pointers::Block(block), idx, count))
    }

    /// The disk block holding file block `n` of `inode`, 0 for a hole.
    pub fn block_of(&mut self, inode: &Inode, n: u64) -> Result<u32, Ext2Error> {
        Ok(match self.pointers(inode, n)? {
            (Pointers::Inode, i, _) => inode.block[i],
            (Pointers::Block(b), i, _) => le32(self.indirect(b)?, i * 4),
            (Pointers::Hole, _, _) => 0,
        })
        .and_then(|b| if b == 0 { Ok(0) } else { self.check_block(b) })
    }

    /// The on-disk runs of `inode`'s bytes `[offset, offset + len)` (clipped to the file size),
    /// adjacent blocks merged.
    pub fn extents(
        &mut self,
        inode: &Inode,
        offset: u64,
        len: u64,
    ) -> Result<Vec<Extent>, Ext2Error> {
        let end = offset.saturating_add(len).min(inode.size);
        let bs = self.block_size;
        // Block sizes are powers of two: shifts and masks instead of divisions (kernel mode is emulated,
        // and every instruction in this per-block loop counts).
        let shift = bs.trailing_zeros();
        let mask = bs - 1;
        let (first_data_block, blocks_count) = (self.first_data_block, self.blocks_count);
        let mut out: Vec<Extent> = Vec::new();
        let mut pos = offset;
        while pos < end {
            let (src, first, count) = self.pointers(inode, pos >> shift)?;
            let ptrs: Option<&[u8]> = match src {
                Pointers::Block(b) => Some(self.indirect(b)?),
                _ => None,
            };
            for i in first..first + count as usize {
                if pos >= end {
                    break;
                }
                let disk = match (&src, ptrs) {
                    (Pointers::Inode, _) => inode.block[i],
                    (Pointers::Block(_), Some(p)) => le32(p, i * 4),
                    _ => 0,
                };
                if disk != 0 && (disk < first_data_block || disk >= blocks_count) {
                    return Err(Ext2Error::Corrupt("block number past the end"));
                }
                let within = pos & mask;
                let chunk = (bs - within).min(end - pos);
                let disk_offset = (disk != 0).then(|| ((disk as u64) << shift) + within);
                match out.last_mut() {
                    Some(last)
                        if match (last.disk_offset, disk_offset) {
                            (Some(a), Some(b)) => a + last.len == b,
                            (None, None) => true,
                            _ => false,
                        } =>
                    {
                        last.len += chunk
                    }
                    _ => out.push(Extent {
                        file_offset: pos,
                        disk_offset,
                        len: chunk,
                    }),
                }
                pos += chunk;
            }
        }
        Ok(out)
    }

    /// Reads file bytes at `offset` into `buf`; returns how many (0 at end of file).
    pub fn read_at(
        &mut self,
        inode: &Inode,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, Ext2Error> {
        if offset >= inode.size {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(inode.size - offset) as usize;
        let mut block = self.take_scratch();
        let mut done = 0;
        while done < n {
            let pos = offset + done as u64;
            let within = (pos % self.block_size) as usize;
            let chunk = (self.block_size as usize - within).min(n - done);
            let disk = match self.block_of(inode, pos / self.block_size) {
                Ok(d) => d,
                Err(e) => {
                    self.scratch = block;
                    return Err(e);
                }
            };
            if disk == 0 {
                buf[done..done + chunk].fill(0);
            } else if let Err(e) = self.dev.read(disk as u64 * self.block_size, &mut block) {
                self.scratch = block;
                return Err(e);
            } else {
                buf[done..done + chunk].copy_from_slice(&block[within..within + chunk]);
            }
            done += chunk;
        }
        self.scratch = block;
        Ok(n)
    }

    /// All entries of directory `dir`, `.` and `..` included.
    pub fn read_dir(&mut self, dir: &Inode) -> Result<Vec<DirEntry>, Ext2Error> {
        if !dir.is_dir() {
            return Err(Ext2Error::NotDir);
        }
        if dir.size > self.max_dir_size() {
            return Err(Ext2Error::Corrupt("directory size"));
        }
        let bs = self.block_size;
        let mut out = Vec::new();
        for n in 0..dir.size.div_ceil(bs) {
            let b = self.block_of(dir, n)?;
            if b == 0 {
                continue;
            }
            let len = (dir.size - n * bs).min(bs) as usize;
            let data = &self.meta_block(b)?[..len];
            let mut o = 0usize;
            while o + 8 <= data.len() {
                let ino = le32(data, o);
                let rec_len = le16(data, o + 4) as usize;
                let name_len = data[o + 6] as usize;
                if rec_len < 8 || o + rec_len > data.len() || 8 + name_len > rec_len {
                    return Err(Ext2Error::Corrupt("directory entry"));
                }
                if ino != 0 {
                    out.push(DirEntry {
                        ino,
                        file_type: data[o + 7],
                        name: data[o + 8..o + 8 + name_len].to_vec(),
                    });
                }
                o += rec_len;
            }
        }
        Ok(out)
    }

    /// Looks `name` up in directory `dir`: through its index when it is large ([`dindex`]), else one
    /// (cached) directory block at a time.
    pub fn lookup(&mut self, dir: &Inode, name: &[u8]) -> Result<Option<u32>, Ext2Error> {
        if !dir.is_dir() {
            return Err(Ext2Error::NotDir);
        }
        if dir.size > self.max_dir_size() {
            return Err(Ext2Error::Corrupt("directory size"));
        }
        if let Some(found) = self.indexed_entry(dir, name)? {
            return Ok(found.map(|(_, _, _, ino)| ino));
        }
        let bs = self.block_size;
        for n in 0..dir.size.div_ceil(bs) {
            let b = self.block_of(dir, n)?;
            if b == 0 {
                continue;
            }
            let len = (dir.size - n * bs).min(bs) as usize;
            let data = &self.meta_block(b)?[..len];
            let mut o = 0usize;
            while o + 8 <= data.len() {
                let ino = le32(data, o);
                let rec_len = le16(data, o + 4) as usize;
                let name_len = data[o + 6] as usize;
                if rec_len < 8 || o + rec_len > data.len() || 8 + name_len > rec_len {
                    return Err(Ext2Error::Corrupt("directory entry"));
                }
                if ino != 0 && &data[o + 8..o + 8 + name_len] == name {
                    return Ok(Some(ino));
                }
                o += rec_len;
            }
        }
        Ok(None)
    }

    /// The block-sized scratch buffer (taken out while in use; a fresh one if it is out already).
    fn take_scratch(&mut self) -> Vec<u8> {
        let b = core::mem::take(&mut self.scratch);
        if b.len() == self.block_size as usize {
            b
        } else {
            vec![0u8; self.block_size as usize]
        }
    }

    /// The largest directory this code reads whole (a larger size is corruption, not a directory:
    /// 64 Ki blocks, e.g. over a million short names with 4 KiB blocks).
    fn max_dir_size(&self) -> u64 {
        (self.blocks_count as u64 * self.block_size).min(self.block_size << 16)
    }

    /// The target of a symbolic link.
    pub fn read_link(&mut self, link: &Inode) -> Result<Vec<u8>, Ext2Error> {
        if link.size > self.block_size || link.size >= 4096 {
            return Err(Ext2Error::Corrupt("symlink size"));
        }
        if link.size < 60 && link.sectors == 0 {
            // A fast symlink keeps its target in i_block.
            let bytes: Vec<u8> = link.block.iter().flat_map(|w| w.to_le_bytes()).collect();
            return Ok(bytes[..link.size as usize].to_vec());
        }
        let mut target = vec![0u8; link.size as usize];
        self.read_at(link, 0, &mut target)?;
        Ok(target)
    }

    /// Resolves an absolute `path` (relative paths are taken from the root), following symbolic links
    /// (the last component's too when `follow` is true).
    pub fn resolve(&mut self, path: &[u8], follow: bool) -> Result<Inode, Ext2Error> {
        let mut links = 0;
        self.resolve_from(ROOT_INO, path, follow, &mut links)
    }

    /// Resolves `path` from directory `start`; `links` counts the symbolic links followed so far
    /// (Linux's MAXSYMLINKS: the 41st is ELOOP).
    fn resolve_from(
        &mut self,
        start: u32,
        path: &[u8],
        follow: bool,
        links: &mut u32,
    ) -> Result<Inode, Ext2Error> {
        let mut cur = self.inode(if path.first() == Some(&b'/') {
            ROOT_INO
        } else {
            start
        })?;
        let parts: Vec<&[u8]> = path
            .split(|&c| c == b'/')
            .filter(|p| !p.is_empty())
            .collect();
        for (i, part) in parts.iter().enumerate() {
            if !cur.is_dir() {
                return Err(Ext2Error::NotDir);
            }
            let ino = self.lookup(&cur, part)?.ok_or(Ext2Error::NotFound)?;
            let next = self.inode(ino)?;
            let last = i + 1 == parts.len();
            if next.is_symlink() && (!last || follow) {
                *links += 1;
                if *links > MAX_SYMLINKS {
                    return Err(Ext2Error::Loop);
                }
                let target = self.read_link(&next)?;
                cur = self.resolve_from(cur.ino, &target, true, links)?;
            } else {
                cur = next;
            }
        }
        Ok(cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    struct FileDev(Vec<u8>, usize);

    impl BlockDevice for FileDev {
        fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Ext2Error> {
            assert_eq!(offset % 512, 0, "unaligned read offset");
            assert_eq!(buf.len() % 512, 0, "unaligned read length");
            self.1 += 1;
            let o = offset as usize;
            buf.copy_from_slice(self.0.get(o..o + buf.len()).ok_or(Ext2Error::Io)?);
            Ok(())
        }
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kcore-ext2-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// Stages a tree and makes an ext2 image of it with `mke2fs -d`.
    fn make_image(tag: &str, block_size: u32) -> (PathBuf, Vec<u8>) {
        let dir = tmpdir(tag);
        let root = dir.join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("sbin")).unwrap();
        fs::create_dir_all(root.join("a/b/c")).unwrap();
        fs::write(root.join("etc/motd"), b"Welcome to microvm!\n").unwrap();
        fs::write(root.join("a/b/c/deep.txt"), b"deep").unwrap();
        // Big enough for double indirect blocks with 1 KiB blocks (more than 12 + 256 blocks).
        let big: Vec<u8> = (0..700 * 1024u32)
            .map(|i| (i * 7 + i / 4096) as u8)
            .collect();
        fs::write(root.join("sbin/big"), &big).unwrap();
        std::os::unix::fs::symlink("../etc/motd", root.join("sbin/motd-link")).unwrap();
        // A sparse file: 64 KiB of hole, 5 bytes, another hole up to 200 KiB.
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = fs::File::create(root.join("sparse")).unwrap();
            f.seek(SeekFrom::Start(64 * 1024)).unwrap();
            f.write_all(b"data!").unwrap();
            f.set_len(200 * 1024).unwrap();
        }
        let long_target = format!("/etc/{}/../motd", "x".repeat(80));
        std::os::unix::fs::symlink(&long_target, root.join("long-link")).unwrap();
        fs::create_dir_all(root.join(format!("etc/{}", "x".repeat(80)))).unwrap();
        // A chain of 40 symlinks to /etc/motd (the most one lookup follows) and one of 41.
        fs::create_dir_all(root.join("chain")).unwrap();
        std::os::unix::fs::symlink("/etc/motd", root.join("chain/l0")).unwrap();
        for i in 1..=40 {
            std::os::unix::fs::symlink(format!("l{}", i - 1), root.join(format!("chain/l{i}")))
                .unwrap();
        }
        std::os::unix::fs::symlink("loop-b", root.join("chain/loop-a")).unwrap();
        std::os::unix::fs::symlink("loop-a", root.join("chain/loop-b")).unwrap();
        let img = dir.join("fs.img");
        let st = Command::new("mke2fs")
            .args([
                "-q",
                "-F",
                "-t",
                "ext2",
                "-b",
                &block_size.to_string(),
                "-d",
            ])
            .arg(&root)
            .arg(&img)
            .arg("4M")
            .status()
            .expect("mke2fs (e2fsprogs) must be installed");
        assert!(st.success());
        let bytes = fs::read(&img).unwrap();
        (dir, bytes)
    }

    fn expected_big() -> Vec<u8> {
        (0..700 * 1024u32)
            .map(|i| (i * 7 + i / 4096) as u8)
            .collect()
    }

    fn check_image(dir: &Path, bytes: Vec<u8>) {
        let mut fs = Ext2::open(FileDev(bytes, 0)).unwrap();
        let motd = fs.resolve(b"/etc/motd", true).unwrap();
        assert!(motd.is_reg());
        assert_eq!(motd.size, 20);
        let mut buf = [0u8; 64];
        let n = fs.read_at(&motd, 0, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"Welcome to microvm!\n");
        assert_eq!(fs.read_at(&motd, 8, &mut buf[..4]).unwrap(), 4);
        assert_eq!(&buf[..4], b"to m");
        assert_eq!(fs.read_at(&motd, 20, &mut buf).unwrap(), 0);

        let deep = fs.resolve(b"a/b/c/deep.txt", true).unwrap();
        assert_eq!(deep.size, 4);
        assert_eq!(fs.resolve(b"/etc/nope", true), Err(Ext2Error::NotFound));
        assert_eq!(fs.resolve(b"/etc/motd/x", true), Err(Ext2Error::NotDir));

        let big = fs.resolve(b"/sbin/big", true).unwrap();
        let want = expected_big();
        assert_eq!(big.size, want.len() as u64);
        let mut got = vec![0u8; want.len()];
        assert_eq!(fs.read_at(&big, 0, &mut got).unwrap(), want.len());
        assert!(got == want, "big file content differs");
        // Extents cover the file exactly and point at the right bytes.
        let ext = fs.extents(&big, 0, u64::MAX).unwrap();
        assert_eq!(ext.iter().map(|e| e.len).sum::<u64>(), want.len() as u64);
        for e in &ext {
            let d = e.disk_offset.unwrap() as usize;
            let f = e.file_offset as usize;
            assert!(fs.device().0[d..d + e.len as usize] == want[f..f + e.len as usize]);
        }

        let sparse = fs.resolve(b"/sparse", true).unwrap();
        assert_eq!(sparse.size, 200 * 1024);
        let mut content = vec![0xffu8; 200 * 1024];
        assert_eq!(fs.read_at(&sparse, 0, &mut content).unwrap(), 200 * 1024);
        assert!(
            content[..64 * 1024].iter().all(|&b| b == 0),
            "leading hole reads as zeros"
        );
        assert_eq!(&content[64 * 1024..64 * 1024 + 5], b"data!");
        assert!(content[64 * 1024 + 5..].iter().all(|&b| b == 0));
        let ext = fs.extents(&sparse, 0, u64::MAX).unwrap();
        assert_eq!(ext.iter().map(|e| e.len).sum::<u64>(), 200 * 1024);
        assert_eq!(
            ext[0].disk_offset, None,
            "the hole is an extent without disk blocks"
        );

        let link = fs.resolve(b"/sbin/motd-link", false).unwrap();
        assert!(link.is_symlink());
        assert_eq!(fs.read_link(&link).unwrap(), b"../etc/motd");
        assert_eq!(fs.resolve(b"/sbin/motd-link", true).unwrap().ino, motd.ino);
        assert_eq!(fs.resolve(b"/long-link", true).unwrap().ino, motd.ino);
        assert_eq!(fs.resolve(b"/chain/l39", true).unwrap().ino, motd.ino);
        assert_eq!(fs.resolve(b"/chain/l40", true), Err(Ext2Error::Loop));
        assert!(fs.resolve(b"/chain/l40", false).unwrap().is_symlink());
        assert_eq!(fs.resolve(b"/chain/loop-a", true), Err(Ext2Error::Loop));

        let root = fs.inode(ROOT_INO).unwrap();
        let names: Vec<Vec<u8>> = fs
            .read_dir(&root)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        for n in [&b"."[..], b"..", b"etc", b"sbin", b"a", b"lost+found"] {
            assert!(
                names.iter().any(|x| x == n),
                "root lacks {:?}",
                String::from_utf8_lossy(n)
            );
        }
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn reads_a_mke2fs_image_with_1k_blocks() {
        let (dir, bytes) = make_image("1k", 1024);
        check_image(&dir, bytes);
    }

    #[test]
    fn reads_a_mke2fs_image_with_4k_blocks() {
        let (dir, bytes) = make_image("4k", 4096);
        check_image(&dir, bytes);
    }

    #[test]
    fn rejects_non_ext2() {
        let r = Ext2::open(FileDev(vec![0; 8192], 0));
        assert!(matches!(r, Err(Ext2Error::BadMagic)));
    }
}
