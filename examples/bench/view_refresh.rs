//! Case 2: refreshing job_progress, plain REFRESH against ours (CONCURRENTLY).

use crate::{
    config::{Config, Ctx, R},
    dataset::exec,
    load::{check_view, spawn_reader},
    report::Results,
    stats::{fmt_time, median, with_commas},
};
use scanner_migrator::refresh;
use sqlx::Connection;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Measures case 2 and adds its rows.
pub async fn case2(cfg: &Config, res: &mut Results) -> R<()> {
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
