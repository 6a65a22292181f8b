//! A schema other than `public` (issue 20): `DB_SCHEMA` / `--schema`, or the login's own
//! search_path. The suite's core runs in a mixed-case schema and in one named like a table alias
//! of the migrations' SQL, and a decoy of our tables in `public` fools neither verify nor refresh.

use sqlx::{Connection, PgConnection};

use crate::{
    lambda::random_password,
    support::{
        all_versions,
        cli::{Run, cli},
        pg::{TestDb, quote_literal, server},
        secrets,
    },
};

/// An identifier quoted for SQL.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The binary against `url`, trusting the test server's CA, with `DB_SCHEMA` and `args`.
async fn run_in(url: &str, schema: Option<&str>, args: &[&str]) -> Run {
    let mut all = vec!["--database-url", url];
    all.extend_from_slice(args);
    let ca = server().ca.display().to_string();
    let mut envs = vec![("DB_SSLMODE", "verify-ca"), ("DB_CA_BUNDLE", ca.as_str())];
    if let Some(schema) = schema {
        envs.push(("DB_SCHEMA", schema));
    }
    cli(&all, &envs).await
}

/// A login of the test's own whose only privileges are the refresh role's (it inherits them): what
/// the refresh function logs in as. The refresh role is the one allowed to run the fold in `schema`
/// (scanner_refresh, made by 004). Its URL.
async fn refresh_login(db: &TestDb, schema: &str) -> String {
    let fold = quote_literal(&format!("{}.refresh_job_progress()", quote_ident(schema)));
    let role: String = db
        .scalar(&format!(
            "SELECT a.grantee::regrole::text FROM pg_proc AS p, aclexplode(p.proacl) AS a
              WHERE p.oid = to_regprocedure({fold}) AND a.privilege_type = 'EXECUTE' AND a.grantee NOT IN (0, p.proowner)"
        ))
        .await;
    let login = format!("{}_refresher", db.name);
    let password = random_password();
    secrets::register(&password);
    db.exec(&format!("CREATE ROLE {login} LOGIN INHERIT PASSWORD '{password}'; GRANT {role} TO {login};")).await;
    format!("postgres://{login}:{password}@127.0.0.1:{}/{}", server().port, db.name)
}

/// Three jobs with 7, 3 and 0 objects in various states, written as the scanner writes them: in a
/// session whose search_path is the schema. The fold has not run yet.
async fn write_objects(db: &TestDb, schema: &str) {
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET search_path = {};
         WITH j AS (INSERT INTO jobs (bucket) SELECT 'b' || g FROM generate_series(1, 3) AS g RETURNING job_id, bucket)
         INSERT INTO job_objects (job_id, bucket, key, status)
         SELECT j.job_id, j.bucket, 'k' || g, (ARRAY['queued', 'processing', 'succeeded', 'failed'])[1 + g % 4]
           FROM j, generate_series(1, 7) AS g
          WHERE j.bucket = 'b1' OR (j.bucket = 'b2' AND g <= 3);
         UPDATE job_objects SET status = 'succeeded' WHERE key = 'k1';",
        quote_ident(schema)
    )))
    .execute(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("the scanner writes in schema {schema}: {e}"));
    conn.close().await.unwrap();
}

/// job_progress against a direct count over job_objects, per job, in `schema`: the rows that differ.
async fn differing_jobs(db: &TestDb, schema: &str) -> i64 {
    let s = quote_ident(schema);
    db.scalar(&format!(
        "WITH direct AS (
             SELECT j.job_id, count(o.key) AS total, count(o.key) FILTER (WHERE o.status = 'queued') AS queued,
                    count(o.key) FILTER (WHERE o.status = 'processing') AS processing,
                    count(o.key) FILTER (WHERE o.status = 'succeeded') AS succeeded,
                    count(o.key) FILTER (WHERE o.status = 'failed') AS failed
               FROM {s}.jobs AS j LEFT JOIN {s}.job_objects AS o ON o.job_id = j.job_id GROUP BY j.job_id)
         SELECT count(*) FROM direct AS d FULL JOIN {s}.job_progress AS v ON v.job_id = d.job_id
          WHERE ROW(d.total, d.queued, d.processing, d.succeeded, d.failed)
                IS DISTINCT FROM ROW(v.total_objects, v.queued_count, v.processing_count, v.succeeded_count, v.failed_count)"
    ))
    .await
}

/// How the schema is chosen.
#[derive(Clone, Copy)]
enum Setting {
    /// `DB_SCHEMA`.
    Configured,
    /// Nothing set: the login's own search_path (here the database's default, for every role).
    LoginDefault,
}

/// The suite's core in `schema`: migrate from empty to the latest, verify, write, refresh as
/// scanner_refresh, rollback to 0 and up again to the same catalog.
async fn the_core_in(schema: &str, setting: Setting) {
    let db = TestDb::new().await;
    let s = quote_ident(schema);
    db.exec(&format!("CREATE SCHEMA {s}")).await;
    let schema_setting = match setting {
        Setting::Configured => Some(schema),
        Setting::LoginDefault => {
            db.exec(&format!("ALTER DATABASE {} SET search_path = {s}", db.name)).await;
            None
        }
    };
    let run = run_in(&db.url, schema_setting, &["migrate"]).await;
    assert_eq!(run.status(), "applied", "{:#}", run.json);
    assert_eq!(run.versions("applied"), all_versions());
    let (in_schema, in_public): (bool, bool) = (
        db.scalar(&format!("SELECT to_regclass({}) IS NOT NULL", quote_literal(&format!("{s}.job_objects")))).await,
        db.scalar("SELECT to_regclass('public.job_objects') IS NOT NULL").await,
    );
    assert!(in_schema && !in_public, "the tables are made in {s} and nowhere else");
    let catalog = db.fingerprint_of(schema).await;
    assert!(catalog.contains("rel job_progress_deltas r"), "{catalog}");

    let run = run_in(&db.url, schema_setting, &["verify"]).await;
    assert_eq!(run.status(), "verified", "{:#}", run.json);
    assert!(run.json["verification"]["objects_checked"].as_u64().unwrap_or(0) > 10, "{:#}", run.json);

    write_objects(&db, schema).await;
    let pending: i64 = db.scalar(&format!("SELECT count(*) FROM {s}.job_progress_deltas")).await;
    assert!(pending > 0, "the capture triggers logged deltas");
    let login = refresh_login(&db, schema).await;
    let run = run_in(&login, schema_setting, &["refresh"]).await;
    assert_eq!(run.status(), "refreshed", "as scanner_refresh: {:#}", run.json);
    assert_eq!(run.json["delta_rows"].as_i64(), Some(pending), "{:#}", run.json);
    assert_eq!(db.scalar::<i64>(&format!("SELECT count(*) FROM {s}.job_progress_deltas")).await, 0);
    assert_eq!(differing_jobs(&db, schema).await, 0, "job_progress equals a direct count");
    let run = run_in(&db.url, schema_setting, &["verify", "--data"]).await;
    assert_eq!(run.status(), "verified", "{:#}", run.json);
    assert_eq!(run.json["verification"]["data_jobs_checked"].as_i64(), Some(3), "{:#}", run.json);

    let run = run_in(&db.url, schema_setting, &["rollback", "--target", "0"]).await;
    assert_eq!(run.status(), "rolled_back", "{:#}", run.json);
    let left = db.fingerprint_of(schema).await;
    assert!(left.contains("rel jobs r") && !left.contains("job_progress"), "000's tables alone are left: {left}");
    let history: Vec<i64> = {
        let mut conn = db.conn().await;
        let sql = format!("SELECT version FROM {s}.scanner_migrator_history ORDER BY version");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(&mut conn).await.unwrap()
    };
    assert_eq!(history, [0]);
    let usage = format!("SELECT has_schema_privilege('scanner_refresh', {}, 'USAGE')", quote_literal(schema));
    if db.scalar::<bool>("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'scanner_refresh')").await {
        assert!(!db.scalar::<bool>(&usage).await, "007's down revoked scanner_refresh's USAGE on {s}");
    }
    let run = run_in(&db.url, schema_setting, &["migrate"]).await;
    assert_eq!(run.status(), "applied", "{:#}", run.json);
    assert_eq!(db.fingerprint_of(schema).await, catalog, "up again: the same catalog");
    assert!(db.scalar::<bool>(&usage).await, "scanner_refresh may reach {s} again");
    assert_eq!(run_in(&db.url, schema_setting, &["verify"]).await.status(), "verified");
}

#[tokio::test]
async fn the_core_in_a_mixed_case_schema() {
    the_core_in("Scanner", Setting::Configured).await;
}

#[tokio::test]
async fn the_core_in_a_schema_named_like_a_table_alias() {
    // 003's fold and the view write `j.job_id`, `o.status`, `c.job_id`: text surgery on `j.` corrupts
    // them. Chosen by the login's own search_path, as a database set up before DB_SCHEMA existed is.
    the_core_in("j", Setting::LoginDefault).await;
}

#[tokio::test]
async fn without_a_setting_the_login_s_own_schema_is_used_even_in_mixed_case() {
    let db = TestDb::new().await;
    db.exec(&format!("CREATE SCHEMA \"Scanner\"; ALTER DATABASE {} SET search_path = \"Scanner\"", db.name)).await;
    let run = run_in(&db.url, None, &["migrate"]).await;
    assert_eq!(run.status(), "applied", "{:#}", run.json);
    assert!(db.scalar::<bool>("SELECT to_regclass('\"Scanner\".jobs') IS NOT NULL").await);
    assert_eq!(run_in(&db.url, None, &["verify"]).await.status(), "verified");
    // --schema names the same schema: the same answer.
    let run = cli(
        &["--database-url", &db.url, "--schema", "Scanner", "verify"],
        &[("DB_SSLMODE", "verify-ca"), ("DB_CA_BUNDLE", &server().ca.display().to_string())],
    )
    .await;
    assert_eq!(run.status(), "verified", "{:#}", run.json);
}

#[tokio::test]
async fn a_decoy_of_our_tables_in_public_fools_neither_verify_nor_refresh() {
    let db = TestDb::new().await;
    db.exec("CREATE SCHEMA scanner").await;
    assert_eq!(run_in(&db.url, Some("scanner"), &["migrate"]).await.status(), "applied");
    // Someone else's tables of the same names in public, on the login's default search_path, one
    // of them a delta log with a row the fold would fold if it looked there.
    db.exec(
        "CREATE TABLE public.jobs (job_id uuid PRIMARY KEY, note text);
         CREATE TABLE public.job_objects (job_id uuid, key text, status text);
         CREATE TABLE public.job_progress_counts (LIKE scanner.job_progress_counts INCLUDING ALL);
         CREATE TABLE public.job_progress_deltas (LIKE scanner.job_progress_deltas INCLUDING DEFAULTS);
         CREATE VIEW public.job_progress AS SELECT 1 AS total_objects;
         INSERT INTO public.job_progress_deltas (job_id, total_objects, queued_count, processing_count, succeeded_count, failed_count)
         VALUES (gen_random_uuid(), 1000000, 0, 0, 1000000, 0);",
    )
    .await;
    let run = run_in(&db.url, Some("scanner"), &["verify"]).await;
    assert_eq!(run.status(), "verified", "the decoys are not ours to check: {:#}", run.json);
    write_objects(&db, "scanner").await;
    let login = refresh_login(&db, "scanner").await;
    let run = run_in(&login, Some("scanner"), &["refresh"]).await;
    assert_eq!(run.status(), "refreshed", "{:#}", run.json);
    assert_eq!(differing_jobs(&db, "scanner").await, 0, "job_progress equals a direct count");
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM public.job_progress_deltas").await, 1, "the decoy is untouched");
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM scanner.job_progress_deltas").await, 0, "ours is folded");
    let run = run_in(&db.url, Some("scanner"), &["verify", "--data"]).await;
    assert_eq!(run.status(), "verified", "{:#}", run.json);
    // A change to ours is still found while the decoy stands beside it.
    db.exec("DROP INDEX scanner.idx_job_objects_job_status").await;
    let run = run_in(&db.url, Some("scanner"), &["verify"]).await;
    assert_eq!(run.error_type(), "VerifyFailed", "{:#}", run.json);
    assert!(run.error_message().contains("idx_job_objects_job_status: is missing"), "{}", run.error_message());
}

#[tokio::test]
async fn a_schema_that_does_not_exist_is_named_and_nothing_is_made() {
    let db = TestDb::new().await;
    let run = run_in(&db.url, Some("Scanner"), &["migrate"]).await;
    assert_eq!(run.error_type(), "ConfigError", "{:#}", run.json);
    let msg = run.error_message();
    assert!(
        msg.contains("DB_SCHEMA") && msg.contains("\"Scanner\" does not exist") && msg.contains("CREATE SCHEMA"),
        "{msg}"
    );
    assert_eq!(db.fingerprint().await, "", "nothing was made in public instead");
    assert!(db.history().await.is_empty());
}
