//! Syscall tracing for microvm's `microvm trace` (its `PUT`/`GET /guest/trace`): a bounded ring of
//! fixed-size records in this kernel's memory that the syscall dispatcher fills and the VMM drains.
//!
//! Protocol (ports in `arch::layout`; the host side is microvm's `vmm/src/introspect/trace.rs`):
//! - Probe: `inb(TRACE_PORT + 7)` reads `b'T'` where the VMM offers tracing (elsewhere 0xff: off).
//! - Register: the guest-physical address of [`RING`] (its header filled in first) in six byte writes
//!   to `TRACE_PORT + 0..6`, little-endian (48 bits); the write to `+5` commits it.
//! - The VMM turns tracing on and off and sets the filters by writing the header's control words in
//!   guest memory; this kernel reads them on every system call (one load and one predictable branch
//!   while tracing is off: [`on`]).
//! - The kernel appends one record per system call at `head`; when the ring is full (`head - tail` =
//!   capacity) the event is dropped and `dropped` counted, never waited for. When the ring reaches half
//!   full it writes `TRACE_PORT + 6` (the doorbell), and the VMM drains it then and on each API read,
//!   advancing `tail`.
//!
//! Header (u64 words): 0 magic `MVTR` | version 1 << 32; 1 record size | capacity << 32; 2 head
//! (kernel); 3 tail (VMM); 4 dropped (kernel); 5 CLOCK_REALTIME - CLOCK_MONOTONIC in ns (kernel);
//! 6 control (VMM): bit 0 on, 1 follow children, 2 pid filter, 3 syscall filter, bits 32.. a generation
//! bumped when the filters change; 7 the number of pids; 8..16 up to 16 pids (u32 each); 16..24 a
//! bitmap of the syscalls to trace (0..511); 24..32 reserved.
//!
//! Record (24 u64 words): 0 sequence (= its index since registration); 1 tid | tgid << 32; 2 syscall
//! number (u16) | flags << 16 (u16: 1 has a result, 2 string cut, 4 string copied at exit, 8 string
//! unreadable, 16 a string argument) | string length << 32 (u16) | string argument index << 48 (u8); 3..9 the six arguments;
//! 9 result (rax); 10 entry and 11 exit time (ns since boot); 12..24 up to 96 bytes of one string
//! argument (a path at entry; write's buffer at entry; read's at exit).
//!
//! Filters applied here: on/off, pids (a task is traced when its pid or tgid is listed; with follow
//! children also when its parent is traced, and it is then listed itself, up to [`MAX_FOLLOWED`]), and
//! the syscall bitmap. Everything is atomics: the VMM writes the header while this kernel runs.

use crate::arch::cpu::{inb, outb};
use crate::arch::layout::TRACE_PORT;
use crate::arch::trap::TrapFrame;
use crate::mm::uaccess;
use crate::sync::KCell;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use kcore::errno::Errno;

const SIGNATURE: u8 = b'T';
const MAGIC: u64 = u32::from_le_bytes(*b"MVTR") as u64;
const VERSION: u64 = 1;
const WORDS: usize = 24;
const RECORD: u64 = (WORDS * 8) as u64;
/// Records in the ring (a power of two).
const CAPACITY: usize = 256;
const STR_WORDS: usize = 12;
const STR_MAX: usize = STR_WORDS * 8;
/// Pids a traced tree may grow to (the listed ones and the children followed).
const MAX_FOLLOWED: usize = 64;

const ON: u64 = 1;
const FOLLOW: u64 = 2;
const PID_FILTER: u64 = 4;
const NR_FILTER: u64 = 8;

const F_RESULT: u64 = 1;
const F_CUT: u64 = 2;
const F_AT_EXIT: u64 = 4;
const F_FAULT: u64 = 8;
const F_STRING: u64 = 16;

const H_HEAD: usize = 2;
const H_TAIL: usize = 3;
const H_DROPPED: usize = 4;
const H_REALTIME: usize = 5;
const H_CONTROL: usize = 6;
const H_NPIDS: usize = 7;
const H_PIDS: usize = 8;
const H_BITMAP: usize = 16;

#[repr(C, align(4096))]
struct Ring {
    header: [AtomicU64; 32],
    records: [[AtomicU64; WORDS]; CAPACITY],
}

/// The ring the VMM reads (in the kernel image's .bss: physically contiguous, zero at boot).
static RING: Ring = Ring {
    header: [const { AtomicU64::new(0) }; 32],
    records: [const { [const { AtomicU64::new(0) }; WORDS] }; CAPACITY],
};

/// The traced pids as this kernel follows them, and the control generation they were read at.
struct Followed {
    generation: u64,
    pids: [u32; MAX_FOLLOWED],
    len: usize,
}

static FOLLOWED: KCell<Followed> = KCell::new(Followed {
    generation: u64::MAX,
    pids: [0; MAX_FOLLOWED],
    len: 0,
});

/// Fills the header and registers the ring with the VMM, if it offers tracing. With `garbage` (the
/// `tracegarbage` test mode) it then feeds the VMM what a broken or hostile guest could: a head far
/// past the tail, a record whose sequence and flags do not check, a registration outside RAM; then
/// goes on tracing normally from where the VMM resynchronised.
pub fn init(garbage: bool) {
    if inb(TRACE_PORT + 7) != SIGNATURE {
        return;
    }
    let h = &RING.header;
    h[0].store(MAGIC | VERSION << 32, Relaxed);
    h[1].store(RECORD | (CAPACITY as u64) << 32, Relaxed);
    h[H_REALTIME].store(realtime_offset(), Relaxed);
    let pa = crate::mm::virt_to_phys(&RING as *const Ring as u64);
    register(pa);
    if garbage {
        feed_garbage();
    }
}

fn register(pa: u64) {
    for (i, b) in pa.to_le_bytes().iter().take(6).enumerate() {
        outb(TRACE_PORT + i as u16, *b);
    }
}

/// The `tracegarbage` test mode (see [`init`]).
fn feed_garbage() {
    let h = &RING.header;
    let far = 0x1234_5678;
    h[H_HEAD].store(far, Relaxed);
    outb(TRACE_PORT + 6, 1);
    // A record with a wrong sequence number and unknown flags.
    let slot = &RING.records[far as usize % CAPACITY];
    slot[0].store(7, Relaxed);
    slot[2].store(0xffff_ffff_ffff_ffff, Relaxed);
    h[H_HEAD].store(far + 1, Relaxed);
    outb(TRACE_PORT + 6, 1);
    // A ring outside guest RAM: refused, the first one stays.
    register(0xfff0_0000_0000);
    crate::kprintln!("trace: fed the VMM garbage (tracegarbage)");
}

fn realtime_offset() -> u64 {
    crate::time::realtime_ns().wrapping_sub(crate::time::now_ns())
}

/// Whether the VMM has tracing on: the dispatcher's one branch.
#[inline(always)]
pub fn on() -> bool {
    RING.header[H_CONTROL].load(Relaxed) & ON != 0
}

/// Which argument holds a string and when it is copied.
enum Str {
    /// A NUL-terminated string (a path) at entry.
    C(usize),
    /// A buffer of `len` (argument `.1`) bytes at entry.
    In(usize, usize),
    /// A buffer filled by the call, as long as its result, at exit.
    Out(usize),
}

fn string_arg(nr: u64) -> Option<Str> {
    Some(match nr {
        0 | 17 | 45 => Str::Out(1),
        1 | 18 | 44 => Str::In(1, 2),
        2 | 4 | 6 | 21 | 59 | 76 | 80 | 82 | 83 | 84 | 86 | 87 | 89 | 90 | 92 | 94 | 137 | 161 => {
            Str::C(0)
        }
        88 | 266 => Str::C(0),
        257 | 258 | 260 | 262 | 263 | 264 | 265 | 267 | 268 | 269 | 280 | 316 | 322 | 332 | 439 => {
            Str::C(1)
        }
        _ => return None,
    })
}

/// Whether the current task passes the pid filter (following children as they first appear).
fn pid_traced(control: u64, tid: u32, tgid: u32, ppid: u32) -> bool {
    let mut f = FOLLOWED.borrow_mut();
    let generation = control >> 32;
    if f.generation != generation {
        let n = (RING.header[H_NPIDS].load(Relaxed) as usize).min(16);
        for i in 0..n {
            let w = RING.header[H_PIDS + i / 2].load(Relaxed);
            f.pids[i] = (w >> (32 * (i % 2))) as u32;
        }
        f.len = n;
        f.generation = generation;
    }
    let listed = |f: &Followed, p: u32| f.pids[..f.len].contains(&p);
    if listed(&f, tid) || listed(&f, tgid) {
        return true;
    }
    if control & FOLLOW != 0 && listed(&f, ppid) {
        if f.len < MAX_FOLLOWED {
            let at = f.len;
            f.pids[at] = tgid;
            f.len += 1;
        }
        return true;
    }
    false
}

/// Copies up to [`STR_MAX`] bytes of user memory at `va` into the record's string words; with `cstr`
/// up to the first NUL. Returns the flags and the length copied.
fn copy_string(rec: &mut [u64; WORDS], va: u64, max: usize, cstr: bool) -> (u64, usize) {
    let mut buf = [0u8; STR_MAX];
    let mut flags = 0;
    // The first `len` bytes at `va`, as far as they can be read.
    let read = |buf: &mut [u8], len: usize| {
        uaccess::UserReader::new(va, len).and_then(|r| r.read_at(0, &mut buf[..len]))
    };
    let copied = if cstr {
        match uaccess::user_str(va, STR_MAX, Errno::ENAMETOOLONG) {
            Ok(s) => s.copy_to(&mut buf[..s.len()]).map(|_| s.len()),
            Err(Errno::ENAMETOOLONG) => {
                flags |= F_CUT;
                read(&mut buf, STR_MAX)
            }
            Err(e) => Err(e),
        }
    } else {
        if max > STR_MAX {
            flags |= F_CUT;
        }
        read(&mut buf, max.min(STR_MAX))
    };
    let n = copied.unwrap_or_else(|_| {
        flags = F_FAULT;
        0
    });
    for (i, w) in rec[12..].iter_mut().enumerate() {
        if i * 8 >= n {
            break;
        }
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[i * 8..i * 8 + 8]);
        *w = u64::from_le_bytes(b);
    }
    (flags, n)
}

/// Runs the system call in `frame` with `run`, recording it in the ring if it passes the filters.
/// Never inlined, so that the dispatcher's path while tracing is off stays a load, a test and a jump.
#[inline(never)]
pub fn traced(frame: &mut TrapFrame, run: fn(&mut TrapFrame)) {
    let control = RING.header[H_CONTROL].load(Relaxed);
    let nr = frame.rax;
    if control & NR_FILTER != 0 {
        let bit = RING.header[H_BITMAP + (nr as usize % 512) / 64].load(Relaxed);
        if nr >= 512 || bit & (1 << (nr % 64)) == 0 {
            return run(frame);
        }
    }
    let me = crate::sync::task::current();
    let (tid, tgid, ppid) = (me.pid, me.tgid, me.ppid);
    if control & PID_FILTER != 0 && !pid_traced(control, tid, tgid, ppid) {
        return run(frame);
    }
    let args = [
        frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8, frame.r9,
    ];
    let mut rec = [0u64; WORDS];
    rec[1] = tid as u64 | (tgid as u64) << 32;
    rec[3..9].copy_from_slice(&args);
    rec[10] = crate::time::now_ns();
    let mut flags = 0;
    let mut len = 0;
    let string = string_arg(nr);
    let arg_index = match string {
        Some(Str::C(i)) => {
            (flags, len) = copy_string(&mut rec, args[i], STR_MAX, true);
            flags |= F_STRING;
            i
        }
        Some(Str::In(i, l)) => {
            (flags, len) = copy_string(&mut rec, args[i], args[l] as usize, false);
            flags |= F_STRING;
            i
        }
        Some(Str::Out(i)) => i,
        None => 0,
    };
    // exit and exit_group do not come back: their record is written now.
    if nr != 60 && nr != 231 {
        run(frame);
        rec[9] = frame.rax;
        rec[11] = crate::time::now_ns();
        flags |= F_RESULT;
        if let Some(Str::Out(i)) = string {
            let r = frame.rax as i64;
            if r > 0 {
                let (f, l) = copy_string(&mut rec, args[i], r as usize, false);
                (flags, len) = (flags | f | F_AT_EXIT | F_STRING, l);
            }
        }
    }
    rec[2] = (nr & 0xffff) | flags << 16 | (len as u64) << 32 | (arg_index as u64) << 48;
    publish(&mut rec);
    if nr == 60 || nr == 231 {
        run(frame);
    }
}

/// Appends a record, or counts it dropped when the ring is full.
fn publish(rec: &mut [u64; WORDS]) {
    let h = &RING.header;
    let head = h[H_HEAD].load(Relaxed);
    let used = head.wrapping_sub(h[H_TAIL].load(Relaxed));
    if used >= CAPACITY as u64 {
        h[H_DROPPED].fetch_add(1, Relaxed);
        return;
    }
    rec[0] = head;
    let slot = &RING.records[head as usize % CAPACITY];
    for (w, v) in slot.iter().zip(rec.iter()) {
        w.store(*v, Relaxed);
    }
    // The record's words before the head that publishes it (x86 keeps stores in order; the fence
    // keeps the compiler from moving them).
    core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
    h[H_HEAD].store(head.wrapping_add(1), Relaxed);
    if used + 1 == CAPACITY as u64 / 2 {
        h[H_REALTIME].store(realtime_offset(), Relaxed);
        outb(TRACE_PORT + 6, 1);
    }
}
