//! Shared helpers: the real PostgreSQL, the real binary, the secrets never to print.

pub mod cli;
pub mod lambda_standin;
pub mod moto;
pub mod pg;
pub mod rds_status;
pub mod runtime;
pub mod secrets;
pub mod synthetic;
pub mod terraform;
pub mod tls;

/// A directory of migration files for tests that need their own (edited, failing, extra).
pub fn migrations_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(pg::root().join("migrations")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

/// Every embedded version, oldest first: tests derive expectations from it, so adding a
/// migration touches no test.
pub fn all_versions() -> Vec<i64> {
    scanner_migrator::migrations::Migrations::embedded().unwrap().all().iter().map(|m| m.version).collect()
}

/// Every embedded migration's label (`000_initial_schema`), oldest first.
pub fn all_labels() -> Vec<String> {
    scanner_migrator::migrations::Migrations::embedded().unwrap().all().iter().map(|m| m.label()).collect()
}

/// A directory holding only the migrations up to `max` (the seed's 000-002 with `max` 2), for
/// tests about shapes those migrations make whatever later real migrations do.
pub fn seed_migrations(max: i64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(pg::root().join("migrations")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let version: i64 = name.split('_').next().unwrap().parse().unwrap();
        if version <= max {
            std::fs::copy(entry.path(), dir.path().join(&name)).unwrap();
        }
    }
    dir
}
