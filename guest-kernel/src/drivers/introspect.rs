//! The introspection channel of microvm (its `GET /guest/processes`): the host asks, through an
//! interrupt, for the process table as this kernel knows it, and reads the answer from a buffer in guest
//! memory that this driver registered at boot.
//!
//! Protocol (ports and IRQ in `arch::layout`; the host side is microvm's `vmm/src/introspect/channel.rs`):
//! - Probe: `inb(INTROSPECT_PORT + 8)` reads `b'M'` where the VMM offers the channel (QEMU and other
//!   VMMs read 0xff: the driver then stays off).
//! - Register: the guest-physical address of [`BUF`] in eight byte writes to `INTROSPECT_PORT + 0..8`,
//!   little-endian; the write to `+7` commits it. Then IRQ `INTROSPECT_IRQ` is routed.
//! - Request: the host raises `INTROSPECT_IRQ`. The handler fills the buffer (a 64-byte header, then one
//!   96-byte record per process or thread) and writes any byte to `INTROSPECT_PORT + 8` (done).
//!
//! Header: magic `MVIP` (u32), version 1 (u32), answer sequence number (u64, bumped per answer), records
//! written (u32), tasks that exist (u32; more than written: the buffer was full), record size (u32).
//! Record: pid, tgid, ppid (u32 each), state (`R S T Z`, u8), 3 bytes padding, nice (i32), vruntime (u64,
//! ns), user and system time (u64 ns each), virtual size (u64 bytes), resident pages (u64), command
//! (16 bytes, NUL-padded), 8 bytes padding.
//!
//! The magic is cleared while the handler writes and set last, so that a host reading the buffer
//! meanwhile (on an earlier answer's doorbell) can tell an answer in progress from a finished one.
//!
//! The handler runs only where interrupts are on (user mode, the idle task's halt), so the process table
//! is never borrowed by the code it interrupted (see `sync.rs`).

use crate::arch::cpu::{inb, outb};
use crate::arch::layout::{INTROSPECT_IRQ, INTROSPECT_PORT};
use crate::proc::{self, Pid, State};
use crate::sync::KCell;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

const BUF_SIZE: usize = 16384;
const HEADER: usize = 64;
const RECORD: usize = 96;
const MAGIC: u32 = u32::from_le_bytes(*b"MVIP");
const VERSION: u32 = 1;
const SIGNATURE: u8 = b'M';
const COMM_LEN: usize = 16;

/// The answer buffer the host reads (physically contiguous: it lies in the kernel image's .bss).
static BUF: KCell<[u8; BUF_SIZE]> = KCell::new([0; BUF_SIZE]);
static ENABLED: AtomicBool = AtomicBool::new(false);
static SEQ: KCell<u64> = KCell::new(0);

/// Registers the buffer with the VMM and routes the request IRQ, if the VMM offers the channel.
pub fn init() {
    if inb(INTROSPECT_PORT + 8) != SIGNATURE {
        return;
    }
    let va = BUF.borrow().as_ptr() as u64;
    let pa = crate::mm::virt_to_phys(va);
    for (i, b) in pa.to_le_bytes().iter().enumerate() {
        outb(INTROSPECT_PORT + i as u16, *b);
    }
    ENABLED.store(true, Ordering::Relaxed);
    crate::arch::apic::route_irq(INTROSPECT_IRQ);
}

/// One task's record.
fn record(pid: Pid, out: &mut [u8]) -> bool {
    let e = proc::sched::entity(pid);
    let found = proc::with_proc(pid, |p| {
        let state = match p.state {
            State::Ready => b'R',
            State::Blocked(_) => b'S',
            State::Stopped => b'T',
            State::Zombie => b'Z',
        };
        let mm = p.mm.borrow();
        let (vsize, rss) = if p.state == State::Zombie {
            (0, 0)
        } else {
            (mm.vmas.total(), mm.aspace.mapped_pages())
        };
        out[0..4].copy_from_slice(&p.pid.0.to_le_bytes());
        out[4..8].copy_from_slice(&p.tgid.0.to_le_bytes());
        out[8..12].copy_from_slice(&p.ppid.0.to_le_bytes());
        out[12] = state;
        out[56..64].copy_from_slice(&vsize.to_le_bytes());
        out[64..72].copy_from_slice(&rss.to_le_bytes());
        let n = p.name.len().min(COMM_LEN - 1);
        out[72..72 + n].copy_from_slice(&p.name[..n]);
    });
    if found.is_none() {
        return false;
    }
    if let Some(e) = e {
        out[16..20].copy_from_slice(&e.nice.to_le_bytes());
        out[24..32].copy_from_slice(&e.vruntime.to_le_bytes());
        out[32..40].copy_from_slice(&e.utime().to_le_bytes());
        out[40..48].copy_from_slice(&e.stime.to_le_bytes());
    }
    true
}

/// `INTROSPECT_IRQ`: writes the process table into the buffer and tells the VMM.
pub fn irq() {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let pids: Vec<Pid> = proc::with_table(|t| t.keys().copied().collect());
    let mut buf = BUF.borrow_mut();
    // No magic while the buffer changes: a host reading it now (an earlier answer's doorbell) sees an
    // answer in progress, not a torn one.
    buf[0..4].fill(0);
    let capacity = (BUF_SIZE - HEADER) / RECORD;
    let mut written = 0usize;
    for &pid in pids.iter().take(capacity) {
        let at = HEADER + written * RECORD;
        let slot = &mut buf[at..at + RECORD];
        slot.fill(0);
        if record(pid, slot) {
            written += 1;
        }
    }
    let mut seq = SEQ.borrow_mut();
    *seq += 1;
    buf[4..8].copy_from_slice(&VERSION.to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    buf[16..20].copy_from_slice(&(written as u32).to_le_bytes());
    buf[20..24].copy_from_slice(&(pids.len() as u32).to_le_bytes());
    buf[24..28].copy_from_slice(&(RECORD as u32).to_le_bytes());
    buf[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    drop(buf);
    outb(INTROSPECT_PORT + 8, 1);
}
