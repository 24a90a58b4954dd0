//! virtio-blk end to end on KVM: the test guest's polling driver (tests/guests/virtio_blk.c) reads and writes
//! disks given with `--disk`, through the MMIO transport, ioeventfd, the device model and the raw/qcow2
//! backends. The durability test kills `microvm` with SIGKILL right after the guest's FLUSH completed and
//! checks that the data is in the image and `qemu-img check` is clean; it also runs with the io_uring
//! engine and `O_DIRECT` (`io_engine=async,cache_type=direct`), as does a boot of the project's guest
//! kernel from its qcow2 root image, and on raw images with the thread-pool engine (`io_engine=threads`).
//! Needs KVM and qemu-utils (`scripts/install-qemu-utils.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tests::{qcow2_create, require_kvm, run, GuestImages, Vm};

const T: Duration = Duration::from_secs(60);
const PVH: &str = env!("GUEST_PVH");

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("microvm-virtio-blk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn qemu(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} ({e}); run scripts/install-qemu-utils.sh"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd} {args:?}: {text}");
    text
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The sector the guest's `blkwrite=S` writes: byte i is (S + i) mod 256.
fn expected_sector(s: u64) -> Vec<u8> {
    (0..512u64).map(|i| (s + i) as u8).collect()
}

/// Boots with `blkwrite=SECTOR halt`, waits for the flush to complete, then SIGKILLs the VMM.
fn write_then_kill(disk_arg: &str, sector: u64) {
    let cmdline = format!("blkwrite={sector} halt");
    let vm = Vm::spawn(&["--kernel", PVH, "--disk", disk_arg, "--cmdline", &cmdline]);
    vm.wait_for_output("blk: written and flushed", T);
    vm.signal(libc::SIGKILL);
    let out = vm.wait(T);
    assert_eq!(out.code, None, "killed by a signal");
}

#[test]
fn virtio_blk_flushed_write_survives_kill_9_qcow2() {
    if !require_kvm() {
        return;
    }
    let img = tmp("durable.qcow2");
    qcow2_create(&img, Some("64M"), &[]);
    write_then_kill(p(&img), 4097);
    let check = qemu("qemu-img", &["check", p(&img)]);
    assert!(check.contains("No errors were found"), "{check}");
    assert!(!check.contains("leaked"), "{check}");
    let raw = tmp("durable-converted.raw");
    qemu("qemu-img", &["convert", "-O", "raw", p(&img), p(&raw)]);
    let data = std::fs::read(&raw).unwrap();
    assert_eq!(&data[4097 * 512..4098 * 512], &expected_sector(4097)[..]);
    assert!(data[..4097 * 512].iter().all(|&b| b == 0));
}

#[test]
fn virtio_blk_flushed_write_survives_kill_9_raw() {
    if !require_kvm() {
        return;
    }
    let img = tmp("durable.raw");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    write_then_kill(&format!("{},format=raw,id=rawdisk", p(&img)), 9);
    let data = std::fs::read(&img).unwrap();
    assert_eq!(&data[9 * 512..10 * 512], &expected_sector(9)[..]);
}

/// The io_uring engine with O_DIRECT: the guest's write goes through io_uring (all of a raw image; on qcow2
/// the cluster is allocated beforehand, so the write takes the direct data path rather than imago), its
/// flush is answered only after the write completed and the file was synced.
#[test]
fn virtio_blk_flushed_write_survives_kill_9_async_direct() {
    if !require_kvm() {
        return;
    }
    let raw = tmp("durable-async.raw");
    std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    write_then_kill(&format!("{},io_engine=async,cache_type=direct", p(&raw)), 9);
    let data = std::fs::read(&raw).unwrap();
    assert_eq!(&data[9 * 512..10 * 512], &expected_sector(9)[..]);

    let img = tmp("durable-async.qcow2");
    qcow2_create(&img, Some("64M"), &[]);
    qemu("qemu-io", &["-c", "write -P 0x11 0 4M", p(&img)]);
    write_then_kill(
        &format!("{},io_engine=async,cache_type=direct", p(&img)),
        4097,
    );
    let check = qemu("qemu-img", &["check", p(&img)]);
    assert!(check.contains("No errors were found"), "{check}");
    assert!(!check.contains("leaked"), "{check}");
    qemu("qemu-io", &["-c", "read -P 0x11 0 2097664", p(&img)]);
    qemu("qemu-io", &["-c", "read -P 0x11 2098176 2096128", p(&img)]);
    let raw = tmp("durable-async-converted.raw");
    qemu("qemu-img", &["convert", "-O", "raw", p(&img), p(&raw)]);
    let data = std::fs::read(&raw).unwrap();
    assert_eq!(&data[4097 * 512..4098 * 512], &expected_sector(4097)[..]);
}

/// The thread-pool engine (`io_engine=threads`), through the page cache and with O_DIRECT: the guest's
/// flush is answered only after its write came back from a worker thread and the file was synced.
#[test]
fn virtio_blk_flushed_write_survives_kill_9_threads() {
    if !require_kvm() {
        return;
    }
    for cache in ["writeback", "direct"] {
        let raw = tmp(&format!("durable-threads-{cache}.raw"));
        std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
        write_then_kill(
            &format!("{},io_engine=threads,cache_type={cache}", p(&raw)),
            9,
        );
        let data = std::fs::read(&raw).unwrap();
        assert_eq!(&data[9 * 512..10 * 512], &expected_sector(9)[..], "{cache}");
    }
}

/// The project's guest kernel boots from its qcow2 root image and writes a scratch disk, both drives on
/// the io_uring engine with O_DIRECT.
#[test]
fn guest_kernel_boots_and_writes_with_async_direct_drives() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let (kernel, rootfs) = (images.kernel, images.disk);
    let scratch = tmp("blktest-async.raw");
    std::fs::write(&scratch, vec![0u8; 1 << 20]).unwrap();
    let root = format!("{},ro,io_engine=async,cache_type=direct", p(&rootfs));
    let data = format!("{},io_engine=async,cache_type=direct", p(&scratch));
    let out = run(
        &[
            "--kernel",
            p(&kernel),
            "--disk",
            &root,
            "--disk",
            &data,
            "--cmdline",
            "console=ttyS0 root=/dev/vda blktest=vdb",
        ],
        T,
    );
    assert!(
        out.stdout
            .contains("blktest: vdb: wrote and read back 4096 bytes"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        !out.stderr.contains("io_uring unavailable"),
        "{}",
        out.stderr
    );
    assert!(std::fs::read(&scratch)
        .unwrap()
        .starts_with(b"microvm blktest microvm blktest "));
    assert_eq!(out.code, Some(0));
}

#[test]
fn virtio_blk_reads_qemu_written_data_through_backing_chain() {
    if !require_kvm() {
        return;
    }
    let base = tmp("base.qcow2");
    qcow2_create(&base, Some("16M"), &[]);
    qemu("qemu-io", &["-c", "write -P 0x5a 1024 512", p(&base)]);
    let top = tmp("top.qcow2");
    qcow2_create(&top, None, &["-b", "base.qcow2", "-F", "qcow2"]);
    let out = run(
        &[
            "--kernel",
            PVH,
            "--disk",
            p(&top),
            "--cmdline",
            "blkread=2 exit=0",
        ],
        T,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("blk: read sector 2: 5a5a5a5a5a5a5a5a"),
        "{}",
        out.stdout
    );
}

#[test]
fn virtio_blk_read_only_disk_fails_writes() {
    if !require_kvm() {
        return;
    }
    let img = tmp("ro.raw");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let arg = format!("{},ro", p(&img));
    let out = run(
        &[
            "--kernel",
            PVH,
            "--disk",
            &arg,
            "--cmdline",
            "blkwrite=1 exit=0",
        ],
        T,
    );
    assert_eq!(out.code, Some(77), "the guest saw the write fail");
    assert!(out.stdout.contains("blk: error write"), "{}", out.stdout);
    assert!(std::fs::read(&img).unwrap().iter().all(|&b| b == 0));
}

#[test]
fn virtio_blk_second_vmm_cannot_open_a_disk_in_use() {
    if !require_kvm() {
        return;
    }
    let img = tmp("locked.qcow2");
    qcow2_create(&img, Some("16M"), &[]);
    let first = Vm::spawn(&["--kernel", PVH, "--disk", p(&img), "--cmdline", "halt"]);
    first.wait_for_output("halting", T);
    let second = run(
        &["--kernel", PVH, "--disk", p(&img), "--cmdline", "exit=0"],
        T,
    );
    assert_eq!(second.code, Some(1));
    assert!(second.stderr.contains("locked"), "{}", second.stderr);
    first.signal(libc::SIGTERM);
    first.wait(T);
}
