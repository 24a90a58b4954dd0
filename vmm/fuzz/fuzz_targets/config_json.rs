//! The `--config-file` JSON schema (parse, validate, serialize and parse again) and the `--disk`/`--net`
//! flag syntaxes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vmm_fuzz::config_json(data);
});
