//! `proctest ctty`, run in the foreground of a terminal (the guest's console, or `script` on the host):
//! the controlling terminal. A child makes its own session (no controlling terminal: /dev/tty is
//! ENXIO, the terminal's foreground group and session ENOTTY, no job control), takes the terminal
//! from our session with TIOCSCTTY (arg 1, as root), gives it up with TIOCNOTTY (its foreground group
//! gets SIGHUP and SIGCONT), takes it again by opening it without O_NOCTTY and exits (its foreground
//! group gets SIGHUP).

use super::jobs::{block_sigttou, record_signals, seen, set_tostop, write_out, NSEEN};
use super::{errno, exit, fork, wait};
use std::sync::atomic::Ordering;

/// A call's result and errno (0 on success).
fn res(r: i32) -> (i32, i32) {
    (r, if r < 0 { errno() } else { 0 })
}

/// open("/dev/tty"): 0 or the errno.
fn open_tty() -> i32 {
    // SAFETY: a NUL-terminated path; the descriptor is closed at once.
    let fd = unsafe { libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR) };
    if fd < 0 {
        return errno();
    }
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    0
}

/// The terminal's path: ttyname(0), or the guest's console (its ttyname cannot work: there is no
/// /proc/self/fd).
fn terminal_name() -> std::ffi::CString {
    // SAFETY: ttyname returns a NUL-terminated static buffer or NULL.
    let p = unsafe { libc::ttyname(0) };
    if p.is_null() {
        return c"/dev/ttyS0".into();
    }
    // SAFETY: not NULL, NUL-terminated.
    unsafe { std::ffi::CStr::from_ptr(p) }.into()
}

/// Opens `path` read-write with `flags` (the descriptor stays open): 0 or the errno.
fn open_by_name(path: &std::ffi::CStr, flags: i32) -> i32 {
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | flags) };
    if fd < 0 {
        errno()
    } else {
        0
    }
}

fn sctty(arg: i32) -> (i32, i32) {
    // SAFETY: TIOCSCTTY takes an integer argument.
    res(unsafe { libc::ioctl(0, libc::TIOCSCTTY, arg) })
}

fn notty() -> (i32, i32) {
    // SAFETY: TIOCNOTTY takes no argument.
    res(unsafe { libc::ioctl(0, libc::TIOCNOTTY, 0) })
}

/// tcgetpgrp, tcgetsid, tcsetpgrp(own group) on stdin, each as (result, errno).
fn terminal_ids() -> [(i32, i32); 3] {
    // SAFETY: plain calls on stdin.
    unsafe {
        [
            res(libc::tcgetpgrp(0)),
            res(libc::tcgetsid(0)),
            res(libc::tcsetpgrp(0, libc::getpgrp())),
        ]
    }
}

fn pipe() -> [i32; 2] {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    unsafe { libc::pipe(fds.as_mut_ptr()) };
    fds
}

fn put(fd: i32, bytes: &[u8]) {
    // SAFETY: writing our bytes.
    unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

/// Reads up to `n` bytes (fewer at EOF).
fn take(fd: i32, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        // SAFETY: reading into the rest of buf.
        let r = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), n - got) };
        if r <= 0 {
            break;
        }
        got += r as usize;
    }
    buf.truncate(got);
    buf
}

/// A child in a group of its own that records SIGHUP and SIGCONT, says so on `ready`, and once it has
/// seen a signal (or after 10 s) writes them to `report` and exits.
fn recorder(ready: i32, report: i32) -> libc::pid_t {
    let c = fork();
    if c == 0 {
        NSEEN.store(0, Ordering::SeqCst);
        // SAFETY: plain call.
        unsafe { libc::setpgid(0, 0) };
        record_signals(&[libc::SIGHUP, libc::SIGCONT]);
        put(ready, b"r");
        let start = std::time::Instant::now();
        while seen().is_empty() && start.elapsed().as_secs() < 10 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // A second signal sent right after the first has arrived by now.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let got: Vec<u8> = seen().iter().map(|&s| s as u8).collect();
        put(report, &got);
        exit(0);
    }
    // SAFETY: plain call (the child may have done it already).
    unsafe { libc::setpgid(c, c) };
    c
}

/// The session leader's part (see the module doc); its results are printed before it exits.
fn leader(our_pgrp: i32, stolen: [i32; 2], resume: [i32; 2], report: [i32; 2]) -> ! {
    let mut lines = Vec::new();
    // SAFETY: plain call.
    let sid = unsafe { libc::setsid() };
    lines.push(format!(
        "new session: /dev/tty errno {}, tcgetpgrp/tcgetsid/tcsetpgrp {:?}",
        open_tty(),
        terminal_ids()
    ));
    // Job control is for processes whose controlling terminal it is: no SIGTTOU here.
    lines.push(format!(
        "TOSTOP from another session: {:?}, write {}",
        set_tostop(true),
        write_out("proctest: ctty: written from another session with TOSTOP\n").0 > 0
    ));
    set_tostop(false);
    let c = fork();
    if c == 0 {
        exit(sctty(0).1);
    }
    let (_, s) = wait(c, 0);
    lines.push(format!(
        "TIOCSCTTY by a process that is not a session leader: errno {}",
        libc::WEXITSTATUS(s)
    ));
    lines.push(format!(
        "TIOCSCTTY while another session has it: {:?}; stealing it (arg 1): {:?}; again: {:?}",
        sctty(0),
        sctty(1),
        sctty(0)
    ));
    // SAFETY: plain calls on stdin.
    let (fg, tsid) = unsafe { (libc::tcgetpgrp(0), libc::tcgetsid(0)) };
    lines.push(format!(
        "ours: /dev/tty errno {}, foreground is our group {}, session is ours {}",
        open_tty(),
        fg == sid,
        tsid == sid
    ));
    put(stolen[1], b"s");
    take(resume[0], 1);

    // A foreground group of our session: TIOCNOTTY hangs it up with SIGHUP and SIGCONT.
    let [ready_r, ready_w] = pipe();
    let [got_r, got_w] = pipe();
    let d = recorder(ready_w, got_w);
    // SAFETY: our copy of the write end (the recorder's report ends the read).
    unsafe { libc::close(got_w) };
    take(ready_r, 1);
    block_sigttou(true);
    // SAFETY: plain calls on stdin.
    let set = res(unsafe { libc::tcsetpgrp(0, d) });
    // SAFETY: as above.
    let (missing, other) = unsafe {
        (
            res(libc::tcsetpgrp(0, 0x7fff_fff0)),
            res(libc::tcsetpgrp(0, our_pgrp)),
        )
    };
    lines.push(format!(
        "tcsetpgrp to our other group: {set:?}, to no group: {missing:?}, to a group of another \
         session: {other:?}"
    ));
    lines.push(format!("TIOCNOTTY: {:?}", notty()));
    let got = take(got_r, 2);
    wait(d, 0);
    lines.push(format!(
        "after TIOCNOTTY: foreground group got {got:?}, /dev/tty errno {}, tcgetpgrp/tcgetsid {:?}, \
         TIOCNOTTY again {:?}",
        open_tty(),
        &terminal_ids()[..2],
        notty()
    ));

    // Taken again by opening the terminal by its name (not /dev/tty) without O_NOCTTY, with a
    // foreground group that sees our exit.
    let name = terminal_name();
    let noctty = open_by_name(&name, libc::O_NOCTTY);
    // SAFETY: a plain call on stdin.
    let after_noctty = res(unsafe { libc::tcgetpgrp(0) });
    let plain = open_by_name(&name, 0);
    // SAFETY: as above.
    let after_plain = unsafe { libc::tcgetpgrp(0) };
    lines.push(format!(
        "opening the terminal with O_NOCTTY: {noctty}, tcgetpgrp {after_noctty:?}; without: {plain}, \
         foreground is our group {}",
        after_plain == sid
    ));
    let [ready_r, ready_w] = pipe();
    let e = recorder(ready_w, report[1]);
    take(ready_r, 1);
    // SAFETY: plain call on stdin (SIGTTOU blocked).
    unsafe { libc::tcsetpgrp(0, e) };
    for l in lines {
        println!("proctest: ctty: {l}");
    }
    exit(0);
}

pub fn ctty() {
    println!("proctest: ctty: start");
    let (stolen, resume, report) = (pipe(), pipe(), pipe());
    // SAFETY: plain call.
    let our_pgrp = unsafe { libc::getpgrp() };
    let a = fork();
    if a == 0 {
        leader(our_pgrp, stolen, resume, report);
    }
    // SAFETY: closing our copies of the write ends the others use.
    unsafe {
        libc::close(stolen[1]);
        libc::close(report[1]);
    }
    take(stolen[0], 1);
    let ours = format!(
        "after the steal, our session: /dev/tty errno {}, tcgetpgrp/tcgetsid/tcsetpgrp {:?}",
        open_tty(),
        terminal_ids()
    );
    put(resume[1], b"c");
    let (_, s) = wait(a, 0);
    let got = take(report[0], 2);
    println!("proctest: ctty: {ours}");
    println!(
        "proctest: ctty: leader {}, its foreground group got {got:?} at its exit",
        rootfs::describe_status(s)
    );
}
