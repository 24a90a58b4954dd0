//! Linux wait statuses and wait4's pid forms: the encoding user space decodes with WIFEXITED & co.

/// Status of a process that called exit(`code`).
pub const fn exited(code: i32) -> i32 {
    (code & 0xff) << 8
}

/// Status of a process killed by `sig` (`core`: a core dump was written).
pub const fn signaled(sig: u32, core: bool) -> i32 {
    (sig & 0x7f) as i32 | if core { 0x80 } else { 0 }
}

/// Status of a process stopped by `sig` (WIFSTOPPED).
pub const fn stopped(sig: u32) -> i32 {
    ((sig as i32) << 8) | 0x7f
}

/// Status reported for a continued process (WIFCONTINUED).
pub const CONTINUED: i32 = 0xffff;

pub const WNOHANG: u32 = 1;
pub const WUNTRACED: u32 = 2;
pub const WCONTINUED: u32 = 8;
const WNOTHREAD: u32 = 0x2000_0000;
const WALL: u32 = 0x4000_0000;
const WCLONE: u32 = 0x8000_0000;
/// Options wait4 accepts.
pub const VALID_OPTIONS: u32 = WNOHANG | WUNTRACED | WCONTINUED | WNOTHREAD | WALL | WCLONE;

/// Which children a wait4 `pid` argument selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selector {
    /// pid > 0: that child.
    Pid(u32),
    /// -1: any child.
    Any,
    /// 0: children in the caller's process group; < -1: children in group -pid.
    Group(u32),
}

/// Parses wait4's pid argument; `None` for INT_MIN (ESRCH). `own_pgid` resolves 0.
pub fn selector(pid: i32, own_pgid: u32) -> Option<Selector> {
    match pid {
        i32::MIN => None,
        -1 => Some(Selector::Any),
        0 => Some(Selector::Group(own_pgid)),
        p if p < 0 => Some(Selector::Group(p.unsigned_abs())),
        p => Some(Selector::Pid(p as u32)),
    }
}

impl Selector {
    /// Whether a child with `pid` in group `pgid` matches.
    pub fn matches(self, pid: u32, pgid: u32) -> bool {
        match self {
            Selector::Pid(p) => p == pid,
            Selector::Any => true,
            Selector::Group(g) => g == pgid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wifexited(s: i32) -> bool {
        s & 0x7f == 0
    }
    fn wexitstatus(s: i32) -> i32 {
        (s >> 8) & 0xff
    }
    fn wifsignaled(s: i32) -> bool {
        ((s & 0x7f) + 1) as i8 >> 1 > 0
    }

    #[test]
    fn statuses_decode_like_libc() {
        assert!(wifexited(exited(3)) && wexitstatus(exited(3)) == 3);
        assert_eq!(exited(256 + 7), 7 << 8);
        assert!(wifsignaled(signaled(9, false)) && !wifexited(signaled(9, false)));
        assert_eq!(signaled(11, true), 0x8b);
        assert_eq!(stopped(19) & 0xff, 0x7f);
        assert!(!wifsignaled(stopped(19)));
    }

    #[test]
    fn pid_forms() {
        assert_eq!(selector(i32::MIN, 5), None);
        assert_eq!(selector(-1, 5), Some(Selector::Any));
        assert_eq!(selector(0, 5), Some(Selector::Group(5)));
        assert_eq!(selector(-9, 5), Some(Selector::Group(9)));
        assert_eq!(selector(4, 5), Some(Selector::Pid(4)));
        assert!(Selector::Group(9).matches(3, 9) && !Selector::Group(9).matches(3, 8));
    }
}
