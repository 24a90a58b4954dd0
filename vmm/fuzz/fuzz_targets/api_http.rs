//! The API's HTTP/1.1 parser over a stream the input fills (pipelined requests, partial reads), each
//! request routed and answered as the server would.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vmm_fuzz::api_http(data);
});
