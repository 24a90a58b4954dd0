//! Four-level page tables. The kernel half (PML4 slots 256..512: direct map and kernel image) is shared by
//! every address space; each process has its own PML4 whose lower half maps its user memory with 4 KiB
//! pages. Page-table pages are reached through the direct map.

use super::{frame, phys_to_virt, PAGE_SIZE};
use crate::arch::cpu::{invlpg, read_cr3, write_cr3};

pub const PRESENT: u64 = 1;
pub const WRITABLE: u64 = 1 << 1;
pub const USER: u64 = 1 << 2;
pub const HUGE: u64 = 1 << 7;
pub const NO_EXECUTE: u64 = 1 << 63;
/// Software bit: a writable page made read-only for copy-on-write.
pub const COW: u64 = 1 << 9;
/// Software bit: a page of a shared mapping (MAP_SHARED): fork shares it as it is, writable or not,
/// and write permission never makes it copy-on-write, so every mapping of it sees every write.
pub const SHARED: u64 = 1 << 10;
/// Set by the CPU on a write through the entry (a shared file page written through a mapping).
pub const DIRTY: u64 = 1 << 6;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

extern "C" {
    static mut boot_pml4: [u64; 512];
}

/// Why a mapping could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// No frame for a page table.
    OutOfMemory,
    /// The address is already mapped.
    AlreadyMapped,
}

fn table(pa: u64) -> *mut u64 {
    phys_to_virt(pa) as *mut u64
}

/// Calls `f(index, entry)` for each nonzero entry of page table `t` in `[from, end)`.
fn for_each_entry(t: u64, from: usize, end: usize, mut f: impl FnMut(usize, u64) -> bool) -> bool {
    let base = table(t);
    let mut i = from;
    loop {
        // SAFETY: `t` is a page table (512 entries) reached through the direct map; end <= 512.
        i = unsafe { crate::arch::mem::first_nonzero(base, i, end) };
        if i >= end {
            return true;
        }
        // SAFETY: i < 512.
        let v = unsafe { *base.add(i) };
        if !f(i, v) {
            return false;
        }
        i += 1;
    }
}

fn kernel_pml4_phys() -> u64 {
    super::virt_to_phys(core::ptr::addr_of!(boot_pml4) as u64)
}

/// Finishes the kernel's page tables after boot: drops the identity map of the boot code and maps RAM
/// above 4 GiB (up to 512 GiB) into the direct map, with 1 GiB pages when the CPU has them, else with
/// 2 MiB pages in page directories taken from the frame allocator. Returns the end of the direct map.
pub fn init_kernel(ram_end: u64, gib_pages: bool) -> u64 {
    let pml4 = table(kernel_pml4_phys());
    // SAFETY: boot is single-threaded; slot 0 (identity map) is unused once running in the higher half,
    // and slot 256's PDPT is the boot page tables' own, which is writable kernel data.
    unsafe {
        *pml4 = 0;
        let mut mapped = crate::arch::layout::BOOT_DIRECT_MAP_END;
        let pdpt = table(*pml4.add(256) & ADDR_MASK);
        while mapped < ram_end && mapped < (512 << 30) {
            let slot = pdpt.add((mapped >> 30) as usize);
            if gib_pages {
                *slot = mapped | PRESENT | WRITABLE | HUGE;
            } else {
                let Some(pd) = frame::alloc_zeroed() else {
                    break;
                };
                let entries = table(pd);
                for i in 0..512u64 {
                    *entries.add(i as usize) = (mapped + (i << 21)) | PRESENT | WRITABLE | HUGE;
                }
                *slot = pd | PRESENT | WRITABLE;
            }
            mapped += 1 << 30;
        }
        write_cr3(read_cr3());
        mapped
    }
}

/// Entry flags for a user page with ELF permissions.
pub fn user_flags(writable: bool, executable: bool) -> u64 {
    let mut f = PRESENT | USER;
    if writable {
        f |= WRITABLE;
    }
    if !executable && crate::arch::has_nx() {
        f |= NO_EXECUTE;
    }
    f
}

/// Entry flags for a page of an area with protection `prot` (`kcore::vma::PROT_*`). A `PROT_NONE`
/// page stays present but not user-accessible, so it keeps its frame (and its share count) while
/// every user access faults; x86 pages cannot be write-only, so PROT_WRITE implies reading.
pub fn prot_flags(prot: u32) -> u64 {
    use kcore::vma::{PROT_EXEC, PROT_READ, PROT_WRITE};
    if prot & (PROT_READ | PROT_WRITE | PROT_EXEC) == 0 {
        let nx = if crate::arch::has_nx() { NO_EXECUTE } else { 0 };
        return PRESENT | nx;
    }
    user_flags(prot & PROT_WRITE != 0, prot & PROT_EXEC != 0)
}

/// Index of `va` in the page table of `level` (its shift: 39, 30, 21, 12).
fn index(va: u64, level: u32) -> usize {
    ((va >> level) & 0x1ff) as usize
}

/// One address space: a PML4 whose upper half is the kernel's.
pub struct AddressSpace {
    pml4: u64,
    /// A vfork child's view of its parent's address space: the same tables, never freed through it.
    borrowed: bool,
}

impl AddressSpace {
    /// A new address space with an empty user half.
    pub fn new() -> Option<Self> {
        if let Some(pml4) = cached_pml4() {
            return Some(AddressSpace {
                pml4,
                borrowed: false,
            });
        }
        let pml4 = frame::alloc_zeroed()?;
        // SAFETY: both tables are valid page-table pages; copying the kernel half shares its PDPTs.
        unsafe {
            let src = table(kernel_pml4_phys());
            let dst = table(pml4);
            core::ptr::copy_nonoverlapping(src.add(256), dst.add(256), 256);
        }
        Some(AddressSpace {
            pml4,
            borrowed: false,
        })
    }

    /// This address space as a vfork child uses it (CLONE_VM): the same page tables, so the child's
    /// writes are the parent's, while the parent waits. Releasing or destroying the alias frees nothing.
    pub fn alias(&self) -> AddressSpace {
        AddressSpace {
            pml4: self.pml4,
            borrowed: true,
        }
    }

    /// No address space at all (a zombie's, or a thread's after it exited): frees nothing.
    pub fn empty() -> AddressSpace {
        AddressSpace {
            pml4: 0,
            borrowed: true,
        }
    }

    /// The PML4's physical address (what CR3 holds).
    pub fn root(&self) -> u64 {
        self.pml4
    }

    /// Switches to the kernel's own page tables (before the current address space is destroyed).
    pub fn activate_kernel() {
        // SAFETY: the boot PML4 maps the whole kernel half.
        unsafe { write_cr3(kernel_pml4_phys()) }
    }

    /// Makes this the current address space.
    pub fn activate(&self) {
        // SAFETY: the PML4 maps the kernel half like every other address space.
        unsafe { write_cr3(self.pml4) }
    }

    /// The page-table entry for `va`, creating intermediate tables when `create`.
    fn entry(&mut self, va: u64, create: bool) -> Result<Option<*mut u64>, MapError> {
        let mut t = self.pml4;
        for level in [39u32, 30, 21] {
            let idx = ((va >> level) & 0x1ff) as usize;
            // SAFETY: `t` is a page-table page this address space owns.
            let e = unsafe { table(t).add(idx) };
            // SAFETY: as above.
            let v = unsafe { *e };
            if v & PRESENT == 0 {
                if !create {
                    return Ok(None);
                }
                let pa = frame::alloc_zeroed().ok_or(MapError::OutOfMemory)?;
                // SAFETY: installing a fresh zeroed table in our own table.
                unsafe { *e = pa | PRESENT | WRITABLE | USER };
                frame::widen_span(t, idx);
                t = pa;
            } else {
                if v & HUGE != 0 {
                    return Ok(None);
                }
                t = v & ADDR_MASK;
            }
        }
        // SAFETY: `t` is a page table; the index is within 512 entries.
        Ok(Some(unsafe { table(t).add(((va >> 12) & 0x1ff) as usize) }))
    }

    /// The leaf page table holding `va`'s entry, creating tables on the way.
    fn leaf(&mut self, va: u64) -> Result<u64, MapError> {
        let e = self.entry(va, true)?.ok_or(MapError::AlreadyMapped)?;
        Ok(super::virt_to_phys(e as u64) & !(PAGE_SIZE - 1))
    }

    /// Maps the 4 KiB page at `va` to frame `pa`.
    pub fn map(&mut self, va: u64, pa: u64, flags: u64) -> Result<(), MapError> {
        let t = self.leaf(va)?;
        let i = ((va >> 12) & 0x1ff) as usize;
        // SAFETY: `t` is one of our page tables and i < 512.
        unsafe {
            let e = table(t).add(i);
            if *e & PRESENT != 0 {
                return Err(MapError::AlreadyMapped);
            }
            *e = pa | flags;
        }
        frame::widen_span(t, i);
        Ok(())
    }

    /// Maps `pages` consecutive 4 KiB pages at `va` to consecutive frames from `pa`, walking the upper
    /// levels once per page table rather than once per page.
    pub fn map_run(&mut self, va: u64, pa: u64, pages: u64, flags: u64) -> Result<(), MapError> {
        let mut i = 0;
        while i < pages {
            let v = va + i * PAGE_SIZE;
            let t = self.leaf(v)?;
            let idx = ((v >> 12) & 0x1ff) as usize;
            // SAFETY: `t` is one of our page tables and idx < 512.
            let first = unsafe { table(t).add(idx) };
            // Entries left in this page table from `v` on.
            let in_table = 512 - idx as u64;
            let n = in_table.min(pages - i);
            frame::widen_span(t, idx);
            frame::widen_span(t, idx + n as usize - 1);
            for k in 0..n {
                // SAFETY: `first` points into one of our page tables and `k` stays within it.
                unsafe {
                    let e = first.add(k as usize);
                    if *e & PRESENT != 0 {
                        return Err(MapError::AlreadyMapped);
                    }
                    *e = (pa + (i + k) * PAGE_SIZE) | flags;
                }
            }
            i += n;
        }
        Ok(())
    }

    /// Calls `f(va, entry)` for every present leaf entry in `[start, end)` (page-aligned), skipping
    /// absent page tables whole (a fresh 8 MiB thread stack costs a few table reads, not 2048 walks).
    /// Returns how many entries `f` was called for.
    fn for_each_present(&mut self, start: u64, end: u64, mut f: impl FnMut(u64, *mut u64)) -> u64 {
        let mut n = 0;
        let mut va = start;
        'outer: while va < end {
            let mut t = self.pml4;
            for level in [39u32, 30, 21] {
                // SAFETY: `t` is one of our page tables, the index is below 512.
                let v = unsafe { *table(t).add(index(va, level)) };
                if v & PRESENT == 0 || v & HUGE != 0 {
                    let size = 1u64 << level;
                    va = (va & !(size - 1)) + size;
                    continue 'outer;
                }
                t = v & ADDR_MASK;
            }
            let i0 = index(va, 12);
            let count = ((512 - i0) as u64).min((end - va) / PAGE_SIZE);
            for k in 0..count as usize {
                // SAFETY: a leaf table of ours; i0 + k < 512.
                let e = unsafe { table(t).add(i0 + k) };
                // SAFETY: as above.
                if unsafe { *e } & PRESENT != 0 {
                    f(va + k as u64 * PAGE_SIZE, e);
                    n += 1;
                }
            }
            va += count * PAGE_SIZE;
        }
        n
    }

    /// Flushes the TLB for `n` changed pages in `[start, end)`: page by page for a few, else all.
    fn flush_range(&self, start: u64, end: u64, n: u64) {
        if n == 0 || read_cr3() & ADDR_MASK != self.pml4 {
            return;
        }
        if n > 16 {
            // SAFETY: reloading the same root only flushes the TLB.
            unsafe { write_cr3(self.pml4) };
            return;
        }
        let mut va = start;
        while va < end {
            invlpg(va);
            va += PAGE_SIZE;
        }
    }

    /// mprotect's page-table half: gives the present pages of `[start, end)` the flags of `prot`. A
    /// page that becomes writable gets [`COW`] unless it already was privately writable, so the
    /// first write copies it if another address space still shares the frame (or just makes it
    /// writable); a [`SHARED`] page keeps write access only if it had it, else its first write
    /// faults and [`make_shared_writable`](Self::make_shared_writable) follows (a file page is
    /// dirtied there, as Linux's page_mkwrite); one that loses write access loses `COW` too
    /// (read-only pages are never copied). [`SHARED`] and [`DIRTY`] stay.
    pub fn protect_range(&mut self, start: u64, end: u64, prot: u32) {
        let base = prot_flags(prot & !kcore::vma::PROT_WRITE);
        let write = prot & kcore::vma::PROT_WRITE != 0;
        let n = self.for_each_present(start, end, |_, e| {
            // SAFETY: `e` is a present entry of our own leaf table.
            unsafe {
                let old = *e;
                let shared = old & SHARED;
                let w = match (write, old & WRITABLE != 0, shared != 0) {
                    (false, _, _) => 0,
                    (true, true, _) => WRITABLE,
                    (true, false, true) => 0,
                    (true, false, false) => COW,
                };
                *e = (old & ADDR_MASK) | base | w | shared | (old & DIRTY);
            }
        });
        self.flush_range(start, end, n);
    }

    /// Write-protects the present pages of `[start, end)` (the pages of a shared file mapping) and
    /// clears their dirty bit, handing each page that had it (its address and frame) to `f`: the
    /// pages written through the mapping since the last time. The next write faults (and the
    /// fault makes the page writable again: [`make_shared_writable`](Self::make_shared_writable)).
    pub fn take_dirty(&mut self, start: u64, end: u64, mut f: impl FnMut(u64, u64)) {
        let n = self.for_each_present(start, end, |va, e| {
            // SAFETY: `e` is a present entry of our own leaf table.
            unsafe {
                let old = *e;
                if old & (DIRTY | WRITABLE) != 0 {
                    *e = old & !(DIRTY | WRITABLE);
                    if old & DIRTY != 0 {
                        f(va, old & ADDR_MASK);
                    }
                }
            }
        });
        // The next write must fault: no TLB entry may remember the page writable or dirty.
        self.flush_range(start, end, n);
    }

    /// A write to `va`, a read-only [`SHARED`] page of a writable area (a shared file page after
    /// its write fault was accepted, or any shared page after mprotect gave write access): the
    /// entry becomes writable. False if `va` is not such a page.
    pub fn make_shared_writable(&mut self, va: u64) -> bool {
        let Ok(Some(e)) = self.entry(va, false) else {
            return false;
        };
        // SAFETY: `e` points into one of our page tables.
        unsafe {
            if *e & (PRESENT | SHARED) != PRESENT | SHARED {
                return false;
            }
            *e |= WRITABLE;
        }
        invlpg(va);
        true
    }

    /// Removes every mapping in `[start, end)` (page-aligned) and hands each frame to `put`.
    pub fn unmap_range(&mut self, start: u64, end: u64, mut put: impl FnMut(u64)) {
        let n = self.for_each_present(start, end, |_, e| {
            // SAFETY: `e` is a present entry of our own leaf table.
            let old = unsafe { e.replace(0) };
            put(old & ADDR_MASK);
        });
        self.flush_range(start, end, n);
    }

    /// Moves the pages of `[from, from + len)` to `[to, to + len)` (mremap), entries and all; the
    /// target range must be empty. A page that cannot be placed (no frame for a page table) is freed.
    pub fn move_range(&mut self, from: u64, to: u64, len: u64) {
        let mut moved = alloc::vec::Vec::new();
        let n = self.for_each_present(from, from + len, |va, e| {
            // SAFETY: `e` is a present entry of our own leaf table.
            moved.push((va, unsafe { e.replace(0) }));
        });
        self.flush_range(from, from + len, n);
        for (va, e) in moved {
            if self
                .map(to + (va - from), e & ADDR_MASK, e & !ADDR_MASK)
                .is_err()
            {
                frame::put(e & ADDR_MASK);
            }
        }
    }

    /// The frame and flags `va`'s page maps to.
    pub fn translate(&self, va: u64) -> Option<(u64, u64)> {
        let mut t = self.pml4;
        for level in [39u32, 30, 21, 12] {
            // SAFETY: walking our own tables through the direct map.
            let v = unsafe { *table(t).add(((va >> level) & 0x1ff) as usize) };
            if v & PRESENT == 0 {
                return None;
            }
            if level == 12 || v & HUGE != 0 {
                let page_mask = (1u64 << level) - 1;
                return Some((
                    (v & ADDR_MASK & !page_mask) | (va & page_mask & !(PAGE_SIZE - 1)),
                    v & !ADDR_MASK,
                ));
            }
            t = v & ADDR_MASK;
        }
        None
    }

    /// A copy-on-write duplicate (fork): every user page is shared with the copy; writable ones become
    /// read-only with [`COW`] in both, except pages of shared mappings ([`SHARED`]), which stay as
    /// they are. Flushes this address space's TLB entries if it is active.
    ///
    /// Only the spans of entries in use are walked (see [`frame::span`]), the child's tables take their
    /// parent's spans, and the leaf loop takes the share counts under one borrow: kernel mode is
    /// emulated on the development hosts, so each instruction per page counts.
    pub fn fork_cow(&mut self) -> Option<AddressSpace> {
        fn copy_level(src: u64, dst: u64, level: u32, lo: usize, hi: usize) -> bool {
            frame::set_span(dst, lo, hi);
            if level == 0 {
                copy_leaf(src, dst, lo, hi);
                return true;
            }
            for_each_entry(src, lo, hi, |i, v| {
                let Some(t) = frame::alloc_zeroed() else {
                    return false;
                };
                // SAFETY: the child's table gets its own next-level table.
                unsafe { *table(dst).add(i) = t | (v & !ADDR_MASK) };
                let (l, h) = frame::span(v & ADDR_MASK);
                copy_level(v & ADDR_MASK, t, level - 1, l, h)
            })
        }
        fn copy_leaf(src: u64, dst: u64, lo: usize, hi: usize) {
            let (s, d) = (table(src), table(dst));
            let mut frames = frame::batch();
            let (refs, nrefs) = frames.share_counts();
            let mut pages = 0;
            let mut i = lo;
            // Runs of entries are read one by one; `repe scasq` skips the gaps between them.
            while i < hi {
                // SAFETY: `s` is the parent's leaf table, `d` the child's copy, i < hi <= 512. The
                // parent's TLB is flushed by the caller.
                unsafe {
                    let mut e = *s.add(i);
                    if e == 0 {
                        i = crate::arch::mem::first_nonzero(s, i, hi);
                        continue;
                    }
                    i += 1;
                    if e & PRESENT == 0 {
                        continue;
                    }
                    if e & (WRITABLE | SHARED) == WRITABLE {
                        e = (e & !WRITABLE) | COW;
                        *s.add(i - 1) = e;
                    }
                    *d.add(i - 1) = e;
                    // One more user of the frame (see `frame::put`); the index is checked
                    // against the array's length.
                    let f = (e & ADDR_MASK) / PAGE_SIZE;
                    if f < nrefs {
                        let c = refs.add(f as usize);
                        *c = (*c).saturating_add(1);
                    }
                }
                pages += 1;
            }
            drop(frames);
            crate::cost::count(crate::cost::Cost::ForkPages, pages);
        }
        let child = AddressSpace::new()?;
        let (lo, hi) = frame::span(self.pml4);
        let ok = copy_level(self.pml4, child.pml4, 3, lo, hi.min(256));
        if read_cr3() & ADDR_MASK == self.pml4 {
            // SAFETY: reloading the same root only flushes the TLB.
            unsafe { write_cr3(self.pml4) };
        }
        if !ok {
            child.destroy();
            return None;
        }
        Some(child)
    }

    /// A write to `va` hit a copy-on-write page: give this address space its own writable copy (or
    /// just make it writable when nobody else shares the frame). False if `va` is not such a page.
    pub fn break_cow(&mut self, va: u64) -> Result<bool, MapError> {
        let t0 = crate::cost::start();
        let Some(e) = self.entry(va, false)? else {
            return Ok(false);
        };
        // SAFETY: `e` points into one of our page tables.
        let v = unsafe { *e };
        if v & PRESENT == 0 || v & COW == 0 {
            return Ok(false);
        }
        let pa = v & ADDR_MASK;
        let flags = (v & !ADDR_MASK & !COW) | WRITABLE;
        if frame::is_shared(pa) {
            let new = frame::alloc().ok_or(MapError::OutOfMemory)?;
            // SAFETY: both frames are RAM reached through the direct map; `new` is ours alone.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    phys_to_virt(pa) as *const u8,
                    phys_to_virt(new) as *mut u8,
                    PAGE_SIZE as usize,
                );
                *e = new | flags;
            }
            frame::put(pa);
            crate::cost::record(crate::cost::Cost::CowCopy, t0);
        } else {
            // SAFETY: our entry; the frame is ours alone now.
            unsafe { *e = pa | flags };
            crate::cost::record(crate::cost::Cost::CowReuse, t0);
        }
        invlpg(va);
        Ok(true)
    }

    /// Whether these are another address space's tables (a vfork child's): freeing it frees nothing.
    pub fn is_borrowed(&self) -> bool {
        self.borrowed
    }

    /// User pages mapped (VmRSS), by walking the tables.
    pub fn mapped_pages(&self) -> u64 {
        fn count(t: u64, level: u32) -> u64 {
            let mut n = 0;
            for_each_entry(t, 0, 512, |_, v| {
                if v & PRESENT != 0 {
                    n += if level == 0 {
                        1
                    } else {
                        count(v & ADDR_MASK, level - 1)
                    };
                }
                true
            });
            n
        }
        if self.pml4 == 0 {
            return 0;
        }
        let mut n = 0;
        for_each_entry(self.pml4, 0, 256, |_, v| {
            if v & PRESENT != 0 {
                n += count(v & ADDR_MASK, 2);
            }
            true
        });
        n
    }

    /// Frees everything, leaving an empty husk (the address space of a zombie). Not while active.
    pub fn release(&mut self) {
        if self.pml4 != 0 {
            AddressSpace {
                pml4: self.pml4,
                borrowed: self.borrowed,
            }
            .destroy();
            self.pml4 = 0;
        }
    }

    /// Frees every user page, every user page table and the PML4. The tables' used entries are cleared
    /// on the way, so they go back as zero frames (no clearing when they are reused).
    pub fn destroy(self) {
        if self.borrowed {
            return;
        }
        fn free_level(t: u64, level: u32) {
            let (lo, hi) = frame::span(t);
            let hi = if level == 3 { hi.min(256) } else { hi };
            if level == 0 {
                let e = table(t);
                let mut frames = frame::batch();
                let (refs, nrefs) = frames.share_counts();
                let mut i = lo;
                while i < hi {
                    // SAFETY: `t` is one of our leaf tables, i < hi <= 512.
                    let v = unsafe { *e.add(i) };
                    if v == 0 {
                        // SAFETY: as above.
                        i = unsafe { crate::arch::mem::first_nonzero(e, i, hi) };
                        continue;
                    }
                    if v & PRESENT != 0 {
                        // `frame::put`: one user less, freed with the last.
                        let pa = v & ADDR_MASK;
                        let f = pa / PAGE_SIZE;
                        // SAFETY: `f` is checked against the share-count array's length.
                        let shared = f < nrefs && unsafe { *refs.add(f as usize) } != 0;
                        if shared {
                            // SAFETY: as above.
                            unsafe { *refs.add(f as usize) -= 1 };
                        } else {
                            frames.free(pa);
                        }
                    }
                    i += 1;
                }
            } else {
                for_each_entry(t, lo, hi, |_, v| {
                    free_level(v & ADDR_MASK, level - 1);
                    true
                });
            }
            if lo < hi {
                // SAFETY: clearing the used entries of our own table, which nobody walks any more.
                unsafe { crate::arch::mem::zero_u64s(table(t).add(lo), hi - lo) };
            }
            frame::set_span(t, 0, 0);
            if level < 3 {
                frame::free_zeroed(t);
            }
        }
        free_level(self.pml4, 3);
        free_pml4(self.pml4);
    }
}

/// Freed PML4s kept for reuse (user half zero, kernel half in place, so a new address space needs no
/// copying), linked through their first word: (head, how many).
static FREE_PML4S: crate::sync::KCell<(u64, u32)> = crate::sync::KCell::new((0, 0));
/// At most this many PML4s are cached; more are cleared and freed.
const PML4_CACHE: u32 = 16;

/// Gives up a PML4 whose user half is already zero.
fn free_pml4(pa: u64) {
    let mut cache = FREE_PML4S.borrow_mut();
    if cache.1 >= PML4_CACHE {
        // SAFETY: nobody uses this PML4 any more; clearing its kernel half makes it a zero frame.
        unsafe { crate::arch::mem::zero_u64s(table(pa).add(256), 256) };
        frame::free_zeroed(pa);
        return;
    }
    // SAFETY: the PML4 is no longer used by anyone; entry 0 (user half) now links the list.
    unsafe { table(pa).write(cache.0) };
    *cache = (pa, cache.1 + 1);
    frame::uncount(pa);
}

/// A cached PML4 with the kernel half in place and a zero user half.
fn cached_pml4() -> Option<u64> {
    let mut cache = FREE_PML4S.borrow_mut();
    let pa = cache.0;
    if pa == 0 {
        return None;
    }
    // SAFETY: a cached PML4's first word links the list; it is zeroed again as it is taken.
    *cache = (unsafe { table(pa).replace(0) }, cache.1 - 1);
    frame::recount(pa);
    Some(pa)
}
