//! The migration files: how they are named, embedded, checksummed, and what their header
//! directives say. Everything here is pure.

use std::{collections::BTreeMap, path::Path};

use sha2::{Digest, Sha256};

use crate::{
    error::{Error, Result},
    split::{Statement, split_statements},
};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_migrations.rs"));
}

/// One schema change: its up script and, when it is reversible, its down script.
#[derive(Debug, Clone)]
pub struct Migration {
    /// The number in front of the file name (`001_...` is 1).
    pub version: i64,
    /// The rest of the file name (`add_execution_arn`).
    pub name: String,
    /// The `NNN_name.sql` file.
    pub up: Script,
    /// The `NNN_name.down.sql` file, when there is one.
    pub down: Option<Script>,
}

impl Migration {
    /// `001_add_execution_arn`, as people write it.
    pub fn label(&self) -> String {
        format!("{:03}_{}", self.version, self.name)
    }
}

/// One SQL file, LF-normalised, with its checksum and directives.
#[derive(Debug, Clone)]
pub struct Script {
    /// The file name.
    pub file: String,
    /// The text with CRLF turned into LF.
    pub sql: String,
    /// Hex SHA-256 of `sql`.
    pub checksum: String,
    /// `-- migrate:no-transaction`: run statement by statement, outside a transaction.
    pub no_transaction: bool,
    /// `-- migrate:replaces-checksum <sha256>`: checksums of earlier texts of this file that leave
    /// the same schema, so a database that applied one of them is accepted (and restamped).
    pub replaces_checksums: Vec<String>,
    /// `-- migrate:batch`: statements run again and again, a batch per transaction, until they
    /// change no row (src/batch.rs).
    pub batches: Vec<crate::batch::Batch>,
}

/// How a checksum in the history relates to a script's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumMatch {
    /// The history holds this very text's checksum.
    Same,
    /// The history holds the checksum of an earlier text this one declares it replaces.
    Replaced,
    /// The file was edited after it was applied.
    Mismatch,
}

/// 000-002 still carry the `-- verify:` lines that earlier versions read: they stay, because
/// editing an applied file changes its checksum, but nothing reads them any more.
const LEGACY_VERIFY_LINES_UP_TO: i64 = 2;

/// The ordered set of migrations the binary knows.
#[derive(Debug, Clone)]
pub struct Migrations(Vec<Migration>);

impl Migrations {
    /// The migrations compiled into the binary from `migrations/`.
    pub fn embedded() -> Result<Self> {
        Self::from_files(embedded::FILES.iter().map(|(n, t)| (n.to_string(), t.to_string())))
    }

    /// Reads `*.sql` from a directory (for trying out a new migration before building).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let bad = |problem: String| Error::Config { var: "--migrations-dir".into(), problem };
        let entries = std::fs::read_dir(dir).map_err(|e| bad(format!("{}: {e}", dir.display())))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| bad(format!("{}: {e}", dir.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".sql") {
                let text = std::fs::read_to_string(entry.path())
                    .map_err(|e| bad(format!("{}: {e}", entry.path().display())))?;
                files.push((name, text));
            }
        }
        Self::from_files(files)
    }

    /// Pairs up and down files by version; refuses malformed names and duplicates.
    pub fn from_files(files: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let mut ups: BTreeMap<i64, (String, Script)> = BTreeMap::new();
        let mut downs: BTreeMap<i64, Script> = BTreeMap::new();
        for (file, text) in files {
            let invalid = |problem: &str| Error::InvalidMigration { file: file.clone(), problem: problem.into() };
            let (stem, is_down) = match file.strip_suffix(".down.sql") {
                Some(stem) => (stem, true),
                None => (file.strip_suffix(".sql").ok_or_else(|| invalid("not a .sql file"))?, false),
            };
            let (number, name) = stem.split_once('_').ok_or_else(|| invalid("expected NNN_description.sql"))?;
            if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
                return Err(invalid("expected NNN_description.sql"));
            }
            let version: i64 = number.parse().map_err(|_| invalid("version number too large"))?;
            let script = Script::parse(&file, &text)?;
            if version > LEGACY_VERIFY_LINES_UP_TO
                && script.sql.lines().any(|l| l.trim_start().starts_with("-- verify:"))
            {
                return Err(invalid(
                    "`-- verify:` lines are not read: verification is derived from the migrations themselves \
                     (README, \"How a migration runs\"); remove the line",
                ));
            }
            if is_down {
                if downs.insert(version, script).is_some() {
                    return Err(invalid("two down files with the same version"));
                }
            } else if let Some((other, _)) = ups.insert(version, (name.to_string(), script)) {
                return Err(invalid(&format!("version {version:03} is also used by {number}_{other}.sql")));
            }
        }
        if let Some((version, script)) = downs.iter().find(|(v, _)| !ups.contains_key(v)) {
            return Err(Error::InvalidMigration {
                file: script.file.clone(),
                problem: format!("no up migration with version {version:03}"),
            });
        }
        Ok(Migrations(
            ups.into_iter()
                .map(|(version, (name, up))| Migration { version, name, up, down: downs.remove(&version) })
                .collect(),
        ))
    }

    /// All migrations, oldest first.
    pub fn all(&self) -> &[Migration] {
        &self.0
    }

    /// The migration with this version.
    pub fn get(&self, version: i64) -> Option<&Migration> {
        self.0.iter().find(|m| m.version == version)
    }

    /// The newest version the binary knows.
    pub fn latest(&self) -> Option<i64> {
        self.0.last().map(|m| m.version)
    }
}

impl Script {
    /// Normalises line ends, checksums, and reads the header directives.
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let sql = text.replace("\r\n", "\n");
        let checksum = hex::encode(Sha256::digest(sql.as_bytes()));
        let mut no_transaction = false;
        let mut replaces_checksums = Vec::new();
        let mut batch_directives = Vec::new();
        let invalid = |problem: String| Error::InvalidMigration { file: file.into(), problem };
        for (n, line) in sql.lines().enumerate() {
            let Some(comment) = line.trim().strip_prefix("--") else { continue };
            let comment = comment.trim();
            if let Some(directive) = comment.strip_prefix("migrate:") {
                let directive = directive.trim();
                if directive == "no-transaction" {
                    no_transaction = true;
                } else if let Some(rest) = directive.strip_prefix("batch-left") {
                    batch_directives.push(crate::batch::parse_directive(n + 1, rest, true).map_err(invalid)?);
                } else if let Some(rest) =
                    directive.strip_prefix("batch").filter(|r| r.is_empty() || r.starts_with(' '))
                {
                    batch_directives.push(crate::batch::parse_directive(n + 1, rest, false).map_err(invalid)?);
                } else if let Some(old) = directive.strip_prefix("replaces-checksum") {
                    let old = old.trim();
                    if old.len() != 64 || !old.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                        return Err(Error::InvalidMigration {
                            file: file.into(),
                            problem: format!(
                                "`migrate:replaces-checksum {old}`: expected the 64 lowercase hex digits of a \
                                 SHA-256, as the history table's checksum column shows it"
                            ),
                        });
                    }
                    replaces_checksums.push(old.to_string());
                } else {
                    return Err(Error::InvalidMigration {
                        file: file.into(),
                        problem: format!(
                            "unknown directive `migrate:{directive}` (known: migrate:no-transaction, \
                             migrate:replaces-checksum <sha256>, migrate:batch [pause-ms=N], migrate:batch-left <query>)"
                        ),
                    });
                }
            }
        }
        let batches = if batch_directives.is_empty() {
            Vec::new()
        } else {
            crate::batch::tie(&batch_directives, &split_statements(&sql), no_transaction).map_err(invalid)?
        };
        Ok(Script { file: file.into(), sql, checksum, no_transaction, replaces_checksums, batches })
    }

    /// Whether a checksum the history holds for this script's version stands for this text.
    pub fn checksum_match(&self, applied: &str) -> ChecksumMatch {
        if applied == self.checksum {
            ChecksumMatch::Same
        } else if self.replaces_checksums.iter().any(|c| c == applied) {
            ChecksumMatch::Replaced
        } else {
            ChecksumMatch::Mismatch
        }
    }

    /// The statements of the script, in order, without the empty ones.
    pub fn statements(&self) -> Vec<Statement> {
        split_statements(&self.sql)
    }

    /// The `migrate:batch` directive of the statement at `line`, if it has one.
    pub fn batch_at(&self, line: usize) -> Option<&crate::batch::Batch> {
        self.batches.iter().find(|b| b.statement_line == line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_ignores_crlf() {
        let a = Script::parse("001_a.sql", "SELECT 1;\nSELECT 2;\n").unwrap();
        let b = Script::parse("001_a.sql", "SELECT 1;\r\nSELECT 2;\r\n").unwrap();
        assert_eq!(a.checksum, b.checksum);
        let c = Script::parse("001_a.sql", "SELECT 1;\nSELECT 3;\n").unwrap();
        assert_ne!(a.checksum, c.checksum);
    }

    #[test]
    fn directives_are_read_and_verify_lines_refused_in_new_files() {
        let s = Script::parse("002_x.sql", "-- migrate:no-transaction\nSELECT 1;").unwrap();
        assert!(s.no_transaction);
        assert!(Script::parse("1_x.sql", "-- migrate:no-transactions\n").is_err());
        let f = |n: &str, t: &str| (n.to_string(), t.to_string());
        assert!(Migrations::from_files([f("002_old.sql", "-- verify: index i\nSELECT 1;")]).is_ok());
        let err = Migrations::from_files([f("903_new.sql", "-- verify: index i\nSELECT 1;")]).unwrap_err();
        assert!(err.to_string().contains("903_new.sql") && err.to_string().contains("derived"), "{err}");
    }

    #[test]
    fn a_replaced_checksum_is_accepted_and_only_that_one() {
        let old = Script::parse("003_x.sql", "SELECT 1;\n").unwrap().checksum;
        let text = format!("-- migrate:replaces-checksum {old}\nSELECT 2;\n");
        let new = Script::parse("003_x.sql", &text).unwrap();
        assert_eq!(new.checksum_match(&new.checksum), ChecksumMatch::Same);
        assert_eq!(new.checksum_match(&old), ChecksumMatch::Replaced);
        assert_eq!(new.checksum_match(&"0".repeat(64)), ChecksumMatch::Mismatch);
        assert_eq!(Script::parse("003_x.sql", "SELECT 2;\n").unwrap().checksum_match(&old), ChecksumMatch::Mismatch);
        for bad in ["", "abc", &old.to_uppercase(), &format!("{old}0"), &format!("{}g", &old[1..])] {
            let err = Script::parse("003_x.sql", &format!("-- migrate:replaces-checksum {bad}\n")).unwrap_err();
            assert!(err.to_string().contains("003_x.sql") && err.to_string().contains("64 lowercase hex"), "{err}");
        }
    }

    #[test]
    fn the_new_003_accepts_the_first_003() {
        // The checksum of migrations/003 as first released (CREATE OR REPLACE TRIGGER, 14+ only).
        let first = "aa41cbbb505d11668be07e3125a71a2d0218fe8e5bea809e2344897804bcd529";
        let m = Migrations::embedded().unwrap();
        assert_eq!(m.get(3).unwrap().up.checksum_match(first), ChecksumMatch::Replaced);
        let code = m.get(3).unwrap().up.sql.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<String>();
        assert!(!code.contains("OR REPLACE TRIGGER"), "003 must run on PostgreSQL 13");
    }

    #[test]
    fn files_are_paired_and_validated() {
        let f = |n: &str| (n.to_string(), "SELECT 1;".to_string());
        let m = Migrations::from_files([f("001_b.sql"), f("000_a.sql"), f("001_b.down.sql")]).unwrap();
        assert_eq!(m.all().iter().map(Migration::label).collect::<Vec<_>>(), vec!["000_a", "001_b"]);
        assert!(m.all()[1].down.is_some() && m.all()[0].down.is_none());
        for bad in
            [vec![f("x_a.sql")], vec![f("001.sql")], vec![f("001_a.sql"), f("001_b.sql")], vec![f("002_a.down.sql")]]
        {
            assert!(matches!(Migrations::from_files(bad), Err(Error::InvalidMigration { .. })));
        }
    }

    #[test]
    fn embedded_migrations_are_the_seed_ones() {
        let m = Migrations::embedded().unwrap();
        let labels: Vec<String> = m.all().iter().map(Migration::label).collect();
        assert_eq!(labels[..3], ["000_initial_schema", "001_add_execution_arn", "002_optimize_for_scale"]);
        let m2 = m.get(2).unwrap();
        assert!(m2.up.no_transaction);
        assert!(m2.up.statements().len() >= 7);
        assert!(m.get(0).unwrap().down.is_none(), "000 is irreversible");
        assert!(m.all()[1..].iter().all(|m| m.down.is_some()), "every later migration can be rolled back");
    }
}
