//! Replays every seed (and every kept crash reproducer, `seeds/<target>/crash-*`) through its fuzz target
//! on stable, as a regression test that needs neither nightly nor libFuzzer, and checks that the seeds
//! reach what they were written for: each virtio seed completes at least one chain, each qcow2 seed opens
//! its image and serves its requests (the raw image is refused). A counting allocator fails any input that
//! makes a single allocation over [`MAX_ALLOC`] (a size taken from the guest or the image unchecked), which
//! libFuzzer only notices with a sanitizer's malloc hooks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Largest single allocation an input may cause (the qcow2 target builds images of up to 16 MiB).
const MAX_ALLOC: usize = 64 << 20;

/// The largest allocation seen since the last [`take_largest`].
static LARGEST: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: every call is passed through to the system allocator unchanged; only a size is recorded.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as for `dealloc`, with the caller's contract for `realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and fails if it (or anything running meanwhile) allocated more than [`MAX_ALLOC`] at once.
fn bounded<R>(what: &str, f: impl FnOnce() -> R) -> R {
    let r = f();
    let largest = LARGEST.swap(0, Ordering::Relaxed);
    assert!(
        largest <= MAX_ALLOC,
        "{what}: one allocation of {largest} bytes"
    );
    r
}

use devices_fuzz::targets;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir:?}: {e}"))
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {dir:?}");
    out
}

/// Every seed of a virtio target completes at least one chain (crash reproducers only must not panic).
fn virtio(target: &str, run: fn(&[u8]) -> usize) {
    for (name, data) in seeds(target) {
        let used = bounded(&format!("{target}/{name}"), || run(&data));
        if !name.starts_with("crash-") {
            assert!(used > 0, "{target}/{name}: no chain completed");
        }
    }
}

#[test]
fn mmio_transport_seeds() {
    virtio("mmio_transport", targets::mmio_transport);
}

#[test]
fn blk_request_seeds() {
    virtio("blk_request", targets::blk_request);
}

#[test]
fn virtio_net_seeds() {
    virtio("virtio_net", targets::virtio_net);
}

#[test]
fn virtio_console_seeds() {
    virtio("virtio_console", targets::virtio_console);
}

#[test]
fn virtio_vsock_seeds() {
    virtio("virtio_vsock", targets::virtio_vsock);
}

#[test]
fn qcow2_image_seeds() {
    for (name, data) in seeds("qcow2_image") {
        let done = bounded(&format!("qcow2_image/{name}"), || {
            targets::qcow2_image(&data)
        });
        if name.starts_with("crash-") {
            continue;
        }
        if name == "raw-image" {
            assert_eq!(done, None, "a raw image must not open as qcow2");
            continue;
        }
        let requests = usize::from(data[1] % 16);
        assert_eq!(done, Some(requests), "qcow2_image/{name}");
    }
}
