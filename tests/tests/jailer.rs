//! `microvm-jailer` (vmm/src/jailer): a jailed VM boots and is driven through its API socket inside the
//! jail; the jail holds only the files given; the VMM runs as the given uid/gid with no capability at all;
//! a cgroup memory limit ends a VM whose guest touches more RAM than it allows; bad input is one line and
//! status 1. Root only (the jailer needs it); skipped otherwise.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tests::{
    api, is_root, microvm_bin, read_http_response, require_kvm, wait_until, GuestImages, Vm,
};

const T: Duration = Duration::from_secs(60);
const PVH: &str = env!("GUEST_PVH");
const UID: u32 = 65534;
const GID: u32 = 65534;

fn jailer_bin() -> PathBuf {
    microvm_bin().with_file_name("microvm-jailer")
}

/// A fresh chroot base directory for one test.
fn base(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("microvm-jailer-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn jailer(base: &Path, id: &str, extra: &[&str], microvm_args: &[&str]) -> Command {
    let mut cmd = Command::new(jailer_bin());
    cmd.args(["--id", id, "--exec-file"])
        .arg(microvm_bin())
        .args(["--uid", &UID.to_string(), "--gid", &GID.to_string()])
        .arg("--chroot-base-dir")
        .arg(base)
        .args(extra)
        .arg("--")
        .args(microvm_args);
    cmd
}

fn request(sock: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    read_http_response(&mut s)
}

/// Every path under `root`, relative, sorted.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The files `ldd` says `exe` loads (none for a static binary).
fn libraries_of(exe: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(exe).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn status_field(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .trim()
        .to_owned()
}

#[test]
fn a_jailed_vm_boots_and_answers_its_api_inside_the_jail() {
    if !is_root() || !require_kvm() {
        eprintln!("SKIPPED: needs root and KVM");
        return;
    }
    let base = base("api");
    let kernel = Path::new(PVH);
    let mut cmd = jailer(
        &base,
        "vm-api",
        &[
            "--file",
            PVH,
            "--resource-limit",
            "no-file=128,fsize=1048576",
        ],
        &["--api-sock", "/api.sock", "--id", "vm-api"],
    );
    let vm = Vm::spawn_cmd(&mut cmd);
    let root = base.join("microvm/vm-api/root");
    let sock = root.join("api.sock");
    assert!(
        wait_until(T, || sock.exists()),
        "no socket: {}",
        vm.stdout()
    );

    // The API, through the socket inside the jail: configure and start the guest by its in-jail path.
    let name = kernel.file_name().unwrap().to_str().unwrap();
    let (code, _) = request(
        &sock,
        "PUT",
        "/boot-source",
        &format!("{{\"kernel_image_path\": \"/{name}\", \"boot_args\": \"count\"}}"),
    );
    assert_eq!(code, 204);
    let (code, body) = request(
        &sock,
        "PUT",
        "/actions",
        "{\"action_type\": \"InstanceStart\"}",
    );
    assert_eq!(code, 204, "{body}");
    vm.wait_for_output("count", T);
    let (code, body) = request(&sock, "GET", "/", "");
    assert_eq!(code, 200);
    assert!(
        body.contains("\"id\":\"vm-api\"") || body.contains("\"id\": \"vm-api\""),
        "{body}"
    );
    assert!(body.contains("Running"), "{body}");

    // Only what was listed is in the jail (the socket was made by the VMM), besides the dynamic loader
    // and shared libraries of a dynamically linked microvm, at their host paths (what `ldd` lists).
    let listed = [
        "api.sock",
        "dev",
        "dev/kvm",
        "dev/net",
        "dev/net/tun",
        "microvm",
        name,
    ];
    let libs = libraries_of(&microvm_bin());
    let mut expected: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
    for lib in &libs {
        let mut p = PathBuf::new();
        for c in lib.strip_prefix("/").unwrap().components() {
            p.push(c);
            expected.push(p.display().to_string());
        }
    }
    let in_jail = tree(&root);
    for e in &expected {
        assert!(in_jail.contains(e), "{e} is missing: {in_jail:?}");
    }
    // Anything else is a library those libraries load, in a library directory.
    for e in &in_jail {
        assert!(
            expected.contains(e) || (e.starts_with("lib") && e.contains(".so")),
            "{e} should not be in the jail: {in_jail:?}"
        );
    }
    // The process's root is the jail: / seen from inside is the jail's root.
    let pid = vm.pid();
    let inside = PathBuf::from(format!("/proc/{pid}/root"));
    assert_eq!(tree(&inside), in_jail);

    // The uid/gid asked for, no supplementary groups, every capability set empty.
    assert_eq!(
        status_field(pid, "Uid:"),
        format!("{UID}\t{UID}\t{UID}\t{UID}")
    );
    assert_eq!(
        status_field(pid, "Gid:"),
        format!("{GID}\t{GID}\t{GID}\t{GID}")
    );
    assert_eq!(status_field(pid, "Groups:"), "");
    for cap in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(status_field(pid, cap), "0000000000000000", "{cap}");
    }
    // The environment is empty and the resource limits are set.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        environ.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&environ)
    );
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 128 ")),
        "{limits}"
    );
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max file size") && l.contains(" 1048576 ")),
        "{limits}"
    );
    // Its seccomp filters are on as well.
    assert_eq!(status_field(pid, "Seccomp:"), "2");

    let (code, _) = request(
        &sock,
        "PUT",
        "/actions",
        "{\"action_type\": \"SendCtrlAltDel\"}",
    );
    assert_eq!(code, 204);
    let out = vm.wait(T);
    assert_eq!(out.code, Some(57), "{out:?}");
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn a_cgroup_memory_limit_ends_a_vm_that_touches_more() {
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let memcg = Path::new("/sys/fs/cgroup/memory");
    let (version, setting, cgroup_dir) = if memcg.join("memory.limit_in_bytes").exists() {
        (
            "1",
            "memory.limit_in_bytes=100663296",
            memcg.join("microvm"),
        )
    } else {
        (
            "2",
            "memory.max=100663296",
            PathBuf::from("/sys/fs/cgroup/microvm"),
        )
    };
    let base = base("mem");
    let disk = base.join("rootfs.qcow2");
    std::fs::copy(&images.disk, &disk).unwrap();
    let kernel = images.kernel.to_str().unwrap();
    // 96 MiB for the whole VMM; the guest has 256 MiB and its hog touches it 4 MiB at a time.
    let mut cmd = jailer(
        &base,
        "vm-mem",
        &[
            "--file",
            kernel,
            "--file",
            disk.to_str().unwrap(),
            "--cgroup-version",
            version,
            "--cgroup",
            setting,
        ],
        &[
            "--kernel",
            "/guest-kernel",
            "--disk",
            "/rootfs.qcow2,ro",
            "--mem",
            "256",
            "--cmdline",
            "console=ttyS0 root=/dev/vda -- run /bin/memtest hog",
        ],
    );
    let vm = Vm::spawn_cmd(&mut cmd);
    let out = vm.wait(Duration::from_secs(300));
    // The host's OOM killer for the cgroup ends microvm with SIGKILL before the guest's own OOM killer
    // would have ended the hog (the guest has 2.7 times the limit).
    assert_eq!(out.code, None, "not killed: {out:?}");
    assert!(out.stdout.contains("memtest: hog"), "{out:?}");
    assert!(!out.stdout.contains("init: /bin/memtest exited"), "{out:?}");
    let cg = cgroup_dir.join("vm-mem");
    if version == "1" {
        let oom = std::fs::read_to_string(cg.join("memory.oom_control")).unwrap();
        assert!(oom.contains("oom_kill 1"), "{oom}");
        let max = std::fs::read_to_string(cg.join("memory.max_usage_in_bytes")).unwrap();
        assert!(max.trim().parse::<u64>().unwrap() <= 100663296, "{max}");
    }
    let _ = std::fs::remove_dir(&cg);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn bad_input_is_one_line_and_status_1() {
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let base = base("bad");
    let one_line = |cmd: &mut Command, what: &str| {
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
        assert!(stderr.starts_with("microvm-jailer: "), "{stderr}");
        assert!(stderr.contains(what), "{what}: {stderr}");
    };
    // No --uid.
    one_line(
        Command::new(jailer_bin())
            .args(["--id", "x", "--gid", "1", "--exec-file"])
            .arg(microvm_bin()),
        "--uid",
    );
    one_line(&mut jailer(&base, "../up", &[], &[]), "--id");
    one_line(
        &mut jailer(&base, "ok", &["--resource-limit", "nproc=1"], &[]),
        "--resource-limit",
    );
    one_line(
        &mut jailer(
            &base,
            "ok2",
            &["--cgroup-version", "2", "--cgroup", "nosuch.max=1"],
            &[],
        ),
        "nosuch",
    );
    // A jail directory that exists already.
    std::fs::create_dir_all(base.join("microvm/taken/root")).unwrap();
    one_line(&mut jailer(&base, "taken", &[], &[]), "exists already");

    // A malformed seccomp filter, given to the jailed microvm: its own one line and status 1.
    let bad = base.join("bad.json");
    std::fs::write(&bad, "{").unwrap();
    let out = jailer(
        &base,
        "badfilter",
        &["--file", bad.to_str().unwrap(), "--file", PVH],
        &[
            "--kernel",
            "/guest-pvh.elf",
            "--seccomp-filter",
            "/bad.json",
        ],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("microvm: seccomp filter file /bad.json"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&base);
}

/// Restores `state`/`mem` (host paths, copied into a new jail) in a jailed microvm; returns its first
/// count.
fn restore_jailed(base: &Path, id: &str, state: &Path, mem: &Path) -> u64 {
    let (s, m) = (state.to_str().unwrap(), mem.to_str().unwrap());
    let inside = |p: &Path| format!("/{}", p.file_name().unwrap().to_str().unwrap());
    let (si, mi) = (inside(state), inside(mem));
    let mut cmd = jailer(
        base,
        id,
        &["--file", s, "--file", m],
        &["--restore", &si, "--mem-file", &mi, "--resume"],
    );
    let vm = Vm::spawn_cmd(&mut cmd);
    assert!(
        wait_until(T, || api::counts(&vm.stdout()).len() >= 2),
        "the jailed restore does not count: {}",
        vm.stdout()
    );
    let first = api::counts(&vm.stdout())[0];
    vm.signal(libc::SIGKILL);
    drop(vm.wait(T));
    first
}

/// Bytes a file really occupies on disk.
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// A jailed VM (no /proc in its jail) is paused and snapshotted into its jail, Full then Diff; other
/// jailed microvms restore each: the Full at its count, the Diff laid onto a copy of the Full with
/// `rebase-snap` at its later count. Without /proc/self/pagemap the Diff holds every page of guest RAM.
#[test]
fn a_jailed_vm_snapshots_into_its_jail_and_jailed_vms_restore_it() {
    if !is_root() || !require_kvm() {
        eprintln!("SKIPPED: needs root and KVM");
        return;
    }
    let base = base("snap");
    let name = Path::new(PVH).file_name().unwrap().to_str().unwrap();
    let kernel = format!("/{name}");
    let mut cmd = jailer(
        &base,
        "snap-a",
        &["--file", PVH],
        &[
            "--api-sock",
            "/api.sock",
            "--kernel",
            &kernel,
            "--cmdline",
            "count",
            "--mem",
            "64",
        ],
    );
    let vm = Vm::spawn_cmd(&mut cmd);
    let root = base.join("microvm/snap-a/root");
    let sock = root.join("api.sock");
    vm.wait_for_output("count 3\n", T);
    assert!(!root.join("proc").exists(), "the jail has a /proc");
    // Paths inside the jail.
    let snap = |c: &api::Client, kind: &str, state: &str, mem: &str| {
        let r = c.snapshot(kind, Path::new(state), Path::new(mem));
        assert_eq!(r.status, 204, "{kind}: {r:?}");
    };
    let c = api::Client::connect(&sock);
    let c0 = c.pause_settled(&vm, T);
    snap(&c, "Full", "/full.state", "/full.mem");
    c.ok("PATCH", "/vm", r#"{"state": "Resumed"}"#);
    assert!(wait_until(T, || api::counts(&vm.stdout()).last() >= Some(&(c0 + 4))));
    let c1 = c.pause_settled(&vm, T);
    snap(&c, "Diff", "/diff.state", "/diff.mem");
    vm.signal(libc::SIGKILL);
    drop(vm.wait(T));

    // Written by the jailed uid, inside the jail.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(root.join("full.mem")).unwrap();
    assert_eq!((meta.uid(), meta.len()), (UID, 64 << 20));
    // The Full is still sparse; the Diff, without pagemap, holds every page.
    assert!(allocated(&root.join("full.mem")) < 16 << 20);
    assert!(allocated(&root.join("diff.mem")) >= 64 << 20);

    assert_eq!(
        restore_jailed(
            &base,
            "snap-b",
            &root.join("full.state"),
            &root.join("full.mem")
        ),
        c0 + 1
    );
    let rebased = base.join("rebased.mem");
    std::fs::copy(root.join("full.mem"), &rebased).unwrap();
    let out = Command::new(microvm_bin().with_file_name("rebase-snap"))
        .arg("--base-file")
        .arg(&rebased)
        .arg("--diff-file")
        .arg(root.join("diff.mem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        restore_jailed(&base, "snap-c", &root.join("diff.state"), &rebased),
        c1 + 1
    );
    let _ = std::fs::remove_dir_all(&base);
}
