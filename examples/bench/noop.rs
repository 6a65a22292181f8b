//! Case 5: a no-op migrate of an up-to-date database, psql against our CLI.

use crate::{
    config::{Config, Ctx, R},
    dataset::{drop_db, migrate, v_matview},
    history,
    report::Results,
    stats::{fmt_time, median},
};
use scanner_migrator::migrations::Migrations;
use sqlx::Connection;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

/// Measures case 5 and adds its rows.
pub async fn case5(cfg: &Config, res: &mut Results) -> R<()> {
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
