//! The microvm guest kernel: a small `no_std` x86-64 kernel that boots through PVH (on microvm and on
//! QEMU's microvm machine), mounts an ext2 root from virtio-blk and runs `/sbin/init` in ring 3.
//!
//! Boot flow (`kernel_main`): serial console -> GDT/TSS/IDT -> PVH start info (command line, memory
//! map) -> frames, heap, page tables -> APIC and timer -> virtio-mmio devices -> ext2 root ->
//! load init -> boot marker -> ring 3. Kernel-mode code is emulated on the development hosts (~2000x
//! slower than native), so every step avoids work: no memory clearing, few device requests.
#![no_std]
#![no_main]

extern crate alloc;

mod arch;
mod console;
mod cost;
mod drivers;
mod fs;
mod mm;
mod net;
mod proc;
mod sync;
mod syscall;
mod time;
mod tty;

use arch::layout::{BOOT_MARKER_PORT, KERNEL_BASE};
use core::sync::atomic::{AtomicBool, Ordering};
use kcore::cmdline;
use kcore::fmt::{Dec, Hex, Hex16};

/// The timer tick rate unless `hz=` says otherwise (see guest-kernel/README.md for the measured cost).
const DEFAULT_HZ: u64 = 250;

/// Exit status of the VM after a kernel panic (through the debug-exit port).
pub const PANIC_EXIT_CODE: u8 = 3;

#[no_mangle]
extern "C" fn kernel_main(start_info: u64) -> ! {
    time::init_early();
    drivers::serial::init();
    arch::init_cpu();
    let have_info = arch::pvh::init(start_info);
    kprintln!("microvm guest kernel {} booting", env!("CARGO_PKG_VERSION"));
    if !have_info {
        panic!("no PVH start info (EBX does not point at hvm_start_info)");
    }
    let cmdline = arch::pvh::cmdline();
    kprintln!("Command line: {}", cmdline);

    init_memory();

    arch::apic::init();
    let cal = arch::apic::calibrate(5);
    let hz = cmdline::value(cmdline, "hz")
        .and_then(cmdline::parse_number)
        .unwrap_or(DEFAULT_HZ)
        .clamp(1, 10_000);
    time::set_calibration(cal.tsc_hz, hz);
    time::start_timer(cal.lapic_hz);
    arch::apic::route_irq(arch::layout::COM1_IRQ);
    arch::apic::route_irq(arch::layout::I8042_KBD_IRQ);
    drivers::serial::enable_rx_interrupt();
    kprintln!(
        "tsc: {} kHz, lapic timer: {} kHz, HZ={}",
        Dec(cal.tsc_hz / 1000),
        Dec(cal.lapic_hz / 1000),
        Dec(hz)
    );
    match time::init_wall_clock() {
        Some(source) => kprintln!(
            "clock: wall clock from {}: {} s since the epoch",
            source,
            Dec(time::realtime_ns() / 1_000_000_000)
        ),
        None => kprintln!("clock: no wall clock offered, CLOCK_REALTIME starts at the epoch"),
    }
    let tun = proc::sched::init(cmdline);
    drivers::introspect::init();
    drivers::trace::init(cmdline::words(cmdline).any(|w| w == "tracegarbage"));
    kprintln!(
        "sched: CFS, latency {} ns, min_granularity {} ns, wakeup_granularity {} ns",
        Dec(tun.latency_ns),
        Dec(tun.min_granularity_ns),
        Dec(tun.wakeup_granularity_ns)
    );

    match cmdline::value(cmdline, "panic") {
        Some("test") => panic!("test panic requested on the command line (panic=test)"),
        Some("pagefault") => arch::touch_unmapped_kernel_page(),
        _ => {}
    }

    let hvc0 = cmdline::words(cmdline).any(|w| w == "console=hvc0");
    if cmdline::words(cmdline).any(|w| w == "strace") {
        syscall::TRACE.store(true, Ordering::Relaxed);
    }
    drivers::virtio::probe(cmdline::virtio_mmio_devices(cmdline), hvc0);
    if let Some(dev) = cmdline::value(cmdline, "blktest") {
        match drivers::virtio::write_self_test(dev) {
            Ok(()) => kprintln!("blktest: {}: wrote and read back 4096 bytes", dev),
            Err(e) => kprintln!("blktest: {}: {}", dev, e),
        }
    }
    if let Some((dev, irq)) = drivers::virtio::take_net() {
        let ip = match cmdline::value(cmdline, "ip") {
            Some(v) => cmdline::parse_ip(v).unwrap_or_else(|| {
                kprintln!("net: cannot use ip={}, using the default", v);
                cmdline::DEFAULT_IP
            }),
            None => cmdline::DEFAULT_IP,
        };
        let [a, b, c, d] = ip.addr;
        kprintln!(
            "net: eth0 {}.{}.{}.{}/{}",
            Dec(a as u64),
            Dec(b as u64),
            Dec(c as u64),
            Dec(d as u64),
            Dec(ip.prefix_len as u64)
        );
        net::init(dev, ip);
        drivers::set_net_irq(irq as u8);
        // The IOAPIC pin is edge-triggered: a level interrupt raised before the pin was routed (QEMU's
        // virtio-mmio) would never make an edge again unless acknowledged once.
        net::irq();
    }
    if let Some((dev, irq)) = drivers::virtio::take_vsock() {
        net::vsock::init(dev);
        drivers::set_vsock_irq(irq as u8);
        // As for the network device: take anything already pending (the IOAPIC pin is edge-triggered).
        net::vsock::irq();
    }
    let root = cmdline::value(cmdline, "root").unwrap_or("/dev/vda");
    // Linux mounts the root read-only unless `rw` comes last of `ro`/`rw`.
    let rw = cmdline::words(cmdline)
        .take_while(|w| *w != "--")
        .filter(|w| *w == "ro" || *w == "rw")
        .last()
        == Some("rw");
    let writable = match fs::mount_root(root, rw) {
        Ok(w) => w,
        Err(fs::MountError::NoDevice) => panic!("VFS: cannot open root device {}", root),
        Err(fs::MountError::Ext2(e)) => panic!("VFS: cannot mount root {}: {}", root, e),
    };
    kprintln!(
        "VFS: mounted root (ext2 filesystem, {}) on device {}",
        if writable { "read-write" } else { "read-only" },
        root
    );
    fs::mount_boot_tmpfs();
    // The device nodes and trees other subsystems serve through the VFS.
    fs::dev::register();
    fs::blockdev::register();
    fs::proc::register();
    tty::register();

    // As on Linux, the words after `--` are init's arguments.
    let init_args: alloc::vec::Vec<&str> = cmdline::init_args(cmdline).collect();
    run_init(
        cmdline::value(cmdline, "init").unwrap_or("/sbin/init"),
        &init_args,
    )
}

fn init_memory() {
    let (kstart, kend) = arch::kernel_image();
    let reserved = [(0, 0x10_0000), (kstart - KERNEL_BASE, kend - KERNEL_BASE)];
    // RAM the boot page tables map first (the page directories for the rest come from it), then the
    // rest once the direct map reaches it.
    let low = arch::layout::BOOT_DIRECT_MAP_END;
    let mut ram_end = 0;
    arch::pvh::for_each_memmap(|addr, size, ty| {
        if ty == arch::pvh::MEMMAP_RAM {
            ram_end = ram_end.max(addr + size);
            if addr < low {
                mm::frame::add_region(addr, (addr + size).min(low), &reserved);
            }
        }
    });
    let gib_pages = arch::cpu::cpuid(0x8000_0001, 0).3 & (1 << 26) != 0;
    let mapped = mm::paging::init_kernel(ram_end, gib_pages);
    arch::pvh::for_each_memmap(|addr, size, ty| {
        let (start, end) = (addr.max(low), (addr + size).min(mapped));
        if ty == arch::pvh::MEMMAP_RAM && start < end {
            mm::frame::add_region(start, end, &reserved);
        }
    });
    let (total, _) = mm::frame::stats();
    if !mm::frame::init_metadata(mapped.min(ram_end)) {
        panic!("out of memory for the frame metadata");
    }
    let heap = (total * mm::PAGE_SIZE / 8).clamp(2 << 20, 64 << 20);
    if !mm::heap::init(heap) {
        panic!("out of memory for the kernel heap");
    }
    kprintln!(
        "Memory: {} KiB available, kernel {} KiB, heap {} KiB",
        Dec(total * 4),
        Dec((kend - kstart) / 1024),
        Dec(heap / 1024)
    );
}

fn run_init(path: &str, args: &[&str]) -> ! {
    let argv: alloc::vec::Vec<&[u8]> = core::iter::once(path)
        .chain(args.iter().copied())
        .map(str::as_bytes)
        .collect();
    let envp: [&[u8]; 3] = [
        b"HOME=/",
        b"TERM=linux",
        b"PATH=/sbin:/bin:/usr/sbin:/usr/bin",
    ];
    // Descriptors 0-2 on /dev/console, and no controlling terminal (Linux's console_on_rootfs):
    // init gives the programs it starts a session with the console's own device.
    let process = match proc::exec::spawn(
        proc::INIT_PID,
        path.as_bytes(),
        &argv,
        &envp,
        tty::open_console(),
    ) {
        Ok(x) => x,
        Err(e) => panic!(
            "Requested init {} failed (error {}).",
            path,
            Dec(e.0 as u64)
        ),
    };
    proc::insert(alloc::boxed::Box::new(process));
    proc::sched::new_task(proc::INIT_PID, None);
    kprintln!("Run {} as init process", path);
    // The boot-time marker: init's first instruction runs next (user mode cannot do port I/O here).
    arch::cpu::outb(BOOT_MARKER_PORT, 0);
    // The boot stack becomes the idle task.
    proc::sched::idle_loop()
}

static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    arch::cpu::cli();
    if PANICKING.swap(true, Ordering::Relaxed) {
        arch::cpu::debug_exit(PANIC_EXIT_CODE);
    }
    match info.message().as_str() {
        Some(s) => kprintln!("Kernel panic - not syncing: {}", s),
        None => kprintln!("Kernel panic - not syncing: {}", info.message()),
    }
    if let Some(loc) = info.location() {
        kprintln!(
            "  at {}:{}:{}",
            loc.file(),
            Dec(loc.line() as u64),
            Dec(loc.column() as u64)
        );
    }
    let (sp, bp) = arch::current_sp_bp();
    kprintln!(
        "  RSP: {} RBP: {} CR2: {} CR3: {}",
        Hex16(sp),
        Hex16(bp),
        Hex16(arch::cpu::read_cr2()),
        Hex16(arch::cpu::read_cr3())
    );
    let (total, used) = mm::frame::stats();
    let (heap, heap_used) = mm::heap::stats();
    kprintln!(
        "  frames used {} of {}, heap used {} of {}, jiffies {}, pid {}",
        Dec(used),
        Dec(total),
        Dec(heap_used as u64),
        Dec(heap as u64),
        Dec(time::jiffies()),
        Dec(proc::current_pid().0 as u64)
    );
    kprintln!(
        "---[ end Kernel panic - exiting with status {} ]---",
        Hex(PANIC_EXIT_CODE as u64)
    );
    arch::cpu::debug_exit(PANIC_EXIT_CODE)
}
