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

/// A run of physically contiguous frames just allocated, contents unspecified: filled through one
/// slice (a device read of a file's extents straight into them) and then split into
/// [`OwnedFrame`]s for the page cache, so a cache miss neither clears nor copies the pages.
pub struct OwnedRun {
    pa: u64,
    n: u64,
}

impl OwnedRun {
    /// `n` contiguous frames (None when no such run is free). Their old contents are not cleared:
    /// the caller overwrites every byte before anyone else sees them.
    pub fn alloc(n: u64) -> Option<OwnedRun> {
        frame::alloc_run(n, 0..n * PAGE_SIZE).map(|pa| OwnedRun { pa, n })
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the frames are RAM this handle owns alone (just allocated, freed by its drop or
        // handed on whole by `into_frames`); the shared borrow keeps writers away.
        unsafe { phys_slice_mut(self.pa, (self.n * PAGE_SIZE) as usize) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and the exclusive borrow makes this the only view.
        unsafe { phys_slice_mut(self.pa, (self.n * PAGE_SIZE) as usize) }
    }

    /// The frames, one [`OwnedFrame`] each, in order.
    pub fn into_frames(self) -> impl Iterator<Item = OwnedFrame> {
        let (pa, n) = (self.pa, self.n);
        core::mem::forget(self);
        (0..n).map(move |i| OwnedFrame {
            pa: pa + i * PAGE_SIZE,
        })
    }
}

impl Drop for OwnedRun {
    fn drop(&mut self) {
        for i in 0..self.n {
            frame::free(self.pa + i * PAGE_SIZE);
        }
    }
}

impl Drop for OwnedFrame {
    fn drop(&mut self) {
        frame::put(self.pa);
    }
}
