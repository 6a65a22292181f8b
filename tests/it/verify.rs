//! Derived verification on real PostgreSQL: the live catalog against what the migrations
//! produce, with named differences; migrations that reshape earlier ones verify cleanly.

use crate::support::{all_versions, cli::migrator, pg::TestDb, seed_migrations};

#[tokio::test]
async fn an_index_of_the_right_name_on_the_wrong_columns_is_named_with_both_shapes() {
    let db = TestDb::new().await;
    assert_eq!(migrator(&db.url, &["migrate"]).await.code, 0);
    db.exec("DROP INDEX idx_job_objects_job_status; CREATE INDEX idx_job_objects_job_status ON job_objects (status);")
        .await;
    let run = migrator(&db.url, &["verify"]).await;
    assert_eq!(run.code, 1);
    assert_eq!(run.error_type(), "VerifyFailed");
    assert!(
        run.error_message().contains("index idx_job_objects_job_status: expected (job_id, status), found (status)"),
        "{}",
        run.error_message()
    );
    // migrate refuses to call such a schema current, too.
    assert_eq!(migrator(&db.url, &["migrate"]).await.error_type(), "VerifyFailed");
}

#[tokio::test]
async fn a_view_with_the_right_columns_and_another_definition_fails_and_user_objects_are_never_reported() {
    let db = TestDb::new().await;
    assert_eq!(migrator(&db.url, &["migrate"]).await.code, 0);
    // The user's own objects, next to ours and on our tables.
    db.exec(
        "CREATE TABLE my_audit (id bigint PRIMARY KEY, note text);
         CREATE INDEX my_jobs_created ON jobs (created_at);
         CREATE VIEW my_dashboard AS SELECT job_id, bucket FROM jobs;
         CREATE FUNCTION my_helper() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;
         CREATE TRIGGER my_audit_trigger BEFORE UPDATE ON my_audit FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger();",
    )
    .await;
    let ok = migrator(&db.url, &["verify"]).await;
    assert_eq!(ok.code, 0, "{:#}", ok.json);
    assert_eq!(ok.json["verification"]["ok"], true);
    let text = ok.json.to_string();
    for mine in ["my_audit", "my_jobs_created", "my_dashboard", "my_helper"] {
        assert!(!text.contains(mine), "{mine} is the user's and never reported: {text}");
    }

    // Same columns, same types, another meaning: jobs with one object left count as done.
    let def: String = db.scalar("SELECT pg_get_viewdef('active_jobs_progress')").await;
    assert!(def.contains("> 0"), "{def}");
    db.exec(&format!("CREATE OR REPLACE VIEW active_jobs_progress AS {}", def.replace("> 0", "> 1"))).await;
    let run = migrator(&db.url, &["verify"]).await;
    assert_eq!(run.error_type(), "VerifyFailed");
    assert!(
        run.error_message().contains("view active_jobs_progress: definition differs from the migrations'")
            && run.error_message().contains("> 0")
            && run.error_message().contains("> 1"),
        "{}",
        run.error_message()
    );
}

#[tokio::test]
async fn an_invalid_index_and_a_missing_column_are_failures() {
    let db = TestDb::new().await;
    assert_eq!(migrator(&db.url, &["migrate"]).await.code, 0);
    db.exec_super("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'idx_jobs_execution_arn'::regclass").await;
    let run = migrator(&db.url, &["verify"]).await;
    assert!(run.error_message().contains("index idx_jobs_execution_arn: is INVALID"), "{}", run.error_message());
}

/// A later migration that replaces an index of 002 and turns its materialized view into a table:
/// today's hand-written checks could never have accepted it.
const RESHAPE_INDEX: &str = "-- Migration: 900_reshape_index
-- migrate:no-transaction
DROP INDEX CONCURRENTLY IF EXISTS idx_job_objects_job_updated_at;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_job_objects_job_updated_at ON job_objects (job_id, updated_at DESC);
";
const RESHAPE_INDEX_DOWN: &str = "-- migrate:no-transaction
DROP INDEX CONCURRENTLY IF EXISTS idx_job_objects_job_updated_at;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_job_objects_job_updated_at ON job_objects (job_id, updated_at);
";
const PROGRESS_TABLE: &str = "-- Migration: 901_job_progress_table
DROP VIEW active_jobs_progress;
DROP VIEW job_statistics;
DROP FUNCTION refresh_job_progress();
DROP MATERIALIZED VIEW job_progress;
CREATE TABLE job_progress (
    job_id        uuid PRIMARY KEY REFERENCES jobs (job_id) ON DELETE CASCADE,
    total_objects bigint NOT NULL DEFAULT 0,
    refreshed_at  timestamptz
);
CREATE VIEW active_jobs_progress AS SELECT job_id, total_objects FROM job_progress WHERE total_objects > 0;
CREATE FUNCTION refresh_job_progress() RETURNS void LANGUAGE sql AS $$
    INSERT INTO job_progress (job_id, total_objects, refreshed_at)
    SELECT j.job_id, count(o.key), now() FROM jobs AS j LEFT JOIN job_objects AS o USING (job_id) GROUP BY j.job_id
    ON CONFLICT (job_id) DO UPDATE SET total_objects = EXCLUDED.total_objects, refreshed_at = EXCLUDED.refreshed_at
$$;
";

#[tokio::test]
async fn a_migration_that_replaces_and_drops_objects_of_002_migrates_and_verifies_cleanly() {
    let db = TestDb::new().await;
    let dir = seed_migrations(2);
    let d = dir.path().to_str().unwrap();
    assert_eq!(migrator(&db.url, &["--migrations-dir", d, "migrate"]).await.code, 0);
    db.exec("INSERT INTO jobs (bucket) VALUES ('a'), ('b'); INSERT INTO job_objects (job_id, bucket, key) SELECT job_id, 'a', 'k' || g FROM jobs, generate_series(1, 3) g;").await;
    std::fs::write(dir.path().join("900_reshape_index.sql"), RESHAPE_INDEX).unwrap();
    std::fs::write(dir.path().join("900_reshape_index.down.sql"), RESHAPE_INDEX_DOWN).unwrap();
    std::fs::write(dir.path().join("901_job_progress_table.sql"), PROGRESS_TABLE).unwrap();

    let run = migrator(&db.url, &["--migrations-dir", d, "migrate"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(run.versions("applied"), vec![900, 901]);
    assert_eq!(run.json["verification"]["ok"], true, "{:#}", run.json);
    assert_eq!(db.scalar::<String>("SELECT relkind::text FROM pg_class WHERE relname = 'job_progress'").await, "r");
    db.exec("SELECT refresh_job_progress()").await;
    assert_eq!(db.scalar::<i64>("SELECT sum(total_objects)::int8 FROM job_progress").await, 6);
    assert_eq!(migrator(&db.url, &["--migrations-dir", d, "verify"]).await.status(), "verified");
    assert_eq!(migrator(&db.url, &["--migrations-dir", d, "migrate"]).await.status(), "up_to_date");

    // The reshaped index is checked by its new definition, not the old one.
    db.exec("DROP INDEX idx_job_objects_job_updated_at; CREATE INDEX idx_job_objects_job_updated_at ON job_objects (job_id, updated_at);").await;
    let drift = migrator(&db.url, &["--migrations-dir", d, "verify"]).await;
    assert!(
        drift.error_message().contains(
            "index idx_job_objects_job_updated_at: expected (job_id, updated_at DESC), found (job_id, updated_at)"
        ),
        "{}",
        drift.error_message()
    );
}

#[tokio::test]
async fn a_down_script_that_stops_part_way_is_recorded_and_the_next_migrate_reapplies_it() {
    let db = TestDb::new().await;
    let dir = seed_migrations(2);
    let d = dir.path().to_str().unwrap();
    std::fs::write(dir.path().join("900_reshape_index.sql"), RESHAPE_INDEX).unwrap();
    // Drops the index, then fails: half of the rollback happened.
    std::fs::write(
        dir.path().join("900_reshape_index.down.sql"),
        "-- migrate:no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS idx_job_objects_job_updated_at;\nSELECT no_such_function();\n",
    )
    .unwrap();
    assert_eq!(migrator(&db.url, &["--migrations-dir", d, "migrate"]).await.code, 0);
    let run = migrator(&db.url, &["--migrations-dir", d, "rollback", "--to", "2"]).await;
    assert_eq!(run.error_type(), "MigrationFailed");
    assert!(
        run.error_message().contains("900_reshape_index as partly rolled back")
            && run.error_message().contains("`migrate` re-applies it"),
        "{}",
        run.error_message()
    );
    let status = migrator(&db.url, &["--migrations-dir", d, "status"]).await;
    assert_eq!(status.status(), "pending", "{:#}", status.json);
    assert_eq!(status.versions("pending"), vec![900]);
    let last = status.json["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["version"].as_i64(), last["state"].as_str()), (Some(900), Some("rolling_back")));
    assert!(
        migrator(&db.url, &["--migrations-dir", d, "verify"])
            .await
            .error_message()
            .contains("a rollback stopped part-way")
    );

    let again = migrator(&db.url, &["--migrations-dir", d, "migrate"]).await;
    assert_eq!(again.code, 0, "{:#}", again.json);
    assert_eq!(again.versions("applied"), vec![900]);
    assert_eq!(again.json["verification"]["ok"], true);
    assert!(db.scalar::<bool>("SELECT to_regclass('idx_job_objects_job_updated_at') IS NOT NULL").await);
}

#[tokio::test]
async fn a_users_view_on_job_progress_stops_the_rollback_before_anything_is_dropped() {
    let db = TestDb::new().await;
    let dir = seed_migrations(2);
    let d = dir.path().to_str().unwrap();
    assert_eq!(migrator(&db.url, &["--migrations-dir", d, "migrate"]).await.code, 0);
    db.exec("CREATE VIEW my_dashboard AS SELECT job_id, total_objects FROM job_progress").await;
    let before = db.fingerprint().await;
    let run = migrator(&db.url, &["--migrations-dir", d, "rollback", "--to", "1"]).await;
    assert_eq!(run.error_type(), "MigrationFailed");
    let msg = run.error_message();
    assert!(msg.contains("SQLSTATE 2BP01") && msg.contains("my_dashboard depends on job_progress"), "{msg}");
    assert_eq!(db.fingerprint().await, before, "nothing was dropped, the user's view least of all");
    db.exec("DROP VIEW my_dashboard").await;
    assert_eq!(migrator(&db.url, &["--migrations-dir", d, "rollback", "--to", "1"]).await.status(), "rolled_back");
    assert_eq!(db.history().await, vec![0, 1]);
    assert!(all_versions().contains(&2));
}
