//! The scanner's load on the database while something else runs: timed reads, a reader, a writer.

use crate::config::{BUCKET, Config, Ctx, R, job_id};
use crate::plots::Trace;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, Row};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

#[derive(Clone, Copy)]
pub enum Read {
    Count,
    View,
    Pk,
}

/// One read of the measured job, timed.
pub async fn timed_read(c: &mut PgConnection, read: Read, key: &str) -> R<f64> {
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
pub async fn check_view(c: &mut PgConnection) -> R<()> {
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
pub async fn read_pass(cfg: &Config, conns: &mut [PgConnection], plan: &[(usize, Read, bool)]) -> R<Vec<Vec<f64>>> {
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

/// A reader's reads: when each started and how long it took, seconds.
pub type Reads = Vec<(Instant, f64)>;

/// Reads the measured job's job_progress row every 5 ms until `stop`; fails if the row is ever missing.
pub fn spawn_reader(opts: PgConnectOptions, stop: Arc<AtomicBool>) -> JoinHandle<R<Reads>> {
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

/// What a writer writes.
pub enum Writes {
    /// The scanner: new objects (upserts) and status updates of existing ones.
    Objects(Vec<String>),
    /// Job updates.
    Jobs(Vec<String>),
}

/// A writer offering `rate` commits per second (autocommit); returns when each commit finished.
pub fn spawn_writer(
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
pub fn per_second(commits: &[Instant], t0: Instant, t1: Instant) -> Vec<usize> {
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
pub fn longest_gap(commits: &[Instant], t0: Instant, t1: Instant) -> f64 {
    commits.windows(2).filter(|w| w[1] >= t0 && w[0] <= t1).map(|w| (w[1] - w[0]).as_secs_f64()).fold(0.0, f64::max)
}

/// Seconds from `t0` to `t`, negative before `t0`.
pub fn since(t0: Instant, t: Instant) -> f64 {
    if t >= t0 { (t - t0).as_secs_f64() } else { -(t0 - t).as_secs_f64() }
}

/// The writer's commits around a migration that ran from `t0` to `t1`, `settle` on either side, for a plot.
pub fn trace(label: &str, commits: &[Instant], t0: Instant, t1: Instant, settle: Duration) -> Trace {
    let duration = (t1 - t0).as_secs_f64();
    Trace {
        label: label.into(),
        commits: commits.iter().map(|c| since(t0, *c)).collect(),
        from: -settle.as_secs_f64(),
        to: duration + settle.as_secs_f64(),
        duration,
    }
}
