//! ARM's per-subscription request throttling as token buckets.
//!
//! ARM meters reads and writes separately per subscription and reports what is left in
//! `x-ms-ratelimit-remaining-subscription-reads` / `-writes` on every response; an empty
//! bucket answers 429 `SubscriptionRequestsThrottled` with `Retry-After`.

use crate::config::ThrottleLimits;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// A classic token bucket refilled continuously.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    capacity: f64,
    refill_per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(capacity: u32, refill_per_sec: f64, now: Instant) -> Self {
        Self {
            capacity: f64::from(capacity),
            refill_per_sec,
            tokens: f64::from(capacity),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.refill_per_sec).min(self.capacity);
        self.last = now;
    }

    /// Takes a token, or says how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if self.refill_per_sec <= 0.0 {
            Err(Duration::from_secs(3600))
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.refill_per_sec,
            ))
        }
    }

    /// Whole tokens left.
    pub fn remaining(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.tokens.floor().max(0.0) as u64
    }
}

/// Read or write metering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Meter {
    Read,
    Write,
}

impl Meter {
    /// Reads are GET/HEAD; everything else is a write (as ARM counts them).
    pub fn for_method(method: &str) -> Self {
        match method {
            "GET" | "HEAD" => Meter::Read,
            _ => Meter::Write,
        }
    }

    /// Header carrying what is left for this meter.
    pub fn header(self) -> &'static str {
        match self {
            Meter::Read => "x-ms-ratelimit-remaining-subscription-reads",
            Meter::Write => "x-ms-ratelimit-remaining-subscription-writes",
        }
    }

    /// How ARM names the request kind in throttling messages.
    pub fn word(self) -> &'static str {
        match self {
            Meter::Read => "read",
            Meter::Write => "write",
        }
    }
}

/// Buckets per (lower-cased) subscription.
#[derive(Debug)]
pub(crate) struct Throttle {
    limits: ThrottleLimits,
    buckets: BTreeMap<String, (TokenBucket, TokenBucket)>,
}

impl Throttle {
    pub fn new(limits: ThrottleLimits) -> Self {
        Self {
            limits,
            buckets: BTreeMap::new(),
        }
    }

    /// Replaces the limits and refills every bucket.
    pub fn set_limits(&mut self, limits: ThrottleLimits) {
        self.limits = limits;
        self.buckets.clear();
    }

    fn bucket(&mut self, sub: &str, meter: Meter, now: Instant) -> &mut TokenBucket {
        let l = self.limits;
        let pair = self
            .buckets
            .entry(sub.to_ascii_lowercase())
            .or_insert_with(|| {
                (
                    TokenBucket::new(l.read_burst, l.read_refill_per_sec, now),
                    TokenBucket::new(l.write_burst, l.write_refill_per_sec, now),
                )
            });
        match meter {
            Meter::Read => &mut pair.0,
            Meter::Write => &mut pair.1,
        }
    }

    /// Meters one request.
    pub fn take(&mut self, sub: &str, meter: Meter, now: Instant) -> Result<(), Duration> {
        self.bucket(sub, meter, now).try_take(now)
    }

    /// Tokens left, for the rate-limit header.
    pub fn remaining(&mut self, sub: &str, meter: Meter, now: Instant) -> u64 {
        self.bucket(sub, meter, now).remaining(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_empties_and_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, 10.0, t0);
        assert!(b.try_take(t0).is_ok());
        assert!(b.try_take(t0).is_ok());
        let wait = b.try_take(t0).expect_err("empty");
        assert!(wait <= Duration::from_millis(100));
        assert!(b.try_take(t0 + Duration::from_millis(100)).is_ok());
        assert_eq!(b.remaining(t0 + Duration::from_secs(10)), 2);
    }
}
