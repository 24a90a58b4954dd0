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

/// Leaves guest RAM out of the VMM's core dumps (`MADV_DONTDUMP`, as QEMU's `dump-guest-core=off`): a
/// crash report should not carry the guest's memory. It also keeps guest RAM a mapping of its own, never
/// merged by the kernel with an adjacent anonymous mapping (a thread's malloc arena), so that tools and
/// tests can find it in `/proc/PID/smaps` by its size.
pub(crate) fn exclude_from_core_dumps(mem: &GuestMemoryMmap) {
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
