//! Client-side copies of ARM's per-subscription token buckets, one for writes and one for reads.
//!
//! ARM refills 10 write tokens a second up to 200 (reads: 25 a second up to 250) and answers 429
//! when a bucket is empty. A failover that updates hundreds of routes would otherwise burst into
//! 429s and then wait out `Retry-After`; pacing requests ourselves keeps every request useful.
//! (The benchmark at 100 tables / 500 routes measured it: with only writes paced, the GETs and
//! operation polls drew ~2950 answers of 429 and the failover took 53 s against the buckets' 30 s.)
//! Each bucket also follows `x-ms-ratelimit-remaining-subscription-writes` / `-reads`, because
//! other clients share the budget.

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Which waiter an empty bucket serves first: the higher, the sooner; arrival order within one.
///
/// A failover's writes are chains (the routes of one table go one after the other, each waiting
/// for the one before to finish), so a token is worth most to the chain with the most writes
/// still to go: a race between waiters hands tokens to whichever chain happens to be ready and
/// leaves a few long chains for the end (measured at 100 tables / 500 routes: the last tables'
/// last two routes came a second apart after the bucket had let everything else through).
pub type Priority = u32;

/// Ahead of every chain: the floating IP's NIC writes.
pub const FIRST: Priority = Priority::MAX;

/// A waiter's place in line: priority first (highest first), then arrival.
type Place = (Reverse<Priority>, u64);

#[derive(Debug)]
struct State {
    tokens: f64,
    at: Instant,
    line: BTreeSet<Place>,
    arrivals: u64,
}

impl State {
    /// Tokens now, counting the refill since the last look.
    fn refill(&mut self, now: Instant, burst: f64, refill_per_sec: f64) {
        self.tokens = (self.tokens
            + now.saturating_duration_since(self.at).as_secs_f64() * refill_per_sec)
            .min(burst);
        self.at = now;
    }
}

/// A token bucket (ARM's writes or reads).
#[derive(Debug)]
pub struct Budget {
    burst: f64,
    refill_per_sec: f64,
    state: Mutex<State>,
    /// Raised when the head of the line leaves it: the next one in line takes its place.
    moved: Notify,
}

/// What [`Budget::take_in_line`] found.
enum Turn {
    Taken,
    /// Head of the line: a token comes after this long.
    Head(Duration),
    /// Someone is ahead: wait for the line to move.
    Behind,
}

/// A place in line, left when dropped (a taken token, or a caller that gave up waiting).
struct InLine<'a> {
    budget: &'a Budget,
    place: Option<Place>,
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        if let Some(place) = self.place.take() {
            if let Some(mut state) = self.budget.lock() {
                state.line.remove(&place);
            }
            self.budget.moved.notify_waiters();
        }
    }
}

impl Budget {
    /// ARM's documented default for writes: 200, refilled at 10 per second.
    pub fn arm_writes() -> Self {
        Self::new(200, 10.0)
    }

    /// ARM's documented default for reads: 250, refilled at 25 per second.
    pub fn arm_reads() -> Self {
        Self::new(250, 25.0)
    }

    /// A bucket of `burst` tokens refilled at `refill_per_sec`.
    pub fn new(burst: u32, refill_per_sec: f64) -> Self {
        Self {
            burst: f64::from(burst),
            refill_per_sec,
            state: Mutex::new(State {
                tokens: f64::from(burst),
                at: Instant::now(),
                line: BTreeSet::new(),
                arrivals: 0,
            }),
            moved: Notify::new(),
        }
    }

    /// The state; a poisoned lock (a panic elsewhere) stops pacing rather than the failover.
    fn lock(&self) -> Option<MutexGuard<'_, State>> {
        self.state.lock().ok()
    }

    /// Take one token, waiting for the refill when the bucket is empty; while it is, waiters
    /// are served by `priority` (see [`Priority`]).
    pub async fn acquire(&self, priority: Priority) {
        let mut place = InLine {
            budget: self,
            place: None,
        };
        loop {
            // Registered before looking, so a move of the line between the look and the wait
            // still wakes this waiter.
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            match self.take_in_line(priority, &mut place, Instant::now()) {
                Turn::Taken => return,
                Turn::Head(wait) => tokio::time::sleep(wait).await,
                Turn::Behind => moved.await,
            }
        }
    }

    /// Take a token if it is `place`'s turn (joining the line first when the bucket is empty or
    /// others wait).
    fn take_in_line(&self, priority: Priority, place: &mut InLine<'_>, now: Instant) -> Turn {
        let Some(mut state) = self.lock() else {
            return Turn::Taken;
        };
        state.refill(now, self.burst, self.refill_per_sec);
        if place.place.is_none() {
            if state.line.is_empty() && state.tokens >= 1.0 {
                state.tokens -= 1.0;
                return Turn::Taken;
            }
            state.arrivals += 1;
            let joined = (Reverse(priority), state.arrivals);
            state.line.insert(joined);
            place.place = Some(joined);
        }
        if state.line.first() != place.place.as_ref() {
            return Turn::Behind;
        }
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            drop(state);
            // Leaving the line (InLine's drop) lets the next one in line look.
            return Turn::Taken;
        }
        Turn::Head(Duration::from_secs_f64(
            (1.0 - state.tokens) / self.refill_per_sec,
        ))
    }

    /// Take a token only if `reserve` more would be left and nobody waits: for reads that
    /// merely speed a wait up (watching a resource between operation polls), which must never
    /// cost the reads a failover needs or draw a 429.
    pub fn try_take_spare(&self, reserve: f64) -> bool {
        let Some(mut state) = self.lock() else {
            return false;
        };
        state.refill(Instant::now(), self.burst, self.refill_per_sec);
        if state.line.is_empty() && state.tokens >= reserve + 1.0 {
            state.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// ARM reported how many requests of this kind are left: never believe we have more.
    pub fn observe_remaining(&self, remaining: u32) {
        if let Some(mut state) = self.lock() {
            state.refill(Instant::now(), self.burst, self.refill_per_sec);
            state.tokens = state.tokens.min(f64::from(remaining));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One look at the bucket at `now` by a newcomer (who leaves the line again afterwards).
    fn look(budget: &Budget, priority: Priority, now: Instant) -> Option<Duration> {
        let mut place = InLine {
            budget,
            place: None,
        };
        match budget.take_in_line(priority, &mut place, now) {
            Turn::Taken => None,
            Turn::Head(wait) => Some(wait),
            Turn::Behind => Some(Duration::MAX),
        }
    }

    #[test]
    fn burst_then_refill_rate() {
        let budget = Budget::new(3, 10.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(look(&budget, 0, t0), None);
        }
        let wait = look(&budget, 0, t0).expect("empty bucket makes us wait");
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        assert_eq!(look(&budget, 0, t0 + Duration::from_millis(100)), None);
    }

    #[test]
    fn an_empty_bucket_serves_the_higher_priority_first() {
        let budget = Budget::new(1, 10.0);
        let t0 = Instant::now();
        assert_eq!(look(&budget, 0, t0), None, "the burst");
        let mut low = InLine {
            budget: &budget,
            place: None,
        };
        let mut high = InLine {
            budget: &budget,
            place: None,
        };
        assert!(matches!(
            budget.take_in_line(1, &mut low, t0),
            Turn::Head(_)
        ));
        assert!(matches!(
            budget.take_in_line(7, &mut high, t0),
            Turn::Head(_)
        ));
        let t1 = t0 + Duration::from_millis(100);
        assert!(
            matches!(budget.take_in_line(1, &mut low, t1), Turn::Behind),
            "came first, but a higher priority waits"
        );
        assert!(matches!(budget.take_in_line(7, &mut high, t1), Turn::Taken));
        drop(high);
        assert!(
            matches!(budget.take_in_line(1, &mut low, t1), Turn::Head(_)),
            "next in line once the token went"
        );
        assert_eq!(
            look(&budget, 0, t1 + Duration::from_millis(100)),
            Some(Duration::MAX),
            "a token is there, but a newcomer queues behind those who wait"
        );
    }

    #[tokio::test]
    async fn waiters_are_served_by_priority_then_arrival() {
        let budget = Budget::new(1, 20.0);
        budget.acquire(0).await;
        let order = Mutex::new(Vec::new());
        let waiter = |priority: Priority, name: &'static str| {
            let budget = &budget;
            let order = &order;
            async move {
                budget.acquire(priority).await;
                order.lock().expect("order").push(name);
            }
        };
        tokio::join!(
            waiter(1, "low"),
            waiter(5, "high, first"),
            waiter(3, "middle"),
            waiter(5, "high, second"),
        );
        assert_eq!(
            *order.lock().expect("order"),
            vec!["high, first", "high, second", "middle", "low"]
        );
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_the_line() {
        let budget = Budget::new(1, 20.0);
        budget.acquire(0).await;
        let gave_up = tokio::time::timeout(Duration::from_millis(5), budget.acquire(FIRST)).await;
        assert!(gave_up.is_err(), "the bucket was empty");
        tokio::time::timeout(Duration::from_secs(5), budget.acquire(0))
            .await
            .expect("the line moved on without the one that left");
    }

    #[test]
    fn spare_reads_leave_the_reserve() {
        let budget = Budget::new(5, 0.0);
        assert!(budget.try_take_spare(3.0));
        assert!(budget.try_take_spare(3.0));
        assert!(!budget.try_take_spare(3.0), "3 tokens left: the reserve");
        for _ in 0..3 {
            assert_eq!(
                look(&budget, 0, Instant::now()),
                None,
                "the reserve is still there"
            );
        }
    }

    #[test]
    fn follows_the_servers_remaining_count() {
        let budget = Budget::new(200, 10.0);
        budget.observe_remaining(0);
        assert!(look(&budget, 0, Instant::now()).is_some());
    }
}
