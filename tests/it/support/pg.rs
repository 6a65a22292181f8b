//! One real PostgreSQL server per test run (TLS on, scram passwords), a fresh database per test.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use sqlx::{Connection, PgConnection};

/// The shared test server.
pub struct Server {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// The superuser's password (asserted never to appear in any output).
    pub password: String,
    /// The RDS-shaped master (scripts/rds-shaped-master.sql): not a superuser; LOGIN CREATEROLE
    /// CREATEDB, a member of `rds_superuser`. The migrator runs as it; only the tests' own setup
    /// uses the real superuser.
    pub master: String,
    /// The master's password (asserted never to appear in any output).
    pub master_password: String,
    /// CA that signed the server's certificate (for `localhost` only).
    pub ca: PathBuf,
    /// A CA that did not sign it.
    pub wrong_ca: PathBuf,
}

static SERVER: OnceLock<Server> = OnceLock::new();
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The project's root (where `scripts/` is).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Starts the shared server on first use; a watchdog stops it when this test process exits, however it exits.
pub fn server() -> &'static Server {
    SERVER.get_or_init(|| start(&std::env::temp_dir().join(format!("scanner-migrator-it-{}", std::process::id()))))
}

/// A server of one test's own, for what belongs to a whole server (roles such as
/// scanner_refresh); stopped when dropped (and by the watchdog if the process dies first).
pub struct PrivateServer {
    /// The server.
    pub server: Server,
    dir: PathBuf,
}

impl PrivateServer {
    /// Starts one, with the same RDS-shaped master as the shared server.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "scanner-migrator-it-{}-private-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        PrivateServer { server: start(&dir), dir }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/pg.sh")).arg("stop").arg(self.dir.join("pg")).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(dir: &Path) -> Server {
    {
        std::fs::create_dir_all(dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (ca, cert, key) = super::tls::write_server_certs(dir, "localhost");
        let wrong_ca = super::tls::write_unrelated_ca(dir);
        let pg_sh = root().join("scripts/pg.sh");
        let out = Command::new(&pg_sh)
            .arg("start")
            .arg(dir.join("pg"))
            .arg(&cert)
            .arg(&key)
            .output()
            .expect("run scripts/pg.sh");
        assert!(out.status.success(), "PostgreSQL did not start: {}", String::from_utf8_lossy(&out.stderr));
        let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let password = url.split(':').nth(2).unwrap().split('@').next().unwrap().to_string();
        let port: u16 = url.rsplit(':').next().unwrap().split('/').next().unwrap().parse().unwrap();
        // setsid: a Ctrl-C to the test's process group must not kill the watchdog before it cleans up.
        let watchdog = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; '{pg}' stop '{dir}/pg'; rm -rf '{dir}'",
            pid = std::process::id(),
            pg = pg_sh.display(),
            dir = dir.display()
        );
        // Not waited for on purpose: the watchdog outlives this process to clean up after it.
        #[allow(clippy::zombie_processes)]
        Command::new("setsid")
            .args(["sh", "-c", &watchdog])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the PostgreSQL watchdog");
        super::secrets::register(&password);
        let master = "scanner_master".to_string();
        let mut bytes = [0u8; 12];
        getrandom::fill(&mut bytes).unwrap();
        let master_password = format!("mpw-{}", hex::encode(bytes));
        super::secrets::register(&master_password);
        let server = Server { port, password, master, master_password, ca, wrong_ca };
        let out = Command::new("psql")
            .args([
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                &server.super_url("postgres"),
                "-c",
                &rds_shaped_master(&server.master, &server.master_password),
            ])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "the RDS-shaped master: {}", String::from_utf8_lossy(&out.stderr));
        server
    }
}

/// scripts/rds-shaped-master.sql for a master named `master` with `password`.
pub fn rds_shaped_master(master: &str, password: &str) -> String {
    std::fs::read_to_string(root().join("scripts/rds-shaped-master.sql"))
        .unwrap()
        .replace("{master}", master)
        .replace("{password}", password)
}

impl Server {
    /// URL of a database on this server as the real superuser (the tests' own setup only).
    pub fn super_url(&self, db: &str) -> String {
        format!("postgres://postgres:{}@127.0.0.1:{}/{db}", self.password, self.port)
    }

    /// URL of a database on this server as the RDS-shaped master: what the migrator uses.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{}:{}@127.0.0.1:{}/{db}", self.master, self.master_password, self.port)
    }
}

/// A string as an SQL literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A database of its own for one test.
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// Its URL as the RDS-shaped master, the database's owner (what the migrator and most checks use).
    pub url: String,
    /// Its URL as the real superuser: for the tests' own setup only.
    pub super_url: String,
}

impl TestDb {
    /// Creates an empty database on the shared server.
    pub async fn new() -> Self {
        Self::new_on(server()).await
    }

    /// Creates an empty database on `server`, owned by its RDS-shaped master.
    pub async fn new_on(server: &Server) -> Self {
        let name = format!("t{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        let mut admin = PgConnection::connect(&server.super_url("postgres")).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name} OWNER {}", server.master)))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        TestDb { url: server.url(&name), super_url: server.super_url(&name), name }
    }

    /// Runs SQL as the real superuser (the tests' own setup: what no product path may need).
    pub async fn exec_super(&self, sql: &str) {
        exec_at(&self.super_url, sql).await
    }

    /// A connection of the test's own, as the master.
    pub async fn conn(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }

    /// Runs SQL (several statements allowed).
    pub async fn exec(&self, sql: &str) {
        exec_at(&self.url, sql).await
    }

    /// One value, read as the real superuser (what only a superuser may read, such as pg_authid).
    pub async fn scalar_super<T>(&self, sql: &str) -> T
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
    {
        scalar_at(&self.super_url, sql).await
    }

    /// One value.
    pub async fn scalar<T>(&self, sql: &str) -> T
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
    {
        scalar_at(&self.url, sql).await
    }

    /// Everything about the public schema except the history table, as sorted text: two
    /// databases with the same fingerprint have the same tables, columns, constraints,
    /// indexes (and their validity), views and functions.
    pub async fn fingerprint(&self) -> String {
        self.fingerprint_of("public").await
    }

    /// [`TestDb::fingerprint`] of another schema (its name as stored).
    pub async fn fingerprint_of(&self, schema: &str) -> String {
        let sql = format!("SELECT string_agg(x, E'\\n' ORDER BY x) FROM (
               SELECT format('rel %s %s', c.relname, c.relkind) FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = {nsp} AND c.relname NOT LIKE 'scanner_migrator_history%'
               UNION ALL
               SELECT format('col %s.%s %s notnull=%s default=%s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
                             a.attnotnull, pg_get_expr(d.adbin, d.adrelid))
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                 LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                WHERE n.nspname = {nsp} AND a.attnum > 0 AND NOT a.attisdropped AND c.relname NOT LIKE 'scanner_migrator_history%'
               UNION ALL
               SELECT format('idx %s valid=%s', pg_get_indexdef(i.indexrelid), i.indisvalid)
                 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = {nsp} AND c.relname NOT LIKE 'scanner_migrator_history%'
               UNION ALL
               SELECT format('view %s %s', c.relname, pg_get_viewdef(c.oid)) FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = {nsp} AND c.relkind IN ('v', 'm')
               UNION ALL
               SELECT format('con %s %s', conname, pg_get_constraintdef(co.oid)) FROM pg_constraint co
                 JOIN pg_namespace n ON n.oid = co.connamespace WHERE n.nspname = {nsp} AND conname NOT LIKE 'scanner_migrator_history%'
               UNION ALL
               SELECT format('fn %s(%s) %s', p.proname, pg_get_function_arguments(p.oid), md5(p.prosrc)) FROM pg_proc p
                 JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = {nsp}
             ) AS t(x)",
            nsp = quote_literal(schema)
        );
        self.scalar::<Option<String>>(&sql).await.unwrap_or_default()
    }

    /// Versions in the history table (empty when it does not exist).
    pub async fn history(&self) -> Vec<i64> {
        let exists: bool = self.scalar("SELECT to_regclass('scanner_migrator_history') IS NOT NULL").await;
        if !exists {
            return Vec::new();
        }
        let mut c = self.conn().await;
        let v = sqlx::query_scalar("SELECT version FROM scanner_migrator_history ORDER BY version")
            .fetch_all(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
        v
    }

    /// The history's versions with their state (`applied`, `applying`, `rolling_back`), oldest first.
    pub async fn history_states(&self) -> Vec<(i64, String)> {
        let mut c = self.conn().await;
        let v = sqlx::query_as("SELECT version, state FROM scanner_migrator_history ORDER BY version")
            .fetch_all(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
        v
    }

    /// Advisory locks held in this database by anyone (the migrator's lock must never be left behind).
    pub async fn advisory_locks(&self) -> i64 {
        self.scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())").await
    }
}

/// Runs SQL (several statements allowed) on a connection of its own to `url`.
async fn exec_at(url: &str, sql: &str) {
    let mut c = PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&mut c).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    c.close().await.unwrap();
}

/// One value, on a connection of its own to `url`.
async fn scalar_at<T>(url: &str, sql: &str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    let mut c = PgConnection::connect(url).await.unwrap();
    let v = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    c.close().await.unwrap();
    v
}
