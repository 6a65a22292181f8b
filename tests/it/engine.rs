//! The migration engine through the real CLI binary against a real PostgreSQL.

use std::time::{Duration, Instant};

use sqlx::{Connection, Executor};

use crate::support::{
    all_labels, all_versions,
    cli::{cli, migrator},
    migrations_copy,
    pg::TestDb,
};

#[tokio::test]
async fn fresh_database_is_migrated_and_verified_then_a_rerun_changes_nothing() {
    let db = TestDb::new().await;
    let run = migrator(&db.url, &["migrate"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(run.status(), "applied");
    assert_eq!(run.versions("applied"), all_versions());
    assert_eq!(run.json["schema_version"], *all_versions().last().unwrap());
    assert_eq!(run.json["verification"]["ok"], true, "{:#}", run.json);
    assert_eq!(run.json["verification"]["versions"], serde_json::json!(all_versions()));
    assert!(run.json["verification"]["objects_checked"].as_u64().unwrap() >= 10, "{:#}", run.json);
    assert!(run.json.get("adoption").is_none(), "nothing existed to adopt: {:#}", run.json);
    assert_eq!(db.history().await, all_versions());
    // What the scanner relies on is really there.
    assert!(db.scalar::<bool>("SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'jobs' AND column_name = 'execution_arn')").await);
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM pg_index WHERE NOT indisvalid").await, 0);
    db.exec("INSERT INTO jobs (bucket) VALUES ('b'); SELECT refresh_job_progress();").await;
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM job_progress").await, 1);
    // Logs go to stderr, one line per step.
    assert!(run.stderr.contains("applied") && run.stderr.contains("migration lock taken"), "{}", run.stderr);

    let schema = db.fingerprint().await;
    let again = migrator(&db.url, &["migrate"]).await;
    assert_eq!(again.code, 0);
    assert_eq!(again.status(), "up_to_date");
    assert!(again.versions("applied").is_empty());
    assert_eq!(db.fingerprint().await, schema);
    assert_eq!(db.advisory_locks().await, 0, "the lock must be released");

    let status = migrator(&db.url, &["status"]).await;
    assert_eq!(status.status(), "up_to_date");
    assert_eq!(status.json["history"].as_array().unwrap().len(), all_versions().len());
    assert!(status.json["history"].as_array().unwrap().iter().all(|h| h["state"] == "applied"));
    assert!(status.json["history"][0]["applied_by"].as_str().unwrap().starts_with("cli:"));
}

#[tokio::test]
async fn an_edited_applied_migration_is_refused_and_nothing_runs() {
    let db = TestDb::new().await;
    let dir = migrations_copy();
    let d = dir.path().to_str().unwrap();
    assert_eq!(migrator(&db.url, &["--migrations-dir", d, "migrate"]).await.code, 0);
    let file = dir.path().join("001_add_execution_arn.sql");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("execution_arn text", "execution_arn varchar(2048)")).unwrap();
    std::fs::write(dir.path().join("903_new.sql"), "CREATE TABLE should_not_exist (id bigint);\n").unwrap();
    let before = db.fingerprint().await;

    let run = migrator(&db.url, &["--migrations-dir", d, "migrate"]).await;
    assert_eq!(run.code, 1);
    assert_eq!(run.error_type(), "ChecksumMismatch");
    let msg = run.error_message();
    let old = scanner_migrator::migrations::Migrations::embedded().unwrap().get(1).unwrap().up.checksum.clone();
    assert!(msg.contains("001") && msg.contains(&old), "names the version and the applied checksum: {msg}");
    let new =
        scanner_migrator::migrations::Script::parse("x", &std::fs::read_to_string(&file).unwrap()).unwrap().checksum;
    assert!(msg.contains(&new), "and the new one: {msg}");
    assert_eq!(db.fingerprint().await, before);
    assert_eq!(db.history().await, all_versions());
    assert_eq!(db.advisory_locks().await, 0);
}

#[tokio::test]
async fn a_failing_statement_rolls_back_its_migration_and_names_where() {
    let db = TestDb::new().await;
    let dir = migrations_copy();
    let d = dir.path().to_str().unwrap();
    std::fs::write(
        dir.path().join("901_broken.sql"),
        "-- Migration: 901_broken\nALTER TABLE jobs ADD COLUMN half_done text;\n\nUPDATE jobs\n   SET half_done = 'x'\n  FROM no_such_table;\n",
    )
    .unwrap();
    let run = migrator(&db.url, &["--migrations-dir", d, "migrate"]).await;
    assert_eq!(run.code, 1, "{:#}", run.json);
    assert_eq!(run.error_type(), "MigrationFailed");
    let msg = run.error_message();
    assert!(msg.contains("migration 901 (broken)"), "{msg}");
    assert!(msg.contains("SQLSTATE 42P01"), "{msg}");
    assert!(msg.contains("no_such_table") && msg.contains("UPDATE jobs SET half_done"), "{msg}");
    assert!(msg.contains("line 6"), "the error position is mapped to the file's line: {msg}");
    assert!(msg.contains(&format!("applied before the failure: {}", all_labels().join(", "))), "{msg}");
    // The real migrations stay applied; 901's first statement was rolled back with it.
    assert_eq!(db.history().await, all_versions());
    assert!(
        !db.scalar::<bool>("SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE column_name = 'half_done')")
            .await
    );
    assert_eq!(db.advisory_locks().await, 0, "the lock is released on failure");
}

#[tokio::test]
async fn eight_runners_at_once_apply_exactly_once() {
    let db = TestDb::new().await;
    let runs = futures_join_all((0..8).map(|_| {
        let url = db.url.clone();
        async move { migrator(&url, &["migrate"]).await }
    }))
    .await;
    for r in &runs {
        assert_eq!(r.code, 0, "no runner fails: {:#}", r.json);
    }
    let appliers: Vec<_> = runs.iter().filter(|r| r.status() == "applied").collect();
    assert_eq!(appliers.len(), 1, "exactly one applies");
    assert_eq!(appliers[0].versions("applied"), all_versions());
    assert_eq!(runs.iter().filter(|r| r.status() == "up_to_date").count(), 7);
    assert_eq!(db.history().await, all_versions());
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_held_lock_gives_lock_timeout_naming_the_holder_and_leaves_the_lock_free() {
    let db = TestDb::new().await;
    let mut holder = db.conn().await;
    holder.execute("SET application_name = 'other-migrator'").await.unwrap();
    let (k1, k2) = scanner_migrator::db::LOCK_KEY;
    sqlx::query("SELECT pg_advisory_lock($1, $2)").bind(k1).bind(k2).execute(&mut holder).await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut holder).await.unwrap();

    let run = migrator(&db.url, &["--lock-wait-s", "1", "migrate"]).await;
    assert_eq!(run.code, 1);
    assert_eq!(run.error_type(), "LockTimeout");
    let msg = run.error_message();
    assert!(
        msg.contains(&format!("pid {pid}")) && msg.contains("other-migrator") && msg.contains("connected"),
        "{msg}"
    );
    assert!(db.history().await.is_empty(), "nothing ran");

    holder.close().await.unwrap();
    assert_eq!(db.advisory_locks().await, 0, "the failed runner left no lock behind");
    assert_eq!(migrator(&db.url, &["migrate"]).await.status(), "applied");
}

#[tokio::test]
async fn the_lock_of_another_database_on_the_server_is_not_named_as_the_holder() {
    let (other, db) = (TestDb::new().await, TestDb::new().await);
    let mut holder = other.conn().await;
    let (k1, k2) = scanner_migrator::db::LOCK_KEY;
    sqlx::query("SELECT pg_advisory_lock($1, $2)").bind(k1).bind(k2).execute(&mut holder).await.unwrap();
    let mut conn = db.conn().await;
    let named = scanner_migrator::db::lock_holder(&mut conn).await.unwrap();
    assert_eq!(named, None, "advisory locks are per database");
    let run = migrator(&db.url, &["--lock-wait-s", "1", "migrate", "--target", "0"]).await;
    assert_eq!(run.status(), "applied", "{:#}", run.json);
    holder.close().await.unwrap();
}

#[tokio::test]
async fn ddl_behind_a_long_reader_times_out_and_retries_instead_of_queueing() {
    let db = TestDb::new().await;
    assert_eq!(migrator(&db.url, &["migrate", "--target", "0"]).await.versions("applied"), vec![0]);
    let mut reader = db.conn().await;
    reader.execute("BEGIN; SELECT count(*) FROM jobs;").await.unwrap();
    let url = db.url.clone();
    let run =
        tokio::spawn(
            async move { migrator(&url, &["--lock-timeout-ms", "100", "--lock-retries", "30", "migrate"]).await },
        );
    // While the reader holds its lock, the migrator keeps giving up its place in the queue,
    // so a writer is never stuck behind the ALTER. Wait until the ALTER has queued once (the
    // migrator derives the expected schema first, which takes longer on a loaded machine).
    let started = Instant::now();
    while db.scalar::<i64>("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'jobs'::regclass").await == 0
    {
        assert!(started.elapsed() < Duration::from_secs(30), "the migrator never waited for the reader's lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut writer = db.conn().await;
    writer.execute("SET statement_timeout = '5s'").await.unwrap();
    writer
        .execute("INSERT INTO jobs (bucket) VALUES ('w')")
        .await
        .expect("writer not blocked by the waiting migration");
    reader.execute("COMMIT").await.unwrap();
    let run = run.await.unwrap();
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert!(run.json["applied"][0]["lock_retries"].as_u64().unwrap() >= 1, "{:#}", run.json);
    assert_eq!(db.history().await, all_versions());
}

#[tokio::test]
async fn lock_retries_run_out_with_a_clear_error() {
    let db = TestDb::new().await;
    migrator(&db.url, &["migrate", "--target", "0"]).await;
    let mut reader = db.conn().await;
    reader.execute("BEGIN; SELECT count(*) FROM jobs;").await.unwrap();
    let run = migrator(&db.url, &["--lock-timeout-ms", "50", "--lock-retries", "2", "migrate"]).await;
    assert_eq!(run.error_type(), "MigrationFailed");
    assert!(
        run.error_message().contains("SQLSTATE 55P03") && run.error_message().contains("001"),
        "{}",
        run.error_message()
    );
    reader.execute("ROLLBACK").await.unwrap();
    assert_eq!(db.history().await, vec![0]);
}

#[tokio::test]
async fn a_backend_killed_in_the_middle_of_002_is_completed_by_the_next_run() {
    let db = TestDb::new().await;
    migrator(&db.url, &["migrate", "--target", "1"]).await;
    db.exec("INSERT INTO jobs (bucket) VALUES ('b'); INSERT INTO job_objects (job_id, bucket, key) SELECT job_id, 'b', 'k' || g FROM jobs, generate_series(1, 1000) g;").await;
    // An open writer makes CREATE INDEX CONCURRENTLY wait after it has created the (still INVALID) index.
    let mut writer = db.conn().await;
    writer.execute("BEGIN; UPDATE job_objects SET status = 'processing' WHERE key = 'k1';").await.unwrap();
    let url = db.url.clone();
    let run = tokio::spawn(async move { migrator(&url, &["--lock-timeout-ms", "60000", "migrate"]).await });
    let started = Instant::now();
    let pid = loop {
        let pid: Option<i32> = db
            .scalar("SELECT (SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'scanner-migrator:migrate%' AND query ILIKE 'CREATE INDEX CONCURRENTLY%' AND wait_event_type = 'Lock')")
            .await;
        if let Some(pid) = pid {
            break pid;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the index build never started waiting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let killed: bool = db.scalar(&format!("SELECT pg_terminate_backend({pid})")).await;
    assert!(killed);
    let run = run.await.unwrap();
    assert_eq!(run.code, 1, "the killed run reports failure: {:#}", run.json);
    writer.execute("ROLLBACK").await.unwrap();
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM pg_index WHERE NOT indisvalid").await,
        1,
        "the interruption left an INVALID index"
    );
    let states: Vec<(i64, String)> =
        [(0, "applied"), (1, "applied"), (2, "applying")].into_iter().map(|(v, s)| (v, s.to_string())).collect();
    assert_eq!(db.history_states().await, states, "002 is recorded as partly applied");
    assert_eq!(db.advisory_locks().await, 0);

    let again = migrator(&db.url, &["migrate"]).await;
    assert_eq!(again.code, 0, "{:#}", again.json);
    assert_eq!(again.versions("applied"), all_versions().into_iter().filter(|&v| v >= 2).collect::<Vec<_>>());
    assert_eq!(again.json["applied"][0]["rebuilt_invalid_indexes"][0], "idx_job_objects_job_status");
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM pg_index WHERE NOT indisvalid").await, 0, "every index is valid");
    assert_eq!(migrator(&db.url, &["verify"]).await.status(), "verified");
}

#[tokio::test]
async fn rollback_to_1_then_migrate_returns_to_the_same_schema() {
    let db = TestDb::new().await;
    migrator(&db.url, &["migrate"]).await;
    let full = db.fingerprint().await;
    let above = |n: i64| all_versions().into_iter().filter(|&v| v > n).rev().collect::<Vec<_>>();
    let run = migrator(&db.url, &["rollback", "--to", "1"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(run.status(), "rolled_back");
    assert_eq!(run.versions("rolled_back"), above(1));
    assert_eq!(run.json["schema_version"], 1);
    assert!(!db.scalar::<bool>("SELECT to_regclass('job_progress') IS NOT NULL").await);
    assert!(!db.scalar::<bool>("SELECT to_regprocedure('refresh_job_progress()') IS NOT NULL").await);
    assert_eq!(db.history().await, vec![0, 1]);
    assert_eq!(
        migrator(&db.url, &["verify"]).await.status(),
        "verified",
        "a rolled-back schema verifies at its version"
    );
    let again = migrator(&db.url, &["migrate"]).await;
    assert_eq!(again.versions("applied"), above(1).into_iter().rev().collect::<Vec<_>>());
    assert_eq!(db.fingerprint().await, full);

    let to0 = migrator(&db.url, &["rollback", "--target", "0"]).await;
    assert_eq!(to0.versions("rolled_back"), above(0), "--target is the same as --to");
    assert!(
        !db.scalar::<bool>(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE column_name = 'execution_arn')"
        )
        .await
    );
    let irreversible = migrator(&db.url, &["rollback", "--to", "-1"]).await;
    assert_eq!(irreversible.error_type(), "BadRequest");
}

#[tokio::test]
async fn plan_shows_what_would_run_and_changes_nothing() {
    let db = TestDb::new().await;
    let before = db.fingerprint().await;
    let run = migrator(&db.url, &["plan"]).await;
    assert_eq!(run.code, 0);
    assert_eq!(run.status(), "planned");
    assert_eq!(run.versions("pending"), all_versions());
    let modes: Vec<&str> =
        run.json["pending"].as_array().unwrap().iter().map(|p| p["mode"].as_str().unwrap()).collect();
    let embedded = scanner_migrator::migrations::Migrations::embedded().unwrap();
    let expected: Vec<&str> =
        embedded.all().iter().map(|m| if m.up.no_transaction { "no-transaction" } else { "transaction" }).collect();
    assert_eq!(modes, expected);
    assert_eq!(db.fingerprint().await, before);
    assert!(
        !db.scalar::<bool>("SELECT to_regclass('scanner_migrator_history') IS NOT NULL").await,
        "not even the history table"
    );
    let partial = migrator(&db.url, &["plan", "--target", "1"]).await;
    assert_eq!(partial.versions("pending"), vec![0, 1]);
}

#[tokio::test]
async fn verify_fails_when_an_object_is_missing() {
    let db = TestDb::new().await;
    migrator(&db.url, &["migrate"]).await;
    db.exec("DROP INDEX idx_job_objects_job_updated_at").await;
    let run = migrator(&db.url, &["verify"]).await;
    assert_eq!(run.code, 1);
    assert_eq!(run.error_type(), "VerifyFailed");
    assert!(
        run.error_message().contains("index idx_job_objects_job_updated_at: is missing"),
        "{}",
        run.error_message()
    );
}

#[tokio::test]
async fn an_unreachable_database_fails_within_the_connect_timeout() {
    // A socket that accepts connections but never speaks: only the timeout can end the wait.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("postgres://u:pw@127.0.0.1:{}/db", listener.local_addr().unwrap().port());
    let started = Instant::now();
    let run = migrator(&url, &["--connect-timeout-s", "1", "migrate"]).await;
    assert_eq!(run.code, 1);
    assert_eq!(run.error_type(), "ConnectFailed");
    assert!(
        run.error_message().contains("127.0.0.1") && run.error_message().contains("within 1 s"),
        "{}",
        run.error_message()
    );
    assert!(started.elapsed() < Duration::from_secs(20), "bounded by the timeout, not hanging");
    drop(listener);

    let closed = migrator("postgres://u:pw@127.0.0.1:1/db", &["migrate"]).await;
    assert_eq!(closed.error_type(), "ConnectFailed");
    assert!(closed.error_message().to_lowercase().contains("refused"), "{}", closed.error_message());
}

#[tokio::test]
async fn a_wrong_password_is_auth_failed_and_never_printed() {
    let db = TestDb::new().await;
    let wrong = "Wr0ngPassw0rd-xyz";
    crate::support::secrets::register(wrong);
    let url = db.url.replace(&crate::support::pg::server().master_password, wrong);
    let run = migrator(&url, &["status"]).await;
    assert_eq!(run.code, 1);
    assert_eq!(run.error_type(), "AuthFailed");
    let who = format!("{}@127.0.0.1", crate::support::pg::server().master);
    assert!(run.error_message().contains(&who), "{}", run.error_message());
}

#[tokio::test]
async fn bad_command_lines_are_bad_requests() {
    let unknown = cli(&["frobnicate"], &[]).await;
    assert_eq!(unknown.code, 2);
    assert_eq!(unknown.error_type(), "BadRequest");
    assert!(unknown.error_message().contains("frobnicate"), "{}", unknown.error_message());

    let rollback = cli(&["--database-url", "postgres://x@127.0.0.1:1/db", "rollback"], &[]).await;
    assert_eq!(rollback.code, 2);
    assert_eq!(rollback.error_type(), "BadRequest");
    assert!(rollback.error_message().contains("--target"), "{}", rollback.error_message());

    let nothing = cli(&["migrate"], &[]).await;
    assert_eq!(nothing.code, 1);
    assert_eq!(nothing.error_type(), "ConfigError");
    assert!(nothing.error_message().contains("DB_SECRET_ARN") && nothing.error_message().contains("--database-url"));
}

#[tokio::test]
async fn invalid_index_repair_touches_only_the_index_on_the_table_the_statement_names() {
    let db = TestDb::new().await;
    assert_eq!(migrator(&db.url, &["migrate", "--target", "1"]).await.code, 0);
    // Another schema has an INVALID index of the same name, on its own table of the same name.
    db.exec(
        "CREATE SCHEMA other;
         CREATE TABLE other.job_objects (job_id uuid, status text);
         CREATE INDEX idx_job_objects_job_status ON other.job_objects (status);",
    )
    .await;
    db.exec_super(
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'other.idx_job_objects_job_status'::regclass",
    )
    .await;
    let run = migrator(&db.url, &["migrate"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert!(run.json["applied"][0].get("rebuilt_invalid_indexes").is_none(), "{:#}", run.json);
    assert!(
        !db.scalar::<bool>(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'other.idx_job_objects_job_status'::regclass"
        )
        .await,
        "the other schema's index is left exactly as it was"
    );
    assert!(
        db.scalar::<bool>(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.idx_job_objects_job_status'::regclass"
        )
        .await
    );
}

#[tokio::test]
async fn a_fold_lock_held_elsewhere_bounds_the_scratch_replay_and_applies_nothing() {
    // 003's fold takes a server-wide advisory lock: held here on a server of this test's own, so the
    // suite's other databases never wait for it.
    let private = crate::support::pg::PrivateServer::start();
    let db = TestDb::new_on(&private.server).await;
    let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
    holder.execute("SELECT pg_advisory_lock(7355608003)").await.unwrap();
    let started = Instant::now();
    let run = crate::support::cli::migrator_on(&private.server, &db.url, &["migrate"]).await;
    assert!(started.elapsed() < Duration::from_secs(60), "bounded, took {:?}", started.elapsed());
    assert_eq!(run.error_type(), "LockTimeout", "{:#}", run.json);
    assert!(run.error_message().contains("scratch schema") && run.error_message().contains("nothing was applied"));
    assert!(db.scalar::<bool>("SELECT to_regclass('jobs') IS NULL").await, "nothing applied");
    holder.close().await.unwrap();
    assert_eq!(crate::support::cli::migrator_on(&private.server, &db.url, &["migrate"]).await.status(), "applied");
}
