//! virtio-console: guest output chains and host input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = devices_fuzz::targets::virtio_console(data);
});
