//! Guest RAM: anonymous host mappings laid out by [`crate::arch::x86_64::ram_regions`].

use devices::GuestMemoryMmap;

use crate::arch::x86_64::ram_regions;

/// Guest memory cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("--mem {mib} MiB is more than this host's {host_mib} MiB of memory")]
    MoreThanHost { mib: u64, host_mib: u64 },
    #[error("cannot allocate {mib} MiB of guest memory: {source}")]
    Allocate {
        mib: u64,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    #[error("memory file {path:?}: {source}")]
    MemFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("memory file {path:?} is {len} bytes; the snapshot's guest has {want}")]
    MemFileSize {
        path: std::path::PathBuf,
        len: u64,
        want: u64,
    },
    #[error("cannot map the memory file: {0}")]
    MapFile(String),
    #[error("cannot read /proc/self/pagemap: {0}")]
    Pagemap(#[source] std::io::Error),
    #[error("cannot write the memory file: {0}")]
    Write(#[source] std::io::Error),
}

/// The host's total memory in MiB, from /proc/meminfo.
pub fn host_mem_mib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// Maps `mib` MiB of guest RAM, asking for transparent huge pages if `thp`. Pages are not touched here:
/// the host backs them on first use.
pub fn create(mib: u64, thp: bool) -> Result<GuestMemoryMmap, MemoryError> {
    if let Some(host_mib) = host_mem_mib() {
        if mib > host_mib {
            return Err(MemoryError::MoreThanHost { mib, host_mib });
        }
    }
    let mem = GuestMemoryMmap::from_ranges(&ram_regions(mib << 20))
        .map_err(|source| MemoryError::Allocate { mib, source })?;
    exclude_from_core_dumps(&mem);
    if thp {
        if let Err(e) = devices::advise_huge_pages(&mem) {
            log::warn!("guest memory: no transparent huge pages: {e}");
        }
    }
    Ok(mem)
}

/// Writes guest RAM to `file` (the memory file of a Full snapshot: raw guest RAM, `mem_size` bytes,
/// regions in guest-physical order, the MMIO hole left out), **sparse**: the file gets its full length,
/// but a page that holds only zeroes is left a hole. Pages known to be zero are not even read: in an
/// anonymous mapping those `/proc/self/pagemap` shows neither present nor swapped (never touched); in a
/// mapping of a memory file (a restored VM, or after a Full snapshot) those neither present nor swapped
/// that lie in a hole of the file. The others are read and checked. Returns the bytes written as data.
/// The vCPUs are paused, the devices idle.
pub fn dump(mem: &GuestMemoryMmap, file: &std::fs::File) -> Result<u64, MemoryError> {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    let total: u64 = mem.iter().map(|r| r.len()).sum();
    file.set_len(0)
        .and_then(|_| file.set_len(total))
        .map_err(MemoryError::Write)?;
    let mut pagemap = Pagemap::open()?;
    let mut file_offset = 0u64;
    let mut written = 0u64;
    for region in mem.iter() {
        let host = host_address(region)?;
        let backing = backing(host, region.len())?;
        let entries = pagemap.entries(host, region.len() as usize / PAGE)?;
        let mut run = PageRun::new(host, file_offset);
        let mut extents = match &backing {
            Backing::FileData(extents) => extents.iter().peekable(),
            _ => [].iter().peekable(),
        };
        for (i, &e) in entries.iter().enumerate() {
            let at = (i * PAGE) as u64;
            let touched = e & (PM_PRESENT | PM_SWAP) != 0
                || match backing {
                    Backing::Anonymous => false,
                    Backing::FileData(_) => {
                        while extents.next_if(|&&(_, end)| end <= at).is_some() {}
                        extents
                            .peek()
                            .is_some_and(|&&(start, _)| start < at + PAGE as u64)
                    }
                    Backing::Unknown => true,
                };
            // SAFETY: the page lies inside this region's live mapping; the vCPUs are paused and the
            // devices idle, so nothing writes it while it is read.
            let data = touched && !is_zero(unsafe { page(host, i) });
            written += run.step(i, data, file)?;
        }
        written += run.flush(file)?;
        file_offset += region.len();
    }
    Ok(written)
}

/// Maps a snapshot's memory file as guest RAM of `mib` MiB, `MAP_PRIVATE`: pages are read from the file
/// on first touch and copied on first write; nothing is read here, and the file is never written.
pub fn from_file(path: &std::path::Path, mib: u64) -> Result<GuestMemoryMmap, MemoryError> {
    use vm_memory::mmap::{GuestRegionMmap, MmapRegionBuilder};
    use vm_memory::FileOffset;
    let file = std::fs::File::open(path).map_err(|source| MemoryError::MemFile {
        path: path.to_owned(),
        source,
    })?;
    let len = file
        .metadata()
        .map_err(|source| MemoryError::MemFile {
            path: path.to_owned(),
            source,
        })?
        .len();
    let want = mib << 20;
    if len != want {
        return Err(MemoryError::MemFileSize {
            path: path.to_owned(),
            len,
            want,
        });
    }
    let file = std::sync::Arc::new(file);
    let mut offset = 0u64;
    let mut regions = Vec::new();
    for (start, size) in ram_regions(want) {
        let mapping = MmapRegionBuilder::new(size)
            .with_file_offset(FileOffset::from_arc(file.clone(), offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .build()
            .map_err(|e| MemoryError::MapFile(e.to_string()))?;
        regions.push(
            GuestRegionMmap::new(mapping, start)
                .ok_or_else(|| MemoryError::MapFile("region wraps around".into()))?,
        );
        offset += size as u64;
    }
    let mem =
        GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::MapFile(e.to_string()))?;
    exclude_from_core_dumps(&mem);
    Ok(mem)
}

/// Maps guest RAM again, in place, `MAP_PRIVATE` onto the memory file just written from it (the same
/// contents, so the guest sees no change). From then on every page written, by the guest or by a device,
/// becomes a private anonymous copy, which [`dump_written`] finds: that is how a Diff snapshot knows what
/// changed since this Full one. The caller keeps the vCPUs paused and the devices idle meanwhile.
pub fn remap_onto_file(mem: &GuestMemoryMmap, path: &std::path::Path) -> Result<(), MemoryError> {
    use std::os::fd::AsRawFd;
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    let file = std::fs::File::open(path).map_err(|source| MemoryError::MemFile {
        path: path.to_owned(),
        source,
    })?;
    let mut offset = 0i64;
    for region in mem.iter() {
        let addr = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| MemoryError::MapFile(e.to_string()))?;
        let len = region.len() as usize;
        // SAFETY: `addr..addr + len` is exactly this region's own mapping, owned by `mem`, and stays
        // mapped (MAP_FIXED replaces it atomically); the file holds the same bytes, written from it just
        // before, so every reader (KVM through its MMU notifier, devices) sees unchanged memory.
        let r = unsafe {
            libc::mmap(
                addr.cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
                file.as_raw_fd(),
                offset,
            )
        };
        if r == libc::MAP_FAILED {
            return Err(MemoryError::MapFile(format!(
                "remapping guest RAM onto {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            )));
        }
        offset += len as i64;
    }
    exclude_from_core_dumps(mem);
    Ok(())
}

/// Writes a Diff snapshot's memory file: `file` gets guest RAM's full length and, at their offsets in
/// the memory-file layout, the pages written since guest RAM was mapped from a memory file (the pages
/// `/proc/self/pagemap` shows present or swapped and not file-backed: private copies); everything else
/// is a hole (as Firecracker's diff files; [`rebase`] lays it onto the Full one). Returns the bytes
/// written. A private page discarded since (`MADV_DONTNEED`) reads as the file's again, so leaving it
/// out is right too.
pub fn dump_written(mem: &GuestMemoryMmap, file: &std::fs::File) -> Result<u64, MemoryError> {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    let total: u64 = mem.iter().map(|r| r.len()).sum();
    file.set_len(0)
        .and_then(|_| file.set_len(total))
        .map_err(MemoryError::Write)?;
    let mut pagemap = Pagemap::open()?;
    let mut file_offset = 0u64;
    let mut written = 0u64;
    for region in mem.iter() {
        let host = host_address(region)?;
        let entries = pagemap.entries(host, region.len() as usize / PAGE)?;
        let mut run = PageRun::new(host, file_offset);
        for (i, &e) in entries.iter().enumerate() {
            let private = e & (PM_PRESENT | PM_SWAP) != 0 && e & PM_FILE_OR_SHARED == 0;
            written += run.step(i, private, file)?;
        }
        written += run.flush(file)?;
        file_offset += region.len();
    }
    Ok(written)
}

/// Lays a Diff snapshot's memory file onto the Full one it follows (Firecracker's `rebase-snap`): every
/// data extent of `diff` (`SEEK_DATA`/`SEEK_HOLE`) is copied to the same offset of `base`, which then
/// holds the latest guest RAM. The two must have the same length. Returns the bytes copied.
pub fn rebase(base: &std::path::Path, diff: &std::path::Path) -> Result<u64, MemoryError> {
    use std::os::unix::fs::FileExt;
    let open = |path: &std::path::Path, write: bool| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)
            .and_then(|f| f.metadata().map(|m| (f, m.len())))
            .map_err(|source| MemoryError::MemFile {
                path: path.to_owned(),
                source,
            })
    };
    let (base_file, base_len) = open(base, true)?;
    let (diff_file, diff_len) = open(diff, false)?;
    if base_len != diff_len {
        return Err(MemoryError::MemFileSize {
            path: diff.to_owned(),
            len: diff_len,
            want: base_len,
        });
    }
    let extents = data_extents(&diff_file, 0, diff_len).map_err(|source| MemoryError::MemFile {
        path: diff.to_owned(),
        source,
    })?;
    let mut buf = vec![0u8; 1 << 20];
    let mut copied = 0u64;
    for (start, end) in extents {
        let mut at = start;
        while at < end {
            let n = buf.len().min((end - at) as usize);
            diff_file
                .read_exact_at(&mut buf[..n], at)
                .map_err(|source| MemoryError::MemFile {
                    path: diff.to_owned(),
                    source,
                })?;
            base_file
                .write_all_at(&buf[..n], at)
                .map_err(MemoryError::Write)?;
            at += n as u64;
        }
        copied += end - start;
    }
    base_file.sync_data().map_err(MemoryError::Write)?;
    Ok(copied)
}

const PAGE: usize = 4096;
/// `/proc/self/pagemap` bits (Documentation/admin-guide/mm/pagemap.rst).
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAP: u64 = 1 << 62;
const PM_FILE_OR_SHARED: u64 = 1 << 61;

/// `/proc/self/pagemap`, read one region at a time.
struct Pagemap(std::fs::File);

impl Pagemap {
    fn open() -> Result<Self, MemoryError> {
        std::fs::File::open("/proc/self/pagemap")
            .map(Pagemap)
            .map_err(MemoryError::Pagemap)
    }

    /// The 64-bit entries of the `pages` pages from host address `host`.
    fn entries(&mut self, host: usize, pages: usize) -> Result<Vec<u64>, MemoryError> {
        use std::os::unix::fs::FileExt;
        let mut raw = vec![0u8; pages * 8];
        self.0
            .read_exact_at(&mut raw, (host / PAGE * 8) as u64)
            .map_err(MemoryError::Pagemap)?;
        Ok(raw
            .chunks_exact(8)
            .map(|e| u64::from_le_bytes(e.try_into().expect("chunks of 8")))
            .collect())
    }
}

/// Consecutive pages of one region to write as one piece, at their offset in the memory file.
struct PageRun {
    host: usize,
    file_offset: u64,
    /// First page of the pending run, if any.
    start: Option<usize>,
    next: usize,
}

impl PageRun {
    fn new(host: usize, file_offset: u64) -> Self {
        Self {
            host,
            file_offset,
            start: None,
            next: 0,
        }
    }

    /// Page `i` comes next: extends the run if `data`, else writes out the run so far. Returns the bytes
    /// written.
    fn step(&mut self, i: usize, data: bool, file: &std::fs::File) -> Result<u64, MemoryError> {
        if data {
            if self.start.is_none() {
                self.start = Some(i);
            }
            self.next = i + 1;
            return Ok(0);
        }
        self.flush(file)
    }

    fn flush(&mut self, file: &std::fs::File) -> Result<u64, MemoryError> {
        use std::os::unix::fs::FileExt;
        let Some(start) = self.start.take() else {
            return Ok(0);
        };
        let len = (self.next - start) * PAGE;
        // SAFETY: pages `start..next` lie inside the region's live mapping at `host`; the vCPUs are
        // paused and the devices idle, so nothing writes them while they are copied out.
        let bytes =
            unsafe { std::slice::from_raw_parts((self.host + start * PAGE) as *const u8, len) };
        file.write_all_at(bytes, self.file_offset + (start * PAGE) as u64)
            .map_err(MemoryError::Write)?;
        Ok(len as u64)
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

fn host_address(region: &vm_memory::GuestRegionMmap) -> Result<usize, MemoryError> {
    use vm_memory::GuestMemoryRegion;
    region
        .get_host_address(vm_memory::MemoryRegionAddress(0))
        .map(|a| a as usize)
        .map_err(|e| MemoryError::MapFile(e.to_string()))
}

/// The data extents (`SEEK_DATA`/`SEEK_HOLE`) of `file` between offsets `from` and `to`, as
/// `(start, end)` pairs clipped to that range, relative to the file.
fn data_extents(file: &std::fs::File, from: u64, to: u64) -> std::io::Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
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

/// What backs a region of guest RAM.
enum Backing {
    /// Anonymous memory: a page neither present nor swapped was never touched.
    Anonymous,
    /// A mapping of a memory file: its data extents, relative to the region's start (a page neither
    /// present nor swapped outside them is a hole of the file).
    FileData(Vec<(u64, u64)>),
    /// Not known: every page is read.
    Unknown,
}

/// What backs the `len` bytes of guest RAM at host address `addr`, from `/proc/self/maps`: for a file
/// mapping, the file is opened by its path and used only if its device and inode are the mapping's.
fn backing(addr: usize, len: u64) -> Result<Backing, MemoryError> {
    use std::os::unix::fs::MetadataExt;
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(MemoryError::Pagemap)?;
    for line in maps.lines() {
        // start-end perms offset major:minor inode [path]
        let mut f = line.splitn(6, ' ');
        let (Some(range), Some(_), Some(offset), Some(dev), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        else {
            continue;
        };
        if !(lo..hi).contains(&addr) {
            continue;
        }
        if inode == "0" {
            return Ok(Backing::Anonymous);
        }
        let path = f.next().unwrap_or("").trim_start();
        let parsed = (|| {
            let offset = u64::from_str_radix(offset, 16).ok()?;
            let (major, minor) = dev.split_once(':')?;
            let dev = libc::makedev(
                u32::from_str_radix(major, 16).ok()?,
                u32::from_str_radix(minor, 16).ok()?,
            );
            Some((offset, dev, inode.parse::<u64>().ok()?))
        })();
        let Some((offset, dev, inode)) = parsed else {
            return Ok(Backing::Unknown);
        };
        let Ok(file) = std::fs::File::open(path) else {
            return Ok(Backing::Unknown); // deleted, or renamed over
        };
        match file.metadata() {
            Ok(m) if m.dev() == dev && m.ino() == inode => {}
            _ => return Ok(Backing::Unknown),
        }
        let start = offset + (addr - lo) as u64;
        let Ok(extents) = data_extents(&file, start, start + len) else {
            return Ok(Backing::Unknown);
        };
        return Ok(Backing::FileData(
            extents
                .into_iter()
                .map(|(s, e)| (s - start, e - start))
                .collect(),
        ));
    }
    Ok(Backing::Unknown)
}

/// Leaves guest RAM out of the VMM's core dumps (`MADV_DONTDUMP`, as QEMU's `dump-guest-core=off`): a
/// crash report should not carry the guest's memory. It also keeps guest RAM a mapping of its own, never
/// merged by the kernel with an adjacent anonymous mapping (a thread's malloc arena), so that tools and
/// tests can find it in `/proc/PID/smaps` by its size.
fn exclude_from_core_dumps(mem: &GuestMemoryMmap) {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    for region in mem.iter() {
        let Ok(addr) = region.get_host_address(vm_memory::MemoryRegionAddress(0)) else {
            continue;
        };
        // SAFETY: the range is exactly one region's own anonymous mapping, alive as long as `mem`;
        // MADV_DONTDUMP only changes what a core dump contains, never the contents.
        let r = unsafe { libc::madvise(addr.cast(), region.len() as usize, libc::MADV_DONTDUMP) };
        if r != 0 {
            log::debug!(
                "guest memory: MADV_DONTDUMP failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryBackend;

    #[test]
    fn refuses_more_than_the_host_has() {
        let host = host_mem_mib().unwrap();
        assert!(matches!(
            create(host + 1, true),
            Err(MemoryError::MoreThanHost { .. })
        ));
        let mem = create(16, true).unwrap();
        assert_eq!(mem.num_regions(), 1);
        // Guest RAM is left out of core dumps.
        let host = mem.iter().next().unwrap().as_ptr() as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut lines = smaps.lines();
        let start = format!("{host:x}-");
        lines
            .find(|l| l.starts_with(&start))
            .expect("guest RAM mapped");
        let flags = lines.find(|l| l.starts_with("VmFlags:")).unwrap();
        assert!(flags.split_whitespace().any(|f| f == "dd"), "{flags}");
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("microvm-mem-{}-{name}", std::process::id()))
    }

    /// Bytes the file really occupies on disk.
    fn allocated(path: &std::path::Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn full_is_sparse_diff_holds_written_pages_and_rebase_applies_it() {
        use vm_memory::{Bytes, GuestAddress};
        let mib = 16u64;
        let mem = create(mib, false).unwrap();
        // A few pages with data, one page written with zeroes (touched but zero: still a hole in a Full).
        mem.write_slice(b"first", GuestAddress(0x1000)).unwrap();
        mem.write_slice(b"second", GuestAddress(0x20_0000 + 7))
            .unwrap();
        mem.write_slice(&[0u8; 4096], GuestAddress(0x30_0000))
            .unwrap();
        let full = tmp("full");
        let f = std::fs::File::create(&full).unwrap();
        assert_eq!(dump(&mem, &f).unwrap(), 2 * 4096);
        drop(f);
        assert_eq!(std::fs::metadata(&full).unwrap().len(), mib << 20);
        assert!(allocated(&full) <= 64 * 1024, "{}", allocated(&full));
        let bytes = std::fs::read(&full).unwrap();
        assert_eq!(&bytes[0x1000..0x1005], b"first");
        assert_eq!(&bytes[0x20_0007..0x20_000d], b"second");

        // After the remap, only pages written since are in a Diff, zero or not.
        remap_onto_file(&mem, &full).unwrap();
        let mut back = [0u8; 5];
        mem.read_slice(&mut back, GuestAddress(0x1000)).unwrap();
        assert_eq!(&back, b"first");
        let diff = tmp("diff");
        let f = std::fs::File::create(&diff).unwrap();
        assert_eq!(dump_written(&mem, &f).unwrap(), 0);
        mem.write_slice(b"third", GuestAddress(0x1000 + 100))
            .unwrap();
        mem.write_slice(&[0u8; 8], GuestAddress(0x20_0000)).unwrap();
        mem.write_slice(b"fourth", GuestAddress((mib << 20) - 6))
            .unwrap();
        // A page only read is not written.
        mem.read_slice(&mut back, GuestAddress(0x50_0000)).unwrap();
        assert_eq!(dump_written(&mem, &f).unwrap(), 3 * 4096);
        drop(f);
        assert!(allocated(&diff) <= 64 * 1024);

        // A Full taken now (guest RAM file-backed) still writes only non-zero pages, and reads none of the
        // file's holes (they stay unmapped), only its data and the pages written.
        let full2 = tmp("full2");
        let f = std::fs::File::create(&full2).unwrap();
        assert_eq!(dump(&mem, &f).unwrap(), 3 * 4096);
        drop(f);
        let host = mem.iter().next().unwrap().as_ptr() as usize;
        let mut pagemap = Pagemap::open().unwrap();
        let present = pagemap
            .entries(host, (mib << 20) as usize / PAGE)
            .unwrap()
            .iter()
            .filter(|&&e| e & PM_PRESENT != 0)
            .count();
        // (A read fault maps up to 16 neighbours already in the page cache: fault-around.)
        assert!(present <= 64, "{present} of 4096 pages mapped");

        // The Full memory file plus the Diff equals guest RAM now, and equals the second Full.
        let base = tmp("base");
        std::fs::copy(&full, &base).unwrap();
        assert_eq!(rebase(&base, &diff).unwrap(), 3 * 4096);
        let now = std::fs::read(&base).unwrap();
        assert_eq!(now, std::fs::read(&full2).unwrap());
        assert_eq!(&now[0x1000..0x1005], b"first");
        assert_eq!(&now[0x1064..0x1069], b"third");
        assert_eq!(&now[0x20_0000..0x20_000d], b"\0\0\0\0\0\0\0\0econd");
        assert_eq!(&now[now.len() - 6..], b"fourth");

        // A diff file of another size is refused.
        let short = tmp("short");
        std::fs::write(&short, b"x").unwrap();
        assert!(matches!(
            rebase(&base, &short),
            Err(MemoryError::MemFileSize { .. })
        ));
        for p in [full, full2, diff, base, short] {
            let _ = std::fs::remove_file(p);
        }
    }
}
