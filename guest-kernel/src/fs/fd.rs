//! The per-process file descriptor table: descriptor number -> (open file description, close-on-exec).
#![deny(unsafe_code)]

use super::FileRef;
use alloc::vec::Vec;
use kcore::errno::Errno;

/// Most descriptors a process may have open (RLIMIT_NOFILE).
pub const MAX_FDS: usize = 1024;

#[derive(Clone)]
struct Slot {
    file: FileRef,
    cloexec: bool,
}

/// A file descriptor table.
#[derive(Clone, Default)]
pub struct FdTable {
    slots: Vec<Option<Slot>>,
}

impl FdTable {
    /// Installs `file` at the lowest free descriptor.
    pub fn insert(&mut self, file: FileRef, cloexec: bool) -> Result<usize, Errno> {
        let fd = match self.slots.iter().position(|s| s.is_none()) {
            Some(i) => i,
            None if self.slots.len() < MAX_FDS => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => return Err(Errno::EMFILE),
        };
        self.slots[fd] = Some(Slot { file, cloexec });
        Ok(fd)
    }

    /// The open file behind `fd`.
    pub fn get(&self, fd: i64) -> Result<FileRef, Errno> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.slots.get(i))
            .and_then(|s| s.as_ref())
            .map(|s| s.file.clone())
            .ok_or(Errno::EBADF)
    }

    /// Closes `fd`.
    pub fn close(&mut self, fd: i64) -> Result<(), Errno> {
        let slot = usize::try_from(fd)
            .ok()
            .and_then(|i| self.slots.get_mut(i))
            .ok_or(Errno::EBADF)?;
        slot.take().map(|_| ()).ok_or(Errno::EBADF)
    }

    /// Installs `file` at the lowest free descriptor >= `min` (F_DUPFD).
    pub fn insert_from(
        &mut self,
        min: usize,
        file: FileRef,
        cloexec: bool,
    ) -> Result<usize, Errno> {
        if min >= MAX_FDS {
            return Err(Errno::EINVAL);
        }
        let fd = (min..MAX_FDS)
            .find(|&i| self.slots.get(i).is_none_or(|s| s.is_none()))
            .ok_or(Errno::EMFILE)?;
        Ok(self.install(fd, file, cloexec).map_or(fd, |_| fd))
    }

    /// Puts `file` at descriptor `fd`, returning what was there (dup2).
    pub fn install(&mut self, fd: usize, file: FileRef, cloexec: bool) -> Option<FileRef> {
        if self.slots.len() <= fd {
            self.slots.resize(fd + 1, None);
        }
        self.slots[fd]
            .replace(Slot { file, cloexec })
            .map(|s| s.file)
    }

    /// FD_CLOEXEC of `fd`.
    pub fn cloexec(&self, fd: i64) -> bool {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.slots.get(i))
            .and_then(|s| s.as_ref())
            .is_some_and(|s| s.cloexec)
    }

    /// Sets FD_CLOEXEC of `fd`.
    pub fn set_cloexec(&mut self, fd: i64, on: bool) {
        if let Some(Some(s)) = usize::try_from(fd).ok().and_then(|i| self.slots.get_mut(i)) {
            s.cloexec = on;
        }
    }

    /// Closes every close-on-exec descriptor (execve).
    pub fn close_on_exec(&mut self) {
        for s in self.slots.iter_mut() {
            if s.as_ref().is_some_and(|s| s.cloexec) {
                *s = None;
            }
        }
    }
}
