//! Frames owned by kernel objects that keep file data in memory (tmpfs pages): a safe handle that
//! gives the frame's bytes through the direct map and frees the frame when dropped.

use super::{frame, phys_slice_mut, PAGE_SIZE};

/// One 4 KiB frame owned by its holder alone (not mapped anywhere else), freed on drop.
pub struct OwnedFrame {
    pa: u64,
}

impl OwnedFrame {
    /// A frame with unspecified contents (None when memory is out).
    pub fn alloc() -> Option<OwnedFrame> {
        frame::alloc().map(|pa| OwnedFrame { pa })
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the frame is RAM this handle owns exclusively (allocated for it, freed only by its
        // drop); the shared borrow of the handle keeps writers away for the slice's lifetime.
        unsafe { phys_slice_mut(self.pa, PAGE_SIZE as usize) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and the exclusive borrow of the handle makes this the only view.
        unsafe { phys_slice_mut(self.pa, PAGE_SIZE as usize) }
    }
}

impl Drop for OwnedFrame {
    fn drop(&mut self) {
        frame::free(self.pa);
    }
}
