//! An index build longer than an invocation runs detached in the database: the function answers
//! `in_progress` in time, PostgreSQL finishes the build after the function is gone, every run
//! meanwhile reports its progress without starting another, and the next migrate completes the
//! migration. The build is held back deterministically by a reader's snapshot, which
//! `CREATE INDEX CONCURRENTLY` waits for before it can finish (on another table: it blocks no DROP INDEX).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Executor;

use crate::{
    continuation::migrate_failed,
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
/// Not a build's parallel workers, which carry its name too.
async fn detached(db: &TestDb) -> Vec<(i32, String)> {
    let mut conn = db.conn().await;
    sqlx::query_as(
        "SELECT pid, state FROM pg_stat_activity
          WHERE application_name LIKE 'scanner-migrator detached %' AND datname = current_database()
            AND backend_type = 'client backend' ORDER BY pid",
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
    assert_eq!(migrate_failed(&logs), [0.0], "a build that continues by itself is not a failure: {logs}");
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
        // These functions have no continuation configured: nothing will finish the migration by itself.
        let expected: &[f64] = if r["command"] == "status" { &[] } else { &[1.0] };
        assert_eq!(migrate_failed(&logs), expected, "{r:#}\n{logs}");
    }
    assert_eq!(detached(&fx.db).await.len(), 1, "no second build");
    let builds: i64 =
        fx.db.scalar("SELECT count(*) FROM pg_stat_progress_create_index WHERE datname = current_database()").await;
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

#[tokio::test]
async fn an_index_rebuilt_beside_by_adoption_runs_detached_and_the_next_run_swaps_it_in() {
    // An old index of another shape: adoption builds the new one beside it, which outlasts the invocation.
    let fx = Fixture::rotation().await;
    fx.db.exec(crate::adoption::OLD_TABLES).await;
    fx.db
        .exec(
            "CREATE INDEX idx_job_objects_job_status ON job_objects (status);
             INSERT INTO job_objects (job_id, bucket, key) SELECT job_id, 'b', 'x' || g FROM jobs, generate_series(1, 2000) g;
             ANALYZE job_objects;",
        )
        .await;
    // A snapshot that locks no table (001 alters jobs): the build still waits for it.
    let mut reader = fx.db.conn().await;
    reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1;").await.unwrap();
    // ~6120 rows at an assumed 100 rows/s: about a minute, in an invocation of 10 s.
    let (api, f) = function("migrate", &slow_env(&fx)).await;
    let started = Instant::now();
    let r = api.invoke(json!({}), Duration::from_secs(10)).await.ok().clone();
    assert!(started.elapsed() < Duration::from_secs(10), "answered after {:?}", started.elapsed());
    f.stop().await;
    assert_eq!(r["status"], "in_progress", "{r:#}");
    let p = &r["in_progress"];
    assert_eq!(
        (p["migration"].as_str(), p["kind"].as_str(), p["index"].as_str()),
        (Some("002_optimize_for_scale"), Some("index_build"), Some("idx_job_objects_job_status__scm_new")),
        "{r:#}"
    );
    let old_def = "CREATE INDEX idx_job_objects_job_status ON public.job_objects USING btree (status)";
    let def = "SELECT pg_get_indexdef('idx_job_objects_job_status'::regclass)";
    assert_eq!(fx.db.scalar::<String>(def).await, old_def, "the old index serves until the swap");

    reader.execute("COMMIT").await.unwrap();
    until_no_detached(&fx.db).await;
    assert_eq!(index_valid(&fx.db, "idx_job_objects_job_status__scm_new").await, Some(true));

    // The next run finds it built: it only swaps it in, then applies the rest.
    let (api, f) = function("migrate", &fx.env).await;
    let r = api.invoke(json!({}), Duration::from_secs(120)).await.ok().clone();
    let logs = f.stop().await;
    assert_eq!(r["status"], "applied", "{r:#}");
    assert_eq!(r["verification"]["ok"], true, "{r:#}");
    assert!(!logs.contains("building index idx_job_objects_job_status in the migrations' shape"), "built once: {logs}");
    let converged =
        r["adoption"].as_array().unwrap().iter().find(|a| a["object"] == "index idx_job_objects_job_status");
    assert_eq!(converged.map(|a| a["action"].clone()), Some(json!("converged")), "{r:#}");
    assert_eq!(
        fx.db.scalar::<String>(def).await,
        "CREATE INDEX idx_job_objects_job_status ON public.job_objects USING btree (job_id, status)"
    );
    assert_eq!(fx.db.scalar::<i64>("SELECT count(*) FROM pg_class WHERE relname LIKE '%scm_new'").await, 0);
}

/// A table of 20,000 rows with an index and a constraint not validated yet; `001` reindexes or
/// validates, in a no-transaction script.
fn long_migrations(statement: &str) -> scanner_migrator::migrations::Migrations {
    scanner_migrator::migrations::Migrations::from_files(vec![
        (
            "000_big.sql".into(),
            "CREATE TABLE big (id bigint PRIMARY KEY, n integer NOT NULL DEFAULT 0);\n\
             CREATE INDEX big_n ON big (n);\n\
             CREATE TABLE side (x integer);\n\
             ALTER TABLE big ADD CONSTRAINT big_n_nonneg CHECK (n >= 0) NOT VALID;\n"
                .into(),
        ),
        ("001_long.sql".into(), format!("-- migrate:no-transaction\n{statement};\n")),
        ("001_long.down.sql".into(), "SELECT 1;\n".into()),
    ])
    .unwrap()
}

/// A run as Lambda's: 5 s left, builds assumed at 100 rows/s (20,000 rows: ~200 s), detaching allowed.
fn short_run(db: &TestDb) -> scanner_migrator::runner::RunSettings {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    scanner_migrator::runner::RunSettings {
        deadline: scanner_migrator::deadline::Deadline::from_lambda_epoch_ms(
            (now + Duration::from_secs(5)).as_millis() as u64,
        ),
        index_build_rows_per_s: 100.0,
        detach: Some(scanner_migrator::detached::DetachTo(db.url.parse().unwrap())),
        ..Default::default()
    }
}

async fn long_fixture(statement: &str) -> (TestDb, scanner_migrator::migrations::Migrations, sqlx::PgConnection) {
    use scanner_migrator::runner::{self, Command, RunSettings};
    let db = TestDb::new().await;
    let migrations = long_migrations(statement);
    let mut conn = db.conn().await;
    runner::run(&mut conn, &migrations, Command::Migrate { target: Some(0) }, &RunSettings::default(), None)
        .await
        .unwrap();
    db.exec("INSERT INTO big (id, n) SELECT g, g % 100 FROM generate_series(1, 20000) AS g; ANALYZE big;").await;
    (db, migrations, conn)
}

async fn relfilenode(db: &TestDb, index: &str) -> i64 {
    db.scalar(&format!("SELECT relfilenode::bigint FROM pg_class WHERE oid = '{index}'::regclass")).await
}

#[tokio::test]
async fn a_reindex_longer_than_the_invocation_runs_detached_once_and_the_next_run_does_not_repeat_it() {
    use scanner_migrator::runner::{self, Command};
    let (db, migrations, mut conn) = long_fixture("REINDEX INDEX CONCURRENTLY big_n").await;
    let before = relfilenode(&db, "big_n").await;
    // A reader's snapshot holds the REINDEX back (it waits for old snapshots before its swap).
    let mut reader = db.conn().await;
    reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM side;").await.unwrap();

    let started = Instant::now();
    let r =
        runner::run(&mut conn, &migrations, Command::Migrate { target: None }, &short_run(&db), None).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "answered after {:?}", started.elapsed());
    let r = serde_json::to_value(&r).unwrap();
    assert_eq!(r["status"], "in_progress", "{r:#}");
    let p = &r["in_progress"];
    assert_eq!(
        (p["kind"].as_str(), p["object"].as_str(), p["index"].as_str()),
        (Some("reindex"), Some("big_n"), Some("big_n"))
    );
    assert_eq!(p["migration"], "001_long", "{r:#}");
    assert!(p["message"].as_str().unwrap().contains("rebuilds big_n (REINDEX CONCURRENTLY)"), "{r:#}");
    let pid = p["pid"].as_i64().unwrap();
    let app: String = db.scalar(&format!("SELECT application_name FROM pg_stat_activity WHERE pid = {pid}")).await;
    assert_eq!(app, "scanner-migrator detached 001 reindex big_n");

    // Meanwhile a run reports it and starts nothing; the scanner's writes go on.
    let again =
        runner::run(&mut conn, &migrations, Command::Migrate { target: None }, &short_run(&db), None).await.unwrap();
    assert_eq!(again.in_progress.as_ref().map(|p| p.pid as i64), Some(pid));
    let wrote = Instant::now();
    db.exec("INSERT INTO big (id, n) VALUES (0, 1)").await;
    assert!(wrote.elapsed() < Duration::from_secs(1), "a write waited {:?}", wrote.elapsed());
    assert_eq!(detached(&db).await.len(), 1, "no second REINDEX");

    reader.execute("COMMIT").await.unwrap();
    until_no_detached(&db).await;
    let rebuilt = relfilenode(&db, "big_n").await;
    assert_ne!(rebuilt, before, "PostgreSQL finished the REINDEX without a client");

    // The next run (as short, as slow) knows it is done: it does not reindex again, and applies 001.
    let r =
        runner::run(&mut conn, &migrations, Command::Migrate { target: None }, &short_run(&db), None).await.unwrap();
    assert_eq!(r.status, "applied", "{:#}", serde_json::to_value(&r).unwrap());
    assert_eq!(relfilenode(&db, "big_n").await, rebuilt, "not rebuilt twice");
    assert_eq!(db.history().await, vec![0, 1]);
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM pg_index WHERE NOT indisvalid").await, 0);

    // Rolled back and applied again, the REINDEX runs again (inline now: fast enough, no deadline).
    runner::run(&mut conn, &migrations, Command::Rollback { to: 0 }, &Default::default(), None).await.unwrap();
    assert_eq!(db.history().await, vec![0]);
    runner::run(&mut conn, &migrations, Command::Migrate { target: None }, &Default::default(), None).await.unwrap();
    assert_ne!(relfilenode(&db, "big_n").await, rebuilt, "a new application runs every statement");
}

#[tokio::test]
async fn a_detached_reindex_terminated_mid_way_is_repaired_and_run_again() {
    use scanner_migrator::runner::{self, Command};
    let (db, migrations, mut conn) = long_fixture("REINDEX TABLE CONCURRENTLY big").await;
    let before = (relfilenode(&db, "big_n").await, relfilenode(&db, "big_pkey").await);
    let mut reader = db.conn().await;
    reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM side;").await.unwrap();
    let r =
        runner::run(&mut conn, &migrations, Command::Migrate { target: None }, &short_run(&db), None).await.unwrap();
    let p = r.in_progress.clone().expect("runs detached");
    assert_eq!(p.object, "big");
    // Wait until its new indexes exist (they are INVALID until the swap), then someone ends it.
    let started = Instant::now();
    while db.scalar::<i64>("SELECT count(*) FROM pg_class WHERE relname ~ '_ccnew'").await < 2 {
        assert!(started.elapsed() < Duration::from_secs(30), "the REINDEX did not get as far as its new indexes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(db.scalar::<bool>(&format!("SELECT pg_terminate_backend({})", p.pid)).await);
    until_no_detached(&db).await;
    reader.execute("COMMIT").await.unwrap();
    let left: i64 = db.scalar("SELECT count(*) FROM pg_index WHERE NOT indisvalid").await;
    assert_eq!(left, 2, "the interrupted REINDEX left its new indexes INVALID");

    // The next run (time enough: inline) drops them, says so, and reindexes.
    let r = runner::run(&mut conn, &migrations, Command::Migrate { target: None }, &Default::default(), None)
        .await
        .unwrap();
    assert_eq!(r.status, "applied");
    assert_eq!(r.applied[0].rebuilt_invalid_indexes, vec!["big".to_string()]);
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM pg_index WHERE NOT indisvalid").await, 0);
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM pg_class WHERE relname ~ '_cc(new|old)'").await, 0);
    let after = (relfilenode(&db, "big_n").await, relfilenode(&db, "big_pkey").await);
    assert!(after.0 != before.0 && after.1 != before.1, "both indexes rebuilt: {before:?} -> {after:?}");
}

#[tokio::test]
async fn a_validation_longer_than_the_invocation_runs_detached_without_holding_up_writes() {
    use scanner_migrator::runner::{self, Command};
    let (db, migrations, mut conn) = long_fixture("ALTER TABLE big VALIDATE CONSTRAINT big_n_nonneg").await;
    // Someone's maintenance holds the table's SHARE UPDATE EXCLUSIVE lock: the validation waits for it.
    let mut maintenance = db.conn().await;
    maintenance.execute("BEGIN; LOCK TABLE big IN SHARE UPDATE EXCLUSIVE MODE;").await.unwrap();

    let r =
        runner::run(&mut conn, &migrations, Command::Migrate { target: None }, &short_run(&db), None).await.unwrap();
    let r = serde_json::to_value(&r).unwrap();
    assert_eq!(r["status"], "in_progress", "{r:#}");
    let p = &r["in_progress"];
    assert_eq!(
        (p["kind"].as_str(), p["object"].as_str(), p["index"].as_str()),
        (Some("validate"), Some("big_n_nonneg"), Some(""))
    );
    assert!(p["message"].as_str().unwrap().contains("validates constraint big_n_nonneg"), "{r:#}");
    // Seen again by status: waiting for the lock, as pg_stat_activity says.
    let status = runner::run(&mut conn, &migrations, Command::Status, &Default::default(), None).await.unwrap();
    assert_eq!(status.in_progress.as_ref().map(|p| p.phase.as_str()), Some("waiting for a lock on the table"));
    // Its wait queues behind no writer: the scanner's inserts and updates go on.
    let wrote = Instant::now();
    db.exec("INSERT INTO big (id, n) VALUES (0, 1); UPDATE big SET n = 2 WHERE id = 1;").await;
    assert!(wrote.elapsed() < Duration::from_secs(1), "a write waited {:?}", wrote.elapsed());

    maintenance.execute("COMMIT").await.unwrap();
    until_no_detached(&db).await;
    let validated = "SELECT convalidated FROM pg_constraint WHERE conname = 'big_n_nonneg'";
    assert!(db.scalar::<bool>(validated).await, "PostgreSQL validated it without a client");

    // The next run, as short and as slow, sees it validated and applies 001 without starting again.
    let r =
        runner::run(&mut conn, &migrations, Command::Migrate { target: None }, &short_run(&db), None).await.unwrap();
    assert_eq!(r.status, "applied", "{:#}", serde_json::to_value(&r).unwrap());
    assert_eq!(db.history().await, vec![0, 1]);
}

#[tokio::test]
async fn a_detached_statement_works_in_the_schema_of_the_run_not_in_the_logins_default() {
    use scanner_migrator::runner::{self, Command, RunSettings};
    let db = TestDb::new().await;
    // A decoy of the same name in public, where a session's default search_path would look first.
    db.exec(
        r#"CREATE SCHEMA "Long"; CREATE TABLE public.big (id bigint, n integer); CREATE INDEX big_n ON public.big (n);"#,
    )
    .await;
    let migrations = long_migrations("REINDEX INDEX CONCURRENTLY big_n");
    let mut conn = db.conn().await;
    scanner_migrator::db::pin_schema(&mut conn, Some("Long")).await.unwrap();
    runner::run(&mut conn, &migrations, Command::Migrate { target: Some(0) }, &RunSettings::default(), None)
        .await
        .unwrap();
    db.exec(
        r#"INSERT INTO "Long".big (id, n) SELECT g, g % 100 FROM generate_series(1, 20000) AS g; ANALYZE "Long".big;"#,
    )
    .await;
    let (ours, decoy) = (relfilenode(&db, r#""Long".big_n"#).await, relfilenode(&db, "public.big_n").await);

    let r =
        runner::run(&mut conn, &migrations, Command::Migrate { target: None }, &short_run(&db), None).await.unwrap();
    assert_eq!(r.status, "in_progress", "{:#}", serde_json::to_value(&r).unwrap());
    until_no_detached(&db).await;
    assert_ne!(relfilenode(&db, r#""Long".big_n"#).await, ours, "the run's schema's index was rebuilt");
    assert_eq!(relfilenode(&db, "public.big_n").await, decoy, "the decoy in public was not touched");
    let r =
        runner::run(&mut conn, &migrations, Command::Migrate { target: None }, &short_run(&db), None).await.unwrap();
    assert_eq!(r.status, "applied", "{:#}", serde_json::to_value(&r).unwrap());
}

/// 001 copies 6,000 rows of `big` at 1 ms a row (6 s; instant on the replay's empty tables), in a
/// no-transaction file, as its first statement.
const SLOW_COPY: &str = "CREATE TABLE IF NOT EXISTS big_copy AS SELECT id, 100 / n AS q FROM big \
                         WHERE id <= 6000 AND (SELECT true FROM pg_sleep(0.001 + id * 0))";

/// A run with 4 s left, detaching allowed.
fn four_seconds(db: &TestDb) -> scanner_migrator::runner::RunSettings {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    scanner_migrator::runner::RunSettings {
        deadline: scanner_migrator::deadline::Deadline::from_lambda_epoch_ms(
            (now + Duration::from_secs(4)).as_millis() as u64,
        ),
        ..short_run(db)
    }
}

#[tokio::test]
async fn a_statement_cut_at_the_deadline_runs_detached_the_next_time_and_its_failure_is_reported() {
    use scanner_migrator::runner::{self, Command};
    let (db, migrations, mut conn) = long_fixture(SLOW_COPY).await;
    db.exec("UPDATE big SET n = 1 WHERE n = 0").await;
    let migrate = Command::Migrate { target: None };

    // First: run in place, cut by the deadline, nothing half-done (one statement is atomic).
    let err = runner::run(&mut conn, &migrations, migrate, &four_seconds(&db), None).await.unwrap_err();
    assert_eq!(err.kind(), "DeadlineReached", "{err}");
    assert_eq!(db.scalar::<Option<String>>("SELECT to_regclass('big_copy')::text").await, None);

    // Meanwhile a row makes the copy fail: the detached run fails, and the next run says why.
    db.exec("UPDATE big SET n = 0 WHERE id = 5999").await;
    let r = runner::run(&mut conn, &migrations, migrate, &four_seconds(&db), None).await.unwrap();
    let p = r.in_progress.clone().expect("the statement the deadline cut runs detached");
    assert_eq!(
        (p.kind, p.object.as_str(), p.index.as_str()),
        (scanner_migrator::detached::Kind::Statement, "line 2", "")
    );
    assert!(
        p.statement.starts_with("CREATE TABLE IF NOT EXISTS big_copy AS SELECT"),
        "shown as written: {}",
        p.statement
    );
    assert!(p.message.contains("runs its statement at line 2"), "{}", p.message);
    until_no_detached(&db).await;
    let err = runner::run(&mut conn, &migrations, migrate, &four_seconds(&db), None).await.unwrap_err();
    assert_eq!(err.kind(), "MigrationFailed", "{err}");
    let msg = err.to_string();
    assert!(msg.contains("001") && msg.contains("22012") && msg.contains("division by zero"), "{msg}");
    assert!(msg.contains("in its detached run"), "{msg}");
    assert_eq!(db.scalar::<Option<String>>("SELECT to_regclass('big_copy')::text").await, None, "rolled back");

    // Fixed, the next run runs it detached again; it finishes without a client; the run after
    // that finds it done (it is not run again: that would be cut again) and applies 001.
    db.exec("UPDATE big SET n = 1 WHERE id = 5999").await;
    let r = runner::run(&mut conn, &migrations, migrate, &four_seconds(&db), None).await.unwrap();
    assert_eq!(r.status, "in_progress");
    let again = runner::run(&mut conn, &migrations, migrate, &four_seconds(&db), None).await.unwrap();
    assert_eq!(again.in_progress.map(|p| p.pid), r.in_progress.map(|p| p.pid), "reported, not started twice");
    until_no_detached(&db).await;
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM big_copy").await, 6000);
    let r = runner::run(&mut conn, &migrations, migrate, &four_seconds(&db), None).await.unwrap();
    assert_eq!(r.status, "applied", "{:#}", serde_json::to_value(&r).unwrap());
    assert_eq!(db.history().await, vec![0, 1]);
    let left: i64 = db.scalar("SELECT count(*) FROM scanner_migrator_history_detached").await;
    assert_eq!(left, 0, "the record goes with the application");
}

#[tokio::test]
async fn a_detached_statement_that_finishes_at_once_still_answers_and_the_next_run_applies() {
    use scanner_migrator::runner::{self, Command};
    // 20,000 rows at an assumed 100 rows/s: detached, though PostgreSQL validates them in milliseconds,
    // before the hand-over has seen the lock granted.
    for _ in 0..3 {
        let (db, migrations, mut conn) = long_fixture("ALTER TABLE big VALIDATE CONSTRAINT big_n_nonneg").await;
        let r = runner::run(&mut conn, &migrations, Command::Migrate { target: None }, &short_run(&db), None).await;
        let r = r.unwrap_or_else(|e| panic!("a quick detached statement must not fail the run: {e}"));
        assert_eq!(r.status, "in_progress");
        until_no_detached(&db).await;
        let r = runner::run(&mut conn, &migrations, Command::Migrate { target: None }, &short_run(&db), None).await;
        assert_eq!(r.unwrap().status, "applied");
    }
}
