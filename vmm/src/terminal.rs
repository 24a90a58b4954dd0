//! Raw mode for a terminal on stdin, restored on every way out: normal return (the guard's `Drop`), a signal
//! (handled as a normal return by the event loop), and a panic (the panic hook).

use std::sync::Mutex;

/// The terminal settings to put back, when stdin is a terminal we changed.
static SAVED: Mutex<Option<libc::termios>> = Mutex::new(None);

/// Puts the terminal back the way it was; harmless when nothing was changed.
pub fn restore() {
    let saved = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(t) = saved {
        // SAFETY: `t` is a termios read from this same fd by tcgetattr.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) };
    }
}

/// While alive, stdin (if a terminal) is in raw mode: bytes reach the guest as typed, and Ctrl-C goes to the
/// guest rather than killing the VMM.
pub struct RawMode(());

impl RawMode {
    /// Switches a terminal stdin to raw mode; does nothing for pipes and files.
    pub fn enter() -> Self {
        // SAFETY: isatty only inspects the fd.
        if unsafe { libc::isatty(libc::STDIN_FILENO) } == 1 {
            // SAFETY: termios is plain data; tcgetattr fills it for a terminal fd.
            let mut t: libc::termios = unsafe { std::mem::zeroed() };
            // SAFETY: `t` is a valid termios to fill.
            if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut t) } == 0 {
                *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
                let mut raw = t;
                raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG);
                raw.c_iflag &= !(libc::ICRNL | libc::IXON);
                // SAFETY: `raw` is a valid termios derived from the current one.
                unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) };
                let previous = std::panic::take_hook();
                std::panic::set_hook(Box::new(move |info| {
                    restore();
                    previous(info);
                }));
            }
        }
        RawMode(())
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}
