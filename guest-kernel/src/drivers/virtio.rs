//! virtio-mmio devices from `virtio_mmio.device=<size>@<addr>:<irq>` command-line entries, driven by the
//! `virtio-drivers` crate: block devices (`/dev/vda`, `/dev/vdb`, ... in command-line order), the
//! console (it becomes the console with `console=hvc0`) and the first network device (our own driver on
//! the crate's queues, [`super::virtio_net`], handed to `crate::net` by `main`).
//!
//! Requests are synchronous and polled: the boot path has nothing else to do while the disk works, and
//! polling costs fewer emulated instructions than an interrupt round trip. A block device's used-ring
//! interrupts are therefore switched off (VRING_AVAIL_F_NO_INTERRUPT), but its IRQ is routed: the one
//! interrupt it raises is a configuration change (the host pointed the drive at another file, `PATCH
//! /drives`), and [`block_irq`] re-reads the capacity from config space and logs it.

use crate::mm::{frame, phys_to_virt, virt_to_phys, PAGE_SIZE};
use crate::sync::KCell;
use crate::{kprintln, mm};
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};
use kcore::cmdline::VirtioMmioDevice;
use kcore::fmt::{Dec, Hex};
use virtio_drivers::device::blk::VirtIOBlk;
use virtio_drivers::device::console::VirtIOConsole;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, InterruptStatus, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

/// DMA through the direct map: every kernel buffer is physically contiguous (heap and stacks come from
/// contiguous frames), so sharing a buffer is just translating its address.
pub struct KernelHal;

// SAFETY: dma_alloc returns fresh zeroed contiguous frames mapped by the direct map; share() returns the
// physical address of memory the caller keeps valid, and the direct map is coherent (no bounce buffers).
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let pa = frame::alloc_contiguous(pages as u64).expect("out of memory for virtio DMA");
        let va = NonNull::new(phys_to_virt(pa) as *mut u8).expect("direct map address is not null");
        (pa as PhysAddr, va)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) -> i32 {
        // Queues live as long as their device; never freed.
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(phys_to_virt(paddr) as *mut u8).expect("direct map address is not null")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        virt_to_phys(buffer.as_ptr() as *mut u8 as u64) as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

type Transport0 = MmioTransport<'static>;

/// A virtio block device.
pub struct BlockDevice {
    dev: VirtIOBlk<KernelHal, Transport0>,
    capacity_sectors: u64,
    /// The MMIO window (direct-map address), for config-space reads after a change.
    mmio: u64,
    irq: u8,
}

/// A block device interrupt arrived while the devices were in use; handled when they are released.
static BLOCK_IRQ_PENDING: AtomicBool = AtomicBool::new(false);

/// Largest single request (bytes): big enough to load executables in few requests, small enough for any
/// device's segment limits.
pub const MAX_REQUEST: usize = 128 * 1024;

/// Why a block request failed.
#[derive(Clone, Copy, Debug)]
pub struct IoError;

impl BlockDevice {
    /// Reads sectors starting at `sector` into `buf` (a multiple of 512 bytes, physically contiguous).
    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        if sector + (buf.len() / 512) as u64 > self.capacity_sectors {
            return Err(IoError);
        }
        let mut done = 0;
        while done < buf.len() {
            let n = (buf.len() - done).min(MAX_REQUEST);
            self.dev
                .read_blocks(
                    (sector + (done / 512) as u64) as usize,
                    &mut buf[done..done + n],
                )
                .map_err(|_| IoError)?;
            done += n;
        }
        Ok(())
    }

    /// Writes sectors starting at `sector` from `buf` (a multiple of 512 bytes).
    pub fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), IoError> {
        if sector + (buf.len() / 512) as u64 > self.capacity_sectors {
            return Err(IoError);
        }
        let mut done = 0;
        while done < buf.len() {
            let n = (buf.len() - done).min(MAX_REQUEST);
            self.dev
                .write_blocks(
                    (sector + (done / 512) as u64) as usize,
                    &buf[done..done + n],
                )
                .map_err(|_| IoError)?;
            done += n;
        }
        Ok(())
    }
}

impl BlockDevice {
    /// Acknowledges the device's interrupt; on a configuration change, re-reads the capacity.
    fn interrupt(&mut self, index: usize) {
        let status = self.dev.ack_interrupt();
        if !status.contains(InterruptStatus::DEVICE_CONFIGURATION_INTERRUPT) {
            return;
        }
        let capacity = self.read_capacity();
        kprintln!(
            "virtio-blk: vd{}: capacity changed from {} to {} sectors ({} MiB)",
            char::from(b'a' + index as u8),
            Dec(self.capacity_sectors),
            Dec(capacity),
            Dec(capacity / 2048)
        );
        self.capacity_sectors = capacity;
    }

    /// `capacity` from config space (offset 0x100 of the window), read again while ConfigGeneration
    /// (0xfc) says it changed under us.
    fn read_capacity(&self) -> u64 {
        let reg = |off: u64| {
            // SAFETY: the window is the device's MMIO page, mapped by the direct map (probe made the
            // transport on it); 32-bit aligned registers inside it.
            unsafe { core::ptr::read_volatile((self.mmio + off) as *const u32) }
        };
        loop {
            let generation = reg(0xfc);
            let capacity = u64::from(reg(0x100)) | (u64::from(reg(0x104)) << 32);
            if reg(0xfc) == generation {
                return capacity;
            }
        }
    }

    /// The capacity in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    /// Whether the device refuses writes (VIRTIO_BLK_F_RO).
    pub fn readonly(&self) -> bool {
        self.dev.readonly()
    }

    /// Makes completed writes durable: a VIRTIO_BLK_T_FLUSH request (nothing when the device does
    /// not offer VIRTIO_BLK_F_FLUSH, i.e. has no volatile cache).
    pub fn flush(&mut self) -> Result<(), IoError> {
        self.dev.flush().map_err(|_| IoError)
    }
}

/// The network device found by `probe` and its IRQ, until `main` starts the stack on it.
static NET: KCell<Option<(super::virtio_net::NetDevice, u32)>> = KCell::new(None);

/// The network device `probe` found, and its IRQ.
pub fn take_net() -> Option<(super::virtio_net::NetDevice, u32)> {
    NET.borrow_mut().take()
}

static BLOCK_DEVICES: KCell<Vec<BlockDevice>> = KCell::new(Vec::new());
static CONSOLE: KCell<Option<VirtIOConsole<KernelHal, Transport0>>> = KCell::new(None);

/// A kernel bounce buffer for console output: callers pass user memory, which the device cannot be
/// given by address.
static BOUNCE: KCell<[u8; 256]> = KCell::new([0; 256]);

fn console_write(bytes: &[u8]) {
    let (Ok(mut c), Ok(mut buf)) = (CONSOLE.try_borrow_mut(), BOUNCE.try_borrow_mut()) else {
        return;
    };
    let Some(c) = c.as_mut() else { return };
    for chunk in bytes.chunks(buf.len()) {
        buf[..chunk.len()].copy_from_slice(chunk);
        let _ = c.send_bytes(&buf[..chunk.len()]);
    }
}

/// Probes every announced virtio-mmio window; with `use_console`, a virtio console becomes the console.
pub fn probe(devices: impl Iterator<Item = VirtioMmioDevice>, use_console: bool) {
    for d in devices {
        let header = NonNull::new(phys_to_virt(d.addr) as *mut VirtIOHeader).expect("non-null");
        // SAFETY: the command line names an MMIO window of `size` bytes, mapped by the direct map and
        // used by nothing else.
        let transport = match unsafe { MmioTransport::new(header, d.size as usize) } {
            Ok(t) => t,
            Err(_) => {
                kprintln!("virtio-mmio: no device at {}", Hex(d.addr));
                continue;
            }
        };
        match transport.device_type() {
            DeviceType::Block => match VirtIOBlk::<KernelHal, _>::new(transport) {
                Ok(mut dev) => {
                    let mut devs = BLOCK_DEVICES.borrow_mut();
                    let capacity_sectors = dev.capacity();
                    // Requests are polled: no used-ring interrupts. The IRQ carries config changes.
                    dev.disable_interrupts();
                    crate::arch::apic::route_irq(d.irq as u8);
                    let name = [b'v', b'd', b'a' + devs.len() as u8];
                    kprintln!(
                        "virtio-blk: {} at {} irq {}: {} sectors ({} MiB)",
                        core::str::from_utf8(&name).unwrap_or("vd?"),
                        Hex(d.addr),
                        Dec(d.irq as u64),
                        Dec(capacity_sectors),
                        Dec(capacity_sectors / 2048)
                    );
                    devs.push(BlockDevice {
                        dev,
                        capacity_sectors,
                        mmio: phys_to_virt(d.addr),
                        irq: d.irq as u8,
                    });
                }
                Err(_) => kprintln!("virtio-blk at {}: initialisation failed", Hex(d.addr)),
            },
            DeviceType::Console => match VirtIOConsole::<KernelHal, _>::new(transport) {
                Ok(dev) => {
                    kprintln!(
                        "virtio-console: at {} irq {}",
                        Hex(d.addr),
                        Dec(d.irq as u64)
                    );
                    *CONSOLE.borrow_mut() = Some(dev);
                    if use_console {
                        crate::console::switch_to(console_write);
                        kprintln!("console [hvc0] enabled");
                    }
                }
                Err(_) => kprintln!("virtio-console at {}: initialisation failed", Hex(d.addr)),
            },
            DeviceType::Network if NET.borrow().is_none() => {
                match super::virtio_net::NetDevice::new(transport) {
                    Ok(dev) => {
                        let m = dev.mac();
                        kprintln!(
                            "virtio-net: eth0 at {} irq {}: mac {}:{}:{}:{}:{}:{}{}",
                            Hex(d.addr),
                            Dec(d.irq as u64),
                            Hex(m[0] as u64),
                            Hex(m[1] as u64),
                            Hex(m[2] as u64),
                            Hex(m[3] as u64),
                            Hex(m[4] as u64),
                            Hex(m[5] as u64),
                            if dev.csum_offload() {
                                ", checksum offload"
                            } else {
                                ""
                            }
                        );
                        *NET.borrow_mut() = Some((dev, d.irq));
                    }
                    Err(_) => kprintln!("virtio-net at {}: initialisation failed", Hex(d.addr)),
                }
            }
            DeviceType::Socket if VSOCK.borrow().is_none() => {
                match super::virtio_vsock::VsockDevice::new(transport) {
                    Ok(dev) => {
                        kprintln!(
                            "virtio-vsock: at {} irq {}: cid {}",
                            Hex(d.addr),
                            Dec(d.irq as u64),
                            Dec(dev.guest_cid())
                        );
                        *VSOCK.borrow_mut() = Some((dev, d.irq));
                    }
                    Err(_) => kprintln!("virtio-vsock at {}: initialisation failed", Hex(d.addr)),
                }
            }
            _ => kprintln!("virtio-mmio: ignoring device type at {}", Hex(d.addr)),
        }
    }
    let _ = (mm::PAGE_SIZE, PAGE_SIZE);
}

/// The vsock device found by `probe` and its IRQ, until `main` starts AF_VSOCK on it.
static VSOCK: KCell<Option<(super::virtio_vsock::VsockDevice, u32)>> = KCell::new(None);

/// The vsock device `probe` found, and its IRQ.
pub fn take_vsock() -> Option<(super::virtio_vsock::VsockDevice, u32)> {
    VSOCK.borrow_mut().take()
}

/// Runs `f` with block device `index` (0 = vda).
pub fn with_block<R>(index: usize, f: impl FnOnce(&mut BlockDevice) -> R) -> Option<R> {
    let r = BLOCK_DEVICES.borrow_mut().get_mut(index).map(f);
    if BLOCK_IRQ_PENDING.swap(false, Ordering::Relaxed) {
        block_interrupts(&mut BLOCK_DEVICES.borrow_mut(), None);
    }
    r
}

/// Device interrupt `irq`: the block devices on it look at their interrupt status (a configuration
/// change re-reads the capacity). Deferred to the end of a request in progress if one is.
pub fn block_irq(irq: u8) {
    match BLOCK_DEVICES.try_borrow_mut() {
        Ok(mut devs) => block_interrupts(&mut devs, Some(irq)),
        Err(_) => BLOCK_IRQ_PENDING.store(true, Ordering::Relaxed),
    }
}

fn block_interrupts(devs: &mut [BlockDevice], irq: Option<u8>) {
    for (i, d) in devs.iter_mut().enumerate() {
        if irq.is_none_or(|irq| irq == d.irq) {
            d.interrupt(i);
        }
    }
}

/// Reads pending virtio-console input into `out`.
pub fn console_read(out: &mut [u8]) -> usize {
    let mut n = 0;
    if let Ok(mut c) = CONSOLE.try_borrow_mut() {
        if let Some(c) = c.as_mut() {
            while n < out.len() {
                match c.recv(true) {
                    Ok(Some(b)) => {
                        out[n] = b;
                        n += 1;
                    }
                    _ => break,
                }
            }
        }
    }
    n
}

/// The `blktest=vdX` self-test of the write path: writes a recognisable 4 KiB pattern at the start of the
/// device, reads it back and compares (the integration test then finds the pattern in the image file).
pub fn write_self_test(name: &str) -> Result<(), &'static str> {
    let index = name
        .strip_prefix("vd")
        .and_then(|s| s.bytes().next())
        .and_then(|c| c.checked_sub(b'a'))
        .ok_or("not a vdX name")? as usize;
    let pattern: Vec<u8> = b"microvm blktest "
        .iter()
        .copied()
        .cycle()
        .take(4096)
        .collect();
    let mut back = alloc::vec![0u8; 4096];
    with_block(index, |d| {
        d.write(0, &pattern).map_err(|_| "write failed")?;
        d.read(0, &mut back).map_err(|_| "read back failed")
    })
    .ok_or("no such device")??;
    if back != pattern {
        return Err("read back differs from what was written");
    }
    Ok(())
}
