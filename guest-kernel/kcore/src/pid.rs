//! Process ids as Linux allocates them: cyclic from the last one handed out up to `pid_max`, wrapping to
//! [`RESERVED_PIDS`] (pids below it are only handed out before the first wrap), never a pid still in use
//! (a zombie's included); none free -> `None` (fork returns EAGAIN).

/// Linux's default `pid_max`.
pub const PID_MAX: u32 = 32768;
/// After the first wrap, allocation restarts here (kernel/pid.c RESERVED_PIDS).
pub const RESERVED_PIDS: u32 = 300;

/// The cyclic pid allocator.
#[derive(Debug)]
pub struct PidAlloc {
    last: u32,
    max: u32,
}

impl PidAlloc {
    /// An allocator with nothing handed out yet (the first pid is 1).
    pub const fn new(max: u32) -> Self {
        PidAlloc { last: 0, max }
    }

    /// The next free pid after the last one, skipping those `in_use` says are taken.
    pub fn alloc(&mut self, in_use: impl Fn(u32) -> bool) -> Option<u32> {
        let mut candidate = self.last + 1;
        let span = self.max.saturating_sub(1);
        for _ in 0..span {
            if candidate >= self.max {
                candidate = RESERVED_PIDS.min(self.max - 1);
            }
            if !in_use(candidate) {
                self.last = candidate;
                return Some(candidate);
            }
            candidate += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn pids_are_cyclic_and_skip_used_ones() {
        let mut a = PidAlloc::new(PID_MAX);
        let used: BTreeSet<u32> = [3].into_iter().collect();
        assert_eq!(a.alloc(|p| used.contains(&p)), Some(1));
        assert_eq!(a.alloc(|p| used.contains(&p)), Some(2));
        assert_eq!(a.alloc(|p| used.contains(&p)), Some(4));
        // A freed pid is not reused before the wrap.
        assert_eq!(a.alloc(|_| false), Some(5));
    }

    #[test]
    fn wraps_to_reserved_pids_and_reports_exhaustion() {
        let mut a = PidAlloc::new(310);
        for want in 1..310 {
            assert_eq!(a.alloc(|_| false), Some(want));
        }
        assert_eq!(
            a.alloc(|p| p == 300),
            Some(301),
            "wraps past 300, which is in use"
        );
        assert_eq!(a.alloc(|_| true), None);
        let mut b = PidAlloc::new(310);
        b.last = 309;
        assert_eq!(b.alloc(|p| p < 305), Some(305));
    }
}
