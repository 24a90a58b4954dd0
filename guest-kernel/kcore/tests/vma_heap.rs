//! The kernel asks its heap for room before a process's area list grows or is copied (fork), from
//! estimates of the B-tree's node memory (`VmaList::make_room`, `VmaList::clone_bytes`). Here an
//! allocator that counts what this thread allocates checks those estimates against what `alloc`'s
//! B-tree really takes, at max_map_count areas. (A separate test crate: kcore itself forbids
//! `unsafe`, which a global allocator needs.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use kcore::vma::{Growth, Vma, VmaList, MAX_MAP_COUNT, PROT_READ, PROT_WRITE};

struct Counting;

std::thread_local! {
    /// Bytes this thread allocated and did not free (tests run in parallel threads).
    static NET: Cell<isize> = const { Cell::new(0) };
}

fn count(bytes: usize, sign: isize) {
    let _ = NET.try_with(|n| n.set(n.get() + sign * bytes as isize));
}

// SAFETY: every call is passed to the system allocator unchanged; only this thread's counter is
// updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 1);
        // SAFETY: the caller keeps `alloc`'s contract, which is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(layout.size(), -1);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn net() -> isize {
    NET.with(Cell::get)
}

const PAGE: u64 = 4096;
const TOP: u64 = 0x7f00_0000_0000;

#[test]
fn node_memory_stays_within_what_the_heap_is_asked_for() {
    let mut l = VmaList::new();
    let mut most_per_insert = 0;
    // One-page areas of alternating protection, placed top-down as the kernel's mmap places them,
    // until the count refuses one (memtest kobjects maps).
    loop {
        let mut asked = 0;
        if !l.make_room(1, Growth::Add { hole: false }, |bytes| {
            asked = bytes;
            true
        }) {
            break;
        }
        let at = l.find_gap(PAGE, TOP).unwrap();
        let prot = if l.len().is_multiple_of(2) {
            PROT_READ
        } else {
            PROT_READ | PROT_WRITE
        };
        let before = net();
        l.insert(Vma::anonymous(at, at + PAGE, prot));
        let took = net() - before;
        assert!(
            took <= asked as isize,
            "an insert took {took} bytes, {asked} were asked for"
        );
        most_per_insert = most_per_insert.max(took);
    }
    assert_eq!(l.len(), MAX_MAP_COUNT + 1);
    assert!(most_per_insert > 0);
    // A fork's copy: within the estimate, and the estimate not wildly above it.
    let before = net();
    let copy = l.clone();
    let took = (net() - before) as usize;
    let estimate = l.clone_bytes();
    println!(
        "{} areas: the copy took {took} bytes, estimated {estimate}",
        l.len()
    );
    assert!(took <= estimate, "{took} > {estimate}");
    assert!(estimate < took * 2, "{took} vs {estimate}");
    assert_eq!(copy.len(), l.len());
}
