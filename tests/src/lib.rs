//! Helpers for the integration tests: build paths, KVM availability, and running `microvm` as a child process
//! with a timeout, capturing its console output and exit status.
//!
//! Tests that need `/dev/kvm` call [`require_kvm`] first: without KVM they skip with a message, unless
//! `MICROVM_REQUIRE_KVM=1` (as in CI), where a missing KVM fails the test.

pub mod api;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `microvm` binary the tests run: `$MICROVM_BIN` when set (scripts/test.sh sets it to the static musl
/// build, the one that ships), else the one cargo built for this test run (the same profile as the tests).
/// `microvm-jailer` and `rebase-snap` are taken from the same directory.
pub fn microvm_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("MICROVM_BIN") {
        let bin = PathBuf::from(bin);
        assert!(bin.exists(), "MICROVM_BIN={} is missing", bin.display());
        return bin;
    }
    // Integration tests of this crate live in target/<profile>/deps; the binary is one level up.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("microvm");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p vmm, or run the tests through scripts/test.sh)",
        bin.display()
    );
    bin
}

/// Whether the tests may use KVM. Without `/dev/kvm`: `false` (the caller skips), or a panic when
/// `MICROVM_REQUIRE_KVM=1`.
pub fn require_kvm() -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        if std::env::var("MICROVM_REQUIRE_KVM").as_deref() == Ok("1") {
            panic!("/dev/kvm is not usable and MICROVM_REQUIRE_KVM=1");
        }
        eprintln!("SKIPPED: /dev/kvm is not usable on this host");
    }
    ok
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running `microvm` with its output collected in the background.
pub struct Vm {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

/// What a finished `microvm` left behind.
#[derive(Debug)]
pub struct Output {
    /// The exit code, or `None` if killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

fn collect(mut r: impl Read + Send + 'static, buf: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    })
}

impl Vm {
    /// Starts `microvm` with `args`, stdin piped.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Vm {
        Self::spawn_cmd(Command::new(microvm_bin()).args(args))
    }

    /// Starts a prepared command (e.g. `microvm` under `unshare` or another user).
    pub fn spawn_cmd(cmd: &mut Command) -> Vm {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start microvm");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Vm {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    /// The console output so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Waits until the console shows `text`; panics with the output so far after `timeout`.
    pub fn wait_for_output(&self, text: &str, timeout: Duration) {
        if !wait_until(timeout, || self.stdout().contains(text)) {
            panic!(
                "timed out waiting for {text:?}; stdout:\n{}\nstderr:\n{}",
                self.stdout(),
                String::from_utf8_lossy(&self.stderr.lock().unwrap())
            );
        }
    }

    /// Waits until the console output has not changed for `quiet` (a paused guest's last lines have
    /// drained from the pipe); returns false if that does not happen within `timeout`.
    pub fn output_settles(&self, quiet: Duration, timeout: Duration) -> bool {
        let (mut seen, mut since) = (self.stdout(), Instant::now());
        wait_until(timeout, || {
            let now = self.stdout();
            if now != seen {
                (seen, since) = (now, Instant::now());
            }
            since.elapsed() >= quiet
        })
    }

    /// Writes to the guest's console input.
    pub fn send(&mut self, bytes: &[u8]) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    /// Bytes written with [`Vm::send`] that `microvm` has not read yet (`FIONREAD` on the pipe).
    pub fn unread_input(&self) -> usize {
        use std::os::fd::AsRawFd;
        let fd = self.child.stdin.as_ref().unwrap().as_raw_fd();
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD on our own pipe's descriptor writes one int into `n`.
        let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
        assert_eq!(r, 0, "FIONREAD: {}", std::io::Error::last_os_error());
        n as usize
    }

    /// Sends a signal to `microvm`.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill on our own child's pid has no memory-safety effects.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the VM to end; kills it and panics after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> Output {
        drop(self.child.stdin.take());
        let mut status: Option<ExitStatus> = None;
        let done = wait_until(timeout, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        if !done {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "microvm did not exit within {timeout:?}; stdout:\n{}",
                self.stdout()
            );
        }
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        let out = Output {
            code: status.unwrap().code(),
            stdout: String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned(),
            stderr: String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned(),
        };
        eprintln!(
            "--- microvm stdout:\n{}--- stderr:\n{}",
            out.stdout, out.stderr
        );
        out
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // A test that panicked mid-way must not leave a VM running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `microvm` with `args` to completion (stdin closed).
pub fn run<S: AsRef<std::ffi::OsStr>>(args: &[S], timeout: Duration) -> Output {
    Vm::spawn(args).wait(timeout)
}

/// Whether this process runs as root (needed for the namespace and other-user tests).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The project's guest kernel and root filesystem, as `scripts/build-guest-kernel.sh` and
/// `scripts/build-rootfs.sh` leave them in build/: the kernel ELF, the qcow2 root image, and the staging
/// directory the image was made from (its programs also run on the host, for differential tests).
pub struct GuestImages {
    pub kernel: PathBuf,
    pub disk: PathBuf,
    pub stage: PathBuf,
}

impl GuestImages {
    /// The built images. When one is missing the test skips (`None`) with a message, or fails under
    /// `MICROVM_REQUIRE_KVM=1` or when `CI` is set.
    pub fn find() -> Option<GuestImages> {
        let build = workspace_root().join("build");
        let images = GuestImages {
            kernel: build.join("guest-kernel"),
            disk: build.join("rootfs.qcow2"),
            stage: build.join("rootfs-stage"),
        };
        if images.kernel.exists() && images.disk.exists() && images.stage.is_dir() {
            return Some(images);
        }
        let msg = "build/guest-kernel, build/rootfs.qcow2 or build/rootfs-stage is missing: run \
                   scripts/build-guest-kernel.sh and scripts/build-rootfs.sh first";
        if std::env::var("MICROVM_REQUIRE_KVM").as_deref() == Ok("1")
            || std::env::var_os("CI").is_some()
        {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        None
    }

    /// KVM and the images, or `None` when the test must skip.
    pub fn for_vm() -> Option<GuestImages> {
        if !require_kvm() {
            return None;
        }
        GuestImages::find()
    }

    /// `microvm` arguments booting the kernel with the root image attached read-only (so tests can run
    /// in parallel on one image), `extra` arguments, then `--cmdline cmdline`.
    pub fn args(&self, extra: &[&str], cmdline: &str) -> Vec<String> {
        let mut args = vec![
            "--kernel".to_string(),
            self.kernel.display().to_string(),
            "--disk".to_string(),
            format!("{},ro", self.disk.display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(["--cmdline".to_string(), cmdline.to_string()]);
        args
    }

    /// A rootfs program built for the guest, to run on the host (`bin/proctest`, `sbin/init`, ...).
    pub fn host_program(&self, path: &str) -> PathBuf {
        self.stage.join(path)
    }

    /// Boots the kernel and the root image on QEMU's microvm machine under TCG (scripts/run-qemu.sh,
    /// a second, independent VMM; at most 120 s) with `args` for the script (words for the kernel's
    /// command line). `None` (the test skips) when `qemu-system-x86_64` is not installed, unless `CI`
    /// is set: then the script's own installation is tried and must work.
    pub fn run_on_qemu(&self, args: &[&str]) -> Option<Output> {
        let have_qemu = Command::new("sh")
            .args(["-c", "command -v qemu-system-x86_64"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !have_qemu && std::env::var_os("CI").is_none() {
            eprintln!(
                "SKIPPED: qemu-system-x86_64 is not installed (scripts/run-qemu.sh installs it)"
            );
            return None;
        }
        let out = Command::new("timeout")
            .arg("120")
            .arg(workspace_root().join("scripts/run-qemu.sh"))
            .args(args)
            .env("KERNEL", &self.kernel)
            .env("DISK", &self.disk)
            .output()
            .expect("cannot run scripts/run-qemu.sh");
        let out = Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!(
            "--- qemu stdout:\n{}--- stderr:\n{}",
            out.stdout, out.stderr
        );
        Some(out)
    }

    /// `microvm` arguments booting on the shared read-only root image (see [`GuestImages::args`]) with
    /// init running `command` as its only child (`init -- run COMMAND`): init waits for it, logs
    /// `init: PROGRAM exited (...)`, then powers the VM off.
    pub fn run_args(&self, extra: &[&str], command: &str) -> Vec<String> {
        self.args(
            extra,
            &format!("console=ttyS0 root=/dev/vda -- run {command}"),
        )
    }

    /// `microvm` arguments booting on the shared read-only root image (see [`GuestImages::args`]) into
    /// init's full mode (`init -- rc`: /etc/rc, then busybox ash on the console, whose prompt in / is
    /// [`SHELL_PROMPT`]).
    pub fn shell_args(&self, extra: &[&str]) -> Vec<String> {
        self.args(extra, "console=ttyS0 root=/dev/vda -- rc")
    }

    /// Boots with init running `command` (see [`GuestImages::run_args`]) and waits, at most `timeout`,
    /// for the VM to end. Nothing is checked: see [`Output::assert_ran_to_the_end`].
    pub fn run_program(&self, extra: &[&str], command: &str, timeout: Duration) -> Output {
        run(&self.run_args(extra, command), timeout)
    }
}

impl Output {
    /// Asserts that a VM booted with `init -- run PROGRAM ...` ran `program` (as init names it, e.g.
    /// `/bin/memtest`) to the end: init logged its exit with status 0 and powered off, the kernel never
    /// panicked, and `microvm` exited 0. A failure shows the console.
    pub fn assert_ran_to_the_end(&self, program: &str) {
        let out = &self.stdout;
        assert!(!out.contains("Kernel panic"), "{out}");
        assert!(
            out.contains(&format!("init: {program} exited (exit 0)")),
            "{program} did not exit 0:\n{out}"
        );
        assert!(out.contains("init: powering off"), "{out}");
        assert_eq!(self.code, Some(0), "{out}");
    }

    /// Asserts that the guest kernel met no system call it lacks (it logs `not implemented`).
    pub fn assert_no_missing_syscall(&self) {
        assert!(
            !self.stdout.contains("not implemented"),
            "a system call is missing:\n{}",
            self.stdout
        );
    }
}

/// The lines of `out` that start with `prefix`.
pub fn lines_with<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.starts_with(prefix)).collect()
}

/// (processes in the table, frames used, kernel heap bytes used) from the guest kernel's statistics
/// at power-off (its `sched: ... N processes ...; frames used N; heap used N` line) in `console`.
pub fn power_off_counts(console: &str) -> (u64, u64, u64) {
    let line = console
        .lines()
        .find(|l| l.contains("sched: ") && l.contains("frames used"))
        .unwrap_or_else(|| panic!("no power-off statistics:\n{console}"));
    let num_before = |key: &str| -> u64 {
        let i = line.find(key).unwrap();
        line[..i]
            .split_whitespace()
            .last()
            .unwrap()
            .parse()
            .unwrap()
    };
    let num_after = |key: &str| -> u64 {
        line.split(key)
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    (
        num_before(" processes"),
        num_after("frames used "),
        num_after("heap used "),
    )
}

/// Runs a host program whose output a test compares with the guest's (made with [`host_command`]): it
/// must exit 0 and print `done` (its last line, e.g. `fstest: done`). Returns its standard output.
pub fn host_output(cmd: &mut Command, done: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} on the host: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains(done), "{cmd:?} on the host:\n{stdout}");
    stdout
}

/// Asserts that the lines starting with `prefix` are the same in the guest's `console` as in the
/// host's output `host` (see [`assert_same_lines`]).
pub fn assert_same_lines_with(prefix: &str, console: &str, host: &str) {
    assert_same_lines(
        &lines_with(console, prefix),
        &lines_with(host, prefix),
        console,
    );
}

/// The console shell's prompt (busybox ash, `PS1='\\w \\$ '`, in /) at the start of a line.
pub const SHELL_PROMPT: &str = "\n/ # ";

/// The TAP device every [`Netns`] has.
pub const TAP: &str = "mvtap0";

/// Runs `ip` with `args`; panics with its message on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("cannot run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with a TAP [`TAP`] (10.0.0.1/24, up, IPv6 off so the host sends nothing
/// unasked), deleted with everything in it when dropped, even when the test fails.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// `None` (the test skips) when not root or without `ip`.
    pub fn new(tag: &str) -> Option<Netns> {
        if !is_root() {
            eprintln!("SKIPPED: network namespaces and TAP devices need root");
            return None;
        }
        if Command::new("ip").arg("-V").output().is_err() {
            eprintln!("SKIPPED: the ip command (iproute2) is not installed");
            return None;
        }
        let name = format!("mvm-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]);
        ip(&["-n", &ns.name, "tuntap", "add", "dev", TAP, "mode", "tap"]);
        ip(&["-n", &ns.name, "addr", "add", "10.0.0.1/24", "dev", TAP]);
        ip(&["-n", &ns.name, "link", "set", TAP, "up"]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        Some(ns)
    }

    /// Sets the TAP's MTU (at most 65521 for a TAP).
    pub fn set_mtu(&self, mtu: u32) {
        ip(&[
            "-n",
            &self.name,
            "link",
            "set",
            TAP,
            "mtu",
            &mtu.to_string(),
        ]);
    }

    /// A permanent neighbour entry on the TAP: `ip` (the guest's address) is at `mac`, so datagrams
    /// reach a guest that answers no ARP.
    pub fn static_neighbour(&self, ip: &str, mac: &str) {
        crate::ip(&[
            "-n",
            &self.name,
            "neigh",
            "replace",
            ip,
            "lladdr",
            mac,
            "dev",
            TAP,
            "nud",
            "permanent",
        ]);
    }

    /// Runs a command in the namespace; panics unless it succeeds.
    pub fn exec(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A command that runs `program` in the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// `microvm` with `args`, running in the namespace.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Vm {
        Vm::spawn_cmd(self.command(microvm_bin()).args(args))
    }

    /// Runs `f` on a thread that has joined the namespace; sockets it makes stay in the namespace.
    pub fn enter<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        self.enter_thread(f).join().unwrap()
    }

    /// Starts `f` on a thread that has joined the namespace.
    pub fn enter_thread<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> JoinHandle<R> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            // SAFETY: setns on a namespace file we hold open; it only changes this thread's namespace.
            let r =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs `op` again while it fails with EINTR. A socket read with a timeout (SO_RCVTIMEO) is not
/// restarted after a signal, nor after the host freezes and thaws the test process (signal(7)); that
/// EINTR is no failure of the VM under test.
pub fn retry_interrupted<T>(mut op: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    loop {
        match op() {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// Reads one HTTP/1.1 response (head, then a `Content-Length` body) from `stream`: its status and body.
/// Panics if the connection closes before the head ends (a test failure).
pub fn read_http_response(stream: &mut impl std::io::Read) -> (u16, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = retry_interrupted(|| stream.read(&mut byte)).unwrap();
        assert_eq!(n, 1, "connection closed mid-response: {buf:?}");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let status = head[9..12].parse().unwrap();
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

/// A tiny deterministic PRNG (xorshift64*), so that a seeded test case reproduces alone.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A `Command` for a program whose output is compared with the guest's: it starts with only stdin,
/// stdout and stderr open. Whatever ran the tests may have left other descriptors open (a CI runner's
/// `exec 200>lock; flock 200`), and a host program that inherits them answers differently from the
/// guest's (select, poll, fcntl on "a closed descriptor").
pub fn host_command<S: AsRef<std::ffi::OsStr>>(program: S) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(program);
    // SAFETY: the closure runs in the child between fork and exec and makes one raw system call
    // (async-signal-safe; it allocates nothing and takes no lock). close_range(3, ~0, CLOEXEC) marks
    // every descriptor from 3 up close-on-exec: they are gone once the program runs, while std's own
    // pipe that reports a failed exec to the parent (close-on-exec already) still works until then.
    unsafe {
        cmd.pre_exec(|| {
            let flags = libc::CLOSE_RANGE_CLOEXEC;
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, flags) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Runs a host tool (qemu-img, qemu-io) that must succeed; returns its stdout.
pub fn tool_ok(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} ({e}); run scripts/install-qemu-utils.sh"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `qemu-img create -q -f qcow2 OPTIONS... PATH [SIZE]`, which must succeed: a new qcow2 image of
/// `size` (`None`: the size of the backing file that `options` name with `-b`).
pub fn qcow2_create(path: impl AsRef<Path>, size: Option<&str>, options: &[&str]) {
    let path = path.as_ref().to_str().unwrap();
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    args.extend(options);
    args.push(path);
    args.extend(size);
    tool_ok("qemu-img", &args);
}

/// Asserts that a program printed the same lines in the guest as on the host. On a mismatch the
/// panic names the first differing line and shows both outputs, before the guest's whole console
/// (a CI log keeps the head of a long message, so the difference comes first).
pub fn assert_same_lines<G: AsRef<str>, H: AsRef<str>>(guest: &[G], host: &[H], console: &str) {
    let guest: Vec<&str> = guest.iter().map(AsRef::as_ref).collect();
    let host: Vec<&str> = host.iter().map(AsRef::as_ref).collect();
    if guest == host {
        return;
    }
    let at = guest.iter().zip(&host).take_while(|(g, h)| g == h).count();
    panic!(
        "guest and host differ at line {}:\n  guest: {:?}\n  host:  {:?}\n\
         --- guest ({} lines):\n{}\n--- host ({} lines):\n{}\n--- guest console:\n{console}",
        at + 1,
        guest.get(at).copied().unwrap_or("(no more lines)"),
        host.get(at).copied().unwrap_or("(no more lines)"),
        guest.len(),
        guest.join("\n"),
        host.len(),
        host.join("\n"),
    );
}

#[cfg(test)]
mod host_command_tests {
    use super::host_command;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_host_program_starts_with_only_0_1_2_open() {
        // An inheritable descriptor held by the test itself (not close-on-exec), as a runner's is.
        let file = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: dup of a descriptor we own; the copy is closed below.
        let inherited = unsafe { libc::dup(file.as_raw_fd()) };
        assert!(inherited > 2);
        let out = host_command("sh")
            .args(["-c", "ls /proc/self/fd"])
            .output()
            .unwrap();
        // SAFETY: closes the descriptor dup returned above.
        unsafe { libc::close(inherited) };
        let fds: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        // 0-2 and ls's own descriptor of /proc/self/fd (3): nothing inherited.
        assert_eq!(fds, ["0", "1", "2", "3"], "{out:?}");
    }

    #[test]
    fn a_missing_host_program_is_an_error_not_a_silent_exit() {
        let err = host_command("/nonexistent/program").output().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    }
}
