//! Work that outlasts an invocation. An index build that cannot finish before the deadline is
//! started on a session of its own, which takes the migration lock itself and runs the build with
//! no `statement_timeout` and no `client_connection_check_interval`: PostgreSQL finishes it after
//! the function has answered (a backend notices a vanished client only when it writes to it, at
//! the statement's end). The session then ends and the lock goes with it: the client closes it
//! when it is still there, `idle_session_timeout` (14+) ends it when the client is frozen, and on
//! 13 the next run ends our idle detached session ([`end_if_finished`]).
//!
//! [`InProgress`] is the one shape of the `in_progress` answer, whoever gives it.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::{Connection, PgConnection, Row, postgres::PgConnectOptions};

use crate::{
    db::{self, LOCK_KEY},
    deadline::Deadline,
    error::{Error, Result, cause_chain},
};

/// What every detached session's `application_name` starts with.
pub const APP_PREFIX: &str = "scanner-migrator detached ";

/// How long a detached session stays once its statement is done and its client is frozen (14+).
const IDLE_SESSION_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a detached session connects: the command's own connection options (password included,
/// so never printed).
#[derive(Clone)]
pub struct DetachTo(pub PgConnectOptions);

impl std::fmt::Debug for DetachTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DetachTo(..)")
    }
}

/// The `in_progress` answer: what runs detached, how far it got, and what happens next.
#[derive(Debug, Clone, Serialize)]
pub struct InProgress {
    /// The migration whose statement runs (`002_optimize_for_scale`, or its version when unknown).
    pub migration: String,
    /// The statement, on one line.
    pub statement: String,
    /// The index it builds.
    pub index: String,
    /// The backend running it.
    pub pid: i32,
    /// When it started (UTC).
    pub since: String,
    /// How long it has run, in seconds.
    pub running_s: f64,
    /// `pg_stat_progress_create_index.phase` (`building index: scanning table`, `waiting for old snapshots`).
    pub phase: String,
    /// Blocks done in the current phase.
    pub blocks_done: i64,
    /// Blocks of the current phase.
    pub blocks_total: i64,
    /// Tuples done in the current phase.
    pub tuples_done: i64,
    /// Tuples of the current phase.
    pub tuples_total: i64,
    /// How far the current phase is, 0-100, when PostgreSQL counts it.
    pub percent: Option<f64>,
    /// Rows per second so far (the table's row estimate times the share done, over the time run).
    pub rows_per_s: Option<f64>,
    /// Seconds left at the rate so far, for the current phase.
    pub eta_s: Option<f64>,
    /// INVALID indexes of earlier, interrupted builds that this run dropped before starting again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repaired: Vec<String>,
    /// The whole of it as a sentence (Terraform prints it).
    pub message: String,
}

/// The session name of a detached build: `scanner-migrator detached 002 idx_…` (at most 63 bytes).
pub fn app_name(version: i64, index: &str) -> String {
    let name = format!("{APP_PREFIX}{version:03} {}", index.trim_matches('"'));
    let mut end = name.len().min(63);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

/// A detached session of ours, as `pg_stat_activity` shows it.
#[derive(Debug, Clone)]
pub struct Session {
    /// Its backend.
    pub pid: i32,
    /// `active` while the statement runs; `idle` once it is done.
    pub active: bool,
    /// Whether it holds the migration lock.
    pub holds_lock: bool,
    /// What it runs, with its progress.
    pub progress: InProgress,
}

/// The share done, rows per second and seconds left of a build's current phase, at the rate so far.
pub fn rates(
    phase: &str,
    blocks: (i64, i64),
    tuples: (i64, i64),
    running_s: f64,
    rows_estimate: f64,
) -> (Option<f64>, Option<f64>, Option<f64>) {
    let share = |(done, total): (i64, i64)| (total > 0).then(|| (done as f64 / total as f64).clamp(0.0, 1.0));
    let (fraction, by_blocks) = if phase.contains("scanning table") && blocks.1 > 0 {
        (share(blocks), true)
    } else if tuples.1 > 0 {
        (share(tuples), false)
    } else {
        (share(blocks), true)
    };
    let Some(fraction) = fraction else { return (None, None, None) };
    let rows_done = if by_blocks { fraction * rows_estimate } else { tuples.0 as f64 };
    let rows_per_s = (running_s > 0.0 && rows_done > 0.0).then(|| rows_done / running_s);
    let eta_s = (fraction > 0.0).then(|| running_s * (1.0 - fraction) / fraction);
    (Some(fraction * 100.0), rows_per_s, eta_s)
}

fn sentence(p: &InProgress) -> String {
    let how_far = match (p.percent, p.eta_s) {
        (Some(pc), Some(eta)) => format!("{pc:.1}% of this phase, about {eta:.0} s left at the rate so far"),
        (Some(pc), None) => format!("{pc:.1}% of this phase"),
        _ => "no count yet for this phase".to_string(),
    };
    format!(
        "migration {} builds index {} in the database (backend pid {}, since {}, {:.0} s): phase '{}', {how_far}. It \
         continues without anyone: the next migrate (a new invocation, or the next terraform apply) waits for it \
         and then finishes the migration; status shows its progress{}",
        p.migration,
        p.index,
        p.pid,
        p.since,
        p.running_s,
        p.phase,
        if p.repaired.is_empty() {
            String::new()
        } else {
            format!(". Dropped first, left INVALID by an interrupted build: {}", p.repaired.join(", "))
        }
    )
}

/// Our detached session in this database, if there is one (the oldest).
pub async fn find(conn: &mut PgConnection, label: impl Fn(i64) -> String) -> Result<Option<Session>> {
    let row = sqlx::query(
        "SELECT a.pid, a.application_name AS app, a.state, a.query,
                to_char(a.query_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS since,
                extract(epoch FROM clock_timestamp() - a.query_start)::float8 AS running_s,
                p.phase, p.blocks_done, p.blocks_total, p.tuples_done, p.tuples_total,
                (SELECT greatest(c.reltuples, 0)::float8 FROM pg_class AS c WHERE c.oid = p.relid) AS rows,
                EXISTS (SELECT 1 FROM pg_locks AS l
                         WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted
                           AND l.classid = $1::oid AND l.objid = $2::oid AND l.objsubid = 2) AS holds_lock
           FROM pg_stat_activity AS a
           LEFT JOIN pg_stat_progress_create_index AS p ON p.pid = a.pid
          WHERE a.datname = current_database() AND a.usename = current_user
            AND a.application_name LIKE $3 AND a.pid <> pg_backend_pid()
          ORDER BY a.backend_start
          LIMIT 1",
    )
    .bind(i64::from(LOCK_KEY.0))
    .bind(i64::from(LOCK_KEY.1))
    .bind(format!("{APP_PREFIX}%"))
    .fetch_optional(conn)
    .await
    .map_err(|e| Error::db("looking for a detached build", e))?;
    let Some(r) = row else { return Ok(None) };
    let app: String = r.try_get("app").unwrap_or_default();
    let (version, index) = app.trim_start_matches(APP_PREFIX).split_once(' ').unwrap_or(("", ""));
    let migration = version.parse::<i64>().map(&label).unwrap_or_else(|_| version.to_string());
    let phase: Option<String> = r.try_get("phase").ok().flatten();
    let get = |c: &str| r.try_get::<Option<i64>, _>(c).ok().flatten().unwrap_or(0);
    let (blocks, tuples) = ((get("blocks_done"), get("blocks_total")), (get("tuples_done"), get("tuples_total")));
    let running_s: f64 = r.try_get::<Option<f64>, _>("running_s").ok().flatten().unwrap_or(0.0);
    let rows: f64 = r.try_get::<Option<f64>, _>("rows").ok().flatten().unwrap_or(0.0);
    let phase = phase.unwrap_or_else(|| "starting".into());
    let (percent, rows_per_s, eta_s) = rates(&phase, blocks, tuples, running_s, rows);
    let state: Option<String> = r.try_get("state").ok().flatten();
    let query: Option<String> = r.try_get("query").ok().flatten();
    let mut progress = InProgress {
        migration,
        statement: query.unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" "),
        index: index.to_string(),
        pid: r.try_get("pid").unwrap_or_default(),
        since: r.try_get::<Option<String>, _>("since").ok().flatten().unwrap_or_default(),
        running_s: (running_s * 10.0).round() / 10.0,
        phase,
        blocks_done: blocks.0,
        blocks_total: blocks.1,
        tuples_done: tuples.0,
        tuples_total: tuples.1,
        percent: percent.map(|p| (p * 10.0).round() / 10.0),
        rows_per_s: rows_per_s.map(f64::round),
        eta_s: eta_s.map(f64::round),
        repaired: Vec::new(),
        message: String::new(),
    };
    progress.message = sentence(&progress);
    Ok(Some(Session {
        pid: progress.pid,
        active: state.as_deref() == Some("active"),
        holds_lock: r.try_get("holds_lock").unwrap_or(false),
        progress,
    }))
}

/// Ends our detached session whose statement is done but which still holds the migration lock
/// (PostgreSQL 13 has no `idle_session_timeout`; on 14+ a frozen client's session lingers for it).
/// Returns whether it ended one.
pub async fn end_if_finished(conn: &mut PgConnection, session: &Session) -> Result<bool> {
    if session.active || !session.holds_lock {
        return Ok(false);
    }
    tracing::info!(step = "detached", pid = session.pid, "our detached build is done; ending its idle session");
    sqlx::query_scalar::<_, bool>(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE pid = $1 AND state LIKE 'idle%' AND application_name LIKE $2",
    )
    .bind(session.pid)
    .bind(format!("{APP_PREFIX}%"))
    .fetch_optional(conn)
    .await
    .map(|ended| ended.unwrap_or(false))
    .map_err(|e| Error::db("ending our finished detached session", e))
}

/// Hands `sql` (an index build of migration `version`) to a session of its own and the migration
/// lock with it; `main` holds the lock on entry and no longer on success. Returns the session's pid.
pub async fn start(
    to: &DetachTo,
    main: &mut PgConnection,
    version: i64,
    index: &str,
    sql: &str,
    deadline: Deadline,
) -> Result<i32> {
    let opts = to.0.clone().application_name(&app_name(version, index));
    let mut conn = db::connect(&opts, Duration::from_secs(10), deadline).await?;
    let ctx = "preparing the detached session";
    // No statement_timeout and no client check: it must outlive us. No lock_timeout: a concurrent
    // build only waits on lockers and snapshots, never blocks the table's writers, and each wait is
    // visible in its phase. idle_session_timeout ends it (and frees the lock) once it is done.
    db::exec(
        &mut conn,
        &format!(
            "SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0;
             SELECT set_config(name, CASE name WHEN 'client_connection_check_interval' THEN '0' ELSE '{}' END, false)
               FROM pg_settings WHERE name IN ('client_connection_check_interval', 'idle_session_timeout')",
            IDLE_SESSION_TIMEOUT.as_millis()
        ),
    )
    .await
    .map_err(|e| Error::db(ctx, e))?;
    db::tune_build(&mut conn).await.map_err(|e| Error::db(ctx, e))?;
    let pid: i32 =
        sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut conn).await.map_err(|e| Error::db(ctx, e))?;
    let statement = sql.to_string();
    let task = tokio::spawn(async move {
        let locked =
            sqlx::query("SELECT pg_advisory_lock($1, $2)").bind(LOCK_KEY.0).bind(LOCK_KEY.1).execute(&mut conn).await;
        let outcome = match locked {
            Ok(_) => db::exec(&mut conn, &statement).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => tracing::info!(step = "detached", pid, "the detached build finished"),
            Err(e) => tracing::warn!(step = "detached", pid, error = %cause_chain(&e), "the detached build failed"),
        }
        let _ = conn.close().await;
    });
    // The lock passes straight from us to it: it queues for the lock first, and a queued request
    // beats any other session's later try.
    let handed = async {
        wait_for(main, pid, "NOT l.granted", Duration::from_secs(5)).await?;
        db::unlock(main).await?;
        Ok::<bool, Error>(
            wait_for(main, pid, "l.granted", Duration::from_secs(5)).await? && started_statement(main, pid).await?,
        )
    };
    match handed.await {
        Ok(true) => Ok(pid),
        Ok(false) | Err(_) => {
            task.abort();
            Err(Error::Database {
                context: "handing the migration lock to the detached session".into(),
                cause: format!("backend {pid} did not take it within 5 s"),
            })
        }
    }
}

/// Polls (at most 5 s) until backend `pid` has sent the statement after its lock (so that what
/// `pg_stat_activity` shows of it is the build).
async fn started_statement(conn: &mut PgConnection, pid: i32) -> Result<bool> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let sent: Option<bool> = sqlx::query_scalar(
            "SELECT query NOT LIKE 'SELECT pg_advisory_lock(%' FROM pg_stat_activity WHERE pid = $1",
        )
        .bind(pid)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| Error::db("watching the detached session start", e))?;
        if sent != Some(false) {
            return Ok(sent.is_some());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(false)
}

/// Polls until backend `pid`'s advisory lock request satisfies `cond` (over `pg_locks AS l`).
async fn wait_for(conn: &mut PgConnection, pid: i32, cond: &str, limit: Duration) -> Result<bool> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM pg_locks AS l WHERE l.pid = $1 AND l.locktype = 'advisory'
            AND l.classid = $2::oid AND l.objid = $3::oid AND l.objsubid = 2 AND {cond})"
    );
    let started = Instant::now();
    while started.elapsed() < limit {
        let seen: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
            .bind(pid)
            .bind(i64::from(LOCK_KEY.0))
            .bind(i64::from(LOCK_KEY.1))
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| Error::db("watching the lock hand-over", e))?;
        if seen {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_the_phase_that_counts() {
        let (pc, rps, eta) = rates("building index: scanning table", (25, 100), (0, 0), 10.0, 1000.0);
        assert_eq!(pc, Some(25.0));
        assert_eq!(rps, Some(25.0));
        assert_eq!(eta, Some(30.0));
        let (pc, rps, eta) = rates("building index: loading tuples in tree", (100, 100), (500, 1000), 5.0, 1000.0);
        assert_eq!((pc, rps, eta), (Some(50.0), Some(100.0), Some(5.0)));
        assert_eq!(rates("waiting for old snapshots", (0, 0), (0, 0), 3.0, 10.0), (None, None, None));
        assert_eq!(rates("building index: scanning table", (0, 100), (0, 0), 3.0, 10.0), (Some(0.0), None, None));
    }

    #[test]
    fn session_names_fit_postgres_and_say_what_runs() {
        assert_eq!(
            app_name(2, "idx_job_objects_job_status"),
            "scanner-migrator detached 002 idx_job_objects_job_status"
        );
        let long = app_name(2, &"é".repeat(40));
        assert!(long.len() <= 63 && long.starts_with(APP_PREFIX), "{long}");
    }
}
