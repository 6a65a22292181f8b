//! Batched data changes: a statement of a no-transaction migration marked `-- migrate:batch` is
//! run again and again, each run its own short transaction under `lock_timeout`, until it changes
//! no row. The statement itself picks rows it has not changed yet and at most so many
//! (`… WHERE id IN (SELECT id FROM t WHERE new_col IS NULL LIMIT 10000)`), so a batch that
//! committed is never redone and a run stopped at any point, by the deadline or a kill, resumes
//! where it stopped. Each batch records its progress in the same transaction, so the progress
//! table is exactly as far as the data.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::{Connection, PgConnection, Row};

use crate::{db, error::Error, error::Result as AppResult};

/// Where batch progress is kept, beside the history. Its name starts with the history's, so the
/// catalog readers never take it for one of the migrations' objects.
pub const PROGRESS_TABLE: &str = "scanner_migrator_history_batches";

/// Pause between batches when the directive names none: replicas and the scanner's writes catch up.
pub const DEFAULT_PAUSE: Duration = Duration::from_millis(100);

/// A `-- migrate:batch` directive, for the statement after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The line of the statement it marks.
    pub statement_line: usize,
    /// `pause-ms=N`: the pause after each batch.
    pub pause: Duration,
    /// `-- migrate:batch-left <query>`: one number, the rows still to change (for progress).
    pub left_query: Option<String>,
}

/// A directive as written, before it is tied to its statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Directive {
    /// `migrate:batch [pause-ms=N]` at this line.
    Batch { line: usize, pause: Duration },
    /// `migrate:batch-left <query>` at this line.
    Left { line: usize, query: String },
}

/// Parses what follows `migrate:batch` (`""`, `" pause-ms=250"`) or `migrate:batch-left`.
pub fn parse_directive(line: usize, rest: &str, left: bool) -> std::result::Result<Directive, String> {
    if left {
        let query = rest.trim();
        if query.is_empty() {
            return Err("`migrate:batch-left` needs a query returning one number: the rows still to change".into());
        }
        return Ok(Directive::Left { line, query: query.trim_end_matches(';').to_string() });
    }
    let mut pause = DEFAULT_PAUSE;
    for option in rest.split_whitespace() {
        match option.split_once('=') {
            Some(("pause-ms", ms)) => {
                let ms: u64 =
                    ms.parse().map_err(|_| format!("`pause-ms={ms}` is not a whole number of milliseconds"))?;
                pause = Duration::from_millis(ms);
            }
            _ => return Err(format!("unknown `migrate:batch` option `{option}` (known: pause-ms=N)")),
        }
    }
    Ok(Directive::Batch { line, pause })
}

/// Ties each directive to the first statement that starts after it, and checks the statement can
/// be batched: a data change (UPDATE, DELETE, INSERT, or a WITH doing one) bounded by a `LIMIT`.
pub fn tie(
    directives: &[Directive],
    statements: &[crate::split::Statement],
    no_transaction: bool,
) -> std::result::Result<Vec<Batch>, String> {
    let mut out: Vec<Batch> = Vec::new();
    let statement_after = |line: usize| statements.iter().find(|s| s.line > line);
    for d in directives {
        if !no_transaction {
            return Err("`migrate:batch` needs `-- migrate:no-transaction`: each batch is its own transaction".into());
        }
        let (line, which) = match d {
            Directive::Batch { line, .. } => (*line, "migrate:batch"),
            Directive::Left { line, .. } => (*line, "migrate:batch-left"),
        };
        let Some(stmt) = statement_after(line) else {
            return Err(format!("`{which}` at line {line} is followed by no statement"));
        };
        match d {
            Directive::Batch { pause, .. } => {
                if out.iter().any(|b| b.statement_line == stmt.line) {
                    return Err(format!("the statement at line {} has two `migrate:batch` directives", stmt.line));
                }
                let lower = stmt.sql.to_ascii_lowercase();
                let first = lower.split_whitespace().next().unwrap_or("");
                if !matches!(first, "update" | "delete" | "insert" | "with") {
                    return Err(format!(
                        "`migrate:batch` at line {line} marks a `{first}` statement (line {}); only a data change \
                         (UPDATE, DELETE, INSERT) can be batched",
                        stmt.line
                    ));
                }
                if !lower.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').any(|w| w == "limit") {
                    return Err(format!(
                        "the batched statement at line {} has no LIMIT: each run must change a bounded number of \
                         rows it has not changed yet, e.g. `UPDATE t SET c = … WHERE id IN (SELECT id FROM t WHERE \
                         c IS NULL LIMIT 10000)`",
                        stmt.line
                    ));
                }
                out.push(Batch { statement_line: stmt.line, pause: *pause, left_query: None });
            }
            Directive::Left { .. } => {}
        }
    }
    for d in directives {
        if let Directive::Left { line, query } = d {
            let stmt = statement_after(*line).map(|s| s.line);
            match out.iter_mut().find(|b| Some(b.statement_line) == stmt) {
                Some(b) => b.left_query = Some(query.clone()),
                None => {
                    return Err(format!(
                        "`migrate:batch-left` at line {line} belongs to a batched statement; put it beside its \
                         `migrate:batch`"
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// What a batched statement did in this run (in the result's `applied[].batched`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// The statement's line.
    pub line: usize,
    /// Rows changed by this run.
    pub rows: u64,
    /// Batches committed by this run.
    pub batches: u64,
    /// Rows per second over this run's batches.
    pub rows_per_s: f64,
}

/// Progress of a batched statement, as recorded (for `status` and the metrics).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Progress {
    /// The migration's version.
    pub version: i64,
    /// The statement's line.
    pub line: i32,
    /// Rows changed so far, over every run.
    pub rows_done: i64,
    /// Batches committed so far.
    pub batches: i64,
    /// Rows still to change, by the migration's `migrate:batch-left` query, when it has one.
    pub rows_left: Option<i64>,
    /// `rows_done / (rows_done + rows_left)` in percent, when the rows left are known.
    pub percent_done: Option<f64>,
    /// Whether the statement has changed every row (a run found nothing left).
    pub finished: bool,
    /// When it last committed a batch.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// Creates the progress table if it is missing.
pub async fn ensure_table(conn: &mut PgConnection) -> AppResult<()> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (
            version     bigint NOT NULL,
            line        integer NOT NULL,
            rows_done   bigint NOT NULL DEFAULT 0,
            batches     bigint NOT NULL DEFAULT 0,
            rows_left   bigint,
            started_at  timestamptz NOT NULL DEFAULT now(),
            updated_at  timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz,
            PRIMARY KEY (version, line)
        )"
    );
    db::exec(conn, &sql).await.map_err(|e| Error::db("creating the batch progress table", e))
}

/// The recorded progress of every batched statement (empty when none has run).
pub async fn progress(conn: &mut PgConnection) -> AppResult<Vec<Progress>> {
    let ctx = "reading the batch progress";
    if !db::table_exists(conn, PROGRESS_TABLE).await.map_err(|e| Error::db(ctx, e))? {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT version, line, rows_done, batches, rows_left, finished_at IS NOT NULL AS finished, updated_at
           FROM {PROGRESS_TABLE} ORDER BY version, line"
    )))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::db(ctx, e))?;
    rows.iter()
        .map(|r| {
            let rows_done: i64 = r.try_get("rows_done")?;
            let rows_left: Option<i64> = r.try_get("rows_left")?;
            Ok(Progress {
                version: r.try_get("version")?,
                line: r.try_get("line")?,
                rows_done,
                batches: r.try_get("batches")?,
                rows_left,
                percent_done: percent(rows_done, rows_left),
                finished: r.try_get("finished")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect::<std::result::Result<_, sqlx::Error>>()
        .map_err(|e| Error::db(ctx, e))
}

/// Percent done from rows done and left; `None` when nothing is known of what is left.
pub fn percent(done: i64, left: Option<i64>) -> Option<f64> {
    let left = left?.max(0);
    let total = done.max(0) + left;
    Some(if total == 0 { 100.0 } else { (done.max(0) as f64) * 100.0 / total as f64 })
}

/// Starts (or resumes) a batched statement's progress row: a row left by a finished earlier run
/// (the migration rolled back and applied again) starts over; an unfinished one is resumed.
/// Returns the rows still to change by the `batch-left` query, if any, and the rows earlier runs
/// changed.
pub async fn begin(conn: &mut PgConnection, version: i64, batch: &Batch) -> AppResult<(Option<i64>, i64)> {
    ensure_table(conn).await?;
    let line = i32::try_from(batch.statement_line).unwrap_or(i32::MAX);
    let ctx = "recording the start of a batched statement";
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {PROGRESS_TABLE} WHERE version = $1 AND line = $2 AND finished_at IS NOT NULL"
    )))
    .bind(version)
    .bind(line)
    .execute(&mut *conn)
    .await
    .map_err(|e| Error::db(ctx, e))?;
    let left = match &batch.left_query {
        Some(q) => Some(rows_left(conn, q).await?),
        None => None,
    };
    let done_before: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {PROGRESS_TABLE} AS p (version, line, rows_left) VALUES ($1, $2, $3)
         ON CONFLICT (version, line) DO UPDATE SET rows_left = EXCLUDED.rows_left
         RETURNING p.rows_done"
    )))
    .bind(version)
    .bind(line)
    .bind(left)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| Error::db(ctx, e))?;
    Ok((left, done_before))
}

async fn rows_left(conn: &mut PgConnection, query: &str) -> AppResult<i64> {
    let row = sqlx::query(sqlx::AssertSqlSafe(query.to_string()))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| Error::db(format!("counting the rows left (`migrate:batch-left {query}`)"), e))?;
    // Any integer or numeric type: count(*) is bigint, a sum may be numeric.
    row.try_get::<i64, _>(0)
        .or_else(|_| row.try_get::<i32, _>(0).map(i64::from))
        .or_else(|_| row.try_get::<f64, _>(0).map(|f| f as i64))
        .map_err(|e| Error::db(format!("`migrate:batch-left {query}` must return one number"), e))
}

/// One batch: the statement and its progress in one transaction. `Ok(rows)` when it committed.
pub async fn one(
    conn: &mut PgConnection,
    version: i64,
    batch: &Batch,
    sql: &str,
    left_before: Option<i64>,
) -> std::result::Result<u64, sqlx::Error> {
    let line = i32::try_from(batch.statement_line).unwrap_or(i32::MAX);
    let mut tx = conn.begin().await?;
    let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&mut *tx).await?.rows_affected();
    let finished = rows == 0;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {PROGRESS_TABLE}
            SET rows_done = rows_done + $3, batches = batches + CASE WHEN $3 > 0 THEN 1 ELSE 0 END,
                rows_left = CASE WHEN $4 THEN 0 ELSE greatest($5::bigint - $3, 0) END,
                updated_at = now(), finished_at = CASE WHEN $4 THEN now() END
          WHERE version = $1 AND line = $2"
    )))
    .bind(version)
    .bind(line)
    .bind(i64::try_from(rows).unwrap_or(i64::MAX))
    .bind(finished)
    .bind(left_before)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// The time one more batch needs: the longest so far (twice, for safety) or one `lock_timeout`,
/// whichever is more, plus the pause.
pub fn needed(longest: Duration, lock_timeout: Duration, pause: Duration) -> Duration {
    (longest * 2).max(lock_timeout) + pause
}

/// Rows per second over `rows` in `elapsed`.
pub fn rate(rows: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() { 0.0 } else { rows as f64 / elapsed.as_secs_f64() }
}

/// Logs a committed batch.
pub fn log(version: i64, batch: &Batch, rows: u64, run_rows: u64, started: Instant, left: Option<i64>) {
    tracing::info!(
        step = "batch",
        version,
        line = batch.statement_line,
        rows,
        rows_this_run = run_rows,
        rows_per_s = rate(run_rows, started.elapsed()).round(),
        rows_left = left,
        "batch committed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::split_statements;

    fn directives(text: &str) -> Vec<Directive> {
        text.lines()
            .enumerate()
            .filter_map(|(i, l)| {
                let d = l.trim().strip_prefix("--")?.trim().strip_prefix("migrate:")?;
                if let Some(rest) = d.strip_prefix("batch-left") {
                    Some(parse_directive(i + 1, rest, true).unwrap())
                } else {
                    d.strip_prefix("batch").map(|rest| parse_directive(i + 1, rest, false).unwrap())
                }
            })
            .collect()
    }

    fn tied(text: &str) -> std::result::Result<Vec<Batch>, String> {
        tie(&directives(text), &split_statements(text), true)
    }

    #[test]
    fn a_directive_marks_the_statement_after_it() {
        let text = "-- migrate:no-transaction\nCREATE INDEX i ON t (x);\n-- migrate:batch pause-ms=250\n-- migrate:batch-left SELECT count(*) FROM t WHERE y IS NULL;\nUPDATE t SET y = 1\n WHERE id IN (SELECT id FROM t WHERE y IS NULL LIMIT 1000);\n";
        let got = tied(text).unwrap();
        assert_eq!(
            got,
            [Batch {
                statement_line: 5,
                pause: Duration::from_millis(250),
                left_query: Some("SELECT count(*) FROM t WHERE y IS NULL".into())
            }]
        );
    }

    #[test]
    fn what_cannot_be_batched_is_refused_by_name() {
        let no_limit = tied("-- migrate:batch\nUPDATE t SET y = 1 WHERE y IS NULL;").unwrap_err();
        assert!(no_limit.contains("has no LIMIT"), "{no_limit}");
        // `limited` is not LIMIT.
        assert!(tied("-- migrate:batch\nUPDATE t SET limited = 1;").unwrap_err().contains("no LIMIT"));
        let ddl = tied("-- migrate:batch\nCREATE INDEX i ON t (x) WHERE x > 0;").unwrap_err();
        assert!(ddl.contains("marks a `create` statement"), "{ddl}");
        assert!(tied("SELECT 1;\n-- migrate:batch\n").unwrap_err().contains("followed by no statement"));
        let left_alone = tied("-- migrate:batch-left SELECT 1\nUPDATE t SET y = 1 LIMIT 1;").unwrap_err();
        assert!(left_alone.contains("belongs to a batched statement"), "{left_alone}");
        let text = "-- migrate:batch\nUPDATE t SET y = 1 WHERE id IN (SELECT id FROM t LIMIT 1);";
        let in_tx = tie(&directives(text), &split_statements(text), false).unwrap_err();
        assert!(in_tx.contains("needs `-- migrate:no-transaction`"), "{in_tx}");
        assert!(parse_directive(1, " pause=3", false).unwrap_err().contains("unknown `migrate:batch` option"));
        assert!(parse_directive(1, " pause-ms=soon", false).unwrap_err().contains("pause-ms=soon"));
    }

    #[test]
    fn percent_and_pacing() {
        assert_eq!(percent(250, Some(750)), Some(25.0));
        assert_eq!(percent(0, Some(0)), Some(100.0));
        assert_eq!(percent(5, None), None);
        let ms = Duration::from_millis;
        assert_eq!(needed(ms(100), ms(500), ms(100)), ms(600));
        assert_eq!(needed(ms(400), ms(500), ms(0)), ms(800));
        assert_eq!(rate(1000, Duration::from_secs(2)), 500.0);
    }
}
