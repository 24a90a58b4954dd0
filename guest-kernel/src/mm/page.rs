//! Frames owned by kernel objects that keep file data in memory (tmpfs pages, the page cache): a
//! safe handle that gives the frame's bytes through the direct map and lets the frame go when
//! dropped (freed, unless a shared file mapping still maps it: its share count).

use super::{frame, phys_slice_mut, PAGE_SIZE};

/// One 4 KiB frame owned by its holder; mapped elsewhere only by shared mappings of page-cache
/// pages, which count themselves in the frame's share count (`frame::get`/`frame::put`).
pub struct OwnedFrame {
    pa: u64,
}

impl OwnedFrame {
    /// A frame with unspecified contents (None when memory is out).
    pub fn alloc() -> Option<OwnedFrame> {
        frame::alloc().map(|pa| OwnedFrame { pa })
    }

    /// Its physical address.
    pub fn pa(&self) -> u64 {
        self.pa
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the frame is RAM this handle owns (allocated for it, let go only by its drop);
        // the shared borrow of the handle keeps kernel writers away for the slice's lifetime, and
        // user code that maps it (a shared file mapping) does not run while the kernel holds it.
        unsafe { phys_slice_mut(self.pa, PAGE_SIZE as usize) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and the exclusive borrow of the handle makes this the only view.
        unsafe { phys_slice_mut(self.pa, PAGE_SIZE as usize) }
    }
}

impl Drop for OwnedFrame {
    fn drop(&mut self) {
        frame::put(self.pa);
    }
}
