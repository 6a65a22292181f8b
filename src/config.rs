//! Typed settings read from the environment (Lambda) or the command line (CLI).

use std::{path::PathBuf, time::Duration};

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::error::Error;

/// One environment variable the binary reads.
#[derive(Debug, Clone, Copy)]
pub struct EnvVar {
    /// The variable's name.
    pub name: &'static str,
    /// Whether the Lambda refuses to start without it.
    pub required_in_lambda: bool,
    /// What it does, for the README and error messages.
    pub doc: &'static str,
}

/// How a tunable's value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A whole non-negative number (a count, milliseconds): `2.5` is refused, not truncated.
    Whole,
    /// A non-negative number of seconds (or a rate); fractions allowed.
    Seconds,
}

impl Kind {
    /// The value, or what is wrong with it (naming the text, never guessing).
    pub fn check(self, text: &str) -> Result<f64, String> {
        let text = text.trim();
        match self {
            Kind::Whole => text
                .parse::<u64>()
                .ok()
                .filter(|n| *n < 1_000_000_000)
                .map(|n| n as f64)
                .ok_or_else(|| format!("`{text}` is not a whole non-negative number")),
            Kind::Seconds => text
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0 && *n < 1e9)
                .ok_or_else(|| format!("`{text}` is not a non-negative number")),
        }
    }
}

/// A setting the command line also takes as a flag. Its flag, environment variable, default and
/// type are written here once: the CLI's `--help` (clap's `env` and `default_value`) and the
/// Lambda's reading of the environment both come from this table.
#[derive(Debug, Clone, Copy)]
pub struct Tunable {
    /// The long flag (`lock-timeout-ms`).
    pub flag: &'static str,
    /// The environment variable (`LOCK_TIMEOUT_MS`).
    pub var: &'static str,
    /// The default, as text.
    pub default: &'static str,
    /// Whole number or seconds.
    pub kind: Kind,
    /// One line of help.
    pub help: &'static str,
}

/// Every tunable.
pub const TUNABLES: &[Tunable] = &[
    Tunable {
        flag: "lock-timeout-ms",
        var: "LOCK_TIMEOUT_MS",
        default: "500",
        kind: Kind::Whole,
        help: "lock_timeout for each migration statement, in milliseconds",
    },
    Tunable {
        flag: "lock-retries",
        var: "LOCK_RETRIES",
        default: "10",
        kind: Kind::Whole,
        help: "Retries after a lock timeout, with backoff",
    },
    Tunable {
        flag: "lock-wait-s",
        var: "ADVISORY_LOCK_WAIT_S",
        default: "60",
        kind: Kind::Seconds,
        help: "Seconds to wait for another migrator's lock",
    },
    Tunable {
        flag: "statement-timeout-s",
        var: "STATEMENT_TIMEOUT_S",
        default: "0",
        kind: Kind::Seconds,
        help: "statement_timeout in seconds, 0 for none (in Lambda always cut to the time left)",
    },
    Tunable {
        flag: "connect-timeout-s",
        var: "DB_CONNECT_TIMEOUT_S",
        default: "10",
        kind: Kind::Seconds,
        help: "Seconds to wait for a connection",
    },
    Tunable {
        flag: "refresh-min-interval-s",
        var: "REFRESH_MIN_INTERVAL_S",
        default: "60",
        kind: Kind::Seconds,
        help: "Skip a refresh of the materialized view when it is younger than this many seconds",
    },
    Tunable {
        flag: "index-build-rows-per-s",
        var: "INDEX_BUILD_ROWS_PER_S",
        default: "250000",
        kind: Kind::Seconds,
        help: "Rows per second an index build is assumed to manage, to refuse one that cannot finish in time",
    },
    Tunable {
        flag: "table-rewrite-rows-per-s",
        var: "TABLE_REWRITE_ROWS_PER_S",
        default: "100000",
        kind: Kind::Seconds,
        help: "Rows per second a table rewrite is assumed to manage (plan's estimate)",
    },
    Tunable {
        flag: "table-scan-rows-per-s",
        var: "TABLE_SCAN_ROWS_PER_S",
        default: "1000000",
        kind: Kind::Seconds,
        help: "Rows per second a whole-table scan (SET NOT NULL, VALIDATE CONSTRAINT) is assumed to manage (plan's estimate)",
    },
];

/// Every environment variable the binary reads (besides the runtime's own `_HANDLER`,
/// `AWS_LAMBDA_RUNTIME_API`, `AWS_REGION` and friends).
pub const ENV_VARS: &[EnvVar] = &[
    EnvVar {
        name: "DB_SECRET_ARN",
        required_in_lambda: false,
        doc: "Secrets Manager secret with the database username/password (RDS-managed or rotation shape); \
              required unless DB_AUTH=iam with DB_USER",
    },
    EnvVar {
        name: "DB_USER",
        required_in_lambda: false,
        doc: "the database user for DB_AUTH=iam (then no secret is read); in password mode the secret names the user",
    },
    EnvVar {
        name: "DATABASE_URL",
        required_in_lambda: false,
        doc: "CLI only: a postgres:// URL used instead of the secret",
    },
    EnvVar { name: "DB_HOST", required_in_lambda: false, doc: "database host, overrides the secret and the RDS API" },
    EnvVar { name: "DB_PORT", required_in_lambda: false, doc: "database port, overrides the secret and the RDS API" },
    EnvVar { name: "DB_NAME", required_in_lambda: false, doc: "database name, overrides the secret and the RDS API" },
    EnvVar {
        name: "DB_INSTANCE_IDENTIFIER",
        required_in_lambda: false,
        doc: "RDS instance to look the endpoint up for and to snapshot",
    },
    EnvVar {
        name: "DB_CLUSTER_IDENTIFIER",
        required_in_lambda: false,
        doc: "Aurora cluster to look the endpoint up for and to snapshot",
    },
    EnvVar {
        name: "DB_AUTH",
        required_in_lambda: false,
        doc: "`password` (default) or `iam` for IAM database authentication",
    },
    EnvVar {
        name: "DB_SSLMODE",
        required_in_lambda: false,
        doc: "verify-full (default) or verify-ca; disable|allow|prefer|require only on the CLI's secret path, \
              or in Lambda with DB_ALLOW_INSECURE_TLS=true",
    },
    EnvVar {
        name: "DB_CA_BUNDLE",
        required_in_lambda: false,
        doc: "PEM CA bundle for TLS verification (default: the RDS CA bundle built into the binary)",
    },
    EnvVar {
        name: "DB_ALLOW_INSECURE_TLS",
        required_in_lambda: false,
        doc: "`true` lets the Lambda use a DB_SSLMODE that does not authenticate the server (default false)",
    },
    EnvVar {
        name: "DB_CONNECT_TIMEOUT_S",
        required_in_lambda: false,
        doc: "seconds to wait for a connection (default 10)",
    },
    EnvVar {
        name: "LOCK_TIMEOUT_MS",
        required_in_lambda: false,
        doc: "lock_timeout for each migration statement (default 500)",
    },
    EnvVar {
        name: "LOCK_RETRIES",
        required_in_lambda: false,
        doc: "retries after a lock timeout, with backoff (default 10)",
    },
    EnvVar {
        name: "ADVISORY_LOCK_WAIT_S",
        required_in_lambda: false,
        doc: "how long to wait for another migrator's lock (default 60, bounded by the deadline)",
    },
    EnvVar {
        name: "STATEMENT_TIMEOUT_S",
        required_in_lambda: false,
        doc: "statement_timeout (default: none on the CLI, the remaining time in Lambda)",
    },
    EnvVar {
        name: "SNAPSHOT_BEFORE_MIGRATE",
        required_in_lambda: false,
        doc: "`true` to snapshot the database before applying pending migrations",
    },
    EnvVar {
        name: "ALLOW_ROLLBACK",
        required_in_lambda: false,
        doc: "`true` to let the migrate function run `rollback` (drops what migrations added; off by default)",
    },
    EnvVar {
        name: "INDEX_BUILD_ROWS_PER_S",
        required_in_lambda: false,
        doc: "rows per second an index build is assumed to manage, to refuse builds that cannot finish \
              before the Lambda deadline (default 250000)",
    },
    EnvVar {
        name: "TABLE_REWRITE_ROWS_PER_S",
        required_in_lambda: false,
        doc: "rows per second a table rewrite is assumed to manage, for plan's estimates (default 100000)",
    },
    EnvVar {
        name: "TABLE_SCAN_ROWS_PER_S",
        required_in_lambda: false,
        doc: "rows per second a whole-table scan is assumed to manage, for plan's estimates (default 1000000)",
    },
    EnvVar {
        name: "REFRESH_SECRET_ARN",
        required_in_lambda: false,
        doc: "migrate only, without IAM database authentication: the secret whose password the migrator gives \
              the refresh role (REFRESH_ROLE) after migrating",
    },
    EnvVar {
        name: "REFRESH_ROLE",
        required_in_lambda: false,
        doc: "migrate only: the refresh function's own database role in this database (default scanner_refresh); \
              give each database on one server its own",
    },
    EnvVar {
        name: "REFRESH_DB_AUTH",
        required_in_lambda: false,
        doc: "migrate only: how the refresh role logs in, `iam` (a member of rds_iam) or `password` (never a \
              member of rds_iam); default password with REFRESH_SECRET_ARN, iam without",
    },
    EnvVar {
        name: "CONTINUATION_ROLE_ARN",
        required_in_lambda: false,
        doc: "migrate only: the role EventBridge Scheduler assumes to invoke the function again when work is \
              left at the deadline (unset: the answer only says to invoke again)",
    },
    EnvVar {
        name: "CONTINUATION_SCHEDULE",
        required_in_lambda: false,
        doc: "migrate only: the name of its one-time continuation schedule (default <function name>-continue)",
    },
    EnvVar {
        name: "CONTINUATION_SCHEDULE_GROUP",
        required_in_lambda: false,
        doc: "migrate only: the continuation schedule's group (default `default`)",
    },
    EnvVar {
        name: "CONTINUATION_DLQ_ARN",
        required_in_lambda: false,
        doc: "migrate only: the SQS queue for a continuation the Scheduler could not deliver",
    },
    EnvVar {
        name: "CONTINUATION_DELAY_S",
        required_in_lambda: false,
        doc: "migrate only: seconds from an answer with work left to the invocation it schedules (default 60)",
    },
    EnvVar {
        name: "CONTINUATION_MAX_STEPS",
        required_in_lambda: false,
        doc: "migrate only: continuations after which the chain stops and says so (default 96)",
    },
    EnvVar {
        name: "DB_SCHEMA",
        required_in_lambda: false,
        doc: "the schema the migrations, the refresh and verify work in, its name as stored (case-sensitive, \
              unquoted); default: the login's current_schema(), normally public",
    },
    EnvVar {
        name: "REFRESH_MIN_INTERVAL_S",
        required_in_lambda: false,
        doc: "skip a refresh when the view is younger than this (default 60)",
    },
];

/// The Amazon RDS CA bundle, built into the binary (where it comes from: `certs/README.md`).
pub const RDS_CA_BUNDLE: &[u8] = include_bytes!("../certs/rds-ca-bundle.pem");

/// SHA-256 of [`RDS_CA_BUNDLE`], pinned: a changed bundle fails the unit tests until this changes too.
pub const RDS_CA_BUNDLE_SHA256: &str = "ef146a078dfd9d1ee2f2eb05cfb7b907503023b101c49d8eb7d17c7d127777a0";

/// The CA certificates a verify mode trusts (and nothing else: see `patches/webpki-roots-none`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaBundle {
    /// The RDS bundle built into the binary.
    Rds,
    /// A PEM file (`DB_CA_BUNDLE`, or `sslrootcert` in a URL).
    File(PathBuf),
}

/// How the connection is secured.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The libpq sslmode.
    pub mode: PgSslMode,
    /// Trusted CAs for verify-ca / verify-full.
    pub ca: CaBundle,
}

impl Tls {
    /// Sets the mode and the trusted CAs on connection options.
    pub fn apply(&self, opts: PgConnectOptions) -> PgConnectOptions {
        let opts = opts.ssl_mode(self.mode);
        match &self.ca {
            CaBundle::Rds => opts.ssl_root_cert_from_pem(RDS_CA_BUNDLE.to_vec()),
            CaBundle::File(path) => opts.ssl_root_cert(path),
        }
    }

    /// Whether the mode authenticates the server (verify-ca or verify-full).
    pub fn verifies(&self) -> bool {
        verifies(self.mode)
    }
}

fn verifies(mode: PgSslMode) -> bool {
    matches!(mode, PgSslMode::VerifyCa | PgSslMode::VerifyFull)
}

/// Where the database credentials come from.
#[derive(Clone)]
pub enum DbSource {
    /// A `postgres://` URL (CLI only). Its password stays inside the options.
    Url(Box<PgConnectOptions>),
    /// The AWS path: a Secrets Manager secret and/or IAM authentication, with optional overrides
    /// and RDS lookups.
    Secret(SecretSettings),
}

// By hand: sqlx's own Debug of the options prints the password.
impl std::fmt::Debug for DbSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbSource::Url(opts) => f
                .debug_struct("Url")
                .field("host", &opts.get_host())
                .field("port", &opts.get_port())
                .field("database", &opts.get_database())
                .field("user", &opts.get_username())
                .field("sslmode", &crate::db::sslmode_name(opts.get_ssl_mode()))
                .finish_non_exhaustive(),
            DbSource::Secret(s) => f.debug_tuple("Secret").field(s).finish(),
        }
    }
}

/// How to turn the secret (or the IAM identity) into a connection.
#[derive(Debug, Clone)]
pub struct SecretSettings {
    /// The secret's ARN or name; `None` only with IAM authentication and `DB_USER`.
    pub secret_id: Option<String>,
    /// `DB_USER`: the login user for IAM authentication.
    pub user: Option<String>,
    /// `DB_HOST` override.
    pub host: Option<String>,
    /// `DB_PORT` override.
    pub port: Option<u16>,
    /// `DB_NAME` override.
    pub dbname: Option<String>,
    /// RDS instance to look up and snapshot.
    pub instance_id: Option<String>,
    /// Aurora cluster to look up and snapshot.
    pub cluster_id: Option<String>,
    /// Password or IAM token.
    pub auth: Auth,
    /// TLS mode and trusted CAs.
    pub tls: Tls,
}

/// How to authenticate to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// The password from the secret.
    Password,
    /// A short-lived IAM authentication token signed with the function's role.
    Iam,
}

/// Everything the binary needs to know, read once at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The database.
    pub db: DbSource,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// lock_timeout for migration statements.
    pub lock_timeout: Duration,
    /// Retries after lock_timeout.
    pub lock_retries: u32,
    /// Advisory lock wait.
    pub advisory_wait: Duration,
    /// statement_timeout.
    pub statement_timeout: Option<Duration>,
    /// Snapshot before applying pending migrations.
    pub snapshot_before_migrate: bool,
    /// Refresh skipped when the view is younger than this.
    pub refresh_min_interval: Duration,
    /// Whether the migrate function may run `rollback` (the CLI always may).
    pub allow_rollback: bool,
    /// Assumed index build speed, to refuse a build that cannot finish before the deadline.
    pub index_build_rows_per_s: f64,
    /// Assumed table rewrite speed (plan's estimates).
    pub table_rewrite_rows_per_s: f64,
    /// Assumed whole-table scan speed (plan's estimates).
    pub table_scan_rows_per_s: f64,
    /// `REFRESH_SECRET_ARN`: the secret whose password the refresh role gets after a migrate.
    pub refresh_secret_id: Option<String>,
    /// `DB_SCHEMA`: the schema every session works in; `None` is the login's `current_schema()`.
    pub schema: Option<String>,
    /// `REFRESH_ROLE`: the refresh function's own role in this database.
    pub refresh_role: String,
    /// `REFRESH_DB_AUTH`: how the refresh role logs in.
    pub refresh_auth: Auth,
}

/// The refresh role of a database whose settings name none: what migration 004 created before roles
/// were configurable.
pub const DEFAULT_REFRESH_ROLE: &str = "scanner_refresh";

/// Query parameters a `--database-url` may carry: the ones the driver understands. Anything else
/// is refused before the driver sees it (it would log the value, which may be a password).
pub const URL_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

impl Settings {
    /// Reads settings through `lookup` (the environment, or the CLI's flags over it). In Lambda
    /// (`AWS_LAMBDA_RUNTIME_API` set) a TLS mode that does not authenticate the server is refused
    /// unless `DB_ALLOW_INSECURE_TLS=true`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let in_lambda = lookup("AWS_LAMBDA_RUNTIME_API").is_some();
        let get = |name: &str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let tls = tls_settings(&get, in_lambda)?;
        let db = match get("DATABASE_URL") {
            Some(url) => DbSource::Url(Box::new(url_options(&url, &tls)?)),
            None => DbSource::Secret(secret_settings(&get, tls)?),
        };
        Ok(Settings {
            db,
            connect_timeout: Duration::from_secs_f64(number(&get, "DB_CONNECT_TIMEOUT_S")?),
            lock_timeout: Duration::from_millis(integer(&get, "LOCK_TIMEOUT_MS")?),
            lock_retries: u32::try_from(integer(&get, "LOCK_RETRIES")?).unwrap_or(u32::MAX),
            advisory_wait: Duration::from_secs_f64(number(&get, "ADVISORY_LOCK_WAIT_S")?),
            statement_timeout: match number(&get, "STATEMENT_TIMEOUT_S")? {
                0.0 => None,
                s => Some(Duration::from_secs_f64(s)),
            },
            snapshot_before_migrate: boolean(&get, "SNAPSHOT_BEFORE_MIGRATE")?,
            refresh_min_interval: Duration::from_secs_f64(number(&get, "REFRESH_MIN_INTERVAL_S")?),
            allow_rollback: boolean(&get, "ALLOW_ROLLBACK")?,
            index_build_rows_per_s: number(&get, "INDEX_BUILD_ROWS_PER_S")?.max(1.0),
            table_rewrite_rows_per_s: number(&get, "TABLE_REWRITE_ROWS_PER_S")?.max(1.0),
            table_scan_rows_per_s: number(&get, "TABLE_SCAN_ROWS_PER_S")?.max(1.0),
            refresh_secret_id: get("REFRESH_SECRET_ARN"),
            schema: get("DB_SCHEMA").map(|s| schema_name(&s)).transpose()?,
            refresh_role: refresh_role(&get)?,
            refresh_auth: refresh_auth(&get)?,
        })
    }
}

/// A schema name as PostgreSQL stores it (taken literally: `Scanner` is the mixed-case schema `"Scanner"`),
/// or what is wrong with it.
pub fn schema_name(name: &str) -> Result<String, Error> {
    let bad = |problem: String| Error::Config { var: "DB_SCHEMA".into(), problem };
    if name.len() > 63 {
        return Err(bad(format!("`{name}` is {} bytes long; PostgreSQL names hold at most 63", name.len())));
    }
    if name.contains('\0') {
        return Err(bad("contains a NUL character".into()));
    }
    if name.starts_with("pg_") {
        return Err(bad(format!("`{name}`: names starting with pg_ are reserved for PostgreSQL's own schemas")));
    }
    Ok(name.to_string())
}

/// `REFRESH_ROLE`: a role name the module can also put into an IAM `rds-db:connect` ARN unquoted.
fn refresh_role(get: &impl Fn(&str) -> Option<String>) -> Result<String, Error> {
    let Some(role) = get("REFRESH_ROLE") else { return Ok(DEFAULT_REFRESH_ROLE.to_string()) };
    let bad = |problem: &str| Error::Config { var: "REFRESH_ROLE".into(), problem: format!("`{role}` {problem}") };
    // 63 bytes: PostgreSQL's NAMEDATALEN - 1; a longer name would be truncated, and then be another role.
    if role.len() > 63
        || !role.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        || !role.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(bad("is not a role name of lower-case letters, digits and _, starting with a letter or _, \
                        at most 63 characters"));
    }
    // pg_ names are reserved by PostgreSQL, rds_ ones by RDS; public is not a role.
    if role.starts_with("pg_") || role.starts_with("rds_") || role == "rdsadmin" || role == "public" {
        return Err(bad("is reserved (pg_*, rds_*, rdsadmin, public); choose another name"));
    }
    Ok(role)
}

/// `REFRESH_DB_AUTH`: iam or password; unset, password when the migrator sets a password
/// (`REFRESH_SECRET_ARN`), iam otherwise. On RDS a member of rds_iam cannot log in with a password.
fn refresh_auth(get: &impl Fn(&str) -> Option<String>) -> Result<Auth, Error> {
    let with_secret = get("REFRESH_SECRET_ARN").is_some();
    match (get("REFRESH_DB_AUTH").as_deref(), with_secret) {
        (None, true) | (Some("password"), _) => Ok(Auth::Password),
        (None, false) => Ok(Auth::Iam),
        (Some("iam"), false) => Ok(Auth::Iam),
        (Some("iam"), true) => Err(Error::Config {
            var: "REFRESH_DB_AUTH".into(),
            problem: "`iam` with REFRESH_SECRET_ARN set: a role that logs in with an IAM token has no password; \
                      unset REFRESH_SECRET_ARN, or set REFRESH_DB_AUTH=password"
                .into(),
        }),
        (Some(other), _) => Err(Error::Config {
            var: "REFRESH_DB_AUTH".into(),
            problem: format!("`{other}` is not one of: iam, password"),
        }),
    }
}

/// `DB_SSLMODE` (verify-full by default) and `DB_CA_BUNDLE` (the built-in RDS bundle by default).
fn tls_settings(get: &impl Fn(&str) -> Option<String>, in_lambda: bool) -> Result<Tls, Error> {
    let mode = match get("DB_SSLMODE") {
        None => PgSslMode::VerifyFull,
        Some(mode) => mode.parse().map_err(|_| Error::Config {
            var: "DB_SSLMODE".into(),
            problem: format!("`{mode}` is not one of: verify-full, verify-ca, require, prefer, allow, disable"),
        })?,
    };
    if in_lambda && !verifies(mode) && !boolean(get, "DB_ALLOW_INSECURE_TLS")? {
        return Err(Error::Config {
            var: "DB_SSLMODE".into(),
            problem: format!(
                "`{}` does not authenticate the server, so whoever sits between the function and the database \
                 could read its password; the Lambda accepts only verify-full or verify-ca unless \
                 DB_ALLOW_INSECURE_TLS=true",
                crate::db::sslmode_name(mode)
            ),
        });
    }
    let ca = match get("DB_CA_BUNDLE") {
        None => CaBundle::Rds,
        Some(path) => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(Error::Config {
                    var: "DB_CA_BUNDLE".into(),
                    problem: format!(
                        "{} is not a readable file (unset it to use the RDS CA bundle built into the binary)",
                        path.display()
                    ),
                });
            }
            CaBundle::File(path)
        }
    };
    Ok(Tls { mode, ca })
}

/// Checks the URL's parameters, parses it, and applies `DB_SSLMODE`/`DB_CA_BUNDLE` unless the
/// URL names its own. A mode that does not authenticate the server must be in the URL itself.
fn url_options(text: &str, tls: &Tls) -> Result<PgConnectOptions, Error> {
    let bad = |problem: String| Error::Config { var: "DATABASE_URL".into(), problem };
    // Neither url's nor sqlx's errors echo the URL, so the password cannot leak through them.
    let url = url::Url::parse(text).map_err(|e| bad(format!("not a valid postgres:// URL: {e}")))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(bad(format!("the scheme is `{}`; expected postgres:// or postgresql://", url.scheme())));
    }
    let mut has_mode = false;
    let mut has_ca = false;
    for (key, _) in url.query_pairs() {
        match key.as_ref() {
            "sslmode" | "ssl-mode" => has_mode = true,
            "sslrootcert" | "ssl-root-cert" | "ssl-ca" => has_ca = true,
            k if URL_PARAMETERS.contains(&k) || (k.starts_with("options[") && k.ends_with(']')) => {}
            // Only the name: the value may be a credential.
            k => {
                return Err(bad(format!(
                    "unknown query parameter `{}`; accepted: {}",
                    crate::error::redact(k),
                    URL_PARAMETERS.join(", ")
                )));
            }
        }
    }
    let opts: PgConnectOptions =
        text.parse().map_err(|e: sqlx::Error| bad(format!("not a valid postgres:// URL: {e}")))?;
    let opts = if has_mode {
        opts
    } else if tls.verifies() {
        opts.ssl_mode(tls.mode)
    } else {
        return Err(Error::Config {
            var: "DB_SSLMODE".into(),
            problem: format!(
                "`{}` does not authenticate the server; for --database-url, a mode that does not verify the \
                 server must be asked for in the URL itself (`?sslmode={0}`)",
                crate::db::sslmode_name(tls.mode)
            ),
        });
    };
    Ok(if has_ca {
        opts
    } else {
        match &tls.ca {
            CaBundle::Rds => opts.ssl_root_cert_from_pem(RDS_CA_BUNDLE.to_vec()),
            CaBundle::File(path) => opts.ssl_root_cert(path),
        }
    })
}

fn secret_settings(get: &impl Fn(&str) -> Option<String>, tls: Tls) -> Result<SecretSettings, Error> {
    let instance_id = get("DB_INSTANCE_IDENTIFIER");
    let cluster_id = get("DB_CLUSTER_IDENTIFIER");
    if instance_id.is_some() && cluster_id.is_some() {
        return Err(Error::Config {
            var: "DB_CLUSTER_IDENTIFIER".into(),
            problem: "set together with DB_INSTANCE_IDENTIFIER; set only one".into(),
        });
    }
    let auth = match get("DB_AUTH").as_deref() {
        None | Some("password") => Auth::Password,
        Some("iam") => Auth::Iam,
        Some(other) => {
            return Err(Error::Config {
                var: "DB_AUTH".into(),
                problem: format!("`{other}` is not one of: password, iam"),
            });
        }
    };
    let user = get("DB_USER");
    let secret_id = get("DB_SECRET_ARN");
    match (auth, &secret_id, &user) {
        (_, Some(_), _) | (Auth::Iam, None, Some(_)) => {}
        (Auth::Password, None, _) => {
            return Err(Error::Config {
                var: "DB_SECRET_ARN".into(),
                problem: "not set: name the Secrets Manager secret holding the database credentials \
                          (or set DB_AUTH=iam and DB_USER; on the command line, pass --database-url / DATABASE_URL)"
                    .into(),
            });
        }
        (Auth::Iam, None, None) => {
            return Err(Error::Config {
                var: "DB_USER".into(),
                problem: "not set: with DB_AUTH=iam and no DB_SECRET_ARN, DB_USER names the database user".into(),
            });
        }
    }
    if auth == Auth::Password && user.is_some() {
        return Err(Error::Config {
            var: "DB_USER".into(),
            problem: "applies only to DB_AUTH=iam; in password mode the user comes from the secret".into(),
        });
    }
    let port = match get("DB_PORT") {
        None => None,
        Some(p) => Some(
            p.parse()
                .map_err(|_| Error::Config { var: "DB_PORT".into(), problem: format!("`{p}` is not a port number") })?,
        ),
    };
    Ok(SecretSettings {
        secret_id,
        user,
        host: get("DB_HOST"),
        port,
        dbname: get("DB_NAME"),
        instance_id,
        cluster_id,
        auth,
        tls,
    })
}

/// What the user typed, or the tunable's default.
fn tunable(get: &impl Fn(&str) -> Option<String>, var: &str) -> Option<String> {
    get(var).or_else(|| TUNABLES.iter().find(|t| t.var == var).map(|t| t.default.to_string()))
}

fn number(get: &impl Fn(&str) -> Option<String>, var: &str) -> Result<f64, Error> {
    let v = tunable(get, var).unwrap_or_default();
    Kind::Seconds.check(&v).map_err(|problem| Error::Config { var: var.into(), problem })
}

/// A count or a number of milliseconds: `2.5` is an error, not 2.
fn integer(get: &impl Fn(&str) -> Option<String>, var: &str) -> Result<u64, Error> {
    let v = tunable(get, var).unwrap_or_default();
    Kind::Whole.check(&v).map(|n| n as u64).map_err(|problem| Error::Config { var: var.into(), problem })
}

fn boolean(get: &impl Fn(&str) -> Option<String>, var: &str) -> Result<bool, Error> {
    match get(var).map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("false") | Some("0") | Some("no") => Ok(false),
        Some("true") | Some("1") | Some("yes") => Ok(true),
        Some(other) => Err(Error::Config { var: var.into(), problem: format!("`{other}` is not true or false") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, Error> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_careful() {
        let s = settings(&[("DATABASE_URL", "postgres://u:p@localhost/db")]).unwrap();
        assert_eq!(s.lock_timeout, Duration::from_millis(500));
        assert_eq!(s.lock_retries, 10);
        assert_eq!(s.statement_timeout, None);
        assert!(!s.snapshot_before_migrate);
    }

    #[test]
    fn errors_name_the_variable() {
        let err = settings(&[]).unwrap_err().to_string();
        assert!(err.contains("DB_SECRET_ARN"), "{err}");
        let err = settings(&[("DATABASE_URL", "postgres://x/y"), ("LOCK_TIMEOUT_MS", "soon")]).unwrap_err().to_string();
        assert!(err.contains("LOCK_TIMEOUT_MS") && err.contains("soon"), "{err}");
        let err =
            settings(&[("DB_SECRET_ARN", "arn"), ("DB_AUTH", "kerberos"), ("DB_SSLMODE", "disable")]).unwrap_err();
        assert!(err.to_string().contains("DB_AUTH"));
        let err = settings(&[("DB_SECRET_ARN", "arn"), ("DB_CA_BUNDLE", "/nonexistent.pem")]).unwrap_err();
        assert!(err.to_string().contains("DB_CA_BUNDLE") && err.to_string().contains("/nonexistent.pem"));
        let err = settings(&[
            ("DB_SECRET_ARN", "a"),
            ("DB_SSLMODE", "disable"),
            ("DB_INSTANCE_IDENTIFIER", "i"),
            ("DB_CLUSTER_IDENTIFIER", "c"),
        ]);
        assert!(err.unwrap_err().to_string().contains("only one"));
    }

    fn mode(s: &Settings) -> &'static str {
        match &s.db {
            DbSource::Url(o) => crate::db::sslmode_name(o.get_ssl_mode()),
            other => panic!("not a URL: {other:?}"),
        }
    }

    #[test]
    fn a_url_without_sslmode_verifies_the_server() {
        let s = settings(&[("DATABASE_URL", "postgres://u:p@db.example.com/db")]).unwrap();
        assert_eq!(mode(&s), "verify-full");
        let s = settings(&[("DATABASE_URL", "postgres://u:p@localhost:5433/db"), ("DB_SSLMODE", "verify-ca")]).unwrap();
        assert_eq!(mode(&s), "verify-ca", "DB_SSLMODE applies when the URL names no mode");
        let s = settings(&[("DATABASE_URL", "postgres://u:p@h/db?sslmode=disable"), ("DB_SSLMODE", "verify-ca")]);
        assert_eq!(mode(&s.unwrap()), "disable", "the URL's own mode wins");
        // A weaker mode from the environment would silently apply to the URL: it must be in the URL.
        let err = settings(&[("DATABASE_URL", "postgres://u:p@h/db"), ("DB_SSLMODE", "require")]).unwrap_err();
        assert!(err.to_string().contains("DB_SSLMODE") && err.to_string().contains("?sslmode=require"), "{err}");
    }

    #[test]
    fn unknown_url_parameters_are_refused_by_name_only() {
        let err = settings(&[("DATABASE_URL", "postgres://u:p@h/db?sslmode=require&passwrd=hunter2")]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("DATABASE_URL") && msg.contains("`passwrd`") && !msg.contains("hunter2"), "{msg}");
        let err = settings(&[("DATABASE_URL", "mysql://u:hunter2@h/db")]).unwrap_err().to_string();
        assert!(err.contains("mysql") && !err.contains("hunter2"), "{err}");
        assert!(settings(&[("DATABASE_URL", "postgres://h/db?user=u&password=p&application_name=x")]).is_ok());
    }

    #[test]
    fn lambda_accepts_only_verifying_modes_unless_told_otherwise() {
        let lambda = [("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"), ("DB_SECRET_ARN", "arn")];
        for mode in ["require", "prefer", "allow", "disable"] {
            let err = settings(&[lambda[0], lambda[1], ("DB_SSLMODE", mode)]).unwrap_err().to_string();
            assert!(err.contains("DB_SSLMODE") && err.contains(mode) && err.contains("DB_ALLOW_INSECURE_TLS"), "{err}");
            let ok = settings(&[lambda[0], lambda[1], ("DB_SSLMODE", mode), ("DB_ALLOW_INSECURE_TLS", "true")]);
            assert!(ok.is_ok(), "{mode}");
        }
        for mode in ["verify-ca", "verify-full"] {
            assert!(settings(&[lambda[0], lambda[1], ("DB_SSLMODE", mode)]).is_ok());
        }
        // The CLI's secret path may relax it (the result says so).
        assert!(settings(&[lambda[1], ("DB_SSLMODE", "require")]).is_ok());
    }

    #[test]
    fn iam_with_a_user_needs_no_secret() {
        let s = settings(&[("DB_AUTH", "iam"), ("DB_USER", "scanner_refresh"), ("DB_HOST", "h")]).unwrap();
        let DbSource::Secret(s) = s.db else { panic!() };
        assert_eq!((s.secret_id, s.user.as_deref(), s.auth), (None, Some("scanner_refresh"), Auth::Iam));
        assert_eq!(s.tls.ca, CaBundle::Rds, "the built-in RDS bundle by default");
        let err = settings(&[("DB_AUTH", "iam")]).unwrap_err().to_string();
        assert!(err.contains("DB_USER"), "{err}");
        let err = settings(&[("DB_USER", "u")]).unwrap_err().to_string();
        assert!(err.contains("DB_SECRET_ARN"), "{err}");
        let err = settings(&[("DB_USER", "u"), ("DB_SECRET_ARN", "arn")]).unwrap_err().to_string();
        assert!(err.contains("DB_USER") && err.contains("iam"), "{err}");
    }

    #[test]
    fn every_tunable_is_a_documented_variable_with_a_valid_default() {
        for t in TUNABLES {
            assert!(ENV_VARS.iter().any(|e| e.name == t.var), "{} is not in ENV_VARS", t.var);
            assert!(t.kind.check(t.default).is_ok(), "{}: default {}", t.var, t.default);
        }
        let s = settings(&[("DATABASE_URL", "postgres://h/d")]).unwrap();
        assert_eq!((s.lock_timeout, s.lock_retries), (Duration::from_millis(500), 10), "defaults from TUNABLES");
    }

    #[test]
    fn integers_are_whole_numbers() {
        for (var, bad) in [("LOCK_RETRIES", "2.5"), ("LOCK_TIMEOUT_MS", "1e3"), ("LOCK_RETRIES", "-1")] {
            let err = settings(&[("DATABASE_URL", "postgres://h/d"), (var, bad)]).unwrap_err().to_string();
            assert!(err.contains(var) && err.contains(bad) && err.contains("whole"), "{err}");
        }
        let s = settings(&[("DATABASE_URL", "postgres://h/d"), ("LOCK_RETRIES", "3")]).unwrap();
        assert_eq!(s.lock_retries, 3);
    }

    #[test]
    fn debug_output_of_every_settings_type_hides_secrets() {
        let with_url = settings(&[
            ("DATABASE_URL", "postgres://admin:hunter2@h/db?sslmode=require"),
            ("REFRESH_SECRET_ARN", "arn:refresh"),
        ])
        .unwrap();
        let with_secret = settings(&[("DB_SECRET_ARN", "arn:db"), ("DB_AUTH", "iam")]).unwrap();
        let DbSource::Secret(secret_settings) = &with_secret.db else { panic!() };
        let db_secret = crate::credentials::parse_secret("s", r#"{"username":"u","password":"hunter2"}"#).unwrap();
        let printed = [
            format!("{with_url:?}"),
            format!("{with_url:#?}"),
            format!("{:?}", with_url.db),
            format!("{with_secret:?}"),
            format!("{secret_settings:?}"),
            format!("{:?}", secret_settings.tls),
            format!("{db_secret:?}"),
        ];
        for text in printed {
            assert!(!text.contains("hunter2"), "a password in Debug output: {text}");
        }
        assert!(format!("{with_url:?}").contains("admin"), "still useful: the user is shown");
    }

    #[test]
    fn the_embedded_rds_bundle_is_the_pinned_one() {
        use sha2::Digest;
        assert_eq!(hex::encode(sha2::Sha256::digest(RDS_CA_BUNDLE)), RDS_CA_BUNDLE_SHA256, "see certs/README.md");
        let text = std::str::from_utf8(RDS_CA_BUNDLE).unwrap();
        assert!(text.matches("-----BEGIN CERTIFICATE-----").count() > 50, "the all-regions bundle");
    }

    #[test]
    fn a_bad_url_does_not_echo_the_password() {
        let err = settings(&[("DATABASE_URL", "postgres://u:hunter2@host:notaport/db")]).unwrap_err().to_string();
        assert!(err.contains("DATABASE_URL") && !err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_schema_is_taken_as_stored_and_bad_names_are_refused() {
        let s = settings(&[("DATABASE_URL", "postgres://h/d")]).unwrap();
        assert_eq!(s.schema, None, "by default the login's current_schema()");
        for name in ["Scanner", "j", "my schema", "x\"y"] {
            let s = settings(&[("DATABASE_URL", "postgres://h/d"), ("DB_SCHEMA", name)]).unwrap();
            assert_eq!(s.schema.as_deref(), Some(name), "case and quotes kept: no folding, no SQL quoting");
        }
        for (name, why) in [(&*"s".repeat(64), "63"), ("pg_temp", "reserved"), ("a\0b", "NUL")] {
            let err = settings(&[("DATABASE_URL", "postgres://h/d"), ("DB_SCHEMA", name)]).unwrap_err().to_string();
            assert!(err.contains("DB_SCHEMA") && err.contains(why), "{err}");
        }
    }

    #[test]
    fn the_refresh_role_and_its_auth_are_checked() {
        let url = ("DATABASE_URL", "postgres://h/d");
        let s = settings(&[url]).unwrap();
        assert_eq!((s.refresh_role.as_str(), s.refresh_auth), ("scanner_refresh", Auth::Iam));
        let s = settings(&[url, ("REFRESH_SECRET_ARN", "arn:r")]).unwrap();
        assert_eq!(s.refresh_auth, Auth::Password, "a password to set means password auth");
        let s = settings(&[url, ("REFRESH_ROLE", "staging_refresh"), ("REFRESH_DB_AUTH", "password")]).unwrap();
        assert_eq!((s.refresh_role.as_str(), s.refresh_auth), ("staging_refresh", Auth::Password));
        for bad in ["Staging", "a-b", "1x", "pg_x", "rds_iam", "public", &"x".repeat(64)] {
            let err = settings(&[url, ("REFRESH_ROLE", bad)]).unwrap_err().to_string();
            assert!(err.contains("REFRESH_ROLE") && err.contains(bad), "{err}");
        }
        let err =
            settings(&[url, ("REFRESH_SECRET_ARN", "arn:r"), ("REFRESH_DB_AUTH", "iam")]).unwrap_err().to_string();
        assert!(err.contains("REFRESH_DB_AUTH") && err.contains("REFRESH_SECRET_ARN"), "{err}");
        let err = settings(&[url, ("REFRESH_DB_AUTH", "token")]).unwrap_err().to_string();
        assert!(err.contains("`token` is not one of: iam, password"), "{err}");
    }

    #[test]
    fn every_variable_read_is_documented() {
        // Every `get("NAME")` / `number(&get, "NAME", ..)` above must be listed in ENV_VARS, and vice versa.
        // The continuation's settings are read where they are used (src/continuation.rs).
        let mut read: Vec<&str> = Vec::new();
        for src in [include_str!("config.rs"), include_str!("continuation.rs")] {
            let code = &src[..src.find("#[cfg(test)]").unwrap()];
            for pat in ["get(\"", "&get, \"", "(get, \"", "number(\""] {
                for (i, _) in code.match_indices(pat) {
                    let rest = &code[i + pat.len()..];
                    read.push(&rest[..rest.find('"').unwrap()]);
                }
            }
        }
        read.sort();
        read.dedup();
        let mut listed: Vec<&str> = ENV_VARS.iter().map(|e| e.name).collect();
        listed.sort();
        assert_eq!(read, listed);
    }
}
