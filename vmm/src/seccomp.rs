//! Seccomp filters: one allowlist per kind of thread, installed by each thread before it touches input from
//! the guest or an API client.
//!
//! The table is `vmm/resources/seccomp/x86_64.json` (seccompiler's JSON format, the one
//! Firecracker's `resources/seccomp/*.json` use). `build.rs` compiles it to BPF with rust-vmm's
//! `seccompiler` at build time; [`init`] loads it (or, with `--seccomp-filter FILE`, compiles FILE at start,
//! or with `--no-seccomp` nothing) and installs the SIGSYS handler. Each thread then calls [`apply`] with its
//! kind:
//!
//! | kind | thread | installed |
//! |---|---|---|
//! | `vmm` | the main thread: event loop, devices, API actions, snapshots | after the vCPU threads started, before the event loop runs |
//! | `api` | the API's accept thread, inherited by its per-connection threads | before it accepts a connection |
//! | `vcpu` | each vCPU thread | before the first `KVM_RUN` |
//! | `blk_io` | the virtio-blk `threads` engine's workers (started by the VMM thread, so `vmm` is under it too) | before the first request |
//!
//! The set-up threads (`kvm-open`, `kvm-setup`) take no filter: they end before the VM runs and read no
//! guest or client input.
//!
//! A denied syscall raises SIGSYS (`SECCOMP_RET_TRAP`); the handler writes one line naming the thread kind
//! and the syscall number and exits with [`BAD_SYSCALL_EXIT`] (148, as Firecracker).
//!
//! ## Adding a syscall
//! Every test boots VMs with the filters on, so a new syscall shows up as a test failing with
//! `microvm: seccomp: the <kind> thread made syscall N ...` and status 148. Find the name
//! (`ausyscall N`, or `grep -w N /usr/include/x86_64-linux-gnu/asm/unistd_64.h`), add a rule to that
//! kind's `filter` list in the JSON (restrict its arguments as the neighbouring rules do: an ioctl by its
//! request number, fcntl by command, mmap by flags), with a `comment` saying who needs it, and rebuild.
//! A syscall made by a thread of kind `blk_io` must be allowed in `vmm` too (the filters stack).

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use seccompiler::{sock_filter, BpfProgram};

/// The exit status after a denied syscall.
pub const BAD_SYSCALL_EXIT: i32 = 148;

/// The kinds of thread that take a filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    Vmm,
    Api,
    Vcpu,
    BlkIo,
}

impl ThreadKind {
    /// Every kind, in the order of [`Filters`].
    pub const ALL: [ThreadKind; 4] = [
        ThreadKind::Vmm,
        ThreadKind::Api,
        ThreadKind::Vcpu,
        ThreadKind::BlkIo,
    ];

    /// The kind's key in the JSON table.
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Vmm => "vmm",
            ThreadKind::Api => "api",
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::BlkIo => "blk_io",
        }
    }
}

/// Where the filters come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilterSource {
    /// The table built into the binary.
    Default,
    /// `--no-seccomp`: no filter at all.
    Disabled,
    /// `--seccomp-filter FILE`: a JSON table in the built-in one's format.
    File(PathBuf),
}

/// Why the filters could not be loaded or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp filter file {0}: {1}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("seccomp filter file {0}: {1}")]
    Compile(PathBuf, #[source] seccompiler::Error),
    #[error("seccomp filter file {0}: no filter for the \"{1}\" threads")]
    Missing(PathBuf, &'static str),
    #[error(
        "seccomp filter file {0}: unknown thread kind \"{1}\" (known: vmm, api, vcpu, blk_io)"
    )]
    Unknown(PathBuf, String),
    #[error("cannot install the SIGSYS handler: {0}")]
    Handler(#[source] std::io::Error),
    #[error("cannot install the seccomp filter of the {0} thread: {1}")]
    Install(&'static str, #[source] seccompiler::Error),
}

/// One BPF program per [`ThreadKind`], in the order of [`ThreadKind::ALL`].
#[derive(Debug)]
pub struct Filters([BpfProgram; 4]);

impl Filters {
    /// The program of `kind`.
    pub fn get(&self, kind: ThreadKind) -> &BpfProgram {
        &self.0[kind as usize]
    }

    /// The table compiled into the binary by `build.rs`.
    pub fn builtin() -> Self {
        let program = |kind: ThreadKind| -> BpfProgram {
            let (_, insns) = built::FILTERS
                .iter()
                .find(|(name, _)| *name == kind.name())
                .expect("build.rs checks that every kind has a filter");
            insns
                .iter()
                .map(|&(code, jt, jf, k)| sock_filter { code, jt, jf, k })
                .collect()
        };
        Filters(ThreadKind::ALL.map(program))
    }

    /// Compiles a JSON table (`path` only names it in errors).
    pub fn from_json(json: &[u8], path: &Path) -> Result<Self, SeccompError> {
        let mut map = seccompiler::compile_from_json(json, seccompiler::TargetArch::x86_64)
            .map_err(|e| SeccompError::Compile(path.to_owned(), e))?;
        let mut programs = Vec::with_capacity(ThreadKind::ALL.len());
        for kind in ThreadKind::ALL {
            let program = map
                .remove(kind.name())
                .ok_or(SeccompError::Missing(path.to_owned(), kind.name()))?;
            programs.push(program);
        }
        if let Some(name) = map.into_keys().next() {
            return Err(SeccompError::Unknown(path.to_owned(), name));
        }
        let programs: [BpfProgram; 4] = programs.try_into().expect("one per kind");
        Ok(Filters(programs))
    }

    /// How many syscalls each kind's filter names (a syscall with several argument rules counts once).
    pub fn json_counts(json: &str) -> Result<Vec<(String, usize)>, serde_json::Error> {
        let table: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json)?;
        Ok(table
            .iter()
            .map(|(kind, f)| {
                let mut names: Vec<&str> = f["filter"]
                    .as_array()
                    .map(|rules| rules.iter().filter_map(|r| r["syscall"].as_str()).collect())
                    .unwrap_or_default();
                names.sort_unstable();
                names.dedup();
                (kind.clone(), names.len())
            })
            .collect())
    }
}

/// The built-in table's JSON text.
pub const BUILTIN_JSON: &str = include_str!("../resources/seccomp/x86_64.json");

mod built {
    include!(concat!(env!("OUT_DIR"), "/seccomp_filters.rs"));
}

/// The filters of this process: `None` until [`init`], `Some(None)` with `--no-seccomp`.
static FILTERS: OnceLock<Option<Filters>> = OnceLock::new();

thread_local! {
    /// The kind of the filter this thread installed last, for the SIGSYS handler (a const-initialized
    /// `Cell` of a `&'static str`: reading it allocates nothing and registers no destructor).
    static KIND: Cell<&'static str> = const { Cell::new("unfiltered") };
}

/// Loads the filters, installs the SIGSYS handler and has the devices' I/O threads apply theirs. Call once,
/// before any thread that takes a filter starts.
pub fn init(source: &FilterSource) -> Result<(), SeccompError> {
    let filters = match source {
        FilterSource::Disabled => None,
        FilterSource::Default => Some(Filters::builtin()),
        FilterSource::File(path) => {
            let json = std::fs::read(path).map_err(|e| SeccompError::Read(path.clone(), e))?;
            Some(Filters::from_json(&json, path)?)
        }
    };
    if filters.is_some() {
        fix_malloc_arena_limit();
        install_sigsys_handler()?;
        devices::set_io_thread_start(blk_io_start);
    }
    let _ = FILTERS.set(filters);
    Ok(())
}

/// Installs `kind`'s filter on the calling thread (nothing without [`init`] or with `--no-seccomp`).
pub fn apply(kind: ThreadKind) -> Result<(), SeccompError> {
    let Some(Some(filters)) = FILTERS.get() else {
        return Ok(());
    };
    KIND.with(|k| k.set(kind.name()));
    seccompiler::apply_filter(filters.get(kind)).map_err(|e| SeccompError::Install(kind.name(), e))
}

/// Names the filter a thread inherited from the thread that started it (`kind`'s), for the SIGSYS
/// handler's line: API connection threads run under the accept thread's `api` filter without installing
/// one of their own. Makes no system call.
pub fn inherited(kind: ThreadKind) {
    KIND.with(|k| k.set(kind.name()));
}

/// The first thing a virtio-blk worker does. A worker cannot run unfiltered, and cannot hand an error back:
/// on failure it ends the process (this needs only `seccomp` to fail, which the `vmm` filter allows).
fn blk_io_start() {
    if let Err(e) = apply(ThreadKind::BlkIo) {
        log::error!("{e}");
        // SAFETY: _exit ends the process at once; nothing of ours is left in an inconsistent state that
        // matters after it.
        unsafe { libc::_exit(1) };
    }
}

/// glibc's malloc computes its arena limit the first time a thread needs a ninth arena, reading
/// `/sys/devices/system/cpu/online` from whichever thread that is (a filtered one, which may not open
/// files). Setting the limit now means it never reads it: 64, glibc's own default (8 per CPU) for 8 CPUs,
/// a constant so that start-up reads nothing either.
#[cfg(target_env = "gnu")]
const MALLOC_ARENAS: i32 = 64;

/// The same kind of read: when a thread's free leaves more than the trim threshold at the top of a
/// per-thread arena's heap, glibc shrinks the heap, and the first time it does it opens
/// `/proc/sys/vm/overcommit_memory` (`check_may_shrink_heap`), from whichever thread freed: an API
/// connection thread dropping a large answer (a `GET /guest/trace` of 1024 events) was killed for that
/// `openat`. Heaps of per-thread arenas are at most 64 MiB, so a threshold of 1 GiB means they are never
/// shrunk (large blocks are mmapped and unmapped on free as before: a fixed threshold also keeps the
/// mmap threshold at its 128 KiB default).
#[cfg(target_env = "gnu")]
const MALLOC_TRIM_THRESHOLD: i32 = 1 << 30;

/// glibc only: musl's malloc (the static build that ships) has no arenas and reads no file.
#[cfg(target_env = "gnu")]
fn fix_malloc_arena_limit() {
    // SAFETY: mallopt only sets malloc tunables.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        libc::mallopt(libc::M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD);
    }
}

#[cfg(not(target_env = "gnu"))]
fn fix_malloc_arena_limit() {}

fn install_sigsys_handler() -> Result<(), SeccompError> {
    // SAFETY: a zeroed sigaction is a valid value (no flags, empty mask) that is filled in below.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = sigsys_handler as *const () as usize;
    act.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `act` is a valid sigaction whose handler only makes async-signal-safe calls.
    let r = unsafe { libc::sigaction(libc::SIGSYS, &act, std::ptr::null_mut()) };
    if r != 0 {
        return Err(SeccompError::Handler(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Offset of `si_syscall` in a SIGSYS `siginfo_t` on x86_64: after `si_signo`, `si_errno`, `si_code`, the
/// padding to 8 bytes and `si_call_addr`.
const SI_SYSCALL_OFFSET: usize = 24;

/// Writes `s` into `buf` at `*len`, as far as it fits.
fn push(buf: &mut [u8], len: &mut usize, s: &[u8]) {
    for &b in s {
        if *len < buf.len() {
            buf[*len] = b;
            *len += 1;
        }
    }
}

/// The line the SIGSYS handler writes, built without allocating.
fn violation_line(buf: &mut [u8; 192], kind: &str, nr: i32) -> usize {
    let mut len = 0;
    push(buf, &mut len, b"microvm: seccomp: the ");
    push(buf, &mut len, kind.as_bytes());
    push(buf, &mut len, b" thread made syscall ");
    let mut digits = [0u8; 12];
    let mut n = nr.unsigned_abs();
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if nr < 0 {
        push(buf, &mut len, b"-");
    }
    push(buf, &mut len, &digits[i..]);
    push(
        buf,
        &mut len,
        b", which its filter does not allow; exiting\n",
    );
    len
}

extern "C" fn sigsys_handler(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel hands the handler a valid siginfo; for SIGSYS (SA_SIGINFO) the int at
    // SI_SYSCALL_OFFSET is the syscall number (4-byte aligned inside the 8-byte-aligned struct).
    let nr = unsafe {
        info.cast::<u8>()
            .add(SI_SYSCALL_OFFSET)
            .cast::<i32>()
            .read()
    };
    let kind = KIND.with(Cell::get);
    let mut buf = [0u8; 192];
    let len = violation_line(&mut buf, kind, nr);
    // SAFETY: write and _exit are async-signal-safe; `buf[..len]` is initialized memory.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), len);
        libc::_exit(BAD_SYSCALL_EXIT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_has_every_kind_and_matches_the_json() {
        let filters = Filters::builtin();
        let compiled = Filters::from_json(BUILTIN_JSON.as_bytes(), Path::new("builtin")).unwrap();
        for kind in ThreadKind::ALL {
            assert!(!filters.get(kind).is_empty());
            assert_eq!(filters.get(kind), compiled.get(kind), "{kind:?}");
        }
    }

    #[test]
    fn bad_tables_are_refused() {
        let p = Path::new("f.json");
        assert!(matches!(
            Filters::from_json(b"{not json", p),
            Err(SeccompError::Compile(..))
        ));
        let one = br#"{"vmm": {"mismatch_action": "trap", "match_action": "allow",
                       "filter": [{"syscall": "read"}]}}"#;
        assert!(matches!(
            Filters::from_json(one, p),
            Err(SeccompError::Missing(_, "api"))
        ));
        let mut table: serde_json::Value = serde_json::from_str(BUILTIN_JSON).unwrap();
        table["vpcu"] = table["vcpu"].clone();
        let text = serde_json::to_vec(&table).unwrap();
        assert!(matches!(
            Filters::from_json(&text, p),
            Err(SeccompError::Unknown(_, k)) if k == "vpcu"
        ));
        table["vmm"]["filter"][0]["syscall"] = "no_such_call".into();
        let text = serde_json::to_vec(&table).unwrap();
        assert!(matches!(
            Filters::from_json(&text, p),
            Err(SeccompError::Compile(..))
        ));
    }

    #[test]
    fn violation_line_names_thread_and_number() {
        let mut buf = [0u8; 192];
        let len = violation_line(&mut buf, "vcpu", 59);
        assert_eq!(
            std::str::from_utf8(&buf[..len]).unwrap(),
            "microvm: seccomp: the vcpu thread made syscall 59, which its filter does not allow; exiting\n"
        );
        let len = violation_line(&mut buf, "api", 0);
        assert!(std::str::from_utf8(&buf[..len])
            .unwrap()
            .contains("syscall 0,"));
    }

    #[test]
    fn counts_name_each_syscall_once() {
        let counts = Filters::json_counts(BUILTIN_JSON).unwrap();
        for (kind, n) in counts {
            assert!(n > 5, "{kind}: {n}");
        }
    }
}
