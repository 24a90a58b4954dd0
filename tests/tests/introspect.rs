//! Looking inside a running guest (issue 22): `GET /vm/translate`, `GET /vm/memory` and the
//! `microvm translate` / `microvm memory` client, on the project's guest kernel with its rootfs.
//!
//! One boot checks: a kernel address (a symbol of the kernel ELF, mapped by a 2 MiB page) translates to
//! where the ELF's program header put it, and guest memory there holds the ELF file's bytes; a user
//! address of a process spinning in user mode, taken from what the guest prints about it
//! (`/proc/PID/maps`), translates through four 4 KiB levels with US set to a page holding the
//! executable's bytes at that offset; a not-present and a non-canonical address are plain answers;
//! every answer agrees with `KVM_TRANSLATE`; and bad input is a 400 while the guest runs on.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tests::{microvm_bin, read_http_response, tool_ok, wait_until, GuestImages, Vm};

const T: Duration = Duration::from_secs(60);

fn get(sock: &Path, path: &str) -> (u16, Value) {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let (status, body) = read_http_response(&mut s);
    (status, serde_json::from_str(&body).unwrap())
}

fn hex(v: &Value) -> u64 {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("not a hex string: {v}"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

/// `len` bytes of guest-physical memory through `GET /vm/memory`.
fn guest_bytes(sock: &Path, gpa: u64, len: usize) -> Vec<u8> {
    let (status, v) = get(sock, &format!("/vm/memory?gpa={gpa:#x}&len={len}"));
    assert_eq!(status, 200, "{v}");
    let text = v["hex"].as_str().unwrap();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// The ELF64 program headers of type PT_LOAD: (offset, vaddr, paddr, filesz).
fn load_segments(elf: &[u8]) -> Vec<(u64, u64, u64, u64)> {
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36), u16_at(0x38));
    (0..phnum)
        .map(|i| phoff + i * phentsize)
        .filter(|&p| u32::from_le_bytes(elf[p..p + 4].try_into().unwrap()) == 1)
        .map(|p| {
            (
                u64_at(p + 8),
                u64_at(p + 16),
                u64_at(p + 24),
                u64_at(p + 32),
            )
        })
        .collect()
}

fn translate(sock: &Path, gva: u64) -> Value {
    let (status, v) = get(sock, &format!("/vm/translate?gva={gva:#x}&vcpu=0"));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["agrees_with_kvm"], true, "{v}");
    v
}

#[test]
fn translation_memory_and_bad_input_on_a_running_guest() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let sock = std::env::temp_dir().join(format!("microvm-introspect-{}.sock", std::process::id()));
    let args = images.shell_args(&["--api-sock", sock.to_str().unwrap()]);
    let mut vm = Vm::spawn(&args);
    vm.wait_for_output("init: starting /bin/sh", T);

    // A kernel address: a function of the kernel image, which the boot code maps with 2 MiB pages.
    let kernel = std::fs::read(&images.kernel).unwrap();
    let nm = tool_ok("nm", &[images.kernel.to_str().unwrap()]);
    let sym = nm
        .lines()
        .find_map(|l| l.strip_suffix(" T kernel_main"))
        .map(|a| u64::from_str_radix(a, 16).unwrap())
        .expect("kernel_main in the kernel's symbols");
    let (off, vaddr, paddr, _) = load_segments(&kernel)
        .into_iter()
        .find(|&(_, v, _, len)| v <= sym && sym < v + len)
        .unwrap();
    let v = translate(&sock, sym);
    assert_eq!(v["paging"], "4-level", "{v}");
    assert_eq!(hex(&v["gpa"]), sym - vaddr + paddr, "{v}");
    assert_eq!(v["page_size"], 2 << 20, "{v}");
    assert_eq!(v["levels"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["levels"][2]["level"], "PDE");
    assert!(v["levels"][2]["flags"]
        .as_array()
        .unwrap()
        .contains(&"PS".into()));
    assert_eq!(
        (&v["user"], &v["executable"]),
        (&false.into(), &true.into())
    );
    assert_eq!(hex(&v["kvm_translate"]["gpa"]), hex(&v["gpa"]));
    assert!(v["hva"].is_string(), "{v}");
    assert!(
        v["hpa"].is_string() || v["hpa_note"].as_str().unwrap().contains("CAP_SYS_ADMIN"),
        "{v}"
    );
    let at = (sym - vaddr + off) as usize;
    assert_eq!(guest_bytes(&sock, hex(&v["gpa"]), 64), kernel[at..at + 64]);

    // Not present (nothing maps the first page) and non-canonical: plain 200 answers.
    let v = translate(&sock, 0x1000);
    assert_eq!(v["gpa"], Value::Null, "{v}");
    assert!(v["stopped"]
        .as_str()
        .unwrap()
        .starts_with("not present at "));
    assert_eq!(v["kvm_translate"]["valid"], false, "{v}");
    let (status, v) = get(&sock, "/vm/translate?gva=0x800000000000");
    assert_eq!(status, 200);
    assert!(
        v["stopped"].as_str().unwrap().starts_with("non-canonical"),
        "{v}"
    );
    assert_eq!(v["gpa"], Value::Null);

    // A user address: a process spinning in user mode (cfs-share's child) is what vCPU 0 runs; the
    // guest says where its executable is mapped.
    // The shell waits for it (asleep in wait4), so the child is the one process running in user mode.
    vm.send(b"cfs-share 15 0 & cat /proc/$!/maps; echo maps\"\"-done; wait; echo cfs\"\"-done\n");
    vm.wait_for_output("maps-done", T);
    let out = vm.stdout();
    let (start, end, offset) = out
        .lines()
        .filter(|l| l.ends_with("/bin/cfs-share"))
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (s, e) = f[0].split_once('-')?;
            f[1].contains('x').then(|| {
                (
                    u64::from_str_radix(s, 16).unwrap(),
                    u64::from_str_radix(e, 16).unwrap(),
                    u64::from_str_radix(f[2], 16).unwrap(),
                )
            })
        })
        .unwrap_or_else(|| panic!("no executable mapping of cfs-share in:\n{out}"));
    let program = std::fs::read(images.host_program("bin/cfs-share")).unwrap();
    // The first page of its code that the process has touched (demand paging leaves others absent).
    // Only answers taken while vCPU 0 ran in user mode in the child's address space count (the kick
    // that pauses the vCPU mostly finds it in the kernel here, where user mode runs natively).
    // The shell may still run user code for a moment before it sleeps in `wait`: the address space
    // to walk is the one vCPU 0 is found in, in user mode, most of the time (the spinning child's).
    let mut seen: Vec<String> = Vec::new();
    while seen.len() < 7 {
        let v = translate(&sock, start);
        if v["cpl"] == 3 {
            seen.push(v["cr3"].as_str().unwrap().to_owned());
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let child_cr3 = seen
        .iter()
        .max_by_key(|c| seen.iter().filter(|o| o == c).count())
        .unwrap()
        .clone();
    let mut found = None;
    let mut absent = 0;
    let mut kernel_mode = 0;
    let mut page = start;
    while page < end {
        let v = translate(&sock, page);
        if v["cpl"] != 3 || v["cr3"] != child_cr3.as_str() {
            kernel_mode += 1;
            assert!(
                kernel_mode < 500,
                "vCPU 0 never seen in the child in user mode: {v}"
            );
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        page += 4096;
        if v["gpa"].is_null() {
            assert!(
                v["stopped"].as_str().unwrap().starts_with("not present"),
                "{v}"
            );
            absent += 1;
            continue;
        }
        found = Some((page - 4096, v));
        break;
    }
    let (page, v) = found.unwrap_or_else(|| panic!("none of cfs-share's code pages is mapped"));
    assert_eq!(v["page_size"], 4096, "{v}");
    assert_eq!(v["levels"].as_array().unwrap().len(), 4, "{v}");
    assert_eq!(
        (&v["user"], &v["executable"]),
        (&true.into(), &true.into()),
        "{v}"
    );
    let at = (page - start + offset) as usize;
    assert_eq!(
        guest_bytes(&sock, hex(&v["gpa"]), 256),
        program[at..at + 256],
        "{v}"
    );
    eprintln!("user page {page:#x} after {absent} absent ones ({kernel_mode} answers in kernel mode): {v}");

    // The client subcommands print the same (the kernel address: every address space maps it alike).
    let client = Command::new(microvm_bin())
        .args(["translate", "--api-sock", sock.to_str().unwrap()])
        .arg(format!("{sym:#x}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&client.stdout);
    assert!(client.status.success(), "{client:?}");
    assert!(text.contains("  PDE   ["), "{text}");
    assert!(text.contains("(agrees)"), "{text}");
    assert!(
        text.contains(&format!("GPA {:#x} (2 MiB page", sym - vaddr + paddr)),
        "{text}"
    );
    let client = Command::new(microvm_bin())
        .args([
            "memory",
            "--api-sock",
            sock.to_str().unwrap(),
            "--len",
            "16",
        ])
        .arg(v["gpa"].as_str().unwrap())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&client.stdout);
    let first: String = program[at..at + 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        text.starts_with(&format!("{:08x}: {first}", hex(&v["gpa"]))),
        "{text}"
    );

    // Bad input: 400s with a message, and the client says so with status 1.
    for (path, words) in [
        ("/vm/translate?gva=0x1000&vcpu=1", "no vCPU 1"),
        ("/vm/translate?gva=0xzz", "not a number"),
        ("/vm/translate?vcpu=0", "gva is missing"),
        ("/vm/memory?gpa=0xd0000000&len=16", "not all guest RAM"),
        ("/vm/memory?gpa=0x7fffff0&len=32", "not all guest RAM"),
        ("/vm/memory?gpa=0&len=4097", "over the limit"),
        ("/vm/memory?gpa=0&len=1&x=2", "unknown query parameter"),
    ] {
        let (status, v) = get(&sock, path);
        assert_eq!(status, 400, "{path}: {v}");
        assert!(
            v["fault_message"].as_str().unwrap().contains(words),
            "{path}: {v}"
        );
    }
    let client = Command::new(microvm_bin())
        .args([
            "translate",
            "--api-sock",
            sock.to_str().unwrap(),
            "--vcpu",
            "7",
            "0x1000",
        ])
        .output()
        .unwrap();
    assert_eq!(client.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&client.stderr).contains("400: no vCPU 7"));

    // The guest ran on through all of it.
    vm.wait_for_output("cfs-done", T);
    vm.send(b"echo still\"\"-alive\n");
    assert!(
        wait_until(T, || vm.stdout().contains("still-alive")),
        "{}",
        vm.stdout()
    );
    vm.send(b"poweroff\n");
    let out = vm.wait(T);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let _ = std::fs::remove_file(PathBuf::from(&sock));
}

/// The guest's `ps -o pid,ppid,stat,nice,comm` rows (pid, ppid, state letter, nice, command) between
/// the last header and `marker`.
fn guest_ps(out: &str, marker: &str) -> Vec<(u32, u32, String, i32, String)> {
    let end = out.rfind(marker).unwrap();
    let start = out[..end].rfind("PID   PPID  STAT").unwrap();
    out[start..end]
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.parse().ok()?,
                f.get(1)?.parse().ok()?,
                f.get(2)?.chars().next()?.to_string(),
                f.get(3)?.parse().ok()?,
                f[4..].join(" "),
            ))
        })
        .collect()
}

#[test]
fn guest_processes_match_the_guest_ps() {
    let Some(images) = GuestImages::for_vm() else {
        return;
    };
    let sock =
        std::env::temp_dir().join(format!("microvm-introspect-ps-{}.sock", std::process::id()));
    let args = images.shell_args(&["--api-sock", sock.to_str().unwrap()]);
    let mut vm = Vm::spawn(&args);
    vm.wait_for_output("init: starting /bin/sh", T);
    // A sleeping process, a stopped one, a niced one, and a zombie: `true` has exited and its parent
    // (a background `sh -c` that then became `sleep 302`) never waits for it.
    vm.send(b"echo shell-pid=$$\n");
    let shell: u64 = {
        let complete = |out: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix("shell-pid="))
                .and_then(|p| p.trim().parse().ok())
        };
        assert!(wait_until(T, || complete(&vm.stdout()).is_some()));
        complete(&vm.stdout()).unwrap()
    };
    vm.send(b"sleep 300 &\n");
    vm.send(b"sleep 301 &\n");
    vm.send(b"kill -STOP $!\n");
    vm.send(b"nice -n 5 sleep 303 &\n");
    vm.send(b"sh -c \"/bin/true & exec sleep 302\" &\n");
    // The set settles (each new process sleeps or stops) before the two views are compared; a round
    // where something still moved between the guest's ps and the API's answer is taken again.
    let mut last = String::new();
    for round in 0..5 {
        let marker = format!("ps-done-{round}");
        vm.send(format!("ps -o pid,ppid,stat,nice,comm; echo ps-done\"\"-{round}\n").as_bytes());
        vm.wait_for_output(&marker, T);
        // The interactive shell is running until it is back at its prompt, asleep reading the console.
        let mut v = Value::Null;
        for _ in 0..50 {
            let (status, answer) = get(&sock, "/guest/processes");
            assert_eq!(status, 200, "{answer}");
            v = answer;
            let shell_asleep = v["processes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["pid"] == shell && p["state"] == "S");
            if shell_asleep {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let rows = guest_ps(&vm.stdout(), &marker);
        let ps_pid = rows.iter().find(|r| r.4 == "ps").map(|r| r.0);
        let want: Vec<(u32, u32, String, i32)> = rows
            .iter()
            .filter(|r| Some(r.0) != ps_pid)
            .map(|r| (r.0, r.1, r.2.clone(), r.3))
            .collect();
        let got: Vec<(u32, u32, String, i32)> = v["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["pid"].as_u64().unwrap() as u32,
                    p["ppid"].as_u64().unwrap() as u32,
                    p["state"].as_str().unwrap().to_owned(),
                    p["nice"].as_i64().unwrap() as i32,
                )
            })
            .filter(|p| Some(p.0) != ps_pid)
            .collect();
        last = format!("guest ps: {want:?}\nAPI:      {got:?}\n{v}");
        let states: String = want.iter().map(|w| w.2.as_str()).collect();
        let settled = ["S", "T", "Z"].iter().all(|s| states.contains(s))
            && want.iter().any(|w| w.3 == 5 && w.2 == "S");
        if settled && want == got {
            eprintln!("round {round}: {last}");
            // Each task's command and the kernel's own figures come along.
            let cmds: Vec<&str> = v["processes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["command"].as_str().unwrap())
                .collect();
            for c in ["init", "sh", "sleep", "true"] {
                assert!(cmds.contains(&c), "{cmds:?}");
            }
            let init = &v["processes"][0];
            assert!(init["vruntime_ns"].as_u64().unwrap() > 0, "{init}");
            assert!(init["vsize"].as_u64().unwrap() > 0, "{init}");
            let client = Command::new(microvm_bin())
                .args(["ps", "--api-sock", sock.to_str().unwrap()])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&client.stdout);
            assert!(text.starts_with("  PID  TGID  PPID S  NI"), "{text}");
            assert!(
                text.lines()
                    .any(|l| l.ends_with(" Z   0") || (l.contains(" Z ") && l.ends_with("true"))),
                "{text}"
            );
            vm.send(b"poweroff\n");
            vm.wait(T);
            return;
        }
    }
    panic!("the API never matched the guest's ps:\n{last}");
}

/// A guest kernel without the channel (the tiny PVH test guest): `GET /guest/processes` is a 400 that
/// says so and the client exits 1; translation needs no help from the guest.
#[test]
fn a_guest_without_the_channel_gets_a_clear_400() {
    if !tests::require_kvm() {
        return;
    }
    let sock = std::env::temp_dir().join(format!(
        "microvm-introspect-pvh-{}.sock",
        std::process::id()
    ));
    let vm = Vm::spawn(&[
        "--kernel",
        env!("GUEST_PVH"),
        "--cmdline",
        "count",
        "--mem",
        "64",
        "--api-sock",
        sock.to_str().unwrap(),
    ]);
    vm.wait_for_output("count ", T);
    let (status, v) = get(&sock, "/guest/processes");
    assert_eq!(status, 400, "{v}");
    assert!(
        v["fault_message"]
            .as_str()
            .unwrap()
            .contains("has not registered an introspection channel"),
        "{v}"
    );
    let client = Command::new(microvm_bin())
        .args(["ps", "--api-sock", sock.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(client.status.code(), Some(1), "{client:?}");
    let v = translate(&sock, 0x1000);
    // Its boot code identity-maps low memory with 2 MiB pages in long mode.
    assert_eq!(v["paging"], "4-level", "{v}");
    assert_eq!(hex(&v["gpa"]), 0x1000, "{v}");
    assert_eq!(v["page_size"], 2 << 20, "{v}");
    vm.signal(libc::SIGTERM);
    vm.wait(T);
}
