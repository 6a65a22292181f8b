//! The Lambda deadline is a hard limit: every statement and retry runs under the time left,
//! the answer always arrives before the deadline with a stable errorType, and no backend of
//! ours is left running.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use sqlx::{Connection, Executor};

use crate::{
    lambda::{Fixture, function},
    support::pg::TestDb,
};
use scanner_migrator::{
    deadline::Deadline,
    migrations::Migrations,
    runner::{self, Command, RunSettings},
};

/// Backends of the migrator still connected to the database, after a bounded wait for them to go.
async fn ours_left(db: &TestDb) -> i64 {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND application_name LIKE 'scanner-migrator:%'",
        db.name
    );
    let started = Instant::now();
    loop {
        let n: i64 = db.scalar(&sql).await;
        if n == 0 || started.elapsed() > Duration::from_secs(2) {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn lambda_deadline(after: Duration) -> Deadline {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    Deadline::from_lambda_epoch_ms((now + after).as_millis() as u64)
}

/// The seed's migrations plus one no-transaction file of two statements that are slow because of
/// the data (one row of `jobs`), as real ones are; on the empty scratch schema verification
/// derives its expectations from, they are instant.
fn with_slow_file(sleep_s: f64) -> Migrations {
    let root = crate::support::pg::root().join("migrations");
    let mut files: Vec<(String, String)> =
        ["000_initial_schema.sql", "001_add_execution_arn.sql", "002_optimize_for_scale.sql"]
            .iter()
            .map(|f| (f.to_string(), std::fs::read_to_string(root.join(f)).unwrap()))
            .collect();
    files.push((
        "900_slow.sql".into(),
        format!(
            "-- migrate:no-transaction\nSELECT pg_sleep({sleep_s}) FROM jobs LIMIT 1;\nSELECT pg_sleep({sleep_s}) FROM jobs LIMIT 1;\n"
        ),
    ));
    Migrations::from_files(files).unwrap()
}

#[tokio::test]
async fn two_2s_statements_and_a_3s_deadline_stop_in_time_saying_what_is_left() {
    let db = TestDb::new().await;
    let migrations = with_slow_file(2.0);
    let mut conn = db.conn().await;
    conn.execute("SET application_name = 'scanner-migrator:test'").await.unwrap();
    runner::run(&mut conn, &migrations, Command::Migrate { target: Some(2) }, &RunSettings::default(), None)
        .await
        .unwrap();
    db.exec("INSERT INTO jobs (bucket) VALUES ('b')").await;

    // 3 s less the 1 s margin for answering: too little to start a 4 s file, so it is not started.
    let settings = RunSettings { deadline: lambda_deadline(Duration::from_secs(3)), ..RunSettings::default() };
    let started = Instant::now();
    let err =
        runner::run(&mut conn, &migrations, Command::Migrate { target: None }, &settings, None).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "answered in {:?}", started.elapsed());
    assert_eq!(err.kind(), "DeadlineReached");
    assert!(
        err.to_string().contains("before starting migration 900_slow")
            && err.to_string().contains("left to do: [900_slow]"),
        "{err}"
    );
    assert_eq!(db.history().await, vec![0, 1, 2], "900 is not recorded");
    assert_eq!(db.advisory_locks().await, 0);

    // 4.5 s: the first statement finishes, the second is cancelled by PostgreSQL at the deadline.
    let settings = RunSettings { deadline: lambda_deadline(Duration::from_millis(4_500)), ..RunSettings::default() };
    let started = Instant::now();
    let err =
        runner::run(&mut conn, &migrations, Command::Migrate { target: None }, &settings, None).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(4_500), "answered in {:?}", started.elapsed());
    let msg = err.to_string();
    assert_eq!(err.kind(), "DeadlineReached", "{msg}");
    assert!(msg.contains("PostgreSQL cancelled it") && msg.contains("900_slow.sql at line 3"), "{msg}");
    assert!(msg.contains("finished this run: [900_slow.sql: statements 1-1 of 2]"), "{msg}");
    assert!(msg.contains("left to do: [900_slow.sql from line 3 (statement 2 of 2)"), "{msg}");
    let running: i64 = db
        .scalar("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'SELECT pg_sleep%'")
        .await;
    assert_eq!(running, 0, "the cancelled statement is not running");
    assert_eq!(
        db.history_states().await.last(),
        Some(&(900, "applying".to_string())),
        "900 is recorded as partly applied"
    );
    assert_eq!(db.advisory_locks().await, 0);

    // The next run, with time, finishes it (each statement is idempotent).
    let report = runner::run(&mut conn, &migrations, Command::Migrate { target: None }, &RunSettings::default(), None)
        .await
        .unwrap();
    assert_eq!(report.applied.iter().map(|a| a.version).collect::<Vec<_>>(), vec![900]);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn lock_retries_against_a_held_lock_stop_before_a_4s_deadline() {
    let fx = Fixture::rotation().await;
    assert_eq!(fx.cli(&[], &["migrate", "--target", "0"]).await.code, 0);
    // A reader in a long transaction: 001's ALTER TABLE jobs can never get its lock.
    let mut reader = fx.db.conn().await;
    reader.execute("BEGIN; SELECT count(*) FROM jobs;").await.unwrap();
    let (api, f) = function("migrate", &fx.env_with(&[("LOCK_RETRIES", "1000")])).await;
    let started = Instant::now();
    let (kind, msg) = api.invoke(json!({}), Duration::from_secs(4)).await.err();
    let took = started.elapsed();
    assert_eq!(kind, "DeadlineReached", "{msg}");
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
    assert!(msg.contains("waiting for a lock") && msg.contains("001_add_execution_arn"), "{msg}");
    assert_eq!(ours_left(&fx.db).await, 0, "no backend of ours is left running");
    assert_eq!(fx.db.advisory_locks().await, 0);
    assert_eq!(fx.db.history().await, vec![0]);
    reader.execute("ROLLBACK").await.unwrap();
    f.stop().await;
}

#[tokio::test]
async fn an_index_build_behind_a_readers_snapshot_answers_in_time_and_is_rebuilt_next_time() {
    let fx = Fixture::rotation().await;
    assert_eq!(fx.cli(&[], &["migrate", "--target", "1"]).await.code, 0);
    fx.db.exec("INSERT INTO jobs (bucket) VALUES ('b'); INSERT INTO job_objects (job_id, bucket, key) SELECT job_id, 'b', 'k' || g FROM jobs, generate_series(1, 2000) g;").await;
    // A reader holding a snapshot: CREATE INDEX CONCURRENTLY waits for it to end.
    let mut reader = fx.db.conn().await;
    reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM job_objects;").await.unwrap();
    let (api, f) = function("migrate", &fx.env_with(&[("LOCK_TIMEOUT_MS", "60000")])).await;
    let started = Instant::now();
    let (kind, msg) = api.invoke(json!({}), Duration::from_secs(5)).await.err();
    assert!(started.elapsed() < Duration::from_secs(5), "answered after {:?}", started.elapsed());
    assert_eq!(kind, "DeadlineReached", "{msg}");
    assert!(msg.contains("002_optimize_for_scale.sql"), "{msg}");
    assert_eq!(ours_left(&fx.db).await, 0, "the cancelled build is not running on");
    assert_eq!(fx.db.advisory_locks().await, 0, "and holds no migration lock");
    reader.execute("COMMIT").await.unwrap();

    let next = api.invoke(json!({}), Duration::from_secs(60)).await;
    let r = next.ok();
    assert_eq!(r["status"], "applied", "{r:#}");
    assert_eq!(r["applied"][0]["rebuilt_invalid_indexes"][0], "idx_job_objects_job_status", "{r:#}");
    assert_eq!(fx.db.scalar::<i64>("SELECT count(*) FROM pg_index WHERE NOT indisvalid").await, 0);
    f.stop().await;
}

/// A socket that accepts connections and never answers: only a timeout ends the wait.
fn black_hole() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

#[tokio::test]
async fn an_unreachable_database_is_connect_failed_within_the_invocations_time() {
    let fx = Fixture::rotation().await;
    let (_hole, port) = black_hole();
    let port = port.to_string();
    // The connect timeout is longer than the invocation: the time left is what bounds the wait.
    let env = fx.env_with(&[("DB_HOST", "127.0.0.1"), ("DB_PORT", &port), ("DB_CONNECT_TIMEOUT_S", "30")]);
    let (api, f) = function("migrate", &env).await;
    let started = Instant::now();
    let (kind, msg) = api.invoke(json!({"command": "status"}), Duration::from_secs(4)).await.err();
    let took = started.elapsed();
    f.stop().await;
    assert_eq!(kind, "ConnectFailed", "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("time left"), "{msg}");
    assert!(took < Duration::from_secs(4), "answered within the invocation: {took:?}");
}

#[tokio::test]
async fn an_unanswering_secrets_manager_is_named_within_the_invocations_time() {
    let fx = Fixture::rotation().await;
    let (_hole, port) = black_hole();
    let endpoint = format!("http://127.0.0.1:{port}");
    let (api, f) = function("migrate", &fx.env_with(&[("AWS_ENDPOINT_URL", &endpoint)])).await;
    let started = Instant::now();
    let (kind, msg) = api.invoke(json!({"command": "status"}), Duration::from_secs(4)).await.err();
    let took = started.elapsed();
    f.stop().await;
    assert_eq!(kind, "SecretUnavailable", "{msg}");
    assert!(msg.contains(&fx.secret_arn) && msg.contains("no answer") && msg.contains("time left"), "{msg}");
    assert!(took < Duration::from_secs(4), "answered within the invocation: {took:?}");
}
