//! Cost that does not grow with history (issue 19): one replay per run gives the same result as
//! one migration per run; a no-op `migrate` compares the live schema with the expectation kept
//! by an earlier run, for exactly the same key; `verify` always derives afresh.

use std::time::Instant;

use crate::support::{all_versions, cli::migrator, migrations_copy, pg::TestDb, synthetic};

/// The embedded migrations plus `count` synthetic ones numbered after the newest embedded one.
fn with_synthetic(count: usize) -> (tempfile::TempDir, Vec<i64>) {
    let dir = migrations_copy();
    let first = all_versions().last().unwrap() + 1;
    let versions = synthetic::write(dir.path(), first, count);
    (dir, versions)
}

fn expectation(run: &crate::support::cli::Run) -> &str {
    run.json["verification"]["expectation"].as_str().unwrap_or("")
}

#[tokio::test]
async fn one_hundred_fifty_migrations_in_one_run_match_one_target_at_a_time() {
    let (dir, synth) = with_synthetic(150);
    let d = dir.path().to_str().unwrap();
    let all: Vec<i64> = all_versions().into_iter().chain(synth.iter().copied()).collect();

    let one = TestDb::new().await;
    let started = Instant::now();
    let run = migrator(&one.url, &["--migrations-dir", d, "migrate"]).await;
    let one_run = started.elapsed();
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(run.versions("applied"), all);
    assert_eq!(run.json["verification"]["ok"], true, "{:#}", run.json);
    assert_eq!(expectation(&run), "derived");

    let each = TestDb::new().await;
    let started = Instant::now();
    for v in &all {
        let run = migrator(&each.url, &["--migrations-dir", d, "migrate", "--target", &v.to_string()]).await;
        assert_eq!(run.code, 0, "--target {v}: {:#}", run.json);
        assert_eq!(run.versions("applied"), vec![*v], "--target {v}");
        assert_eq!(run.json["verification"]["ok"], true, "--target {v}: {:#}", run.json);
    }
    eprintln!("{} migrations: one run {:?}, one --target at a time {:?}", all.len(), one_run, started.elapsed());

    assert_eq!(one.history().await, all);
    assert_eq!(each.history().await, all);
    let checksums = "SELECT string_agg(version || ' ' || checksum, ',' ORDER BY version) FROM scanner_migrator_history";
    assert_eq!(one.scalar::<String>(checksums).await, each.scalar::<String>(checksums).await);
    let fingerprint = one.fingerprint().await;
    assert!(fingerprint.contains(&format!("idx_synth_{}_job", synth.last().unwrap())), "{fingerprint}");
    assert_eq!(fingerprint, each.fingerprint().await);
    let (a, b) = (
        migrator(&one.url, &["--migrations-dir", d, "verify"]).await,
        migrator(&each.url, &["--migrations-dir", d, "verify"]).await,
    );
    assert_eq!(a.code, 0, "{:#}", a.json);
    assert_eq!(a.json["verification"], b.json["verification"]);
    // Each synthetic migration makes a table, its primary key, an index and a view.
    let checked = a.json["verification"]["objects_checked"].as_u64().unwrap();
    assert!(checked >= 4 * 150, "{checked}");
}

#[tokio::test]
async fn a_no_op_uses_the_cached_expectation_until_its_key_changes() {
    let (dir, synth) = with_synthetic(5);
    let d = dir.path().to_str().unwrap();
    let db = TestDb::new().await;
    let first = migrator(&db.url, &["--migrations-dir", d, "migrate"]).await;
    assert_eq!((first.code, expectation(&first)), (0, "derived"), "{:#}", first.json);
    let noop = migrator(&db.url, &["--migrations-dir", d, "migrate"]).await;
    assert_eq!((noop.status(), expectation(&noop)), ("up_to_date", "cached"), "{:#}", noop.json);
    assert_eq!(noop.json["verification"]["ok"], true);
    assert_eq!(noop.json["verification"]["objects_checked"], first.json["verification"]["objects_checked"]);

    // A new migration: applied, derived; the next no-op uses the new expectation, which has its objects.
    let next = synthetic::write(dir.path(), synth.last().unwrap() + 1, 1)[0];
    let run = migrator(&db.url, &["--migrations-dir", d, "migrate"]).await;
    assert_eq!((run.versions("applied"), expectation(&run)), (vec![next], "derived"), "{:#}", run.json);
    let noop = migrator(&db.url, &["--migrations-dir", d, "migrate"]).await;
    assert_eq!(expectation(&noop), "cached", "{:#}", noop.json);
    assert!(
        noop.json["verification"]["objects_checked"].as_u64() > first.json["verification"]["objects_checked"].as_u64()
    );

    // Another server major (as after an upgrade): derived afresh, then cached again.
    db.exec("UPDATE scanner_migrator_history_expected SET server_major = server_major - 1").await;
    let run = migrator(&db.url, &["--migrations-dir", d, "migrate"]).await;
    assert_eq!((run.code, expectation(&run)), (0, "derived"), "{:#}", run.json);
    assert_eq!(expectation(&migrator(&db.url, &["--migrations-dir", d, "migrate"]).await), "cached");

    // A changed checksum (an applied file edited and its history row repaired by hand): the cached
    // expectation would hide that the index no longer matches the file; it is derived afresh.
    let index = format!("idx_synth_{next}_job");
    let (name, sql) = synthetic::migration(next);
    let edited = sql.replace(&format!("ON synth_{next} (job_id, created_at)"), &format!("ON synth_{next} (job_id)"));
    assert_ne!(edited, sql);
    std::fs::write(dir.path().join(&name), &edited).unwrap();
    let checksum = scanner_migrator::migrations::Script::parse(&name, &edited).unwrap().checksum;
    db.exec(&format!("UPDATE scanner_migrator_history SET checksum = '{checksum}' WHERE version = {next}")).await;
    let run = migrator(&db.url, &["--migrations-dir", d, "migrate"]).await;
    assert_eq!(run.error_type(), "VerifyFailed", "{:#}", run.json);
    assert!(
        run.error_message().contains(&format!("index {index}: expected (job_id), found (job_id, created_at)")),
        "{}",
        run.error_message()
    );
    assert!(
        run.stderr.contains("expectation=\"derived\"") || run.stderr.contains("expectation=derived"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn verify_derives_afresh_so_a_tampered_cache_changes_nothing_it_reports() {
    let (dir, synth) = with_synthetic(3);
    let d = dir.path().to_str().unwrap();
    let db = TestDb::new().await;
    assert_eq!(migrator(&db.url, &["--migrations-dir", d, "migrate"]).await.code, 0);
    let honest = migrator(&db.url, &["--migrations-dir", d, "verify"]).await;
    assert_eq!((honest.code, expectation(&honest)), (0, "derived"), "{:#}", honest.json);

    // Someone rewrites the cached expectation: the no-op migrate trusts it (and says so), verify does not.
    let v = synth[1];
    db.exec(&format!(
        "UPDATE scanner_migrator_history_expected
            SET catalog = jsonb_set(catalog::jsonb, '{{objects,relation idx_synth_{v}_job,Index,using}}', '\"btree (note)\"')::json"
    ))
    .await;
    let noop = migrator(&db.url, &["--migrations-dir", d, "migrate"]).await;
    assert_eq!(noop.error_type(), "VerifyFailed", "{:#}", noop.json);
    assert!(
        noop.error_message().contains(&format!("index idx_synth_{v}_job: expected (note)")),
        "{}",
        noop.error_message()
    );
    let after = migrator(&db.url, &["--migrations-dir", d, "verify"]).await;
    assert_eq!(after.code, 0, "{:#}", after.json);
    assert_eq!(after.json["verification"], honest.json["verification"]);
}

#[tokio::test]
async fn an_index_redefined_by_hand_after_the_cache_was_written_is_named_by_migrate_and_verify() {
    let (dir, synth) = with_synthetic(3);
    let d = dir.path().to_str().unwrap();
    let db = TestDb::new().await;
    assert_eq!(migrator(&db.url, &["--migrations-dir", d, "migrate"]).await.code, 0);
    assert_eq!(expectation(&migrator(&db.url, &["--migrations-dir", d, "migrate"]).await), "cached");
    let v = synth[0];
    db.exec(&format!("DROP INDEX idx_synth_{v}_job; CREATE INDEX idx_synth_{v}_job ON synth_{v} (note)")).await;
    let problem = format!("index idx_synth_{v}_job: expected (job_id, created_at), found (note)");
    let noop = migrator(&db.url, &["--migrations-dir", d, "migrate"]).await;
    assert_eq!(noop.error_type(), "VerifyFailed", "{:#}", noop.json);
    assert!(noop.error_message().contains(&problem), "{}", noop.error_message());
    assert!(noop.stderr.contains("cached"), "the no-op compared with the cached expectation: {}", noop.stderr);
    let verify = migrator(&db.url, &["--migrations-dir", d, "verify"]).await;
    assert_eq!(verify.error_type(), "VerifyFailed", "{:#}", verify.json);
    assert!(verify.error_message().contains(&problem), "{}", verify.error_message());
}

fn comparison(run: &crate::support::cli::Run) -> &str {
    run.json["verification"]["comparison"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_no_op_skips_the_comparison_only_while_the_catalog_is_unchanged() {
    let (dir, synth) = with_synthetic(3);
    let d = dir.path().to_str().unwrap();
    let db = TestDb::new().await;
    let args = ["--migrations-dir", d, "migrate"];
    let migrate = || migrator(&db.url, &args);
    let first = migrate().await;
    assert_eq!((first.code, comparison(&first)), (0, "deep"), "{:#}", first.json);
    // The first migrate's last step grants the refresh role what it needs, after verification: a
    // catalog change, so the next no-op compares once more and records; from then on nothing changes.
    let settle = migrate().await;
    assert_eq!(settle.code, 0, "{:#}", settle.json);
    let noop = migrate().await;
    assert_eq!((expectation(&noop), comparison(&noop)), ("cached", "unchanged"), "{:#}", noop.json);
    assert_eq!(noop.json["verification"]["objects_checked"], first.json["verification"]["objects_checked"]);
    let verify = migrator(&db.url, &["--migrations-dir", d, "verify"]).await;
    assert_eq!(
        (expectation(&verify), comparison(&verify)),
        ("derived", "deep"),
        "verify never skips: {:#}",
        verify.json
    );

    // Rows written, statistics gathered: the catalog's definitions are the same, so is the result.
    let v = synth[0];
    db.exec("INSERT INTO jobs (bucket, prefix) VALUES ('b', 'p')").await;
    db.exec(&format!("INSERT INTO synth_{v} (job_id) SELECT job_id FROM jobs; ANALYZE synth_{v}")).await;
    db.exec(&format!("VACUUM synth_{v}")).await;
    assert_eq!(comparison(&migrate().await), "unchanged");

    // An object of the user's own: compared again (and accepted), then unchanged again.
    db.exec(&format!("CREATE INDEX mine ON synth_{v} (note)")).await;
    let run = migrate().await;
    assert_eq!((run.code, comparison(&run)), (0, "deep"), "{:#}", run.json);
    assert_eq!(comparison(&migrate().await), "unchanged");

    // A view redefined by hand changes only its rewrite rule; a column renamed only its attribute row.
    // Each is found by the no-op, as by verify.
    db.exec(&format!(
        "CREATE OR REPLACE VIEW synth_{v}_per_job AS
             SELECT job_id, count(*) AS entries, min(created_at) AS last_at FROM synth_{v} GROUP BY job_id"
    ))
    .await;
    let run = migrate().await;
    assert_eq!(run.error_type(), "VerifyFailed", "{:#}", run.json);
    assert!(
        run.error_message().contains(&format!("view synth_{v}_per_job: definition differs")),
        "{}",
        run.error_message()
    );
    db.exec(&format!(
        "CREATE OR REPLACE VIEW synth_{v}_per_job AS
             SELECT job_id, count(*) AS entries, max(created_at) AS last_at FROM synth_{v} GROUP BY job_id"
    ))
    .await;
    let run = migrate().await;
    assert_eq!((run.code, comparison(&run)), (0, "deep"), "{:#}", run.json);
    let w = synth[1];
    db.exec(&format!("ALTER TABLE synth_{w} RENAME COLUMN note TO remark")).await;
    let run = migrate().await;
    assert_eq!(run.error_type(), "VerifyFailed", "{:#}", run.json);
    assert!(
        run.error_message().contains(&format!("table synth_{w}: column note is missing")),
        "{}",
        run.error_message()
    );
    let verify = migrator(&db.url, &["--migrations-dir", d, "verify"]).await;
    assert_eq!(verify.error_type(), "VerifyFailed", "{:#}", verify.json);
}

#[tokio::test]
async fn the_catalog_stamp_changes_with_every_definition_and_not_with_data() {
    let (dir, synth) = with_synthetic(1);
    let db = TestDb::new().await;
    let run = migrator(&db.url, &["--migrations-dir", dir.path().to_str().unwrap(), "migrate"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    let v = synth[0];
    let mut conn = db.conn().await;
    let mut stamp = scanner_migrator::db::catalog_stamp(&mut conn).await.unwrap();
    for (sql, changes) in [
        ("INSERT INTO jobs (bucket, prefix) VALUES ('b', 'p')".to_string(), false),
        (format!("INSERT INTO synth_{v} (job_id, note) SELECT job_id, 'n' FROM jobs"), false),
        (format!("ANALYZE synth_{v}"), false),
        (format!("VACUUM synth_{v}"), false),
        ("CREATE TEMP TABLE scratch (a int)".to_string(), false),
        (format!("ALTER TABLE synth_{v} ALTER COLUMN note SET DEFAULT 'x'"), true),
        (format!("ALTER TABLE synth_{v} ALTER COLUMN note SET NOT NULL"), true),
        (format!("ALTER TABLE synth_{v} RENAME COLUMN note TO remark"), true),
        (format!("ALTER TABLE synth_{v} ALTER COLUMN remark TYPE varchar(20)"), true),
        (
            format!(
                "CREATE OR REPLACE VIEW synth_{v}_per_job AS SELECT job_id, 0::bigint AS entries, now() AS last_at FROM synth_{v}"
            ),
            true,
        ),
        (format!("ALTER TABLE synth_{v} ADD CONSTRAINT short CHECK (length(remark) < 10) NOT VALID"), true),
        (format!("ALTER TABLE synth_{v} VALIDATE CONSTRAINT short"), true),
        (format!("CREATE INDEX CONCURRENTLY mine ON synth_{v} (remark)"), true),
        ("DROP INDEX mine".to_string(), true),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'".to_string(), true),
        ("CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 2'".to_string(), true),
        ("ALTER FUNCTION f() SET search_path = pg_catalog".to_string(), true),
        ("CREATE FUNCTION g() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'".to_string(), true),
        (format!("CREATE TRIGGER t BEFORE UPDATE ON synth_{v} FOR EACH ROW EXECUTE FUNCTION g()"), true),
        ("CREATE SCHEMA other; CREATE TYPE other.mood AS ENUM ('ok')".to_string(), true),
        ("ALTER TYPE other.mood RENAME TO feeling".to_string(), true),
    ] {
        db.exec(&sql).await;
        let now = scanner_migrator::db::catalog_stamp(&mut conn).await.unwrap();
        assert_eq!(now != stamp, changes, "{sql}: the stamp {}", if changes { "did not change" } else { "changed" });
        stamp = now;
    }
}
