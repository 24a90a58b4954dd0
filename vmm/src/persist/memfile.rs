//! Snapshot memory files: guest RAM written out (a Full snapshot: every non-zero page, sparse; a Diff: the
//! pages written since the last snapshot, Full or Diff), guest RAM mapped back onto what was just written,
//! and a Diff laid onto its base ([`rebase`], the `rebase-snap` tool).
//!
//! **How a Diff finds the pages written since the last snapshot.** After every snapshot, the pages it wrote
//! become file pages of guest RAM again: after a Full, each region is mapped again in place,
//! `MAP_PRIVATE|MAP_FIXED`, onto the memory file just written ([`remap_onto_file`]); after a Diff, each run
//! of pages the Diff wrote is mapped so onto the Diff's file ([`remap_runs`]); a restored VM is mapped from
//! its memory file already. The bytes are the same, so the guest sees no change; from then on, a page
//! written by anyone (the guest through KVM, the VMM's devices through vm-memory, the host kernel on the
//! VMM's behalf: `preadv` in the block thread pool, io_uring, KVM's own writes such as kvmclock) takes a
//! copy-on-write fault and becomes a private anonymous page, which `/proc/self/pagemap` tells apart from
//! the file's pages (present or swapped, and not file-backed). The pages not written since are file pages
//! of some earlier snapshot whose contents the latest memory file chain already holds. So a Diff is exactly
//! the pages written since the previous snapshot, whichever kind that was.
//!
//! **Bounds.** Each run of a Diff is one more mapping (VMA) of guest RAM, and the process has at most
//! `vm.max_map_count` (65530 by default) of them. A Diff is written as at most [`MAX_DIFF_RUNS`] runs:
//! when the pages written form more, gaps between runs are filled (with the pages' current contents, which
//! are also the base's), the gap allowed doubling until the count fits, so the worst case is one run per
//! region (a Diff as large as the span of pages written). A Full snapshot puts each region back to one
//! mapping. If guest RAM already has more than [`MAX_GUEST_MAPPINGS`] mappings, a Diff's runs are not
//! mapped: the private copies stay, and the next Diff holds the pages written since the last snapshot that
//! was mapped back, a superset, still correct when the Diffs are laid on in order, only larger.
//!
//! **Without `/proc`** (a jail has none): a Full reads every page and writes the non-zero ones (still
//! sparse, but each hole of a file mapping read costs a page-cache page); a Diff writes every page (zero
//! pages included, so a page written to zero is not lost) and its whole regions are then mapped back, one
//! mapping per region.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use devices::GuestMemoryMmap;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

/// A memory file cannot be written, mapped or rebased.
#[derive(Debug, thiserror::Error)]
pub enum MemFileError {
    #[error("memory file {path:?}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("memory file {path:?} is {len} bytes; its base is {want}")]
    Size { path: PathBuf, len: u64, want: u64 },
    #[error("cannot map guest RAM onto the memory file: {0}")]
    Map(String),
    #[error("cannot read /proc/self/pagemap: {0}")]
    Pagemap(#[source] std::io::Error),
    #[error("cannot write the memory file: {0}")]
    Write(#[source] std::io::Error),
}

const PAGE: usize = 4096;
/// At most this many runs (each one mapping of guest RAM after the remap) in one Diff.
pub const MAX_DIFF_RUNS: usize = 1024;
/// A Diff's runs are mapped back only while guest RAM has at most this many mappings.
pub const MAX_GUEST_MAPPINGS: usize = 8192;
/// `/proc/self/pagemap` bits (Documentation/admin-guide/mm/pagemap.rst).
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAP: u64 = 1 << 62;
const PM_FILE_OR_SHARED: u64 = 1 << 61;

/// Consecutive pages of one region, written at their offset in the memory file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// Host address of the first page.
    host: usize,
    /// Offset in the memory file.
    offset: u64,
    /// Length in bytes, a whole number of pages.
    len: usize,
}

/// What a snapshot wrote to its memory file.
#[derive(Debug, Default)]
pub struct Written {
    /// Bytes of guest RAM written as data.
    pub bytes: u64,
    /// Where, in memory-file order.
    pub runs: Vec<Run>,
}

/// One region of guest RAM: its host address, length, and offset in the memory file.
struct Region {
    host: usize,
    len: usize,
    offset: u64,
}

fn regions(mem: &GuestMemoryMmap) -> Result<Vec<Region>, MemFileError> {
    let mut offset = 0u64;
    let mut out = Vec::new();
    for region in mem.iter() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| MemFileError::Map(e.to_string()))? as usize;
        let len = region.len() as usize;
        out.push(Region { host, len, offset });
        offset += len as u64;
    }
    Ok(out)
}

/// Gives `file` guest RAM's length, all of it a hole.
fn prepare(file: &std::fs::File, regions: &[Region]) -> Result<(), MemFileError> {
    let total: u64 = regions.iter().map(|r| r.len as u64).sum();
    file.set_len(0)
        .and_then(|_| file.set_len(total))
        .map_err(MemFileError::Write)
}

/// Writes each run's pages from guest RAM to its offset in `file`. Returns the bytes written.
fn write_runs(file: &std::fs::File, runs: &[Run]) -> Result<u64, MemFileError> {
    let mut written = 0;
    for r in runs {
        // SAFETY: every run lies inside one region's live mapping (built from `regions`); the vCPUs are
        // paused and the devices idle, so nothing writes these pages while they are copied out.
        let bytes = unsafe { std::slice::from_raw_parts(r.host as *const u8, r.len) };
        file.write_all_at(bytes, r.offset)
            .map_err(MemFileError::Write)?;
        written += r.len as u64;
    }
    Ok(written)
}

/// Appends page `i` of `region` to `runs`, extending the last run if it ends just before.
fn push_page(runs: &mut Vec<Run>, region: &Region, i: usize) {
    let host = region.host + i * PAGE;
    if let Some(last) = runs.last_mut() {
        if last.host + last.len == host
            && last.offset + last.len as u64 == region.offset + (i * PAGE) as u64
        {
            last.len += PAGE;
            return;
        }
    }
    runs.push(Run {
        host,
        offset: region.offset + (i * PAGE) as u64,
        len: PAGE,
    });
}

/// Writes a Full snapshot's memory file: `file` gets guest RAM's full length (raw guest RAM, regions in
/// guest-physical order, the MMIO hole left out), **sparse**: a page that holds only zeroes is a hole.
/// Pages known to be zero are not even read: those `/proc/self/pagemap` shows neither present nor swapped
/// in an anonymous mapping (never touched), or in a file mapping where the file has a hole (`SEEK_DATA`;
/// each mapping of guest RAM found in `/proc/self/maps`). The others are read and checked. Without
/// `/proc`, every page is read. The vCPUs are paused, the devices idle.
pub fn dump(mem: &GuestMemoryMmap, file: &std::fs::File) -> Result<Written, MemFileError> {
    let regions = regions(mem)?;
    prepare(file, &regions)?;
    let mut pagemap = Pagemap::open().ok();
    let maps = std::fs::read_to_string("/proc/self/maps").ok();
    let mut extents = ExtentCache::default();
    let mut runs = Vec::new();
    for region in &regions {
        let pages = region.len / PAGE;
        let entries = match pagemap.as_mut() {
            Some(p) => Some(p.entries(region.host, pages)?),
            None => None,
        };
        let maybe_data = match &maps {
            Some(maps) => maybe_data(maps, region, &mut extents),
            None => vec![true; pages],
        };
        for i in 0..pages {
            let touched = match &entries {
                Some(e) => e[i] & (PM_PRESENT | PM_SWAP) != 0 || maybe_data[i],
                None => true,
            };
            // SAFETY: page `i` lies inside this region's live mapping; the vCPUs are paused and the
            // devices idle, so nothing writes it while it is read.
            if touched && !is_zero(unsafe { page(region.host, i) }) {
                push_page(&mut runs, region, i);
            }
        }
    }
    let bytes = write_runs(file, &runs)?;
    Ok(Written { bytes, runs })
}

/// Writes a Diff snapshot's memory file: `file` gets guest RAM's full length and, at their offsets, the
/// pages written since the last snapshot (the pages `/proc/self/pagemap` shows present or swapped and not
/// file-backed: private copies; see the module's doc), at most [`MAX_DIFF_RUNS`] runs; everything else is
/// a hole (as Firecracker's diff files; [`rebase`] lays it onto its base). A private page discarded since
/// (`MADV_DONTNEED`) reads as the file's again, so leaving it out is right too. Without `/proc`, every page.
pub fn dump_written(mem: &GuestMemoryMmap, file: &std::fs::File) -> Result<Written, MemFileError> {
    let regions = regions(mem)?;
    prepare(file, &regions)?;
    let mut runs = Vec::new();
    match Pagemap::open() {
        Ok(mut pagemap) => {
            for region in &regions {
                let entries = pagemap.entries(region.host, region.len / PAGE)?;
                for (i, &e) in entries.iter().enumerate() {
                    if e & (PM_PRESENT | PM_SWAP) != 0 && e & PM_FILE_OR_SHARED == 0 {
                        push_page(&mut runs, region, i);
                    }
                }
            }
            coalesce(&mut runs, MAX_DIFF_RUNS);
        }
        Err(e) => {
            log::info!(
                target: "snapshot",
                "no /proc/self/pagemap ({e}): the Diff holds every page of guest RAM"
            );
            runs = regions
                .iter()
                .map(|r| Run {
                    host: r.host,
                    offset: r.offset,
                    len: r.len,
                })
                .collect();
        }
    }
    let bytes = write_runs(file, &runs)?;
    Ok(Written { bytes, runs })
}

/// Merges runs of the same region separated by gaps of up to `gap` pages, doubling `gap` until at most
/// `max` runs are left (the gaps' pages are then written too: their current contents).
fn coalesce(runs: &mut Vec<Run>, max: usize) {
    let mut gap = 1usize;
    while runs.len() > max {
        let mut out: Vec<Run> = Vec::with_capacity(runs.len());
        for &r in runs.iter() {
            if let Some(last) = out.last_mut() {
                let end = last.host + last.len;
                // Same region: host addresses and file offsets advance together.
                let same_region = r.host >= end
                    && r.offset >= last.offset + last.len as u64
                    && (r.host - last.host) as u64 == r.offset - last.offset;
                if same_region && r.host - end <= gap * PAGE {
                    last.len = r.host + r.len - last.host;
                    continue;
                }
            }
            out.push(r);
        }
        *runs = out;
        gap = gap.saturating_mul(2);
    }
}

/// Maps each region of guest RAM again, in place, `MAP_PRIVATE` onto `file`, the memory file a Full
/// snapshot just wrote from it (the same contents, so the guest sees no change): see the module's doc.
/// The caller keeps the vCPUs paused and the devices idle meanwhile.
pub fn remap_onto_file(mem: &GuestMemoryMmap, file: &std::fs::File) -> Result<(), MemFileError> {
    for r in regions(mem)? {
        map_fixed(r.host, r.len, file, r.offset)?;
    }
    crate::vstate::memory::exclude_from_core_dumps(mem);
    Ok(())
}

/// Maps each run a Diff snapshot just wrote to `file` again in place, `MAP_PRIVATE` onto that file (the
/// same contents): see the module's doc. Returns whether it did: not when guest RAM has more than
/// [`MAX_GUEST_MAPPINGS`] mappings already (then the next Diff holds these pages too).
pub fn remap_runs(
    mem: &GuestMemoryMmap,
    file: &std::fs::File,
    runs: &[Run],
) -> Result<bool, MemFileError> {
    remap_runs_within(mem, file, runs, MAX_GUEST_MAPPINGS)
}

/// [`remap_runs`] with the limit on guest RAM's mappings given.
fn remap_runs_within(
    mem: &GuestMemoryMmap,
    file: &std::fs::File,
    runs: &[Run],
    max_mappings: usize,
) -> Result<bool, MemFileError> {
    let regions = regions(mem)?;
    if let Some(now) = guest_mappings(&regions) {
        if now + 2 * runs.len() > max_mappings {
            log::warn!(
                target: "snapshot",
                "guest RAM has {now} mappings: this Diff's {} runs are not mapped back, so the next Diff \
                 holds its pages as well",
                runs.len()
            );
            return Ok(false);
        }
    }
    for r in runs {
        map_fixed(r.host, r.len, file, r.offset)?;
    }
    crate::vstate::memory::exclude_from_core_dumps(mem);
    Ok(true)
}

/// `mmap(MAP_PRIVATE|MAP_FIXED)` of `file` at `offset` over `len` bytes of guest RAM at `host`.
fn map_fixed(
    host: usize,
    len: usize,
    file: &std::fs::File,
    offset: u64,
) -> Result<(), MemFileError> {
    // SAFETY: `host..host + len` lies inside one region of guest RAM, a mapping owned by the guest memory
    // and alive as long as it; MAP_FIXED replaces those pages atomically, so the range never becomes
    // unmapped. The file holds the very bytes, written from these pages while the vCPUs were paused and
    // the devices idle, so every reader (KVM through its MMU notifier, the devices) sees unchanged memory.
    let r = unsafe {
        libc::mmap(
            host as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
            file.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    if r == libc::MAP_FAILED {
        return Err(MemFileError::Map(
            std::io::Error::last_os_error().to_string(),
        ));
    }
    Ok(())
}

/// How many mappings guest RAM is made of now, from `/proc/self/maps` (None without `/proc`).
fn guest_mappings(regions: &[Region]) -> Option<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    Some(
        maps.lines()
            .filter_map(parse_maps_line)
            .filter(|m| {
                regions
                    .iter()
                    .any(|r| m.lo < r.host + r.len && r.host < m.hi)
            })
            .count(),
    )
}

/// Lays a Diff snapshot's memory file onto its base (Firecracker's `rebase-snap`): every data extent of
/// `diff` (`SEEK_DATA`/`SEEK_HOLE`) is copied to the same offset of `base`, which then holds guest RAM as
/// at the Diff. Diffs are laid on in the order they were taken. The two must have the same length.
/// Returns the bytes copied.
pub fn rebase(base: &Path, diff: &Path) -> Result<u64, MemFileError> {
    let open = |path: &Path, write: bool| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)
            .and_then(|f| f.metadata().map(|m| (f, m.len())))
            .map_err(|source| MemFileError::File {
                path: path.to_owned(),
                source,
            })
    };
    let (base_file, base_len) = open(base, true)?;
    let (diff_file, diff_len) = open(diff, false)?;
    if base_len != diff_len {
        return Err(MemFileError::Size {
            path: diff.to_owned(),
            len: diff_len,
            want: base_len,
        });
    }
    let diff_err = |source| MemFileError::File {
        path: diff.to_owned(),
        source,
    };
    let extents = data_extents(&diff_file, 0, diff_len).map_err(diff_err)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut copied = 0u64;
    for (start, end) in extents {
        let mut at = start;
        while at < end {
            let n = buf.len().min((end - at) as usize);
            diff_file
                .read_exact_at(&mut buf[..n], at)
                .map_err(diff_err)?;
            base_file
                .write_all_at(&buf[..n], at)
                .map_err(MemFileError::Write)?;
            at += n as u64;
        }
        copied += end - start;
    }
    base_file.sync_data().map_err(MemFileError::Write)?;
    Ok(copied)
}

/// `/proc/self/pagemap`, read one region at a time.
struct Pagemap(std::fs::File);

impl Pagemap {
    fn open() -> Result<Self, MemFileError> {
        std::fs::File::open("/proc/self/pagemap")
            .map(Pagemap)
            .map_err(MemFileError::Pagemap)
    }

    /// The 64-bit entries of the `pages` pages from host address `host`.
    fn entries(&mut self, host: usize, pages: usize) -> Result<Vec<u64>, MemFileError> {
        let mut raw = vec![0u8; pages * 8];
        self.0
            .read_exact_at(&mut raw, (host / PAGE * 8) as u64)
            .map_err(MemFileError::Pagemap)?;
        Ok(raw
            .chunks_exact(8)
            .map(|e| u64::from_le_bytes(e.try_into().expect("chunks of 8")))
            .collect())
    }
}

/// Page `i` of the mapping at `host`.
///
/// # Safety
/// `host + i * PAGE .. + PAGE` must lie inside a live mapping that nothing writes meanwhile.
unsafe fn page<'a>(host: usize, i: usize) -> &'a [u8] {
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts((host + i * PAGE) as *const u8, PAGE) }
}

fn is_zero(page: &[u8]) -> bool {
    let (head, words, tail) = {
        // SAFETY: any bytes are valid u64s; align_to keeps the unaligned ends in head and tail.
        unsafe { page.align_to::<u64>() }
    };
    head.iter().all(|&b| b == 0) && tail.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0)
}

/// The data extents (`SEEK_DATA`/`SEEK_HOLE`) of `file` between offsets `from` and `to`, as
/// `(start, end)` pairs clipped to that range, relative to the file.
fn data_extents(file: &std::fs::File, from: u64, to: u64) -> std::io::Result<Extents> {
    let seek = |at: u64, whence: libc::c_int| -> std::io::Result<Option<u64>> {
        // SAFETY: lseek on a descriptor the caller owns; it only moves the file offset.
        let r = unsafe { libc::lseek(file.as_raw_fd(), at as libc::off_t, whence) };
        if r >= 0 {
            return Ok(Some(r as u64));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None); // no data (or no hole) past `at`: the end of the file
        }
        Err(e)
    };
    let mut out = Vec::new();
    let mut pos = from;
    while pos < to {
        let Some(start) = seek(pos, libc::SEEK_DATA)? else {
            break;
        };
        if start >= to {
            break;
        }
        let end = seek(start, libc::SEEK_HOLE)?.unwrap_or(to).min(to);
        out.push((start, end));
        pos = end;
    }
    Ok(out)
}

/// One line of `/proc/self/maps`.
struct MapsLine<'a> {
    lo: usize,
    hi: usize,
    offset: &'a str,
    dev: &'a str,
    inode: &'a str,
    path: &'a str,
}

fn parse_maps_line(line: &str) -> Option<MapsLine<'_>> {
    // start-end perms offset major:minor inode [path]
    let mut f = line.splitn(6, ' ');
    let (range, _, offset, dev, inode) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
    let (lo, hi) = range.split_once('-')?;
    Some(MapsLine {
        lo: usize::from_str_radix(lo, 16).ok()?,
        hi: usize::from_str_radix(hi, 16).ok()?,
        offset,
        dev,
        inode,
        path: f.next().unwrap_or("").trim_start(),
    })
}

/// `(start, end)` byte ranges of a file that hold data.
type Extents = Vec<(u64, u64)>;

/// The data extents of the files guest RAM is mapped from, by device and inode (None: not known).
#[derive(Default)]
struct ExtentCache(HashMap<(u64, u64), Option<Extents>>);

impl ExtentCache {
    /// The whole file's data extents, the file opened by `path` and used only if its device and inode
    /// are `dev`/`inode` (it may have been deleted or renamed over since it was mapped).
    fn get(&mut self, path: &str, dev: u64, inode: u64) -> Option<&Extents> {
        use std::os::unix::fs::MetadataExt;
        self.0
            .entry((dev, inode))
            .or_insert_with(|| {
                let file = std::fs::File::open(path).ok()?;
                let m = file.metadata().ok()?;
                if m.dev() != dev || m.ino() != inode {
                    return None;
                }
                data_extents(&file, 0, m.len()).ok()
            })
            .as_ref()
    }
}

/// For each page of `region`: whether it may hold data though the page tables do not have it. False for
/// a page of an anonymous mapping (never touched) or of a file mapping where the file has a hole; true
/// where the file has data, or what backs the page is not known.
fn maybe_data(maps: &str, region: &Region, cache: &mut ExtentCache) -> Vec<bool> {
    let pages = region.len / PAGE;
    let mut out = vec![true; pages];
    let (start, end) = (region.host, region.host + region.len);
    for m in maps.lines().filter_map(parse_maps_line) {
        if m.hi <= start || m.lo >= end {
            continue;
        }
        let (lo, hi) = (m.lo.max(start), m.hi.min(end));
        let (first, last) = ((lo - start) / PAGE, (hi - start) / PAGE);
        if m.inode == "0" {
            out[first..last].iter_mut().for_each(|p| *p = false);
            continue;
        }
        let parsed = (|| {
            let offset = u64::from_str_radix(m.offset, 16).ok()?;
            let (major, minor) = m.dev.split_once(':')?;
            let dev = libc::makedev(
                u32::from_str_radix(major, 16).ok()?,
                u32::from_str_radix(minor, 16).ok()?,
            );
            Some((offset, dev, m.inode.parse::<u64>().ok()?))
        })();
        let Some((offset, dev, inode)) = parsed else {
            continue;
        };
        let Some(extents) = cache.get(m.path, dev, inode) else {
            continue; // not known: every page may hold data
        };
        // The file offset of page `first`.
        let base = offset + (lo - m.lo) as u64;
        let len = (hi - lo) as u64;
        out[first..last].iter_mut().for_each(|p| *p = false);
        for &(s, e) in extents {
            if e <= base || s >= base + len {
                continue;
            }
            let from = (s.max(base) - base) as usize / PAGE;
            let to = ((e.min(base + len) - base) as usize).div_ceil(PAGE);
            out[first + from..first + to]
                .iter_mut()
                .for_each(|p| *p = true);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("microvm-memfile-{}-{name}", std::process::id()))
    }

    /// Bytes the file really occupies on disk.
    fn allocated(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    fn present_pages(mem: &GuestMemoryMmap, mib: u64) -> usize {
        let host = mem.iter().next().unwrap().as_ptr() as usize;
        let mut pagemap = Pagemap::open().unwrap();
        pagemap
            .entries(host, (mib << 20) as usize / PAGE)
            .unwrap()
            .iter()
            .filter(|&&e| e & PM_PRESENT != 0)
            .count()
    }

    /// A snapshot written into a new file, and that file opened for reading (as persist::create does).
    fn snap(
        name: &str,
        f: impl Fn(&GuestMemoryMmap, &std::fs::File) -> Result<Written, MemFileError>,
        mem: &GuestMemoryMmap,
    ) -> (PathBuf, Written, std::fs::File) {
        let path = tmp(name);
        let file = std::fs::File::create(&path).unwrap();
        let w = f(mem, &file).unwrap();
        drop(file);
        (path.clone(), w, std::fs::File::open(&path).unwrap())
    }

    #[test]
    fn full_then_diffs_each_since_the_last_snapshot_and_rebase_in_order() {
        let mib = 16u64;
        let mem = crate::vstate::memory::create(mib, false).unwrap();
        // A few pages with data, one page written with zeroes (touched but zero: a hole in a Full).
        mem.write_slice(b"first", GuestAddress(0x1000)).unwrap();
        mem.write_slice(b"second", GuestAddress(0x20_0000 + 7))
            .unwrap();
        mem.write_slice(&[0u8; 4096], GuestAddress(0x30_0000))
            .unwrap();
        let (full, w, f) = snap("full", dump, &mem);
        assert_eq!(w.bytes, 2 * 4096);
        assert_eq!(w.runs.len(), 2);
        assert_eq!(std::fs::metadata(&full).unwrap().len(), mib << 20);
        assert!(allocated(&full) <= 64 * 1024, "{}", allocated(&full));
        let bytes = std::fs::read(&full).unwrap();
        assert_eq!(&bytes[0x1000..0x1005], b"first");
        assert_eq!(&bytes[0x20_0007..0x20_000d], b"second");
        let at_full = bytes;

        // After the remap, only pages written since are in a Diff, zero or not.
        remap_onto_file(&mem, &f).unwrap();
        let mut back = [0u8; 5];
        mem.read_slice(&mut back, GuestAddress(0x1000)).unwrap();
        assert_eq!(&back, b"first");
        let (empty, w, _) = snap("empty", dump_written, &mem);
        assert_eq!(w.bytes, 0);
        mem.write_slice(b"third", GuestAddress(0x1000 + 100))
            .unwrap();
        mem.write_slice(&[0u8; 8], GuestAddress(0x20_0000)).unwrap();
        mem.write_slice(b"fourth", GuestAddress((mib << 20) - 6))
            .unwrap();
        // A page only read is not written.
        mem.read_slice(&mut back, GuestAddress(0x50_0000)).unwrap();
        let (diff1, w, f1) = snap("diff1", dump_written, &mem);
        assert_eq!(w.bytes, 3 * 4096);
        assert!(allocated(&diff1) <= 64 * 1024);
        assert!(remap_runs(&mem, &f1, &w.runs).unwrap());

        // The second Diff holds only what was written after the first: one page, not the first's three.
        let (empty2, w, _) = snap("empty2", dump_written, &mem);
        assert_eq!(w.bytes, 0, "the first Diff's pages are file pages again");
        mem.write_slice(b"fifth", GuestAddress(0x1000 + 200))
            .unwrap();
        mem.write_slice(b"sixth", GuestAddress(0x90_0000)).unwrap();
        let (diff2, w, f2) = snap("diff2", dump_written, &mem);
        assert_eq!(w.bytes, 2 * 4096);
        assert!(remap_runs(&mem, &f2, &w.runs).unwrap());
        // Guest RAM reads the same through its new mappings.
        let mut six = [0u8; 10];
        mem.read_slice(&mut six, GuestAddress(0x1000)).unwrap();
        assert_eq!(&six[..5], b"first");
        // A Full taken now (guest RAM mapped from three files) writes exactly guest RAM's non-zero pages,
        // and reads none of the files' holes (they stay unmapped).
        let (full2, w, _) = snap("full2", dump, &mem);
        assert_eq!(w.bytes, 4 * 4096);
        // (A read fault maps up to 16 neighbours already in the page cache: fault-around.)
        let present = present_pages(&mem, mib);
        assert!(present <= 160, "{present} of 4096 pages mapped");

        let mut all = vec![0u8; (mib << 20) as usize];
        mem.read_slice(&mut all, GuestAddress(0)).unwrap();
        assert_eq!(std::fs::read(&full2).unwrap(), all);

        // Full + Diff1 + Diff2 in order is guest RAM now; Full + Diff1 is guest RAM at Diff1.
        let base = tmp("base");
        std::fs::write(&base, &at_full).unwrap();
        assert_eq!(rebase(&base, &diff1).unwrap(), 3 * 4096);
        let mid = std::fs::read(&base).unwrap();
        assert_eq!(&mid[0x1064..0x1069], b"third");
        assert_eq!(&mid[0x10c8..0x10cd], b"\0\0\0\0\0", "no fifth at Diff1");
        assert_eq!(&mid[0x20_0000..0x20_000d], b"\0\0\0\0\0\0\0\0econd");
        assert_eq!(&mid[mid.len() - 6..], b"fourth");
        assert_eq!(rebase(&base, &diff2).unwrap(), 2 * 4096);
        assert_eq!(std::fs::read(&base).unwrap(), all);

        // A diff file of another size is refused.
        let short = tmp("short");
        std::fs::write(&short, b"x").unwrap();
        assert!(matches!(
            rebase(&base, &short),
            Err(MemFileError::Size { .. })
        ));
        for p in [full, full2, empty, empty2, diff1, diff2, base, short] {
            let _ = std::fs::remove_file(p);
        }
    }

    /// More runs than a Diff may have: gaps are filled until they fit, and the result still rebases to
    /// guest RAM. Past the mapping limit a Diff is not mapped back, and the next one holds its pages too.
    #[test]
    fn many_runs_are_coalesced_and_past_the_mapping_limit_the_next_diff_holds_them() {
        let mib = 16u64;
        let mem = crate::vstate::memory::create(mib, false).unwrap();
        mem.write_slice(b"base", GuestAddress(0x1000)).unwrap();
        let (full, _, f) = snap("many-full", dump, &mem);
        remap_onto_file(&mem, &f).unwrap();
        let at_full = std::fs::read(&full).unwrap();
        // Every other page from 64 KiB on: 1500 runs of one page.
        for i in 0..1500u64 {
            mem.write_slice(&i.to_le_bytes(), GuestAddress(0x1_0000 + 2 * i * 4096))
                .unwrap();
        }
        let (diff1, w, f1) = snap("many-diff1", dump_written, &mem);
        assert!(w.runs.len() <= MAX_DIFF_RUNS, "{} runs", w.runs.len());
        assert!(
            w.bytes >= 1500 * 4096 && w.bytes < 3000 * 4096,
            "{}",
            w.bytes
        );
        assert!(remap_runs(&mem, &f1, &w.runs).unwrap());
        // Each run one mapping, with the Full's pieces between them.
        let mappings = guest_mappings(&regions(&mem).unwrap()).unwrap();
        assert!(mappings <= 2 * w.runs.len() + 1, "{mappings} mappings");
        let base = tmp("many-base");
        std::fs::write(&base, &at_full).unwrap();
        rebase(&base, &diff1).unwrap();
        let mut all = vec![0u8; (mib << 20) as usize];
        mem.read_slice(&mut all, GuestAddress(0)).unwrap();
        assert_eq!(std::fs::read(&base).unwrap(), all);

        // A Diff whose runs are not mapped back (the limit is 0 here): the next Diff holds its pages as
        // well as its own, and Full + Diff1 + Diff2 + Diff3 is guest RAM.
        mem.write_slice(b"two", GuestAddress(0x80_0000)).unwrap();
        let (diff2, w, f2) = snap("many-diff2", dump_written, &mem);
        assert_eq!(w.bytes, 4096);
        assert!(!remap_runs_within(&mem, &f2, &w.runs, 0).unwrap());
        mem.write_slice(b"three", GuestAddress(0x90_0000)).unwrap();
        let (diff3, w, _) = snap("many-diff3", dump_written, &mem);
        assert_eq!(w.bytes, 2 * 4096, "the page of Diff2 is in Diff3 too");
        rebase(&base, &diff2).unwrap();
        rebase(&base, &diff3).unwrap();
        mem.read_slice(&mut all, GuestAddress(0)).unwrap();
        assert_eq!(std::fs::read(&base).unwrap(), all);
        for p in [full, diff1, diff2, diff3, base] {
            let _ = std::fs::remove_file(p);
        }
    }

    #[test]
    fn coalescing_bounds_the_runs() {
        let run = |page: usize| Run {
            host: 0x10_0000 + page * PAGE,
            offset: (page * PAGE) as u64,
            len: PAGE,
        };
        // Every other page of one region, then every fourth of another region right after.
        let mut runs: Vec<Run> = (0..100).map(|i| run(2 * i)).collect();
        let other = |i: usize| Run {
            host: 0x1000_0000 + 4 * i * PAGE,
            offset: (1000 + 4 * i) as u64 * PAGE as u64,
            len: PAGE,
        };
        runs.extend((0..50).map(other));
        let before = runs.clone();
        coalesce(&mut runs, 150);
        assert_eq!(runs, before, "within the limit nothing changes");
        coalesce(&mut runs, 60);
        // Gaps of one page bridged: the first region is one run, the second keeps its 3-page gaps.
        assert_eq!(runs.len(), 51);
        assert_eq!(runs[0].len, 199 * PAGE);
        coalesce(&mut runs, 2);
        assert_eq!(runs.len(), 2, "never across regions: {runs:?}");
        assert_eq!(runs[1].len, (4 * 49 + 1) * PAGE);
    }
}
