//! Number formatting without `core::fmt`'s integer code.
//!
//! In kernel mode every instruction is emulated here, and the emulator cannot run the SSE arithmetic that
//! `<u64 as Display>::fmt` and `Formatter::pad_integral` contain. These wrappers render digits into a small
//! buffer with plain integer code and hand `Formatter::write_str` the result, so `{}` on them is safe
//! (never with width, fill or precision).

use core::fmt;

/// Renders `v` in `base` (2..=16) into the end of `buf`, returning the used tail, at least `min_digits`
/// long (zero-padded).
pub fn render(mut v: u64, base: u64, min_digits: usize, buf: &mut [u8; 64]) -> &str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = DIGITS[(v % base) as usize];
        v /= base;
        if v == 0 && buf.len() - i >= min_digits {
            break;
        }
        if i == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    core::str::from_utf8(&buf[i..]).unwrap_or("?")
}

/// Unsigned decimal.
#[derive(Clone, Copy)]
pub struct Dec(pub u64);

/// Signed decimal.
#[derive(Clone, Copy)]
pub struct IDec(pub i64);

/// `0x`-prefixed lower-case hexadecimal.
#[derive(Clone, Copy)]
pub struct Hex(pub u64);

/// Zero-padded 16-digit hexadecimal without prefix (register dumps).
#[derive(Clone, Copy)]
pub struct Hex16(pub u64);

/// `0x`-prefixed hexadecimal zero-padded to `.1` digits (`HexPad(11, 8)` is `0x0000000b`).
#[derive(Clone, Copy)]
pub struct HexPad(pub u64, pub usize);

/// A boot-log timestamp in nanoseconds, rendered like Linux: `[    1.234567]`.
#[derive(Clone, Copy)]
pub struct Timestamp(pub u64);

impl fmt::Display for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(render(self.0, 10, 1, &mut [0; 64]))
    }
}

impl fmt::Display for IDec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 < 0 {
            f.write_str("-")?;
        }
        f.write_str(render(self.0.unsigned_abs(), 10, 1, &mut [0; 64]))
    }
}

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("0x")?;
        f.write_str(render(self.0, 16, 1, &mut [0; 64]))
    }
}

impl fmt::Display for Hex16 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(render(self.0, 16, 16, &mut [0; 64]))
    }
}

impl fmt::Display for HexPad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("0x")?;
        f.write_str(render(self.0, 16, self.1.min(64), &mut [0; 64]))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / 1_000_000_000;
        let micros = (self.0 % 1_000_000_000) / 1000;
        let mut buf = [0u8; 64];
        let s = render(secs, 10, 1, &mut buf);
        f.write_str("[")?;
        for _ in s.len()..5 {
            f.write_str(" ")?;
        }
        f.write_str(s)?;
        f.write_str(".")?;
        f.write_str(render(micros, 10, 6, &mut [0; 64]))?;
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_and_hex() {
        assert_eq!(format!("{}", Dec(0)), "0");
        assert_eq!(format!("{}", Dec(1234567890)), "1234567890");
        assert_eq!(format!("{}", Dec(u64::MAX)), "18446744073709551615");
        assert_eq!(format!("{}", IDec(-42)), "-42");
        assert_eq!(format!("{}", IDec(i64::MIN)), "-9223372036854775808");
        assert_eq!(format!("{}", Hex(0xdead_beef)), "0xdeadbeef");
        assert_eq!(format!("{}", Hex16(0x1f)), "000000000000001f");
        assert_eq!(format!("{}", Hex16(u64::MAX)), "ffffffffffffffff");
        assert_eq!(format!("{}", HexPad(11, 8)), "0x0000000b");
    }

    #[test]
    fn timestamps_look_like_linux() {
        assert_eq!(format!("{}", Timestamp(12_345_678)), "[    0.012345]");
        assert_eq!(
            format!("{}", Timestamp(123_456_789_000_000)),
            "[123456.789000]"
        );
    }
}
