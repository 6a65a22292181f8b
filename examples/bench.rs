//! `make bench`: the migration guide's claims ("status queries on 1M objects: ~5 seconds → ~50ms",
//! "non-blocking (no downtime)") measured side by side against the obvious alternatives, on a local
//! PostgreSQL. Prints one Markdown table of ratios; `--out FILE` writes it to FILE as well.
//!
//! `DATABASE_URL=postgres://superuser:pw@127.0.0.1:port/postgres bench [--smoke] [--out FILE]`
//! (`scripts/bench.sh` starts a throwaway server and runs this.)
//!
//! Sizes and repetitions come from the environment: `BENCH_ROWS` (objects in the measured job,
//! default 1,000,000), `BENCH_BG_ROWS` (objects of the background jobs, default = BENCH_ROWS),
//! `BENCH_BG_JOBS` (9), `BENCH_REPS` (runs of the slow queries, 100; the fast ones run 10 times as
//! often), `BENCH_REFRESH_REPS` (15), `BENCH_MIGRATION_REPS` (5), `BENCH_PROCESS_REPS` (30),
//! `BENCH_HOLD_S` (how long the long reader of case 4 holds its lock, 5), `BENCH_WRITE_RATE`
//! (the offered write load of cases 3, 4 and 7, commits per second, 200), `BENCH_CASES` (a comma list
//! such as `7` or `1,3`: only those cases run; all by default; `8` alone skips building the dataset). `--smoke` makes everything tiny, so
//! `make test` proves the code still runs; its numbers mean nothing.

// The tests use all of it; the benchmark only part.
#[allow(dead_code)]
#[path = "../tests/it/support/runtime.rs"]
mod runtime;
#[path = "../tests/it/support/synthetic.rs"]
mod synthetic;

#[path = "bench/history.rs"]
mod history;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{ExitCode, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use scanner_migrator::{
    db,
    migrations::{Migrations, Script},
    refresh, runner,
};
use sqlx::{
    Connection, PgConnection, Row,
    postgres::{PgConnectOptions, PgSslMode},
};
use tokio::{io::AsyncReadExt, task::JoinHandle};

type R<T> = Result<T, String>;

trait Ctx<T> {
    fn ctx(self, what: &str) -> R<T>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> R<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// The template every dataset copy is made from.
const TEMPLATE: &str = "bench_tpl";
const BUCKET: &str = "bench-bucket";

// ---------------------------------------------------------------------------------------------
// Configuration

/// The server, from DATABASE_URL. The password only ever goes to connections and child
/// environments, never to output.
struct Server {
    user: String,
    password: String,
    host: String,
    port: u16,
}

impl Server {
    fn parse(url: &str) -> R<Self> {
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

    fn opts(&self, db: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .password(&self.password)
            .database(db)
            .ssl_mode(PgSslMode::Disable)
    }

    /// With the password: only for a child's DATABASE_URL.
    fn url(&self, db: &str) -> String {
        format!("postgres://{}:{}@{}:{}/{db}?sslmode=disable", self.user, self.password, self.host, self.port)
    }

    /// Without the password (psql gets it from PGPASSWORD).
    fn url_no_password(&self, db: &str) -> String {
        format!("postgres://{}@{}:{}/{db}?sslmode=disable", self.user, self.host, self.port)
    }

    async fn connect(&self, db: &str) -> R<PgConnection> {
        PgConnection::connect_with(&self.opts(db)).await.ctx(&format!("connecting to database {db}"))
    }
}

struct Config {
    server: Server,
    smoke: bool,
    out: Option<PathBuf>,
    rows: i64,
    bg_rows: i64,
    bg_jobs: i64,
    reps: usize,
    light_per_heavy: usize,
    refresh_reps: usize,
    migration_reps: usize,
    process_reps: usize,
    hold: Duration,
    write_rate: u32,
    settle: Duration,
    root: PathBuf,
    bin: PathBuf,
    hello: PathBuf,
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> R<T> {
    match std::env::var(name) {
        Ok(v) => v.trim().replace('_', "").parse().map_err(|_| format!("{name}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

impl Config {
    fn load() -> R<Self> {
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

    fn total_rows(&self) -> i64 {
        self.rows + self.bg_rows
    }

    /// Object number `g` of the generator: which job it belongs to is decided by spreading the
    /// measured job's `rows` evenly over all `total` rows, so its rows are interleaved with the others'.
    fn measured_key(&self, i: i64) -> String {
        let t = self.total_rows();
        let g = ((i + 1) * t + self.rows - 1) / self.rows - 1;
        format!("obj/{g:012}")
    }

    /// Keys of the measured job spread over its whole range.
    fn sample_keys(&self, n: i64) -> Vec<String> {
        let n = n.min(self.rows);
        (0..n).map(|k| self.measured_key(k * self.rows / n)).collect()
    }
}

fn job_id(j: i64) -> String {
    format!("00000000-0000-4000-8000-{j:012}")
}

// ---------------------------------------------------------------------------------------------
// Statistics and formatting

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile: with fewer than 100 runs, p99 is the worst run.
fn pct(xs: &[f64], p: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn fmt_time(s: f64) -> String {
    if s.is_nan() {
        "n/a".into()
    } else if s >= 10.0 {
        format!("{s:.1} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 0.01 {
        format!("{:.1} ms", s * 1e3)
    } else if s >= 0.001 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

fn fmt_bytes(b: f64) -> String {
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / 1024.0 / 1024.0 / 1024.0)
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    } else {
        format!("{:.0} KiB", b / 1024.0)
    }
}

fn fmt_factor(r: f64) -> String {
    if r >= 10.0 { format!("{r:.0}×") } else { format!("{r:.1}×") }
}

/// `base / value` for "lower is better" measures: "87× faster" or "1.9× slower".
fn ratio_lower(base: f64, value: f64, better: &str, worse: &str) -> String {
    if value <= 0.0 || base.is_nan() || value.is_nan() {
        return if value <= 0.0 && base > 0.0 { format!("∞ ({better})") } else { "n/a".into() };
    }
    let r = base / value;
    if (r - 1.0).abs() < 0.05 {
        "≈ same".into()
    } else if r > 1.0 {
        format!("{} {better}", fmt_factor(r))
    } else {
        format!("{} {worse}", fmt_factor(1.0 / r))
    }
}

fn with_commas(n: i64) -> String {
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

struct Line {
    case: String,
    measure: String,
    variant: String,
    median: String,
    p99: String,
    ratio: String,
    runs: usize,
}

#[derive(Default)]
struct Results {
    lines: Vec<Line>,
    headlines: Vec<String>,
    notes: Vec<String>,
    env: Vec<(String, String)>,
}

impl Results {
    #[allow(clippy::too_many_arguments)]
    fn line(
        &mut self,
        case: &str,
        measure: &str,
        variant: &str,
        median: String,
        p99: String,
        ratio: String,
        runs: usize,
    ) {
        eprintln!("  {case} | {measure} | {variant} | {median} | {p99} | {ratio}");
        self.lines.push(Line {
            case: case.into(),
            measure: measure.into(),
            variant: variant.into(),
            median,
            p99,
            ratio,
            runs,
        });
    }

    /// A timing row: median, p99 and the ratio of the baseline's median to this one's.
    fn timing(
        &mut self,
        case: &str,
        measure: &str,
        variant: &str,
        xs: &[f64],
        base: Option<&[f64]>,
        words: (&str, &str),
    ) {
        let ratio = match base {
            None => "baseline".into(),
            Some(b) => ratio_lower(median(b), median(xs), words.0, words.1),
        };
        self.line(case, measure, variant, fmt_time(median(xs)), fmt_time(pct(xs, 99.0)), ratio, xs.len());
    }

    fn markdown(&self, title: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# {title}\n");
        let _ = writeln!(
            s,
            "Reproduce with `make bench` (`scripts/bench.sh`: a throwaway PostgreSQL on 127.0.0.1, the dev \
             profile, this table on stdout and in `bench/RESULTS.md`); `BENCH_ROWS=10000000 make bench` for \
             10M objects. The machine is shared and noisy: read the ratios, not the absolute numbers.\n"
        );
        if !self.headlines.is_empty() {
            let _ = writeln!(s, "## Headline\n");
            for h in &self.headlines {
                let _ = writeln!(s, "- {h}");
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s, "## Results\n");
        let _ = writeln!(s, "| case | measure | variant | median | p99 | vs baseline | runs |");
        let _ = writeln!(s, "|---|---|---|---:|---:|---|---:|");
        for l in &self.lines {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                l.case, l.measure, l.variant, l.median, l.p99, l.ratio, l.runs
            );
        }
        let _ = writeln!(s, "\n## How each case is measured\n");
        for (i, n) in self.notes.iter().enumerate() {
            let _ = writeln!(s, "{}. {n}", i + 1);
        }
        let _ = writeln!(s, "\n## Environment\n");
        let _ = writeln!(s, "| | |\n|---|---|");
        for (k, v) in &self.env {
            let _ = writeln!(s, "| {k} | {v} |");
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Databases and the dataset

async fn exec(c: &mut PgConnection, sql: &str) -> R<()> {
    let short: String = sql.split_whitespace().take(6).collect::<Vec<_>>().join(" ");
    db::exec(c, sql).await.ctx(&short)
}

async fn drop_db(cfg: &Config, name: &str) -> R<()> {
    let mut admin = cfg.server.connect("postgres").await?;
    exec(&mut admin, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
    let _ = admin.close().await;
    Ok(())
}

/// A fresh copy of the dataset (a file copy of the template database).
async fn copy_dataset(cfg: &Config, name: &str) -> R<()> {
    drop_db(cfg, name).await?;
    let mut admin = cfg.server.connect("postgres").await?;
    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(&mut admin)
        .await
        .ctx("server version")?;
    let strategy = if version >= 150000 { " STRATEGY = FILE_COPY" } else { "" };
    exec(&mut admin, &format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}{strategy}")).await?;
    let _ = admin.close().await;
    Ok(())
}

fn run_settings() -> runner::RunSettings {
    runner::RunSettings { applied_by: "bench".into(), ..Default::default() }
}

/// The version of the embedded migration called `name` (never hard-coded).
fn version_of(name: &str) -> R<i64> {
    let m = Migrations::embedded().ctx("the embedded migrations")?;
    m.all().iter().find(|m| m.name == name).map(|m| m.version).ok_or_else(|| format!("no migration named {name}"))
}

/// 002: job_progress as a materialized view.
fn v_matview() -> R<i64> {
    version_of("optimize_for_scale")
}

/// 003: job_progress kept incrementally.
fn v_incremental() -> R<i64> {
    version_of("incremental_job_progress")
}

async fn migrate(c: &mut PgConnection, target: Option<i64>) -> R<runner::Report> {
    let migrations = Migrations::embedded().ctx("the embedded migrations")?;
    runner::run(c, &migrations, runner::Command::Migrate { target }, &run_settings(), None).await.ctx("migrate")
}

struct Dataset {
    total: i64,
    table_bytes: i64,
    heap_bytes: i64,
    build_s: f64,
}

/// The template: 000 and 001 applied by our runner, then the deterministic objects, vacuumed.
async fn build_dataset(cfg: &Config) -> R<Dataset> {
    let started = Instant::now();
    let mut admin = cfg.server.connect("postgres").await?;
    exec(&mut admin, &format!("DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")).await?;
    exec(&mut admin, &format!("CREATE DATABASE {TEMPLATE}")).await?;
    let mut c = cfg.server.connect(TEMPLATE).await?;
    migrate(&mut c, Some(1)).await?;
    // No autovacuum in the middle of a measurement: each pass sees exactly the state it describes.
    exec(&mut c, "ALTER TABLE job_objects SET (autovacuum_enabled = off)").await?;
    exec(&mut c, "ALTER TABLE jobs SET (autovacuum_enabled = off)").await?;
    // Job 0 is measured; jobs 1..=K are the background.
    exec(
        &mut c,
        &format!(
            "INSERT INTO jobs (job_id, bucket, prefix, execution_arn, created_at, updated_at)
             SELECT ('00000000-0000-4000-8000-' || lpad(j::text, 12, '0'))::uuid, '{BUCKET}', 'scan-' || j || '/',
                    'arn:aws:states:us-east-1:123456789012:execution:scanner:scan-' || j,
                    timestamptz '2026-01-01 00:00:00+00', timestamptz '2026-01-01 00:00:00+00'
               FROM generate_series(0, {k}) AS j",
            k = cfg.bg_jobs
        ),
    )
    .await?;
    // Object g belongs to the measured job when floor((g+1)N/T) > floor(gN/T): N rows spread evenly
    // over T. The status follows the scan's progress through the keys: the first 55% done (2% of
    // those failed), then 5% processing, the rest queued.
    let (n, t, k) = (cfg.rows, cfg.total_rows(), cfg.bg_jobs);
    let chunk = 1_000_000;
    let mut lo = 0;
    while lo < t {
        let hi = (lo + chunk).min(t);
        exec(
            &mut c,
            &format!(
                "INSERT INTO job_objects (job_id, bucket, key, etag, size_bytes, status, created_at, updated_at)
                 SELECT ('00000000-0000-4000-8000-' || lpad((CASE WHEN m THEN 0 ELSE 1 + g % {k} END)::text, 12, '0'))::uuid,
                        '{BUCKET}', 'obj/' || lpad(g::text, 12, '0'), md5(g::text), (g * 7919) % 10000000,
                        CASE WHEN f < 550 THEN CASE WHEN u < 20 THEN 'failed' ELSE 'succeeded' END
                             WHEN f < 600 THEN 'processing' ELSE 'queued' END,
                        timestamptz '2026-01-01 00:00:00+00' + g * interval '1 millisecond',
                        timestamptz '2026-01-01 00:00:00+00' + g * interval '1 millisecond'
                   FROM (SELECT g, ((g + 1) * {n}) / {t} > (g * {n}) / {t} AS m, (g * 1000) / {t} AS f,
                                (g * 7919) % 1000 AS u
                           FROM generate_series({lo}::bigint, {last}::bigint) AS g) AS s",
                last = hi - 1
            ),
        )
        .await?;
        if t > chunk {
            eprintln!("  {} of {} objects", with_commas(hi), with_commas(t));
        }
        lo = hi;
    }
    exec(&mut c, "VACUUM (ANALYZE) jobs, job_objects").await?;
    let measured: i64 = sqlx::query_scalar("SELECT count(*) FROM job_objects WHERE job_id = $1::uuid")
        .bind(job_id(0))
        .fetch_one(&mut c)
        .await
        .ctx("counting the measured job")?;
    if measured != cfg.rows {
        return Err(format!("the generator made {measured} objects in the measured job, not {}", cfg.rows));
    }
    let row = sqlx::query(
        "SELECT pg_total_relation_size('job_objects')::bigint AS total, pg_relation_size('job_objects')::bigint AS heap",
    )
    .fetch_one(&mut c)
    .await
    .ctx("table size")?;
    let _ = c.close().await;
    exec(&mut admin, "CHECKPOINT").await?;
    let _ = admin.close().await;
    Ok(Dataset {
        total: t,
        table_bytes: row.get("total"),
        heap_bytes: row.get("heap"),
        build_s: started.elapsed().as_secs_f64(),
    })
}

/// Moves a third of the measured job's rows one step on (queued → processing → succeeded).
async fn update_third(c: &mut PgConnection) -> R<u64> {
    sqlx::query(
        "UPDATE job_objects
            SET status = CASE status WHEN 'queued' THEN 'processing' WHEN 'processing' THEN 'succeeded' ELSE status END,
                updated_at = updated_at + interval '1 day'
          WHERE job_id = $1::uuid AND right(key, 12)::bigint % 3 = 0",
    )
    .bind(job_id(0))
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected())
    .ctx("updating a third of the job")
}

// ---------------------------------------------------------------------------------------------
// Case 1: the status read

#[derive(Clone, Copy)]
enum Read {
    Count,
    View,
    Pk,
}

async fn timed_read(c: &mut PgConnection, read: Read, key: &str) -> R<f64> {
    let job = job_id(0);
    let t = Instant::now();
    match read {
        Read::Count => {
            let rows = sqlx::query("SELECT status, count(*) FROM job_objects WHERE job_id = $1::uuid GROUP BY status")
                .bind(&job)
                .fetch_all(&mut *c)
                .await
                .ctx("COUNT(*) GROUP BY status")?;
            if rows.is_empty() {
                return Err("COUNT(*) GROUP BY status found no rows".into());
            }
        }
        Read::View => {
            sqlx::query(
                "SELECT total_objects, queued_count, processing_count, succeeded_count, failed_count
                   FROM job_progress WHERE job_id = $1::uuid",
            )
            .bind(&job)
            .fetch_one(&mut *c)
            .await
            .ctx("job_progress lookup")?;
        }
        Read::Pk => {
            sqlx::query("SELECT status FROM job_objects WHERE job_id = $1::uuid AND bucket = $2 AND key = $3")
                .bind(&job)
                .bind(BUCKET)
                .bind(key)
                .fetch_one(&mut *c)
                .await
                .ctx("primary-key lookup")?;
        }
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Counts by status from the table and from the view must agree (after a refresh).
async fn check_view(c: &mut PgConnection) -> R<()> {
    let from_table: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM job_objects WHERE job_id = $1::uuid GROUP BY status ORDER BY 1")
            .bind(job_id(0))
            .fetch_all(&mut *c)
            .await
            .ctx("counting by status")?;
    let v = sqlx::query(
        "SELECT queued_count, processing_count, succeeded_count, failed_count FROM job_progress WHERE job_id = $1::uuid",
    )
    .bind(job_id(0))
    .fetch_one(&mut *c)
    .await
    .ctx("reading job_progress")?;
    for (status, n) in &from_table {
        let col = format!("{status}_count");
        let in_view: i64 = v.try_get(col.as_str()).ctx("job_progress column")?;
        if in_view != *n {
            return Err(format!("job_progress says {in_view} {status}, the table {n}"));
        }
    }
    Ok(())
}

/// One pass of reads, interleaved so every variant sees the same noise: `plan` is (connection,
/// read, slow?). Returns the samples of each entry of the plan, in order.
async fn read_pass(cfg: &Config, conns: &mut [PgConnection], plan: &[(usize, Read, bool)]) -> R<Vec<Vec<f64>>> {
    let keys = cfg.sample_keys(256);
    let mut samples = vec![Vec::new(); plan.len()];
    let mut k = 0usize;
    for round in 0..cfg.reps + 2 {
        for (i, (conn, read, slow)) in plan.iter().enumerate() {
            let times = if *slow { 1 } else { cfg.light_per_heavy };
            for _ in 0..times {
                k += 1;
                let t = timed_read(&mut conns[*conn], *read, &keys[k % keys.len()]).await?;
                // The first two rounds warm the caches and the prepared statements.
                if round >= 2 {
                    samples[i].push(t);
                }
            }
        }
    }
    Ok(samples)
}

async fn case1(cfg: &Config, res: &mut Results) -> R<()> {
    eprintln!("case 1: the status read");
    copy_dataset(cfg, "bench_v1").await?;
    copy_dataset(cfg, "bench_v2").await?;
    let mut conns = vec![cfg.server.connect("bench_v1").await?, cfg.server.connect("bench_v2").await?];
    let [_, v2] = &mut conns[..] else { unreachable!() };
    // Pinned to 002, the migration this case measures (later ones are not about the status read).
    let report = migrate(v2, Some(v_matview()?)).await?;
    if report.applied.iter().map(|s| s.version).collect::<Vec<_>>() != [v_matview()?] {
        return Err(format!("migrating the copy applied {:?}, not 002", report.status));
    }
    exec(v2, "ANALYZE job_progress").await?;
    check_view(v2).await?;
    let mut updated = 0;
    for pass in ["fresh", "updated"] {
        if pass == "updated" {
            let [v1, v2] = &mut conns[..] else { unreachable!() };
            updated = update_third(v1).await?;
            if update_third(v2).await? != updated {
                return Err("the two copies did not update the same rows".into());
            }
            let settings = refresh::RefreshSettings {
                min_interval: Duration::ZERO,
                statement_timeout: None,
                deadline: Default::default(),
            };
            let r = refresh::refresh(v2, &settings).await.ctx("refresh")?;
            if r.status != "refreshed" {
                return Err(format!("the refresh was {}: {:?}", r.status, r.reason));
            }
            check_view(v2).await?;
        }
        let plan = [(0, Read::Count, true), (1, Read::Count, true), (1, Read::View, false), (1, Read::Pk, false)];
        let s = read_pass(cfg, &mut conns, &plan).await?;
        let what = if pass == "fresh" {
            "status read, fresh (after VACUUM ANALYZE)".to_string()
        } else {
            format!("status read after updating {} rows (not vacuumed; view refreshed)", with_commas(updated as i64))
        };
        let w = ("faster", "slower");
        res.timing("1", &what, "COUNT(*) GROUP BY status, before 002 (the guide's \"before\")", &s[0], None, w);
        res.timing("1", &what, "COUNT(*) GROUP BY status, with 002's (job_id, status) index", &s[1], Some(&s[0]), w);
        res.timing("1", &what, "**job_progress lookup (ours)**", &s[2], Some(&s[0]), w);
        res.timing("1", &what, "primary-key lookup of one object (the floor)", &s[3], Some(&s[0]), w);
        if pass == "fresh" {
            res.headlines.push(format!(
                "Status read of one job with {} objects: COUNT(*) GROUP BY status {} → job_progress lookup {} \
                 ({}; the guide claims ~5 s → ~50 ms, 100×; the table is in memory here, hence no 5 s). With \
                 only 002's index, COUNT takes {}.",
                with_commas(cfg.rows),
                fmt_time(median(&s[0])),
                fmt_time(median(&s[2])),
                ratio_lower(median(&s[0]), median(&s[2]), "faster", "slower"),
                fmt_time(median(&s[1])),
            ));
        }
    }
    for c in conns {
        let _ = c.close().await;
    }
    drop_db(cfg, "bench_v1").await?;
    res.notes.push(format!(
        "**Status read.** Two copies of the dataset, one at schema 001 (the guide's \"before\": only the primary \
         key (job_id, bucket, key)), one migrated to 002 by our runner. The reads run interleaved, round after round, \
         as prepared statements on open connections: COUNT(*) ... GROUP BY status on each copy (one run per round), \
         the job_progress row and a primary-key lookup of one object ({} runs per round, keys spread over the job). \
         Two warm-up rounds are not counted. The whole table fits in memory here (warm caches), which is why \
         COUNT is far below the guide's ~5 s; the ratio is the point. The second pass follows an UPDATE of a third of the job's rows on both \
         copies (no VACUUM, so the index-only scan has to visit the heap again) and a refresh of job_progress.",
        cfg.light_per_heavy
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Case 2: refreshing job_progress

type Reads = Vec<(Instant, f64)>;

fn spawn_reader(opts: PgConnectOptions, stop: Arc<AtomicBool>) -> JoinHandle<R<Reads>> {
    tokio::spawn(async move {
        let mut c = PgConnection::connect_with(&opts).await.ctx("reader connection")?;
        let mut reads = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            sqlx::query("SELECT total_objects, succeeded_count FROM job_progress WHERE job_id = $1::uuid")
                .bind(job_id(0))
                .fetch_one(&mut c)
                .await
                .ctx("reader")?;
            reads.push((t, t.elapsed().as_secs_f64()));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = c.close().await;
        Ok(reads)
    })
}

async fn case2(cfg: &Config, res: &mut Results) -> R<()> {
    eprintln!("case 2: refreshing job_progress");
    let mut c = cfg.server.connect("bench_v2").await?;
    let settings = refresh::RefreshSettings {
        min_interval: Duration::ZERO,
        statement_timeout: None,
        deadline: Default::default(),
    };
    let (mut plain_d, mut plain_w, mut ours_d, mut ours_w) = (vec![], vec![], vec![], vec![]);
    for rep in 0..cfg.refresh_reps {
        for ours in if rep % 2 == 0 { [false, true] } else { [true, false] } {
            let stop = Arc::new(AtomicBool::new(false));
            let reader = spawn_reader(cfg.server.opts("bench_v2"), stop.clone());
            tokio::time::sleep(Duration::from_millis(200)).await;
            let t0 = Instant::now();
            if ours {
                let r = refresh::refresh(&mut c, &settings).await.ctx("refresh")?;
                if r.status != "refreshed" || r.mode != Some("concurrent") {
                    return Err(format!("our refresh was {} ({:?}), not a concurrent refresh", r.status, r.mode));
                }
            } else {
                exec(&mut c, "REFRESH MATERIALIZED VIEW job_progress").await?;
            }
            let t1 = Instant::now();
            tokio::time::sleep(Duration::from_millis(200)).await;
            stop.store(true, Ordering::Relaxed);
            let reads = reader.await.ctx("reader task")??;
            let mut during: Vec<f64> = reads
                .iter()
                .filter(|(s, lat)| *s <= t1 && *s + Duration::from_secs_f64(*lat) >= t0)
                .map(|(_, lat)| *lat)
                .collect();
            // A refresh shorter than the reader's pause may fall between two reads: then the next read counts.
            if during.is_empty() {
                during.extend(reads.iter().find(|(s, _)| *s >= t0).map(|(_, lat)| *lat));
            }
            if during.is_empty() {
                return Err("the reader read nothing during or after the refresh".into());
            }
            let worst = during.iter().copied().fold(0.0, f64::max);
            let d = (t1 - t0).as_secs_f64();
            if ours {
                ours_d.push(d);
                ours_w.push(worst);
            } else {
                plain_d.push(d);
                plain_w.push(worst);
            }
        }
    }
    check_view(&mut c).await?;
    let _ = c.close().await;
    let m = "refresh of job_progress: duration";
    res.timing("2", m, "plain REFRESH MATERIALIZED VIEW", &plain_d, None, ("faster", "slower"));
    res.timing("2", m, "**ours: refresh_job_progress(), CONCURRENTLY**", &ours_d, Some(&plain_d), ("faster", "slower"));
    let m = "worst latency of a concurrent job_progress reader during the refresh";
    res.timing("2", m, "plain REFRESH MATERIALIZED VIEW", &plain_w, None, ("shorter", "longer"));
    res.timing("2", m, "**ours: CONCURRENTLY**", &ours_w, Some(&plain_w), ("shorter", "longer"));
    res.headlines.push(format!(
        "Refresh of job_progress over {} objects: a reader waits up to {} behind a plain REFRESH, {} behind ours \
         (CONCURRENTLY), which itself takes {} instead of {}.",
        with_commas(cfg.total_rows()),
        fmt_time(median(&plain_w)),
        fmt_time(median(&ours_w)),
        fmt_time(median(&ours_d)),
        fmt_time(median(&plain_d)),
    ));
    res.notes.push(
        "**Refresh.** On the migrated copy, alternating plain `REFRESH MATERIALIZED VIEW` and our refresh (the \
         library's `refresh::refresh`, which calls `refresh_job_progress()`, i.e. `REFRESH ... CONCURRENTLY`). A \
         second connection reads the job's job_progress row every 5 ms throughout; the worst latency of any read \
         that overlapped the refresh is its number for that run."
            .into(),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Cases 3 and 4: migrations under a steady write load

enum Writes {
    /// The scanner: new objects (upserts) and status updates of existing ones.
    Objects(Vec<String>),
    /// Job updates.
    Jobs(Vec<String>),
}

/// A writer offering `rate` commits per second (autocommit); returns when each commit finished.
fn spawn_writer(
    opts: PgConnectOptions,
    rate: u32,
    writes: Writes,
    stop: Arc<AtomicBool>,
) -> JoinHandle<R<Vec<Instant>>> {
    tokio::spawn(async move {
        let mut c = PgConnection::connect_with(&opts).await.ctx("writer connection")?;
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut done = Vec::new();
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let q = match &writes {
                Writes::Objects(_) if i.is_multiple_of(2) => sqlx::query(
                    "INSERT INTO job_objects (job_id, bucket, key, size_bytes, status) VALUES ($1::uuid, $2, $3, 1, 'queued')
                     ON CONFLICT (job_id, bucket, key) DO UPDATE SET status = 'processing', updated_at = now()",
                )
                .bind(job_id(1))
                .bind(BUCKET)
                .bind(format!("writer/{i:012}")),
                Writes::Objects(keys) => sqlx::query(
                    "UPDATE job_objects SET status = 'succeeded', updated_at = now()
                      WHERE job_id = $1::uuid AND bucket = $2 AND key = $3",
                )
                .bind(job_id(0))
                .bind(BUCKET)
                .bind(keys[i % keys.len()].clone()),
                Writes::Jobs(ids) => sqlx::query("UPDATE jobs SET updated_at = now() WHERE job_id = $1::uuid")
                    .bind(ids[i % ids.len()].clone()),
            };
            q.execute(&mut c).await.ctx("writer")?;
            done.push(Instant::now());
            i += 1;
        }
        let _ = c.close().await;
        Ok(done)
    })
}

/// Commits in each whole second from `t0` until `t1` (the last second may run past `t1`).
fn per_second(commits: &[Instant], t0: Instant, t1: Instant) -> Vec<usize> {
    let n = ((t1 - t0).as_secs_f64().ceil() as usize).max(1);
    let mut slots = vec![0; n];
    for c in commits.iter().filter(|c| **c >= t0) {
        let k = (*c - t0).as_secs_f64() as usize;
        if k < n {
            slots[k] += 1;
        }
    }
    slots
}

/// The longest time between two commits, over the gaps that overlap [t0, t1].
fn longest_gap(commits: &[Instant], t0: Instant, t1: Instant) -> f64 {
    commits.windows(2).filter(|w| w[1] >= t0 && w[0] <= t1).map(|w| (w[1] - w[0]).as_secs_f64()).fold(0.0, f64::max)
}

/// 002 the way it was applied before: plain CREATE INDEX, everything in one transaction.
fn plain_002() -> R<String> {
    let m = Migrations::embedded().ctx("the embedded migrations")?;
    let up = &m.get(2).ok_or("no migration 002")?.up;
    let statements: Vec<String> =
        up.statements().iter().map(|s| s.sql.replace("CREATE INDEX CONCURRENTLY", "CREATE INDEX") + ";").collect();
    Ok(format!("BEGIN;\n{}\nCOMMIT;", statements.join("\n")))
}

struct WriteRun {
    min_per_s: f64,
    zero_s: f64,
    gap_s: f64,
    duration_s: f64,
    before_per_s: f64,
}

async fn case3_run(cfg: &Config, ours: bool) -> R<WriteRun> {
    let name = "bench_c3";
    copy_dataset(cfg, name).await?;
    let mut c = cfg.server.connect(name).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer =
        spawn_writer(cfg.server.opts(name), cfg.write_rate, Writes::Objects(cfg.sample_keys(10_000)), stop.clone());
    tokio::time::sleep(cfg.settle).await;
    let t0 = Instant::now();
    if ours {
        let report = migrate(&mut c, Some(v_matview()?)).await?;
        if report.applied.iter().map(|s| s.version).collect::<Vec<_>>() != [v_matview()?] {
            return Err(format!("our runner applied {:?}, not 002", report.status));
        }
    } else {
        exec(&mut c, &plain_002()?).await?;
    }
    let t1 = Instant::now();
    tokio::time::sleep(cfg.settle).await;
    stop.store(true, Ordering::Relaxed);
    let commits = writer.await.ctx("writer task")??;
    let valid: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_index WHERE indisvalid AND indexrelid::regclass::text IN
           ('idx_job_objects_job_status', 'idx_job_objects_job_updated_at', 'job_progress_job_id_key')",
    )
    .fetch_one(&mut c)
    .await
    .ctx("checking the indexes")?;
    if valid != 3 {
        return Err(format!("after 002 only {valid} of its 3 indexes are valid"));
    }
    let _ = c.close().await;
    drop_db(cfg, name).await?;
    let slots = per_second(&commits, t0, t1);
    let warm_from = t0 - Duration::from_secs(1).min(cfg.settle);
    let before = commits.iter().filter(|c| **c >= warm_from && **c < t0).count() as f64;
    Ok(WriteRun {
        min_per_s: slots.iter().copied().min().unwrap_or(0) as f64,
        zero_s: slots.iter().filter(|n| **n == 0).count() as f64,
        gap_s: longest_gap(&commits, t0, t1),
        duration_s: (t1 - t0).as_secs_f64(),
        before_per_s: before / (t0 - warm_from).as_secs_f64(),
    })
}

/// A row for a "higher is better" count: median, and the worst run in the p99 column.
fn count_line(res: &mut Results, measure: &str, variant: &str, xs: &[f64], base: Option<&[f64]>, higher_better: bool) {
    let worst = if higher_better { xs.iter().copied().fold(f64::INFINITY, f64::min) } else { pct(xs, 99.0) };
    let (m, b) = (median(xs), base.map(median));
    let ratio = match b {
        None => "baseline".to_string(),
        Some(b) if (b - m).abs() < 1e-9 => "same".into(),
        Some(b) if higher_better && b == 0.0 => format!("{m:.0} vs 0"),
        Some(b) if higher_better => ratio_lower(m, b, "higher", "lower"),
        Some(b) if m == 0.0 => format!("none vs {b:.0}"),
        Some(b) => ratio_lower(b, m, "fewer", "more"),
    };
    res.line("3", measure, variant, format!("{m:.0}"), format!("{worst:.0}"), ratio, xs.len());
}

async fn case3(cfg: &Config, res: &mut Results) -> R<()> {
    eprintln!("case 3: applying 002 under a steady write load");
    let (mut plain, mut ours) = (Vec::new(), Vec::new());
    for rep in 0..cfg.migration_reps {
        for o in if rep % 2 == 0 { [false, true] } else { [true, false] } {
            let run = case3_run(cfg, o).await?;
            if o { ours.push(run) } else { plain.push(run) }
        }
    }
    let pick = |runs: &[WriteRun], f: fn(&WriteRun) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
    let base = "plain CREATE INDEX, one transaction";
    let our = "**ours: CONCURRENTLY, statement by statement**";
    let m = "lowest one-second write throughput while 002 applies (commits/s; p99 column: worst run)";
    count_line(res, m, base, &pick(&plain, |r| r.min_per_s), None, true);
    count_line(res, m, our, &pick(&ours, |r| r.min_per_s), Some(&pick(&plain, |r| r.min_per_s)), true);
    let m = "seconds with zero writes while 002 applies";
    count_line(res, m, base, &pick(&plain, |r| r.zero_s), None, false);
    count_line(res, m, our, &pick(&ours, |r| r.zero_s), Some(&pick(&plain, |r| r.zero_s)), false);
    let m = "longest writer stall while 002 applies";
    res.timing("3", m, base, &pick(&plain, |r| r.gap_s), None, ("shorter", "longer"));
    res.timing("3", m, our, &pick(&ours, |r| r.gap_s), Some(&pick(&plain, |r| r.gap_s)), ("shorter", "longer"));
    let m = "duration of 002";
    res.timing("3", m, base, &pick(&plain, |r| r.duration_s), None, ("faster", "slower"));
    res.timing(
        "3",
        m,
        our,
        &pick(&ours, |r| r.duration_s),
        Some(&pick(&plain, |r| r.duration_s)),
        ("faster", "slower"),
    );
    let steady = median(
        &pick(&plain, |r| r.before_per_s).into_iter().chain(pick(&ours, |r| r.before_per_s)).collect::<Vec<_>>(),
    );
    res.headlines.push(format!(
        "Applying 002 to {} objects under {steady:.0} writes/s: the plain transaction stops writes for {:.0} s \
         (lowest second {:.0} commits); our runner's lowest second still has {:.0} commits ({:.0} s at zero).",
        with_commas(cfg.total_rows()),
        median(&pick(&plain, |r| r.zero_s)),
        median(&pick(&plain, |r| r.min_per_s)),
        median(&pick(&ours, |r| r.min_per_s)),
        median(&pick(&ours, |r| r.zero_s)),
    ));
    res.notes.push(format!(
        "**002 under write load.** Each run gets a fresh file copy of the dataset at schema 001. A writer offers \
         {} commits/s (autocommit, alternating an upsert of a new object and a status update of an existing one; \
         measured before the migration: {steady:.0}/s) from {:.1} s before until {:.1} s after the migration. \
         Commits are counted per wall-clock second from the migration's start; the last second may extend past \
         its end. Ours is our runner (`runner::run`, migrate); the baseline runs the same statements with plain \
         `CREATE INDEX` inside BEGIN/COMMIT. Variants alternate order run by run; the indexes are checked valid \
         afterwards.",
        cfg.write_rate,
        cfg.settle.as_secs_f64(),
        cfg.settle.as_secs_f64()
    ));
    Ok(())
}

async fn case4_run(cfg: &Config, ours: bool) -> R<(f64, f64, u32)> {
    let name = "bench_c4";
    drop_db(cfg, name).await?;
    let mut admin = cfg.server.connect("postgres").await?;
    exec(&mut admin, &format!("CREATE DATABASE {name}")).await?;
    let _ = admin.close().await;
    let mut c = cfg.server.connect(name).await?;
    migrate(&mut c, Some(0)).await?;
    exec(
        &mut c,
        &format!(
            "INSERT INTO jobs (bucket, prefix) SELECT '{BUCKET}', 'scan-' || j FROM generate_series(1, 1000) AS j"
        ),
    )
    .await?;
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT job_id::text FROM jobs").fetch_all(&mut c).await.ctx("reading the job ids")?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(cfg.server.opts(name), cfg.write_rate, Writes::Jobs(ids), stop.clone());
    tokio::time::sleep(cfg.settle.min(Duration::from_millis(500))).await;
    // The long reader: ACCESS SHARE on jobs, held in an open transaction.
    let mut reader = cfg.server.connect(name).await?;
    exec(&mut reader, "BEGIN").await?;
    exec(&mut reader, "SELECT count(*) FROM jobs").await?;
    let hold = cfg.hold;
    let reader = tokio::spawn(async move {
        tokio::time::sleep(hold).await;
        let r = exec(&mut reader, "COMMIT").await;
        let _ = reader.close().await;
        r
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    let mut retries = 0;
    if ours {
        let report = migrate(&mut c, Some(1)).await?;
        if report.applied.iter().map(|s| s.version).collect::<Vec<_>>() != [1] {
            return Err(format!("our runner applied {:?}, not 001", report.status));
        }
        retries = report.applied[0].lock_retries;
    } else {
        let m = Migrations::embedded().ctx("the embedded migrations")?;
        let text = &m.get(1).ok_or("no migration 001")?.up.sql;
        let script = Script::parse("001_add_execution_arn.sql", text).ctx("parsing 001")?;
        exec(&mut c, "SET lock_timeout = 0").await?;
        for stmt in script.statements() {
            exec(&mut c, &stmt.sql).await?;
        }
    }
    let t1 = Instant::now();
    reader.await.ctx("reader task")??;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let commits = writer.await.ctx("writer task")??;
    let _ = c.close().await;
    drop_db(cfg, name).await?;
    Ok((longest_gap(&commits, t0, t1), (t1 - t0).as_secs_f64(), retries))
}

async fn case4(cfg: &Config, res: &mut Results) -> R<()> {
    eprintln!("case 4: applying 001 behind a long reader");
    let (mut plain, mut ours, mut retries) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..cfg.migration_reps {
        for o in if rep % 2 == 0 { [false, true] } else { [true, false] } {
            let (gap, d, r) = case4_run(cfg, o).await?;
            if o {
                ours.push((gap, d));
                retries.push(r);
            } else {
                plain.push((gap, d));
            }
        }
    }
    let gaps = |v: &[(f64, f64)]| v.iter().map(|x| x.0).collect::<Vec<_>>();
    let durs = |v: &[(f64, f64)]| v.iter().map(|x| x.1).collect::<Vec<_>>();
    let hold = cfg.hold.as_secs_f64();
    let m = format!("longest stall of a writer to jobs while 001 waits behind a {hold:.0} s reader");
    let base = "plain ALTER TABLE, no lock_timeout";
    let our = "**ours: lock_timeout 500 ms + retry**";
    res.timing("4", &m, base, &gaps(&plain), None, ("shorter", "longer"));
    res.timing("4", &m, our, &gaps(&ours), Some(&gaps(&plain)), ("shorter", "longer"));
    let m = "duration of 001";
    res.timing("4", m, base, &durs(&plain), None, ("faster", "slower"));
    res.timing("4", m, our, &durs(&ours), Some(&durs(&plain)), ("faster", "slower"));
    res.headlines.push(format!(
        "Applying 001 while a reader holds jobs for {hold:.0} s: writers to jobs stall {} without a lock_timeout, \
         {} with ours ({}).",
        fmt_time(median(&gaps(&plain))),
        fmt_time(median(&gaps(&ours))),
        ratio_lower(median(&gaps(&plain)), median(&gaps(&ours)), "shorter", "longer"),
    ));
    res.notes.push(format!(
        "**001 behind a long reader.** A fresh database at schema 000 with 1,000 jobs. A writer offers {} \
         `UPDATE jobs` commits/s; a reader opens a transaction, reads jobs (ACCESS SHARE) and holds it for {hold:.1} s; \
         100 ms later 001 starts. Its ALTER TABLE needs ACCESS EXCLUSIVE: while it waits, every writer queues behind \
         it. The stall is the longest gap between two writer commits overlapping the migration. Ours is our runner \
         (lock_timeout 500 ms, up to 10 retries with backoff; retries per run: {:?}); the baseline runs the file's \
         statements one by one with no lock_timeout, as psql did.",
        cfg.write_rate, retries
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Case 5: a no-op migrate

async fn case5(cfg: &Config, res: &mut Results) -> R<()> {
    eprintln!("case 5: a no-op migrate on an up-to-date database");
    let db_name = "bench_v2";
    // Pinned to 002, where case 1 left the copy: the old script knew 000-002 only, and re-running
    // 002's file is not a no-op once 003 has made job_progress a view. Its up files, in order.
    let m = Migrations::embedded().ctx("the embedded migrations")?;
    let files: Vec<PathBuf> = m
        .all()
        .iter()
        .filter(|m| m.version <= v_matview().unwrap_or(-1))
        .map(|m| cfg.root.join("migrations").join(format!("{}.sql", m.label())))
        .collect();
    let (mut psql, mut cli, mut inproc) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..cfg.process_reps + 1 {
        let psql_s = history::psql_apply(cfg, db_name, &files).await?;

        let t = Instant::now();
        let out = tokio::process::Command::new(&cfg.bin)
            .args(["migrate", "--target", &v_matview()?.to_string()])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", cfg.server.url(db_name))
            .stdin(Stdio::null())
            .output()
            .await
            .ctx("running scanner-migrator")?;
        let cli_s = t.elapsed().as_secs_f64();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if !out.status.success() || json["status"] != "up_to_date" {
            return Err(format!(
                "scanner-migrator migrate did not say up_to_date: {}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }

        let t = Instant::now();
        let mut c = cfg.server.connect(db_name).await?;
        let report = migrate(&mut c, Some(v_matview()?)).await?;
        let _ = c.close().await;
        let in_s = t.elapsed().as_secs_f64();
        if report.status != "up_to_date" {
            return Err(format!("the in-process migrate was {}, not up_to_date", report.status));
        }
        if rep > 0 {
            psql.push(psql_s);
            cli.push(cli_s);
            inproc.push(in_s);
        }
    }
    drop_db(cfg, db_name).await?;
    let m = "no-op migrate of an up-to-date database, end to end";
    res.timing(
        "5",
        m,
        "psql -v ON_ERROR_STOP=1 -f, each of 000..002 (the old script)",
        &psql,
        None,
        ("faster", "slower"),
    );
    res.timing("5", m, "**ours: the CLI (`scanner-migrator migrate`)**", &cli, Some(&psql), ("faster", "slower"));
    res.timing("5", m, "ours in-process (connect, `runner::run`, close)", &inproc, Some(&psql), ("faster", "slower"));
    res.headlines.push(format!(
        "A no-op migrate: our CLI {} (lock, plan, verify included) vs {} for psql re-running the files.",
        fmt_time(median(&cli)),
        fmt_time(median(&psql)),
    ));
    res.notes.push(
        "**No-op migrate.** On the copy migrated to 002 (up to date at `--target 2`: the old script knew 000-002 \
         only), interleaved, after one warm-up round: psql run once per file 000..002, in order (every statement is idempotent, so this is what re-running the old script's \
         apply step costs; its SSH tunnel and checks are not counted); our CLI as a process (`migrate --target 2`: connect, \
         advisory lock, history, plan, verification of every applied migration, JSON out), and the same in-process."
            .into(),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Case 6: the Lambda artefact

/// The environment the function needs to start (no AWS or database is contacted before the first poll).
fn function_env() -> Vec<(String, String)> {
    [
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        // TLS verify-full against the built-in RDS bundle: nothing to point at, and never contacted here.
        ("DB_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:bench"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// From exec to the first request on the Runtime API, which must be the poll for the next invocation.
async fn first_poll(bin: &Path) -> R<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.ctx("binding the Runtime API port")?;
    let addr = listener.local_addr().ctx("local address")?.to_string();
    let t = Instant::now();
    let mut child = tokio::process::Command::new(bin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", &addr)
        .env("_HANDLER", "migrate")
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .envs(function_env())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ctx("starting the function")?;
    let first = tokio::time::timeout(Duration::from_secs(20), async {
        let (mut sock, _) = listener.accept().await?;
        let mut head = Vec::new();
        let mut buf = [0u8; 2048];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>((t.elapsed(), String::from_utf8_lossy(&head).lines().next().unwrap_or("").to_string()))
    })
    .await;
    let _ = child.kill().await;
    match first {
        Err(_) => Err(format!("{} made no Runtime API request within 20 s", bin.display())),
        Ok(Err(e)) => Err(format!("reading the first Runtime API request: {e}")),
        Ok(Ok((d, line))) if line.starts_with("GET /2018-06-01/runtime/invocation/next") => Ok(d.as_secs_f64()),
        Ok(Ok((_, line))) => Err(format!("{}'s first request was `{line}`, not the poll", bin.display())),
    }
}

/// From exec to the answer of a first, no-op invocation under the Runtime API emulator of the tests.
async fn first_invocation(bin: &Path, payload: serde_json::Value) -> R<f64> {
    let api = runtime::RuntimeApi::start().await;
    let t = Instant::now();
    let function = runtime::Function::start(bin.to_str().ok_or("path")?, &api, "migrate", &function_env());
    let outcome = api.invoke(payload, Duration::from_secs(30)).await;
    let d = t.elapsed().as_secs_f64();
    let logs = function.stop().await;
    match outcome {
        runtime::Outcome::Response(_) => Ok(d),
        other => Err(format!("{}: {other:?}\n{logs}", bin.display())),
    }
}

/// The size of `path` in a deflated zip, as the Lambda artefact is packed.
fn deflated(path: &Path) -> R<f64> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import io, sys, zipfile; b = io.BytesIO(); z = zipfile.ZipFile(b, 'w', zipfile.ZIP_DEFLATED); \
             z.write(sys.argv[1], 'bootstrap'); z.close(); print(len(b.getvalue()))",
        ])
        .arg(path)
        .output()
        .ctx("python3")?;
    String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|_| format!("zipping {}: no size", path.display()))
}

async fn case6(cfg: &Config, res: &mut Results) -> R<()> {
    eprintln!("case 6: the Lambda artefact");
    let zip = cfg.root.join("target/lambda/scanner-migrator/bootstrap.zip");
    let zip_size = std::fs::metadata(&zip).map(|m| m.len() as f64).ok();
    let m = "Lambda zip (arm64 release, `make build`)";
    match zip_size {
        Some(b) => res.line("6", m, "scanner-migrator bootstrap.zip", fmt_bytes(b), "–".into(), "–".into(), 1),
        None => res.line("6", m, "not built (run make build)", "–".into(), "–".into(), "–".into(), 0),
    }
    let (hello_zip, ours_zip) = (deflated(&cfg.hello)?, deflated(&cfg.bin)?);
    let m = "dev-profile binary, zipped (deflate) the same way";
    res.line("6", m, "hello-world lambda_runtime function", fmt_bytes(hello_zip), "–".into(), "baseline".into(), 1);
    res.line(
        "6",
        m,
        "**scanner-migrator**",
        fmt_bytes(ours_zip),
        "–".into(),
        ratio_lower(hello_zip, ours_zip, "smaller", "larger"),
        1,
    );
    let (mut hp, mut op, mut hi, mut oi) = (vec![], vec![], vec![], vec![]);
    for rep in 0..cfg.process_reps + 1 {
        let a = first_poll(&cfg.hello).await?;
        let b = first_poll(&cfg.bin).await?;
        let c = first_invocation(&cfg.hello, serde_json::json!({})).await?;
        let d = first_invocation(&cfg.bin, serde_json::json!({"tf": {"action": "delete"}})).await?;
        if rep > 0 {
            hp.push(a);
            op.push(b);
            hi.push(c);
            oi.push(d);
        }
    }
    let w = ("faster", "slower");
    let m = "start-up: exec to the first Runtime API poll (dev profile, this host)";
    res.timing("6", m, "hello-world lambda_runtime function", &hp, None, w);
    res.timing("6", m, "**scanner-migrator** (migrate handler)", &op, Some(&hp), w);
    let m = "exec to the answer of a first no-op invocation, Runtime API emulator";
    res.timing("6", m, "hello-world lambda_runtime function", &hi, None, w);
    res.timing("6", m, "**scanner-migrator** (`{\"tf\":{\"action\":\"delete\"}}`)", &oi, Some(&hi), w);
    res.headlines.push(format!(
        "The Lambda: {}; start-up to the first Runtime API poll {} vs {} for a hello-world function ({}, dev \
         profile).",
        match zip_size {
            Some(b) => format!("the arm64 zip is {}", fmt_bytes(b)),
            None => "the arm64 zip is not built (run make build)".into(),
        },
        fmt_time(median(&op)),
        fmt_time(median(&hp)),
        ratio_lower(median(&hp), median(&op), "faster", "slower"),
    ));
    res.notes.push(format!(
        "**The Lambda artefact.** The zip is `make build`'s arm64 release artefact when present (its hello-world \
         twin would need a release cross-build, which the benchmark does not do); the side-by-side sizes are the \
         dev-profile host binaries (not stripped) deflated as the zip packs them. Start-up: {} runs each, \
         interleaved, after one warm-up: the binary is exec'd as Lambda execs `bootstrap` (its environment only, \
         `DB_SECRET_ARN` set, nothing contacted before the poll) and timed to the first request on a Runtime API \
         socket; then to the answer of a first invocation under the tests' Runtime API emulator (a no-op for ours: \
         Terraform's delete). Cold start on AWS adds the download and the sandbox, which this does not see.",
        cfg.process_reps
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Case 7: migration 003, job_progress exact at every read

/// A file copy of database `template` named `name`.
async fn copy_from(cfg: &Config, name: &str, template: &str) -> R<()> {
    drop_db(cfg, name).await?;
    let mut admin = cfg.server.connect("postgres").await?;
    exec(&mut admin, &format!("CREATE DATABASE {name} TEMPLATE {template} STRATEGY = FILE_COPY")).await?;
    let _ = admin.close().await;
    Ok(())
}

/// `fraction` of the measured job's keys, spread evenly over it, shifted by `offset`.
fn changed_keys(cfg: &Config, fraction: f64, offset: i64) -> Vec<String> {
    let n = ((cfg.rows as f64 * fraction).round() as i64).max(1);
    let stride = (cfg.rows / n).max(1);
    (0..n).map(|k| cfg.measured_key((k * stride + offset) % cfg.rows)).collect()
}

const CYCLE: &str = "CASE status WHEN 'queued' THEN 'processing' WHEN 'processing' THEN 'succeeded' \
                     WHEN 'succeeded' THEN 'failed' ELSE 'queued' END";

/// Moves `keys` of the measured job one status on, `batch` keys per statement (as the scanner does).
async fn cycle_status(c: &mut PgConnection, keys: &[String], batch: usize) -> R<u64> {
    let mut n = 0;
    let sql = format!(
        "UPDATE job_objects SET status = {CYCLE}, updated_at = now() WHERE job_id = $1::uuid AND bucket = $2 AND key = ANY($3)"
    );
    for chunk in keys.chunks(batch.max(1)) {
        n += sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(job_id(0))
            .bind(BUCKET)
            .bind(chunk)
            .execute(&mut *c)
            .await
            .ctx("changing statuses")?
            .rows_affected();
    }
    Ok(n)
}

async fn pending_deltas(c: &mut PgConnection) -> R<i64> {
    sqlx::query_scalar("SELECT count(*) FROM job_progress_deltas").fetch_one(&mut *c).await.ctx("counting deltas")
}

struct Switch {
    duration_s: f64,
    gap_s: f64,
    reader_worst_s: f64,
    retries: u32,
    before_per_s: f64,
}

/// 003 applied to a copy at 002 while a writer and a reader run.
async fn case7_switch(cfg: &Config, name: &str) -> R<Switch> {
    let mut c = cfg.server.connect(name).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer =
        spawn_writer(cfg.server.opts(name), cfg.write_rate, Writes::Objects(cfg.sample_keys(10_000)), stop.clone());
    let reader = spawn_reader(cfg.server.opts(name), stop.clone());
    tokio::time::sleep(cfg.settle).await;
    let t0 = Instant::now();
    let report = migrate(&mut c, None).await?;
    let t1 = Instant::now();
    if !report.applied.iter().any(|s| s.version == v_incremental().unwrap_or(-1)) {
        return Err(format!(
            "the switch applied {:?}, not 003",
            report.applied.iter().map(|s| s.version).collect::<Vec<_>>()
        ));
    }
    tokio::time::sleep(cfg.settle).await;
    stop.store(true, Ordering::Relaxed);
    let commits = writer.await.ctx("writer task")??;
    // The reader fails the bench if job_progress is ever missing or has no row for the job.
    let reads = reader.await.ctx("reader task")??;
    let worst = reads
        .iter()
        .filter(|(s, lat)| *s <= t1 && *s + Duration::from_secs_f64(*lat) >= t0)
        .map(|(_, lat)| *lat)
        .fold(0.0, f64::max);
    check_view(&mut c).await?;
    let _ = c.close().await;
    let warm_from = t0 - Duration::from_secs(1).min(cfg.settle);
    let before = commits.iter().filter(|c| **c >= warm_from && **c < t0).count() as f64;
    Ok(Switch {
        duration_s: (t1 - t0).as_secs_f64(),
        gap_s: longest_gap(&commits, t0, t1),
        reader_worst_s: worst,
        retries: report.applied.iter().map(|s| s.lock_retries).sum(),
        before_per_s: before / (t0 - warm_from).as_secs_f64(),
    })
}

enum ScannerWrite {
    Upsert,
    Update,
}

/// One commit of the scanner's write, `keys` rows; its duration.
/// In `bench/RESULTS.md`, what follows this line was measured by other runs and is kept as it is.
const KEEP_MARKER: &str = "<!-- make bench keeps what follows: measured by other runs -->";

async fn scanner_write(c: &mut PgConnection, what: &ScannerWrite, keys: &[String]) -> R<f64> {
    let t = Instant::now();
    match what {
        ScannerWrite::Upsert => sqlx::query(
            "INSERT INTO job_objects (job_id, bucket, key, size_bytes, status)
             SELECT $1::uuid, $2, k, 1, 'queued' FROM unnest($3::text[]) AS k
             ON CONFLICT (job_id, bucket, key) DO UPDATE SET status = excluded.status, updated_at = now()",
        )
        .bind(job_id(1))
        .bind(BUCKET)
        .bind(keys)
        .execute(&mut *c)
        .await
        .ctx("upsert of new objects")?,
        ScannerWrite::Update => sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE job_objects SET status = {CYCLE}, updated_at = now() WHERE job_id = $1::uuid AND bucket = $2 AND key = ANY($3)"
        )))
        .bind(job_id(0))
        .bind(BUCKET)
        .bind(keys)
        .execute(&mut *c)
        .await
        .ctx("status update")?,
    };
    Ok(t.elapsed().as_secs_f64())
}

async fn case7(cfg: &Config, res: &mut Results) -> R<()> {
    eprintln!("case 7: migration 003, job_progress exact at every read");
    let (old, new) = ("bench_c7_002", "bench_c7_003");
    copy_dataset(cfg, old).await?;
    {
        let mut c = cfg.server.connect(old).await?;
        migrate(&mut c, Some(v_matview()?)).await?;
        exec(&mut c, "VACUUM (ANALYZE) jobs, job_objects").await?;
        exec(&mut c, "ANALYZE job_progress").await?;
        let _ = c.close().await;
    }
    copy_from(cfg, new, old).await?;

    // 7a: the switch, under a writer and a reader.
    eprintln!("  the switch to 003 under a steady write load");
    let sw = case7_switch(cfg, new).await?;
    let mut o = cfg.server.connect(old).await?;
    let mut n = cfg.server.connect(new).await?;
    exec(&mut n, "VACUUM (ANALYZE) job_objects, job_progress_counts, job_progress_deltas").await?;
    res.line(
        "7",
        &format!(
            "the switch to 003 on {} objects under {:.0} writes/s (migrate from 002: 003 and any later migration): duration",
            with_commas(cfg.total_rows()),
            sw.before_per_s
        ),
        "**003 (triggers, per-job backfill, one-transaction swap)**",
        fmt_time(sw.duration_s),
        "".into(),
        format!("{} lock retries", sw.retries),
        1,
    );
    res.line(
        "7",
        "the switch: longest writer stall / worst job_progress read while it runs",
        "**003**",
        fmt_time(sw.gap_s),
        fmt_time(sw.reader_worst_s),
        "median column: stall; p99 column: worst read".into(),
        1,
    );

    // 7b: upkeep after 1% and 10% of the active job's rows changed, and reads while deltas are pending.
    let settings = refresh::RefreshSettings {
        min_interval: Duration::ZERO,
        statement_timeout: None,
        deadline: Default::default(),
    };
    let reps = if cfg.smoke { 2 } else { cfg.refresh_reps.clamp(1, 5) };
    let keys = cfg.sample_keys(256);
    let mut upkeep_headline = Vec::new();
    for fraction in [0.01, 0.10] {
        let pctl = format!("{:.0}%", fraction * 100.0);
        eprintln!("  upkeep after changing {pctl} of the active job");
        let (mut full, mut fold, mut reads_old, mut reads_new, mut pending) = (vec![], vec![], vec![], vec![], vec![]);
        let mut changed = 0;
        for rep in 0..reps {
            let ks = changed_keys(cfg, fraction, rep as i64);
            for ours in if rep % 2 == 0 { [false, true] } else { [true, false] } {
                let c = if ours { &mut n } else { &mut o };
                changed = cycle_status(c, &ks, 1000).await?;
                // Reads of the active job's row now (003: with the deltas pending).
                for i in 0..if cfg.smoke { 20 } else { 300 } {
                    let t = timed_read(c, Read::View, &keys[i % keys.len()]).await?;
                    if i >= 10 {
                        if ours { reads_new.push(t) } else { reads_old.push(t) }
                    }
                }
                if ours {
                    pending.push(pending_deltas(c).await? as f64);
                    // Exact at this moment, before any fold.
                    check_view(c).await?;
                    let t = Instant::now();
                    let r = refresh::refresh(c, &settings).await.ctx("refresh (fold)")?;
                    fold.push(t.elapsed().as_secs_f64());
                    if r.mode != Some("incremental") || r.delta_rows.unwrap_or(0) < 1 {
                        return Err(format!("the fold was {:?} and folded {:?} rows", r.mode, r.delta_rows));
                    }
                    check_view(c).await?;
                } else {
                    let t = Instant::now();
                    let r = refresh::refresh(c, &settings).await.ctx("refresh (002)")?;
                    full.push(t.elapsed().as_secs_f64());
                    if r.mode != Some("concurrent") {
                        return Err(format!("the 002 refresh was {:?}, not concurrent", r.mode));
                    }
                    check_view(c).await?;
                }
            }
        }
        let m = format!(
            "upkeep after {} of the active job's rows changed ({} rows, batches of 1,000; {} objects in all)",
            pctl,
            with_commas(changed as i64),
            with_commas(cfg.total_rows())
        );
        res.timing(
            "7",
            &m,
            "002: `refresh_job_progress()` = REFRESH ... CONCURRENTLY",
            &full,
            None,
            ("cheaper", "dearer"),
        );
        res.timing(
            "7",
            &m,
            "**003: `refresh_job_progress()` = fold of the log**",
            &fold,
            Some(&full),
            ("cheaper", "dearer"),
        );
        let m = format!(
            "read of the active job's job_progress row after {pctl} changed (003: {:.0} delta rows pending, and equal to COUNT)",
            median(&pending)
        );
        res.timing("7", &m, "002: materialized view (stale until refreshed)", &reads_old, None, ("faster", "slower"));
        res.timing(
            "7",
            &m,
            "**003: counts + pending deltas (exact)**",
            &reads_new,
            Some(&reads_old),
            ("faster", "slower"),
        );
        upkeep_headline.push(format!(
            "{pctl} changed: fold {} vs full refresh {} ({}), reads p99 {} with {:.0} deltas pending",
            fmt_time(median(&fold)),
            fmt_time(median(&full)),
            ratio_lower(median(&full), median(&fold), "cheaper", "dearer"),
            fmt_time(pct(&reads_new, 99.0)),
            median(&pending)
        ));
    }

    // 7c: the scanner's write cost with and without 003.
    let mut write_headline = Vec::new();
    for batch in [1usize, 100, 1000] {
        let commits = match (cfg.smoke, batch) {
            (true, _) => 6,
            (false, 1) => 600,
            (false, 100) => 120,
            _ => 40,
        };
        for (what, label) in [
            (ScannerWrite::Upsert, "upsert of new objects"),
            (ScannerWrite::Update, "status update of existing objects"),
        ] {
            eprintln!("  scanner write: {label}, batches of {batch}");
            let (mut t_old, mut t_new) = (vec![], vec![]);
            let update_keys = changed_keys(cfg, (batch * commits) as f64 / cfg.rows as f64, 7);
            for i in 0..commits + 4 {
                let ks: Vec<String> = match what {
                    ScannerWrite::Upsert => (0..batch).map(|k| format!("w7/{batch}/{i}/{k}")).collect(),
                    ScannerWrite::Update => update_keys.iter().cycle().skip(i * batch).take(batch).cloned().collect(),
                };
                // Alternate which goes first, commit by commit.
                for ours in if i % 2 == 0 { [false, true] } else { [true, false] } {
                    let t = scanner_write(if ours { &mut n } else { &mut o }, &what, &ks).await?;
                    if i >= 4 {
                        if ours { t_new.push(t) } else { t_old.push(t) }
                    }
                }
            }
            refresh::refresh(&mut n, &settings).await.ctx("fold after the writes")?;
            let m = format!("scanner write: {label}, {batch} row(s) per commit (autocommit): time per commit");
            res.timing("7", &m, "002 (no triggers)", &t_old, None, ("faster", "slower"));
            res.timing(
                "7",
                &m,
                "**003 (statement triggers append deltas)**",
                &t_new,
                Some(&t_old),
                ("faster", "slower"),
            );
            let (a, b) = (median(&t_old), median(&t_new));
            write_headline.push(format!(
                "{label} ×{batch}: {:.0} → {:.0} commits/s, {} → {} per row ({:+.0}%)",
                1.0 / a,
                1.0 / b,
                fmt_time(a / batch as f64),
                fmt_time(b / batch as f64),
                (b / a - 1.0) * 100.0
            ));
        }
    }
    check_view(&mut n).await?;
    check_view(&mut o).await.ok();
    let _ = o.close().await;
    let _ = n.close().await;
    drop_db(cfg, old).await?;
    drop_db(cfg, new).await?;

    res.headlines.push(format!(
        "003 on {} objects (one active job of {}): {}.",
        with_commas(cfg.total_rows()),
        with_commas(cfg.rows),
        upkeep_headline.join("; ")
    ));
    res.headlines.push(format!(
        "003's cost to the scanner's writes (median per commit, 002 → 003): {}.",
        write_headline.join("; ")
    ));
    res.headlines.push(format!(
        "The switch to 003 on {} objects (migrate from 002, later migrations included) took {} under {:.0} writes/s; the longest writer stall was {}, the worst \
         job_progress read {} (never missing, never without the job's row).",
        with_commas(cfg.total_rows()),
        fmt_time(sw.duration_s),
        sw.before_per_s,
        fmt_time(sw.gap_s),
        fmt_time(sw.reader_worst_s)
    ));
    res.notes.push(format!(
        "**003.** Two identical file copies of the dataset migrated to 002 (vacuumed); one is switched to 003 by our \
         runner while a writer offers {} commits/s (as in case 3) and a reader reads the measured job's job_progress \
         row every 5 ms (the bench fails if a read errors or finds no row): the switch's duration, the longest gap \
         between two writer commits and the worst read overlapping it. Upkeep: on both copies the same keys of the \
         measured job move one status on (queued → processing → succeeded → failed → queued), in UPDATEs of 1,000 \
         keys; then the job_progress row is read 300 times (10 warm-up reads not counted), on 003 checked equal to \
         COUNT(*) ... GROUP BY status with the deltas still pending, and `refresh::refresh` runs: on 002 a REFRESH \
         ... CONCURRENTLY of the whole view, on 003 the fold of the log; {} runs each, the copies alternating. \
         Writes: the scanner's two writes as prepared autocommit statements, the same keys on both copies, \
         alternating commit by commit, 4 warm-up commits not counted: an upsert of new objects (INSERT ... SELECT \
         unnest ... ON CONFLICT DO UPDATE) into a background job, and a status update of existing objects of the \
         measured job (UPDATE ... WHERE key = ANY).",
        cfg.write_rate, reps
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------

async fn environment(cfg: &Config, data: Option<&Dataset>, res: &mut Results) -> R<()> {
    let mut c = cfg.server.connect("postgres").await?;
    let version: String = sqlx::query_scalar("SELECT version()").fetch_one(&mut c).await.ctx("version")?;
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, current_setting(name) FROM pg_settings WHERE name IN
           ('shared_buffers', 'work_mem', 'maintenance_work_mem', 'effective_cache_size', 'max_parallel_workers_per_gather',
            'max_parallel_maintenance_workers', 'jit', 'fsync', 'synchronous_commit', 'full_page_writes', 'random_page_cost')
         ORDER BY name",
    )
    .fetch_all(&mut c)
    .await
    .ctx("settings")?;
    let _ = c.close().await;
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<f64>().unwrap_or(0.0))
        })
        .map(|kb| fmt_bytes(kb * 1024.0))
        .unwrap_or_default();
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(&cfg.root)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = if git(&["status", "--porcelain"]).is_empty() { "" } else { " with uncommitted changes" };
    res.env.push(("date".into(), chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string()));
    res.env.push(("commit".into(), format!("{commit}{dirty}")));
    res.env.push(("CPUs".into(), format!("{cpus} ({model}), shared; {mem} RAM")));
    res.env.push(("PostgreSQL".into(), version));
    res.env.push((
        "settings".into(),
        settings.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
            + "; autovacuum off on the benchmark's tables (each pass sees exactly the state it describes)",
    ));
    if let Some(data) = data {
        res.env.push((
        "dataset".into(),
        format!(
            "{} objects in the measured job, {} in {} background jobs, interleaved ({} rows, {} with indexes, heap {}), \
             built in {:.0} s",
            with_commas(cfg.rows),
            with_commas(cfg.bg_rows),
            cfg.bg_jobs,
            with_commas(data.total),
            fmt_bytes(data.table_bytes as f64),
            fmt_bytes(data.heap_bytes as f64),
            data.build_s
        ),
    ));
    }
    res.env.push((
        "status mix".into(),
        "by key order, as a running scan: 53.9% succeeded, 1.1% failed, 5% processing, 40% queued".into(),
    ));
    res.env.push((
        "runs".into(),
        format!(
            "case 1: {} slow / {} fast reads per pass; case 2: {} per variant; cases 3-4: {}; cases 5-6: {}; case 7: \
             {} upkeep runs per change size, 290 reads each, 600 / 120 / 40 commits for batches of 1 / 100 / 1,000; \
             case 8: {} databases per count, 5 no-ops each{}",
            cfg.reps,
            cfg.reps * cfg.light_per_heavy,
            cfg.refresh_reps,
            cfg.migration_reps,
            cfg.process_reps,
            cfg.refresh_reps.clamp(1, 5),
            cfg.migration_reps,
            std::env::var("BENCH_CASES").map(|c| format!("; only cases {c} ran (BENCH_CASES)")).unwrap_or_default()
        ),
    ));
    res.env.push(("binaries".into(), "dev profile (`cargo build --bin scanner-migrator --examples`)".into()));
    Ok(())
}

async fn run(cfg: &Config) -> R<Results> {
    let mut res = Results::default();
    eprintln!(
        "bench: {} objects in the measured job, {} in the background{}",
        with_commas(cfg.rows),
        with_commas(cfg.bg_rows),
        if cfg.smoke { " (smoke run: the numbers mean nothing)" } else { "" }
    );
    // BENCH_CASES=7 (or 1,2,...) runs only those cases.
    let only: Vec<String> =
        std::env::var("BENCH_CASES").map(|v| v.split(',').map(|c| c.trim().to_string()).collect()).unwrap_or_default();
    let run = |case: &str| only.is_empty() || only.iter().any(|c| c == case);
    // Case 8 makes its own databases; only the others read the dataset.
    if only.iter().all(|c| c == "8") && !only.is_empty() {
        environment(cfg, None, &mut res).await?;
        history::case8(cfg, &mut res).await?;
        return Ok(res);
    }
    eprintln!("building the dataset");
    let data = build_dataset(cfg).await?;
    eprintln!("  {} rows in {:.1} s", with_commas(data.total), data.build_s);
    environment(cfg, Some(&data), &mut res).await?;
    if run("1") || run("2") || run("5") {
        case1(cfg, &mut res).await?;
    }
    if run("2") {
        case2(cfg, &mut res).await?;
    }
    if run("3") {
        case3(cfg, &mut res).await?;
    }
    if run("4") {
        case4(cfg, &mut res).await?;
    }
    if run("5") {
        case5(cfg, &mut res).await?;
    } else {
        drop_db(cfg, "bench_v2").await?;
    }
    if run("6") {
        case6(cfg, &mut res).await?;
    }
    if run("7") {
        case7(cfg, &mut res).await?;
    }
    if run("8") {
        history::case8(cfg, &mut res).await?;
    }
    drop_db(cfg, TEMPLATE).await?;
    Ok(res)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cfg = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    match run(&cfg).await {
        Ok(res) => {
            let title = if cfg.smoke {
                "make bench (smoke run: tiny sizes, the numbers mean nothing)"
            } else {
                "make bench: the guide's claims, measured side by side"
            };
            let md = res.markdown(title);
            println!("{md}");
            if let Some(out) = &cfg.out {
                if let Some(dir) = out.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                // Sections measured by other runs (the zip, the 10M case) follow KEEP_MARKER and survive.
                let kept = std::fs::read_to_string(out)
                    .ok()
                    .and_then(|old| old.find(KEEP_MARKER).map(|i| old[i..].to_string()))
                    .unwrap_or_default();
                let md = if kept.is_empty() { md } else { format!("{}\n\n{kept}", md.trim_end()) };
                if let Err(e) = std::fs::write(out, &md) {
                    eprintln!("bench: writing {}: {e}", out.display());
                    return ExitCode::FAILURE;
                }
                eprintln!("bench: wrote {}", out.display());
            }
            eprintln!("bench: done in {:.0} s", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
