//! The kernel console: `kprint!`/`kprintln!` write to the 8250 (and to virtio-console once one is found).
//! `kprintln!` lines carry a Linux-style timestamp `[    0.012345]`.
//!
//! Never use width, fill or precision in these format strings, and no `{}` on integers: format numbers with
//! `kcore::fmt::{Dec, Hex, ...}` (kernel mode is emulated here and `core::fmt`'s integer code uses SSE
//! arithmetic the emulator cannot run).

use core::fmt::{self, Write};

/// An output sink besides the UART.
type Sink = fn(&[u8]);

/// The virtio console, once found and chosen with `console=hvc0`: it then replaces the UART, which
/// only carries the early boot lines.
static SINK: crate::sync::KCell<Option<Sink>> = crate::sync::KCell::new(None);

/// Sends all further console output to `f` instead of the UART.
/// The console's device node: /dev/hvc0 once the virtio console took over, else /dev/ttyS0 (what
/// /proc/PID/fd shows for descriptors on the console, so ttyname(3) finds a name that opens it).
pub fn device_name() -> &'static [u8] {
    if SINK.try_borrow().is_ok_and(|s| s.is_some()) {
        b"/dev/hvc0"
    } else {
        b"/dev/ttyS0"
    }
}

pub fn switch_to(f: Sink) {
    *SINK.borrow_mut() = Some(f);
}

/// Writes raw bytes to the console.
pub fn write_bytes(b: &[u8]) {
    let sink = SINK.try_borrow().ok().and_then(|m| *m);
    match sink {
        Some(f) => f(b),
        None => crate::drivers::serial::write(b),
    }
}

struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_bytes(s.as_bytes());
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    let _ = Console.write_fmt(args);
}

#[doc(hidden)]
pub fn _println(args: fmt::Arguments<'_>) {
    let _ = write!(Console, "{} ", kcore::fmt::Timestamp(crate::time::now_ns()));
    let _ = Console.write_fmt(args);
    write_bytes(b"\n");
}

/// Prints to the console.
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::console::_print(format_args!($($arg)*)) };
}

/// Prints a timestamped line to the console.
#[macro_export]
macro_rules! kprintln {
    ($($arg:tt)*) => { $crate::console::_println(format_args!($($arg)*)) };
}
