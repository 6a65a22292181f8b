//! The one owner of "how much time is left": the Lambda invocation's deadline (less a margin
//! for answering), or none on the command line. Every timeout, wait and retry is cut by it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// When the work must be finished, or no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Deadline(Option<Instant>);

/// The part of the invocation kept back for closing the connection and sending the answer.
fn answer_margin(total: Duration) -> Duration {
    (total / 10).clamp(Duration::from_secs(1), Duration::from_secs(5))
}

impl Deadline {
    /// No deadline (the command line).
    pub const NONE: Deadline = Deadline(None);

    /// Work must be finished at `at`.
    pub fn at(at: Instant) -> Self {
        Deadline(Some(at))
    }

    /// Work must be finished `d` from now.
    pub fn after(d: Duration) -> Self {
        Deadline(Some(Instant::now() + d))
    }

    /// From Lambda's deadline (milliseconds since the epoch), less a margin so that PostgreSQL
    /// cancels our work and the answer still reaches the Runtime API in time.
    pub fn from_lambda_epoch_ms(deadline_ms: u64) -> Self {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let total = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
        Deadline::after(total.saturating_sub(answer_margin(total)))
    }

    /// Time left; `None` when there is no deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.0.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether at least `d` is left (always true without a deadline).
    pub fn has(&self, d: Duration) -> bool {
        self.remaining().is_none_or(|r| r >= d)
    }

    /// `min(configured, time left)`; `None` (no limit) only when both are unlimited.
    pub fn cap(&self, configured: Option<Duration>) -> Option<Duration> {
        match (configured, self.remaining()) {
            (Some(c), Some(r)) => Some(c.min(r)),
            (c, r) => c.or(r),
        }
    }

    /// A wait of `d`, shortened to the time left.
    pub fn cap_wait(&self, d: Duration) -> Duration {
        self.remaining().map_or(d, |r| d.min(r))
    }

    /// Whether the deadline, not the configured limit, is what `cap(configured)` returns now.
    pub fn binds(&self, configured: Option<Duration>) -> bool {
        match (configured, self.remaining()) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(c), Some(r)) => r <= c,
        }
    }

    /// The same deadline, or `fallback` from now when there is none (for waits that need a bound).
    pub fn or_after(&self, fallback: Duration) -> Instant {
        self.0.unwrap_or_else(|| Instant::now() + fallback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_deadline_caps_nothing() {
        let d = Deadline::NONE;
        assert_eq!(d.remaining(), None);
        assert_eq!(d.cap(None), None);
        assert_eq!(d.cap(Some(Duration::from_secs(3))), Some(Duration::from_secs(3)));
        assert!(d.has(Duration::from_secs(1_000_000)));
        assert!(!d.binds(Some(Duration::from_secs(1))));
    }

    #[test]
    fn a_deadline_caps_timeouts_and_waits() {
        let d = Deadline::after(Duration::from_secs(10));
        let cap = d.cap(Some(Duration::from_secs(60))).unwrap();
        assert!(cap <= Duration::from_secs(10) && cap > Duration::from_secs(9), "{cap:?}");
        assert_eq!(d.cap(Some(Duration::from_secs(2))), Some(Duration::from_secs(2)));
        assert!(d.cap(None).unwrap() <= Duration::from_secs(10));
        assert!(d.binds(Some(Duration::from_secs(60))) && !d.binds(Some(Duration::from_secs(2))));
        assert!(d.has(Duration::from_secs(5)) && !d.has(Duration::from_secs(11)));
        assert!(d.cap_wait(Duration::from_secs(30)) <= Duration::from_secs(10));
    }

    #[test]
    fn a_past_deadline_leaves_nothing() {
        let d = Deadline::at(Instant::now() - Duration::from_secs(1));
        assert_eq!(d.remaining(), Some(Duration::ZERO));
        assert_eq!(d.cap(Some(Duration::from_secs(5))), Some(Duration::ZERO));
        assert!(!d.has(Duration::from_millis(1)));
    }

    #[test]
    fn lambda_deadlines_keep_a_margin_for_the_answer() {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        // 3 s invocation: 1 s margin at least.
        let left = Deadline::from_lambda_epoch_ms(now_ms + 3_000).remaining().unwrap();
        assert!(left <= Duration::from_secs(2) && left > Duration::from_millis(1_800), "{left:?}");
        // 15 minutes: 5 s margin at most.
        let left = Deadline::from_lambda_epoch_ms(now_ms + 900_000).remaining().unwrap();
        assert!(left <= Duration::from_secs(895) && left > Duration::from_secs(894), "{left:?}");
        assert_eq!(Deadline::from_lambda_epoch_ms(now_ms.saturating_sub(10)).remaining(), Some(Duration::ZERO));
    }
}
