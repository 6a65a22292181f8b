//! The refresh role (REFRESH_ROLE, scanner_refresh by default; one per database): it runs
//! refresh_job_progress() and can do nothing else;
//! it logs in with an IAM token (rds_iam, emulated here) or with a password the migrator sets from
//! its own secret, never the master's.

use serde_json::json;
use sqlx::{Connection, PgConnection};

use scanner_migrator::migrations::Migrations;

use crate::{
    lambda::{Fixture, T, function, random_password},
    support::{
        cli::{migrator, migrator_on},
        moto,
        pg::{PrivateServer, TestDb, server},
        secrets,
    },
};

/// The version of 004, and the one below it, from the embedded migrations.
fn refresh_role_version() -> (i64, i64) {
    let all = crate::support::all_versions();
    let i = all.iter().position(|v| *v == 4).expect("migration 004 is embedded");
    (all[i], all[i - 1])
}

/// Connects as `role` with `password` (TLS as the server offers it).
async fn as_refresh_role(db: &TestDb, role: &str, password: &str) -> PgConnection {
    let url = format!("postgres://{role}:{password}@127.0.0.1:{}/{}", server().port, db.name);
    PgConnection::connect(&url).await.unwrap_or_else(|e| panic!("{role} cannot log in: {e}"))
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
    // A role of this test's own: roles belong to the whole shared server, and on PostgreSQL 16+ only the
    // user that created a role (each fixture has its own master) may set its password.
    let role = format!("{}_refresh", fx.db.name);
    let password = random_password();
    secrets::register(&password);
    let refresh_secret = moto::create_secret(
        &format!("refresh/{}", fx.db.name),
        &json!({"username": role, "password": password}).to_string(),
    )
    .await;
    // The statements the server logs must hold no plaintext password: log every DDL of this database.
    fx.db.exec_super(&format!("ALTER DATABASE {} SET log_statement = 'ddl'", fx.db.name)).await;
    let (api, f) =
        function("migrate", &fx.env_with(&[("REFRESH_SECRET_ARN", &refresh_secret), ("REFRESH_ROLE", &role)])).await;
    let out = api.invoke(json!({}), T).await;
    assert_eq!(out.ok()["status"], "applied", "{:?}", out);
    let logs = f.stop().await;
    secrets::assert_absent("function logs", &logs);
    assert!(logs.contains(&format!("{role}'s password set from the secret")), "{logs}");

    let stored: String =
        fx.db.scalar_super(&format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'")).await;
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "a SCRAM verifier: {stored}");
    let server_log =
        std::env::temp_dir().join(format!("scanner-migrator-it-{}", std::process::id())).join("pg/server.log");
    let server_log = std::fs::read_to_string(&server_log).unwrap_or_default();
    assert!(server_log.contains(&format!("ALTER ROLE {role} PASSWORD 'SCRAM-SHA-256$")), "the statement is logged");
    assert!(!server_log.contains(&password), "the plaintext reached the server's log");

    // The role: the refresh, and nothing else.
    let mut conn = as_refresh_role(&fx.db, &role, &password).await;
    assert_eq!(sqlstate(&mut conn, "SELECT refresh_job_progress()").await, None);
    // Before PostgreSQL 15 PUBLIC may create in public: the role has that of PUBLIC's, nothing of its own.
    let public_creates: bool = fx.db.scalar("SELECT has_schema_privilege('public', 'public', 'CREATE')").await;
    let create = sqlstate(&mut conn, "CREATE TABLE mine (x int)").await;
    assert_eq!(create.as_deref(), if public_creates { None } else { Some("42501") }, "CREATE as PUBLIC may");
    for sql in [
        "SELECT count(*) FROM job_objects",
        "SELECT count(*) FROM jobs",
        "SELECT count(*) FROM job_progress",
        "INSERT INTO jobs (bucket) VALUES ('x')",
        // From 003 on job_progress is kept by the delta log and the folded counts (a plain view).
        "DELETE FROM job_progress_deltas",
        "UPDATE job_progress_counts SET total_objects = 0",
    ] {
        assert_eq!(sqlstate(&mut conn, sql).await.as_deref(), Some("42501"), "{role} may not: {sql}");
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
    let role = format!("{}_refresh", fx.db.name);
    let (api, f) =
        function("migrate", &fx.env_with(&[("REFRESH_SECRET_ARN", &fx.secret_arn), ("REFRESH_ROLE", &role)])).await;
    let (kind, msg) = api.invoke(json!({}), T).await.err();
    assert_eq!(kind, "SecretFormat");
    assert!(msg.contains(&fx.user) && msg.contains(&role) && msg.contains(&fx.secret_arn), "{msg}");
    f.stop().await;
    // The master can still log in with its password.
    let url = format!("postgres://{}:{}@127.0.0.1:{}/{}", fx.user, fx.password, server().port, fx.db.name);
    PgConnection::connect(&url).await.unwrap().close().await.unwrap();
}

#[tokio::test]
async fn with_iam_the_refresh_role_signs_a_token_and_reads_no_secret() {
    // RDS has an rds_iam role (the RDS-shaped master's server has one); with IAM auth the refresh role is
    // granted it. A role of this test's own: roles belong to the whole shared server.
    let db = TestDb::new().await;
    let role = format!("{}_iam_refresh", db.name);
    let run = migrator(&db.url, &["--refresh-role", &role, "--refresh-db-auth", "iam", "migrate"]).await;
    assert_eq!(run.status(), "applied", "{:#}", run.json);
    let member: bool = db.scalar(&format!("SELECT pg_has_role('{role}', 'rds_iam', 'MEMBER')")).await;
    assert!(member, "{role} is granted rds_iam");

    // The refresh function's environment in IAM mode: no DB_SECRET_ARN at all.
    let mut env = moto::aws_env();
    for (k, v) in [
        ("DB_AUTH", "iam".to_string()),
        ("DB_USER", role.clone()),
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
    assert!(msg.contains(&format!("user {role}")) && msg.contains("verify-full"), "{msg}");
    let logs = f.stop().await;
    assert!(!logs.contains("X-Amz-Signature=") || logs.contains("X-Amz-Signature=***"), "the token is a credential");
    assert!(!logs.to_lowercase().contains("secretsmanager"), "no secret is read: {logs}");
}

/// Whether `role` is a member of rds_iam, and may run the refresh.
async fn rds_iam_and_execute(db: &TestDb, role: &str) -> (bool, bool) {
    let mut c = db.conn().await;
    let row = sqlx::query_as(
        "SELECT pg_has_role($1, 'rds_iam', 'MEMBER'), has_function_privilege($1, 'refresh_job_progress()', 'EXECUTE')",
    )
    .bind(role)
    .fetch_one(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    row
}

#[tokio::test]
async fn with_password_auth_the_refresh_role_is_never_in_rds_iam_and_an_earlier_grant_is_revoked() {
    // On RDS a member of rds_iam cannot log in with a password: refresh_db_auth = "password" must not
    // make it one, and takes away what an earlier run (IAM auth, or the first text of 004) granted.
    let fx = Fixture::rotation().await;
    let role = format!("{}_pw_refresh", fx.db.name);
    let password = random_password();
    secrets::register(&password);
    let refresh_secret = moto::create_secret(
        &format!("refresh-pw/{}", fx.db.name),
        &json!({"username": role, "password": password}).to_string(),
    )
    .await;
    let iam = fx.cli(&[("REFRESH_ROLE", &role), ("REFRESH_DB_AUTH", "iam")], &["migrate"]).await;
    assert_eq!(iam.status(), "applied", "{:#}", iam.json);
    assert_eq!(rds_iam_and_execute(&fx.db, &role).await, (true, true), "IAM auth: a member of rds_iam");

    let with_password = [("REFRESH_ROLE", role.as_str()), ("REFRESH_SECRET_ARN", refresh_secret.as_str())];
    let run = fx.cli(&with_password, &["migrate"]).await;
    assert_eq!(run.status(), "up_to_date", "{:#}", run.json);
    assert_eq!(run.json["refresh_role"]["auth"], "password", "REFRESH_SECRET_ARN alone means password auth");
    let changed = run.json["refresh_role"]["changed"].to_string();
    assert!(changed.contains("rds_iam"), "the report says rds_iam was taken away: {changed}");
    assert_eq!(rds_iam_and_execute(&fx.db, &role).await, (false, true), "password auth: not a member of rds_iam");
    // It logs in with its password and refreshes.
    let refresh_env = fx.env_with(&[
        ("DB_SECRET_ARN", &refresh_secret),
        ("DB_HOST", "localhost"),
        ("DB_PORT", &server().port.to_string()),
        ("DB_NAME", &fx.db.name),
    ]);
    let pairs: Vec<(&str, &str)> = refresh_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let refreshed = crate::support::cli::cli(&["refresh"], &pairs).await;
    assert_eq!(refreshed.status(), "refreshed", "{:#}", refreshed.json);

    // Again: nothing to change, and it stays out of rds_iam.
    let again = fx.cli(&with_password, &["migrate"]).await;
    assert_eq!(again.json["refresh_role"]["changed"], json!([]), "{:#}", again.json);
    assert_eq!(rds_iam_and_execute(&fx.db, &role).await, (false, true));
    // Contradictory settings are refused at start-up, before anything is touched.
    let both = fx
        .cli(
            &[("REFRESH_ROLE", &role), ("REFRESH_SECRET_ARN", &refresh_secret), ("REFRESH_DB_AUTH", "iam")],
            &["migrate"],
        )
        .await;
    assert_eq!(both.error_type(), "ConfigError", "{:#}", both.json);
    assert!(both.error_message().contains("REFRESH_DB_AUTH"), "{}", both.error_message());
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
    let role = format!("{}_refresh", fx.db.name);
    let run = fx.cli(&[("REFRESH_SECRET_ARN", &missing), ("REFRESH_ROLE", &role)], &["migrate"]).await;
    assert_eq!(run.error_type(), "SecretUnavailable", "{:#}", run.json);
    let msg = run.error_message();
    assert!(msg.contains(&missing), "names the secret: {msg}");
    assert_eq!(fx.db.history().await, crate::support::all_versions(), "the migrations went through");
    for label in crate::support::all_labels() {
        assert!(msg.contains(&label), "the message lists {label} as applied: {msg}");
    }
    assert!(msg.contains("applied by this run"), "{msg}");
}

/// One stack's settings on a server of the test's own: its database, its master secret (the server's
/// master, as two stacks on one RDS instance share it), its refresh role and that role's own secret.
struct Stack {
    db: TestDb,
    role: String,
    password: String,
    migrate_env: Vec<(String, String)>,
    refresh_env: Vec<(String, String)>,
}

impl Stack {
    async fn new(server: &crate::support::pg::Server, label: &str) -> Self {
        let db = TestDb::new_on(server).await;
        let role = format!("{}_{label}_refresh", db.name);
        let password = random_password();
        secrets::register(&password);
        let master_secret = moto::create_secret(
            &format!("db/{}", db.name),
            &json!({"engine": "postgres", "host": "localhost", "port": server.port, "dbname": db.name,
                    "username": server.master, "password": server.master_password})
            .to_string(),
        )
        .await;
        let refresh_secret = moto::create_secret(
            &format!("refresh/{}", db.name),
            &json!({"username": role, "password": password}).to_string(),
        )
        .await;
        let mut common = moto::aws_env();
        common.push(("DB_CA_BUNDLE".into(), server.ca.display().to_string()));
        let mut migrate_env = common.clone();
        for (k, v) in [
            ("DB_SECRET_ARN", master_secret.as_str()),
            ("REFRESH_SECRET_ARN", &refresh_secret),
            ("REFRESH_ROLE", &role),
            ("REFRESH_DB_AUTH", "password"),
        ] {
            migrate_env.push((k.into(), v.into()));
        }
        // The refresh function as the module deploys it with refresh_db_auth = "password".
        let mut refresh_env = common;
        for (k, v) in [
            ("DB_SECRET_ARN", refresh_secret.clone()),
            ("DB_HOST", "localhost".into()),
            ("DB_PORT", server.port.to_string()),
            ("DB_NAME", db.name.clone()),
            // Every refresh of the test does the work, however close together.
            ("REFRESH_MIN_INTERVAL_S", "0".into()),
        ] {
            refresh_env.push((k.into(), v));
        }
        Stack { db, role, password, migrate_env, refresh_env }
    }

    async fn run(env: &[(String, String)], args: &[&str]) -> crate::support::cli::Run {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        crate::support::cli::cli(args, &pairs).await
    }

    async fn migrate(&self) -> crate::support::cli::Run {
        let run = Self::run(&self.migrate_env, &["migrate"]).await;
        assert_eq!(run.code, 0, "{} migrate: {:#}", self.db.name, run.json);
        assert_eq!(run.json["refresh_role"]["role"], self.role.as_str(), "{:#}", run.json);
        assert_eq!(run.json["refresh_role"]["password_set"], true, "{:#}", run.json);
        run
    }

    async fn refresh(&self) {
        let run = Self::run(&self.refresh_env, &["refresh"]).await;
        assert_eq!(run.code, 0, "{}'s refresh as {}: {:#}", self.db.name, self.role, run.json);
        assert_eq!(run.status(), "refreshed", "{:#}", run.json);
    }

    /// A connection as this stack's refresh role to `db`, or the SQLSTATE that refused it.
    async fn login(&self, server: &crate::support::pg::Server, db: &TestDb) -> Result<PgConnection, String> {
        let url = format!("postgres://{}:{}@127.0.0.1:{}/{}", self.role, self.password, server.port, db.name);
        PgConnection::connect(&url).await.map_err(|e| {
            e.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned()).unwrap_or_else(|| e.to_string())
        })
    }
}

#[tokio::test]
async fn two_databases_on_one_server_each_have_their_own_refresh_role_and_never_lock_each_other_out() {
    // Roles belong to the whole server: a server of this test's own.
    let private = PrivateServer::start();
    let server = &private.server;
    let a = Stack::new(server, "a").await;
    let b = Stack::new(server, "b").await;

    // Interleaved as two stacks' applies and schedules are: each migrate sets only its own role's password.
    let first = a.migrate().await;
    assert_eq!(first.status(), "applied");
    let changed = first.json["refresh_role"]["changed"].to_string();
    assert!(changed.contains(&format!("created {}", a.role)), "{changed}");
    assert_eq!(b.migrate().await.status(), "applied");
    a.refresh().await;
    b.refresh().await;
    assert_eq!(a.migrate().await.status(), "up_to_date");
    b.refresh().await;
    a.refresh().await;

    // Each role has exactly what its refresh needs, in its own database only.
    for (me, mine, theirs) in [(&a, &a.db, &b.db), (&b, &b.db, &a.db)] {
        let grants: (bool, bool, bool) = {
            let mut c = mine.conn().await;
            let row = sqlx::query_as(
                "SELECT has_function_privilege($1, 'refresh_job_progress()', 'EXECUTE'),
                        has_database_privilege($1, current_database(), 'CONNECT'),
                        pg_has_role($1, 'rds_iam', 'MEMBER')",
            )
            .bind(&me.role)
            .fetch_one(&mut c)
            .await
            .unwrap();
            c.close().await.unwrap();
            row
        };
        assert_eq!(
            grants,
            (true, true, false),
            "{}: EXECUTE, CONNECT, and no rds_iam (it logs in with a password)",
            me.role
        );
        let mut other = theirs.conn().await;
        let may_run: bool =
            sqlx::query_scalar("SELECT has_function_privilege($1, 'refresh_job_progress()', 'EXECUTE')")
                .bind(&me.role)
                .fetch_one(&mut other)
                .await
                .unwrap();
        other.close().await.unwrap();
        assert!(!may_run, "{} may not run the other database's refresh", me.role);
        // PUBLIC's CONNECT (PostgreSQL's default) lets it in, to nothing.
        let mut conn = me.login(server, theirs).await.expect("PUBLIC may connect by default");
        for sql in ["SELECT refresh_job_progress()", "SELECT count(*) FROM jobs", "SELECT count(*) FROM job_progress"] {
            assert_eq!(
                sqlstate(&mut conn, sql).await.as_deref(),
                Some("42501"),
                "{} in the other database: {sql}",
                me.role
            );
        }
        conn.close().await.unwrap();
    }

    // Where the owner takes CONNECT from PUBLIC, the other stack's role cannot even connect, and each
    // refresh still can: its own CONNECT.
    for s in [&a, &b] {
        s.db.exec(&format!("REVOKE CONNECT ON DATABASE {} FROM PUBLIC", s.db.name)).await;
    }
    assert_eq!(a.login(server, &b.db).await.err().as_deref(), Some("42501"), "a's role connects to b");
    assert_eq!(b.login(server, &a.db).await.err().as_deref(), Some("42501"), "b's role connects to a");
    a.refresh().await;
    b.refresh().await;
}

const FIRST_004: &str = include_str!("fixtures/004_refresh_role.first.sql");

#[tokio::test]
async fn a_database_that_applied_the_first_004_keeps_working_and_moves_to_a_role_of_its_own_when_told() {
    // The first 004 made scanner_refresh (server-wide) a member of rds_iam: a server of this test's own.
    let private = PrivateServer::start();
    let server = &private.server;
    let db = TestDb::new_on(server).await;
    let old = crate::support::migrations_copy();
    std::fs::write(old.path().join("004_refresh_role.sql"), FIRST_004).unwrap();
    let old_dir = old.path().to_str().unwrap();
    let first = migrator_on(server, &db.url, &["--migrations-dir", old_dir, "migrate"]).await;
    assert_eq!(first.code, 0, "{:#}", first.json);
    let checksum =
        || async { db.scalar::<String>("SELECT checksum FROM scanner_migrator_history WHERE version = 4").await };
    assert_eq!(checksum().await, "73c06392c91216bd26f8717221625430183886e7ba12a3fc2ed6f6cb979a4a08", "the first 004");
    assert_eq!(rds_iam_and_execute(&db, "scanner_refresh").await, (true, true));

    // The new binary, password auth for scanner_refresh: accepted, restamped, rds_iam taken away.
    let run = migrator_on(server, &db.url, &["--refresh-db-auth", "password", "migrate"]).await;
    assert_eq!(run.status(), "up_to_date", "{:#}", run.json);
    assert_eq!(checksum().await, Migrations::embedded().unwrap().get(4).unwrap().up.checksum);
    assert_eq!(rds_iam_and_execute(&db, "scanner_refresh").await, (false, true), "scanner_refresh keeps working");

    // Told to move (REFRESH_ROLE): the new role gets the refresh, scanner_refresh loses it here, and the
    // report says how to drop it once no database uses it.
    let role = format!("{}_moved_refresh", db.name);
    let moved =
        migrator_on(server, &db.url, &["--refresh-role", &role, "--refresh-db-auth", "password", "migrate"]).await;
    assert_eq!(moved.status(), "up_to_date", "{:#}", moved.json);
    let changed = moved.json["refresh_role"]["changed"].to_string();
    assert!(changed.contains("DROP ROLE scanner_refresh;"), "{changed}");
    assert_eq!(rds_iam_and_execute(&db, &role).await, (false, true));
    assert_eq!(rds_iam_and_execute(&db, "scanner_refresh").await, (false, false), "scanner_refresh has nothing here");
    assert_eq!(migrator_on(server, &db.url, &["verify"]).await.status(), "verified");

    // Rolling 004 back takes the configured role's grants and the role itself; the function is anyone's again.
    let (_, below) = refresh_role_version();
    let down = migrator_on(server, &db.url, &["--refresh-role", &role, "rollback", "--to", &below.to_string()]).await;
    assert_eq!(down.status(), "rolled_back", "{:#}", down.json);
    assert!(!db.scalar::<bool>(&format!("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}')")).await);
    assert!(db.scalar::<bool>("SELECT has_function_privilege('public', 'refresh_job_progress()', 'EXECUTE')").await);
}
