//! Fuzzes the qcow2 backend with arbitrary image files: open (read-only and writable), read, write, flush.
#![no_main]

use devices::disk::{DiskFile, Qcow2File};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let path = std::env::temp_dir().join(format!("qcow2-fuzz-{}.img", std::process::id()));
    std::fs::write(&path, &data[1..]).unwrap();
    let writable = data[0] & 1 == 1;
    if let Ok(mut d) = Qcow2File::open(&path, !writable) {
        let size = d.size();
        let mut buf = vec![0u8; 8192];
        let off = u64::from(data[0]) * 4096 % size.max(1);
        let _ = d.read_at(&mut buf, off);
        if writable {
            let _ = d.write_at(&buf[..4096], off);
            let _ = d.write_zeroes(off, 65536, data[0] & 2 == 2);
            let _ = d.flush();
        }
    }
});
