//! Case 7: migration 003, job_progress exact at every read: the switch, upkeep, the scanner's writes.

use crate::{
    config::{BUCKET, Config, Ctx, R, job_id},
    dataset::{build_dataset, copy_dataset, drop_db, exec, migrate, v_incremental, v_matview},
    load::{Read, Writes, check_view, longest_gap, since, spawn_reader, spawn_writer, timed_read, trace},
    plots::Trace,
    report::Results,
    stats::{fmt_time, median, pct, ratio_lower, with_commas},
};
use scanner_migrator::refresh;
use sqlx::{Connection, PgConnection};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A file copy of database `template` named `name`.
pub async fn copy_from(cfg: &Config, name: &str, template: &str) -> R<()> {
    drop_db(cfg, name).await?;
    let mut admin = cfg.server.connect("postgres").await?;
    exec(&mut admin, &format!("CREATE DATABASE {name} TEMPLATE {template} STRATEGY = FILE_COPY")).await?;
    let _ = admin.close().await;
    Ok(())
}

/// `fraction` of the measured job's keys, spread evenly over it, shifted by `offset`.
pub fn changed_keys(cfg: &Config, fraction: f64, offset: i64) -> Vec<String> {
    let n = ((cfg.rows as f64 * fraction).round() as i64).max(1);
    let stride = (cfg.rows / n).max(1);
    (0..n).map(|k| cfg.measured_key((k * stride + offset) % cfg.rows)).collect()
}

/// Moves a status one step on (queued → processing → succeeded → failed → queued).
pub const CYCLE: &str = "CASE status WHEN 'queued' THEN 'processing' WHEN 'processing' THEN 'succeeded' \
                     WHEN 'succeeded' THEN 'failed' ELSE 'queued' END";

/// Moves `keys` of the measured job one status on, `batch` keys per statement (as the scanner does).
pub async fn cycle_status(c: &mut PgConnection, keys: &[String], batch: usize) -> R<u64> {
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

/// Delta rows not folded yet.
pub async fn pending_deltas(c: &mut PgConnection) -> R<i64> {
    sqlx::query_scalar("SELECT count(*) FROM job_progress_deltas").fetch_one(&mut *c).await.ctx("counting deltas")
}

/// What the switch to 003 did to the writer and the reader.
pub struct Switch {
    pub duration_s: f64,
    pub gap_s: f64,
    pub reader_worst_s: f64,
    pub retries: u32,
    pub before_per_s: f64,
    /// The writer's commits and the reader's reads (start, latency), for the plot.
    pub trace: Trace,
    pub reads: Vec<(f64, f64)>,
}

/// 003 applied to a copy at 002 while a writer and a reader run.
pub async fn case7_switch(cfg: &Config, name: &str) -> R<Switch> {
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
        trace: trace("ours: 003 (triggers, per-job backfill, one-transaction swap)", &commits, t0, t1, cfg.settle),
        reads: reads.iter().map(|(s, lat)| (since(t0, *s), *lat)).collect(),
    })
}

/// The scanner's two writes.
pub enum ScannerWrite {
    Upsert,
    Update,
}

/// One commit of the scanner's write, `keys` rows; its duration.
pub async fn scanner_write(c: &mut PgConnection, what: &ScannerWrite, keys: &[String]) -> R<f64> {
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

/// Measures case 7 (003: the switch, upkeep, reads with deltas pending, the writes) and adds its rows.
pub async fn case7(cfg: &Config, res: &mut Results) -> R<()> {
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
    res.plots.switch = Some((sw.trace.clone(), sw.reads.clone()));
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

    // 7d: upkeep against table size, for the plot: these two copies, then smaller datasets.
    let sizes = upkeep_by_size(cfg, &mut o, &mut n, reps, res).await?;
    let _ = o.close().await;
    let _ = n.close().await;
    drop_db(cfg, old).await?;
    drop_db(cfg, new).await?;
    let upkeep_changed = res.plots.upkeep_changed;
    for (total, full, fold) in sizes {
        let m = format!(
            "upkeep after {} rows of the active job changed, {} objects in all (the plot's sizes)",
            with_commas(upkeep_changed),
            with_commas(total)
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
        res.plots.upkeep.push((total, median(&full), median(&fold)));
    }
    if let (Some(small), Some(large)) = (res.plots.upkeep.first(), res.plots.upkeep.last()) {
        res.headlines.push(format!(
            "Upkeep against table size ({} rows of the active job changed each time): from {} to {} objects, \
             002's full refresh goes from {} to {}, 003's fold from {} to {}.",
            with_commas(upkeep_changed),
            with_commas(small.0),
            with_commas(large.0),
            fmt_time(small.1),
            fmt_time(large.1),
            fmt_time(small.2),
            fmt_time(large.2)
        ));
    }

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
         measured job (UPDATE ... WHERE key = ANY). Upkeep against table size (the plot): the same number of \
         keys (1% of the full-size job) moves on, then one refresh, {} runs each, on datasets of 1/8, 1/4 and 1/2 \
         the size built the same way (at 002 and, a file copy, switched to 003; vacuumed) and on the two full-size \
         copies after the writes above (vacuumed first).",
        cfg.write_rate, reps, reps
    ));
    Ok(())
}

/// The objects in `c`'s job_objects.
async fn objects(c: &mut PgConnection) -> R<i64> {
    sqlx::query_scalar("SELECT count(*) FROM job_objects").fetch_one(&mut *c).await.ctx("counting the objects")
}

/// Upkeep runs on a copy at 002 (`o`) and one at 003 (`n`) of the same data: each run moves `changed`
/// keys of the measured job one status on, then refreshes; (002's full refreshes, 003's folds), seconds.
async fn upkeep_runs(
    cfg: &Config,
    o: &mut PgConnection,
    n: &mut PgConnection,
    changed: i64,
    reps: usize,
) -> R<(Vec<f64>, Vec<f64>)> {
    let settings = refresh::RefreshSettings {
        min_interval: Duration::ZERO,
        statement_timeout: None,
        deadline: Default::default(),
    };
    let (mut full, mut fold) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let ks = changed_keys(cfg, changed as f64 / cfg.rows as f64, 100 + rep as i64);
        for ours in if rep % 2 == 0 { [false, true] } else { [true, false] } {
            let c = if ours { &mut *n } else { &mut *o };
            cycle_status(c, &ks, 1000).await?;
            let t = Instant::now();
            let r = refresh::refresh(c, &settings).await.ctx("refresh")?;
            let d = t.elapsed().as_secs_f64();
            let want = if ours { "incremental" } else { "concurrent" };
            if r.mode != Some(want) {
                return Err(format!("the refresh was {:?}, not {want}", r.mode));
            }
            if ours { fold.push(d) } else { full.push(d) }
        }
    }
    check_view(n).await?;
    Ok((full, fold))
}

/// Upkeep against table size: the full-size copies `o` (002) and `n` (003), then datasets of 1/8, 1/4
/// and 1/2 the size built the same way; the same number of rows changes at every size (1% of the
/// full-size job). Returns (objects, full refreshes, folds) per size, smallest first.
async fn upkeep_by_size(
    cfg: &Config,
    o: &mut PgConnection,
    n: &mut PgConnection,
    reps: usize,
    res: &mut Results,
) -> R<Vec<(i64, Vec<f64>, Vec<f64>)>> {
    eprintln!("  upkeep against table size");
    let changed = (cfg.rows / 100).max(1);
    res.plots.upkeep_changed = changed;
    let mut sizes = Vec::new();
    let (small_old, small_new) = ("bench_c7_size_002", "bench_c7_size_003");
    for divisor in [8, 4, 2] {
        let sub = Config { rows: (cfg.rows / divisor).max(changed), bg_rows: cfg.bg_rows / divisor, ..cfg.clone() };
        build_dataset(&sub, small_old).await?;
        let mut so = cfg.server.connect(small_old).await?;
        migrate(&mut so, Some(v_matview()?)).await?;
        exec(&mut so, "VACUUM (ANALYZE) jobs, job_objects").await?;
        exec(&mut so, "ANALYZE job_progress").await?;
        // A file copy needs the source without connections.
        let _ = so.close().await;
        copy_from(cfg, small_new, small_old).await?;
        let mut so = cfg.server.connect(small_old).await?;
        let mut sn = cfg.server.connect(small_new).await?;
        migrate(&mut sn, None).await?;
        exec(&mut sn, "VACUUM (ANALYZE) job_objects, job_progress_counts, job_progress_deltas").await?;
        let total = objects(&mut so).await?;
        let (full, fold) = upkeep_runs(&sub, &mut so, &mut sn, changed, reps).await?;
        sizes.push((total, full, fold));
        let _ = so.close().await;
        let _ = sn.close().await;
        drop_db(cfg, small_new).await?;
        drop_db(cfg, small_old).await?;
    }
    // The full-size copies have been written to by the cases above: vacuumed as the small ones are.
    exec(o, "VACUUM (ANALYZE) jobs, job_objects").await?;
    exec(n, "VACUUM (ANALYZE) job_objects, job_progress_counts, job_progress_deltas").await?;
    let total = objects(o).await?;
    let (full, fold) = upkeep_runs(cfg, o, n, changed, reps).await?;
    sizes.push((total, full, fold));
    Ok(sizes)
}
