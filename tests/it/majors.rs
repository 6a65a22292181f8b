//! What must hold on every PostgreSQL major the migrator supports (13-18; `make test-pg-matrix`
//! runs these with each one): every migration up, verified, down and up again to the same catalog,
//! and a database that applied 003's first text (PostgreSQL 14+ only) accepted by the new binary.

use scanner_migrator::migrations::Migrations;
use sha2::{Digest, Sha256};

use crate::support::{all_versions, cli::migrator, migrations_copy, pg::TestDb};

/// 003 as first released: `CREATE OR REPLACE TRIGGER`, which PostgreSQL 13 does not have.
const FIRST_003: &str = include_str!("fixtures/003_incremental_job_progress.first.sql");
/// Its checksum, as the history tables of databases that applied it hold it.
const FIRST_003_SHA256: &str = "aa41cbbb505d11668be07e3125a71a2d0218fe8e5bea809e2344897804bcd529";

async fn major(db: &TestDb) -> i64 {
    db.scalar::<String>("SELECT current_setting('server_version_num')").await.parse::<i64>().unwrap() / 10000
}

/// The fingerprint plus the triggers (which it leaves out) and the checksums the history holds.
async fn catalog(db: &TestDb) -> String {
    let triggers: Option<String> = db
        .scalar(
            "SELECT string_agg(pg_get_triggerdef(t.oid), E'\\n' ORDER BY t.tgname) FROM pg_trigger t
              JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND NOT t.tgisinternal",
        )
        .await;
    format!("{}\n{}", db.fingerprint().await, triggers.unwrap_or_default())
}

async fn checksum_of(db: &TestDb, version: i64) -> String {
    db.scalar(&format!("SELECT checksum FROM scanner_migrator_history WHERE version = {version}")).await
}

#[tokio::test]
async fn every_migration_applies_verifies_rolls_back_and_applies_again_to_the_same_catalog() {
    let db = TestDb::new().await;
    let mut at = Vec::new();
    for v in all_versions() {
        let run = migrator(&db.url, &["migrate", "--target", &v.to_string()]).await;
        assert_eq!(run.code, 0, "PostgreSQL {}: migrate to {v}: {:#}", major(&db).await, run.json);
        assert_eq!(run.versions("applied"), vec![v]);
        assert_eq!(run.json["verification"]["ok"], true, "{:#}", run.json);
        at.push((v, catalog(&db).await));
    }
    for pair in at.windows(2).rev() {
        let ((below, expected), (v, _)) = (&pair[0], &pair[1]);
        let run = migrator(&db.url, &["rollback", "--to", &below.to_string()]).await;
        assert_eq!(run.code, 0, "rollback of {v}: {:#}", run.json);
        assert_eq!(run.versions("rolled_back"), vec![*v]);
        assert_eq!(&catalog(&db).await, expected, "rolling {v} back leaves the catalog of {below}");
        let verify = migrator(&db.url, &["verify"]).await;
        assert_eq!(verify.status(), "verified", "at {below}: {:#}", verify.json);
    }
    let again = migrator(&db.url, &["migrate"]).await;
    assert_eq!(again.code, 0, "{:#}", again.json);
    assert_eq!(again.versions("applied"), all_versions()[1..].to_vec());
    assert_eq!(catalog(&db).await, at.last().unwrap().1, "up, down to 0 and up again: the same catalog");
}

#[tokio::test]
async fn a_database_that_applied_the_first_003_keeps_working_with_the_new_one() {
    assert_eq!(hex::encode(Sha256::digest(FIRST_003.as_bytes())), FIRST_003_SHA256, "the fixture is the first 003");
    let new_003 = Migrations::embedded().unwrap().get(3).unwrap().up.checksum.clone();
    assert_ne!(new_003, FIRST_003_SHA256);
    let db = TestDb::new().await;
    let old = migrations_copy();
    std::fs::write(old.path().join("003_incremental_job_progress.sql"), FIRST_003).unwrap();
    let old_dir = old.path().to_str().unwrap();
    let first = migrator(&db.url, &["--migrations-dir", old_dir, "migrate"]).await;
    if major(&db).await < 14 {
        // Why 003 changed: its first text cannot run on 13; it stops at its first trigger, recorded as
        // partly applied (a no-transaction file), which the new 003 completes.
        assert_eq!(first.error_type(), "MigrationFailed", "{:#}", first.json);
        assert!(first.error_message().contains("TRIGGER"), "{}", first.error_message());
        let states = db.history_states().await;
        assert_eq!(states.last(), Some(&(3, "applying".to_string())), "{states:?}");
        let run = migrator(&db.url, &["migrate"]).await;
        assert_eq!(run.code, 0, "the new 003 completes what the first left: {:#}", run.json);
        assert_eq!(checksum_of(&db, 3).await, new_003);
        return;
    }
    assert_eq!(first.code, 0, "{:#}", first.json);
    assert_eq!(checksum_of(&db, 3).await, FIRST_003_SHA256);
    let applied_first = catalog(&db).await;

    // The new binary: reading commands accept the first text without changing anything...
    let verify = migrator(&db.url, &["verify"]).await;
    assert_eq!(verify.status(), "verified", "{:#}", verify.json);
    assert_eq!(checksum_of(&db, 3).await, FIRST_003_SHA256, "verify changes nothing");
    // ...and migrate records the new checksum, runs nothing, and the schema is the one it makes.
    let run = migrator(&db.url, &["migrate"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(run.status(), "up_to_date");
    assert!(run.stderr.contains("restamp"), "{}", run.stderr);
    assert_eq!(checksum_of(&db, 3).await, new_003);
    assert_eq!(catalog(&db).await, applied_first);
    let fresh = TestDb::new().await;
    assert_eq!(migrator(&fresh.url, &["migrate"]).await.code, 0);
    assert_eq!(catalog(&fresh).await, applied_first, "the first and the new 003 make the same schema");

    // Down and up again with the new text.
    let down = migrator(&db.url, &["rollback", "--to", "2"]).await;
    assert_eq!(down.code, 0, "{:#}", down.json);
    let up = migrator(&db.url, &["migrate"]).await;
    assert_eq!(up.code, 0, "{:#}", up.json);
    assert_eq!(catalog(&db).await, applied_first);

    // The binary that had the first text now meets the new checksum: it refuses, as an edit.
    let back = migrator(&db.url, &["--migrations-dir", old_dir, "status"]).await;
    assert_eq!(back.error_type(), "ChecksumMismatch", "{:#}", back.json);
}

/// Ignored in `make test` (its server is new enough): `make test-pg-matrix` runs it on PostgreSQL 12.
#[tokio::test]
#[ignore = "needs a server older than 13; make test-pg-matrix runs it with PostgreSQL 12"]
async fn a_server_older_than_13_is_refused_before_anything_is_read_or_changed() {
    let db = TestDb::new().await;
    let version: String = db.scalar("SELECT current_setting('server_version')").await;
    assert!(major(&db).await < 13, "run this with PG_BINDIR set to a PostgreSQL older than 13, not {version}");
    let before = catalog(&db).await;
    for args in [&["migrate"][..], &["status"], &["plan"], &["verify"], &["rollback", "--to", "0"]] {
        let run = migrator(&db.url, args).await;
        assert_ne!(run.code, 0, "{args:?}: {:#}", run.json);
        assert_eq!(run.error_type(), "UnsupportedPostgresVersion", "{args:?}: {:#}", run.json);
        let msg = run.error_message();
        assert!(
            msg.contains(&format!("PostgreSQL {version} is not supported")) && msg.contains("13 or newer"),
            "{msg}"
        );
    }
    assert_eq!(catalog(&db).await, before, "nothing changed");
    assert!(db.history().await.is_empty(), "not even the history table was created");
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'scanner_migrator%'").await, 0);
}
