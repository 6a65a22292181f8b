//! Typed settings read from the environment (Lambda) or the command line (CLI).

use std::time::Duration;

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

/// Every environment variable the binary reads (besides the runtime's own `_HANDLER`,
/// `AWS_LAMBDA_RUNTIME_API`, `AWS_REGION` and friends).
pub const ENV_VARS: &[EnvVar] = &[
    EnvVar {
        name: "DB_SECRET_ARN",
        required_in_lambda: true,
        doc: "Secrets Manager secret with the database username/password (RDS-managed or rotation shape)",
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
        doc: "disable|prefer|require|verify-ca|verify-full (default verify-full)",
    },
    EnvVar {
        name: "DB_CA_BUNDLE",
        required_in_lambda: false,
        doc: "PEM CA bundle for TLS verification (default: rds-ca-bundle.pem next to the binary)",
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
        name: "REFRESH_MIN_INTERVAL_S",
        required_in_lambda: false,
        doc: "skip a refresh when the view is younger than this (default 60)",
    },
];

/// Where the database credentials come from.
#[derive(Debug, Clone)]
pub enum DbSource {
    /// A `postgres://` URL (CLI only). Its password stays inside the options.
    Url(Box<sqlx::postgres::PgConnectOptions>),
    /// The Secrets Manager secret, with optional overrides and RDS lookups.
    Secret(SecretSettings),
}

/// How to turn the secret into a connection.
#[derive(Debug, Clone)]
pub struct SecretSettings {
    /// The secret's ARN or name.
    pub secret_id: String,
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
    /// TLS mode.
    pub sslmode: sqlx::postgres::PgSslMode,
    /// CA bundle for verify-ca / verify-full.
    pub ca_bundle: Option<std::path::PathBuf>,
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
}

impl Settings {
    /// Reads settings through `lookup` (the environment, or the CLI's flags over it).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let db = match get("DATABASE_URL") {
            Some(url) => DbSource::Url(Box::new(url.parse().map_err(|e: sqlx::Error| Error::Config {
                var: "DATABASE_URL".into(),
                // sqlx's URL errors do not echo the URL, so the password cannot leak here.
                problem: format!("not a valid postgres:// URL: {e}"),
            })?)),
            None => DbSource::Secret(secret_settings(&get)?),
        };
        Ok(Settings {
            db,
            connect_timeout: Duration::from_secs_f64(number(&get, "DB_CONNECT_TIMEOUT_S", 10.0)?),
            lock_timeout: Duration::from_millis(number(&get, "LOCK_TIMEOUT_MS", 500.0)? as u64),
            lock_retries: number(&get, "LOCK_RETRIES", 10.0)? as u32,
            advisory_wait: Duration::from_secs_f64(number(&get, "ADVISORY_LOCK_WAIT_S", 60.0)?),
            statement_timeout: match number(&get, "STATEMENT_TIMEOUT_S", 0.0)? {
                0.0 => None,
                s => Some(Duration::from_secs_f64(s)),
            },
            snapshot_before_migrate: boolean(&get, "SNAPSHOT_BEFORE_MIGRATE")?,
            refresh_min_interval: Duration::from_secs_f64(number(&get, "REFRESH_MIN_INTERVAL_S", 60.0)?),
            allow_rollback: boolean(&get, "ALLOW_ROLLBACK")?,
            index_build_rows_per_s: number(&get, "INDEX_BUILD_ROWS_PER_S", 250_000.0)?.max(1.0),
        })
    }
}

fn secret_settings(get: &impl Fn(&str) -> Option<String>) -> Result<SecretSettings, Error> {
    let secret_id = get("DB_SECRET_ARN").ok_or_else(|| Error::Config {
        var: "DB_SECRET_ARN".into(),
        problem: "not set: name the Secrets Manager secret holding the database credentials \
                  (or, on the command line, pass --database-url / DATABASE_URL)"
            .into(),
    })?;
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
    let sslmode = match get("DB_SSLMODE") {
        None => sqlx::postgres::PgSslMode::VerifyFull,
        Some(mode) => mode.parse().map_err(|_| Error::Config {
            var: "DB_SSLMODE".into(),
            problem: format!("`{mode}` is not one of: disable, allow, prefer, require, verify-ca, verify-full"),
        })?,
    };
    let ca_bundle = get("DB_CA_BUNDLE").map(std::path::PathBuf::from).or_else(default_ca_bundle);
    if matches!(sslmode, sqlx::postgres::PgSslMode::VerifyCa | sqlx::postgres::PgSslMode::VerifyFull) {
        match &ca_bundle {
            Some(path) if path.is_file() => {}
            Some(path) => {
                return Err(Error::Config {
                    var: "DB_CA_BUNDLE".into(),
                    problem: format!(
                        "{} is not a readable file (needed for sslmode {})",
                        path.display(),
                        crate::db::sslmode_name(sslmode)
                    ),
                });
            }
            None => {
                return Err(Error::Config {
                    var: "DB_CA_BUNDLE".into(),
                    problem: "not set, and no rds-ca-bundle.pem next to the binary; needed for sslmode verify-full"
                        .into(),
                });
            }
        }
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
        host: get("DB_HOST"),
        port,
        dbname: get("DB_NAME"),
        instance_id,
        cluster_id,
        auth,
        sslmode,
        ca_bundle,
    })
}

/// `rds-ca-bundle.pem` beside the executable (`/var/task` in Lambda), when it is there.
fn default_ca_bundle() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("LAMBDA_TASK_ROOT")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::current_exe().ok()?.parent().map(|p| p.to_path_buf()))?;
    Some(dir.join("rds-ca-bundle.pem")).filter(|p| p.is_file())
}

fn number(get: &impl Fn(&str) -> Option<String>, var: &str, default: f64) -> Result<f64, Error> {
    match get(var) {
        None => Ok(default),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0 && *n < 1e9)
            .ok_or_else(|| Error::Config { var: var.into(), problem: format!("`{v}` is not a non-negative number") }),
    }
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

    #[test]
    fn a_bad_url_does_not_echo_the_password() {
        let err = settings(&[("DATABASE_URL", "postgres://u:hunter2@host:notaport/db")]).unwrap_err().to_string();
        assert!(err.contains("DATABASE_URL") && !err.contains("hunter2"), "{err}");
    }

    #[test]
    fn every_variable_read_is_documented() {
        // Every `get("NAME")` / `number(&get, "NAME", ..)` above must be listed in ENV_VARS, and vice versa.
        let src = include_str!("config.rs");
        let code = &src[..src.find("#[cfg(test)]").unwrap()];
        let mut read: Vec<&str> = Vec::new();
        for pat in ["get(\"", "&get, \""] {
            for (i, _) in code.match_indices(pat) {
                let rest = &code[i + pat.len()..];
                read.push(&rest[..rest.find('"').unwrap()]);
            }
        }
        read.sort();
        read.dedup();
        let mut listed: Vec<&str> = ENV_VARS.iter().map(|e| e.name).collect();
        listed.sort();
        assert_eq!(read, listed);
    }
}
