//! An in-memory index of large directories, so that a directory of thousands of entries costs a tree
//! search per lookup instead of a parse of every one of its blocks (Linux keeps found names in its
//! dcache and ext2 scans only on a miss; here the kernel's every instruction is emulated, and a
//! create in a directory of 2,000 entries parsed its ~100 blocks three times: the walk's lookup,
//! the existence check and the search for room).
//!
//! For each indexed directory: every name (but `.` and `..`) with the logical block and offset of
//! its entry and its inode, and each block's largest gap a new entry could use. Built by one scan
//! the first time a directory of at least [`INDEX_MIN_BLOCKS`] blocks is searched; kept right by
//! the only code that changes entries (`add_entry`, `remove_entry`, `retarget_entry`: an entry
//! never moves inside its block, a removal merges it into the previous one); dropped when the
//! directory's inode is freed. A hit is checked against the block before it is trusted (a
//! mismatch drops the index and falls back to the scan). The last [`INDEXED_DIRS`] directories
//! used keep theirs.

use super::*;
use alloc::collections::BTreeMap;

/// Directories smaller than this many blocks are scanned (a scan of a few blocks is cheap).
pub const INDEX_MIN_BLOCKS: u64 = 8;
/// Directories whose index is kept.
pub const INDEXED_DIRS: usize = 4;

/// Where an entry is: (logical block, directory block, offset in it, inode).
pub(super) type EntryAt = (u64, u32, usize, u32);

/// The index of one directory.
pub(super) struct DirIndex {
    pub ino: u32,
    /// Name -> (logical block, offset of its entry in the block, inode).
    pub names: BTreeMap<Vec<u8>, (u64, usize, u32)>,
    /// For each logical block, the largest record space a new entry could take (0 for a hole).
    pub room: Vec<usize>,
}

/// The largest space a new entry could take in directory block `raw`: an empty entry's whole
/// record, or what lies past a used entry's name.
pub(super) fn room_in(raw: &[u8]) -> usize {
    let mut best = 0;
    let mut o = 0;
    while o + 8 <= raw.len() {
        let ino = le32(raw, o);
        let rec = le16(raw, o + 4) as usize;
        let nl = raw[o + 6] as usize;
        if rec < 8 || o + rec > raw.len() {
            return 0;
        }
        let used = if ino == 0 { 0 } else { (8 + nl + 3) & !3 };
        best = best.max(rec.saturating_sub(used));
        o += rec;
    }
    best
}

impl<D: BlockDevice> Ext2<D> {
    /// The position of `dir`'s index in `self.dindex`, built now if `dir` is large enough; None
    /// for a small directory.
    pub(super) fn dir_index(&mut self, dir: &Inode) -> Result<Option<usize>, Ext2Error> {
        if let Some(i) = self.dindex.iter().position(|d| d.ino == dir.ino) {
            return Ok(Some(i));
        }
        let nblocks = dir.size.div_ceil(self.block_size);
        if nblocks < INDEX_MIN_BLOCKS || dir.size > self.max_dir_size() {
            return Ok(None);
        }
        let mut names = BTreeMap::new();
        let mut room = Vec::with_capacity(nblocks as usize);
        for n in 0..nblocks {
            let b = self.block_of(dir, n)?;
            if b == 0 {
                room.push(0);
                continue;
            }
            let raw = self.meta_block(b)?;
            let mut o = 0usize;
            let mut best = 0;
            while o + 8 <= raw.len() {
                let ino = le32(raw, o);
                let rec = le16(raw, o + 4) as usize;
                let nl = raw[o + 6] as usize;
                if rec < 8 || !rec.is_multiple_of(4) || o + rec > raw.len() || 8 + nl > rec {
                    return Err(Ext2Error::Corrupt("directory entry"));
                }
                let name = &raw[o + 8..o + 8 + nl];
                let used = if ino == 0 { 0 } else { (8 + nl + 3) & !3 };
                best = best.max(rec - used);
                if ino != 0 && name != b"." && name != b".." {
                    names.insert(name.to_vec(), (n, o, ino));
                }
                o += rec;
            }
            room.push(best);
        }
        if self.dindex.len() >= INDEXED_DIRS {
            self.dindex.remove(0);
        }
        self.dindex.push(DirIndex {
            ino: dir.ino,
            names,
            room,
        });
        Ok(Some(self.dindex.len() - 1))
    }

    /// `name` in `dir` through its index: Some(answer) when the index settles it (None inside: no
    /// such entry), None when `dir` has no index or the hit did not match its block (the index
    /// is then dropped).
    pub(super) fn indexed_entry(
        &mut self,
        dir: &Inode,
        name: &[u8],
    ) -> Result<Option<Option<EntryAt>>, Ext2Error> {
        if name == b"." || name == b".." {
            return Ok(None);
        }
        let Some(i) = self.dir_index(dir)? else {
            return Ok(None);
        };
        let Some(&(n, o, ino)) = self.dindex[i].names.get(name) else {
            return Ok(Some(None));
        };
        let b = self.block_of(dir, n)?;
        if b != 0 {
            let raw = self.meta_block(b)?;
            let nl = name.len();
            if o + 8 + nl <= raw.len()
                && le32(raw, o) == ino
                && raw[o + 6] as usize == nl
                && &raw[o + 8..o + 8 + nl] == name
            {
                return Ok(Some(Some((n, b, o, ino))));
            }
        }
        // Stale: forget it and scan.
        self.dindex.retain(|d| d.ino != dir.ino);
        Ok(None)
    }

    /// The index of `dir`, if it has one now (never built here).
    pub(super) fn index_of(&mut self, ino: u32) -> Option<&mut DirIndex> {
        self.dindex.iter_mut().find(|d| d.ino == ino)
    }

    /// Drops the index of directory `ino` (freed).
    pub(super) fn drop_index(&mut self, ino: u32) {
        self.dindex.retain(|d| d.ino != ino);
    }
}
