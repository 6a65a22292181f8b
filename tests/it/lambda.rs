//! The binary as a Lambda: the Runtime API protocol, credentials from moto's Secrets Manager
//! and RDS, TLS verify-full against a test CA, and secrets that never show.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::{Connection, Executor};

use crate::support::{
    all_versions,
    cli::{bin, cli},
    moto,
    pg::{TestDb, server},
    runtime::{Function, Outcome, RuntimeApi},
    secrets,
};

/// A database with its own login role, and a secret for it in moto.
pub struct Fixture {
    pub db: TestDb,
    pub user: String,
    pub password: String,
    pub secret_arn: String,
    /// The function's environment: moto, the secret, TLS verify-full with the test CA.
    pub env: Vec<(String, String)>,
}

pub fn random_password() -> String {
    let n: u128 = rand_seed();
    format!("pw-{n:x}")
}

fn rand_seed() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    (u128::from(h.finish()) << 64) | u128::from(std::collections::hash_map::RandomState::new().build_hasher().finish())
}

impl Fixture {
    /// `secret` builds the secret's JSON from (user, password, port, dbname).
    pub async fn new(secret: impl Fn(&str, &str, u16, &str) -> Value) -> Self {
        let mut db = TestDb::new().await;
        let user = format!("app_{}", db.name);
        let password = random_password();
        secrets::register(&password);
        // The function's user is shaped like the RDS master, and owns the database as it does on RDS.
        let mut admin = sqlx::PgConnection::connect(&server().super_url("postgres")).await.unwrap();
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "{} ALTER DATABASE {} OWNER TO {user};",
                crate::support::pg::rds_shaped_master(&user, &password),
                db.name
            )))
            .await
            .unwrap();
        admin.close().await.unwrap();
        // The tests' checks read the database as its owner, as the function does.
        db.url = format!("postgres://{user}:{password}@127.0.0.1:{}/{}", server().port, db.name);
        let text = secret(&user, &password, server().port, &db.name).to_string();
        let secret_arn = moto::create_secret(&format!("db/{}", db.name), &text).await;
        let mut env = moto::aws_env();
        env.push(("DB_SECRET_ARN".into(), secret_arn.clone()));
        env.push(("DB_CA_BUNDLE".into(), server().ca.display().to_string()));
        env.push(("DB_CONNECT_TIMEOUT_S".into(), "5".into()));
        Fixture { db, user, password, secret_arn, env }
    }

    /// The classic rotation secret: engine, host, port (as given), dbname, username, password.
    pub async fn rotation() -> Self {
        Self::new(|u, p, port, db| json!({"engine": "postgres", "host": "localhost", "port": port, "dbname": db, "username": u, "password": p})).await
    }

    /// The environment plus extra variables.
    pub fn env_with(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        }
        env
    }

    /// Runs the CLI with the Lambda's settings (no --database-url).
    pub async fn cli(&self, extra: &[(&str, &str)], args: &[&str]) -> crate::support::cli::Run {
        let env = self.env_with(extra);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        cli(args, &pairs).await
    }
}

/// Starts the function under a fresh Runtime API.
pub async fn function(handler: &str, env: &[(String, String)]) -> (RuntimeApi, Function) {
    let api = RuntimeApi::start().await;
    let f = Function::start(bin(), &api, handler, env);
    (api, f)
}

pub const T: Duration = Duration::from_secs(60);

#[tokio::test]
async fn the_migrate_handler_end_to_end() {
    let fx = Fixture::rotation().await;
    // Rollback drops data, so the function must be configured to allow it.
    let (api, f) = function("migrate", &fx.env_with(&[("ALLOW_ROLLBACK", "true")])).await;

    let first = api.invoke(json!({}), T).await;
    let r = first.ok();
    assert_eq!(r["status"], "applied", "{r:#}");
    assert_eq!(r["schema_version"], *all_versions().last().unwrap());
    assert_eq!(r["database"]["sslmode"], "verify-full", "TLS verify-full by default");
    assert_eq!(r["database"]["host"], "localhost");
    assert_eq!(r["database"]["user"], fx.user.as_str());
    assert_eq!(api.invoke(json!({}), T).await.ok()["status"], "up_to_date");

    let status = api.invoke(json!({"command": "status"}), T).await;
    assert_eq!(
        status.ok()["history"][0]["applied_by"],
        "00000000-0000-4000-8000-000000000000",
        "the request id is recorded"
    );
    assert_eq!(api.invoke(json!({"command": "plan"}), T).await.ok()["status"], "planned");
    assert_eq!(api.invoke(json!({"command": "verify"}), T).await.ok()["status"], "verified");

    let rollback = api.invoke(json!({"command": "rollback", "target": 1}), T).await;
    assert_eq!(rollback.ok()["status"], "rolled_back");
    assert_eq!(fx.db.history().await, vec![0, 1]);

    // Terraform's destroy never drops the schema.
    let delete = api
        .invoke(json!({"command": "migrate", "tf": {"action": "delete", "prev_input": {"command": "migrate"}}}), T)
        .await;
    assert_eq!(delete.ok()["status"], "noop");
    assert_eq!(fx.db.history().await, vec![0, 1]);
    let create = api.invoke(json!({"command": "migrate", "tf": {"action": "create", "prev_input": null}}), T).await;
    assert_eq!(create.ok()["applied"][0]["version"], 2);
    assert_eq!(fx.db.history().await, all_versions());

    let bad = api.invoke(json!({"command": "rollback"}), T).await;
    let (kind, msg) = bad.err();
    assert_eq!(kind, "BadRequest");
    assert!(msg.contains("target") && msg.contains("accepted:"), "{msg}");
    let (kind, msg) = api.invoke(json!({"comand": "status"}), T).await.err();
    assert_eq!(kind, "BadRequest");
    assert!(msg.contains("comand"), "{msg}");

    let logs = f.stop().await;
    secrets::assert_absent("function logs", &logs);
    // JSON logs, one line per step, and EMF metrics.
    let lines: Vec<Value> =
        logs.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}"))).collect();
    let steps: Vec<&str> = lines.iter().filter_map(|l| l["fields"]["step"].as_str()).collect();
    for step in ["resolve", "connect", "lock", "migration", "verify", "rollback", "noop"] {
        assert!(steps.contains(&step), "no {step} step in the logs: {steps:?}");
    }
    let emf = lines
        .iter()
        .find(|l| l["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"] == "MigrationDuration")
        .expect("an EMF line");
    assert_eq!(emf["MigrationsApplied"], all_versions().len() as f64);
    assert_eq!(emf["MigrateFailed"], 0.0, "a finished migrate counts as not failed");
    // Only migrate runs are counted: status, plan, verify and rollback emit nothing; the refused payloads
    // never ran a migrate.
    let migrate_lines = lines.iter().filter(|l| l.get("_aws").is_some()).count();
    assert_eq!(migrate_lines, 3, "one metric line per migrate run (two, and Terraform's create)");
}

#[tokio::test]
async fn rollback_over_lambda_is_refused_unless_the_function_allows_it() {
    let fx = Fixture::rotation().await;
    let (api, f) = function("migrate", &fx.env).await;
    assert_eq!(api.invoke(json!({}), T).await.ok()["status"], "applied");
    let (kind, msg) = api.invoke(json!({"command": "rollback", "target": 1}), T).await.err();
    assert_eq!(kind, "RollbackNotAllowed");
    assert!(msg.contains("ALLOW_ROLLBACK=true") && msg.contains("command line"), "names the setting: {msg}");
    assert_eq!(fx.db.history().await, all_versions(), "nothing was rolled back");
    f.stop().await;
    // The command line keeps it, with the same settings.
    let run = fx.cli(&[], &["rollback", "--to", "1"]).await;
    assert_eq!(run.status(), "rolled_back", "{:#}", run.json);
    assert_eq!(fx.db.history().await, vec![0, 1]);
}

#[tokio::test]
async fn a_failing_migration_is_a_function_error_with_its_type() {
    let fx = Fixture::rotation().await;
    // A jobs table that is not the scanner's: 000 keeps it (IF NOT EXISTS) and its foreign key fails.
    fx.db.exec(&format!("CREATE TABLE jobs (id bigint); ALTER TABLE jobs OWNER TO {};", fx.user)).await;
    let (api, f) = function("migrate", &fx.env).await;
    let out = api.invoke(json!({}), T).await;
    let (kind, msg) = out.err();
    assert_eq!(kind, "MigrationFailed");
    assert!(msg.contains("migration 000 (initial_schema)") && msg.contains("SQLSTATE 42703"), "{msg}");
    assert!(out.as_aws_cli().contains("\"FunctionError\": \"Unhandled\""));
    assert!(fx.db.history().await.is_empty());
    let logs = f.stop().await;
    assert!(logs.contains("MigrationFailed"), "the error is logged too");
    secrets::assert_absent("function logs", &logs);
    // ... and counted in the metrics, under the function's name.
    let emf: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l.get("_aws").is_some())
        .collect();
    assert_eq!(emf.len(), 1, "one metric line: {logs}");
    assert_eq!(emf[0]["MigrateFailed"], 1.0);
    let defs = &emf[0]["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(defs["Namespace"], "ScannerMigrator");
    assert_eq!(defs["Metrics"], json!([{"Name": "MigrateFailed", "Unit": "Count"}]));
    assert_eq!(defs["Dimensions"], json!([["FunctionName"]]));
    assert_eq!(emf[0]["FunctionName"], "scanner-migrator-migrate");
}

#[tokio::test]
async fn start_up_errors_name_what_is_wrong() {
    let fx = Fixture::rotation().await;
    let (api, f) = function("migrat", &fx.env).await;
    let (kind, msg) = api.invoke(json!({}), T).await.err();
    assert_eq!(kind, "ConfigError");
    assert!(msg.contains("migrat") && msg.contains("valid handlers: migrate, refresh"), "{msg}");
    f.stop().await;

    let env: Vec<(String, String)> = fx.env.iter().filter(|(k, _)| k != "DB_SECRET_ARN").cloned().collect();
    let (api, f) = function("migrate", &env).await;
    let (kind, msg) = api.invoke(json!({}), T).await.err();
    assert_eq!(kind, "ConfigError");
    assert!(msg.contains("DB_SECRET_ARN"), "{msg}");
    f.stop().await;

    let (api, f) = function("migrate", &fx.env_with(&[("LOCK_TIMEOUT_MS", "fast")])).await;
    let (_, msg) = api.invoke(json!({}), T).await.err();
    assert!(msg.contains("LOCK_TIMEOUT_MS"), "{msg}");
    f.stop().await;
}

#[tokio::test]
async fn the_lock_wait_is_bounded_by_the_invocation_deadline() {
    let fx = Fixture::rotation().await;
    let mut holder = fx.db.conn().await;
    let (k1, k2) = scanner_migrator::db::LOCK_KEY;
    sqlx::query("SELECT pg_advisory_lock($1, $2)").bind(k1).bind(k2).execute(&mut holder).await.unwrap();
    // ADVISORY_LOCK_WAIT_S is 60 s, but the invocation only has 4 s: it must answer in time.
    let (api, f) = function("migrate", &fx.env_with(&[("ADVISORY_LOCK_WAIT_S", "60")])).await;
    let started = Instant::now();
    let out = api.invoke(json!({}), Duration::from_secs(4)).await;
    let (kind, msg) = out.err();
    assert_eq!(kind, "LockTimeout", "{msg}");
    assert!(started.elapsed() < Duration::from_secs(4), "answered before Lambda's deadline");
    f.stop().await;
}

#[tokio::test]
async fn both_secret_shapes_and_port_as_string_or_number() {
    for port_as_string in [true, false] {
        let fx = Fixture::new(move |u, p, port, db| {
            let port = if port_as_string { json!(port.to_string()) } else { json!(port) };
            json!({"engine": "postgres", "host": "localhost", "port": port, "dbname": db, "username": u, "password": p})
        })
        .await;
        let run = fx.cli(&[], &["status"]).await;
        assert_eq!(run.code, 0, "port as string={port_as_string}: {:#}", run.json);
        assert_eq!(run.json["database"]["port"], server().port);
    }
}

#[tokio::test]
async fn the_rds_managed_secret_with_the_endpoint_from_describe_db_instances() {
    let fx = Fixture::new(|u, p, _, _| json!({"username": u, "password": p})).await;
    let id = format!("db-{}", fx.db.name.replace('_', "-"));
    moto::create_db_instance(&id, Some(server().port), Some(&fx.db.name)).await;
    // moto's endpoint address is not resolvable here, so DB_HOST points the host at the local
    // server; the port and the database name can only have come from DescribeDBInstances.
    let run = fx.cli(&[("DB_INSTANCE_IDENTIFIER", &id), ("DB_HOST", "localhost")], &["migrate"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(run.json["database"]["port"], server().port);
    assert_eq!(run.json["database"]["database"], fx.db.name.as_str());

    let missing = fx.cli(&[("DB_INSTANCE_IDENTIFIER", "no-such-db"), ("DB_HOST", "localhost")], &["status"]).await;
    assert_eq!(missing.error_type(), "RdsApiError");
    assert!(missing.error_message().contains("no-such-db"), "{}", missing.error_message());

    let no_host = fx.cli(&[], &["status"]).await;
    assert_eq!(no_host.error_type(), "ConfigError");
    assert!(no_host.error_message().contains("DB_INSTANCE_IDENTIFIER"), "{}", no_host.error_message());
}

#[tokio::test]
async fn missing_malformed_and_binary_secrets_are_named_without_their_values() {
    let fx = Fixture::rotation().await;
    let missing = fx.cli(&[("DB_SECRET_ARN", "db/does-not-exist")], &["status"]).await;
    assert_eq!(missing.error_type(), "SecretUnavailable");
    assert!(
        missing.error_message().contains("db/does-not-exist") && missing.error_message().contains("ResourceNotFound"),
        "{}",
        missing.error_message()
    );

    let leaked = "malformed-secret-value-9f3";
    secrets::register(leaked);
    let arn = moto::create_secret(
        &format!("bad/{}", fx.db.name),
        &format!("{{\"username\": \"u\", \"pass\": \"{leaked}\"}}"),
    )
    .await;
    let bad = fx.cli(&[("DB_SECRET_ARN", &arn)], &["status"]).await;
    assert_eq!(bad.error_type(), "SecretFormat");
    assert!(bad.error_message().contains("`password`"), "{}", bad.error_message());

    let arn = moto::create_secret(&format!("text/{}", fx.db.name), leaked).await;
    let not_json = fx.cli(&[("DB_SECRET_ARN", &arn)], &["status"]).await;
    assert_eq!(not_json.error_type(), "SecretFormat");
    assert!(not_json.error_message().contains("not JSON"));

    let client = aws_sdk_secretsmanager::Client::new(&moto::sdk().await);
    let out = client
        .create_secret()
        .name(format!("bin/{}", fx.db.name))
        .secret_binary(aws_sdk_secretsmanager::primitives::Blob::new(leaked.as_bytes()))
        .send()
        .await
        .unwrap();
    let binary = fx.cli(&[("DB_SECRET_ARN", out.arn().unwrap())], &["status"]).await;
    assert_eq!(binary.error_type(), "SecretFormat");
    assert!(binary.error_message().contains("binary"), "{}", binary.error_message());
}

#[tokio::test]
async fn secrets_manager_unreachable_fails_clearly_and_promptly() {
    let fx = Fixture::rotation().await;
    // Accepts TCP connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let started = Instant::now();
    let run = fx.cli(&[("AWS_ENDPOINT_URL", &endpoint)], &["status"]).await;
    assert_eq!(run.error_type(), "SecretUnavailable", "{:#}", run.json);
    assert!(run.error_message().contains(&fx.secret_arn), "{}", run.error_message());
    assert!(started.elapsed() < Duration::from_secs(40), "bounded by the SDK timeouts, took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_rotated_password_is_picked_up_by_the_next_invocation() {
    let fx = Fixture::rotation().await;
    let (api, f) = function("migrate", &fx.env).await;
    assert_eq!(api.invoke(json!({"command": "status"}), T).await.ok()["status"], "pending");

    let new_password = random_password();
    secrets::register(&new_password);
    let mut fx = fx;
    fx.db.exec(&format!("ALTER ROLE {} PASSWORD '{new_password}'", fx.user)).await;
    fx.db.url = fx.db.url.replace(&fx.password, &new_password);
    let rotated = json!({"engine": "postgres", "host": "localhost", "port": server().port, "dbname": fx.db.name, "username": fx.user, "password": new_password});
    moto::put_secret(&fx.secret_arn, &rotated.to_string()).await;
    assert_eq!(
        api.invoke(json!({}), T).await.ok()["status"],
        "applied",
        "the same warm function uses the new password"
    );

    // The database changed but the secret did not: re-read once, then a clear AuthFailed.
    let other = random_password();
    secrets::register(&other);
    fx.db.exec(&format!("ALTER ROLE {} PASSWORD '{other}'", fx.user)).await;
    let (kind, msg) = api.invoke(json!({"command": "status"}), T).await.err();
    assert_eq!(kind, "AuthFailed");
    assert!(msg.contains(&fx.user), "{msg}");
    let logs = f.stop().await;
    assert!(logs.contains("re-reading the secret once"), "{logs}");
    secrets::assert_absent("function logs", &logs);
    assert!(!logs.contains(&fx.password));
}

#[tokio::test]
async fn a_snapshot_is_taken_only_when_there_is_pending_work() {
    let fx = Fixture::rotation().await;
    let rds = aws_sdk_rds::Client::new(&moto::sdk().await);
    let id = format!("snap-{}", fx.db.name.replace('_', "-"));
    moto::create_db_instance(&id, None, None).await;
    let snapshots = || async {
        rds.describe_db_snapshots().db_instance_identifier(&id).send().await.unwrap().db_snapshots().to_vec()
    };
    let env = fx.env_with(&[("SNAPSHOT_BEFORE_MIGRATE", "true"), ("DB_INSTANCE_IDENTIFIER", &id)]);
    let (api, f) = function("migrate", &env).await;
    let first = api.invoke(json!({}), T).await;
    let snap = first.ok()["snapshot"].as_str().expect("a snapshot id").to_string();
    assert!(snap.starts_with(&format!("scanner-migrator-{id}-before-000-initial-schema-")), "{snap}");
    let taken = snapshots().await;
    let ours: Vec<_> = taken.iter().filter(|s| s.db_snapshot_identifier() == Some(snap.as_str())).collect();
    assert_eq!(ours.len(), 1, "{taken:?}");
    assert_eq!(ours[0].status(), Some("available"));

    let second = api.invoke(json!({}), T).await;
    assert_eq!(second.ok()["status"], "up_to_date");
    assert!(second.ok()["snapshot"].is_null());
    assert_eq!(snapshots().await.len(), taken.len(), "no snapshot without pending work");
    f.stop().await;

    // A rollback drops data: with snapshots on it takes one first, like migrate.
    let (api, f) = function(
        "migrate",
        &fx.env_with(&[
            ("SNAPSHOT_BEFORE_MIGRATE", "true"),
            ("DB_INSTANCE_IDENTIFIER", &id),
            ("ALLOW_ROLLBACK", "true"),
        ]),
    )
    .await;
    let rollback = api.invoke(json!({"command": "rollback", "target": 1}), T).await;
    let snap = rollback.ok()["snapshot"].as_str().expect("a snapshot before the rollback").to_string();
    assert!(snap.starts_with(&format!("scanner-migrator-{id}-before-rollback-of-")), "{snap}");
    assert!(snapshots().await.iter().any(|s| s.db_snapshot_identifier() == Some(snap.as_str())));
    f.stop().await;
}

#[tokio::test]
async fn tls_verify_full_refuses_a_wrong_ca_and_a_wrong_hostname() {
    let fx = Fixture::rotation().await;
    let ok = fx.cli(&[], &["status"]).await;
    assert_eq!(ok.code, 0, "{:#}", ok.json);
    assert_eq!(ok.json["database"]["sslmode"], "verify-full");

    let wrong_ca = server().wrong_ca.display().to_string();
    let run = fx.cli(&[("DB_CA_BUNDLE", &wrong_ca)], &["status"]).await;
    assert_eq!(run.error_type(), "ConnectFailed");
    assert!(run.error_message().to_lowercase().contains("certificate"), "{}", run.error_message());

    // The certificate is for `localhost` only.
    let run = fx.cli(&[("DB_HOST", "127.0.0.1")], &["status"]).await;
    assert_eq!(run.error_type(), "ConnectFailed");
    let msg = run.error_message().to_lowercase();
    assert!(msg.contains("127.0.0.1") && (msg.contains("not valid for") || msg.contains("name")), "{msg}");

    // Relaxing it is explicit, and the result says so.
    let relaxed = fx.cli(&[("DB_HOST", "127.0.0.1"), ("DB_SSLMODE", "require")], &["status"]).await;
    assert_eq!(relaxed.code, 0, "{:#}", relaxed.json);
    assert_eq!(relaxed.json["database"]["sslmode"], "require");
}

#[tokio::test]
async fn outcomes_print_like_aws_lambda_invoke() {
    let ok = Outcome::Response(json!({"status": "up_to_date"}));
    assert!(ok.as_aws_cli().contains("\"StatusCode\": 200") && !ok.as_aws_cli().contains("FunctionError"));
}

#[tokio::test]
async fn too_little_time_stops_cleanly_between_migrations_and_says_what_is_pending() {
    let fx = Fixture::rotation().await;
    let (api, f) = function("migrate", &fx.env).await;
    // 3 s less the safety margin leaves under the 2 s needed to start a migration.
    let (kind, msg) = api.invoke(json!({}), Duration::from_secs(3)).await.err();
    assert_eq!(kind, "DeadlineReached", "{msg}");
    let labels = crate::support::all_labels().join(", ");
    assert!(msg.contains(&format!("left to do: [{labels}]")), "{msg}");
    assert!(fx.db.history().await.is_empty(), "nothing half-applied");
    assert_eq!(fx.db.advisory_locks().await, 0);
    assert_eq!(api.invoke(json!({}), T).await.ok()["status"], "applied", "the next invocation continues");
    f.stop().await;
}

#[tokio::test]
async fn iam_authentication_uses_a_signed_token_instead_of_the_password() {
    let fx = Fixture::rotation().await;
    // The local server knows only the password, so a token is refused: proof the password was not sent.
    let run = fx.cli(&[("DB_AUTH", "iam")], &["status"]).await;
    assert_eq!(run.error_type(), "AuthFailed", "{:#}", run.json);
    assert!(!run.stderr.contains("re-reading the secret"), "a token is not retried with a re-read secret");
    let everything = format!("{}{}", run.json, run.stderr);
    assert!(!everything.contains("X-Amz-Signature"), "the token is a credential too: {everything}");
    assert_eq!(fx.cli(&[("DB_AUTH", "password")], &["status"]).await.code, 0);
}

#[tokio::test]
async fn a_failing_refresh_is_counted_in_the_metrics_as_well_as_logged() {
    let fx = Fixture::rotation().await;
    // Nothing migrated: there is no job_progress to bring up to date.
    let (api, f) = function("refresh", &fx.env).await;
    let (kind, _) = api.invoke(json!({}), T).await.err();
    assert_eq!(kind, "DatabaseError");
    let logs = f.stop().await;
    let emf: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l.get("_aws").is_some())
        .collect();
    assert_eq!(emf.len(), 1, "one metric line: {logs}");
    assert_eq!(emf[0]["RefreshFailed"], 1.0);
    assert_eq!(emf[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"], "RefreshFailed");
}
