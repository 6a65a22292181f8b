//! Case 8 (issue 19): cost that does not grow with history. The embedded migrations plus 25, 50,
//! 100 and 200 synthetic ones (tests/it/support/synthetic.rs: a table with a foreign key to
//! `jobs`, an index, a view), the same files for both sides: the first apply to an empty
//! database by our CLI vs `psql -f` once per file, then a no-op `migrate` at each count against
//! the no-op with 5.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Instant,
};

use scanner_migrator::migrations::Migrations;

use crate::{
    config::{Config, Ctx, R},
    dataset::{drop_db, exec},
    plots::HistoryPoint,
    report::Results,
    stats::{fmt_time, median},
    synthetic,
};

/// How many synthetic migrations follow the embedded ones, in the full run and the smoke run.
const COUNTS: [usize; 4] = [25, 50, 100, 200];
const SMOKE_COUNTS: [usize; 2] = [2, 4];
/// The count whose no-op the others are compared with.
const NOOP_BASE: usize = 5;
/// No-op runs per database (after the first apply).
const NOOP_REPS: usize = 5;

/// A directory with the embedded migrations and `count` synthetic ones after them; the up files in order.
fn migrations_dir(cfg: &Config, count: usize) -> R<(tempfile::TempDir, Vec<PathBuf>)> {
    let dir = tempfile::tempdir().ctx("a temporary directory")?;
    for entry in std::fs::read_dir(cfg.root.join("migrations")).ctx("reading migrations/")? {
        let entry = entry.ctx("reading migrations/")?;
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).ctx("copying a migration")?;
    }
    let latest = Migrations::embedded().ctx("the embedded migrations")?.latest().unwrap_or(0);
    synthetic::write(dir.path(), latest + 1, count);
    let all = Migrations::from_dir(dir.path()).ctx("reading the migrations back")?;
    let files = all.all().iter().map(|m| dir.path().join(&m.up.file)).collect();
    Ok((dir, files))
}

async fn fresh_db(cfg: &Config, name: &str) -> R<()> {
    drop_db(cfg, name).await?;
    let mut admin = cfg.server.connect("postgres").await?;
    exec(&mut admin, &format!("CREATE DATABASE {name}")).await?;
    let _ = sqlx::Connection::close(admin).await;
    Ok(())
}

/// `psql -f`, one process per file, in order: seconds.
pub(crate) async fn psql_apply(cfg: &Config, db: &str, files: &[PathBuf]) -> R<f64> {
    let t = Instant::now();
    for f in files {
        let out = tokio::process::Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &cfg.server.url_no_password(db), "-f"])
            .arg(f)
            .env("PGPASSWORD", &cfg.server.password)
            .stdin(Stdio::null())
            .output()
            .await
            .ctx("running psql")?;
        if !out.status.success() {
            return Err(format!("psql -f {} failed: {}", f.display(), String::from_utf8_lossy(&out.stderr)));
        }
    }
    Ok(t.elapsed().as_secs_f64())
}

/// `scanner-migrator --migrations-dir DIR migrate` as a process: wall seconds and the
/// report's own `duration_ms`, after checking its status, verification and expectation.
async fn cli_migrate(cfg: &Config, db: &str, dir: &Path, status: &str, expectation: &str) -> R<(f64, f64)> {
    let t = Instant::now();
    let out = tokio::process::Command::new(&cfg.bin)
        .arg("--migrations-dir")
        .arg(dir)
        .arg("migrate")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", cfg.server.url(db))
        .stdin(Stdio::null())
        .output()
        .await
        .ctx("running scanner-migrator")?;
    let wall = t.elapsed().as_secs_f64();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    if !out.status.success()
        || json["status"] != status
        || json["verification"]["ok"] != true
        || json["verification"]["expectation"] != expectation
    {
        return Err(format!(
            "scanner-migrator migrate: expected {status} with a {expectation} expectation, got {}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    Ok((wall, json["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0))
}

/// Measures case 8 and adds its rows, notes and a headline against the goals.
pub async fn case8(cfg: &Config, res: &mut Results) -> R<()> {
    eprintln!("case 8: first apply and no-op with a long history");
    let counts: Vec<usize> = if cfg.smoke { SMOKE_COUNTS.to_vec() } else { COUNTS.to_vec() };
    let reps = cfg.migration_reps.max(1);
    let db = "bench_history";
    let (mut noop_base, mut inside_base) = (Vec::new(), Vec::new());
    let mut goals = Vec::new();
    for count in std::iter::once(NOOP_BASE).chain(counts.iter().copied()) {
        let (dir, files) = migrations_dir(cfg, count)?;
        let (mut psql, mut ours, mut noop, mut noop_inside) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let measured_apply = count != NOOP_BASE;
        for _ in 0..reps {
            if measured_apply {
                fresh_db(cfg, db).await?;
                psql.push(psql_apply(cfg, db, &files).await?);
            }
            fresh_db(cfg, db).await?;
            let (first, _) = cli_migrate(cfg, db, dir.path(), "applied", "derived").await?;
            ours.push(first);
            for _ in 0..NOOP_REPS {
                let (wall, inside) = cli_migrate(cfg, db, dir.path(), "up_to_date", "cached").await?;
                noop.push(wall);
                noop_inside.push(inside);
            }
        }
        drop_db(cfg, db).await?;
        let n = files.len();
        if measured_apply {
            let m = format!("first apply of {n} migrations ({count} synthetic) to an empty database");
            res.timing("8", &m, "psql -v ON_ERROR_STOP=1 -f, one process per file", &psql, None, ("faster", "slower"));
            res.timing(
                "8",
                &m,
                "**ours: the CLI (`scanner-migrator migrate`)**",
                &ours,
                Some(&psql),
                ("faster", "slower"),
            );
        }
        res.plots.history.push(HistoryPoint {
            migrations: n,
            first_ours: measured_apply.then(|| median(&ours)),
            first_psql: measured_apply.then(|| median(&psql)),
            noop: median(&noop),
            noop_inside: median(&noop_inside),
        });
        let m = format!("no-op migrate with {n} migrations applied ({count} synthetic)");
        let (base, inside) = match count {
            NOOP_BASE => (None, None),
            _ => (Some(noop_base.as_slice()), Some(inside_base.as_slice())),
        };
        res.timing("8", &m, "ours: the CLI, end to end", &noop, base, ("faster", "slower"));
        res.timing(
            "8",
            &m,
            "ours: the report's duration_ms (lock, plan, verify)",
            &noop_inside,
            inside,
            ("faster", "slower"),
        );
        if count == NOOP_BASE {
            noop_base = noop.clone();
            inside_base = noop_inside.clone();
        } else if count == *counts.last().unwrap_or(&0) {
            goals.push(format!(
                "first apply {} vs psql {} ({:.2}x, goal within 2x)",
                fmt_time(median(&ours)),
                fmt_time(median(&psql)),
                median(&ours) / median(&psql)
            ));
            goals.push(format!(
                "no-op {} end to end, {} inside ({:.2}x the no-op with {NOOP_BASE} synthetic; goals under 100 ms, within 1.5x)",
                fmt_time(median(&noop)),
                fmt_time(median(&noop_inside)),
                median(&noop) / median(&noop_base)
            ));
        }
    }
    res.headlines.push(format!(
        "A long history (issue 19) at {} synthetic migrations: {}.",
        counts.last().unwrap_or(&0),
        goals.join("; ")
    ));
    res.notes.push(format!(
        "**A long history (issue 19).** The embedded migrations plus N synthetic ones (each a table with a foreign \
         key to `jobs`, an index and a view: `tests/it/support/synthetic.rs`), the same files for both sides. First \
         apply to a new empty database: psql run once per file, in order, vs our CLI as one process (lock, plan, one \
         replay in a scratch schema, apply, verification, the expectation cached). Then {NOOP_REPS} no-op `migrate` \
         runs per database, which compare the live catalog with the cached expectation; their ratio is against the \
         no-op with {NOOP_BASE} synthetic migrations. {reps} databases per count."
    ));
    Ok(())
}
