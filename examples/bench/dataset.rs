//! Databases and the deterministic dataset every case copies.

use crate::{
    config::{BUCKET, Config, Ctx, R, TEMPLATE, job_id},
    stats::with_commas,
};
use scanner_migrator::migrations::Migrations;
use scanner_migrator::{db, runner};
use sqlx::{Connection, PgConnection, Row};
use std::time::Instant;

/// Runs `sql`; an error names its first words.
pub async fn exec(c: &mut PgConnection, sql: &str) -> R<()> {
    let short: String = sql.split_whitespace().take(6).collect::<Vec<_>>().join(" ");
    db::exec(c, sql).await.ctx(&short)
}

/// Drops database `name` if it exists, closing its connections.
pub async fn drop_db(cfg: &Config, name: &str) -> R<()> {
    let mut admin = cfg.server.connect("postgres").await?;
    exec(&mut admin, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
    let _ = admin.close().await;
    Ok(())
}

/// A fresh copy of the dataset (a file copy of the template database).
pub async fn copy_dataset(cfg: &Config, name: &str) -> R<()> {
    copy_database(cfg, TEMPLATE, name).await
}

/// A fresh file copy of database `from` called `name`.
pub async fn copy_database(cfg: &Config, from: &str, name: &str) -> R<()> {
    drop_db(cfg, name).await?;
    let mut admin = cfg.server.connect("postgres").await?;
    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(&mut admin)
        .await
        .ctx("server version")?;
    let strategy = if version >= 150000 { " STRATEGY = FILE_COPY" } else { "" };
    exec(&mut admin, &format!("CREATE DATABASE {name} TEMPLATE {from}{strategy}")).await?;
    let _ = admin.close().await;
    Ok(())
}

/// Our runner's settings, as the benchmark applies migrations.
pub fn run_settings() -> runner::RunSettings {
    runner::RunSettings { applied_by: "bench".into(), ..Default::default() }
}

/// The version of the embedded migration called `name` (never hard-coded).
pub fn version_of(name: &str) -> R<i64> {
    let m = Migrations::embedded().ctx("the embedded migrations")?;
    m.all().iter().find(|m| m.name == name).map(|m| m.version).ok_or_else(|| format!("no migration named {name}"))
}

/// 002: job_progress as a materialized view.
pub fn v_matview() -> R<i64> {
    version_of("optimize_for_scale")
}

/// 003: job_progress kept incrementally.
pub fn v_incremental() -> R<i64> {
    version_of("incremental_job_progress")
}

/// Our runner: migrate the embedded migrations up to `target` (all when None).
pub async fn migrate(c: &mut PgConnection, target: Option<i64>) -> R<runner::Report> {
    let migrations = Migrations::embedded().ctx("the embedded migrations")?;
    runner::run(c, &migrations, runner::Command::Migrate { target }, &run_settings(), None).await.ctx("migrate")
}

/// What the dataset turned out to be, for the environment table.
pub struct Dataset {
    pub total: i64,
    pub table_bytes: i64,
    pub heap_bytes: i64,
    pub build_s: f64,
}

/// The template: 000 and 001 applied by our runner, then the deterministic objects, vacuumed.
pub async fn build_dataset(cfg: &Config, name: &str) -> R<Dataset> {
    let started = Instant::now();
    let mut admin = cfg.server.connect("postgres").await?;
    exec(&mut admin, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
    exec(&mut admin, &format!("CREATE DATABASE {name}")).await?;
    let mut c = cfg.server.connect(name).await?;
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
pub async fn update_third(c: &mut PgConnection) -> R<u64> {
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
