//! The i8042 keyboard, only for Ctrl-Alt-Del (the VMM's SendCtrlAltDel queues the set-2 make codes of
//! Ctrl, Alt and Delete and raises IRQ 1). As on Linux: with Ctrl-Alt-Del enabled (the default, or
//! reboot(LINUX_REBOOT_CMD_CAD_ON)) the machine restarts at once; after CAD_OFF init gets SIGINT.

use crate::arch::cpu::inb;
use crate::arch::layout::{I8042_COMMAND_PORT, I8042_DATA_PORT};
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

const STATUS_OUTPUT_FULL: u8 = 1;
const SC_CTRL: u8 = 0x14;
const SC_ALT: u8 = 0x11;
const SC_EXTENDED: u8 = 0xe0;
const SC_BREAK: u8 = 0xf0;
const SC_DEL: u8 = 0x71;

/// Whether Ctrl-Alt-Del restarts at once (true) or signals init.
static CAD_RESTART: AtomicBool = AtomicBool::new(true);
/// Keyboard state bits: 1 ctrl, 2 alt, 4 extended prefix, 8 break prefix.
static STATE: AtomicU8 = AtomicU8::new(0);

/// reboot(CAD_ON / CAD_OFF).
pub fn set_cad_restart(on: bool) {
    CAD_RESTART.store(on, Ordering::Relaxed);
}

/// IRQ 1: drains the keyboard output buffer and watches for Ctrl-Alt-Del.
pub fn irq() {
    let mut reads = 0;
    while inb(I8042_COMMAND_PORT) & STATUS_OUTPUT_FULL != 0 && reads < 16 {
        reads += 1;
        let b = inb(I8042_DATA_PORT);
        let mut s = STATE.load(Ordering::Relaxed);
        match b {
            SC_EXTENDED => s |= 4,
            SC_BREAK => s |= 8,
            _ => {
                let release = s & 8 != 0;
                let bit = match b {
                    SC_CTRL => 1,
                    SC_ALT => 2,
                    _ => 0,
                };
                if bit != 0 {
                    s = if release { s & !bit } else { s | bit };
                } else if b == SC_DEL && s & 4 != 0 && !release && s & 3 == 3 {
                    ctrl_alt_del();
                }
                s &= !(4 | 8);
            }
        }
        STATE.store(s, Ordering::Relaxed);
    }
}

fn ctrl_alt_del() {
    if CAD_RESTART.load(Ordering::Relaxed) {
        crate::kprintln!("reboot: Ctrl-Alt-Del: restarting system");
        crate::arch::cpu::reset();
    }
    use crate::sync::task;
    task::signal_process(task::INIT_PID, task::SIGINT);
}
