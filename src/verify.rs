//! Verification derived from the migrations themselves, never from hand-kept lines.
//!
//! The expected schema is what the applied migrations produce: they are run, in order, in a
//! scratch schema of the same database inside a transaction that is always rolled back (the
//! "dev database" technique, without a second server, on whatever PostgreSQL major the user
//! runs). Both catalogs are read the same way, with the search_path set to their schema alone,
//! and the scratch schema's name read as the live one's (never the other way round: a live
//! definition is compared as PostgreSQL prints it). Every object the migrations own is compared:
//! tables (columns, types, nullability, defaults,
//! constraints), indexes (definition, validity), views and materialized views (columns,
//! definition), functions (signature, result, body, settings) and triggers. Objects the user
//! added are not in the expected catalog, so they are never reported.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

use crate::{
    db,
    deadline::Deadline,
    error::{Error, Result},
    migrations::Migration,
};

/// One column of a table or view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// `format_type` of its type.
    pub ty: String,
    /// NOT NULL.
    pub not_null: bool,
    /// Its default expression.
    pub default: Option<String>,
}

/// One object of a schema, normalised so that two schemas can be compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Object {
    /// A table: its data definition belongs to the user once it holds data.
    Table { columns: Vec<Column>, constraints: BTreeMap<String, String> },
    /// An index; `using` is what follows `USING` in its definition (method, columns, predicate).
    Index { table: String, unique: bool, using: String, valid: bool, constraint: bool, ddl: String },
    /// A view or materialized view.
    View { materialized: bool, columns: Vec<Column>, definition: String },
    /// A function or procedure.
    Function { result: String, language: String, body: String, security_definer: bool, config: String, ddl: String },
    /// A trigger.
    Trigger { table: String, definition: String },
}

impl Object {
    /// `table`, `index`, `view`, `materialized view`, `function`, `trigger`.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Table { .. } => "table",
            Object::Index { .. } => "index",
            Object::View { materialized: false, .. } => "view",
            Object::View { materialized: true, .. } => "materialized view",
            Object::Function { .. } => "function",
            Object::Trigger { .. } => "trigger",
        }
    }

    /// Whether the migrator may rebuild it to converge it: derived objects hold no data of their own.
    /// Tables, and the indexes behind their constraints, are the user's data definition.
    pub fn is_derived(&self) -> bool {
        match self {
            Object::Table { .. } => false,
            Object::Index { constraint, .. } => !constraint,
            _ => true,
        }
    }
}

/// The objects of one schema, by key (`relation x`, `function f(args)`, `trigger t on x`), and
/// the order they were created in (dependencies before dependents).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// The objects.
    pub objects: BTreeMap<String, Object>,
    /// Keys in creation order.
    pub order: Vec<String>,
}

impl Catalog {
    /// The object a key names, e.g. `index idx_a`, `function f()`.
    pub fn describe(&self, key: &str) -> String {
        describe(key, self.objects.get(key))
    }
}

/// The name part of a key (`idx_a` of `relation idx_a`, `f()` of `function f()`).
pub fn key_name(key: &str) -> &str {
    key.split_once(' ').map_or(key, |(_, n)| n)
}

fn describe(key: &str, object: Option<&Object>) -> String {
    let name = key_name(key);
    match object {
        Some(Object::Trigger { .. }) => format!("trigger {name}"),
        Some(o) => format!("{} {name}", o.kind()),
        None => key.to_string(),
    }
}

/// A relation's key.
pub fn relation_key(name: &str) -> String {
    format!("relation {name}")
}

/// One way the live schema differs from what the migrations produce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The object (`index idx_job_objects_job_status`).
    pub object: String,
    /// What differs, with expected and found.
    pub problem: String,
    /// Accepted rather than a failure: a difference in the user's data definition (a compatible
    /// column type, a default, a constraint), which the migrator reports and never rewrites.
    pub accepted: bool,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.object, self.problem)
    }
}

/// What `verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// No failure.
    pub ok: bool,
    /// The versions whose objects were derived and checked.
    pub versions: Vec<i64>,
    /// Where the expected catalog came from: `derived` (the migrations replayed in a scratch
    /// schema by this run) or `cached` (a no-op `migrate`: kept by an earlier run for exactly
    /// these migrations, this server major and this schema). `verify` always derives.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub expectation: &'static str,
    /// How the live schema was compared with the expectation: `deep` (read and compared object by
    /// object) or `unchanged` (a no-op `migrate` whose catalog rows are still exactly those an
    /// earlier run read and found matching this very expectation, so that result stands). `verify`
    /// always compares deeply.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub comparison: &'static str,
    /// How many objects were compared.
    pub objects_checked: usize,
    /// What does not match.
    pub failures: Vec<String>,
    /// Differences accepted and reported (data definitions are never rewritten).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub accepted: Vec<String>,
    /// With `verify --data`: how many jobs' job_progress rows were compared with a direct count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_jobs_checked: Option<i64>,
}

/// Whether a column of type `found` can stand for the migrations' `expected` without a rewrite.
pub fn compatible_types(expected: &str, found: &str) -> bool {
    let text_like = |t: &str| t == "text" || t == "character varying" || t.starts_with("character varying(");
    expected == found || (text_like(expected) && text_like(found))
}

/// Compares every object the migrations own with the live one. Pure.
pub fn diff(expected: &Catalog, live: &Catalog) -> Vec<Difference> {
    let mut out = Vec::new();
    for key in &expected.order {
        let exp = &expected.objects[key];
        out.extend(diff_object(key, exp, live.objects.get(key)));
    }
    out
}

/// The differences of one object (empty when it matches).
pub fn diff_object(key: &str, exp: &Object, found: Option<&Object>) -> Vec<Difference> {
    let object = describe(key, Some(exp));
    let fail = |problem: String| Difference { object: object.clone(), problem, accepted: false };
    let accept = |problem: String| Difference {
        object: object.clone(),
        problem: format!("{problem}: accepted (the data definition is the user's; the migrator never rewrites it)"),
        accepted: true,
    };
    let Some(found) = found else {
        return vec![fail("is missing".into())];
    };
    if std::mem::discriminant(exp) != std::mem::discriminant(found)
        || matches!((exp, found), (Object::View { materialized: a, .. }, Object::View { materialized: b, .. }) if a != b)
    {
        return vec![fail(format!("expected a {}, found a {}", exp.kind(), found.kind()))];
    }
    let mut out = Vec::new();
    match (exp, found) {
        (Object::Table { columns: ec, constraints: ek }, Object::Table { columns: fc, constraints: fk }) => {
            for e in ec {
                let Some(f) = fc.iter().find(|f| f.name == e.name) else {
                    out.push(fail(format!("column {} is missing", e.name)));
                    continue;
                };
                if e.ty != f.ty {
                    if compatible_types(&e.ty, &f.ty) {
                        out.push(accept(format!("column {} is {} where the migrations make {}", e.name, f.ty, e.ty)));
                    } else {
                        out.push(fail(format!("column {}: expected type {}, found {}", e.name, e.ty, f.ty)));
                    }
                }
                if e.not_null != f.not_null {
                    let n = |b: bool| if b { "NOT NULL" } else { "nullable" };
                    out.push(accept(format!("column {}: expected {}, found {}", e.name, n(e.not_null), n(f.not_null))));
                }
                if e.default != f.default {
                    let d = |v: &Option<String>| v.clone().unwrap_or_else(|| "no default".into());
                    out.push(accept(format!(
                        "column {}: expected default {}, found {}",
                        e.name,
                        d(&e.default),
                        d(&f.default)
                    )));
                }
            }
            for (name, def) in ek {
                match fk.get(name) {
                    None => out.push(accept(format!("constraint {name} ({def}) is missing"))),
                    Some(f) if f != def => {
                        out.push(accept(format!("constraint {name}: expected {def}, found {f}")));
                    }
                    Some(_) => {}
                }
            }
        }
        (
            Object::Index { table: et, unique: eu, using: eus, constraint, .. },
            Object::Index { table: ft, unique: fu, using: fus, valid, .. },
        ) => {
            let mut problems = Vec::new();
            if et != ft {
                problems.push(format!("expected on table {et}, found on {ft}"));
            }
            if eu != fu {
                let u = |b: bool| if b { "UNIQUE" } else { "not unique" };
                problems.push(format!("expected {}, found {}", u(*eu), u(*fu)));
            }
            if eus != fus {
                let method = |u: &str| u.split_whitespace().next().unwrap_or("").to_string();
                let columns = |u: &str| u.split_once(' ').map_or(u, |(_, c)| c).trim().to_string();
                if method(eus) == method(fus) {
                    problems.push(format!("expected {}, found {}", columns(eus), columns(fus)));
                } else {
                    problems.push(format!("expected USING {eus}, found USING {fus}"));
                }
            }
            for p in problems {
                out.push(if *constraint { accept(p) } else { fail(p) });
            }
            if !valid {
                out.push(fail(
                    "is INVALID (left by an interrupted concurrent build); run migrate to rebuild it".into(),
                ));
            }
        }
        (Object::View { columns: ec, definition: ed, .. }, Object::View { columns: fc, definition: fd, .. }) => {
            let names = |c: &[Column]| c.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
            if names(ec) != names(fc) {
                out.push(fail(format!("expected columns ({}), found ({})", names(ec), names(fc))));
            } else if let Some((e, f)) = ec.iter().zip(fc).find(|(e, f)| e.ty != f.ty) {
                let problem = format!("column {}: expected type {}, found {}", e.name, e.ty, f.ty);
                // A compatible type here follows from a table column's accepted type.
                out.push(if compatible_types(&e.ty, &f.ty) { accept(problem) } else { fail(problem) });
            }
            if names(ec) == names(fc) && ed != fd {
                let (e, f) = where_they_differ(ed, fd);
                out.push(fail(format!("definition differs from the migrations': expected `{e}`, found `{f}`")));
            }
        }
        (
            Object::Function { result: er, language: el, body: eb, security_definer: es, config: ec, .. },
            Object::Function { result: fr, language: fl, body: fb, security_definer: fs, config: fc, .. },
        ) => {
            if er != fr {
                out.push(fail(format!("expected to return {er}, found {fr}")));
            }
            if el != fl {
                out.push(fail(format!("expected LANGUAGE {el}, found {fl}")));
            } else if eb != fb {
                let (e, f) = where_they_differ(eb, fb);
                out.push(fail(format!("body differs from the migrations': expected `{e}`, found `{f}`")));
            }
            if es != fs {
                let s = |b: bool| if b { "SECURITY DEFINER" } else { "SECURITY INVOKER" };
                out.push(fail(format!("expected {}, found {}", s(*es), s(*fs))));
            }
            if ec != fc {
                out.push(fail(format!("expected settings [{ec}], found [{fc}]")));
            }
        }
        (Object::Trigger { definition: ed, .. }, Object::Trigger { definition: fd, .. }) => {
            if ed != fd {
                out.push(fail(format!("expected `{ed}`, found `{fd}`")));
            }
        }
        _ => unreachable!("kinds compared above"),
    }
    out
}

/// Both texts on one line, from a little before the first character where they differ, cut
/// to a readable length: what a person needs to see the difference.
fn where_they_differ(expected: &str, found: &str) -> (String, String) {
    let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ").chars().collect::<Vec<char>>();
    let (e, f) = (one_line(expected), one_line(found));
    let common = e.iter().zip(&f).take_while(|(a, b)| a == b).count();
    let start = common.saturating_sub(40);
    let cut = |s: &[char]| {
        let tail: String = s[start.min(s.len())..].iter().take(160).collect();
        let more = if s.len() > start + 160 { "…" } else { "" };
        format!("{}{tail}{more}", if start > 0 { "…" } else { "" })
    };
    (cut(&e), cut(&f))
}

/// Which catalog reader this is, for the key of a cached expectation: the binary's version and
/// a digest of this file, so an expectation read by other code is never reused.
pub fn reader() -> String {
    use sha2::{Digest, Sha256};
    static READER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    READER
        .get_or_init(|| {
            let source = hex::encode(Sha256::digest(include_str!("verify.rs").as_bytes()));
            format!("{} {}", env!("CARGO_PKG_VERSION"), &source[..16])
        })
        .clone()
}

/// The catalog of the live schema (where unqualified names resolve).
pub async fn live(conn: &mut PgConnection, schema: &str) -> Result<Catalog> {
    Ok(read_live(conn, schema, false).await?.0)
}

/// The catalog of the live schema and the stamp of the catalog rows it was read from
/// ([`db::catalog_stamp`]), taken first in the same snapshot. The pg_get_*def functions may see a
/// change committed after it: then the stamp is older than what was read, and a later run that
/// finds the catalog at the stamp of now reads and compares again, never the other way round.
pub async fn live_stamped(conn: &mut PgConnection, schema: &str) -> Result<(Catalog, String)> {
    let (catalog, stamp) = read_live(conn, schema, true).await?;
    Ok((catalog, stamp.unwrap_or_default()))
}

async fn read_live(conn: &mut PgConnection, schema: &str, stamped: bool) -> Result<(Catalog, Option<String>)> {
    let ctx = || format!("reading the catalog of schema {schema}");
    let mut tx = conn.begin().await.map_err(|e| Error::db(ctx(), e))?;
    // One snapshot for all the reads, so they agree on which objects exist (the pg_get_*def
    // functions read the newest catalog all the same: `read` takes a NULL from them as gone).
    let set =
        format!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; SET LOCAL search_path = {}", quote_ident(schema));
    let read = async {
        db::exec(&mut tx, &set).await?;
        let stamp = if stamped { Some(db::catalog_stamp(&mut tx).await?) } else { None };
        Ok((read(&mut tx, schema, None).await?, stamp))
    }
    .await;
    let _ = tx.rollback().await;
    read.map_err(|e| Error::db(ctx(), e))
}

/// The catalog the migrations produce, applied in order to an empty scratch schema inside a
/// transaction that is rolled back whatever happens.
pub async fn expected(conn: &mut PgConnection, migrations: &[&Migration], deadline: Deadline) -> Result<Catalog> {
    let replay = replay(conn, migrations, &[], &BTreeSet::new(), deadline).await?;
    match (replay.catalog, replay.stopped) {
        (Some(catalog), _) => Ok(catalog),
        (None, Some((_, err))) => Err(err),
        (None, None) => unreachable!("a replay without steps reads the catalog or fails"),
    }
}

/// One step migration's share of a replay: what adoption needs before it runs on the live schema.
#[derive(Debug, Clone)]
pub struct ReplayStep {
    /// Watched objects it creates, in creation order: they exist live already, so may be adopted.
    pub new: Vec<String>,
    /// The catalog after it.
    pub after: Catalog,
}

/// What one replay of the migrations in a scratch schema found.
#[derive(Debug, Default)]
pub struct Replay {
    /// For each step migration that applied, in order: what it creates of the watched objects, if anything.
    pub steps: Vec<Option<ReplayStep>>,
    /// The catalog after the base and every step; `None` when a step did not apply.
    pub catalog: Option<Catalog>,
    /// The first step that does not apply to an empty schema (its index among the steps) and why.
    pub stopped: Option<(usize, Error)>,
}

/// Applies `base`, then each of `steps`, once and in order, to an empty scratch schema inside a
/// transaction that is rolled back whatever happens (nothing of it outlives the call). After each
/// step only the objects' names are read, and only while `watch` (the keys of the live schema) is
/// not empty; the whole catalog is read after a step that creates a watched object, and once at the
/// end. Every statement runs under the deadline. A base migration that does not apply is an
/// error; a step that does not apply stops the replay there, so its own statements can fail on
/// the live schema with their real error.
pub async fn replay(
    conn: &mut PgConnection,
    base: &[&Migration],
    steps: &[&Migration],
    watch: &BTreeSet<String>,
    deadline: Deadline,
) -> Result<Replay> {
    let ctx = "deriving the expected schema in a scratch schema";
    in_scratch(conn, base, deadline, ctx, async |tx, scratch| {
        let live = scratch.live.clone().ok_or_else(|| Error::Database {
            context: ctx.into(),
            cause: "no schema of the search_path exists; set DB_SCHEMA to the scanner's schema".into(),
        })?;
        let rename = Rename { from: scratch.name.clone(), to: live };
        let mut out = Replay::default();
        let mut seen = if watch.is_empty() { BTreeSet::new() } else { keys_of(tx, &scratch.name).await? };
        for (i, m) in steps.iter().enumerate() {
            match apply_to_scratch(tx, m, &scratch.user, deadline).await {
                Err(err @ Error::InvalidMigration { .. }) => {
                    out.stopped = Some((i, err));
                    return Ok(out);
                }
                other => other?,
            }
            let mut step = None;
            if !watch.is_empty() {
                let now = keys_of(tx, &scratch.name).await?;
                if now.iter().any(|k| watch.contains(k) && !seen.contains(k)) {
                    let after = read(tx, &scratch.name, Some(&rename)).await.map_err(|e| Error::db(ctx, e))?;
                    let new =
                        after.order.iter().filter(|k| watch.contains(*k) && !seen.contains(*k)).cloned().collect();
                    step = Some(ReplayStep { new, after });
                }
                seen = now;
            }
            out.steps.push(step);
        }
        out.catalog = Some(read(tx, &scratch.name, Some(&rename)).await.map_err(|e| Error::db(ctx, e))?);
        Ok(out)
    })
    .await
}

/// The scratch schema of a run and who it runs as.
pub struct Scratch {
    /// `scanner_migrator_scratch_<pid>`: the session's own, so two runs never share one.
    pub name: String,
    /// The connected user (a statement refused to it is a missing privilege).
    pub user: String,
    /// The live schema, quoted as PostgreSQL quotes it (keywords too, as qualified names print it);
    /// `None` when no schema of the search_path exists.
    pub live: Option<String>,
}

/// Runs `body` with `base` applied to a new scratch schema (first on the search_path) inside a
/// transaction that is rolled back whatever happens, under the deadline and a bounded lock wait;
/// the session's limits are reset afterwards. The scratch replay and `plan`'s observation share it.
pub async fn in_scratch<T>(
    conn: &mut PgConnection,
    base: &[&Migration],
    deadline: Deadline,
    ctx: &str,
    body: impl AsyncFnOnce(&mut PgConnection, &Scratch) -> Result<T>,
) -> Result<T> {
    let (pid, user, live): (i32, String, Option<String>) =
        sqlx::query_as("SELECT pg_backend_pid(), current_user::text, quote_ident(current_schema())")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| Error::db(ctx, e))?;
    let scratch = Scratch { name: format!("scanner_migrator_scratch_{pid}"), user, live };
    // The scratch objects are the replay's own; the only lock it can wait for is another session's
    // (a fold's advisory lock that 003's refresh takes): bounded, so a stuck holder cannot hang it.
    db::set_limits(conn, deadline.cap(None), deadline.cap(Some(SCRATCH_LOCK_WAIT)))
        .await
        .map_err(|e| Error::db(ctx, e))?;
    let mut tx = conn.begin().await.map_err(|e| Error::db(ctx, e))?;
    let outcome = async {
        let name = &scratch.name;
        db::exec(&mut tx, &format!("CREATE SCHEMA {name}; SET LOCAL search_path = {name}"))
            .await
            .map_err(|e| Error::db(ctx, e))?;
        for m in base {
            apply_to_scratch(&mut tx, m, &scratch.user, deadline).await?;
        }
        body(&mut tx, &scratch).await
    }
    .await;
    let rolled_back = tx.rollback().await;
    let reset = db::reset_limits(conn).await;
    let value = outcome?;
    rolled_back.map_err(|e| Error::db(ctx, e))?;
    reset.map_err(|e| Error::db(ctx, e))?;
    Ok(value)
}

/// The longest the scratch replay waits for a lock another session holds.
pub const SCRATCH_LOCK_WAIT: Duration = Duration::from_secs(30);

/// One migration's statements in the scratch schema (`CONCURRENTLY` cannot run in its transaction).
/// A statement PostgreSQL refuses to `user` (SQLSTATE 42501) is a missing privilege, named with its fix.
pub async fn apply_to_scratch(conn: &mut PgConnection, m: &Migration, user: &str, deadline: Deadline) -> Result<()> {
    for stmt in m.up.statements() {
        scratch_statement(conn, m, &stmt, user, deadline).await?;
    }
    Ok(())
}

/// One statement of `m` in the scratch schema, its errors named as [`apply_to_scratch`] names them.
pub async fn scratch_statement(
    conn: &mut PgConnection,
    m: &Migration,
    stmt: &crate::split::Statement,
    user: &str,
    deadline: Deadline,
) -> Result<()> {
    {
        if let Err(e) = db::exec(conn, &stmt.without_concurrently()).await {
            if db::is_query_canceled(&e) {
                return Err(Error::DeadlineReached {
                    during: "while deriving the expected schema for verification".into(),
                    remaining_ms: deadline.remaining().map_or(0, |r| r.as_millis() as u64),
                    done: Vec::new(),
                    left: vec!["verification".into()],
                });
            }
            if db::sqlstate(&e).as_deref() == Some("42501") {
                return Err(crate::privileges::denied(user, &m.label(), &m.up.sql, stmt.line, &db::pg_details(&e).0));
            }
            if db::is_lock_timeout(&e) {
                return Err(Error::LockTimeout(format!(
                    "deriving what the migrations produce (in a scratch schema), {} line {} waited {} s for a lock \
                     another session holds (a refresh_job_progress() fold, or whoever holds what it names: see \
                     pg_locks and pg_stat_activity); nothing was applied: run migrate again once it is released",
                    m.label(),
                    stmt.line,
                    SCRATCH_LOCK_WAIT.as_secs()
                )));
            }
            return Err(Error::InvalidMigration {
                file: m.up.file.clone(),
                problem: format!(
                    "line {}: does not apply to an empty schema, which is how verification derives what \
                     the migrations produce (README, \"Adding a migration\"): {}",
                    stmt.line,
                    db::pg_details(&e).0
                ),
            });
        }
    }
    Ok(())
}

/// The keys of the objects of the live schema (names only: cheap whatever the schema holds).
pub async fn live_keys(conn: &mut PgConnection, schema: &str) -> Result<BTreeSet<String>> {
    keys_of(conn, schema).await
}

/// The keys `read` would give, without reading the objects: what a replay checks after each step.
async fn keys_of(conn: &mut PgConnection, schema: &str) -> Result<BTreeSet<String>> {
    let rel_filter = not_ours().replace("{oid}", "c.oid").replace("{name}", "c.relname");
    let fn_filter = not_ours().replace("{oid}", "p.oid").replace("{name}", "p.proname");
    let rows: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT 'relation ' || c.relname FROM pg_class AS c
          WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) AND c.relkind IN ('r', 'p', 'v', 'm', 'i', 'I') AND NOT ({rel_filter})
         UNION ALL
         SELECT 'function ' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' FROM pg_proc AS p
          WHERE p.pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) AND p.prokind IN ('f', 'p') AND NOT ({fn_filter})
         UNION ALL
         SELECT 'trigger ' || t.tgname || ' on ' || c.relname FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
          WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) AND NOT t.tgisinternal"
    )))
    .bind(schema)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::db(format!("reading the object names of schema {schema}"), e))?;
    Ok(rows.into_iter().collect())
}

/// Objects of extensions and the migrator's own tables are not the migrations': a filter with
/// `{oid}` and `{name}` to fill in.
fn not_ours() -> String {
    format!(
        "EXISTS (SELECT 1 FROM pg_depend AS d WHERE d.objid = {{oid}} AND d.deptype = 'e')
         OR {{name}} LIKE '{}%'",
        db::HISTORY_TABLE
    )
}

/// Every SECURITY DEFINER function of `schema` (the migrations' and any other) whose search_path
/// lets someone else decide what its names mean, each as (its catalog key, a finding naming the function and the fix).
/// The rules are PostgreSQL's "Writing SECURITY DEFINER Functions Safely" (CREATE FUNCTION): the
/// temporary schema last, and no schema in the path that untrusted roles may create objects in.
pub async fn definer_findings(conn: &mut PgConnection, schema: &str) -> Result<Vec<(String, String)>> {
    let ctx = || format!("checking the SECURITY DEFINER functions of schema {schema}");
    let mut out = Vec::new();
    for f in db::definer_functions(conn, schema).await.map_err(|e| Error::db(ctx(), e))? {
        let name = &f.signature;
        let key = format!("function {}", f.key);
        if let Some((problem, fixed)) = temp_schema_problem(f.search_path.as_deref(), schema) {
            out.push((
                key.clone(),
                format!(
                    "function {name}: SECURITY DEFINER {problem}: a caller's temporary table named like one it \
                 reads would be used, with {}'s rights; fix: ALTER FUNCTION {name} SET search_path = {fixed} \
                 (for the migrations' own functions: run migrate)",
                    f.owner
                ),
            ));
        }
        for nsp in search_path_entries(f.search_path.as_deref().unwrap_or("")) {
            let nsp = if nsp == "$user" { f.owner.clone() } else { nsp };
            if nsp == "pg_temp" || nsp == "pg_catalog" {
                continue;
            }
            let others = db::others_who_may_create(conn, &nsp, &f.owner).await.map_err(|e| Error::db(ctx(), e))?;
            if let Some(others) = others.filter(|o| !o.is_empty()) {
                let who = others.join(", ");
                out.push((
                    key.clone(),
                    format!(
                        "function {name}: SECURITY DEFINER with schema {nsp} in its search_path, where {who} may \
                     create objects: an operator or function of theirs with a closer type match would run with \
                     {}'s rights; fix: REVOKE CREATE ON SCHEMA {} FROM {who} (PostgreSQL 15's default for \
                     public)",
                        f.owner,
                        ident(&nsp)
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// What is wrong with a SECURITY DEFINER function's `search_path` (as stored by `SET`) with
/// respect to the temporary schema, and the path that fixes it; `None` when pg_temp is last.
pub fn temp_schema_problem(search_path: Option<&str>, schema: &str) -> Option<(String, String)> {
    let Some(raw) = search_path else {
        return Some(("without a pinned search_path".into(), format!("pg_catalog, {}, pg_temp", ident(schema))));
    };
    let entries = search_path_entries(raw);
    if entries.last().map(String::as_str) == Some("pg_temp") {
        return None;
    }
    // Not named, pg_temp is searched first for tables and views.
    let mut fixed: Vec<String> = entries.iter().filter(|e| *e != "pg_temp").map(|e| ident(e)).collect();
    if fixed.is_empty() {
        fixed = vec!["pg_catalog".into(), ident(schema)];
    }
    fixed.push("pg_temp".into());
    Some((format!("with search_path `{raw}`, which does not end in pg_temp"), fixed.join(", ")))
}

/// The schema names of a `search_path` value, as PostgreSQL reads it (SplitIdentifierString):
/// comma-separated, unquoted names folded to lower case, `""` inside quotes for a quote.
pub fn search_path_entries(raw: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = raw.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut name = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                if c == '"' && chars.next_if_eq(&'"').is_none() {
                    break;
                }
                name.push(c);
            }
            while chars.next_if(|c| *c != ',').is_some() {}
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                name.push(c);
            }
            name = name.trim().to_lowercase();
        }
        if !name.is_empty() {
            out.push(name);
        }
        if chars.next().is_none() {
            return out;
        }
    }
}

/// An identifier as SQL needs it written: quoted only when it must be.
fn ident(s: &str) -> String {
    let plain = s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain { s.to_string() } else { quote_ident(s) }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Relations from the columns read (name to oid, relkind, columns), the view definitions and the
/// constraints `(table, name, definition)` read by later queries.
fn relations(
    columns: BTreeMap<String, (u32, String, Vec<Column>)>,
    views: &BTreeMap<String, String>,
    mut constraints: BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<(u32, String, Object)> {
    let mut out = Vec::new();
    for (name, (oid, kind, cols)) in columns {
        let object = if kind == "v" || kind == "m" {
            // Dropped between the two reads: it is gone, as a later read would find.
            let Some(definition) = views.get(&name) else { continue };
            Object::View { materialized: kind == "m", columns: cols, definition: definition.clone() }
        } else {
            let constraints = constraints.remove(&name).unwrap_or_default();
            Object::Table { columns: cols, constraints }
        };
        out.push((oid, name, object));
    }
    out
}

/// The scratch schema's name, as qualified names in its definitions print it, and the live schema's.
struct Rename {
    from: String,
    to: String,
}

/// `text` with every name qualified by schema `from` (as PostgreSQL prints it: `from.` at the start of
/// a name) qualified by `to` instead. Only the scratch catalog is renamed, and its schema's name
/// (`scanner_migrator_scratch_<pid>`) is the replay's own, so it cannot stand for anything else, as
/// a table alias named like the live schema (`j.job_id`) could; names qualified by any other schema
/// (005's `public.`) are left as they are, on both sides.
fn requalify(text: &str, from: &str, to: &str) -> String {
    let prefix = format!("{from}.");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(&prefix) {
        // The end of a longer name (`my_scanner_migrator_scratch_1.`) is not this schema.
        let inside =
            rest[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '$' | '"'));
        out.push_str(&rest[..at]);
        if inside {
            out.push_str(&prefix);
        } else {
            out.push_str(to);
            out.push('.');
        }
        rest = &rest[at + prefix.len()..];
    }
    out.push_str(rest);
    out
}

/// Reads one schema's catalog as PostgreSQL prints it; the caller has set `search_path` to that
/// schema alone, so definitions name its objects unqualified, and what PostgreSQL always
/// qualifies (a function's name in its definition, a body's own qualified names) names the
/// schema. The scratch catalog is `rename`d into the live schema's name; the live one is never
/// edited, so a definition is compared as it is.
async fn read(
    conn: &mut PgConnection,
    schema: &str,
    rename: Option<&Rename>,
) -> std::result::Result<Catalog, sqlx::Error> {
    let as_live = |s: String| match rename {
        Some(r) => requalify(&s, &r.from, &r.to),
        None => s,
    };
    let not_ours = not_ours();
    let rel_filter = not_ours.replace("{oid}", "c.oid").replace("{name}", "c.relname");
    let mut catalog = Catalog::default();
    let mut order: Vec<(u32, String)> = Vec::new();

    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT c.oid::int8 AS oid, c.relname::text AS name, c.relkind::text AS kind,
                a.attname::text AS col, format_type(a.atttypid, a.atttypmod) AS ty, a.attnotnull AS not_null,
                pg_get_expr(ad.adbin, ad.adrelid) AS def
           FROM pg_class AS c
           JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           LEFT JOIN pg_attrdef AS ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
          WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) AND c.relkind IN ('r', 'p', 'v', 'm') AND NOT ({rel_filter})
          ORDER BY c.oid, a.attnum"
    )))
    .bind(schema)
    .fetch_all(&mut *conn)
    .await?;
    let mut columns: BTreeMap<String, (u32, String, Vec<Column>)> = BTreeMap::new();
    for r in rows {
        let name: String = r.try_get("name")?;
        let (oid, kind) = (r.try_get::<i64, _>("oid")? as u32, r.try_get("kind")?);
        let entry = columns.entry(name).or_insert_with(|| (oid, kind, Vec::new()));
        entry.2.push(Column {
            name: r.try_get("col")?,
            ty: as_live(r.try_get("ty")?),
            not_null: r.try_get("not_null")?,
            default: r.try_get::<Option<String>, _>("def")?.map(as_live),
        });
    }
    let views: BTreeMap<String, String> = sqlx::query(AssertSqlSafe(format!(
        "SELECT c.relname::text AS name, pg_get_viewdef(c.oid, true) AS def FROM pg_class AS c
          WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) AND c.relkind IN ('v', 'm') AND NOT ({rel_filter})"
    )))
    .bind(schema)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    // pg_get_viewdef answers NULL for a view dropped since pg_class was read: it is gone.
    .filter_map(|r| match (r.try_get("name"), r.try_get::<Option<String>, _>("def")) {
        (Ok(name), Ok(Some(def))) => Some(Ok((name, as_live(def)))),
        (Ok(_), Ok(None)) => None,
        (Err(e), _) | (_, Err(e)) => Some(Err(e)),
    })
    .collect::<std::result::Result<_, sqlx::Error>>()?;
    let constraints = sqlx::query(
        "SELECT t.relname::text AS tbl, co.conname::text AS name, pg_get_constraintdef(co.oid, true) AS def
           FROM pg_constraint AS co JOIN pg_class AS t ON t.oid = co.conrelid
          WHERE t.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1)",
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await?;
    // Grouped by table once, so reading the catalog stays linear in the number of objects.
    let mut by_table: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for r in &constraints {
        let (table, name, def): (String, String, Option<String>) =
            (r.try_get("tbl")?, r.try_get("name")?, r.try_get("def")?);
        if let Some(def) = def {
            by_table.entry(table).or_default().insert(name, as_live(def));
        }
    }
    for (oid, name, object) in relations(columns, &views, by_table) {
        order.push((oid, relation_key(&name)));
        catalog.objects.insert(relation_key(&name), object);
    }

    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT c.oid::int8 AS oid, c.relname::text AS name, t.relname::text AS tbl, i.indisunique AS uniq,
                i.indisvalid AS valid, pg_get_indexdef(i.indexrelid) AS ddl,
                i.indexrelid IN (SELECT co.conindid FROM pg_constraint AS co) AS con
           FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid JOIN pg_class AS t ON t.oid = i.indrelid
          WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) AND NOT ({rel_filter})"
    )))
    .bind(schema)
    .fetch_all(&mut *conn)
    .await?;
    for r in rows {
        let name: String = r.try_get("name")?;
        // NULL: dropped since the catalog row was read.
        let Some(ddl) = r.try_get::<Option<String>, _>("ddl")?.map(as_live) else { continue };
        let using = ddl.split_once(" USING ").map_or(ddl.clone(), |(_, u)| u.to_string());
        order.push((r.try_get::<i64, _>("oid")? as u32, relation_key(&name)));
        catalog.objects.insert(
            relation_key(&name),
            Object::Index {
                table: r.try_get("tbl")?,
                unique: r.try_get("uniq")?,
                using,
                valid: r.try_get("valid")?,
                constraint: r.try_get("con")?,
                ddl,
            },
        );
    }

    let fn_filter = not_ours.replace("{oid}", "p.oid").replace("{name}", "p.proname");
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT p.oid::int8 AS oid, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS sig,
                coalesce(pg_get_function_result(p.oid), '') AS result, l.lanname::text AS lang, p.prosrc AS body,
                p.prosecdef AS secdef, coalesce(array_to_string(p.proconfig, ', '), '') AS config,
                pg_get_functiondef(p.oid) AS ddl
           FROM pg_proc AS p JOIN pg_language AS l ON l.oid = p.prolang
          WHERE p.pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) AND p.prokind IN ('f', 'p') AND NOT ({fn_filter})"
    )))
    .bind(schema)
    .fetch_all(&mut *conn)
    .await?;
    for r in rows {
        // NULL signature or definition: dropped since the catalog row was read.
        let (Some(sig), Some(ddl)) = (r.try_get::<Option<String>, _>("sig")?, r.try_get::<Option<String>, _>("ddl")?)
        else {
            continue;
        };
        let key = format!("function {sig}");
        order.push((r.try_get::<i64, _>("oid")? as u32, key.clone()));
        catalog.objects.insert(
            key,
            Object::Function {
                result: as_live(r.try_get("result")?),
                language: r.try_get("lang")?,
                body: as_live(r.try_get("body")?),
                security_definer: r.try_get("secdef")?,
                config: r.try_get("config")?,
                ddl: as_live(ddl),
            },
        );
    }

    let rows = sqlx::query(
        "SELECT t.oid::int8 AS oid, t.tgname::text AS name, c.relname::text AS tbl, pg_get_triggerdef(t.oid) AS def
           FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
          WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) AND NOT t.tgisinternal",
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await?;
    for r in rows {
        let table: String = r.try_get("tbl")?;
        let Some(definition) = r.try_get::<Option<String>, _>("def")?.map(as_live) else { continue };
        let key = format!("trigger {} on {table}", r.try_get::<String, _>("name")?);
        order.push((r.try_get::<i64, _>("oid")? as u32, key.clone()));
        catalog.objects.insert(key, Object::Trigger { table, definition });
    }
    // OIDs grow with creation (no wrap-around within one scratch transaction), so this is a
    // topological order: what an object depends on was created before it.
    order.sort();
    catalog.order = order.into_iter().map(|(_, k)| k).collect();
    Ok(catalog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_dropped_between_the_catalog_reads_is_left_out_not_a_panic() {
        let col = |n: &str| Column { name: n.into(), ty: "bigint".into(), not_null: false, default: None };
        let columns = BTreeMap::from([
            ("gone".to_string(), (2, "v".to_string(), vec![col("n")])),
            ("jobs".to_string(), (1, "r".to_string(), vec![col("job_id")])),
            ("job_progress".to_string(), (3, "m".to_string(), vec![col("total")])),
        ]);
        let views = BTreeMap::from([("job_progress".to_string(), " SELECT 1 AS total".to_string())]);
        let constraints = BTreeMap::from([(
            "jobs".to_string(),
            BTreeMap::from([("jobs_pkey".to_string(), "PRIMARY KEY (job_id)".to_string())]),
        )]);
        let found = relations(columns, &views, constraints);
        let names: Vec<&str> = found.iter().map(|(_, n, _)| n.as_str()).collect();
        assert_eq!(names, ["job_progress", "jobs"], "the dropped view is not there");
        assert!(matches!(&found[1].2, Object::Table { constraints, .. } if constraints.len() == 1));
    }

    fn col(name: &str, ty: &str) -> Column {
        Column { name: name.into(), ty: ty.into(), not_null: false, default: None }
    }

    fn catalog(objects: Vec<(&str, Object)>) -> Catalog {
        Catalog {
            order: objects.iter().map(|(k, _)| k.to_string()).collect(),
            objects: objects.into_iter().map(|(k, o)| (k.to_string(), o)).collect(),
        }
    }

    fn index(table: &str, using: &str) -> Object {
        Object::Index {
            table: table.into(),
            unique: false,
            using: using.into(),
            valid: true,
            constraint: false,
            ddl: String::new(),
        }
    }

    #[test]
    fn an_index_on_the_wrong_columns_names_both() {
        let e = catalog(vec![("relation idx_a", index("t", "btree (job_id, status)"))]);
        let l = catalog(vec![("relation idx_a", index("t", "btree (status)"))]);
        let d = diff(&e, &l);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].to_string(), "index idx_a: expected (job_id, status), found (status)");
        assert!(!d[0].accepted);
    }

    #[test]
    fn user_objects_are_never_reported_and_missing_ones_are() {
        let e = catalog(vec![("relation idx_a", index("t", "btree (x)"))]);
        let l = catalog(vec![("relation idx_a", index("t", "btree (x)")), ("relation mine", index("t", "hash (y)"))]);
        assert!(diff(&e, &l).is_empty());
        assert_eq!(diff(&e, &Catalog::default())[0].to_string(), "index idx_a: is missing");
    }

    #[test]
    fn a_compatible_column_type_is_accepted_and_an_incompatible_one_fails() {
        let table =
            |ty: &str| Object::Table { columns: vec![col("id", "uuid"), col("arn", ty)], constraints: BTreeMap::new() };
        let e = catalog(vec![("relation jobs", table("text"))]);
        let d = diff(&e, &catalog(vec![("relation jobs", table("character varying(2048)"))]));
        assert_eq!(d.len(), 1);
        assert!(d[0].accepted && d[0].problem.contains("character varying(2048)"), "{:?}", d[0]);
        let d = diff(&e, &catalog(vec![("relation jobs", table("integer"))]));
        assert!(!d[0].accepted && d[0].problem.contains("expected type text, found integer"), "{:?}", d[0]);
    }

    #[test]
    fn views_differ_by_kind_columns_or_definition() {
        let view = |m: bool, cols: &[&str], def: &str| Object::View {
            materialized: m,
            columns: cols.iter().map(|c| col(c, "bigint")).collect(),
            definition: def.into(),
        };
        let e = catalog(vec![("relation jp", view(false, &["a", "b"], "SELECT 1"))]);
        let d = |o: Object| diff(&e, &catalog(vec![("relation jp", o)]))[0].to_string();
        assert_eq!(d(view(true, &["a", "b"], "SELECT 1")), "view jp: expected a view, found a materialized view");
        assert_eq!(d(view(false, &["a"], "SELECT 1")), "view jp: expected columns (a, b), found (a)");
        assert!(d(view(false, &["a", "b"], "SELECT 2")).contains("expected `SELECT 1`, found `SELECT 2`"));
        let long = "SELECT ".to_string() + &"x, ".repeat(100) + "y";
        let e_long = catalog(vec![("relation jp", view(false, &["a", "b"], &long))]);
        let found = catalog(vec![("relation jp", view(false, &["a", "b"], &(long.clone() + " LIMIT 1")))]);
        let msg = diff(&e_long, &found)[0].to_string();
        assert!(msg.contains("LIMIT 1") && msg.contains("found `…"), "shows where they differ: {msg}");
        assert!(diff(&e, &catalog(vec![("relation jp", view(false, &["a", "b"], "SELECT 1"))])).is_empty());
    }

    #[test]
    fn invalid_indexes_fail_and_constraint_indexes_are_the_users() {
        let mut invalid = index("t", "btree (x)");
        if let Object::Index { valid, .. } = &mut invalid {
            *valid = false;
        }
        let e = catalog(vec![("relation i", index("t", "btree (x)"))]);
        assert!(diff(&e, &catalog(vec![("relation i", invalid)]))[0].problem.contains("INVALID"));
        let pkey = |u: &str| Object::Index {
            table: "t".into(),
            unique: true,
            using: u.into(),
            valid: true,
            constraint: true,
            ddl: String::new(),
        };
        let d = diff(
            &catalog(vec![("relation t_pkey", pkey("btree (a, b)"))]),
            &catalog(vec![("relation t_pkey", pkey("btree (a)"))]),
        );
        assert!(d[0].accepted, "{d:?}");
    }

    #[test]
    fn a_catalog_reads_back_from_its_cached_json_unchanged() {
        let mut c = catalog(vec![
            ("relation t", Object::Table { columns: vec![col("a", "text")], constraints: BTreeMap::new() }),
            ("relation i", index("t", "btree (a)")),
            (
                "relation v",
                Object::View {
                    materialized: true,
                    columns: vec![col("a", "text")],
                    definition: "SELECT a FROM t".into(),
                },
            ),
        ]);
        c.order.reverse();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Catalog>(&json).unwrap(), c);
        assert!(serde_json::from_str::<Catalog>("{\"objects\": {}}").is_err(), "a cache of another shape is refused");
    }

    #[test]
    fn only_the_scratch_schema_is_renamed_and_only_where_it_qualifies_a_name() {
        let (from, to) = ("scanner_migrator_scratch_42", "\"Scanner\"");
        assert_eq!(
            requalify("DELETE FROM scanner_migrator_scratch_42.job_progress_deltas RETURNING *", from, to),
            "DELETE FROM \"Scanner\".job_progress_deltas RETURNING *"
        );
        assert_eq!(
            requalify(
                "CREATE FUNCTION scanner_migrator_scratch_42.f() ... FROM scanner_migrator_scratch_42.t",
                from,
                "j"
            ),
            "CREATE FUNCTION j.f() ... FROM j.t"
        );
        // A live schema named like an alias is never taken out of the text: `j.job_id` stays.
        let view = "SELECT j.job_id, o.status FROM jobs j JOIN job_objects o ON o.job_id = j.job_id";
        assert_eq!(requalify(view, from, "j"), view);
        // Other schemas' names (005's `public.`), longer names and other pids are left alone.
        for text in [
            "FROM public.jobs",
            "FROM xscanner_migrator_scratch_42.t",
            "FROM scanner_migrator_scratch_421.t",
            "FROM \"my scanner_migrator_scratch_42\".t",
            "FROM my_scanner_migrator_scratch_42.t",
        ] {
            assert_eq!(requalify(text, from, to), text);
        }
        assert_eq!(requalify("", from, to), "");
    }

    #[test]
    fn text_family_types_are_compatible() {
        assert!(compatible_types("text", "character varying(2048)"));
        assert!(compatible_types("character varying(10)", "text"));
        assert!(!compatible_types("text", "integer"));
        assert!(!compatible_types("timestamp with time zone", "timestamp without time zone"));
    }

    #[test]
    fn search_path_entries_are_read_as_postgresql_reads_them() {
        assert_eq!(search_path_entries("pg_catalog, public, pg_temp"), ["pg_catalog", "public", "pg_temp"]);
        assert_eq!(search_path_entries(r#""My ""odd"" one", PUBLIC,"$user""#), [r#"My "odd" one"#, "public", "$user"]);
        assert_eq!(search_path_entries(r#""""#), Vec::<String>::new());
        assert_eq!(search_path_entries(""), Vec::<String>::new());
    }

    #[test]
    fn a_definer_search_path_is_safe_only_with_pg_temp_last() {
        assert_eq!(temp_schema_problem(Some("pg_catalog, public, pg_temp"), "public"), None);
        assert_eq!(temp_schema_problem(Some(r#"pg_catalog, "pg_temp""#), "public"), None);
        let fix = |p: Option<&str>| temp_schema_problem(p, "public").map(|(_, f)| f);
        // 004's path: pg_temp, not named, is searched first for tables.
        assert_eq!(fix(Some("pg_catalog, public")).as_deref(), Some("pg_catalog, public, pg_temp"));
        assert_eq!(fix(Some("pg_temp, pg_catalog, public")).as_deref(), Some("pg_catalog, public, pg_temp"));
        assert_eq!(fix(Some(r#""""#)).as_deref(), Some("pg_catalog, public, pg_temp"));
        assert_eq!(fix(None).as_deref(), Some("pg_catalog, public, pg_temp"));
        assert_eq!(
            temp_schema_problem(Some(r#""Scanner", pg_temp, public"#), "Scanner").map(|(_, f)| f).as_deref(),
            Some(r#""Scanner", public, pg_temp"#)
        );
        let (problem, _) = temp_schema_problem(Some("pg_catalog, public"), "public").unwrap();
        assert!(problem.contains("`pg_catalog, public`") && problem.contains("pg_temp"), "{problem}");
    }
}
