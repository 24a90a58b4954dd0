//! The page cache: 4 KiB pages of disk-backed files, indexed by (device, inode, page), each in a
//! frame of its own ([`OwnedFrame`]).
//!
//! Reads of ext2 files go through it (`fs::ext2file`): a hit is one copy from the frame, a miss
//! reads a run of up to [`RUN_PAGES`] pages with as few disk requests as the file's layout allows
//! and keeps them. It is write-back, as Linux's: a write allocates the file's blocks at once (so a
//! full disk is ENOSPC at `write`, as ext2 on Linux) but only copies the bytes into cached pages and
//! marks them dirty; `fs::writeback` writes dirty pages to their blocks at fsync/fdatasync/sync/
//! syncfs, every [`WRITEBACK_NS`](crate::fs::writeback) or so, at umount and remount-ro, at
//! power-off and reboot, when dirty pages pass [`dirty_limit`], and under memory pressure. A dirty
//! page is never dropped without being written, except when its file is truncated past it (the
//! blocks are gone) or the inode is reused. Truncation drops the pages past the new end; a newly
//! created inode drops whatever an earlier file of that number left.
//!
//! Shared file mappings map the cache's frames themselves (`fs::ext2file::map_shared_page`: the
//! frame's share count counts each mapping), so `read`, `write` and every shared mapping of a file
//! see one copy; the first write through a mapping faults (the entry is read-only until then) and
//! makes the page dirty ([`mark_dirty`], from `fs::mapping::page_mkwrite`), and a write-back
//! write-protects mapped pages again first (their dirty bits, harvested, make pages dirty too).
//! A mapped page is never evicted.
//!
//! Bounded: at most a quarter of RAM, and it gives way to everything else: it stops growing while
//! free memory is short ([`RESERVE_FRAMES`]), a full cache evicts its oldest clean page for a new
//! one, and the out-of-memory path writes dirty pages back and evicts ([`shrink`]), oldest first,
//! before it kills a process. /proc/meminfo counts the pages in `Cached`, the dirty ones in `Dirty`
//! and those being written in `Writeback`.

use super::page::OwnedFrame;
use super::{frame, PAGE_SIZE};
use crate::sync::KCell;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
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
    /// The pages changed in memory and not yet written to the disk.
    dirty: BTreeSet<Key>,
}

static CACHE: KCell<Cache> = KCell::new(Cache {
    pages: BTreeMap::new(),
    order: VecDeque::new(),
    dirty: BTreeSet::new(),
});

/// Pages cached now, hits, misses (pages read from the disk into the cache), evictions, dirty pages
/// now, pages under write-back now, pages written back since boot.
pub static STATS: [AtomicU64; 7] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

fn counts(c: &Cache) {
    STATS[0].store(c.pages.len() as u64, Ordering::Relaxed);
    STATS[4].store(c.dirty.len() as u64, Ordering::Relaxed);
}

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

/// Runs `f` on the bytes of cached page `key` (a hit); None if not cached. `f` may copy to user
/// memory: a fault in it finds the cache borrowed (shared), so nothing it runs changes the cache.
pub fn with_page<R>(key: Key, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    let c = CACHE.borrow();
    let r = f(c.pages.get(&key)?.bytes());
    STATS[1].fetch_add(1, Ordering::Relaxed);
    Some(r)
}

/// Takes cached page `key` out of the cache for a write into it without the cache borrowed (a copy
/// from user memory that may fault); [`put`] gives it back. None if not cached.
pub fn take(key: Key) -> Option<OwnedFrame> {
    CACHE.borrow_mut().pages.remove(&key)
}

/// Whether the cache has room for one more page (evicting its oldest clean page if it is full).
pub fn make_room() -> bool {
    room(&mut CACHE.borrow_mut())
}

/// Puts `frame` in as dirty page `key`: one [`take`]n out (its place in the eviction order kept),
/// or a `new` one after [`make_room`].
pub fn put_dirty(key: Key, frame: OwnedFrame, new: bool) {
    let mut c = CACHE.borrow_mut();
    c.pages.insert(key, frame);
    if new {
        c.order.push_back(key);
    }
    c.dirty.insert(key);
    counts(&c);
}

/// Whether page `key` is cached.
pub fn contains(key: Key) -> bool {
    CACHE.borrow().pages.contains_key(&key)
}

/// The most pages the cache holds (a quarter of RAM).
fn limit() -> u64 {
    frame::stats().0 / 4
}

/// Dirty pages past which a writer writes back before it goes on (Linux's dirty_ratio, 20% of
/// available memory; here half of what the cache may hold, an eighth of RAM).
pub fn dirty_limit() -> u64 {
    limit() / 2
}

/// Whether the cache may take another page now; when it is full, its oldest clean page makes
/// room (dirty ones keep their place in the order).
fn room(c: &mut Cache) -> bool {
    if frame::fewer_free_than(RESERVE_FRAMES) {
        return false;
    }
    if (c.pages.len() as u64) < limit() {
        return true;
    }
    for _ in 0..c.order.len().min(64) {
        let Some(k) = c.order.pop_front() else {
            break;
        };
        if c.dirty.contains(&k) || mapped(c, k) {
            c.order.push_back(k);
        } else if c.pages.remove(&k).is_some() {
            STATS[3].fetch_add(1, Ordering::Relaxed);
            return true;
        }
    }
    false
}

/// Whether page `key` is mapped by a shared file mapping (its frame has more users than the cache).
fn mapped(c: &Cache, key: Key) -> bool {
    c.pages.get(&key).is_some_and(|f| frame::is_shared(f.pa()))
}

/// The frame of cached page `key` for a shared mapping, with one more user counted (the mapping
/// gives it back with `frame::put`); None if not cached, or if the cache is being changed (a fault
/// in the middle of a cache operation: the fault then fails instead of the kernel).
pub fn map_page(key: Key) -> Option<u64> {
    let c = CACHE.try_borrow().ok()?;
    let pa = c.pages.get(&key)?.pa();
    frame::get(pa);
    STATS[1].fetch_add(1, Ordering::Relaxed);
    Some(pa)
}

/// Caches `bytes` as clean page `key` for a shared mapping and returns its frame as [`map_page`]
/// does: past the cache's size limit too (a mapped page must be the cache's), None only when no
/// frame is free or the cache is in use (a fault inside a copy out of it: a buffer another thread
/// unmapped and mapped again meanwhile). A page cached meanwhile is left as it is.
pub fn insert_mapped(key: Key, bytes: &[u8]) -> Option<u64> {
    let mut c = CACHE.try_borrow_mut().ok()?;
    if !c.pages.contains_key(&key) {
        // Room if it can be made; a full cache of dirty or mapped pages grows anyway.
        let _ = room(&mut c);
        let mut f = OwnedFrame::alloc()?;
        f.bytes_mut().copy_from_slice(bytes);
        c.pages.insert(key, f);
        c.order.push_back(key);
        counts(&c);
        STATS[2].fetch_add(1, Ordering::Relaxed);
    }
    drop(c);
    map_page(key)
}

/// Whether the cache holds frame `pa` as page `key`.
pub fn holds(key: Key, pa: u64) -> bool {
    CACHE
        .try_borrow()
        .is_ok_and(|c| c.pages.get(&key).is_some_and(|f| f.pa() == pa))
}

/// A shared mapping wrote page `key` (frame `pa`, the page-table entry's dirty bit): it is dirty,
/// if the cache still holds that frame as that page (truncation or a device write may have
/// dropped it; the mapping then holds the only copy, as a page Linux would have unmapped).
pub fn mark_dirty(key: Key, pa: u64) {
    let Ok(mut c) = CACHE.try_borrow_mut() else {
        return;
    };
    if c.pages.get(&key).is_some_and(|f| f.pa() == pa) && c.dirty.insert(key) {
        counts(&c);
    }
}

/// Adds a frame holding `bytes` as page `key` (not cached yet); false when there is no room.
fn add(c: &mut Cache, key: Key, bytes: &[u8]) -> bool {
    if !room(c) {
        return false;
    }
    let Some(mut f) = OwnedFrame::alloc() else {
        return false;
    };
    f.bytes_mut().copy_from_slice(bytes);
    c.pages.insert(key, f);
    c.order.push_back(key);
    if c.order.len() > 2 * c.pages.len() + 64 {
        // Keys of dropped pages piled up: start the order again from what is cached.
        let keys: VecDeque<Key> = c.pages.keys().copied().collect();
        c.order = keys;
    }
    true
}

/// Caches frame `f` (a whole page read from the disk) as clean page `key`, if there is room and the
/// page is not cached already (else the frame goes back).
pub fn insert_frame(key: Key, f: OwnedFrame) {
    let mut c = CACHE.borrow_mut();
    if c.pages.contains_key(&key) || !room(&mut c) {
        return;
    }
    c.pages.insert(key, f);
    c.order.push_back(key);
    if c.order.len() > 2 * c.pages.len() + 64 {
        let keys: VecDeque<Key> = c.pages.keys().copied().collect();
        c.order = keys;
    }
    counts(&c);
    STATS[2].fetch_add(1, Ordering::Relaxed);
}

/// Caches `bytes` (a whole page, zeros past the end of the file) as clean page `key`, if there is
/// room (a page cached already is left as it is: it may be dirty).
pub fn insert(key: Key, bytes: &[u8]) {
    let mut c = CACHE.borrow_mut();
    if c.pages.contains_key(&key) || !add(&mut c, key, bytes) {
        return;
    }
    counts(&c);
    STATS[2].fetch_add(1, Ordering::Relaxed);
}

/// Whether any page of device `dev` is dirty (one look at a counter when nothing is dirty).
pub fn dev_dirty(dev: u32) -> bool {
    if dirty_pages() == 0 {
        return false;
    }
    let c = CACHE.borrow();
    c.dirty
        .range((dev, 0, 0)..=(dev, u32::MAX, u64::MAX))
        .next()
        .is_some()
}

/// The dirty pages in `[from, to]`, in key order.
pub fn dirty_keys(from: Key, to: Key) -> Vec<Key> {
    let c = CACHE.borrow();
    if from > to {
        return Vec::new();
    }
    c.dirty.range(from..=to).copied().collect()
}

/// Copies bytes `[within, within + dst.len())` of cached page `key` into `dst` (write-back and
/// overlays; no hit counted); false if not cached.
pub fn copy_out(key: Key, within: usize, dst: &mut [u8]) -> bool {
    match CACHE.borrow().pages.get(&key) {
        Some(f) => {
            dst.copy_from_slice(&f.bytes()[within..within + dst.len()]);
            true
        }
        None => false,
    }
}

/// Page `key` reached the disk: it is clean now.
pub fn clean(key: Key) {
    let mut c = CACHE.borrow_mut();
    if c.dirty.remove(&key) {
        counts(&c);
        STATS[6].fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts pages under write-back (for /proc/meminfo's Writeback).
pub fn writeback_started(n: u64) {
    STATS[5].fetch_add(n, Ordering::Relaxed);
}

pub fn writeback_ended(n: u64) {
    STATS[5].fetch_sub(n, Ordering::Relaxed);
}

/// Drops the pages of inode `ino` on `dev` from page `from` on (truncation, a new inode); dirty
/// ones too: their blocks are gone.
pub fn invalidate(dev: u32, ino: u32, from: u64) {
    let mut c = CACHE.borrow_mut();
    // [(dev, ino, from), (dev, ino + 1, 0)) leaves; what follows comes back.
    let mut gone = c.pages.split_off(&(dev, ino, from));
    let after = match ino.checked_add(1) {
        Some(next) => gone.split_off(&(dev, next, 0)),
        None => gone.split_off(&(dev, ino, u64::MAX)),
    };
    c.pages.extend(after);
    for k in gone.keys() {
        c.dirty.remove(k);
    }
    drop(gone);
    counts(&c);
}

/// Drops every page of device `dev` (its disk was written underneath the filesystem, or it was
/// unmounted after a write-back). Dirty pages go too: callers write them back first.
pub fn invalidate_dev(dev: u32) {
    let mut c = CACHE.borrow_mut();
    c.pages.retain(|k, _| k.0 != dev);
    c.dirty.retain(|k| k.0 != dev);
    if c.pages.is_empty() {
        c.order.clear();
    }
    counts(&c);
}

/// Evicts up to `n` clean pages, oldest first (memory pressure; the caller writes dirty pages back
/// first); returns how many frames went back. A cache in use at that moment (a fault while copying
/// out of it) gives nothing.
pub fn shrink(n: u64) -> u64 {
    let Ok(mut c) = CACHE.try_borrow_mut() else {
        return 0;
    };
    let mut freed = 0;
    let mut kept = VecDeque::new();
    while freed < n {
        let Some(k) = c.order.pop_front() else {
            break;
        };
        if c.dirty.contains(&k) || mapped(&c, k) {
            kept.push_back(k);
        } else if c.pages.remove(&k).is_some() {
            freed += 1;
        }
    }
    // Dirty and mapped pages stay, oldest first.
    while let Some(k) = kept.pop_back() {
        c.order.push_front(k);
    }
    if c.pages.is_empty() {
        c.order.clear();
    }
    counts(&c);
    STATS[3].fetch_add(freed, Ordering::Relaxed);
    freed
}

/// Whether the cache is borrowed right now (a fault inside a cache copy).
pub fn busy() -> bool {
    CACHE.try_borrow_mut().is_err()
}

/// Pages cached now (/proc/meminfo Cached).
pub fn pages() -> u64 {
    STATS[0].load(Ordering::Relaxed)
}

/// Dirty pages now (/proc/meminfo Dirty).
pub fn dirty_pages() -> u64 {
    STATS[4].load(Ordering::Relaxed)
}

/// Pages being written back now (/proc/meminfo Writeback).
pub fn writeback_pages() -> u64 {
    STATS[5].load(Ordering::Relaxed)
}

/// The page index of byte `pos`.
pub fn index(pos: u64) -> u64 {
    pos / PAGE_SIZE
}
