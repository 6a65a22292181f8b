//! Keeps `job_progress` fresh: at most one refresh at a time, never during a migration,
//! never blocking readers.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::{PgConnection, Row};

use crate::{
    db,
    deadline::Deadline,
    error::{Error, Result},
};

/// How a refresh behaves.
#[derive(Debug, Clone)]
pub struct RefreshSettings {
    /// Skip when the view was refreshed less than this long ago (absorbs duplicate deliveries).
    pub min_interval: Duration,
    /// statement_timeout; bounded by `deadline` too.
    pub statement_timeout: Option<Duration>,
    /// When the work must be finished.
    pub deadline: Deadline,
}

/// What a refresh did, as the handler and the CLI print it.
#[derive(Debug, Serialize)]
pub struct RefreshReport {
    /// `refreshed` or `skipped`.
    pub status: &'static str,
    /// Why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `concurrent` (readers not blocked) or `populate` (first fill of a never-populated view).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    /// Time spent in `refresh_job_progress()`.
    pub refresh_ms: u64,
    /// Wall time of the whole call.
    pub duration_ms: u64,
    /// Rows (jobs) in the view afterwards.
    pub jobs: Option<i64>,
    /// Seconds between the newest `job_objects.updated_at` the view reflected and now, before.
    pub staleness_before_s: Option<f64>,
    /// The same, after.
    pub staleness_after_s: Option<f64>,
    /// Seconds since the view was last refreshed, before this call.
    pub view_age_before_s: Option<f64>,
}

struct ViewState {
    populated: bool,
    jobs: i64,
    staleness_s: Option<f64>,
    age_s: Option<f64>,
}

async fn view_state(conn: &mut PgConnection) -> Result<ViewState> {
    let ctx = "reading the state of job_progress";
    let populated: Option<bool> =
        sqlx::query_scalar("SELECT relispopulated FROM pg_class WHERE oid = to_regclass('job_progress')")
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| Error::db(ctx, e))?;
    let Some(populated) = populated else {
        return Err(Error::Database {
            context: "refreshing job_progress".into(),
            cause: "the materialized view job_progress does not exist; run `migrate` first".into(),
        });
    };
    if !populated {
        return Ok(ViewState { populated, jobs: 0, staleness_s: None, age_s: None });
    }
    let row = sqlx::query(
        "SELECT count(*) AS jobs,
                extract(epoch FROM clock_timestamp() - max(last_object_update))::float8 AS staleness_s,
                extract(epoch FROM clock_timestamp() - max(refreshed_at))::float8 AS age_s
           FROM job_progress",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| Error::db(ctx, e))?;
    Ok(ViewState { populated, jobs: row.get("jobs"), staleness_s: row.get("staleness_s"), age_s: row.get("age_s") })
}

/// Refreshes `job_progress` through `refresh_job_progress()`, or says why it skipped.
pub async fn refresh(conn: &mut PgConnection, settings: &RefreshSettings) -> Result<RefreshReport> {
    let started = Instant::now();
    let before = view_state(conn).await?;
    let mut report = RefreshReport {
        status: "skipped",
        reason: None,
        mode: None,
        refresh_ms: 0,
        duration_ms: 0,
        jobs: before.populated.then_some(before.jobs),
        staleness_before_s: before.staleness_s,
        staleness_after_s: before.staleness_s,
        view_age_before_s: before.age_s,
    };
    if !db::try_lock(conn).await? {
        let holder = db::lock_holder(conn).await?.unwrap_or_else(|| "released just now".into());
        report.reason = Some(format!("a migration or another refresh holds the lock: {holder}"));
        tracing::info!(step = "refresh", skipped = true, "lock held elsewhere; skipping");
        report.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    }
    let outcome = locked(conn, settings, before, &mut report).await;
    let released = db::unlock(conn).await;
    outcome?;
    released?;
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

async fn locked(
    conn: &mut PgConnection,
    settings: &RefreshSettings,
    before: ViewState,
    report: &mut RefreshReport,
) -> Result<()> {
    // Re-read under the lock: a refresh that finished while we waited makes ours a duplicate.
    let before = if before.populated { view_state(conn).await? } else { before };
    if let Some(age) = before.age_s
        && age < settings.min_interval.as_secs_f64()
    {
        report.reason = Some(format!(
            "refreshed {age:.1} s ago, less than the minimum interval of {} s (REFRESH_MIN_INTERVAL_S)",
            settings.min_interval.as_secs_f64()
        ));
        return Ok(());
    }
    let timeout = settings.deadline.cap(settings.statement_timeout);
    db::set_timeout(conn, "statement_timeout", timeout).await?;
    let mode = if before.populated { "concurrent" } else { "populate" };
    tracing::info!(step = "refresh", mode, "refreshing job_progress");
    let started = Instant::now();
    let result = db::exec(conn, "SELECT refresh_job_progress()").await;
    report.refresh_ms = started.elapsed().as_millis() as u64;
    db::set_timeout(conn, "statement_timeout", None).await?;
    result.map_err(|e| Error::db("refresh_job_progress()", e))?;
    let after = view_state(conn).await?;
    report.status = "refreshed";
    report.mode = Some(mode);
    report.jobs = Some(after.jobs);
    report.staleness_after_s = after.staleness_s;
    Ok(())
}
