//! tmpfs: a filesystem in memory (Linux's shmem). Directories, regular files, symbolic links and
//! special files live in a map of nodes; file data is 4 KiB frames from `mm::frame`, one per page
//! written (holes read as zeros and take no frame), counted in /proc/meminfo as Shmem.
//!
//! Limits as Linux: `size=` (bytes, with k/m/g or a % of RAM; default half of RAM) bounds the
//! pages, `nr_inodes=` the nodes (default half of RAM's pages); past them ENOSPC. An unlinked
//! file keeps its pages until its last open file description closes.
#![deny(unsafe_code)]

use super::mount::{FileSystem, StatFs, TMPFS_MAGIC};
use crate::mm::page::OwnedFrame;
use crate::mm::PAGE_SIZE;
use alloc::collections::btree_map::Entry;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use kcore::ext2::{DirEntry, Ext2Error, Inode, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};

/// Pages all tmpfs instances hold (/proc/meminfo Shmem).
pub static SHMEM_PAGES: AtomicU64 = AtomicU64::new(0);

const ROOT: u32 = 1;
/// Largest file: what a u64 page index with 4 KiB pages keeps clear of overflow (Linux: MAX_LFS_FILESIZE).
const MAX_FILE: u64 = i64::MAX as u64;

enum Data {
    Dir {
        parent: u32,
        entries: Vec<(Vec<u8>, u32)>,
    },
    /// Page index -> its frame.
    File(BTreeMap<u64, OwnedFrame>),
    Link(Vec<u8>),
    /// FIFOs, sockets, device nodes: no data.
    Special,
}

struct Node {
    inode: Inode,
    data: Data,
    /// Open file descriptions of it.
    opens: u32,
}

/// One tmpfs instance.
pub struct Tmpfs {
    nodes: BTreeMap<u32, Node>,
    next_ino: u32,
    max_pages: u64,
    pages: u64,
    max_inodes: u64,
    read_only: bool,
    /// Whether size= was given (shown in /proc/mounts as Linux does).
    size_given: bool,
}

/// The longest name of a directory entry (Linux's NAME_MAX).
const NAME_MAX: usize = 255;

fn check_name(name: &[u8]) -> Result<(), Ext2Error> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(Ext2Error::Invalid);
    }
    if name.len() > NAME_MAX {
        return Err(Ext2Error::NameTooLong);
    }
    Ok(())
}

/// The FILETYPE byte of a mode (as ext2 directory entries carry it).
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

/// Mount options a tmpfs takes: `size=`, `nr_inodes=`, `mode=` (others are EINVAL).
pub struct Options {
    pub size: Option<u64>,
    pub nr_inodes: Option<u64>,
    pub mode: Option<u16>,
}

/// A number with an optional k/m/g suffix (`%` of `ram` for size=).
fn parse_size(v: &[u8], ram: u64) -> Option<u64> {
    let (digits, mult) = match v.last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&v[..v.len() - 1], 1 << 20),
        b'g' | b'G' => (&v[..v.len() - 1], 1 << 30),
        b'%' => {
            let pct = parse_num(&v[..v.len() - 1], 10)?;
            return ram.checked_mul(pct).map(|b| b / 100);
        }
        _ => (v, 1),
    };
    parse_num(digits, 10)?.checked_mul(mult)
}

fn parse_num(v: &[u8], radix: u64) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &c| {
        let d = (c as char).to_digit(radix as u32)? as u64;
        n.checked_mul(radix)?.checked_add(d)
    })
}

impl Options {
    /// Parses a mount(2) data string (`size=16m,mode=1777`).
    pub fn parse(data: &[u8], ram: u64) -> Result<Options, ()> {
        let mut o = Options {
            size: None,
            nr_inodes: None,
            mode: None,
        };
        for opt in data.split(|&c| c == b',').filter(|s| !s.is_empty()) {
            let (k, v) = match opt.iter().position(|&c| c == b'=') {
                Some(i) => (&opt[..i], &opt[i + 1..]),
                None => (opt, &b""[..]),
            };
            match k {
                b"size" => o.size = Some(parse_size(v, ram).ok_or(())?),
                b"nr_inodes" => o.nr_inodes = Some(parse_size(v, u64::MAX).ok_or(())?),
                b"mode" => {
                    o.mode = Some(parse_num(v, 8).filter(|m| *m <= 0o7777).ok_or(())? as u16)
                }
                // What mount(8) passes along and Linux's tmpfs accepts.
                b"rw" | b"ro" | b"defaults" | b"uid" | b"gid" | b"huge" | b"mpol" | b"noswap" => {}
                _ => return Err(()),
            }
        }
        Ok(o)
    }
}

impl Tmpfs {
    /// A new, empty tmpfs with `opts` on a machine with `ram` bytes.
    pub fn new(opts: &Options, ram: u64, now: u32) -> Tmpfs {
        let size = opts.size.unwrap_or(ram / 2);
        let mut t = Tmpfs {
            nodes: BTreeMap::new(),
            next_ino: ROOT + 1,
            max_pages: size / PAGE_SIZE,
            pages: 0,
            max_inodes: opts.nr_inodes.unwrap_or(ram / PAGE_SIZE / 2),
            read_only: false,
            size_given: opts.size.is_some(),
        };
        let root = Inode {
            ino: ROOT,
            mode: S_IFDIR | opts.mode.unwrap_or(0o1777),
            links: 2,
            atime: now,
            mtime: now,
            ctime: now,
            ..Inode::default()
        };
        t.nodes.insert(
            ROOT,
            Node {
                inode: root,
                data: Data::Dir {
                    parent: ROOT,
                    entries: Vec::new(),
                },
                opens: 0,
            },
        );
        t
    }

    /// Changes the limits (remount with size= or nr_inodes=): ENOSPC-free only if what is used fits
    /// (Linux: EINVAL otherwise).
    pub fn set_limits(&mut self, opts: &Options, ram: u64) -> Result<(), Ext2Error> {
        if let Some(size) = opts.size {
            if size / PAGE_SIZE < self.pages {
                return Err(Ext2Error::Invalid);
            }
            self.max_pages = size / PAGE_SIZE;
            self.size_given = true;
        }
        if let Some(n) = opts.nr_inodes {
            if n < self.nodes.len() as u64 {
                return Err(Ext2Error::Invalid);
            }
            self.max_inodes = n;
        }
        let _ = ram;
        Ok(())
    }

    fn node(&mut self, ino: u32) -> Result<&mut Node, Ext2Error> {
        self.nodes.get_mut(&ino).ok_or(Ext2Error::NotFound)
    }

    fn need_writable(&self) -> Result<(), Ext2Error> {
        if self.read_only {
            Err(Ext2Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    fn entries(&mut self, dir: u32) -> Result<&mut Vec<(Vec<u8>, u32)>, Ext2Error> {
        match &mut self.node(dir)?.data {
            Data::Dir { entries, .. } => Ok(entries),
            _ => Err(Ext2Error::NotDir),
        }
    }

    fn find(&mut self, dir: u32, name: &[u8]) -> Result<Option<u32>, Ext2Error> {
        Ok(self
            .entries(dir)?
            .iter()
            .find(|(n, _)| n.as_slice() == name)
            .map(|(_, i)| *i))
    }

    /// Records a changed directory's times and hands its record back to the caller's copy.
    fn touch(&mut self, dir: &mut Inode, now: u32) -> Result<(), Ext2Error> {
        let n = self.node(dir.ino)?;
        n.inode.mtime = now;
        n.inode.ctime = now;
        *dir = n.inode.clone();
        Ok(())
    }

    /// A new node (ENOSPC past nr_inodes).
    fn new_node(&mut self, mode: u16, data: Data, now: u32) -> Result<Inode, Ext2Error> {
        if self.nodes.len() as u64 >= self.max_inodes {
            return Err(Ext2Error::NoSpace);
        }
        // Nodes live on the kernel heap, which nr_inodes (half of RAM's pages by default) can
        // outgrow: a node, its name and a directory listing's copy of it must leave the heap's
        // reserve (ENOSPC, as Linux's shmem_get_inode when the inode cannot be allocated).
        if !crate::mm::heap::can_spare(core::mem::size_of::<Node>() + 2 * (NAME_MAX + 32)) {
            return Err(Ext2Error::NoSpace);
        }
        let ino = self.next_ino;
        self.next_ino = self.next_ino.checked_add(1).ok_or(Ext2Error::NoSpace)?;
        let inode = Inode {
            ino,
            mode,
            links: if mode & S_IFMT == S_IFDIR { 2 } else { 1 },
            atime: now,
            mtime: now,
            ctime: now,
            size: match &data {
                Data::Link(t) => t.len() as u64,
                _ => 0,
            },
            ..Inode::default()
        };
        self.nodes.insert(
            ino,
            Node {
                inode: inode.clone(),
                data,
                opens: 0,
            },
        );
        Ok(inode)
    }

    /// Frees a node with no links and no open descriptions, and its pages.
    fn maybe_free(&mut self, ino: u32) {
        let free = self
            .nodes
            .get(&ino)
            .is_some_and(|n| n.inode.links == 0 && n.opens == 0);
        if !free {
            return;
        }
        if let Some(Node {
            data: Data::File(pages),
            ..
        }) = self.nodes.remove(&ino)
        {
            self.release(pages.into_values());
        }
    }

    /// Gives frames back.
    fn release(&mut self, frames: impl Iterator<Item = OwnedFrame>) {
        let n = frames.count() as u64;
        self.pages -= n;
        SHMEM_PAGES.fetch_sub(n, Ordering::Relaxed);
    }

    /// Drops one link of `ino` (its record in `victim` updated), freeing it if that was the last.
    fn drop_link(&mut self, ino: u32, now: u32) -> Result<Inode, Ext2Error> {
        let n = self.node(ino)?;
        n.inode.links = n.inode.links.saturating_sub(1);
        n.inode.ctime = now;
        let v = n.inode.clone();
        self.maybe_free(ino);
        Ok(v)
    }

    /// Whether directory `dir` is `anc` or inside it.
    fn is_under(&mut self, mut dir: u32, anc: u32) -> Result<bool, Ext2Error> {
        for _ in 0..self.nodes.len() + 1 {
            if dir == anc {
                return Ok(true);
            }
            let parent = match &self.node(dir)?.data {
                Data::Dir { parent, .. } => *parent,
                _ => return Err(Ext2Error::NotDir),
            };
            if parent == dir {
                return Ok(false);
            }
            dir = parent;
        }
        Err(Ext2Error::Corrupt("directory loop"))
    }

    fn dir_empty(&mut self, ino: u32) -> Result<bool, Ext2Error> {
        Ok(self.entries(ino)?.is_empty())
    }
}

impl FileSystem for Tmpfs {
    fn root_ino(&self) -> u32 {
        ROOT
    }

    fn inode(&mut self, ino: u32) -> Result<Inode, Ext2Error> {
        Ok(self.node(ino)?.inode.clone())
    }

    fn lookup(&mut self, dir: &Inode, name: &[u8]) -> Result<Option<u32>, Ext2Error> {
        match (&self.node(dir.ino)?.data, name) {
            (Data::Dir { .. }, b".") => Ok(Some(dir.ino)),
            (Data::Dir { parent, .. }, b"..") => Ok(Some(*parent)),
            _ => self.find(dir.ino, name),
        }
    }

    fn read_at(&mut self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize, Ext2Error> {
        let node = self.node(inode.ino)?;
        let size = node.inode.size;
        let Data::File(pages) = &node.data else {
            return Err(Ext2Error::IsDir);
        };
        if offset >= size {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(size - offset) as usize;
        let mut done = 0;
        while done < n {
            let pos = offset + done as u64;
            let within = (pos % PAGE_SIZE) as usize;
            let step = (PAGE_SIZE as usize - within).min(n - done);
            match pages.get(&(pos / PAGE_SIZE)) {
                Some(f) => {
                    buf[done..done + step].copy_from_slice(&f.bytes()[within..within + step])
                }
                None => buf[done..done + step].fill(0),
            }
            done += step;
        }
        Ok(n)
    }

    fn write_at(
        &mut self,
        inode: &mut Inode,
        offset: u64,
        data: &[u8],
        now: u32,
    ) -> Result<usize, Ext2Error> {
        self.need_writable()?;
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= MAX_FILE)
            .ok_or(Ext2Error::TooBig)?;
        let (max, mut used) = (self.max_pages, self.pages);
        let node = self.nodes.get_mut(&inode.ino).ok_or(Ext2Error::NotFound)?;
        let Data::File(pages) = &mut node.data else {
            return Err(Ext2Error::IsDir);
        };
        let mut done = 0;
        let mut added = 0;
        while done < data.len() {
            let pos = offset + done as u64;
            let within = (pos % PAGE_SIZE) as usize;
            let step = (PAGE_SIZE as usize - within).min(data.len() - done);
            let idx = pos / PAGE_SIZE;
            let f = match pages.entry(idx) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let f = if used < max {
                        OwnedFrame::alloc()
                    } else {
                        None
                    };
                    let Some(mut f) = f else {
                        break;
                    };
                    if step != PAGE_SIZE as usize {
                        // Only a partly written new page needs clearing (frames are not zeroed).
                        f.bytes_mut().fill(0);
                    }
                    used += 1;
                    added += 1;
                    e.insert(f)
                }
            };
            f.bytes_mut()[within..within + step].copy_from_slice(&data[done..done + step]);
            done += step;
        }
        self.pages = used;
        SHMEM_PAGES.fetch_add(added, Ordering::Relaxed);
        if done == 0 && !data.is_empty() {
            return Err(Ext2Error::NoSpace);
        }
        let i = &mut node.inode;
        i.size = i.size.max(offset + done as u64);
        i.sectors = (pages.len() as u64 * (PAGE_SIZE / 512)) as u32;
        i.mtime = now;
        i.ctime = now;
        *inode = i.clone();
        let _ = end;
        Ok(done)
    }

    fn read_dir(&mut self, dir: &Inode) -> Result<Vec<DirEntry>, Ext2Error> {
        let (parent, list) = match &self.node(dir.ino)?.data {
            Data::Dir { parent, entries } => (*parent, entries.clone()),
            _ => return Err(Ext2Error::NotDir),
        };
        let mut out = Vec::with_capacity(list.len() + 2);
        out.push(DirEntry {
            ino: dir.ino,
            file_type: 2,
            name: b".".to_vec(),
        });
        out.push(DirEntry {
            ino: parent,
            file_type: 2,
            name: b"..".to_vec(),
        });
        for (name, ino) in list {
            let mode = self.nodes.get(&ino).map_or(0, |n| n.inode.mode);
            out.push(DirEntry {
                ino,
                file_type: file_type(mode),
                name,
            });
        }
        Ok(out)
    }

    fn read_link(&mut self, link: &Inode) -> Result<Vec<u8>, Ext2Error> {
        match &self.node(link.ino)?.data {
            Data::Link(t) => Ok(t.clone()),
            _ => Err(Ext2Error::Invalid),
        }
    }

    fn create(
        &mut self,
        dir: &mut Inode,
        name: &[u8],
        mode: u16,
        now: u32,
    ) -> Result<Inode, Ext2Error> {
        self.need_writable()?;
        check_name(name)?;
        if self.find(dir.ino, name)?.is_some() {
            return Err(Ext2Error::Exists);
        }
        let data = if mode & S_IFMT == S_IFREG {
            Data::File(BTreeMap::new())
        } else {
            Data::Special
        };
        let inode = self.new_node(mode, data, now)?;
        self.entries(dir.ino)?.push((name.to_vec(), inode.ino));
        self.touch(dir, now)?;
        Ok(inode)
    }

    fn mkdir(
        &mut self,
        dir: &mut Inode,
        name: &[u8],
        perm: u16,
        now: u32,
    ) -> Result<Inode, Ext2Error> {
        self.need_writable()?;
        check_name(name)?;
        if self.find(dir.ino, name)?.is_some() {
            return Err(Ext2Error::Exists);
        }
        let data = Data::Dir {
            parent: dir.ino,
            entries: Vec::new(),
        };
        let inode = self.new_node(S_IFDIR | (perm & 0o7777), data, now)?;
        self.entries(dir.ino)?.push((name.to_vec(), inode.ino));
        self.node(dir.ino)?.inode.links += 1;
        self.touch(dir, now)?;
        Ok(inode)
    }

    fn rmdir(&mut self, dir: &mut Inode, name: &[u8], now: u32) -> Result<(), Ext2Error> {
        self.need_writable()?;
        if name == b"." {
            return Err(Ext2Error::Invalid);
        }
        if name == b".." {
            return Err(Ext2Error::NotEmpty);
        }
        let ino = self.find(dir.ino, name)?.ok_or(Ext2Error::NotFound)?;
        if !self.node(ino)?.inode.is_dir() {
            return Err(Ext2Error::NotDir);
        }
        if !self.dir_empty(ino)? {
            return Err(Ext2Error::NotEmpty);
        }
        self.entries(dir.ino)?.retain(|(n, _)| n.as_slice() != name);
        let p = self.node(dir.ino)?;
        p.inode.links = p.inode.links.saturating_sub(1);
        self.node(ino)?.inode.links = 0;
        self.maybe_free(ino);
        self.touch(dir, now)
    }

    fn unlink(&mut self, dir: &mut Inode, name: &[u8], now: u32) -> Result<Inode, Ext2Error> {
        self.need_writable()?;
        let ino = self.find(dir.ino, name)?.ok_or(Ext2Error::NotFound)?;
        if self.node(ino)?.inode.is_dir() {
            return Err(Ext2Error::IsDir);
        }
        self.entries(dir.ino)?.retain(|(n, _)| n.as_slice() != name);
        let v = self.drop_link(ino, now)?;
        self.touch(dir, now)?;
        Ok(v)
    }

    fn link(
        &mut self,
        target: &mut Inode,
        dir: &mut Inode,
        name: &[u8],
        now: u32,
    ) -> Result<(), Ext2Error> {
        self.need_writable()?;
        check_name(name)?;
        if target.is_dir() {
            return Err(Ext2Error::IsDir);
        }
        if self.find(dir.ino, name)?.is_some() {
            return Err(Ext2Error::Exists);
        }
        let t = self.node(target.ino)?;
        if t.inode.links == 0 {
            return Err(Ext2Error::NotFound);
        }
        t.inode.links = t
            .inode
            .links
            .checked_add(1)
            .ok_or(Ext2Error::TooManyLinks)?;
        t.inode.ctime = now;
        *target = t.inode.clone();
        self.entries(dir.ino)?.push((name.to_vec(), target.ino));
        self.touch(dir, now)
    }

    fn symlink(
        &mut self,
        dir: &mut Inode,
        name: &[u8],
        target: &[u8],
        now: u32,
    ) -> Result<Inode, Ext2Error> {
        self.need_writable()?;
        check_name(name)?;
        if target.is_empty() {
            return Err(Ext2Error::NotFound);
        }
        if target.len() >= 4096 {
            return Err(Ext2Error::NameTooLong);
        }
        if self.find(dir.ino, name)?.is_some() {
            return Err(Ext2Error::Exists);
        }
        let inode = self.new_node(S_IFLNK | 0o777, Data::Link(target.to_vec()), now)?;
        self.entries(dir.ino)?.push((name.to_vec(), inode.ino));
        self.touch(dir, now)?;
        Ok(inode)
    }

    fn rename(
        &mut self,
        old_dir: &mut Inode,
        old_name: &[u8],
        new_dir: Option<&mut Inode>,
        new_name: &[u8],
        noreplace: bool,
        now: u32,
    ) -> Result<(), Ext2Error> {
        self.need_writable()?;
        if matches!(old_name, b"." | b"..") {
            return Err(Ext2Error::Invalid);
        }
        check_name(new_name)?;
        let od = old_dir.ino;
        let nd = new_dir.as_deref().map_or(od, |d| d.ino);
        let src = self.find(od, old_name)?.ok_or(Ext2Error::NotFound)?;
        let dst = self.find(nd, new_name)?;
        if let Some(d) = dst {
            if noreplace {
                return Err(Ext2Error::Exists);
            }
            if d == src {
                return Ok(());
            }
        }
        let src_dir = self.node(src)?.inode.is_dir();
        if src_dir && nd != od && self.is_under(nd, src)? {
            return Err(Ext2Error::Invalid);
        }
        if let Some(d) = dst {
            let victim_dir = self.node(d)?.inode.is_dir();
            match (src_dir, victim_dir) {
                (true, false) => return Err(Ext2Error::NotDir),
                (false, true) => return Err(Ext2Error::IsDir),
                (true, true) if !self.dir_empty(d)? => return Err(Ext2Error::NotEmpty),
                _ => {}
            }
            self.entries(nd)?.retain(|(n, _)| n.as_slice() != new_name);
            if victim_dir {
                let p = self.node(nd)?;
                p.inode.links = p.inode.links.saturating_sub(1);
                self.node(d)?.inode.links = 0;
                self.maybe_free(d);
            } else {
                self.drop_link(d, now)?;
            }
        }
        self.entries(od)?.retain(|(n, _)| n.as_slice() != old_name);
        self.entries(nd)?.push((new_name.to_vec(), src));
        if src_dir && nd != od {
            if let Data::Dir { parent, .. } = &mut self.node(src)?.data {
                *parent = nd;
            }
            let o = self.node(od)?;
            o.inode.links = o.inode.links.saturating_sub(1);
            self.node(nd)?.inode.links += 1;
        }
        self.node(src)?.inode.ctime = now;
        self.touch(old_dir, now)?;
        if let Some(d) = new_dir {
            self.touch(d, now)?;
        }
        Ok(())
    }

    fn set_attr(
        &mut self,
        inode: &mut Inode,
        perm: Option<u16>,
        owner: (Option<u16>, Option<u16>),
        times: (Option<u32>, Option<u32>),
        now: u32,
    ) -> Result<(), Ext2Error> {
        self.need_writable()?;
        let n = &mut self.node(inode.ino)?.inode;
        if let Some(p) = perm {
            n.mode = (n.mode & S_IFMT) | (p & 0o7777);
        }
        if let Some(u) = owner.0 {
            n.uid = u;
        }
        if let Some(g) = owner.1 {
            n.gid = g;
        }
        if let Some(a) = times.0 {
            n.atime = a;
        }
        if let Some(m) = times.1 {
            n.mtime = m;
        }
        n.ctime = now;
        *inode = n.clone();
        Ok(())
    }

    fn truncate(&mut self, inode: &mut Inode, size: u64, now: u32) -> Result<(), Ext2Error> {
        self.need_writable()?;
        if size > MAX_FILE {
            return Err(Ext2Error::TooBig);
        }
        let node = self.nodes.get_mut(&inode.ino).ok_or(Ext2Error::NotFound)?;
        let Data::File(pages) = &mut node.data else {
            return Err(Ext2Error::IsDir);
        };
        let mut gone = Vec::new();
        if size < node.inode.size {
            let keep = size.div_ceil(PAGE_SIZE);
            gone = pages.split_off(&keep).into_values().collect();
            let within = (size % PAGE_SIZE) as usize;
            if within != 0 {
                if let Some(f) = pages.get_mut(&(size / PAGE_SIZE)) {
                    f.bytes_mut()[within..].fill(0);
                }
            }
        }
        node.inode.size = size;
        node.inode.sectors = (pages.len() as u64 * (PAGE_SIZE / 512)) as u32;
        node.inode.mtime = now;
        node.inode.ctime = now;
        *inode = node.inode.clone();
        self.release(gone.into_iter());
        Ok(())
    }

    fn statfs(&self) -> StatFs {
        StatFs {
            magic: TMPFS_MAGIC,
            bsize: PAGE_SIZE,
            blocks: self.max_pages,
            bfree: self.max_pages.saturating_sub(self.pages),
            bavail: self.max_pages.saturating_sub(self.pages),
            files: self.max_inodes,
            ffree: self.max_inodes.saturating_sub(self.nodes.len() as u64),
        }
    }

    fn writable(&self) -> bool {
        !self.read_only
    }

    fn set_read_only(&mut self, ro: bool) -> Result<(), Ext2Error> {
        self.read_only = ro;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), Ext2Error> {
        Ok(())
    }

    fn write_back(&mut self) -> Result<(), Ext2Error> {
        Ok(())
    }

    fn remount(&mut self, data: &[u8], ram: u64) -> Result<(), Ext2Error> {
        let opts = Options::parse(data, ram).map_err(|_| Ext2Error::Invalid)?;
        self.set_limits(&opts, ram)
    }

    fn opened(&mut self, ino: u32) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.opens += 1;
        }
    }

    /// The file's own frame, mapped as it is, so the mapping, read and write see one page; a hole
    /// gets a zeroed page (counted against size=: ENOSPC, SIGBUS at the fault, as Linux's shmem).
    /// Past the end of the file: Invalid (SIGBUS).
    fn map_page(&mut self, ino: u32, idx: u64) -> Result<u64, Ext2Error> {
        let (max, used) = (self.max_pages, self.pages);
        let node = self.nodes.get_mut(&ino).ok_or(Ext2Error::NotFound)?;
        if idx.saturating_mul(PAGE_SIZE) >= node.inode.size {
            return Err(Ext2Error::Invalid);
        }
        let Data::File(pages) = &mut node.data else {
            return Err(Ext2Error::IsDir);
        };
        let pa = match pages.entry(idx) {
            Entry::Occupied(e) => e.get().pa(),
            Entry::Vacant(e) => {
                let mut f = Some(())
                    .filter(|_| used < max)
                    .and_then(|_| OwnedFrame::alloc())
                    .ok_or(Ext2Error::NoSpace)?;
                f.bytes_mut().fill(0);
                let pa = e.insert(f).pa();
                node.inode.sectors = (pages.len() as u64 * (PAGE_SIZE / 512)) as u32;
                self.pages += 1;
                SHMEM_PAGES.fetch_add(1, Ordering::Relaxed);
                pa
            }
        };
        crate::mm::frame::get(pa);
        Ok(pa)
    }

    fn closed(&mut self, ino: u32) -> bool {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.opens = n.opens.saturating_sub(1);
        }
        self.maybe_free(ino);
        // Its pages are the file's own, not the page cache's.
        false
    }

    fn options(&self) -> Vec<u8> {
        let mut o = Vec::new();
        let mut buf = [0u8; 64];
        if self.size_given {
            o.extend_from_slice(b",size=");
            o.extend_from_slice(kcore::fmt::render(self.max_pages * 4, 10, 1, &mut buf).as_bytes());
            o.push(b'k');
        }
        let mode = self.nodes.get(&ROOT).map_or(0, |n| n.inode.mode & 0o7777);
        o.extend_from_slice(b",mode=");
        o.extend_from_slice(kcore::fmt::render(mode as u64, 8, 1, &mut buf).as_bytes());
        o
    }
}

impl Drop for Tmpfs {
    /// Unmounted: every page goes back.
    fn drop(&mut self) {
        let frames: Vec<OwnedFrame> = core::mem::take(&mut self.nodes)
            .into_values()
            .filter_map(|n| match n.data {
                Data::File(p) => Some(p),
                _ => None,
            })
            .flat_map(|p| p.into_values())
            .collect();
        self.release(frames.into_iter());
    }
}
