//! The i8042 keyboard controller, as far as Firecracker emulates it: the CPU reset line, the controller's
//! command byte and output port, and a keyboard output buffer that the VMM fills with the Ctrl-Alt-Del
//! scancodes (API `SendCtrlAltDel`), plus the controller self tests and keyboard enable/disable that Linux's
//! probe uses.
//!
//! Data flow: a guest writing 0xfe to the command port (0x64) ends the VM with status 0 (how Linux reboots with
//! `reboot=k`). The VMM thread calls [`I8042::trigger_ctrl_alt_del`], which queues scancode set 2 bytes and
//! raises IRQ 1 through an EventFd that KVM injects (irqfd on GSI 1); the guest's keyboard handler reads the
//! status port (0x64) and drains the data port (0x60). Keyboard commands written to the data port are
//! acknowledged (0xfa) and otherwise ignored.

use std::collections::VecDeque;
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use super::ExitSignal;
use crate::bus::BusDevice;

/// Offset of the data port (0x60) and of the command/status port (0x64) in the device's window.
const DATA_OFFSET: u64 = 0;
const COMMAND_OFFSET: u64 = 4;

/// Controller commands.
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_READ_OUTP: u8 = 0xd0;
const CMD_WRITE_OUTP: u8 = 0xd1;
const CMD_RESET_CPU: u8 = 0xfe;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_DISABLE_KBD: u8 = 0xad;
const CMD_ENABLE_KBD: u8 = 0xae;
/// Answers to the self tests: controller OK, keyboard interface OK.
const SELF_TEST_OK: u8 = 0x55;
const KBD_TEST_OK: u8 = 0x00;

/// Status register bits.
const SB_OUT_DATA_AVAIL: u8 = 0x01;
const SB_I8042_CMD_DATA: u8 = 0x08;
const SB_KBD_ENABLED: u8 = 0x10;

/// Command byte bits: keyboard interrupt enabled, POST passed.
const CB_KBD_INT: u8 = 0x01;
const CB_POST_OK: u8 = 0x04;
const CB_KBD_DISABLED: u8 = 0x10;

/// Keyboard acknowledge.
const KBD_ACK: u8 = 0xfa;

/// Scancode set 2 make codes (Firecracker's): left Ctrl, left Alt, Delete (extended).
pub const KEY_CTRL: u16 = 0x0014;
pub const KEY_ALT: u16 = 0x0011;
pub const KEY_DEL: u16 = 0xe071;

/// Bytes the output buffer holds.
const BUF_SIZE: usize = 16;

/// Why keys could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum I8042Error {
    #[error("the i8042 output buffer is full")]
    BufferFull,
    #[error("cannot raise the keyboard interrupt")]
    Interrupt(#[source] std::io::Error),
}

/// Version of [`I8042State`].
pub const I8042_STATE_VERSION: u32 = 1;

/// The i8042's saved state.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct I8042State {
    pub version: u32,
    pub status: u8,
    pub control: u8,
    pub outp: u8,
    pub cmd: u8,
    pub buf: Vec<u8>,
}

/// Why a saved i8042 state cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum I8042StateError {
    #[error("i8042 state version {0} is not the supported version {I8042_STATE_VERSION}")]
    Version(u32),
    #[error("i8042 state holds {0} buffered bytes, more than the controller's buffer")]
    Buffer(usize),
}

/// The i8042 device.
pub struct I8042 {
    exit: Arc<ExitSignal>,
    /// Raises IRQ 1.
    kbd_irq: EventFd,
    status: u8,
    control: u8,
    outp: u8,
    /// The controller command waiting for its data byte.
    cmd: u8,
    buf: VecDeque<u8>,
}

impl I8042 {
    /// A controller whose reset ends the VM through `exit` and whose keyboard interrupt is `kbd_irq`.
    pub fn new(exit: Arc<ExitSignal>, kbd_irq: EventFd) -> Self {
        Self {
            exit,
            kbd_irq,
            status: SB_KBD_ENABLED,
            control: CB_POST_OK | CB_KBD_INT,
            outp: 0,
            cmd: 0,
            buf: VecDeque::with_capacity(BUF_SIZE),
        }
    }

    /// Queues the make codes of Ctrl, Alt and Delete and raises the keyboard interrupt.
    pub fn trigger_ctrl_alt_del(&mut self) -> Result<(), I8042Error> {
        // All or nothing: Ctrl + Alt + the two bytes of Del.
        if self.buf.len() + 4 > BUF_SIZE {
            return Err(I8042Error::BufferFull);
        }
        for key in [KEY_CTRL, KEY_ALT, KEY_DEL] {
            self.trigger_key(key)?;
        }
        Ok(())
    }

    fn trigger_key(&mut self, key: u16) -> Result<(), I8042Error> {
        if key & 0xff00 != 0 {
            self.push_byte((key >> 8) as u8)?;
        }
        self.push_byte(key as u8)?;
        self.trigger_kbd_interrupt()
    }

    fn push_byte(&mut self, byte: u8) -> Result<(), I8042Error> {
        if self.buf.len() >= BUF_SIZE {
            return Err(I8042Error::BufferFull);
        }
        self.buf.push_back(byte);
        self.status |= SB_OUT_DATA_AVAIL;
        Ok(())
    }

    fn trigger_kbd_interrupt(&self) -> Result<(), I8042Error> {
        if self.control & CB_KBD_INT == 0 {
            log::debug!("i8042: keyboard interrupt disabled by the guest");
            return Ok(());
        }
        self.kbd_irq.write(1).map_err(I8042Error::Interrupt)
    }

    /// The controller's registers and output buffer, for snapshots.
    pub fn save(&self) -> I8042State {
        I8042State {
            version: I8042_STATE_VERSION,
            status: self.status,
            control: self.control,
            outp: self.outp,
            cmd: self.cmd,
            buf: self.buf.iter().copied().collect(),
        }
    }

    /// Puts the controller in a saved state.
    pub fn restore(&mut self, s: &I8042State) -> Result<(), I8042StateError> {
        if s.version != I8042_STATE_VERSION {
            return Err(I8042StateError::Version(s.version));
        }
        if s.buf.len() > BUF_SIZE {
            return Err(I8042StateError::Buffer(s.buf.len()));
        }
        self.status = s.status;
        self.control = s.control;
        self.outp = s.outp;
        self.cmd = s.cmd;
        self.buf = s.buf.iter().copied().collect();
        Ok(())
    }

    /// Bytes waiting in the output buffer.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    fn flush_buf(&mut self) {
        self.buf.clear();
        self.status &= !SB_OUT_DATA_AVAIL;
    }

    fn command(&mut self, cmd: u8) {
        match cmd {
            CMD_RESET_CPU => {
                log::info!("guest reset the CPU through the i8042");
                self.exit.request(0);
            }
            CMD_READ_CTR => {
                self.flush_buf();
                let _ = self.push_byte(self.control);
            }
            CMD_READ_OUTP => {
                self.flush_buf();
                let _ = self.push_byte(self.outp);
            }
            // Linux probes the controller with its self tests before it trusts the keyboard port.
            CMD_SELF_TEST | CMD_KBD_TEST => {
                self.flush_buf();
                let answer = if cmd == CMD_SELF_TEST {
                    SELF_TEST_OK
                } else {
                    KBD_TEST_OK
                };
                let _ = self.push_byte(answer);
            }
            CMD_DISABLE_KBD => self.control |= CB_KBD_DISABLED,
            CMD_ENABLE_KBD => self.control &= !CB_KBD_DISABLED,
            CMD_WRITE_CTR | CMD_WRITE_OUTP => {
                self.flush_buf();
                self.status |= SB_I8042_CMD_DATA;
                self.cmd = cmd;
            }
            other => log::debug!("i8042: ignoring controller command {other:#x}"),
        }
    }

    fn data(&mut self, value: u8) {
        if self.status & SB_I8042_CMD_DATA != 0 {
            match self.cmd {
                CMD_WRITE_CTR => self.control = value,
                CMD_WRITE_OUTP => self.outp = value,
                _ => {}
            }
            self.status &= !SB_I8042_CMD_DATA;
            return;
        }
        // A keyboard command: there is no keyboard to configure, so acknowledge it.
        self.flush_buf();
        let _ = self.push_byte(KBD_ACK);
        if let Err(e) = self.trigger_kbd_interrupt() {
            log::warn!("i8042: {e}");
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            COMMAND_OFFSET => self.status,
            DATA_OFFSET => {
                let byte = self.buf.pop_front().unwrap_or(0);
                if self.buf.is_empty() {
                    self.status &= !SB_OUT_DATA_AVAIL;
                } else if let Err(e) = self.trigger_kbd_interrupt() {
                    log::warn!("i8042: {e}");
                }
                byte
            }
            _ => 0,
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            COMMAND_OFFSET => self.command(value),
            DATA_OFFSET => self.data(value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    fn device() -> (I8042, Arc<ExitSignal>) {
        let exit = Arc::new(ExitSignal::new().unwrap());
        let dev = I8042::new(exit.clone(), EventFd::new(EFD_NONBLOCK).unwrap());
        (dev, exit)
    }

    fn read(dev: &mut I8042, offset: u64) -> u8 {
        let mut b = [0u8];
        dev.read(offset, &mut b);
        b[0]
    }

    #[test]
    fn save_restore_save_gives_the_same_state() {
        let (mut dev, _) = device();
        // A command waiting for its data byte, and the keys of Ctrl-Alt-Del waiting to be read.
        dev.write(COMMAND_OFFSET, &[0xd1]);
        dev.trigger_ctrl_alt_del().unwrap();
        let saved = dev.save();
        assert_eq!(saved.cmd, 0xd1);
        assert_eq!(saved.buf.len(), 4);
        let text = serde_json::to_string(&saved).unwrap();
        let (mut other, _) = device();
        other
            .restore(&serde_json::from_str(&text).unwrap())
            .unwrap();
        assert_eq!(other.save(), saved);
        assert_ne!(read(&mut other, COMMAND_OFFSET) & SB_OUT_DATA_AVAIL, 0);
        let bad = I8042State {
            version: 2,
            ..saved
        };
        assert!(other.restore(&bad).is_err());
    }

    #[test]
    fn only_the_reset_command_ends_the_vm() {
        let (mut dev, exit) = device();
        dev.write(0, &[CMD_RESET_CPU]);
        dev.write(COMMAND_OFFSET, &[0xd1]);
        assert_eq!(exit.code(), None);
        dev.write(COMMAND_OFFSET, &[CMD_RESET_CPU]);
        assert_eq!(exit.code(), Some(0));
    }

    #[test]
    fn ctrl_alt_del_fills_the_buffer_and_raises_irq1() {
        let (mut dev, _) = device();
        assert_eq!(read(&mut dev, COMMAND_OFFSET) & SB_OUT_DATA_AVAIL, 0);
        dev.trigger_ctrl_alt_del().unwrap();
        // One interrupt per key.
        assert_eq!(dev.kbd_irq.read().unwrap(), 3);
        let mut bytes = Vec::new();
        while read(&mut dev, COMMAND_OFFSET) & SB_OUT_DATA_AVAIL != 0 {
            bytes.push(read(&mut dev, DATA_OFFSET));
        }
        assert_eq!(bytes, [0x14, 0x11, 0xe0, 0x71]);
        // Reading with bytes left re-raised the interrupt.
        assert_eq!(dev.kbd_irq.read().unwrap(), 3);
        // Four sequences fit in 16 bytes, a fifth does not.
        for _ in 0..4 {
            dev.trigger_ctrl_alt_del().unwrap();
        }
        assert!(matches!(
            dev.trigger_ctrl_alt_del(),
            Err(I8042Error::BufferFull)
        ));
        assert_eq!(dev.pending(), 16);
    }

    #[test]
    fn command_byte_and_keyboard_commands() {
        let (mut dev, _) = device();
        dev.write(COMMAND_OFFSET, &[CMD_READ_CTR]);
        assert_eq!(read(&mut dev, DATA_OFFSET), CB_POST_OK | CB_KBD_INT);
        // Interrupts off: keys are queued but no IRQ is raised.
        dev.write(COMMAND_OFFSET, &[CMD_WRITE_CTR]);
        assert_ne!(read(&mut dev, COMMAND_OFFSET) & SB_I8042_CMD_DATA, 0);
        dev.write(DATA_OFFSET, &[CB_POST_OK]);
        assert_eq!(read(&mut dev, COMMAND_OFFSET) & SB_I8042_CMD_DATA, 0);
        dev.trigger_ctrl_alt_del().unwrap();
        assert!(dev.kbd_irq.read().is_err());
        dev.write(COMMAND_OFFSET, &[CMD_WRITE_OUTP]);
        dev.write(DATA_OFFSET, &[0x5a]);
        dev.write(COMMAND_OFFSET, &[CMD_READ_OUTP]);
        assert_eq!(read(&mut dev, DATA_OFFSET), 0x5a);
        // Self tests pass; disabling the keyboard shows in the command byte.
        dev.write(COMMAND_OFFSET, &[CMD_SELF_TEST]);
        assert_eq!(read(&mut dev, DATA_OFFSET), SELF_TEST_OK);
        dev.write(COMMAND_OFFSET, &[CMD_KBD_TEST]);
        assert_ne!(read(&mut dev, COMMAND_OFFSET) & SB_OUT_DATA_AVAIL, 0);
        assert_eq!(read(&mut dev, DATA_OFFSET), KBD_TEST_OK);
        dev.write(COMMAND_OFFSET, &[CMD_DISABLE_KBD]);
        dev.write(COMMAND_OFFSET, &[CMD_READ_CTR]);
        assert_eq!(read(&mut dev, DATA_OFFSET), CB_POST_OK | CB_KBD_DISABLED);
        dev.write(COMMAND_OFFSET, &[CMD_ENABLE_KBD]);
        dev.write(COMMAND_OFFSET, &[CMD_READ_CTR]);
        assert_eq!(read(&mut dev, DATA_OFFSET), CB_POST_OK);
        // A keyboard command is acknowledged.
        dev.write(DATA_OFFSET, &[0xf4]);
        assert_eq!(read(&mut dev, DATA_OFFSET), KBD_ACK);
        assert_eq!(read(&mut dev, COMMAND_OFFSET) & SB_OUT_DATA_AVAIL, 0);
    }
}
