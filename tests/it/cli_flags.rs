//! The command line's conveniences: a CI gate on pending migrations, one word for the target,
//! every tunable's environment variable and default in `--help`, whole numbers kept whole.

use scanner_migrator::config::TUNABLES;

use crate::support::{
    cli::{bin, cli, migrator},
    pg::TestDb,
};

#[tokio::test]
async fn status_exit_code_gates_ci_on_pending_migrations() {
    let db = TestDb::new().await;
    let pending = migrator(&db.url, &["status", "--exit-code"]).await;
    assert_eq!((pending.code, pending.status()), (3, "pending"), "{:#}", pending.json);
    assert_eq!(migrator(&db.url, &["status"]).await.code, 0, "without the flag, pending is no failure");
    assert_eq!(migrator(&db.url, &["migrate"]).await.code, 0);
    let current = migrator(&db.url, &["status", "--exit-code"]).await;
    assert_eq!((current.code, current.status()), (0, "up_to_date"));
    // A broken connection is still 1, not "pending".
    let broken = migrator("postgres://u:pw@127.0.0.1:1/db", &["status", "--exit-code"]).await;
    assert_eq!(broken.code, 1);
}

#[tokio::test]
async fn rollback_takes_target_like_the_payload_and_to_as_before() {
    let db = TestDb::new().await;
    assert_eq!(migrator(&db.url, &["migrate"]).await.code, 0);
    let all = crate::support::all_versions();
    let below_last = all[all.len() - 2].to_string();
    let run = migrator(&db.url, &["rollback", "--target", &below_last]).await;
    assert_eq!(run.status(), "rolled_back", "{:#}", run.json);
    assert_eq!(migrator(&db.url, &["migrate"]).await.code, 0);
    assert_eq!(migrator(&db.url, &["rollback", "--to", &below_last]).await.status(), "rolled_back");
}

#[tokio::test]
async fn integers_are_integers_from_flags_and_from_the_environment() {
    for (args, envs) in [
        (vec!["--lock-retries", "2.5", "status"], vec![]),
        (vec!["status"], vec![("LOCK_RETRIES", "2.5")]),
        (vec!["--lock-timeout-ms", "1e3", "status"], vec![]),
    ] {
        let run = cli(&args, &envs).await;
        assert_eq!((run.code, run.error_type()), (2, "BadRequest"), "{args:?} {envs:?}: {:#}", run.json);
        let msg = run.error_message();
        assert!(msg.contains("whole") && (msg.contains("2.5") || msg.contains("1e3")), "{msg}");
        assert!(msg.contains("lock-retries") || msg.contains("lock-timeout-ms"), "names the flag: {msg}");
    }
}

#[test]
fn help_shows_every_tunables_variable_and_default() {
    let out = std::process::Command::new(bin()).arg("--help").env_clear().output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    for t in TUNABLES {
        let line =
            help.find(&format!("--{} ", t.flag)).map(|i| &help[i..]).unwrap_or_else(|| panic!("--{}: {help}", t.flag));
        let entry = &line[..line.find("\n      --").or_else(|| line.find("\n  -h")).unwrap_or(line.len())];
        assert!(entry.contains(&format!("[env: {}", t.var)), "{entry}");
        assert!(entry.contains(&format!("[default: {}]", t.default)), "{entry}");
    }
}
