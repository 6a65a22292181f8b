//! `scanner-migrator new NAME` (issue 18, section 4): the next migration's pair, numbered and
//! headed as the guide's template has it, accepted by the engine and by squawk; each refusal
//! names what is wrong and writes nothing.

use std::{collections::BTreeSet, path::Path};

use scanner_migrator::migrations::Migrations;

use crate::support::{
    all_versions,
    cli::{Run, cli, migrator},
    migrations_copy,
    pg::{TestDb, root},
};

fn files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

async fn new(dir: &Path, args: &[&str]) -> Run {
    let mut all = vec!["--migrations-dir", dir.to_str().unwrap(), "new"];
    all.extend_from_slice(args);
    cli(&all, &[]).await
}

#[tokio::test]
async fn new_writes_the_next_pair_which_plan_lists_and_squawk_passes() {
    let dir = migrations_copy();
    let next = all_versions().last().unwrap() + 1;
    let run = new(dir.path(), &["add_widget"]).await;
    assert_eq!((run.code, run.status()), (0, "created"), "{:#}", run.json);
    let label = format!("{next:03}_add_widget");
    assert_eq!(run.json["migration"], label.as_str());
    let up = std::fs::read_to_string(dir.path().join(format!("{label}.sql"))).unwrap();
    let down = std::fs::read_to_string(dir.path().join(format!("{label}.down.sql"))).unwrap();
    let today = chrono::Utc::now().date_naive().to_string();
    assert!(
        up.starts_with(&format!("-- Migration: {label}\n-- Purpose: ")) && up.contains(&format!("-- Date: {today}\n")),
        "{up}"
    );
    assert!(up.contains("`-- migrate:no-transaction`") && up.contains("`-- migrate:replaces-checksum"), "{up}");
    assert!(down.starts_with(&format!("-- Rollback of {label}: ")), "{down}");
    let steps = run.json["next_steps"].to_string();
    assert!(steps.contains("squawk") && steps.contains("make test") && steps.contains(" plan"), "{steps}");

    let run = new(dir.path(), &["--no-transaction", "build_widget_index"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    let indexed = format!("{:03}_build_widget_index", next + 1);
    let read = Migrations::from_dir(dir.path()).unwrap();
    let (a, b) = (read.get(next).unwrap(), read.get(next + 1).unwrap());
    assert_eq!((a.label(), b.label()), (label.clone(), indexed.clone()));
    assert!(!a.up.no_transaction && b.up.no_transaction && b.down.as_ref().unwrap().no_transaction);

    let db = TestDb::new().await;
    let plan = migrator(&db.url, &["--migrations-dir", dir.path().to_str().unwrap(), "plan"]).await;
    assert_eq!(plan.code, 0, "{:#}", plan.json);
    let pending = plan.versions("pending");
    assert_eq!(pending[pending.len() - 2..], [next, next + 1], "{:#}", plan.json);

    let squawk = root().join(".venv/bin/squawk");
    assert!(squawk.exists(), "{} is missing: run make tools", squawk.display());
    let out = std::process::Command::new(&squawk)
        .arg("--config")
        .arg(root().join(".squawk.toml"))
        .args([&label, &indexed].iter().flat_map(|l| [format!("{l}.sql"), format!("{l}.down.sql")]))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "squawk: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn new_refuses_a_bad_name_or_a_taken_number_and_writes_nothing() {
    let dir = migrations_copy();
    let before = files(dir.path());
    let latest = *all_versions().last().unwrap();
    for (name, says) in [
        ("Add-Widget", "`Add-Widget` is not a snake_case name"),
        ("add__widget", "`add__widget` is not a snake_case name"),
        ("1st_widget", "`1st_widget` is not a snake_case name"),
        (&format!("{latest:03}_again"), &format!("version {latest:03} is taken by {latest:03}_")),
        ("001_early", "version 001 is taken by 001_add_execution_arn.sql"),
    ] {
        let run = new(dir.path(), &[name]).await;
        assert_eq!((run.code, run.error_type()), (1, "BadRequest"), "{name}: {:#}", run.json);
        assert!(run.error_message().contains(says), "{name}: {}", run.error_message());
        assert_eq!(files(dir.path()), before, "{name}: nothing written");
    }
    let taken = new(dir.path(), &[&format!("{latest:03}_again")]).await;
    assert!(taken.error_message().contains(&format!("the next free number is {:03}", latest + 1)), "{:#}", taken.json);

    // A number past the newest is the user's to choose; a free one below it would never apply.
    let run = new(dir.path(), &[&format!("{:03}_later", latest + 5)]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    let run = new(dir.path(), &[&format!("{:03}_between", latest + 2)]).await;
    assert!(run.error_message().contains(&format!("below the newest, {:03}", latest + 5)), "{:#}", run.json);

    // A file in the way: neither of the pair is written.
    let in_the_way = format!("{:03}_blocked.down.sql", latest + 6);
    std::fs::write(dir.path().join(&in_the_way), "SELECT 1;\n").unwrap();
    let before = files(dir.path());
    let run = new(dir.path(), &["blocked"]).await;
    assert_eq!(run.error_type(), "InvalidMigration", "the stray down file is named first: {:#}", run.json);
    assert_eq!(files(dir.path()), before);

    let missing = new(&dir.path().join("nope"), &["add_widget"]).await;
    assert!(missing.error_message().contains("is not a directory of migrations"), "{:#}", missing.json);
}

#[tokio::test]
async fn new_writes_into_migrations_of_the_current_directory_by_default() {
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("migrations")).unwrap();
    let out = std::process::Command::new(crate::support::cli::bin())
        .args(["new", "initial_schema"])
        .current_dir(work.path())
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        files(&work.path().join("migrations")),
        BTreeSet::from(["000_initial_schema.down.sql".to_string(), "000_initial_schema.sql".to_string()])
    );
}
