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
    #[allow(dead_code)] // Read by close_on_exec (execve, processes issue).
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

    /// Closes every close-on-exec descriptor (execve).
    #[allow(dead_code)] // execve comes with the processes issue.
    pub fn close_on_exec(&mut self) {
        for s in self.slots.iter_mut() {
            if s.as_ref().is_some_and(|s| s.cloexec) {
                *s = None;
            }
        }
    }
}
