//! Random and corrupted qcow2 headers and tables against `devices::disk`: thousands of seeded cases, each of
//! which must end in a clean error or a successful access, never a panic, abort or hang.
//!
//! Seed images come from `qemu-img` (4 KiB clusters so the header, L1, refcount table, refcount blocks and
//! L2 tables all sit in the first few clusters), one of them compressed and one with a backing file. Each
//! case flips bytes or plants random 64-bit words (table entries) in the metadata area and then opens,
//! reads, writes and flushes the image. Failing seeds are printed so a case reproduces alone.
//! Needs qemu-utils (`scripts/install-qemu-utils.sh`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use devices::disk::{DiskFile, Qcow2File};
use tests::{tool_ok as qemu, Rng};

fn seeds(dir: &Path) -> Vec<PathBuf> {
    let s = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    qemu(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4k",
            &s("plain.qcow2"),
            "4M",
        ],
    );
    qemu(
        "qemu-io",
        &[
            "-c",
            "write -P 0x61 0 64k",
            "-c",
            "write -P 0x62 1M 256k",
            "-c",
            "write -z 2M 64k",
            &s("plain.qcow2"),
        ],
    );
    qemu(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4k,compat=0.10",
            &s("v2.qcow2"),
            "4M",
        ],
    );
    qemu("qemu-io", &["-c", "write -P 0x63 8k 128k", &s("v2.qcow2")]);
    qemu(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=4k",
            &s("plain.qcow2"),
            &s("comp.qcow2"),
        ],
    );
    std::fs::write(dir.join("base.raw"), vec![0x77u8; 1 << 20]).unwrap();
    qemu(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4k",
            "-b",
            "base.raw",
            "-F",
            "raw",
            &s("overlay.qcow2"),
            "4M",
        ],
    );
    qemu(
        "qemu-io",
        &["-c", "write -P 0x64 4k 8k", &s("overlay.qcow2")],
    );
    ["plain", "v2", "comp", "overlay"]
        .iter()
        .map(|n| dir.join(format!("{n}.qcow2")))
        .collect()
}

/// Opens, reads, writes and flushes; any `Err` is fine, a panic is not.
fn exercise(path: &Path, rng: &mut Rng) {
    let writable = rng.below(2) == 0;
    let Ok(mut d) = Qcow2File::open(path, !writable) else {
        return;
    };
    let size = d.size();
    let mut buf = vec![0u8; 16 * 1024];
    for _ in 0..4 {
        let off = rng.below(size.saturating_add(8192).max(1));
        let len = 1 + rng.below(buf.len() as u64) as usize;
        let _ = d.read_at(&mut buf[..len], off);
        if writable {
            let off = rng.below(size.saturating_add(8192).max(1));
            let len = 1 + rng.below(8192) as usize;
            let _ = d.write_at(&buf[..len], off);
            if rng.below(4) == 0 {
                let _ = d.write_zeroes(off, rng.below(65536), rng.below(2) == 0);
            }
        }
    }
    let _ = d.flush();
}

#[test]
fn disk_qcow2_corrupted_metadata_never_panics() {
    let dir = std::env::temp_dir().join(format!("microvm-qcow2-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let seeds: Vec<Vec<u8>> = seeds(&dir)
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    let case_path = dir.join("case.qcow2");
    let cases: u64 = std::env::var("QCOW2_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let mut failures = Vec::new();
    for case in 0..cases {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (case + 1));
        let seed_idx = rng.below(seeds.len() as u64) as usize;
        let mut img = seeds[seed_idx].clone();
        // Metadata lives in the first clusters; aim most mutations there.
        let meta = img.len().min(64 * 1024);
        for _ in 0..1 + rng.below(6) {
            match rng.below(4) {
                0 => {
                    let at = rng.below(104) as usize;
                    img[at] = rng.next_u64() as u8;
                }
                1 => {
                    let at = (rng.below(meta as u64 / 8) * 8) as usize;
                    img[at..at + 8].copy_from_slice(&rng.next_u64().to_be_bytes());
                }
                2 => {
                    // A plausible-looking but wrong table entry: a cluster offset with flag bits.
                    let at = (rng.below(meta as u64 / 8) * 8) as usize;
                    let v = (rng.below(64) << 12) | (rng.next_u64() & 0xc000_0000_0000_0001);
                    img[at..at + 8].copy_from_slice(&v.to_be_bytes());
                }
                _ => {
                    let at = rng.below(meta as u64) as usize;
                    img[at] ^= 1 << rng.below(8);
                }
            }
        }
        if rng.below(10) == 0 {
            img.truncate(rng.below(img.len() as u64) as usize);
        }
        std::fs::write(&case_path, &img).unwrap();
        if catch_unwind(AssertUnwindSafe(|| exercise(&case_path, &mut rng))).is_err() {
            failures.push((case, seed_idx));
        }
    }
    assert!(
        failures.is_empty(),
        "panicking cases (case, seed image): {failures:?}"
    );
}

#[test]
fn disk_random_bytes_with_qcow2_magic_never_panic() {
    let dir = std::env::temp_dir().join(format!("microvm-qcow2-rand-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rand.qcow2");
    let mut failures = Vec::new();
    for case in 0..2000u64 {
        let mut rng = Rng(0xdead_beef ^ (case + 1));
        let len = 72 + rng.below(16 * 1024) as usize;
        let mut img: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        img[..4].copy_from_slice(b"QFI\xfb");
        img[4..8].copy_from_slice(&(2 + rng.below(2) as u32).to_be_bytes());
        img[20..24].copy_from_slice(&(9 + rng.below(13) as u32).to_be_bytes());
        img[32..36].fill(0);
        if len >= 80 && rng.below(2) == 0 {
            img[72..80].fill(0);
        }
        std::fs::write(&path, &img).unwrap();
        if catch_unwind(AssertUnwindSafe(|| exercise(&path, &mut rng))).is_err() {
            failures.push(case);
        }
    }
    assert!(failures.is_empty(), "panicking cases: {failures:?}");
}
