//! The console as a terminal: a line discipline over the UART (IRQ 4) and the polled virtio-console.
//!
//! Canonical mode (the default, as Linux's `ICANON|ECHO|ISIG`): input is edited a line at a time with
//! echo, backspace/DEL erase, Ctrl-U kills the line, Ctrl-D ends input, Enter (CR mapped to NL) makes the
//! line readable; Ctrl-C drops the line and sends SIGINT to the foreground process group, Ctrl-\ SIGQUIT.
//! Raw mode (ICANON off) hands bytes over as they come. Readers and pollers sleep on its wait queue.
//! ioctls: TCGETS/TCSETS*, TIOCGPGRP/TIOCSPGRP, TIOCGSID, TIOCGWINSZ/TIOCSWINSZ, TIOCSCTTY/TIOCNOTTY,
//! FIONREAD.
//!
//! Controlling terminal (Linux's tty_jobctrl.c): the console belongs to at most one session
//! (`Tty::session`), and each process says whether the console is its controlling terminal
//! (`Process::ctty`, inherited by fork, cleared by setsid). What it needs of the processes (the
//! caller's ids, signals to groups, sessions) it asks through `sync::task`: it sits below the
//! process table. Init starts with it; a session leader
//! without one acquires it with TIOCSCTTY (taking it from another session only with arg 1, as root
//! may) or by opening /dev/ttyS0 without O_NOCTTY; TIOCNOTTY or the leader's exit gives it up
//! (`disassociate`). Job control applies only to processes whose controlling terminal it is: a
//! background group reading gets SIGTTIN, writing with TOSTOP or changing the settings or the
//! foreground group gets SIGTTOU (`background_check`).
#![deny(unsafe_code)]

use crate::fs::file::{add_queue, poll_mask, FileOps, FileRef, OpenFile, ReadBuf, Stat, WriteBuf};
use crate::fs::{self, O_RDWR};
use crate::sync::task::{self, SIGCONT, SIGHUP, SIGINT, SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU};
use crate::sync::KCell;
use crate::sync::WaitQueue;
use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::any::Any;
use core::sync::atomic::{AtomicBool, Ordering};
use kcore::errno::Errno;

const ISIG: u32 = 0o1;
const ICANON: u32 = 0o2;
const ECHO: u32 = 0o10;
const ICRNL: u32 = 0o400;
const TOSTOP: u32 = 0o400;
const VINTR: usize = 0;
const VQUIT: usize = 1;
const VSUSP: usize = 10;
const VERASE: usize = 2;
const VKILL: usize = 3;
const VEOF: usize = 4;
const VTIME: usize = 5;
const VMIN: usize = 6;

/// The kernel's `struct termios` (what TCGETS/TCSETS copy): four flag words, c_line, 19 control chars.
const TERMIOS_SIZE: usize = 36;

/// `struct termios` as the ioctls see it.
#[derive(Clone, Copy)]
struct Termios {
    iflag: u32,
    oflag: u32,
    cflag: u32,
    lflag: u32,
    cc: [u8; 19],
}

impl Termios {
    /// Linux's defaults for a console.
    const DEFAULT: Termios = Termios {
        iflag: 0o2400,   // ICRNL | IXON
        oflag: 0o5,      // OPOST | ONLCR
        cflag: 0o277,    // B38400 | CS8 | CREAD
        lflag: 0o105073, // ISIG | ICANON | ECHO | ECHOE | ECHOK | ECHOCTL | ECHOKE | IEXTEN
        cc: [
            3, 28, 127, 21, 4, 0, 1, 0, 17, 19, 26, 0, 18, 15, 23, 22, 0, 0, 0,
        ],
    };

    fn to_bytes(self) -> [u8; TERMIOS_SIZE] {
        let mut b = [0u8; TERMIOS_SIZE];
        for (i, v) in [self.iflag, self.oflag, self.cflag, self.lflag]
            .iter()
            .enumerate()
        {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        b[17..36].copy_from_slice(&self.cc);
        b
    }

    fn from_bytes(b: &[u8]) -> Termios {
        let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut cc = [0u8; 19];
        cc.copy_from_slice(&b[17..36]);
        Termios {
            iflag: w(0),
            oflag: w(4),
            cflag: w(8),
            lflag: w(12),
            cc,
        }
    }
}

struct Tty {
    termios: Termios,
    /// The line being edited (canonical mode).
    line: Vec<u8>,
    /// Bytes ready for readers.
    ready: VecDeque<u8>,
    /// Ctrl-D seen on an empty line: the next read returns 0.
    eof: bool,
    /// Foreground process group (0: none).
    fg: u32,
    /// The session whose controlling terminal this is (0: none).
    session: u32,
}

static TTY: KCell<Tty> = KCell::new(Tty {
    termios: Termios::DEFAULT,
    line: Vec::new(),
    ready: VecDeque::new(),
    eof: false,
    fg: 0,
    session: 0,
});

/// Someone is blocked reading the console or polls it.
static WAITING: AtomicBool = AtomicBool::new(false);

/// Readers and pollers of the console sleep here.
static INPUT: WaitQueue = WaitQueue::fixed(1);

/// The queue woken when console input becomes readable (poll, select, epoll wait on it).
pub fn wait_queue() -> WaitQueue {
    WAITING.store(true, Ordering::Relaxed);
    INPUT
}

fn echo(t: &Tty, bytes: &[u8]) {
    if t.termios.lflag & ECHO != 0 {
        crate::console::write_bytes(bytes);
    }
}

/// Runs one input byte through the line discipline; returns a signal for the foreground group.
fn input_byte(t: &mut Tty, mut b: u8) -> Option<u32> {
    if b == b'\r' && t.termios.iflag & ICRNL != 0 {
        b = b'\n';
    }
    let cc = t.termios.cc;
    let susp = cc[VSUSP] != 0 && b == cc[VSUSP];
    if t.termios.lflag & ISIG != 0 && (b == cc[VINTR] || b == cc[VQUIT] || susp) {
        // As Linux without NOFLSH: the signal also discards pending input.
        t.line.clear();
        t.ready.clear();
        let (sig, shown): (u32, &[u8]) = if b == cc[VINTR] {
            (SIGINT, b"^C\n")
        } else if b == cc[VQUIT] {
            (SIGQUIT, b"^\\\n")
        } else {
            (SIGTSTP, b"^Z\n")
        };
        echo(t, shown);
        return Some(sig);
    }
    if t.termios.lflag & ICANON == 0 {
        t.ready.push_back(b);
        echo(t, &[b]);
        return None;
    }
    if b == cc[VERASE] || b == 8 {
        if t.line.pop().is_some() {
            echo(t, b"\x08 \x08");
        }
    } else if b == cc[VKILL] {
        for _ in 0..t.line.len() {
            echo(t, b"\x08 \x08");
        }
        t.line.clear();
    } else if b == cc[VEOF] {
        if t.line.is_empty() {
            t.eof = true;
        }
        let line = core::mem::take(&mut t.line);
        t.ready.extend(line);
    } else if b == b'\n' {
        echo(t, b"\n");
        let line = core::mem::take(&mut t.line);
        t.ready.extend(line);
        t.ready.push_back(b'\n');
    } else {
        t.line.push(b);
        echo(t, &[b]);
    }
    None
}

/// Pulls new input from the UART ring and virtio-console through the line discipline.
pub fn process_input() {
    let mut buf = [0u8; 64];
    loop {
        let mut n = crate::drivers::serial::read_buffered(&mut buf);
        if n == 0 {
            n = crate::drivers::virtio::console_read(&mut buf);
        }
        if n == 0 {
            return;
        }
        let (sigs, fg, readable) = {
            let mut t = TTY.borrow_mut();
            let mut sigs = Vec::new();
            for &b in &buf[..n] {
                if let Some(s) = input_byte(&mut t, b) {
                    sigs.push(s);
                }
            }
            (sigs, t.fg, !t.ready.is_empty() || t.eof)
        };
        for s in sigs {
            if fg != 0 {
                task::signal_group(fg, s);
            }
        }
        if readable && WAITING.swap(false, Ordering::Relaxed) {
            INPUT.wake(crate::sync::waitqueue::Edge::In);
        }
    }
}

/// Reads console input into `buf`: in canonical mode at most one line, blocking until one is complete.
/// Without ICANON, VMIN and VTIME as termios(3) says: MIN > 0, TIME 0: wait for MIN bytes (at most
/// `buf.len()`); MIN 0, TIME 0: what is there, maybe nothing; MIN 0, TIME > 0: wait up to TIME tenths
/// of a second for a byte; both > 0: after the first byte, until MIN bytes or TIME tenths without a
/// new one.
pub fn read(buf: &mut [u8]) -> Result<usize, Errno> {
    if buf.is_empty() {
        return Ok(0);
    }
    // The deadline of a VTIME wait (ns since boot) and how many bytes were queued when it was set.
    let mut timer: Option<(u64, usize)> = None;
    loop {
        background_check(SIGTTIN)?;
        process_input();
        let mut deadline = None;
        {
            let mut t = TTY.borrow_mut();
            let canon = t.termios.lflag & ICANON != 0;
            if !canon {
                let (vmin, vtime) = (t.termios.cc[VMIN] as usize, t.termios.cc[VTIME] as u64);
                let queued = t.ready.len();
                let now = crate::time::now_ns();
                let want = vmin.clamp(1, buf.len());
                let tenths = vtime * 100_000_000;
                let expired = match timer {
                    Some((d, _)) => now >= d,
                    None => false,
                };
                let done = match (vmin, vtime) {
                    (0, 0) => true,
                    (_, 0) => queued >= want,
                    (0, _) => queued > 0 || expired,
                    _ => queued >= want || (queued > 0 && expired),
                };
                if !done {
                    // The timer runs from the call (MIN 0) or from the last byte (MIN > 0).
                    let restart = match timer {
                        None => vmin == 0 || queued > 0,
                        Some((_, seen)) => vmin > 0 && queued > seen,
                    };
                    if vtime > 0 && restart {
                        timer = Some((now + tenths, queued));
                    }
                    deadline = timer.map(|(d, _)| d);
                } else {
                    let mut n = 0;
                    while n < buf.len() {
                        let Some(b) = t.ready.pop_front() else { break };
                        buf[n] = b;
                        n += 1;
                    }
                    return Ok(n);
                }
            } else if !t.ready.is_empty() {
                let mut n = 0;
                while n < buf.len() {
                    let Some(b) = t.ready.pop_front() else { break };
                    buf[n] = b;
                    n += 1;
                    if canon && b == b'\n' {
                        break;
                    }
                }
                return Ok(n);
            }
            if t.eof {
                t.eof = false;
                return Ok(0);
            }
        }
        WAITING.store(true, Ordering::Relaxed);
        crate::sync::waitqueue::wait_any(&[INPUT], deadline).map_err(|_| Errno::ERESTARTSYS)?;
    }
}

/// Terminal access from a process outside the foreground group (Linux's tty_check_change): a read
/// (`sig` SIGTTIN), or a write with TOSTOP or a settings change (SIGTTOU). Its group gets `sig` (which
/// stops it by default) and the call restarts once it is continued. A process that ignores or blocks
/// `sig` gets EIO for a read and goes ahead otherwise; an orphaned group (no shell to continue it) gets
/// EIO.
/// Processes whose controlling terminal is not the console are never checked.
fn background_check(sig: u32) -> Result<(), Errno> {
    let fg = TTY.borrow().fg;
    let me = task::current();
    if !me.ctty || fg == 0 || me.pgid == fg || me.pid == task::INIT_PID {
        return Ok(());
    }
    if task::ignores(sig) {
        return if sig == SIGTTIN {
            Err(Errno::EIO)
        } else {
            Ok(())
        };
    }
    if task::group_orphaned() {
        return Err(Errno::EIO);
    }
    task::signal_group(me.pgid, sig);
    Err(Errno::ERESTARTSYS)
}

/// Writes user output to the console; with TOSTOP set, only the foreground group may.
pub fn write(buf: &[u8]) -> Result<usize, Errno> {
    if TTY.borrow().termios.lflag & TOSTOP != 0 {
        background_check(SIGTTOU)?;
    }
    crate::console::write_bytes(buf);
    Ok(buf.len())
}

/// Console input arrived (UART interrupt).
pub fn input_arrived() {
    process_input();
}

/// Timer tick hook: readers of the polled virtio console re-check.
pub fn poll() {
    if WAITING.load(Ordering::Relaxed) {
        process_input();
    }
}

const TCGETS: u32 = 0x5401;
const TCSETS: u32 = 0x5402;
const TCSETSW: u32 = 0x5403;
const TCSETSF: u32 = 0x5404;
const TIOCSCTTY: u32 = 0x540e;
const TIOCGPGRP: u32 = 0x540f;
const TIOCSPGRP: u32 = 0x5410;
const TIOCGWINSZ: u32 = 0x5413;
const TIOCSWINSZ: u32 = 0x5414;
const FIONREAD: u32 = 0x541b;
const TIOCNOTTY: u32 = 0x5422;
const TIOCGSID: u32 = 0x5429;

/// Terminal ioctls on the console. `arg` is the user pointer.
pub fn ioctl(cmd: u32, arg: u64) -> Result<u64, Errno> {
    use crate::syscall::copy_to_user;
    match cmd {
        TCGETS => {
            let b = TTY.borrow().termios.to_bytes();
            copy_to_user(arg, &b).map(|_| 0)
        }
        TCSETS | TCSETSW | TCSETSF => {
            background_check(SIGTTOU)?;
            let raw: [u8; TERMIOS_SIZE] = crate::mm::uaccess::read_val(arg)?;
            let t = Termios::from_bytes(&raw);
            let mut tty = TTY.borrow_mut();
            tty.termios = t;
            if cmd == TCSETSF {
                tty.ready.clear();
                tty.line.clear();
            }
            Ok(0)
        }
        TIOCGPGRP => {
            if !has_ctty() {
                return Err(Errno::ENOTTY);
            }
            let fg = TTY.borrow().fg;
            copy_to_user(arg, &fg.to_le_bytes()).map(|_| 0)
        }
        TIOCGSID => {
            let session = TTY.borrow().session;
            if !has_ctty() || session == 0 {
                return Err(Errno::ENOTTY);
            }
            copy_to_user(arg, &session.to_le_bytes()).map(|_| 0)
        }
        TIOCSCTTY => set_ctty(arg as i32 == 1).map(|_| 0),
        TIOCNOTTY => {
            if !has_ctty() {
                return Err(Errno::ENOTTY);
            }
            let me = task::current();
            if me.pid == me.sid {
                disassociate(me.sid, false);
            }
            task::set_ctty(false);
            Ok(0)
        }
        TIOCSPGRP => {
            // Linux's tiocspgrp turns tty_check_change's EIO into ENOTTY.
            background_check(SIGTTOU).map_err(
                |e| {
                    if e == Errno::EIO {
                        Errno::ENOTTY
                    } else {
                        e
                    }
                },
            )?;
            let pg: i32 = crate::mm::uaccess::read_val(arg)?;
            if pg < 0 {
                return Err(Errno::EINVAL);
            }
            let me = task::current();
            let sid = me.sid;
            if !me.ctty || TTY.borrow().session != sid {
                return Err(Errno::ENOTTY);
            }
            // The group (or, failing that, the process) with that id must be in our session.
            match task::session_of_group(pg as u32) {
                None => Err(Errno::ESRCH),
                Some(s) if s != sid => Err(Errno::EPERM),
                Some(_) => {
                    TTY.borrow_mut().fg = pg as u32;
                    Ok(0)
                }
            }
        }
        TIOCGWINSZ => {
            let mut w = [0u8; 8];
            w[0..2].copy_from_slice(&24u16.to_le_bytes());
            w[2..4].copy_from_slice(&80u16.to_le_bytes());
            copy_to_user(arg, &w).map(|_| 0)
        }
        TIOCSWINSZ => Ok(0),
        FIONREAD => {
            let n = TTY.borrow().ready.len() as u32;
            copy_to_user(arg, &n.to_le_bytes()).map(|_| 0)
        }
        _ => Err(Errno::ENOTTY),
    }
}

/// Whether the console is the current process's controlling terminal.
pub fn has_ctty() -> bool {
    task::current().ctty
}

/// TIOCSCTTY (Linux's tiocsctty): the calling session leader, without a controlling terminal, makes
/// the console its own and its group the foreground. EPERM for a process that is not a session
/// leader or has one, and when the console is another session's, unless `steal` (arg 1: the caller
/// is root, as everyone is here), which takes it from that session.
fn set_ctty(steal: bool) -> Result<(), Errno> {
    let me = task::current();
    let session = TTY.borrow().session;
    if me.pid == me.sid && session == me.sid {
        return Ok(());
    }
    if me.pid != me.sid || me.ctty {
        return Err(Errno::EPERM);
    }
    if session != 0 {
        if !steal {
            return Err(Errno::EPERM);
        }
        task::release_ctty(session);
    }
    acquire(me.sid, me.pgid);
    Ok(())
}

/// The current session leader `sid` takes the console, group `pgid` in the foreground.
fn acquire(sid: u32, pgid: u32) {
    {
        let mut t = TTY.borrow_mut();
        t.session = sid;
        t.fg = pgid;
    }
    task::set_ctty(true);
}

/// open("/dev/ttyS0") without O_NOCTTY (Linux's tty_open_proc_set_tty): a session leader without a
/// controlling terminal opening the console for reading acquires it if no session has it.
pub fn open_acquire(readable: bool) {
    let me = task::current();
    if me.pid == me.sid && !me.ctty && readable && TTY.borrow().session == 0 {
        acquire(me.sid, me.pgid);
    }
}

/// Session leader `sid` gives up the console (Linux's disassociate_ctty): by TIOCNOTTY the
/// foreground group gets SIGHUP and SIGCONT; by the leader's exit (a hangup of the session) SIGHUP
/// alone. Then the console has no session and no foreground group, and no process of the session
/// has it as its controlling terminal.
fn disassociate(sid: u32, on_exit: bool) {
    let fg = {
        let mut t = TTY.borrow_mut();
        if t.session != sid {
            return;
        }
        t.session = 0;
        core::mem::take(&mut t.fg)
    };
    task::release_ctty(sid);
    if fg != 0 {
        task::signal_group(fg, SIGHUP);
        if !on_exit {
            task::signal_group(fg, SIGCONT);
        }
    }
}

/// The exit of process `pid` of session `sid`: a session leader whose controlling terminal is the
/// console hangs up its session.
pub fn exiting(pid: u32, sid: u32, ctty: bool) {
    if pid == sid && ctty {
        disassociate(sid, true);
    }
}

/// Whether a read would return at once (poll's POLLIN).
pub fn readable() -> bool {
    process_input();
    TTY.try_borrow()
        .map(|t| !t.ready.is_empty() || t.eof)
        .unwrap_or(false)
}

/// The foreground process group (0 if none) of the console.
pub fn foreground() -> u32 {
    TTY.try_borrow().map(|t| t.fg).unwrap_or(0)
}

/// The console as an open file (/dev/console, /dev/tty, /dev/ttyS0, /dev/hvc0; init's descriptors
/// 0-2 are /dev/console), one terminal under several names; the node it was opened by gives its
/// stat.
pub struct ConsoleFile(Node);

/// The device node a console description was opened through, each with Linux's numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    /// /dev/console (5:1).
    Console,
    /// /dev/tty (5:0), the caller's controlling terminal.
    Tty,
    /// /dev/ttyS0 (4:64), the 8250 serial port.
    TtyS0,
    /// /dev/hvc0 (229:0), the virtio console.
    Hvc0,
}

impl Node {
    /// The device number (major << 8 | minor, as stat encodes numbers this small).
    pub fn rdev(self) -> u64 {
        match self {
            Node::Console => (5 << 8) | 1,
            Node::Tty => 5 << 8,
            Node::TtyS0 => (4 << 8) | 64,
            Node::Hvc0 => 229 << 8,
        }
    }

    /// The terminal device the console is on (`console=`: the UART's ttyS0, or virtio's hvc0), the
    /// one a controlling terminal is (/proc/PID/stat's tty_nr) and /proc/consoles names.
    pub fn console_device() -> Node {
        if crate::console::device_name() == b"/dev/hvc0" {
            Node::Hvc0
        } else {
            Node::TtyS0
        }
    }

    /// The node's path for a device number `rdev` of the console (/proc/PID/fd links).
    pub fn path_of(rdev: u64) -> Option<&'static [u8]> {
        [
            (Node::Console, b"/dev/console".as_slice()),
            (Node::Tty, b"/dev/tty"),
            (Node::TtyS0, b"/dev/ttyS0"),
            (Node::Hvc0, b"/dev/hvc0"),
        ]
        .into_iter()
        .find(|(n, _)| n.rdev() == rdev)
        .map(|(_, p)| p)
    }
}

/// Most bytes moved through the kernel per step of a console read or write.
const CONSOLE_CHUNK: usize = 65536;

impl FileOps for ConsoleFile {
    fn read(&self, _file: &OpenFile, buf: &mut dyn ReadBuf) -> Result<usize, Errno> {
        // Through a kernel buffer: the reader may sleep, and user memory is not held across that.
        let mut tmp =
            crate::mm::heap::try_zeroed_bytes(buf.len().min(CONSOLE_CHUNK)).ok_or(Errno::ENOMEM)?;
        let n = read(&mut tmp)?;
        buf.put(0, &tmp[..n])?;
        Ok(n)
    }

    fn write(&self, _file: &OpenFile, buf: &mut dyn WriteBuf) -> Result<usize, Errno> {
        let len = buf.len();
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CONSOLE_CHUNK);
            let step = (|| {
                let mut tmp = Vec::new();
                tmp.try_reserve_exact(n).map_err(|_| Errno::ENOMEM)?;
                tmp.resize(n, 0);
                buf.get(done, &mut tmp)?;
                write(&tmp)
            })();
            match step {
                Ok(w) => {
                    done += w;
                    if w < n {
                        break;
                    }
                }
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(done)
    }

    fn seekable(&self) -> bool {
        false
    }

    fn pollable(&self) -> bool {
        true
    }

    fn poll(&self, _file: &OpenFile, queues: &mut Vec<WaitQueue>, _depth: u32) -> u16 {
        add_queue(queues, wait_queue());
        poll_mask(readable(), true, false, false)
    }

    fn ioctl(&self, _file: &OpenFile, cmd: u32, arg: u64) -> Result<u64, Errno> {
        ioctl(cmd, arg)
    }

    fn stat(&self) -> Stat {
        // One inode per node (devtmpfs's), so ttyname() finds the node a descriptor came from.
        let rdev = self.0.rdev();
        Stat {
            dev: 5,
            ino: rdev,
            nlink: 1,
            mode: 0o020620,
            rdev,
            blksize: 1024,
            ..Stat::default()
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A new open description of /dev/console (read-write), as the kernel opens it for init's
/// descriptors 0, 1 and 2 (Linux's console_on_rootfs). Like every open of /dev/console it makes no
/// controlling terminal: init has none.
pub fn open_console() -> FileRef {
    OpenFile::new(Rc::new(ConsoleFile(Node::Console)), O_RDWR, None)
}

/// Registers the console's device nodes. /dev/tty is the caller's controlling terminal (ENXIO without
/// one); opening /dev/ttyS0 or /dev/hvc0 without O_NOCTTY may make it a session leader's controlling
/// terminal, opening /dev/console never does (Linux's tty_open: the noctty rule for 5:1).
pub fn register() {
    fs::register_device(b"/dev/console", |_| Ok(Rc::new(ConsoleFile(Node::Console))));
    fs::register_device(b"/dev/tty", |flags| {
        if flags & fs::O_STAT_ONLY == 0 && !has_ctty() {
            return Err(Errno::ENXIO);
        }
        Ok(Rc::new(ConsoleFile(Node::Tty)))
    });
    // The virtio console's name (`console=hvc0`): the same terminal.
    fs::register_device(b"/dev/hvc0", |flags| {
        if flags & fs::O_NOCTTY == 0 {
            open_acquire(flags & fs::O_ACCMODE != fs::O_WRONLY);
        }
        Ok(Rc::new(ConsoleFile(Node::Hvc0)))
    });
    fs::register_device(b"/dev/ttyS0", |flags| {
        if flags & fs::O_NOCTTY == 0 {
            open_acquire(flags & fs::O_ACCMODE != fs::O_WRONLY);
        }
        Ok(Rc::new(ConsoleFile(Node::TtyS0)))
    });
}
