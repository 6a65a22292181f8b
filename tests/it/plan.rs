//! `plan` (issue 18 section 1): what each pending statement will do to production, derived from
//! the scratch replay and held here to what PostgreSQL really takes: each statement is also run
//! for real on the live database in a transaction that is rolled back, and its `pg_locks` compared.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sqlx::{Connection, Executor, Row};

use crate::support::{
    all_versions,
    cli::{Run, migrator},
    migrations_copy,
    pg::TestDb,
};

/// Synthetic migrations, one statement each, so each can be compared with its real locks on the
/// live database as it stands just before it: (statement, no-transaction, expected effect).
const KINDS: &[(&str, bool, &str)] = &[
    ("ALTER TABLE jobs ADD COLUMN plain_900 text", false, "catalog"),
    ("ALTER TABLE jobs ADD COLUMN note_901 text DEFAULT 'x'", false, "catalog"),
    ("ALTER TABLE jobs ADD COLUMN stamp_902 timestamptz DEFAULT clock_timestamp()", false, "rewrite"),
    ("ALTER TABLE jobs ALTER COLUMN note_901 SET NOT NULL", false, "scan"),
    ("CREATE TABLE new_904 (job_id uuid)", false, "catalog"),
    (
        "ALTER TABLE child_904 ADD CONSTRAINT child_904_fk FOREIGN KEY (job_id) REFERENCES jobs (job_id) NOT VALID",
        false,
        "catalog",
    ),
    ("ALTER TABLE child_904 VALIDATE CONSTRAINT child_904_fk", false, "scan"),
    ("ALTER TABLE child_904 ADD CONSTRAINT child_904_fk2 FOREIGN KEY (job_id) REFERENCES jobs (job_id)", false, "scan"),
    ("ALTER TABLE child_904 ALTER COLUMN n TYPE bigint", false, "rewrite"),
    ("CREATE INDEX idx_909 ON child_904 (n)", false, "scan"),
    ("DROP INDEX idx_909", false, "catalog"),
    ("CREATE INDEX CONCURRENTLY idx_911 ON child_904 (n)", true, "scan"),
    ("DROP INDEX CONCURRENTLY idx_911", true, "catalog"),
    ("CREATE OR REPLACE VIEW v_913 AS SELECT job_id, bucket FROM jobs", false, "catalog"),
    ("CREATE OR REPLACE VIEW v_914 AS SELECT job_id FROM jobs", false, "catalog"),
    ("CREATE OR REPLACE FUNCTION f_915() RETURNS integer LANGUAGE sql AS 'SELECT 1'", false, "catalog"),
    ("GRANT SELECT ON jobs TO PUBLIC", false, "catalog"),
];

const FIRST: i64 = 900;

/// Applied before planning, so what the kinds alter exists live when plan looks.
const BASE: &str = "CREATE TABLE child_904 (job_id uuid, n integer);
CREATE VIEW v_913 AS SELECT job_id FROM jobs;
";

fn write_kinds(dir: &std::path::Path) -> Vec<i64> {
    std::fs::write(dir.join("899_base.sql"), format!("-- Migration: 899\n{BASE}")).unwrap();
    KINDS
        .iter()
        .enumerate()
        .map(|(i, (sql, no_tx, _))| {
            let v = FIRST + i as i64;
            let header = if *no_tx { "-- migrate:no-transaction\n" } else { "" };
            std::fs::write(dir.join(format!("{v}_kind_{v}.sql")), format!("-- Migration: {v}\n{header}{sql};\n"))
                .unwrap();
            v
        })
        .collect()
}

/// The strongest mode per table or view that `sql` really takes on the live database: run in a
/// transaction that is rolled back, as the RDS-shaped master. Only relations in `live` count
/// (those that existed when plan ran: what a pending migration creates first is new to everyone).
async fn real_locks(url: &str, sql: &str, live: &[String]) -> BTreeMap<String, String> {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    c.execute("BEGIN").await.unwrap();
    // What the statement creates is new: nobody else can be using it (plan lists it under `creates`).
    let existing: Vec<String> =
        sqlx::query_scalar("SELECT relname::text FROM pg_class WHERE relnamespace = current_schema()::regnamespace")
            .fetch_all(&mut c)
            .await
            .unwrap();
    c.execute(sqlx::AssertSqlSafe(sql.to_string())).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let rows = sqlx::query(
        "SELECT c.relname::text AS rel, l.mode FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation
          WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND c.relkind IN ('r', 'p', 'v', 'm')
            AND c.relnamespace = current_schema()::regnamespace",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    c.execute("ROLLBACK").await.unwrap();
    c.close().await.unwrap();
    let order = [
        "AccessShareLock",
        "RowShareLock",
        "RowExclusiveLock",
        "ShareUpdateExclusiveLock",
        "ShareLock",
        "ShareRowExclusiveLock",
        "ExclusiveLock",
        "AccessExclusiveLock",
    ];
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    for r in rows {
        let (rel, mode): (String, String) = (r.get("rel"), r.get("mode"));
        if !existing.contains(&rel) || !live.contains(&rel) {
            continue;
        }
        let rank = order.iter().position(|m| *m == mode).unwrap();
        let e = out.entry(rel).or_insert(rank);
        *e = (*e).max(rank);
    }
    let names = [
        "ACCESS SHARE",
        "ROW SHARE",
        "ROW EXCLUSIVE",
        "SHARE UPDATE EXCLUSIVE",
        "SHARE",
        "SHARE ROW EXCLUSIVE",
        "EXCLUSIVE",
        "ACCESS EXCLUSIVE",
    ];
    out.into_iter().map(|(rel, rank)| (rel, names[rank].to_string())).collect()
}

fn pending(run: &Run, version: i64) -> &Value {
    run.json["pending"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["version"] == version)
        .unwrap_or_else(|| panic!("{version} is not pending: {:#}", run.json))
}

/// The one statement of a one-statement migration.
fn statement(run: &Run, version: i64) -> &Value {
    &pending(run, version)["impact"]["statements"][0]
}

/// relation -> (mode, source) of a statement's reported locks.
fn reported(stmt: &Value) -> BTreeMap<String, (String, String)> {
    stmt["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["relation"].as_str().unwrap().to_string(),
                (l["mode"].as_str().unwrap().to_string(), l["source"].as_str().unwrap().to_string()),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_common_kind_is_reported_with_the_locks_postgresql_really_takes() {
    let db = TestDb::new().await;
    let dir = migrations_copy();
    let versions = write_kinds(dir.path());
    let d = dir.path().to_str().unwrap();
    assert_eq!(migrator(&db.url, &["--migrations-dir", d, "migrate", "--target", "899"]).await.status(), "applied");
    db.exec(
        "INSERT INTO jobs (bucket) SELECT 'b' || g FROM generate_series(1, 500) AS g;
         INSERT INTO child_904 SELECT job_id, 1 FROM jobs; ANALYZE jobs; ANALYZE child_904",
    )
    .await;
    let live: Vec<String> =
        sqlx::query_scalar("SELECT relname::text FROM pg_class WHERE relnamespace = current_schema()::regnamespace")
            .fetch_all(&mut db.conn().await)
            .await
            .unwrap();

    let fingerprint = db.fingerprint().await;
    let plan = migrator(&db.url, &["--migrations-dir", d, "plan"]).await;
    assert_eq!(plan.code, 0, "{:#}", plan.json);
    assert_eq!(plan.versions("pending"), versions);
    assert_eq!(db.fingerprint().await, fingerprint, "plan changes nothing");
    assert!(
        db.scalar::<bool>(
            "SELECT NOT EXISTS (SELECT FROM pg_namespace WHERE nspname LIKE 'scanner_migrator_scratch%')"
        )
        .await,
        "no scratch schema outlives plan"
    );

    for (i, (sql, no_tx, effect)) in KINDS.iter().enumerate() {
        let v = FIRST + i as i64;
        let stmt = statement(&plan, v);
        assert_eq!(stmt["effect"], *effect, "{sql}: {stmt:#}");
        let got = reported(stmt);
        if *no_tx {
            // CONCURRENTLY cannot run in a transaction, so neither here nor in the scratch: by kind.
            assert_eq!(
                got.get("child_904"),
                Some(&("SHARE UPDATE EXCLUSIVE".to_string(), "by statement kind".to_string())),
                "{sql}: {stmt:#}"
            );
        } else {
            let real = real_locks(&db.url, sql, &live).await;
            for (rel, mode) in &real {
                match got.get(rel) {
                    Some((m, _)) => assert_eq!(m, mode, "{sql}: on {rel} PostgreSQL takes {mode}: {stmt:#}"),
                    // An ACCESS SHARE the scratch already held is not seen again; it blocks only ACCESS EXCLUSIVE.
                    None => assert_eq!(mode, "ACCESS SHARE", "{sql}: {rel} {mode} not reported: {stmt:#}"),
                }
            }
            for rel in got.keys().filter(|r| !r.starts_with("idx_")) {
                assert!(real.contains_key(rel), "{sql}: reports a lock on {rel} PostgreSQL does not take: {stmt:#}");
            }
        }
        // Sizes of what exists live, and the estimate from the tunable speeds.
        if stmt["effect"] != "catalog" && !got.is_empty() {
            assert!(stmt["size"].as_array().is_some_and(|s| !s.is_empty()), "{sql}: {stmt:#}");
        }
        assert_eq!(
            migrator(&db.url, &["--migrations-dir", d, "migrate", "--target", &v.to_string()]).await.status(),
            "applied",
            "{sql}"
        );
    }

    // The levels the issue names, as the manual gives them.
    let mode = |v: i64, rel: &str| reported(statement(&plan, v)).get(rel).map(|(m, _)| m.clone());
    assert_eq!(mode(900, "jobs").as_deref(), Some("ACCESS EXCLUSIVE"));
    assert_eq!(mode(905, "jobs").as_deref(), Some("SHARE ROW EXCLUSIVE"));
    assert_eq!(mode(906, "child_904").as_deref(), Some("SHARE UPDATE EXCLUSIVE"));
    assert_eq!(mode(909, "child_904").as_deref(), Some("SHARE"));
    assert_eq!(statement(&plan, 900)["locks"][0]["blocks"], "reads and writes");
    assert_eq!(statement(&plan, 909)["locks"][0]["blocks"], "writes");
    assert_eq!(statement(&plan, 906)["locks"][0]["blocks"], "neither");
    let rewrite = statement(&plan, 902);
    assert_eq!(rewrite["effect_on"], json!(["jobs"]));
    let rows = rewrite["size"][0]["rows"].as_f64().unwrap();
    assert!((rows - 500.0).abs() < 1.0, "{rewrite:#}");
    assert!(rewrite["size"][0]["bytes"].as_i64().unwrap() > 8192, "{rewrite:#}");
    assert!(rewrite["estimated_s"].as_f64().unwrap() > 0.0, "{rewrite:#}");
    assert!(pending(&plan, 902)["impact"]["risk"].as_str().unwrap().starts_with("high: line 2: rewrites jobs"));
    assert_eq!(mode(913, "v_913").as_deref(), Some("ACCESS EXCLUSIVE"));
    assert_eq!(statement(&plan, 904)["creates"], json!(["new_904"]));
    assert!(pending(&plan, 916)["impact"]["risk"].as_str().unwrap().starts_with("low:"), "{:#}", pending(&plan, 916));
}

#[tokio::test]
async fn the_seed_migrations_locks_and_effects() {
    let db = TestDb::new().await;
    assert_eq!(migrator(&db.url, &["migrate", "--target", "0"]).await.status(), "applied");
    let plan = migrator(&db.url, &["plan"]).await;
    assert_eq!(plan.code, 0, "{:#}", plan.json);
    let m = pending(&plan, 1);
    let add = &m["impact"]["statements"][0];
    assert_eq!(reported(add)["jobs"].0, "ACCESS EXCLUSIVE", "{add:#}");
    let live = vec!["jobs".to_string()];
    let real = real_locks(&db.url, "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS execution_arn text", &live).await;
    assert_eq!(real["jobs"], "ACCESS EXCLUSIVE");
    let build = &m["impact"]["statements"][1];
    assert_eq!(reported(build)["jobs"], ("SHARE UPDATE EXCLUSIVE".into(), "by statement kind".into()), "{build:#}");
    assert_eq!(build["effect"], "scan");
    let m2 = pending(&plan, 2);
    for s in m2["impact"]["statements"].as_array().unwrap().iter().take(2) {
        assert_eq!(reported(s)["job_objects"].0, "SHARE UPDATE EXCLUSIVE", "{s:#}");
    }
    // The materialized view 002 makes is new: locks on it block nobody, so 002 is not high.
    assert!(!m2["impact"]["risk"].as_str().unwrap().starts_with("high"), "{m2:#}");

    // At 002, 003 drops the materialized view: ACCESS EXCLUSIVE, derived from the drop.
    assert_eq!(migrator(&db.url, &["migrate", "--target", "2"]).await.status(), "applied");
    let plan = migrator(&db.url, &["plan", "--target", "3"]).await;
    let swap = pending(&plan, 3)["impact"]["statements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["statement"].as_str().unwrap().starts_with("DO $swap$"))
        .cloned()
        .unwrap();
    assert_eq!(reported(&swap)["job_progress"], ("ACCESS EXCLUSIVE".into(), "derived".into()), "{swap:#}");
}

#[tokio::test]
async fn a_never_migrated_database_and_nothing_pending() {
    let db = TestDb::new().await;
    let plan = migrator(&db.url, &["plan"]).await;
    assert_eq!(plan.code, 0, "{:#}", plan.json);
    assert_eq!(plan.versions("pending"), all_versions());
    for m in plan.json["pending"].as_array().unwrap() {
        assert!(m["impact"]["risk"].as_str().unwrap().starts_with("low:"), "nothing exists to block: {m:#}");
        for s in m["impact"]["statements"].as_array().unwrap() {
            assert_eq!(s["locks"], json!([]), "{s:#}");
        }
    }
    assert!(db.scalar::<bool>("SELECT to_regclass('jobs') IS NULL").await, "plan created nothing");
    assert!(db.scalar::<bool>("SELECT to_regclass('scanner_migrator_history') IS NULL").await);

    assert_eq!(migrator(&db.url, &["migrate"]).await.status(), "applied");
    let plan = migrator(&db.url, &["plan"]).await;
    assert_eq!(plan.status(), "planned");
    assert_eq!(plan.json["pending"], json!([]));
    let out = text_plan(&db.url, &[]).await;
    assert!(out.contains("nothing pending"), "{out}");
}

/// `plan --output text`: not JSON, so run directly.
async fn text_plan(url: &str, args: &[&str]) -> String {
    let server = crate::support::pg::server();
    let mut all = vec!["--database-url", url];
    all.extend_from_slice(args);
    all.extend(["plan", "--output", "text"]);
    let out = tokio::process::Command::new(crate::support::cli::bin())
        .args(&all)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DB_SSLMODE", "verify-ca")
        .env("DB_CA_BUNDLE", server.ca.display().to_string())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_held_lock_and_an_old_snapshot_are_named_as_blockers() {
    let db = TestDb::new().await;
    let dir = migrations_copy();
    let latest = *all_versions().last().unwrap();
    let (add, build) = (latest + 1, latest + 2);
    std::fs::write(dir.path().join(format!("{add:03}_add.sql")), "ALTER TABLE jobs ADD COLUMN held_up text;\n")
        .unwrap();
    std::fs::write(
        dir.path().join(format!("{build:03}_build.sql")),
        "-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY idx_held_up ON jobs (held_up);\n",
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    assert_eq!(
        migrator(&db.url, &["--migrations-dir", d, "migrate", "--target", &latest.to_string()]).await.status(),
        "applied"
    );

    // A reader in an open transaction holds ACCESS SHARE on jobs; another session keeps a snapshot.
    let mut reader = sqlx::PgConnection::connect(&db.url).await.unwrap();
    reader.execute("SET application_name = 'long-reader'; BEGIN; SELECT count(*) FROM jobs").await.unwrap();
    let reader_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut reader).await.unwrap();
    let mut report = sqlx::PgConnection::connect(&db.url).await.unwrap();
    report
        .execute("SET application_name = 'old-report'; BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
        .await
        .unwrap();
    let report_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut report).await.unwrap();

    let plan = migrator(&db.url, &["--migrations-dir", d, "plan"]).await;
    assert_eq!(plan.code, 0, "{:#}", plan.json);
    let alter = statement(&plan, add);
    let blockers = alter["blocked_by"].as_array().cloned().unwrap_or_default();
    let b = blockers.iter().find(|b| b["pid"] == reader_pid).unwrap_or_else(|| panic!("{alter:#}"));
    assert_eq!(b["application_name"], "long-reader");
    assert_eq!(b["state"], "idle in transaction");
    assert_eq!(b["why"], "holds ACCESS SHARE on jobs");
    assert!(pending(&plan, add)["impact"]["risk"].as_str().unwrap().contains(&reader_pid.to_string()));

    let cic = statement(&plan, build);
    assert!(cic["blocked_by"].is_null(), "ACCESS SHARE does not conflict with SHARE UPDATE EXCLUSIVE: {cic:#}");
    let waits = cic["waits_for"].as_array().cloned().unwrap_or_default();
    let w = waits.iter().find(|w| w["pid"] == report_pid).unwrap_or_else(|| panic!("{cic:#}"));
    assert_eq!(w["application_name"], "old-report");
    assert!(w["why"].as_str().unwrap().contains("snapshot"), "{w:#}");
    assert!(w["xact_age_s"].as_f64().unwrap() >= 0.0);

    let out = text_plan(&db.url, &["--migrations-dir", d]).await;
    assert!(out.contains(&format!("held up by pid {reader_pid} (long-reader, idle in transaction")), "{out}");
    assert!(out.contains(&format!("held up by pid {report_pid} (old-report")), "{out}");
    assert!(out.contains("ACCESS EXCLUSIVE* on jobs") && out.contains("reads and writes"), "{out}");

    reader.close().await.unwrap();
    report.close().await.unwrap();
    let plan = migrator(&db.url, &["--migrations-dir", d, "plan"]).await;
    assert!(statement(&plan, add)["blocked_by"].is_null(), "released: {:#}", plan.json);
}

#[tokio::test]
async fn the_lambda_plan_returns_the_same_json() {
    use crate::lambda::{Fixture, T, function};
    let fx = Fixture::rotation().await;
    assert_eq!(fx.cli(&[], &["migrate", "--target", "1"]).await.status(), "applied");
    let cli = fx.cli(&[], &["plan"]).await;
    assert_eq!(cli.code, 0, "{:#}", cli.json);
    let (api, f) = function("migrate", &fx.env).await;
    let invoked = api.invoke(json!({"command": "plan"}), T).await;
    let lambda = invoked.ok();
    assert_eq!(lambda["status"], "planned");
    assert_eq!(lambda["pending"], cli.json["pending"]);
    assert!(lambda["pending"][0]["impact"]["statements"][0]["locks"].is_array(), "{lambda:#}");
    f.stop().await;
}

/// The first index build statement of `version`'s impact.
fn first_build(run: &Run, version: i64) -> Value {
    pending(run, version)["impact"]["statements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["statement"].as_str().is_some_and(|t| t.contains("CREATE INDEX")))
        .cloned()
        .unwrap_or_else(|| panic!("no index build in {version}: {:#}", run.json))
}

#[tokio::test]
async fn estimates_come_from_this_databases_own_builds_once_it_has_some() {
    let db = TestDb::new().await;
    assert_eq!(migrator(&db.url, &["migrate", "--target", "1"]).await.status(), "applied");
    db.exec(
        "INSERT INTO jobs (job_id, bucket) VALUES ('00000000-0000-4000-8000-000000000001', 'b');
         INSERT INTO job_objects (job_id, bucket, key, size_bytes)
              SELECT '00000000-0000-4000-8000-000000000001', 'b', 'k' || g, g FROM generate_series(1, 30000) AS g;
         ANALYZE job_objects",
    )
    .await;
    let before = migrator(&db.url, &["plan", "--target", "2"]).await;
    assert_eq!(before.code, 0, "{:#}", before.json);
    let speeds = &before.json["plan_speeds"];
    assert!(speeds["index_build_source"].as_str().unwrap().starts_with("INDEX_BUILD_ROWS_PER_S"), "{speeds:#}");
    assert_eq!(speeds["index_build_rows_per_s"], 250000.0);
    let est_before = first_build(&before, 2)["estimated_s"].as_f64().unwrap();

    // 002 builds its indexes on 30,000 rows: recorded, with their time.
    assert_eq!(migrator(&db.url, &["migrate", "--target", "2"]).await.status(), "applied");
    let recorded: i64 = db.scalar("SELECT count(*) FROM scanner_migrator_history_builds").await;
    assert!(recorded >= 2, "002's two index builds are recorded: {recorded}");
    let median: f64 = db
        .scalar("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY rows * 1000.0 / greatest(duration_ms, 1)) FROM scanner_migrator_history_builds")
        .await;
    // The record is not the schema's: verification never reports it.
    let verify = migrator(&db.url, &["verify"]).await;
    assert_eq!(verify.code, 0, "{:#}", verify.json);

    // Pending again: plan now estimates from this database's speed.
    assert_eq!(migrator(&db.url, &["rollback", "--target", "1"]).await.code, 0);
    let after = migrator(&db.url, &["plan", "--target", "2"]).await;
    let speeds = &after.json["plan_speeds"];
    let source = speeds["index_build_source"].as_str().unwrap();
    assert!(source.starts_with("measured: the median of this database's last"), "{speeds:#}");
    let measured = speeds["index_build_rows_per_s"].as_f64().unwrap();
    assert!((measured - median).abs() < 1e-6 * median.max(1.0), "{measured} vs {median}");
    // The same rows at the measured speed.
    let est_after = first_build(&after, 2)["estimated_s"].as_f64().unwrap();
    let text = text_plan(&db.url, &[]).await;
    assert!(text.contains("rows/s (measured: the median of this database's last"), "{text}");
    assert!(
        (est_after * measured - est_before * 250000.0).abs() < 1e-6 * (est_before * 250000.0),
        "{est_before} s at 250000 rows/s vs {est_after} s at {measured} rows/s"
    );
}
