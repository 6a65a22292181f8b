//! PostgreSQL specifics: connecting, the history table, the advisory lock, and the checks
//! behind `verify`.

use std::time::Duration;

use serde::Serialize;
use sqlx::{
    AssertSqlSafe, Connection, Executor, PgConnection, Row,
    postgres::{PgConnectOptions, PgDatabaseError, PgSslMode},
};

use crate::{
    deadline::Deadline,
    error::{Error, Result, cause_chain},
    plan::{Applied, State},
};

/// The history table's name.
pub const HISTORY_TABLE: &str = "scanner_migrator_history";

/// Where `migrate` keeps the expected catalog it derived, beside the history. Its name starts
/// with the history's, so the catalog readers never take it for one of the migrations' objects.
pub const EXPECTED_TABLE: &str = "scanner_migrator_history_expected";

/// Where index builds' speeds are kept (rows, seconds), so `plan` estimates from this database's
/// own builds once it has some. Its name starts with the history's, so the catalog readers skip it.
pub const BUILDS_TABLE: &str = "scanner_migrator_history_builds";

/// Builds on fewer rows than this say little about speed (fixed costs dominate): not recorded.
pub const BUILD_ROWS_WORTH_RECORDING: f64 = 10_000.0;

/// Records a finished index build's size and time. Only saves estimates: a failure is logged, never
/// the run's.
pub async fn record_build(conn: &mut PgConnection, index: &str, table: &str, rows: f64, took: std::time::Duration) {
    if rows < BUILD_ROWS_WORTH_RECORDING || took.is_zero() {
        return;
    }
    let create = format!(
        "CREATE TABLE IF NOT EXISTS {BUILDS_TABLE} (
            built_at    timestamptz NOT NULL DEFAULT now(),
            index_name  text NOT NULL,
            table_name  text NOT NULL,
            rows        float8 NOT NULL,
            duration_ms bigint NOT NULL
        )"
    );
    let insert =
        format!("INSERT INTO {BUILDS_TABLE} (index_name, table_name, rows, duration_ms) VALUES ($1, $2, $3, $4)");
    let recorded = async {
        if !table_exists(conn, BUILDS_TABLE).await? {
            exec(conn, &create).await?;
        }
        sqlx::query(AssertSqlSafe(insert))
            .bind(index)
            .bind(table)
            .bind(rows)
            .bind(i64::try_from(took.as_millis()).unwrap_or(i64::MAX))
            .execute(&mut *conn)
            .await
            .map(|_| ())
    }
    .await;
    if let Err(e) = recorded {
        tracing::warn!(table = BUILDS_TABLE, error = %cause_chain(&e), "could not record the build's speed; plan keeps INDEX_BUILD_ROWS_PER_S");
    }
}

/// This database's index build speed: the median rows per second of its last 20 recorded builds,
/// and how many there were; `None` before the first.
pub async fn measured_build_speed(conn: &mut PgConnection) -> std::result::Result<Option<(f64, i64)>, sqlx::Error> {
    if !table_exists(conn, BUILDS_TABLE).await? {
        return Ok(None);
    }
    let sql = format!(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY rows * 1000.0 / greatest(duration_ms, 1)), count(*)
           FROM (SELECT rows, duration_ms FROM {BUILDS_TABLE} ORDER BY built_at DESC LIMIT 20) AS recent"
    );
    let (speed, n): (Option<f64>, i64) = sqlx::query_as(AssertSqlSafe(sql)).fetch_one(&mut *conn).await?;
    Ok(speed.filter(|_| n > 0).map(|s| (s, n)))
}

/// The advisory lock every migrator and refresher takes: (`'SCAN'`, 1).
pub const LOCK_KEY: (i32, i32) = (0x5343_414e, 1);

/// Where we connect, for results, logs and errors. Never holds the password.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database name.
    pub database: String,
    /// User name.
    pub user: String,
    /// The TLS mode used.
    pub sslmode: String,
    /// What the session negotiated, from `pg_stat_ssl`: e.g. `TLSv1.3 TLS_AES_256_GCM_SHA384`, or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
}

impl Target {
    /// What we know of the connection options, without the password.
    pub fn of(opts: &PgConnectOptions) -> Self {
        Target {
            host: opts.get_host().to_string(),
            port: opts.get_port(),
            database: opts.get_database().unwrap_or(opts.get_username()).to_string(),
            user: opts.get_username().to_string(),
            sslmode: sslmode_name(opts.get_ssl_mode()).to_string(),
            tls: None,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}/{} (sslmode {})", self.user, self.host, self.port, self.database, self.sslmode)
    }
}

/// The libpq spelling of a TLS mode.
pub fn sslmode_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

/// Opens one dedicated connection (never a pool: the advisory lock belongs to the session).
/// The wait is `timeout`, or the time left when that is shorter.
pub async fn connect(opts: &PgConnectOptions, timeout: Duration, deadline: Deadline) -> Result<PgConnection> {
    let target = Target::of(opts);
    match deadline.within(Some(timeout), PgConnection::connect_with(opts)).await {
        Err(cut) => Err(Error::ConnectFailed { target: target.to_string(), cause: format!("no connection {cut}") }),
        Ok(Ok(mut conn)) => {
            watch_client(&mut conn).await;
            Ok(conn)
        }
        Ok(Err(err)) => {
            let code = err.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
            let cause = cause_chain(&err);
            if matches!(code.as_deref(), Some("28P01") | Some("28000")) {
                Err(Error::AuthFailed { user: target.user.clone(), target: target.to_string(), cause })
            } else {
                Err(Error::ConnectFailed { target: target.to_string(), cause })
            }
        }
    }
}

/// PostgreSQL 14+ checks every second whether the client of a running statement is still
/// there, so a statement whose Lambda was killed is cancelled instead of running on (holding
/// locks and the migration lock).
async fn watch_client(conn: &mut PgConnection) {
    let set = sqlx::query(
        "SELECT set_config('client_connection_check_interval', '1000', false)
          WHERE current_setting('server_version_num')::int >= 140000",
    )
    .execute(&mut *conn)
    .await;
    if let Err(e) = set {
        tracing::warn!(error = %cause_chain(&e), "client_connection_check_interval could not be set");
    }
}

/// The oldest PostgreSQL major the migrations run on: 003 needs xid8, pg_current_snapshot() and
/// pg_visible_in_snapshot(), all new in 13.
pub const MIN_SERVER_VERSION_NUM: i64 = 130000;

/// Refuses a server older than [`MIN_SERVER_VERSION_NUM`] before anything is read or changed.
pub async fn check_server_version(conn: &mut PgConnection) -> Result<()> {
    let ctx = "reading the server's version";
    let (num, text): (String, String) =
        sqlx::query_as("SELECT current_setting('server_version_num'), current_setting('server_version')")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| Error::db(ctx, e))?;
    supported_server(&num, &text)
}

/// Whether a server reporting `server_version_num` `num` (and `server_version` `text`) is new enough.
pub fn supported_server(num: &str, text: &str) -> Result<()> {
    let n: i64 = num.trim().parse().map_err(|_| Error::Database {
        context: "reading the server's version".into(),
        cause: format!("server_version_num is {num:?}, not a number"),
    })?;
    if n < MIN_SERVER_VERSION_NUM {
        return Err(Error::UnsupportedServer { version: text.to_string(), minimum: MIN_SERVER_VERSION_NUM / 10000 });
    }
    Ok(())
}

/// Runs one statement (or several, via the simple query protocol) and discards its rows.
pub async fn exec(conn: &mut PgConnection, sql: &str) -> std::result::Result<(), sqlx::Error> {
    conn.execute(sqlx::raw_sql(AssertSqlSafe(sql.to_string()))).await.map(|_| ())
}

/// The SQLSTATE of a database error, if it is one.
pub fn sqlstate(err: &sqlx::Error) -> Option<String> {
    err.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned())
}

/// The PostgreSQL-specific parts of a database error: (message, detail, position).
pub fn pg_details(err: &sqlx::Error) -> (String, Option<String>, Option<usize>) {
    match err.as_database_error().and_then(|e| e.try_downcast_ref::<PgDatabaseError>()) {
        Some(pg) => {
            let position = match pg.position() {
                Some(sqlx::postgres::PgErrorPosition::Original(p)) => Some(p),
                _ => None,
            };
            (pg.message().to_string(), crate::error::pg_detail(pg), position)
        }
        None => (cause_chain(err), None, None),
    }
}

/// SQLSTATE 55P03: `lock_timeout` expired.
pub fn is_lock_timeout(err: &sqlx::Error) -> bool {
    sqlstate(err).as_deref() == Some("55P03")
}

/// SQLSTATE 57014: the statement was cancelled (`statement_timeout`, or a cancel request).
pub fn is_query_canceled(err: &sqlx::Error) -> bool {
    sqlstate(err).as_deref() == Some("57014")
}

/// A duration as PostgreSQL's timeout settings take it: milliseconds, at most `INT_MAX` (a longer
/// one is refused as an invalid value; that maximum is some 24 days), `None` as 0 (no limit).
fn timeout_ms(d: Option<Duration>) -> String {
    d.map(|d| d.as_millis().clamp(1, i32::MAX as u128)).unwrap_or(0).to_string()
}

/// `statement_timeout` and `lock_timeout` for the next statements, in one round trip; `None` is no limit.
pub async fn set_limits(
    conn: &mut PgConnection,
    statement: Option<Duration>,
    lock: Option<Duration>,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('statement_timeout', $1, false), set_config('lock_timeout', $2, false)")
        .bind(timeout_ms(statement))
        .bind(timeout_ms(lock))
        .execute(conn)
        .await
        .map(|_| ())
}

/// The most memory an index build is given, whatever the instance allows.
pub const BUILD_MEMORY_CAP: &str = "1GB";

/// What a DBA gives an index build, for this session: `maintenance_work_mem` raised to
/// min(1 GB, half of `shared_buffers`) when that is more than it has, and up to 4 parallel
/// workers within `max_parallel_workers` and `max_worker_processes`. Returns (kB, workers).
pub async fn tune_build(conn: &mut PgConnection) -> std::result::Result<(i64, i32), sqlx::Error> {
    sqlx::query_as(
        "WITH s AS (
            SELECT greatest(pg_size_bytes(current_setting('maintenance_work_mem')),
                            least(pg_size_bytes($1), pg_size_bytes(current_setting('shared_buffers')) / 2)) / 1024 AS kb,
                   greatest(0, least(4, current_setting('max_parallel_workers')::int,
                                     current_setting('max_worker_processes')::int - 1)) AS workers)
         SELECT kb, workers FROM s
          WHERE set_config('maintenance_work_mem', kb || 'kB', false) IS NOT NULL
            AND set_config('max_parallel_maintenance_workers', workers::text, false) IS NOT NULL",
    )
    .bind(BUILD_MEMORY_CAP)
    .fetch_one(conn)
    .await
}

/// Back to the server's defaults.
pub async fn reset_limits(conn: &mut PgConnection) -> std::result::Result<(), sqlx::Error> {
    exec(conn, "RESET statement_timeout; RESET lock_timeout; RESET maintenance_work_mem; RESET max_parallel_maintenance_workers")
        .await
}

/// The schema unqualified names are created in (where the history table and the migrations' objects are).
pub async fn current_schema(conn: &mut PgConnection) -> Result<String> {
    sqlx::query_scalar::<_, Option<String>>("SELECT current_schema()")
        .fetch_one(conn)
        .await
        .map_err(|e| Error::db("reading current_schema()", e))?
        .ok_or_else(|| Error::Database {
            context: "reading current_schema()".into(),
            cause: "no schema of the search_path exists; set search_path to the scanner's schema".into(),
        })
}

/// Fixes the session's `search_path` to one schema: `configured` (`DB_SCHEMA`), or else the login's
/// `current_schema()`. Every unqualified name of the migrations, the refresh and verify then
/// resolves there and nowhere else (a same-named table in another schema of the login's path cannot
/// stand in for ours), and the catalog readers print definitions the same way for every schema.
pub async fn pin_schema(conn: &mut PgConnection, configured: Option<&str>) -> Result<String> {
    let schema = match configured {
        None => current_schema(conn).await?,
        Some(name) => {
            let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(name)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| Error::db("looking up the schema DB_SCHEMA names", e))?;
            if !exists {
                let database: String = sqlx::query_scalar("SELECT current_database()::text")
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(|e| Error::db("looking up the schema DB_SCHEMA names", e))?;
                return Err(Error::Config {
                    var: "DB_SCHEMA".into(),
                    problem: format!(
                        "schema {} does not exist in database {database} (the name is taken as stored, \
                         case-sensitive); create it first: CREATE SCHEMA {}",
                        quote_ident(name),
                        quote_ident(name)
                    ),
                });
            }
            name.to_string()
        }
    };
    sqlx::query("SELECT set_config('search_path', quote_ident($1), false)")
        .bind(&schema)
        .execute(&mut *conn)
        .await
        .map_err(|e| Error::db(format!("setting search_path to schema {}", quote_ident(&schema)), e))?;
    Ok(schema)
}

/// An identifier quoted for SQL, whatever it holds.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A digest of the catalog rows that describe the objects of every schema but PostgreSQL's own:
/// schemas, relations, the columns of tables and views, defaults, indexes (and their validity),
/// view rules, constraints, triggers, functions, languages, standalone types and extension
/// memberships; everything the verification reads, and what it reads through (a type or function
/// of another schema is printed by name). A committed change to any of them gives another digest:
/// each new row version has a new `xmin`; VACUUM and ANALYZE update statistics in place and leave it
/// alone, and index validity, which some majors flip in place, is hashed by value. The migrator's
/// own tables are left out (`migrate` creates or upgrades them before it changes anything else), as
/// verification leaves them out.
pub async fn catalog_stamp(conn: &mut PgConnection) -> std::result::Result<String, sqlx::Error> {
    // A sum of 64-bit row hashes and a count: independent of the order rows come in, so no sort,
    // and any added, removed or rewritten row changes it but by a chance of about 2^-64.
    let sql = format!(
        r#"WITH ns AS (SELECT oid, xmin FROM pg_namespace
                      WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
                        AND nspname NOT LIKE 'pg\_temp\_%' AND nspname NOT LIKE 'pg\_toast\_temp\_%'),
              rel AS (SELECT c.oid, c.xmin, c.relkind FROM pg_class AS c JOIN ns ON ns.oid = c.relnamespace
                       WHERE c.relname NOT LIKE '{HISTORY_TABLE}%')
         SELECT count(*) || ':' || coalesce(sum(hashtextextended(x, 0)), 0) FROM (
             SELECT 'n' || oid || ':' || xmin FROM ns
             UNION ALL SELECT 'c' || oid || ':' || xmin FROM rel
             UNION ALL SELECT 'a' || a.attrelid || '.' || a.attnum || ':' || a.xmin
                         FROM pg_attribute AS a JOIN rel ON rel.oid = a.attrelid
                        WHERE a.attnum > 0 AND rel.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
             UNION ALL SELECT 'd' || d.oid || ':' || d.xmin FROM pg_attrdef AS d JOIN rel ON rel.oid = d.adrelid
             UNION ALL SELECT 'i' || i.indexrelid || ':' || i.xmin || ':' || i.indisvalid || i.indisready || i.indislive
                         FROM pg_index AS i JOIN rel ON rel.oid = i.indexrelid
             UNION ALL SELECT 'r' || r.oid || ':' || r.xmin FROM pg_rewrite AS r JOIN rel ON rel.oid = r.ev_class
             -- Internal triggers (a foreign key's) come and go with their constraint's row.
             UNION ALL SELECT 't' || t.oid || ':' || t.xmin FROM pg_trigger AS t JOIN rel ON rel.oid = t.tgrelid
                        WHERE NOT t.tgisinternal
             UNION ALL SELECT 'k' || k.oid || ':' || k.xmin FROM pg_constraint AS k JOIN rel ON rel.oid = k.conrelid
             UNION ALL SELECT 'p' || p.oid || ':' || p.xmin FROM pg_proc AS p JOIN ns ON ns.oid = p.pronamespace
             UNION ALL SELECT 'l' || l.oid || ':' || l.xmin FROM pg_language AS l
             -- A relation's row type (and its array) changes with the relation's own row.
             UNION ALL SELECT 'y' || y.oid || ':' || y.xmin FROM pg_type AS y JOIN ns ON ns.oid = y.typnamespace
                        WHERE y.typrelid = 0 AND y.typcategory <> 'A'
             UNION ALL SELECT 'e' || e.classid || '.' || e.objid || ':' || e.xmin FROM pg_depend AS e
                        WHERE e.deptype = 'e'
         ) AS s(x)"#
    );
    sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(conn).await
}

/// [`catalog_stamp`] and a digest of the history's rows: what a run changed, if anything.
pub async fn change_stamp(conn: &mut PgConnection) -> Result<String> {
    let ctx = "reading the catalog's row versions";
    let catalog = catalog_stamp(conn).await.map_err(|e| Error::db(ctx, e))?;
    if !history_exists(conn).await.map_err(|e| Error::db(ctx, e))? {
        return Ok(catalog);
    }
    let sql = format!("SELECT md5(coalesce(string_agg(xmin::text, ',' ORDER BY version), '')) FROM {HISTORY_TABLE}");
    let rows: String =
        sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(&mut *conn).await.map_err(|e| Error::db(ctx, e))?;
    Ok(format!("{catalog}:{rows}"))
}

/// What the catalog says about the connected user's privileges (see `privileges`).
pub async fn role_facts(conn: &mut PgConnection, schema: &str, refresh_role: &str) -> Result<crate::privileges::Facts> {
    type Row = (String, String, bool, bool, bool, bool, i32, bool, bool, bool, bool, bool);
    let row: Row = sqlx::query_as(
        "SELECT current_user::text, current_database()::text, r.rolsuper, r.rolcreaterole,
                has_database_privilege(current_database(), 'CREATE'), has_schema_privilege($1, 'CREATE'),
                current_setting('server_version_num')::int,
                EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $2),
                COALESCE(CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $2)
                              THEN pg_has_role($2, 'MEMBER WITH ADMIN OPTION') END, false),
                EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_iam'),
                EXISTS (SELECT 1 FROM pg_auth_members AS m JOIN pg_roles AS g ON g.oid = m.roleid
                          JOIN pg_roles AS u ON u.oid = m.member WHERE g.rolname = 'rds_iam' AND u.rolname = $2),
                COALESCE(CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_iam')
                              THEN pg_has_role('rds_iam', 'MEMBER WITH ADMIN OPTION') END, false)
           FROM pg_roles AS r WHERE r.rolname = current_user",
    )
    .bind(schema)
    .bind(refresh_role)
    .fetch_one(conn)
    .await
    .map_err(|e| Error::db("reading the migrator's own privileges", e))?;
    let (
        user,
        database,
        superuser,
        createrole,
        create_on_database,
        create_on_schema,
        version,
        exists,
        admin,
        rds_iam,
        in_rds_iam,
        rds_iam_admin,
    ) = row;
    Ok(crate::privileges::Facts {
        user,
        database,
        schema: schema.to_string(),
        superuser,
        createrole,
        create_on_database,
        create_on_schema,
        server_version_num: version,
        refresh_role: refresh_role.to_string(),
        refresh_role_exists: exists,
        refresh_role_admin: admin,
        rds_iam_exists: rds_iam,
        refresh_role_in_rds_iam: in_rds_iam,
        rds_iam_admin,
    })
}

/// `scanner_migrator.refresh_role` for this session: migration 004's down script revokes from that role.
pub async fn set_refresh_role_setting(conn: &mut PgConnection, role: &str) -> Result<()> {
    sqlx::query("SELECT set_config('scanner_migrator.refresh_role', $1, false)")
        .bind(role)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(|e| Error::db("setting scanner_migrator.refresh_role for this session", e))
}

/// Runs `statements` in one transaction: all of them, or none.
pub async fn exec_in_transaction(conn: &mut PgConnection, statements: &[&str]) -> std::result::Result<(), sqlx::Error> {
    let mut script = String::from("BEGIN;\n");
    for s in statements {
        script.push_str(s);
        script.push_str(";\n");
    }
    script.push_str("COMMIT;");
    // The simple protocol runs the script as one implicit transaction block: an error rolls back all of it.
    let outcome = exec(conn, &script).await;
    if outcome.is_err() {
        let _ = exec(conn, "ROLLBACK").await;
    }
    outcome
}

/// The refresh role `role` in the connected database (see `refresh_role`); `legacy` is the role
/// migration 004 once granted.
pub async fn refresh_role_state(
    conn: &mut PgConnection,
    role: &str,
    legacy: &str,
) -> Result<crate::refresh_role::State> {
    let row: (String, bool, bool, bool, bool, bool, bool, bool, bool, bool, String, bool) = sqlx::query_as(
        "WITH f AS (SELECT to_regprocedure('refresh_job_progress()') AS oid),
              r AS (SELECT oid, rolcanlogin FROM pg_roles WHERE rolname = $1)
         SELECT current_database()::text,
                EXISTS (SELECT 1 FROM r),
                COALESCE((SELECT rolcanlogin FROM r), false),
                COALESCE((SELECT p.prosecdef FROM pg_proc AS p, f WHERE p.oid = f.oid), false),
                COALESCE(CASE WHEN EXISTS (SELECT 1 FROM r) THEN
                    (SELECT has_function_privilege($1, f.oid, 'EXECUTE') FROM f WHERE f.oid IS NOT NULL) END, false),
                EXISTS (SELECT 1 FROM pg_database AS d, aclexplode(d.datacl) AS a, r
                         WHERE d.datname = current_database() AND a.grantee = r.oid AND a.privilege_type = 'CONNECT'),
                has_database_privilege(current_database(), 'CONNECT WITH GRANT OPTION'),
                EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_iam'),
                EXISTS (SELECT 1 FROM pg_auth_members AS m JOIN pg_roles AS g ON g.oid = m.roleid, r
                         WHERE g.rolname = 'rds_iam' AND m.member = r.oid),
                COALESCE(CASE WHEN $1 <> $2 AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $2) THEN
                    (SELECT has_function_privilege($2, f.oid, 'EXECUTE') FROM f WHERE f.oid IS NOT NULL) END, false),
                current_schema()::text,
                -- A role not created yet will have what PUBLIC has.
                CASE WHEN EXISTS (SELECT 1 FROM r) THEN has_schema_privilege($1, current_schema(), 'USAGE')
                     ELSE has_schema_privilege('public', current_schema(), 'USAGE') END",
    )
    .bind(role)
    .bind(legacy)
    .fetch_one(conn)
    .await
    .map_err(|e| Error::db(format!("reading what the refresh role {role} may do"), e))?;
    let (
        database,
        exists,
        login,
        function_ready,
        may_execute,
        connect_granted,
        may_grant_connect,
        rds_iam_exists,
        rds_iam_member,
        legacy_may_execute,
        schema,
        schema_usage,
    ) = row;
    Ok(crate::refresh_role::State {
        database,
        exists,
        login,
        function_ready,
        may_execute,
        connect_granted,
        may_grant_connect,
        rds_iam_exists,
        rds_iam_member,
        legacy_may_execute,
        schema,
        schema_usage,
    })
}

/// An index of this name on this table (as the statement that builds it names them):
/// `(schema-qualified name, valid)`.
pub async fn index_on_table(
    conn: &mut PgConnection,
    table: &str,
    index: &str,
) -> std::result::Result<Option<(String, bool)>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT format('%I.%I', n.nspname, c.relname) AS name, i.indisvalid AS valid
           FROM pg_index AS i
           JOIN pg_class AS c ON c.oid = i.indexrelid
           JOIN pg_namespace AS n ON n.oid = c.relnamespace
          WHERE i.indrelid = to_regclass($1) AND c.relname = (parse_ident($2))[1]",
    )
    .bind(table)
    .bind(index)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.get("name"), r.get("valid"))))
}

/// The statement that drops one index (schema-qualified name) without blocking the table's writers.
pub fn drop_index_concurrently(qualified: &str) -> String {
    format!("DROP INDEX CONCURRENTLY IF EXISTS {qualified}")
}

/// The planner's row estimate for a table (from its size when it was never analysed).
pub async fn estimated_rows(conn: &mut PgConnection, table: &str) -> std::result::Result<Option<f64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT CASE WHEN c.reltuples >= 0 THEN c.reltuples::float8 ELSE pg_relation_size(c.oid) / 100.0 END
           FROM pg_class AS c WHERE c.oid = to_regclass($1)",
    )
    .bind(table)
    .fetch_optional(conn)
    .await
}

/// Sets a session setting given as a duration; `None` means no limit.
pub async fn set_timeout(conn: &mut PgConnection, setting: &str, value: Option<Duration>) -> Result<()> {
    exec(conn, &format!("SET {setting} = {}", timeout_ms(value)))
        .await
        .map_err(|e| Error::db(format!("setting {setting}"), e))
}

/// Creates the history table if it is missing, and adds what later versions record to one an
/// earlier version made (only when missing: altering needs the table's owner, who may be another role).
pub async fn ensure_history(conn: &mut PgConnection) -> Result<()> {
    let ctx = "creating the history table";
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (
            version     bigint PRIMARY KEY,
            name        text NOT NULL,
            checksum    text NOT NULL,
            applied_at  timestamptz NOT NULL DEFAULT now(),
            duration_ms bigint NOT NULL,
            applied_by  text NOT NULL,
            -- 'applied'; 'applying' or 'rolling_back' while (or after) a no-transaction up or down
            -- script ran part-way.
            state       text NOT NULL DEFAULT 'applied'
        )"
    );
    exec(conn, &sql).await.map_err(|e| Error::db(ctx, e))?;
    if !history_has_state(conn).await.map_err(|e| Error::db(ctx, e))? {
        let sql = format!("ALTER TABLE {HISTORY_TABLE} ADD COLUMN IF NOT EXISTS state text NOT NULL DEFAULT 'applied'");
        exec(conn, &sql).await.map_err(|e| Error::db(ctx, e))?;
    }
    Ok(())
}

/// Creates the table of the cached expectation when it is missing. It only saves time: a role
/// that cannot create it (an existing database whose schema another role owns) still migrates,
/// deriving the expectation every run, and the log says why.
pub async fn ensure_expected_table(conn: &mut PgConnection) {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {EXPECTED_TABLE} (
            -- The key: what the expectation was derived from. Any change derives it afresh.
            schema_name  text PRIMARY KEY,
            server_major integer NOT NULL,
            migrations   text NOT NULL,
            reader       text NOT NULL,
            versions     bigint[] NOT NULL,
            -- json, not jsonb: read back as the text it was written, with no rendering.
            catalog      json NOT NULL,
            derived_at   timestamptz NOT NULL DEFAULT now(),
            -- The last comparison that found the live schema matching (a no-op migrate skips an unchanged one).
            {}
        )",
        LIVE_COLUMNS.join(", ")
    );
    let created = async {
        let (exists, has_live): (bool, bool) = sqlx::query_as(
            "SELECT to_regclass($1) IS NOT NULL, EXISTS (SELECT 1 FROM pg_attribute
                     WHERE attrelid = to_regclass($1) AND attname = 'live_stamp' AND NOT attisdropped)",
        )
        .bind(EXPECTED_TABLE)
        .fetch_one(&mut *conn)
        .await?;
        match (exists, has_live) {
            (false, _) => exec(conn, &sql).await,
            (true, true) => Ok(()),
            // A table an earlier version made: add what this one records (altering needs its owner).
            (true, false) => {
                let add: Vec<String> = LIVE_COLUMNS.iter().map(|c| format!("ADD COLUMN IF NOT EXISTS {c}")).collect();
                exec(conn, &format!("ALTER TABLE {EXPECTED_TABLE} {}", add.join(", "))).await
            }
        }
    }
    .await;
    if let Err(e) = created {
        tracing::warn!(table = EXPECTED_TABLE, error = %cause_chain(&e),
            "cannot create or upgrade the table of the cached expectation: migrate derives and compares afresh");
    }
}

/// The expected table's record of the last comparison that found the live schema matching: the
/// catalog stamp it was read at, with a digest of the expectation compared ([`live_match`]).
const LIVE_COLUMNS: [&str; 3] = ["live_stamp text", "live_objects bigint", "live_accepted json"];

/// What a cached expectation was derived from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectationKey {
    /// The schema migrated.
    pub schema: String,
    /// The server's major version (`server_version_num / 10000`).
    pub server_major: i32,
    /// A digest of the applied migrations' versions and checksums, in order.
    pub migrations: String,
    /// Which catalog reader wrote it (the binary's version and a digest of the reader's source).
    pub reader: String,
}

/// The server's major version: catalogs print differently across majors.
pub async fn server_major(conn: &mut PgConnection) -> Result<i32> {
    sqlx::query_scalar("SELECT current_setting('server_version_num')::int / 10000")
        .fetch_one(conn)
        .await
        .map_err(|e| Error::db("reading the server's version", e))
}

/// The cached expectation (catalog JSON) when one with exactly this key is stored.
pub async fn cached_expectation(
    conn: &mut PgConnection,
    key: &ExpectationKey,
) -> std::result::Result<Option<String>, sqlx::Error> {
    let sql = format!(
        "SELECT catalog::text FROM {EXPECTED_TABLE}
          WHERE schema_name = $1 AND server_major = $2 AND migrations = $3 AND reader = $4"
    );
    sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(&key.schema)
        .bind(key.server_major)
        .bind(&key.migrations)
        .bind(&key.reader)
        .fetch_optional(conn)
        .await
}

/// Stores the expectation for this key, replacing the schema's earlier one.
pub async fn cache_expectation(
    conn: &mut PgConnection,
    key: &ExpectationKey,
    versions: &[i64],
    catalog: &str,
) -> std::result::Result<(), sqlx::Error> {
    let sql = format!(
        "INSERT INTO {EXPECTED_TABLE} (schema_name, server_major, migrations, reader, versions, catalog)
         VALUES ($1, $2, $3, $4, $5, $6::json)
         ON CONFLICT (schema_name) DO UPDATE SET server_major = EXCLUDED.server_major,
             migrations = EXCLUDED.migrations, reader = EXCLUDED.reader, versions = EXCLUDED.versions,
             catalog = EXCLUDED.catalog, derived_at = now(),
             live_stamp = NULL, live_objects = NULL, live_accepted = NULL"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(&key.schema)
        .bind(key.server_major)
        .bind(&key.migrations)
        .bind(&key.reader)
        .bind(versions)
        .bind(catalog)
        .execute(conn)
        .await
        .map(|_| ())
}

/// The digest of the stored expectation's text, as [`expectation_digest`] computes it from the text written.
const STORED_DIGEST: &str = "encode(sha256(convert_to(catalog::text, 'UTF8')), 'hex')";

/// The digest [`record_live_match`] and [`live_match`] bind a match to: the expectation compared.
pub fn expectation_digest(catalog_json: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(catalog_json.as_bytes()))
}

/// What the last comparison that found the live schema matching the expectation reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveMatch {
    /// How many objects it compared.
    pub objects: usize,
    /// The differences it accepted.
    pub accepted: Vec<String>,
}

/// The match recorded for this key when the catalog is still at `stamp` ([`catalog_stamp`]) and
/// the stored expectation is still the one compared (a hand edit of it voids the match).
pub async fn live_match(
    conn: &mut PgConnection,
    key: &ExpectationKey,
    stamp: &str,
) -> std::result::Result<Option<LiveMatch>, sqlx::Error> {
    let sql = format!(
        "SELECT live_objects, live_accepted::text FROM {EXPECTED_TABLE}
          WHERE schema_name = $1 AND server_major = $2 AND migrations = $3 AND reader = $4
            AND live_stamp = $5 || ':' || {STORED_DIGEST}"
    );
    let row: Option<(Option<i64>, Option<String>)> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(&key.schema)
        .bind(key.server_major)
        .bind(&key.migrations)
        .bind(&key.reader)
        .bind(stamp)
        .fetch_optional(conn)
        .await?;
    let Some((Some(objects), Some(accepted))) = row else { return Ok(None) };
    let accepted = serde_json::from_str(&accepted).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(Some(LiveMatch { objects: objects.try_into().unwrap_or(0), accepted }))
}

/// Records that the live catalog at `stamp` matched the stored expectation for this key, when that
/// is still the one compared (`digest`, [`expectation_digest`]); else records nothing.
pub async fn record_live_match(
    conn: &mut PgConnection,
    key: &ExpectationKey,
    digest: &str,
    stamp: &str,
    found: &LiveMatch,
) -> std::result::Result<(), sqlx::Error> {
    let sql = format!(
        "UPDATE {EXPECTED_TABLE} SET live_stamp = $5 || ':' || $6, live_objects = $7, live_accepted = $8::json
          WHERE schema_name = $1 AND server_major = $2 AND migrations = $3 AND reader = $4 AND {STORED_DIGEST} = $6"
    );
    let accepted = serde_json::to_string(&found.accepted).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(AssertSqlSafe(sql))
        .bind(&key.schema)
        .bind(key.server_major)
        .bind(&key.migrations)
        .bind(&key.reader)
        .bind(stamp)
        .bind(digest)
        .bind(found.objects as i64)
        .bind(accepted)
        .execute(conn)
        .await
        .map(|_| ())
}

async fn history_has_state(conn: &mut PgConnection) -> std::result::Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'state' AND NOT attisdropped)",
    )
    .bind(HISTORY_TABLE)
    .fetch_one(conn)
    .await
}

/// Whether the history table exists yet (it does once a migrate or rollback has run).
async fn history_exists(conn: &mut PgConnection) -> std::result::Result<bool, sqlx::Error> {
    table_exists(conn, HISTORY_TABLE).await
}

/// Whether one of the migrator's own tables exists yet (found through the search_path).
pub async fn table_exists(conn: &mut PgConnection, name: &str) -> std::result::Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(name).fetch_one(conn).await
}

/// The history, oldest first; empty when the table does not exist yet.
pub async fn history(conn: &mut PgConnection) -> Result<Vec<Applied>> {
    let ctx = "reading the migration history";
    if !history_exists(conn).await.map_err(|e| Error::db(ctx, e))? {
        return Ok(Vec::new());
    }
    let has_state = history_has_state(conn).await.map_err(|e| Error::db(ctx, e))?;
    // A history table written by an earlier version has no state column until the next migrate adds it.
    let state = if has_state { "state" } else { "'applied'" };
    let sql = format!(
        "SELECT version, name, checksum, applied_at, duration_ms, applied_by, {state} AS state
           FROM {HISTORY_TABLE} ORDER BY version"
    );
    let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(&mut *conn).await.map_err(|e| Error::db(ctx, e))?;
    rows.iter()
        .map(|r| {
            Ok(Applied {
                version: r.try_get("version")?,
                name: r.try_get("name")?,
                checksum: r.try_get("checksum")?,
                applied_at: r.try_get("applied_at")?,
                duration_ms: r.try_get("duration_ms")?,
                applied_by: r.try_get("applied_by")?,
                state: State::from_column(&r.try_get::<String, _>("state")?),
            })
        })
        .collect::<std::result::Result<_, sqlx::Error>>()
        .map_err(|e| Error::db(ctx, e))
}

/// Records an applied migration (inside the migration's transaction when it has one).
pub async fn record(
    conn: &mut PgConnection,
    version: i64,
    name: &str,
    checksum: &str,
    duration: Duration,
    applied_by: &str,
) -> std::result::Result<(), sqlx::Error> {
    let sql = format!(
        "INSERT INTO {HISTORY_TABLE} (version, name, checksum, duration_ms, applied_by, state)
         VALUES ($1, $2, $3, $4, $5, 'applied')
         ON CONFLICT (version) DO UPDATE SET name = EXCLUDED.name, checksum = EXCLUDED.checksum,
             applied_at = now(), duration_ms = EXCLUDED.duration_ms, applied_by = EXCLUDED.applied_by,
             state = 'applied'"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(version)
        .bind(name)
        .bind(checksum)
        .bind(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
        .bind(applied_by)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Records a migration's current checksum where the history holds one its file declares it
/// replaces (`migrate:replaces-checksum`); only that row, only if it still holds that checksum.
pub async fn restamp(conn: &mut PgConnection, version: i64, replaced: &str, checksum: &str) -> Result<()> {
    let sql = format!("UPDATE {HISTORY_TABLE} SET checksum = $3 WHERE version = $1 AND checksum = $2");
    sqlx::query(AssertSqlSafe(sql))
        .bind(version)
        .bind(replaced)
        .bind(checksum)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(|e| Error::db(format!("recording the new checksum of migration {version:03}"), e))
}

/// Removes a rolled-back migration from the history.
pub async fn forget(conn: &mut PgConnection, version: i64) -> std::result::Result<(), sqlx::Error> {
    let sql = format!("DELETE FROM {HISTORY_TABLE} WHERE version = $1");
    sqlx::query(AssertSqlSafe(sql)).bind(version).execute(conn).await.map(|_| ())
}

/// Records a migration as being applied, before its no-transaction up script starts: if the
/// script stops part-way, the history says what it may have left, `rollback` can undo it and
/// `migrate` runs it again. A row already there (a rollback that stopped) is marked the same way.
/// Returns the row's state before, for [`unmark_applying`].
pub async fn mark_applying(
    conn: &mut PgConnection,
    version: i64,
    name: &str,
    checksum: &str,
    applied_by: &str,
) -> std::result::Result<Option<String>, sqlx::Error> {
    let before: Option<String> =
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT state FROM {HISTORY_TABLE} WHERE version = $1")))
            .bind(version)
            .fetch_optional(&mut *conn)
            .await?;
    let sql = format!(
        "INSERT INTO {HISTORY_TABLE} (version, name, checksum, duration_ms, applied_by, state)
         VALUES ($1, $2, $3, 0, $4, 'applying')
         ON CONFLICT (version) DO UPDATE SET name = EXCLUDED.name, checksum = EXCLUDED.checksum,
             applied_at = now(), applied_by = EXCLUDED.applied_by, state = 'applying'"
    );
    sqlx::query(AssertSqlSafe(sql)).bind(version).bind(name).bind(checksum).bind(applied_by).execute(conn).await?;
    Ok(before)
}

/// Undoes [`mark_applying`] when the script's first statement failed and so changed nothing.
pub async fn unmark_applying(
    conn: &mut PgConnection,
    version: i64,
    before: Option<&str>,
) -> std::result::Result<(), sqlx::Error> {
    let query = match before {
        None => sqlx::query(AssertSqlSafe(format!("DELETE FROM {HISTORY_TABLE} WHERE version = $1"))).bind(version),
        Some(state) => sqlx::query(AssertSqlSafe(format!("UPDATE {HISTORY_TABLE} SET state = $2 WHERE version = $1")))
            .bind(version)
            .bind(state.to_string()),
    };
    query.execute(conn).await.map(|_| ())
}

/// Marks a migration as being rolled back, before its no-transaction down script starts: if the
/// script stops part-way, the history says so and the next `migrate` re-applies the version.
pub async fn mark_rolling_back(conn: &mut PgConnection, version: i64) -> std::result::Result<(), sqlx::Error> {
    let sql = format!("UPDATE {HISTORY_TABLE} SET state = 'rolling_back' WHERE version = $1");
    sqlx::query(AssertSqlSafe(sql)).bind(version).execute(conn).await.map(|_| ())
}

/// Tries the advisory lock once.
pub async fn try_lock(conn: &mut PgConnection) -> Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(LOCK_KEY.0)
        .bind(LOCK_KEY.1)
        .fetch_one(conn)
        .await
        .map_err(|e| Error::db("taking the migration lock", e))
}

/// `LockTimeout` after waiting `waited` for the migration lock, naming its holder.
pub async fn still_held(conn: &mut PgConnection, waited: Duration) -> Error {
    let holder = match lock_holder(conn).await {
        Ok(holder) => holder,
        Err(e) => return e,
    };
    Error::LockTimeout(format!(
        "the migration lock is still held after waiting {:.1} s: {}",
        waited.as_secs_f64(),
        holder.unwrap_or_else(|| "its holder has just released it; try again".into())
    ))
}

/// Who holds the advisory lock: pid, application name and for how long, as a sentence.
pub async fn lock_holder(conn: &mut PgConnection) -> Result<Option<String>> {
    let row = sqlx::query(
        "SELECT a.pid, a.application_name AS app, a.state,
                extract(epoch FROM now() - a.backend_start)::float8 AS held_s
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::oid AND l.objid = $2::oid AND l.objsubid = 2
            -- advisory locks are per database: another database's migrator on the same server is not the holder
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          LIMIT 1",
    )
    .bind(i64::from(LOCK_KEY.0))
    .bind(i64::from(LOCK_KEY.1))
    .fetch_optional(conn)
    .await
    .map_err(|e| Error::db("finding the lock holder", e))?;
    Ok(row.map(|r| {
        let pid: i32 = r.try_get("pid").unwrap_or_default();
        // Another role's session shows no details without pg_read_all_stats: say so, not nothing.
        let app: Option<String> = r.try_get("app").ok().flatten();
        let state: Option<String> = r.try_get("state").ok().flatten();
        let held: Option<f64> = r.try_get("held_s").ok().flatten();
        let details = match (held, state) {
            (Some(held), Some(state)) => format!(
                "{}, connected {held:.0} s ago, now {state}",
                match app.as_deref() {
                    None | Some("") => "no application_name".to_string(),
                    Some(app) => format!("application_name '{app}'"),
                }
            ),
            _ => "another role's session; grant pg_read_all_stats to see its details".to_string(),
        };
        format!("held by backend pid {pid} ({details}); if that process is gone, end it with SELECT pg_terminate_backend({pid})")
    }))
}

/// Releases the advisory lock (the connection's close would too; this makes it prompt).
pub async fn unlock(conn: &mut PgConnection) -> Result<()> {
    sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1, $2)")
        .bind(LOCK_KEY.0)
        .bind(LOCK_KEY.1)
        .fetch_one(conn)
        .await
        .map(|_| ())
        .map_err(|e| Error::db("releasing the migration lock", e))
}

/// A SECURITY DEFINER function of a schema, as the definer check of `verify` needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinerFunction {
    /// `name(argument types)`, as ALTER FUNCTION takes it.
    pub signature: String,
    /// `name(argument types)` unquoted, as verification's catalog keys name functions.
    pub key: String,
    /// The role whose rights it runs with.
    pub owner: String,
    /// Its pinned `search_path` (as `SET search_path` stores it), if any.
    pub search_path: Option<String>,
}

/// Every SECURITY DEFINER function and procedure of `schema`, extensions' included (they run in it too).
pub async fn definer_functions(
    conn: &mut PgConnection,
    schema: &str,
) -> std::result::Result<Vec<DefinerFunction>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS sig,
                p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS key,
                pg_get_userbyid(p.proowner)::text AS owner,
                (SELECT substr(c, length('search_path=') + 1) FROM unnest(p.proconfig) AS c
                  WHERE c LIKE 'search\\_path=%') AS path
           FROM pg_proc AS p
          WHERE p.pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) AND p.prosecdef
          ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| DefinerFunction {
            signature: r.get("sig"),
            key: r.get("key"),
            owner: r.get("owner"),
            search_path: r.get("path"),
        })
        .collect())
}

/// Who, besides `owner` and the roles that can act as it (and superusers), may create objects in
/// `schema`: `PUBLIC` when everyone may, else the login roles that may, directly or through a role
/// they belong to (`pg_database_owner` included). `None` when no such schema exists.
pub async fn others_who_may_create(
    conn: &mut PgConnection,
    schema: &str,
    owner: &str,
) -> std::result::Result<Option<Vec<String>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT CASE WHEN has_schema_privilege('public', n.oid, 'CREATE') THEN ARRAY['PUBLIC']
                ELSE ARRAY(SELECT m.rolname::text FROM pg_roles AS m
                            WHERE m.rolcanlogin AND NOT m.rolsuper AND NOT pg_has_role(m.oid, o.oid, 'MEMBER')
                              AND EXISTS (SELECT 1 FROM pg_roles AS r
                                           WHERE pg_has_role(m.oid, r.oid, 'MEMBER')
                                             AND has_schema_privilege(r.oid, n.oid, 'CREATE'))
                            ORDER BY m.rolname) END
           FROM pg_namespace AS n, pg_roles AS o
          WHERE n.nspname = $1 AND o.rolname = $2",
    )
    .bind(schema)
    .bind(owner)
    .fetch_optional(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_from_13_on_are_supported_and_older_ones_named_with_the_minimum() {
        for (num, text) in [("130000", "13.0"), ("130023", "13.23"), ("180004", "18.4 (Debian 18.4-1)")] {
            assert!(supported_server(num, text).is_ok(), "{text}");
        }
        let err = supported_server("120022", "12.22").unwrap_err();
        assert_eq!(err.kind(), "UnsupportedPostgresVersion");
        assert!(err.message().contains("PostgreSQL 12.22 is not supported") && err.message().contains("13 or newer"));
        assert!(matches!(supported_server("90624", "9.6.24"), Err(Error::UnsupportedServer { .. })));
        assert_eq!(supported_server("abc", "x").unwrap_err().kind(), "DatabaseError");
    }

    #[test]
    fn timeouts_fit_postgres_range() {
        assert_eq!(timeout_ms(None), "0");
        assert_eq!(timeout_ms(Some(Duration::ZERO)), "1", "zero left is the shortest limit, not none");
        assert_eq!(timeout_ms(Some(Duration::from_secs(3))), "3000");
        assert_eq!(timeout_ms(Some(Duration::from_secs(3_000_000))), "2147483647");
    }
}
