//! Just enough of PostgreSQL's lexer to split a script into statements (respecting quotes,
//! dollar-quoted bodies and nested comments) and to recognise the statements the runner treats
//! specially: concurrent index builds. Pure functions.

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
            if !(kind == Token::Other && text.eq_ignore_ascii_case("concurrently")) {
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

/// The statement's words and quoted names, without comments and whitespace.
fn words(sql: &str) -> Vec<&str> {
    Lexer::new(sql).filter(|(kind, _)| matches!(kind, Token::Other | Token::Quoted)).map(|(_, t)| t).collect()
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
}
