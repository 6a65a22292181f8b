//! The core both faces share (the Lambda handlers and the CLI): settings, AWS clients and
//! migrations built once; each command on a fresh dedicated connection, closed afterwards.

use std::time::Duration;

use crate::{
    command::Command,
    config::{DbSource, Settings},
    connection,
    credentials::{self, Aws},
    deadline::Deadline,
    error::{Error, Result},
    migrations::Migrations,
    refresh::{self, RefreshReport, RefreshSettings},
    runner::{self, RefreshRoleReport, Report, RunSettings},
    snapshot,
};

/// What both faces of the binary need, built once per process.
pub struct App {
    /// Settings from the environment (and the CLI's flags).
    pub settings: Settings,
    /// AWS clients, when the settings use a secret.
    pub aws: Option<Aws>,
    /// The migrations to run.
    pub migrations: Migrations,
}

impl App {
    /// Builds the AWS clients only when the settings need them.
    pub async fn new(settings: Settings, migrations: Migrations) -> Self {
        let aws = match settings.db {
            DbSource::Url(_) if settings.refresh_secret_id.is_none() => None,
            _ => Some(Aws::load().await),
        };
        App { settings, aws, migrations }
    }

    /// Runs any command and returns its JSON result.
    pub async fn run(&self, command: Command, who: &str, deadline: Deadline) -> Result<serde_json::Value> {
        let value = match command {
            Command::Refresh => serde_json::to_value(self.refresh(who, deadline).await?),
            _ => serde_json::to_value(self.migrate(command, who, deadline).await?),
        };
        value.map_err(|e| Error::BadRequest(format!("serialising the result: {e}")))
    }

    /// Runs a migration command on a fresh dedicated connection, closed afterwards.
    pub async fn migrate(&self, command: Command, applied_by: &str, deadline: Deadline) -> Result<Report> {
        let (mut conn, target, opts) = connection::open_with_options(
            &self.settings,
            self.aws.as_ref(),
            &app_name(command.name(), applied_by),
            deadline,
        )
        .await?;
        let run = RunSettings {
            lock_timeout: self.settings.lock_timeout,
            lock_retries: self.settings.lock_retries,
            advisory_wait: self.settings.advisory_wait,
            statement_timeout: self.settings.statement_timeout,
            index_build_rows_per_s: self.settings.index_build_rows_per_s,
            table_rewrite_rows_per_s: self.settings.table_rewrite_rows_per_s,
            table_scan_rows_per_s: self.settings.table_scan_rows_per_s,
            deadline,
            applied_by: applied_by.to_string(),
            // Only an invocation with a deadline hands a build to a detached session; the command line waits for it.
            detach: deadline.remaining().is_some().then_some(crate::detached::DetachTo(opts)),
            // Set by Lambda only: there standard output is the log, where EMF lines become metrics.
            metrics_function: std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok(),
        };
        let snapshot_db = match (&self.settings.db, &self.aws) {
            (DbSource::Secret(s), Some(aws)) if self.settings.snapshot_before_migrate => Some((s, aws)),
            _ => None,
        };
        let taken: std::sync::Mutex<Option<snapshot::Taken>> = std::sync::Mutex::new(None);
        let hook = |next: String| -> runner::BoxFuture<'_, Result<String>> {
            let taken = &taken;
            Box::pin(async move {
                let (db, aws) = snapshot_db.ok_or_else(|| Error::BadRequest("no snapshot target".into()))?;
                // Without a Lambda deadline, wait for the snapshot at most 30 minutes.
                let snap = snapshot::ensure(aws, db, &next, deadline.or_after(Duration::from_secs(1800))).await?;
                let id = snap.id.clone();
                *taken.lock().unwrap_or_else(|e| e.into_inner()) = Some(snap);
                Ok(id)
            })
        };
        // A snapshot is spent once a change goes through, not when it is taken: a refused or failed
        // run that committed nothing leaves it for the retry.
        let stamp = match snapshot_db {
            Some(_) if command.changes_schema() => crate::db::change_stamp(&mut conn).await.ok(),
            _ => None,
        };
        let hook_ref: Option<runner::BeforeChange<'_>> = if snapshot_db.is_some() { Some(&hook) } else { None };
        // The refresh role is brought to what it needs after migrating: whether this user may is checked first.
        let migrating = matches!(command, Command::Migrate { .. });
        let outcome = match self.refresh_role_preflight(&mut conn, migrating).await {
            Ok(()) => runner::run(&mut conn, &self.migrations, command, &run, hook_ref).await,
            Err(e) => Err(e),
        };
        let outcome = match outcome {
            Ok(report) if migrating => match self.converge_refresh_role(&mut conn, deadline).await {
                Ok(refresh_role) => Ok(Report { refresh_role: Some(refresh_role), ..report }),
                Err(e) => Err(e.after_applying(runner::applied_labels(&report))),
            },
            outcome => outcome,
        };
        let taken = taken.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let (Some(taken), Some((_, aws))) = (taken, snapshot_db) {
            // Unsure (the digest could not be read) counts as changed: a new snapshot is the safe side.
            let changed = match &stamp {
                Some(before) => crate::db::change_stamp(&mut conn).await.map_or(true, |now| &now != before),
                None => true,
            };
            if changed {
                snapshot::mark_used(aws, &taken, deadline).await;
            } else {
                tracing::info!(step = "snapshot", snapshot = %taken.id, "nothing changed: the snapshot is kept for the next attempt");
            }
        }
        close(conn).await;
        let mut report = outcome?;
        report.database = Some(target);
        if matches!(command, Command::Verify { .. })
            && let Some(err) = runner::verification_failures(&report)
        {
            return Err(err);
        }
        Ok(report)
    }

    /// Before a `migrate`: may this user create the refresh role, change its `rds_iam` membership and set its password?
    async fn refresh_role_preflight(&self, conn: &mut sqlx::PgConnection, migrating: bool) -> Result<()> {
        // The down script of 004 reads the role from the session (the rollback of the grants it names).
        crate::db::set_refresh_role_setting(conn, &self.settings.refresh_role).await?;
        if !migrating {
            return Ok(());
        }
        let schema = crate::db::current_schema(conn).await?;
        let facts = crate::db::role_facts(conn, &schema, &self.settings.refresh_role).await?;
        crate::privileges::before_converging_refresh_role(
            &facts,
            self.settings.refresh_auth,
            self.sets_refresh_password(),
        )
    }

    fn sets_refresh_password(&self) -> bool {
        self.settings.refresh_secret_id.is_some() && self.aws.is_some()
    }

    /// After a `migrate`: the refresh role exists, may connect here and run the refresh, is in `rds_iam` exactly
    /// with IAM auth, and with `REFRESH_SECRET_ARN` has that secret's password.
    async fn converge_refresh_role(
        &self,
        conn: &mut sqlx::PgConnection,
        deadline: Deadline,
    ) -> Result<RefreshRoleReport> {
        let role = &self.settings.refresh_role;
        let steps = crate::refresh_role::converge(conn, role, self.settings.refresh_auth).await?;
        let password_set = match (&self.settings.refresh_secret_id, &self.aws) {
            (Some(secret), Some(aws)) => credentials::set_refresh_password(conn, aws, secret, role, deadline).await?,
            _ => false,
        };
        Ok(RefreshRoleReport {
            role: role.clone(),
            auth: match self.settings.refresh_auth {
                crate::config::Auth::Iam => "iam",
                crate::config::Auth::Password => "password",
            },
            changed: steps.into_iter().map(|s| s.why).collect(),
            password_set,
        })
    }

    /// Brings `job_progress` up to date on a fresh dedicated connection.
    pub async fn refresh(&self, requested_by: &str, deadline: Deadline) -> Result<RefreshReport> {
        let (mut conn, _) =
            connection::open(&self.settings, self.aws.as_ref(), &app_name("refresh", requested_by), deadline).await?;
        let settings = RefreshSettings {
            min_interval: self.settings.refresh_min_interval,
            statement_timeout: self.settings.statement_timeout,
            deadline,
        };
        let outcome = refresh::refresh(&mut conn, &settings).await;
        close(conn).await;
        outcome
    }
}

/// `scanner-migrator:<what>:<who>`, visible in pg_stat_activity and in LockTimeout errors.
pub fn app_name(what: &str, who: &str) -> String {
    // PostgreSQL truncates application_name at 63 bytes.
    format!("scanner-migrator:{what}:{who}").chars().take(63).collect()
}

async fn close(conn: sqlx::PgConnection) {
    use sqlx::Connection;
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the connection failed; the server ends the session anyway");
    }
}
