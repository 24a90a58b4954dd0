//! Wall-clock arithmetic for the guest's clocks: a CMOS RTC reading (BCD or binary, 12 or 24 hour)
//! made into seconds since the Unix epoch, and the calendar conversion it needs. Pure logic, tested on
//! the host; the port reads are in the kernel's `arch::clock`.

/// A raw CMOS RTC reading: the registers as read (0x00 seconds, 0x02 minutes, 0x04 hours, 0x07 day,
/// 0x08 month, 0x09 year, 0x32 century when the RTC has one, else 0) and status register B.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmosTime {
    pub sec: u8,
    pub min: u8,
    pub hour: u8,
    pub day: u8,
    pub month: u8,
    pub year: u8,
    pub century: u8,
    pub status_b: u8,
}

/// Status B: values are binary (else BCD).
const RTC_BINARY: u8 = 0x04;
/// Status B: 24-hour mode (else 12-hour with bit 7 of the hour for PM).
const RTC_24H: u8 = 0x02;

fn bcd(v: u8) -> Option<u8> {
    let (hi, lo) = (v >> 4, v & 0xf);
    (hi <= 9 && lo <= 9).then_some(hi * 10 + lo)
}

/// Days from 1970-01-01 to year-month-day (proleptic Gregorian; Howard Hinnant's days_from_civil).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

impl CmosTime {
    /// Seconds since the epoch, or None for a reading no RTC gives (absent device: all 0xff).
    pub fn unix_seconds(&self) -> Option<u64> {
        let bin = self.status_b & RTC_BINARY != 0;
        let conv = |v: u8| if bin { Some(v) } else { bcd(v) };
        let pm = self.status_b & RTC_24H == 0 && self.hour & 0x80 != 0;
        let sec = conv(self.sec)?;
        let min = conv(self.min)?;
        let mut hour = conv(self.hour & 0x7f)?;
        let day = conv(self.day)?;
        let month = conv(self.month)?;
        let year = conv(self.year)? as i64;
        if self.status_b & RTC_24H == 0 {
            // 12-hour mode: 12 AM is 0, 12 PM is 12.
            if hour == 12 {
                hour = 0;
            }
            if pm {
                hour += 12;
            }
        }
        if sec > 59
            || min > 59
            || hour > 23
            || !(1..=31).contains(&day)
            || !(1..=12).contains(&month)
        {
            return None;
        }
        let century = match conv(self.century) {
            Some(c @ 19..=30) => c as i64,
            // No century register: 1970-2069.
            _ if year < 70 => 20,
            _ => 19,
        };
        let days = days_from_civil(century * 100 + year, month as u32, day as u32);
        if days < 0 {
            return None;
        }
        Some(days as u64 * 86400 + hour as u64 * 3600 + min as u64 * 60 + sec as u64)
    }
}

/// pvclock (KVM's `pvclock_vcpu_time_info`): nanoseconds of the clock at TSC value `tsc`.
pub fn pvclock_ns(system_time: u64, tsc_timestamp: u64, mul: u32, shift: i8, tsc: u64) -> u64 {
    let mut delta = tsc.wrapping_sub(tsc_timestamp);
    if shift >= 0 {
        delta <<= shift as u32;
    } else {
        delta >>= (-(shift as i32)) as u32;
    }
    system_time.wrapping_add(((delta as u128 * mul as u128) >> 32) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
        assert_eq!(days_from_civil(2026, 12, 7), 20794);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }

    #[test]
    fn bcd_24h() {
        // 2026-12-07 04:52:30 in BCD, 24-hour, century register 0x20.
        let t = CmosTime {
            sec: 0x30,
            min: 0x52,
            hour: 0x04,
            day: 0x07,
            month: 0x12,
            year: 0x26,
            century: 0x20,
            status_b: RTC_24H,
        };
        assert_eq!(
            t.unix_seconds(),
            Some(20794 * 86400 + 4 * 3600 + 52 * 60 + 30)
        );
    }

    #[test]
    fn binary_12h_pm_without_century() {
        let t = CmosTime {
            sec: 5,
            min: 6,
            hour: 0x80 | 12,
            day: 1,
            month: 1,
            year: 70,
            century: 0,
            status_b: RTC_BINARY,
        };
        assert_eq!(t.unix_seconds(), Some(12 * 3600 + 6 * 60 + 5));
        let am = CmosTime { hour: 12, ..t };
        assert_eq!(am.unix_seconds(), Some(6 * 60 + 5));
    }

    #[test]
    fn absent_rtc_is_none() {
        let t = CmosTime {
            sec: 0xff,
            min: 0xff,
            hour: 0xff,
            day: 0xff,
            month: 0xff,
            year: 0xff,
            century: 0xff,
            status_b: 0xff,
        };
        assert_eq!(t.unix_seconds(), None);
    }

    #[test]
    fn pvclock_scaling() {
        // mul 2^31 with shift 0 halves; shift -1 then mul 2^32-ish.
        assert_eq!(pvclock_ns(1000, 100, 1 << 31, 0, 300), 1100);
        assert_eq!(pvclock_ns(0, 0, 1 << 31, 1, 10), 10);
        assert_eq!(pvclock_ns(0, 0, 1 << 31, -1, 10), 2);
    }
}
