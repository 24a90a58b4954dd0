//! The text of /proc files in Linux's formats, from plain data the kernel gathers: `/proc/PID/stat`,
//! `/proc/PID/status`, `/proc/PID/sched`, `/proc/PID/statm`, `/proc/uptime`, `/proc/meminfo`, `/proc/stat`,
//! `/proc/cpuinfo`, `/proc/version`. Pure formatting, tested on the host.

extern crate alloc;
use crate::fmt::{Dec, Hex16, IDec};
use alloc::vec::Vec;
use core::fmt::Write;

/// What /proc shows about one process.
#[derive(Clone, Debug, Default)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub pgrp: u32,
    pub session: u32,
    /// Linux's one-letter state: R, S, T, Z.
    pub state: u8,
    pub comm: Vec<u8>,
    pub nice: i32,
    /// Clock ticks (USER_HZ = 100) spent running in user and in kernel mode, and those of the reaped
    /// children.
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
    /// Clock ticks since boot at creation.
    pub starttime: u64,
    pub vsize: u64,
    /// Resident pages.
    pub rss: u64,
    pub tty_nr: u32,
    pub tpgid: i32,
    /// The thread group (the process's pid; `pid` is the thread's) and its number of threads.
    pub tgid: u32,
    pub threads: u32,
    /// The size of the stack area in bytes (status's VmStk).
    pub stack: u64,
    pub signals: SigSets,
}

/// The signal lines of /proc/PID/status (Linux's `task_sig`). Each set has bit `sig - 1` for signal
/// `sig` and prints as 16 hex digits, signal 64's nibble first (`render_sigset_t`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SigSets {
    /// SigQ: signals queued for the process's user, and its RLIMIT_SIGPENDING.
    pub queued: u64,
    pub queue_limit: u64,
    /// SigPnd: pending for this thread.
    pub pending: u64,
    /// ShdPnd: pending for the whole thread group.
    pub shared_pending: u64,
    /// SigBlk, SigIgn, SigCgt: blocked by this thread; set to SIG_IGN; with a handler.
    pub blocked: u64,
    pub ignored: u64,
    pub caught: u64,
}

struct Buf(Vec<u8>);

impl Write for Buf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn state_name(s: u8) -> &'static str {
    match s {
        b'R' => "R (running)",
        b'S' => "S (sleeping)",
        b'T' => "T (stopped)",
        b'Z' => "Z (zombie)",
        _ => "D (disk sleep)",
    }
}

/// `/proc/PID/stat`: 52 fields, as Linux 6.5 prints them.
pub fn stat(p: &ProcInfo) -> Vec<u8> {
    let mut b = Buf(Vec::new());
    let _ = write!(b, "{} (", Dec(p.pid as u64));
    b.0.extend_from_slice(&p.comm);
    let _ = write!(
        b,
        ") {} {} {} {} {} {} 4194560 0 0 0 0 {} {} {} {} {} {} {} 0 {} {} {} 18446744073709551615",
        p.state as char,
        Dec(p.ppid as u64),
        Dec(p.pgrp as u64),
        Dec(p.session as u64),
        Dec(p.tty_nr as u64),
        IDec(p.tpgid as i64),
        Dec(p.utime),
        Dec(p.stime),
        Dec(p.cutime),
        Dec(p.cstime),
        IDec(20 + p.nice as i64),
        IDec(p.nice as i64),
        Dec(p.threads.max(1) as u64),
        Dec(p.starttime),
        Dec(p.vsize),
        Dec(p.rss),
    );
    // startcode .. exit_code (fields 26-52).
    for _ in 26..=52 {
        b.0.extend_from_slice(b" 0");
    }
    b.0.push(b'\n');
    b.0
}

/// `/proc/PID/status`, the commonly read lines, in Linux 6.5's order (`nice` is ours, last).
pub fn status(p: &ProcInfo) -> Vec<u8> {
    let mut b = Buf(Vec::new());
    b.0.extend_from_slice(b"Name:\t");
    b.0.extend_from_slice(&p.comm);
    let _ = write!(
        b,
        "\nUmask:\t0022\nState:\t{}\nTgid:\t{}\nNgid:\t0\nPid:\t{}\nPPid:\t{}\nTracerPid:\t0\n\
         Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nNSpid:\t{}\nNSpgid:\t{}\nNSsid:\t{}\n\
         VmSize:\t{} kB\nVmRSS:\t{} kB\nVmStk:\t{} kB\nThreads:\t{}\nSigQ:\t{}/{}\nSigPnd:\t{}\n\
         ShdPnd:\t{}\nSigBlk:\t{}\nSigIgn:\t{}\nSigCgt:\t{}\nnice:\t{}\n",
        state_name(p.state),
        Dec(p.tgid as u64),
        Dec(p.pid as u64),
        Dec(p.ppid as u64),
        Dec(p.pid as u64),
        Dec(p.pgrp as u64),
        Dec(p.session as u64),
        Dec(p.vsize / 1024),
        Dec(p.rss * 4),
        Dec(p.stack / 1024),
        Dec(p.threads.max(1) as u64),
        Dec(p.signals.queued),
        Dec(p.signals.queue_limit),
        Hex16(p.signals.pending),
        Hex16(p.signals.shared_pending),
        Hex16(p.signals.blocked),
        Hex16(p.signals.ignored),
        Hex16(p.signals.caught),
        IDec(p.nice as i64),
    );
    b.0
}

/// What /proc/PID/sched shows (times in ns).
#[derive(Clone, Debug, Default)]
pub struct SchedInfo {
    pub pid: u32,
    pub comm: Vec<u8>,
    pub exec_start: u64,
    /// Signed: vruntimes start just below the wrap point, as Linux's do.
    pub vruntime: i64,
    pub sum_exec_runtime: u64,
    pub nr_voluntary_switches: u64,
    pub nr_involuntary_switches: u64,
    /// The load weight (nice 0 = 1024); shown scaled by 1024 as 64-bit Linux does.
    pub weight: u64,
    pub policy: u32,
    pub nice: i32,
}

/// One `name : value` line of /proc/PID/sched: the name left-aligned in 45 columns, the value
/// right-aligned in 21 (Linux's `%-45s:%21Ld`), then `.` and six digits when `frac` is given.
fn sched_line(b: &mut Buf, name: &str, whole: &str, frac: Option<u64>) {
    b.0.extend_from_slice(name.as_bytes());
    b.0.resize(b.0.len() + 45usize.saturating_sub(name.len()), b' ');
    b.0.push(b':');
    b.0.resize(b.0.len() + 21usize.saturating_sub(whole.len()), b' ');
    b.0.extend_from_slice(whole.as_bytes());
    if let Some(f) = frac {
        let mut d = [0u8; 64];
        b.0.push(b'.');
        b.0.extend_from_slice(crate::fmt::render(f, 10, 6, &mut d).as_bytes());
    }
    b.0.push(b'\n');
}

fn ms_line(b: &mut Buf, name: &str, ns: i64) {
    let abs = ns.unsigned_abs();
    let mut d = [0u8; 64];
    let ms = crate::fmt::render(abs / 1_000_000, 10, 1, &mut d);
    let mut whole = alloc::string::String::new();
    if ns < 0 {
        whole.push('-');
    }
    whole.push_str(ms);
    sched_line(b, name, &whole, Some(abs % 1_000_000));
}

fn num_line(b: &mut Buf, name: &str, v: i64) {
    let mut d = [0u8; 64];
    let mut whole = alloc::string::String::new();
    if v < 0 {
        whole.push('-');
    }
    whole.push_str(crate::fmt::render(v.unsigned_abs(), 10, 1, &mut d));
    sched_line(b, name, &whole, None);
}

/// `/proc/PID/sched`, the fields of Linux's `proc_sched_show_task` this kernel tracks (times in ms
/// with six decimals, as Linux prints nanoseconds).
pub fn sched(s: &SchedInfo) -> Vec<u8> {
    let mut b = Buf(Vec::new());
    b.0.extend_from_slice(&s.comm);
    let _ = writeln!(b, " ({}, #threads: 1)", Dec(s.pid as u64));
    b.0.resize(b.0.len() + 67, b'-');
    b.0.push(b'\n');
    ms_line(&mut b, "se.exec_start", s.exec_start as i64);
    ms_line(&mut b, "se.vruntime", s.vruntime);
    ms_line(&mut b, "se.sum_exec_runtime", s.sum_exec_runtime as i64);
    num_line(&mut b, "se.nr_migrations", 0);
    let (v, i) = (s.nr_voluntary_switches, s.nr_involuntary_switches);
    num_line(&mut b, "nr_switches", (v + i) as i64);
    num_line(&mut b, "nr_voluntary_switches", v as i64);
    num_line(&mut b, "nr_involuntary_switches", i as i64);
    num_line(&mut b, "se.load.weight", (s.weight << 10) as i64);
    num_line(&mut b, "policy", s.policy as i64);
    num_line(&mut b, "prio", 120 + s.nice as i64);
    b.0
}

fn centi(b: &mut Buf, ns: u64) {
    let cs = ns / 10_000_000;
    let frac = cs % 100;
    let _ = write!(b, "{}.{}{}", Dec(cs / 100), Dec(frac / 10), Dec(frac % 10));
}

/// `/proc/uptime`: seconds up and idle, with two decimals.
pub fn uptime(up_ns: u64, idle_ns: u64) -> Vec<u8> {
    let mut b = Buf(Vec::new());
    centi(&mut b, up_ns);
    b.0.push(b' ');
    centi(&mut b, idle_ns);
    b.0.push(b'\n');
    b.0
}

/// `/proc/consoles` for the one console, terminal `name` (`ttyS0`, `hvc0`) with device number
/// `major:minor` (Linux's show_console_dev): the name padded to 20 columns and a space, the
/// operations (`-W-`: written, not read, no unblank), the flags (`anytime`: the 8250's CON_ANYTIME,
/// which hvc has not; E enabled and C the console device, p its log replayed), the number. It is how
/// a program finds the device behind /dev/console (init opens it for the shell's session).
pub fn consoles(name: &str, anytime: bool, major: u32, minor: u32) -> Vec<u8> {
    let mut b = Buf(Vec::new());
    b.0.extend_from_slice(name.as_bytes());
    // The name column (20), padded by hand: kernel-mode formatting has no width (see crate::fmt).
    while b.0.len() < 20 {
        b.0.push(b' ');
    }
    let flags = if anytime { "EC p a" } else { "EC p  " };
    let _ = write!(b, " -W- ({}) ", flags);
    // " %4d:%d": the major right-aligned in 4 columns.
    let major_text = Dec(major as u64);
    let mut digits = Buf(Vec::new());
    let _ = write!(digits, "{}", major_text);
    for _ in digits.0.len()..4 {
        b.0.push(b' ');
    }
    b.0.extend_from_slice(&digits.0);
    let _ = writeln!(b, ":{}", Dec(minor as u64));
    b.0
}

/// `/proc/meminfo`, the first lines (kB).
pub fn meminfo(
    total_kb: u64,
    free_kb: u64,
    slab_kb: u64,
    shmem_kb: u64,
    cache_kb: u64,
    dirty_kb: u64,
    writeback_kb: u64,
) -> Vec<u8> {
    let mut b = Buf(Vec::new());
    // As Linux counts them, tmpfs pages (Shmem) are part of Cached; page-cache pages are available
    // memory (dirty ones once written back). Dirty and Writeback are part of Cached.
    let _ = write!(
        b,
        "MemTotal:       {} kB\nMemFree:        {} kB\nMemAvailable:   {} kB\nBuffers:        0 kB\nCached:         {} kB\nSwapCached:     0 kB\nSwapTotal:      0 kB\nSwapFree:       0 kB\nDirty:          {} kB\nWriteback:      {} kB\nShmem:          {} kB\nSlab:           {} kB\n",
        Dec(total_kb),
        Dec(free_kb),
        Dec(free_kb + cache_kb),
        Dec(shmem_kb + cache_kb),
        Dec(dirty_kb),
        Dec(writeback_kb),
        Dec(shmem_kb),
        Dec(slab_kb)
    );
    b.0
}

/// System-wide counters for `/proc/stat`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SysStat {
    /// Clock ticks (USER_HZ) in user mode, kernel mode and idle, over the whole uptime.
    pub user: u64,
    pub system: u64,
    pub idle: u64,
    /// Context switches, the boot time (s since the epoch), forks, and tasks runnable and blocked now.
    pub ctxt: u64,
    pub btime: u64,
    pub processes: u64,
    pub running: u64,
    pub blocked: u64,
}

/// `/proc/stat` for one CPU, in Linux 6.5's layout (the `cpu` and `cpu0` lines with ten columns, the
/// interrupt and softirq totals as zeros).
pub fn stat_file(s: &SysStat) -> Vec<u8> {
    let mut b = Buf(Vec::new());
    for name in ["cpu ", "cpu0"] {
        let _ = writeln!(
            b,
            "{} {} 0 {} {} 0 0 0 0 0 0",
            name,
            Dec(s.user),
            Dec(s.system),
            Dec(s.idle)
        );
    }
    let _ = write!(
        b,
        "intr 0\nctxt {}\nbtime {}\nprocesses {}\nprocs_running {}\nprocs_blocked {}\nsoftirq 0 0 0 0 0 0 0 0 0 0 0\n",
        Dec(s.ctxt),
        Dec(s.btime),
        Dec(s.processes),
        Dec(s.running),
        Dec(s.blocked)
    );
    b.0
}

/// `/proc/PID/statm`: size, resident, shared, text, lib, data, dt in pages (shared, text and data as
/// this kernel counts them: the file-backed resident pages, the executable's size, the rest).
pub fn statm(size_pages: u64, resident: u64, shared: u64, text: u64) -> Vec<u8> {
    let mut b = Buf(Vec::new());
    let _ = writeln!(
        b,
        "{} {} {} {} 0 {} 0",
        Dec(size_pages),
        Dec(resident),
        Dec(shared),
        Dec(text),
        Dec(size_pages.saturating_sub(text))
    );
    b.0
}

/// What `/proc/cpuinfo` says about the one CPU.
#[derive(Clone, Debug, Default)]
pub struct CpuInfo {
    pub vendor: Vec<u8>,
    pub family: u32,
    pub model: u32,
    pub model_name: Vec<u8>,
    pub stepping: u32,
    pub khz: u64,
    /// Feature flag names, space-separated.
    pub flags: Vec<u8>,
}

/// `/proc/cpuinfo` for processor 0, the fields programs read (Linux's show_cpuinfo order).
pub fn cpuinfo(c: &CpuInfo) -> Vec<u8> {
    let mut b = Buf(Vec::new());
    b.0.extend_from_slice(b"processor\t: 0\nvendor_id\t: ");
    b.0.extend_from_slice(&c.vendor);
    let _ = write!(
        b,
        "\ncpu family\t: {}\nmodel\t\t: {}\nmodel name\t: ",
        Dec(c.family as u64),
        Dec(c.model as u64)
    );
    b.0.extend_from_slice(&c.model_name);
    let frac = c.khz % 1000;
    let _ = write!(
        b,
        "\nstepping\t: {}\ncpu MHz\t\t: {}.{}{}{}\nphysical id\t: 0\nsiblings\t: 1\ncore id\t\t: 0\n\
         cpu cores\t: 1\napicid\t\t: 0\nfpu\t\t: yes\nfpu_exception\t: yes\ncpuid level\t: 13\nwp\t\t: yes\nflags\t\t: ",
        Dec(c.stepping as u64),
        Dec(c.khz / 1000),
        Dec(frac / 100),
        Dec(frac / 10 % 10),
        Dec(frac % 10)
    );
    b.0.extend_from_slice(&c.flags);
    // bogomips: twice the MHz, as Linux's calibration on x86.
    let bogo = c.khz * 2 / 10;
    let _ = write!(
        b,
        "\nbogomips\t: {}.{}{}\nclflush size\t: 64\ncache_alignment\t: 64\naddress sizes\t: 46 bits physical, 48 bits virtual\n\n",
        Dec(bogo / 100),
        Dec(bogo / 10 % 10),
        Dec(bogo % 10)
    );
    b.0
}

/// The `/proc/version` line.
pub fn version(release: &str, build: &str) -> Vec<u8> {
    let mut b = Buf(Vec::new());
    let _ = writeln!(
        b,
        "Linux version {} (microvm guest kernel) {}",
        release, build
    );
    b.0
}

/// One line of `/proc/PID/maps`.
#[derive(Clone, Copy, Debug)]
pub struct MapLine<'a> {
    pub start: u64,
    pub end: u64,
    /// PROT_READ | PROT_WRITE | PROT_EXEC (see [`crate::vma`]).
    pub prot: u32,
    pub shared: bool,
    pub offset: u64,
    /// major << 8 | minor.
    pub dev: u32,
    pub ino: u64,
    /// The file's path, or `[heap]`, `[stack]`.
    pub name: Option<&'a [u8]>,
}

fn hex_min(b: &mut Buf, v: u64, digits: usize) {
    b.0.extend_from_slice(crate::fmt::render(v, 16, digits, &mut [0; 64]).as_bytes());
}

/// `/proc/PID/maps`, as Linux 6.5's `show_map_vma` prints it: `start-end perms offset major:minor inode`,
/// then, for a named area, spaces up to column 73 and the name.
pub fn maps(lines: &[MapLine<'_>]) -> Vec<u8> {
    use crate::vma::{PROT_EXEC, PROT_READ, PROT_WRITE};
    let mut b = Buf(Vec::new());
    for l in lines {
        let line_start = b.0.len();
        hex_min(&mut b, l.start, 8);
        b.0.push(b'-');
        hex_min(&mut b, l.end, 8);
        let flag = |bit: u32, c: u8| if l.prot & bit != 0 { c } else { b'-' };
        b.0.extend_from_slice(&[
            b' ',
            flag(PROT_READ, b'r'),
            flag(PROT_WRITE, b'w'),
            flag(PROT_EXEC, b'x'),
            if l.shared { b's' } else { b'p' },
            b' ',
        ]);
        hex_min(&mut b, l.offset, 8);
        b.0.push(b' ');
        hex_min(&mut b, (l.dev >> 8) as u64, 2);
        b.0.push(b':');
        hex_min(&mut b, (l.dev & 0xff) as u64, 2);
        let _ = write!(b, " {} ", Dec(l.ino));
        if let Some(name) = l.name {
            while b.0.len() - line_start < 72 {
                b.0.push(b' ');
            }
            b.0.push(b' ');
            b.0.extend_from_slice(name);
        }
        b.0.push(b'\n');
    }
    b.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn consoles_is_linuxs_line() {
        // As Linux 6.x prints them for console=ttyS0 and console=hvc0.
        assert_eq!(
            core::str::from_utf8(&super::consoles("ttyS0", true, 4, 64)).unwrap(),
            "ttyS0                -W- (EC p a)    4:64\n"
        );
        assert_eq!(
            core::str::from_utf8(&super::consoles("hvc0", false, 229, 0)).unwrap(),
            "hvc0                 -W- (EC p  )  229:0\n"
        );
    }

    #[test]
    fn proc_stat_layout() {
        let t = stat_file(&SysStat {
            user: 12,
            system: 34,
            idle: 560,
            ctxt: 99,
            btime: 1_800_000_000,
            processes: 17,
            running: 1,
            blocked: 0,
        });
        let t = core::str::from_utf8(&t).unwrap();
        let mut lines = t.lines();
        assert_eq!(lines.next(), Some("cpu  12 0 34 560 0 0 0 0 0 0"));
        assert_eq!(lines.next(), Some("cpu0 12 0 34 560 0 0 0 0 0 0"));
        assert!(t.contains(
            "\nctxt 99\nbtime 1800000000\nprocesses 17\nprocs_running 1\nprocs_blocked 0\n"
        ));
    }

    #[test]
    fn statm_and_cpuinfo() {
        assert_eq!(statm(100, 40, 10, 30), b"100 40 10 30 0 70 0\n".to_vec());
        let c = cpuinfo(&CpuInfo {
            vendor: b"GenuineIntel".to_vec(),
            family: 6,
            model: 85,
            model_name: b"Intel Xeon".to_vec(),
            stepping: 7,
            khz: 2_300_005,
            flags: b"fpu sse sse2".to_vec(),
        });
        let c = core::str::from_utf8(&c).unwrap();
        assert!(c.starts_with("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n"));
        assert!(c.contains("cpu MHz\t\t: 2300.005\n"), "{c}");
        assert!(
            c.contains("flags\t\t: fpu sse sse2\nbogomips\t: 4600.01\n"),
            "{c}"
        );
        assert!(c.ends_with("\n\n"));
        assert_eq!(
            version("6.5.0", "#1"),
            b"Linux version 6.5.0 (microvm guest kernel) #1\n".to_vec()
        );
    }

    use super::*;

    fn info() -> ProcInfo {
        ProcInfo {
            pid: 42,
            ppid: 1,
            pgrp: 42,
            session: 1,
            state: b'S',
            comm: b"sh (x)".to_vec(),
            nice: -3,
            utime: 7,
            stime: 3,
            cutime: 11,
            cstime: 12,
            starttime: 99,
            vsize: 8192,
            rss: 2,
            tty_nr: 0x401,
            tpgid: 42,
            tgid: 42,
            threads: 1,
            stack: 132 * 1024,
            signals: SigSets::default(),
        }
    }

    #[test]
    fn stat_has_52_fields_and_parses_after_the_last_paren() {
        let s = String::from_utf8(stat(&info())).unwrap();
        assert!(s.starts_with("42 (sh (x)) S 1 42 1 1025 42 "));
        let rest = &s[s.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        assert_eq!(f.len() + 2, 52);
        // Fields are 1-based in proc(5): utime 14, priority 18, nice 19, threads 20, starttime 22.
        let field = |n: usize| f[n - 3];
        assert_eq!(field(14), "7");
        assert_eq!(field(15), "3");
        assert_eq!(field(16), "11");
        assert_eq!(field(17), "12");
        assert_eq!(field(18), "17");
        assert_eq!(field(19), "-3");
        assert_eq!(field(20), "1");
        assert_eq!(field(22), "99");
        assert_eq!(field(23), "8192");
        assert_eq!(field(24), "2");
    }

    #[test]
    fn sched_is_linux_proc_sched_show_task() {
        let s = sched(&SchedInfo {
            pid: 7,
            comm: b"hog".to_vec(),
            exec_start: 12_345_678_901,
            vruntime: -1_048_576,
            sum_exec_runtime: 2_000_000_005,
            nr_voluntary_switches: 3,
            nr_involuntary_switches: 4,
            weight: 1024,
            policy: 0,
            nice: 5,
        });
        let s = String::from_utf8(s).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "hog (7, #threads: 1)");
        assert_eq!(lines[1], "-".repeat(67));
        let exec = format!("{:<45}:{:>21}.{:06}", "se.exec_start", 12345, 678901);
        assert_eq!(lines[2], exec);
        assert_eq!(
            lines[3],
            format!("{:<45}:{:>21}.{:06}", "se.vruntime", "-1", 48576)
        );
        assert_eq!(
            lines[4],
            format!("{:<45}:{:>21}.{:06}", "se.sum_exec_runtime", 2000, 5)
        );
        assert!(s.contains(&format!("{:<45}:{:>21}\n", "nr_switches", 7)));
        assert!(s.contains(&format!("{:<45}:{:>21}\n", "nr_voluntary_switches", 3)));
        assert!(s.contains(&format!("{:<45}:{:>21}\n", "nr_involuntary_switches", 4)));
        assert!(s.contains(&format!("{:<45}:{:>21}\n", "se.load.weight", 1048576)));
        assert!(s.contains(&format!("{:<45}:{:>21}\n", "policy", 0)));
        assert!(s.contains(&format!("{:<45}:{:>21}\n", "prio", 125)));
    }

    #[test]
    fn status_uptime_meminfo() {
        let s = String::from_utf8(status(&info())).unwrap();
        for l in [
            "Name:\tsh (x)\n",
            "State:\tS (sleeping)\n",
            "Pid:\t42\n",
            "PPid:\t1\n",
            "VmSize:\t8 kB\n",
            "VmRSS:\t8 kB\n",
            "Threads:\t1\n",
        ] {
            assert!(s.contains(l), "{l:?} in {s}");
        }
        assert_eq!(uptime(12_345_000_000, 5_000_000), b"12.34 0.00\n");
        let m = String::from_utf8(meminfo(1000, 500, 7, 12, 30, 8, 4)).unwrap();
        assert!(m.contains("\nMemAvailable:   530 kB\n"), "{m}");
        assert!(
            m.contains("\nCached:         42 kB\nSwapCached:     0 kB\nSwapTotal:      0 kB\nSwapFree:       0 kB\nDirty:          8 kB\nWriteback:      4 kB\nShmem:          12 kB\n"),
            "{m}"
        );
        assert!(m.starts_with("MemTotal:       1000 kB\nMemFree:        500 kB\n"));
        assert!(m.contains("\nSlab:           7 kB\n"), "{m}");
    }

    #[test]
    fn status_signal_sets_and_stack_are_linux_task_sig() {
        let p = ProcInfo {
            signals: SigSets {
                queued: 2,
                queue_limit: 95_547,
                // SIGUSR2 (12) to the thread, SIGUSR1 (10) to the group, both blocked.
                pending: 1 << 11,
                shared_pending: 1 << 9,
                blocked: (1 << 11) | (1 << 9),
                // SIGPIPE (13) ignored; SIGINT (2) and signal 64 caught.
                ignored: 1 << 12,
                caught: (1 << 1) | (1 << 63),
            },
            ..info()
        };
        let s = String::from_utf8(status(&p)).unwrap();
        // As a Linux 6.5 host prints them (fs/proc/array.c), in this order, after VmRSS.
        let expected = "VmRSS:\t8 kB\nVmStk:\t132 kB\nThreads:\t1\nSigQ:\t2/95547\n\
                        SigPnd:\t0000000000000800\nShdPnd:\t0000000000000200\n\
                        SigBlk:\t0000000000000a00\nSigIgn:\t0000000000001000\n\
                        SigCgt:\t8000000000000002\nnice:\t-3\n";
        assert!(s.ends_with(expected), "{s}");
        let none = String::from_utf8(status(&info())).unwrap();
        assert!(
            none.contains("\nSigQ:\t0/0\nSigPnd:\t0000000000000000\n"),
            "{none}"
        );
    }

    #[test]
    fn threads_show_in_stat_and_status() {
        let p = ProcInfo {
            pid: 45,
            tgid: 42,
            threads: 3,
            ..info()
        };
        let s = String::from_utf8(stat(&p)).unwrap();
        let rest = &s[s.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        assert_eq!(f[20 - 3], "3");
        let st = String::from_utf8(status(&p)).unwrap();
        assert!(st.contains("Tgid:\t42\n"), "{st}");
        assert!(st.contains("\nPid:\t45\n"), "{st}");
        assert!(st.contains("Threads:\t3\n"), "{st}");
    }

    #[test]
    fn maps_lines_look_like_linux() {
        let lines = [
            MapLine {
                start: 0x560ce3043000,
                end: 0x560ce3048000,
                prot: 5,
                shared: false,
                offset: 0x2000,
                dev: 0xfe00,
                ino: 247030,
                name: Some(b"/usr/bin/cat"),
            },
            MapLine {
                start: 0x7ffb0aa1d000,
                end: 0x7ffb0aa20000,
                prot: 3,
                shared: false,
                offset: 0,
                dev: 0,
                ino: 0,
                name: None,
            },
            MapLine {
                start: 0x1000,
                end: 0x2000,
                prot: 0,
                shared: true,
                offset: 0,
                dev: 0,
                ino: 0,
                name: Some(b"[stack]"),
            },
        ];
        let text = String::from_utf8(maps(&lines)).unwrap();
        // Copied from the host's /proc/self/maps (Linux 6.x).
        assert_eq!(
            text,
            "560ce3043000-560ce3048000 r-xp 00002000 fe:00 247030                     /usr/bin/cat\n\
             7ffb0aa1d000-7ffb0aa20000 rw-p 00000000 00:00 0 \n\
             00001000-00002000 ---s 00000000 00:00 0                                  [stack]\n"
        );
    }
}
