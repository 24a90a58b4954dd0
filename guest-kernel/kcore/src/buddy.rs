//! A binary buddy allocator over page frame numbers: pure bookkeeping, no memory is touched.
//!
//! Free blocks of `2^k` frames (`k` up to [`MAX_ORDER`]) sit on one doubly linked list per order. A block
//! is always aligned to its size, so its buddy is found by flipping bit `k` of its frame number; freeing
//! merges a block with its free buddy, repeatedly. The lists and block orders live in three arrays
//! indexed by frame number that the caller provides (the kernel carves them from fresh, zeroed memory at
//! boot): all-zero arrays are a valid empty allocator (links store `index + 1`, 0 meaning none; the
//! order array stores `order + 1` for the first frame of a free block, 0 otherwise), so nothing is
//! initialised frame by frame.
//!
//! The kernel keeps caches of single frames in front of this allocator (see `mm::frame`); runs of frames
//! (DMA buffers, the kernel heap, an executable's segments) come from here.

/// Largest block: 2^MAX_ORDER frames (4 GiB of 4 KiB pages).
pub const MAX_ORDER: usize = 20;

/// The smallest order whose block holds `n` frames (`n >= 1`).
pub fn order_for(n: u64) -> usize {
    (u64::BITS - n.max(1).saturating_sub(1).leading_zeros()) as usize
}

/// The allocator: per-frame link and order arrays (see the module doc) and one list head per order.
pub struct Buddy<'a> {
    next: &'a mut [u32],
    prev: &'a mut [u32],
    order: &'a mut [u8],
    heads: [u32; MAX_ORDER + 1],
    free: u64,
}

impl<'a> Buddy<'a> {
    /// An empty allocator for frames `0..next.len()`; the three arrays must be all zero and of equal
    /// length (shorter ones limit the frames it can manage).
    pub fn new(next: &'a mut [u32], prev: &'a mut [u32], order: &'a mut [u8]) -> Self {
        Buddy {
            next,
            prev,
            order,
            heads: [0; MAX_ORDER + 1],
            free: 0,
        }
    }

    /// Frames this allocator can manage.
    pub fn capacity(&self) -> u64 {
        self.next.len().min(self.prev.len()).min(self.order.len()) as u64
    }

    /// Free frames held.
    pub fn free_frames(&self) -> u64 {
        self.free
    }

    /// The largest order with a free block, if any.
    pub fn largest_free_order(&self) -> Option<usize> {
        (0..=MAX_ORDER).rev().find(|&k| self.heads[k] != 0)
    }

    /// Free blocks of order `k` (walks the list: for tests and statistics).
    pub fn count(&self, k: usize) -> usize {
        let mut n = 0;
        let mut i = self.heads[k];
        while i != 0 {
            n += 1;
            i = self.next[(i - 1) as usize];
        }
        n
    }

    fn push(&mut self, pfn: u32, k: usize) {
        let i = pfn as usize;
        let head = self.heads[k];
        self.next[i] = head;
        self.prev[i] = 0;
        if head != 0 {
            self.prev[(head - 1) as usize] = pfn + 1;
        }
        self.heads[k] = pfn + 1;
        self.order[i] = k as u8 + 1;
    }

    fn unlink(&mut self, pfn: u32, k: usize) {
        let i = pfn as usize;
        let (n, p) = (self.next[i], self.prev[i]);
        if p == 0 {
            self.heads[k] = n;
        } else {
            self.next[(p - 1) as usize] = n;
        }
        if n != 0 {
            self.prev[(n - 1) as usize] = p;
        }
        self.next[i] = 0;
        self.prev[i] = 0;
        self.order[i] = 0;
    }

    /// Whether frame `pfn` is the first frame of a free block of order `k`.
    fn is_free_block(&self, pfn: u64, k: usize) -> bool {
        pfn < self.capacity() && self.order[pfn as usize] == k as u8 + 1
    }

    /// Frees the block of `2^k` frames at `pfn` (aligned to its size, inside the capacity), merging it
    /// with free buddies.
    pub fn free(&mut self, pfn: u64, k: usize) {
        let (mut pfn, mut k) = (pfn, k);
        self.free += 1 << k;
        while k < MAX_ORDER {
            let buddy = pfn ^ (1 << k);
            if !self.is_free_block(buddy, k) {
                break;
            }
            self.unlink(buddy as u32, k);
            pfn = pfn.min(buddy);
            k += 1;
        }
        self.push(pfn as u32, k);
    }

    /// Frees the frames `[pfn, pfn + n)` (any alignment) as the largest aligned blocks that fit.
    pub fn free_range(&mut self, pfn: u64, n: u64) {
        let cap = self.capacity();
        let (mut s, e) = (pfn.min(cap), (pfn + n).min(cap));
        while s < e {
            let mut k = (s.trailing_zeros() as usize).min(MAX_ORDER);
            while s + (1 << k) > e {
                k -= 1;
            }
            self.free(s, k);
            s += 1 << k;
        }
    }

    /// A block of `2^k` frames (aligned to its size), splitting a larger one if needed.
    pub fn alloc(&mut self, k: usize) -> Option<u64> {
        let mut j = k;
        while j <= MAX_ORDER && self.heads[j] == 0 {
            j += 1;
        }
        if j > MAX_ORDER {
            return None;
        }
        let pfn = self.heads[j] - 1;
        self.unlink(pfn, j);
        while j > k {
            j -= 1;
            self.push(pfn + (1 << j), j);
        }
        self.free -= 1 << k;
        Some(pfn as u64)
    }

    /// `n` contiguous frames (`n >= 1`): a block of the next power of two, its unused tail given back.
    pub fn alloc_run(&mut self, n: u64) -> Option<u64> {
        let k = order_for(n);
        if k > MAX_ORDER {
            return None;
        }
        let pfn = self.alloc(k)?;
        self.free_range(pfn + n, (1 << k) - n);
        Some(pfn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Arrays {
        next: Vec<u32>,
        prev: Vec<u32>,
        order: Vec<u8>,
    }

    fn arrays(n: usize) -> Arrays {
        Arrays {
            next: vec![0; n],
            prev: vec![0; n],
            order: vec![0; n],
        }
    }

    fn buddy(a: &mut Arrays) -> Buddy<'_> {
        Buddy::new(&mut a.next, &mut a.prev, &mut a.order)
    }

    #[test]
    fn order_for_rounds_up() {
        assert_eq!(order_for(1), 0);
        assert_eq!(order_for(2), 1);
        assert_eq!(order_for(3), 2);
        assert_eq!(order_for(4), 2);
        assert_eq!(order_for(5), 3);
        assert_eq!(order_for(1 << 14), 14);
        assert_eq!(order_for((1 << 14) + 1), 15);
    }

    #[test]
    fn free_range_makes_aligned_blocks_and_allocation_splits_them() {
        let mut a = arrays(64);
        let mut b = buddy(&mut a);
        b.free_range(3, 29); // 3, 4-7, 8-15, 16-31
        assert_eq!(b.free_frames(), 29);
        assert_eq!(
            (b.count(0), b.count(2), b.count(3), b.count(4)),
            (1, 1, 1, 1)
        );
        assert_eq!(b.alloc(0), Some(3));
        let p = b.alloc(1).expect("a pair");
        assert_eq!(p % 2, 0);
        assert_eq!(b.free_frames(), 26);
        assert_eq!(b.alloc(5), None);
    }

    #[test]
    fn freeing_everything_merges_back_to_the_largest_blocks() {
        let mut a = arrays(1024);
        let mut b = buddy(&mut a);
        b.free_range(0, 1024);
        assert_eq!(b.largest_free_order(), Some(10));
        let mut got = Vec::new();
        while let Some(p) = b.alloc(0) {
            got.push(p);
        }
        assert_eq!(got.len(), 1024);
        assert_eq!(b.free_frames(), 0);
        // Free in a scrambled order: every frame comes back and they merge into one block.
        for i in 0..1024u64 {
            b.free(got[((i * 389) % 1024) as usize], 0);
        }
        assert_eq!(b.free_frames(), 1024);
        assert_eq!(b.count(10), 1);
        assert_eq!((0..10).map(|k| b.count(k)).sum::<usize>(), 0);
    }

    #[test]
    fn runs_give_back_their_tail_and_never_overlap() {
        let mut a = arrays(256);
        let mut b = buddy(&mut a);
        b.free_range(0, 256);
        let mut owner = vec![0u32; 256];
        let mut runs = Vec::new();
        for (id, n) in [5u64, 17, 1, 33, 3, 64, 7].into_iter().enumerate() {
            let p = b.alloc_run(n).expect("room");
            for f in p..p + n {
                assert_eq!(owner[f as usize], 0, "frame {f} handed out twice");
                owner[f as usize] = id as u32 + 1;
            }
            runs.push((p, n));
        }
        let used: u64 = runs.iter().map(|r| r.1).sum();
        assert_eq!(b.free_frames(), 256 - used);
        for (p, n) in runs {
            b.free_range(p, n);
        }
        assert_eq!(b.free_frames(), 256);
        assert_eq!(b.count(8), 1);
    }

    #[test]
    fn holes_in_memory_are_never_merged_over() {
        let mut a = arrays(64);
        let mut b = buddy(&mut a);
        // Frames 16..32 are not RAM: 0..16 and 32..64 stay separate blocks.
        b.free_range(0, 16);
        b.free_range(32, 32);
        assert_eq!((b.count(4), b.count(5), b.count(6)), (1, 1, 0));
        assert_eq!(b.alloc_run(48), None);
        assert_eq!(b.alloc_run(32), Some(32));
    }

    #[test]
    fn a_random_workload_keeps_the_count_and_ends_merged() {
        let mut a = arrays(512);
        let mut b = buddy(&mut a);
        b.free_range(0, 512);
        let mut seed = 12345u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut live: Vec<(u64, u64)> = Vec::new();
        let mut owned = vec![false; 512];
        for _ in 0..5000 {
            if rand() % 2 == 0 || live.is_empty() {
                let n = 1 + rand() % 20;
                if let Some(p) = b.alloc_run(n) {
                    for f in p..p + n {
                        assert!(!owned[f as usize]);
                        owned[f as usize] = true;
                    }
                    live.push((p, n));
                }
            } else {
                let (p, n) = live.swap_remove((rand() % live.len() as u64) as usize);
                for f in p..p + n {
                    owned[f as usize] = false;
                }
                b.free_range(p, n);
            }
            let held: u64 = live.iter().map(|r| r.1).sum();
            assert_eq!(b.free_frames() + held, 512);
        }
        for (p, n) in live.drain(..) {
            b.free_range(p, n);
        }
        assert_eq!(b.count(9), 1);
    }
}
