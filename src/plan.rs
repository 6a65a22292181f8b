//! What to run: the embedded migrations against the history table. Pure functions.

use serde::Serialize;

use crate::{
    error::{Error, Result},
    migrations::{ChecksumMatch, Migration, Migrations},
};

/// One row of the history table.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// Migration version.
    pub version: i64,
    /// Migration name at the time it was applied.
    pub name: String,
    /// Checksum of the file that was applied.
    pub checksum: String,
    /// When it finished.
    pub applied_at: chrono::DateTime<chrono::Utc>,
    /// How long it took.
    pub duration_ms: i64,
    /// Who applied it: the Lambda request id, or `cli:<user>@<host>`.
    pub applied_by: String,
    /// Whether it is wholly applied, or a rollback of it stopped part-way.
    pub state: State,
}

/// The state of a version in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Applied wholly.
    Applied,
    /// Its no-transaction down script started and did not finish: some of its objects may be
    /// gone. `migrate` re-applies it (migrations are idempotent); `rollback` runs the rest.
    RollingBack,
    /// Its no-transaction up script started and did not finish: some of its objects exist.
    /// `migrate` runs it again (migrations are idempotent); `rollback` runs its down script.
    Applying,
}

impl State {
    /// From the history table's `state` column.
    pub fn from_column(s: &str) -> Self {
        match s {
            "rolling_back" => State::RollingBack,
            "applying" => State::Applying,
            _ => State::Applied,
        }
    }
}

/// The outcome of comparing the binary's migrations with the database's history.
#[derive(Debug)]
pub struct Plan<'a> {
    /// Migrations to apply, oldest first.
    pub pending: Vec<&'a Migration>,
    /// Versions in the history that this binary does not know (applied by a newer binary).
    pub unknown: Vec<Applied>,
    /// The newest applied version, if any.
    pub current: Option<i64>,
    /// Applied versions whose history holds the checksum of an earlier text the file declares it
    /// replaces (`migrate:replaces-checksum`): (version, that checksum). `migrate` records the new one.
    pub restamp: Vec<(i64, String)>,
}

/// Compares embedded migrations with the history; refuses edited applied migrations.
pub fn plan<'a>(migrations: &'a Migrations, applied: &[Applied], target: Option<i64>) -> Result<Plan<'a>> {
    if let Some(t) = target
        && migrations.get(t).is_none()
    {
        return Err(Error::BadRequest(format!(
            "target {t} is not a known migration version (known: {})",
            versions(migrations)
        )));
    }
    let mut restamp = Vec::new();
    for row in applied {
        let Some(m) = migrations.get(row.version) else { continue };
        match m.up.checksum_match(&row.checksum) {
            ChecksumMatch::Same => {}
            ChecksumMatch::Replaced => restamp.push((row.version, row.checksum.clone())),
            ChecksumMatch::Mismatch => {
                return Err(Error::ChecksumMismatch {
                    version: row.version,
                    name: m.name.clone(),
                    applied: row.checksum.clone(),
                    embedded: m.up.checksum.clone(),
                });
            }
        }
    }
    let pending = migrations
        .all()
        .iter()
        .filter(|m| target.is_none_or(|t| m.version <= t))
        .filter(|m| !applied.iter().any(|a| a.version == m.version && a.state == State::Applied))
        .collect();
    let unknown = applied.iter().filter(|a| migrations.get(a.version).is_none()).cloned().collect();
    Ok(Plan { pending, unknown, current: applied.iter().map(|a| a.version).max(), restamp })
}

/// The migrations `rollback --to target` undoes, newest first.
pub fn rollback_plan<'a>(migrations: &'a Migrations, applied: &[Applied], target: i64) -> Result<Vec<&'a Migration>> {
    if target < 0 {
        return Err(Error::BadRequest(format!(
            "rollback target {target} is negative; the oldest migration is irreversible"
        )));
    }
    plan(migrations, applied, None)?;
    let mut undo = Vec::new();
    let mut above: Vec<&Applied> = applied.iter().filter(|a| a.version > target).collect();
    above.sort_by_key(|a| std::cmp::Reverse(a.version));
    for row in above {
        let m = migrations.get(row.version).ok_or_else(|| {
            Error::BadRequest(format!(
                "cannot roll back migration {:03} ({}): this binary does not know it; use the binary that applied it",
                row.version, row.name
            ))
        })?;
        if m.down.is_none() {
            return Err(Error::BadRequest(format!(
                "cannot roll back migration {} to reach {target}: it has no .down.sql (irreversible)",
                m.label()
            )));
        }
        undo.push(m);
    }
    Ok(undo)
}

fn versions(migrations: &Migrations) -> String {
    migrations.all().iter().map(|m| m.version.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migrations() -> Migrations {
        let f = |n: &str, t: &str| (n.to_string(), t.to_string());
        Migrations::from_files([
            f("000_a.sql", "SELECT 0;"),
            f("001_b.sql", "SELECT 1;"),
            f("001_b.down.sql", "SELECT -1;"),
            f("002_c.sql", "SELECT 2;"),
            f("002_c.down.sql", "SELECT -2;"),
        ])
        .unwrap()
    }

    fn applied(m: &Migrations, versions: &[i64]) -> Vec<Applied> {
        versions
            .iter()
            .map(|&v| {
                let mig = m.get(v);
                Applied {
                    version: v,
                    name: mig.map(|m| m.name.clone()).unwrap_or_else(|| "future".into()),
                    checksum: mig.map(|m| m.up.checksum.clone()).unwrap_or_default(),
                    applied_at: chrono::Utc::now(),
                    duration_ms: 1,
                    applied_by: "test".into(),
                    state: State::Applied,
                }
            })
            .collect()
    }

    fn pending_versions(p: &Plan) -> Vec<i64> {
        p.pending.iter().map(|m| m.version).collect()
    }

    #[test]
    fn fresh_database_gets_everything_in_order() {
        let m = migrations();
        let p = plan(&m, &[], None).unwrap();
        assert_eq!(pending_versions(&p), vec![0, 1, 2]);
        assert_eq!(p.current, None);
    }

    #[test]
    fn target_limits_and_applied_are_skipped() {
        let m = migrations();
        let p = plan(&m, &applied(&m, &[0]), Some(1)).unwrap();
        assert_eq!(pending_versions(&p), vec![1]);
        assert_eq!(p.current, Some(0));
        assert!(plan(&m, &applied(&m, &[0, 1, 2]), None).unwrap().pending.is_empty());
        assert!(matches!(plan(&m, &[], Some(7)), Err(Error::BadRequest(msg)) if msg.contains("known: 0, 1, 2")));
    }

    #[test]
    fn edited_applied_migration_is_refused_with_both_checksums() {
        let m = migrations();
        let mut rows = applied(&m, &[0, 1]);
        rows[1].checksum = "deadbeef".into();
        let err = plan(&m, &rows, None).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::ChecksumMismatch { version: 1, .. }));
        assert!(text.contains("deadbeef") && text.contains(&m.get(1).unwrap().up.checksum), "{text}");
    }

    #[test]
    fn a_replaced_checksum_is_applied_and_restamped_not_refused() {
        let f = |n: &str, t: &str| (n.to_string(), t.to_string());
        let first = Migrations::from_files([f("000_a.sql", "SELECT 0;"), f("001_b.sql", "SELECT 1;")]).unwrap();
        let rows = applied(&first, &[0, 1]);
        let old = rows[1].checksum.clone();
        let text = format!("-- migrate:replaces-checksum {old}\nSELECT 1 + 0;");
        let second = Migrations::from_files([f("000_a.sql", "SELECT 0;"), f("001_b.sql", &text)]).unwrap();
        let p = plan(&second, &rows, None).unwrap();
        assert!(p.pending.is_empty(), "the replaced text counts as applied");
        assert_eq!(p.restamp, vec![(1, old)]);
        assert!(plan(&second, &applied(&second, &[0, 1]), None).unwrap().restamp.is_empty(), "restamped once");
        let mut rows = applied(&second, &[0, 1]);
        rows[1].checksum = "f".repeat(64);
        assert!(matches!(plan(&second, &rows, None), Err(Error::ChecksumMismatch { version: 1, .. })));
    }

    #[test]
    fn a_rollback_stopped_part_way_is_pending_again() {
        let m = migrations();
        let mut rows = applied(&m, &[0, 1, 2]);
        rows[2].state = State::RollingBack;
        assert_eq!(pending_versions(&plan(&m, &rows, None).unwrap()), vec![2]);
        let undo: Vec<i64> = rollback_plan(&m, &rows, 1).unwrap().iter().map(|m| m.version).collect();
        assert_eq!(undo, vec![2], "and rollback can finish it");
    }

    #[test]
    fn unknown_versions_are_reported_not_fatal() {
        let m = migrations();
        let p = plan(&m, &applied(&m, &[0, 1, 2, 9]), None).unwrap();
        assert!(p.pending.is_empty());
        assert_eq!(p.unknown.iter().map(|a| a.version).collect::<Vec<_>>(), vec![9]);
        assert_eq!(p.current, Some(9));
    }

    #[test]
    fn rollback_goes_newest_first_and_refuses_irreversible() {
        let m = migrations();
        let rows = applied(&m, &[0, 1, 2]);
        let undo: Vec<i64> = rollback_plan(&m, &rows, 0).unwrap().iter().map(|m| m.version).collect();
        assert_eq!(undo, vec![2, 1]);
        assert!(rollback_plan(&m, &rows, 2).unwrap().is_empty());
        assert!(matches!(rollback_plan(&m, &rows, -1), Err(Error::BadRequest(_))));
        let rows = applied(&m, &[0, 1, 2, 9]);
        assert!(matches!(rollback_plan(&m, &rows, 1), Err(Error::BadRequest(msg)) if msg.contains("does not know")));
    }
}
