//! Issue 20: 003 keeps derived data (job_progress), so a run of its up or down script stopped at
//! any statement must leave nothing silently wrong. Each test stops one statement of 003 (a lock
//! held by another session, with `--lock-retries 0`; where no lock of another session can single
//! the statement out, an event trigger of the test's own fails it with the lock-timeout SQLSTATE),
//! writes meanwhile, recovers as the error says, and compares job_progress with a direct count.

use sqlx::{Connection, Executor, PgConnection};

use crate::{
    job_progress::{assert_exact, v_incremental, v_matview},
    support::{cli::Run, pg::TestDb},
};

/// No waiting and no retry: the first lock timeout stops the run.
const STOP_AT_ONCE: &[&str] = &["--lock-timeout-ms", "300", "--lock-retries", "0"];

/// The migrator with a refresh role of this database's own: these tests stop rollbacks with no lock
/// retries, and 004's down script drops the refresh role, a server-wide object that other tests'
/// databases on the shared server would otherwise be granting or dropping at the same moment.
async fn migrator(url: &str, args: &[&str]) -> Run {
    let database = url.rsplit('/').next().and_then(|d| d.split('?').next()).unwrap_or_default();
    let role = format!("refresh_{database}");
    let mut all = vec!["--refresh-role", role.as_str()];
    all.extend_from_slice(args);
    crate::support::cli::migrator(url, &all).await
}

fn job(n: i64) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// Three jobs of ten objects each, statuses mixed.
async fn seed(db: &TestDb) {
    db.exec(
        "INSERT INTO jobs (job_id, bucket) SELECT ('00000000-0000-4000-8000-' || lpad(j::text, 12, '0'))::uuid, 'b'
           FROM generate_series(1, 3) AS j;
         INSERT INTO job_objects (job_id, bucket, key, status)
         SELECT ('00000000-0000-4000-8000-' || lpad(j::text, 12, '0'))::uuid, 'b', 'seed/' || g,
                (ARRAY['queued', 'processing', 'succeeded', 'failed'])[1 + g % 4]
           FROM generate_series(1, 3) AS j, generate_series(1, 10) AS g;",
    )
    .await;
}

/// What the scanner does while the migration is stopped: new objects, status changes, deletes, a new job.
async fn write_meanwhile(db: &TestDb) {
    db.exec(&format!(
        "INSERT INTO job_objects (job_id, bucket, key) SELECT '{j1}', 'b', 'meanwhile/' || g FROM generate_series(1, 5) AS g;
         UPDATE job_objects SET status = 'succeeded', updated_at = now() WHERE job_id = '{j2}' AND status <> 'succeeded';
         DELETE FROM job_objects WHERE job_id = '{j3}' AND key IN ('seed/1', 'seed/2', 'seed/3');
         INSERT INTO jobs (job_id, bucket) VALUES ('{j9}', 'b');
         INSERT INTO job_objects (job_id, bucket, key, status) VALUES ('{j9}', 'b', 'x', 'failed'), ('{j9}', 'b', 'y', 'queued');",
        j1 = job(1),
        j2 = job(2),
        j3 = job(3),
        j9 = job(9),
    ))
    .await;
}

async fn refresh(db: &TestDb) {
    let run = migrator(&db.url, &["--refresh-min-interval-s", "0", "refresh"]).await;
    assert_eq!(run.code, 0, "refresh: {:#}", run.json);
}

/// A session of the test's own that runs `sql` in a transaction left open: its locks are held
/// until [`release`].
async fn hold(db: &TestDb, sql: &str) -> PgConnection {
    let mut c = db.conn().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("BEGIN; {sql}"))).execute(&mut c).await.unwrap();
    c
}

async fn release(mut c: PgConnection) {
    c.execute("ROLLBACK").await.unwrap();
    c.close().await.unwrap();
}

/// Event triggers (the tests' own setup, as the superuser) that fail the DDL statement creating
/// or dropping an object named in `interrupt.at` with SQLSTATE 55P03, as a lock timeout would.
/// Identities are schema-qualified, so the migrator's scratch schema is never matched.
async fn install_interrupter(db: &TestDb) {
    db.exec_super(
        "CREATE SCHEMA interrupt;
         CREATE TABLE interrupt.at (identity text NOT NULL, event text NOT NULL);
         GRANT USAGE ON SCHEMA interrupt TO PUBLIC;
         GRANT SELECT ON interrupt.at TO PUBLIC;
         CREATE FUNCTION interrupt.created() RETURNS event_trigger LANGUAGE plpgsql AS $$
         DECLARE hit text;
         BEGIN
             SELECT min(c.object_identity) INTO hit FROM pg_event_trigger_ddl_commands() AS c
              WHERE c.object_identity IN (SELECT a.identity FROM interrupt.at AS a WHERE a.event = 'created');
             IF hit IS NOT NULL THEN
                 RAISE EXCEPTION 'canceling statement due to lock timeout (the test stops %)', hit
                       USING ERRCODE = 'lock_not_available';
             END IF;
         END $$;
         CREATE FUNCTION interrupt.dropped() RETURNS event_trigger LANGUAGE plpgsql AS $$
         DECLARE hit text;
         BEGIN
             SELECT min(d.object_identity) INTO hit FROM pg_event_trigger_dropped_objects() AS d
              WHERE d.object_identity IN (SELECT a.identity FROM interrupt.at AS a WHERE a.event = 'dropped');
             IF hit IS NOT NULL THEN
                 RAISE EXCEPTION 'canceling statement due to lock timeout (the test stops %)', hit
                       USING ERRCODE = 'lock_not_available';
             END IF;
         END $$;
         CREATE EVENT TRIGGER interrupt_created ON ddl_command_end EXECUTE FUNCTION interrupt.created();
         CREATE EVENT TRIGGER interrupt_dropped ON sql_drop EXECUTE FUNCTION interrupt.dropped();",
    )
    .await;
}

/// Where to stop a script.
enum Stop {
    /// The statement creating the object of this identity (event trigger).
    Created(&'static str),
    /// The statement dropping the object of this identity (event trigger).
    Dropped(&'static str),
    /// Whatever waits for the lock this SQL takes in another session.
    Lock(&'static str),
    /// The backfill, after it counted (and committed) the first job.
    MidBackfill,
}

/// A reader of the view: what the status API does.
const READER_OF_JOB_PROGRESS: &str = "SELECT count(*) FROM job_progress";

/// Runs `args`, stopped at `stop`; returns the error message.
async fn stopped_run(db: &TestDb, stop: &Stop, args: &[&str]) -> String {
    let all: Vec<&str> = args.iter().chain(STOP_AT_ONCE).copied().collect();
    let run = match stop {
        Stop::Created(identity) | Stop::Dropped(identity) => {
            let event = if matches!(stop, Stop::Created(_)) { "created" } else { "dropped" };
            db.exec_super(&format!("INSERT INTO interrupt.at VALUES ('{identity}', '{event}')")).await;
            let run = migrator(&db.url, &all).await;
            db.exec_super("DELETE FROM interrupt.at").await;
            run
        }
        Stop::Lock(sql) => {
            let holder = hold(db, sql).await;
            let run = migrator(&db.url, &all).await;
            release(holder).await;
            run
        }
        Stop::MidBackfill => {
            // First up to the backfill (its tables and triggers made), then a counts row of job 2
            // being inserted by another session: the backfill counts job 1, commits, and waits there.
            let before = Box::pin(stopped_run(db, &Stop::Created("public.job_progress_backfill()"), args)).await;
            assert!(before.contains("55P03"), "{before}");
            let holder = hold(db, &format!("INSERT INTO job_progress_counts (job_id) VALUES ('{}')", job(2))).await;
            let run = migrator(&db.url, &all).await;
            release(holder).await;
            assert_eq!(
                db.scalar::<Vec<String>>("SELECT array_agg(job_id::text) FROM job_progress_counts").await,
                vec![job(1)],
                "stopped mid-backfill, after job 1: {:#}",
                run.json
            );
            run
        }
    };
    assert_ne!(run.code, 0, "{args:?} was to stop part-way: {:#}", run.json);
    let message = run.error_message().to_string();
    assert!(message.contains("55P03"), "{args:?} was to stop at a lock timeout: {message}");
    assert!(message.contains("migration 003"), "{args:?} was to stop in 003 (check the stop's identity): {message}");
    message
}

/// 003's up script stopped at `stop` under writers; `migrate` again; job_progress exact.
async fn up_stopped(stop: Stop) {
    let db = TestDb::new().await;
    install_interrupter(&db).await;
    let run = migrator(&db.url, &["migrate", "--target", &v_matview().to_string()]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    seed(&db).await;
    refresh(&db).await;
    let message = stopped_run(&db, &stop, &["migrate"]).await;
    assert!(message.contains("`migrate` runs it again"), "the error says how to go on: {message}");
    write_meanwhile(&db).await;
    let run = migrator(&db.url, &["migrate"]).await;
    assert_eq!((run.code, run.status()), (0, "applied"), "migrate after the stop: {:#}", run.json);
    assert_exact(&db, "after migrate finished the stopped 003").await;
    write_meanwhile_again(&db).await;
    refresh(&db).await;
    assert_exact(&db, "after more writes and a refresh").await;
}

/// 003's down script stopped at `stop` under writers; `migrate` (as the error says); job_progress exact.
async fn down_stopped(stop: Stop) {
    let db = TestDb::new().await;
    install_interrupter(&db).await;
    let run = migrator(&db.url, &["migrate"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    seed(&db).await;
    refresh(&db).await;
    let message = stopped_run(&db, &stop, &["rollback", "--target", &v_matview().to_string()]).await;
    assert!(message.contains("`migrate` re-applies it"), "the error says how to go on: {message}");
    write_meanwhile(&db).await;
    let run = migrator(&db.url, &["migrate"]).await;
    assert_eq!((run.code, run.status()), (0, "applied"), "migrate after the stop: {:#}", run.json);
    refresh(&db).await;
    assert_exact(&db, "after migrate re-applied the partly rolled back 003").await;
    write_meanwhile_again(&db).await;
    assert_exact(&db, "after more writes").await;
}

/// More of the scanner's work once recovered: the counts stay exact from then on too.
async fn write_meanwhile_again(db: &TestDb) {
    db.exec(&format!(
        "INSERT INTO job_objects (job_id, bucket, key) SELECT '{j1}', 'b', 'after/' || g FROM generate_series(1, 4) AS g;
         UPDATE job_objects SET status = 'processing', updated_at = now() WHERE job_id = '{j3}';",
        j1 = job(1),
        j3 = job(3),
    ))
    .await;
}

macro_rules! stops {
    ($run:ident: $($name:ident => $stop:expr),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                $run($stop).await;
            }
        )*
    };
}

stops! { up_stopped:
    up_stopped_creating_the_log => Stop::Created("public.job_progress_deltas"),
    up_stopped_indexing_the_log => Stop::Created("public.job_progress_deltas_job_id"),
    up_stopped_creating_the_counts => Stop::Created("public.job_progress_counts"),
    up_stopped_creating_the_insert_capture_function => Stop::Created("public.job_progress_capture_insert()"),
    up_stopped_creating_the_delete_capture_function => Stop::Created("public.job_progress_capture_delete()"),
    up_stopped_creating_the_update_capture_function => Stop::Created("public.job_progress_capture_update()"),
    up_stopped_creating_the_truncate_capture_function => Stop::Created("public.job_progress_capture_truncate()"),
    up_stopped_creating_the_insert_trigger => Stop::Created("job_progress_capture_insert on public.job_objects"),
    up_stopped_creating_the_update_trigger => Stop::Created("job_progress_capture_update on public.job_objects"),
    up_stopped_creating_the_delete_trigger => Stop::Created("job_progress_capture_delete on public.job_objects"),
    up_stopped_creating_the_truncate_trigger => Stop::Created("job_progress_capture_truncate on public.job_objects"),
    up_stopped_creating_the_backfill => Stop::Created("public.job_progress_backfill()"),
    up_stopped_in_the_backfill => Stop::MidBackfill,
    up_stopped_dropping_the_backfill => Stop::Dropped("public.job_progress_backfill()"),
    up_stopped_at_the_swap => Stop::Lock(READER_OF_JOB_PROGRESS),
}

stops! { down_stopped:
    down_stopped_building_the_matview => Stop::Created("public.job_progress_002"),
    down_stopped_indexing_the_matview => Stop::Created("public.job_progress_002_job_id_key"),
    down_stopped_at_the_swap => Stop::Lock(READER_OF_JOB_PROGRESS),
    down_stopped_stopping_the_capture => Stop::Lock("SELECT count(*) FROM job_progress_counts"),
    down_stopped_dropping_a_capture_function => Stop::Dropped("public.job_progress_capture_insert()"),
}

/// Issue 20, item 1: 003's up script stopped at its swap leaves the capture triggers; the history
/// says `applying`, `status` and `verify` show it, and `rollback` undoes it: nothing of 003 is left
/// and job_progress is exact at 002.
#[tokio::test]
async fn a_partly_applied_003_is_shown_and_rolled_back() {
    let db = TestDb::new().await;
    let run = migrator(&db.url, &["migrate", "--target", &v_matview().to_string()]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    let at_002 = db.fingerprint().await;
    seed(&db).await;
    refresh(&db).await;
    let message = stopped_run(&db, &Stop::Lock(READER_OF_JOB_PROGRESS), &["migrate"]).await;
    assert!(message.contains("state applying"), "{message}");
    assert_eq!(
        db.scalar::<i64>(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'job_objects'::regclass AND NOT tgisinternal"
        )
        .await,
        4,
        "stopped after the capture triggers were made"
    );

    let status = migrator(&db.url, &["status"]).await;
    let row = status.json["history"].as_array().unwrap().iter().find(|r| r["version"] == v_incremental()).cloned();
    assert_eq!(row.as_ref().and_then(|r| r["state"].as_str()), Some("applying"), "{:#}", status.json);
    assert!(status.versions("pending").contains(&v_incremental()), "{:#}", status.json);
    let verify = migrator(&db.url, &["verify"]).await;
    assert_ne!(verify.code, 0, "{:#}", verify.json);
    assert!(verify.error_message().contains("part-way through being applied"), "{}", verify.error_message());

    write_meanwhile(&db).await;
    let run = migrator(&db.url, &["rollback", "--target", &v_matview().to_string()]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(run.versions("rolled_back"), vec![v_incremental()]);
    assert_eq!(db.fingerprint().await, at_002, "the rollback leaves exactly 002's schema (no triggers, no log)");
    assert_eq!(db.history().await, (0..=v_matview()).collect::<Vec<_>>());
    write_meanwhile_again(&db).await;
    refresh(&db).await;
    assert_exact(&db, "at 002 after rolling back the partly applied 003").await;
    let verify = migrator(&db.url, &["verify"]).await;
    assert_eq!((verify.code, verify.status()), (0, "verified"), "{:#}", verify.json);
}

/// `verify --data` compares job_progress with a direct count and names each job that differs,
/// with the expected and found value of each column; plain `verify` reads no data.
#[tokio::test]
async fn verify_data_names_a_job_whose_counts_were_forged() {
    let db = TestDb::new().await;
    let run = migrator(&db.url, &["migrate"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    seed(&db).await;
    refresh(&db).await;
    let run = migrator(&db.url, &["verify", "--data"]).await;
    assert_eq!((run.code, run.status()), (0, "verified"), "{:#}", run.json);
    assert_eq!(run.json["verification"]["data_jobs_checked"], 3, "{:#}", run.json);

    let forged = job(2);
    db.exec(&format!(
        "UPDATE job_progress_counts SET total_objects = total_objects + 5, failed_count = failed_count + 5
          WHERE job_id = '{forged}'"
    ))
    .await;
    let run = migrator(&db.url, &["verify"]).await;
    assert_eq!((run.code, run.status()), (0, "verified"), "plain verify reads no data: {:#}", run.json);
    let run = migrator(&db.url, &["verify", "--data"]).await;
    assert_eq!((run.code, run.error_type()), (1, "VerifyFailed"), "{:#}", run.json);
    let message = run.error_message();
    assert!(
        message.contains(&format!(
            "job {forged} differs from a direct count: total_objects expected 10, found 15; failed_count expected 2, \
             found 7"
        )),
        "{message}"
    );
    assert!(!message.contains(&job(1)) && !message.contains(&job(3)), "only the forged job is named: {message}");
    assert!(message.contains("rollback"), "says how to rebuild: {message}");
    let run = migrator(&db.url, &["status", "--data"]).await;
    assert_eq!(run.code, 2, "--data is verify's alone: {:#}", run.json);
}

/// Issue 20, item 4: adoption's swap stopped by a reader of the old job_progress removes the
/// populated `job_progress__scm_new` and its index, and says it was a lock timeout (SQLSTATE
/// 55P03); the next migrate converges it.
#[tokio::test]
async fn a_failed_adoption_swap_removes_what_it_built_and_says_lock_timeout() {
    use crate::adoption::{OLD_002_VIEW, OLD_TABLES};
    let db = TestDb::new().await;
    db.exec(OLD_TABLES).await;
    db.exec(OLD_002_VIEW).await;
    let dir = crate::support::seed_migrations(2);
    let d = dir.path().to_str().unwrap();
    let leftovers = "SELECT count(*) FROM pg_class WHERE relname LIKE '%scm_new' OR relname LIKE '%scm_old'";
    // 001 alters jobs, which the reader of the old view would hold too.
    let run = migrator(&db.url, &["--migrations-dir", d, "migrate", "--target", "1"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);

    let reader = hold(&db, READER_OF_JOB_PROGRESS).await;
    let args: Vec<&str> = ["--migrations-dir", d, "migrate"].iter().chain(STOP_AT_ONCE).copied().collect();
    let run = migrator(&db.url, &args).await;
    release(reader).await;
    assert_ne!(run.code, 0, "{:#}", run.json);
    let message = run.error_message();
    assert!(message.contains("swapping job_progress"), "{message}");
    assert!(message.contains("SQLSTATE 55P03") && message.contains("lock_timeout"), "{message}");
    assert!(message.contains("canceling statement due to lock timeout"), "{message}");
    assert!(!message.contains("unexpected or invalid data"), "{message}");
    assert!(message.contains("what it built was removed"), "{message}");
    assert_eq!(db.scalar::<i64>(leftovers).await, 0, "nothing of the failed swap is left");

    let run = migrator(&db.url, &["--migrations-dir", d, "migrate"]).await;
    assert_eq!((run.code, run.status()), (0, "applied"), "{:#}", run.json);
    assert_eq!(db.scalar::<String>("SELECT relkind::text FROM pg_class WHERE relname = 'job_progress'").await, "m");
    assert_eq!(db.scalar::<i64>(leftovers).await, 0);
}
