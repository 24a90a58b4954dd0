//! Interop of microvm's disk backends with the real `qemu-img` / `qemu-io`.
//!
//! Images made by qemu (plain, with a backing file, zlib-compressed, v2 and v3, cluster sizes 4 KiB to
//! 2 MiB) must read back the right bytes through `devices::disk`; images written through `devices::disk`
//! must pass `qemu-img check` with no errors and no leaks and compare equal to the expected content.
//! Needs qemu-utils (`scripts/install-qemu-utils.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;

use devices::disk::{open_disk, DiskError, DiskFile, DiskOptions, ImageFormat, Qcow2File};
use tests::{qcow2_create, tool_ok as ok, Rng};

const MIB: u64 = 1 << 20;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("microvm-interop-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} ({e}); run scripts/install-qemu-utils.sh"));
    out
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `qemu-img check` must report neither errors nor leaks (exit status 0).
fn check_clean(img: &Path) {
    let out = run("qemu-img", &["check", p(img)]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "qemu-img check {img:?}: {text}");
    assert!(text.contains("No errors were found"), "{text}");
    assert!(!text.contains("leaked"), "{text}");
}

fn compare(img: &Path, expected_raw: &Path) {
    ok(
        "qemu-img",
        &[
            "compare",
            "-f",
            "qcow2",
            "-F",
            "raw",
            p(img),
            p(expected_raw),
        ],
    );
}

fn open_qcow2(img: &Path, ro: bool) -> Box<dyn DiskFile> {
    open_disk(
        img,
        &DiskOptions {
            read_only: ro,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("open {img:?}: {e} ({:?})", std::error::Error::source(&e)))
}

fn read(d: &mut dyn DiskFile, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    d.read_at(&mut b, off).unwrap();
    b
}

#[test]
fn disk_qemu_created_images_read_back_for_all_cluster_sizes_and_versions() {
    let dir = tmpdir("create");
    for compat in ["0.10", "1.1"] {
        for cs in ["4k", "64k", "2M"] {
            let img = dir.join(format!("img-{compat}-{cs}.qcow2"));
            qcow2_create(
                &img,
                Some("16M"),
                &["-o", &format!("compat={compat},cluster_size={cs}")],
            );
            ok(
                "qemu-io",
                &[
                    "-c",
                    "write -P 0xab 4096 65536",
                    "-c",
                    "write -P 0x5c 5M 3M",
                    p(&img),
                ],
            );
            if compat == "1.1" {
                ok("qemu-io", &["-c", "write -z 5M 1M", p(&img)]);
            }
            let mut d = open_qcow2(&img, true);
            assert_eq!(d.size(), 16 * MIB);
            assert!(read(&mut *d, 0, 4096).iter().all(|&b| b == 0));
            assert!(read(&mut *d, 4096, 65536).iter().all(|&b| b == 0xab));
            let zero_end = if compat == "1.1" { 6 * MIB } else { 5 * MIB };
            assert!(read(&mut *d, 5 * MIB, (zero_end - 5 * MIB) as usize)
                .iter()
                .all(|&b| b == 0));
            assert!(read(&mut *d, zero_end, (8 * MIB - zero_end) as usize)
                .iter()
                .all(|&b| b == 0x5c));
            assert!(read(&mut *d, 8 * MIB, MIB as usize).iter().all(|&b| b == 0));
        }
    }
}

#[test]
fn disk_backing_chain_with_relative_names_reads_through() {
    let dir = tmpdir("backing");
    let sub = dir.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    // base.raw <- mid.qcow2 (relative name "../base.raw") <- top.qcow2 (relative "mid.qcow2"), all
    // resolved against the naming image's directory, not our working directory.
    let base = dir.join("base.raw");
    std::fs::write(&base, vec![0x11u8; 8 * MIB as usize]).unwrap();
    let mid = sub.join("mid.qcow2");
    qcow2_create(&mid, None, &["-b", "../base.raw", "-F", "raw"]);
    ok("qemu-io", &["-c", "write -P 0x22 1M 1M", p(&mid)]);
    let top = sub.join("top.qcow2");
    qcow2_create(
        &top,
        None,
        &["-o", "cluster_size=4k", "-b", "mid.qcow2", "-F", "qcow2"],
    );
    ok("qemu-io", &["-c", "write -P 0x33 1536K 4K", p(&top)]);

    let mut d = open_qcow2(&top, false);
    assert!(read(&mut *d, 0, 4096).iter().all(|&b| b == 0x11));
    assert!(read(&mut *d, MIB, 4096).iter().all(|&b| b == 0x22));
    assert!(read(&mut *d, 1536 * 1024, 4096).iter().all(|&b| b == 0x33));
    // Partial overwrite of a cluster only present in the backing file: copy-on-write.
    d.write_at(&[0x44u8; 512], 2 * MIB + 512).unwrap();
    d.flush().unwrap();
    drop(d);

    // The backing files were opened read-only and are untouched.
    assert!(std::fs::read(&base).unwrap().iter().all(|&b| b == 0x11));
    check_clean(&top);
    check_clean(&mid);
    ok(
        "qemu-io",
        &[
            "-c",
            "read -P 0x11 2M 512",
            "-c",
            "read -P 0x44 2097664 512",
            "-c",
            "read -P 0x11 2098176 3584",
            p(&top),
        ],
    );
}

#[test]
fn disk_compressed_image_reads_back_and_cow_from_compressed_clusters() {
    let dir = tmpdir("compressed");
    let src = dir.join("src.raw");
    let mut rng = Rng(7);
    let mut data = vec![0u8; 4 * MIB as usize];
    for (i, chunk) in data.chunks_mut(4096).enumerate() {
        // Compressible but position-dependent content; some all-zero chunks.
        if i % 5 != 0 {
            let v = rng.next_u64() as u8;
            for (j, b) in chunk.iter_mut().enumerate() {
                *b = v ^ (j / 64) as u8;
            }
        }
    }
    std::fs::write(&src, &data).unwrap();
    let comp = dir.join("comp.qcow2");
    ok(
        "qemu-img",
        &["convert", "-c", "-O", "qcow2", p(&src), p(&comp)],
    );
    let info = ok("qemu-img", &["info", p(&comp)]);
    assert!(info.contains("qcow2"), "{info}");

    let mut d = open_qcow2(&comp, false);
    assert_eq!(read(&mut *d, 0, data.len()), data);
    // Overwrite parts of compressed clusters; the rest of each cluster must survive.
    let expected = dir.join("expected.raw");
    for i in 0..50u64 {
        let off = rng.below(4 * MIB - 700);
        let len = 1 + rng.below(700) as usize;
        let buf = vec![(i as u8).wrapping_mul(37) | 1; len];
        d.write_at(&buf, off).unwrap();
        data[off as usize..off as usize + len].copy_from_slice(&buf);
    }
    d.flush().unwrap();
    assert_eq!(read(&mut *d, 0, data.len()), data);
    drop(d);
    std::fs::write(&expected, &data).unwrap();
    check_clean(&comp);
    compare(&comp, &expected);
}

#[test]
fn disk_random_writes_through_backend_pass_qemu_img_check_and_compare() {
    let dir = tmpdir("random");
    for (v, cs) in [
        ("0.10", "64k"),
        ("1.1", "4k"),
        ("1.1", "2M"),
        ("1.1", "64k"),
    ] {
        let img = dir.join(format!("rw-{v}-{cs}.qcow2"));
        qcow2_create(
            &img,
            Some("32M"),
            &["-o", &format!("compat={v},cluster_size={cs}")],
        );
        let mut expected = vec![0u8; 32 * MIB as usize];
        let mut rng = Rng(0x1234 + cs.len() as u64);
        {
            let mut d = open_qcow2(&img, false);
            for i in 0..300u32 {
                let off = rng.below(32 * MIB - 200_000);
                match rng.below(10) {
                    0 if v == "1.1" => {
                        let len = rng.below(150_000);
                        d.write_zeroes(off, len, rng.below(2) == 0).unwrap();
                        expected[off as usize..(off + len) as usize].fill(0);
                    }
                    1 => {
                        let len = rng.below(150_000);
                        d.discard(off, len).unwrap();
                        expected[off as usize..(off + len) as usize].fill(0);
                    }
                    _ => {
                        let len = 1 + rng.below(150_000) as usize;
                        let buf: Vec<u8> = (0..len).map(|j| (i as usize * 7 + j) as u8).collect();
                        d.write_at(&buf, off).unwrap();
                        expected[off as usize..off as usize + len].copy_from_slice(&buf);
                    }
                }
                if i % 50 == 0 {
                    d.flush().unwrap();
                }
            }
            d.flush().unwrap();
            assert!(
                read(&mut *d, 0, expected.len()) == expected,
                "readback via our backend ({v}, {cs})"
            );
        }
        let exp = dir.join(format!("expected-{v}-{cs}.raw"));
        std::fs::write(&exp, &expected).unwrap();
        check_clean(&img);
        compare(&img, &exp);
    }
}

#[test]
fn disk_qemu_io_sees_patterns_written_by_backend() {
    let dir = tmpdir("pattern");
    let img = dir.join("pat.qcow2");
    qcow2_create(&img, Some("8M"), &[]);
    let mut d = open_qcow2(&img, false);
    d.write_at(&vec![0xa5u8; 128 * 1024], MIB).unwrap();
    d.write_at(&vec![0x5au8; 4096], 7 * MIB).unwrap();
    d.flush().unwrap();
    drop(d);
    ok(
        "qemu-io",
        &[
            "-c",
            "read -P 0xa5 1M 128K",
            "-c",
            "read -P 0x5a 7M 4K",
            "-c",
            "read -P 0 0 1M",
            p(&img),
        ],
    );
    check_clean(&img);
}

#[test]
fn disk_encrypted_image_is_refused_clearly() {
    let dir = tmpdir("encrypted");
    let img = dir.join("enc.qcow2");
    let args = [
        "create",
        "-q",
        "--object",
        "secret,id=sec0,data=123456",
        "-f",
        "qcow2",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=sec0",
        p(&img),
        "16M",
    ];
    // qemu-img times its LUKS key derivation with the process's CPU time and gives up ("Unable to get
    // accurate CPU usage") when a loaded host gives it too little: try again a few times.
    let created = (0..5).any(|_| run("qemu-img", &args).status.success());
    if !created {
        ok("qemu-img", &args);
    }
    match Qcow2File::open(&img, true) {
        Err(e @ DiskError::Encrypted { .. }) => assert!(e.to_string().contains("encrypted")),
        other => panic!("expected an encryption error, got {other:?}"),
    }
}

#[test]
fn disk_writable_image_is_locked_against_second_writer_and_qemu() {
    let dir = tmpdir("lock");
    let img = dir.join("locked.qcow2");
    qcow2_create(&img, Some("8M"), &[]);
    let _first = open_qcow2(&img, false);
    let second = open_disk(
        &img,
        &DiskOptions {
            read_only: false,
            format: Some(ImageFormat::Qcow2),
            ..Default::default()
        },
    );
    assert!(
        matches!(second, Err(DiskError::Locked { .. })),
        "{:?}",
        second.err()
    );
    // qemu honours the lock as well.
    let out = run("qemu-io", &["-c", "write 0 512", p(&img)]);
    assert!(!out.status.success(), "qemu-io wrote to an image we hold");
}
