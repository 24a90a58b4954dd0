//! POSIX advisory record locks (fcntl F_GETLK, F_SETLK, F_SETLKW), as Linux's fs/locks.c keeps them
//! for one kind of owner, the process: byte ranges of a file, shared (read) or exclusive (write). A
//! process's own locks never conflict with its new request: the request replaces whatever of them it
//! overlaps (splitting them), and touching ranges of the same type merge. Pure bookkeeping, tested on
//! the host; the kernel keys files by (device, inode) and blocks F_SETLKW on a wait queue.

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

/// One held lock: the file, its owner (a process id), the byte range `[start, end)` (`end` u64::MAX:
/// to the end of the file, whatever its size) and its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lock {
    pub file: u64,
    pub owner: u32,
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

/// Every lock in the system.
#[derive(Default, Debug)]
pub struct LockTable {
    locks: Vec<Lock>,
}

impl LockTable {
    pub const fn new() -> Self {
        LockTable { locks: Vec::new() }
    }

    /// The first lock of another owner that a `kind` request on `[start, end)` conflicts with (F_GETLK;
    /// F_SETLK fails with EAGAIN when there is one).
    pub fn conflict(
        &self,
        file: u64,
        owner: u32,
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
    pub fn set(&mut self, file: u64, owner: u32, start: u64, end: u64, kind: Kind) {
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

    /// Drops every lock `owner` holds on `file` (a close of any descriptor of it, as POSIX says).
    pub fn release_file(&mut self, file: u64, owner: u32) -> bool {
        let n = self.locks.len();
        self.locks.retain(|l| l.file != file || l.owner != owner);
        self.locks.len() != n
    }

    /// Drops every lock `owner` holds (its exit).
    pub fn release_owner(&mut self, owner: u32) -> bool {
        let n = self.locks.len();
        self.locks.retain(|l| l.owner != owner);
        self.locks.len() != n
    }

    /// The locks `owner` holds on `file`, sorted by start.
    pub fn held(&self, file: u64, owner: u32) -> Vec<Lock> {
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
}
