//! `scanner-migrator new NAME`: the next migration's pair of files, numbered and headed as the
//! guide's template has them, with the directives the engine reads. The CLI's own: the Lambda
//! has no files to write.

use std::{io::Write, path::Path};

use serde::Serialize;

use crate::{
    error::{Error, Result},
    migrations::Migrations,
};

/// What `new` wrote and what to do next.
#[derive(Debug, Clone, Serialize)]
pub struct Scaffolded {
    /// `created`.
    pub status: &'static str,
    /// The new migration's number.
    pub version: i64,
    /// `006_add_widget`.
    pub migration: String,
    /// The up and down files, as paths.
    pub files: Vec<String>,
    /// Whether the up file runs statement by statement (`--no-transaction`).
    pub no_transaction: bool,
    /// Lint, try and test it.
    pub next_steps: Vec<String>,
}

/// The longest name `new` accepts: file names stay readable in listings and in `plan`.
const MAX_NAME: usize = 63;

/// Splits `NAME` or `NNN_NAME` into the number asked for (if any) and a snake_case name, or says
/// what is wrong with it. Pure.
pub fn parse_name(raw: &str) -> std::result::Result<(Option<i64>, String), String> {
    let (number, name) = match raw.split_once('_') {
        Some((n, rest)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            let v = n.parse::<i64>().map_err(|_| format!("`{raw}`: the number {n} is too large"))?;
            (Some(v), rest)
        }
        _ => (None, raw),
    };
    let snake =
        name.split('_').all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
            && name.starts_with(|c: char| c.is_ascii_lowercase());
    if !snake {
        return Err(format!(
            "`{raw}` is not a snake_case name: lowercase letters, digits and single underscores, starting \
             with a letter (e.g. add_widget_index; a leading NNN_ picks the number)"
        ));
    }
    if name.len() > MAX_NAME {
        return Err(format!("`{raw}` is {} characters long; at most {MAX_NAME}", name.len()));
    }
    Ok((number, name.to_string()))
}

/// The up and down texts of migration `label` (`006_add_widget`), dated `date`. Pure.
pub fn texts(label: &str, no_transaction: bool, date: &str) -> (String, String) {
    // A directive is a comment line that starts with `migrate:`; the list below quotes them whole
    // (with their `--`), so the parser reads them as prose.
    let directive = if no_transaction { "-- migrate:no-transaction\n" } else { "" };
    let up = format!(
        "-- Migration: {label}
-- Purpose: TODO: what this changes and why, in a line or two (reviewers and `plan` readers start here).
-- Date: {date}
--
-- Directives the engine reads (each on a line of its own):
--   `-- migrate:no-transaction`              run statement by statement, outside a transaction (index
--                                            builds on big tables: CREATE INDEX CONCURRENTLY IF NOT EXISTS);
--                                            every statement must then be idempotent
--   `-- migrate:replaces-checksum <sha256>`  only to fix an applied file: an earlier text it replaces
-- Names unqualified (no `public.`); every statement applies to empty tables too and uses no transaction
-- control: verification replays the files in a scratch schema (README, \"Adding a migration\").
{directive}
"
    );
    let file = format!("{label}.sql");
    let down = format!(
        "-- Rollback of {label}: TODO: undo what {file} does, the last change first.
-- Run by `rollback --target N` for N below this version; it should leave the schema as the
-- migrations before it made it.
{directive}
"
    );
    (up, down)
}

/// Writes the next migration's pair into `dir` (both or neither) and says what to do next.
/// Refuses a name that is not snake_case and a number already taken, before writing anything.
pub fn create(dir: &Path, raw_name: &str, no_transaction: bool, date: &str) -> Result<Scaffolded> {
    let (asked, name) = parse_name(raw_name).map_err(Error::BadRequest)?;
    if !dir.is_dir() {
        return Err(Error::BadRequest(format!(
            "{} is not a directory of migrations (run from the repository's root, or pass --migrations-dir DIR)",
            dir.display()
        )));
    }
    let existing = Migrations::from_dir(dir)?;
    let next = existing.latest().map_or(0, |v| v + 1);
    let version = match asked {
        Some(v) => {
            if let Some(m) = existing.get(v) {
                return Err(Error::BadRequest(format!(
                    "version {v:03} is taken by {}; the next free number is {next:03} (leave the number out to get it)",
                    m.up.file
                )));
            }
            if v < next {
                return Err(Error::BadRequest(format!(
                    "version {v:03} is below the newest, {:03}: a database already there would never apply it; \
                     the next free number is {next:03} (leave the number out to get it)",
                    next - 1
                )));
            }
            v
        }
        None => next,
    };
    let label = format!("{version:03}_{name}");
    let (up, down) = texts(&label, no_transaction, date);
    let paths = [dir.join(format!("{label}.sql")), dir.join(format!("{label}.down.sql"))];
    let written = write_new(&paths[0], &up).and_then(|_| {
        write_new(&paths[1], &down).inspect_err(|_| {
            // Both or neither: a pair without its down file would fail every later read of the folder.
            let _ = std::fs::remove_file(&paths[0]);
        })
    });
    written.map_err(|(path, e)| Error::BadRequest(format!("cannot write {path}: {e}")))?;
    let files: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let shown = dir.display();
    let previous = version.checked_sub(1).map_or("0".to_string(), |p| p.to_string());
    Ok(Scaffolded {
        status: "created",
        version,
        migration: label,
        next_steps: vec![
            format!("write the change in {} and its undo in {} (README, \"Adding a migration\")", files[0], files[1]),
            format!("lint: make lint (squawk over migrations/), or squawk --config .squawk.toml {}", files[0]),
            format!(
                "try it on a local or copied database: scanner-migrator --migrations-dir {shown} plan, then migrate, \
                 verify, rollback --target {previous}, migrate"
            ),
            "test: make test (the tests read the migrations from the folder; none needs changing)".to_string(),
        ],
        files,
        no_transaction,
    })
}

/// Creates `path` with `text`, refusing to replace a file that is there.
fn write_new(path: &Path, text: &str) -> std::result::Result<(), (String, std::io::Error)> {
    let fail = |e| (path.display().to_string(), e);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(fail)?;
    f.write_all(text.as_bytes()).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::Script;

    #[test]
    fn names_are_snake_case_with_an_optional_number() {
        assert_eq!(parse_name("add_widget"), Ok((None, "add_widget".into())));
        assert_eq!(parse_name("007_add_widget_2"), Ok((Some(7), "add_widget_2".into())));
        for bad in ["Add_widget", "add-widget", "add__widget", "_add", "add_", "2fast", "007_", "", "äpfel", "a b"] {
            let err = parse_name(bad).unwrap_err();
            assert!(err.contains("snake_case") && err.contains(&format!("`{bad}`")), "{bad}: {err}");
        }
        assert!(parse_name(&"a".repeat(64)).unwrap_err().contains("at most 63"));
        assert!(parse_name("99999999999999999999_x").unwrap_err().contains("too large"));
    }

    #[test]
    fn the_texts_parse_with_the_directive_only_when_asked() {
        for no_tx in [false, true] {
            let (up, down) = texts("006_add_widget", no_tx, "2026-12-04");
            let up = Script::parse("006_add_widget.sql", &up).unwrap();
            let down = Script::parse("006_add_widget.down.sql", &down).unwrap();
            assert_eq!((up.no_transaction, down.no_transaction), (no_tx, no_tx));
            assert!(up.sql.starts_with("-- Migration: 006_add_widget\n-- Purpose: "), "{}", up.sql);
            assert!(up.sql.contains("-- Date: 2026-12-04"));
            assert!(up.statements().is_empty() && down.statements().is_empty(), "nothing runs until written");
        }
    }
}
