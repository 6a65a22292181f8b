//! The statement splitter on real SQL: a `BEGIN ATOMIC` function through the real binary, and
//! statement-by-statement agreement with PostgreSQL's own scanner (pglast) on real scripts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use scanner_migrator::split::split_statements;
use serde_json::{Value, json};

use crate::support::{all_versions, cli::migrator, migrations_copy, pg::TestDb};

#[tokio::test]
async fn a_transactional_migration_with_a_begin_atomic_function_applies_and_the_function_works() {
    let db = TestDb::new().await;
    let dir = migrations_copy();
    let d = dir.path().to_str().unwrap();
    // SQL-standard bodies (PostgreSQL 14+): semicolons and a CASE … END inside BEGIN ATOMIC … END,
    // and a multi-action rule whose semicolons sit inside parentheses.
    std::fs::write(
        dir.path().join("905_atomic_body.sql"),
        "-- Migration: 905_atomic_body\n\
         CREATE TABLE atomic_log (n int);\n\
         CREATE TABLE atomic_audit (n int);\n\
         CREATE FUNCTION atomic_sign(x int) RETURNS text LANGUAGE sql\n\
         BEGIN ATOMIC\n\
           INSERT INTO atomic_log VALUES (x);\n\
           SELECT CASE WHEN x > 0 THEN 'positive' WHEN x < 0 THEN 'negative' ELSE 'zero' END;\n\
         END;\n\
         CREATE RULE atomic_twice AS ON INSERT TO atomic_log DO ALSO (\n\
           INSERT INTO atomic_audit VALUES (NEW.n);\n\
           INSERT INTO atomic_audit VALUES (NEW.n * 10);\n\
         );\n",
    )
    .unwrap();

    let run = migrator(&db.url, &["--migrations-dir", d, "migrate"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(db.history().await.last(), Some(&905), "{:?} then 905", all_versions());
    assert_eq!(db.scalar::<String>("SELECT atomic_sign(-3)").await, "negative");
    assert_eq!(db.scalar::<String>("SELECT atomic_sign(4)").await, "positive");
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM atomic_log").await, 2, "both statements of the body ran");
    assert_eq!(
        db.scalar::<String>("SELECT string_agg(n::text, ',' ORDER BY n) FROM atomic_audit").await,
        "-30,-3,4,40",
        "both actions of the rule ran"
    );
}

/// psql's splitting over PostgreSQL's scanner (pglast.scan, i.e. the server's `scan.l`): a `;`
/// ends a statement outside parentheses and outside `BEGIN … END` after
/// `CREATE [OR REPLACE] FUNCTION|PROCEDURE` (psqlscan.l's rules, the same ones src/split.rs
/// follows; the quoting, which is where splitters go wrong, is PostgreSQL's own). Where the
/// script also parses (pglast.parse, PostgreSQL's grammar), the server's own split is compared
/// too. Statements are the text from their first token to their `;`, trimmed, as ours.
const REFERENCE: &str = r#"
import json, sys
from pglast.parser import scan, split, ParseError

ROUTINE_WORDS = ("create", "or", "replace", "function", "procedure")

def is_word(sql, t):
    if t.kind != "NO_KEYWORD":
        return True
    text = sql[t.start:t.end + 1]
    return t.name == "IDENT" and not text.startswith('"') and not text[:3].lower() == 'u&"'

def tokens(sql):
    return [t for t in scan(sql) if t.name not in ("SQL_COMMENT", "C_COMMENT")]

def psql_split(sql):
    out, start, parens, begins, words, first = [], None, 0, 0, 0, [""] * 4
    for t in tokens(sql):
        if t.name == "ASCII_59" and parens == 0 and begins == 0:
            if start is not None:
                out.append(sql[start:t.start].strip())
            start, words, first = None, 0, [""] * 4
            continue
        if start is None:
            start = t.start
        if t.name == "ASCII_40":
            parens += 1
        elif t.name == "ASCII_41":
            parens = max(0, parens - 1)
        elif is_word(sql, t):
            low = sql[t.start:t.end + 1].lower()
            if words < 4 and low in ROUTINE_WORDS:
                first[words] = low[0]
            words += 1
            routine = first[0] == "c" and (first[1] in ("f", "p") or (first[1:3] == ["o", "r"] and first[3] in ("f", "p")))
            if routine and parens == 0:
                if low == "begin":
                    begins += 1
                elif low == "case" and begins > 0:
                    begins += 1
                elif low == "end" and begins > 0:
                    begins -= 1
    if start is not None:
        out.append(sql[start:].strip())
    return out

def from_first_token(sql, s):
    toks = tokens(sql[s.start:s.stop])
    return sql[s.start + toks[0].start:s.stop].strip() if toks else None

result = []
for doc in json.load(sys.stdin):
    sql = doc["sql"]
    entry = {"name": doc["name"]}
    try:
        entry["psql"] = psql_split(sql)
    except Exception as e:
        entry["error"] = str(e)
        result.append(entry)
        continue
    # Extension scripts' placeholders are substituted before CREATE EXTENSION runs them.
    plain = sql.replace("@extschema@", "public").replace("@extowner@", "current_user")
    try:
        server = [from_first_token(plain, s) for s in split(plain, with_parser=True, only_slices=True)]
        entry["parsed"] = True
        entry["server_agrees"] = [s for s in server if s] == psql_split(plain)
    except ParseError:
        entry["parsed"] = False
    result.append(entry)
json.dump(result, sys.stdout)
"#;

/// The shapes issue 16 found split wrongly (src/split.rs has a unit test for each), so the
/// reference confirms those tests expect what PostgreSQL does.
const ISSUE_16: &str = r"
CREATE TABLE t (n int);
CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql
BEGIN ATOMIC
  SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END;
  SELECT x;
END;
CREATE OR REPLACE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC INSERT INTO t VALUES (1); END;
BEGIN;
CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO t VALUES (1); INSERT INTO t VALUES (2));
END;
SELECT 1 WHERE 'a' LIKE'a\';
SELECT 2 WHERE 'a' LIKE 'a' ESCAPE'\';
SELECT date'2024-01-01\';
SELECT E'a'
'\'; b';
SELECT E'a' -- a comment between
  -- and another
'\'; b';
DO $€$ BEGIN PERFORM 1; END $€$;
SELECT $été$;$été$;
";

/// A script with psql's meta-commands (`\echo … \quit` in extension scripts) blanked, as they
/// are no SQL; lines are kept so line numbers stay true.
fn without_meta_commands(sql: &str) -> String {
    sql.lines().map(|l| if l.trim_start().starts_with('\\') { "" } else { l }).collect::<Vec<_>>().join("\n")
}

fn corpus() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("migrations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    let mut server = Vec::new();
    // The server's own scripts: its extensions, and what initdb runs (system_functions.sql has
    // BEGIN ATOMIC bodies, information_schema.sql hundreds of views).
    let is_sql = |p: &Path| p.extension().is_some_and(|x| x == "sql");
    for major in std::fs::read_dir("/usr/share/postgresql").into_iter().flatten().flatten() {
        for dir in [major.path(), major.path().join("extension")] {
            server
                .extend(std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| is_sql(p)));
        }
    }
    assert!(
        !server.is_empty(),
        "no /usr/share/postgresql/*/extension/*.sql: install the server the tests use (make postgres)"
    );
    files.extend(server);
    files.sort();
    files
}

#[test]
fn the_splitter_splits_real_sql_statement_by_statement_as_postgresqls_scanner_and_psql_do() {
    let files = corpus();
    let mut docs: Vec<Value> = files
        .iter()
        .map(|p| json!({"name": p.display().to_string(), "sql": without_meta_commands(&std::fs::read_to_string(p).unwrap())}))
        .collect();
    docs.push(json!({"name": "issue 16's cases", "sql": ISSUE_16}));
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let mut child = Command::new(&python)
        .args(["-c", REFERENCE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (make tools installs pglast into .venv)", python.display()));
    let input = serde_json::to_vec(&docs).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "pglast reference failed (make tools installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();

    let (mut statements, mut agreeing, mut parsed, mut server_agrees) = (0, 0, 0, 0);
    let mut misses = Vec::new();
    for (doc, expected) in docs.iter().zip(&reference) {
        let name = doc["name"].as_str().unwrap();
        assert!(expected.get("error").is_none(), "{name}: PostgreSQL's scanner refused it: {}", expected["error"]);
        let want: Vec<&str> = expected["psql"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        let got: Vec<String> = split_statements(doc["sql"].as_str().unwrap()).into_iter().map(|s| s.sql).collect();
        statements += want.len();
        // Statements split alike, wherever they sit: one miss must not count the rest as misses.
        let mut ours: HashMap<&str, usize> = HashMap::new();
        got.iter().for_each(|g| *ours.entry(g.as_str()).or_default() += 1);
        agreeing += want
            .iter()
            .filter(|w| ours.get_mut(**w).is_some_and(|n| std::mem::replace(n, n.saturating_sub(1)) > 0))
            .count();
        if got != want {
            let i = want.iter().zip(&got).position(|(w, g)| w != g).unwrap_or(want.len().min(got.len()));
            misses.push(format!(
                "{name}: statement {} of {} (ours {}): expected\n{:?}\ngot\n{:?}",
                i + 1,
                want.len(),
                got.len(),
                want.get(i),
                got.get(i)
            ));
        }
        if expected["parsed"] == true {
            parsed += 1;
            server_agrees += usize::from(expected["server_agrees"] == true);
        }
    }
    eprintln!(
        "split corpus: {} scripts, {agreeing}/{statements} statements agree with psql's splitting over PostgreSQL's scanner; \
         {parsed} files parse with pglast and in {server_agrees} the server's own split equals psql's",
        docs.len()
    );
    assert!(misses.is_empty(), "{} of {} files split differently:\n{}", misses.len(), docs.len(), misses.join("\n\n"));
    assert!(statements > 1000, "a corpus this small proves little: {statements} statements");
}
