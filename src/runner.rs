//! The commands: migrate, status, plan, verify, rollback. Takes the lock, plans, applies
//! each migration with lock_timeout and retries, verifies, and reports.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::{Connection, PgConnection};

use crate::{
    db::{self, Target},
    error::{Error, Result},
    migrations::{Migration, Migrations, Script, Statement},
    plan::{self, Applied},
};

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Apply pending migrations, up to `target` when given.
    Migrate { target: Option<i64> },
    /// Report applied and pending migrations.
    Status,
    /// Dry run: what `migrate` would do. Changes nothing.
    Plan { target: Option<i64> },
    /// Run every applied migration's checks.
    Verify,
    /// Run the down scripts of every applied migration above `to`, newest first.
    Rollback { to: i64 },
}

impl Command {
    /// The command's name as users type it.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Migrate { .. } => "migrate",
            Command::Status => "status",
            Command::Plan { .. } => "plan",
            Command::Verify => "verify",
            Command::Rollback { .. } => "rollback",
        }
    }
}

/// How carefully to run.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// `lock_timeout` for each migration statement.
    pub lock_timeout: Duration,
    /// Retries after a lock timeout (SQLSTATE 55P03), with exponential backoff.
    pub lock_retries: u32,
    /// How long to wait for another migrator's advisory lock.
    pub advisory_wait: Duration,
    /// `statement_timeout`; `None` is unlimited (still bounded by `deadline`).
    pub statement_timeout: Option<Duration>,
    /// When work must be finished (Lambda's deadline less a margin).
    pub deadline: Option<Instant>,
    /// Recorded in the history: the Lambda request id or the CLI user.
    pub applied_by: String,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            lock_timeout: Duration::from_millis(500),
            lock_retries: 10,
            advisory_wait: Duration::from_secs(60),
            statement_timeout: None,
            deadline: None,
            applied_by: "unknown".into(),
        }
    }
}

/// Less than this left before the deadline and no new migration is started.
const MIN_TIME_TO_START: Duration = Duration::from_secs(2);

impl RunSettings {
    fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let pause = Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(5));
        self.remaining().map_or(pause, |r| pause.min(r))
    }
}

/// A boxed, sendable future, so a hook's future type need not be named.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Called before the first pending migration is applied (the RDS snapshot); returns an id.
pub type BeforeApply<'a> = &'a (dyn Fn(&Migration) -> BoxFuture<'a, Result<String>> + Sync);

/// The outcome of a command: the JSON Terraform and `aws lambda invoke` print.
#[derive(Debug, Serialize)]
pub struct Report {
    /// applied | up_to_date | pending | planned | verified | rolled_back
    pub status: &'static str,
    /// The command that ran.
    pub command: &'static str,
    /// Newest applied version after the command.
    pub schema_version: Option<i64>,
    /// Newest version this binary knows.
    pub latest_version: Option<i64>,
    /// Migrations applied by this run.
    pub applied: Vec<AppliedStep>,
    /// Migrations rolled back by this run.
    pub rolled_back: Vec<AppliedStep>,
    /// Migrations still to apply (for `plan`: what would run).
    pub pending: Vec<Pending>,
    /// Versions in the history that this binary does not know.
    pub unknown_versions: Vec<i64>,
    /// Check results, one entry per migration checked.
    pub verification: Vec<Verification>,
    /// The history table (for `status`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<Applied>>,
    /// The snapshot taken before applying, if one was.
    pub snapshot: Option<String>,
    /// Where this ran.
    pub database: Option<Target>,
    /// How long the advisory lock took to get.
    pub lock_wait_ms: u64,
    /// Wall time of the whole command.
    pub duration_ms: u64,
}

/// One migration applied or rolled back by this run.
#[derive(Debug, Clone, Serialize)]
pub struct AppliedStep {
    /// Its version.
    pub version: i64,
    /// Its name.
    pub name: String,
    /// How long it took.
    pub duration_ms: u64,
    /// How many times a statement hit lock_timeout and was retried.
    pub lock_retries: u32,
    /// Whether it ran in one transaction.
    pub transactional: bool,
    /// Invalid indexes (from interrupted builds) dropped and rebuilt.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rebuilt_invalid_indexes: Vec<String>,
}

/// A migration not yet applied.
#[derive(Debug, Serialize)]
pub struct Pending {
    /// Its version.
    pub version: i64,
    /// Its name.
    pub name: String,
    /// `transaction` or `no-transaction` (statement by statement).
    pub mode: &'static str,
    /// How many statements it runs.
    pub statements: usize,
    /// Its checksum.
    pub checksum: String,
}

/// The checks of one migration.
#[derive(Debug, Serialize)]
pub struct Verification {
    /// The migration checked.
    pub version: i64,
    /// How many checks ran.
    pub checks: usize,
    /// Whether all held.
    pub ok: bool,
    /// What did not hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

impl Pending {
    fn of(m: &Migration) -> Self {
        Pending {
            version: m.version,
            name: m.name.clone(),
            mode: if m.up.no_transaction { "no-transaction" } else { "transaction" },
            statements: m.up.statements().len(),
            checksum: m.up.checksum.clone(),
        }
    }
}

/// Runs a command on a dedicated connection. Migrate and rollback hold the advisory lock
/// from before planning until the end, and release it on every path.
pub async fn run(
    conn: &mut PgConnection,
    migrations: &Migrations,
    command: Command,
    settings: &RunSettings,
    before_apply: Option<BeforeApply<'_>>,
) -> Result<Report> {
    let started = Instant::now();
    let mut report = Report {
        status: "up_to_date",
        command: command.name(),
        schema_version: None,
        latest_version: migrations.latest(),
        applied: Vec::new(),
        rolled_back: Vec::new(),
        pending: Vec::new(),
        unknown_versions: Vec::new(),
        verification: Vec::new(),
        history: None,
        snapshot: None,
        database: None,
        lock_wait_ms: 0,
        duration_ms: 0,
    };
    match command {
        Command::Status | Command::Plan { .. } | Command::Verify => {
            let history = db::history(conn).await?;
            let target = if let Command::Plan { target } = command { target } else { None };
            let plan = plan::plan(migrations, &history, target)?;
            report.schema_version = plan.current;
            report.pending = plan.pending.iter().map(|m| Pending::of(m)).collect();
            report.unknown_versions = plan.unknown.iter().map(|a| a.version).collect();
            report.status = match command {
                Command::Plan { .. } => "planned",
                Command::Verify => {
                    verify_applied(conn, migrations, &history, &mut report).await?;
                    "verified"
                }
                _ if report.pending.is_empty() => "up_to_date",
                _ => "pending",
            };
            if command == Command::Status {
                report.history = Some(history);
            }
        }
        Command::Migrate { .. } | Command::Rollback { .. } => {
            let wait = settings.remaining().map_or(settings.advisory_wait, |r| settings.advisory_wait.min(r));
            report.lock_wait_ms = db::lock(conn, wait).await?.as_millis() as u64;
            tracing::info!(step = "lock", wait_ms = report.lock_wait_ms, "migration lock taken");
            let outcome = locked(conn, migrations, command, settings, before_apply, &mut report).await;
            // Release even when the work failed; if this fails too, closing the connection frees it.
            let released = db::unlock(conn).await;
            outcome?;
            released?;
        }
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

async fn locked(
    conn: &mut PgConnection,
    migrations: &Migrations,
    command: Command,
    settings: &RunSettings,
    before_apply: Option<BeforeApply<'_>>,
    report: &mut Report,
) -> Result<()> {
    db::ensure_history(conn).await?;
    let history = db::history(conn).await?;
    match command {
        Command::Migrate { target } => {
            let plan = plan::plan(migrations, &history, target)?;
            report.unknown_versions = plan.unknown.iter().map(|a| a.version).collect();
            if let (Some(first), Some(hook)) = (plan.pending.first(), before_apply) {
                report.snapshot = Some(hook(first).await?);
            }
            let mut applied_labels = Vec::new();
            for (i, m) in plan.pending.iter().enumerate() {
                if let Some(left) = settings.remaining()
                    && left < MIN_TIME_TO_START
                {
                    return Err(Error::DeadlineReached {
                        next: m.label(),
                        remaining_ms: left.as_millis() as u64,
                        applied: applied_labels,
                        pending: plan.pending[i..].iter().map(|m| m.label()).collect(),
                    });
                }
                let step = apply(conn, m, &m.up, settings, &applied_labels, Direction::Up).await?;
                tracing::info!(step = "migration", version = m.version, name = %m.name, duration_ms = step.duration_ms,
                    lock_retries = step.lock_retries, "applied");
                applied_labels.push(m.label());
                report.applied.push(step);
            }
            report.status = if report.applied.is_empty() { "up_to_date" } else { "applied" };
            let history = db::history(conn).await?;
            report.schema_version = history.iter().map(|a| a.version).max();
            report.pending = plan::plan(migrations, &history, None)?.pending.iter().map(|m| Pending::of(m)).collect();
            verify_applied(conn, migrations, &history, report).await?;
            let failures: Vec<String> = report.verification.iter().flat_map(|v| v.failures.clone()).collect();
            if !failures.is_empty() {
                return Err(Error::VerifyFailed(failures));
            }
        }
        Command::Rollback { to } => {
            let undo = plan::rollback_plan(migrations, &history, to)?;
            let mut done = Vec::new();
            for m in undo {
                let down = m.down.as_ref().expect("rollback_plan only returns reversible migrations");
                let step = apply(conn, m, down, settings, &done, Direction::Down).await?;
                tracing::info!(step = "rollback", version = m.version, name = %m.name, "rolled back");
                done.push(m.label());
                report.rolled_back.push(step);
            }
            report.status = "rolled_back";
            let history = db::history(conn).await?;
            report.schema_version = history.iter().map(|a| a.version).max();
            report.pending = plan::plan(migrations, &history, None)?.pending.iter().map(|m| Pending::of(m)).collect();
        }
        _ => unreachable!("only migrate and rollback take the lock"),
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
}

/// Runs one script: in one transaction with its history change, or statement by statement.
async fn apply(
    conn: &mut PgConnection,
    m: &Migration,
    script: &Script,
    settings: &RunSettings,
    applied_before: &[String],
    direction: Direction,
) -> Result<AppliedStep> {
    let started = Instant::now();
    let statements = script.statements();
    db::set_timeout(conn, "statement_timeout", db::bounded_timeout(settings.statement_timeout, settings.deadline))
        .await?;
    db::set_timeout(conn, "lock_timeout", Some(settings.lock_timeout)).await?;
    let mut step = AppliedStep {
        version: m.version,
        name: m.name.clone(),
        duration_ms: 0,
        lock_retries: 0,
        transactional: !script.no_transaction,
        rebuilt_invalid_indexes: Vec::new(),
    };
    let fail = |stmt: &Statement, err: sqlx::Error| migration_failed(m, script, stmt, &err, applied_before);
    let bookkeeping = |err: sqlx::Error| Error::db(format!("recording migration {} in the history", m.label()), err);
    let outcome = if script.no_transaction {
        for stmt in &statements {
            let mut attempt = 0;
            loop {
                if let Some(index) = stmt.concurrent_index_name() {
                    let invalid = db::index_is_invalid(conn, &index).await.map_err(|e| fail(stmt, e))?;
                    if invalid {
                        tracing::warn!(step = "repair", index = %index, "dropping an index left INVALID by an interrupted build");
                        let drop = format!("DROP INDEX CONCURRENTLY IF EXISTS \"{}\"", index.replace('"', "\"\""));
                        db::exec(conn, &drop).await.map_err(|e| fail(stmt, e))?;
                        if !step.rebuilt_invalid_indexes.contains(&index) {
                            step.rebuilt_invalid_indexes.push(index);
                        }
                    }
                }
                match db::exec(conn, &stmt.sql).await {
                    Ok(()) => break,
                    Err(e) if is_lock_timeout(&e) && attempt < settings.lock_retries => {
                        attempt += 1;
                        step.lock_retries += 1;
                        tracing::warn!(
                            step = "lock_retry",
                            version = m.version,
                            line = stmt.line,
                            attempt,
                            "lock_timeout; retrying"
                        );
                        tokio::time::sleep(settings.backoff(attempt)).await;
                    }
                    Err(e) => return Err(fail(stmt, e)),
                }
            }
        }
        match direction {
            Direction::Up => {
                db::record(conn, m.version, &m.name, &m.up.checksum, started.elapsed(), &settings.applied_by).await
            }
            Direction::Down => db::forget(conn, m.version).await,
        }
        .map_err(bookkeeping)
    } else {
        let mut attempt = 0;
        loop {
            match run_in_transaction(conn, m, &statements, started, settings, direction).await {
                Ok(()) => break Ok(()),
                Err(TxError::Statement(i, e)) if is_lock_timeout(&e) && attempt < settings.lock_retries => {
                    attempt += 1;
                    step.lock_retries += 1;
                    tracing::warn!(
                        step = "lock_retry",
                        version = m.version,
                        line = statements[i].line,
                        attempt,
                        "lock_timeout; rolled back, retrying the migration"
                    );
                    tokio::time::sleep(settings.backoff(attempt)).await;
                }
                Err(TxError::Statement(i, e)) => break Err(fail(&statements[i], e)),
                Err(TxError::Bookkeeping(e)) => break Err(bookkeeping(e)),
            }
        }
    };
    // Leave the session as we found it even after a failure.
    let reset = db::exec(conn, "RESET lock_timeout").await;
    outcome?;
    reset.map_err(|e| Error::db("resetting lock_timeout", e))?;
    step.duration_ms = started.elapsed().as_millis() as u64;
    Ok(step)
}

enum TxError {
    Statement(usize, sqlx::Error),
    Bookkeeping(sqlx::Error),
}

async fn run_in_transaction(
    conn: &mut PgConnection,
    m: &Migration,
    statements: &[Statement],
    started: Instant,
    settings: &RunSettings,
    direction: Direction,
) -> std::result::Result<(), TxError> {
    let mut tx = conn.begin().await.map_err(TxError::Bookkeeping)?;
    for (i, stmt) in statements.iter().enumerate() {
        if let Err(e) = db::exec(&mut tx, &stmt.sql).await {
            let _ = tx.rollback().await;
            return Err(TxError::Statement(i, e));
        }
    }
    let recorded = match direction {
        Direction::Up => {
            db::record(&mut tx, m.version, &m.name, &m.up.checksum, started.elapsed(), &settings.applied_by).await
        }
        Direction::Down => db::forget(&mut tx, m.version).await,
    };
    if let Err(e) = recorded {
        let _ = tx.rollback().await;
        return Err(TxError::Bookkeeping(e));
    }
    tx.commit().await.map_err(TxError::Bookkeeping)
}

fn is_lock_timeout(err: &sqlx::Error) -> bool {
    db::sqlstate(err).as_deref() == Some("55P03")
}

fn migration_failed(
    m: &Migration,
    script: &Script,
    stmt: &Statement,
    err: &sqlx::Error,
    applied_before: &[String],
) -> Error {
    let (message, detail, position) = db::pg_details(err);
    let mut statement: String = stmt.sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if statement.chars().count() > 200 {
        statement = statement.chars().take(200).collect::<String>() + "…";
    }
    Error::MigrationFailed(Box::new(crate::error::MigrationFailure {
        version: m.version,
        name: if script.file.ends_with(".down.sql") { format!("{} rollback", m.name) } else { m.name.clone() },
        line: position.map_or(stmt.line, |p| stmt.line_of(p)),
        statement,
        sqlstate: db::sqlstate(err),
        position,
        message,
        detail,
        applied_before: applied_before.to_vec(),
    }))
}

/// Runs the checks of every applied migration the binary knows, into `report.verification`.
async fn verify_applied(
    conn: &mut PgConnection,
    migrations: &Migrations,
    history: &[Applied],
    report: &mut Report,
) -> Result<()> {
    report.verification.clear();
    for row in history {
        let Some(m) = migrations.get(row.version) else { continue };
        let mut failures = Vec::new();
        for check in &m.up.checks {
            if let Some(problem) = db::check(conn, check).await? {
                failures.push(format!("{}: {problem}", m.label()));
            }
        }
        report.verification.push(Verification {
            version: m.version,
            checks: m.up.checks.len(),
            ok: failures.is_empty(),
            failures,
        });
    }
    tracing::info!(
        step = "verify",
        migrations = report.verification.len(),
        ok = report.verification.iter().all(|v| v.ok),
        "verified"
    );
    Ok(())
}

/// `verify` ends in an error when a check fails, so scripts and Lambda see it.
pub fn verification_failures(report: &Report) -> Option<Error> {
    let failures: Vec<String> = report.verification.iter().flat_map(|v| v.failures.clone()).collect();
    (!failures.is_empty()).then_some(Error::VerifyFailed(failures))
}
