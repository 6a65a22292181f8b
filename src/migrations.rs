//! The migration files: how they are named, embedded, checksummed, split into statements,
//! and what their header directives say. Everything here is pure.

use std::{collections::BTreeMap, fmt, path::Path};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

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
    /// `-- verify: ...` lines: what must hold after the script ran.
    pub checks: Vec<Check>,
}

/// Something `verify` confirms exists in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A column of a table.
    Column { table: String, column: String },
    /// An index that exists and is valid (not left INVALID by an interrupted build).
    Index(String),
    /// A view or materialized view with these columns (in any order), and populated if materialized.
    View { name: String, columns: Vec<String> },
    /// A function, with its argument list as written: `refresh_job_progress()`.
    Function(String),
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Column { table, column } => write!(f, "column {table}.{column}"),
            Check::Index(name) => write!(f, "index {name}"),
            Check::View { name, .. } => write!(f, "view {name}"),
            Check::Function(sig) => write!(f, "function {sig}"),
        }
    }
}

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
        let mut checks = Vec::new();
        for line in sql.lines() {
            let Some(comment) = line.trim().strip_prefix("--") else { continue };
            let comment = comment.trim();
            if let Some(directive) = comment.strip_prefix("migrate:") {
                match directive.trim() {
                    "no-transaction" => no_transaction = true,
                    other => {
                        return Err(Error::InvalidMigration {
                            file: file.into(),
                            problem: format!("unknown directive `migrate:{other}` (known: migrate:no-transaction)"),
                        });
                    }
                }
            } else if let Some(spec) = comment.strip_prefix("verify:") {
                checks.extend(
                    parse_checks(spec.trim())
                        .map_err(|problem| Error::InvalidMigration { file: file.into(), problem })?,
                );
            }
        }
        Ok(Script { file: file.into(), sql, checksum, no_transaction, checks })
    }

    /// The statements of the script, in order, without the empty ones.
    pub fn statements(&self) -> Vec<Statement> {
        split_statements(&self.sql)
    }
}

fn parse_checks(spec: &str) -> std::result::Result<Vec<Check>, String> {
    let (kind, rest) = spec.split_once(char::is_whitespace).unwrap_or((spec, ""));
    let rest = rest.trim();
    if rest.is_empty() {
        return Err(format!("`verify: {kind}` names nothing to check"));
    }
    match kind {
        "column" => rest
            .split_whitespace()
            .map(|item| match item.split_once('.') {
                Some((table, column)) if !table.is_empty() && !column.is_empty() => {
                    Ok(Check::Column { table: table.into(), column: column.into() })
                }
                _ => Err(format!("`verify: column {item}`: expected table.column")),
            })
            .collect(),
        "index" => Ok(rest.split_whitespace().map(|n| Check::Index(n.into())).collect()),
        "function" => Ok(vec![Check::Function(rest.into())]),
        "view" => {
            let (name, cols) = rest
                .split_once('(')
                .and_then(|(n, c)| Some((n.trim(), c.trim().strip_suffix(')')?)))
                .ok_or_else(|| format!("`verify: view {rest}`: expected name(col, col, ...)"))?;
            let columns: Vec<String> =
                cols.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect();
            if name.is_empty() || columns.is_empty() {
                return Err(format!("`verify: view {rest}`: expected name(col, col, ...)"));
            }
            Ok(vec![Check::View { name: name.into(), columns }])
        }
        other => Err(format!("unknown check `verify: {other}` (known: column, index, view, function)")),
    }
}

/// One statement of a script and the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The statement text, without the terminating semicolon.
    pub sql: String,
    /// The line of the file its first character is on.
    pub line: usize,
}

impl Statement {
    /// The index a `CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS] name` builds, if it is one.
    pub fn concurrent_index_name(&self) -> Option<String> {
        let code = strip_comments(&self.sql);
        let words: Vec<String> = code.split_whitespace().map(|w| w.to_ascii_lowercase()).collect();
        let mut i = 0;
        let mut expect = |w: &str, optional: bool| -> bool {
            if words.get(i).map(String::as_str) == Some(w) {
                i += 1;
                true
            } else {
                optional
            }
        };
        if !(expect("create", false)
            && expect("unique", true)
            && expect("index", false)
            && expect("concurrently", false))
        {
            return None;
        }
        if words.get(i).map(String::as_str) == Some("if") {
            i += 3;
        }
        let name = words.get(i)?;
        (name != "on").then(|| name.trim_matches('"').to_string())
    }

    /// The line of the file holding the statement's character at `position` (1-based).
    pub fn line_of(&self, position: usize) -> usize {
        let upto: String = self.sql.chars().take(position.saturating_sub(1)).collect();
        self.line + upto.matches('\n').count()
    }
}

fn strip_comments(sql: &str) -> String {
    let mut out = String::new();
    for (kind, text) in Lexer::new(sql) {
        if kind != Token::Comment {
            out.push_str(text);
        } else {
            out.push(' ');
        }
    }
    out
}

/// Splits SQL on top-level semicolons, respecting quotes, dollar-quoted bodies and comments.
pub fn split_statements(sql: &str) -> Vec<Statement> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start_line = 1;
    let mut line = 1;
    let mut has_code = false;
    for (kind, text) in Lexer::new(sql) {
        if kind == Token::Semicolon {
            if has_code {
                out.push(Statement { sql: current.trim().to_string(), line: start_line });
            }
            current.clear();
            has_code = false;
        } else {
            if !has_code && kind != Token::Comment && kind != Token::Space {
                has_code = true;
                start_line = line;
                current.clear();
            }
            if has_code {
                current.push_str(text);
            }
        }
        line += text.matches('\n').count();
    }
    if has_code {
        out.push(Statement { sql: current.trim().to_string(), line: start_line });
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Space,
    Comment,
    Quoted,
    Semicolon,
    Other,
}

/// Just enough of PostgreSQL's lexer to know where statements end.
struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Lexer { src, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    /// Length of a quoted run starting at the opening `quote`, doubled quotes escaping.
    fn quoted_len(rest: &str, quote: char, backslash_escapes: bool) -> usize {
        let mut chars = rest.char_indices().skip(1).peekable();
        while let Some((i, c)) = chars.next() {
            if backslash_escapes && c == '\\' {
                chars.next();
            } else if c == quote {
                if chars.peek().map(|&(_, n)| n) == Some(quote) {
                    chars.next();
                } else {
                    return i + c.len_utf8();
                }
            }
        }
        rest.len()
    }

    /// `$tag$` at the start of `rest`, if it is a dollar-quote opener.
    fn dollar_tag(rest: &str) -> Option<&str> {
        let body = &rest[1..];
        let end = body.find('$')?;
        let tag = &body[..end];
        let valid =
            tag.chars().enumerate().all(|(i, c)| c == '_' || c.is_alphabetic() || (i > 0 && c.is_ascii_digit()));
        valid.then(|| &rest[..end + 2])
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = (Token, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest();
        let c = rest.chars().next()?;
        let (kind, len) = if c.is_whitespace() {
            (Token::Space, rest.find(|ch: char| !ch.is_whitespace()).unwrap_or(rest.len()))
        } else if rest.starts_with("--") {
            (Token::Comment, rest.find('\n').unwrap_or(rest.len()))
        } else if rest.starts_with("/*") {
            // Block comments nest in PostgreSQL.
            let mut depth = 0usize;
            let mut i = 0;
            let bytes = rest.as_bytes();
            let mut len = rest.len();
            while i + 1 < bytes.len() {
                if bytes[i] == b'/' && bytes[i + 1] == b'*' {
                    depth += 1;
                    i += 2;
                } else if bytes[i] == b'*' && bytes[i + 1] == b'/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        len = i;
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            (Token::Comment, len)
        } else if c == '\'' {
            let escapes = self.pos > 0 && matches!(self.src.as_bytes()[self.pos - 1], b'e' | b'E');
            (Token::Quoted, Self::quoted_len(rest, '\'', escapes))
        } else if c == '"' {
            (Token::Quoted, Self::quoted_len(rest, '"', false))
        } else if c == '$'
            && let Some(tag) = Self::dollar_tag(rest)
        {
            let len = rest[tag.len()..].find(tag).map(|i| tag.len() + i + tag.len()).unwrap_or(rest.len());
            (Token::Quoted, len)
        } else if c == ';' {
            (Token::Semicolon, 1)
        } else {
            // Identifiers, numbers and operators up to the next character that can start
            // something else. `$1` parameters and `a$b` identifiers stay in one word.
            let len = rest
                .char_indices()
                .skip(1)
                .find(|&(i, ch)| {
                    ch.is_whitespace()
                        || matches!(ch, '\'' | '"' | ';')
                        || rest[i..].starts_with("--")
                        || rest[i..].starts_with("/*")
                        || (ch == '$' && !rest[..i].ends_with(|p: char| p.is_alphanumeric() || p == '_'))
                })
                .map(|(i, _)| i)
                .unwrap_or(rest.len());
            (Token::Other, len)
        };
        let text = &rest[..len];
        self.pos += len;
        Some((kind, text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqls(sql: &str) -> Vec<String> {
        split_statements(sql).into_iter().map(|s| s.sql).collect()
    }

    #[test]
    fn splits_on_top_level_semicolons_only() {
        let sql = "CREATE TABLE a (x text DEFAULT ';');\n-- a comment; with a semicolon\nSELECT \"we;ird\" FROM a;\n/* block; /* nested; */ still; */ SELECT 2";
        assert_eq!(sqls(sql), vec!["CREATE TABLE a (x text DEFAULT ';')", "SELECT \"we;ird\" FROM a", "SELECT 2"]);
    }

    #[test]
    fn dollar_quoted_bodies_stay_whole() {
        let sql = "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$\nBEGIN\n  PERFORM 1;\n  RAISE NOTICE 'x;y';\nEND;\n$$;\nDO $body$ BEGIN PERFORM $$;$$; END $body$;\nSELECT $1::text";
        let got = sqls(sql);
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(got[0].ends_with("END;\n$$"));
        assert_eq!(got[1], "DO $body$ BEGIN PERFORM $$;$$; END $body$");
        assert_eq!(got[2], "SELECT $1::text");
    }

    #[test]
    fn escape_strings_and_doubled_quotes() {
        assert_eq!(sqls("SELECT E'a\\';b'; SELECT 'it''s;'"), vec!["SELECT E'a\\';b'", "SELECT 'it''s;'"]);
    }

    #[test]
    fn statements_know_their_line() {
        let stmts = split_statements("-- header\n\nSELECT 1;\n\n  SELECT\n 2;");
        assert_eq!(stmts.iter().map(|s| s.line).collect::<Vec<_>>(), vec![3, 5]);
        assert_eq!(stmts[1].line_of(9), 6);
    }

    #[test]
    fn comment_only_script_has_no_statements() {
        assert!(split_statements("-- nothing\n/* here */\n;\n").is_empty());
    }

    #[test]
    fn finds_concurrent_index_names() {
        let name = |s: &str| Statement { sql: s.into(), line: 1 }.concurrent_index_name();
        assert_eq!(name("CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_a ON t (x)").as_deref(), Some("idx_a"));
        assert_eq!(name("create unique index concurrently \"Idx\" on t (x)").as_deref(), Some("idx"));
        assert_eq!(name("CREATE INDEX idx_b ON t (x)"), None);
        assert_eq!(name("CREATE INDEX CONCURRENTLY ON t (x)"), None);
    }

    #[test]
    fn checksum_ignores_crlf() {
        let a = Script::parse("001_a.sql", "SELECT 1;\nSELECT 2;\n").unwrap();
        let b = Script::parse("001_a.sql", "SELECT 1;\r\nSELECT 2;\r\n").unwrap();
        assert_eq!(a.checksum, b.checksum);
        let c = Script::parse("001_a.sql", "SELECT 1;\nSELECT 3;\n").unwrap();
        assert_ne!(a.checksum, c.checksum);
    }

    #[test]
    fn directives_and_checks_are_read() {
        let s = Script::parse(
            "002_x.sql",
            "-- migrate:no-transaction\n-- verify: column jobs.a jobs.b\n-- verify: view v(a, b)\n-- verify: index i1 i2\n-- verify: function f()\nSELECT 1;",
        )
        .unwrap();
        assert!(s.no_transaction);
        assert_eq!(s.checks.len(), 6);
        assert_eq!(s.checks[2], Check::View { name: "v".into(), columns: vec!["a".into(), "b".into()] });
        assert!(Script::parse("1_x.sql", "-- migrate:no-transactions\n").is_err());
        assert!(Script::parse("1_x.sql", "-- verify: column nodot\n").is_err());
        assert!(Script::parse("1_x.sql", "-- verify: table t\n").is_err());
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
        assert_eq!(labels, vec!["000_initial_schema", "001_add_execution_arn", "002_optimize_for_scale"]);
        let m2 = m.get(2).unwrap();
        assert!(m2.up.no_transaction);
        assert!(m2.up.statements().len() >= 7);
        assert!(m2.up.checks.contains(&Check::Function("refresh_job_progress()".into())));
        assert!(m.get(0).unwrap().down.is_none(), "000 is irreversible");
    }
}
