//! With a terminal on stdin, `microvm` puts it in raw mode while the guest runs and restores it on every way
//! out: the guest ending the VM, a crash, SIGTERM and SIGINT. The terminal here is a pseudo-terminal.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Duration;

use tests::{microvm_bin, require_kvm, wait_until};

const PVH: &str = env!("GUEST_PVH");
const T: Duration = Duration::from_secs(30);

/// A new pseudo-terminal: (master, slave).
fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two fds into the given ints; the name, termios and winsize pointers may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just created by openpty and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// The local-mode flags of the terminal behind `fd`.
fn lflag(fd: &OwnedFd) -> libc::tcflag_t {
    use std::os::fd::AsRawFd;
    // SAFETY: termios is plain data, filled by tcgetattr.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is an open terminal and `t` a valid termios.
    assert_eq!(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) }, 0);
    t.c_lflag
}

/// Runs `microvm` with the pty's slave as stdin, waits for `ready` on its stdout, optionally signals it,
/// and checks the terminal was raw while it ran and is back to the original settings afterwards.
fn restores_terminal(cmdline: &str, ready: &str, signal: Option<libc::c_int>, want_code: i32) {
    let (_master, slave) = openpty();
    let before = lflag(&slave);
    assert_ne!(before & libc::ICANON, 0, "a new pty starts canonical");
    let mut child = Command::new(microvm_bin())
        .args(["--kernel", PVH, "--cmdline", cmdline])
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = out.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    assert!(
        wait_until(T, || out.lock().unwrap().contains(ready)),
        "guest never printed {ready:?}"
    );
    if let Some(sig) = signal {
        assert_eq!(
            lflag(&slave) & (libc::ICANON | libc::ECHO | libc::ISIG),
            0,
            "raw while the VM runs"
        );
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    }
    let mut status = None;
    assert!(wait_until(T, || {
        status = child.try_wait().unwrap();
        status.is_some()
    }));
    reader.join().unwrap();
    assert_eq!(status.unwrap().code(), Some(want_code));
    assert_eq!(lflag(&slave), before, "terminal settings restored");
}

#[test]
fn restored_after_the_guest_exits() {
    if require_kvm() {
        restores_terminal("exit=4", "memory:", None, 4);
    }
}

#[test]
fn restored_after_a_guest_crash() {
    if require_kvm() {
        restores_terminal("triple", "triple faulting", None, 2);
    }
}

#[test]
fn restored_after_sigterm() {
    if require_kvm() {
        restores_terminal("halt", "halting", Some(libc::SIGTERM), 143);
    }
}

#[test]
fn restored_after_sigint() {
    if require_kvm() {
        restores_terminal("halt", "halting", Some(libc::SIGINT), 130);
    }
}
