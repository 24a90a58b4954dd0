//! Firecracker's rate limiters enforced in a real VM: the test guest (tests/guests/virtio_blk.c,
//! `blkbulk=N`) reads 4 MiB from a drive in 64 KiB requests, one at a time, and the host times the read
//! between the guest's two marker lines. With a `bandwidth` bucket of 1 MiB/s (512 KiB per 500 ms,
//! starting full) the read cannot take less than 3.5 s; with an `ops` bucket of 16 requests/s (8 per
//! 500 ms) neither can 64 requests; without a limiter the same read is much faster. A limiter given in a
//! config file reads back from `GET /vm/config` in Firecracker's shape.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tests::{require_kvm, Vm};

const T: Duration = Duration::from_secs(90);
const PVH: &str = env!("GUEST_PVH");
/// 64 requests of 64 KiB.
const REQUESTS: u64 = 64;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("microvm-ratelimit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Boots the test guest on a 4 MiB drive with `rate_limiter` (JSON, or empty for none) and returns how
/// long the guest took to read it all.
fn timed_bulk_read(tag: &str, rate_limiter: &str) -> Duration {
    let img = tmp(&format!("{tag}.img"));
    std::fs::File::create(&img)
        .unwrap()
        .set_len(REQUESTS * 65536)
        .unwrap();
    let limiter = if rate_limiter.is_empty() {
        String::new()
    } else {
        format!(r#", "rate_limiter": {rate_limiter}"#)
    };
    let config = tmp(&format!("{tag}.json"));
    std::fs::write(
        &config,
        format!(
            r#"{{"boot-source": {{"kernel_image_path": "{PVH}", "boot_args": "blkbulk={REQUESTS} exit=0"}},
                "machine-config": {{"vcpu_count": 1, "mem_size_mib": 32}},
                "drives": [{{"drive_id": "data", "path_on_host": "{}", "is_root_device": false,
                             "is_read_only": true{limiter}}}]}}"#,
            img.display()
        ),
    )
    .unwrap();
    let vm = Vm::spawn(&["--config-file", config.to_str().unwrap()]);
    vm.wait_for_output("blk: bulk start", T);
    let t0 = Instant::now();
    vm.wait_for_output("blk: bulk done", T);
    let took = t0.elapsed();
    let out = vm.wait(T);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    took
}

#[test]
fn drive_rate_limiters_hold_the_guest_to_their_rate() {
    if !require_kvm() {
        return;
    }
    let free = timed_bulk_read("free", "");
    let bw = timed_bulk_read(
        "bandwidth",
        r#"{"bandwidth": {"size": 524288, "refill_time": 500}}"#,
    );
    let ops = timed_bulk_read("ops", r#"{"ops": {"size": 8, "refill_time": 500}}"#);
    eprintln!("4 MiB in 64 KiB reads: unlimited {free:?}, 1 MiB/s {bw:?}, 16 ops/s {ops:?}");
    // 3.5 MiB past the first full bucket at 1 MiB/s; 56 requests past the first 8 at 16/s. The timing
    // of the marker lines on the host may shave a few ms off either end.
    assert!(bw >= Duration::from_millis(3400), "bandwidth: {bw:?}");
    assert!(ops >= Duration::from_millis(3400), "ops: {ops:?}");
    // Not slower than the rate by much more than the machine's load can explain.
    assert!(bw < Duration::from_secs(20), "bandwidth: {bw:?}");
    assert!(ops < Duration::from_secs(20), "ops: {ops:?}");
    assert!(free < bw / 2, "unlimited {free:?} against limited {bw:?}");
}
