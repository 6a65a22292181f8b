//! The commands that touch the schema: migrate, status, plan, verify, rollback. The runner
//! orchestrates (lock, plan, adopt, apply statement by statement under the deadline, verify,
//! report); the SQL and SQLSTATEs live in `db`, the catalog work in `verify` and `adopt`.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::{Connection, PgConnection};

pub use crate::command::Command;
use crate::{
    adopt::{self, Adoption, Decision, Step},
    db::{self, Target},
    deadline::Deadline,
    detached,
    error::{Error, Result},
    migrations::{Migration, Migrations, Script},
    plan::{self, Applied, State},
    split::Statement,
    verify::{self, VerifyReport},
};

/// How carefully to run.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// `lock_timeout` for each migration statement.
    pub lock_timeout: Duration,
    /// Retries after a lock timeout (SQLSTATE 55P03), with exponential backoff.
    pub lock_retries: u32,
    /// How long to wait for another migrator's advisory lock.
    pub advisory_wait: Duration,
    /// `statement_timeout`; `None` is unlimited (still cut by `deadline`).
    pub statement_timeout: Option<Duration>,
    /// Assumed index build speed, to refuse a build that cannot finish before the deadline.
    pub index_build_rows_per_s: f64,
    /// Assumed table rewrite speed (plan's estimates).
    pub table_rewrite_rows_per_s: f64,
    /// Assumed whole-table scan speed (plan's estimates).
    pub table_scan_rows_per_s: f64,
    /// When work must be finished (Lambda's deadline less a margin).
    pub deadline: Deadline,
    /// Recorded in the history: the Lambda request id or the CLI user.
    pub applied_by: String,
    /// Where a statement too long for the time left (an index build, `REINDEX … CONCURRENTLY`,
    /// `VALIDATE CONSTRAINT`) is started detached; without it (the command line, which has no
    /// deadline) they run in place, and an index build too large for a deadline is refused with
    /// `DeadlineTooShort`.
    pub detach: Option<crate::detached::DetachTo>,
    /// In Lambda, the function's name: progress of long work is also printed as EMF metrics
    /// (never on the command line, whose standard output is the result).
    pub metrics_function: Option<String>,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            lock_timeout: Duration::from_millis(500),
            lock_retries: 10,
            advisory_wait: Duration::from_secs(60),
            statement_timeout: None,
            index_build_rows_per_s: 250_000.0,
            table_rewrite_rows_per_s: 100_000.0,
            table_scan_rows_per_s: 1_000_000.0,
            deadline: Deadline::NONE,
            applied_by: "unknown".into(),
            detach: None,
            metrics_function: None,
        }
    }
}

/// Less than this left before the deadline and no new migration is started.
const MIN_TIME_TO_START: Duration = Duration::from_secs(2);

impl RunSettings {
    fn backoff(&self, attempt: u32) -> Duration {
        Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(5))
    }
}

/// A boxed, sendable future, so a hook's future type need not be named.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Called before the schema is first changed (the RDS snapshot), with what is about to run
/// (`001_add_execution_arn`, `rollback-of-002_optimize_for_scale`); returns an id.
pub type BeforeChange<'a> = &'a (dyn Fn(String) -> BoxFuture<'a, Result<String>> + Sync);

/// The outcome of a command: the JSON Terraform and `aws lambda invoke` print.
#[derive(Debug, Serialize)]
pub struct Report {
    /// applied | up_to_date | pending | planned | verified | rolled_back | in_progress
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
    /// Objects that existed before the migration creating them ran: adopted as they were, or
    /// converged to the migrations' shape.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub adoption: Vec<Adoption>,
    /// The live schema compared with what the applied migrations produce.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerifyReport>,
    /// The history table (for `status`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<Applied>>,
    /// `plan`: the speeds its estimates assume, and where the index build speed comes from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_speeds: Option<crate::impact::Speeds>,
    /// Batched data changes not finished yet (for `status`): rows done, rows left, percent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub batches_in_progress: Vec<crate::batch::Progress>,
    /// The snapshot taken before changing the schema, if one was.
    pub snapshot: Option<String>,
    /// Where this ran.
    pub database: Option<Target>,
    /// A statement running detached in the database (status `in_progress`): what, how far, what next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_progress: Option<crate::detached::InProgress>,
    /// `migrate`: the refresh function's role in this database and what was changed to give it what it needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_role: Option<RefreshRoleReport>,
    /// How long the advisory lock took to get.
    pub lock_wait_ms: u64,
    /// Wall time of the whole command.
    pub duration_ms: u64,
}

/// The refresh role after a `migrate` (see `refresh_role`).
#[derive(Debug, Clone, Serialize)]
pub struct RefreshRoleReport {
    /// Its name (`REFRESH_ROLE`).
    pub role: String,
    /// `iam` or `password`.
    pub auth: &'static str,
    /// What this run changed, in words (empty when it had what it needs).
    pub changed: Vec<String>,
    /// Whether its password was set from `REFRESH_SECRET_ARN`.
    pub password_set: bool,
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
    /// What its batched statements (`-- migrate:batch`) changed in this run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub batched: Vec<crate::batch::Summary>,
}

impl AppliedStep {
    /// Notes that the index (or table) `name`, as written, was rebuilt after INVALID indexes an
    /// interrupted run had left were dropped; once per name.
    fn rebuilt_after_dropping(&mut self, dropped: &[String], name: &str) {
        let name = name.trim_matches('"').to_string();
        if !dropped.is_empty() && !self.rebuilt_invalid_indexes.contains(&name) {
            self.rebuilt_invalid_indexes.push(name);
        }
    }
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
    /// For `plan`: what each statement will do to production (locks, rewrite or scan, size,
    /// estimate, blockers) and a one-line risk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impact: Option<crate::impact::MigrationImpact>,
}

impl Pending {
    fn of(m: &Migration) -> Self {
        Pending {
            version: m.version,
            name: m.name.clone(),
            mode: if m.up.no_transaction { "no-transaction" } else { "transaction" },
            statements: m.up.statements().len(),
            checksum: m.up.checksum.clone(),
            impact: None,
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
    before_change: Option<BeforeChange<'_>>,
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
        adoption: Vec::new(),
        verification: None,
        history: None,
        batches_in_progress: Vec::new(),
        plan_speeds: None,
        snapshot: None,
        database: None,
        in_progress: None,
        refresh_role: None,
        lock_wait_ms: 0,
        duration_ms: 0,
    };
    db::check_server_version(conn).await?;
    if command.changes_schema() {
        let waited = match acquire(conn, migrations, settings).await? {
            Ok(waited) => waited,
            Err(running) => {
                // Our own detached build holds the lock: its progress is the answer, nothing runs twice.
                report.in_progress = Some(running);
                return in_progress(conn, migrations, report, started).await;
            }
        };
        report.lock_wait_ms = waited.as_millis() as u64;
        tracing::info!(step = "lock", wait_ms = report.lock_wait_ms, "migration lock taken");
        let outcome = match locked(conn, migrations, command, settings, before_change, &mut report).await {
            Err(Error::InProgress(running)) => {
                // The lock went to the detached session with the build.
                report.in_progress = Some(*running);
                return in_progress(conn, migrations, report, started).await;
            }
            outcome => outcome.map_err(|e| e.after_applying(applied_labels(&report))),
        };
        // Release even when the work failed; if this fails too, closing the connection frees it.
        let released = db::unlock(conn).await;
        outcome?;
        released?;
    } else {
        let history = db::history(conn).await?;
        let target = if let Command::Plan { target } = command { target } else { None };
        let plan = plan::plan(migrations, &history, target)?;
        report.schema_version = plan.current;
        report.pending = plan.pending.iter().map(|m| Pending::of(m)).collect();
        report.unknown_versions = plan.unknown.iter().map(|a| a.version).collect();
        report.status = match command {
            Command::Plan { .. } => {
                if !plan.pending.is_empty() {
                    let measured =
                        db::measured_build_speed(conn).await.map_err(|e| Error::db("reading the builds' speeds", e))?;
                    let speeds = crate::impact::Speeds {
                        index_build_rows_per_s: measured.map_or(settings.index_build_rows_per_s, |(s, _)| s),
                        index_build_source: match measured {
                            Some((_, n)) => format!("measured: the median of this database's last {n} index builds"),
                            None => "INDEX_BUILD_ROWS_PER_S (no index build of this database recorded yet)".into(),
                        },
                        rewrite_rows_per_s: settings.table_rewrite_rows_per_s,
                        scan_rows_per_s: settings.table_scan_rows_per_s,
                    };
                    let base = applied_migrations(migrations, &history);
                    let impacts = crate::impact::assess(conn, &base, &plan.pending, &speeds, settings.deadline).await?;
                    for (p, impact) in report.pending.iter_mut().zip(impacts) {
                        p.impact = Some(impact);
                    }
                    report.plan_speeds = Some(speeds);
                }
                "planned"
            }
            Command::Verify { data } => {
                let mut verification =
                    verify_applied(conn, migrations, &history, Expectation::Fresh, settings.deadline).await?;
                if data {
                    crate::data_check::job_progress(conn, &mut verification).await?;
                }
                report.verification = Some(verification);
                "verified"
            }
            _ if report.pending.is_empty() => "up_to_date",
            _ => "pending",
        };
        if command == Command::Status {
            report.history = Some(history);
            if let Some(session) = detached::find(conn, |v| label_of(migrations, v)).await?
                && session.active
            {
                log_progress(&session.progress);
                report.status = "in_progress";
                report.in_progress = Some(session.progress);
            }
            report.batches_in_progress =
                crate::batch::progress(conn).await?.into_iter().filter(|p| !p.finished).collect();
        }
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// `002_optimize_for_scale` for a version this binary knows, else `002`.
fn label_of(migrations: &Migrations, version: i64) -> String {
    migrations.get(version).map_or_else(|| format!("{version:03}"), Migration::label)
}

fn log_progress(p: &detached::InProgress) {
    tracing::info!(step = "detached", migration = %p.migration, index = %p.index, pid = p.pid, phase = %p.phase,
        percent = p.percent, rows_per_s = p.rows_per_s, eta_s = p.eta_s, running_s = p.running_s, "{}", p.message);
}

/// The `in_progress` answer: the detached statement's progress with where the history stands.
async fn in_progress(
    conn: &mut PgConnection,
    migrations: &Migrations,
    mut report: Report,
    started: Instant,
) -> Result<Report> {
    if let Some(p) = &report.in_progress {
        log_progress(p);
    }
    report.status = "in_progress";
    let history = db::history(conn).await?;
    report.schema_version = history.iter().filter(|a| a.state == State::Applied).map(|a| a.version).max();
    report.pending = plan::plan(migrations, &history, None)?.pending.iter().map(|m| Pending::of(m)).collect();
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// How often a run waiting for our detached build looks at it again.
const DETACHED_POLL: Duration = Duration::from_secs(1);

/// Takes the migration lock. Held by our detached build: waits for it while the time allows
/// (then `Err(progress)`); held by its session once the build is done: ends that session; held by
/// anyone else: waits `advisory_wait` (cut to the deadline), then `LockTimeout` naming the holder.
async fn acquire(
    conn: &mut PgConnection,
    migrations: &Migrations,
    settings: &RunSettings,
) -> Result<std::result::Result<Duration, detached::InProgress>> {
    let started = Instant::now();
    let wait = settings.deadline.cap_wait(settings.advisory_wait);
    let mut pause = Duration::from_millis(50);
    let mut logged: Option<Instant> = None;
    loop {
        if db::try_lock(conn).await? {
            return Ok(Ok(started.elapsed()));
        }
        match detached::find(conn, |v| label_of(migrations, v)).await? {
            Some(session) if session.active => {
                if !settings.deadline.has(DETACHED_POLL + MIN_TIME_TO_START) {
                    return Ok(Err(session.progress));
                }
                if logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                    log_progress(&session.progress);
                    logged = Some(Instant::now());
                }
                tokio::time::sleep(DETACHED_POLL).await;
                continue;
            }
            Some(session) if detached::end_if_finished(conn, &session).await? => continue,
            _ => {}
        }
        let left = wait.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(db::still_held(conn, started.elapsed()).await);
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_millis(1000));
    }
}

/// The migrations wholly applied according to the history, oldest first: what the expected
/// schema is derived from.
fn applied_migrations<'a>(migrations: &'a Migrations, history: &[Applied]) -> Vec<&'a Migration> {
    history.iter().filter(|a| a.state == State::Applied).filter_map(|a| migrations.get(a.version)).collect()
}

/// The migrations a report says this run applied (`001_add_execution_arn`).
pub fn applied_labels(report: &Report) -> Vec<String> {
    report.applied.iter().map(|s| format!("{:03}_{}", s.version, s.name)).collect()
}

/// What this run finished, for `DeadlineReached`.
fn labels<'a>(ms: impl IntoIterator<Item = &'a Migration>) -> Vec<String> {
    ms.into_iter().map(Migration::label).collect()
}

async fn locked(
    conn: &mut PgConnection,
    migrations: &Migrations,
    command: Command,
    settings: &RunSettings,
    before_change: Option<BeforeChange<'_>>,
    report: &mut Report,
) -> Result<()> {
    db::ensure_history(conn).await?;
    db::ensure_expected_table(conn).await;
    let history = db::history(conn).await?;
    match command {
        Command::Migrate { target } => {
            let plan = plan::plan(migrations, &history, target)?;
            report.unknown_versions = plan.unknown.iter().map(|a| a.version).collect();
            let schema = db::current_schema(conn).await?;
            let base = applied_migrations(migrations, &history);
            if !plan.pending.is_empty() {
                // before_migrate reads none of the refresh role's facts.
                crate::privileges::before_migrate(
                    &db::role_facts(conn, &schema, crate::config::DEFAULT_REFRESH_ROLE).await?,
                )?;
            }
            // One replay for the whole run: the catalog after each pending migration that creates
            // an object the live schema has already (adoption), and after all of them (verification).
            // It runs before anything changes (the snapshot included), so a statement PostgreSQL would
            // refuse to this user stops the run now as InsufficientPrivilege, not half-way.
            let replay = if plan.pending.is_empty() {
                verify::Replay::default()
            } else {
                let watch = verify::live_keys(conn, &schema).await?;
                verify::replay(conn, &base, &plan.pending, &watch, settings.deadline).await?
            };
            if let (Some(first), Some(hook)) = (plan.pending.first(), before_change) {
                report.snapshot = Some(hook(first.label()).await?);
            }
            if let Some((i, Error::InvalidMigration { problem, .. })) = &replay.stopped {
                tracing::warn!(step = "adopt", migration = %plan.pending[*i].label(), %problem,
                    "cannot derive what it and the migrations after it create");
            }
            let mut done: Vec<&Migration> = Vec::new();
            for (i, m) in plan.pending.iter().enumerate() {
                if !settings.deadline.has(MIN_TIME_TO_START) {
                    return Err(Error::DeadlineReached {
                        during: format!("before starting migration {}", m.label()),
                        remaining_ms: remaining_ms(settings),
                        done: labels(done),
                        left: labels(plan.pending[i..].iter().copied()),
                    });
                }
                let left = || labels(plan.pending[i..].iter().copied());
                // A migration that does not apply to an empty schema cannot be adopted into; its own
                // statements then fail with their real error (or verification names the problem).
                if let Some(Some(step)) = replay.steps.get(i) {
                    adopt_existing(
                        conn,
                        m,
                        &schema,
                        &step.new,
                        &step.after,
                        settings,
                        report,
                        &labels(done.clone()),
                        &left(),
                    )
                    .await?;
                }
                let step = apply(conn, m, &m.up, settings, &labels(done.clone()), &left(), Direction::Up).await?;
                tracing::info!(step = "migration", version = m.version, name = %m.name, duration_ms = step.duration_ms,
                    lock_retries = step.lock_retries, "applied");
                report.applied.push(step);
                done.push(m);
            }
            report.status = if report.applied.is_empty() { "up_to_date" } else { "applied" };
            let history = if done.is_empty() { history } else { db::history(conn).await? };
            report.schema_version = history.iter().map(|a| a.version).max();
            report.pending = plan::plan(migrations, &history, None)?.pending.iter().map(|m| Pending::of(m)).collect();
            // The replay's catalog is what verification would derive when the history now lists
            // the base and then the pending migrations, in that order.
            let replayed: Vec<i64> = base.iter().chain(&plan.pending).map(|m| m.version).collect();
            let derived = replay
                .catalog
                .filter(|_| applied_migrations(migrations, &history).iter().map(|m| m.version).eq(replayed));
            let source = match derived {
                Some(catalog) => Expectation::Derived(catalog),
                None => Expectation::Cached,
            };
            let verification = verify_applied(conn, migrations, &history, source, settings.deadline).await?;
            let failures = verification.failures.clone();
            report.verification = Some(verification);
            if !failures.is_empty() {
                return Err(Error::VerifyFailed(failures));
            }
            // Only once the schema verified: the earlier text's result is then this text's.
            for (version, replaced) in &plan.restamp {
                if let Some(m) = migrations.get(*version) {
                    db::restamp(conn, *version, replaced, &m.up.checksum).await?;
                    tracing::info!(step = "restamp", version, replaced = %replaced, checksum = %m.up.checksum,
                        "the history held the checksum of an earlier text this file replaces; recorded the new one");
                }
            }
        }
        Command::Rollback { to } => {
            let undo = plan::rollback_plan(migrations, &history, to)?;
            if let (Some(first), Some(hook)) = (undo.first(), before_change) {
                report.snapshot = Some(hook(format!("rollback-of-{}", first.label())).await?);
            }
            let mut done = Vec::new();
            for (i, m) in undo.iter().enumerate() {
                let down = m.down.as_ref().expect("rollback_plan only returns reversible migrations");
                let left = labels(undo[i..].iter().copied());
                let step = apply(conn, m, down, settings, &labels(done.clone()), &left, Direction::Down).await?;
                tracing::info!(step = "rollback", version = m.version, name = %m.name, "rolled back");
                done.push(*m);
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

fn remaining_ms(settings: &RunSettings) -> u64 {
    settings.deadline.remaining().map_or(0, |r| r.as_millis() as u64)
}

/// Before a migration runs: every object it creates that already exists is adopted as it is,
/// or converged to the migration's shape (see `adopt`). Objects that earlier applied migrations
/// created are not looked at: reshaping those is the new migration's own work.
#[allow(clippy::too_many_arguments)]
async fn adopt_existing(
    conn: &mut PgConnection,
    m: &Migration,
    schema: &str,
    new: &[String],
    after: &verify::Catalog,
    settings: &RunSettings,
    report: &mut Report,
    done: &[String],
    left: &[String],
) -> Result<()> {
    if new.is_empty() {
        return Ok(());
    }
    let mut live = verify::live(conn, schema).await?;
    // The whole migration is checked for refusals before any object is converged: a later object that
    // must be refused (what a swap cannot carry, a table where a view belongs) stops the migration with
    // nothing converged. Deciding reads and changes nothing; each object is decided again below, against
    // the catalog as the conversions before it left it.
    for key in new {
        adopt::decide(conn, key, after, &live).await?;
    }
    for key in new {
        match adopt::decide(conn, key, after, &live).await? {
            Decision::Absent | Decision::Leave => {}
            Decision::Adopt(adoption) => {
                tracing::info!(step = "adopt", object = %adoption.object, "already in the migrations' shape");
                report.adoption.push(adoption);
            }
            Decision::Converge(mut adoption, steps) => {
                tracing::warn!(step = "adopt", object = %adoption.object, was = adoption.was.as_deref().unwrap_or(""),
                    "converging to the migrations' shape");
                for step in &steps {
                    adoption.cleaned_up.extend(run_step(conn, m, step, settings, done, left).await?);
                }
                report.adoption.push(adoption);
                live = verify::live(conn, schema).await?;
            }
        }
    }
    Ok(())
}

/// Runs one convergence step (before migration `m`) with the same lock_timeout, retries, deadline
/// and index builds as migrations: a build too long for the time left runs detached. A failed step
/// removes what the object's steps built (`Step::undo`) and keeps the SQLSTATE; returns what it
/// cleaned up of an interrupted earlier attempt.
async fn run_step(
    conn: &mut PgConnection,
    m: &Migration,
    step: &Step,
    settings: &RunSettings,
    done: &[String],
    left: &[String],
) -> Result<Vec<String>> {
    let deadline = |during: String| Error::DeadlineReached {
        during: format!("{during} while {}", step.what),
        remaining_ms: remaining_ms(settings),
        done: done.to_vec(),
        left: left.to_vec(),
    };
    let mut retries = 0;
    let mut cleaned = Vec::new();
    let outcome = if step.in_transaction {
        let statements: Vec<Statement> =
            step.statements.iter().map(|s| Statement { sql: s.clone(), line: 0 }).collect();
        transaction(conn, &statements, settings, Bookkeeping::None, &mut retries).await.map_err(|f| match f {
            TxError::Deadline(_, during) => Err(deadline(during)),
            TxError::Statement(i, e) => Ok((step.statements[i].as_str(), e)),
            TxError::Bookkeeping(e) => Err(Error::db(step.what.clone(), e)),
        })
    } else {
        let what =
            format!("converging an existing object before migration {}", left.first().map_or("", |l| l.as_str()));
        let mut result = Ok(());
        for sql in &step.statements {
            let stmt = Statement { sql: sql.clone(), line: 0 };
            let building = stmt.index_build();
            let ran = match &building {
                None => run_statement(conn, sql, settings, &mut retries).await.map_err(BuildFailure::Statement),
                Some(build) => {
                    let too_large =
                        |rows, left_now| too_large(&what, build, rows, settings.index_build_rows_per_s, left_now, done);
                    build_index(conn, sql, build, settings, &mut retries, too_large).await.map(|dropped| {
                        cleaned.extend(dropped.into_iter().map(|q| {
                            format!("dropped the INVALID index {q} an interrupted build had left, then built it again")
                        }))
                    })
                }
            };
            let Err(f) = ran else { continue };
            // A build cut short leaves its index INVALID: the step's undo drops it.
            result = Err(match f {
                BuildFailure::Statement(StatementFailure::Deadline(during)) => Err(deadline(during)),
                BuildFailure::Statement(StatementFailure::Db(e)) => Ok((sql.as_str(), e)),
                // Built beside the old index on a session of its own: the next run finds it built and
                // only swaps (`adopt::decide`); nothing to undo.
                BuildFailure::TooLarge(e, dropped) => match (&settings.detach, &building) {
                    (Some(to), Some(build)) => {
                        let what = (m.version, detached::Kind::IndexBuild, build.name.as_str());
                        Err(detach(conn, to, m, what, sql, dropped, settings.deadline).await)
                    }
                    _ => Err(e),
                },
            });
            break;
        }
        result
    };
    let outcome = match outcome {
        Ok(()) => Ok(()),
        Err(Err(e)) => Err(e),
        Err(Ok((sql, e))) => {
            let removed = undo_step(conn, step, settings).await;
            Err(step_failed(step, sql, retries, removed, e))
        }
    };
    let reset = db::reset_limits(conn).await;
    outcome?;
    reset.map_err(|e| Error::db("resetting the session's timeouts", e))?;
    Ok(cleaned)
}

/// Why an index build did not finish.
enum BuildFailure {
    Statement(StatementFailure),
    /// It was not started: it could not finish in the time left. With the INVALID indexes dropped first.
    TooLarge(Error, Vec<String>),
}

/// One `CREATE INDEX CONCURRENTLY`, as every build runs (a migration's and adoption's): each
/// attempt first drops an INVALID index of that name, left by an attempt cut short (a lock
/// timeout, a cancel, a killed backend: `IF NOT EXISTS` would skip it, and without it the retry
/// fails with "already exists"); a build `too_large(rows, time left)` refuses is not started.
/// Returns the (schema-qualified) INVALID indexes it dropped.
async fn build_index(
    conn: &mut PgConnection,
    sql: &str,
    build: &crate::split::IndexBuild,
    settings: &RunSettings,
    retries: &mut u32,
    too_large: impl Fn(f64, Duration) -> Option<Error>,
) -> std::result::Result<Vec<String>, BuildFailure> {
    let db_failure = |e| BuildFailure::Statement(StatementFailure::Db(e));
    let mut estimated = false;
    let mut dropped = Vec::new();
    loop {
        let existing = db::index_on_table(conn, &build.table, &build.name).await.map_err(db_failure)?;
        if let Some((qualified, false)) = &existing {
            tracing::warn!(step = "repair", index = %qualified, "dropping an index left INVALID by an interrupted build");
            let drop = db::drop_index_concurrently(qualified);
            run_statement(conn, &drop, settings, retries).await.map_err(BuildFailure::Statement)?;
            dropped.push(qualified.clone());
        }
        if !estimated
            && !matches!(existing, Some((_, true)))
            && let Some(left_now) = settings.deadline.remaining()
        {
            estimated = true;
            let rows = db::estimated_rows(conn, &build.table).await.map_err(db_failure)?.unwrap_or(0.0);
            if let Some(err) = too_large(rows, left_now) {
                return Err(BuildFailure::TooLarge(err, dropped));
            }
        }
        db::tune_build(conn).await.map_err(db_failure)?;
        let started = Instant::now();
        if attempt_statement(conn, sql, settings, retries).await.map_err(BuildFailure::Statement)? {
            // This database's own speed, for plan's estimates.
            let took = started.elapsed();
            if let Ok(Some(rows)) = db::estimated_rows(conn, &build.table).await {
                db::record_build(conn, build.name.trim_matches('"'), &build.table, rows, took).await;
            }
            return Ok(dropped);
        }
    }
}

/// Runs a failed step's `undo`; says what it removed, or what it could not.
async fn undo_step(conn: &mut PgConnection, step: &Step, settings: &RunSettings) -> String {
    let mut retries = 0;
    for sql in &step.undo {
        if let Err(f) = run_statement(conn, sql, settings, &mut retries).await {
            let why = match f {
                StatementFailure::Deadline(during) => format!("the deadline came {during}"),
                StatementFailure::Db(e) => crate::error::cause_chain(&e),
            };
            tracing::warn!(step = "adopt", statement = %sql, %why, "could not remove what the failed step built");
            return format!("removing what it built failed ({sql}: {why}); the next migrate removes it first");
        }
    }
    if step.undo.is_empty() {
        "nothing of this step was kept".into()
    } else {
        format!("what it built was removed ({})", step.undo.join("; "))
    }
}

/// A convergence step's failure, with its SQLSTATE; a lock timeout after the retries points to the runbook.
fn step_failed(step: &Step, sql: &str, retries: u32, removed: String, e: sqlx::Error) -> Error {
    let state = db::sqlstate(&e).map(|s| format!(" with SQLSTATE {s}")).unwrap_or_default();
    let lock = if db::is_lock_timeout(&e) {
        format!(
            " (another session held a lock on it for longer than lock_timeout, {retries} retries: a long reader; \
             find it in pg_stat_activity, see the runbook's MigrationFailed, and migrate again)"
        )
    } else {
        String::new()
    };
    Error::db(
        format!("adopting an existing object: {} failed{state}{lock} (statement: {sql}); {removed}", step.what),
        e,
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
}

enum StatementFailure {
    Db(sqlx::Error),
    Deadline(String),
}

enum Retry {
    Again,
    Deadline(String),
    Fail,
}

/// After a failed statement: retry it (lock timeout, retries and time left), stop at the
/// deadline, or fail.
async fn retry_or_stop(err: &sqlx::Error, settings: &RunSettings, retries: &mut u32) -> Retry {
    let deadline = settings.deadline;
    if db::is_lock_timeout(err) {
        if *retries >= settings.lock_retries {
            return Retry::Fail;
        }
        let pause = settings.backoff(*retries + 1);
        // No retry starts unless one whole lock_timeout fits after the pause.
        if !deadline.has(pause + settings.lock_timeout) {
            return Retry::Deadline(format!("waiting for a lock (after {} lock_timeout retries)", *retries));
        }
        *retries += 1;
        tracing::warn!(
            step = "lock_retry",
            attempt = *retries,
            pause_ms = pause.as_millis() as u64,
            "lock_timeout; retrying"
        );
        tokio::time::sleep(pause).await;
        return Retry::Again;
    }
    if db::is_query_canceled(err) && deadline.binds(settings.statement_timeout) {
        return Retry::Deadline("while a statement ran (PostgreSQL cancelled it)".into());
    }
    Retry::Fail
}

/// One statement outside a transaction, under `min(configured, time left)`, retried on lock timeouts.
async fn run_statement(
    conn: &mut PgConnection,
    sql: &str,
    settings: &RunSettings,
    retries: &mut u32,
) -> std::result::Result<(), StatementFailure> {
    while !attempt_statement(conn, sql, settings, retries).await? {}
    Ok(())
}

enum BatchFailure {
    Statement(StatementFailure),
    Bookkeeping(Error),
}

/// A `-- migrate:batch` statement: batch after batch, each its own transaction under the usual
/// limits and lock retries, paced, until one changes no row or the time left cannot fit another.
/// Returns what this run did beside how it ended.
async fn run_batched(
    conn: &mut PgConnection,
    version: i64,
    batch: &crate::batch::Batch,
    sql: &str,
    settings: &RunSettings,
    retries_total: &mut u32,
) -> (crate::batch::Summary, std::result::Result<(), BatchFailure>) {
    let started = Instant::now();
    let mut summary = crate::batch::Summary { line: batch.statement_line, rows: 0, batches: 0, rows_per_s: 0.0 };
    let (mut left, done_before) = match crate::batch::begin(conn, version, batch).await {
        Ok(begun) => begun,
        Err(e) => return (summary, Err(BatchFailure::Bookkeeping(e))),
    };
    let mut longest = Duration::ZERO;
    let outcome = loop {
        let need = crate::batch::needed(longest, settings.lock_timeout, Duration::ZERO);
        if !settings.deadline.has(need) {
            break Err(BatchFailure::Statement(StatementFailure::Deadline(format!(
                "between batches of the batched statement ({} rows in {} batches this run{}; it resumes where it \
                 stopped)",
                summary.rows,
                summary.batches,
                left.map(|l| format!(", ~{l} left")).unwrap_or_default()
            ))));
        }
        // Each batch gets the whole lock-retry allowance: a busy moment stalls one batch, not the rest.
        let mut retries = 0;
        let one = loop {
            if let Err(e) = limits(conn, settings).await {
                break Err(StatementFailure::Db(e));
            }
            let t = Instant::now();
            match crate::batch::one(conn, version, batch, sql, left).await {
                Ok(rows) => break Ok((rows, t.elapsed())),
                Err(e) => match retry_or_stop(&e, settings, &mut retries).await {
                    Retry::Again => {}
                    Retry::Deadline(during) => break Err(StatementFailure::Deadline(during)),
                    Retry::Fail => break Err(StatementFailure::Db(e)),
                },
            }
        };
        *retries_total += retries;
        let (rows, took) = match one {
            Ok(done) => done,
            Err(f) => break Err(BatchFailure::Statement(f)),
        };
        if rows == 0 {
            break Ok(());
        }
        longest = longest.max(took);
        summary.rows += rows;
        summary.batches += 1;
        left = left.map(|l| (l - i64::try_from(rows).unwrap_or(i64::MAX)).max(0));
        crate::batch::log(version, batch, rows, summary.rows, started, left);
        if let Some(function) = &settings.metrics_function {
            let done = crate::batch::percent(done_before + i64::try_from(summary.rows).unwrap_or(i64::MAX), left);
            let now = chrono::Utc::now().timestamp_millis();
            let rate = crate::batch::rate(summary.rows, started.elapsed());
            let metrics =
                [(crate::metrics::BATCH_ROWS_PER_SECOND, Some(rate)), (crate::metrics::BATCH_PERCENT_DONE, done)];
            println!("{}", crate::metrics::emf(function, now, &metrics));
        }
        tokio::time::sleep(settings.deadline.cap_wait(batch.pause)).await;
    };
    summary.rows_per_s = crate::batch::rate(summary.rows, started.elapsed()).round();
    (summary, outcome)
}

/// One attempt at a statement: `Ok(true)` when it ran, `Ok(false)` when it hit a lock timeout
/// and may be tried again (after the backoff, which this has already waited).
async fn attempt_statement(
    conn: &mut PgConnection,
    sql: &str,
    settings: &RunSettings,
    retries: &mut u32,
) -> std::result::Result<bool, StatementFailure> {
    if !settings.deadline.has(Duration::from_millis(100)) {
        return Err(StatementFailure::Deadline("before a statement could start".into()));
    }
    limits(conn, settings).await.map_err(StatementFailure::Db)?;
    match db::exec(conn, sql).await {
        Ok(()) => Ok(true),
        Err(e) => match retry_or_stop(&e, settings, retries).await {
            Retry::Again => Ok(false),
            Retry::Deadline(during) => Err(StatementFailure::Deadline(during)),
            Retry::Fail => Err(StatementFailure::Db(e)),
        },
    }
}

/// `statement_timeout` and `lock_timeout` for the next statement, both cut to the time left.
async fn limits(conn: &mut PgConnection, settings: &RunSettings) -> std::result::Result<(), sqlx::Error> {
    let deadline = settings.deadline;
    db::set_limits(conn, deadline.cap(settings.statement_timeout), deadline.cap(Some(settings.lock_timeout))).await
}

/// Runs one script: in one transaction with its history change, or statement by statement.
async fn apply(
    conn: &mut PgConnection,
    m: &Migration,
    script: &Script,
    settings: &RunSettings,
    done: &[String],
    left: &[String],
    direction: Direction,
) -> Result<AppliedStep> {
    let started = Instant::now();
    let statements = script.statements();
    let mut step = AppliedStep {
        version: m.version,
        name: m.name.clone(),
        duration_ms: 0,
        lock_retries: 0,
        transactional: !script.no_transaction,
        rebuilt_invalid_indexes: Vec::new(),
        batched: Vec::new(),
    };
    let bookkeeping = |err: sqlx::Error| Error::db(format!("recording migration {} in the history", m.label()), err);
    // What earlier runs did detached belongs to one application of the migration: a rollback forgets
    // it before it starts (so a re-application after it, even one stopped part-way, runs every
    // statement again), and so does the application once recorded (only a no-transaction script's
    // statements run detached, so only such an application has anything to forget).
    if direction == Direction::Down {
        detached::forget(conn, m.version).await?;
    }
    let outcome = if script.no_transaction {
        apply_statements(conn, m, script, &statements, settings, done, left, direction, &mut step).await
    } else {
        let book = match direction {
            Direction::Up => Bookkeeping::Record { m, started, applied_by: &settings.applied_by },
            Direction::Down => Bookkeeping::Forget(m.version),
        };
        transaction(conn, &statements, settings, book, &mut step.lock_retries).await.map_err(|f| match f {
            TxError::Deadline(i, during) => Error::DeadlineReached {
                during: format!(
                    "{during} in migration {} at line {} (its transaction was rolled back)",
                    m.label(),
                    statements[i].line
                ),
                remaining_ms: remaining_ms(settings),
                done: done.to_vec(),
                left: left.to_vec(),
            },
            TxError::Statement(i, e) => migration_failed(m, script, &statements[i], &e, done, None),
            TxError::Bookkeeping(e) => bookkeeping(e),
        })
    };
    // Leave the session as we found it even after a failure.
    let reset = db::reset_limits(conn).await;
    outcome?;
    reset.map_err(|e| Error::db("resetting the session's timeouts", e))?;
    if direction == Direction::Up && script.no_transaction {
        detached::forget(conn, m.version).await?;
    }
    step.duration_ms = started.elapsed().as_millis() as u64;
    Ok(step)
}

/// An index build that cannot finish in the time left, refused before it starts where the run has a
/// deadline but nowhere to detach it (a library caller's settings): it would be cancelled at the
/// deadline, left INVALID, and every retry would start over. `what` names
/// the work (`migration 002_optimize_for_scale`).
fn too_large(
    what: &str,
    build: &crate::split::IndexBuild,
    rows: f64,
    rows_per_s: f64,
    left: Duration,
    done: &[String],
) -> Option<Error> {
    let needed = rows / rows_per_s;
    (needed > left.as_secs_f64()).then(|| {
        Error::DeadlineTooShort(format!(
            "{} would build index {} on {} (~{rows:.0} rows): at the assumed {rows_per_s:.0} rows/s \
             (INDEX_BUILD_ROWS_PER_S) that takes ~{needed:.0} s, more than the {:.0} s this invocation has left. \
             It would be cancelled at the deadline and every retry would start over, so it was not started; this \
             run has no session to detach it to (the Lambda always has one: it runs such statements detached){}",
            what,
            build.name,
            build.table,
            left.as_secs_f64(),
            if done.is_empty() { String::new() } else { format!(". Applied this run: {}", done.join(", ")) }
        ))
    })
}

/// What a transaction records in the history besides its statements.
#[derive(Clone, Copy)]
enum Bookkeeping<'a> {
    /// Nothing (a convergence step).
    None,
    /// The migration is applied.
    Record { m: &'a Migration, started: Instant, applied_by: &'a str },
    /// The migration is rolled back.
    Forget(i64),
}

enum TxError {
    /// Statement `i` failed (after the lock retries the time allowed).
    Statement(usize, sqlx::Error),
    /// The deadline stopped the retries of statement `i`, or PostgreSQL cancelled it.
    Deadline(usize, String),
    /// Beginning, recording in the history or committing failed.
    Bookkeeping(sqlx::Error),
}

/// Statements and their history change in one transaction, retried whole after a lock timeout
/// while the time allows.
async fn transaction(
    conn: &mut PgConnection,
    statements: &[Statement],
    settings: &RunSettings,
    book: Bookkeeping<'_>,
    retries: &mut u32,
) -> std::result::Result<(), TxError> {
    loop {
        match attempt_transaction(conn, statements, settings, book).await {
            Err(TxError::Statement(i, e)) => match retry_or_stop(&e, settings, retries).await {
                Retry::Again => {}
                Retry::Deadline(during) => return Err(TxError::Deadline(i, during)),
                Retry::Fail => return Err(TxError::Statement(i, e)),
            },
            other => return other,
        }
    }
}

/// One attempt: statements and their history change in one transaction, each statement under the limits.
async fn attempt_transaction(
    conn: &mut PgConnection,
    statements: &[Statement],
    settings: &RunSettings,
    book: Bookkeeping<'_>,
) -> std::result::Result<(), TxError> {
    let mut tx = conn.begin().await.map_err(TxError::Bookkeeping)?;
    for (i, stmt) in statements.iter().enumerate() {
        let ran = match limits(&mut tx, settings).await {
            Ok(()) => db::exec(&mut tx, &stmt.sql).await,
            Err(e) => Err(e),
        };
        if let Err(e) = ran {
            let _ = tx.rollback().await;
            return Err(TxError::Statement(i, e));
        }
    }
    let recorded = match book {
        Bookkeeping::None => Ok(()),
        Bookkeeping::Record { m, started, applied_by } => {
            db::record(&mut tx, m.version, &m.name, &m.up.checksum, started.elapsed(), applied_by).await
        }
        Bookkeeping::Forget(version) => db::forget(&mut tx, version).await,
    };
    if let Err(e) = recorded {
        let _ = tx.rollback().await;
        return Err(TxError::Bookkeeping(e));
    }
    tx.commit().await.map_err(TxError::Bookkeeping)
}

/// A no-transaction script, statement by statement: INVALID indexes it builds are repaired
/// first, index builds that cannot finish before the deadline are refused before they start,
/// and the deadline stops it cleanly between statements.
#[allow(clippy::too_many_arguments)]
async fn apply_statements(
    conn: &mut PgConnection,
    m: &Migration,
    script: &Script,
    statements: &[Statement],
    settings: &RunSettings,
    done: &[String],
    left: &[String],
    direction: Direction,
    step: &mut AppliedStep,
) -> Result<()> {
    let started = Instant::now();
    let note = Some(partial_note(m, direction));
    let marked = match direction {
        Direction::Up => {
            db::mark_applying(conn, m.version, &m.name, &m.up.checksum, &settings.applied_by).await.map(Some)
        }
        Direction::Down => db::mark_rolling_back(conn, m.version).await.map(|()| None),
    };
    let before = marked.map_err(|e| Error::db(format!("recording the start of {} in the history", m.label()), e))?;
    for (i, stmt) in statements.iter().enumerate() {
        // A first statement that failed changed nothing (one statement is atomic): the history goes
        // back to what it said before.
        let nothing_changed = i == 0 && before.is_some();
        let deadline = |during: String| Error::DeadlineReached {
            during: format!("{during} in {} at line {}", script.file, stmt.line),
            remaining_ms: remaining_ms(settings),
            done: done
                .iter()
                .cloned()
                .chain((i > 0).then(|| format!("{}: statements 1-{i} of {}", script.file, statements.len())))
                .collect(),
            left: std::iter::once(format!(
                "{} from line {} (statement {} of {})",
                script.file,
                stmt.line,
                i + 1,
                statements.len()
            ))
            .chain(left.iter().skip(1).cloned())
            .chain(note.clone().filter(|_| !nothing_changed))
            .collect(),
        };
        let fail = |e: &sqlx::Error| {
            migration_failed(m, script, stmt, e, done, if nothing_changed { None } else { note.clone() })
        };
        let failure = |f: StatementFailure| match f {
            StatementFailure::Deadline(during) => deadline(during),
            StatementFailure::Db(e) => fail(&e),
        };
        if let Some(batch) = script.batch_at(stmt.line) {
            let (summary, outcome) =
                run_batched(conn, m.version, batch, &stmt.sql, settings, &mut step.lock_retries).await;
            let committed = summary.batches > 0;
            step.batched.push(summary);
            if let Err(f) = outcome {
                if let (true, false, Some(before)) = (nothing_changed, committed, &before) {
                    db::unmark_applying(conn, m.version, before.as_deref()).await.map_err(|e| {
                        Error::db(format!("restoring the history of {} after its first statement failed", m.label()), e)
                    })?;
                }
                return Err(match f {
                    BatchFailure::Statement(f) => failure(f),
                    BatchFailure::Bookkeeping(e) => e,
                });
            }
            continue;
        }
        let Some(build) = stmt.index_build() else {
            let ran = match stmt.detachable() {
                Some(long) => run_long(conn, m, stmt, &long, settings, direction, step).await?,
                None => run_plain(conn, m, script, stmt, settings, direction, step).await?,
            };
            if let Err(f) = ran {
                if let (true, Some(before)) = (nothing_changed, &before) {
                    db::unmark_applying(conn, m.version, before.as_deref()).await.map_err(|e| {
                        Error::db(format!("restoring the history of {} after its first statement failed", m.label()), e)
                    })?;
                }
                return Err(failure(f));
            }
            continue;
        };
        let what = format!("migration {}", m.label());
        let too_large =
            |rows, left_now| too_large(&what, &build, rows, settings.index_build_rows_per_s, left_now, done);
        let dropped = match build_index(conn, &stmt.sql, &build, settings, &mut step.lock_retries, too_large).await {
            Ok(dropped) => dropped,
            Err(BuildFailure::Statement(f)) => return Err(failure(f)),
            Err(BuildFailure::TooLarge(_, dropped)) if settings.detach.is_some() && direction == Direction::Up => {
                let to = settings.detach.as_ref().expect("checked above");
                let what = (m.version, detached::Kind::IndexBuild, build.name.as_str());
                return Err(detach(conn, to, m, what, &stmt.sql, dropped, settings.deadline).await);
            }
            Err(BuildFailure::TooLarge(err, _)) => {
                // Refused before it started: if it was the script's first step, nothing changed.
                if let (true, Some(before)) = (nothing_changed, &before) {
                    db::unmark_applying(conn, m.version, before.as_deref()).await.map_err(|e| {
                        Error::db(
                            format!("restoring the history of {} after its first build was refused", m.label()),
                            e,
                        )
                    })?;
                }
                return Err(err);
            }
        };
        step.rebuilt_after_dropping(&dropped, &build.name);
    }
    match direction {
        Direction::Up => {
            db::record(conn, m.version, &m.name, &m.up.checksum, started.elapsed(), &settings.applied_by).await
        }
        Direction::Down => db::forget(conn, m.version).await,
    }
    .map_err(|e| Error::db(format!("recording migration {} in the history", m.label()), e))
}

/// A `REINDEX … CONCURRENTLY` or `VALIDATE CONSTRAINT` of a no-transaction script: skipped when
/// an earlier run finished it (detached), run here when it fits the time left, else started
/// detached (an `InProgress` error). What an interrupted `REINDEX` left INVALID is dropped first.
async fn run_long(
    conn: &mut PgConnection,
    m: &Migration,
    stmt: &Statement,
    long: &crate::split::Detachable,
    settings: &RunSettings,
    direction: Direction,
    step: &mut AppliedStep,
) -> Result<std::result::Result<(), StatementFailure>> {
    let (kind, object) = detached::of(long);
    if detached::already_done(conn, m.version, stmt.line, long).await? {
        tracing::info!(
            step = "migration",
            version = m.version,
            line = stmt.line,
            object,
            "already done by an earlier run (detached): not run again"
        );
        return Ok(Ok(()));
    }
    let mut dropped = Vec::new();
    for leftover in detached::leftovers(conn, long).await? {
        tracing::warn!(step = "repair", index = %leftover, "dropping an index left INVALID by an interrupted REINDEX");
        let drop = db::drop_index_concurrently(&leftover);
        if let Err(f) = run_statement(conn, &drop, settings, &mut step.lock_retries).await {
            return Ok(Err(f));
        }
        dropped.push(leftover);
    }
    step.rebuilt_after_dropping(&dropped, object);
    if let (Some(to), Some(left), Direction::Up) = (&settings.detach, settings.deadline.remaining(), direction) {
        let rows = detached::work_rows(conn, long).await?;
        let needed = rows / settings.index_build_rows_per_s;
        if needed > left.as_secs_f64() {
            tracing::info!(
                step = "detached",
                version = m.version,
                object,
                rows,
                needed_s = needed,
                left_s = left.as_secs_f64(),
                "too long for this invocation: running it detached"
            );
            detached::note_start(conn, m.version, stmt.line, long).await?;
            return Err(detach(conn, to, m, (m.version, kind, object), &stmt.sql, dropped, settings.deadline).await);
        }
    }
    Ok(run_statement(conn, &stmt.sql, settings, &mut step.lock_retries).await)
}

/// Any other statement of a no-transaction script. One that an earlier invocation's deadline cut
/// short runs detached this time (in one transaction that records its completion): it would be
/// cut at every deadline. One that a detached run finished is not run again; one whose detached
/// run failed fails the migration with that run's error (a lock timeout there is retried).
#[allow(clippy::too_many_arguments)]
async fn run_plain(
    conn: &mut PgConnection,
    m: &Migration,
    script: &Script,
    stmt: &Statement,
    settings: &RunSettings,
    direction: Direction,
    step: &mut AppliedStep,
) -> Result<std::result::Result<(), StatementFailure>> {
    let up = direction == Direction::Up;
    let record = if up { detached::cut_record(conn, m.version, stmt.line).await? } else { None };
    if let Some(record) = &record {
        if record.finished {
            tracing::info!(
                step = "migration",
                version = m.version,
                line = stmt.line,
                "already done by an earlier run (detached): not run again"
            );
            return Ok(Ok(()));
        }
        match &record.error {
            Some((state, message)) if state != "55P03" => {
                // Reported once: the next migrate, after the cause is fixed, runs it detached again.
                detached::note_cut(conn, m.version, stmt.line).await?;
                return Err(Error::MigrationFailed(Box::new(crate::error::MigrationFailure {
                    version: m.version,
                    name: m.name.clone(),
                    line: stmt.line,
                    statement: shortened(&stmt.sql),
                    sqlstate: Some(state.clone()),
                    position: None,
                    message: format!(
                        "{message} (in its detached run: an earlier invocation's deadline had cut it short)"
                    ),
                    detail: None,
                    applied_before: Vec::new(),
                    note: Some(partial_note(m, direction)),
                })));
            }
            _ => {}
        }
    }
    let wrap = || detached::wrap(&stmt.sql, m.version, stmt.line, settings.lock_timeout);
    if let (Some(true), Some(to), true) =
        (record.as_ref().map(|r| r.cut), &settings.detach, settings.deadline.remaining().is_some())
        && let Some(sql) = &wrap()
    {
        tracing::info!(step = "detached", version = m.version, line = stmt.line, file = %script.file,
            "cut short by an earlier invocation's deadline: running it detached");
        let object = format!("line {}", stmt.line);
        return Err(detach(
            conn,
            to,
            m,
            (m.version, detached::Kind::Statement, &object),
            sql,
            Vec::new(),
            settings.deadline,
        )
        .await);
    }
    let ran = run_statement(conn, &stmt.sql, settings, &mut step.lock_retries).await;
    if let (Err(StatementFailure::Deadline(_)), true, Some(_)) = (&ran, up, &settings.detach)
        && wrap().is_some()
    {
        // The session's statement_timeout is the deadline's, all but spent: lift it for the note.
        db::reset_limits(conn).await.map_err(|e| Error::db("resetting the session's timeouts", e))?;
        detached::note_cut(conn, m.version, stmt.line).await?;
    }
    Ok(ran)
}

/// Starts `sql` detached (see `detached::start`) and returns the `in_progress` answer for it, with
/// the INVALID indexes dropped first; or the error that kept it from starting.
async fn detach(
    conn: &mut PgConnection,
    to: &detached::DetachTo,
    m: &Migration,
    what: (i64, detached::Kind, &str),
    sql: &str,
    dropped: Vec<String>,
    deadline: Deadline,
) -> Error {
    // `_seen` keeps the session until it is found below, should its statement be done already.
    let (pid, _seen) = match detached::start(to, conn, what, sql, deadline).await {
        Ok(started) => started,
        Err(e) => return e,
    };
    let label = |v: i64| if v == m.version { m.label() } else { format!("{v:03}") };
    let mut running = match detached::find(conn, label).await {
        Ok(Some(session)) if session.pid == pid => session.progress,
        Ok(_) => {
            return Error::Database {
                context: format!("starting {} detached for {}", what.2, m.label()),
                cause: format!("its session (pid {pid}) is gone: see the log lines of the detached statement"),
            };
        }
        Err(e) => return e,
    };
    if !dropped.is_empty() {
        tracing::warn!(step = "repair", indexes = %dropped.join(", "),
            "dropped INVALID indexes of an interrupted build before starting detached");
        running.message =
            format!("{}. Dropped first, left INVALID by an interrupted build: {}", running.message, dropped.join(", "));
        running.repaired = dropped;
    }
    Error::InProgress(Box::new(running))
}

/// What the history says after a no-transaction script stopped part-way, and how to go on.
fn partial_note(m: &Migration, direction: Direction) -> String {
    match direction {
        Direction::Down => format!(
            "the history now records {} as partly rolled back (state rolling_back): `migrate` re-applies it, \
             `rollback` runs its down script again",
            m.label()
        ),
        Direction::Up if m.down.is_some() => format!(
            "the history now records {} as partly applied (state applying): `migrate` runs it again, `rollback` to \
             the version before it runs its down script",
            m.label()
        ),
        Direction::Up => format!(
            "the history now records {} as partly applied (state applying): `migrate` runs it again (it has no \
             down script)",
            m.label()
        ),
    }
}

/// A failed statement as an error shows it: on one line, cut after 200 characters.
fn shortened(sql: &str) -> String {
    let statement: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if statement.chars().count() > 200 { statement.chars().take(200).collect::<String>() + "…" } else { statement }
}

fn migration_failed(
    m: &Migration,
    script: &Script,
    stmt: &Statement,
    err: &sqlx::Error,
    applied_before: &[String],
    note: Option<String>,
) -> Error {
    let (message, detail, position) = db::pg_details(err);
    let statement = shortened(&stmt.sql);
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
        note,
    }))
}

/// Where verification's expected catalog comes from.
enum Expectation {
    /// This run's replay derived it: used, and cached for the next runs.
    Derived(verify::Catalog),
    /// The cached one when its key matches; else derived afresh and cached (`migrate`).
    Cached,
    /// Derived afresh; the cache is neither read nor written (`verify`, so a tampered cache cannot hide drift).
    Fresh,
}

/// The live schema compared with what the applied migrations produce.
async fn verify_applied(
    conn: &mut PgConnection,
    migrations: &Migrations,
    history: &[Applied],
    source: Expectation,
    deadline: Deadline,
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let unknown: Vec<String> =
        history.iter().filter(|a| migrations.get(a.version).is_none()).map(|a| format!("{:03}", a.version)).collect();
    if !unknown.is_empty() {
        report.failures.push(format!(
            "the history has migrations this binary does not know ({}): what they produce cannot be derived; \
             verify with the binary that applied them",
            unknown.join(", ")
        ));
    }
    for a in history.iter().filter(|a| a.state == State::RollingBack) {
        report.failures.push(format!(
            "{:03}_{}: a rollback stopped part-way; run migrate to re-apply it, or rollback to finish",
            a.version, a.name
        ));
    }
    for a in history.iter().filter(|a| a.state == State::Applying) {
        report.failures.push(format!(
            "{:03}_{}: it stopped part-way through being applied; run migrate to finish it, or rollback to the \
             version before it to undo it",
            a.version, a.name
        ));
    }
    let applied = applied_migrations(migrations, history);
    report.versions = applied.iter().map(|m| m.version).collect();
    if unknown.is_empty() {
        let schema = db::current_schema(conn).await?;
        // The migrations' own definer functions must be safe at the latest version (a failure). Below
        // it (a `--target`, a rollback) a later migration may be what makes them safe: named, not failed,
        // as is a function of the user's. Whose a function is, the expectation says.
        let findings = verify::definer_findings(conn, &schema).await?;
        let key = match source {
            Expectation::Fresh => None,
            _ => Some(expectation_key(conn, &schema, &applied).await?),
        };
        let unchanged = match (&source, &key) {
            (Expectation::Cached, Some(key)) if findings.is_empty() => unchanged_since_match(conn, key).await,
            _ => None,
        };
        let expected = match unchanged {
            Some(found) => {
                report.expectation = "cached";
                report.comparison = "unchanged";
                report.objects_checked = found.objects;
                report.accepted = found.accepted;
                None
            }
            None => {
                let (expected, from, digest) = expectation(conn, key.as_ref(), &applied, source, deadline).await?;
                report.expectation = from;
                report.comparison = "deep";
                let (live, stamp) = verify::live_stamped(conn, &schema).await?;
                report.objects_checked = expected.order.len();
                let mut failed = false;
                for d in verify::diff(&expected, &live) {
                    failed |= !d.accepted;
                    if d.accepted { report.accepted.push(d.to_string()) } else { report.failures.push(d.to_string()) }
                }
                if let (Some(key), Some(digest), false) = (&key, digest, failed) {
                    let found = db::LiveMatch { objects: report.objects_checked, accepted: report.accepted.clone() };
                    if let Err(e) = db::record_live_match(conn, key, &digest, &stamp, &found).await {
                        tracing::warn!(error = %crate::error::cause_chain(&e),
                            "cannot record the comparison: the next no-op migrate compares again");
                    }
                }
                Some(expected)
            }
        };
        let at_latest = applied.last().map(|m| m.version) >= migrations.latest();
        let ours = |key: &str| expected.as_ref().is_some_and(|e| e.objects.contains_key(key));
        for (key, finding) in findings {
            if ours(&key) && at_latest {
                report.failures.push(finding);
            } else if ours(&key) {
                report.accepted.push(format!("{finding} (below the latest migration: run migrate)"));
            } else {
                report.accepted.push(format!("{finding} (not a function the migrations create: named, not failed)"));
            }
        }
    }
    report.ok = report.failures.is_empty();
    tracing::info!(
        step = "verify",
        expectation = report.expectation,
        comparison = report.comparison,
        objects = report.objects_checked,
        ok = report.ok,
        accepted = report.accepted.len(),
        "verified"
    );
    Ok(report)
}

/// What the cached expectation of `applied` is kept under.
async fn expectation_key(conn: &mut PgConnection, schema: &str, applied: &[&Migration]) -> Result<db::ExpectationKey> {
    Ok(db::ExpectationKey {
        schema: schema.to_string(),
        server_major: db::server_major(conn).await?,
        migrations: migrations_digest(applied),
        reader: verify::reader(),
    })
}

/// What the last comparison found when the catalog has not changed since and the cached
/// expectation is still the one it compared; `None` (compare again) when anything differs or
/// cannot be read, which only costs time.
async fn unchanged_since_match(conn: &mut PgConnection, key: &db::ExpectationKey) -> Option<db::LiveMatch> {
    let found = async {
        let stamp = db::catalog_stamp(conn).await?;
        db::live_match(conn, key, &stamp).await
    }
    .await;
    found.unwrap_or_else(|e| {
        tracing::warn!(error = %crate::error::cause_chain(&e), "cannot read the last comparison; comparing again");
        None
    })
}

/// The expected catalog of `applied`, whether it was `derived` or `cached`, and the digest of the
/// text it is cached as (`None` when it is not: `verify`, or a cache that cannot be written). A
/// cache that cannot be read or written only costs time: the log says why, and the run derives.
async fn expectation(
    conn: &mut PgConnection,
    key: Option<&db::ExpectationKey>,
    applied: &[&Migration],
    source: Expectation,
    deadline: Deadline,
) -> Result<(verify::Catalog, &'static str, Option<String>)> {
    let (catalog, key) = match (source, key) {
        (Expectation::Fresh, _) | (_, None) => {
            return Ok((verify::expected(conn, applied, deadline).await?, "derived", None));
        }
        (Expectation::Derived(catalog), Some(key)) => (catalog, key),
        (Expectation::Cached, Some(key)) => {
            match db::cached_expectation(conn, key).await {
                Ok(Some(json)) => match serde_json::from_str(&json) {
                    Ok(catalog) => return Ok((catalog, "cached", Some(db::expectation_digest(&json)))),
                    Err(e) => tracing::warn!(error = %e, "the cached expectation does not read back; deriving it"),
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %crate::error::cause_chain(&e), "cannot read the cached expectation; deriving it")
                }
            }
            (verify::expected(conn, applied, deadline).await?, key)
        }
    };
    let versions: Vec<i64> = applied.iter().map(|m| m.version).collect();
    let stored = match serde_json::to_string(&catalog) {
        Ok(json) => db::cache_expectation(conn, key, &versions, &json)
            .await
            .map(|_| db::expectation_digest(&json))
            .map_err(|e| crate::error::cause_chain(&e)),
        Err(e) => Err(e.to_string()),
    };
    let digest = stored
        .inspect_err(
            |error| tracing::warn!(%error, "cannot cache the expectation: the next no-op migrate derives it again"),
        )
        .ok();
    Ok((catalog, "derived", digest))
}

/// The part of the cache key that names the applied migrations: versions and checksums, in order.
fn migrations_digest(applied: &[&Migration]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for m in applied {
        hash.update(format!("{} {}\n", m.version, m.up.checksum).as_bytes());
    }
    hex::encode(hash.finalize())
}

/// `verify` ends in an error when a check fails, so scripts and Lambda see it.
pub fn verification_failures(report: &Report) -> Option<Error> {
    let failures = report.verification.as_ref().map(|v| v.failures.clone()).unwrap_or_default();
    (!failures.is_empty()).then_some(Error::VerifyFailed(failures))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_key_changes_with_any_checksum_and_with_the_order() {
        let m = |v: i64, sql: &str| Migration {
            version: v,
            name: format!("m{v}"),
            up: Script::parse(&format!("{v:03}_m{v}.sql"), sql).unwrap(),
            down: None,
        };
        let (a, b, b2) = (m(1, "SELECT 1;"), m(2, "SELECT 2;"), m(2, "SELECT 3;"));
        let key = migrations_digest(&[&a, &b]);
        assert_eq!(key, migrations_digest(&[&a, &b]));
        assert_ne!(key, migrations_digest(&[&a, &b2]));
        assert_ne!(key, migrations_digest(&[&b, &a]));
        assert_ne!(key, migrations_digest(&[&a]));
    }
}
