//! The migrator's own user: an RDS-shaped master has what every migration needs; a user with less
//! (an application owner without CREATEROLE) is told which privilege is missing, for what, and the
//! one-line fix, before anything is applied, and a role created once by hand is then enough.

use serde_json::json;

use crate::{
    lambda::{Fixture, random_password},
    support::{
        all_versions,
        cli::migrator_on,
        moto,
        pg::{PrivateServer, TestDb},
        secrets,
    },
};

#[tokio::test]
async fn an_owner_without_createrole_is_told_before_anything_is_applied_and_a_role_made_by_hand_is_enough() {
    // scanner_refresh belongs to the whole server: a server of this test's own, where it does not exist yet.
    let private = PrivateServer::start();
    let server = &private.server;
    let db = TestDb::new_on(server).await;
    let password = random_password();
    secrets::register(&password);
    db.exec_super(&format!(
        "CREATE ROLE app_owner LOGIN PASSWORD '{password}'; ALTER DATABASE {} OWNER TO app_owner;",
        db.name
    ))
    .await;
    let url = format!("postgres://app_owner:{password}@127.0.0.1:{}/{}", server.port, db.name);

    let refused = migrator_on(server, &url, &["migrate"]).await;
    assert_eq!(refused.code, 1, "{:#}", refused.json);
    assert_eq!(refused.error_type(), "InsufficientPrivilege");
    let message = refused.error_message();
    for needle in [
        "app_owner lacks the CREATEROLE attribute",
        "creating scanner_refresh (REFRESH_ROLE), the refresh function's own login",
        "nothing was applied",
        "ALTER ROLE app_owner CREATEROLE;",
        "CREATE ROLE scanner_refresh LOGIN;",
    ] {
        assert!(message.contains(needle), "`{needle}` missing from: {message}");
    }
    // Refused before the run starts: not even the history table is made.
    let recorded: bool = db.scalar_super("SELECT to_regclass('scanner_migrator_history') IS NOT NULL").await;
    assert!(!recorded, "nothing recorded");
    assert!(db.scalar_super::<bool>("SELECT to_regclass('jobs') IS NULL").await, "nothing applied: no jobs table");

    // The fix the message gives: the role, created once by someone who may. On RDS (rds_iam exists) the
    // next refusal, still before anything is applied, is the grant of rds_iam (IAM auth, the default
    // without REFRESH_SECRET_ARN), with its own fix.
    db.exec_super("CREATE ROLE scanner_refresh LOGIN").await;
    let refused = migrator_on(server, &url, &["migrate"]).await;
    assert_eq!(refused.error_type(), "InsufficientPrivilege", "{:#}", refused.json);
    assert!(refused.error_message().contains("GRANT rds_iam TO scanner_refresh;"), "{}", refused.error_message());
    assert!(db.scalar_super::<bool>("SELECT to_regclass('jobs') IS NULL").await, "nothing applied: no jobs table");
    db.exec_super("GRANT rds_iam TO scanner_refresh").await;
    let run = migrator_on(server, &url, &["migrate"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(run.status(), "applied");
    let versions: Vec<i64> =
        run.json["applied"].as_array().unwrap().iter().map(|a| a["version"].as_i64().unwrap()).collect();
    assert_eq!(versions, all_versions());
    assert!(
        db.scalar_super::<bool>(
            "SELECT has_function_privilege('scanner_refresh', 'refresh_job_progress()', 'EXECUTE')"
        )
        .await,
        "the refresh role may run the refresh"
    );
    assert_eq!(migrator_on(server, &url, &["verify"]).await.status(), "verified");
}

#[tokio::test]
async fn setting_the_refresh_password_without_createrole_is_refused_before_anything_is_applied() {
    let fx = Fixture::rotation().await;
    fx.db.exec_super(&format!("ALTER ROLE {} NOCREATEROLE", fx.user)).await;
    fx.db
        .exec_super(
            "DO $$ BEGIN CREATE ROLE scanner_refresh LOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
        )
        .await;
    let password = random_password();
    secrets::register(&password);
    let refresh_secret = moto::create_secret(
        &format!("refresh-priv/{}", fx.db.name),
        &json!({"username": "scanner_refresh", "password": password}).to_string(),
    )
    .await;
    let run = fx.cli(&[("REFRESH_SECRET_ARN", &refresh_secret)], &["migrate"]).await;
    assert_eq!(run.code, 1, "{:#}", run.json);
    assert_eq!(run.error_type(), "InsufficientPrivilege");
    let message = run.error_message();
    for needle in
        ["lacks the CREATEROLE attribute", "REFRESH_SECRET_ARN", &format!("ALTER ROLE {} CREATEROLE;", fx.user)]
    {
        assert!(message.contains(needle), "`{needle}` missing from: {message}");
    }
    assert!(fx.db.history().await.is_empty(), "nothing applied");
    // Without the password step (IAM for the refresh), the same user migrates.
    let run = fx.cli(&[], &["migrate"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(fx.db.history().await, all_versions());
}
