//! Keeps `job_progress` current: at most one refresh at a time, never during a migration,
//! never blocking readers.
//!
//! From migration 003 on, `job_progress` is exact at every read and `refresh_job_progress()`
//! folds the delta log into the counts, returning a jsonb report: the refresh needs nothing but
//! EXECUTE on that function (and the advisory lock functions every role may call). On a database
//! still at 002 (the function returns VOID), it refreshes the materialized view as before.

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
    /// `incremental` (003: the delta log folded into the counts), `concurrent` (002: readers not
    /// blocked) or `populate` (002: first fill of a never-populated view).
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
    /// 003: why the staleness is 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub staleness: Option<&'static str>,
    /// 003: delta rows folded into the counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta_rows: Option<i64>,
    /// 003: jobs whose counts the fold changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs_touched: Option<i64>,
    /// 003: time the fold took inside the database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fold_ms: Option<f64>,
    /// 003: delta rows left in the log afterwards (appended by writers meanwhile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_after: Option<i64>,
}

/// What `staleness` says from 003 on.
pub const EXACT: &str = "0 by construction: job_progress reads the folded counts plus the deltas not yet folded, \
                         so every read is exact whether or not a refresh ran";

/// Which `refresh_job_progress()` the database has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// 003 and later: folds the delta log, returns a jsonb report.
    Incremental,
    /// 002: refreshes the materialized view, returns VOID.
    MaterializedView,
}

/// Reads the function's result type from the catalog (readable by every role).
async fn kind(conn: &mut PgConnection) -> Result<Kind> {
    let result: Option<String> = sqlx::query_scalar(
        "SELECT p.prorettype::regtype::text FROM pg_proc AS p WHERE p.oid = to_regprocedure('refresh_job_progress()')",
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| Error::db("looking up refresh_job_progress()", e))?;
    match result.as_deref() {
        Some("jsonb") => Ok(Kind::Incremental),
        Some(_) => Ok(Kind::MaterializedView),
        None => Err(Error::Database {
            context: "refreshing job_progress".into(),
            cause: "the function refresh_job_progress() does not exist; run `migrate` first".into(),
        }),
    }
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
    match kind(conn).await? {
        Kind::Incremental => fold(conn, settings).await,
        Kind::MaterializedView => refresh_view(conn, settings).await,
    }
}

fn skipped_report() -> RefreshReport {
    RefreshReport {
        status: "skipped",
        reason: None,
        mode: None,
        refresh_ms: 0,
        duration_ms: 0,
        jobs: None,
        staleness_before_s: None,
        staleness_after_s: None,
        view_age_before_s: None,
        staleness: None,
        delta_rows: None,
        jobs_touched: None,
        fold_ms: None,
        pending_after: None,
    }
}

/// Takes the advisory lock or fills in why not.
async fn lock_or_skip(conn: &mut PgConnection, report: &mut RefreshReport, started: Instant) -> Result<bool> {
    if db::try_lock(conn).await? {
        return Ok(true);
    }
    let holder = db::lock_holder(conn).await?.unwrap_or_else(|| "released just now".into());
    report.reason = Some(format!("a migration or another refresh holds the lock: {holder}"));
    tracing::info!(step = "refresh", skipped = true, "lock held elsewhere; skipping");
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(false)
}

/// The fold's report, as `refresh_job_progress()` returns it.
#[derive(Debug, serde::Deserialize)]
struct Folded {
    delta_rows: i64,
    jobs_touched: i64,
    fold_ms: f64,
    pending_after: i64,
    jobs: Option<i64>,
}

/// 003: folds the delta log. No minimum interval: the fold costs what changed, so a duplicate
/// delivery folds nothing and costs nothing.
async fn fold(conn: &mut PgConnection, settings: &RefreshSettings) -> Result<RefreshReport> {
    let started = Instant::now();
    let mut report = skipped_report();
    report.staleness_before_s = Some(0.0);
    report.staleness_after_s = Some(0.0);
    report.staleness = Some(EXACT);
    if !lock_or_skip(conn, &mut report, started).await? {
        return Ok(report);
    }
    // A rollback to 002 may have finished between the look-up and the lock.
    let now = kind(conn).await;
    if !matches!(now, Ok(Kind::Incremental)) {
        db::unlock(conn).await?;
        now?;
        return refresh_view(conn, settings).await;
    }
    let outcome = async {
        let timeout = settings.deadline.cap(settings.statement_timeout);
        db::set_timeout(conn, "statement_timeout", timeout).await?;
        tracing::info!(step = "refresh", mode = "incremental", "folding the job_progress delta log");
        let t = Instant::now();
        let result = sqlx::query_scalar::<_, String>("SELECT refresh_job_progress()::text").fetch_one(&mut *conn).await;
        report.refresh_ms = t.elapsed().as_millis() as u64;
        db::set_timeout(conn, "statement_timeout", None).await?;
        let text = result.map_err(|e| Error::db("refresh_job_progress()", e))?;
        let folded: Folded = serde_json::from_str(&text).map_err(|e| Error::Database {
            context: "reading what refresh_job_progress() returned".into(),
            cause: format!("{e}: {text}"),
        })?;
        report.status = "refreshed";
        report.mode = Some("incremental");
        report.jobs = folded.jobs;
        report.delta_rows = Some(folded.delta_rows);
        report.jobs_touched = Some(folded.jobs_touched);
        report.fold_ms = Some(folded.fold_ms);
        report.pending_after = Some(folded.pending_after);
        tracing::info!(
            step = "refresh",
            delta_rows = folded.delta_rows,
            jobs_touched = folded.jobs_touched,
            fold_ms = folded.fold_ms,
            "folded"
        );
        Ok::<(), Error>(())
    }
    .await;
    let released = db::unlock(conn).await;
    outcome?;
    released?;
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// 002: refreshes the materialized view (CONCURRENTLY once populated).
async fn refresh_view(conn: &mut PgConnection, settings: &RefreshSettings) -> Result<RefreshReport> {
    let started = Instant::now();
    let before = view_state(conn).await?;
    let mut report = RefreshReport {
        jobs: before.populated.then_some(before.jobs),
        staleness_before_s: before.staleness_s,
        staleness_after_s: before.staleness_s,
        view_age_before_s: before.age_s,
        ..skipped_report()
    };
    if !lock_or_skip(conn, &mut report, started).await? {
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
