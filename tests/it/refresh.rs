//! The refresh of job_progress on a database at 002 (the materialized view: what the refresh
//! still does during an upgrade or after a rollback): populate, counts, concurrency with other
//! refreshes and migrations, readers never blocked, the min interval; and the Lambda path at the
//! newest migration (003 on: the fold, tests/it/job_progress.rs).

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::{Connection, Executor};

use crate::{
    job_progress::v_matview,
    lambda::{Fixture, function},
    support::{cli::migrator, pg::TestDb, secrets},
};

/// A database at 002: job_progress is the materialized view.
async fn migrated() -> TestDb {
    let db = TestDb::new().await;
    let run = migrator(&db.url, &["migrate", "--target", &v_matview().to_string()]).await;
    assert_eq!(run.status(), "applied", "{:#}", run.json);
    db
}

/// Three jobs: one with a mix of statuses, one all queued, one without objects.
async fn seed(db: &TestDb) {
    db.exec(
        "INSERT INTO jobs (job_id, bucket) VALUES
           ('00000000-0000-0000-0000-000000000001', 'a'), ('00000000-0000-0000-0000-000000000002', 'b'),
           ('00000000-0000-0000-0000-000000000003', 'c');
         INSERT INTO job_objects (job_id, bucket, key, status)
         SELECT '00000000-0000-0000-0000-000000000001', 'a', 'k' || g,
                (ARRAY['queued', 'processing', 'succeeded', 'failed'])[1 + g % 4] FROM generate_series(1, 403) g;
         INSERT INTO job_objects (job_id, bucket, key) SELECT '00000000-0000-0000-0000-000000000002', 'b', 'k' || g
           FROM generate_series(1, 50) g;",
    )
    .await;
}

/// The view's counts and a direct COUNT over job_objects, for every job.
async fn view_vs_direct(db: &TestDb) -> (String, String) {
    let view = db
        .scalar::<Option<String>>(
            "SELECT string_agg(format('%s %s %s %s %s %s', job_id, total_objects, queued_count, processing_count, succeeded_count, failed_count), ', ' ORDER BY job_id) FROM job_progress",
        )
        .await;
    let direct = db
        .scalar::<Option<String>>(
            "SELECT string_agg(line, ', ' ORDER BY job_id) FROM (
               SELECT j.job_id, format('%s %s %s %s %s %s', j.job_id, count(o.key), count(o.key) FILTER (WHERE status = 'queued'),
                      count(o.key) FILTER (WHERE status = 'processing'), count(o.key) FILTER (WHERE status = 'succeeded'),
                      count(o.key) FILTER (WHERE status = 'failed')) AS line
                 FROM jobs j LEFT JOIN job_objects o USING (job_id) GROUP BY j.job_id) AS per_job",
        )
        .await;
    (view.unwrap_or_default(), direct.unwrap_or_default())
}

const NOW: &[&str] = &["--refresh-min-interval-s", "0", "refresh"];

#[tokio::test]
async fn the_first_refresh_populates_a_never_populated_view() {
    let db = migrated().await;
    db.exec("REFRESH MATERIALIZED VIEW job_progress WITH NO DATA").await;
    seed(&db).await;
    let run = migrator(&db.url, NOW).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(run.status(), "refreshed");
    assert_eq!(run.json["mode"], "populate");
    assert_eq!(run.json["jobs"], 3);
    let again = migrator(&db.url, NOW).await;
    assert_eq!(again.json["mode"], "concurrent", "populated now, so readers are never blocked again");
}

#[tokio::test]
async fn counts_match_a_direct_count_after_inserts_and_updates() {
    let db = migrated().await;
    seed(&db).await;
    let run = migrator(&db.url, NOW).await;
    assert_eq!(run.status(), "refreshed");
    let (view, direct) = view_vs_direct(&db).await;
    assert_eq!(view, direct);
    assert!(
        view.contains("00000000-0000-0000-0000-000000000003 0 0 0 0 0"),
        "a job without objects counts zero: {view}"
    );

    db.exec("UPDATE job_objects SET status = 'succeeded', updated_at = now() WHERE status = 'queued'; INSERT INTO job_objects (job_id, bucket, key, status) VALUES ('00000000-0000-0000-0000-000000000003', 'c', 'x', 'failed');").await;
    let (stale, direct) = view_vs_direct(&db).await;
    assert_ne!(stale, direct, "the view is a snapshot until refreshed");
    let run = migrator(&db.url, NOW).await;
    let (view, direct) = view_vs_direct(&db).await;
    assert_eq!(view, direct);
    assert!(run.json["staleness_after_s"].as_f64().unwrap() < 60.0, "{:#}", run.json);
    assert!(run.json["staleness_before_s"].as_f64().is_some());
}

#[tokio::test]
async fn two_refreshes_at_once_one_runs_one_skips() {
    let db = migrated().await;
    seed(&db).await;
    // Holding the refresh in place (its REFRESH waits for this lock) makes the overlap certain.
    let mut blocker = db.conn().await;
    blocker.execute("BEGIN; LOCK TABLE job_objects IN ACCESS EXCLUSIVE MODE;").await.unwrap();
    let url = db.url.clone();
    let first = tokio::spawn(async move { migrator(&url, NOW).await });
    let started = Instant::now();
    while !db
        .scalar::<bool>("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'scanner-migrator:refresh%' AND wait_event_type = 'Lock')")
        .await
    {
        assert!(started.elapsed() < Duration::from_secs(30), "the first refresh never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = migrator(&db.url, NOW).await;
    assert_eq!(second.code, 0);
    assert_eq!(second.status(), "skipped");
    assert!(second.json["reason"].as_str().unwrap().contains("scanner-migrator:refresh"), "{:#}", second.json);
    blocker.execute("COMMIT").await.unwrap();
    let first = first.await.unwrap();
    assert_eq!(first.status(), "refreshed", "{:#}", first.json);
    assert_eq!(db.advisory_locks().await, 0);
}

#[tokio::test]
async fn a_refresh_during_a_migration_skips_at_once() {
    let db = migrated().await;
    let mut migration = db.conn().await;
    migration.execute("SET application_name = 'scanner-migrator:migrate:req-42'").await.unwrap();
    let (k1, k2) = scanner_migrator::db::LOCK_KEY;
    sqlx::query("SELECT pg_advisory_lock($1, $2)").bind(k1).bind(k2).execute(&mut migration).await.unwrap();
    let run = migrator(&db.url, NOW).await;
    assert_eq!(run.status(), "skipped");
    assert!(run.json["reason"].as_str().unwrap().contains("scanner-migrator:migrate:req-42"), "{:#}", run.json);
    migration.close().await.unwrap();
    // The server ends the closed session (and frees its lock) a moment after the client has gone.
    for _ in 0..50 {
        if db.advisory_locks().await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(migrator(&db.url, NOW).await.status(), "refreshed");
}

#[tokio::test]
async fn readers_are_not_blocked_while_a_refresh_runs() {
    let db = migrated().await;
    seed(&db).await;
    let read = |db: &TestDb| {
        let url = db.url.clone();
        async move {
            let mut reader = sqlx::PgConnection::connect(&url).await.unwrap();
            reader.execute("SET statement_timeout = '2s'").await.unwrap();
            let r = sqlx::query_scalar::<_, i64>(
                "SELECT total_objects FROM job_progress WHERE job_id = '00000000-0000-0000-0000-000000000001'",
            )
            .fetch_optional(&mut reader)
            .await;
            reader.close().await.unwrap();
            r
        }
    };
    // refresh_job_progress() held open inside a transaction: the refresh is "still running".
    let mut refresher = db.conn().await;
    refresher.execute("BEGIN; SELECT refresh_job_progress();").await.unwrap();
    let during = read(&db).await;
    assert!(during.is_ok(), "the reader returned while the refresh was running: {during:?}");
    refresher.execute("COMMIT").await.unwrap();

    // The control: a plain REFRESH does block readers, so the check above can fail.
    refresher.execute("BEGIN; REFRESH MATERIALIZED VIEW job_progress;").await.unwrap();
    let blocked = read(&db).await;
    let err = blocked.expect_err("a plain refresh blocks the reader");
    assert_eq!(err.as_database_error().and_then(|e| e.code()).as_deref(), Some("57014"), "{err}");
    refresher.execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn a_refresh_younger_than_the_min_interval_is_skipped() {
    let db = migrated().await;
    seed(&db).await;
    assert_eq!(migrator(&db.url, NOW).await.status(), "refreshed");
    let run = migrator(&db.url, &["--refresh-min-interval-s", "3600", "refresh"]).await;
    assert_eq!(run.status(), "skipped");
    assert!(run.json["reason"].as_str().unwrap().contains("REFRESH_MIN_INTERVAL_S"), "{:#}", run.json);
}

#[tokio::test]
async fn refreshing_an_unmigrated_database_says_to_migrate_first() {
    let db = TestDb::new().await;
    let run = migrator(&db.url, NOW).await;
    assert_eq!(run.code, 1);
    assert!(run.error_message().contains("run `migrate` first"), "{}", run.error_message());
}

#[tokio::test]
async fn the_refresh_handler_end_to_end() {
    let fx = Fixture::rotation().await;
    let (api, f) = function("migrate", &fx.env).await;
    assert_eq!(api.invoke(json!({}), Duration::from_secs(60)).await.ok()["status"], "applied");
    f.stop().await;
    seed(&fx.db).await;

    let (api, f) = function("refresh", &fx.env_with(&[("REFRESH_MIN_INTERVAL_S", "0")])).await;
    let event = json!({"scheduled_time": "2026-11-25T07:00:00Z", "execution_id": "e-1", "attempt_number": "1"});
    let out = api.invoke(event, Duration::from_secs(60)).await;
    assert_eq!(out.ok()["status"], "refreshed", "{out:?}");
    assert_eq!(out.ok()["mode"], "incremental", "{out:?}");
    assert_eq!(out.ok()["jobs"], 3);
    assert_eq!(out.ok()["jobs_touched"], 2, "two of the three jobs have objects: {out:?}");
    let (view, direct) = view_vs_direct(&fx.db).await;
    assert_eq!(view, direct);
    assert_eq!(
        api.invoke(json!({}), Duration::from_secs(60)).await.ok()["status"],
        "refreshed",
        "a manual {{}} works too"
    );

    let (kind, msg) = api.invoke(json!({"command": "migrate"}), Duration::from_secs(60)).await.err();
    assert_eq!(kind, "BadRequest");
    assert!(msg.contains("scheduled_time"), "lists what is accepted: {msg}");

    // The refresh is cancelled by PostgreSQL before the invocation's deadline, not killed by Lambda.
    // (The fold reads the delta log, never job_objects.)
    let mut blocker = fx.db.conn().await;
    blocker.execute("BEGIN; LOCK TABLE job_progress_deltas IN ACCESS EXCLUSIVE MODE;").await.unwrap();
    let started = Instant::now();
    let (kind, msg) = api.invoke(json!({}), Duration::from_secs(4)).await.err();
    assert_eq!(kind, "DatabaseError", "{msg}");
    assert!(msg.contains("statement timeout"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(4));
    blocker.execute("ROLLBACK").await.unwrap();
    assert_eq!(fx.db.advisory_locks().await, 0, "the lock is released after the failure");

    let logs = f.stop().await;
    secrets::assert_absent("refresh logs", &logs);
    let emf: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    let first = emf.first().expect("an EMF line per refresh");
    let names: Vec<&str> = first["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["RefreshDuration", "Staleness", "DeltaRowsFolded", "Skipped", "RefreshFailed"]);
    assert_eq!(first["RefreshFailed"], 0.0);
    assert_eq!(first["Skipped"], 0.0);
    assert_eq!(first["Staleness"], 0.0, "exact by construction");
    assert_eq!(first["DeltaRowsFolded"], 2.0, "one delta row per job and insert statement");
    assert_eq!(first["FunctionName"], "scanner-migrator-refresh");

    // Database down: a clear error naming where it tried.
    let (api, f) = function("refresh", &fx.env_with(&[("DB_PORT", "1"), ("DB_CONNECT_TIMEOUT_S", "2")])).await;
    let (kind, msg) = api.invoke(json!({}), Duration::from_secs(30)).await.err();
    assert_eq!(kind, "ConnectFailed");
    assert!(msg.contains("localhost:1"), "{msg}");
    f.stop().await;
}

#[tokio::test]
async fn a_statement_timeout_beyond_postgres_range_is_clamped_not_an_error() {
    // 3,000,000 s is more than statement_timeout's maximum (2^31-1 ms): the longest PostgreSQL takes.
    let db = migrated().await;
    seed(&db).await;
    for dir in [&["migrate"][..], &["refresh"]] {
        let mut args = vec!["--statement-timeout-s", "3000000"];
        args.extend_from_slice(dir);
        let run = migrator(&db.url, &args).await;
        assert_eq!(run.code, 0, "{args:?}: {:#}", run.json);
    }
    assert_eq!(db.scalar::<i64>("SELECT sum(total_objects)::int8 FROM job_progress").await, 453);
}
