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
    if thp {
        if let Err(e) = devices::advise_huge_pages(&mem) {
            log::warn!("guest memory: no transparent huge pages: {e}");
        }
    }
    Ok(mem)
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
    }
}
