//! strace's notation for one traced system call (`microvm trace`, `GET /guest/trace`): pure functions
//! from a [`Syscall`] (number, arguments, result, the string argument the guest kernel copied) to
//! `openat(AT_FDCWD, "/etc/motd", O_RDONLY)` and `= 3` or `= -1 ENOENT (No such file or directory)`.
//!
//! Decoded as strace does for the common calls: file descriptors and `AT_FDCWD`, strings quoted with C
//! escapes (octal for other bytes) and buffers cut at 32 bytes with `...`, open/at/access/wait/clone/
//! mmap/prot/whence/fcntl/ioctl/signal/clock/futex constants by name, modes in octal, pointers in hex
//! (`NULL` for 0). Structures the call reads or fills are shown as their address (the guest sends no
//! more than one string per call). A call the tables do not describe prints its six arguments in hex.

use super::names::{ERRNOS, SYSCALL_NAMES};

/// strace's default `-s`: buffers are cut after this many bytes.
pub const STRSIZE: usize = 32;

/// One system call as the guest kernel recorded it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Syscall {
    pub nr: u16,
    pub args: [u64; 6],
    /// `None` for a call that does not return (exit, exit_group).
    pub result: Option<u64>,
    /// The string argument: its index, the bytes copied, whether they were cut short, and whether the
    /// guest could not read it (a bad pointer).
    pub string: Option<StringArg>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StringArg {
    pub index: u8,
    pub bytes: Vec<u8>,
    pub cut: bool,
    pub fault: bool,
}

/// How one argument is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arg {
    Fd,
    AtFd,
    /// A path (shown whole, as far as the guest copied it).
    Path,
    /// A buffer (shown up to [`STRSIZE`] bytes).
    Buf,
    Ptr,
    Int,
    UInt,
    Hex,
    Oct,
    Open,
    Prot,
    Mmap,
    Wait,
    Whence,
    Signal,
    Access,
    At,
    Fcntl,
    Ioctl,
    SigHow,
    Clock,
    Futex,
    ArchPrctl,
}

use Arg::*;

/// The arguments of the calls decoded by name (the others: six in hex).
fn signature(nr: u16) -> Option<&'static [Arg]> {
    Some(match nr {
        0 | 1 => &[Fd, Buf, UInt],
        2 => &[Path, Open],
        3 => &[Fd],
        4 | 6 => &[Path, Ptr],
        5 => &[Fd, Ptr],
        7 => &[Ptr, UInt, Int],
        8 => &[Fd, Int, Whence],
        9 => &[Ptr, UInt, Prot, Mmap, Fd, Hex],
        10 => &[Ptr, UInt, Prot],
        11 => &[Ptr, UInt],
        12 => &[Ptr],
        13 => &[Signal, Ptr, Ptr, UInt],
        14 => &[SigHow, Ptr, Ptr, UInt],
        15 | 24 | 34 | 39 | 57 | 58 | 102 | 104 | 107 | 108 | 110 | 111 | 112 | 186 => &[],
        16 => &[Fd, Ioctl, Ptr],
        17 | 18 => &[Fd, Buf, UInt, Int],
        19 | 20 => &[Fd, Ptr, Int],
        21 => &[Path, Access],
        22 => &[Ptr],
        32 => &[Fd],
        33 => &[Fd, Fd],
        35 => &[Ptr, Ptr],
        59 => &[Path, Ptr, Ptr],
        60 | 231 => &[Int],
        61 => &[Int, Ptr, Wait, Ptr],
        62 => &[Int, Signal],
        63 => &[Ptr],
        72 => &[Fd, Fcntl, Hex],
        79 => &[Ptr, UInt],
        80 | 84 | 87 => &[Path],
        82 => &[Path, Ptr],
        83 => &[Path, Oct],
        89 => &[Path, Ptr, UInt],
        90 => &[Path, Oct],
        95 => &[Oct],
        96 => &[Ptr, Ptr],
        109 => &[Int, Int],
        121 | 124 => &[Int],
        158 => &[ArchPrctl, Hex],
        200 => &[Int, Signal],
        202 => &[Ptr, Futex, Int, Ptr, Ptr, Int],
        217 => &[Fd, Ptr, UInt],
        218 => &[Ptr],
        228 | 229 => &[Clock, Ptr],
        230 => &[Clock, Int, Ptr, Ptr],
        234 => &[Int, Int, Signal],
        257 => &[AtFd, Path, Open],
        258 => &[AtFd, Path, Oct],
        262 => &[AtFd, Path, Ptr, At],
        263 => &[AtFd, Path, At],
        267 => &[AtFd, Path, Ptr, UInt],
        268 => &[AtFd, Path, Oct],
        269 => &[AtFd, Path, Access],
        273 => &[Ptr, UInt],
        292 => &[Fd, Fd, Open],
        293 => &[Ptr, Open],
        302 => &[Int, Int, Ptr, Ptr],
        318 => &[Ptr, UInt, Hex],
        332 => &[AtFd, Path, At, Hex, Ptr],
        334 => &[Ptr, UInt, Int, Hex],
        435 => &[Ptr, UInt],
        439 => &[AtFd, Path, Access, At],
        _ => return None,
    })
}

/// The call's name (`syscall_N` for a number with none).
pub fn name(nr: u16) -> String {
    match SYSCALL_NAMES.get(nr as usize) {
        Some(n) if !n.is_empty() => (*n).to_owned(),
        _ => format!("syscall_{nr}"),
    }
}

/// The number of a call's name (`-e trace=NAME`).
pub fn number(name: &str) -> Option<u16> {
    SYSCALL_NAMES
        .iter()
        .position(|n| !n.is_empty() && *n == name)
        .map(|i| i as u16)
}

/// The errno's name and message.
pub fn errno(e: u64) -> Option<(&'static str, &'static str)> {
    ERRNOS
        .get(e as usize)
        .filter(|(n, _)| !n.is_empty())
        .copied()
}

/// `name(args)` as strace prints it.
pub fn call(s: &Syscall) -> String {
    let args: Vec<String> = if s.nr == 56 {
        clone_args(&s.args)
    } else {
        match signature(s.nr) {
            Some(sig) => sig.iter().enumerate().map(|(i, k)| arg(s, i, *k)).collect(),
            None => s.args.iter().map(|a| format!("{a:#x}")).collect(),
        }
    };
    // The mode of open/openat only with O_CREAT or O_TMPFILE, as strace.
    let mut args = args;
    let open_mode = match s.nr {
        2 => Some(2),
        257 => Some(3),
        _ => None,
    };
    if let Some(m) = open_mode {
        let flags = s.args[m - 1];
        if flags & O_CREAT != 0 || flags & O_TMPFILE == O_TMPFILE {
            args.push(octal(s.args[m] & 0o7777));
        }
    }
    format!("{}({})", name(s.nr), args.join(", "))
}

/// The result as strace prints it after `= `: a number, an address, `-1 ENAME (message)`, or `?`.
pub fn result(nr: u16, result: Option<u64>) -> String {
    let Some(r) = result else {
        return "?".into();
    };
    let v = r as i64;
    if (-4095..0).contains(&v) {
        let e = (-v) as u64;
        return match (e, errno(e)) {
            (512, _) => "? ERESTARTSYS (To be restarted if SA_RESTART is set)".into(),
            (513, _) => "? ERESTARTNOINTR (To be restarted)".into(),
            (514, _) => "? ERESTARTNOHAND (To be restarted if no handler)".into(),
            (516, _) => "? ERESTART_RESTARTBLOCK (Interrupted by signal)".into(),
            (_, Some((n, m))) => format!("-1 {n} ({m})"),
            (_, None) => format!("-1 E{e} (Unknown error {e})"),
        };
    }
    match nr {
        // Addresses.
        9 | 12 | 25 => format!("{r:#x}"),
        _ => v.to_string(),
    }
}

const O_CREAT: u64 = 0o100;
const O_TMPFILE: u64 = 0o20200000;

fn arg(s: &Syscall, i: usize, kind: Arg) -> String {
    let v = s.args[i];
    match kind {
        Fd => (v as i32).to_string(),
        AtFd => match v as i32 {
            -100 => "AT_FDCWD".into(),
            fd => fd.to_string(),
        },
        Path | Buf => string(s, i, kind == Buf).unwrap_or_else(|| ptr(v)),
        Ptr => ptr(v),
        Int => (v as i32).to_string(),
        UInt => v.to_string(),
        Hex => format!("{v:#x}"),
        Oct => octal(v),
        Open => open_flags(v),
        Prot => bits(v, PROT, "PROT_NONE"),
        Mmap => mmap_flags(v),
        Wait => bits(v, WAIT, "0"),
        Whence => named(v, WHENCE),
        Signal => signal(v),
        Access => bits(v, ACCESS, "F_OK"),
        At => bits(v, AT, "0"),
        Fcntl => named(v, FCNTL),
        Ioctl => named(v, IOCTL),
        SigHow => named(v, SIGHOW),
        Clock => named(v, CLOCK),
        Futex => futex_op(v),
        ArchPrctl => named(v, ARCH_PRCTL),
    }
}

/// A mode as strace shows it: `0644`, `000`.
fn octal(v: u64) -> String {
    format!("0{:02o}", v as u32)
}

fn ptr(v: u64) -> String {
    if v == 0 {
        "NULL".into()
    } else {
        format!("{v:#x}")
    }
}

/// The string argument `i`, quoted, if the guest copied it.
fn string(s: &Syscall, i: usize, buffer: bool) -> Option<String> {
    let st = s.string.as_ref().filter(|st| st.index as usize == i)?;
    if st.fault || s.args[i] == 0 {
        return None;
    }
    // read's buffer is shown only when something was read.
    if buffer && matches!(s.nr, 0 | 17) && !matches!(s.result, Some(r) if (r as i64) > 0) {
        return None;
    }
    let (bytes, cut) = if buffer && st.bytes.len() > STRSIZE {
        (&st.bytes[..STRSIZE], true)
    } else {
        (&st.bytes[..], st.cut)
    };
    Some(quote(bytes, cut))
}

/// strace's quoting: `"` ... `"`, C escapes, other unprintable bytes in octal, `...` when cut.
pub fn quote(bytes: &[u8], cut: bool) -> String {
    let mut out = String::from("\"");
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'\r' => out.push_str("\\r"),
            0x0c => out.push_str("\\f"),
            0x0b => out.push_str("\\v"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                // The shortest octal form, unless a digit follows.
                let next_digit = bytes.get(i + 1).is_some_and(|n| n.is_ascii_digit());
                if next_digit {
                    out.push_str(&format!("\\{b:03o}"));
                } else {
                    out.push_str(&format!("\\{b:o}"));
                }
            }
        }
    }
    out.push('"');
    if cut {
        out.push_str("...");
    }
    out
}

/// `A|B|0x..` for the bits of `v`, `zero` when none is set.
fn bits(v: u64, table: &[(u64, &str)], zero: &str) -> String {
    let mut parts = Vec::new();
    let mut left = v;
    for &(bit, n) in table {
        if bit != 0 && left & bit == bit {
            parts.push(n.to_owned());
            left &= !bit;
        }
    }
    if left != 0 {
        parts.push(format!("{left:#x}"));
    }
    if parts.is_empty() {
        zero.into()
    } else {
        parts.join("|")
    }
}

fn named(v: u64, table: &[(u64, &str)]) -> String {
    table
        .iter()
        .find(|(k, _)| *k == v)
        .map(|(_, n)| (*n).to_owned())
        .unwrap_or_else(|| format!("{v:#x}"))
}

fn open_flags(v: u64) -> String {
    let mode = ["O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE"][(v & 3) as usize];
    let rest = bits(v & !3, OPEN, "");
    if rest.is_empty() {
        mode.into()
    } else {
        format!("{mode}|{rest}")
    }
}

fn mmap_flags(v: u64) -> String {
    let kind = match v & 0xf {
        1 => "MAP_SHARED".to_owned(),
        2 => "MAP_PRIVATE".to_owned(),
        3 => "MAP_SHARED_VALIDATE".to_owned(),
        k => format!("{k:#x}"),
    };
    let rest = bits(v & !0xf, MMAP, "");
    if rest.is_empty() {
        kind
    } else {
        format!("{kind}|{rest}")
    }
}

/// A signal's name (`SIGRT_N` for real-time ones), or the number.
pub fn signal(v: u64) -> String {
    match v {
        1..=31 => SIGNALS[v as usize - 1].into(),
        32..=64 => format!("SIGRT_{}", v - 32),
        0 => "0".into(),
        _ => (v as i32).to_string(),
    }
}

fn clone_flags(v: u64) -> String {
    let sig = v & 0xff;
    let mut s = bits(v & !0xff, CLONE, "");
    if sig != 0 {
        if !s.is_empty() {
            s.push('|');
        }
        s.push_str(&signal(sig));
    }
    if s.is_empty() {
        "0".into()
    } else {
        s
    }
}

/// clone(flags, stack, parent_tid, child_tid, tls), as strace names them.
fn clone_args(a: &[u64; 6]) -> Vec<String> {
    let flags = a[0];
    let mut out = vec![
        format!("child_stack={}", ptr(a[1])),
        format!("flags={}", clone_flags(flags)),
    ];
    if flags & 0x0010_0000 != 0 {
        out.push(format!("parent_tid={}", ptr(a[2])));
    }
    if flags & 0x0120_0000 != 0 {
        out.push(format!("child_tidptr={}", ptr(a[3])));
    }
    if flags & 0x0008_0000 != 0 {
        out.push(format!("tls={}", ptr(a[4])));
    }
    out
}

fn futex_op(v: u64) -> String {
    let cmd = named(v & 0x7f, FUTEX);
    let mut s = cmd;
    if v & 128 != 0 {
        s.push_str("_PRIVATE");
    }
    if v & 256 != 0 {
        s.push_str("|FUTEX_CLOCK_REALTIME");
    }
    s
}

const OPEN: &[(u64, &str)] = &[
    (0o100, "O_CREAT"),
    (0o200, "O_EXCL"),
    (0o400, "O_NOCTTY"),
    (0o1000, "O_TRUNC"),
    (0o2000, "O_APPEND"),
    (0o4000, "O_NONBLOCK"),
    (0o4010000, "O_SYNC"),
    (0o10000, "O_DSYNC"),
    (0o20000, "O_ASYNC"),
    (0o40000, "O_DIRECT"),
    (0o100000, "O_LARGEFILE"),
    (0o20200000, "O_TMPFILE"),
    (0o200000, "O_DIRECTORY"),
    (0o400000, "O_NOFOLLOW"),
    (0o1000000, "O_NOATIME"),
    (0o2000000, "O_CLOEXEC"),
    (0o10000000, "O_PATH"),
];
const PROT: &[(u64, &str)] = &[(1, "PROT_READ"), (2, "PROT_WRITE"), (4, "PROT_EXEC")];
const MMAP: &[(u64, &str)] = &[
    (0x10, "MAP_FIXED"),
    (0x20, "MAP_ANONYMOUS"),
    (0x100, "MAP_GROWSDOWN"),
    (0x800, "MAP_DENYWRITE"),
    (0x1000, "MAP_EXECUTABLE"),
    (0x2000, "MAP_LOCKED"),
    (0x4000, "MAP_NORESERVE"),
    (0x8000, "MAP_POPULATE"),
    (0x10000, "MAP_NONBLOCK"),
    (0x20000, "MAP_STACK"),
    (0x40000, "MAP_HUGETLB"),
    (0x80000, "MAP_SYNC"),
    (0x100000, "MAP_FIXED_NOREPLACE"),
];
const WAIT: &[(u64, &str)] = &[
    (1, "WNOHANG"),
    (2, "WSTOPPED"),
    (4, "WEXITED"),
    (8, "WCONTINUED"),
    (0x0100_0000, "WNOWAIT"),
    (0x2000_0000, "__WNOTHREAD"),
    (0x4000_0000, "__WALL"),
    (0x8000_0000, "__WCLONE"),
];
const WHENCE: &[(u64, &str)] = &[
    (0, "SEEK_SET"),
    (1, "SEEK_CUR"),
    (2, "SEEK_END"),
    (3, "SEEK_DATA"),
    (4, "SEEK_HOLE"),
];
const ACCESS: &[(u64, &str)] = &[(4, "R_OK"), (2, "W_OK"), (1, "X_OK")];
const AT: &[(u64, &str)] = &[
    (0x100, "AT_SYMLINK_NOFOLLOW"),
    (0x200, "AT_REMOVEDIR"),
    (0x400, "AT_SYMLINK_FOLLOW"),
    (0x800, "AT_NO_AUTOMOUNT"),
    (0x1000, "AT_EMPTY_PATH"),
];
const FCNTL: &[(u64, &str)] = &[
    (0, "F_DUPFD"),
    (1, "F_GETFD"),
    (2, "F_SETFD"),
    (3, "F_GETFL"),
    (4, "F_SETFL"),
    (5, "F_GETLK"),
    (6, "F_SETLK"),
    (7, "F_SETLKW"),
    (8, "F_SETOWN"),
    (9, "F_GETOWN"),
    (1030, "F_DUPFD_CLOEXEC"),
];
const IOCTL: &[(u64, &str)] = &[
    (0x5401, "TCGETS"),
    (0x5402, "TCSETS"),
    (0x5403, "TCSETSW"),
    (0x5404, "TCSETSF"),
    (0x540f, "TIOCGPGRP"),
    (0x5410, "TIOCSPGRP"),
    (0x5413, "TIOCGWINSZ"),
    (0x5414, "TIOCSWINSZ"),
    (0x541b, "FIONREAD"),
    (0x5421, "FIONBIO"),
];
const SIGHOW: &[(u64, &str)] = &[(0, "SIG_BLOCK"), (1, "SIG_UNBLOCK"), (2, "SIG_SETMASK")];
const CLOCK: &[(u64, &str)] = &[
    (0, "CLOCK_REALTIME"),
    (1, "CLOCK_MONOTONIC"),
    (2, "CLOCK_PROCESS_CPUTIME_ID"),
    (3, "CLOCK_THREAD_CPUTIME_ID"),
    (4, "CLOCK_MONOTONIC_RAW"),
    (5, "CLOCK_REALTIME_COARSE"),
    (6, "CLOCK_MONOTONIC_COARSE"),
    (7, "CLOCK_BOOTTIME"),
];
const FUTEX: &[(u64, &str)] = &[
    (0, "FUTEX_WAIT"),
    (1, "FUTEX_WAKE"),
    (3, "FUTEX_REQUEUE"),
    (4, "FUTEX_CMP_REQUEUE"),
    (5, "FUTEX_WAKE_OP"),
    (6, "FUTEX_LOCK_PI"),
    (7, "FUTEX_UNLOCK_PI"),
    (9, "FUTEX_WAIT_BITSET"),
    (10, "FUTEX_WAKE_BITSET"),
];
const ARCH_PRCTL: &[(u64, &str)] = &[
    (0x1001, "ARCH_SET_GS"),
    (0x1002, "ARCH_SET_FS"),
    (0x1003, "ARCH_GET_FS"),
    (0x1004, "ARCH_GET_GS"),
    (0x1011, "ARCH_GET_CPUID"),
    (0x1012, "ARCH_SET_CPUID"),
];
const CLONE: &[(u64, &str)] = &[
    (0x100, "CLONE_VM"),
    (0x200, "CLONE_FS"),
    (0x400, "CLONE_FILES"),
    (0x800, "CLONE_SIGHAND"),
    (0x1000, "CLONE_PIDFD"),
    (0x2000, "CLONE_PTRACE"),
    (0x4000, "CLONE_VFORK"),
    (0x8000, "CLONE_PARENT"),
    (0x10000, "CLONE_THREAD"),
    (0x20000, "CLONE_NEWNS"),
    (0x40000, "CLONE_SYSVSEM"),
    (0x80000, "CLONE_SETTLS"),
    (0x100000, "CLONE_PARENT_SETTID"),
    (0x200000, "CLONE_CHILD_CLEARTID"),
    (0x400000, "CLONE_DETACHED"),
    (0x800000, "CLONE_UNTRACED"),
    (0x1000000, "CLONE_CHILD_SETTID"),
    (0x2000000, "CLONE_NEWCGROUP"),
    (0x4000000, "CLONE_NEWUTS"),
    (0x8000000, "CLONE_NEWIPC"),
    (0x10000000, "CLONE_NEWUSER"),
    (0x20000000, "CLONE_NEWPID"),
    (0x40000000, "CLONE_NEWNET"),
    (0x80000000, "CLONE_IO"),
];
const SIGNALS: [&str; 31] = [
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn sc(nr: u16, args: &[u64], result: Option<u64>, s: Option<(u8, &[u8])>) -> Syscall {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        Syscall {
            nr,
            args: a,
            result,
            string: s.map(|(index, b)| StringArg {
                index,
                bytes: b.to_vec(),
                cut: false,
                fault: false,
            }),
        }
    }

    fn neg(e: i64) -> Option<u64> {
        Some((-e) as u64)
    }

    #[test]
    fn calls_read_as_strace_prints_them() {
        let at = (-100i64) as u64;
        let s = sc(257, &[at, 0x1000, 0], Some(3), Some((1, b"/etc/motd")));
        assert_eq!(call(&s), r#"openat(AT_FDCWD, "/etc/motd", O_RDONLY)"#);
        assert_eq!(result(257, s.result), "3");
        let s = sc(
            257,
            &[at, 0x1000, 0o2001101, 0o644],
            neg(2),
            Some((1, b"/tmp/x")),
        );
        assert_eq!(
            call(&s),
            r#"openat(AT_FDCWD, "/tmp/x", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0644)"#
        );
        assert_eq!(
            result(257, s.result),
            "-1 ENOENT (No such file or directory)"
        );
        let s = sc(1, &[1, 0x2000, 6], Some(6), Some((1, b"hello\n")));
        assert_eq!(call(&s), r#"write(1, "hello\n", 6)"#);
        let s = sc(
            9,
            &[0, 8192, 3, 0x22, u64::MAX, 0],
            Some(0x7f0000001000),
            None,
        );
        assert_eq!(
            call(&s),
            "mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0x0)"
        );
        assert_eq!(result(9, s.result), "0x7f0000001000");
        let s = sc(56, &[0x1200011, 0, 0, 0x7f00, 0], Some(42), None);
        assert_eq!(
            call(&s),
            "clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, \
             child_tidptr=0x7f00)"
        );
        let s = sc(61, &[u64::MAX, 0x10, 0, 0], Some(42), None);
        assert_eq!(call(&s), "wait4(-1, 0x10, 0, NULL)");
        let s = sc(61, &[5, 0, 3, 0], neg(10), None);
        assert_eq!(call(&s), "wait4(5, NULL, WNOHANG|WSTOPPED, NULL)");
        assert_eq!(result(61, s.result), "-1 ECHILD (No child processes)");
        assert_eq!(call(&sc(231, &[3], None, None)), "exit_group(3)");
        assert_eq!(result(231, None), "?");
        assert_eq!(call(&sc(62, &[7, 15], Some(0), None)), "kill(7, SIGTERM)");
        assert_eq!(
            call(&sc(21, &[0x10, 6], Some(0), Some((0, b"/bin")))),
            r#"access("/bin", R_OK|W_OK)"#
        );
        assert_eq!(
            call(&sc(8, &[3, (-4i64) as u64, 2], Some(0), None)),
            "lseek(3, -4, SEEK_END)"
        );
        assert_eq!(call(&sc(39, &[], Some(1), None)), "getpid()");
        assert_eq!(
            call(&sc(500, &[1, 2], neg(38), None)),
            "syscall_500(0x1, 0x2, 0x0, 0x0, 0x0, 0x0)"
        );
        assert_eq!(result(500, neg(38)), "-1 ENOSYS (Function not implemented)");
        assert_eq!(
            result(61, neg(512)),
            "? ERESTARTSYS (To be restarted if SA_RESTART is set)"
        );
        assert_eq!(
            call(&sc(202, &[0x10, 128 | 1, 1], Some(0), None)),
            "futex(0x10, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0)"
        );
    }

    #[test]
    fn strings_are_quoted_and_cut_as_strace_does() {
        assert_eq!(quote(b"a\"b\\c\n\t", false), r#""a\"b\\c\n\t""#);
        assert_eq!(quote(b"\x1b[H\x001", false), r#""\33[H\0001""#);
        assert_eq!(quote(b"abc", true), r#""abc"..."#);
        // A buffer is cut at 32 bytes; a read buffer shows only what was read.
        let long = [b'x'; 40];
        let s = sc(1, &[1, 0x10, 40], Some(40), Some((1, &long)));
        assert_eq!(call(&s), format!("write(1, \"{}\"..., 40)", "x".repeat(32)));
        let s = sc(0, &[3, 0x10, 40], neg(11), Some((1, b"")));
        assert_eq!(call(&s), "read(3, 0x10, 40)");
        // A bad pointer is shown as its address.
        let mut s = sc(2, &[0x20, 0], neg(14), Some((0, b"")));
        s.string.as_mut().unwrap().fault = true;
        assert_eq!(call(&s), "open(0x20, O_RDONLY)");
        assert_eq!(call(&sc(2, &[0, 0], neg(14), None)), "open(NULL, O_RDONLY)");
    }

    #[test]
    fn names_and_numbers_round_trip() {
        assert_eq!(number("openat"), Some(257));
        assert_eq!(name(257), "openat");
        assert_eq!(number("nosuchcall"), None);
        assert_eq!(errno(2), Some(("ENOENT", "No such file or directory")));
        assert_eq!(signal(17), "SIGCHLD");
        assert_eq!(signal(34), "SIGRT_2");
    }
}
