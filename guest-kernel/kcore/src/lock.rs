//! Advisory file locks as Linux's fs/locks.c keeps them: byte ranges of a file, shared (read) or
//! exclusive (write), held by an owner. For fcntl's record locks (F_SETLK...) the owner is a process;
//! for open-file-description locks (F_OFD_SETLK...) it is the open file description ([`OFD`] set in
//! the owner), and the two kinds share one table, so they conflict with each other as on Linux. flock(2)
//! locks live in a table of their own (whole-file ranges, owned by the description). An owner's own locks
//! never conflict with its new request: the request replaces whatever of them it overlaps (splitting
//! them), and touching ranges of the same type merge. F_SETLKW's deadlock detection follows who waits
//! for whom ([`LockTable::deadlock`], Linux's posix_locks_deadlock). Pure bookkeeping, tested on the
//! host; the kernel keys files by (device, inode) and blocks F_SETLKW on a wait queue.

extern crate alloc;
use alloc::vec::Vec;

/// What a lock (or a request) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
    /// Only in requests: release the range.
    Unlock,
}

/// The owner bit of an open file description's locks (the rest is the description's id); without it
/// the owner is a process id.
pub const OFD: u64 = 1 << 63;

/// How many waits-for steps the deadlock search follows (Linux's MAX_DEADLK_ITERATIONS).
const MAX_DEADLK_ITERATIONS: usize = 10;

/// One held lock: the file, its owner (a process id, or [`OFD`] | a description's id), the byte range `[start, end)` (`end` u64::MAX:
/// to the end of the file, whatever its size) and its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lock {
    pub file: u64,
    pub owner: u64,
    pub start: u64,
    pub end: u64,
    pub kind: Kind,
}

/// The range of `struct flock` fields already made absolute: `start` (>= 0 after l_whence) and
/// `l_len` (0: to the end; negative: the bytes before `start`). EINVAL cases give None.
pub fn range(start: i64, len: i64) -> Option<(u64, u64)> {
    if start < 0 {
        return None;
    }
    match len {
        0 => Some((start as u64, u64::MAX)),
        l if l > 0 => Some((start as u64, (start as u64).checked_add(l as u64)?)),
        l => {
            let s = start.checked_add(l)?;
            (s >= 0).then_some((s as u64, start as u64))
        }
    }
}

fn overlaps(a: &Lock, start: u64, end: u64) -> bool {
    a.start < end && start < a.end
}

/// Every lock in the system, and the requests blocked in F_SETLKW.
#[derive(Default, Debug)]
pub struct LockTable {
    locks: Vec<Lock>,
    /// Blocked requests (a lock not held yet), one per sleeping caller.
    waiting: Vec<Lock>,
}

impl LockTable {
    pub const fn new() -> Self {
        LockTable {
            locks: Vec::new(),
            waiting: Vec::new(),
        }
    }

    /// How many locks are held (all files, all owners).
    pub fn len(&self) -> usize {
        self.locks.len()
    }

    /// Whether no lock is held.
    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }

    /// Whether `owner` sleeping for `[start, end)` of `file` would wait for itself: the owner of the
    /// lock in the way waits (directly or through others, at most [`MAX_DEADLK_ITERATIONS`] steps) for
    /// a lock of `owner`. As on Linux, only process owners are followed: a description's locks
    /// (F_OFD_SETLKW) are never EDEADLK.
    pub fn deadlock(&self, file: u64, owner: u64, start: u64, end: u64, kind: Kind) -> bool {
        if owner & OFD != 0 {
            return false;
        }
        let Some(mut blocker) = self.conflict(file, owner, start, end, kind) else {
            return false;
        };
        for _ in 0..MAX_DEADLK_ITERATIONS {
            if blocker.owner & OFD != 0 {
                return false;
            }
            let Some(w) = self.waiting.iter().find(|w| w.owner == blocker.owner) else {
                return false;
            };
            match self.conflict(w.file, w.owner, w.start, w.end, w.kind) {
                Some(next) if next.owner == owner => return true,
                Some(next) => blocker = next,
                None => return false,
            }
        }
        false
    }

    /// `req` (its owner about to sleep in F_SETLKW) waits.
    pub fn block(&mut self, req: Lock) {
        self.waiting.push(req);
    }

    /// `req` waits no more (it got its lock, failed, or was interrupted).
    pub fn unblock(&mut self, req: &Lock) {
        if let Some(i) = self.waiting.iter().position(|w| w == req) {
            self.waiting.swap_remove(i);
        }
    }

    /// The first lock of another owner that a `kind` request on `[start, end)` conflicts with (F_GETLK;
    /// F_SETLK fails with EAGAIN when there is one).
    pub fn conflict(
        &self,
        file: u64,
        owner: u64,
        start: u64,
        end: u64,
        kind: Kind,
    ) -> Option<Lock> {
        if kind == Kind::Unlock {
            return None;
        }
        self.locks
            .iter()
            .find(|l| {
                l.file == file
                    && l.owner != owner
                    && overlaps(l, start, end)
                    && (kind == Kind::Write || l.kind == Kind::Write)
            })
            .copied()
    }

    /// Sets (or with `Kind::Unlock` releases) `owner`'s lock on `[start, end)`; the caller checked
    /// that nothing conflicts.
    pub fn set(&mut self, file: u64, owner: u64, start: u64, end: u64, kind: Kind) {
        let mut kept = Vec::with_capacity(self.locks.len() + 2);
        let (mut start, mut end) = (start, end);
        for l in self.locks.drain(..) {
            if l.file != file || l.owner != owner {
                kept.push(l);
                continue;
            }
            let touches = l.start <= end && start <= l.end;
            if l.kind == kind && touches {
                // Same type, overlapping or adjacent: merge into the request.
                start = start.min(l.start);
                end = end.max(l.end);
                continue;
            }
            if !overlaps(&l, start, end) {
                kept.push(l);
                continue;
            }
            // The request takes the overlapped part; what sticks out on either side stays.
            if l.start < start {
                kept.push(Lock { end: start, ..l });
            }
            if l.end > end {
                kept.push(Lock { start: end, ..l });
            }
        }
        if kind != Kind::Unlock {
            kept.push(Lock {
                file,
                owner,
                start,
                end,
                kind,
            });
        }
        self.locks = kept;
    }

    /// flock(2) on `file` by the description `owner` (the whole file): like Linux's flock_lock_inode,
    /// a conversion first drops the old lock, so a conversion that fails (EAGAIN) leaves none; the
    /// same type again is a no-op. Returns false when another description's lock is in the way (the
    /// request not granted).
    pub fn flock(&mut self, file: u64, owner: u64, kind: Kind) -> bool {
        if let Some(i) = self
            .locks
            .iter()
            .position(|l| l.file == file && l.owner == owner)
        {
            if self.locks[i].kind == kind {
                return true;
            }
            self.locks.swap_remove(i);
        }
        if kind == Kind::Unlock {
            return true;
        }
        if self.conflict(file, owner, 0, u64::MAX, kind).is_some() {
            return false;
        }
        self.locks.push(Lock {
            file,
            owner,
            start: 0,
            end: u64::MAX,
            kind,
        });
        true
    }

    /// Drops every lock `owner` holds on `file` (a close of any descriptor of it, as POSIX says).
    pub fn release_file(&mut self, file: u64, owner: u64) -> bool {
        let n = self.locks.len();
        self.locks.retain(|l| l.file != file || l.owner != owner);
        self.locks.len() != n
    }

    /// Drops every lock `owner` holds (its exit).
    pub fn release_owner(&mut self, owner: u64) -> bool {
        let n = self.locks.len();
        self.locks.retain(|l| l.owner != owner);
        self.locks.len() != n
    }

    /// The locks `owner` holds on `file`, sorted by start.
    pub fn held(&self, file: u64, owner: u64) -> Vec<Lock> {
        let mut v: Vec<Lock> = self
            .locks
            .iter()
            .filter(|l| l.file == file && l.owner == owner)
            .copied()
            .collect();
        v.sort_by_key(|l| l.start);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_flock_gives_them() {
        assert_eq!(range(10, 0), Some((10, u64::MAX)));
        assert_eq!(range(10, 5), Some((10, 15)));
        assert_eq!(range(10, -4), Some((6, 10)));
        assert_eq!(range(3, -4), None);
        assert_eq!(range(-1, 1), None);
    }

    #[test]
    fn readers_share_writers_exclude() {
        let mut t = LockTable::new();
        t.set(1, 100, 0, 10, Kind::Read);
        assert_eq!(t.conflict(1, 200, 5, 6, Kind::Read), None);
        let c = t.conflict(1, 200, 5, 6, Kind::Write).unwrap();
        assert_eq!((c.owner, c.start, c.end), (100, 0, 10));
        // Another file, or past the range, or the owner itself: no conflict.
        assert_eq!(t.conflict(2, 200, 0, 10, Kind::Write), None);
        assert_eq!(t.conflict(1, 200, 10, 20, Kind::Write), None);
        assert_eq!(t.conflict(1, 100, 0, 10, Kind::Write), None);
    }

    #[test]
    fn own_locks_split_and_merge() {
        let mut t = LockTable::new();
        t.set(1, 7, 0, u64::MAX, Kind::Write);
        t.set(1, 7, 10, 20, Kind::Read);
        let h = t.held(1, 7);
        assert_eq!(
            h.iter()
                .map(|l| (l.start, l.end, l.kind))
                .collect::<Vec<_>>(),
            vec![
                (0, 10, Kind::Write),
                (10, 20, Kind::Read),
                (20, u64::MAX, Kind::Write)
            ]
        );
        t.set(1, 7, 10, 20, Kind::Write);
        assert_eq!(t.held(1, 7).len(), 1, "{:?}", t.held(1, 7));
        t.set(1, 7, 5, 15, Kind::Unlock);
        let h = t.held(1, 7);
        assert_eq!(
            h.iter().map(|l| (l.start, l.end)).collect::<Vec<_>>(),
            vec![(0, 5), (15, u64::MAX)]
        );
        assert!(t.release_file(1, 7));
        assert!(t.held(1, 7).is_empty());
        t.set(1, 7, 0, 1, Kind::Read);
        t.set(2, 7, 0, 1, Kind::Read);
        assert!(t.release_owner(7));
        assert!(!t.release_owner(7));
    }

    #[test]
    fn description_locks_conflict_with_their_own_process() {
        let mut t = LockTable::new();
        t.set(1, 7, 0, 10, Kind::Write);
        assert!(t.conflict(1, OFD | 0x1000, 5, 6, Kind::Read).is_some());
        t.set(1, OFD | 0x1000, 20, 30, Kind::Read);
        assert!(t.conflict(1, 7, 25, 26, Kind::Write).is_some());
        assert!(t.conflict(1, OFD | 0x2000, 25, 26, Kind::Read).is_none());
    }

    #[test]
    fn waits_for_cycles_are_deadlocks() {
        let mut t = LockTable::new();
        t.set(1, 100, 0, 1, Kind::Write);
        t.set(1, 200, 1, 2, Kind::Write);
        // Nobody waits yet: 100 wanting 200's byte just sleeps.
        assert!(!t.deadlock(1, 100, 1, 2, Kind::Write));
        let req = Lock {
            file: 1,
            owner: 100,
            start: 1,
            end: 2,
            kind: Kind::Write,
        };
        t.block(req);
        // 200 wanting 100's byte would wait for a process that waits for 200.
        assert!(t.deadlock(1, 200, 0, 1, Kind::Write));
        // Through a third process: 300 holds byte 2, 200 waits for it, 300 wants 100's byte.
        t.unblock(&req);
        t.set(1, 300, 2, 3, Kind::Write);
        t.block(req);
        let r200 = Lock {
            file: 1,
            owner: 200,
            start: 2,
            end: 3,
            kind: Kind::Write,
        };
        t.block(r200);
        assert!(t.deadlock(1, 300, 0, 1, Kind::Write));
        t.unblock(&r200);
        assert!(!t.deadlock(1, 300, 0, 1, Kind::Write));
        // Description owners are never deadlocks.
        assert!(!t.deadlock(1, OFD | 8, 0, 1, Kind::Write));
    }

    #[test]
    fn flock_converts_by_dropping_first() {
        let mut t = LockTable::new();
        assert!(t.flock(1, OFD | 1, Kind::Read));
        assert!(t.flock(1, OFD | 2, Kind::Read));
        // An upgrade while another shares it fails, and the old shared lock is gone (Linux).
        assert!(!t.flock(1, OFD | 1, Kind::Write));
        assert!(t.held(1, OFD | 1).is_empty());
        assert!(t.flock(1, OFD | 2, Kind::Write));
        assert!(!t.flock(1, OFD | 1, Kind::Read));
        assert!(t.flock(1, OFD | 2, Kind::Unlock));
        assert!(t.flock(1, OFD | 1, Kind::Read));
    }
}
