//! An index build longer than an invocation runs detached in the database: the function answers
//! `in_progress` in time, PostgreSQL finishes the build after the function is gone, every run
//! meanwhile reports its progress without starting another, and the next migrate completes the
//! migration. The build is held back deterministically by a reader's snapshot, which
//! `CREATE INDEX CONCURRENTLY` waits for before it can finish (on another table: it blocks no DROP INDEX).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Executor;

use crate::{
    lambda::{Fixture, function},
    support::pg::TestDb,
};

const APP: &str = "scanner-migrator detached 002 idx_job_objects_job_status";

/// 001 applied and 5000 objects: at an assumed 100 rows/s the first index of 002 needs ~50 s.
async fn fixture() -> Fixture {
    let fx = Fixture::rotation().await;
    assert_eq!(fx.cli(&[], &["migrate", "--target", "1"]).await.code, 0);
    fx.db
        .exec(
            "INSERT INTO jobs (bucket) VALUES ('b');
             INSERT INTO job_objects (job_id, bucket, key) SELECT job_id, 'b', 'k' || g FROM jobs, generate_series(1, 5000) g;
             ANALYZE job_objects;",
        )
        .await;
    fx
}

fn slow_env(fx: &Fixture) -> Vec<(String, String)> {
    fx.env_with(&[("INDEX_BUILD_ROWS_PER_S", "100")])
}

/// Our detached sessions on this test's database (the other tests' run beside them on the server): (pid, state).
async fn detached(db: &TestDb) -> Vec<(i32, String)> {
    let mut conn = db.conn().await;
    sqlx::query_as(
        "SELECT pid, state FROM pg_stat_activity
          WHERE application_name LIKE 'scanner-migrator detached %' AND datname = current_database() ORDER BY pid",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

/// Waits (at most 30 s) until no detached session of ours is left.
async fn until_no_detached(db: &TestDb) {
    let started = Instant::now();
    while !detached(db).await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the detached session did not end: {:?}",
            detached(db).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn index_valid(db: &TestDb, name: &str) -> Option<bool> {
    db.scalar(&format!(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = '{name}'"
    ))
    .await
}

fn check_in_progress(r: &Value) {
    assert_eq!(r["status"], "in_progress", "{r:#}");
    let p = &r["in_progress"];
    assert_eq!(p["migration"], "002_optimize_for_scale", "{r:#}");
    assert_eq!(p["index"], "idx_job_objects_job_status", "{r:#}");
    assert!(
        p["statement"].as_str().unwrap().contains("CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_job_objects_job_status"),
        "{r:#}"
    );
    assert!(
        p["pid"].as_i64().unwrap() > 0 && !p["phase"].as_str().unwrap().is_empty() && p["since"].is_string(),
        "{r:#}"
    );
    let msg = p["message"].as_str().unwrap();
    assert!(msg.contains("continues without anyone") && msg.contains("waits for it"), "{msg}");
}

#[tokio::test]
async fn a_build_longer_than_the_invocation_runs_detached_and_the_next_run_finishes_the_migration() {
    let fx = fixture().await;
    // A reader's snapshot: the build cannot finish until it ends.
    let mut reader = fx.db.conn().await;
    reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM jobs;").await.unwrap();

    // With the continuation configured, as the module does: the function schedules its next run.
    let schedule = format!("cont-{}", fx.db.name);
    let mut env = slow_env(&fx);
    env.push(("CONTINUATION_ROLE_ARN".into(), "arn:aws:iam::123456789012:role/scheduler".into()));
    env.push(("CONTINUATION_SCHEDULE".into(), schedule.clone()));
    let (api, f) = function("migrate", &env).await;
    let started = Instant::now();
    let r = api.invoke(json!({}), Duration::from_secs(10)).await.ok().clone();
    assert!(started.elapsed() < Duration::from_secs(10), "answered after {:?}", started.elapsed());
    check_in_progress(&r);
    let pid = r["in_progress"]["pid"].as_i64().unwrap() as i32;
    assert_eq!(r["continuation"]["continuation"], "scheduled", "{r:#}");
    assert!(r["in_progress"]["message"].as_str().unwrap().contains("this continues by itself"), "{r:#}");
    let scheduler = aws_sdk_scheduler::Client::new(&crate::support::moto::sdk().await);
    let made = scheduler.get_schedule().name(&schedule).send().await.expect("the continuation schedule exists");
    let input: serde_json::Value = serde_json::from_str(made.target().unwrap().input().unwrap()).unwrap();
    assert_eq!((input["command"].as_str(), input["continuation"]["step"].as_i64()), (Some("migrate"), Some(1)));
    let logs = f.stop().await;
    assert!(logs.contains("\"step\":\"detached\""), "the progress is in the log lines: {logs}");
    // A phase PostgreSQL counts (the scans) is a metric too; a wait (for old snapshots) has no share to show.
    if r["in_progress"]["percent"].is_number() {
        assert!(logs.contains("BuildPercentDone"), "the progress is a metric too: {logs}");
    }

    // The function's process is gone; the build runs on, holding the migration lock.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(detached(&fx.db).await, vec![(pid, "active".to_string())]);
    let app: String = fx.db.scalar(&format!("SELECT application_name FROM pg_stat_activity WHERE pid = {pid}")).await;
    assert_eq!(app, APP);
    assert_eq!(fx.db.advisory_locks().await, 1);
    assert_eq!(index_valid(&fx.db, "idx_job_objects_job_status").await, Some(false), "still being built");

    // Five runs at once, each with a short deadline: all report the build, none starts another, none fails.
    let mut runs = Vec::new();
    for i in 0..5 {
        let env = slow_env(&fx);
        runs.push(tokio::spawn(async move {
            let (api, f) = function("migrate", &env).await;
            let payload = if i == 0 { json!({"command": "status"}) } else { json!({}) };
            let out = api.invoke(payload, Duration::from_secs(5)).await;
            let logs = f.stop().await;
            (out, logs)
        }));
    }
    for run in runs {
        let (out, logs) = run.await.unwrap();
        let r = match out {
            crate::support::runtime::Outcome::Response(v) => v,
            other => panic!("{other:?}\n{logs}"),
        };
        check_in_progress(&r);
        assert_eq!(r["in_progress"]["pid"], pid, "{r:#}");
        assert!(logs.contains("\"step\":\"detached\""), "the progress is in the log lines: {logs}");
    }
    assert_eq!(detached(&fx.db).await.len(), 1, "no second build");
    let builds: i64 = fx.db.scalar("SELECT count(*) FROM pg_stat_progress_create_index").await;
    assert_eq!(builds, 1);
    assert_eq!(fx.db.history_states().await.last(), Some(&(2, "applying".to_string())));

    // The reader ends: PostgreSQL finishes the build without any client, and the session goes with its lock.
    reader.execute("COMMIT").await.unwrap();
    until_no_detached(&fx.db).await;
    assert_eq!(index_valid(&fx.db, "idx_job_objects_job_status").await, Some(true));
    assert_eq!(fx.db.advisory_locks().await, 0);

    // The next invocation completes 002 (its first index is there; the second fits the time) and the rest.
    let (api, f) = function("migrate", &slow_env(&fx)).await;
    let r = api.invoke(json!({}), Duration::from_secs(120)).await.ok().clone();
    f.stop().await;
    assert_eq!(r["status"], "applied", "{r:#}");
    assert_eq!(r["applied"][0]["version"], 2, "{r:#}");
    assert_eq!(r["verification"]["ok"], true, "{r:#}");
    assert!(fx.db.history().await.contains(&2));
    assert_eq!(fx.db.scalar::<i64>("SELECT count(*) FROM pg_index WHERE NOT indisvalid").await, 0);
}

#[tokio::test]
async fn a_detached_build_terminated_mid_way_is_repaired_and_built_again() {
    let fx = fixture().await;
    let mut reader = fx.db.conn().await;
    reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM jobs;").await.unwrap();
    let (api, f) = function("migrate", &slow_env(&fx)).await;
    let r = api.invoke(json!({}), Duration::from_secs(10)).await.ok().clone();
    check_in_progress(&r);
    let pid = r["in_progress"]["pid"].as_i64().unwrap();

    // Someone ends it (a failover would too): the index is left INVALID, the lock goes.
    assert!(fx.db.scalar::<bool>(&format!("SELECT pg_terminate_backend({pid})")).await);
    until_no_detached(&fx.db).await;
    assert_eq!(index_valid(&fx.db, "idx_job_objects_job_status").await, Some(false));
    assert_eq!(fx.db.advisory_locks().await, 0);

    // The next run drops the INVALID index, says so, and starts the build again, detached.
    let r = api.invoke(json!({}), Duration::from_secs(10)).await.ok().clone();
    check_in_progress(&r);
    assert_ne!(r["in_progress"]["pid"].as_i64().unwrap(), pid, "{r:#}");
    assert_eq!(r["in_progress"]["repaired"][0], "public.idx_job_objects_job_status", "{r:#}");
    assert!(r["in_progress"]["message"].as_str().unwrap().contains("left INVALID by an interrupted build"), "{r:#}");
    f.stop().await;

    reader.execute("COMMIT").await.unwrap();
    until_no_detached(&fx.db).await;
    let (api, f) = function("migrate", &slow_env(&fx)).await;
    let r = api.invoke(json!({}), Duration::from_secs(120)).await.ok().clone();
    f.stop().await;
    assert_eq!(r["status"], "applied", "{r:#}");
    assert_eq!(r["verification"]["ok"], true, "{r:#}");
    assert_eq!(fx.db.scalar::<i64>("SELECT count(*) FROM pg_index WHERE NOT indisvalid").await, 0);
}

#[tokio::test]
async fn a_finished_detached_session_still_holding_the_lock_is_ended_by_the_next_run() {
    // What a frozen client leaves on PostgreSQL 13 (no idle_session_timeout): our detached session,
    // its statement done, idle and holding the migration lock.
    let fx = fixture().await;
    let mut frozen = fx.db.conn().await;
    frozen
        .execute(sqlx::AssertSqlSafe(format!(
            "SET application_name = '{APP}'; SELECT pg_advisory_lock(1396916558, 1);"
        )))
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut frozen).await.unwrap();
    assert_eq!(fx.db.advisory_locks().await, 1);
    let run = fx.cli(&[], &["migrate"]).await;
    assert_eq!(run.status(), "applied", "{:#}", run.json);
    let gone: i64 = fx.db.scalar(&format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}")).await;
    assert_eq!(gone, 0, "our idle detached session was ended");
    assert!(run.stderr.contains("our detached build is done; ending its idle session"), "{}", run.stderr);

    // Anyone else's idle session holding the lock is not ours to end: LockTimeout names it.
    let mut other = fx.db.conn().await;
    other.execute("SET application_name = 'someone'; SELECT pg_advisory_lock(1396916558, 1);").await.unwrap();
    let run = fx.cli(&[("ADVISORY_LOCK_WAIT_S", "1")], &["migrate"]).await;
    assert_eq!(run.error_type(), "LockTimeout", "{:#}", run.json);
    assert!(run.json["errorMessage"].as_str().unwrap().contains("application_name 'someone'"), "{:#}", run.json);
}
