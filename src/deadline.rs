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

    /// A deadline `d` earlier (not before now), keeping `d` of the time for a step after the work.
    pub fn keep_back(&self, d: Duration) -> Self {
        Deadline(self.0.map(|at| at.checked_sub(d).unwrap_or(at).max(Instant::now().min(at))))
    }

    /// The same deadline, or `fallback` from now when there is none (for waits that need a bound).
    pub fn or_after(&self, fallback: Duration) -> Instant {
        self.0.unwrap_or_else(|| Instant::now() + fallback)
    }
}

/// A wait that was cut short: how long it lasted, and whether the deadline (not its own limit) ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// How long it waited.
    pub waited: Duration,
    /// The invocation's time ran out first.
    pub by_deadline: bool,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.waited.as_secs_f64();
        if secs < 1.0 {
            write!(f, "within {} ms", self.waited.as_millis())
        } else if secs.fract() == 0.0 {
            write!(f, "within {secs} s")
        } else {
            write!(f, "within {secs:.1} s")
        }?;
        if self.by_deadline { write!(f, " (the invocation's time left)") } else { Ok(()) }
    }
}

impl Deadline {
    /// Runs `work` for at most `min(limit, time left)` (network waits: a connect, an AWS call),
    /// so that what did not answer is named instead of the whole invocation running out.
    pub async fn within<T>(
        &self,
        limit: Option<Duration>,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, Cut> {
        let Some(wait) = self.cap(limit) else { return Ok(work.await) };
        let cut = Cut { waited: wait, by_deadline: self.binds(limit) };
        tokio::time::timeout(wait, work).await.map_err(|_| cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_network_wait_is_cut_to_the_time_left_and_says_which_limit_ended_it() {
        let never = std::future::pending::<()>;
        let cut = Deadline::after(Duration::from_millis(50)).within(Some(Duration::from_secs(10)), never()).await;
        let cut = cut.unwrap_err();
        assert!(cut.by_deadline && cut.waited <= Duration::from_millis(50), "{cut:?}");
        assert!(cut.to_string().ends_with(" ms (the invocation's time left)"), "{cut}");
        let own = Deadline::NONE.within(Some(Duration::from_millis(20)), never()).await.unwrap_err();
        assert_eq!(own.to_string(), "within 20 ms");
        assert_eq!(Cut { waited: Duration::from_secs(1), by_deadline: false }.to_string(), "within 1 s");
        assert_eq!(Deadline::after(Duration::from_secs(5)).within(None, async { 7 }).await, Ok(7));
    }

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
    fn keeping_time_back_moves_the_deadline_earlier_but_not_into_the_past() {
        let d = Deadline::after(Duration::from_secs(10));
        let kept = d.keep_back(Duration::from_secs(2)).remaining().unwrap();
        assert!(kept <= Duration::from_secs(8) && kept > Duration::from_secs(7), "{kept:?}");
        assert_eq!(
            Deadline::after(Duration::from_secs(1)).keep_back(Duration::from_secs(5)).remaining(),
            Some(Duration::ZERO)
        );
        assert_eq!(Deadline::NONE.keep_back(Duration::from_secs(5)), Deadline::NONE);
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
