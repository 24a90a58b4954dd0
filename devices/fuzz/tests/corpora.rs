//! Replays every seed (and every kept crash reproducer, `seeds/<target>/crash-*`) through its fuzz target
//! on stable, as a regression test that needs neither nightly nor libFuzzer, and checks that the seeds
//! reach what they were written for: each virtio seed completes at least one chain, each qcow2 seed opens
//! its image and serves its requests (the raw image is refused).

use std::path::PathBuf;

use devices_fuzz::targets;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir:?}: {e}"))
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {dir:?}");
    out
}

/// Every seed of a virtio target completes at least one chain (crash reproducers only must not panic).
fn virtio(target: &str, run: fn(&[u8]) -> usize) {
    for (name, data) in seeds(target) {
        let used = run(&data);
        if !name.starts_with("crash-") {
            assert!(used > 0, "{target}/{name}: no chain completed");
        }
    }
}

#[test]
fn mmio_transport_seeds() {
    virtio("mmio_transport", targets::mmio_transport);
}

#[test]
fn blk_request_seeds() {
    virtio("blk_request", targets::blk_request);
}

#[test]
fn virtio_net_seeds() {
    virtio("virtio_net", targets::virtio_net);
}

#[test]
fn virtio_console_seeds() {
    virtio("virtio_console", targets::virtio_console);
}

#[test]
fn qcow2_image_seeds() {
    for (name, data) in seeds("qcow2_image") {
        let done = targets::qcow2_image(&data);
        if name.starts_with("crash-") {
            continue;
        }
        if name == "raw-image" {
            assert_eq!(done, None, "a raw image must not open as qcow2");
            continue;
        }
        let requests = usize::from(data[1] % 16);
        assert_eq!(done, Some(requests), "qcow2_image/{name}");
    }
}
