//! A process's working directory and umask (Linux's `fs_struct`): a handle that threads made with CLONE_FS share
//! (`share`: a chdir in one is seen by all) and fork copies (`Clone`).
//!
//! The working directory is the directory itself when it is on a mounted filesystem (an open
//! [`super::ext2file::Ext2File`], which also keeps its inode and mount alive, as Linux's `pwd` path
//! does), so relative paths resolve from it wherever it is renamed or moved; beside it the
//! normalized path text it was entered by, which getcwd reports while that text still names it.
#![deny(unsafe_code)]

use super::file::FileOps;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

/// A working directory: its path text (absolute, normalized) and, on a mounted filesystem, the
/// open directory.
#[derive(Clone)]
pub struct Cwd {
    pub text: Vec<u8>,
    pub dir: Option<Rc<dyn FileOps>>,
}

/// The working directory and the file mode creation mask.
pub struct FsContext {
    cwd: Rc<RefCell<Cwd>>,
    umask: Rc<Cell<u32>>,
}

impl Default for FsContext {
    fn default() -> Self {
        FsContext {
            cwd: Rc::new(RefCell::new(Cwd {
                text: b"/".to_vec(),
                dir: None,
            })),
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
    /// The working directory's path text.
    pub fn cwd(&self) -> Vec<u8> {
        self.cwd.borrow().text.clone()
    }
    /// The working directory.
    pub fn get(&self) -> Cwd {
        self.cwd.borrow().clone()
    }
    /// Changes the working directory.
    pub fn set_cwd(&self, cwd: Cwd) {
        *self.cwd.borrow_mut() = cwd;
    }
}
