//! The page cache: 4 KiB pages of disk-backed files, indexed by (device, inode, page), each in a
//! frame of its own ([`OwnedFrame`]).
//!
//! Reads of ext2 files go through it (`fs::ext2file`): a hit is one copy from the frame, a miss
//! reads a run of up to [`RUN_PAGES`] pages with as few disk requests as the file's layout allows
//! and keeps them. Writes go through to the disk as before and patch the cached pages they cover,
//! so the cache only ever holds clean pages (it is write-through, not Linux's write-back: nothing is
//! lost at a crash that was not lost before, and fsync needs no page walk). Truncation drops the
//! pages at and past the new end; a newly created inode drops whatever an earlier file of that number
//! left; a write to a mounted disk through /dev/vdX drops the disk's pages.
//!
//! Bounded: at most a quarter of RAM, and it gives way to everything else: it stops growing while
//! free memory is short ([`RESERVE_FRAMES`]), and the out-of-memory path ([`shrink`]) evicts pages,
//! oldest first, before it kills a process. /proc/meminfo counts the pages in `Cached`.

use super::page::OwnedFrame;
use super::{frame, PAGE_SIZE};
use crate::sync::KCell;
use alloc::collections::{BTreeMap, VecDeque};
use core::sync::atomic::{AtomicU64, Ordering};

/// (device, inode, page index).
pub type Key = (u32, u32, u64);

/// Pages one miss reads ahead at most (64 KiB: Linux's default read-ahead window is 128 KiB).
pub const RUN_PAGES: u64 = 16;
/// Below this many free frames the cache takes no new pages.
const RESERVE_FRAMES: u64 = 1024;

struct Cache {
    pages: BTreeMap<Key, OwnedFrame>,
    /// Keys in insertion order (eviction order); keys of pages dropped since stay until popped.
    order: VecDeque<Key>,
}

static CACHE: KCell<Cache> = KCell::new(Cache {
    pages: BTreeMap::new(),
    order: VecDeque::new(),
});

/// Pages cached now, hits, misses (pages read from the disk into the cache), evictions.
pub static STATS: [AtomicU64; 4] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

/// Copies `dst.len()` bytes at `within` of cached page `key` into `dst`; false if not cached.
pub fn read(key: Key, within: usize, dst: &mut [u8]) -> bool {
    let c = CACHE.borrow();
    match c.pages.get(&key) {
        Some(f) => {
            dst.copy_from_slice(&f.bytes()[within..within + dst.len()]);
            STATS[1].fetch_add(1, Ordering::Relaxed);
            true
        }
        None => false,
    }
}

/// Whether page `key` is cached.
pub fn contains(key: Key) -> bool {
    CACHE.borrow().pages.contains_key(&key)
}

/// Whether the cache may take another page now.
fn room(c: &Cache) -> bool {
    let (total, _) = frame::stats();
    (c.pages.len() as u64) < total / 4 && !frame::fewer_free_than(RESERVE_FRAMES)
}

/// Caches `bytes` (a whole page, zeros past the end of the file) as page `key`, if there is room.
pub fn insert(key: Key, bytes: &[u8]) {
    let mut c = CACHE.borrow_mut();
    if c.pages.contains_key(&key) || !room(&c) {
        return;
    }
    let Some(mut f) = OwnedFrame::alloc() else {
        return;
    };
    f.bytes_mut().copy_from_slice(bytes);
    c.pages.insert(key, f);
    c.order.push_back(key);
    if c.order.len() > 2 * c.pages.len() + 64 {
        // Keys of dropped pages piled up: start the order again from what is cached.
        let keys: VecDeque<Key> = c.pages.keys().copied().collect();
        c.order = keys;
    }
    STATS[0].store(c.pages.len() as u64, Ordering::Relaxed);
    STATS[2].fetch_add(1, Ordering::Relaxed);
}

/// A write of `src` at byte `within` of page `key` reached the disk: the cached page (if any) gets
/// the same bytes.
pub fn update(key: Key, within: usize, src: &[u8]) {
    if let Some(f) = CACHE.borrow_mut().pages.get_mut(&key) {
        f.bytes_mut()[within..within + src.len()].copy_from_slice(src);
    }
}

/// Drops the pages of inode `ino` on `dev` from page `from` on (truncation, a new inode).
pub fn invalidate(dev: u32, ino: u32, from: u64) {
    let mut c = CACHE.borrow_mut();
    // [(dev, ino, from), (dev, ino + 1, 0)) leaves; what follows comes back.
    let mut gone = c.pages.split_off(&(dev, ino, from));
    let after = match ino.checked_add(1) {
        Some(next) => gone.split_off(&(dev, next, 0)),
        None => gone.split_off(&(dev, ino, u64::MAX)),
    };
    c.pages.extend(after);
    drop(gone);
    STATS[0].store(c.pages.len() as u64, Ordering::Relaxed);
}

/// Drops every page of device `dev` (its disk was written underneath the filesystem).
pub fn invalidate_dev(dev: u32) {
    let mut c = CACHE.borrow_mut();
    c.pages.retain(|k, _| k.0 != dev);
    if c.pages.is_empty() {
        c.order.clear();
    }
    STATS[0].store(c.pages.len() as u64, Ordering::Relaxed);
}

/// Evicts up to `n` pages, oldest first (memory pressure); returns how many frames went back. A
/// cache in use at that moment (a fault while copying out of it) gives nothing.
pub fn shrink(n: u64) -> u64 {
    let Ok(mut c) = CACHE.try_borrow_mut() else {
        return 0;
    };
    let mut freed = 0;
    while freed < n {
        let Some(k) = c.order.pop_front() else {
            break;
        };
        if c.pages.remove(&k).is_some() {
            freed += 1;
        }
    }
    if c.pages.is_empty() {
        c.order.clear();
    }
    STATS[0].store(c.pages.len() as u64, Ordering::Relaxed);
    STATS[3].fetch_add(freed, Ordering::Relaxed);
    freed
}

/// Pages cached now (/proc/meminfo Cached).
pub fn pages() -> u64 {
    STATS[0].load(Ordering::Relaxed)
}

/// The page index of byte `pos`.
pub fn index(pos: u64) -> u64 {
    pos / PAGE_SIZE
}
