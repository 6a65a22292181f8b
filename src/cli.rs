//! The command line: the same library functions as the Lambda, against `--database-url`
//! or the same Secrets Manager settings. JSON on stdout, logs on stderr.

use std::{collections::HashMap, path::PathBuf, process::ExitCode};

use clap::{Arg, ArgAction, Args, FromArgMatches};

use crate::{
    app::App,
    command::{COMMANDS, Command, TargetArg},
    config::{Settings, TUNABLES},
    deadline::Deadline,
    error::Error,
    migrations::Migrations,
};

/// The options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// postgres:// URL; without it the DB_SECRET_ARN settings are used, as in Lambda.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The schema to work in, its name as stored (case-sensitive); default: the login's current_schema().
    #[arg(long, global = true, env = "DB_SCHEMA")]
    schema: Option<String>,
    /// Read migrations from this directory instead of the ones built into the binary.
    #[arg(long, global = true)]
    migrations_dir: Option<PathBuf>,
    /// The refresh function's own role in this database, which migrate creates and grants (default scanner_refresh).
    #[arg(long, global = true, env = "REFRESH_ROLE")]
    refresh_role: Option<String>,
    /// How the refresh role logs in: iam (a member of rds_iam) or password (never one).
    #[arg(long, global = true, env = "REFRESH_DB_AUTH")]
    refresh_db_auth: Option<String>,
}

/// The command line: the global options, and one subcommand per entry of [`COMMANDS`].
pub fn command_line() -> clap::Command {
    let cli = clap::Command::new("scanner-migrator").version(env!("CARGO_PKG_VERSION")).subcommand_required(true);
    // After the derived options, whose doc comment would otherwise become the about text.
    let cli = Global::augment_args(cli)
        .about("Keeps the S3 scanner's PostgreSQL schema current and its job_progress statistics fresh.");
    // Each tunable's flag, environment variable and default come from config::TUNABLES.
    let cli = TUNABLES.iter().fold(cli, |cli, t| {
        let kind = t.kind;
        cli.arg(
            Arg::new(t.var)
                .long(t.flag)
                .env(t.var)
                .default_value(t.default)
                .value_parser(move |v: &str| kind.check(v).map(|_| v.trim().to_string()))
                .global(true)
                .help(t.help),
        )
    });
    // `new` writes files and needs no database: the CLI's own, not one of the shared COMMANDS.
    let cli = cli.subcommand(
        clap::Command::new(NEW)
            .about("Write the next migration's pair of files (NNN_name.sql, NNN_name.down.sql) into --migrations-dir")
            .arg(Arg::new("name").required(true).value_name("NAME").help(
                "snake_case, e.g. add_widget_index (numbered after the newest file); NNN_name asks for number NNN",
            ))
            .arg(
                Arg::new("no-transaction")
                    .long("no-transaction")
                    .action(ArgAction::SetTrue)
                    .help("Run it statement by statement, outside a transaction (CREATE INDEX CONCURRENTLY)"),
            ),
    );
    cli.subcommands(COMMANDS.iter().map(|spec| {
        let sub = clap::Command::new(spec.name).about(spec.about);
        // A CI gate, as dbmate's: `status --exit-code` fails while migrations are pending.
        let sub = if spec.name == "status" {
            sub.arg(
                Arg::new("exit-code")
                    .long("exit-code")
                    .action(ArgAction::SetTrue)
                    .help(format!("Exit with {PENDING_EXIT_CODE} when migrations are pending (for CI gates)")),
            )
        } else if spec.name == "plan" {
            sub.arg(
                Arg::new("output")
                    .long("output")
                    .value_parser(["json", "text"])
                    .default_value("json")
                    .help("json (the contract, as the Lambda returns it) or text (a readable table per migration)"),
            )
        } else if spec.name == "verify" {
            sub.arg(Arg::new("data").long("data").action(ArgAction::SetTrue).help(
                "Also compare job_progress with a direct count per job (reads whole tables) and name the jobs that differ",
            ))
        } else {
            sub
        };
        match spec.target {
            TargetArg::None => sub,
            target => sub.arg(
                Arg::new("target")
                    .long("target")
                    // `rollback --to N` reads naturally; --target is the word the payload uses.
                    .visible_alias("to")
                    .value_parser(clap::value_parser!(i64).range(0..))
                    .action(ArgAction::Set)
                    .required(target == TargetArg::Required)
                    .help(spec.target_help),
            ),
        }
    }))
}

/// The subcommand that scaffolds a migration.
const NEW: &str = "new";

/// Where `new` writes without `--migrations-dir`: the repository's folder, from its root.
const DEFAULT_MIGRATIONS_DIR: &str = "migrations";

/// The exit code of `status --exit-code` while migrations are pending (1 is an error, 2 bad usage).
pub const PENDING_EXIT_CODE: u8 = 3;

/// Runs the CLI and returns its exit code: 0 success, 1 failure, 2 bad usage, 3 pending
/// migrations (only with `status --exit-code`).
pub async fn main() -> ExitCode {
    let parsed = command_line().try_get_matches().and_then(|m| {
        let global = Global::from_arg_matches(&m)?;
        let tunables: HashMap<&'static str, String> =
            TUNABLES.iter().filter_map(|t| Some((t.var, m.get_one::<String>(t.var)?.clone()))).collect();
        let (name, sub) = m.subcommand().expect("a subcommand is required");
        let exit_code = sub.try_get_one::<bool>("exit-code").ok().flatten().copied().unwrap_or(false);
        let target = sub.try_get_one::<i64>("target").ok().flatten().copied();
        let data = sub.try_get_one::<bool>("data").ok().flatten().copied().unwrap_or(false);
        let scaffold = (name == NEW).then(|| {
            let no_tx = sub.try_get_one::<bool>("no-transaction").ok().flatten().copied().unwrap_or(false);
            (sub.get_one::<String>("name").cloned().unwrap_or_default(), no_tx)
        });
        let text = sub.try_get_one::<String>("output").ok().flatten().is_some_and(|o| o == "text");
        Ok((global, tunables, name.to_string(), target, exit_code, data, scaffold, text))
    });
    let (cli, tunables, name, target, exit_code, data, scaffold, text) = match parsed {
        Ok(parsed) => parsed,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // The arguments are echoed back, and a URL typed without --database-url holds a password.
            let mut message = crate::error::redact(&e.render().to_string());
            if std::env::args().skip(1).any(|a| a.contains("://")) && !message.contains("--database-url") {
                message.push_str("tip: a database URL goes after --database-url (or in DATABASE_URL)\n");
            }
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
    let outcome = match scaffold {
        Some((new_name, no_transaction)) => {
            let dir = cli.migrations_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_MIGRATIONS_DIR));
            let today = chrono::Utc::now().date_naive().to_string();
            crate::scaffold::create(&dir, &new_name, no_transaction, &today).and_then(|s| {
                serde_json::to_value(s).map_err(|e| Error::BadRequest(format!("serialising the result: {e}")))
            })
        }
        None => run(cli, tunables, &name, target, data).await,
    };
    match outcome {
        Ok(value) => {
            if text {
                print!("{}", crate::impact::render_text(&value));
            } else {
                print_json(&value);
            }
            if exit_code && value["status"] == "pending" {
                return ExitCode::from(PENDING_EXIT_CODE);
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!(error_type = err.kind(), "{}", err.message());
            print_json(&err.to_json());
            ExitCode::FAILURE
        }
    }
}

fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

async fn run(
    cli: Global,
    mut flags: HashMap<&'static str, String>,
    name: &str,
    target: Option<i64>,
    data: bool,
) -> Result<serde_json::Value, Error> {
    let command = Command::parse(name, target).and_then(|c| c.with_data(data)).map_err(Error::BadRequest)?;
    for (var, value) in [
        ("DATABASE_URL", &cli.database_url),
        ("REFRESH_ROLE", &cli.refresh_role),
        ("REFRESH_DB_AUTH", &cli.refresh_db_auth),
    ] {
        if let Some(value) = value {
            flags.insert(var, value.clone());
        }
    }
    if let Some(schema) = cli.schema.clone() {
        flags.insert("DB_SCHEMA", schema);
    }
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
    app.run(command, &who, Deadline::NONE).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_is_a_subcommand_with_its_target() {
        command_line().debug_assert();
        for spec in COMMANDS {
            let mut args = vec!["scanner-migrator", spec.name];
            if spec.target == TargetArg::Required {
                args.extend(["--target", "1"]);
            }
            let m = command_line().try_get_matches_from(&args).unwrap();
            assert_eq!(m.subcommand_name(), Some(spec.name));
        }
        let m = command_line().try_get_matches_from(["scanner-migrator", "rollback", "--to", "1"]).unwrap();
        assert_eq!(m.subcommand().unwrap().1.get_one::<i64>("target"), Some(&1));
        assert!(command_line().try_get_matches_from(["scanner-migrator", "rollback"]).is_err());
        assert!(command_line().try_get_matches_from(["scanner-migrator", "status", "--target", "1"]).is_err());
    }
}
