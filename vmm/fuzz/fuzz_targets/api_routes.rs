//! The API's routes: method, path and JSON body straight into `route`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vmm_fuzz::api_routes(data);
});
