//! Databases that `migrate_database.sh` migrated, each in a plausible shape of its own: adopted
//! as they are, or converged online to the migrations' shape; data columns never rewritten.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use serde_json::Value;
use sqlx::Executor;

use crate::support::{all_versions, cli::migrator, pg::TestDb, seed_migrations};

/// The base tables as `init_database.sh` made them, with `execution_arn` as the old 001 made it.
pub const OLD_TABLES: &str = "
CREATE TABLE jobs (
    job_id     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    bucket     text NOT NULL,
    prefix     text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE job_objects (
    job_id     uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    bucket     text NOT NULL,
    key        text NOT NULL,
    etag       text,
    size_bytes bigint CHECK (size_bytes >= 0),
    status     text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'processing', 'succeeded', 'failed')),
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, bucket, key)
);
ALTER TABLE jobs ADD COLUMN execution_arn VARCHAR(2048);
CREATE INDEX idx_jobs_execution_arn ON jobs (execution_arn);
INSERT INTO jobs (bucket, execution_arn) SELECT 'b' || g, 'arn:' || g FROM generate_series(1, 3) g;
INSERT INTO job_objects (job_id, bucket, key, status)
     SELECT job_id, bucket, 'k' || g, (ARRAY['queued', 'processing', 'succeeded', 'failed'])[1 + g % 4]
       FROM jobs, generate_series(1, 40) g;
";

/// The old script's 002: an index on other columns, a job_progress with only the counts, helper
/// views with other columns, a unique index of another name, a grant to the status API's role,
/// and a view of the user's over job_progress.
const OLD_002_MATVIEW: &str = "
CREATE INDEX idx_job_objects_job_status ON job_objects (status);
CREATE INDEX idx_job_objects_job_updated_at ON job_objects (job_id, updated_at);
CREATE MATERIALIZED VIEW job_progress AS
    SELECT job_id, count(*) AS total_objects,
           count(*) FILTER (WHERE status = 'queued') AS queued_count,
           count(*) FILTER (WHERE status = 'succeeded') AS succeeded_count
      FROM job_objects GROUP BY job_id;
CREATE UNIQUE INDEX idx_job_progress_job_id ON job_progress (job_id);
CREATE VIEW active_jobs_progress AS SELECT job_id, total_objects, queued_count FROM job_progress WHERE queued_count > 0;
CREATE VIEW job_statistics AS SELECT count(*) AS jobs, sum(total_objects) AS objects FROM job_progress;
CREATE FUNCTION refresh_job_progress() RETURNS void LANGUAGE sql AS $$ REFRESH MATERIALIZED VIEW job_progress $$;
DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'status_api') THEN CREATE ROLE status_api; END IF; END $$;
GRANT SELECT ON job_progress TO status_api;
CREATE VIEW my_dashboard AS SELECT job_id, total_objects FROM job_progress WHERE total_objects > 10;
CREATE TABLE my_notes (job_id uuid, note text);
";

/// Another old 002: job_progress as a plain view counting live, a no-op refresh function, no
/// indexes at all.
pub const OLD_002_VIEW: &str = "
CREATE VIEW job_progress AS
    SELECT j.job_id, j.bucket, count(o.key) AS total_objects
      FROM jobs AS j LEFT JOIN job_objects AS o USING (job_id) GROUP BY j.job_id, j.bucket;
CREATE FUNCTION refresh_job_progress() RETURNS void LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;
";

fn adoption<'a>(run: &'a Value, object: &str) -> Option<&'a Value> {
    run["adoption"].as_array()?.iter().find(|a| a["object"] == object)
}

/// Reads job_progress in a loop while `f` runs: it must never be missing or empty.
async fn while_reading<T>(db: &TestDb, f: impl std::future::Future<Output = T>) -> (T, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut reader = db.conn().await;
    reader.execute("SET statement_timeout = '20s'").await.unwrap();
    let flag = stop.clone();
    let reads = tokio::spawn(async move {
        let mut n = 0;
        while !flag.load(Ordering::SeqCst) {
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM job_progress")
                .fetch_one(&mut reader)
                .await
                .unwrap_or_else(|e| panic!("the status API's read failed during the migration: {e}"));
            assert!(rows >= 3, "job_progress was empty during the migration ({rows} rows)");
            n += 1;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        n
    });
    let out = f.await;
    stop.store(true, Ordering::SeqCst);
    (out, reads.await.unwrap())
}

#[tokio::test]
async fn an_old_materialized_view_shape_is_converged_online_and_the_users_objects_survive() {
    let db = TestDb::new().await;
    db.exec(OLD_TABLES).await;
    db.exec(OLD_002_MATVIEW).await;
    let dir = seed_migrations(2);
    let d = dir.path().to_str().unwrap();

    let (run, reads) = while_reading(&db, migrator(&db.url, &["--migrations-dir", d, "migrate"])).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert!(reads > 0, "the reader ran during the migration");
    assert_eq!(run.versions("applied"), vec![0, 1, 2], "history recorded for every version");
    // What was already right is adopted as it is.
    for object in
        ["table jobs", "table job_objects", "index idx_jobs_execution_arn", "index idx_job_objects_job_updated_at"]
    {
        assert_eq!(
            adoption(&run.json, object).map(|a| &a["action"]),
            Some(&Value::from("adopted")),
            "{object}: {:#}",
            run.json
        );
    }
    // What was not is converged, and the result says how it differed.
    let index = adoption(&run.json, "index idx_job_objects_job_status").expect("the index is listed");
    assert_eq!(index["action"], "converged");
    assert_eq!(index["was"], "expected (job_id, status), found (status)");
    let jp = adoption(&run.json, "materialized view job_progress").expect("job_progress is listed");
    assert_eq!(jp["action"], "converged");
    assert!(jp["was"].as_str().unwrap().contains("expected columns (job_id, bucket, prefix, execution_arn"), "{jp}");
    assert_eq!(adoption(&run.json, "function refresh_job_progress()").unwrap()["action"], "converged");

    // Verified, with the data column's other type accepted and reported, and never rewritten.
    assert_eq!(run.json["verification"]["ok"], true, "{:#}", run.json);
    let accepted = run.json["verification"]["accepted"].to_string();
    assert!(
        accepted.contains("column execution_arn is character varying(2048) where the migrations make text"),
        "{accepted}"
    );
    assert_eq!(
        db.scalar::<String>("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'jobs'::regclass AND attname = 'execution_arn'").await,
        "character varying(2048)"
    );
    // The new job_progress: our shape, populated, indexed, still granted to the status API.
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM job_progress WHERE bucket LIKE 'b%' AND total_objects = 40").await,
        3
    );
    assert!(db.scalar::<bool>("SELECT has_table_privilege('status_api', 'job_progress', 'SELECT')").await);
    assert!(db.scalar::<bool>("SELECT to_regclass('job_progress_job_id_key') IS NOT NULL").await);
    assert!(
        !db.scalar::<bool>("SELECT to_regclass('idx_job_progress_job_id') IS NOT NULL").await,
        "the old view's index went with it"
    );
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM pg_class WHERE relname LIKE '%scm_new' OR relname LIKE '%scm_old'")
            .await,
        0
    );
    // The user's view over it was recreated, and the user's table untouched and unreported.
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM my_dashboard").await, 3);
    assert!(!run.json.to_string().contains("my_notes") && !run.json.to_string().contains("my_dashboard"));
    db.exec("SELECT refresh_job_progress()").await;

    let again = migrator(&db.url, &["--migrations-dir", d, "migrate"]).await;
    assert_eq!(again.status(), "up_to_date", "{:#}", again.json);
    assert_eq!(db.advisory_locks().await, 0);
}

#[tokio::test]
async fn an_old_plain_view_job_progress_without_indexes_becomes_the_materialized_view() {
    let db = TestDb::new().await;
    db.exec(OLD_TABLES).await;
    db.exec(OLD_002_VIEW).await;
    let dir = seed_migrations(2);
    let d = dir.path().to_str().unwrap();
    let (run, _) = while_reading(&db, migrator(&db.url, &["--migrations-dir", d, "migrate"])).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    let jp = adoption(&run.json, "materialized view job_progress").expect("listed");
    assert_eq!(jp["was"], "expected a materialized view, found a view");
    assert_eq!(db.scalar::<String>("SELECT relkind::text FROM pg_class WHERE relname = 'job_progress'").await, "m");
    assert!(
        db.scalar::<bool>("SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_job_objects_job_status'::regclass")
            .await
    );
    assert_eq!(run.json["verification"]["ok"], true);
    db.exec("SELECT refresh_job_progress()").await;
    assert_eq!(db.scalar::<i64>("SELECT sum(total_objects)::int8 FROM job_progress").await, 120);
}

#[tokio::test]
async fn tables_only_from_init_database_are_adopted_and_the_whole_chain_applies() {
    let db = TestDb::new().await;
    db.exec(OLD_TABLES).await;
    let run = migrator(&db.url, &["migrate"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(run.versions("applied"), all_versions());
    assert_eq!(adoption(&run.json, "table jobs").unwrap()["action"], "adopted");
    assert_eq!(run.json["verification"]["ok"], true, "{:#}", run.json);
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM job_objects").await, 120, "no data touched");
}

#[tokio::test]
async fn a_table_where_the_migrations_make_a_view_is_never_dropped() {
    let db = TestDb::new().await;
    db.exec(OLD_TABLES).await;
    db.exec("CREATE TABLE job_progress (job_id uuid PRIMARY KEY, total_objects bigint); INSERT INTO job_progress VALUES (gen_random_uuid(), 7);").await;
    let dir = seed_migrations(2);
    let run = migrator(&db.url, &["--migrations-dir", dir.path().to_str().unwrap(), "migrate"]).await;
    assert_eq!(run.code, 1, "{:#}", run.json);
    assert_eq!(run.error_type(), "AdoptionFailed");
    assert!(
        run.error_message().contains("materialized view job_progress: a table of that name exists")
            && run.error_message().contains("never drops"),
        "{}",
        run.error_message()
    );
    assert_eq!(db.history().await, vec![0, 1], "stopped before 002 changed anything");
    assert_eq!(db.scalar::<i64>("SELECT total_objects FROM job_progress").await, 7, "the table and its data are kept");
}

#[tokio::test]
async fn a_function_returning_another_type_is_dropped_and_created_keeping_its_grants() {
    let db = TestDb::new().await;
    db.exec(OLD_TABLES).await;
    db.exec(
        "CREATE VIEW job_progress AS SELECT job_id, count(*) AS total_objects FROM job_objects GROUP BY job_id;
         CREATE FUNCTION refresh_job_progress() RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$;
         DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'status_api') THEN CREATE ROLE status_api; END IF; END $$;
         REVOKE EXECUTE ON FUNCTION refresh_job_progress() FROM PUBLIC;
         GRANT EXECUTE ON FUNCTION refresh_job_progress() TO status_api;",
    )
    .await;
    let dir = seed_migrations(2);
    let run = migrator(&db.url, &["--migrations-dir", dir.path().to_str().unwrap(), "migrate"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    let f = adoption(&run.json, "function refresh_job_progress()").expect("the function is listed");
    assert_eq!(f["action"], "converged");
    assert!(f["was"].as_str().unwrap().contains("expected to return void, found integer"), "{f}");
    assert_eq!(
        db.scalar::<String>("SELECT pg_get_function_result('refresh_job_progress()'::regprocedure)").await,
        "void"
    );
    assert!(
        db.scalar::<bool>("SELECT has_function_privilege('status_api', 'refresh_job_progress()', 'EXECUTE')").await
    );
    assert_eq!(run.json["verification"]["ok"], true, "{:#}", run.json);
}

#[tokio::test]
async fn an_index_build_cut_short_by_a_lock_timeout_is_cleaned_up_and_retried() {
    let db = TestDb::new().await;
    db.exec(OLD_TABLES).await;
    db.exec("CREATE INDEX idx_job_objects_job_status ON job_objects (status);").await;
    let dir = seed_migrations(2);
    let d = dir.path().to_str().unwrap().to_string();
    let first = migrator(&db.url, &["--migrations-dir", &d, "migrate", "--target", "1"]).await;
    assert_eq!(first.code, 0, "{:#}", first.json);
    // A writer's open transaction: CREATE INDEX CONCURRENTLY has made its (INVALID) index and
    // waits for it, until lock_timeout. The writer commits once that first attempt is cut short.
    let mut writer = db.conn().await;
    writer.execute("BEGIN; UPDATE job_objects SET status = status WHERE key = 'k1'").await.unwrap();
    let url = db.url.clone();
    let run = tokio::spawn(async move {
        migrator(&url, &["--migrations-dir", &d, "--lock-timeout-ms", "300", "--lock-retries", "20", "migrate"]).await
    });
    let leftover = "SELECT count(*) FROM pg_index WHERE NOT indisvalid AND indexrelid::regclass::text = 'idx_job_objects_job_status__scm_new'";
    let started = std::time::Instant::now();
    while db.scalar::<i64>(leftover).await == 0 {
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "the build never started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Past the first lock timeout (300 ms), then let the writer go.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    writer.execute("COMMIT").await.unwrap();
    let run = run.await.unwrap();
    assert_eq!(run.code, 0, "{:#}", run.json);
    let index = adoption(&run.json, "index idx_job_objects_job_status").expect("the index is listed");
    assert_eq!(index["action"], "converged", "{index}");
    let notes = index["cleaned_up"].to_string();
    assert!(notes.contains("idx_job_objects_job_status__scm_new") && notes.contains("INVALID"), "says so: {index}");
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM pg_index WHERE NOT indisvalid").await, 0);
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM pg_class WHERE relname LIKE '%scm_new'").await, 0);
    assert_eq!(
        db.scalar::<String>("SELECT pg_get_indexdef('idx_job_objects_job_status'::regclass)").await,
        "CREATE INDEX idx_job_objects_job_status ON public.job_objects USING btree (job_id, status)"
    );
}

#[tokio::test]
async fn converging_job_progress_keeps_column_grants_grant_options_comments_and_the_users_views_as_they_were() {
    let db = TestDb::new().await;
    db.exec(OLD_TABLES).await;
    db.exec(OLD_002_MATVIEW).await;
    let (cols, owner) = (format!("cols_{}", db.name), format!("dash_owner_{}", db.name));
    db.exec(&format!("CREATE ROLE {cols}; CREATE ROLE {owner}; GRANT {owner} TO CURRENT_USER")).await;
    // The view's owner must be able to create in the schema (PostgreSQL 15 no longer lets everyone).
    db.exec_super(&format!("GRANT CREATE ON SCHEMA public TO {owner}")).await;
    db.exec(&format!(
        "
         GRANT SELECT (job_id, total_objects) ON job_progress TO {cols} WITH GRANT OPTION;
         GRANT SELECT ON job_progress TO {owner};
         COMMENT ON MATERIALIZED VIEW job_progress IS 'read by the status API';
         COMMENT ON COLUMN job_progress.total_objects IS 'objects listed';
         ALTER VIEW my_dashboard SET (security_barrier = true);
         COMMENT ON VIEW my_dashboard IS 'big jobs';
         ALTER VIEW my_dashboard OWNER TO {owner};
         CREATE MATERIALIZED VIEW my_totals AS SELECT job_id, total_objects FROM job_progress;
         CREATE UNIQUE INDEX my_totals_job_id ON my_totals (job_id);
         GRANT SELECT ON my_totals TO {cols} WITH GRANT OPTION;"
    ))
    .await;
    let dir = seed_migrations(2);
    let run = migrator(&db.url, &["--migrations-dir", dir.path().to_str().unwrap(), "migrate"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(adoption(&run.json, "materialized view job_progress").unwrap()["action"], "converged");
    let kept: (bool, bool, bool, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT has_column_privilege($1, 'job_progress', 'total_objects', 'SELECT WITH GRANT OPTION'),
                has_column_privilege($1, 'job_progress', 'bucket', 'SELECT'),
                has_table_privilege($1, 'my_totals', 'SELECT WITH GRANT OPTION'),
                obj_description('job_progress'::regclass, 'pg_class'),
                col_description('job_progress'::regclass,
                                (SELECT attnum FROM pg_attribute WHERE attrelid = 'job_progress'::regclass
                                    AND attname = 'total_objects')::int)",
    )
    .bind(&cols)
    .fetch_one(&mut db.conn().await)
    .await
    .unwrap();
    assert_eq!(
        kept,
        (true, false, true, Some("read by the status API".into()), Some("objects listed".into())),
        "job_progress's and my_totals' grants and comments"
    );
    let dashboard: (Vec<String>, Option<String>, String) = sqlx::query_as(
        "SELECT coalesce(reloptions, '{}'), obj_description(oid, 'pg_class'), pg_get_userbyid(relowner)::text
           FROM pg_class WHERE oid = 'my_dashboard'::regclass",
    )
    .fetch_one(&mut db.conn().await)
    .await
    .unwrap();
    assert_eq!(dashboard, (vec!["security_barrier=true".to_string()], Some("big jobs".into()), owner.clone()));
    // The user's materialized view kept its unique index, so its concurrent refresh still works.
    db.exec("REFRESH MATERIALIZED VIEW CONCURRENTLY my_totals").await;
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM my_totals").await, 3);
    db.exec_super(&format!("DROP OWNED BY {cols}, {owner}; DROP ROLE {cols}; DROP ROLE {owner}")).await;
}

#[tokio::test]
async fn a_users_index_the_new_job_progress_cannot_carry_stops_adoption_before_job_progress_changes() {
    let db = TestDb::new().await;
    db.exec(OLD_TABLES).await;
    db.exec(OLD_002_MATVIEW).await;
    db.exec("CREATE INDEX my_big_jobs ON job_progress (total_objects)").await;
    let job_progress = "SELECT string_agg(x, E'\\n' ORDER BY x) FROM (
        SELECT pg_get_viewdef('job_progress'::regclass) UNION ALL
        SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'job_progress'::regclass UNION ALL
        SELECT relname::text FROM pg_class WHERE relname LIKE '%scm_new' OR relname LIKE '%scm_old') AS t(x)";
    let before: String = db.scalar(job_progress).await;
    // An object 002 makes before job_progress, in another shape: it would be converged first.
    let status_index = "SELECT pg_get_indexdef('idx_job_objects_job_status'::regclass)";
    let index_before: String = db.scalar(status_index).await;
    let dir = seed_migrations(2);
    let d = dir.path().to_str().unwrap();
    let run = migrator(&db.url, &["--migrations-dir", d, "migrate"]).await;
    assert_eq!(run.code, 1, "{:#}", run.json);
    assert_eq!(run.error_type(), "AdoptionFailed", "{:#}", run.json);
    assert!(run.error_message().contains("index my_big_jobs on job_progress"), "{}", run.error_message());
    // Refused per migration, not per object: nothing of 002 was converged, not even the objects before
    // job_progress; job_progress is untouched and nothing was built beside it.
    assert_eq!(db.scalar::<String>(status_index).await, index_before, "the index before job_progress untouched");
    assert_eq!(db.scalar::<String>(job_progress).await, before, "job_progress untouched");
    assert!(!db.history().await.contains(&2), "002 not recorded");
    db.exec("DROP INDEX my_big_jobs").await;
    let run = migrator(&db.url, &["--migrations-dir", d, "migrate"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
}
