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
use tests::{qcow2_create, tool_ok as qemu, Rng};

fn seeds(dir: &Path) -> Vec<PathBuf> {
    let s = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    qcow2_create(s("plain.qcow2"), Some("4M"), &["-o", "cluster_size=4k"]);
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
    qcow2_create(
        s("v2.qcow2"),
        Some("4M"),
        &["-o", "cluster_size=4k,compat=0.10"],
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
    qcow2_create(
        s("overlay.qcow2"),
        Some("4M"),
        &["-o", "cluster_size=4k", "-b", "base.raw", "-F", "raw"],
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

/// A fresh directory for one test's images.
fn fresh_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("microvm-qcow2-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn be64_at(img: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(img[at..at + 8].try_into().unwrap())
}

/// A 1 MiB qcow2 v3 image with 4 KiB clusters and data in its first 8 KiB (two data clusters).
fn small_image(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let s = p.to_str().unwrap();
    qcow2_create(s, Some("1M"), &["-o", "cluster_size=4k"]);
    qemu("qemu-io", &["-c", "write -P 0x61 0 8k", s]);
    p
}

/// Writes `img` with `patch` applied as `name` and returns its path.
fn patched(dir: &Path, name: &str, img: &[u8], patch: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut img = img.to_vec();
    patch(&mut img);
    let p = dir.join(name);
    std::fs::write(&p, &img).unwrap();
    p
}

/// What qemu-io says when it opens `path` and reads its first sector (its stderr and stdout).
fn qemu_io_says(path: &Path) -> String {
    let out = std::process::Command::new("qemu-io")
        .args(["-r", "-c", "read 0 512"])
        .arg(path)
        .output()
        .expect("qemu-io");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

/// The open error of `path`, read-only and writable (both must fail the same way).
fn open_error(path: &Path) -> String {
    let ro = Qcow2File::open(path, true).expect_err("read-only open must fail");
    let rw = Qcow2File::open(path, false).expect_err("writable open must fail");
    assert_eq!(ro.to_string(), rw.to_string());
    ro.to_string()
}

/// Metadata tables past the end of the file refuse the open (QEMU would read them as zeroes, i.e. an
/// empty disk), and sizes beyond qcow2's limits are refused with qemu-img's own words.
#[test]
fn disk_qcow2_metadata_past_the_end_or_too_big_is_refused() {
    let dir = fresh_dir("meta");
    let good = small_image(&dir, "good.qcow2");
    let img = std::fs::read(&good).unwrap();
    let l1 = be64_at(&img, 40) as usize;
    let rt = be64_at(&img, 48) as usize;
    let set =
        |at: usize, v: u64| move |b: &mut Vec<u8>| b[at..at + 8].copy_from_slice(&v.to_be_bytes());
    let set32 =
        |at: usize, v: u32| move |b: &mut Vec<u8>| b[at..at + 4].copy_from_slice(&v.to_be_bytes());

    let cases: Vec<(&str, PathBuf, &str)> = vec![
        (
            "L1 table past the end",
            patched(&dir, "l1.qcow2", &img, set(40, 1 << 30)),
            "L1 table at 0x40000000+0x8 beyond the end of the file",
        ),
        (
            "L2 table past the end",
            patched(&dir, "l2.qcow2", &img, set(l1, (1 << 63) | (1 << 30))),
            "L2 table at 0x40000000 (L1 index 0x0) beyond the end of the file",
        ),
        (
            "L2 table unaligned",
            patched(&dir, "l2u.qcow2", &img, set(l1, (1 << 63) | 0x1200)),
            "L2 table offset 0x1200 unaligned",
        ),
        (
            "refcount table past the end",
            patched(&dir, "rt.qcow2", &img, set(48, 1 << 30)),
            "refcount table at 0x40000000+0x1000 beyond the end of the file",
        ),
        (
            "refcount block past the end",
            patched(&dir, "rb.qcow2", &img, set(rt, 1 << 30)),
            "refcount block at 0x40000000 (refcount table index 0x0) beyond the end of the file",
        ),
    ];
    for (what, path, expected) in &cases {
        let e = open_error(path);
        assert!(e.contains(expected), "{what}: {e}");
    }

    // Limits, compared with what qemu-io says about the same bytes.
    let limits: Vec<(&str, PathBuf, &str)> = vec![
        (
            "size 2^63",
            patched(&dir, "big63.qcow2", &img, set(24, 1 << 63)),
            "Image is too big",
        ),
        (
            "size 2^62",
            patched(&dir, "big62.qcow2", &img, set(24, 1 << 62)),
            "Image is too big",
        ),
        (
            "size beyond the L1 table",
            patched(&dir, "l1small.qcow2", &img, set(24, 1 << 40)),
            "L1 table is too small",
        ),
        (
            "L1 table over 32 MiB",
            patched(&dir, "l1huge.qcow2", &img, set32(36, 1 << 30)),
            "Active L1 table too large",
        ),
        (
            "refcount table over 8 MiB",
            patched(&dir, "rthuge.qcow2", &img, set32(56, 1 << 30)),
            "Reference count table too large",
        ),
        (
            "L1 table end overflows",
            patched(&dir, "l1wrap.qcow2", &img, set(40, !0xfff)),
            "Active L1 table offset invalid",
        ),
        (
            "refcount table end overflows",
            patched(&dir, "rtwrap.qcow2", &img, set(48, !0xfff)),
            "Reference count table offset invalid",
        ),
    ];
    for (what, path, expected) in &limits {
        let e = open_error(path);
        assert!(e.contains(expected), "{what}: {e}");
        let q = qemu_io_says(path);
        assert!(q.contains(expected), "{what}: qemu-io says {q:?}");
    }
    // The unpatched image still opens and reads its data.
    let mut d = Qcow2File::open(&good, true).unwrap();
    let mut buf = vec![0u8; 8192];
    d.read_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&b| b == 0x61));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A data cluster past the end of the file (its L2 entry patched) fails the requests that touch it with
/// an I/O error, read-only and writable, never reads as zeroes; the rest of the disk works.
#[test]
fn disk_qcow2_data_cluster_past_the_end_fails_its_requests() {
    let dir = fresh_dir("data");
    let good = small_image(&dir, "good.qcow2");
    let img = std::fs::read(&good).unwrap();
    let l2 = (be64_at(&img, be64_at(&img, 40) as usize) & 0x00ff_ffff_ffff_fe00) as usize;
    // Guest cluster 1 (4 KiB..8 KiB) now points 1 GiB into the file.
    let path = patched(&dir, "far.qcow2", &img, |b| {
        b[l2 + 8..l2 + 16].copy_from_slice(&((1u64 << 63) | (1 << 30)).to_be_bytes())
    });
    for read_only in [true, false] {
        let mut d = Qcow2File::open(&path, read_only).unwrap();
        let mut buf = vec![0u8; 4096];
        d.read_at(&mut buf, 0).unwrap();
        assert!(buf.iter().all(|&b| b == 0x61), "cluster 0 still reads");
        let e = d.read_at(&mut buf, 4096).unwrap_err();
        assert!(e.to_string().contains("beyond its end"), "{e}");
        // A request that only starts before it fails too.
        let mut two = vec![0u8; 8192];
        assert!(d.read_at(&mut two, 0).is_err());
        if !read_only {
            assert!(d.write_at(&[1u8; 512], 4096).is_err());
            assert!(d.write_zeroes(4096, 4096, false).is_err());
            assert!(d.discard(4096, 4096).is_err());
            d.write_at(&[2u8; 512], 64 * 1024).unwrap();
            d.flush().unwrap();
        }
    }
    // The file did not grow to 1 GiB.
    assert!(std::fs::metadata(&path).unwrap().len() < 1 << 20);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An image naming itself as its backing file, and a chain a -> b -> a, are refused with one short line.
/// (qemu-io on the self-referencing image grew to 2.4 GB of memory within a minute and was killed.)
#[test]
fn disk_qcow2_backing_loops_give_one_short_line() {
    let dir = fresh_dir("loop");
    let s = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    let create = |name: &str, backing: Option<&str>| {
        let mut options = vec!["-o", "cluster_size=4k"];
        if let Some(b) = backing {
            options.extend(["-b", b, "-F", "qcow2"]);
        }
        qcow2_create(s(name), Some("1M"), &options);
    };
    create("self.qcow2", None);
    qemu(
        "qemu-img",
        &[
            "rebase",
            "-u",
            "-f",
            "qcow2",
            "-b",
            "self.qcow2",
            "-F",
            "qcow2",
            &s("self.qcow2"),
        ],
    );
    create("a.qcow2", None);
    create("b.qcow2", Some("a.qcow2"));
    qemu(
        "qemu-img",
        &[
            "rebase",
            "-u",
            "-f",
            "qcow2",
            "-b",
            "b.qcow2",
            "-F",
            "qcow2",
            &s("a.qcow2"),
        ],
    );
    for (top, names) in [
        ("self.qcow2", "self.qcow2"),
        ("a.qcow2", "a.qcow2"),
        ("b.qcow2", "b.qcow2"),
    ] {
        for read_only in [true, false] {
            let e = Qcow2File::open(&dir.join(top), read_only).unwrap_err();
            let line = e.to_string();
            eprintln!("{top}: {line}");
            assert!(
                matches!(e, devices::disk::DiskError::BackingLoop { .. }),
                "{top}: {line}"
            );
            assert!(
                line.contains("loop") && line.contains(names),
                "{top}: {line}"
            );
            assert!(
                !line.contains('\n') && line.len() < 300,
                "{top}: {} chars: {line}",
                line.len()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A backing image with corrupt metadata is refused with its own name and the same reason as a top image.
#[test]
fn disk_qcow2_corrupt_backing_image_is_named() {
    let dir = fresh_dir("backing");
    let base = small_image(&dir, "base.qcow2");
    let mut img = std::fs::read(&base).unwrap();
    img[40..48].copy_from_slice(&(1u64 << 30).to_be_bytes());
    std::fs::write(&base, &img).unwrap();
    let top = dir.join("top.qcow2");
    qcow2_create(&top, Some("1M"), &["-u", "-b", "base.qcow2", "-F", "qcow2"]);
    let e = Qcow2File::open(&top, true).unwrap_err().to_string();
    assert!(
        e.contains("base.qcow2") && e.contains("L1 table at 0x40000000"),
        "{e}"
    );
    assert!(e.len() < 300, "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
