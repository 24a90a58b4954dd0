//! The virtio-mmio transport in front of virtio-blk on an in-memory disk: register writes and reads, guest memory (descriptor tables, rings, requests) and queue notifies, all from the input (see the harness in src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = devices_fuzz::targets::mmio_transport(data);
});
