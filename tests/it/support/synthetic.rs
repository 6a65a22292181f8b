//! Synthetic migrations, as a project a few years old accumulates them: each one a table with a
//! foreign key to `jobs`, an index and a view. Shared by the tests and `make bench` (issue 19),
//! so both measure the same SQL.

use std::path::Path;

/// The file name and text of synthetic migration `version`.
pub fn migration(version: i64) -> (String, String) {
    let name = format!("{version:03}_synthetic_{version}.sql");
    let sql = format!(
        "-- Migration: {version:03}_synthetic_{version}
CREATE TABLE IF NOT EXISTS synth_{version} (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    note       text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_synth_{version}_job ON synth_{version} (job_id, created_at);
CREATE OR REPLACE VIEW synth_{version}_per_job AS
    SELECT job_id, count(*) AS entries, max(created_at) AS last_at FROM synth_{version} GROUP BY job_id;
"
    );
    (name, sql)
}

/// Writes `count` synthetic migrations into `dir`, numbered from `first`; returns their versions.
pub fn write(dir: &Path, first: i64, count: usize) -> Vec<i64> {
    let versions: Vec<i64> = (first..first + count as i64).collect();
    for &v in &versions {
        let (name, sql) = migration(v);
        std::fs::write(dir.join(name), sql).expect("write a synthetic migration");
    }
    versions
}
