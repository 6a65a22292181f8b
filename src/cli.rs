//! The command line: the same library functions as the Lambda, against `--database-url`
//! or the same Secrets Manager settings. JSON on stdout, logs on stderr.

use std::{collections::HashMap, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::{config::Settings, error::Error, handlers::App, migrations::Migrations, runner::Command};

/// Keeps the S3 scanner's PostgreSQL schema current and its job_progress view fresh.
#[derive(Debug, Parser)]
#[command(name = "scanner-migrator", version, about)]
pub struct Cli {
    /// postgres:// URL; without it the DB_SECRET_ARN settings are used, as in Lambda.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Read migrations from this directory instead of the ones built into the binary.
    #[arg(long, global = true)]
    migrations_dir: Option<PathBuf>,
    /// lock_timeout for each migration statement, in milliseconds [env LOCK_TIMEOUT_MS; default 500].
    #[arg(long, global = true)]
    lock_timeout_ms: Option<u64>,
    /// Retries after a lock timeout [env LOCK_RETRIES; default 10].
    #[arg(long, global = true)]
    lock_retries: Option<u32>,
    /// Seconds to wait for another migrator's lock [env ADVISORY_LOCK_WAIT_S; default 60].
    #[arg(long, global = true)]
    lock_wait_s: Option<f64>,
    /// statement_timeout in seconds, 0 for none [env STATEMENT_TIMEOUT_S].
    #[arg(long, global = true)]
    statement_timeout_s: Option<f64>,
    /// Seconds to wait for a connection [env DB_CONNECT_TIMEOUT_S; default 10].
    #[arg(long, global = true)]
    connect_timeout_s: Option<f64>,
    /// Skip a refresh when the view is younger than this many seconds [env REFRESH_MIN_INTERVAL_S; default 60].
    #[arg(long, global = true)]
    refresh_min_interval_s: Option<f64>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Apply pending migrations (all, or up to --target), then verify.
    Migrate {
        /// Stop after this version.
        #[arg(long)]
        target: Option<i64>,
    },
    /// Show applied and pending migrations.
    Status,
    /// Show what migrate would run, and how; changes nothing.
    Plan {
        /// Plan up to this version.
        #[arg(long)]
        target: Option<i64>,
    },
    /// Check that every applied migration's objects exist and are valid.
    Verify,
    /// Undo applied migrations above --to, newest first.
    Rollback {
        /// The version to roll back to (required: a rollback is never implicit).
        #[arg(long, required = true)]
        to: i64,
    },
    /// Refresh the job_progress materialized view (skips while a migration runs).
    Refresh,
}

/// Runs the CLI and returns its exit code: 0 success, 1 failure, 2 bad usage.
pub async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let message = e.render().to_string();
            eprint!("{message}");
            // The problem is the first paragraph; usage and help follow it.
            let problem: Vec<&str> = message.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
            let problem = problem.join(" ").trim_start_matches("error: ").to_string();
            print_json(&Error::BadRequest(problem).to_json());
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(cli).await {
        Ok(value) => {
            print_json(&value);
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!(error_type = err.kind(), "{err}");
            print_json(&err.to_json());
            ExitCode::FAILURE
        }
    }
}

fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

async fn run(cli: Cli) -> Result<serde_json::Value, Error> {
    let mut flags: HashMap<&str, String> = HashMap::new();
    let mut flag = |name: &'static str, value: Option<String>| {
        if let Some(v) = value {
            flags.insert(name, v);
        }
    };
    flag("DATABASE_URL", cli.database_url.clone());
    flag("LOCK_TIMEOUT_MS", cli.lock_timeout_ms.map(|v| v.to_string()));
    flag("LOCK_RETRIES", cli.lock_retries.map(|v| v.to_string()));
    flag("ADVISORY_LOCK_WAIT_S", cli.lock_wait_s.map(|v| v.to_string()));
    flag("STATEMENT_TIMEOUT_S", cli.statement_timeout_s.map(|v| v.to_string()));
    flag("DB_CONNECT_TIMEOUT_S", cli.connect_timeout_s.map(|v| v.to_string()));
    flag("REFRESH_MIN_INTERVAL_S", cli.refresh_min_interval_s.map(|v| v.to_string()));
    let settings = Settings::from_lookup(|name| flags.get(name).cloned().or_else(|| std::env::var(name).ok()))?;
    let migrations = match &cli.migrations_dir {
        Some(dir) => Migrations::from_dir(dir)?,
        None => Migrations::embedded()?,
    };
    let app = App::new(settings, migrations).await;
    let who = format!(
        "cli:{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .unwrap_or_default()
            .trim()
    );
    let command = match cli.command {
        Cmd::Migrate { target } => Command::Migrate { target },
        Cmd::Status => Command::Status,
        Cmd::Plan { target } => Command::Plan { target },
        Cmd::Verify => Command::Verify,
        Cmd::Rollback { to } => Command::Rollback { to },
        Cmd::Refresh => {
            let report = app.refresh(&who, None).await?;
            return serde_json::to_value(report).map_err(|e| Error::BadRequest(e.to_string()));
        }
    };
    let report = app.migrate(command, &who, None).await?;
    serde_json::to_value(report).map_err(|e| Error::BadRequest(e.to_string()))
}
