//! The benchmark's configuration: the server from DATABASE_URL, sizes and repetitions from the environment.

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{Connection, PgConnection};
use std::path::PathBuf;
use std::time::Duration;

/// A result whose error is the message the benchmark prints.
pub type R<T> = Result<T, String>;

/// Adds what was being done to an error.
pub trait Ctx<T> {
    fn ctx(self, what: &str) -> R<T>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> R<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// The template every dataset copy is made from.
pub const TEMPLATE: &str = "bench_tpl";
/// The bucket of every generated object.
pub const BUCKET: &str = "bench-bucket";

/// The server, from DATABASE_URL. The password only ever goes to connections and child
/// environments, never to output.
#[derive(Clone)]
pub struct Server {
    pub user: String,
    pub password: String,
    pub host: String,
    pub port: u16,
}

impl Server {
    /// From a postgres:// URL with user, password, host and port.
    pub fn parse(url: &str) -> R<Self> {
        let bad = || "DATABASE_URL must look like postgres://user:password@host:port/db".to_string();
        let rest = url.strip_prefix("postgres://").or_else(|| url.strip_prefix("postgresql://")).ok_or_else(bad)?;
        let (auth, location) = rest.rsplit_once('@').ok_or_else(bad)?;
        let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
        let hostport = location.split(['/', '?']).next().unwrap_or_default();
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
            None => (hostport, 5432),
        };
        Ok(Server { user: user.into(), password: password.into(), host: host.into(), port })
    }

    /// Connection options for database `db`, without TLS (the server is local).
    pub fn opts(&self, db: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .password(&self.password)
            .database(db)
            .ssl_mode(PgSslMode::Disable)
    }

    /// With the password: only for a child's DATABASE_URL.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{}:{}@{}:{}/{db}?sslmode=disable", self.user, self.password, self.host, self.port)
    }

    /// Without the password (psql gets it from PGPASSWORD).
    pub fn url_no_password(&self, db: &str) -> String {
        format!("postgres://{}@{}:{}/{db}?sslmode=disable", self.user, self.host, self.port)
    }

    /// A connection to database `db`.
    pub async fn connect(&self, db: &str) -> R<PgConnection> {
        PgConnection::connect_with(&self.opts(db)).await.ctx(&format!("connecting to database {db}"))
    }
}

#[derive(Clone)]
pub struct Config {
    pub server: Server,
    pub smoke: bool,
    pub out: Option<PathBuf>,
    pub rows: i64,
    pub bg_rows: i64,
    pub bg_jobs: i64,
    pub reps: usize,
    pub light_per_heavy: usize,
    pub refresh_reps: usize,
    pub migration_reps: usize,
    pub process_reps: usize,
    pub hold: Duration,
    pub write_rate: u32,
    pub settle: Duration,
    pub root: PathBuf,
    pub bin: PathBuf,
    pub hello: PathBuf,
}

/// A number from the environment (underscores allowed), or `default` when unset.
pub fn env_num<T: std::str::FromStr>(name: &str, default: T) -> R<T> {
    match std::env::var(name) {
        Ok(v) => v.trim().replace('_', "").parse().map_err(|_| format!("{name}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

impl Config {
    /// From the arguments and the environment; checks the binaries the cases run are built.
    pub fn load() -> R<Self> {
        let mut smoke = false;
        let mut out = None;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--smoke" => smoke = true,
                "--out" => out = Some(PathBuf::from(args.next().ok_or("--out needs a file")?)),
                other => return Err(format!("unknown argument {other}; usage: bench [--smoke] [--out FILE]")),
            }
        }
        let url = std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL (a superuser URL) is not set")?;
        let server = Server::parse(&url)?;
        let rows = env_num("BENCH_ROWS", if smoke { 2_000 } else { 1_000_000 })?;
        let exe = std::env::current_exe().ctx("locating this binary")?;
        let examples = exe.parent().ok_or("no parent directory")?.to_path_buf();
        let bin = examples.parent().ok_or("no target directory")?.join("scanner-migrator");
        let hello = examples.join("hello_lambda");
        for (what, path) in [("scanner-migrator", &bin), ("hello_lambda", &hello)] {
            if !path.is_file() {
                return Err(format!(
                    "{} is missing ({what}): cargo build --bin scanner-migrator --examples",
                    path.display()
                ));
            }
        }
        let reps = env_num("BENCH_REPS", if smoke { 3 } else { 100 })?;
        let config = Config {
            server,
            smoke,
            out,
            rows,
            bg_rows: env_num("BENCH_BG_ROWS", rows)?,
            bg_jobs: env_num("BENCH_BG_JOBS", 9i64)?.max(1),
            reps,
            light_per_heavy: if smoke { 1 } else { 10 },
            refresh_reps: env_num("BENCH_REFRESH_REPS", if smoke { 3 } else { 15 })?,
            migration_reps: env_num("BENCH_MIGRATION_REPS", if smoke { 3 } else { 5 })?,
            process_reps: env_num("BENCH_PROCESS_REPS", if smoke { 3 } else { 30 })?,
            hold: Duration::from_secs_f64(env_num("BENCH_HOLD_S", if smoke { 1.0 } else { 5.0 })?),
            write_rate: env_num("BENCH_WRITE_RATE", 200u32)?.max(1),
            settle: if smoke { Duration::from_millis(300) } else { Duration::from_secs(2) },
            root: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            bin,
            hello,
        };
        if config.rows < 1 || config.bg_rows < 0 || config.reps < 1 {
            return Err("BENCH_ROWS and BENCH_REPS must be at least 1".into());
        }
        Ok(config)
    }

    /// Objects in all: the measured job and the background.
    pub fn total_rows(&self) -> i64 {
        self.rows + self.bg_rows
    }

    /// Object number `g` of the generator: which job it belongs to is decided by spreading the
    /// measured job's `rows` evenly over all `total` rows, so its rows are interleaved with the others'.
    pub fn measured_key(&self, i: i64) -> String {
        let t = self.total_rows();
        let g = ((i + 1) * t + self.rows - 1) / self.rows - 1;
        format!("obj/{g:012}")
    }

    /// Keys of the measured job spread over its whole range.
    pub fn sample_keys(&self, n: i64) -> Vec<String> {
        let n = n.min(self.rows);
        (0..n).map(|k| self.measured_key(k * self.rows / n)).collect()
    }
}

/// The UUID of job number `j` (0 is the measured job).
pub fn job_id(j: i64) -> String {
    format!("00000000-0000-4000-8000-{j:012}")
}
