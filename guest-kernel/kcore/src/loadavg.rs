//! Load averages as Linux 6.5 computes them (kernel/sched/loadavg.c): every 5 s the number of
//! runnable tasks is folded into three exponentially decaying averages (1, 5 and 15 minutes) in 11-bit
//! fixed point, printed by `/proc/loadavg` and given by sysinfo(2) in 16-bit fixed point.

extern crate alloc;

/// 1.0 in the averages' fixed point (FSHIFT 11).
pub const FIXED_1: u64 = 1 << 11;
/// How often the averages are updated (LOAD_FREQ, 5 s; Linux adds one tick).
pub const LOAD_FREQ_NS: u64 = 5_000_000_000;
/// exp(-5s/1min), exp(-5s/5min), exp(-5s/15min) in fixed point.
const EXP: [u64; 3] = [1884, 2014, 2037];

/// The three averages (avenrun).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadAvg(pub [u64; 3]);

/// Linux's calc_load: one decay step towards `active` (fixed point), rounding up while rising.
fn calc_load(load: u64, exp: u64, active: u64) -> u64 {
    let mut newload = load * exp + active * (FIXED_1 - exp);
    if active >= load {
        newload += FIXED_1 - 1;
    }
    newload / FIXED_1
}

impl LoadAvg {
    /// One 5-second update with `runnable` tasks (running or waiting to run).
    pub fn update(&mut self, runnable: u64) {
        let active = runnable * FIXED_1;
        for (l, e) in self.0.iter_mut().zip(EXP) {
            *l = calc_load(*l, e, active);
        }
    }

    /// sysinfo's `loads` (SI_LOAD_SHIFT 16).
    pub fn sysinfo(&self) -> [u64; 3] {
        self.0.map(|l| l << (16 - 11))
    }

    /// `/proc/loadavg`: the three averages with two decimals, runnable/total tasks, the last pid.
    pub fn proc_text(&self, runnable: u64, tasks: u64, last_pid: u64) -> alloc::vec::Vec<u8> {
        let mut s = alloc::vec::Vec::new();
        for l in self.0 {
            // LOAD_INT and LOAD_FRAC of the value rounded to two decimals (Linux adds FIXED_1/200).
            let x = l + FIXED_1 / 200;
            let int = x >> 11;
            let frac = ((x & (FIXED_1 - 1)) * 100) >> 11;
            push_dec(&mut s, int);
            s.push(b'.');
            s.push(b'0' + (frac / 10) as u8);
            s.push(b'0' + (frac % 10) as u8);
            s.push(b' ');
        }
        push_dec(&mut s, runnable);
        s.push(b'/');
        push_dec(&mut s, tasks);
        s.push(b' ');
        push_dec(&mut s, last_pid);
        s.push(b'\n');
        s
    }
}

fn push_dec(s: &mut alloc::vec::Vec<u8>, v: u64) {
    let mut b = [0u8; 64];
    s.extend_from_slice(crate::fmt::render(v, 10, 1, &mut b).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rises_towards_the_runnable_count() {
        let mut l = LoadAvg::default();
        // One runnable task for a minute: the 1-minute average reaches 1 - 1/e.
        for _ in 0..12 {
            l.update(1);
        }
        let one = l.0[0] as f64 / FIXED_1 as f64;
        assert!((one - 0.632).abs() < 0.01, "{one}");
        assert!(l.0[1] < l.0[0] && l.0[2] < l.0[1]);
        // Idle for long: back to zero.
        for _ in 0..2000 {
            l.update(0);
        }
        assert_eq!(l.0, [0, 0, 0]);
    }

    #[test]
    fn text_and_sysinfo() {
        let l = LoadAvg([FIXED_1, FIXED_1 / 2, 0]);
        assert_eq!(l.proc_text(1, 7, 42), b"1.00 0.50 0.00 1/7 42\n".to_vec());
        assert_eq!(l.sysinfo(), [65536, 32768, 0]);
    }
}
