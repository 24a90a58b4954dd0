//! The per-process file descriptor table: descriptor number -> (open file description, close-on-exec).
//! A table is a handle: threads made with CLONE_FILES share one (`share`), fork copies it (`Clone`).
#![deny(unsafe_code)]

use super::FileRef;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use kcore::errno::Errno;

/// Most descriptors a process may have open (RLIMIT_NOFILE).
pub const MAX_FDS: usize = 1024;

#[derive(Clone)]
struct Slot {
    file: FileRef,
    cloexec: bool,
}

/// A file descriptor table (a handle on it: see `share`).
#[derive(Default)]
pub struct FdTable {
    table: Rc<RefCell<Slots>>,
}

/// A copy of the table with the same open file descriptions (fork, clone without CLONE_FILES).
impl Clone for FdTable {
    fn clone(&self) -> Self {
        FdTable {
            table: Rc::new(RefCell::new(self.table.borrow().clone())),
        }
    }
}

impl FdTable {
    /// The same table (CLONE_FILES): a descriptor opened or closed through one handle is so in all.
    pub fn share(&self) -> FdTable {
        FdTable {
            table: self.table.clone(),
        }
    }

    /// Installs `file` at the lowest free descriptor.
    pub fn insert(&mut self, file: FileRef, cloexec: bool) -> Result<usize, Errno> {
        self.table.borrow_mut().insert(file, cloexec)
    }

    /// The open file behind `fd`.
    pub fn get(&self, fd: i64) -> Result<FileRef, Errno> {
        self.table.borrow().get(fd)
    }

    /// The open descriptors and their files, in order (/proc/PID/fd).
    pub fn open_fds(&self) -> Vec<(usize, FileRef)> {
        self.table
            .borrow()
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s.file.clone())))
            .collect()
    }

    /// Closes `fd`.
    pub fn close(&mut self, fd: i64) -> Result<(), Errno> {
        let slot = self.table.borrow_mut().take(fd)?;
        drop(slot);
        Ok(())
    }

    /// Installs `file` at the lowest free descriptor >= `min` (F_DUPFD).
    pub fn insert_from(
        &mut self,
        min: usize,
        file: FileRef,
        cloexec: bool,
    ) -> Result<usize, Errno> {
        self.table.borrow_mut().insert_from(min, file, cloexec)
    }

    /// Puts `file` at descriptor `fd`, returning what was there (dup2).
    pub fn install(&mut self, fd: usize, file: FileRef, cloexec: bool) -> Option<FileRef> {
        self.table.borrow_mut().install(fd, file, cloexec)
    }

    /// FD_CLOEXEC of `fd`.
    pub fn cloexec(&self, fd: i64) -> bool {
        self.table.borrow().cloexec(fd)
    }

    /// Sets FD_CLOEXEC of `fd`.
    pub fn set_cloexec(&mut self, fd: i64, on: bool) {
        self.table.borrow_mut().set_cloexec(fd, on)
    }

    /// Closes every close-on-exec descriptor (execve). The table stops being shared first (Linux's
    /// unshare_files in exec).
    pub fn close_on_exec(&mut self) {
        if Rc::strong_count(&self.table) > 1 {
            *self = self.clone();
        }
        let closed = self.table.borrow_mut().take_cloexec();
        drop(closed);
    }
}

#[derive(Clone, Default)]
struct Slots {
    slots: Vec<Option<Slot>>,
}

impl Slots {
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
        // Each process may hold MAX_FDS, but processes are many: open file descriptions stop where
        // the kernel heap's reserve begins (ENOMEM, as Linux's open when its file cache is empty).
        if !crate::mm::heap::can_spare(0) {
            return Err(Errno::ENOMEM);
        }
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

    /// Takes `fd`'s slot out (the caller drops it with the table no longer borrowed).
    fn take(&mut self, fd: i64) -> Result<Slot, Errno> {
        let slot = usize::try_from(fd)
            .ok()
            .and_then(|i| self.slots.get_mut(i))
            .ok_or(Errno::EBADF)?;
        slot.take().ok_or(Errno::EBADF)
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

    /// Takes every close-on-exec descriptor out.
    fn take_cloexec(&mut self) -> Vec<Slot> {
        let mut out = Vec::new();
        for s in self.slots.iter_mut() {
            if s.as_ref().is_some_and(|s| s.cloexec) {
                out.extend(s.take());
            }
        }
        out
    }
}
