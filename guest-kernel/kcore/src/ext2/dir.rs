//! Changing the namespace: directory entries (added in the first gap that fits, else in a new block;
//! removed by merging into the previous entry), and create, mkdir, rmdir, unlink, link, symlink,
//! rename (over an existing name, across directories, RENAME_NOREPLACE), with link counts and `..`
//! kept right.

use super::dindex;
use super::write::LINK_MAX;
use super::*;

/// The ext2 directory-entry file type of a mode.
fn file_type(mode: u16) -> u8 {
    match mode & S_IFMT {
        S_IFREG => 1,
        S_IFDIR => 2,
        0o020000 => 3,
        0o060000 => 4,
        0o010000 => 5,
        0o140000 => 6,
        S_IFLNK => 7,
        _ => 0,
    }
}

/// The space an entry with a name of `len` bytes needs.
fn rec_size(len: usize) -> usize {
    (8 + len + 3) & !3
}

/// A name that may be added to a directory.
fn check_name(name: &[u8]) -> Result<(), Ext2Error> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(Ext2Error::Invalid);
    }
    if name.len() > 255 {
        return Err(Ext2Error::NameTooLong);
    }
    Ok(())
}

impl<D: BlockDevice> Ext2<D> {
    /// Reads directory block `n` of `dir` into a new buffer; None for a hole.
    fn dir_block(&mut self, dir: &Inode, n: u64) -> Result<Option<(u32, Vec<u8>)>, Ext2Error> {
        let b = self.block_of(dir, n)?;
        if b == 0 {
            return Ok(None);
        }
        Ok(Some((b, self.meta_block(b)?.to_vec())))
    }

    /// Walks the entries of one directory block: (offset, inode, rec_len, name_len). Corrupt for a
    /// malformed entry.
    fn entries(raw: &[u8]) -> Result<Vec<(usize, u32, usize, usize)>, Ext2Error> {
        let mut out = Vec::new();
        let mut o = 0;
        while o + 8 <= raw.len() {
            let ino = le32(raw, o);
            let rec = le16(raw, o + 4) as usize;
            let nl = raw[o + 6] as usize;
            if rec < 8 || !rec.is_multiple_of(4) || o + rec > raw.len() || 8 + nl > rec {
                return Err(Ext2Error::Corrupt("directory entry"));
            }
            out.push((o, ino, rec, nl));
            o += rec;
        }
        Ok(out)
    }

    /// Adds entry `name` -> `ino` to `dir` (which must not hold `name`); may grow the directory by a
    /// block. Writes `dir` if it changed.
    fn add_entry(
        &mut self,
        dir: &mut Inode,
        name: &[u8],
        ino: u32,
        ftype: u8,
        now: u32,
    ) -> Result<(), Ext2Error> {
        let need = rec_size(name.len());
        let bs = self.block_size as usize;
        let nblocks = dir.size.div_ceil(bs as u64);
        let fill = |raw: &mut [u8], o: usize, rec: usize| {
            put32(raw, o, ino);
            put16(raw, o + 4, rec as u16);
            raw[o + 6] = name.len() as u8;
            raw[o + 7] = ftype;
            raw[o + 8..o + 8 + name.len()].copy_from_slice(name);
        };
        // The blocks to try: with an index, only those with a gap large enough.
        let candidates: Vec<u64> = match self.dir_index(dir)? {
            Some(i) => (0..nblocks)
                .filter(|&n| {
                    self.dindex[i]
                        .room
                        .get(n as usize)
                        .is_none_or(|&r| r >= need)
                })
                .collect(),
            None => (0..nblocks).collect(),
        };
        for n in candidates {
            let Some((b, mut raw)) = self.dir_block(dir, n)? else {
                continue;
            };
            for (o, eino, rec, nl) in Self::entries(&raw)? {
                let used = if eino == 0 { 0 } else { rec_size(nl) };
                if rec - used < need {
                    continue;
                }
                let at = if eino == 0 {
                    fill(&mut raw, o, rec);
                    o
                } else {
                    put16(&mut raw, o + 4, used as u16);
                    fill(&mut raw, o + used, rec - used);
                    o + used
                };
                self.write_meta(b, &raw)?;
                if let Some(ix) = self.index_of(dir.ino) {
                    ix.names.insert(name.to_vec(), (n, at, ino));
                    if let Some(r) = ix.room.get_mut(n as usize) {
                        *r = dindex::room_in(&raw);
                    }
                }
                self.unindex(dir);
                dir.mtime = now;
                dir.ctime = now;
                return self.write_inode(dir);
            }
        }
        // No room: a new block at the end holding just this entry.
        let mut raw = vec![0u8; bs];
        fill(&mut raw, 0, bs);
        let goal = self.goal_for_dir(dir, nblocks);
        let (b, _) = self.map_alloc(dir, nblocks, goal)?;
        self.write_meta(b, &raw)?;
        if let Some(ix) = self.index_of(dir.ino) {
            ix.names.insert(name.to_vec(), (nblocks, 0, ino));
            ix.room.resize(nblocks as usize, 0);
            ix.room.push(dindex::room_in(&raw));
        }
        dir.size = (nblocks + 1) * bs as u64;
        self.unindex(dir);
        dir.mtime = now;
        dir.ctime = now;
        self.write_inode(dir)
    }

    fn goal_for_dir(&mut self, dir: &Inode, n: u64) -> u32 {
        if n > 0 {
            if let Ok(b) = self.block_of(dir, n - 1) {
                if b != 0 {
                    return b + 1;
                }
            }
        }
        self.first_data_block + ((dir.ino - 1) / self.inodes_per_group) * self.blocks_per_group
    }

    /// Finds `name` in `dir`: (directory block, offset in it, inode).
    fn find_entry(
        &mut self,
        dir: &Inode,
        name: &[u8],
    ) -> Result<Option<(u32, usize, u32)>, Ext2Error> {
        Ok(self
            .find_entry_at(dir, name)?
            .map(|(_, b, o, ino)| (b, o, ino)))
    }

    /// Finds `name` in `dir`: (logical block, directory block, offset in it, inode); through the
    /// directory's index when it has one.
    fn find_entry_at(
        &mut self,
        dir: &Inode,
        name: &[u8],
    ) -> Result<Option<dindex::EntryAt>, Ext2Error> {
        if let Some(found) = self.indexed_entry(dir, name)? {
            return Ok(found);
        }
        let nblocks = dir.size.div_ceil(self.block_size);
        for n in 0..nblocks {
            let Some((b, raw)) = self.dir_block(dir, n)? else {
                continue;
            };
            for (o, ino, _, nl) in Self::entries(&raw)? {
                if ino != 0 && &raw[o + 8..o + 8 + nl] == name {
                    return Ok(Some((n, b, o, ino)));
                }
            }
        }
        Ok(None)
    }

    /// Removes `name` from `dir` (merged into the previous entry of its block, or cleared when it is
    /// the first). Returns the inode it named.
    fn remove_entry(&mut self, dir: &mut Inode, name: &[u8], now: u32) -> Result<u32, Ext2Error> {
        let (n, b, at, ino) = self.find_entry_at(dir, name)?.ok_or(Ext2Error::NotFound)?;
        let mut raw = self.meta_block(b)?.to_vec();
        let entries = Self::entries(&raw)?;
        let i = entries
            .iter()
            .position(|e| e.0 == at)
            .ok_or(Ext2Error::Corrupt("directory entry moved"))?;
        if i == 0 {
            put32(&mut raw, at, 0);
        } else {
            let (po, _, prec, _) = entries[i - 1];
            put16(&mut raw, po + 4, (prec + entries[i].2) as u16);
        }
        self.write_meta(b, &raw)?;
        if let Some(ix) = self.index_of(dir.ino) {
            ix.names.remove(name);
            if let Some(r) = ix.room.get_mut(n as usize) {
                *r = dindex::room_in(&raw);
            }
        }
        self.unindex(dir);
        dir.mtime = now;
        dir.ctime = now;
        self.write_inode(dir)?;
        Ok(ino)
    }

    /// Points the existing entry `name` of `dir` at `ino` (rename over an existing name).
    fn retarget_entry(
        &mut self,
        dir: &mut Inode,
        name: &[u8],
        ino: u32,
        ftype: u8,
        now: u32,
    ) -> Result<(), Ext2Error> {
        let (b, at, _) = self.find_entry(dir, name)?.ok_or(Ext2Error::NotFound)?;
        let mut raw = self.meta_block(b)?.to_vec();
        put32(&mut raw, at, ino);
        raw[at + 7] = ftype;
        self.write_meta(b, &raw)?;
        if let Some(e) = self.index_of(dir.ino).and_then(|ix| ix.names.get_mut(name)) {
            e.2 = ino;
        }
        dir.mtime = now;
        dir.ctime = now;
        self.write_inode(dir)
    }

    /// Whether directory `dir` holds nothing but `.` and `..`.
    pub fn dir_is_empty(&mut self, dir: &Inode) -> Result<bool, Ext2Error> {
        Ok(self
            .read_dir(dir)?
            .iter()
            .all(|e| e.name == b"." || e.name == b".."))
    }

    /// Creates a file of `mode` (a regular file, fifo, socket, device) named `name` in `dir`.
    pub fn create(
        &mut self,
        dir: &mut Inode,
        name: &[u8],
        mode: u16,
        now: u32,
    ) -> Result<Inode, Ext2Error> {
        check_name(name)?;
        if self.find_entry(dir, name)?.is_some() {
            return Err(Ext2Error::Exists);
        }
        let mut inode = self.alloc_inode(dir.ino, mode, now)?;
        if let Err(e) = self.add_entry(dir, name, inode.ino, file_type(mode), now) {
            let _ = self.free_inode(&mut inode, now);
            return Err(e);
        }
        Ok(inode)
    }

    /// Creates directory `name` in `dir` with `.` and `..`.
    pub fn mkdir(
        &mut self,
        dir: &mut Inode,
        name: &[u8],
        perm: u16,
        now: u32,
    ) -> Result<Inode, Ext2Error> {
        check_name(name)?;
        if self.find_entry(dir, name)?.is_some() {
            return Err(Ext2Error::Exists);
        }
        if dir.links >= LINK_MAX {
            return Err(Ext2Error::TooManyLinks);
        }
        let mut new = self.alloc_inode(dir.ino, S_IFDIR | (perm & 0o7777), now)?;
        let bs = self.block_size as usize;
        let mut raw = vec![0u8; bs];
        put32(&mut raw, 0, new.ino);
        put16(&mut raw, 4, 12);
        raw[6] = 1;
        raw[7] = 2;
        raw[8] = b'.';
        put32(&mut raw, 12, dir.ino);
        put16(&mut raw, 16, (bs - 12) as u16);
        raw[18] = 2;
        raw[19] = 2;
        raw[20] = b'.';
        raw[21] = b'.';
        let goal = self.goal_for_dir(&new, 0);
        let made = self.map_alloc(&mut new, 0, goal).and_then(|(b, _)| {
            self.write_meta(b, &raw)?;
            new.size = bs as u64;
            new.links = 2;
            self.write_inode(&new)
        });
        let made = made.and_then(|_| self.add_entry(dir, name, new.ino, 2, now));
        if let Err(e) = made {
            let _ = self.free_inode(&mut new, now);
            return Err(e);
        }
        dir.links += 1;
        self.write_inode(dir)?;
        Ok(new)
    }

    /// Removes the empty directory `name` from `dir`.
    pub fn rmdir(&mut self, dir: &mut Inode, name: &[u8], now: u32) -> Result<(), Ext2Error> {
        if name == b"." {
            return Err(Ext2Error::Invalid);
        }
        if name == b".." {
            return Err(Ext2Error::NotEmpty);
        }
        let (_, _, ino) = self.find_entry(dir, name)?.ok_or(Ext2Error::NotFound)?;
        let mut victim = self.inode(ino)?;
        if !victim.is_dir() {
            return Err(Ext2Error::NotDir);
        }
        if !self.dir_is_empty(&victim)? {
            return Err(Ext2Error::NotEmpty);
        }
        self.remove_entry(dir, name, now)?;
        dir.links = dir.links.saturating_sub(1);
        self.write_inode(dir)?;
        // Its `.` and the entry just removed: no link is left.
        victim.links = 0;
        victim.ctime = now;
        self.release(&mut victim, now)
    }

    /// Removes `name` (not a directory) from `dir`; the inode goes when its last link does. Returns
    /// the inode as it is now (links 0 when it was freed).
    pub fn unlink(&mut self, dir: &mut Inode, name: &[u8], now: u32) -> Result<Inode, Ext2Error> {
        let (_, _, ino) = self.find_entry(dir, name)?.ok_or(Ext2Error::NotFound)?;
        let mut victim = self.inode(ino)?;
        if victim.is_dir() {
            return Err(Ext2Error::IsDir);
        }
        self.remove_entry(dir, name, now)?;
        self.drop_link(&mut victim, now)?;
        Ok(victim)
    }

    /// One link fewer for `inode`; freed at zero (at its last close if it is open).
    fn drop_link(&mut self, inode: &mut Inode, now: u32) -> Result<(), Ext2Error> {
        inode.links = inode.links.saturating_sub(1);
        inode.ctime = now;
        if inode.links == 0 {
            self.release(inode, now)
        } else {
            self.write_inode(inode)
        }
    }

    /// An inode whose last link is gone: freed now, or, while the VFS has it open, written with
    /// no links and freed by the last [`Ext2::closed`] (its data stays readable and writable
    /// through the open files, as on Linux; a crash in between leaves it for e2fsck to free).
    fn release(&mut self, inode: &mut Inode, now: u32) -> Result<(), Ext2Error> {
        if self.open.iter().any(|&(ino, _)| ino == inode.ino) {
            self.write_inode(inode)
        } else {
            self.free_inode(inode, now)
        }
    }

    /// The VFS opened a file of inode `ino`.
    pub fn opened(&mut self, ino: u32) {
        match self.open.iter_mut().find(|(i, _)| *i == ino) {
            Some((_, n)) => *n += 1,
            None => self.open.push((ino, 1)),
        }
    }

    /// The VFS closed a file of inode `ino`: at the last close an inode with no links left is
    /// freed. Returns whether it was (its cached pages are then stale).
    pub fn closed(&mut self, ino: u32, now: u32) -> Result<bool, Ext2Error> {
        let Some(at) = self.open.iter().position(|&(i, _)| i == ino) else {
            return Ok(false);
        };
        self.open[at].1 -= 1;
        if self.open[at].1 > 0 {
            return Ok(false);
        }
        self.open.swap_remove(at);
        let mut inode = self.inode(ino)?;
        if inode.links != 0 || !self.writable {
            return Ok(false);
        }
        self.free_inode(&mut inode, now)?;
        Ok(true)
    }

    /// A new name `name` in `dir` for `target` (not a directory).
    pub fn link(
        &mut self,
        target: &mut Inode,
        dir: &mut Inode,
        name: &[u8],
        now: u32,
    ) -> Result<(), Ext2Error> {
        check_name(name)?;
        if target.is_dir() {
            return Err(Ext2Error::IsDir);
        }
        if target.links >= LINK_MAX {
            return Err(Ext2Error::TooManyLinks);
        }
        if self.find_entry(dir, name)?.is_some() {
            return Err(Ext2Error::Exists);
        }
        self.add_entry(dir, name, target.ino, file_type(target.mode), now)?;
        target.links += 1;
        target.ctime = now;
        self.write_inode(target)
    }

    /// A symbolic link `name` in `dir` to `target`: kept in the inode when shorter than 60 bytes (a
    /// fast symlink), else in a data block.
    pub fn symlink(
        &mut self,
        dir: &mut Inode,
        name: &[u8],
        target: &[u8],
        now: u32,
    ) -> Result<Inode, Ext2Error> {
        if target.is_empty() {
            return Err(Ext2Error::NotFound);
        }
        if target.len() >= self.block_size as usize || target.len() >= 4096 {
            return Err(Ext2Error::NameTooLong);
        }
        check_name(name)?;
        if self.find_entry(dir, name)?.is_some() {
            return Err(Ext2Error::Exists);
        }
        let mut inode = self.alloc_inode(dir.ino, S_IFLNK | 0o777, now)?;
        let stored = if target.len() < 60 {
            let mut bytes = [0u8; 60];
            bytes[..target.len()].copy_from_slice(target);
            for (i, w) in inode.block.iter_mut().enumerate() {
                *w = le32(&bytes, i * 4);
            }
            inode.size = target.len() as u64;
            self.write_inode(&inode)
        } else {
            // Written as file data (a slow symlink).
            let t = target.to_vec();
            self.write_at(&mut inode, 0, &t, now).map(|_| ())
        };
        let added = stored.and_then(|_| self.add_entry(dir, name, inode.ino, 7, now));
        if let Err(e) = added {
            let _ = self.free_inode(&mut inode, now);
            return Err(e);
        }
        Ok(inode)
    }

    /// Renames `old_dir/old_name` to `new_dir/new_name` (`noreplace`: RENAME_NOREPLACE). Replacing
    /// an existing name: a file only by a non-directory, a directory only by a directory into an
    /// empty one. Moving a directory under itself is Invalid. `old_dir` and `new_dir` may be the
    /// same inode (both are then updated through `old_dir`; pass `None` for `new_dir`).
    pub fn rename(
        &mut self,
        old_dir: &mut Inode,
        old_name: &[u8],
        new_dir: Option<&mut Inode>,
        new_name: &[u8],
        noreplace: bool,
        now: u32,
    ) -> Result<(), Ext2Error> {
        if matches!(old_name, b"." | b"..") {
            return Err(Ext2Error::Invalid);
        }
        check_name(new_name)?;
        let (_, _, src_ino) = self
            .find_entry(old_dir, old_name)?
            .ok_or(Ext2Error::NotFound)?;
        let mut src = self.inode(src_ino)?;
        let same_dir = new_dir.is_none();
        let mut other = new_dir;
        let dst = {
            let nd: &Inode = match other.as_deref() {
                Some(d) => d,
                None => old_dir,
            };
            self.find_entry(nd, new_name)?
        };
        if let Some((_, _, dst_ino)) = dst {
            if noreplace {
                return Err(Ext2Error::Exists);
            }
            if dst_ino == src_ino {
                return Ok(());
            }
        }
        if src.is_dir() && !same_dir {
            // The new parent must not be the directory itself or inside it.
            let nd = other.as_deref().map(|d| d.ino).unwrap_or(old_dir.ino);
            if self.is_under(nd, src_ino)? {
                return Err(Ext2Error::Invalid);
            }
        }
        let ftype = file_type(src.mode);
        if let Some((_, _, dst_ino)) = dst {
            let mut victim = self.inode(dst_ino)?;
            match (src.is_dir(), victim.is_dir()) {
                (true, false) => return Err(Ext2Error::NotDir),
                (false, true) => return Err(Ext2Error::IsDir),
                (true, true) if !self.dir_is_empty(&victim)? => return Err(Ext2Error::NotEmpty),
                _ => {}
            }
            {
                let nd: &mut Inode = match other.as_deref_mut() {
                    Some(d) => d,
                    None => old_dir,
                };
                self.retarget_entry(nd, new_name, src_ino, ftype, now)?;
            }
            if victim.is_dir() {
                // The replaced directory's `..` link to the new parent goes with it.
                let nd: &mut Inode = match other.as_deref_mut() {
                    Some(d) => d,
                    None => old_dir,
                };
                nd.links = nd.links.saturating_sub(1);
                self.write_inode(nd)?;
                victim.links = 0;
                victim.ctime = now;
                self.release(&mut victim, now)?;
            } else {
                self.drop_link(&mut victim, now)?;
            }
        } else {
            if src.is_dir() && !same_dir {
                if let Some(d) = other.as_deref() {
                    if d.links >= LINK_MAX {
                        return Err(Ext2Error::TooManyLinks);
                    }
                }
            }
            let nd: &mut Inode = match other.as_deref_mut() {
                Some(d) => d,
                None => old_dir,
            };
            self.add_entry(nd, new_name, src_ino, ftype, now)?;
        }
        // `old_dir` may have changed on disk (same directory): the entry to remove is found again.
        if same_dir {
            *old_dir = self.inode(old_dir.ino)?;
        }
        self.remove_entry(old_dir, old_name, now)?;
        if src.is_dir() && !same_dir {
            if let Some(nd) = other {
                self.set_dotdot(&src, nd.ino)?;
                nd.links += 1;
                self.write_inode(nd)?;
            }
            old_dir.links = old_dir.links.saturating_sub(1);
            self.write_inode(old_dir)?;
        }
        src.ctime = now;
        self.write_inode(&src)
    }

    /// Points directory `dir`'s `..` entry at `parent`.
    fn set_dotdot(&mut self, dir: &Inode, parent: u32) -> Result<(), Ext2Error> {
        let (b, raw) = self
            .dir_block(dir, 0)?
            .ok_or(Ext2Error::Corrupt("directory without blocks"))?;
        let mut raw = raw;
        let entries = Self::entries(&raw)?;
        let (o, _, _, nl) = *entries
            .get(1)
            .ok_or(Ext2Error::Corrupt("directory without .."))?;
        if &raw[o + 8..o + 8 + nl] != b".." {
            return Err(Ext2Error::Corrupt("directory without .."));
        }
        put32(&mut raw, o, parent);
        self.write_meta(b, &raw)
    }

    /// Whether directory `ino` is `ancestor` or below it (walking `..`; a loop is corruption).
    fn is_under(&mut self, mut ino: u32, ancestor: u32) -> Result<bool, Ext2Error> {
        for _ in 0..4096 {
            if ino == ancestor {
                return Ok(true);
            }
            if ino == ROOT_INO {
                return Ok(false);
            }
            let dir = self.inode(ino)?;
            ino = self
                .lookup(&dir, b"..")?
                .ok_or(Ext2Error::Corrupt("directory without .."))?;
        }
        Err(Ext2Error::Corrupt("directory loop"))
    }
}
