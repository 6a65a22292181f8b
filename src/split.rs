//! Just enough of PostgreSQL's lexer to split a script into statements exactly where psql does,
//! and to recognise the statements the runner treats specially: concurrent index builds. Pure
//! functions.
//!
//! The reference is psql's scanner, `src/fe_utils/psqlscan.l`: its quoting rules (strings with
//! their continuation across newlines, escape strings, dollar quotes, nested comments) and its
//! two depth counters (parentheses, and `BEGIN … END` after `CREATE [OR REPLACE] FUNCTION |
//! PROCEDURE`), so a script splits here as `psql -f` splits it. tests/it/split_corpus.rs checks
//! that against PostgreSQL's own scanner (through pglast) on real SQL.
//!
//! Why not the `pg_query` crate (PostgreSQL's scanner itself)? Measured for issue 16 (6.2.1, debug
//! build, scratch project): its `split_with_scanner` cuts `BEGIN ATOMIC … END` at the inner `;`
//! as our old splitter did, so it would still need psql's depth rules on top; `split_with_parser`
//! refuses any script its bundled grammar cannot parse. It builds C with bindgen (libclang-dev on
//! every builder, and a C cross-compile for the arm64 zip), adds 74 crates to the build graph and
//! about 630 KB to a stripped binary. This file is a few hundred lines, checked against the
//! real scanner in CI.

/// One statement of a script and the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The statement text, without the terminating semicolon.
    pub sql: String,
    /// The line of the file its first character is on.
    pub line: usize,
}

impl Statement {
    /// The index a `CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS] name ON [ONLY] table` builds.
    pub fn index_build(&self) -> Option<IndexBuild> {
        let words = words(&self.sql);
        let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
        let mut i = 0;
        let mut expect = |w: &str, optional: bool| -> bool {
            if lower.get(i).map(String::as_str) == Some(w) {
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
        if lower.get(i).map(String::as_str) == Some("if") {
            i += 3;
        }
        let name = words.get(i)?;
        if lower[i] == "on" {
            return None;
        }
        i += 1;
        if lower.get(i).map(String::as_str) != Some("on") {
            return None;
        }
        i += 1;
        if lower.get(i).map(String::as_str) == Some("only") {
            i += 1;
        }
        let table = words.get(i)?.split('(').next().filter(|t| !t.is_empty())?;
        Some(IndexBuild { name: name.to_string(), table: table.to_string() })
    }

    /// A `REINDEX … CONCURRENTLY` of one index or table, or an `ALTER TABLE … VALIDATE CONSTRAINT`
    /// alone: statements besides index builds that may outlast an invocation and so may run detached.
    pub fn detachable(&self) -> Option<Detachable> {
        let words = words(&self.sql);
        let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
        let at = |i: usize| lower.get(i).map(String::as_str);
        match at(0)? {
            "reindex" => {
                // REINDEX [ ( option, … ) ] { INDEX | TABLE } [ CONCURRENTLY ] name; 14+ also takes
                // CONCURRENTLY among the options.
                let mut i = 1;
                let mut concurrently = false;
                if lower.get(1).is_some_and(|w| w.starts_with('(')) {
                    while let Some(w) = lower.get(i) {
                        i += 1;
                        let options = w.trim_matches(|c| c == '(' || c == ')' || c == ',');
                        concurrently |= options.split(',').any(|o| o == "concurrently")
                            && !lower
                                .get(i)
                                .is_some_and(|n| matches!(n.trim_end_matches([')', ',']), "false" | "off" | "0"));
                        if w.ends_with(')') {
                            break;
                        }
                    }
                }
                let of_index = match at(i)? {
                    "index" => true,
                    "table" => false,
                    _ => return None,
                };
                i += 1;
                if at(i) == Some("concurrently") {
                    concurrently = true;
                    i += 1;
                }
                let name = words.get(i)?;
                (concurrently && words.len() == i + 1).then(|| Detachable::Reindex { of_index, name: name.to_string() })
            }
            "alter" if at(1) == Some("table") => {
                let mut i = 2;
                if at(i) == Some("if") && at(i + 1) == Some("exists") {
                    i += 2;
                }
                if at(i) == Some("only") {
                    i += 1;
                }
                let table = words.get(i)?;
                let constraint = words.get(i + 3)?;
                (at(i + 1) == Some("validate") && at(i + 2) == Some("constraint") && words.len() == i + 4)
                    .then(|| Detachable::Validate { table: table.to_string(), constraint: constraint.to_string() })
            }
            _ => None,
        }
    }

    /// The statement with `CONCURRENTLY` taken out of index builds, drops, reindexes and
    /// materialized view refreshes, so it can run inside a transaction (on an empty scratch
    /// schema, where it makes no difference). Function bodies and strings are left alone.
    pub fn without_concurrently(&self) -> String {
        let first = words(&self.sql).first().map(|w| w.to_ascii_lowercase()).unwrap_or_default();
        if !matches!(first.as_str(), "create" | "drop" | "reindex" | "refresh") {
            return self.sql.clone();
        }
        let mut out = String::with_capacity(self.sql.len());
        for (kind, text) in Lexer::new(&self.sql) {
            if !(kind == Token::Word && text.eq_ignore_ascii_case("concurrently")) {
                out.push_str(text);
            }
        }
        out
    }

    /// The line of the file holding the statement's character at `position` (1-based).
    pub fn line_of(&self, position: usize) -> usize {
        let upto: String = self.sql.chars().take(position.saturating_sub(1)).collect();
        self.line + upto.matches('\n').count()
    }
}

/// An index build the runner treats specially: repaired when INVALID, refused when it cannot
/// finish before the deadline. Names as written in the statement (quoted, qualified or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexBuild {
    /// The index's name.
    pub name: String,
    /// The table it is built on.
    pub table: String,
}

/// A long statement other than an index build that may run detached. Names as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detachable {
    /// `REINDEX INDEX|TABLE CONCURRENTLY name`.
    Reindex {
        /// `INDEX` (else `TABLE`).
        of_index: bool,
        /// The index or table.
        name: String,
    },
    /// `ALTER TABLE table VALIDATE CONSTRAINT constraint`.
    Validate {
        /// The table.
        table: String,
        /// The constraint.
        constraint: String,
    },
}

/// The statement's words: runs of tokens not separated by whitespace or comments (`s.t(x)`,
/// `"S"."T"`), so qualified and quoted names stay whole.
pub(crate) fn words(sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    let mut pos = 0;
    for (kind, text) in Lexer::new(sql) {
        let glued = !matches!(kind, Token::Space | Token::Comment | Token::Semicolon);
        match start {
            None if glued => start = Some(pos),
            Some(s) if !glued => {
                out.push(&sql[s..pos]);
                start = None;
            }
            _ => {}
        }
        pos += text.len();
    }
    if let Some(s) = start {
        out.push(&sql[s..]);
    }
    out
}

/// Splits SQL where psql would send a statement: at semicolons outside quotes, comments,
/// parentheses and `BEGIN … END` bodies of functions and procedures.
pub fn split_statements(sql: &str) -> Vec<Statement> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start_line = 1;
    let mut line = 1;
    let mut has_code = false;
    let mut depth = Depth::default();
    for (kind, text) in Lexer::new(sql) {
        if kind == Token::Semicolon && depth.ends_statement() {
            if has_code {
                out.push(Statement { sql: current.trim().to_string(), line: start_line });
            }
            current.clear();
            has_code = false;
            depth = Depth::default();
        } else {
            depth.see(kind, text);
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

/// psql's two counters that keep a `;` inside a statement (psqlscan.l: `paren_depth`,
/// `begin_depth` and the `identifiers` it matches `CREATE [OR REPLACE] FUNCTION|PROCEDURE` with).
#[derive(Debug, Default)]
struct Depth {
    parens: usize,
    begins: usize,
    /// How many words the statement has had so far.
    words: usize,
    /// The first letter of each of the first four words, where the word is one of `create`,
    /// `or`, `replace`, `function`, `procedure` (psqlscan.l's `identifiers`).
    first: [u8; 4],
}

impl Depth {
    fn ends_statement(&self) -> bool {
        self.parens == 0 && self.begins == 0
    }

    fn see(&mut self, kind: Token, text: &str) {
        match kind {
            Token::Open => self.parens += 1,
            Token::Close => self.parens = self.parens.saturating_sub(1),
            Token::Word => self.word(text),
            _ => {}
        }
    }

    /// psqlscan.l's `{identifier}` rule: keywords are identifiers to psql's scanner.
    fn word(&mut self, word: &str) {
        let lower = word.to_ascii_lowercase();
        if self.words < self.first.len()
            && matches!(lower.as_str(), "create" | "or" | "replace" | "function" | "procedure")
        {
            self.first[self.words] = lower.as_bytes()[0];
        }
        self.words += 1;
        let routine = matches!(self.first, [b'c', b'f' | b'p', ..] | [b'c', b'o', b'r', b'f' | b'p']);
        if !routine || self.parens > 0 {
            return;
        }
        match lower.as_str() {
            "begin" => self.begins += 1,
            // CASE ends with END too; psql counts it only inside a BEGIN.
            "case" if self.begins > 0 => self.begins += 1,
            "end" => self.begins = self.begins.saturating_sub(1),
            _ => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Space,
    Comment,
    /// A string, quoted identifier or dollar-quoted body.
    Quoted,
    Semicolon,
    Open,
    Close,
    /// An identifier or keyword (psqlscan.l's `{identifier}`).
    Word,
    /// Numbers, operators, parameters, other punctuation.
    Other,
}

/// psqlscan.l's `{space}`: ASCII only; other characters (a no-break space) are identifier
/// characters to PostgreSQL.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// psqlscan.l's `ident_start`: every byte of a non-ASCII character counts as a letter.
fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()
}

/// psqlscan.l's `ident_cont` (identifiers may contain `$`, so `a$b$` is no dollar quote).
fn is_ident_cont(c: char) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == '$'
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

    /// Length of a string literal starting at its opening `'`, including the segments it is
    /// continued with: `'a'` newline `'b'` is one literal (psqlscan.l's `xqs` state and
    /// `quotecontinue`), and an escape string stays one across them.
    fn string_len(rest: &str, backslash_escapes: bool) -> usize {
        let mut len = 0;
        loop {
            len += Self::quoted_len(&rest[len..], '\'', backslash_escapes);
            match Self::continuation(&rest[len..]) {
                Some(next) if len < rest.len() => len += next,
                _ => return len,
            }
        }
    }

    /// Offset of the `'` that continues a literal just closed: psqlscan.l's
    /// `{quote}{whitespace_with_newline}{quote}`, where the whitespace has a newline and may
    /// hold `--` comments (not `/* */` ones).
    fn continuation(rest: &str) -> Option<usize> {
        let b = rest.as_bytes();
        let mut i = 0;
        let comment_end = |i: usize| rest[i..].find(['\n', '\r']).map(|n| i + n);
        // horiz_whitespace*
        loop {
            match b.get(i) {
                Some(b' ' | b'\t' | b'\x0b' | b'\x0c') => i += 1,
                Some(b'-') if b.get(i + 1) == Some(&b'-') => i = comment_end(i)?,
                _ => break,
            }
        }
        // newline
        if !matches!(b.get(i), Some(b'\n' | b'\r')) {
            return None;
        }
        i += 1;
        // special_whitespace*: spaces, or a comment that ends in a newline
        loop {
            match b.get(i) {
                Some(&c) if is_space(c as char) => i += 1,
                Some(b'-') if b.get(i + 1) == Some(&b'-') => i = comment_end(i)? + 1,
                Some(b'\'') => return Some(i),
                _ => return None,
            }
        }
    }

    /// `$tag$` at the start of `rest`, if it is a dollar-quote opener (psqlscan.l's `dolqdelim`:
    /// the tag is an identifier without `$`, non-ASCII letters included).
    fn dollar_tag(rest: &str) -> Option<&str> {
        let body = &rest[1..];
        let end = body.find(|c: char| !(is_ident_start(c) || c.is_ascii_digit()))?;
        let starts_well = body.chars().next().is_some_and(|c| c == '$' || is_ident_start(c));
        (starts_well && body[end..].starts_with('$')).then(|| &rest[..end + 2])
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = (Token, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest();
        let c = rest.chars().next()?;
        let (kind, len) = if is_space(c) {
            (Token::Space, rest.find(|ch: char| !is_space(ch)).unwrap_or(rest.len()))
        } else if rest.starts_with("--") {
            (Token::Comment, rest.find(['\n', '\r']).unwrap_or(rest.len()))
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
        } else if matches!(c, 'e' | 'E') && rest[1..].starts_with('\'') {
            // Only a standalone E starts an escape string (psqlscan.l's `xestart`); in `LIKE'a'`
            // the E belongs to the word before (the longest match wins), and the string is plain.
            (Token::Quoted, 1 + Self::string_len(&rest[1..], true))
        } else if c == '\'' {
            // standard_conforming_strings is on (the default since PostgreSQL 9.1).
            (Token::Quoted, Self::string_len(rest, false))
        } else if c == '"' {
            (Token::Quoted, Self::quoted_len(rest, '"', false))
        } else if c == '$'
            && let Some(tag) = Self::dollar_tag(rest)
        {
            let len = rest[tag.len()..].find(tag).map(|i| tag.len() + i + tag.len()).unwrap_or(rest.len());
            (Token::Quoted, len)
        } else if c == ';' {
            (Token::Semicolon, 1)
        } else if c == '(' {
            (Token::Open, 1)
        } else if c == ')' {
            (Token::Close, 1)
        } else if is_ident_start(c) {
            (Token::Word, rest.find(|ch: char| !is_ident_cont(ch)).unwrap_or(rest.len()))
        } else if c.is_ascii_digit() || (c == '$' && rest[1..].starts_with(|d: char| d.is_ascii_digit())) {
            // Numbers and `$1` parameters, with the letters psql's `*_junk` rules glue to them
            // (so `1e'x'` is no escape string).
            let len = rest[1..]
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_' || ch == '.'))
                .map_or(rest.len(), |i| i + 1);
            (Token::Other, len)
        } else {
            (Token::Other, c.len_utf8())
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
    fn finds_concurrent_index_builds_with_their_table() {
        let build = |s: &str| Statement { sql: s.into(), line: 1 }.index_build();
        let ib = |n: &str, t: &str| Some(IndexBuild { name: n.into(), table: t.into() });
        assert_eq!(build("CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_a ON t (x)"), ib("idx_a", "t"));
        assert_eq!(
            build("create unique index concurrently \"Idx\" on only s.t(x)"),
            ib("\"Idx\"", "s.t"),
            "names stay as written, for to_regclass and parse_ident"
        );
        assert_eq!(build("CREATE INDEX -- why\n CONCURRENTLY i /* c */ ON t (x)"), ib("i", "t"));
        assert_eq!(build("CREATE INDEX idx_b ON t (x)"), None);
        assert_eq!(build("CREATE INDEX CONCURRENTLY ON t (x)"), None);
    }

    #[test]
    fn finds_long_reindexes_and_validations_alone() {
        let long = |s: &str| Statement { sql: s.into(), line: 1 }.detachable();
        let reindex = |of_index, n: &str| Some(Detachable::Reindex { of_index, name: n.into() });
        assert_eq!(long("REINDEX INDEX CONCURRENTLY idx_a"), reindex(true, "idx_a"));
        assert_eq!(long("reindex table concurrently s.\"T\""), reindex(false, "s.\"T\""));
        assert_eq!(long("REINDEX (VERBOSE, CONCURRENTLY) INDEX i"), reindex(true, "i"));
        assert_eq!(long("REINDEX (CONCURRENTLY) INDEX i"), reindex(true, "i"));
        assert_eq!(long("REINDEX (VERBOSE) TABLE CONCURRENTLY t"), reindex(false, "t"));
        assert_eq!(long("REINDEX (CONCURRENTLY false) INDEX i"), None, "not concurrent: it runs inline");
        assert_eq!(long("REINDEX INDEX i"), None, "it blocks writes: not ours to run unattended");
        assert_eq!(long("REINDEX SCHEMA CONCURRENTLY s"), None);
        let validate = |t: &str, c: &str| Some(Detachable::Validate { table: t.into(), constraint: c.into() });
        assert_eq!(long("ALTER TABLE t VALIDATE CONSTRAINT c"), validate("t", "c"));
        assert_eq!(long("alter table if exists only s.t validate constraint \"C\""), validate("s.t", "\"C\""));
        assert_eq!(long("ALTER TABLE t VALIDATE CONSTRAINT c, ADD COLUMN x int"), None, "one action alone");
        assert_eq!(long("ALTER TABLE t ADD CONSTRAINT c CHECK (x > 0) NOT VALID"), None);
        assert_eq!(long("CREATE INDEX CONCURRENTLY i ON t (x)"), None);
    }

    #[test]
    fn concurrently_is_taken_out_only_where_it_is_a_keyword() {
        let plain = |s: &str| Statement { sql: s.into(), line: 1 }.without_concurrently();
        assert_eq!(
            plain("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (x)"),
            "CREATE INDEX  IF NOT EXISTS i ON t (x)"
        );
        assert_eq!(plain("DROP INDEX CONCURRENTLY IF EXISTS i"), "DROP INDEX  IF EXISTS i");
        assert_eq!(plain("REFRESH MATERIALIZED VIEW CONCURRENTLY v"), "REFRESH MATERIALIZED VIEW  v");
        let body = "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ REFRESH MATERIALIZED VIEW CONCURRENTLY v $$";
        assert_eq!(plain(body), body);
        assert_eq!(plain("SELECT 'concurrently'"), "SELECT 'concurrently'");
    }

    #[test]
    fn begin_atomic_bodies_stay_whole() {
        let f = "CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END;\n  SELECT x;\nEND";
        let p = "create or replace procedure p() language sql begin atomic insert into t values (1); end";
        let got = sqls(&format!("{f};\n{p};\nBEGIN;\nSELECT 1;\nEND;"));
        assert_eq!(got, vec![f, p, "BEGIN", "SELECT 1", "END"]);
    }

    #[test]
    fn begin_is_counted_only_after_create_function_or_procedure() {
        // A CASE … END outside a BEGIN body, and BEGIN in a view, do not hold the statement open.
        assert_eq!(
            sqls("CREATE FUNCTION g(x int) RETURNS int LANGUAGE sql RETURN CASE WHEN x > 0 THEN 1 END; SELECT 2"),
            vec!["CREATE FUNCTION g(x int) RETURNS int LANGUAGE sql RETURN CASE WHEN x > 0 THEN 1 END", "SELECT 2"]
        );
        assert_eq!(
            sqls("CREATE VIEW v AS SELECT 1 AS begin; SELECT 2"),
            vec!["CREATE VIEW v AS SELECT 1 AS begin", "SELECT 2"]
        );
        // psql looks at the first words only: a function's name or argument called `begin` inside
        // parentheses is not a body.
        assert_eq!(sqls("CREATE FUNCTION h(begin int) RETURNS int LANGUAGE sql RETURN 1; SELECT 2").len(), 2);
    }

    #[test]
    fn semicolons_inside_parentheses_do_not_end_a_statement() {
        let rule = "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2))";
        assert_eq!(sqls(&format!("{rule};\nSELECT 3;")), vec![rule, "SELECT 3"]);
    }

    #[test]
    fn a_word_glued_to_a_quote_does_not_make_an_escape_string() {
        assert_eq!(sqls(r"SELECT 1 WHERE 'a' LIKE'a\'; SELECT 2;"), vec![r"SELECT 1 WHERE 'a' LIKE'a\'", "SELECT 2"]);
        assert_eq!(
            sqls(r"SELECT 1 WHERE 'a' LIKE 'a' ESCAPE'\'; SELECT 2"),
            vec![r"SELECT 1 WHERE 'a' LIKE 'a' ESCAPE'\'", "SELECT 2"]
        );
        assert_eq!(sqls(r"SELECT date'2024-01-01\'; SELECT 2"), vec![r"SELECT date'2024-01-01\'", "SELECT 2"]);
        // A standalone E, after an operator or parenthesis too, does start one.
        assert_eq!(sqls(r"SELECT (e'\';'); SELECT ||E'\';'"), vec![r"SELECT (e'\';')", r"SELECT ||E'\';'"]);
    }

    #[test]
    fn an_escape_string_continued_on_the_next_line_is_one_literal() {
        let continued = "SELECT E'a'\n'\\'; b'";
        assert_eq!(sqls(&format!("{continued}; SELECT 2")), vec![continued, "SELECT 2"]);
        // Comments may sit between the segments, as long as a newline does.
        let commented = "SELECT E'a' -- first\n  -- more\n '\\'; b'";
        assert_eq!(sqls(&format!("{commented}; SELECT 2")), vec![commented, "SELECT 2"]);
        // Without a newline the next quote starts a new, plain literal: `'a' '\'` then `; b'`.
        assert_eq!(sqls("SELECT E'a' '\\'; SELECT 'b'").len(), 2);
    }

    #[test]
    fn dollar_quote_tags_may_hold_non_ascii_letters() {
        let body = "DO $€$ BEGIN PERFORM 1; END $€$";
        assert_eq!(sqls(&format!("{body}; SELECT 2")), vec![body, "SELECT 2"]);
        let tagged = "SELECT $été$;$été$";
        assert_eq!(sqls(&format!("{tagged}; SELECT 2")), vec![tagged, "SELECT 2"]);
    }

    #[test]
    fn qualified_and_quoted_names_are_one_word() {
        let build = |s: &str| Statement { sql: s.into(), line: 1 }.index_build();
        assert_eq!(
            build("CREATE INDEX CONCURRENTLY i ON \"S\".\"T\"(x)"),
            Some(IndexBuild { name: "i".into(), table: "\"S\".\"T\"".into() })
        );
    }
}
