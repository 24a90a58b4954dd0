//! Token-bucket rate limiters for the block and network devices, with Firecracker's configuration
//! (`rate_limiter`, `rx_rate_limiter`, `tx_rate_limiter`: a `bandwidth` bucket in bytes and an `ops`
//! bucket in requests or frames, each `{size, one_time_burst, refill_time}` with `refill_time` in ms).
//!
//! A bucket holds up to `size` tokens and refills continuously, `size` tokens per `refill_time`;
//! `one_time_burst` tokens are spent first and never come back. A device asks [`RateLimiter::consume`]
//! before it carries out a request or moves a frame; when a bucket is short, nothing is taken from
//! either bucket, the limiter arms its timerfd for the moment the bucket will hold enough, and the
//! device leaves the request on its queue. The timerfd sits in the device's event loop (it is one of the
//! device's event sources); when it fires the device calls [`RateLimiter::event_handler`] and processes
//! its queue again. Nothing ever sleeps. A request larger than the whole bucket is let through when the
//! bucket is full and leaves a debt that the refill pays before anything else passes, so the average rate
//! holds for any request size.
//!
//! Arithmetic is exact: a bucket counts in token-nanoseconds (`tokens * refill_time_ns`), so a refill
//! of `elapsed_ns * size` loses nothing to rounding however often it is asked.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vmm_sys_util::timerfd::TimerFd;

/// Longest `refill_time` accepted, in ms (about 49 days): keeps the token-nanosecond arithmetic within
/// 128 bits for any `size`.
pub const MAX_REFILL_TIME_MS: u64 = u32::MAX as u64;
/// Shortest timer the limiter arms: a wait shorter than this is rounded up to it.
const MIN_WAIT: Duration = Duration::from_micros(100);

/// Errors from configuring a rate limiter.
#[derive(Debug, thiserror::Error)]
pub enum RateLimiterError {
    /// The timerfd could not be created or made non-blocking.
    #[error("cannot create the rate limiter's timerfd: {0}")]
    Timer(#[source] io::Error),
    /// A `refill_time` beyond [`MAX_REFILL_TIME_MS`].
    #[error("refill_time {0} ms is too long (at most {MAX_REFILL_TIME_MS})")]
    RefillTime(u64),
}

/// Firecracker's `TokenBucket`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucketConfig {
    /// Tokens the bucket holds when full (bytes or operations). 0 disables the bucket.
    pub size: u64,
    /// Extra tokens available once, at the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    /// Milliseconds to refill the bucket from empty to full. 0 disables the bucket.
    pub refill_time: u64,
}

impl TokenBucketConfig {
    /// Whether this configuration limits anything (Firecracker: a bucket with `size` or `refill_time`
    /// 0 is no bucket).
    pub fn enabled(&self) -> bool {
        self.size != 0 && self.refill_time != 0
    }
}

/// Firecracker's `RateLimiter` body. In a `PATCH`, a bucket left out keeps its setting and a bucket
/// with `size` or `refill_time` 0 is removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiterConfig {
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucketConfig>,
    /// Requests (block) or frames (net).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucketConfig>,
}

impl RateLimiterConfig {
    /// Checks the values (the API answers a 400 with the message).
    pub fn validate(&self) -> Result<(), RateLimiterError> {
        for b in [self.bandwidth, self.ops].into_iter().flatten() {
            if b.refill_time > MAX_REFILL_TIME_MS {
                return Err(RateLimiterError::RefillTime(b.refill_time));
            }
        }
        Ok(())
    }

    /// This configuration with `update` applied as Firecracker's PATCH does: buckets `update` names
    /// replace ours, the others stay. Buckets that limit nothing are dropped.
    pub fn patched(&self, update: &RateLimiterConfig) -> RateLimiterConfig {
        let pick = |old: Option<TokenBucketConfig>, new: Option<TokenBucketConfig>| {
            new.or(old).filter(TokenBucketConfig::enabled)
        };
        RateLimiterConfig {
            bandwidth: pick(self.bandwidth, update.bandwidth),
            ops: pick(self.ops, update.ops),
        }
    }

    /// Whether any bucket limits anything.
    pub fn is_limited(&self) -> bool {
        [self.bandwidth, self.ops]
            .into_iter()
            .flatten()
            .any(|b| b.enabled())
    }
}

/// One bucket, counting in token-nanoseconds.
#[derive(Debug)]
pub struct TokenBucket {
    size: u128,
    refill_ns: u128,
    /// `size * refill_ns`.
    capacity: u128,
    budget: u128,
    /// Owed by a request larger than the bucket; paid by the refill before the budget grows.
    debt: u128,
    one_time_burst: u64,
    last_update: Instant,
}

impl TokenBucket {
    /// A full bucket, or `None` when the configuration limits nothing.
    pub fn new(cfg: &TokenBucketConfig, now: Instant) -> Option<Self> {
        if !cfg.enabled() {
            return None;
        }
        let size = u128::from(cfg.size);
        let refill_ns = u128::from(cfg.refill_time.min(MAX_REFILL_TIME_MS)) * 1_000_000;
        Some(Self {
            size,
            refill_ns,
            capacity: size * refill_ns,
            budget: size * refill_ns,
            debt: 0,
            one_time_burst: cfg.one_time_burst.unwrap_or(0),
            last_update: now,
        })
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last_update).as_nanos();
        self.last_update = now;
        let mut add = elapsed.saturating_mul(self.size);
        let paid = add.min(self.debt);
        self.debt -= paid;
        add -= paid;
        self.budget = self.budget.saturating_add(add).min(self.capacity);
    }

    /// How long until `tokens` can be taken (after a refill to `now`); `None` when they can be now.
    fn wait_for(&mut self, tokens: u64, now: Instant) -> Option<Duration> {
        self.refill(now);
        let tokens = tokens.saturating_sub(self.one_time_burst);
        if tokens == 0 {
            return None;
        }
        let need = u128::from(tokens) * self.refill_ns;
        if self.debt == 0 && (need <= self.budget || self.budget == self.capacity) {
            return None;
        }
        let target = self.debt + need.min(self.capacity);
        let ns = (target - self.budget).div_ceil(self.size);
        Some(Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)))
    }

    /// Takes `tokens`, which [`TokenBucket::wait_for`] just allowed.
    fn take(&mut self, tokens: u64) {
        let from_burst = tokens.min(self.one_time_burst);
        self.one_time_burst -= from_burst;
        let need = u128::from(tokens - from_burst) * self.refill_ns;
        if need <= self.budget {
            self.budget -= need;
        } else {
            // Larger than the whole bucket, which was full.
            self.debt += need - self.budget;
            self.budget = 0;
        }
    }

    /// Whole tokens available now (for tests and metrics).
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        let whole = self.budget / self.refill_ns;
        u64::try_from(whole)
            .unwrap_or(u64::MAX)
            .saturating_add(self.one_time_burst)
    }
}

/// A bandwidth and an ops bucket with the timer that ends a wait.
pub struct RateLimiter {
    config: RateLimiterConfig,
    bandwidth: Option<TokenBucket>,
    ops: Option<TokenBucket>,
    timer: TimerFd,
    blocked: bool,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("config", &self.config)
            .field("blocked", &self.blocked)
            .finish()
    }
}

impl RateLimiter {
    /// A limiter with `cfg`'s buckets (none: it lets everything through). Its timerfd is created even
    /// then, so a later [`RateLimiter::update`] needs no new descriptor.
    pub fn new(cfg: &RateLimiterConfig) -> Result<Self, RateLimiterError> {
        cfg.validate()?;
        let timer = TimerFd::new().map_err(|e| RateLimiterError::Timer(e.into()))?;
        // Non-blocking: a read after the timer was re-armed (between epoll's answer and the handler)
        // must not wait for the new expiry on the VMM thread.
        // SAFETY: F_SETFL on a descriptor this function owns; no memory is passed.
        let r = unsafe {
            libc::fcntl(
                timer.as_raw_fd(),
                libc::F_SETFL,
                libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if r < 0 {
            return Err(RateLimiterError::Timer(io::Error::last_os_error()));
        }
        let mut limiter = Self {
            config: RateLimiterConfig::default(),
            bandwidth: None,
            ops: None,
            timer,
            blocked: false,
        };
        limiter.set(cfg, Instant::now());
        Ok(limiter)
    }

    fn set(&mut self, cfg: &RateLimiterConfig, now: Instant) {
        let cfg = RateLimiterConfig::default().patched(cfg);
        self.bandwidth = cfg.bandwidth.and_then(|b| TokenBucket::new(&b, now));
        self.ops = cfg.ops.and_then(|b| TokenBucket::new(&b, now));
        self.config = cfg;
    }

    /// The buckets in force.
    pub fn config(&self) -> &RateLimiterConfig {
        &self.config
    }

    /// Applies a PATCH ([`RateLimiterConfig::patched`]): changed buckets start full, and a wait in
    /// progress ends (the device should process its queue again).
    pub fn update(&mut self, update: &RateLimiterConfig) -> Result<(), RateLimiterError> {
        update.validate()?;
        let cfg = self.config.patched(update);
        let now = Instant::now();
        if cfg.bandwidth != self.config.bandwidth {
            self.bandwidth = cfg.bandwidth.and_then(|b| TokenBucket::new(&b, now));
        }
        if cfg.ops != self.config.ops {
            self.ops = cfg.ops.and_then(|b| TokenBucket::new(&b, now));
        }
        self.config = cfg;
        if self.blocked {
            self.blocked = false;
            if let Err(e) = self.timer.clear() {
                log::error!("rate limiter: cannot disarm the timer: {e}");
            }
        }
        Ok(())
    }

    /// Whether a request waits for the timer.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Takes one operation and `bytes` bytes, or neither: when a bucket is short (or a wait is already
    /// in progress), arms the timer for when both will do and answers false.
    pub fn consume(&mut self, bytes: u64) -> bool {
        if self.blocked {
            return false;
        }
        if self.bandwidth.is_none() && self.ops.is_none() {
            return true;
        }
        let now = Instant::now();
        let wait_bw = self.bandwidth.as_mut().and_then(|b| b.wait_for(bytes, now));
        let wait_ops = self.ops.as_mut().and_then(|b| b.wait_for(1, now));
        if let Some(wait) = wait_bw.max(wait_ops) {
            match self.timer.reset(wait.max(MIN_WAIT), None) {
                Ok(()) => self.blocked = true,
                // Without a timer nobody would wake the device: let the request through.
                Err(e) => {
                    log::error!("rate limiter: cannot arm the timer ({e}); not limiting");
                    return true;
                }
            }
            return false;
        }
        if let Some(b) = self.bandwidth.as_mut() {
            b.take(bytes);
        }
        if let Some(b) = self.ops.as_mut() {
            b.take(1);
        }
        true
    }

    /// The timer fired: the wait is over (the device then processes its queue again).
    pub fn event_handler(&mut self) {
        let mut ticks = 0u64;
        // SAFETY: reads 8 bytes into a u64 this function owns from the limiter's own non-blocking
        // timerfd; EAGAIN (already read or re-armed) leaves `ticks` alone and is fine.
        let _ = unsafe {
            libc::read(
                self.timer.as_raw_fd(),
                (&mut ticks as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        self.blocked = false;
    }
}

impl AsRawFd for RateLimiter {
    fn as_raw_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(size: u64, burst: Option<u64>, refill_time: u64) -> TokenBucketConfig {
        TokenBucketConfig {
            size,
            one_time_burst: burst,
            refill_time,
        }
    }

    #[test]
    fn a_bucket_refills_at_its_rate_exactly() {
        let t0 = Instant::now();
        // 1000 tokens per 1000 ms: one per ms.
        let mut b = TokenBucket::new(&bucket(1000, None, 1000), t0).unwrap();
        assert_eq!(b.wait_for(1000, t0), None);
        b.take(1000);
        assert_eq!(b.available(t0), 0);
        // 300 wanted, none there: 300 ms.
        assert_eq!(b.wait_for(300, t0), Some(Duration::from_millis(300)));
        let t1 = t0 + Duration::from_micros(123_456);
        assert_eq!(b.available(t1), 123);
        assert_eq!(b.wait_for(300, t1), Some(Duration::from_micros(176_544)));
        let t2 = t0 + Duration::from_millis(300);
        assert_eq!(b.wait_for(300, t2), None);
        b.take(300);
        // Many tiny refills add up to the same as one.
        let mut t = t2;
        for _ in 0..1000 {
            t += Duration::from_micros(7);
            b.refill(t);
        }
        assert_eq!(b.available(t), 7);
        // Never above the size.
        assert_eq!(b.available(t0 + Duration::from_secs(100)), 1000);
    }

    #[test]
    fn one_time_burst_is_spent_first_and_never_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(&bucket(100, Some(1000), 1000), t0).unwrap();
        assert_eq!(b.available(t0), 1100);
        assert_eq!(b.wait_for(1050, t0), None);
        b.take(1050);
        assert_eq!(b.available(t0), 50);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.available(later), 100);
    }

    #[test]
    fn a_request_larger_than_the_bucket_passes_when_full_and_leaves_a_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(&bucket(100, None, 100), t0).unwrap();
        assert_eq!(b.wait_for(250, t0), None);
        b.take(250);
        // 150 tokens owed, then 10 more wanted: 160 ms.
        assert_eq!(b.wait_for(10, t0), Some(Duration::from_millis(160)));
        // After 150 ms the debt is paid but nothing is there yet.
        assert_eq!(b.available(t0 + Duration::from_millis(150)), 0);
        // A second large request waits until the debt is paid and the bucket is full again.
        let mut b = TokenBucket::new(&bucket(100, None, 100), t0).unwrap();
        b.take(250);
        assert_eq!(b.wait_for(400, t0), Some(Duration::from_millis(250)));
        assert_eq!(b.wait_for(400, t0 + Duration::from_millis(250)), None);
    }

    #[test]
    fn disabled_buckets_and_patches_follow_firecracker() {
        assert!(TokenBucket::new(&bucket(0, None, 100), Instant::now()).is_none());
        assert!(TokenBucket::new(&bucket(100, None, 0), Instant::now()).is_none());
        let cfg = RateLimiterConfig {
            bandwidth: Some(bucket(1 << 20, None, 1000)),
            ops: Some(bucket(100, None, 1000)),
        };
        // Only ops named: bandwidth stays.
        let p = cfg.patched(&RateLimiterConfig {
            bandwidth: None,
            ops: Some(bucket(50, Some(10), 500)),
        });
        assert_eq!(p.bandwidth, cfg.bandwidth);
        assert_eq!(p.ops, Some(bucket(50, Some(10), 500)));
        // A zero bucket removes it.
        let p = p.patched(&RateLimiterConfig {
            bandwidth: Some(bucket(0, None, 0)),
            ops: None,
        });
        assert_eq!(p.bandwidth, None);
        assert!(p.is_limited());
        assert!(!RateLimiterConfig::default().is_limited());
        let too_long = RateLimiterConfig {
            bandwidth: Some(bucket(1, None, MAX_REFILL_TIME_MS + 1)),
            ops: None,
        };
        assert!(too_long.validate().is_err());
        assert!(RateLimiter::new(&too_long).is_err());
        // Firecracker's JSON.
        let j: RateLimiterConfig = serde_json::from_str(
            r#"{"bandwidth": {"size": 1048576, "refill_time": 1000}, "ops": {"size": 10, "one_time_burst": 5, "refill_time": 100}}"#,
        )
        .unwrap();
        assert_eq!(j.ops, Some(bucket(10, Some(5), 100)));
        assert!(
            serde_json::from_str::<RateLimiterConfig>(r#"{"bandwidth": {"size": 1}}"#).is_err()
        );
        assert!(serde_json::from_str::<RateLimiterConfig>(r#"{"bogus": {}}"#).is_err());
    }

    fn timer_fired(l: &RateLimiter, timeout_ms: i32) -> bool {
        let mut p = libc::pollfd {
            fd: l.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut p, 1, timeout_ms) == 1 }
    }

    #[test]
    fn a_short_bucket_arms_the_timer_and_takes_nothing() {
        // 10 ops per 100 ms and 1000 bytes per 100 ms.
        let mut l = RateLimiter::new(&RateLimiterConfig {
            bandwidth: Some(bucket(1000, None, 100)),
            ops: Some(bucket(10, None, 100)),
        })
        .unwrap();
        assert!(l.consume(600));
        // The bandwidth is short: neither bucket is charged.
        assert!(!l.consume(600));
        assert!(l.is_blocked());
        assert_eq!(l.ops.as_mut().unwrap().available(Instant::now()), 9);
        // Blocked until the timer fires, whatever is asked.
        assert!(!l.consume(0));
        assert!(!timer_fired(&l, 0));
        let t = Instant::now();
        assert!(timer_fired(&l, 1000));
        assert!(t.elapsed() >= Duration::from_millis(15));
        l.event_handler();
        assert!(!l.is_blocked());
        assert!(l.consume(600));
        // A second read of the timer after it was handled does not block.
        l.event_handler();
        // An update ends a wait and takes effect at once.
        assert!(!l.consume(900));
        l.update(&RateLimiterConfig {
            bandwidth: Some(bucket(0, None, 0)),
            ops: None,
        })
        .unwrap();
        assert!(!l.is_blocked());
        assert!(l.consume(1 << 30));
        assert_eq!(l.config().bandwidth, None);
    }

    #[test]
    fn an_unlimited_limiter_lets_everything_through() {
        let mut l = RateLimiter::new(&RateLimiterConfig::default()).unwrap();
        for _ in 0..10_000 {
            assert!(l.consume(1 << 20));
        }
    }

    #[test]
    fn sustained_rate_matches_the_configuration() {
        // 64 KiB per 50 ms, requests of 16 KiB, for 300 ms: about 6 buckets' worth (+ the first full one).
        let mut l = RateLimiter::new(&RateLimiterConfig {
            bandwidth: Some(bucket(64 << 10, None, 50)),
            ops: None,
        })
        .unwrap();
        let t0 = Instant::now();
        let mut bytes = 0u64;
        while t0.elapsed() < Duration::from_millis(300) {
            if l.consume(16 << 10) {
                bytes += 16 << 10;
            } else {
                timer_fired(&l, 1000);
                l.event_handler();
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let expected = (64 << 10) as f64 * (1.0 + secs / 0.05);
        assert!(
            (bytes as f64) <= expected + (16 << 10) as f64,
            "{bytes} > {expected}"
        );
        assert!((bytes as f64) >= expected * 0.7, "{bytes} < {expected}");
    }
}
