//! virtio-blk requests through the transport to raw and qcow2 backends (in-memory, raw file, qcow2 v3 with compressed and zero clusters, qcow2 v2 overlay over a backing file): read, write, flush, discard, write-zeroes, get-id.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = devices_fuzz::targets::blk_request(data);
});
