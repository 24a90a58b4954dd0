//! virtio-net over a socket pair standing in for the TAP: the guest's transmit chains and frames received from the host.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = devices_fuzz::targets::virtio_net(data);
});
