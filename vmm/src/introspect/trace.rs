//! Syscall tracing (`PUT /guest/trace`, `GET /guest/trace?from=SEQ`, `microvm trace`): the host side of
//! the ring the guest kernel fills (`guest-kernel/src/drivers/trace.rs`).
//!
//! Protocol (ports in `arch::x86_64::layout`):
//! - `TRACE_PORT + 7` reads `b'T'`: the guest's probe.
//! - The guest fills the ring's header (magic `MVTR`, version 1, record size 192, capacity) and writes
//!   the ring's guest-physical address in six byte writes to `TRACE_PORT + 0..6` (48 bits, little
//!   endian); the write to `+5` commits it. The header and records must lie in guest RAM and the header
//!   must check, or the registration is refused (logged, counted).
//! - `PUT /guest/trace` writes the header's control words (on, follow children, pid and syscall
//!   filters with a generation, the pids, the syscall bitmap); the guest reads them on each call.
//! - The guest appends records at `head` and counts what it drops when full; it writes `TRACE_PORT + 6`
//!   (the doorbell) at half full. The VMM drains on that doorbell (on the vCPU thread, a copy of at most
//!   a ring's worth of records) and on every `GET`, into a bounded buffer of [`BUFFER_EVENTS`] decoded
//!   events, and advances `tail`.
//! - When the host reads too slowly: the doorbell drains only while that makes no event nobody has read
//!   fall out of the buffer, so with the buffer full of unread events the guest's ring fills and the
//!   guest drops (and counts) the newest events, never waiting and no longer exiting for the doorbell
//!   (perf's ring buffer does the same). A `GET` (a reader) drains the ring anyway, and the buffer then
//!   drops its oldest (counted as `dropped_vmm`; `lost` to a reader whose `from` they were after).
//!
//! Nothing in the ring is trusted: a head more than a ring ahead of the tail, a record whose sequence
//! is not its index, an unknown flag or a string longer than its room are counted as `malformed` and
//! skipped, never a panic. Event sequence numbers are the VMM's own (`from` counts them).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress};

use super::decode::{self, StringArg, Syscall};
use super::IntrospectError;
use devices::bus::BusDevice;
use devices::GuestMemoryMmap;

const SIGNATURE: u8 = b'T';
const MAGIC: u32 = u32::from_le_bytes(*b"MVTR");
const VERSION: u32 = 1;
const HEADER: u64 = 256;
const RECORD: u64 = 192;
const STR_MAX: usize = 96;
/// The largest ring a guest may register (records).
const MAX_CAPACITY: u64 = 4096;
/// Events the VMM keeps between two reads; older ones are dropped (and counted).
pub const BUFFER_EVENTS: usize = 4096;
/// Events in one `GET /guest/trace` answer at most (`next` says where to go on).
pub const ANSWER_EVENTS: usize = 1024;
/// Pids `PUT /guest/trace` may name.
pub const MAX_PIDS: usize = 16;
const DOORBELL: u64 = 6;
const PROBE: u64 = 7;

const W_HEAD: u64 = 2;
const W_TAIL: u64 = 3;
const W_DROPPED: u64 = 4;
const W_REALTIME: u64 = 5;
const W_CONTROL: u64 = 6;
const W_NPIDS: u64 = 7;
const W_PIDS: u64 = 8;
const W_BITMAP: u64 = 16;

const C_ON: u64 = 1;
const C_FOLLOW: u64 = 2;
const C_PIDS: u64 = 4;
const C_SYSCALLS: u64 = 8;

const F_RESULT: u64 = 1;
const F_CUT: u64 = 2;
const F_FAULT: u64 = 8;
const F_STRING: u64 = 16;

/// `PUT /guest/trace` body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceBody {
    pub enabled: bool,
    #[serde(default)]
    pub pids: Vec<u32>,
    #[serde(default)]
    pub follow_children: bool,
    /// Names of the calls to trace (all when empty).
    #[serde(default)]
    pub syscalls: Vec<String>,
}

/// A checked `PUT /guest/trace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TraceSettings {
    pub enabled: bool,
    pub pids: Vec<u32>,
    pub follow_children: bool,
    pub syscalls: Vec<u16>,
}

impl TraceBody {
    /// Checks the pids and resolves the names.
    pub fn check(self) -> Result<TraceSettings, IntrospectError> {
        let bad = IntrospectError::BadQuery;
        if self.pids.len() > MAX_PIDS {
            return Err(bad(format!(
                "{} pids given, at most {MAX_PIDS}",
                self.pids.len()
            )));
        }
        if self.pids.contains(&0) {
            return Err(bad("pid 0 cannot be traced".into()));
        }
        if self.follow_children && self.pids.is_empty() {
            return Err(bad("follow_children needs pids".into()));
        }
        let syscalls = self
            .syscalls
            .iter()
            .map(|n| {
                decode::number(n)
                    .filter(|&nr| nr < 512)
                    .ok_or_else(|| bad(format!("unknown system call {n:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TraceSettings {
            enabled: self.enabled,
            pids: self.pids,
            follow_children: self.follow_children,
            syscalls,
        })
    }
}

/// `GET /guest/trace?from=SEQ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceQuery {
    pub from: u64,
}

impl TraceQuery {
    pub fn parse(query: &str) -> Result<Self, IntrospectError> {
        let p = super::query_params(query, &["from"])?;
        let from = match p.first() {
            Some((_, v)) => super::parse_number("from", v)?,
            None => 0,
        };
        Ok(TraceQuery { from })
    }
}

/// One traced call, decoded.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TraceEvent {
    pub seq: u64,
    /// The thread (`tid`) and its process.
    pub pid: u32,
    pub tgid: u32,
    pub nr: u16,
    pub name: String,
    pub args: [u64; 6],
    /// The raw result (rax as a signed number); null for exit and exit_group.
    pub result: Option<i64>,
    /// The errno's name when the call failed.
    pub errno: Option<String>,
    /// `openat(AT_FDCWD, "/etc/motd", O_RDONLY)`.
    pub call: String,
    /// What strace prints after `= `.
    pub ret: String,
    /// Guest CLOCK_MONOTONIC at entry and exit (ns), and CLOCK_REALTIME at entry.
    pub entry_ns: u64,
    pub exit_ns: u64,
    pub realtime_ns: u64,
}

/// `GET /guest/trace`.
#[derive(Debug, Serialize)]
pub struct TraceAnswer {
    pub enabled: bool,
    pub events: Vec<TraceEvent>,
    /// The sequence number to ask `from` next.
    pub next: u64,
    /// Events after `from` that the VMM's buffer no longer holds.
    pub lost: u64,
    /// Events the guest dropped because its ring was full.
    pub dropped_guest: u64,
    /// Events dropped from the VMM's buffer before any reader had them.
    pub dropped_vmm: u64,
    /// Records (or ring states) that did not check, skipped.
    pub malformed: u64,
}

/// The registered ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    pub gpa: u64,
    pub capacity: u64,
}

/// What a snapshot keeps of the tracer (the ring itself is in guest memory).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracerState {
    pub ring: Option<Ring>,
    pub tail: u64,
    pub generation: u64,
    pub settings: TraceSettings,
}

#[derive(Default)]
struct State {
    addr: [u8; 6],
    ring: Option<Ring>,
    tail: u64,
    generation: u64,
    settings: TraceSettings,
    events: VecDeque<TraceEvent>,
    /// The sequence number of the next event.
    next_seq: u64,
    /// Events before this one were answered to a reader (or predate the last `PUT`): the doorbell may
    /// drop them from the buffer.
    read_next: u64,
    dropped_vmm: u64,
    dropped_guest: u64,
    malformed: u64,
    refused: u64,
}

/// The tracer: the port's state, the ring and the VMM's buffer.
pub struct Tracer {
    state: Mutex<State>,
    mem: GuestMemoryMmap,
}

/// The port device on the PIO bus (the vCPU threads call it).
pub struct TracePort(pub Arc<Tracer>);

impl BusDevice for TracePort {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if offset == PROBE && data.len() == 1 {
            data[0] = SIGNATURE;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let t = &self.0;
        let mut s = t.lock();
        match (offset, data) {
            (0..=5, [b]) => {
                s.addr[offset as usize] = *b;
                if offset == 5 {
                    let mut a = [0u8; 8];
                    a[..6].copy_from_slice(&s.addr);
                    t.register(&mut s, u64::from_le_bytes(a));
                }
            }
            (DOORBELL, _) => {
                if t.doorbell_may_drain(&s) {
                    t.drain(&mut s);
                }
            }
            _ => log::debug!(
                "trace port: ignored a {}-byte write at +{offset}",
                data.len()
            ),
        }
    }
}

impl Tracer {
    pub fn new(mem: GuestMemoryMmap) -> Self {
        Tracer {
            state: Mutex::new(State::default()),
            mem,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn word(&self, gpa: u64, w: u64) -> Option<u64> {
        self.mem
            .read_obj::<u64>(GuestAddress(gpa.checked_add(w * 8)?))
            .ok()
    }

    fn set_word(&self, gpa: u64, w: u64, v: u64) {
        if self.mem.write_obj(v, GuestAddress(gpa + w * 8)).is_err() {
            log::warn!("trace ring: cannot write header word {w}");
        }
    }

    /// Checks the ring at `gpa` and takes it.
    fn register(&self, s: &mut State, gpa: u64) {
        let checked = (|| {
            let w0 = self.word(gpa, 0).ok_or("the header is not guest RAM")?;
            let w1 = self.word(gpa, 1).ok_or("the header is not guest RAM")?;
            if w0 as u32 != MAGIC || (w0 >> 32) as u32 != VERSION {
                return Err("bad magic or version");
            }
            let (size, capacity) = (w1 & 0xffff_ffff, w1 >> 32);
            if size != RECORD || !capacity.is_power_of_two() || capacity > MAX_CAPACITY {
                return Err("bad record size or capacity");
            }
            let end = gpa + HEADER + capacity * RECORD;
            let mut probe = [0u8; 1];
            self.mem
                .read_slice(&mut probe, GuestAddress(end - 1))
                .map_err(|_| "the ring is not all guest RAM")?;
            Ok(capacity)
        })();
        match checked {
            Ok(capacity) => {
                log::debug!("trace ring at {gpa:#x}, {capacity} records");
                s.ring = Some(Ring { gpa, capacity });
                s.tail = self.word(gpa, W_HEAD).unwrap_or(0);
                self.set_word(gpa, W_TAIL, s.tail);
                s.settings = TraceSettings::default();
            }
            Err(why) => {
                s.refused += 1;
                log::warn!("trace ring at {gpa:#x} refused: {why}");
            }
        }
    }

    /// Whether the guest's doorbell may drain the ring: yes while the records fit in the buffer
    /// beside the events it holds, or push out only events a reader has had. Otherwise they stay in
    /// the ring until a reader comes, and the guest drops what does not fit there.
    fn doorbell_may_drain(&self, s: &State) -> bool {
        let Some(ring) = s.ring else {
            return false;
        };
        let Some(head) = self.word(ring.gpa, W_HEAD) else {
            return true;
        };
        // Clamped to a ring's worth: a head past that is garbage, which `drain` counts.
        let avail = head.wrapping_sub(s.tail).min(ring.capacity);
        let evicted = (s.events.len() as u64 + avail).saturating_sub(BUFFER_EVENTS as u64);
        let first = s.events.front().map_or(s.next_seq, |e| e.seq);
        evicted == 0 || first + evicted <= s.read_next
    }

    /// Moves the ring's new records into the buffer.
    fn drain(&self, s: &mut State) {
        let Some(ring) = s.ring else {
            return;
        };
        let (Some(head), Some(dropped), Some(offset)) = (
            self.word(ring.gpa, W_HEAD),
            self.word(ring.gpa, W_DROPPED),
            self.word(ring.gpa, W_REALTIME),
        ) else {
            s.malformed += 1;
            return;
        };
        s.dropped_guest = dropped;
        let avail = head.wrapping_sub(s.tail);
        if avail > ring.capacity {
            s.malformed += 1;
            log::warn!(
                "trace ring: head {head} is {avail} records past tail {} (capacity {}): skipped",
                s.tail,
                ring.capacity
            );
        } else {
            let mut raw = [0u8; RECORD as usize];
            for i in 0..avail {
                let index = s.tail.wrapping_add(i);
                let at = ring.gpa + HEADER + (index % ring.capacity) * RECORD;
                let ev = self
                    .mem
                    .read_slice(&mut raw, GuestAddress(at))
                    .ok()
                    .and_then(|_| parse_record(&raw, index, s.next_seq, offset));
                match ev {
                    Some(ev) => {
                        if s.events.len() >= BUFFER_EVENTS {
                            // A drop only if no reader had it.
                            if s.events.pop_front().is_some_and(|e| e.seq >= s.read_next) {
                                s.dropped_vmm += 1;
                            }
                        }
                        s.events.push_back(ev);
                        s.next_seq += 1;
                    }
                    None => s.malformed += 1,
                }
            }
        }
        s.tail = head;
        self.set_word(ring.gpa, W_TAIL, head);
    }

    /// `PUT /guest/trace`: writes the control words; answers the sequence number events start at.
    pub fn configure(&self, set: &TraceSettings) -> Result<u64, IntrospectError> {
        let mut s = self.lock();
        let ring = s.ring.ok_or_else(|| {
            IntrospectError::Guest("the guest kernel has not registered a trace ring".into())
        })?;
        self.drain(&mut s);
        s.generation += 1;
        self.write_control(ring, s.generation, set);
        s.settings = set.clone();
        // What came before is not what the new settings asked for: the doorbell may drop it.
        s.read_next = s.next_seq;
        Ok(s.next_seq)
    }

    fn write_control(&self, ring: Ring, generation: u64, set: &TraceSettings) {
        let g = ring.gpa;
        // Off while the filters change, then on with the new generation.
        self.set_word(g, W_CONTROL, 0);
        self.set_word(g, W_NPIDS, set.pids.len() as u64);
        for i in 0..MAX_PIDS / 2 {
            let p = |j: usize| set.pids.get(j).copied().unwrap_or(0) as u64;
            self.set_word(g, W_PIDS + i as u64, p(2 * i) | p(2 * i + 1) << 32);
        }
        let mut bitmap = [0u64; 8];
        for &nr in &set.syscalls {
            bitmap[nr as usize / 64] |= 1 << (nr % 64);
        }
        for (i, w) in bitmap.iter().enumerate() {
            self.set_word(g, W_BITMAP + i as u64, *w);
        }
        let mut control = generation << 32;
        if set.enabled {
            control |= C_ON;
        }
        if set.follow_children {
            control |= C_FOLLOW;
        }
        if !set.pids.is_empty() {
            control |= C_PIDS;
        }
        if !set.syscalls.is_empty() {
            control |= C_SYSCALLS;
        }
        self.set_word(g, W_CONTROL, control);
    }

    /// `GET /guest/trace?from=SEQ`.
    pub fn read(&self, q: &TraceQuery) -> Result<TraceAnswer, IntrospectError> {
        let mut s = self.lock();
        if s.ring.is_none() {
            return Err(IntrospectError::Guest(
                "the guest kernel has not registered a trace ring".into(),
            ));
        }
        self.drain(&mut s);
        let first = s.events.front().map_or(s.next_seq, |e| e.seq);
        let from = q.from.min(s.next_seq);
        let skip = from.saturating_sub(first) as usize;
        let events: Vec<TraceEvent> = s
            .events
            .iter()
            .skip(skip)
            .take(ANSWER_EVENTS)
            .cloned()
            .collect();
        let next = events.last().map_or(from.max(first), |e| e.seq + 1);
        s.read_next = s.read_next.max(next);
        Ok(TraceAnswer {
            enabled: s.settings.enabled,
            lost: first.saturating_sub(from),
            events,
            next,
            dropped_guest: s.dropped_guest,
            dropped_vmm: s.dropped_vmm,
            malformed: s.malformed,
        })
    }

    /// The snapshot's part.
    pub fn save(&self) -> TracerState {
        let s = self.lock();
        TracerState {
            ring: s.ring,
            tail: s.tail,
            generation: s.generation,
            settings: s.settings.clone(),
        }
    }

    /// Takes a snapshot's state (the ring is in the restored guest memory).
    pub fn restore(&self, st: &TracerState) {
        let mut s = self.lock();
        s.ring = st.ring;
        s.tail = st.tail;
        s.generation = st.generation;
        s.settings = st.settings.clone();
    }
}

fn u64_at(b: &[u8], w: usize) -> u64 {
    u64::from_le_bytes(b[w * 8..w * 8 + 8].try_into().expect("8 bytes"))
}

/// Checks and decodes one record: `index` is where it lies in the ring's sequence, `seq` the VMM's
/// number for it, `realtime` the guest's CLOCK_REALTIME - CLOCK_MONOTONIC.
pub fn parse_record(raw: &[u8], index: u64, seq: u64, realtime: u64) -> Option<TraceEvent> {
    if raw.len() < RECORD as usize || u64_at(raw, 0) != index {
        return None;
    }
    let ids = u64_at(raw, 1);
    let w2 = u64_at(raw, 2);
    let nr = (w2 & 0xffff) as u16;
    let flags = (w2 >> 16) & 0xffff;
    let len = ((w2 >> 32) & 0xffff) as usize;
    let index_arg = (w2 >> 48) as u8;
    if nr >= 512 || flags & !0x1f != 0 || len > STR_MAX || index_arg > 5 {
        return None;
    }
    let mut args = [0u64; 6];
    for (i, a) in args.iter_mut().enumerate() {
        *a = u64_at(raw, 3 + i);
    }
    let result = (flags & F_RESULT != 0).then(|| u64_at(raw, 9));
    let has_string = flags & F_STRING != 0;
    let call = Syscall {
        nr,
        args,
        result,
        string: has_string.then(|| StringArg {
            index: index_arg,
            bytes: raw[96..96 + len].to_vec(),
            cut: flags & F_CUT != 0,
            fault: flags & F_FAULT != 0,
        }),
    };
    let entry_ns = u64_at(raw, 10);
    let errno = result
        .map(|r| r as i64)
        .filter(|r| (-4095..0).contains(r))
        .and_then(|r| decode::errno((-r) as u64))
        .map(|(n, _)| n.to_owned());
    Some(TraceEvent {
        seq,
        pid: ids as u32,
        tgid: (ids >> 32) as u32,
        nr,
        name: decode::name(nr),
        args,
        result: result.map(|r| r as i64),
        errno,
        call: decode::call(&call),
        ret: decode::result(nr, result),
        entry_ns,
        exit_ns: u64_at(raw, 11),
        realtime_ns: entry_ns.wrapping_add(realtime),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RING: u64 = 0x10000;

    fn setup(capacity: u64) -> (Arc<Tracer>, TracePort, GuestMemoryMmap) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100000)]).unwrap();
        mem.write_obj(MAGIC as u64 | (VERSION as u64) << 32, GuestAddress(RING))
            .unwrap();
        mem.write_obj(RECORD | capacity << 32, GuestAddress(RING + 8))
            .unwrap();
        let t = Arc::new(Tracer::new(mem.clone()));
        let mut port = TracePort(t.clone());
        for (i, b) in RING.to_le_bytes().iter().take(6).enumerate() {
            port.write(i as u64, &[*b]);
        }
        (t, port, mem)
    }

    /// The guest's side: appends a record as the guest kernel does.
    fn push(mem: &GuestMemoryMmap, capacity: u64, nr: u16, path: &[u8], result: i64) {
        let head: u64 = mem.read_obj(GuestAddress(RING + 16)).unwrap();
        let tail: u64 = mem.read_obj(GuestAddress(RING + 24)).unwrap();
        if head - tail >= capacity {
            let d: u64 = mem.read_obj(GuestAddress(RING + 32)).unwrap();
            mem.write_obj(d + 1, GuestAddress(RING + 32)).unwrap();
            return;
        }
        let mut r = [0u8; RECORD as usize];
        let mut w = |i: usize, v: u64| r[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        w(0, head);
        w(1, 7 | 7 << 32);
        w(
            2,
            nr as u64 | (F_RESULT | F_STRING) << 16 | (path.len() as u64) << 32 | 1 << 48,
        );
        w(3, (-100i64) as u64);
        w(4, 0x1000);
        w(9, result as u64);
        w(10, 1000);
        w(11, 2000);
        r[96..96 + path.len()].copy_from_slice(path);
        let at = RING + HEADER + (head % capacity) * RECORD;
        mem.write_slice(&r, GuestAddress(at)).unwrap();
        mem.write_obj(head + 1, GuestAddress(RING + 16)).unwrap();
    }

    #[test]
    fn records_are_drained_decoded_and_bounded() {
        let (t, mut port, mem) = setup(8);
        let from = t
            .configure(&TraceSettings {
                enabled: true,
                pids: vec![7],
                follow_children: true,
                syscalls: vec![257],
            })
            .unwrap();
        assert_eq!(from, 0);
        let control: u64 = mem.read_obj(GuestAddress(RING + 48)).unwrap();
        assert_eq!(control, 1 << 32 | C_ON | C_FOLLOW | C_PIDS | C_SYSCALLS);
        let pid: u64 = mem.read_obj(GuestAddress(RING + 64)).unwrap();
        assert_eq!(pid, 7);
        let bit: u64 = mem.read_obj(GuestAddress(RING + 128 + 4 * 8)).unwrap();
        assert_eq!(bit, 1 << (257 - 256));
        push(&mem, 8, 257, b"/etc/motd", 3);
        push(&mem, 8, 257, b"/nope", -2);
        let a = t.read(&TraceQuery { from: 0 }).unwrap();
        assert_eq!(a.events.len(), 2);
        assert_eq!(
            a.events[0].call,
            r#"openat(AT_FDCWD, "/etc/motd", O_RDONLY)"#
        );
        assert_eq!(a.events[0].ret, "3");
        assert_eq!(a.events[1].errno.as_deref(), Some("ENOENT"));
        assert_eq!(a.next, 2);
        assert!(t.read(&TraceQuery { from: 2 }).unwrap().events.is_empty());
        // The guest fills its ring: what it cannot write it counts; the doorbell drains.
        for _ in 0..10 {
            push(&mem, 8, 0, b"", 0);
        }
        port.write(DOORBELL, &[1]);
        let a = t.read(&TraceQuery { from: 2 }).unwrap();
        assert_eq!((a.events.len(), a.dropped_guest), (8, 2));
        // Nobody reads: the doorbell fills the buffer, pushing out only the 10 events read above;
        // then the ring stays full and the guest drops the newest (its counter moves), until a
        // reader's GET drains the ring and the buffer drops its oldest.
        let rounds = BUFFER_EVENTS as u64 / 8 + 4;
        for _ in 0..rounds {
            for _ in 0..8 {
                push(&mem, 8, 39, b"", 1);
            }
            port.write(DOORBELL, &[1]);
        }
        assert_eq!(t.lock().events.len(), BUFFER_EVENTS);
        let a = t.read(&TraceQuery { from: 0 }).unwrap();
        // The 2 from before, and the last three rounds: the ring held the round before them.
        assert_eq!(a.dropped_guest, 2 + 8 * 3, "{a:?}");
        // The GET pushed out 8 unread events (the doorbell pushed out the 10 read ones: no drop).
        assert_eq!(a.dropped_vmm, 8, "{a:?}");
        let pushed = 2 + 10 + 8 * rounds;
        assert_eq!(
            a.dropped_guest + BUFFER_EVENTS as u64 + a.dropped_vmm + 10,
            pushed,
            "{a:?}"
        );
        // From 0, everything the buffer no longer holds is lost to this reader, read or not.
        assert_eq!(a.lost, 18);
        assert_eq!(a.events.len(), ANSWER_EVENTS);
        let saved = t.save();
        assert_eq!(
            saved.ring,
            Some(Ring {
                gpa: RING,
                capacity: 8
            })
        );
        let other = Tracer::new(mem.clone());
        other.restore(&saved);
        push(&mem, 8, 39, b"", 1);
        assert_eq!(other.read(&TraceQuery { from: 0 }).unwrap().events.len(), 1);
    }

    #[test]
    fn garbage_from_the_guest_is_counted_and_skipped() {
        let (t, mut port, mem) = setup(8);
        // A head far past the tail.
        mem.write_obj(1_000_000u64, GuestAddress(RING + 16))
            .unwrap();
        port.write(DOORBELL, &[1]);
        let a = t.read(&TraceQuery { from: 0 }).unwrap();
        assert_eq!((a.events.len(), a.malformed), (0, 1));
        // A record whose sequence, flags or string length do not check.
        push(&mem, 8, 1, b"x", 1);
        let slot = |index: u64| RING + HEADER + (index % 8) * RECORD;
        let at = slot(1_000_000);
        mem.write_obj(5u64, GuestAddress(at)).unwrap();
        push(&mem, 8, 1, b"x", 1);
        let at = slot(1_000_001) + 16;
        mem.write_obj(u64::MAX, GuestAddress(at)).unwrap();
        push(&mem, 8, 1, b"ok", 1);
        let a = t.read(&TraceQuery { from: 0 }).unwrap();
        assert_eq!((a.events.len(), a.malformed), (1, 3));
        // A registration outside RAM or with a bad header is refused.
        for (i, b) in 0xfff_0000u64.to_le_bytes().iter().take(6).enumerate() {
            port.write(i as u64, &[*b]);
        }
        assert_eq!(t.lock().refused, 1);
        assert_eq!(t.save().ring.unwrap().gpa, RING);
        let mut sig = [0u8];
        port.read(PROBE, &mut sig);
        assert_eq!(sig[0], SIGNATURE);
        // Unregistered: a 400.
        let fresh = Tracer::new(mem);
        assert!(fresh.read(&TraceQuery { from: 0 }).is_err());
        assert!(fresh.configure(&TraceSettings::default()).is_err());
    }

    #[test]
    fn bodies_and_queries_are_checked() {
        let body = |j: &str| serde_json::from_str::<TraceBody>(j).map_err(|e| e.to_string());
        let s = body(r#"{"enabled": true, "pids": [3], "follow_children": true, "syscalls": ["openat", "read"]}"#)
            .unwrap()
            .check()
            .unwrap();
        assert_eq!(s.syscalls, vec![257, 0]);
        assert!(body(r#"{"enabled": true, "bogus": 1}"#).is_err());
        assert!(body(r#"{"pids": [3]}"#).is_err());
        let e = |j: &str| body(j).unwrap().check().unwrap_err().to_string();
        assert!(e(r#"{"enabled": true, "syscalls": ["nope"]}"#).contains("unknown system call"));
        assert!(e(r#"{"enabled": true, "pids": [0]}"#).contains("pid 0"));
        assert!(e(r#"{"enabled": true, "follow_children": true}"#).contains("needs pids"));
        assert!(e(&format!(
            r#"{{"enabled": true, "pids": {:?}}}"#,
            (1..=17).collect::<Vec<u32>>()
        ))
        .contains("at most"));
        assert_eq!(TraceQuery::parse("from=12").unwrap().from, 12);
        assert_eq!(TraceQuery::parse("").unwrap().from, 0);
        assert!(TraceQuery::parse("from=x").is_err());
        assert!(TraceQuery::parse("to=1").is_err());
    }
}
