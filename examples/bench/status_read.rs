//! Case 1: the status read, COUNT(*) GROUP BY status against the job_progress row.

use crate::{
    config::{Config, Ctx, R},
    dataset::{copy_dataset, drop_db, exec, migrate, update_third, v_matview},
    load::{Read, check_view, read_pass},
    report::Results,
    stats::{fmt_time, median, ratio_lower, with_commas},
};
use scanner_migrator::refresh;
use sqlx::Connection;
use std::time::Duration;

/// Measures case 1 and adds its rows.
pub async fn case1(cfg: &Config, res: &mut Results) -> R<()> {
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
