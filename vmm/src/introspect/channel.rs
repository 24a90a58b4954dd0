//! The introspection channel the guest kernel offers (`guest-kernel/src/drivers/introspect.rs`):
//! `GET /guest/processes` asks the guest for its process table, as the guest kernel knows it.
//!
//! Protocol (ports and IRQ in `arch::x86_64::layout`):
//! - `INTROSPECT_PORT + 8` reads `b'M'`: the guest's probe.
//! - The guest registers a buffer of [`BUF_SIZE`] bytes of guest RAM: its guest-physical address in
//!   eight byte writes to `INTROSPECT_PORT + 0..8`, little-endian; the write to `+7` commits it.
//! - A request raises `INTROSPECT_IRQ` (an irqfd); the guest fills the buffer and writes a byte to
//!   `INTROSPECT_PORT + 8`, which writes [`GuestChannel::answered`]. The VMM thread does not wait: it
//!   answers the API when that eventfd fires or after [`ANSWER_TIMEOUT`] (`controller::runtime`),
//!   serving other events meanwhile. Then it reads and checks the buffer: a 64-byte header (magic `MVIP`, version 1, sequence, records written, tasks
//!   that exist, record size 96) and the records (see [`parse`]).
//!
//! The guest is not trusted: the registered address must lie in RAM, and every header field and
//! record is checked; an answer that does not parse is an error naming what is wrong (a 400), never a
//! panic. The registration is part of a snapshot ([`super::IntrospectState`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::IntrospectError;
use devices::bus::BusDevice;
use devices::GuestMemoryMmap;

/// The guest's answer buffer.
pub const BUF_SIZE: usize = 16384;
const HEADER: usize = 64;
const RECORD: usize = 96;
const MAGIC: u32 = u32::from_le_bytes(*b"MVIP");
const VERSION: u32 = 1;
/// What a read of `INTROSPECT_PORT + 8` returns.
const SIGNATURE: u8 = b'M';
/// The doorbell/signature register.
const DOORBELL: u64 = 8;
/// How long the VMM thread waits for the guest's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Default)]
struct State {
    /// The bytes of the address being registered.
    addr: [u8; 8],
    /// The registered buffer.
    buffer: Option<u64>,
}

/// The channel: the port device's state and the request IRQ.
pub struct GuestChannel {
    state: Mutex<State>,
    irq: EventFd,
    answered: EventFd,
}

/// The port device on the PIO bus (the vCPU threads call it).
pub struct ChannelPort(pub Arc<GuestChannel>);

impl BusDevice for ChannelPort {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if offset == DOORBELL && data.len() == 1 {
            data[0] = SIGNATURE;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let ch = &self.0;
        let mut s = ch.state.lock().unwrap_or_else(|e| e.into_inner());
        match (offset, data) {
            (0..=7, [b]) => {
                s.addr[offset as usize] = *b;
                if offset == 7 {
                    let gpa = u64::from_le_bytes(s.addr);
                    log::debug!("introspection channel: the guest registered {gpa:#x}");
                    s.buffer = Some(gpa);
                }
            }
            (DOORBELL, _) => {
                if let Err(e) = ch.answered.write(1) {
                    log::warn!("introspection channel: cannot signal an answer: {e}");
                }
            }
            _ => log::debug!(
                "introspection channel: ignored a {}-byte write at +{offset}",
                data.len()
            ),
        }
    }
}

/// One task of the guest, as its kernel reports it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct GuestProcess {
    pub pid: u32,
    /// The thread group (the process's pid; `pid` is the thread's).
    pub tgid: u32,
    pub ppid: u32,
    /// `R`, `S`, `D`, `T` or `Z`.
    pub state: String,
    pub nice: i32,
    /// CFS virtual runtime, ns.
    pub vruntime_ns: u64,
    pub utime_ns: u64,
    pub stime_ns: u64,
    /// Virtual size in bytes and resident pages.
    pub vsize: u64,
    pub rss_pages: u64,
    pub command: String,
}

/// `GET /guest/processes`.
#[derive(Debug, Serialize)]
pub struct ProcessList {
    pub processes: Vec<GuestProcess>,
    /// Tasks the guest has; more than listed when its buffer was full.
    pub total: u32,
    pub truncated: bool,
}

impl GuestChannel {
    /// A channel with `irq` as the request's irqfd and `answered` written on each answer.
    pub fn new(irq: EventFd, answered: EventFd) -> Self {
        GuestChannel {
            state: Mutex::new(State::default()),
            irq,
            answered,
        }
    }

    /// The request IRQ's eventfd (registered with KVM).
    pub fn irq(&self) -> &EventFd {
        &self.irq
    }

    /// Asks the guest for its process table: raises the request IRQ. The answer is signalled on
    /// [`GuestChannel::answered`] and read with [`GuestChannel::answer`]; the caller keeps the deadline
    /// ([`ANSWER_TIMEOUT`]), so the VMM thread never waits here.
    pub fn request(&self) -> Result<(), IntrospectError> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.buffer.is_none() {
            return Err(IntrospectError::Guest(
                "the guest kernel has not registered an introspection channel".into(),
            ));
        }
        self.irq
            .write(1)
            .map_err(|e| IntrospectError::Guest(format!("cannot raise the request IRQ: {e}")))
    }

    /// Becomes readable when the guest has answered (the doorbell).
    pub fn answered(&self) -> &EventFd {
        &self.answered
    }

    /// Reads and checks the guest's answer buffer; `None` while the guest is writing a newer answer
    /// (no magic, or the header changed during the read: its doorbell will come).
    pub fn answer(&self, mem: &GuestMemoryMmap) -> Result<Option<ProcessList>, IntrospectError> {
        let guest = |m: String| IntrospectError::Guest(m);
        let buffer = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .buffer
            .ok_or_else(|| {
                guest("the guest kernel has not registered an introspection channel".into())
            })?;
        let mut raw = vec![0u8; BUF_SIZE];
        mem.read_slice(&mut raw, GuestAddress(buffer))
            .map_err(|_| {
                guest(format!(
                    "the registered buffer {buffer:#x} is not guest RAM"
                ))
            })?;
        let mut again = [0u8; 16];
        let reread = mem.read_slice(&mut again, GuestAddress(buffer));
        if u32_at(&raw, 0) == 0 || reread.is_err() || again[..] != raw[..16] {
            return Ok(None);
        }
        parse(&raw).map(Some).map_err(guest)
    }

    /// The registered buffer, for a snapshot.
    pub fn save(&self) -> Option<u64> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).buffer
    }

    /// Takes a snapshot's registration (the buffer is in the restored guest memory).
    pub fn restore(&self, buffer: Option<u64>) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).buffer = buffer;
    }
}

/// The timeout's message.
pub fn timeout_error() -> IntrospectError {
    IntrospectError::Guest(format!(
        "the guest did not answer within {} ms",
        ANSWER_TIMEOUT.as_millis()
    ))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses and checks the guest's answer buffer.
pub fn parse(raw: &[u8]) -> Result<ProcessList, String> {
    if raw.len() < HEADER {
        return Err("the answer is shorter than its header".into());
    }
    if u32_at(raw, 0) != MAGIC {
        return Err(format!(
            "bad magic {:#x} in the guest's answer",
            u32_at(raw, 0)
        ));
    }
    if u32_at(raw, 4) != VERSION {
        return Err(format!("unknown answer version {}", u32_at(raw, 4)));
    }
    let (count, total, size) = (u32_at(raw, 16), u32_at(raw, 20), u32_at(raw, 24));
    if size as usize != RECORD {
        return Err(format!("record size {size}, expected {RECORD}"));
    }
    let capacity = (raw.len() - HEADER) / RECORD;
    if count as usize > capacity {
        return Err(format!(
            "{count} records claimed, the buffer holds {capacity}"
        ));
    }
    let mut processes = Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        let r = &raw[HEADER + i * RECORD..HEADER + (i + 1) * RECORD];
        let state = match r[12] {
            c @ (b'R' | b'S' | b'D' | b'T' | b'Z') => (c as char).to_string(),
            c => return Err(format!("record {i}: unknown state byte {c:#x}")),
        };
        let comm = &r[72..88];
        let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
        processes.push(GuestProcess {
            pid: u32_at(r, 0),
            tgid: u32_at(r, 4),
            ppid: u32_at(r, 8),
            state,
            nice: u32_at(r, 16) as i32,
            vruntime_ns: u64_at(r, 24),
            utime_ns: u64_at(r, 32),
            stime_ns: u64_at(r, 40),
            vsize: u64_at(r, 56),
            rss_pages: u64_at(r, 64),
            command: String::from_utf8_lossy(&comm[..end]).into_owned(),
        });
    }
    Ok(ProcessList {
        truncated: total > count,
        total: total.max(count),
        processes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(records: &[(u32, u8, &str)], total: u32) -> Vec<u8> {
        let mut b = vec![0u8; BUF_SIZE];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&VERSION.to_le_bytes());
        b[16..20].copy_from_slice(&(records.len() as u32).to_le_bytes());
        b[20..24].copy_from_slice(&total.to_le_bytes());
        b[24..28].copy_from_slice(&(RECORD as u32).to_le_bytes());
        for (i, (pid, state, comm)) in records.iter().enumerate() {
            let r = &mut b[HEADER + i * RECORD..HEADER + (i + 1) * RECORD];
            r[0..4].copy_from_slice(&pid.to_le_bytes());
            r[4..8].copy_from_slice(&pid.to_le_bytes());
            r[8..12].copy_from_slice(&1u32.to_le_bytes());
            r[12] = *state;
            r[16..20].copy_from_slice(&(-5i32).to_le_bytes());
            r[24..32].copy_from_slice(&77u64.to_le_bytes());
            r[72..72 + comm.len()].copy_from_slice(comm.as_bytes());
        }
        b
    }

    #[test]
    fn answers_parse_and_garbage_is_refused() {
        let l = parse(&answer(&[(1, b'S', "init"), (7, b'Z', "zombie")], 2)).unwrap();
        assert_eq!(l.processes.len(), 2);
        assert_eq!(l.processes[1].state, "Z");
        assert_eq!(l.processes[1].command, "zombie");
        assert_eq!((l.processes[0].nice, l.processes[0].vruntime_ns), (-5, 77));
        assert!(!l.truncated);
        assert!(parse(&answer(&[(1, b'R', "a")], 300)).unwrap().truncated);
        let mut bad = answer(&[(1, b'Q', "x")], 1);
        assert!(parse(&bad).unwrap_err().contains("state byte"));
        bad = answer(&[], 0);
        bad[16..20].copy_from_slice(&1000u32.to_le_bytes());
        assert!(parse(&bad).unwrap_err().contains("1000 records"));
        bad = answer(&[], 0);
        bad[0] = 0;
        assert!(parse(&bad).unwrap_err().contains("magic"));
        bad = answer(&[], 0);
        bad[24] = 8;
        assert!(parse(&bad).unwrap_err().contains("record size"));
        assert!(parse(&[0; 10]).is_err());
        // A command without its NUL is cut at 16 bytes, not read past.
        let mut b = answer(&[(1, b'R', "")], 1);
        b[HEADER + 72..HEADER + 88].fill(b'x');
        assert_eq!(parse(&b).unwrap().processes[0].command.len(), 16);
    }

    #[test]
    fn the_port_registers_and_rings() {
        let efd = || EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let ch = Arc::new(GuestChannel::new(efd(), efd()));
        let mut port = ChannelPort(ch.clone());
        let mut sig = [0u8];
        port.read(DOORBELL, &mut sig);
        assert_eq!(sig[0], SIGNATURE);
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        assert!(ch
            .request()
            .unwrap_err()
            .to_string()
            .contains("not registered"));
        assert!(ch.save().is_none());
        for (i, b) in 0x8000u64.to_le_bytes().iter().enumerate() {
            port.write(i as u64, &[*b]);
        }
        mem.write_slice(&answer(&[(1, b'S', "init")], 1), GuestAddress(0x8000))
            .unwrap();
        ch.request().unwrap();
        assert_eq!(ch.irq().read().unwrap(), 1);
        assert!(ch.answered().read().is_err(), "no answer yet");
        port.write(DOORBELL, &[1]);
        assert_eq!(ch.answered().read().unwrap(), 1);
        assert_eq!(
            ch.answer(&mem).unwrap().unwrap().processes[0].command,
            "init"
        );
        // An answer being written (no magic yet) is not read.
        mem.write_obj(0u32, GuestAddress(0x8000)).unwrap();
        assert!(ch.answer(&mem).unwrap().is_none());
        mem.write_slice(&answer(&[(1, b'S', "init")], 1), GuestAddress(0x8000))
            .unwrap();
        // A snapshot keeps the registration.
        let other = GuestChannel::new(efd(), efd());
        other.restore(ch.save());
        assert_eq!(other.answer(&mem).unwrap().unwrap().processes.len(), 1);
        assert!(timeout_error().to_string().contains("did not answer"));
    }
}
