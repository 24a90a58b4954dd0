//! The seccomp filters (`vmm/src/seccomp.rs`): every thread of a running VM has its filter installed, a
//! syscall a filter omits kills microvm with one line naming the thread and the syscall and status 148,
//! `--no-seccomp` runs without filters, and a malformed filter file is one line and status 1.
//!
//! Every other test file boots its VMs with the built-in filters on: they are the proof that the filters
//! allow everything microvm does.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use tests::{require_kvm, run, wait_until, workspace_root, Vm};

const T: Duration = Duration::from_secs(30);
const PVH: &str = env!("GUEST_PVH");
const BAD_SYSCALL_EXIT: i32 = 148;

fn builtin_table() -> serde_json::Value {
    let path = workspace_root().join("vmm/resources/seccomp/x86_64.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("microvm-seccomp-{}-{name}", std::process::id()))
}

/// The built-in table without the rules for `syscall` in `kind`'s filter whose comment contains
/// `comment` (all of them with an empty `comment`), written to a file.
fn table_without(kind: &str, syscall: &str, comment: &str, name: &str) -> PathBuf {
    let mut table = builtin_table();
    let rules = table[kind]["filter"].as_array_mut().unwrap();
    let before = rules.len();
    rules.retain(|r| {
        !(r["syscall"] == syscall && r["comment"].as_str().unwrap_or("").contains(comment))
    });
    assert!(rules.len() < before, "no {syscall} rule in {kind}");
    let path = tmp(name);
    std::fs::write(&path, serde_json::to_vec_pretty(&table).unwrap()).unwrap();
    path
}

/// (thread name, Seccomp mode, number of filters) of every thread of `pid`.
fn thread_filters(pid: u32) -> Vec<(String, u32, u32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(status) = std::fs::read_to_string(task.unwrap().path().join("status")) else {
            continue;
        };
        let field = |key: &str| -> String {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or("")
                .trim()
                .to_owned()
        };
        let name = field("Name:");
        if name.starts_with("kvm-nx-lpage") {
            continue; // KVM's own kernel worker (ENVIRONMENT.md).
        }
        out.push((
            name,
            field("Seccomp:").parse().unwrap_or(99),
            field("Seccomp_filters:").parse().unwrap_or(99),
        ));
    }
    out.sort();
    out
}

/// A running VM (the test guest counting, two vCPUs) with its API on socket `name`, under the
/// built-in filters.
fn counting_vm_with_api(name: &str) -> (Vm, PathBuf) {
    let sock = tmp(name);
    let vm = Vm::spawn(&[
        "--kernel",
        PVH,
        "--cmdline",
        "count",
        "--vcpus",
        "2",
        "--api-sock",
        sock.to_str().unwrap(),
    ]);
    vm.wait_for_output("count", T);
    (vm, sock)
}

#[test]
fn every_thread_of_a_running_vm_is_filtered() {
    if !require_kvm() {
        return;
    }
    let (vm, sock) = counting_vm_with_api("threads.sock");
    // A connection thread of the API exists while a client is connected.
    let conn = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let pid = vm.pid();
    let mut threads = Vec::new();
    assert!(
        wait_until(T, || {
            threads = thread_filters(pid);
            threads.iter().any(|t| t.0 == "api-conn")
        }),
        "{threads:?}"
    );
    drop(conn);
    // Mode 2 is SECCOMP_MODE_FILTER; one filter each (the connection thread inherits the API's).
    let expected = [
        ("api", 2, 1),
        ("api-conn", 2, 1),
        ("microvm", 2, 1),
        ("vcpu0", 2, 1),
        ("vcpu1", 2, 1),
    ];
    for (name, mode, n) in expected {
        assert!(
            threads.contains(&(name.to_owned(), mode, n)),
            "{name}: {threads:?}"
        );
    }
    // Nothing else runs unfiltered (the set-up threads have ended).
    assert!(threads.iter().all(|t| t.1 == 2), "{threads:?}");
    drop(vm);

    // --no-seccomp: the same VM, no filter anywhere.
    let vm = Vm::spawn(&["--kernel", PVH, "--cmdline", "count", "--no-seccomp"]);
    vm.wait_for_output("count", T);
    let threads = thread_filters(vm.pid());
    assert!(threads.iter().all(|t| t.1 == 0), "{threads:?}");
}

#[test]
fn a_syscall_the_filter_omits_kills_microvm_naming_the_thread() {
    if !require_kvm() {
        return;
    }
    // The vCPU filter without KVM_RUN: the vCPU thread's first KVM_RUN (ioctl, syscall 16) is denied.
    let file = table_without("vcpu", "ioctl", "KVM_RUN", "no-kvm-run.json");
    let out = run(
        &[
            "--kernel",
            PVH,
            "--cmdline",
            "count",
            "--seccomp-filter",
            file.to_str().unwrap(),
        ],
        T,
    );
    assert_eq!(out.code, Some(BAD_SYSCALL_EXIT), "{out:?}");
    assert!(
        out.stderr.contains(
            "microvm: seccomp: the vcpu thread made syscall 16, which its filter does not allow; exiting"
        ),
        "{out:?}"
    );
    assert!(!out.stdout.contains("count"), "the guest ran: {out:?}");

    // The API filter without accept4 (syscall 288): the API thread dies at its first accept, and the
    // VM with it.
    let file = table_without("api", "accept4", "", "no-accept.json");
    let sock = tmp("accept.sock");
    let vm = Vm::spawn(&[
        "--kernel",
        PVH,
        "--cmdline",
        "count",
        "--api-sock",
        sock.to_str().unwrap(),
        "--seccomp-filter",
        file.to_str().unwrap(),
    ]);
    let out = vm.wait(T);
    assert_eq!(out.code, Some(BAD_SYSCALL_EXIT), "{out:?}");
    assert!(
        out.stderr
            .contains("microvm: seccomp: the api thread made syscall 288,"),
        "{out:?}"
    );

    // The API filter without sendto (syscall 44): a connection thread, which runs under the filter it
    // inherited from the accept thread, dies answering its first request, and is named as an api thread.
    let file = table_without("api", "sendto", "", "no-sendto.json");
    let sock = tmp("sendto.sock");
    let vm = Vm::spawn(&[
        "--kernel",
        PVH,
        "--cmdline",
        "count",
        "--api-sock",
        sock.to_str().unwrap(),
        "--seccomp-filter",
        file.to_str().unwrap(),
    ]);
    assert!(wait_until(T, || sock.exists()), "no API socket");
    let mut client = UnixStream::connect(&sock).unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let out = vm.wait(T);
    assert_eq!(out.code, Some(BAD_SYSCALL_EXIT), "{out:?}");
    assert!(
        out.stderr
            .contains("microvm: seccomp: the api thread made syscall 44,"),
        "{out:?}"
    );
}

#[test]
fn bad_filter_files_are_one_line_and_status_1() {
    let bad = tmp("bad.json");
    std::fs::write(&bad, "{\"vmm\": [").unwrap();
    let missing_kind = tmp("missing.json");
    let mut table = builtin_table();
    table.as_object_mut().unwrap().remove("blk_io");
    std::fs::write(&missing_kind, serde_json::to_vec(&table).unwrap()).unwrap();
    let absent = tmp("absent.json");
    for (file, what) in [
        (&bad, "seccomp filter file"),
        (&missing_kind, "no filter for the \"blk_io\" threads"),
        (&absent, "No such file"),
    ] {
        let out = run(
            &["--kernel", PVH, "--seccomp-filter", file.to_str().unwrap()],
            T,
        );
        assert_eq!(out.code, Some(1), "{out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
        assert!(out.stderr.starts_with("microvm: "), "{out:?}");
        assert!(out.stderr.contains(what), "{what}: {out:?}");
    }
    let out = run(
        &["--kernel", PVH, "--no-seccomp", "--seccomp-filter", "x"],
        T,
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
}

/// A VM stopped and continued as a whole (`kill -STOP`/`-CONT`, a cgroup freeze) keeps running: a thread
/// that was in a timed sleep (a futex wait with a timeout, as every `Condvar::wait_timeout` and channel
/// `recv_timeout` is) comes back through `restart_syscall`, which the kernel issues itself, so every
/// filter must allow it (Firecracker's do too). The VMM, API and vCPU threads are caught in timed waits by
/// pausing and resuming the VM through the API while the process is stopped and continued.
#[test]
fn a_vm_stopped_and_continued_in_the_middle_of_requests_keeps_running() {
    if !require_kvm() {
        return;
    }
    let (vm, sock) = counting_vm_with_api("stopcont.sock");
    let client = tests::api::Client::connect(&sock);
    let driver = std::thread::spawn(move || {
        for _ in 0..40 {
            client.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
            client.ok("PATCH", "/vm", r#"{"state": "Resumed"}"#);
        }
        client
    });
    while !driver.is_finished() {
        vm.signal(libc::SIGSTOP);
        std::thread::sleep(Duration::from_millis(2));
        vm.signal(libc::SIGCONT);
        std::thread::sleep(Duration::from_millis(3));
    }
    let driver = driver.join();
    let out = if driver.is_err() {
        vm.wait(T)
    } else {
        vm.signal(libc::SIGTERM);
        vm.wait(T)
    };
    assert!(driver.is_ok(), "an API request failed: {out:?}");
    assert!(!out.stderr.contains("seccomp"), "{out:?}");
    // SIGTERM ends the VM cleanly with status 143 (README).
    assert_eq!(out.code, Some(143), "{out:?}");
}
