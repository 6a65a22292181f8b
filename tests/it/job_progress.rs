//! Migration 003: `job_progress` exact at every read. Concurrent writers (inserts, upserts, status
//! changes, deletes, job deletes cascading, rolled-back transactions and savepoints) while folds
//! run; the online switch from 002 under writers; rollback to 002 and forward again; TRUNCATE and
//! job metadata; what the refresh reports.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use scanner_migrator::migrations::Migrations;
use sqlx::{Connection, Executor, PgConnection};

use crate::support::{cli::migrator, pg::TestDb};

/// The version of the embedded migration called `name`.
pub fn version_of(name: &str) -> i64 {
    let all = Migrations::embedded().unwrap();
    all.all().iter().find(|m| m.name == name).unwrap_or_else(|| panic!("no migration named {name}")).version
}

/// 002: job_progress as a materialized view.
pub fn v_matview() -> i64 {
    version_of("optimize_for_scale")
}

/// 003: job_progress kept incrementally.
pub fn v_incremental() -> i64 {
    version_of("incremental_job_progress")
}

/// Every embedded version in `lo..=hi`, in order.
fn versions(lo: i64, hi: i64) -> Vec<i64> {
    Migrations::embedded().unwrap().all().iter().map(|m| m.version).filter(|v| (lo..=hi).contains(v)).collect()
}

fn latest() -> i64 {
    Migrations::embedded().unwrap().latest().unwrap()
}

/// Every job whose job_progress row differs from a direct count, compared in one statement (one
/// snapshot), and how many jobs were compared.
async fn mismatches(c: &mut PgConnection) -> (Vec<String>, i64) {
    let rows: Vec<(String,)> = sqlx::query_as(
        "WITH direct AS (
           SELECT j.job_id, count(o.key) AS t, count(o.key) FILTER (WHERE o.status = 'queued') AS q,
                  count(o.key) FILTER (WHERE o.status = 'processing') AS p,
                  count(o.key) FILTER (WHERE o.status = 'succeeded') AS s,
                  count(o.key) FILTER (WHERE o.status = 'failed') AS f, max(o.updated_at) AS lu
             FROM jobs AS j LEFT JOIN job_objects AS o ON o.job_id = j.job_id GROUP BY j.job_id)
         SELECT format('%s: view (%s %s %s %s %s %s), direct (%s %s %s %s %s %s)', coalesce(d.job_id, v.job_id),
                       v.total_objects, v.queued_count, v.processing_count, v.succeeded_count, v.failed_count,
                       v.last_object_update, d.t, d.q, d.p, d.s, d.f, d.lu)
           FROM direct AS d FULL JOIN job_progress AS v ON v.job_id = d.job_id
          WHERE (v.job_id, v.total_objects, v.queued_count, v.processing_count, v.succeeded_count, v.failed_count,
                 v.last_object_update) IS DISTINCT FROM (d.job_id, d.t, d.q, d.p, d.s, d.f, d.lu)",
    )
    .fetch_all(&mut *c)
    .await
    .expect("comparing job_progress with a direct count");
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&mut *c).await.unwrap();
    (rows.into_iter().map(|r| r.0).collect(), jobs)
}

pub async fn assert_exact(db: &TestDb, when: &str) -> i64 {
    let mut c = db.conn().await;
    let (bad, jobs) = mismatches(&mut c).await;
    c.close().await.unwrap();
    assert!(bad.is_empty(), "{when}: job_progress differs from a direct count:\n{}", bad.join("\n"));
    jobs
}

const JOBS: i64 = 6;

fn job(n: i64) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// Six jobs with a status mix, one of them empty.
async fn seed(db: &TestDb) {
    db.exec(&format!(
        "INSERT INTO jobs (job_id, bucket) SELECT ('00000000-0000-4000-8000-' || lpad(j::text, 12, '0'))::uuid, 'b'
           FROM generate_series(1, {JOBS}) AS j;
         INSERT INTO job_objects (job_id, bucket, key, status, updated_at)
         SELECT ('00000000-0000-4000-8000-' || lpad((1 + g % {n})::text, 12, '0'))::uuid, 'b', 'seed/' || g,
                (ARRAY['queued', 'processing', 'succeeded', 'failed'])[1 + g % 4],
                timestamptz '2026-01-01' + g * interval '1 second'
           FROM generate_series(1, 3000) AS g;",
        n = JOBS - 1
    ))
    .await;
}

/// One random unit of the scanner's work, as SQL; `w` and `i` make new keys unique.
fn random_work(rng: &mut u64, w: usize, i: usize) -> String {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let r = *rng;
    let j = job(1 + (r >> 8) as i64 % JOBS);
    let status = ["queued", "processing", "succeeded", "failed"][(r >> 16) as usize % 4];
    let n = 1 + (r >> 24) % 40;
    match r % 9 {
        // New objects, as the scanner lists them.
        0 | 1 => format!(
            "INSERT INTO job_objects (job_id, bucket, key) SELECT '{j}', 'b', 'w{w}/{i}/' || g FROM generate_series(1, {n}) g
             ON CONFLICT (job_id, bucket, key) DO UPDATE SET status = 'processing', updated_at = now()"
        ),
        // The scanner's upsert of objects that mostly exist: ON CONFLICT DO UPDATE changes their status.
        2 => format!(
            "INSERT INTO job_objects (job_id, bucket, key, status)
             SELECT job_id, bucket, key, '{status}' FROM job_objects WHERE job_id = '{j}' AND random() < 0.05
             UNION ALL SELECT '{j}', 'b', 'w{w}/{i}/new', 'queued'
             ON CONFLICT (job_id, bucket, key) DO UPDATE SET status = excluded.status, updated_at = now()"
        ),
        // Status transitions.
        3 | 4 => format!(
            "UPDATE job_objects SET status = '{status}', updated_at = now() WHERE job_id = '{j}' AND random() < 0.1"
        ),
        // An update that changes no count.
        5 => format!("UPDATE job_objects SET last_error = 'x' WHERE job_id = '{j}' AND random() < 0.05"),
        // Deletes.
        6 => format!("DELETE FROM job_objects WHERE job_id = '{j}' AND random() < 0.05"),
        // A job deleted (its objects go by cascade) and created again with the same id.
        7 => format!(
            "DELETE FROM jobs WHERE job_id = '{j}' AND random() < 0.3;
             INSERT INTO jobs (job_id, bucket) VALUES ('{j}', 'b') ON CONFLICT (job_id) DO NOTHING"
        ),
        // Work undone by a savepoint, then an object moved to another job.
        _ => format!(
            "SAVEPOINT s; DELETE FROM job_objects WHERE job_id = '{j}'; ROLLBACK TO SAVEPOINT s;
             UPDATE job_objects SET job_id = '{k}', updated_at = now()
              WHERE ctid = (SELECT ctid FROM job_objects WHERE job_id = '{j}' LIMIT 1)",
            k = job(1 + (r >> 40) as i64 % JOBS)
        ),
    }
}

/// `n` writers, each a connection doing random transactions (one in eight rolled back) until
/// `stop`; returns the committed transactions.
fn spawn_writers(db: &TestDb, n: usize, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..n)
        .map(|w| {
            let (url, stop) = (db.url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut c = PgConnection::connect(&url).await.unwrap();
                c.execute("SET lock_timeout = '2s'").await.unwrap();
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (w as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                let (mut i, mut committed) = (0usize, 0usize);
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let work = random_work(&mut rng, w, i);
                    let end = if rng.is_multiple_of(8) { "ROLLBACK" } else { "COMMIT" };
                    // Conflicts between writers (deadlocks, a job deleted under an insert) roll back.
                    let ok = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("BEGIN; {work}; {end}"))).execute(&mut c).await;
                    match ok {
                        Ok(_) if end == "COMMIT" => committed += 1,
                        Ok(_) => {}
                        Err(_) => {
                            let _ = c.execute("ROLLBACK").await;
                        }
                    }
                }
                c.close().await.unwrap();
                committed
            })
        })
        .collect()
}

#[tokio::test]
async fn concurrent_writers_and_folds_keep_every_read_exact() {
    let db = TestDb::new().await;
    assert_eq!(migrator(&db.url, &["migrate"]).await.versions("applied"), versions(0, latest()));
    seed(&db).await;
    assert!(db.scalar::<i64>("SELECT count(*) FROM job_progress_deltas").await > 0, "the seed went through the log");
    assert_exact(&db, "after the seed, before any fold").await;

    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(&db, 4, stop.clone());
    let folded = Arc::new(AtomicUsize::new(0));
    let folder = {
        let (url, stop, folded) = (db.url.clone(), stop.clone(), folded.clone());
        tokio::spawn(async move {
            let mut c = PgConnection::connect(&url).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                let r: String =
                    sqlx::query_scalar("SELECT refresh_job_progress()::text").fetch_one(&mut c).await.unwrap();
                let r: serde_json::Value = serde_json::from_str(&r).unwrap();
                folded.fetch_add(r["delta_rows"].as_u64().unwrap() as usize, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    let started = Instant::now();
    let mut checks = 0;
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    while started.elapsed() < Duration::from_secs(8) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(50 + rng % 200)).await;
        let jobs = assert_exact(&db, &format!("check {checks} while writing")).await;
        assert!(jobs > 0);
        checks += 1;
        if checks == 10 {
            // The refresh handler's path (the CLI) runs among the folds.
            let run = migrator(&db.url, &["refresh"]).await;
            assert_eq!(run.status(), "refreshed", "{:#}", run.json);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut committed = 0;
    for w in writers {
        committed += w.await.unwrap();
    }
    folder.await.unwrap();
    assert!(committed > 50, "the writers committed only {committed} transactions");
    assert!(folded.load(Ordering::Relaxed) > 0, "the folds folded nothing");
    assert_exact(&db, "at the end, before the last fold").await;
    db.exec("SELECT refresh_job_progress()").await;
    assert_exact(&db, "after the last fold").await;
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM job_progress_deltas").await, 0, "the log is folded away");
    // Folded rows agree with the counts by themselves (every job, deleted and re-created ones too).
    let counts_only: i64 = db
        .scalar(
            "SELECT count(*) FROM jobs j LEFT JOIN job_progress_counts c USING (job_id)
              WHERE coalesce(c.total_objects, 0) <> (SELECT count(*) FROM job_objects o WHERE o.job_id = j.job_id)",
        )
        .await;
    assert_eq!(counts_only, 0);
    assert_eq!(db.advisory_locks().await, 0);
}

#[tokio::test]
async fn a_database_at_002_with_data_switches_to_003_under_writers_with_exact_counts() {
    let db = TestDb::new().await;
    let run = migrator(&db.url, &["migrate", "--target", &v_matview().to_string()]).await;
    assert_eq!(run.versions("applied"), versions(0, v_matview()));
    seed(&db).await;
    db.exec("SELECT refresh_job_progress()").await;
    // The materialized view falls behind, as it does between refreshes.
    db.exec(&format!("UPDATE job_objects SET status = 'succeeded' WHERE job_id = '{}'", job(1))).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(&db, 3, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = migrator(&db.url, &["migrate"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(run.versions("applied"), versions(v_matview() + 1, latest()));
    assert!(run.versions("applied").contains(&v_incremental()));
    // Right after the switch, with the writers still going.
    assert_exact(&db, "right after the switch").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut committed = 0;
    for w in writers {
        committed += w.await.unwrap();
    }
    assert!(committed > 10, "the writers committed only {committed} transactions");
    assert_eq!(
        db.scalar::<String>("SELECT relkind::text FROM pg_class WHERE oid = 'job_progress'::regclass").await,
        "v"
    );
    assert_exact(&db, "after the switch").await;
    db.exec("SELECT refresh_job_progress()").await;
    assert_exact(&db, "after a fold").await;
}

#[tokio::test]
async fn rollback_to_002_and_forward_again_gives_the_same_counts() {
    let db = TestDb::new().await;
    migrator(&db.url, &["migrate", "--target", &v_matview().to_string()]).await;
    let at_002 = db.fingerprint().await;
    let run = migrator(&db.url, &["migrate"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    seed(&db).await;
    db.exec("SELECT refresh_job_progress()").await;
    // Deltas left unfolded when the rollback comes.
    db.exec(&format!("UPDATE job_objects SET status = 'failed' WHERE job_id = '{}'", job(2))).await;
    assert!(db.scalar::<i64>("SELECT count(*) FROM job_progress_deltas").await > 0);
    assert_exact(&db, "at 003").await;

    let run = migrator(&db.url, &["rollback", "--to", &v_matview().to_string()]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(run.versions("rolled_back"), versions(v_matview() + 1, latest()).into_iter().rev().collect::<Vec<_>>());
    assert_eq!(db.fingerprint().await, at_002, "the rollback leaves exactly 002's schema");
    assert_eq!(
        db.scalar::<String>("SELECT relkind::text FROM pg_class WHERE oid = 'job_progress'::regclass").await,
        "m"
    );
    assert_exact(&db, "after the rollback (the materialized view, populated)").await;
    let run = migrator(&db.url, &["--refresh-min-interval-s", "0", "refresh"]).await;
    assert_eq!((run.status(), run.json["mode"].as_str()), ("refreshed", Some("concurrent")), "{:#}", run.json);

    db.exec(&format!("DELETE FROM job_objects WHERE job_id = '{}' AND key LIKE 'seed/1%'", job(3))).await;
    let run = migrator(&db.url, &["migrate"]).await;
    assert_eq!(run.versions("applied"), versions(v_matview() + 1, latest()));
    assert_exact(&db, "forward again").await;
}

#[tokio::test]
async fn job_metadata_deletes_and_truncate_show_at_once() {
    let db = TestDb::new().await;
    migrator(&db.url, &["migrate"]).await;
    seed(&db).await;
    let j1 = job(1);
    db.exec(&format!("UPDATE jobs SET execution_arn = 'arn:aws:states:x:1:execution:s:e' WHERE job_id = '{j1}'")).await;
    let arn: Option<String> = db.scalar(&format!("SELECT execution_arn FROM job_progress WHERE job_id = '{j1}'")).await;
    assert_eq!(arn.as_deref(), Some("arn:aws:states:x:1:execution:s:e"));

    db.exec(&format!("DELETE FROM jobs WHERE job_id = '{j1}'")).await;
    assert_eq!(db.scalar::<i64>(&format!("SELECT count(*) FROM job_progress WHERE job_id = '{j1}'")).await, 0);
    assert_exact(&db, "after a job delete").await;

    db.exec("SELECT refresh_job_progress(); TRUNCATE job_objects").await;
    assert_eq!(db.scalar::<i64>("SELECT sum(total_objects)::bigint FROM job_progress").await, 0);
    assert_exact(&db, "after TRUNCATE").await;
    db.exec(&format!("INSERT INTO job_objects (job_id, bucket, key) VALUES ('{}', 'b', 'again')", job(2))).await;
    db.exec("SELECT refresh_job_progress()").await;
    assert_exact(&db, "after TRUNCATE, an insert and a fold").await;
    let stats: i64 = db.scalar("SELECT total_objects FROM job_statistics").await;
    assert_eq!(stats, 1, "job_statistics reads the exact counts too");
    let active: i64 = db.scalar("SELECT count(*) FROM active_jobs_progress").await;
    assert_eq!(active, 1);
    db.exec("TRUNCATE jobs CASCADE").await;
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM job_progress").await, 0);
    db.exec("SELECT refresh_job_progress()").await;
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM job_progress_counts").await, 0, "nothing left behind");
}

#[tokio::test]
async fn the_refresh_reports_what_it_folded_and_zero_staleness() {
    let db = TestDb::new().await;
    migrator(&db.url, &["migrate"]).await;
    seed(&db).await;
    db.exec(&format!("UPDATE job_objects SET status = 'succeeded' WHERE job_id IN ('{}', '{}')", job(1), job(2))).await;
    let pending: i64 = db.scalar("SELECT count(*) FROM job_progress_deltas").await;
    let jobs_in_log: i64 = db.scalar("SELECT count(DISTINCT job_id) FROM job_progress_deltas").await;
    // No minimum interval from 003 on: a fold costs what changed.
    let run = migrator(&db.url, &["--refresh-min-interval-s", "3600", "refresh"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(run.status(), "refreshed");
    assert_eq!(run.json["mode"], "incremental");
    assert_eq!(run.json["delta_rows"], pending);
    assert_eq!(run.json["jobs_touched"], jobs_in_log);
    assert_eq!(run.json["pending_after"], 0);
    assert_eq!(run.json["jobs"], JOBS);
    assert_eq!(run.json["staleness_after_s"], 0.0);
    assert!(run.json["staleness"].as_str().unwrap().contains("by construction"), "{:#}", run.json);
    assert!(run.json["fold_ms"].as_f64().is_some());
    let again = migrator(&db.url, &["refresh"]).await;
    assert_eq!((again.status(), again.json["delta_rows"].as_i64()), ("refreshed", Some(0)), "{:#}", again.json);

    // Still skipped while a migration holds the lock.
    let mut migration = db.conn().await;
    migration.execute("SET application_name = 'scanner-migrator:migrate:req-7'").await.unwrap();
    let (k1, k2) = scanner_migrator::db::LOCK_KEY;
    sqlx::query("SELECT pg_advisory_lock($1, $2)").bind(k1).bind(k2).execute(&mut migration).await.unwrap();
    let run = migrator(&db.url, &["refresh"]).await;
    assert_eq!(run.status(), "skipped");
    assert!(run.json["reason"].as_str().unwrap().contains("req-7"), "{:#}", run.json);
    migration.close().await.unwrap();
    assert_eq!(db.advisory_locks().await, 0);
}

#[tokio::test]
async fn privileges_granted_on_job_progress_survive_the_switch_and_the_rollback() {
    let db = TestDb::new().await;
    migrator(&db.url, &["migrate", "--target", &v_matview().to_string()]).await;
    seed(&db).await;
    db.exec("SELECT refresh_job_progress()").await;
    let role = format!("status_api_{}", db.name);
    db.exec(&format!(
        "CREATE ROLE {role};
         GRANT SELECT ON job_progress, active_jobs_progress, job_statistics TO {role};
         GRANT EXECUTE ON FUNCTION refresh_job_progress() TO {role};"
    ))
    .await;
    let can = |db: &TestDb, role: String| {
        // SET ROLE needs membership; that part of the check is the tests' own, so as the superuser.
        let db_url = db.super_url.clone();
        async move {
            let mut c = PgConnection::connect(&db_url).await.unwrap();
            let privileges: (bool, bool, bool, bool) = sqlx::query_as(
                "SELECT has_table_privilege($1, 'job_progress', 'SELECT'), has_table_privilege($1, 'active_jobs_progress', 'SELECT'),
                        has_table_privilege($1, 'job_statistics', 'SELECT'), has_function_privilege($1, 'refresh_job_progress()', 'EXECUTE')",
            )
            .bind(&role)
            .fetch_one(&mut c)
            .await
            .unwrap();
            // And the role really reads: a view runs with its owner's rights on what is under it.
            c.execute(sqlx::AssertSqlSafe(format!("SET ROLE {role}"))).await.unwrap();
            let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM job_progress").fetch_one(&mut c).await.unwrap();
            c.close().await.unwrap();
            (privileges, jobs)
        }
    };
    assert_eq!(can(&db, role.clone()).await, ((true, true, true, true), JOBS), "at 002");
    let run = migrator(&db.url, &["migrate"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(can(&db, role.clone()).await, ((true, true, true, true), JOBS), "at 003");
    let run = migrator(&db.url, &["rollback", "--to", &v_matview().to_string()]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(can(&db, role.clone()).await, ((true, true, true, true), JOBS), "after the rollback");
    db.exec_super(&format!("DROP OWNED BY {role}; DROP ROLE {role}")).await;
}

#[tokio::test]
async fn column_grants_grant_options_comments_and_view_options_survive_the_switch_and_the_rollback() {
    let db = TestDb::new().await;
    migrator(&db.url, &["migrate", "--target", &v_matview().to_string()]).await;
    seed(&db).await;
    db.exec("SELECT refresh_job_progress()").await;
    let (columns, lead) = (format!("columns_{}", db.name), format!("lead_{}", db.name));
    db.exec(&format!(
        "CREATE ROLE {columns}; CREATE ROLE {lead};
         GRANT SELECT (job_id, total_objects) ON job_progress TO {columns};
         GRANT SELECT ON job_progress, job_statistics TO {lead} WITH GRANT OPTION;
         GRANT SELECT (bucket) ON active_jobs_progress TO {lead} WITH GRANT OPTION;
         GRANT EXECUTE ON FUNCTION refresh_job_progress() TO {lead} WITH GRANT OPTION;
         COMMENT ON MATERIALIZED VIEW job_progress IS 'read by the status API';
         COMMENT ON COLUMN job_progress.total_objects IS 'objects listed';
         COMMENT ON VIEW job_statistics IS 'dashboard';
         ALTER VIEW active_jobs_progress SET (security_barrier = true);"
    ))
    .await;
    let kept = |db: &TestDb| {
        // SET ROLE needs membership; that part of the check is the tests' own, so as the superuser.
        let (db_url, columns, lead) = (db.super_url.clone(), columns.clone(), lead.clone());
        async move {
            let mut c = PgConnection::connect(&db_url).await.unwrap();
            let privileges: (bool, bool, bool, bool, bool, bool, bool) = sqlx::query_as(
                "SELECT has_column_privilege($1, 'job_progress', 'job_id', 'SELECT'),
                        has_column_privilege($1, 'job_progress', 'bucket', 'SELECT'),
                        has_table_privilege($1, 'job_progress', 'SELECT'),
                        has_table_privilege($2, 'job_progress', 'SELECT WITH GRANT OPTION'),
                        has_table_privilege($2, 'job_statistics', 'SELECT WITH GRANT OPTION'),
                        has_column_privilege($2, 'active_jobs_progress', 'bucket', 'SELECT WITH GRANT OPTION'),
                        has_function_privilege($2, 'refresh_job_progress()', 'EXECUTE WITH GRANT OPTION')",
            )
            .bind(&columns)
            .bind(&lead)
            .fetch_one(&mut c)
            .await
            .unwrap();
            let described: (Option<String>, Option<String>, Option<String>, Vec<String>) = sqlx::query_as(
                "SELECT obj_description('job_progress'::regclass, 'pg_class'),
                        col_description('job_progress'::regclass,
                                        (SELECT attnum FROM pg_attribute WHERE attrelid = 'job_progress'::regclass
                                            AND attname = 'total_objects')::int),
                        obj_description('job_statistics'::regclass, 'pg_class'),
                        (SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = 'active_jobs_progress'::regclass)",
            )
            .fetch_one(&mut c)
            .await
            .unwrap();
            // The column grant really reads, and only those columns.
            c.execute(sqlx::AssertSqlSafe(format!("SET ROLE {columns}"))).await.unwrap();
            let total: i64 = sqlx::query_scalar("SELECT sum(total_objects)::bigint FROM job_progress")
                .fetch_one(&mut c)
                .await
                .unwrap();
            let denied = sqlx::query("SELECT bucket FROM job_progress").fetch_all(&mut c).await.is_err();
            c.close().await.unwrap();
            (privileges, described, total, denied)
        }
    };
    let at_002 = kept(&db).await;
    let expected = (
        (true, false, false, true, true, true, true),
        (
            Some("read by the status API".to_string()),
            Some("objects listed".to_string()),
            Some("dashboard".to_string()),
            vec!["security_barrier=true".to_string()],
        ),
        at_002.2,
        true,
    );
    assert_eq!(at_002, expected, "at 002");
    assert!(at_002.2 > 0, "the seed has objects");
    let run = migrator(&db.url, &["migrate"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(kept(&db).await, expected, "at 003");
    let run = migrator(&db.url, &["rollback", "--to", &v_matview().to_string()]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    db.exec("SELECT refresh_job_progress()").await;
    assert_eq!(kept(&db).await, expected, "after the rollback");
    db.exec_super(&format!("DROP OWNED BY {columns}, {lead}; DROP ROLE {columns}; DROP ROLE {lead}")).await;
}

#[tokio::test]
async fn a_users_index_on_job_progress_stops_003_before_anything_changes() {
    let db = TestDb::new().await;
    migrator(&db.url, &["migrate", "--target", &v_matview().to_string()]).await;
    db.exec("CREATE INDEX my_bucket_idx ON job_progress (bucket)").await;
    let at_002 = db.fingerprint().await;
    let run = migrator(&db.url, &["migrate"]).await;
    assert_eq!(run.code, 1, "{:#}", run.json);
    assert!(run.error_message().contains("index my_bucket_idx on job_progress"), "{}", run.error_message());
    assert_eq!(db.history().await, versions(0, v_matview()));
    assert_eq!(db.fingerprint().await, at_002, "nothing of 003 was left behind");
    let kind: String = db.scalar("SELECT relkind::text FROM pg_class WHERE oid = 'job_progress'::regclass").await;
    assert_eq!(kind, "m", "job_progress is still 002's materialized view");
    db.exec("DROP INDEX my_bucket_idx").await;
    let run = migrator(&db.url, &["migrate"]).await;
    assert_eq!(run.versions("applied"), versions(v_matview() + 1, latest()));
}

#[tokio::test]
async fn a_view_of_the_users_over_job_progress_stops_003_before_anything_changes() {
    let db = TestDb::new().await;
    migrator(&db.url, &["migrate", "--target", &v_matview().to_string()]).await;
    let at_002 = db.fingerprint().await;
    db.exec("CREATE VIEW my_report AS SELECT job_id, total_objects FROM job_progress").await;
    let run = migrator(&db.url, &["migrate"]).await;
    assert_eq!(run.code, 1, "{:#}", run.json);
    assert!(run.error_message().contains("my_report"), "{}", run.error_message());
    assert_eq!(db.history().await, versions(0, v_matview()));
    db.exec("DROP VIEW my_report").await;
    assert_eq!(db.fingerprint().await, at_002, "nothing of 003 was left behind");
    let run = migrator(&db.url, &["migrate"]).await;
    assert_eq!(run.versions("applied"), versions(v_matview() + 1, latest()));
}

#[tokio::test]
async fn a_view_option_of_the_users_on_job_progress_stops_the_rollback_of_003_before_its_swap() {
    let db = TestDb::new().await;
    migrator(&db.url, &["migrate", "--target", &v_incremental().to_string()]).await;
    db.exec("ALTER VIEW job_progress SET (security_barrier = true)").await;
    let run = migrator(&db.url, &["rollback", "--to", &v_matview().to_string()]).await;
    assert_eq!(run.code, 1, "{:#}", run.json);
    assert!(run.error_message().contains("options (security_barrier=true) on job_progress"), "{}", run.error_message());
    assert_eq!(db.history().await, versions(0, v_incremental()));
    let kind: String = db.scalar("SELECT relkind::text FROM pg_class WHERE oid = 'job_progress'::regclass").await;
    assert_eq!(kind, "v", "job_progress is still 003's view");
    assert!(db.scalar::<bool>("SELECT to_regclass('job_progress_002') IS NULL").await, "nothing built beside it");
    db.exec("ALTER VIEW job_progress RESET (security_barrier)").await;
    let run = migrator(&db.url, &["rollback", "--to", &v_matview().to_string()]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
}
