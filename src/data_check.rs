//! `verify --data`: the derived data compared with what it is derived from. The schema check
//! cannot see counts that a half-finished migration left wrong; this reads whole tables, so it
//! runs only when asked.

use sqlx::{PgConnection, Row};

use crate::{
    error::{Error, Result},
    verify::VerifyReport,
};

/// How many differing jobs are named; the rest are counted.
const NAMED: usize = 20;

/// The counts job_progress carries, each compared with a direct count.
const COLUMNS: [&str; 5] = ["total_objects", "queued_count", "processing_count", "succeeded_count", "failed_count"];

/// Compares job_progress with a direct count over job_objects per job, in one statement (one
/// snapshot, so concurrent writers cannot make a difference appear), and adds every job that
/// differs to the report's failures. A materialized view (002) is only as fresh as its last
/// refresh, so it is not compared: that is said, not failed.
pub async fn job_progress(conn: &mut PgConnection, report: &mut VerifyReport) -> Result<()> {
    let ctx = |e: sqlx::Error| Error::db("comparing job_progress with a direct count (verify --data)", e);
    let kind: Option<String> =
        sqlx::query_scalar("SELECT c.relkind::text FROM pg_class AS c WHERE c.oid = to_regclass('job_progress')")
            .fetch_optional(&mut *conn)
            .await
            .map_err(ctx)?
            .flatten();
    match kind.as_deref() {
        Some("v") => {}
        Some("m") => {
            report.accepted.push(
                "job_progress is a materialized view (002): its counts are as of its last refresh, so verify --data \
                 does not compare them"
                    .into(),
            );
            return Ok(());
        }
        _ => {
            report.accepted.push("there is no job_progress view: verify --data had nothing to compare".into());
            return Ok(());
        }
    }
    let rows = sqlx::query(
        "WITH direct AS (
             SELECT j.job_id, count(o.key) AS total_objects,
                    count(o.key) FILTER (WHERE o.status = 'queued') AS queued_count,
                    count(o.key) FILTER (WHERE o.status = 'processing') AS processing_count,
                    count(o.key) FILTER (WHERE o.status = 'succeeded') AS succeeded_count,
                    count(o.key) FILTER (WHERE o.status = 'failed') AS failed_count
               FROM jobs AS j LEFT JOIN job_objects AS o ON o.job_id = j.job_id
              GROUP BY j.job_id),
         compared AS (
             SELECT coalesce(d.job_id, v.job_id)::text AS job_id, v.job_id IS NOT NULL AS shown,
                    d.job_id IS NOT NULL AS exists,
                    ARRAY[d.total_objects, d.queued_count, d.processing_count, d.succeeded_count, d.failed_count]::bigint[]
                        AS expected,
                    ARRAY[v.total_objects, v.queued_count, v.processing_count, v.succeeded_count, v.failed_count]::bigint[]
                        AS found
               FROM direct AS d FULL JOIN job_progress AS v ON v.job_id = d.job_id)
         SELECT job_id, shown, exists, expected, found
           FROM compared
          WHERE expected IS DISTINCT FROM found
          ORDER BY job_id",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(ctx)?;
    let checked: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&mut *conn).await.map_err(ctx)?;
    report.data_jobs_checked = Some(checked);
    let differing = rows.len();
    for row in rows.iter().take(NAMED) {
        let job_id: String = row.try_get("job_id").map_err(ctx)?;
        let (shown, exists): (bool, bool) = (row.try_get("shown").map_err(ctx)?, row.try_get("exists").map_err(ctx)?);
        let expected: Vec<Option<i64>> = row.try_get("expected").map_err(ctx)?;
        let found: Vec<Option<i64>> = row.try_get("found").map_err(ctx)?;
        report.failures.push(describe(&job_id, shown, exists, &expected, &found));
    }
    if differing > NAMED {
        report.failures.push(format!("job_progress: {} more jobs differ from a direct count", differing - NAMED));
    }
    if differing > 0 {
        report.failures.push(
            "job_progress differs from a direct count: a migration of job_progress stopped part-way by an older \
             binary, or a counts row written by hand. Rebuild it: `rollback` to the version before \
             incremental_job_progress, then `migrate` (README, runbook: \"job_progress counts are wrong\")"
                .into(),
        );
    }
    report.ok = report.failures.is_empty();
    Ok(())
}

/// One job's difference, in words: `job <id>: total_objects expected 15, found 10; ...`.
fn describe(job_id: &str, shown: bool, exists: bool, expected: &[Option<i64>], found: &[Option<i64>]) -> String {
    if !shown {
        return format!("job_progress: job {job_id} is missing (it exists in jobs)");
    }
    if !exists {
        return format!("job_progress: job {job_id} is shown but is not in jobs");
    }
    let number = |v: Option<i64>| v.map_or_else(|| "NULL".to_string(), |n| n.to_string());
    let columns: Vec<String> = COLUMNS
        .iter()
        .zip(expected.iter().zip(found))
        .filter(|(_, (e, f))| e != f)
        .map(|(c, (e, f))| format!("{c} expected {}, found {}", number(*e), number(*f)))
        .collect();
    format!("job_progress: job {job_id} differs from a direct count: {}", columns.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_names_the_job_and_each_column_that_differs() {
        let text = describe(
            "j1",
            true,
            true,
            &[Some(15), Some(7), Some(3), Some(3), Some(2)],
            &[Some(10), Some(2), Some(3), Some(3), Some(2)],
        );
        assert_eq!(
            text,
            "job_progress: job j1 differs from a direct count: total_objects expected 15, found 10; queued_count \
             expected 7, found 2"
        );
        assert!(describe("j2", false, true, &[], &[]).contains("job j2 is missing"));
    }
}
