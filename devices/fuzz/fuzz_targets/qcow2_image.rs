//! qcow2 images given as sparse segments, opened read-only or writable (backing files base.qcow2 and base.raw beside them), then read, write, discard, write-zeroes and flush requests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = devices_fuzz::targets::qcow2_image(data);
});
