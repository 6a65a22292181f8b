//! The snapshot before migrating, done once: found again by its tags, waited for with the SDK's
//! waiter within the invocation's time, `SnapshotPending` when that runs out, an error naming a
//! failed or incompatible one. Against moto (through a proxy that shows the states moto skips).

use std::time::Duration;

use serde_json::json;

use crate::{
    lambda::{Fixture, T, function},
    support::{moto, rds_status::RdsStatus},
};

/// The manual snapshots of the instance (moto adds an automated one of its own).
async fn snapshots(id: &str) -> Vec<aws_sdk_rds::types::DbSnapshot> {
    let rds = aws_sdk_rds::Client::new(&moto::sdk().await);
    let out = rds.describe_db_snapshots().db_instance_identifier(id).snapshot_type("manual").send().await.unwrap();
    out.db_snapshots().to_vec()
}

fn tag<'a>(s: &'a aws_sdk_rds::types::DbSnapshot, key: &str) -> Option<&'a str> {
    s.tag_list().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

/// A fixture whose function snapshots instance `snap-<db>` in moto, through the proxy.
async fn setup() -> (Fixture, String, RdsStatus, Vec<(String, String)>) {
    let fx = Fixture::rotation().await;
    let id = format!("snap-{}", fx.db.name.replace('_', "-"));
    moto::create_db_instance(&id, None, None).await;
    let proxy = RdsStatus::start().await;
    let env = fx.env_with(&[
        ("SNAPSHOT_BEFORE_MIGRATE", "true"),
        ("DB_INSTANCE_IDENTIFIER", &id),
        ("DB_HOST", "localhost"),
        ("AWS_ENDPOINT_URL", &proxy.url),
    ]);
    (fx, id, proxy, env)
}

#[tokio::test]
async fn a_snapshot_slower_than_the_invocation_is_picked_up_by_the_next_one() {
    let (fx, id, proxy, env) = setup().await;
    let first = crate::support::all_labels()[0].clone();
    let (api, f) = function("migrate", &env).await;
    proxy.show(Some("creating"));
    // Two invocations while RDS is still creating it: both wait what they can, then say so.
    let mut pending = Vec::new();
    for _ in 0..2 {
        let (kind, msg) = api.invoke(json!({}), Duration::from_secs(6)).await.err();
        assert_eq!(kind, "SnapshotPending", "{msg}");
        assert!(msg.contains("still creating") && msg.contains("nothing was migrated"), "{msg}");
        pending.push(msg);
    }
    let taken = snapshots(&id).await;
    assert_eq!(taken.len(), 1, "one snapshot, not one per attempt: {taken:?}");
    let snap = taken[0].db_snapshot_identifier().unwrap().to_string();
    assert!(pending.iter().all(|m| m.contains(&snap)), "both name it: {pending:?}\n{}", f.log_text());
    assert_eq!(tag(&taken[0], "before-migration"), Some(first.as_str()));
    assert!(fx.db.history().await.is_empty(), "nothing ran while the snapshot was not there");

    // RDS finishes it: the next invocation migrates behind that same snapshot.
    proxy.show(None);
    let out = api.invoke(json!({}), T).await;
    assert_eq!(out.ok()["status"], "applied");
    assert_eq!(out.ok()["snapshot"], snap.as_str());
    let taken = snapshots(&id).await;
    assert_eq!(taken.len(), 1);
    assert!(tag(&taken[0], "scanner-migrator-used").is_some(), "used once, never again: {taken:?}");
    let logs = f.stop().await;
    assert!(logs.contains("reusing the snapshot"), "{logs}");
}

#[tokio::test]
async fn a_failed_or_incompatible_snapshot_is_an_error_naming_it() {
    let (fx, id, proxy, env) = setup().await;
    let (api, f) = function("migrate", &env).await;
    proxy.show(Some("creating"));
    let (kind, _) = api.invoke(json!({}), Duration::from_secs(4)).await.err();
    assert_eq!(kind, "SnapshotPending");
    let snap = snapshots(&id).await[0].db_snapshot_identifier().unwrap().to_string();
    for status in ["failed", "incompatible-restore"] {
        proxy.show(Some(status));
        let (kind, msg) = api.invoke(json!({}), T).await.err();
        assert_eq!(kind, "SnapshotFailed", "{msg}");
        assert!(msg.contains(&snap) && msg.contains(status) && msg.contains("delete"), "{msg}");
    }
    assert_eq!(snapshots(&id).await.len(), 1, "no new snapshot behind a failed one's back");
    assert!(fx.db.history().await.is_empty());
    f.stop().await;
}

#[tokio::test]
async fn a_migrate_that_changed_nothing_leaves_its_snapshot_for_the_retry() {
    let (fx, id, _proxy, env) = setup().await;
    let pairs = |env: &[(String, String)]| env.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>();
    let base = fx.cli(&[("SNAPSHOT_BEFORE_MIGRATE", "false")], &["migrate", "--target", "0"]).await;
    assert_eq!(base.code, 0, "{:#}", base.json);
    // A reader holds jobs: 001's ALTER TABLE times out, nothing of it committed.
    let mut reader = fx.db.conn().await;
    sqlx::Executor::execute(&mut reader, "BEGIN; LOCK TABLE jobs IN ACCESS SHARE MODE").await.unwrap();
    let env = pairs(&env);
    let with = |extra: &[(&str, &str)]| {
        let mut e = env.clone();
        for (k, v) in extra {
            e.retain(|(key, _)| key != k);
            e.push((k.to_string(), v.to_string()));
        }
        e
    };
    let run = |e: Vec<(String, String)>| async move {
        let pairs: Vec<(&str, &str)> = e.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        crate::support::cli::cli(&["migrate"], &pairs).await
    };
    let refused = run(with(&[("LOCK_TIMEOUT_MS", "200"), ("LOCK_RETRIES", "0")])).await;
    assert_eq!(refused.error_type(), "MigrationFailed", "{:#}", refused.json);
    assert!(refused.error_message().contains("55P03"), "{}", refused.error_message());
    assert_eq!(fx.db.history().await, vec![0], "nothing applied");
    let taken = snapshots(&id).await;
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(tag(&taken[0], "scanner-migrator-used"), None, "nothing went through: the snapshot is still good");
    let snap = taken[0].db_snapshot_identifier().unwrap().to_string();

    sqlx::Executor::execute(&mut reader, "ROLLBACK").await.unwrap();
    let out = run(with(&[])).await;
    assert_eq!(out.status(), "applied", "{:#}", out.json);
    assert_eq!(out.json["snapshot"], snap.as_str(), "the retry migrates behind the same snapshot");
    let taken = snapshots(&id).await;
    assert_eq!(taken.len(), 1, "no second snapshot: {taken:?}");
    assert!(tag(&taken[0], "scanner-migrator-used").is_some(), "used once it let a change through: {taken:?}");
}
