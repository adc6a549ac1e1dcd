//! Time source for everything the emulator schedules or expires.
//!
//! The emulator never runs background timers: propagation delays, token expiry and
//! token-bucket refills are all evaluated lazily against a [`Clock`] whenever a request
//! (or a test accessor) touches the state. That keeps behaviour deterministic and lets
//! tests either use real time ([`TokioClock`], which also honours tokio's paused clock)
//! or drive time by hand ([`ManualClock`]).

use std::fmt::Debug;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// A source of monotonic and wall-clock time.
pub trait Clock: Send + Sync + Debug {
    /// Monotonic "now", used for propagation delays, token expiry and rate limiting.
    fn now(&self) -> Instant;
    /// Wall-clock seconds since the Unix epoch, used where Azure prints absolute times
    /// (token `expires_on`, error messages).
    fn unix_now(&self) -> u64;
}

/// Real time, read through tokio so that `tokio::time::pause()`/`advance()` apply.
///
/// Wall-clock time is derived from the monotonic clock (anchored at construction) so the
/// two never disagree, even under a paused tokio clock.
#[derive(Debug)]
pub struct TokioClock {
    anchor: Instant,
    anchor_unix: u64,
}

impl TokioClock {
    /// Anchors the wall clock to the system time now.
    pub fn new() -> Self {
        let anchor_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self {
            anchor: Instant::now(),
            anchor_unix,
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix_now(&self) -> u64 {
        self.anchor_unix + self.now().duration_since(self.anchor).as_secs()
    }
}

/// A clock that only moves when a test calls [`ManualClock::advance`].
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    base_unix: u64,
    offset: Mutex<Duration>,
}

impl ManualClock {
    /// Starts at the current instant; wall-clock time starts at `base_unix` seconds.
    pub fn new(base_unix: u64) -> Self {
        Self {
            base: Instant::now(),
            base_unix,
            offset: Mutex::new(Duration::ZERO),
        }
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        *offset += by;
    }

    fn offset(&self) -> Duration {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + self.offset()
    }

    fn unix_now(&self) -> u64 {
        self.base_unix + self.offset().as_secs()
    }
}

/// Formats Unix seconds the way ARM prints UTC times in token errors, e.g.
/// `5/1/2020 6:06:18 PM`.
pub(crate) fn fmt_arm_utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    let (h, min, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let (h12, ampm) = match h {
        0 => (12, "AM"),
        1..=11 => (h, "AM"),
        12 => (12, "PM"),
        _ => (h - 12, "PM"),
    };
    format!("{m}/{d}/{y} {h12}:{min:02}:{s:02} {ampm}")
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_utc_format_matches_azure_style() {
        // 2020-05-01T18:06:18Z
        assert_eq!(fmt_arm_utc(1_588_356_378), "5/1/2020 6:06:18 PM");
        assert_eq!(fmt_arm_utc(0), "1/1/1970 12:00:00 AM");
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let c = TokioClock::new();
        let (t0, u0) = (c.now(), c.unix_now());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(c.now().duration_since(t0), Duration::from_secs(5));
        assert_eq!(c.unix_now() - u0, 5);
    }

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let c = ManualClock::new(1000);
        let t0 = c.now();
        c.advance(Duration::from_secs(5));
        assert_eq!(c.now().duration_since(t0), Duration::from_secs(5));
        assert_eq!(c.unix_now(), 1005);
    }
}
