//! SECURITY DEFINER done safely (issue 16, section 5): refresh_job_progress() runs with its owner's
//! rights, so nobody allowed only to call it may choose what its names mean; `verify` reports every
//! definer function of the schema whose search_path would let them.

use sqlx::{Connection, PgConnection};

use crate::{
    lambda::random_password,
    support::{
        cli::{Run, migrator},
        pg::{TestDb, server},
        secrets,
    },
};

/// A session running as scanner_refresh with nothing more: a login of the test's own that is a
/// member of it, then SET ROLE (scanner_refresh's password is the server's, shared by parallel tests).
async fn as_refresh_role(db: &TestDb) -> PgConnection {
    let login = format!("{}_caller", db.name);
    let password = random_password();
    secrets::register(&password);
    db.exec(&format!("CREATE ROLE {login} LOGIN NOINHERIT PASSWORD '{password}'; GRANT scanner_refresh TO {login};"))
        .await;
    let url = format!("postgres://{login}:{password}@127.0.0.1:{}/{}", server().port, db.name);
    let mut conn = PgConnection::connect(&url).await.unwrap_or_else(|e| panic!("{login} cannot log in: {e}"));
    sqlx::raw_sql("SET ROLE scanner_refresh").execute(&mut conn).await.unwrap();
    conn
}

/// A job with five objects, created by the tests' own setup; its id.
async fn a_job_with_five_objects(db: &TestDb) -> String {
    db.scalar(
        "WITH j AS (INSERT INTO jobs (bucket) VALUES ('b') RETURNING job_id),
              o AS (INSERT INTO job_objects (job_id, bucket, key) SELECT job_id, 'b', 'k' || g FROM j, generate_series(1, 5) AS g)
         SELECT job_id::text FROM j",
    )
    .await
}

/// The attack of issue 16, as scanner_refresh: a temporary job_progress_deltas holding a forged
/// delta of a million objects, readable by the fold's owner, then the fold.
async fn forge_a_million(conn: &mut PgConnection, job: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TEMP TABLE job_progress_deltas (
             job_id uuid NOT NULL, xid xid8 NOT NULL DEFAULT pg_current_xact_id(), total_objects bigint NOT NULL,
             queued_count bigint NOT NULL, processing_count bigint NOT NULL, succeeded_count bigint NOT NULL,
             failed_count bigint NOT NULL);
         GRANT ALL ON job_progress_deltas TO PUBLIC;
         INSERT INTO job_progress_deltas (job_id, total_objects, queued_count, processing_count, succeeded_count, failed_count)
         VALUES ('{job}', 1000000, 0, 0, 1000000, 0);
         SELECT refresh_job_progress();"
    )))
    .execute(&mut *conn)
    .await
    .unwrap_or_else(|e| panic!("scanner_refresh may create a temporary table and call the fold: {e}"));
}

/// The other attack on a definer function's path: where everyone may create in public (the
/// default before PostgreSQL 15, emulated here), scanner_refresh plants `*`(numeric, integer), a
/// closer match than pg_catalog's for the fold's `fold_ms` arithmetic, whose body grants it a
/// table as whoever runs it. Whether the fold ran it with its owner's rights.
async fn plant_an_operator(db: &TestDb, conn: &mut PgConnection) -> bool {
    db.exec_super("GRANT CREATE ON SCHEMA public TO PUBLIC").await;
    sqlx::raw_sql(
        "CREATE FUNCTION public.planted(numeric, integer) RETURNS numeric LANGUAGE plpgsql AS $$
         BEGIN
             EXECUTE 'GRANT SELECT ON public.jobs TO scanner_refresh';
             RETURN $1 OPERATOR(pg_catalog.*) $2::numeric;
         END $$;
         CREATE OPERATOR public.* (LEFTARG = numeric, RIGHTARG = integer, FUNCTION = public.planted);
         SELECT refresh_job_progress();",
    )
    .execute(&mut *conn)
    .await
    .unwrap_or_else(|e| panic!("scanner_refresh may create in public and call the fold: {e}"));
    let escalated = db.scalar("SELECT has_table_privilege('scanner_refresh', 'jobs', 'SELECT')").await;
    db.exec_super("DROP OPERATOR public.* (numeric, integer); DROP FUNCTION public.planted(numeric, integer); REVOKE CREATE ON SCHEMA public FROM PUBLIC; REVOKE SELECT ON jobs FROM scanner_refresh").await;
    escalated
}

/// Jobs whose job_progress row differs from a direct count of their objects.
async fn miscounted(db: &TestDb) -> Vec<String> {
    let mut c = db.conn().await;
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT format('%s: job_progress %s, counted %s', p.job_id, p.total_objects, count(o.*))
           FROM job_progress AS p LEFT JOIN job_objects AS o ON o.job_id = p.job_id
          GROUP BY p.job_id, p.total_objects HAVING p.total_objects <> count(o.*)",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    rows
}

fn the_definer_version() -> i64 {
    *crate::support::all_versions().iter().find(|v| **v == 5).expect("migration 005 is embedded")
}

#[tokio::test]
async fn the_refresh_role_cannot_forge_the_counts_with_a_temporary_table() {
    // Before 005 (as 004 left it): the attack works. This is what the test would catch.
    let db = TestDb::new().await;
    let master = db.url.clone();
    let before = (the_definer_version() - 1).to_string();
    // Applied, and its closing verification already names the function unsafe (a later migration fixes it).
    let run = migrator(&master, &["migrate", "--target", &before]).await;
    assert_eq!(run.status(), "applied", "{:#}", run.json);
    assert!(
        run.json["verification"]["accepted"]
            .to_string()
            .contains("refresh_job_progress(): SECURITY DEFINER with search_path `pg_catalog, public`"),
        "{:#}",
        run.json
    );
    assert_eq!(db.history().await.last(), Some(&(the_definer_version() - 1)));
    let job = a_job_with_five_objects(&db).await;
    let mut conn = as_refresh_role(&db).await;
    forge_a_million(&mut conn, &job).await;
    assert_eq!(db.scalar::<i64>("SELECT total_objects FROM job_progress").await, 1_000_005, "004's fold is forgeable");
    assert!(plant_an_operator(&db, &mut conn).await, "004's fold runs an operator planted in public");
    conn.close().await.unwrap();

    // At the latest version, migrated by the RDS-shaped master: the fold reads the real log.
    let db = TestDb::new().await;
    let master = db.url.clone();
    let run = migrator(&master, &["migrate"]).await;
    assert_eq!(run.status(), "applied", "{:#}", run.json);
    let job = a_job_with_five_objects(&db).await;
    let mut conn = as_refresh_role(&db).await;
    forge_a_million(&mut conn, &job).await;
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_temp.job_progress_deltas").fetch_one(&mut conn).await.unwrap();
    assert_eq!(left, 1, "the fold never touched the caller's temporary table");
    assert!(!plant_an_operator(&db, &mut conn).await, "the fold ran an operator planted in public");
    conn.close().await.unwrap();
    assert_eq!(miscounted(&db).await, Vec::<String>::new());
    assert_eq!(db.scalar::<i64>("SELECT total_objects FROM job_progress").await, 5);
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM job_progress_deltas").await, 0, "the real log was folded");
    assert_eq!(migrator(&master, &["verify"]).await.status(), "verified");
}

fn failures(run: &Run) -> String {
    assert_eq!(run.error_type(), "VerifyFailed", "{:#}", run.json);
    run.error_message().to_string()
}

#[tokio::test]
async fn verify_names_a_definer_function_whose_search_path_lets_others_choose_its_names() {
    let db = TestDb::new().await;
    let master = db.url.clone();
    // PostgreSQL 15's default for public: its owner may create there, PUBLIC may not (before 15 PUBLIC
    // may, and the bootstrap superuser owns it: that case is tested below).
    db.exec_super(&format!(
        "ALTER SCHEMA public OWNER TO {}; REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        crate::support::pg::server().master
    ))
    .await;
    assert_eq!(migrator(&master, &["migrate"]).await.status(), "applied");

    // Made by hand, not by the migrations: named with the fix, but not a failure (they are the user's).
    db.exec(
        "CREATE FUNCTION hand_made() RETURNS int LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public
             AS 'SELECT count(*)::int FROM jobs';
         CREATE FUNCTION no_path(x int) RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT x';
         CREATE FUNCTION safe_one() RETURNS int LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
             AS 'SELECT 1';",
    )
    .await;
    let named = |run: &Run| {
        assert_eq!(run.status(), "verified", "{:#}", run.json);
        run.json["verification"]["accepted"].to_string()
    };
    let msg = named(&migrator(&master, &["verify"]).await);
    assert!(
        msg.contains("function hand_made(): SECURITY DEFINER with search_path `pg_catalog, public`, which does not end in pg_temp")
            && msg.contains("ALTER FUNCTION hand_made() SET search_path = pg_catalog, public, pg_temp")
            && msg.contains("not a function the migrations create"),
        "{msg}"
    );
    assert!(
        msg.contains("function no_path(x integer): SECURITY DEFINER without a pinned search_path")
            && msg.contains("ALTER FUNCTION no_path(x integer) SET search_path = pg_catalog, public, pg_temp"),
        "{msg}"
    );
    assert!(!msg.contains("safe_one") && !msg.contains("refresh_job_progress"), "{msg}");

    // The fixes it names work.
    db.exec(
        "ALTER FUNCTION hand_made() SET search_path = pg_catalog, public, pg_temp;
         ALTER FUNCTION no_path(x integer) SET search_path = pg_catalog, public, pg_temp;",
    )
    .await;
    let msg = named(&migrator(&master, &["verify"]).await);
    assert!(!msg.contains("hand_made") && !msg.contains("no_path"), "{msg}");

    // A schema in the path that everyone may create in (public before PostgreSQL 15): an operator
    // planted there would run with the master's rights. refresh_job_progress() has no such schema.
    db.exec_super("GRANT CREATE ON SCHEMA public TO PUBLIC").await;
    let msg = named(&migrator(&master, &["verify"]).await);
    assert!(
        msg.contains("function hand_made(): SECURITY DEFINER with schema public in its search_path, where PUBLIC may create objects")
            && msg.contains("REVOKE CREATE ON SCHEMA public FROM PUBLIC"),
        "{msg}"
    );
    assert!(!msg.contains("refresh_job_progress"), "{msg}");
    db.exec_super("REVOKE CREATE ON SCHEMA public FROM PUBLIC").await;
}

#[tokio::test]
async fn rolling_005_back_is_named_unsafe_and_migrating_again_makes_it_safe() {
    let db = TestDb::new().await;
    let master = db.url.clone();
    assert_eq!(migrator(&master, &["migrate"]).await.status(), "applied");
    let before = db.fingerprint().await;
    let config =
        || db.scalar::<Vec<String>>("SELECT proconfig FROM pg_proc WHERE oid = 'refresh_job_progress()'::regprocedure");
    assert_eq!(config().await, ["search_path=pg_catalog, pg_temp"]);

    let v = the_definer_version();
    let run = migrator(&master, &["rollback", "--to", &(v - 1).to_string()]).await;
    assert_eq!(run.status(), "rolled_back", "{:#}", run.json);
    assert_eq!(config().await, ["search_path=pg_catalog, public"], "004's path again");
    // Below the latest migration the hazard is named (a later migration fixes it), not failed.
    let run = migrator(&master, &["verify"]).await;
    assert_eq!(run.status(), "verified", "{:#}", run.json);
    let msg = run.json["verification"]["accepted"].to_string();
    assert!(
        msg.contains("function refresh_job_progress(): SECURITY DEFINER with search_path `pg_catalog, public`")
            && msg.contains("below the latest migration: run migrate"),
        "{msg}"
    );

    assert_eq!(migrator(&master, &["migrate"]).await.status(), "applied");
    assert_eq!(config().await, ["search_path=pg_catalog, pg_temp"]);
    assert_eq!(db.fingerprint().await, before);
    assert_eq!(migrator(&master, &["verify"]).await.status(), "verified");

    // At the latest version the migrations' own function made unsafe by hand is a failure, with the fix.
    db.exec("ALTER FUNCTION refresh_job_progress() SET search_path = pg_catalog, public").await;
    let msg = failures(&migrator(&master, &["verify"]).await);
    assert!(
        msg.contains("function refresh_job_progress(): SECURITY DEFINER with search_path `pg_catalog, public`, which does not end in pg_temp")
            && msg.contains("ALTER FUNCTION refresh_job_progress() SET search_path = pg_catalog, public, pg_temp"),
        "{msg}"
    );
}
