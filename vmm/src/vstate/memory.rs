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
    #[error("cannot write guest memory to the memory file: {0}")]
    Dump(#[source] vm_memory::GuestMemoryError),
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
    #[error("cannot write the Diff snapshot's pages: {0}")]
    Diff(#[source] std::io::Error),
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

/// Writes guest RAM to `file`, region after region (the memory file of a snapshot: raw guest RAM,
/// `mem_size` bytes, the MMIO hole left out).
pub fn dump(mem: &GuestMemoryMmap, file: &mut std::fs::File) -> Result<(), MemoryError> {
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};
    for region in mem.iter() {
        mem.write_all_volatile_to(region.start_addr(), file, region.len() as usize)
            .map_err(MemoryError::Dump)?;
    }
    Ok(())
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

/// Writes into `file` (at their offsets in the memory-file layout) the guest pages written since guest RAM
/// was mapped from a memory file: the pages `/proc/self/pagemap` shows present and not file-backed.
/// Returns how many bytes were written.
pub fn dump_written(mem: &GuestMemoryMmap, file: &std::fs::File) -> Result<u64, MemoryError> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::FileExt;
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    const PAGE: usize = 4096;
    const PRESENT: u64 = 1 << 63;
    const FILE_OR_SHARED: u64 = 1 << 61;
    let pagemap_err = |e: std::io::Error| MemoryError::Pagemap(e);
    let mut pagemap = std::fs::File::open("/proc/self/pagemap").map_err(pagemap_err)?;
    let mut file_offset = 0u64;
    let mut written = 0u64;
    for region in mem.iter() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| MemoryError::MapFile(e.to_string()))? as usize;
        let pages = region.len() as usize / PAGE;
        let mut entries = vec![0u8; pages * 8];
        pagemap
            .seek(SeekFrom::Start((host / PAGE * 8) as u64))
            .and_then(|_| pagemap.read_exact(&mut entries))
            .map_err(pagemap_err)?;
        for (i, e) in entries.chunks_exact(8).enumerate() {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(e);
            let v = u64::from_le_bytes(raw);
            if v & PRESENT == 0 || v & FILE_OR_SHARED != 0 {
                continue;
            }
            // SAFETY: the page lies inside this region's live mapping; the vCPUs are paused and the
            // devices idle, so nothing writes it while it is copied out.
            let page = unsafe { std::slice::from_raw_parts((host + i * PAGE) as *const u8, PAGE) };
            file.write_all_at(page, file_offset + (i * PAGE) as u64)
                .map_err(MemoryError::Diff)?;
            written += PAGE as u64;
        }
        file_offset += region.len();
    }
    Ok(written)
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
}
