//! A writable root filesystem on the project's guest kernel (issue #17), on real VMs. Every test boots
//! on its own COPY of the root image with `rw` on the command line (the shared image stays read-only).
//!
//! - `rootfs/c/fstest.c` (static, glibc and musl) creates, writes, renames, links and deletes hundreds of files
//!   on the host and in the guest and must print the same sorted listing with checksums; after the
//!   guest powers off, `e2fsck -fn` finds nothing and the host's `debugfs` reads the same bytes.
//! - Durability: the guest writes and fsyncs a file, `microvm` is killed with SIGKILL, and the file is
//!   on the disk (raw and qcow2 images).
//! - Write-back: a file written without fsync is `Dirty` in /proc/meminfo, the periodic write-back puts
//!   it on the disk, and after `kill -9` the host reads it whole from a clean image.
//! - A full disk: ENOSPC, then a delete and a write that works, and a clean `e2fsck -fn`.
//! - A corrupt block pointer: EIO for that file and a kernel log line, no panic.
//! - A second disk written through `/dev/vdb` (unaligned pieces) reads back with `qemu-io`.
//! - Memory pressure: a hog in a 64 MiB guest makes the kernel evict clean cached pages (and write
//!   dirty ones) before the OOM killer picks it; the evicted files read back the same.
//! - `rootfs/c/mapshared.c` (glibc and musl): writable shared file mappings coherent with read and
//!   write, written back at msync, munmap and exit (debugfs reads the files after the power-off).
//! - `rootfs/c/dirfd.c` (glibc and musl): directory descriptors and the working directory follow
//!   their directory through renames and moves, a removed one is ENOENT, an unlinked open file keeps
//!   its data until the last close; the same lines as on the host and a clean image after. Its
//!   `--many 2000`: one directory of 2,000 entries created, renamed, listed and emptied.
//! - `rootfs/c/mapedge.c` (glibc and musl): the edges of shared file mappings against the host
//!   (truncation under a mapping is SIGBUS past the end, a full tmpfs is SIGBUS at the write
//!   fault, mtime follows mapped writes); a full ext2 disk is SIGBUS at the write fault (guest
//!   only); mapped writes reach the disk by the periodic write-back (SIGKILL, then debugfs);
//!   a read() straight into a mapped hole of another file reaches the disk after fsync.
//! - `rootfs/c/bdevmeta.c`: `/dev/vdb` read under its mounted ext2 shows the metadata as written
//!   (a copy made then is a clean filesystem), and an inode written through it is seen.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tests::{assert_same_lines_with, host_output, lines_with, qcow2_create, run, GuestImages, Vm};

const T: Duration = Duration::from_secs(240);

/// A scratch directory for one test.
fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("microvm-guest-fs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A copy of the root image in `dir`: qcow2 as built, or converted to raw.
fn copy_root(images: &GuestImages, dir: &Path, raw: bool) -> PathBuf {
    let out = dir.join(if raw { "root.raw" } else { "root.qcow2" });
    if raw {
        qemu_img(&["convert", "-O", "raw"], &images.disk, &out);
    } else {
        std::fs::copy(&images.disk, &out).unwrap();
    }
    out
}

fn qemu_img(args: &[&str], from: &Path, to: &Path) {
    let st = Command::new("qemu-img")
        .args(args)
        .arg(from)
        .arg(to)
        .status()
        .expect("qemu-img (qemu-utils) must be installed");
    assert!(st.success());
}

/// The image as a raw file `e2fsck` and `debugfs` can read.
fn as_raw(img: &Path) -> PathBuf {
    if img.extension().is_some_and(|e| e == "raw") {
        return img.to_path_buf();
    }
    let raw = img.with_extension("check.raw");
    qemu_img(&["convert", "-O", "raw"], img, &raw);
    raw
}

fn args(images: &GuestImages, disk: &Path, cmdline: &str) -> Vec<String> {
    vec![
        "--kernel".into(),
        images.kernel.display().to_string(),
        "--disk".into(),
        disk.display().to_string(),
        "--cmdline".into(),
        cmdline.into(),
    ]
}

/// microvm's arguments for the shared root image read-only as /dev/vda, then `disks` as /dev/vdb,
/// /dev/vdc, ... and `cmdline`.
fn args_with_disks(images: &GuestImages, disks: &[&Path], cmdline: &str) -> Vec<String> {
    let disks: Vec<String> = disks.iter().map(|d| d.display().to_string()).collect();
    let extra: Vec<&str> = disks.iter().flat_map(|d| ["--disk", d]).collect();
    images.args(&extra, cmdline)
}

/// A new empty ext2 image at `path` of `blocks` 1 KiB blocks.
fn mke2fs_1k(path: &Path, blocks: u32) {
    let st = Command::new("mke2fs")
        .args(["-F", "-q", "-t", "ext2", "-b", "1024"])
        .arg(path)
        .arg(blocks.to_string())
        .status()
        .expect("mke2fs (e2fsprogs) must be installed");
    assert!(st.success());
}

/// `e2fsck -fn` must find nothing.
fn fsck_clean(raw: &Path) {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(raw)
        .output()
        .expect("e2fsck (e2fsprogs) must be installed");
    assert!(
        out.status.success(),
        "e2fsck -fn:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn debugfs(raw: &Path, request: &str) -> Vec<u8> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(raw)
        .output()
        .unwrap();
    assert!(out.status.success(), "debugfs {request}: {out:?}");
    out.stdout
}

#[test]
fn fstest_matches_the_host_and_the_image_stays_consistent() {
    fstest_matches_the_host("glibc");
}

/// The same with the musl build (its own stdio buffering, `opendir`/`readdir` and `*at` wrappers).
#[test]
fn fstest_musl_matches_the_host_and_the_image_stays_consistent() {
    fstest_matches_the_host("musl");
}

fn fstest_matches_the_host(libc: &str) {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let dir = scratch(&format!("fstest-{libc}"));
    let (n, d) = ("300", "12");
    let host_top = dir.join("host");
    let host_out = host_output(
        tests::host_command(images.host_program(&format!("bin/fstest-{libc}")))
            .arg(&host_top)
            .args([n, d]),
        "fstest: done",
    );

    let disk = copy_root(&images, &dir, false);
    let cmdline =
        format!("console=ttyS0 root=/dev/vda rw -- run /bin/fstest-{libc} /root/fst {n} {d}");
    let guest = run(&args(&images, &disk, &cmdline), T);
    assert!(
        guest
            .stdout
            .contains("mounted root (ext2 filesystem, read-write)"),
        "{}",
        guest.stdout
    );
    assert_same_lines_with("fstest: ", &guest.stdout, &host_out);
    guest.assert_ran_to_the_end(&format!("/bin/fstest-{libc}"));
    guest.assert_no_missing_syscall();

    // After the power-off: a consistent image whose files the host reads as the host wrote them.
    let raw = as_raw(&disk);
    fsck_clean(&raw);
    for f in [
        "d02/f0002",
        "d01/r0000",
        "d01/f0097",
        "d02/f0194",
        "d05/hardlink",
        "d11/at-dir/at-file",
        "d04/r0291",
    ] {
        let want = std::fs::read(host_top.join(f)).unwrap();
        let got = debugfs(&raw, &format!("cat /root/fst/{f}"));
        assert!(
            got == want,
            "{f}: debugfs read {} bytes, the host wrote {}",
            got.len(),
            want.len()
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The bytes `fstest --durable` writes.
fn durable_pattern(len: usize) -> Vec<u8> {
    (0..len).map(|k| ((k * 131) ^ (k >> 9)) as u8).collect()
}

fn fsync_survives_kill_9(raw_image: bool) {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let dir = scratch(if raw_image {
        "durable-raw"
    } else {
        "durable-qcow2"
    });
    let disk = copy_root(&images, &dir, raw_image);
    let kib = 300;
    let cmdline =
        format!("console=ttyS0 root=/dev/vda rw -- run /bin/fstest-glibc --durable /durable {kib}");
    let vm = Vm::spawn(&args(&images, &disk, &cmdline));
    vm.wait_for_output("fstest: synced", T);
    vm.signal(libc::SIGKILL);
    let out = vm.wait(T);
    assert_eq!(out.code, None, "microvm was killed");
    let raw = as_raw(&disk);
    let got = debugfs(&raw, "cat /durable");
    assert!(
        got == durable_pattern(kib * 1024),
        "after SIGKILL the synced file reads back {} bytes, not the {} written",
        got.len(),
        kib * 1024
    );
    // Everything was synced and nothing changed after it: the image is consistent too.
    fsck_clean(&raw);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn fsync_survives_kill_9_raw() {
    fsync_survives_kill_9(true);
}

#[test]
fn fsync_survives_kill_9_qcow2() {
    fsync_survives_kill_9(false);
}

/// Write-back: a file written without fsync sits in the page cache as Dirty (/proc/meminfo), the
/// periodic write-back (every 5 s, from the idle task) puts it on the disk without any sync, and
/// after `kill -9` of microvm the host reads it whole from a consistent image.
#[test]
fn unsynced_writes_reach_the_disk_by_periodic_write_back() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let dir = scratch("writeback");
    let disk = copy_root(&images, &dir, true);
    let kib = 200;
    let cmdline = format!(
        "console=ttyS0 root=/dev/vda rw -- run /bin/fstest-glibc --writeback /root/wb {kib}"
    );
    let vm = Vm::spawn(&args(&images, &disk, &cmdline));
    vm.wait_for_output("fstest: written back: dirty 0 kB", T);
    vm.signal(libc::SIGKILL);
    let out = vm.wait(T);
    assert!(
        out.stdout
            .contains(&format!("fstest: wrote {} bytes, dirty yes", kib * 1024)),
        "the written file was not counted as Dirty:\n{}",
        out.stdout
    );
    let got = debugfs(&disk, "cat /root/wb");
    assert!(
        got == durable_pattern(kib * 1024),
        "after the periodic write-back and SIGKILL the file reads back {} bytes, not the {} written",
        got.len(),
        kib * 1024
    );
    fsck_clean(&disk);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_full_disk_is_enospc_then_a_delete_makes_room() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let dir = scratch("full");
    let disk = copy_root(&images, &dir, true);
    let cmdline = "console=ttyS0 root=/dev/vda rw -- run /bin/fstest-glibc --fill /fill";
    let guest = run(&args(&images, &disk, cmdline), T);
    let lines = lines_with(&guest.stdout, "fstest: ");
    assert_eq!(
        lines,
        [
            "fstest: fill stopped with errno 28",
            "fstest: filled some",
            "fstest: one more byte -> refused 28",
            "fstest: wrote again after the delete",
            "fstest: done",
        ],
        "{}",
        guest.stdout
    );
    assert_eq!(guest.code, Some(0), "{}", guest.stdout);
    fsck_clean(&disk);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_corrupt_block_pointer_is_eio_not_a_panic() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let dir = scratch("corrupt");
    let disk = copy_root(&images, &dir, true);
    // Block 3 of the 4 MiB file points far past the end of the 64 MiB disk.
    let st = Command::new("debugfs")
        .args(["-w", "-R", "sif /srv/big.bin block[3] 0x0ffffff0"])
        .arg(&disk)
        .status()
        .unwrap();
    assert!(st.success());
    let cmdline = "console=ttyS0 root=/dev/vda -- run /bin/fstest-glibc --read /srv/big.bin";
    let guest = run(&args(&images, &disk, cmdline), T);
    assert_eq!(
        lines_with(&guest.stdout, "fstest: "),
        ["fstest: read -> 5", "fstest: done"],
        "{}",
        guest.stdout
    );
    // One log line for the file, not one per block or per retry.
    assert_eq!(
        guest
            .stdout
            .matches("EXT2-fs error (device vda): block number past the end")
            .count(),
        1,
        "{}",
        guest.stdout
    );
    assert_eq!(guest.code, Some(0), "{}", guest.stdout);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_second_disk_written_through_dev_vdb_reads_back_with_qemu_io() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let dir = scratch("vdb");
    let vdb = dir.join("vdb.qcow2");
    qcow2_create(&vdb, Some("8M"), &[]);
    let args = args_with_disks(
        &images,
        &[&vdb],
        "console=ttyS0 root=/dev/vda -- run /bin/fstest-glibc --blk /dev/vdb",
    );
    let guest = run(&args, T);
    assert_eq!(
        lines_with(&guest.stdout, "fstest: "),
        [
            "fstest: /dev/vdb has 8388608 bytes",
            "fstest: write at the end -> 28",
            "fstest: blk ok",
            "fstest: done",
        ],
        "{}",
        guest.stdout
    );
    assert_eq!(guest.code, Some(0), "{}", guest.stdout);
    let out = Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            "read -P 0xa5 0 1M",
            "-c",
            "read -P 0x5a 1M 1M",
        ])
        .args(["-c", "read -P 0 2M 6M"])
        .arg(&vdb)
        .output()
        .expect("qemu-io (qemu-utils) must be installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("Pattern verification failed"),
        "{text}"
    );
    assert_eq!(text.matches("read ").count(), 3, "{text}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `dumpe2fs -h` of `raw` as (field, value) pairs.
fn dumpe2fs(raw: &Path) -> Vec<(String, String)> {
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(raw)
        .output()
        .unwrap();
    assert!(out.status.success(), "dumpe2fs: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn field(fields: &[(String, String)], name: &str) -> u64 {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("dumpe2fs has no {name:?}"))
        .1
        .parse()
        .unwrap()
}

/// An ext2 made on the host is mounted on /mnt from /dev/vdb, written, read through the page cache
/// while the file changes (write, truncate) and while the disk under it changes (dd to /dev/vdb),
/// remounted read-only (EROFS)
/// and read-write, refused to unmount while a file is open, unmounted; `df` gives the numbers Linux's
/// statfs gives for the image; a tmpfs with size= fills up (ENOSPC) and gives its pages back at the
/// unlink and last close; /tmp is a tmpfs. Then the host's e2fsck and debugfs check /dev/vdb.
#[test]
fn mount_ext2_on_vdb_remount_umount_and_tmpfs() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let dir = scratch("mount");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("hello.txt"), "made on the host\n").unwrap();
    std::fs::write(
        src.join("blk.txt"),
        "0123456789abcdefghijklmnopqrstuvwxyz\n",
    )
    .unwrap();
    let vdb = dir.join("vdb.raw");
    let st = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext2", "-b", "1024", "-d"])
        .arg(&src)
        .arg(&vdb)
        .arg("8M")
        .status()
        .expect("mke2fs (e2fsprogs) must be installed");
    assert!(st.success());
    let bmap = debugfs(&vdb, "bmap /blk.txt 0");
    let block: u64 = String::from_utf8_lossy(&bmap).trim().parse().unwrap();
    let guest = run(
        &images.args(
            &["--disk", &vdb.display().to_string()],
            &format!(
                "console=ttyS0 root=/dev/vda -- run /bin/busybox sh /usr/share/fstest/mount.sh {block}"
            ),
        ),
        T,
    );
    let out = guest.stdout.replace('\r', "");
    assert_eq!(guest.code, Some(0), "{out}");
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with('[') && !l.starts_with("init: "))
        .collect();
    let section = |name: &str| -> Vec<&str> {
        let start = lines
            .iter()
            .position(|l| *l == format!("== {name}"))
            .unwrap_or_else(|| panic!("no section {name}:\n{out}"));
        lines[start + 1..]
            .iter()
            .take_while(|l| !l.starts_with("== "))
            .copied()
            .collect()
    };
    assert_eq!(
        section("boot mounts"),
        [
            "/dev/vda / ext2 ro,relatime 0 0",
            "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0",
            "devtmpfs /dev devtmpfs rw,relatime,mode=755 0 0",
            "tmpfs /tmp tmpfs rw,relatime,mode=1777 0 0",
            "tmpfs /run tmpfs rw,relatime,mode=755 0 0",
        ],
        "{out}"
    );
    assert_eq!(
        section("mount vdb"),
        [
            "mounted",
            "made on the host",
            "/dev/vdb /mnt ext2 rw,relatime 0 0",
            "wrote",
            "/",
            "dev 0:0 fe10",
        ],
        "{out}"
    );
    // Reads through the page cache see writes through the file, truncation, and a write to the
    // disk under the mounted filesystem.
    assert_eq!(
        section("cache"),
        [
            "0123456789abcdefghijklmnopqrstuvwxyz",
            "cached",
            "made CHANGEDhost",
            "made",
            "written through /dev/vdbopqrstuvwxyz",
        ],
        "{out}"
    );
    assert_eq!(
        section("exdev"),
        [
            "ln: /tmp/link: Invalid cross-device link",
            "mv copied across",
            "/mnt: blk.txt hello.txt lost+found new.txt  /tmp: dir ",
            "moved back",
        ],
        "{out}"
    );
    assert_eq!(
        section("remount"),
        [
            "/dev/vdb /mnt ext2 ro,relatime 0 0",
            "Read-only file system",
            "write refused",
            "rw-again",
        ],
        "{out}"
    );
    assert_eq!(
        section("busy"),
        [
            "umount: can't unmount /mnt: Device or resource busy",
            "umount refused",
            "unmounted",
            "0",
            "while unmounted /dev/vdbopqrstuvwxyz",
        ],
        "{out}"
    );
    assert_eq!(
        section("tmpfs"),
        [
            "shmem 0",
            "scratch /mnt tmpfs rw,relatime,size=64k,mode=700 0 0",
            "No space left on device",
            "size 65536",
            "scratch                     64        64         0 100% /mnt",
            "shmem 64",
            "shmem 64",
            "shmem 0",
            "tmpfs unmounted",
        ],
        "{out}"
    );
    assert_eq!(
        section("/tmp"),
        ["hi", "e g ", "sparse 0 10000000", "0", "shmem 0"],
        "{out}"
    );
    assert!(lines.contains(&"== done"), "{out}");

    // On the host: consistent, with the guest's files, and df showed what Linux's statfs gives for
    // this image (f_blocks without the metadata overhead, used = f_blocks - f_bfree, available =
    // free - reserved, in 1 KiB blocks).
    fsck_clean(&vdb);
    assert_eq!(debugfs(&vdb, "cat /new.txt"), b"guest-data\n");
    assert_eq!(debugfs(&vdb, "cat /dir/f"), b"nested\n");
    assert_eq!(debugfs(&vdb, "cat /rw.txt"), b"rw-again\n");
    let f = dumpe2fs(&vdb);
    assert_eq!(field(&f, "Block size"), 1024);
    let blocks = field(&f, "Block count") - field(&f, "Overhead clusters");
    let free = field(&f, "Free blocks");
    let avail = free - field(&f, "Reserved block count");
    let used = blocks - free;
    // busybox rounds to the nearest percent.
    let pct = (used * 100 + (used + avail) / 2) / (used + avail);
    let df = section("df");
    let want = format!("/dev/vdb {blocks} {used} {avail} {pct}% /mnt");
    assert_eq!(
        df.first()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")),
        Some(want),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn directories_and_files_held_by_descriptors_match_the_host() {
    if let Some(images) = GuestImages::for_vm() {
        dirfd_matches_the_host(&images, "glibc", None);
    }
}

#[test]
fn directories_and_files_held_by_descriptors_match_the_host_musl() {
    if let Some(images) = GuestImages::for_vm() {
        dirfd_matches_the_host(&images, "musl", None);
    }
}

/// A directory of 2,000 entries (~90 blocks of 1 KiB, past the kernel's directory index threshold):
/// created, renamed, listed, looked up and emptied as on the host, the image clean after. The
/// longest guest_fs test: ~6 minutes of guest time at load 7.6 (it never finished in 12 before the
/// index, each create parsing every block three times).
#[test]
fn a_directory_with_thousands_of_entries_matches_the_host() {
    if let Some(images) = GuestImages::for_vm() {
        dirfd_matches_the_host(&images, "musl", Some(2000));
    }
}

/// `rootfs/c/dirfd.c` on the host and in the guest (`--many N` when `many` is set): the same lines,
/// a clean image after the power-off. Returns the guest's console.
fn dirfd_matches_the_host(images: &GuestImages, libc: &str, many: Option<u32>) -> String {
    let tag = format!("dirfd-{libc}-{}", many.unwrap_or(0));
    let dir = scratch(&tag);
    let args_of = |top: &str| -> Vec<String> {
        match many {
            Some(n) => vec!["--many".into(), top.into(), n.to_string()],
            None => vec![top.into()],
        }
    };
    let host_top = dir.join("host");
    let host_out = host_output(
        tests::host_command(images.host_program(&format!("bin/dirfd-{libc}")))
            .args(args_of(&host_top.display().to_string())),
        "dirfd: done",
    );

    let disk = copy_root(images, &dir, true);
    let cmdline = format!(
        "console=ttyS0 root=/dev/vda rw -- run /bin/dirfd-{libc} {}",
        args_of("/root/dirfd").join(" ")
    );
    let timeout = if many.is_some() { 3 * T } else { T };
    let guest = run(&args(images, &disk, &cmdline), timeout);
    assert_same_lines_with("dirfd: ", &guest.stdout, &host_out);
    assert_eq!(guest.code, Some(0), "{}", guest.stdout);
    // The unlinked file and the removed directory were freed at their last close.
    fsck_clean(&disk);
    let _ = std::fs::remove_dir_all(dir);
    guest.stdout
}

/// Writable shared file mappings share the page cache with read/write and with each other, and
/// what is written through them reaches the file at msync, munmap and exit: `rootfs/c/mapshared.c`
/// prints the same lines in the guest as on the host, then the powered-off image is clean and the
/// files written only through mappings (never synced) hold the host's bytes.
fn shared_file_mappings_match_the_host(libc: &str) {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let dir = scratch(&format!("mapshared-{libc}"));
    let host_top = dir.join("host");
    let host_out = host_output(
        tests::host_command(images.host_program(&format!("bin/mapshared-{libc}"))).arg(&host_top),
        "mapshared: done",
    );

    let disk = copy_root(&images, &dir, true);
    let cmdline = format!("console=ttyS0 root=/dev/vda rw -- run /bin/mapshared-{libc} /root/ms");
    let guest = run(&args(&images, &disk, &cmdline), T);
    assert_same_lines_with("mapshared: ", &guest.stdout, &host_out);
    assert_eq!(guest.code, Some(0), "{}", guest.stdout);
    fsck_clean(&disk);
    for f in ["f", "viamap", "atexit"] {
        let want = std::fs::read(host_top.join(f)).unwrap();
        let got = debugfs(&disk, &format!("cat /root/ms/{f}"));
        assert!(
            got == want,
            "{f}: debugfs read {:?}, the host wrote {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn shared_file_mappings_match_the_host_glibc() {
    shared_file_mappings_match_the_host("glibc");
}

#[test]
fn shared_file_mappings_match_the_host_musl() {
    shared_file_mappings_match_the_host("musl");
}

/// Memory pressure evicts clean page-cache pages: a 64 MiB guest caches the 4 MiB /srv/big.bin and
/// busybox, then `memtest hog` touches memory until the OOM killer ends it; before it kills, the
/// kernel writes dirty pages back and evicts clean ones, so the cache shrinks, the kernel counts
/// evictions, and the files read back the same (`rootfs/files/usr/share/fstest/pressure.sh`).
#[test]
fn memory_pressure_evicts_clean_cached_pages() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let dir = scratch("pressure");
    let disk = copy_root(&images, &dir, true);
    let mut a = args(
        &images,
        &disk,
        "console=ttyS0 root=/dev/vda rw -- run /bin/busybox sh /usr/share/fstest/pressure.sh",
    );
    a.extend(["--mem".to_string(), "64".to_string()]);
    let guest = run(&a, T);
    let out = &guest.stdout;
    let kb = |key: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
    };
    let (before, after) = (kb("cached-before "), kb("cached-after "));
    assert!(
        out.contains("hog=137"),
        "the hog was not OOM-killed:\n{out}"
    );
    assert!(
        before >= 6000 && after < before / 2,
        "Cached {before} kB before the hog, {after} kB after:\n{out}"
    );
    assert_eq!(kb("dirty-after "), 0, "{out}");
    assert!(out.contains("the evicted files read the same"), "{out}");
    assert!(
        out.contains("dirty data, written before the pressure"),
        "{out}"
    );
    // pagecache: N pages, H hits, M pages read in, E evicted, W written back
    let evicted: u64 = out
        .lines()
        .find_map(|l| l.split("pagecache: ").nth(1))
        .and_then(|l| l.split(", ").nth(3))
        .and_then(|e| e.strip_suffix(" evicted"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no pagecache line:\n{out}"));
    eprintln!("Cached {before} kB before the hog, {after} kB after; {evicted} pages evicted");
    assert!(evicted >= 1000, "{evicted} pages evicted:\n{out}");
    assert!(out.contains("== done"), "{out}");
    assert_eq!(guest.code, Some(0), "{out}");
    fsck_clean(&disk);
    let _ = std::fs::remove_dir_all(dir);
}

/// Boots a writable raw copy of the root image (in the scratch directory `tag`) with init running
/// `program`, waits for `marker` and then `linger`, and kills microvm with SIGKILL (a power cut):
/// returns the scratch directory, the disk and the console.
fn run_then_kill_9(
    images: &GuestImages,
    tag: &str,
    program: &str,
    marker: &str,
    linger: Duration,
) -> (PathBuf, PathBuf, tests::Output) {
    let dir = scratch(tag);
    let disk = copy_root(images, &dir, true);
    let cmdline = format!("console=ttyS0 root=/dev/vda rw -- run {program}");
    let vm = Vm::spawn(&args(images, &disk, &cmdline));
    vm.wait_for_output(marker, T);
    std::thread::sleep(linger);
    vm.signal(libc::SIGKILL);
    let out = vm.wait(T);
    assert_eq!(out.code, None, "microvm was killed");
    (dir, disk, out)
}

/// Asserts that `path` on the raw image `disk` reads back `want` (debugfs; else how many of its
/// bytes did), `what` naming the file, and that the image is consistent (e2fsck).
fn assert_file_on_disk(disk: &Path, path: &str, want: &[u8], what: &str) {
    let got = debugfs(disk, &format!("cat {path}"));
    assert!(
        got == want,
        "after SIGKILL {what} reads back {} bytes, {} of them as written",
        got.len(),
        got.iter().zip(want).filter(|(a, b)| a == b).count()
    );
    fsck_clean(disk);
}

/// Writes through a shared mapping reach the disk with fsync alone (no msync, no munmap), as on
/// Linux: `mapshared --durable` fills a file through its mapping, fsyncs the descriptor and waits;
/// microvm is killed with SIGKILL and the host reads the file from the disk.
#[test]
fn writes_through_a_mapping_survive_kill_9_after_fsync() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let (dir, disk, _) = run_then_kill_9(
        &images,
        "mapdurable",
        "/bin/mapshared-glibc --durable /mapped",
        "mapshared: synced",
        Duration::ZERO,
    );
    let want: Vec<u8> = (0..64 * 1024usize)
        .map(|k| (k * 7 + (k >> 12)) as u8)
        .collect();
    assert_file_on_disk(
        &disk,
        "/mapped",
        &want,
        "the file written through a mapping and fsynced",
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A store into a mapped hole made by the kernel itself reaches the disk, as on Linux:
/// `mapedge --readinto` maps a sparse file B shared and read()s a file A of the same filesystem
/// straight into it, so the write faults (page_mkwrite: B's blocks allocated) are taken by the
/// kernel's copy to user in the middle of the read of A; then msync and fsync. The lines match the
/// host's; microvm is killed with SIGKILL and debugfs must read A's bytes from B. A write fault
/// taken with the filesystem in use would leave B's blocks a hole (page_mkwrite cannot reserve
/// them then); the read validates its buffer, faults included, before it touches the filesystem,
/// so none is (see `fs::mapping::page_mkwrite`).
#[test]
fn a_read_into_a_mapped_hole_reaches_the_disk() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let host_dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("readinto-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&host_dir);
    std::fs::create_dir_all(&host_dir).unwrap();
    let host_out = host_output(
        tests::host_command(images.host_program("bin/mapedge-glibc"))
            .arg("--readinto")
            .arg(&host_dir),
        "mapedge: done",
    );
    let _ = std::fs::remove_dir_all(&host_dir);

    let (dir, disk, out) = run_then_kill_9(
        &images,
        "readinto",
        "/bin/mapedge-glibc --readinto / --wait",
        "mapedge: readinto synced",
        Duration::ZERO,
    );
    assert_same_lines_with("mapedge: readinto: ", &out.stdout, &host_out);
    let want: Vec<u8> = (0..64 * 1024usize)
        .map(|k| (k * 11 + (k >> 12) + 5) as u8)
        .collect();
    assert_file_on_disk(
        &disk,
        "/ri-b",
        &want,
        "the file read() into through a mapping of its hole",
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The edges of shared file mappings, against the host (`rootfs/c/mapedge.c`, run as root: it
/// mounts a 64 KiB tmpfs of its own on both): truncation under shared and private mappings
/// (SIGBUS past the new end, zeros after the file grows again; on the root ext2 and on tmpfs), a
/// write through a mapping into a hole of a full tmpfs (SIGBUS, then fine after a delete), and
/// mtime after writes through a mapping (again after msync on the disk filesystem, not on tmpfs).
/// The host's run is on a disk filesystem (under the target directory, not a possibly-tmpfs /tmp)
/// so that its disk lines mean a disk filesystem too.
fn mapping_edges_match_the_host(libc: &str) {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("mapedge mounts a tmpfs on the host and needs root: skipped");
        return;
    }
    let host_top = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mapedge-{libc}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&host_top);
    let host_out = host_output(
        tests::host_command(images.host_program(&format!("bin/mapedge-{libc}"))).arg(&host_top),
        "mapedge: done",
    );
    let _ = std::fs::remove_dir_all(&host_top);

    let dir = scratch(&format!("mapedge-{libc}"));
    let disk = copy_root(&images, &dir, true);
    let cmdline = format!("console=ttyS0 root=/dev/vda rw -- run /bin/mapedge-{libc} /root/me");
    let guest = run(&args(&images, &disk, &cmdline), T);
    assert_same_lines_with("mapedge: ", &guest.stdout, &host_out);
    assert_eq!(guest.code, Some(0), "{}", guest.stdout);
    fsck_clean(&disk);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn mapping_edges_match_the_host_glibc() {
    mapping_edges_match_the_host("glibc");
}

#[test]
fn mapping_edges_match_the_host_musl() {
    mapping_edges_match_the_host("musl");
}

/// The periodic write-back covers pages written through a shared mapping (Linux's flusher writes
/// them too): `mapedge --writeback` fills a file through its mapping only (no msync, munmap or
/// fsync), sleeps past two write-back periods, writes a second pattern over the first half
/// (the pages were write-protected by the write-back, so these writes fault and dirty them
/// again), sleeps again; microvm is killed with SIGKILL and the host reads both patterns.
#[test]
fn writes_through_a_mapping_reach_the_disk_by_periodic_write_back() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let (dir, disk, _) = run_then_kill_9(
        &images,
        "mapwriteback",
        "/bin/mapedge-glibc --writeback /wbmap",
        "mapedge: slept",
        Duration::ZERO,
    );
    let want: Vec<u8> = (0..64 * 1024usize)
        .map(|k| {
            if k < 32 * 1024 {
                (k * 13 + 1) as u8
            } else {
                (k * 7 + (k >> 12)) as u8
            }
        })
        .collect();
    assert_file_on_disk(
        &disk,
        "/wbmap",
        &want,
        "the file written only through a mapping",
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The periodic write-back runs whatever the guest runs (Linux's flusher threads wake on a
/// timer): `mapedge --spin` fills a file through a shared mapping only and then computes without a
/// system call, so neither the end of a filesystem call nor the idle task ever comes; the timer
/// tick taken in user mode does the pass once it is due. After two write-back periods microvm is
/// killed with SIGKILL and the host reads every byte (the kernel before: the pages stayed dirty).
#[test]
fn writes_through_a_mapping_reach_the_disk_while_the_guest_only_computes() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    // Two write-back periods (5 s each) and a margin: elapsed time is what is tested here, there
    // is nothing in the guest to wait for.
    let (dir, disk, _) = run_then_kill_9(
        &images,
        "mapspin",
        "/bin/mapedge-glibc --spin /spinmap",
        "mapedge: written, spinning",
        Duration::from_secs(12),
    );
    let want: Vec<u8> = (0..64 * 1024usize)
        .map(|k| (k * 5 + (k >> 12) + 3) as u8)
        .collect();
    assert_file_on_disk(
        &disk,
        "/spinmap",
        &want,
        "the file written through a mapping by a program that then only computes",
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A write through a shared mapping into a hole of a full ext2 disk is SIGBUS at the fault (the
/// block is allocated there, as Linux's page_mkwrite does on ext4; not a write lost at write-back),
/// both for a page not mapped yet and for a hole page mapped by a read; after a delete the same
/// write works and reaches the disk. Guest only: the host cannot mount an ext2 image here (no loop
/// devices in the test environment), so `mapedge --enospc` prints what Linux would and the test
/// checks those lines, then the image with e2fsck and debugfs.
#[test]
fn a_mapped_write_into_a_hole_of_a_full_disk_is_sigbus() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let dir = scratch("mapenospc");
    let small = dir.join("small.raw");
    mke2fs_1k(&small, 1024);
    let args = args_with_disks(
        &images,
        &[&small],
        "console=ttyS0 root=/dev/vda -- run /bin/mapedge-glibc --enospc /dev/vdb /mnt",
    );
    let guest = run(&args, T);
    assert_eq!(
        lines_with(&guest.stdout, "mapedge: "),
        [
            "mapedge: enospc: a read of the hole ok 0",
            "mapedge: enospc: filled some: 1, stopped with errno 28",
            "mapedge: enospc: write into the hole through the mapping: SIGBUS code 2",
            "mapedge: enospc: the other page of the hole too: SIGBUS code 2",
            "mapedge: enospc: after a delete: ok 88",
            "mapedge: enospc: msync ok",
            "mapedge: enospc: pread sees it: 88",
            "mapedge: enospc: umount ok",
            "mapedge: done",
        ],
        "{}",
        guest.stdout
    );
    assert_eq!(guest.code, Some(0), "{}", guest.stdout);
    fsck_clean(&small);
    let mut want = vec![0u8; 8192];
    want[0] = b'X';
    let got = debugfs(&small, "cat /hole");
    assert!(
        got == want,
        "/hole reads back {} bytes, {} of them as written",
        got.len(),
        got.iter().zip(&want).filter(|(a, b)| a == b).count()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A file grown by a write while its last page is mapped shared and writable, on 1 KiB blocks
/// (`mapedge --grow`): the write at the end of the page leaves two blocks of it a hole, and the
/// page, writable since its first store, must fault again (Linux's pagecache_isize_extended
/// write-protects it when the size grows past it), so a store into the hole on a full disk is
/// SIGBUS at the fault, not data dropped at write-back with a "lost" log line; after a delete the
/// store works, and after msync and fsync it is on the disk even though microvm is then killed
/// with SIGKILL: debugfs reads it, e2fsck finds the image clean. The same for a second file grown
/// by ftruncate (Linux's truncate_setsize). Guest only, as the test above.
#[test]
fn a_mapped_write_past_the_old_end_of_a_grown_file_on_a_full_disk_is_sigbus() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let dir = scratch("mapgrow");
    let small = dir.join("small.raw");
    mke2fs_1k(&small, 1024);
    let args = args_with_disks(
        &images,
        &[&small],
        "console=ttyS0 root=/dev/vda -- run /bin/mapedge-glibc --grow /dev/vdb /mnt",
    );
    let vm = Vm::spawn(&args);
    vm.wait_for_output("mapedge: grow: synced", T);
    vm.signal(libc::SIGKILL);
    let out = vm.wait(T);
    assert_eq!(out.code, None, "microvm was killed");
    assert_eq!(
        lines_with(&out.stdout, "mapedge: "),
        [
            "mapedge: grow: a write through the mapping before the end: ok 98",
            "mapedge: grow: grown to 4096",
            "mapedge: grow: ftruncate: a write before the end: ok 99",
            "mapedge: grow: ftruncate up ok",
            "mapedge: grow: filled, stopped with errno 28",
            "mapedge: grow: a write through the mapping into the hole: SIGBUS code 2",
            "mapedge: grow: ftruncate: a write into the hole: SIGBUS code 2",
            "mapedge: grow: msync while full ok",
            "mapedge: grow: a read before the old end: ok 97",
            "mapedge: grow: after a delete: ok 90",
            "mapedge: grow: ftruncate: after a delete: ok 84",
            "mapedge: grow: ftruncate: msync ok, fsync ok",
            "mapedge: grow: msync ok",
            "mapedge: grow: fsync ok",
            "mapedge: grow: pread sees it: 98 90",
            "mapedge: grow: synced",
        ],
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("is lost"),
        "a write through the mapping was dropped at write-back:\n{}",
        out.stdout
    );
    fsck_clean(&small);
    let mut want = vec![0u8; 4096];
    want[..100].fill(b'a');
    want[0] = b'b';
    want[2000] = b'Z';
    want[4092..].copy_from_slice(b"tail");
    let got = debugfs(&small, "cat /grow");
    assert!(
        got == want,
        "/grow reads back {} bytes, {} of them as written",
        got.len(),
        got.iter().zip(&want).filter(|(a, b)| a == b).count()
    );
    let mut want = vec![0u8; 4096];
    want[..100].fill(b'a');
    want[0] = b'c';
    want[3000] = b'T';
    let got = debugfs(&small, "cat /grow2");
    assert!(
        got == want,
        "/grow2 reads back {} bytes, {} of them as written",
        got.len(),
        got.iter().zip(&want).filter(|(a, b)| a == b).count()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `/dev/vdb` read and written under its mounted ext2 (`rootfs/c/bdevmeta.c`): files made,
/// renamed and deleted with no sync, then the superblock read through the device agrees with
/// statfs and the whole device copied onto `/dev/vdc` is a clean filesystem holding them (its
/// metadata was written back before the read, as Linux's lives in the device's buffer cache);
/// an inode's owner written through the device is what stat shows next (the filesystem dropped
/// its cached metadata). The symlink takes the number of a file deleted with a dirty page: that
/// page must not be written onto the link (the kernel before gave EIO at every write-back).
/// Guest only: the host here cannot mount an ext2 image.
#[test]
fn a_disk_read_and_written_under_its_mounted_filesystem_is_coherent() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let dir = scratch("bdevmeta");
    let (vdb, vdc) = (dir.join("vdb.raw"), dir.join("vdc.raw"));
    mke2fs_1k(&vdb, 2048);
    std::fs::File::create(&vdc)
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    let args = args_with_disks(
        &images,
        &[&vdb, &vdc],
        "console=ttyS0 root=/dev/vda -- run /bin/bdevmeta-glibc /dev/vdb /dev/vdc /mnt",
    );
    let guest = run(&args, T);
    assert_eq!(
        lines_with(&guest.stdout, "bdevmeta: "),
        [
            "bdevmeta: superblock free inodes agree with statfs: 1",
            "bdevmeta: superblock free blocks agree with statfs: 1",
            "bdevmeta: copied 2048 KiB",
            "bdevmeta: the inode on the device has stat's owner: 1",
            "bdevmeta: after writing its owner through the device, stat says 4242",
            "bdevmeta: a file reads the same after the device write: file 30 line 03",
            "bdevmeta: umount ok",
            "bdevmeta: done",
        ],
        "{}",
        guest.stdout
    );
    assert_eq!(guest.code, Some(0), "{}", guest.stdout);
    // The copy taken while mounted, and the disk after umount.
    fsck_clean(&vdc);
    fsck_clean(&vdb);
    let listing = String::from_utf8_lossy(&debugfs(&vdc, "ls /d")).into_owned();
    for name in ["f00", "g01", "f39", "link"] {
        assert!(
            listing.contains(name),
            "{name} not in the copy's /d: {listing}"
        );
    }
    for name in ["f01", "f05"] {
        assert!(
            !listing.contains(&format!(" {name} ")),
            "{name} in the copy's /d: {listing}"
        );
    }
    let want: String = (0..39).map(|r| format!("file 39 line {r:02}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&debugfs(&vdc, "cat /d/f39")), want);
    let stat = String::from_utf8_lossy(&debugfs(&vdb, "stat /d/f02")).into_owned();
    assert!(stat.contains("User:  4242"), "{stat}");
    let _ = std::fs::remove_dir_all(dir);
}
