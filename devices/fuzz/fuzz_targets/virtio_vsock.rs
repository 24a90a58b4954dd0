//! virtio-vsock with its Unix-socket muxer: the guest's packets (headers, credit, lengths), receive chains and host clients.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = devices_fuzz::targets::virtio_vsock(data);
});
