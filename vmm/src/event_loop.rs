//! The VMM thread's event loop: host input to the guest console, the guest emptying the UART's FIFO, the VM
//! ending (debug-exit, i8042 reset, a crashed vCPU), and SIGINT/SIGTERM. Later devices join as further
//! subscribers of the same event manager.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use vmm_sys_util::eventfd::EventFd;

use devices::legacy::{ExitSignal, Serial, MAX_PENDING_INPUT};
use devices::virtio::Console;

/// Exit status for SIGINT and SIGTERM, as a shell reports a process killed by them.
pub const SIGINT_EXIT_CODE: i32 = 128 + libc::SIGINT;
pub const SIGTERM_EXIT_CODE: i32 = 128 + libc::SIGTERM;

/// The signals the VMM turns into a clean stop. They are blocked in every thread and read from a signalfd.
pub fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
    }
    set
}

/// Blocks SIGINT and SIGTERM in the calling thread and every thread it starts afterwards.
pub fn block_stop_signals() {
    let set = stop_signals();
    // SAFETY: `set` is a valid signal set; a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// A signalfd delivering SIGINT and SIGTERM.
pub fn signal_fd() -> std::io::Result<OwnedFd> {
    let set = stop_signals();
    // SAFETY: -1 asks for a new fd; `set` is a valid signal set.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by signalfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads one signal from a [`signal_fd`]: the exit status it asks for (130 for SIGINT, 143 for SIGTERM), or
/// `None` if nothing was pending.
pub fn read_stop_signal(fd: &OwnedFd) -> Option<i32> {
    // SAFETY: signalfd_siginfo is plain data.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of_val(&info);
    // SAFETY: reads at most one signalfd_siginfo into `info`.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            size,
        )
    };
    if n as usize != size {
        return None;
    }
    Some(if info.ssi_signo == libc::SIGINT as u32 {
        SIGINT_EXIT_CODE
    } else {
        SIGTERM_EXIT_CODE
    })
}

/// The VMM thread's own events.
pub struct VmmEvents {
    serial: Arc<Mutex<Serial>>,
    serial_drained: EventFd,
    exit: Arc<ExitSignal>,
    signals: OwnedFd,
    /// Host input the guest has not taken yet.
    pending: VecDeque<u8>,
    /// Whether stdin is still being watched (false after EOF, or while `pending` is full).
    stdin_open: bool,
    stdin_paused: bool,
    /// With `--console virtio`, host input goes to the virtio console instead of the UART.
    virtio_console: Option<Arc<Mutex<Console>>>,
    /// Whether the UART takes host input (not with `--serial off`).
    serial_input: bool,
    /// The VM's exit status, once it is decided.
    pub outcome: Option<i32>,
}

impl VmmEvents {
    const STDIN: u32 = 1;
    const SERIAL_DRAINED: u32 = 2;
    const EXIT: u32 = 3;
    const SIGNAL: u32 = 4;

    pub fn new(
        serial: Arc<Mutex<Serial>>,
        serial_drained: EventFd,
        exit: Arc<ExitSignal>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            serial,
            serial_drained,
            exit,
            signals: signal_fd()?,
            pending: VecDeque::new(),
            stdin_open: true,
            stdin_paused: false,
            virtio_console: None,
            serial_input: true,
            outcome: None,
        })
    }

    fn stdin_events() -> Events {
        Events::with_data_raw(libc::STDIN_FILENO, Self::STDIN, EventSet::IN)
    }

    fn read_stdin(&mut self, ops: &mut EventOps) {
        let mut buf = [0u8; 1024];
        // SAFETY: reads into a local buffer of the given length.
        let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            let err = std::io::Error::last_os_error();
            if n == 0 || err.kind() != std::io::ErrorKind::Interrupted {
                // EOF or a broken stdin: stop watching it; the guest simply gets no more input.
                let _ = ops.remove(Self::stdin_events());
                self.stdin_open = false;
            }
            return;
        }
        self.pending.extend(&buf[..n as usize]);
        self.feed_serial();
        if self.pending.len() >= MAX_PENDING_INPUT && !self.stdin_paused {
            let _ = ops.remove(Self::stdin_events());
            self.stdin_paused = true;
        }
    }

    /// Sends host input to the virtio console (hvc0) instead of the UART.
    pub fn set_virtio_console(&mut self, console: Arc<Mutex<Console>>) {
        self.virtio_console = Some(console);
    }

    /// With `--serial off` the UART gets no host input: without a virtio console, input is discarded.
    pub fn set_serial_input(&mut self, enabled: bool) {
        self.serial_input = enabled;
    }

    fn feed_serial(&mut self) {
        if let Some(console) = &self.virtio_console {
            let mut console = console.lock().unwrap_or_else(|e| e.into_inner());
            let taken = console.enqueue_input(self.pending.make_contiguous());
            self.pending.drain(..taken);
            return;
        }
        if !self.serial_input {
            self.pending.clear();
            return;
        }
        self.serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_input(&mut self.pending);
    }

    /// Host input read from stdin that the guest's console has not taken yet (its FIFO or queue was
    /// full): a snapshot saves it.
    pub fn pending_input(&self) -> Vec<u8> {
        self.pending.iter().copied().collect()
    }

    /// Puts a snapshot's pending host input back, ahead of anything read from stdin later, and hands
    /// the console what it takes now.
    pub fn restore_pending_input(&mut self, bytes: &[u8]) {
        let later = std::mem::take(&mut self.pending);
        self.pending.extend(bytes);
        self.pending.extend(later);
        self.feed_serial();
    }

    fn read_signal(&mut self) {
        if let Some(code) = read_stop_signal(&self.signals) {
            log::info!("received a stop signal, stopping the VM (exit status {code})");
            self.outcome.get_or_insert(code);
        }
    }
}

impl MutEventSubscriber for VmmEvents {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            Self::STDIN => self.read_stdin(ops),
            Self::SERIAL_DRAINED => {
                let _ = self.serial_drained.read();
                self.feed_serial();
                if self.stdin_paused && self.pending.len() < MAX_PENDING_INPUT {
                    self.stdin_paused = false;
                    let _ = ops.add(Self::stdin_events());
                }
            }
            Self::EXIT => {
                let _ = self.exit.eventfd().read();
                if let Some(code) = self.exit.code() {
                    self.outcome.get_or_insert(code);
                }
            }
            Self::SIGNAL => self.read_signal(),
            other => log::warn!("unexpected event token {other}"),
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let must = |r: Result<(), event_manager::Error>, what: &str| {
            if let Err(e) = r {
                log::error!("cannot watch {what}: {e:?}");
            }
        };
        must(
            ops.add(Events::with_data(
                &self.serial_drained,
                Self::SERIAL_DRAINED,
                EventSet::IN,
            )),
            "the serial FIFO",
        );
        must(
            ops.add(Events::with_data(
                self.exit.eventfd(),
                Self::EXIT,
                EventSet::IN,
            )),
            "the exit event",
        );
        must(
            ops.add(Events::with_data(&self.signals, Self::SIGNAL, EventSet::IN)),
            "signals",
        );
        // stdin may be closed, /dev/null or a regular file (which epoll refuses): then there is no input.
        if self.stdin_open && ops.add(Self::stdin_events()).is_err() {
            log::debug!("stdin cannot be polled; the guest console gets no input");
            self.stdin_open = false;
        }
    }
}
