//! Migration 004's scanner_refresh role: it runs refresh_job_progress() and can do nothing else;
//! it logs in with an IAM token (rds_iam, emulated here) or with a password the migrator sets from
//! its own secret, never the master's.

use serde_json::json;
use sqlx::{Connection, PgConnection};

use crate::{
    lambda::{Fixture, T, function, random_password},
    support::{
        cli::migrator,
        moto,
        pg::{TestDb, server},
        secrets,
    },
};

/// The version of 004, and the one below it, from the embedded migrations.
fn refresh_role_version() -> (i64, i64) {
    let all = crate::support::all_versions();
    let i = all.iter().position(|v| *v == 4).expect("migration 004 is embedded");
    (all[i], all[i - 1])
}

/// Connects as scanner_refresh with `password` (TLS as the server offers it).
async fn as_refresh_role(db: &TestDb, password: &str) -> PgConnection {
    let url = format!("postgres://scanner_refresh:{password}@127.0.0.1:{}/{}", server().port, db.name);
    PgConnection::connect(&url).await.unwrap_or_else(|e| panic!("scanner_refresh cannot log in: {e}"))
}

async fn sqlstate(conn: &mut PgConnection, sql: &str) -> Option<String> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut *conn)
        .await
        .err()
        .and_then(|e| e.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned()))
}

#[tokio::test]
async fn the_migrator_gives_the_refresh_role_its_own_password_and_the_role_can_only_refresh() {
    let fx = Fixture::rotation().await;
    let password = random_password();
    secrets::register(&password);
    let refresh_secret = moto::create_secret(
        &format!("refresh/{}", fx.db.name),
        &json!({"username": "scanner_refresh", "password": password}).to_string(),
    )
    .await;
    // The statements the server logs must hold no plaintext password: log every DDL of this database.
    fx.db.exec_super(&format!("ALTER DATABASE {} SET log_statement = 'ddl'", fx.db.name)).await;
    let (api, f) = function("migrate", &fx.env_with(&[("REFRESH_SECRET_ARN", &refresh_secret)])).await;
    let out = api.invoke(json!({}), T).await;
    assert_eq!(out.ok()["status"], "applied", "{:?}", out);
    let logs = f.stop().await;
    secrets::assert_absent("function logs", &logs);
    assert!(logs.contains("scanner_refresh's password set from the secret"), "{logs}");

    let stored: String =
        fx.db.scalar_super("SELECT rolpassword FROM pg_authid WHERE rolname = 'scanner_refresh'").await;
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "a SCRAM verifier: {stored}");
    let server_log =
        std::env::temp_dir().join(format!("scanner-migrator-it-{}", std::process::id())).join("pg/server.log");
    let server_log = std::fs::read_to_string(&server_log).unwrap_or_default();
    assert!(server_log.contains("ALTER ROLE scanner_refresh PASSWORD 'SCRAM-SHA-256$"), "the statement is logged");
    assert!(!server_log.contains(&password), "the plaintext reached the server's log");

    // The role: the refresh, and nothing else.
    let mut conn = as_refresh_role(&fx.db, &password).await;
    assert_eq!(sqlstate(&mut conn, "SELECT refresh_job_progress()").await, None);
    for sql in [
        "SELECT count(*) FROM job_objects",
        "SELECT count(*) FROM jobs",
        "SELECT count(*) FROM job_progress",
        "INSERT INTO jobs (bucket) VALUES ('x')",
        // From 003 on job_progress is kept by the delta log and the folded counts (a plain view).
        "DELETE FROM job_progress_deltas",
        "UPDATE job_progress_counts SET total_objects = 0",
        "CREATE TABLE mine (x int)",
    ] {
        assert_eq!(sqlstate(&mut conn, sql).await.as_deref(), Some("42501"), "scanner_refresh may not: {sql}");
    }
    conn.close().await.unwrap();
    // Nobody else may call the function any more: it runs with its owner's rights.
    let public: bool =
        fx.db.scalar("SELECT has_function_privilege('public', 'refresh_job_progress()', 'EXECUTE')").await;
    assert!(!public, "EXECUTE is revoked from PUBLIC");
    let (secdef, config): (bool, Vec<String>) = {
        let mut c = fx.db.conn().await;
        let row = sqlx::query_as(
            "SELECT prosecdef, proconfig FROM pg_proc WHERE oid = to_regprocedure('refresh_job_progress()')",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
        row
    };
    assert!(secdef);
    assert_eq!(config, vec!["search_path=pg_catalog, pg_temp".to_string()]);

    // The refresh function as Terraform deploys it without IAM: its own secret, never the master's.
    fx.db.exec("INSERT INTO jobs (bucket) VALUES ('b'); INSERT INTO job_objects (job_id, bucket, key) SELECT job_id, 'b', 'k' || g FROM jobs, generate_series(1, 5) g;").await;
    let env = fx.env_with(&[
        ("DB_SECRET_ARN", &refresh_secret),
        ("DB_HOST", "localhost"),
        ("DB_PORT", &server().port.to_string()),
        ("DB_NAME", &fx.db.name),
    ]);
    let (api, f) = function("refresh", &env).await;
    let out = api.invoke(json!({}), T).await;
    let report = out.ok();
    assert_eq!(report["status"], "refreshed", "{report:#}");
    assert!(report["delta_rows"].as_i64().unwrap_or(0) >= 1, "it folded the inserts: {report:#}");
    let logs = f.stop().await;
    secrets::assert_absent("refresh function logs", &logs);
    assert_eq!(fx.db.scalar::<i64>("SELECT total_objects FROM job_progress").await, 5);
}

#[tokio::test]
async fn a_refresh_secret_for_another_user_is_refused() {
    let fx = Fixture::rotation().await;
    // Pointing REFRESH_SECRET_ARN at the master secret must not change any password.
    let (api, f) = function("migrate", &fx.env_with(&[("REFRESH_SECRET_ARN", &fx.secret_arn)])).await;
    let (kind, msg) = api.invoke(json!({}), T).await.err();
    assert_eq!(kind, "SecretFormat");
    assert!(msg.contains(&fx.user) && msg.contains("scanner_refresh") && msg.contains(&fx.secret_arn), "{msg}");
    f.stop().await;
    // The master can still log in with its password.
    let url = format!("postgres://{}:{}@127.0.0.1:{}/{}", fx.user, fx.password, server().port, fx.db.name);
    PgConnection::connect(&url).await.unwrap().close().await.unwrap();
}

#[tokio::test]
async fn with_iam_the_refresh_role_signs_a_token_and_reads_no_secret() {
    // RDS has an rds_iam role; 004 grants it to scanner_refresh where it exists.
    let db = TestDb::new().await;
    db.exec(
        "DO $$ BEGIN CREATE ROLE rds_iam NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
    )
    .await;
    assert_eq!(migrator(&db.url, &["migrate"]).await.status(), "applied");
    let member: bool = db.scalar("SELECT pg_has_role('scanner_refresh', 'rds_iam', 'MEMBER')").await;
    assert!(member, "scanner_refresh is granted rds_iam");

    // The refresh function's environment in IAM mode: no DB_SECRET_ARN at all.
    let mut env = moto::aws_env();
    for (k, v) in [
        ("DB_AUTH", "iam".to_string()),
        ("DB_USER", "scanner_refresh".to_string()),
        ("DB_HOST", "localhost".to_string()),
        ("DB_PORT", server().port.to_string()),
        ("DB_NAME", db.name.clone()),
        ("DB_CA_BUNDLE", server().ca.display().to_string()),
    ] {
        env.push((k.into(), v));
    }
    let (api, f) = function("refresh", &env).await;
    // The local server knows no IAM tokens: refused, which shows a token was sent for that user.
    let (kind, msg) = api.invoke(json!({}), T).await.err();
    assert_eq!(kind, "AuthFailed", "{msg}");
    assert!(msg.contains("user scanner_refresh") && msg.contains("verify-full"), "{msg}");
    let logs = f.stop().await;
    assert!(!logs.contains("X-Amz-Signature=") || logs.contains("X-Amz-Signature=***"), "the token is a credential");
    assert!(!logs.to_lowercase().contains("secretsmanager"), "no secret is read: {logs}");
}

#[tokio::test]
async fn rolling_004_back_restores_the_function_and_migrating_again_restores_the_role() {
    let db = TestDb::new().await;
    assert_eq!(migrator(&db.url, &["migrate"]).await.status(), "applied");
    let before = db.fingerprint().await;
    let (v004, below) = refresh_role_version();
    let run = migrator(&db.url, &["rollback", "--to", &below.to_string()]).await;
    assert_eq!(run.status(), "rolled_back", "{:#}", run.json);
    assert!(!db.history().await.contains(&v004));
    let (secdef, public): (bool, bool) = {
        let mut c = db.conn().await;
        let row = sqlx::query_as(
            "SELECT prosecdef, has_function_privilege('public', oid, 'EXECUTE') FROM pg_proc
              WHERE oid = to_regprocedure('refresh_job_progress()')",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
        row
    };
    assert!(!secdef && public, "SECURITY INVOKER and callable by anyone again");
    assert_eq!(migrator(&db.url, &["migrate"]).await.status(), "applied");
    assert_eq!(db.fingerprint().await, before);
    assert_eq!(migrator(&db.url, &["verify"]).await.status(), "verified");
}

#[tokio::test]
async fn a_refresh_secret_that_cannot_be_read_still_reports_what_was_applied() {
    let fx = Fixture::rotation().await;
    let missing = fx.secret_arn.replace("db/", "db/missing-");
    let run = fx.cli(&[("REFRESH_SECRET_ARN", &missing)], &["migrate"]).await;
    assert_eq!(run.error_type(), "SecretUnavailable", "{:#}", run.json);
    let msg = run.error_message();
    assert!(msg.contains(&missing), "names the secret: {msg}");
    assert_eq!(fx.db.history().await, crate::support::all_versions(), "the migrations went through");
    for label in crate::support::all_labels() {
        assert!(msg.contains(&label), "the message lists {label} as applied: {msg}");
    }
    assert!(msg.contains("applied by this run"), "{msg}");
}
