//! `KCell`: a `RefCell` usable in statics. The kernel runs on one CPU with interrupts off except in the
//! idle task's halt and in user mode, where no cell is borrowed, so interrupt handlers never find a cell
//! borrowed by the code they interrupted, and a borrow-checked cell is enough.

use core::cell::{Ref, RefCell, RefMut};

/// A `RefCell` that may live in a `static` (single CPU only).
pub struct KCell<T>(RefCell<T>);

// SAFETY: the kernel is single-CPU; interrupts that run while a cell is borrowed never borrow it.
unsafe impl<T> Sync for KCell<T> {}

impl<T> KCell<T> {
    pub const fn new(v: T) -> Self {
        KCell(RefCell::new(v))
    }

    pub fn borrow(&self) -> Ref<'_, T> {
        self.0.borrow()
    }

    pub fn borrow_mut(&self) -> RefMut<'_, T> {
        self.0.borrow_mut()
    }

    pub fn try_borrow_mut(&self) -> Result<RefMut<'_, T>, core::cell::BorrowMutError> {
        self.0.try_borrow_mut()
    }

    pub fn try_borrow(&self) -> Result<Ref<'_, T>, core::cell::BorrowError> {
        self.0.try_borrow()
    }
}

pub mod task;
pub mod waitqueue;
pub use waitqueue::WaitQueue;
