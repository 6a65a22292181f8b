//! Case 3: applying 002 under a steady write load, plain CREATE INDEX against our runner.

use crate::{
    config::{Config, Ctx, R},
    dataset::{copy_dataset, drop_db, exec, migrate, v_matview},
    load::{Writes, longest_gap, per_second, spawn_writer, trace},
    plots::Trace,
    report::Results,
    stats::{median, pct, ratio_lower, with_commas},
};
use scanner_migrator::migrations::Migrations;
use sqlx::Connection;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// 002 the way it was applied before: plain CREATE INDEX, everything in one transaction.
pub fn plain_002() -> R<String> {
    let m = Migrations::embedded().ctx("the embedded migrations")?;
    let up = &m.get(2).ok_or("no migration 002")?.up;
    let statements: Vec<String> =
        up.statements().iter().map(|s| s.sql.replace("CREATE INDEX CONCURRENTLY", "CREATE INDEX") + ";").collect();
    Ok(format!("BEGIN;\n{}\nCOMMIT;", statements.join("\n")))
}

/// One application of 002 under the write load.
pub struct WriteRun {
    pub min_per_s: f64,
    pub zero_s: f64,
    pub gap_s: f64,
    pub duration_s: f64,
    pub before_per_s: f64,
    /// The writer's commits, for the plot.
    pub trace: Trace,
}

/// 002 applied to a fresh copy while a writer runs: plain (one transaction) or ours.
pub async fn case3_run(cfg: &Config, ours: bool) -> R<WriteRun> {
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
        trace: trace(
            if ours { "ours: CONCURRENTLY, statement by statement" } else { "plain CREATE INDEX, one transaction" },
            &commits,
            t0,
            t1,
            cfg.settle,
        ),
    })
}

/// A row for a "higher is better" count: median, and the worst run in the p99 column.
pub fn count_line(
    res: &mut Results,
    measure: &str,
    variant: &str,
    xs: &[f64],
    base: Option<&[f64]>,
    higher_better: bool,
) {
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

/// Measures case 3 and adds its rows.
pub async fn case3(cfg: &Config, res: &mut Results) -> R<()> {
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
    // The plot shows one run of each variant: the one with the median longest stall.
    for runs in [&plain, &ours] {
        let mut order: Vec<&WriteRun> = runs.iter().collect();
        order.sort_by(|a, b| a.gap_s.total_cmp(&b.gap_s));
        if let Some(run) = order.get(order.len() / 2) {
            res.plots.index_build.push(run.trace.clone());
        }
    }
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
