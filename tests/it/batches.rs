//! Batched data changes (`-- migrate:batch`): a change over a million rows, cut by invocation
//! deadlines and resumed, changes every row exactly once, shows its progress in `status`, and
//! never holds up the scanner's writers longer than one lock_timeout.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use sqlx::{Connection, Executor};

use crate::support::pg::TestDb;
use scanner_migrator::{
    deadline::Deadline,
    migrations::Migrations,
    runner::{self, Command, RunSettings},
};

const ROWS: i64 = 1_000_000;

fn migrations() -> Migrations {
    Migrations::from_files(vec![
        (
            "000_big.sql".into(),
            "CREATE TABLE big (id bigint PRIMARY KEY, n integer NOT NULL DEFAULT 0, done boolean NOT NULL DEFAULT false, touched integer NOT NULL DEFAULT 0);\n\
             CREATE INDEX big_todo ON big (id) WHERE NOT done;\n"
                .into(),
        ),
        (
            "001_mark_all.sql".into(),
            "-- migrate:no-transaction\n\
             -- Each batch marks 5,000 rows not marked yet, so a committed batch is never redone.\n\
             -- migrate:batch pause-ms=10\n\
             -- migrate:batch-left SELECT count(*) FROM big WHERE NOT done\n\
             UPDATE big SET n = n + 1, done = true\n WHERE id IN (SELECT id FROM big WHERE NOT done ORDER BY id LIMIT 5000);\n"
                .into(),
        ),
    ])
    .unwrap()
}

fn lambda_deadline(after: Duration) -> Deadline {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    Deadline::from_lambda_epoch_ms((now + after).as_millis() as u64)
}

#[tokio::test]
async fn a_million_rows_changed_in_batches_across_deadlines_each_exactly_once_with_writers_never_stalled() {
    let db = TestDb::new().await;
    let migrations = migrations();
    let mut conn = db.conn().await;
    runner::run(&mut conn, &migrations, Command::Migrate { target: Some(0) }, &RunSettings::default(), None)
        .await
        .unwrap();
    db.exec(&format!("INSERT INTO big (id) SELECT g FROM generate_series(1, {ROWS}) AS g; ANALYZE big;")).await;

    // The scanner keeps writing to the same rows throughout; its longest wait is what it would notice.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, url) = (stop.clone(), db.url.clone());
        tokio::spawn(async move {
            let mut w = sqlx::PgConnection::connect(&url).await.unwrap();
            let (mut longest, mut writes, mut i) = (Duration::ZERO, 0u64, 0i64);
            while !stop.load(Ordering::Relaxed) {
                i = (i + 7919) % ROWS + 1;
                let t = Instant::now();
                w.execute(sqlx::AssertSqlSafe(format!("UPDATE big SET touched = touched + 1 WHERE id = {i}")))
                    .await
                    .unwrap();
                longest = longest.max(t.elapsed());
                writes += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (longest, writes)
        })
    };

    // Invocations of 10 s (9 s after the answer's margin) until it is applied.
    let lock_timeout = Duration::from_secs(2);
    let mut cut_short = Vec::new();
    let mut progress_seen = Vec::new();
    let applied = loop {
        assert!(cut_short.len() < 200, "no end in sight: {cut_short:?}");
        let settings =
            RunSettings { deadline: lambda_deadline(Duration::from_secs(10)), lock_timeout, ..RunSettings::default() };
        match runner::run(&mut conn, &migrations, Command::Migrate { target: None }, &settings, None).await {
            Ok(report) => break report,
            Err(err) => {
                assert_eq!(err.kind(), "DeadlineReached", "{err}");
                cut_short.push(err.to_string());
                let status =
                    runner::run(&mut conn, &migrations, Command::Status, &RunSettings::default(), None).await.unwrap();
                progress_seen.push(serde_json::to_value(&status).unwrap()["batches_in_progress"].clone());
            }
        }
    };
    stop.store(true, Ordering::Relaxed);
    let (longest_write, writes) = writer.await.unwrap();
    eprintln!("{} invocations cut short, then applied; longest write {longest_write:?} of {writes}", cut_short.len());

    assert!(!cut_short.is_empty(), "the change outlasted an invocation, so it was resumed at least once");
    assert!(
        cut_short[0].contains("between batches of the batched statement")
            && cut_short[0].contains("resumes where it stopped"),
        "{}",
        cut_short[0]
    );
    // status showed it part-way: rows done and a percentage from the migration's own count.
    let first = &progress_seen[0][0];
    let done = first["rows_done"].as_i64().unwrap();
    assert!(done > 0 && done < ROWS && done % 5_000 == 0, "{first}");
    let percent = first["percent_done"].as_f64().unwrap();
    assert!((percent - done as f64 * 100.0 / ROWS as f64).abs() < 0.01, "{first}");
    assert_eq!(first["rows_left"].as_i64().unwrap(), ROWS - done, "{first}");

    // Every row changed exactly once, however often the change was cut short.
    let wrong: i64 = db.scalar("SELECT count(*) FROM big WHERE n <> 1 OR NOT done").await;
    assert_eq!(wrong, 0);
    assert_eq!(db.history().await, vec![0, 1]);
    let step = &applied.applied[0];
    assert_eq!(step.version, 1);
    let this_run: u64 = step.batched.iter().map(|b| b.rows).sum();
    assert!(this_run < ROWS as u64, "the last run did only what was left: {this_run}");

    // The writers kept going, never waiting a whole lock_timeout.
    assert!(writes > 50, "the writer wrote throughout: {writes}");
    assert!(longest_write < lock_timeout, "a writer waited {longest_write:?}");

    // Done: status shows nothing in progress; a later run has nothing to batch.
    let status = runner::run(&mut conn, &migrations, Command::Status, &RunSettings::default(), None).await.unwrap();
    assert!(status.batches_in_progress.is_empty());
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_batch_directive_that_cannot_work_is_refused_when_the_migrations_load() {
    let err = Migrations::from_files(vec![(
        "000_x.sql".into(),
        "-- migrate:no-transaction\n-- migrate:batch\nUPDATE big SET done = true WHERE NOT done;\n".into(),
    )])
    .unwrap_err();
    assert_eq!(err.kind(), "InvalidMigration");
    assert!(err.to_string().contains("000_x.sql") && err.to_string().contains("has no LIMIT"), "{err}");
}
