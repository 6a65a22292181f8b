//! Work that outlasts an invocation. A statement that cannot finish before the deadline (an index
//! build, a `REINDEX … CONCURRENTLY`, an `ALTER TABLE … VALIDATE CONSTRAINT`) is started on a
//! session of its own, which takes the migration lock itself and runs the build with
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
    split::Detachable,
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

/// Where a run records what a detached `REINDEX` started from, so that the next run, re-running a
/// no-transaction script from its first statement, knows whether it finished. Its name starts
/// with the history's, so the catalog readers never take it for one of the migrations' objects.
pub const RECORD_TABLE: &str = "scanner_migrator_history_detached";

/// What a detached session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `CREATE INDEX CONCURRENTLY`.
    IndexBuild,
    /// `REINDEX INDEX|TABLE CONCURRENTLY`.
    Reindex,
    /// `ALTER TABLE … VALIDATE CONSTRAINT`.
    Validate,
    /// Any other statement of a no-transaction script that an earlier invocation's deadline cut
    /// short, run again in one transaction with its completion recorded.
    Statement,
}

impl Kind {
    /// The word after the version in the session's name (none for an index build, as before).
    fn tag(self) -> &'static str {
        match self {
            Kind::IndexBuild => "",
            Kind::Reindex => "reindex ",
            Kind::Validate => "validate ",
            Kind::Statement => "statement ",
        }
    }

    /// The kind and object a session's name (after the version) says.
    fn parse(rest: &str) -> (Kind, &str) {
        for kind in [Kind::Reindex, Kind::Validate, Kind::Statement] {
            if let Some(object) = rest.strip_prefix(kind.tag()) {
                return (kind, object);
            }
        }
        (Kind::IndexBuild, rest)
    }
}

/// The `in_progress` answer: what runs detached, how far it got, and what happens next.
#[derive(Debug, Clone, Serialize)]
pub struct InProgress {
    /// The migration whose statement runs (`002_optimize_for_scale`, or its version when unknown).
    pub migration: String,
    /// The statement, on one line.
    pub statement: String,
    /// What it does: `index_build`, `reindex`, `validate` or `statement`.
    pub kind: Kind,
    /// The index it builds, or the index or table it reindexes, or the constraint it validates, or
    /// for a statement `line N` (of the migration's file).
    pub object: String,
    /// The index it builds or rebuilds (the same as `object`; empty for a validation or a statement).
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

/// The session name of a detached statement: `scanner-migrator detached 002 idx_…`, `… 005
/// reindex idx_…`, `… 006 validate fk_…` (at most 63 bytes).
pub fn app_name(version: i64, kind: Kind, object: &str) -> String {
    let name = format!("{APP_PREFIX}{version:03} {}{}", kind.tag(), object.trim_matches('"'));
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
    let how_far = match (p.percent, p.eta_s, p.kind) {
        (Some(pc), Some(eta), _) => format!("{pc:.1}% of this phase, about {eta:.0} s left at the rate so far"),
        (Some(pc), None, _) => format!("{pc:.1}% of this phase"),
        (None, _, Kind::Validate | Kind::Statement) => "PostgreSQL reports no share done for it".to_string(),
        _ => "no count yet for this phase".to_string(),
    };
    let what = match p.kind {
        Kind::IndexBuild => format!("builds index {}", p.object),
        Kind::Reindex => format!("rebuilds {} (REINDEX CONCURRENTLY)", p.object),
        Kind::Validate => format!("validates constraint {}", p.object),
        Kind::Statement => {
            format!("runs its statement at {} (an earlier invocation's deadline cut it short)", p.object)
        }
    };
    format!(
        "migration {} {what} in the database (backend pid {}, since {}, {:.0} s): phase '{}', {how_far}. It \
         continues without anyone: the next migrate (a new invocation, or the next terraform apply) waits for it \
         and then finishes the migration; status shows its progress{}",
        p.migration,
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
        "SELECT a.pid, a.application_name AS app, a.state, a.query, a.wait_event_type = 'Lock' AS waits_for_lock,
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
            -- A build's parallel workers carry its name too.
            AND a.backend_type = 'client backend'
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
    let (version, rest) = app.trim_start_matches(APP_PREFIX).split_once(' ').unwrap_or(("", ""));
    let (kind, object) = Kind::parse(rest);
    let migration = version.parse::<i64>().map(&label).unwrap_or_else(|_| version.to_string());
    // A validation has no progress view: its phase is what pg_stat_activity says of it.
    let phase: Option<String> = r.try_get("phase").ok().flatten().or_else(|| {
        let waits = r.try_get("waits_for_lock").ok().flatten().unwrap_or(false);
        match kind {
            _ if kind != Kind::IndexBuild && waits => Some("waiting for a lock on the table".to_string()),
            Kind::Validate => Some("validating constraint".to_string()),
            Kind::Statement => Some("running".to_string()),
            _ => None,
        }
    });
    let get = |c: &str| r.try_get::<Option<i64>, _>(c).ok().flatten().unwrap_or(0);
    let (blocks, tuples) = ((get("blocks_done"), get("blocks_total")), (get("tuples_done"), get("tuples_total")));
    let running_s: f64 = r.try_get::<Option<f64>, _>("running_s").ok().flatten().unwrap_or(0.0);
    let rows: f64 = r.try_get::<Option<f64>, _>("rows").ok().flatten().unwrap_or(0.0);
    let phase = phase.unwrap_or_else(|| "starting".into());
    let (percent, rows_per_s, eta_s) = rates(&phase, blocks, tuples, running_s, rows);
    let state: Option<String> = r.try_get("state").ok().flatten();
    let query: Option<String> = r.try_get("query").ok().flatten();
    // The session's name may be cut at 63 bytes; the statement names its object whole.
    let query = query.map(|q| unwrapped(&q).map_or(q.clone(), str::to_string));
    let statement = crate::split::Statement { sql: query.clone().unwrap_or_default(), line: 1 };
    let named =
        statement.index_build().map(|b| b.name).or_else(|| statement.detachable().map(|d| of(&d).1.to_string()));
    let object = named.as_deref().map_or(object, |n| n.trim_matches('"'));
    let mut progress = InProgress {
        migration,
        statement: query.unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" "),
        kind,
        object: object.to_string(),
        index: if matches!(kind, Kind::IndexBuild | Kind::Reindex) { object.to_string() } else { String::new() },
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

/// Hands `sql` (what `kind` says to `object`, for migration `version`) to a session of its own and
/// the migration lock with it; `main` holds the lock on entry and no longer on success. Returns
/// the session's pid, and what lets its session end once the caller has looked at it.
pub async fn start(
    to: &DetachTo,
    main: &mut PgConnection,
    (version, kind, object): (i64, Kind, &str),
    sql: &str,
    deadline: Deadline,
) -> Result<(i32, Seen)> {
    let opts = to.0.clone().application_name(&app_name(version, kind, object));
    let ctx = "preparing the detached session";
    // The statement names its objects as the migration wrote them: it must find them in the schema
    // this run is pinned to (DB_SCHEMA), not in the login's default search_path.
    let search_path: String = sqlx::query_scalar("SELECT current_setting('search_path')")
        .fetch_one(&mut *main)
        .await
        .map_err(|e| Error::db(ctx, e))?;
    let mut conn = db::connect(&opts, Duration::from_secs(10), deadline).await?;
    sqlx::query("SELECT set_config('search_path', $1, false)")
        .bind(&search_path)
        .execute(&mut conn)
        .await
        .map_err(|e| Error::db(ctx, e))?;
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
    // A statement quicker than the hand-over's checks would end its session, and the lock with it,
    // before the run saw the lock granted: the session stays (idle, holding the lock) until the run
    // has seen it ([`Seen`]), or 10 s. A frozen function leaves it to idle_session_timeout or the next run.
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen_by_task = seen.clone();
    let task = tokio::spawn(async move {
        let locked =
            sqlx::query("SELECT pg_advisory_lock($1, $2)").bind(LOCK_KEY.0).bind(LOCK_KEY.1).execute(&mut conn).await;
        let outcome = match locked {
            Ok(_) => db::exec(&mut conn, &statement).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => tracing::info!(step = "detached", pid, "the detached statement finished"),
            Err(e) => tracing::warn!(step = "detached", pid, error = %cause_chain(&e), "the detached statement failed"),
        }
        let waited = Instant::now();
        while !seen_by_task.load(std::sync::atomic::Ordering::Acquire) && waited.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
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
    let seen = Seen(seen);
    match handed.await {
        Ok(true) => Ok((pid, seen)),
        Ok(false) | Err(_) => {
            task.abort();
            Err(Error::Database {
                context: "handing the migration lock to the detached session".into(),
                cause: format!("backend {pid} did not take it within 5 s"),
            })
        }
    }
}

/// Held by the run that started a detached session: dropped, it lets the session end when its
/// statement is done (a statement quicker than the hand-over would otherwise take its session and the
/// lock away before the run saw them).
pub struct Seen(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for Seen {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
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

/// What a detached session of `long` runs on, and on what.
pub fn of(long: &Detachable) -> (Kind, &str) {
    match long {
        Detachable::Reindex { name, .. } => (Kind::Reindex, name),
        Detachable::Validate { constraint, .. } => (Kind::Validate, constraint),
    }
}

/// The (valid) indexes a `REINDEX` rebuilds, as `pg_class.relfilenode`s: every rebuild gives
/// each a new one.
const REINDEXED: &str = "SELECT coalesce(array_agg(c.relfilenode::bigint ORDER BY c.relfilenode), '{}')
       FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
      WHERE i.indisvalid AND CASE WHEN $2 THEN i.indexrelid = to_regclass($1) ELSE i.indrelid = to_regclass($1) END";

/// Whether `long` (statement at `line` of migration `version`) is done already: a constraint
/// validated, or a `REINDEX` that a detached session of an earlier run of this migration
/// finished (none of the indexes it started from is left).
pub async fn already_done(conn: &mut PgConnection, version: i64, line: usize, long: &Detachable) -> Result<bool> {
    let ctx = "checking whether a long statement already ran";
    match long {
        Detachable::Validate { table, constraint } => sqlx::query_scalar::<_, bool>(
            "SELECT convalidated FROM pg_constraint
              WHERE conrelid = to_regclass($1) AND conname = (parse_ident($2))[1]",
        )
        .bind(table)
        .bind(constraint)
        .fetch_optional(&mut *conn)
        .await
        .map(|v| v.unwrap_or(false))
        .map_err(|e| Error::db(ctx, e)),
        Detachable::Reindex { of_index, name } => {
            if !db::table_exists(conn, RECORD_TABLE).await.map_err(|e| Error::db(ctx, e))? {
                return Ok(false);
            }
            let started_from: Option<Option<Vec<i64>>> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT relfilenodes FROM {RECORD_TABLE} WHERE version = $1 AND line = $2"
            )))
            .bind(version)
            .bind(i32::try_from(line).unwrap_or(i32::MAX))
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| Error::db(ctx, e))?;
            let Some(started_from) = started_from.flatten() else { return Ok(false) };
            let now: Vec<i64> = sqlx::query_scalar(REINDEXED)
                .bind(name)
                .bind(of_index)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| Error::db(ctx, e))?;
            Ok(!now.is_empty() && !now.iter().any(|n| started_from.contains(n)))
        }
    }
}

/// Creates the record of detached statements if it is missing: per statement (migration, line),
/// what a `REINDEX` started from, when the deadline cut it short, and how its detached run ended.
async fn ensure_record(conn: &mut PgConnection) -> std::result::Result<(), sqlx::Error> {
    db::exec(
        conn,
        &format!(
            "CREATE TABLE IF NOT EXISTS {RECORD_TABLE} (
                version      bigint NOT NULL,
                line         integer NOT NULL,
                relfilenodes bigint[],
                cut_at       timestamptz,
                finished_at  timestamptz,
                error        text,
                started_at   timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (version, line)
            )"
        ),
    )
    .await
}

/// Records what a detached `REINDEX` starts from (see [`already_done`]); nothing for a validation,
/// which PostgreSQL itself records.
pub async fn note_start(conn: &mut PgConnection, version: i64, line: usize, long: &Detachable) -> Result<()> {
    let Detachable::Reindex { of_index, name } = long else { return Ok(()) };
    let ctx = "recording the start of a detached REINDEX";
    ensure_record(conn).await.map_err(|e| Error::db(ctx, e))?;
    let relfilenodes: Vec<i64> = sqlx::query_scalar(REINDEXED)
        .bind(name)
        .bind(of_index)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| Error::db(ctx, e))?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {RECORD_TABLE} (version, line, relfilenodes) VALUES ($1, $2, $3)
         ON CONFLICT (version, line) DO UPDATE SET relfilenodes = EXCLUDED.relfilenodes, started_at = now()"
    )))
    .bind(version)
    .bind(i32::try_from(line).unwrap_or(i32::MAX))
    .bind(relfilenodes)
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(|e| Error::db(ctx, e))
}

/// What the record says of a plain statement (see [`Kind::Statement`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cut {
    /// An invocation's deadline cut it short: the next run runs it detached.
    pub cut: bool,
    /// Its detached run finished (committed): it is done.
    pub finished: bool,
    /// Its detached run failed: SQLSTATE and message, as the run caught them (never the detail,
    /// which may hold row values).
    pub error: Option<(String, String)>,
}

/// The record of the statement at `line` of migration `version` (none: nothing happened to it).
pub async fn cut_record(conn: &mut PgConnection, version: i64, line: usize) -> Result<Option<Cut>> {
    let ctx = "reading the record of detached statements";
    if !db::table_exists(conn, RECORD_TABLE).await.map_err(|e| Error::db(ctx, e))? {
        return Ok(None);
    }
    let row: Option<(bool, bool, Option<String>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT cut_at IS NOT NULL, finished_at IS NOT NULL, error FROM {RECORD_TABLE} WHERE version = $1 AND line = $2"
    )))
    .bind(version)
    .bind(i32::try_from(line).unwrap_or(i32::MAX))
    .fetch_optional(conn)
    .await
    .map_err(|e| Error::db(ctx, e))?;
    Ok(row.map(|(cut, finished, error)| Cut {
        cut,
        finished,
        error: error.map(|e| match e.split_once(": ") {
            Some((state, message)) => (state.to_string(), message.to_string()),
            None => (String::new(), e),
        }),
    }))
}

/// Records that the deadline cut the statement at `line` of migration `version` short (and
/// forgets how an earlier detached run of it ended): the next run runs it detached.
pub async fn note_cut(conn: &mut PgConnection, version: i64, line: usize) -> Result<()> {
    let ctx = "recording a statement the deadline cut short";
    ensure_record(conn).await.map_err(|e| Error::db(ctx, e))?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {RECORD_TABLE} (version, line, cut_at) VALUES ($1, $2, now())
         ON CONFLICT (version, line) DO UPDATE SET cut_at = now(), finished_at = NULL, error = NULL"
    )))
    .bind(version)
    .bind(i32::try_from(line).unwrap_or(i32::MAX))
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(|e| Error::db(ctx, e))
}

/// The dollar-quote tags of [`wrap`].
const WRAP_TAG: &str = "$scm_detached$";
const STATEMENT_TAG: &str = "$scm_statement$";

/// `sql` (the statement at `line` of migration `version`) as one `DO` block for a detached
/// session: the statement under `lock_timeout` (its lock must not queue ahead of the scanner's
/// writes for long), then its completion recorded in the same transaction, so the record is
/// exactly as far as the schema; a failure is caught, rolled back and recorded for the next run
/// to report. `None` for what cannot run inside a function: `CONCURRENTLY` forms, `VACUUM`,
/// database and tablespace DDL, `ALTER SYSTEM`, transaction control, and text holding the tags.
pub fn wrap(sql: &str, version: i64, line: usize, lock_timeout: Duration) -> Option<String> {
    let statement = crate::split::Statement { sql: sql.to_string(), line };
    let words: Vec<String> = crate::split::words(sql).iter().take(2).map(|w| w.to_ascii_lowercase()).collect();
    let first = words.first().map(String::as_str).unwrap_or("");
    let second = words.get(1).map(String::as_str).unwrap_or("");
    let outside_functions = matches!(
        first,
        "vacuum"
            | "begin"
            | "start"
            | "commit"
            | "end"
            | "rollback"
            | "savepoint"
            | "release"
            | "abort"
            | "prepare"
            | "set"
            | "reset"
            | "discard"
            | "listen"
            | "copy"
            | "checkpoint"
    ) || (matches!(first, "create" | "drop" | "alter")
        && matches!(second, "database" | "tablespace" | "system"))
        || (first == "reindex" && matches!(second, "database" | "system" | "schema"));
    if outside_functions
        || statement.without_concurrently() != sql
        || sql.contains(WRAP_TAG)
        || sql.contains(STATEMENT_TAG)
    {
        return None;
    }
    Some(format!(
        "DO {WRAP_TAG}
BEGIN
    PERFORM set_config('lock_timeout', '{lock_ms}ms', true);
    EXECUTE {STATEMENT_TAG}{sql}{STATEMENT_TAG};
    UPDATE {RECORD_TABLE} SET finished_at = now(), error = NULL WHERE version = {version} AND line = {line};
EXCEPTION WHEN OTHERS THEN
    UPDATE {RECORD_TABLE} SET error = SQLSTATE || ': ' || SQLERRM WHERE version = {version} AND line = {line};
END
{WRAP_TAG}",
        lock_ms = lock_timeout.as_millis().max(1),
    ))
}

/// The statement a [`wrap`]ped `DO` block runs, for display.
fn unwrapped(query: &str) -> Option<&str> {
    let rest = query.strip_prefix(&format!("DO {WRAP_TAG}"))?;
    let (_, rest) = rest.split_once(STATEMENT_TAG)?;
    rest.split_once(STATEMENT_TAG).map(|(sql, _)| sql)
}

/// Forgets what earlier runs of migration `version` did detached (it is applied, or being rolled
/// back), so that a later application runs each of its statements again.
pub async fn forget(conn: &mut PgConnection, version: i64) -> Result<()> {
    let ctx = "clearing the record of earlier detached statements";
    if !db::table_exists(conn, RECORD_TABLE).await.map_err(|e| Error::db(ctx, e))? {
        return Ok(());
    }
    sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {RECORD_TABLE} WHERE version = $1")))
        .bind(version)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(|e| Error::db(ctx, e))
}

/// INVALID indexes an interrupted `REINDEX … CONCURRENTLY` of `long` left (`…_ccnew`, `…_ccold`),
/// schema-qualified: PostgreSQL's advice is to drop them and run it again.
pub async fn leftovers(conn: &mut PgConnection, long: &Detachable) -> Result<Vec<String>> {
    let Detachable::Reindex { of_index, name } = long else { return Ok(Vec::new()) };
    sqlx::query_scalar(
        "WITH target AS (
             SELECT CASE WHEN $2 THEN (SELECT indrelid FROM pg_index WHERE indexrelid = to_regclass($1))
                         ELSE to_regclass($1)::oid END AS tab,
                    CASE WHEN $2 THEN (SELECT relname FROM pg_class WHERE oid = to_regclass($1)) END AS idx)
         SELECT format('%I.%I', n.nspname, c.relname)
           FROM target AS t JOIN pg_index AS i ON i.indrelid = t.tab
           JOIN pg_class AS c ON c.oid = i.indexrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace
          WHERE NOT i.indisvalid AND c.relname ~ '_cc(new|old)[0-9]*$'
            AND (t.idx IS NULL OR left(c.relname, least(length(t.idx), 40)) = left(t.idx, least(length(t.idx), 40)))
          ORDER BY c.relname",
    )
    .bind(name)
    .bind(of_index)
    .fetch_all(conn)
    .await
    .map_err(|e| Error::db("looking for what an interrupted REINDEX left", e))
}

/// The rows `long` must read or index, by the planner's estimates: a validation scans its table
/// once; a `REINDEX` builds each index anew.
pub async fn work_rows(conn: &mut PgConnection, long: &Detachable) -> Result<f64> {
    let (sql, name, of_index) = match long {
        Detachable::Validate { table, .. } => {
            ("SELECT greatest(reltuples, 0)::float8 FROM pg_class WHERE oid = to_regclass($1) AND $2", table, true)
        }
        Detachable::Reindex { of_index, name } => (
            "SELECT greatest(c.reltuples, 0)::float8 * count(*)
               FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indrelid
              WHERE CASE WHEN $2 THEN i.indexrelid = to_regclass($1) ELSE i.indrelid = to_regclass($1) END
              GROUP BY c.reltuples",
            name,
            *of_index,
        ),
    };
    sqlx::query_scalar::<_, f64>(sql)
        .bind(name)
        .bind(of_index)
        .fetch_optional(conn)
        .await
        .map(Option::unwrap_or_default)
        .map_err(|e| Error::db("estimating the rows of a long statement", e))
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
    fn a_statement_is_wrapped_only_where_a_function_can_run_it() {
        let lock = Duration::from_secs(2);
        let sql = "CREATE MATERIALIZED VIEW IF NOT EXISTS v AS SELECT 'a;b' AS x";
        let wrapped = wrap(sql, 2, 21, lock).unwrap();
        assert!(wrapped.contains("set_config('lock_timeout', '2000ms', true)"), "{wrapped}");
        assert!(wrapped.contains("WHERE version = 2 AND line = 21"), "{wrapped}");
        assert_eq!(unwrapped(&wrapped), Some(sql), "shown as written");
        for outside in [
            "CREATE INDEX CONCURRENTLY i ON t (x)",
            "DROP INDEX CONCURRENTLY i",
            "VACUUM (ANALYZE) t",
            "CREATE DATABASE d",
            "ALTER SYSTEM SET work_mem = '1MB'",
            "REINDEX DATABASE d",
            "COMMIT",
            "SET lock_timeout = '1s'",
            "SELECT '$scm_statement$'",
        ] {
            assert_eq!(wrap(outside, 2, 1, lock), None, "{outside}");
        }
        assert!(wrap("UPDATE t SET x = 1", 2, 1, lock).is_some());
        assert!(wrap("ALTER TABLE t ADD COLUMN c int DEFAULT random()", 2, 1, lock).is_some());
    }

    #[test]
    fn session_names_fit_postgres_and_say_what_runs() {
        assert_eq!(
            app_name(2, Kind::IndexBuild, "idx_job_objects_job_status"),
            "scanner-migrator detached 002 idx_job_objects_job_status"
        );
        let long = app_name(2, Kind::IndexBuild, &"é".repeat(40));
        assert!(long.len() <= 63 && long.starts_with(APP_PREFIX), "{long}");
        for (kind, name) in [(Kind::IndexBuild, "idx_a"), (Kind::Reindex, "\"Idx\""), (Kind::Validate, "fk_b")] {
            let app = app_name(7, kind, name);
            let rest = app.trim_start_matches(APP_PREFIX).split_once(' ').unwrap().1;
            assert_eq!(Kind::parse(rest), (kind, name.trim_matches('"')), "{app}");
        }
    }
}
