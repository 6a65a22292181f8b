//! Case 4: applying 001 behind a long reader, no lock_timeout against ours.

use crate::{
    config::{BUCKET, Config, Ctx, R},
    dataset::{drop_db, exec, migrate},
    load::{Writes, longest_gap, spawn_writer},
    report::Results,
    stats::{fmt_time, median, ratio_lower},
};
use scanner_migrator::migrations::{Migrations, Script};
use sqlx::Connection;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// 001 applied behind a long reader while a writer runs: (longest stall, duration, lock retries).
pub async fn case4_run(cfg: &Config, ours: bool) -> R<(f64, f64, u32)> {
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

/// Measures case 4 and adds its rows.
pub async fn case4(cfg: &Config, res: &mut Results) -> R<()> {
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
