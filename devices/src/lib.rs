//! Devices the VMM emulates for its guests.
//!
//! Everything here is independent of KVM: a device sees guest memory (vm-memory), EventFds for interrupts, and
//! byte-level reads and writes dispatched to it through a [`bus::Bus`]. The VMM crate creates the devices, puts
//! them on its PIO and MMIO buses, and wires their EventFds to KVM (irqfd, ioeventfd).

pub mod bus;
pub mod disk;
pub mod legacy;
pub mod rate_limiter;
pub mod virtio;

/// What every I/O worker thread a device starts runs first, before it takes any request (the VMM sets it
/// once, to install the worker's seccomp filter: `vmm::seccomp`). Unset, workers start directly.
static IO_THREAD_START: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets [`IO_THREAD_START`]; only the first call counts.
pub fn set_io_thread_start(f: fn()) {
    let _ = IO_THREAD_START.set(f);
}

/// Runs [`IO_THREAD_START`] on the calling (new) I/O thread.
pub(crate) fn io_thread_start() {
    if let Some(f) = IO_THREAD_START.get() {
        f();
    }
}

/// Guest memory as every device sees it.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// Asks the host to back guest memory with transparent huge pages (`madvise(MADV_HUGEPAGE)` on every
/// region), as QEMU and Cloud Hypervisor do for guest RAM. Besides fewer TLB and EPT misses for the guest,
/// this is what makes `O_DIRECT` block I/O fast: the kernel pins a guest buffer in 2 MiB pieces rather than
/// 4 KiB pages and builds larger host requests from it (1 MiB `O_DIRECT` reads and writes through the
/// virtio-blk device ran about twice as fast; see README, "Measured"). Only a hint: it fails where the host
/// kernel has no THP, and with `/sys/kernel/mm/transparent_hugepage/enabled` at `never` it does nothing.
pub fn advise_huge_pages(mem: &GuestMemoryMmap) -> std::io::Result<()> {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    for region in mem.iter() {
        let Ok(addr) = region.get_host_address(vm_memory::MemoryRegionAddress(0)) else {
            continue;
        };
        // SAFETY: the range is exactly one region's own anonymous mapping, alive as long as `mem`;
        // MADV_HUGEPAGE changes how the host backs it, never its contents.
        let r = unsafe { libc::madvise(addr.cast(), region.len() as usize, libc::MADV_HUGEPAGE) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
