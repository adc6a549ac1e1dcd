//! A periodic clock on a kernel timer (timerfd): the daemon wakes once per period, and pollers
//! that share a period can share the wake (`Ticker::in_phase`).
//!
//! tokio's timer wheel files a timer more than 64 ms away in a coarse slot and wakes the thread
//! at that slot's start to refile it, then again at the deadline: two wakes per 200 ms keepalive,
//! and three or four for a 5 s poll (measured in docs/bench.md). A kernel interval timer read
//! through the reactor wakes exactly at each period. The keepalive sender and the daemon's
//! periodic polls (health, scheduled maintenance) run on it. Should the kernel refuse one (no file
//! descriptor left), the ticker falls back to tokio's interval: slower to idle, never silent.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::{Interval, MissedTickBehavior};

/// Ticks every period, first one period after creation.
pub struct Ticker {
    period: Duration,
    clock: Clock,
}

enum Clock {
    Kernel(AsyncFd<PeriodicFd>),
    Tokio(Interval),
}

/// The timerfd, seen by the reactor through its raw descriptor.
struct PeriodicFd(TimerFd);

impl AsRawFd for PeriodicFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// The monotonic clock (the timerfd's clock) as a duration since its zero.
fn monotonic_now() -> io::Result<Duration> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)?;
    Ok(Duration::from(now))
}

/// The next multiple of `period` on the monotonic clock after `now`.
fn next_multiple(now: Duration, period: Duration) -> Duration {
    let period_ns = period.as_nanos().max(1);
    let next = (now.as_nanos() / period_ns + 1) * period_ns;
    Duration::from_nanos(u64::try_from(next).unwrap_or(u64::MAX))
}

/// When the first tick comes.
#[derive(Clone, Copy)]
enum Start {
    /// One period from now.
    Period,
    /// At the next multiple of the period on the monotonic clock (see [`Ticker::in_phase`]).
    InPhase,
}

fn kernel_timer(period: Duration, start: Start) -> io::Result<AsyncFd<PeriodicFd>> {
    let fd = TimerFd::new(
        ClockId::CLOCK_MONOTONIC,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )?;
    match start {
        Start::Period => fd.set(
            Expiration::Interval(TimeSpec::from_duration(period)),
            TimerSetTimeFlags::empty(),
        )?,
        Start::InPhase => fd.set(
            Expiration::IntervalDelayed(
                TimeSpec::from_duration(next_multiple(monotonic_now()?, period)),
                TimeSpec::from_duration(period),
            ),
            TimerSetTimeFlags::TFD_TIMER_ABSTIME,
        )?,
    }
    // tokio deprecated this constructor because a general `AsRawFd` value may close or swap its
    // descriptor while registered. `PeriodicFd` owns its timerfd (an `OwnedFd` inside nix's
    // `TimerFd`) and neither closes nor replaces it until dropped, and `AsyncFd` deregisters
    // before dropping it: the condition tokio's `register_with_interest` asks callers to uphold.
    #[allow(deprecated)]
    AsyncFd::with_interest(PeriodicFd(fd), Interest::READABLE)
}

fn tokio_clock(period: Duration, start: Start) -> Clock {
    let first = match (start, monotonic_now()) {
        (Start::InPhase, Ok(now)) => next_multiple(now, period).saturating_sub(now),
        _ => period,
    };
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + first, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    Clock::Tokio(interval)
}

impl Ticker {
    /// A ticker for `period` (must be non-zero: the config keeps every period >= 10 ms).
    pub fn new(period: Duration) -> Ticker {
        Ticker::start(period, Start::Period)
    }

    /// A ticker whose ticks fall on multiples of `period` on the monotonic clock: periodic
    /// polls with the same period (or multiples of each other) then wake the daemon together,
    /// once, instead of each at its own phase.
    pub fn in_phase(period: Duration) -> Ticker {
        Ticker::start(period, Start::InPhase)
    }

    fn start(period: Duration, start: Start) -> Ticker {
        let clock = match kernel_timer(period, start) {
            Ok(fd) => Clock::Kernel(fd),
            Err(e) => {
                tracing::warn!("no kernel timer ({e}); using tokio's clock");
                tokio_clock(period, start)
            }
        };
        Ticker { period, clock }
    }

    /// Moves the next tick to `after` from now; later ticks follow one period apart.
    pub fn rearm(&mut self, after: Duration) {
        if let Clock::Kernel(fd) = &self.clock {
            let set = fd.get_ref().0.set(
                Expiration::IntervalDelayed(
                    TimeSpec::from_duration(after),
                    TimeSpec::from_duration(self.period),
                ),
                TimerSetTimeFlags::empty(),
            );
            match set {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!("keepalive timer could not be re-armed ({e}); using tokio's")
                }
            }
            self.clock = tokio_clock(self.period, Start::Period);
        }
        if let Clock::Tokio(interval) = &mut self.clock {
            interval.reset_at(tokio::time::Instant::now() + after);
        }
    }

    /// Waits for the next period. Periods missed while the task was busy collapse into one tick:
    /// a late keepalive is sent once, not in a burst.
    pub async fn tick(&mut self) {
        match &mut self.clock {
            Clock::Tokio(interval) => {
                interval.tick().await;
            }
            Clock::Kernel(fd) => loop {
                let mut ready = match fd.readable().await {
                    Ok(ready) => ready,
                    Err(e) => {
                        // The reactor dropped the descriptor: tick on tokio's clock from now on.
                        tracing::warn!("kernel timer failed ({e}); using tokio's clock");
                        self.clock = tokio_clock(self.period, Start::Period);
                        return;
                    }
                };
                // One read takes every expiry so far: the timer is drained, so readiness is
                // cleared now rather than by a read that would fail next tick. WouldBlock is a
                // spurious wake.
                match ready.try_io(|inner| inner.get_ref().0.wait().map_err(io::Error::from)) {
                    Ok(_) => {
                        ready.clear_ready();
                        return;
                    }
                    Err(_would_block) => continue,
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn ticks_once_per_period_and_collapses_missed_ones() {
        let period = Duration::from_millis(100);
        let mut ticker = Ticker::new(period);
        assert!(
            matches!(ticker.clock, Clock::Kernel(_)),
            "a timerfd on Linux"
        );
        let started = std::time::Instant::now();
        ticker.tick().await;
        assert!(
            started.elapsed() >= period,
            "the first tick is one period out"
        );
        // Busy for five periods: the next tick comes at once, and only one.
        std::thread::sleep(period * 5);
        let late = std::time::Instant::now();
        ticker.tick().await;
        assert!(late.elapsed() < period, "a missed period ticks at once");
        let after = std::time::Instant::now();
        ticker.tick().await;
        assert!(
            after.elapsed() >= period / 2,
            "missed periods collapse into one tick, not a burst"
        );
    }

    #[test]
    fn next_multiple_is_strictly_after_now() {
        let period = Duration::from_secs(5);
        assert_eq!(
            next_multiple(Duration::from_millis(12_300), period),
            Duration::from_secs(15)
        );
        assert_eq!(
            next_multiple(Duration::from_secs(15), period),
            Duration::from_secs(20)
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn in_phase_tickers_tick_on_the_same_multiple() {
        let period = Duration::from_millis(400);
        // Just past a multiple, so both tickers are created well before the next one.
        let now = monotonic_now().expect("clock");
        std::thread::sleep(next_multiple(now, period).saturating_sub(now) + period / 40);
        let mut first = Ticker::in_phase(period);
        // The second is created 150 ms later, before the first's tick: the two still tick
        // together (two tickers of `new` would tick 150 ms apart).
        std::thread::sleep(Duration::from_millis(150));
        let mut second = Ticker::in_phase(period);
        first.tick().await;
        let at = monotonic_now().expect("clock");
        second.tick().await;
        let gap = monotonic_now().expect("clock").saturating_sub(at);
        assert!(
            gap < Duration::from_millis(60),
            "the second ticked with the first, not at its own phase: {gap:?} later"
        );
        let phase =
            Duration::from_nanos(u64::try_from(at.as_nanos() % period.as_nanos()).expect("fits"));
        assert!(
            phase < Duration::from_millis(60),
            "on a multiple of the period: {phase:?} past one"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn rearm_moves_the_next_tick_and_keeps_the_period() {
        let period = Duration::from_millis(100);
        let mut ticker = Ticker::new(period);
        // Re-armed to 300 ms: no tick at 100 or 200 ms.
        let started = std::time::Instant::now();
        ticker.rearm(period * 3);
        ticker.tick().await;
        assert!(
            started.elapsed() >= period * 3,
            "the re-armed tick, not the old one"
        );
        let next = std::time::Instant::now();
        ticker.tick().await;
        let gap = next.elapsed();
        assert!(
            gap >= period * 9 / 10,
            "then one period apart, not at once: {gap:?}"
        );
    }
}
