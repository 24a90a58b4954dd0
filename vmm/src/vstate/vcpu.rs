//! vCPUs: boot-time configuration (CPUID, MSRs, registers, FPU, LAPIC LINT pins) and the run loop, one
//! thread each.
//!
//! The run loop dispatches port and MMIO exits to the buses and turns every other exit into a decision:
//! go on, or end the VM with a status. A vCPU stops when the VMM sets its `stop` flag and kicks the thread
//! with [`KICK_SIGNAL`], which makes a blocked `KVM_RUN` return `EINTR`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_regs, kvm_sregs, CpuId, Msrs};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress};

use super::vcpu_state::{self, VcpuState, VcpuStateError};
use crate::arch::x86_64::{cpuid, msr, regs};
use crate::boot::symbols::SymbolTable;
use devices::bus::Bus;
use devices::legacy::ExitSignal;
use devices::GuestMemoryMmap;

/// Exit status when the guest dies (triple fault, emulation failure, failed entry).
pub const GUEST_CRASH_EXIT_CODE: i32 = 2;
/// The real-time signal that kicks a vCPU thread out of `KVM_RUN`.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}
/// LAPIC register offsets and delivery modes.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0b100;
const APIC_MODE_EXTINT: u32 = 0b111;
/// Longest x86 instruction.
const MAX_INSN_LEN: usize = 15;
/// KVM_INTERNAL_ERROR_EMULATION.
const INTERNAL_ERROR_EMULATION: u32 = 1;

/// The vCPUs cannot be saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("the vCPUs are not paused")]
    NotPaused,
    #[error("the vCPUs did not save their state in time")]
    Timeout,
    #[error(transparent)]
    Vcpu(VcpuStateError),
}

/// A vCPU cannot be configured.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("cannot create vCPU {0}: {1}")]
    Create(u8, #[source] kvm_ioctls::Error),
    #[error("KVM_GET_SUPPORTED_CPUID failed: {0}")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
    #[error("vCPU {0}: cannot set {1}: {2}")]
    Set(u8, &'static str, #[source] kvm_ioctls::Error),
    #[error("vCPU {0}: KVM accepted only {1} of {2} boot MSRs")]
    Msrs(u8, usize, usize),
}

/// CPUID as KVM supports it, read once and filtered per vCPU.
pub fn supported_cpuid(kvm: &Kvm) -> Result<CpuId, VcpuError> {
    kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(VcpuError::SupportedCpuid)
}

/// Creates vCPU `id` and sets what does not depend on the kernel: CPUID, MSRs, FPU and LAPIC. The
/// registers follow with [`set_boot_registers`] once the kernel's entry is known.
pub fn create(vm: &VmFd, id: u8, count: u8, base_cpuid: &CpuId) -> Result<VcpuFd, VcpuError> {
    let fd = create_bare(vm, id)?;
    let set = |what, e| VcpuError::Set(id, what, e);

    let mut cpuid = base_cpuid.clone();
    if cpuid::filter(cpuid.as_mut_slice(), id, count) {
        // A full table cannot take the leaf; the guest then simply sees no hypervisor signature.
        let _ = cpuid.push(cpuid::hypervisor_leaf());
    }
    fd.set_cpuid2(&cpuid).map_err(|e| set("CPUID", e))?;

    let entries = msr::boot_msrs();
    let msrs = Msrs::from_entries(&entries).expect("the boot MSR list fits a kvm_msrs");
    let n = fd.set_msrs(&msrs).map_err(|e| set("MSRs", e))?;
    if n != entries.len() {
        return Err(VcpuError::Msrs(id, n, entries.len()));
    }
    fd.set_fpu(&regs::boot_fpu()).map_err(|e| set("FPU", e))?;

    let mut lapic = fd.get_lapic().map_err(|e| set("LAPIC", e))?;
    set_lvt_mode(&mut lapic.regs, APIC_LVT0, APIC_MODE_EXTINT);
    set_lvt_mode(&mut lapic.regs, APIC_LVT1, APIC_MODE_NMI);
    fd.set_lapic(&lapic).map_err(|e| set("LAPIC", e))?;
    Ok(fd)
}

/// Creates vCPU `id` and sets nothing (a restore then puts it in its saved state).
pub fn create_bare(vm: &VmFd, id: u8) -> Result<VcpuFd, VcpuError> {
    vm.create_vcpu(u64::from(id))
        .map_err(|e| VcpuError::Create(id, e))
}

/// Sets vCPU `id`'s general and segment registers for the kernel's entry.
pub fn set_boot_registers(fd: &VcpuFd, id: u8, entry: regs::EntryState) -> Result<(), VcpuError> {
    let set = |what, e| VcpuError::Set(id, what, e);
    fd.set_regs(&regs::boot_regs(entry))
        .map_err(|e| set("registers", e))?;
    let sregs = fd.get_sregs().map_err(|e| set("segment registers", e))?;
    fd.set_sregs(&regs::boot_sregs(entry, sregs))
        .map_err(|e| set("segment registers", e))?;
    Ok(())
}

/// Sets the delivery mode (bits 8-10) of the LVT register at `offset` of a LAPIC register page.
fn set_lvt_mode(regs: &mut [libc::c_char], offset: usize, mode: u32) {
    let mut raw = [0u8; 4];
    for (b, r) in raw.iter_mut().zip(&regs[offset..offset + 4]) {
        *b = *r as u8;
    }
    let value = (u32::from_le_bytes(raw) & !0x700) | (mode << 8);
    for (r, b) in regs[offset..offset + 4].iter_mut().zip(value.to_le_bytes()) {
        *r = b as libc::c_char;
    }
}

/// Counts unhandled accesses so that a guest probing many ports cannot flood the log: the first few are
/// logged, then only every power of two.
#[derive(Default)]
struct RateLimit(AtomicU64);

impl RateLimit {
    fn allow(&self) -> bool {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        n <= 8 || n.is_power_of_two()
    }
}

/// Pauses and resumes the vCPU threads of one VM.
#[derive(Default)]
pub struct PauseControl {
    /// Fast-path copy of `state.paused`, read after every exit.
    requested: AtomicBool,
    state: Mutex<PauseState>,
    cv: Condvar,
}

#[derive(Default)]
struct PauseState {
    /// Bumped by [`PauseControl::save_vcpus`]: each parked thread that sees a new round saves its vCPU.
    save_round: u64,
    /// The MSRs to save (`KVM_GET_MSR_INDEX_LIST`).
    save_msrs: Arc<Vec<u32>>,
    /// The saved states of this round.
    saved: Vec<Result<VcpuState, VcpuStateError>>,
    paused: bool,
    /// vCPU threads parked right now.
    parked: usize,
    /// vCPU threads that have left their run loop (and closed their vCPU).
    exited: usize,
}

impl PauseControl {
    /// Asks the vCPUs to park (`true`) or to go on (`false`). Parking needs a kick out of `KVM_RUN` as well.
    pub fn set_paused(&self, paused: bool) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.paused = paused;
        self.requested.store(paused, Ordering::Release);
        self.cv.notify_all();
    }

    /// Whether a pause is requested.
    pub fn is_paused(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// How many vCPU threads are parked.
    pub fn parked(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).parked
    }

    /// Waits up to `timeout` on the condition variable until `done` holds for the pause state; returns
    /// whether it does.
    fn wait_until(&self, timeout: Duration, done: impl Fn(&PauseState) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !done(&s) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self
                .cv
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Waits up to `timeout` for `n` parked threads; returns whether they are.
    pub fn wait_parked(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.parked >= n)
    }

    /// Called by a vCPU thread once its run loop has ended and its vCPU is closed: wakes
    /// [`PauseControl::wait_exited`].
    pub fn thread_exited(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.exited += 1;
        self.cv.notify_all();
    }

    /// Waits up to `timeout` for `n` vCPU threads to have exited; returns whether they have. The VMM thread
    /// sleeps here until the last one is done (no polling).
    pub fn wait_exited(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.exited >= n)
    }

    /// Has each of the `n` parked vCPU threads save its vCPU (for a snapshot); the states in vCPU order.
    pub fn save_vcpus(
        &self,
        n: usize,
        msr_indices: Vec<u32>,
        timeout: Duration,
    ) -> Result<Vec<VcpuState>, SaveError> {
        let deadline = Instant::now() + timeout;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !s.paused || s.parked < n {
            return Err(SaveError::NotPaused);
        }
        s.saved.clear();
        s.save_msrs = Arc::new(msr_indices);
        s.save_round += 1;
        self.cv.notify_all();
        while s.saved.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SaveError::Timeout);
            }
            s = self
                .cv
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let mut states = std::mem::take(&mut s.saved)
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(SaveError::Vcpu)?;
        states.sort_by_key(|v| v.id);
        Ok(states)
    }

    /// Wakes parked threads so that they see a stop request.
    pub fn wake_all(&self) {
        let _s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.cv.notify_all();
    }

    /// Parks the calling vCPU thread while a pause is requested and `stop` is not set; saves its vCPU
    /// with `save` whenever [`PauseControl::save_vcpus`] asks.
    fn park_while_paused(
        &self,
        id: u8,
        stop: &AtomicBool,
        mut save: impl FnMut(&[u32]) -> Result<VcpuState, VcpuStateError>,
    ) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !s.paused || stop.load(Ordering::Acquire) {
            return;
        }
        let mut round = s.save_round;
        s.parked += 1;
        log::debug!("vCPU {id} paused");
        self.cv.notify_all();
        while s.paused && !stop.load(Ordering::Acquire) {
            if s.save_round != round {
                round = s.save_round;
                let msrs = s.save_msrs.clone();
                let state = save(&msrs);
                s.saved.push(state);
                self.cv.notify_all();
                continue;
            }
            // The timeout only guards against a missed wake-up; the VMM notifies on resume and stop.
            s = self
                .cv
                .wait_timeout(s, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        s.parked -= 1;
        log::debug!("vCPU {id} resumed");
        self.cv.notify_all();
    }
}

/// Everything a vCPU thread needs.
pub struct Vcpu {
    pub id: u8,
    pub fd: VcpuFd,
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub mem: GuestMemoryMmap,
    pub exit: Arc<ExitSignal>,
    pub stop: Arc<AtomicBool>,
    /// Pause requests from the VMM thread.
    pub pause: Arc<PauseControl>,
    /// The kernel file, for naming the function a failing RIP is in (opened before the vCPU thread's
    /// seccomp filter, which allows no `open`).
    pub kernel_file: Option<std::fs::File>,
    /// When the process started, for the first-KVM_RUN timing of `--boot-timer`.
    pub start: std::time::Instant,
}

/// What the run loop does after an exit.
enum Next {
    Continue,
    /// End the VM with this status.
    Stop(i32),
    /// The guest died: report where, then end the VM with [`GUEST_CRASH_EXIT_CODE`].
    Crash,
}

static UNHANDLED: RateLimit = RateLimit(AtomicU64::new(0));

impl Vcpu {
    /// Runs the vCPU until the VM ends or the VMM stops it.
    pub fn run(mut self) {
        if self.id == 0 {
            log::info!(
                target: "boot_timer",
                "first KVM_RUN: {} us since process start (CLOCK_MONOTONIC {} ns)",
                self.start.elapsed().as_micros(),
                monotonic_ns()
            );
        }
        while !self.stop.load(Ordering::Acquire) {
            if self.pause.is_paused() {
                let (id, fd) = (self.id, &mut self.fd);
                self.pause.park_while_paused(self.id, &self.stop, |msrs| {
                    // Complete an I/O exit the VMM already answered, without entering the guest.
                    fd.set_kvm_immediate_exit(1);
                    let _ = fd.run();
                    fd.set_kvm_immediate_exit(0);
                    vcpu_state::save(fd, id, msrs)
                });
                continue;
            }
            let next = match self.fd.run() {
                Ok(exit) => handle_exit(self.id, exit, &self.pio, &self.mmio),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Next::Continue,
                Err(e) => {
                    log::error!("vCPU {}: KVM_RUN failed: {e}", self.id);
                    Next::Stop(GUEST_CRASH_EXIT_CODE)
                }
            };
            match next {
                Next::Continue => {}
                Next::Stop(code) => {
                    self.exit.request(code);
                    break;
                }
                Next::Crash => {
                    self.report_crash();
                    self.exit.request(GUEST_CRASH_EXIT_CODE);
                    break;
                }
            }
            // A device on this vCPU (debug-exit, i8042) may have ended the VM.
            if self.exit.is_requested() {
                break;
            }
        }
        log::debug!("vCPU {} stopped", self.id);
    }

    /// Prints why the guest died, where, and its registers.
    fn report_crash(&mut self) {
        let id = self.id;
        let regs = self.fd.get_regs().unwrap_or_default();
        let sregs = self.fd.get_sregs().unwrap_or_default();
        let reason = self.fd.get_kvm_run().exit_reason;
        let cpl = sregs.cs.selector & 3;
        let symbol = self
            .kernel_file
            .as_ref()
            .and_then(SymbolTable::read)
            .and_then(|t| t.describe(regs.rip))
            .map(|s| format!(" <{s}>"))
            .unwrap_or_default();
        let insn = self.instruction_bytes(&sregs, regs.rip);
        let what = if reason == kvm_bindings::KVM_EXIT_INTERNAL_ERROR {
            // SAFETY: the exit reason says the `internal` member of the union is the valid one.
            let internal = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal };
            let kind = if internal.suberror == INTERNAL_ERROR_EMULATION {
                " (instruction emulation failed)"
            } else {
                ""
            };
            format!(
                "KVM_EXIT_INTERNAL_ERROR suberror {}{kind}",
                internal.suberror
            )
        } else if reason == kvm_bindings::KVM_EXIT_SHUTDOWN {
            "shutdown (triple fault)".to_string()
        } else if reason == kvm_bindings::KVM_EXIT_FAIL_ENTRY {
            // SAFETY: the exit reason says the `fail_entry` member of the union is the valid one.
            let fail = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.fail_entry };
            format!(
                "KVM_EXIT_FAIL_ENTRY reason {:#x}",
                fail.hardware_entry_failure_reason
            )
        } else {
            format!("exit reason {reason}")
        };
        log::error!(
            "vCPU {id}: guest crashed: {what} at RIP {:#x}{symbol} CPL {cpl}, instruction bytes: {insn}",
            regs.rip
        );
        log::error!("vCPU {id} registers:\n{}", format_regs(&regs, &sregs));
    }

    /// The bytes at CS:RIP, as hex, or why they cannot be read.
    fn instruction_bytes(&self, sregs: &kvm_sregs, rip: u64) -> String {
        let linear = sregs.cs.base.wrapping_add(rip);
        let mut bytes = Vec::with_capacity(MAX_INSN_LEN);
        // The instruction may cross a page: translate each page separately.
        while bytes.len() < MAX_INSN_LEN {
            let addr = linear + bytes.len() as u64;
            let Ok(t) = self.fd.translate_gva(addr) else {
                break;
            };
            if t.valid == 0 {
                break;
            }
            let in_page = (0x1000 - (addr & 0xfff)) as usize;
            let want = in_page.min(MAX_INSN_LEN - bytes.len());
            let mut chunk = vec![0u8; want];
            if self
                .mem
                .read_slice(&mut chunk, GuestAddress(t.physical_address))
                .is_err()
            {
                break;
            }
            bytes.extend(chunk);
        }
        if bytes.is_empty() {
            return "unreadable".into();
        }
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn handle_exit(id: u8, exit: VcpuExit, pio: &Bus, mmio: &Bus) -> Next {
    match exit {
        VcpuExit::IoIn(port, data) => {
            if !pio.read(u64::from(port), data) {
                if UNHANDLED.allow() {
                    log::debug!("vCPU {id}: unhandled read of port {port:#x}");
                }
                data.fill(0xff);
            }
            Next::Continue
        }
        VcpuExit::IoOut(port, data) => {
            if !pio.write(u64::from(port), data) && UNHANDLED.allow() {
                log::debug!("vCPU {id}: unhandled write of {data:02x?} to port {port:#x}");
            }
            Next::Continue
        }
        VcpuExit::MmioRead(addr, data) => {
            if !mmio.read(addr, data) {
                if UNHANDLED.allow() {
                    log::debug!("vCPU {id}: unhandled MMIO read at {addr:#x}");
                }
                data.fill(0xff);
            }
            Next::Continue
        }
        VcpuExit::MmioWrite(addr, data) => {
            if !mmio.write(addr, data) && UNHANDLED.allow() {
                log::debug!("vCPU {id}: unhandled MMIO write of {data:02x?} at {addr:#x}");
            }
            Next::Continue
        }
        VcpuExit::Hlt => {
            log::info!("vCPU {id} halted");
            Next::Stop(0)
        }
        VcpuExit::SystemEvent(kind, _) => match kind {
            kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN | kvm_bindings::KVM_SYSTEM_EVENT_RESET => {
                log::info!("vCPU {id}: guest requested shutdown or reset");
                Next::Stop(0)
            }
            other => {
                log::error!("vCPU {id}: guest system event {other} (crash)");
                Next::Stop(GUEST_CRASH_EXIT_CODE)
            }
        },
        VcpuExit::Shutdown | VcpuExit::InternalError | VcpuExit::FailEntry(..) => Next::Crash,
        VcpuExit::Intr | VcpuExit::IrqWindowOpen => Next::Continue,
        other => {
            log::error!("vCPU {id}: unexpected exit {other:?}");
            Next::Crash
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds, comparable with other processes' clocks (for benchmarks).
fn monotonic_ns() -> u128 {
    // SAFETY: timespec is plain data filled by clock_gettime.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

/// A register dump in the usual layout.
pub fn format_regs(r: &kvm_regs, s: &kvm_sregs) -> String {
    format!(
        "  rip {:016x} rsp {:016x} rflags {:016x}\n  \
         rax {:016x} rbx {:016x} rcx {:016x} rdx {:016x}\n  \
         rsi {:016x} rdi {:016x} rbp {:016x} r8  {:016x}\n  \
         r9  {:016x} r10 {:016x} r11 {:016x} r12 {:016x}\n  \
         r13 {:016x} r14 {:016x} r15 {:016x}\n  \
         cs {:04x} ss {:04x} cr0 {:x} cr2 {:x} cr3 {:x} cr4 {:x} efer {:x}",
        r.rip,
        r.rsp,
        r.rflags,
        r.rax,
        r.rbx,
        r.rcx,
        r.rdx,
        r.rsi,
        r.rdi,
        r.rbp,
        r.r8,
        r.r9,
        r.r10,
        r.r11,
        r.r12,
        r.r13,
        r.r14,
        r.r15,
        s.cs.selector,
        s.ss.selector,
        s.cr0,
        s.cr2,
        s.cr3,
        s.cr4,
        s.efer
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvt_mode_keeps_other_bits() {
        let mut regs = [0 as libc::c_char; 1024];
        regs[APIC_LVT0] = 0x30;
        regs[APIC_LVT0 + 2] = 1; // The mask bit (16).
        set_lvt_mode(&mut regs, APIC_LVT0, APIC_MODE_EXTINT);
        assert_eq!(regs[APIC_LVT0] as u8, 0x30);
        assert_eq!(regs[APIC_LVT0 + 1] as u8, 0x07);
        assert_eq!(regs[APIC_LVT0 + 2] as u8, 1);
    }

    #[test]
    fn vcpus_park_while_paused_and_leave_on_stop() {
        let pause = Arc::new(PauseControl::default());
        let stop = Arc::new(AtomicBool::new(false));
        pause.set_paused(true);
        let threads: Vec<_> = (0..2)
            .map(|id| {
                let (p, s) = (pause.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut rounds = 0;
                    p.park_while_paused(id, &s, |msrs| {
                        // Each parked thread saves once per round, with the MSR list asked for.
                        rounds += 1;
                        assert_eq!(msrs, [0x10]);
                        Err(VcpuStateError::Table(id))
                    });
                    rounds
                })
            })
            .collect();
        assert!(pause.wait_parked(2, Duration::from_secs(5)));
        // A save round reaches every parked thread and their errors come back.
        let r = pause.save_vcpus(2, vec![0x10], Duration::from_secs(5));
        assert!(matches!(r, Err(SaveError::Vcpu(VcpuStateError::Table(_)))));
        // Asking for more vCPUs than are parked is refused at once.
        let r = pause.save_vcpus(3, vec![], Duration::from_secs(5));
        assert!(matches!(r, Err(SaveError::NotPaused)));
        pause.set_paused(false);
        for t in threads {
            assert_eq!(t.join().unwrap(), 1);
        }
        assert_eq!(pause.parked(), 0);
        assert!(matches!(
            pause.save_vcpus(1, vec![], Duration::from_secs(1)),
            Err(SaveError::NotPaused)
        ));
        // Parked, then stopped: the thread leaves without a resume.
        pause.set_paused(true);
        let (p, s) = (pause.clone(), stop.clone());
        let t = std::thread::spawn(move || {
            p.park_while_paused(0, &s, |_| Err(VcpuStateError::Table(0)))
        });
        assert!(pause.wait_parked(1, Duration::from_secs(5)));
        stop.store(true, Ordering::Release);
        pause.wake_all();
        t.join().unwrap();
        assert!(!pause.wait_parked(1, Duration::from_millis(10)));
    }

    #[test]
    fn rate_limit_logs_the_first_few_then_powers_of_two() {
        let r = RateLimit::default();
        let allowed: Vec<bool> = (0..20).map(|_| r.allow()).collect();
        assert!(allowed[..8].iter().all(|a| *a));
        assert!(!allowed[8]); // 9th
        assert!(allowed[15]); // 16th
        assert!(!allowed[16]);
    }
}
