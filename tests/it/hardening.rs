//! What an attacker or a careless user would try: secrets typed in the wrong place, a URL
//! parameter the driver would log, a server whose certificate is not from the trusted CAs, a
//! weak TLS mode in Lambda.

use serde_json::json;

use crate::{
    lambda::{Fixture, function},
    support::{
        cli::cli,
        pg::{TestDb, server},
        secrets,
    },
};

/// `postgres://postgres:PW@localhost:PORT/DB` (the certificate's host name) plus `query`.
fn localhost_url(db: &TestDb, query: &str) -> String {
    format!("{}{query}", db.url.replace("@127.0.0.1:", "@localhost:"))
}

fn test_ca() -> String {
    server().ca.display().to_string()
}

#[tokio::test]
async fn a_url_typed_without_its_flag_is_not_echoed() {
    let password = "Typed-In-The-Open-7f1";
    secrets::register(password);
    // `cli` fails the test if the password shows on stdout or stderr.
    let run = cli(&[&format!("postgres://admin:{password}@db.example.com/db"), "status"], &[]).await;
    assert_eq!(run.code, 2);
    assert_eq!(run.error_type(), "BadRequest");
    assert!(run.error_message().contains("postgres://admin:***@db.example.com/db"), "{}", run.error_message());
    assert!(run.stderr.contains("--database-url"), "the usage says where the URL goes: {}", run.stderr);

    // The same after the subcommand, and as a query parameter.
    let run = cli(&["status", &format!("postgresql://db.example.com/db?user=admin&password={password}")], &[]).await;
    assert_eq!(run.error_type(), "BadRequest");
    assert!(run.error_message().contains("password=***"), "{}", run.error_message());
}

#[tokio::test]
async fn an_unknown_url_parameter_is_refused_by_name_before_the_driver_logs_it() {
    let db = TestDb::new().await;
    let value = "Leaky-Param-Value-93b";
    secrets::register(value);
    let url = localhost_url(&db, &format!("?sslmode=verify-full&pasword={value}"));
    let run = cli(&["--database-url", &url, "status"], &[("DB_CA_BUNDLE", &test_ca()), ("RUST_LOG", "trace")]).await;
    assert_eq!(run.code, 1);
    assert_eq!(run.error_type(), "ConfigError");
    let msg = run.error_message();
    assert!(msg.contains("DATABASE_URL") && msg.contains("`pasword`") && msg.contains("accepted:"), "{msg}");
    assert!(db.history().await.is_empty(), "nothing ran");
}

#[tokio::test]
async fn the_url_path_verifies_the_server_by_default_and_says_what_was_negotiated() {
    let db = TestDb::new().await;
    let ca = test_ca();
    // No sslmode in the URL: verify-full against DB_CA_BUNDLE.
    let run = cli(&["--database-url", &localhost_url(&db, ""), "status"], &[("DB_CA_BUNDLE", &ca)]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(run.json["database"]["sslmode"], "verify-full");
    let tls = run.json["database"]["tls"].as_str().unwrap();
    assert!(tls.starts_with("TLSv1."), "the negotiated protocol, from the server's side: {tls}");

    // Verify-full checks the name: the certificate is for localhost, not 127.0.0.1.
    let run = cli(&["--database-url", &db.url, "status"], &[("DB_CA_BUNDLE", &ca)]).await;
    assert_eq!(run.error_type(), "ConnectFailed");
    assert!(run.error_message().contains("sslmode verify-full"), "{}", run.error_message());
    // DB_SSLMODE applies when the URL names no mode.
    let run = cli(&["--database-url", &db.url, "status"], &[("DB_CA_BUNDLE", &ca), ("DB_SSLMODE", "verify-ca")]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(run.json["database"]["sslmode"], "verify-ca");

    // Without DB_CA_BUNDLE only the RDS CAs built into the binary are trusted: not the test CA,
    // and not the public web PKI either.
    let run = cli(&["--database-url", &localhost_url(&db, ""), "status"], &[]).await;
    assert_eq!(run.error_type(), "ConnectFailed", "{:#}", run.json);
    assert!(run.error_message().to_lowercase().contains("certificate"), "{}", run.error_message());
    let wrong = server().wrong_ca.display().to_string();
    let run = cli(&["--database-url", &localhost_url(&db, ""), "status"], &[("DB_CA_BUNDLE", &wrong)]).await;
    assert_eq!(run.error_type(), "ConnectFailed");

    // A weaker mode from the environment does not silently apply to a URL ...
    let run = cli(&["--database-url", &db.url, "status"], &[("DB_SSLMODE", "require")]).await;
    assert_eq!(run.error_type(), "ConfigError");
    assert!(run.error_message().contains("sslmode=require"), "{}", run.error_message());
    // ... it has to be in the URL, and the result shows what it gave.
    let run = cli(&["--database-url", &format!("{}?sslmode=disable", db.url), "status"], &[]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(
        (run.json["database"]["sslmode"].as_str(), run.json["database"]["tls"].as_str()),
        (Some("disable"), Some("none"))
    );
    let run = cli(&["--database-url", &format!("{}?sslmode=prefer", db.url), "status"], &[]).await;
    assert_eq!(run.json["database"]["sslmode"], "prefer");
    assert!(run.json["database"]["tls"].as_str().unwrap().starts_with("TLSv1."), "{:#}", run.json);
}

#[test]
fn the_driver_has_no_built_in_roots() {
    // sqlx adds webpki-roots' CAs to every root store; patches/webpki-roots-none empties them, so a
    // verify mode trusts the configured bundle only. Removing the patch fails this.
    assert!(webpki_roots::TLS_SERVER_ROOTS.is_empty(), "{} public roots", webpki_roots::TLS_SERVER_ROOTS.len());
}

#[tokio::test]
async fn lambda_refuses_a_mode_that_does_not_authenticate_the_server_unless_told() {
    let fx = Fixture::rotation().await;
    let (api, f) = function("migrate", &fx.env_with(&[("DB_SSLMODE", "require")])).await;
    let (kind, msg) = api.invoke(json!({"command": "status"}), crate::lambda::T).await.err();
    assert_eq!(kind, "ConfigError");
    assert!(msg.contains("DB_SSLMODE") && msg.contains("require") && msg.contains("DB_ALLOW_INSECURE_TLS"), "{msg}");
    f.stop().await;

    let env = fx.env_with(&[("DB_SSLMODE", "require"), ("DB_ALLOW_INSECURE_TLS", "true"), ("DB_HOST", "127.0.0.1")]);
    let (api, f) = function("migrate", &env).await;
    let out = api.invoke(json!({"command": "status"}), crate::lambda::T).await;
    assert_eq!(out.ok()["database"]["sslmode"], "require");
    assert!(out.ok()["database"]["tls"].as_str().unwrap().starts_with("TLSv1."));
    let logs = f.stop().await;
    secrets::assert_absent("function logs", &logs);
}

#[tokio::test]
async fn a_constraint_violation_names_the_constraint_and_column_not_the_row() {
    let db = TestDb::new().await;
    assert_eq!(crate::support::cli::migrator(&db.url, &["migrate"]).await.code, 0);
    let value = "customer-records-9d2";
    secrets::register(value);
    db.exec(&format!("INSERT INTO jobs (bucket, prefix) VALUES ('{value}', '{value}'), ('{value}', 'b')")).await;
    // Migrations numbered far above the real ones, each failing on a row in its own way.
    let cases = [
        ("ALTER TABLE jobs ADD CONSTRAINT jobs_prefix_short CHECK (length(prefix) < 3);", "23514", "jobs_prefix_short"),
        ("CREATE UNIQUE INDEX jobs_bucket_unique ON jobs (bucket);", "23505", "(bucket)=(…)"),
        ("UPDATE jobs SET bucket = NULL;", "23502", "column jobs.bucket"),
    ];
    for (i, (sql, sqlstate, named)) in cases.iter().enumerate() {
        let dir = crate::support::migrations_copy();
        std::fs::write(dir.path().join(format!("{}_violation.sql", 901 + i)), format!("-- Migration\n{sql}\n"))
            .unwrap();
        let run =
            crate::support::cli::migrator(&db.url, &["--migrations-dir", dir.path().to_str().unwrap(), "migrate"])
                .await;
        assert_eq!(run.error_type(), "MigrationFailed", "{:#}", run.json);
        let msg = run.error_message();
        assert!(msg.contains(&format!("SQLSTATE {sqlstate}")) && msg.contains(named), "{msg}");
        assert!(!msg.contains(value) && !run.stderr.contains(value), "a row value was printed: {msg}");
    }
}

#[tokio::test]
async fn database_errors_do_not_end_in_a_line_of_postgresql_source() {
    let db = TestDb::new().await;
    // A history table that is not ours: reading it fails inside PostgreSQL's parser.
    db.exec("CREATE TABLE scanner_migrator_history (version bigint)").await;
    let run = crate::support::cli::migrator(&db.url, &["status"]).await;
    assert_eq!(run.error_type(), "DatabaseError", "{:#}", run.json);
    let msg = run.error_message();
    assert!(msg.contains("reading the migration history") && msg.contains("does not exist"), "{msg}");
    assert!(!msg.contains(" at line "), "the driver's C source line is noise: {msg}");
}
