//! A process's working directory and umask (Linux's `fs_struct`): a handle that threads made with CLONE_FS share
//! (`share`: a chdir in one is seen by all) and fork copies (`Clone`).
#![deny(unsafe_code)]

use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

/// The working directory (an absolute, normalized path) and the file mode creation mask.
pub struct FsContext {
    cwd: Rc<RefCell<Vec<u8>>>,
    umask: Rc<Cell<u32>>,
}

impl Default for FsContext {
    fn default() -> Self {
        FsContext {
            cwd: Rc::new(RefCell::new(b"/".to_vec())),
            // Linux's default for init.
            umask: Rc::new(Cell::new(0o022)),
        }
    }
}

/// A copy (fork, clone without CLONE_FS): later changes are the child's own.
impl Clone for FsContext {
    fn clone(&self) -> Self {
        FsContext {
            cwd: Rc::new(RefCell::new(self.cwd.borrow().clone())),
            umask: Rc::new(Cell::new(self.umask.get())),
        }
    }
}

impl FsContext {
    /// The same context (CLONE_FS).
    pub fn share(&self) -> FsContext {
        FsContext {
            cwd: self.cwd.clone(),
            umask: self.umask.clone(),
        }
    }
    /// The file mode creation mask.
    pub fn umask(&self) -> u32 {
        self.umask.get()
    }
    /// Sets the mask, returning the old one.
    pub fn set_umask(&self, mask: u32) -> u32 {
        self.umask.replace(mask & 0o777)
    }
    /// The working directory.
    pub fn cwd(&self) -> Vec<u8> {
        self.cwd.borrow().clone()
    }
    /// Changes the working directory (an absolute, normalized path).
    pub fn set_cwd(&self, path: Vec<u8>) {
        *self.cwd.borrow_mut() = path;
    }
}
