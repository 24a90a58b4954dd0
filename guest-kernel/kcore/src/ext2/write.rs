//! Writing ext2: inode records, block and inode allocation (bitmaps, group descriptors, superblock
//! counts), file data through the block map (single, double and triple indirect blocks allocated as
//! needed; holes stay holes), truncation (freeing data and indirect blocks), and sync.
//!
//! Allocation looks near a goal (the block after the file's previous one, else the inode's group)
//! in the cached bitmap of one group at a time, skipping groups whose descriptor says they are full,
//! so a write costs no scan of the whole disk. A bitmap is written the moment it changes, before the
//! block or inode is referenced; group descriptors and the superblock's free counts are written by
//! [`Ext2::sync`] (and e2fsck recomputes them, as it does after a crash on Linux).

use super::*;

/// The most links an inode may have (Linux's EXT2_LINK_MAX).
pub const LINK_MAX: u16 = 32000;
/// i_flags: an htree-indexed directory.
const INDEX_FL: u32 = 0x1000;

impl<D: BlockDevice> Ext2<D> {
    /// Whether the filesystem can be written (the features it uses are kept right here, it was
    /// cleanly unmounted, and it is not mounted read-only).
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Mounts read-only (`true`) or read-write; read-write is refused (ReadOnly) when the filesystem
    /// cannot be written here.
    pub fn set_read_only(&mut self, ro: bool) -> Result<(), Ext2Error> {
        if ro {
            self.sync()?;
            self.writable = false;
            return Ok(());
        }
        let rev = le32(&self.sb, 76);
        let ro_compat = if rev >= 1 { le32(&self.sb, 100) } else { 0 };
        let state = le16(&self.sb, 58);
        if ro_compat & !RO_COMPAT_SUPPORTED != 0 || state & 1 == 0 || state & 2 != 0 {
            return Err(Ext2Error::ReadOnly);
        }
        self.writable = true;
        Ok(())
    }

    fn need_writable(&self) -> Result<(), Ext2Error> {
        if self.writable {
            Ok(())
        } else {
            Err(Ext2Error::ReadOnly)
        }
    }

    /// (blocks, free blocks, blocks free to others than root, inodes, free inodes, block size) for
    /// statfs.
    pub fn statfs(&self) -> (u64, u64, u64, u64, u64, u64) {
        let reserved = le32(&self.sb, 8) as u64;
        (
            self.blocks_count as u64,
            self.free_blocks as u64,
            (self.free_blocks as u64).saturating_sub(reserved),
            self.inodes_count as u64,
            self.free_inodes as u64,
            self.block_size,
        )
    }

    /// The blocks Linux's ext2_statfs leaves out of f_blocks (its default "bsddf" accounting): the
    /// first data block, the superblock, group descriptor and reserved GDT copies (only in groups 0,
    /// 1 and powers of 3, 5 and 7 with SPARSE_SUPER), and every group's two bitmaps and inode table.
    pub fn statfs_overhead(&self) -> u64 {
        let groups = self.groups.len() as u64;
        let gdb = (groups * 32).div_ceil(self.block_size);
        let rev = le32(&self.sb, 76);
        let sparse = rev >= 1 && le32(&self.sb, 100) & 1 != 0;
        let has_super = |g: u64| {
            if !sparse || g <= 1 {
                return true;
            }
            [3u64, 5, 7].iter().any(|&b| {
                let mut p = b;
                while p < g {
                    p *= b;
                }
                p == g
            })
        };
        // RESIZE_INODE: blocks kept after each descriptor copy for online growth.
        let reserved_gdt = if rev >= 1 && le32(&self.sb, 92) & 0x10 != 0 {
            le16(&self.sb, 206) as u64
        } else {
            0
        };
        let itb = (self.inodes_per_group as u64 * self.inode_size).div_ceil(self.block_size);
        let copies: u64 = (0..groups).filter(|&g| has_super(g)).count() as u64;
        self.first_data_block as u64 + copies * (1 + gdb + reserved_gdt) + groups * (2 + itb)
    }

    /// Writes `inode`'s fields into its on-disk record (the rest of the record is kept).
    pub fn write_inode(&mut self, inode: &Inode) -> Result<(), Ext2Error> {
        self.need_writable()?;
        let byte = self.inode_pos(inode.ino)?;
        let block = (byte / self.block_size) as u32;
        let mut buf = self.meta_block(block)?.to_vec();
        let o = (byte % self.block_size) as usize;
        let b = &mut buf[o..o + 128];
        put16(b, 0, inode.mode);
        put16(b, 2, inode.uid);
        put32(b, 4, inode.size as u32);
        put32(b, 8, inode.atime);
        put32(b, 12, inode.ctime);
        put32(b, 16, inode.mtime);
        put16(b, 24, inode.gid);
        put16(b, 26, inode.links);
        put32(b, 28, inode.sectors);
        put32(b, 32, inode.flags);
        for (i, blk) in inode.block.iter().enumerate() {
            put32(b, 40 + i * 4, *blk);
        }
        // i_size_high (i_dir_acl for directories, where it stays 0).
        put32(
            b,
            108,
            if inode.is_reg() {
                (inode.size >> 32) as u32
            } else {
                0
            },
        );
        self.write_meta(block, &buf)?;
        if inode.is_reg() && inode.size >= 1 << 31 {
            self.set_large_file();
        }
        self.cache_inode(inode);
        Ok(())
    }

    /// Marks the LARGE_FILE feature (a file of 2 GiB or more exists).
    fn set_large_file(&mut self) {
        if le32(&self.sb, 76) >= 1 && le32(&self.sb, 100) & RO_COMPAT_LARGE_FILE == 0 {
            let f = le32(&self.sb, 100) | RO_COMPAT_LARGE_FILE;
            put32(&mut self.sb, 100, f);
            self.meta_dirty = true;
            self.unsynced = true;
        }
    }

    /// The cached bitmap of `group` (`inodes`: the inode bitmap), read on first use.
    fn bitmap(&mut self, group: u32, inodes: bool) -> Result<usize, Ext2Error> {
        if let Some(i) = self
            .bitmaps
            .iter()
            .position(|(g, k, _, _)| *g == group && *k == inodes)
        {
            return Ok(i);
        }
        let gd = self.groups[group as usize];
        let block = self.check_block(if inodes {
            gd.inode_bitmap
        } else {
            gd.block_bitmap
        })?;
        let mut raw = vec![0u8; self.block_size as usize];
        self.dev.read(block as u64 * self.block_size, &mut raw)?;
        self.bitmaps.push((group, inodes, raw, false));
        Ok(self.bitmaps.len() - 1)
    }

    /// Marks the cached bitmap at index `i` changed (written back by [`Ext2::sync`]).
    fn write_bitmap(&mut self, i: usize) -> Result<(), Ext2Error> {
        self.bitmaps[i].3 = true;
        self.unsynced = true;
        Ok(())
    }

    /// Writes the cached bitmap at index `i` to its block.
    fn write_back_bitmap(&mut self, i: usize) -> Result<(), Ext2Error> {
        let (group, inodes) = (self.bitmaps[i].0, self.bitmaps[i].1);
        let gd = self.groups[group as usize];
        let block = if inodes {
            gd.inode_bitmap
        } else {
            gd.block_bitmap
        };
        let off = block as u64 * self.block_size;
        self.dev.write(off, &self.bitmaps[i].2)?;
        self.bitmaps[i].3 = false;
        Ok(())
    }

    /// Whether anything changed is not on the disk yet (for periodic write-back, and before a read
    /// or write of the device under the filesystem).
    pub fn dirty(&self) -> bool {
        debug_assert!(
            self.unsynced || !self.scan_dirty(),
            "metadata marked dirty without `unsynced`"
        );
        self.unsynced
    }

    /// Whether a cached block, a bitmap or the counts are dirty, found by looking at each.
    fn scan_dirty(&self) -> bool {
        self.meta_dirty || self.cache.iter().any(|e| e.2) || self.bitmaps.iter().any(|b| b.3)
    }

    /// Finds a clear bit in bitmap `i` among the first `limit` bits, from `start` on (wrapping).
    fn find_clear(&self, i: usize, start: u32, limit: u32) -> Option<u32> {
        let bits = &self.bitmaps[i].2;
        let search = |from: u32, to: u32| -> Option<u32> {
            let mut bit = from;
            while bit < to {
                let byte = bits[(bit / 8) as usize];
                if byte == 0xff {
                    bit = (bit / 8 + 1) * 8;
                    continue;
                }
                if byte & (1 << (bit % 8)) == 0 {
                    return Some(bit);
                }
                bit += 1;
            }
            None
        };
        let start = start.min(limit);
        search(start, limit).or_else(|| search(0, start))
    }

    /// Allocates a block, preferably at `goal` or after it; the bitmap is written at once.
    pub fn alloc_block(&mut self, goal: u32) -> Result<u32, Ext2Error> {
        self.need_writable()?;
        if self.free_blocks == 0 {
            return Err(Ext2Error::NoSpace);
        }
        let ngroups = self.groups.len() as u32;
        let goal = if goal < self.first_data_block || goal >= self.blocks_count {
            self.first_data_block
        } else {
            goal
        };
        let first_group = (goal - self.first_data_block) / self.blocks_per_group;
        for k in 0..ngroups {
            let g = (first_group + k) % ngroups;
            if self.groups[g as usize].free_blocks == 0 {
                continue;
            }
            let base = self.first_data_block + g * self.blocks_per_group;
            let limit = self.blocks_per_group.min(self.blocks_count - base);
            let start = if k == 0 { goal - base } else { 0 };
            let i = self.bitmap(g, false)?;
            let Some(bit) = self.find_clear(i, start, limit) else {
                // The descriptor's count was wrong: believe the bitmap.
                self.groups[g as usize].free_blocks = 0;
                continue;
            };
            self.bitmaps[i].2[(bit / 8) as usize] |= 1 << (bit % 8);
            self.write_bitmap(i)?;
            self.groups[g as usize].free_blocks -= 1;
            self.free_blocks = self.free_blocks.saturating_sub(1);
            self.meta_dirty = true;
            self.unsynced = true;
            return Ok(base + bit);
        }
        Err(Ext2Error::NoSpace)
    }

    /// Frees block `block` (its bitmap bit, the counts).
    pub fn free_block(&mut self, block: u32) -> Result<(), Ext2Error> {
        let block = self.check_block(block)?;
        let g = (block - self.first_data_block) / self.blocks_per_group;
        let bit = (block - self.first_data_block) % self.blocks_per_group;
        let i = self.bitmap(g, false)?;
        let byte = &mut self.bitmaps[i].2[(bit / 8) as usize];
        if *byte & (1 << (bit % 8)) == 0 {
            return Err(Ext2Error::Corrupt("freeing a free block"));
        }
        *byte &= !(1 << (bit % 8));
        self.write_bitmap(i)?;
        self.groups[g as usize].free_blocks += 1;
        self.free_blocks += 1;
        self.meta_dirty = true;
        self.unsynced = true;
        self.cache.retain(|(b, _, _)| *b != block);
        Ok(())
    }

    /// Allocates an inode for a new file (`dir`: a directory), near `parent`'s group, and returns it
    /// zeroed with `mode`, one link and the times set to `now`; its record is written.
    pub fn alloc_inode(&mut self, parent: u32, mode: u16, now: u32) -> Result<Inode, Ext2Error> {
        self.need_writable()?;
        if self.free_inodes == 0 {
            return Err(Ext2Error::NoSpace);
        }
        let dir = mode & S_IFMT == S_IFDIR;
        let ngroups = self.groups.len() as u32;
        let first_group = (parent.max(1) - 1) / self.inodes_per_group;
        for k in 0..ngroups {
            let g = (first_group + k) % ngroups;
            if self.groups[g as usize].free_inodes == 0 {
                continue;
            }
            let i = self.bitmap(g, true)?;
            // Reserved inodes (below first_ino) are never handed out.
            let base = g * self.inodes_per_group;
            let start = self.first_ino.saturating_sub(1).saturating_sub(base);
            let found = self
                .find_clear(i, start, self.inodes_per_group)
                .filter(|&b| base + b + 1 >= self.first_ino);
            let Some(bit) = found else {
                continue;
            };
            self.bitmaps[i].2[(bit / 8) as usize] |= 1 << (bit % 8);
            self.write_bitmap(i)?;
            let gd = &mut self.groups[g as usize];
            gd.free_inodes -= 1;
            if dir {
                gd.used_dirs += 1;
            }
            self.free_inodes = self.free_inodes.saturating_sub(1);
            self.meta_dirty = true;
            self.unsynced = true;
            let ino = base + bit + 1;
            let inode = Inode {
                ino,
                mode,
                links: 1,
                atime: now,
                mtime: now,
                ctime: now,
                ..Inode::default()
            };
            self.write_new_inode(&inode)?;
            return Ok(inode);
        }
        Err(Ext2Error::NoSpace)
    }

    /// Writes a fresh record for `inode` (the whole record zeroed first: no dtime, no leftovers;
    /// i_extra_isize 32 where the record has room, as Linux sets it).
    fn write_new_inode(&mut self, inode: &Inode) -> Result<(), Ext2Error> {
        let byte = self.inode_pos(inode.ino)?;
        let block = (byte / self.block_size) as u32;
        let mut buf = self.meta_block(block)?.to_vec();
        let o = (byte % self.block_size) as usize;
        let len = self.inode_size as usize;
        buf[o..o + len].fill(0);
        if self.inode_size >= 160 {
            put16(&mut buf, o + 128, 32);
        }
        self.write_meta(block, &buf)?;
        self.write_inode(inode)
    }

    /// Frees inode `inode` (links 0): its blocks, then dtime, then its bitmap bit.
    pub fn free_inode(&mut self, inode: &mut Inode, now: u32) -> Result<(), Ext2Error> {
        self.truncate_blocks(inode, 0)?;
        inode.size = 0;
        inode.links = 0;
        self.write_inode(inode)?;
        // dtime: the record says when it was deleted (e2fsck's sign of a deleted inode).
        let byte = self.inode_pos(inode.ino)?;
        let block = (byte / self.block_size) as u32;
        let mut buf = self.meta_block(block)?.to_vec();
        // A dtime below s_inodes_count reads as an orphan-list link to e2fsck (ext3's use of the
        // field), so a clock near the epoch (no RTC) is moved past it.
        let dtime = now.max(self.inodes_count.saturating_add(1));
        put32(&mut buf, (byte % self.block_size) as usize + 20, dtime);
        self.write_meta(block, &buf)?;
        self.icache.retain(|i| i.ino != inode.ino);
        self.drop_index(inode.ino);
        let g = (inode.ino - 1) / self.inodes_per_group;
        let bit = (inode.ino - 1) % self.inodes_per_group;
        let i = self.bitmap(g, true)?;
        let byte = &mut self.bitmaps[i].2[(bit / 8) as usize];
        if *byte & (1 << (bit % 8)) == 0 {
            return Err(Ext2Error::Corrupt("freeing a free inode"));
        }
        *byte &= !(1 << (bit % 8));
        self.write_bitmap(i)?;
        let gd = &mut self.groups[g as usize];
        gd.free_inodes += 1;
        if inode.is_dir() {
            gd.used_dirs = gd.used_dirs.saturating_sub(1);
        }
        self.free_inodes += 1;
        self.meta_dirty = true;
        self.unsynced = true;
        Ok(())
    }

    /// Writes back what changed (metadata blocks, bitmaps, the group descriptors and the
    /// superblock's counts; file data is written at once), then flushes the device.
    pub fn sync(&mut self) -> Result<(), Ext2Error> {
        self.write_back()?;
        self.dev.flush()
    }

    /// Writes back what changed, without the device flush (periodic write-back).
    pub fn write_back(&mut self) -> Result<(), Ext2Error> {
        self.write_back_cache()?;
        for i in 0..self.bitmaps.len() {
            if self.bitmaps[i].3 {
                self.write_back_bitmap(i)?;
            }
        }
        if self.meta_dirty {
            let bs = self.block_size as usize;
            let gdt_bytes = (self.groups.len() * 32).div_ceil(bs) * bs;
            let gdt_at = (self.first_data_block as u64 + 1) * self.block_size;
            let mut gdt = vec![0u8; gdt_bytes];
            self.dev.read(gdt_at, &mut gdt)?;
            for (g, gd) in self.groups.iter().enumerate() {
                let d = &mut gdt[g * 32..g * 32 + 32];
                put16(d, 12, gd.free_blocks as u16);
                put16(d, 14, gd.free_inodes as u16);
                put16(d, 16, gd.used_dirs as u16);
            }
            self.dev.write(gdt_at, &gdt)?;
            put32(&mut self.sb, 12, self.free_blocks);
            put32(&mut self.sb, 16, self.free_inodes);
            self.dev.write(1024, &self.sb)?;
            self.meta_dirty = false;
        }
        // Everything dirty was written above.
        self.unsynced = false;
        Ok(())
    }

    /// The device was written underneath the mounted filesystem (a program wrote `/dev/vdX`): the
    /// cached metadata (blocks, bitmaps, inodes, directory indexes) is dropped, and the
    /// superblock's free counts and the group descriptors are read again, so what the write
    /// changed is what this filesystem sees, as Linux's ext2 sees it in the block device's buffer
    /// cache. The caller wrote everything dirty back first ([`Ext2::write_back`]); anything still
    /// dirty is kept. A superblock whose geometry changed (another filesystem written over this
    /// one) is not taken: Corrupt, and the old view stays.
    pub fn reload(&mut self) -> Result<(), Ext2Error> {
        self.cache.retain(|e| e.2);
        self.bitmaps.retain(|b| b.3);
        self.icache.clear();
        self.dindex.clear();
        if self.meta_dirty {
            return Ok(());
        }
        let mut sb = [0u8; 1024];
        self.dev.read(1024, &mut sb)?;
        if le16(&sb, 56) != super::EXT2_MAGIC
            || le32(&sb, 0) != self.inodes_count
            || le32(&sb, 4) != self.blocks_count
            || le32(&sb, 20) != self.first_data_block
            || 1024u64 << le32(&sb, 24).min(6) != self.block_size
        {
            return Err(Ext2Error::Corrupt("superblock changed under the mount"));
        }
        let bs = self.block_size as usize;
        let gdt_bytes = (self.groups.len() * 32).div_ceil(bs) * bs;
        let mut gdt = vec![0u8; gdt_bytes];
        self.dev.read(
            (self.first_data_block as u64 + 1) * self.block_size,
            &mut gdt,
        )?;
        for (g, gd) in self.groups.iter_mut().enumerate() {
            let d = &gdt[g * 32..g * 32 + 32];
            gd.block_bitmap = le32(d, 0);
            gd.inode_bitmap = le32(d, 4);
            gd.inode_table = le32(d, 8);
            gd.free_blocks = le16(d, 12) as u32;
            gd.free_inodes = le16(d, 14) as u32;
            gd.used_dirs = le16(d, 16) as u32;
        }
        self.free_blocks = le32(&sb, 12);
        self.free_inodes = le32(&sb, 16);
        self.sb = sb.to_vec();
        Ok(())
    }

    /// The number of block pointers per indirect block.
    fn per_block(&self) -> u64 {
        self.block_size / 4
    }

    /// The disk block of file block `n`, allocating it (and the indirect blocks leading to it) when
    /// it is a hole. Changes `inode` (block map, sector count) but does not write it.
    pub(super) fn map_alloc(
        &mut self,
        inode: &mut Inode,
        n: u64,
        goal: u32,
    ) -> Result<(u32, bool), Ext2Error> {
        let per = self.per_block();
        let sectors_per_block = (self.block_size / 512) as u32;
        if n < 12 {
            let b = inode.block[n as usize];
            if b != 0 {
                return Ok((self.check_block(b)?, false));
            }
            let b = self.alloc_block(goal)?;
            inode.block[n as usize] = b;
            inode.sectors += sectors_per_block;
            return Ok((b, true));
        }
        let mut rest = n - 12;
        let (levels, slot) = if rest < per {
            (1u32, 12usize)
        } else if rest - per < per * per {
            rest -= per;
            (2, 13)
        } else {
            rest -= per + per * per;
            if rest >= per * per * per {
                return Err(Ext2Error::TooBig);
            }
            (3, 14)
        };
        // The root indirect block.
        if inode.block[slot] == 0 {
            let b = self.alloc_block(goal)?;
            self.zero_block(b)?;
            inode.block[slot] = b;
            inode.sectors += sectors_per_block;
        }
        let mut table = self.check_block(inode.block[slot])?;
        for level in (0..levels).rev() {
            let idx = ((rest / per.pow(level)) % per) as usize;
            let entry = le32(self.indirect(table)?, idx * 4);
            if entry != 0 {
                if level == 0 {
                    return Ok((self.check_block(entry)?, false));
                }
                table = self.check_block(entry)?;
                continue;
            }
            let b = self.alloc_block(goal)?;
            if level > 0 {
                self.zero_block(b)?;
            }
            inode.sectors += sectors_per_block;
            self.set_pointer(table, idx, b)?;
            if level == 0 {
                return Ok((b, true));
            }
            table = b;
        }
        Err(Ext2Error::Corrupt("block map walk"))
    }

    /// Writes zeros over block `b`.
    fn zero_block(&mut self, b: u32) -> Result<(), Ext2Error> {
        let zeros = vec![0u8; self.block_size as usize];
        self.write_meta(b, &zeros)
    }

    /// Sets entry `idx` of indirect block `table` to `value` (in the cache, dirty).
    fn set_pointer(&mut self, table: u32, idx: usize, value: u32) -> Result<(), Ext2Error> {
        self.indirect(table)?;
        let pos = self
            .cache
            .iter()
            .rposition(|(b, _, _)| *b == table)
            .ok_or(Ext2Error::Corrupt("indirect cache"))?;
        put32(&mut self.cache[pos].1, idx * 4, value);
        self.cache[pos].2 = true;
        self.unsynced = true;
        Ok(())
    }

    /// Writes `data` at `offset` of `inode` (growing it; holes in between stay holes) and writes the
    /// inode. Returns how many bytes were written: fewer than asked when the disk fills up part way
    /// (NoSpace only when nothing could be written).
    pub fn write_at(
        &mut self,
        inode: &mut Inode,
        offset: u64,
        data: &[u8],
        now: u32,
    ) -> Result<usize, Ext2Error> {
        self.need_writable()?;
        if data.is_empty() {
            return Ok(0);
        }
        let bs = self.block_size;
        let max = self.max_file_size();
        if offset >= max {
            return Err(Ext2Error::TooBig);
        }
        let data = &data[..data.len().min((max - offset) as usize)];
        let mut block = self.take_scratch();
        let mut done = 0usize;
        let mut goal = 0u32;
        let mut err = None;
        while done < data.len() {
            let pos = offset + done as u64;
            let n = pos / bs;
            let within = (pos % bs) as usize;
            let chunk = (bs as usize - within).min(data.len() - done);
            if goal == 0 {
                goal = self.goal_for(inode, n);
            }
            let (disk, fresh) = match self.map_alloc(inode, n, goal) {
                Ok(x) => x,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            };
            goal = disk + 1;
            let at = disk as u64 * bs;
            let r = if chunk == bs as usize {
                self.dev.write(at, &data[done..done + chunk])
            } else {
                // A partial block: what is around the new bytes is the old block, or zeros.
                let r = if fresh {
                    block.fill(0);
                    Ok(())
                } else {
                    self.dev.read(at, &mut block)
                };
                r.and_then(|_| {
                    block[within..within + chunk].copy_from_slice(&data[done..done + chunk]);
                    self.dev.write(at, &block)
                })
            };
            if let Err(e) = r {
                err = Some(e);
                break;
            }
            done += chunk;
        }
        self.scratch = block;
        if done > 0 {
            inode.size = inode.size.max(offset + done as u64);
            inode.mtime = now;
            inode.ctime = now;
        }
        // The inode records the blocks allocated even when the write failed part way.
        self.write_inode(inode)?;
        match err {
            Some(e) if done == 0 => Err(e),
            _ => Ok(done),
        }
    }

    /// Allocates the blocks under `[offset, offset + len)` of `inode` (holes become blocks; nothing
    /// is written into them: the caller's page cache holds the bytes and writes whole blocks back
    /// later) and grows the size over what was reserved, with new times; writes the inode. Returns
    /// how many bytes are covered: fewer than asked when the disk fills up part way (NoSpace only
    /// when nothing could be). As on Linux's ext2, a crash before the data is written back can leave
    /// such a block holding what the disk had there before.
    pub fn reserve(
        &mut self,
        inode: &mut Inode,
        offset: u64,
        len: usize,
        now: u32,
    ) -> Result<usize, Ext2Error> {
        self.need_writable()?;
        if len == 0 {
            return Ok(0);
        }
        let bs = self.block_size;
        let max = self.max_file_size();
        if offset >= max {
            return Err(Ext2Error::TooBig);
        }
        let len = len.min((max - offset) as usize);
        let mut done = 0usize;
        let mut goal = 0u32;
        let mut err = None;
        while done < len {
            let pos = offset + done as u64;
            let n = pos / bs;
            let chunk = (bs - pos % bs).min((len - done) as u64) as usize;
            if goal == 0 {
                goal = self.goal_for(inode, n);
            }
            match self.map_alloc(inode, n, goal) {
                Ok((disk, _)) => goal = disk + 1,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
            done += chunk;
        }
        if done > 0 {
            inode.size = inode.size.max(offset + done as u64);
            inode.mtime = now;
            inode.ctime = now;
        }
        self.write_inode(inode)?;
        match err {
            Some(e) if done == 0 => Err(e),
            _ => Ok(done),
        }
    }

    /// Where to look for the block after file block `n`: just past the previous block, else at the
    /// start of the inode's group.
    pub(super) fn goal_for(&mut self, inode: &Inode, n: u64) -> u32 {
        if n > 0 {
            if let Ok(prev) = self.block_of(inode, n - 1) {
                if prev != 0 {
                    return prev + 1;
                }
            }
        }
        let g = (inode.ino - 1) / self.inodes_per_group;
        self.first_data_block + g * self.blocks_per_group
    }

    /// The largest file size the block map (and a 32-bit sector count) can hold.
    pub fn max_file_size(&self) -> u64 {
        let per = self.per_block();
        let blocks = 12 + per + per * per + per * per * per;
        let by_map = blocks.saturating_mul(self.block_size);
        // i_blocks counts 512-byte sectors in 32 bits (data and indirect blocks).
        let by_sectors = (u32::MAX as u64 * 512) / 2;
        by_map.min(by_sectors)
    }

    /// Sets the size of `inode` to `size`: blocks past it are freed (indirect blocks that become empty
    /// too), the tail of the last block zeroed on disk (so a later extension reads zeros); growing
    /// leaves a hole. Writes the inode.
    pub fn truncate(&mut self, inode: &mut Inode, size: u64, now: u32) -> Result<(), Ext2Error> {
        self.need_writable()?;
        if size > self.max_file_size() {
            return Err(Ext2Error::TooBig);
        }
        if size < inode.size {
            let bs = self.block_size;
            let within = (size % bs) as usize;
            if within != 0 {
                let disk = self.block_of(inode, size / bs)?;
                if disk != 0 {
                    let mut block = self.take_scratch();
                    let at = disk as u64 * bs;
                    let r = self.dev.read(at, &mut block).and_then(|_| {
                        block[within..].fill(0);
                        self.dev.write(at, &block)
                    });
                    self.scratch = block;
                    r?;
                }
            }
            self.truncate_blocks(inode, size.div_ceil(bs))?;
        }
        inode.size = size;
        inode.mtime = now;
        inode.ctime = now;
        self.write_inode(inode)
    }

    /// Frees every block of `inode` from file block `keep` on (and the indirect blocks left empty).
    /// The inode is changed, not written.
    fn truncate_blocks(&mut self, inode: &mut Inode, keep: u64) -> Result<(), Ext2Error> {
        // Fast symlinks keep their target in i_block: no blocks.
        if inode.is_symlink() && inode.sectors == 0 {
            return Ok(());
        }
        let per = self.per_block();
        let spb = (self.block_size / 512) as u32;
        for i in (keep.min(12) as usize)..12 {
            let b = core::mem::take(&mut inode.block[i]);
            if b != 0 {
                self.free_block(b)?;
                inode.sectors = inode.sectors.saturating_sub(spb);
            }
        }
        // (slot, levels, first file block it covers)
        let trees = [
            (12usize, 1u32, 12u64),
            (13, 2, 12 + per),
            (14, 3, 12 + per + per * per),
        ];
        for (slot, levels, first) in trees {
            let root = inode.block[slot];
            if root == 0 {
                continue;
            }
            let span = per.pow(levels);
            if keep >= first + span {
                continue;
            }
            let from = keep.saturating_sub(first);
            let mut freed = 0u32;
            let empty = self.free_tree(root, levels, from, &mut freed)?;
            inode.sectors = inode.sectors.saturating_sub(freed * spb);
            if empty {
                self.free_block(root)?;
                inode.sectors = inode.sectors.saturating_sub(spb);
                inode.block[slot] = 0;
            }
        }
        Ok(())
    }

    /// Frees the blocks under indirect block `table` (`levels` deep) for relative file blocks `from`
    /// on; counts them in `freed`; returns whether `table` is now empty (the caller frees it).
    fn free_tree(
        &mut self,
        table: u32,
        levels: u32,
        from: u64,
        freed: &mut u32,
    ) -> Result<bool, Ext2Error> {
        let per = self.per_block();
        let span = per.pow(levels - 1);
        let entries: Vec<u32> = {
            let raw = self.indirect(table)?;
            (0..per as usize).map(|i| le32(raw, i * 4)).collect()
        };
        let first_idx = (from / span) as usize;
        let mut changed = false;
        let mut updated = entries.clone();
        for (idx, &b) in entries.iter().enumerate().skip(first_idx) {
            if b == 0 {
                continue;
            }
            if levels == 1 {
                self.free_block(b)?;
                *freed += 1;
                updated[idx] = 0;
                changed = true;
            } else {
                let sub_from = if idx == first_idx { from % span } else { 0 };
                if self.free_tree(b, levels - 1, sub_from, freed)? {
                    self.free_block(b)?;
                    *freed += 1;
                    updated[idx] = 0;
                    changed = true;
                }
            }
        }
        let empty = updated.iter().all(|&b| b == 0);
        if changed && !empty {
            // Write the table with the freed pointers cleared (an empty one is freed instead).
            let mut raw = vec![0u8; self.block_size as usize];
            for (i, b) in updated.iter().enumerate() {
                put32(&mut raw, i * 4, *b);
            }
            self.write_meta(table, &raw)?;
        }
        Ok(empty)
    }

    /// Sets mode bits (permissions), owner and times of `inode` (None: unchanged) and writes it.
    pub fn set_attr(
        &mut self,
        inode: &mut Inode,
        perm: Option<u16>,
        owner: (Option<u16>, Option<u16>),
        times: (Option<u32>, Option<u32>),
        now: u32,
    ) -> Result<(), Ext2Error> {
        self.need_writable()?;
        if let Some(p) = perm {
            inode.mode = (inode.mode & S_IFMT) | (p & 0o7777);
        }
        if let Some(u) = owner.0 {
            inode.uid = u;
        }
        if let Some(g) = owner.1 {
            inode.gid = g;
        }
        if let Some(a) = times.0 {
            inode.atime = a;
        }
        if let Some(m) = times.1 {
            inode.mtime = m;
        }
        inode.ctime = now;
        self.write_inode(inode)
    }

    /// Clears the htree flag of a directory about to change (its index would go stale; a linear
    /// directory is what this code keeps, and e2fsck accepts it).
    pub(super) fn unindex(&mut self, dir: &mut Inode) {
        if dir.flags & INDEX_FL != 0 {
            dir.flags &= !INDEX_FL;
        }
    }
}
