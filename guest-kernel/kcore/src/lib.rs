//! Pure logic of the guest kernel: everything here is plain `no_std` Rust without arch code or
//! `unsafe` on hardware, so `cargo test` runs it on the host (see `scripts/build-guest-kernel.sh --test`).
//!
//! - [`buddy`]: the buddy allocator of physical frames (bookkeeping only).
//! - [`fmt`]: number formatting that avoids the SSE paths of `core::fmt` (kernel mode is emulated here).
//! - [`cmdline`]: the kernel command line (`hz=`, `root=`, `virtio_mmio.device=`, the CFS tunables, ...).
//! - [`ext2`]: a read-only ext2 reader over a [`ext2::BlockRead`] device.
//! - [`elf`]: static ELF executables (ET_EXEC and static-pie ET_DYN) turned into a load plan.
//! - [`stack`]: the System V initial process stack (argc, argv, envp, auxv).
//! - [`errno`]: Linux errno values.
//! - [`sched`]: the scheduling policy (Linux 6.5's CFS), [`pid`]: Linux pid allocation,
//!   [`wait`]: wait statuses and wait4's pid forms.
//! - [`lock`]: POSIX advisory record locks (fcntl).
//! - [`rtc`]: CMOS RTC readings and pvclock scaling as wall-clock time.
//! - [`procfs`]: the text of /proc files; [`vma`]: a process's memory areas (mmap, mprotect, munmap).
//! - [`vsock`]: virtio-vsock packet headers, `sockaddr_vm`, and the credit a peer gives.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod buddy;
pub mod cmdline;
pub mod elf;
pub mod errno;
pub mod ext2;
pub mod fmt;
pub mod loadavg;
pub mod lock;
pub mod net;
pub mod pid;
pub mod procfs;
pub mod rand;
pub mod rtc;
pub mod sched;
pub mod stack;
pub mod vma;
pub mod vsock;
pub mod wait;
