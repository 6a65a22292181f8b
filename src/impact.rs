//! What each pending statement will do to production, for `plan`: the locks it takes and what
//! they block, whether it rewrites or scans a table or only changes the catalog, the size of what
//! it touches, an estimate, and which sessions would hold it up now.
//!
//! Derived, not hand-kept: the pending migrations run once more in the scratch schema (the
//! verification replay, rolled back), and after each statement `pg_locks` says which locks it
//! took, a changed `relfilenode` that it rewrote a table, and `pg_stat_xact_user_tables.seq_scan`
//! that it read one whole (the scratch tables are empty, so the counters tell, not the time).
//! Scratch relations map back to the live ones by name.
//!
//! Where derivation cannot see, a small table of statement kinds fills in, and the output says
//! `by statement kind`:
//! - `CONCURRENTLY` statements run in the scratch without it (a transaction cannot hold them), so
//!   their locks there are not the ones production sees;
//! - `pg_locks` lists one row per lock mode a transaction holds: a mode the scratch transaction
//!   already holds on a relation is invisible when a statement asks for it again. The replay
//!   created the scratch tables, so it holds ACCESS EXCLUSIVE (and whatever earlier statements
//!   took) on them from then on. A statement kind's lock is used only when it is one of those
//!   modes; when the scratch did not hold it and `pg_locks` shows no such row, PostgreSQL did not
//!   take it, and the derivation wins.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};

use crate::{
    db,
    deadline::Deadline,
    error::{Error, Result},
    migrations::Migration,
    split::words,
    verify,
};

/// A table-level lock mode, with PostgreSQL's names (the `LOCK` command's and the docs').
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LockMode {
    /// SELECT.
    #[serde(rename = "ACCESS SHARE")]
    AccessShare,
    /// SELECT FOR UPDATE/SHARE.
    #[serde(rename = "ROW SHARE")]
    RowShare,
    /// INSERT, UPDATE, DELETE.
    #[serde(rename = "ROW EXCLUSIVE")]
    RowExclusive,
    /// VACUUM, VALIDATE CONSTRAINT, CREATE INDEX CONCURRENTLY.
    #[serde(rename = "SHARE UPDATE EXCLUSIVE")]
    ShareUpdateExclusive,
    /// CREATE INDEX.
    #[serde(rename = "SHARE")]
    Share,
    /// CREATE TRIGGER, ADD FOREIGN KEY.
    #[serde(rename = "SHARE ROW EXCLUSIVE")]
    ShareRowExclusive,
    /// REFRESH MATERIALIZED VIEW CONCURRENTLY.
    #[serde(rename = "EXCLUSIVE")]
    Exclusive,
    /// Most ALTER TABLE, DROP, TRUNCATE, a rewrite.
    #[serde(rename = "ACCESS EXCLUSIVE")]
    AccessExclusive,
}

use LockMode::*;

impl LockMode {
    /// From `pg_locks.mode` (`AccessShareLock`).
    pub fn from_pg(mode: &str) -> Option<Self> {
        Some(match mode {
            "AccessShareLock" => AccessShare,
            "RowShareLock" => RowShare,
            "RowExclusiveLock" => RowExclusive,
            "ShareUpdateExclusiveLock" => ShareUpdateExclusive,
            "ShareLock" => Share,
            "ShareRowExclusiveLock" => ShareRowExclusive,
            "ExclusiveLock" => Exclusive,
            "AccessExclusiveLock" => AccessExclusive,
            _ => return None,
        })
    }

    /// `ACCESS EXCLUSIVE`.
    pub fn name(self) -> &'static str {
        match self {
            AccessShare => "ACCESS SHARE",
            RowShare => "ROW SHARE",
            RowExclusive => "ROW EXCLUSIVE",
            ShareUpdateExclusive => "SHARE UPDATE EXCLUSIVE",
            Share => "SHARE",
            ShareRowExclusive => "SHARE ROW EXCLUSIVE",
            Exclusive => "EXCLUSIVE",
            AccessExclusive => "ACCESS EXCLUSIVE",
        }
    }

    /// Whether a session holding `self` makes one asking for `other` wait. PostgreSQL's fixed
    /// matrix ("Conflicting Lock Modes", Explicit Locking in the manual; lock.c's LockConflicts).
    pub fn conflicts(self, other: LockMode) -> bool {
        let conflicts_with: &[LockMode] = match self {
            AccessShare => &[AccessExclusive],
            RowShare => &[Exclusive, AccessExclusive],
            RowExclusive => &[Share, ShareRowExclusive, Exclusive, AccessExclusive],
            ShareUpdateExclusive => &[ShareUpdateExclusive, Share, ShareRowExclusive, Exclusive, AccessExclusive],
            Share => &[RowExclusive, ShareUpdateExclusive, ShareRowExclusive, Exclusive, AccessExclusive],
            ShareRowExclusive => {
                &[RowExclusive, ShareUpdateExclusive, Share, ShareRowExclusive, Exclusive, AccessExclusive]
            }
            Exclusive => {
                &[RowShare, RowExclusive, ShareUpdateExclusive, Share, ShareRowExclusive, Exclusive, AccessExclusive]
            }
            AccessExclusive => &[
                AccessShare,
                RowShare,
                RowExclusive,
                ShareUpdateExclusive,
                Share,
                ShareRowExclusive,
                Exclusive,
                AccessExclusive,
            ],
        };
        conflicts_with.contains(&other)
    }

    /// What the application's statements wait for while this is held: reads take ACCESS SHARE,
    /// writes ROW EXCLUSIVE.
    pub fn blocks(self) -> &'static str {
        match (self.conflicts(AccessShare), self.conflicts(RowExclusive)) {
            (true, _) => "reads and writes",
            (false, true) => "writes",
            (false, false) => "neither",
        }
    }
}

/// Where a reported lock comes from.
pub const DERIVED: &str = "derived";
/// See the module's documentation.
pub const BY_KIND: &str = "by statement kind";

/// One lock a statement takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lock {
    /// The relation, by its name in the schema.
    pub relation: String,
    /// The mode.
    pub mode: LockMode,
    /// `reads and writes`, `writes` or `neither`.
    pub blocks: String,
    /// `derived` or `by statement kind`.
    pub source: String,
}

/// A session that would hold a statement up now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Its backend pid.
    pub pid: i32,
    /// Its application_name.
    pub application_name: String,
    /// `active`, `idle in transaction`, ...
    pub state: String,
    /// Seconds since its transaction began.
    pub xact_age_s: f64,
    /// Why: `holds ROW EXCLUSIVE on jobs`, or `its snapshot is older than the build`.
    pub why: String,
}

/// The size of a live relation a statement touches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Size {
    /// The relation.
    pub relation: String,
    /// `pg_class.reltuples`, `None` when never analysed.
    pub rows: Option<f64>,
    /// `pg_total_relation_size`.
    pub bytes: i64,
}

/// What one pending statement will do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementImpact {
    /// Its line in the file.
    pub line: usize,
    /// Its start, on one line.
    pub statement: String,
    /// The locks it takes on relations that exist before it (strongest per relation).
    pub locks: Vec<Lock>,
    /// `rewrite`, `scan` or `catalog`.
    pub effect: String,
    /// The tables it rewrites or reads whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub effect_on: Vec<String>,
    /// Relations it creates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub creates: Vec<String>,
    /// Live sizes of what it locks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub size: Vec<Size>,
    /// Estimated seconds of work, from the tunable speeds.
    pub estimated_s: f64,
    /// Sessions holding a lock that conflicts with one it takes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked_by: Vec<Session>,
    /// For CONCURRENTLY: transactions whose snapshots (or writes) it must outwait.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waits_for: Vec<Session>,
}

/// What one pending migration will do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationImpact {
    /// One line: the level and the worst of it.
    pub risk: String,
    /// Statement by statement.
    pub statements: Vec<StatementImpact>,
    /// Where the derivation stopped, when a statement did not apply to the scratch schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_derived: Option<String>,
}

/// Speeds the estimate assumes: tunables, and the index build speed measured on this database once
/// it has recorded builds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Speeds {
    /// This database's measured speed, else INDEX_BUILD_ROWS_PER_S.
    pub index_build_rows_per_s: f64,
    /// Where `index_build_rows_per_s` comes from.
    pub index_build_source: String,
    /// TABLE_REWRITE_ROWS_PER_S.
    pub rewrite_rows_per_s: f64,
    /// TABLE_SCAN_ROWS_PER_S.
    pub scan_rows_per_s: f64,
}

/// A statement's locks by its kind, where derivation cannot see (see the module).
#[derive(Debug, Clone, PartialEq)]
pub struct KindLocks {
    /// CONCURRENTLY: the scratch ran it without.
    pub concurrently: bool,
    /// It builds an index (its time is an index build's).
    pub builds_index: bool,
    /// (relation as named, mode). An index's table is asked of the scratch (`table_of`).
    pub locks: Vec<(String, LockMode)>,
}

/// A name as written (`"Jobs"`, `public.jobs`) as the catalog holds it.
pub fn relation_name(written: &str) -> String {
    let written = written.split('(').next().unwrap_or(written).trim_end_matches([',', ';']);
    let last = written.rsplit_once('.').map_or(written, |(_, n)| n);
    if last.starts_with('"') { last.trim_matches('"').replace("\"\"", "\"") } else { last.to_lowercase() }
}

/// The locks PostgreSQL's manual gives for a statement's kind (ALTER TABLE, CREATE INDEX, DROP
/// INDEX, CREATE TRIGGER, views, REFRESH, TRUNCATE, REINDEX), or `None` for other kinds.
/// `table_of` names an index's table.
pub fn by_kind(sql: &str, table_of: &dyn Fn(&str) -> Option<String>) -> Option<KindLocks> {
    let w: Vec<&str> = words(sql);
    let lower: Vec<String> = w.iter().map(|s| s.to_ascii_lowercase()).collect();
    let at = |i: usize| lower.get(i).map(String::as_str).unwrap_or("");
    let concurrently = lower.iter().any(|s| s == "concurrently");
    let skip = |mut i: usize, optional: &[&[&str]]| {
        for seq in optional {
            if seq.iter().enumerate().all(|(k, s)| at(i + k) == *s) {
                i += seq.len();
            }
        }
        i
    };
    let name_at = |i: usize| w.get(i).map(|s| relation_name(s));
    let one = |rel: Option<String>, mode| {
        rel.map(|r| KindLocks { concurrently, builds_index: false, locks: vec![(r, mode)] })
    };
    match (at(0), at(1)) {
        ("create", "index") | ("create", "unique") => {
            let i = skip(1, &[&["unique"], &["index"], &["concurrently"], &["if", "not", "exists"]]);
            let on = (i..lower.len()).find(|&k| lower[k] == "on")?;
            let table = name_at(skip(on + 1, &[&["only"]]))?;
            let mode = if concurrently { ShareUpdateExclusive } else { Share };
            Some(KindLocks { concurrently, builds_index: true, locks: vec![(table, mode)] })
        }
        ("drop", "index") => {
            let index = name_at(skip(2, &[&["concurrently"], &["if", "exists"]]))?;
            let mode = if concurrently { ShareUpdateExclusive } else { AccessExclusive };
            let mut locks = vec![(index.clone(), mode)];
            locks.extend(table_of(&index).map(|t| (t, mode)));
            Some(KindLocks { concurrently, builds_index: false, locks })
        }
        ("reindex", _) => {
            let i = skip(1, &[&["index"], &["table"], &["concurrently"]]);
            let rel = name_at(i)?;
            let table = if at(1) == "index" { table_of(&rel).unwrap_or(rel) } else { rel };
            one(Some(table), if concurrently { ShareUpdateExclusive } else { Share })
        }
        ("refresh", "materialized") => {
            one(name_at(skip(3, &[&["concurrently"]])), if concurrently { Exclusive } else { AccessExclusive })
        }
        ("truncate", _) => one(name_at(skip(1, &[&["table"], &["only"]])), AccessExclusive),
        ("create", "trigger") | ("create", "constraint") | ("create", "or")
            if at(1) == "trigger" || at(2) == "trigger" || (at(2) == "replace" && at(3) == "trigger") =>
        {
            let on = (0..lower.len()).find(|&k| lower[k] == "on")?;
            one(name_at(on + 1), ShareRowExclusive)
        }
        ("create", "or") if at(2) == "replace" && (at(3) == "view" || at(4) == "view") => {
            let i = skip(3, &[&["temp"], &["temporary"], &["recursive"], &["view"]]);
            one(name_at(i), AccessExclusive)
        }
        ("alter", "table") => {
            let table = name_at(skip(2, &[&["if", "exists"], &["only"]]))?;
            let rest = lower.join(" ");
            let mut locks = Vec::new();
            // The weaker levels ALTER TABLE's page lists; everything else is ACCESS EXCLUSIVE.
            let mode = if rest.contains(" validate constraint ") {
                ShareUpdateExclusive
            } else if rest.contains(" foreign key ") && !rest.contains(" drop ") {
                if let Some(r) = lower.iter().position(|s| s == "references") {
                    locks.extend(name_at(r + 1).map(|t| (t, ShareRowExclusive)));
                }
                ShareRowExclusive
            } else if rest.contains(" set statistics ") || rest.contains(" cluster on ") {
                ShareUpdateExclusive
            } else if rest.contains(" enable trigger ") || rest.contains(" disable trigger ") {
                ShareRowExclusive
            } else {
                AccessExclusive
            };
            locks.insert(0, (table, mode));
            Some(KindLocks { concurrently, builds_index: false, locks })
        }
        ("drop", "table") | ("drop", "view") | ("drop", "materialized") => {
            let i = skip(2, &[&["view"], &["if", "exists"]]);
            one(name_at(i), AccessExclusive)
        }
        _ => None,
    }
}

/// What the replay saw of one statement, before the live database is asked about it.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Derived locks on relations that existed before it (relation, mode), every mode.
    pub new_locks: Vec<(String, LockMode)>,
    /// Modes the scratch held on each relation before it (what pg_locks cannot show again).
    pub held_before: BTreeMap<String, BTreeSet<LockMode>>,
    /// Tables whose relfilenode changed.
    pub rewritten: Vec<String>,
    /// Tables whose seq_scan counter moved (and were not rewritten).
    pub scanned: Vec<String>,
    /// Relations it created.
    pub created: Vec<String>,
    /// Relations it dropped.
    pub dropped: Vec<String>,
    /// Index name to table, in the scratch before it (for DROP INDEX).
    pub index_tables: BTreeMap<String, String>,
}

/// The locks to report for a statement: derived ones, and its kind's where derivation cannot
/// see (CONCURRENTLY, or a mode the scratch already held). Strongest mode per relation.
pub fn locks_of(sql: &str, seen: &Observed) -> Vec<Lock> {
    let kind = by_kind(sql, &|index| seen.index_tables.get(index).cloned());
    let mut by_rel: BTreeMap<String, (LockMode, &'static str)> = BTreeMap::new();
    let mut put = |rel: &str, mode: LockMode, source: &'static str| {
        let e = by_rel.entry(rel.to_string()).or_insert((mode, source));
        if mode > e.0 {
            *e = (mode, source);
        }
    };
    match &kind {
        Some(k) if k.concurrently => {
            for (rel, mode) in &k.locks {
                put(rel, *mode, BY_KIND);
            }
        }
        _ => {
            for (rel, mode) in &seen.new_locks {
                put(rel, *mode, DERIVED);
            }
            // What the catalog and the counters show needs a lock of at least this mode, whether
            // or not pg_locks could list it again: a rewrite or a drop ACCESS EXCLUSIVE (the
            // table's too, for an index), a scan ACCESS SHARE.
            for rel in seen.rewritten.iter().chain(&seen.dropped) {
                put(rel, AccessExclusive, DERIVED);
                if let Some(table) = seen.index_tables.get(rel) {
                    put(table, AccessExclusive, DERIVED);
                }
            }
            for rel in &seen.scanned {
                put(rel, AccessShare, DERIVED);
            }
            for (rel, mode) in kind.iter().flat_map(|k| &k.locks) {
                let masked = seen.held_before.get(rel).is_some_and(|h| h.contains(mode));
                if masked && !seen.created.contains(rel) {
                    put(rel, *mode, BY_KIND);
                }
            }
        }
    }
    by_rel
        .into_iter()
        .map(|(relation, (mode, source))| Lock {
            relation,
            mode,
            blocks: mode.blocks().to_string(),
            source: source.to_string(),
        })
        .collect()
}

/// The estimated seconds of one statement's work.
pub fn estimate(effect: &str, builds_index: bool, rows: f64, speeds: &Speeds) -> f64 {
    let per_s = match effect {
        "rewrite" => speeds.rewrite_rows_per_s,
        "scan" if builds_index => speeds.index_build_rows_per_s,
        "scan" => speeds.scan_rows_per_s,
        _ => return 0.0,
    };
    rows / per_s.max(1.0)
}

/// One line: `high|medium|low: ...`, the worst statement and who holds it up now.
pub fn risk(statements: &[StatementImpact]) -> String {
    let live_blocking =
        |s: &StatementImpact| s.locks.iter().filter(|l| l.mode.blocks() != "neither").max_by_key(|l| l.mode).cloned();
    let held_up: BTreeSet<i32> =
        statements.iter().flat_map(|s| s.blocked_by.iter().chain(&s.waits_for)).map(|s| s.pid).collect();
    let tail = if held_up.is_empty() {
        String::new()
    } else {
        let pids: Vec<String> = held_up.iter().map(|p| p.to_string()).collect();
        format!("; held up now by pid {}", pids.join(", "))
    };
    let heavy = statements.iter().find_map(|s| {
        let lock = live_blocking(s)?;
        (s.effect != "catalog" && !s.effect_on.is_empty()).then(|| {
            format!(
                "line {}: {} {} under {} on {}: {} wait ~{:.1} s",
                s.line,
                if s.effect == "rewrite" { "rewrites" } else { "reads whole" },
                s.effect_on.join(", "),
                lock.mode.name(),
                lock.relation,
                lock.blocks,
                s.estimated_s
            )
        })
    });
    if let Some(h) = heavy {
        return format!("high: {h}{tail}");
    }
    let brief = statements.iter().filter_map(|s| live_blocking(s).map(|l| (s.line, l))).max_by_key(|(_, l)| l.mode);
    let concurrent = statements
        .iter()
        .filter(|s| s.locks.iter().any(|l| l.source == BY_KIND && l.mode == ShareUpdateExclusive))
        .count();
    let what = match (brief, concurrent) {
        (Some((line, l)), _) => format!(
            "line {line}: {} on {} for a catalog change: {} wait only while it queues and runs (lock_timeout bounds the queue)",
            l.mode.name(),
            l.relation,
            l.blocks
        ),
        (None, n) if n > 0 => format!("{n} concurrent build(s): reads and writes go on"),
        (None, _) => "nothing that blocks reads or writes of existing relations".to_string(),
    };
    let level = if !held_up.is_empty() || what.contains("wait only") { "medium" } else { "low" };
    format!("{level}: {what}{tail}")
}

/// The statement's start on one line, for a person.
fn short(sql: &str) -> String {
    let one: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 72 { one.chars().take(71).collect::<String>() + "…" } else { one }
}

/// Runs `pending` after `base` in the scratch schema (rolled back) and observes each statement;
/// then asks the live schema for sizes and blockers. Read-only.
pub async fn assess(
    conn: &mut PgConnection,
    base: &[&Migration],
    pending: &[&Migration],
    speeds: &Speeds,
    deadline: Deadline,
) -> Result<Vec<MigrationImpact>> {
    let (observed, stopped) = observe(conn, base, pending, deadline).await?;
    let schema = db::current_schema(conn).await?;
    let ctx = "reading the live sizes and sessions for plan";
    let mut out = Vec::new();
    for (i, m) in pending.iter().enumerate() {
        let mut statements = Vec::new();
        let seen = observed.get(i).cloned().unwrap_or_default();
        for (stmt, seen) in m.up.statements().iter().zip(seen) {
            let kind = by_kind(&stmt.sql, &|index| seen.index_tables.get(index).cloned());
            // Only what exists live can hold production up: a relation an earlier pending
            // statement creates is new, and nobody else uses it yet.
            let mut size: Vec<Size> = Vec::new();
            let candidates = locks_of(&stmt.sql, &seen);
            for rel in candidates.iter().map(|l| &l.relation).chain(&seen.rewritten).chain(&seen.scanned) {
                if size.iter().any(|s| &s.relation == rel) {
                    continue;
                }
                if let Some(s) = live_size(conn, &schema, rel).await.map_err(|e| Error::db(ctx, e))? {
                    size.push(s);
                }
            }
            let live = |rel: &String| size.iter().any(|s| &s.relation == rel);
            let locks: Vec<Lock> = candidates.into_iter().filter(|l| live(&l.relation)).collect();
            let (effect, effect_on): (&str, Vec<String>) = if seen.rewritten.iter().any(live) {
                ("rewrite", seen.rewritten.iter().filter(|r| live(r)).cloned().collect())
            } else if seen.scanned.iter().any(live) {
                ("scan", seen.scanned.iter().filter(|r| live(r)).cloned().collect())
            } else {
                ("catalog", Vec::new())
            };
            let rows: f64 = size
                .iter()
                .filter(|s| effect_on.contains(&s.relation))
                .map(|s| s.rows.unwrap_or(s.bytes as f64 / 100.0))
                .fold(0.0, |a, b| a + b);
            let builds_index = kind.as_ref().is_some_and(|k| k.builds_index);
            let mut blocked_by = Vec::new();
            for l in &locks {
                for s in holders(conn, &schema, &l.relation, l.mode).await.map_err(|e| Error::db(ctx, e))? {
                    if !blocked_by.iter().any(|b: &Session| b.pid == s.pid) {
                        blocked_by.push(s);
                    }
                }
            }
            let waits_for = if kind.as_ref().is_some_and(|k| k.concurrently) {
                old_snapshots(conn).await.map_err(|e| Error::db(ctx, e))?
            } else {
                Vec::new()
            };
            statements.push(StatementImpact {
                line: stmt.line,
                statement: short(&stmt.sql),
                estimated_s: estimate(effect, builds_index, rows, speeds),
                effect: effect.to_string(),
                effect_on,
                creates: seen.created.clone(),
                size,
                locks,
                blocked_by,
                waits_for,
            });
        }
        let not_derived = match &stopped {
            Some((at, e)) if *at == i => Some(e.to_string()),
            Some((at, _)) if *at < i => Some("an earlier migration did not apply to the scratch schema".into()),
            _ => None,
        };
        out.push(MigrationImpact { risk: risk(&statements), statements, not_derived });
    }
    Ok(out)
}

type Observation = (Vec<Vec<Observed>>, Option<(usize, Error)>);

/// The replay: base, then every pending statement observed, in a transaction rolled back whatever happens.
async fn observe(
    conn: &mut PgConnection,
    base: &[&Migration],
    pending: &[&Migration],
    deadline: Deadline,
) -> Result<Observation> {
    let ctx = "observing the pending migrations in a scratch schema";
    verify::in_scratch(conn, base, deadline, ctx, async |tx, scratch| {
        let mut out = Vec::new();
        for (i, m) in pending.iter().enumerate() {
            let mut per = Vec::new();
            for stmt in m.up.statements() {
                let before = state(tx, &scratch.name).await.map_err(|e| Error::db(ctx, e))?;
                match verify::scratch_statement(tx, m, &stmt, &scratch.user, deadline).await {
                    Err(err @ Error::InvalidMigration { .. }) => {
                        out.push(per);
                        return Ok((out, Some((i, err))));
                    }
                    other => other?,
                }
                let after = state(tx, &scratch.name).await.map_err(|e| Error::db(ctx, e))?;
                per.push(compare(&before, &after));
            }
            out.push(per);
        }
        Ok((out, None))
    })
    .await
}

/// The scratch schema's relations as the replay sees them between two statements.
#[derive(Debug, Default)]
struct State {
    /// name -> (relkind, relfilenode, seq_scan)
    relations: BTreeMap<String, (String, i64, i64)>,
    /// (relation, mode) this transaction holds.
    locks: BTreeSet<(String, LockMode)>,
    /// index -> table
    index_tables: BTreeMap<String, String>,
}

async fn state(conn: &mut PgConnection, scratch: &str) -> std::result::Result<State, sqlx::Error> {
    let mut s = State::default();
    for r in sqlx::query(
        "SELECT c.relname::text AS name, c.relkind::text AS kind, c.relfilenode::int8 AS node,
                coalesce(st.seq_scan, 0)::int8 AS scans, t.relname::text AS tbl
           FROM pg_class AS c
           LEFT JOIN pg_stat_xact_user_tables AS st ON st.relid = c.oid
           LEFT JOIN pg_index AS i ON i.indexrelid = c.oid
           LEFT JOIN pg_class AS t ON t.oid = i.indrelid
          WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'p', 'm', 'v', 'i', 'I')",
    )
    .bind(scratch)
    .fetch_all(&mut *conn)
    .await?
    {
        let name: String = r.try_get("name")?;
        if let Some(t) = r.try_get::<Option<String>, _>("tbl")? {
            s.index_tables.insert(name.clone(), t);
        }
        s.relations.insert(name, (r.try_get("kind")?, r.try_get("node")?, r.try_get("scans")?));
    }
    for r in sqlx::query(
        "SELECT c.relname::text AS name, l.mode FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation
          WHERE l.locktype = 'relation' AND l.pid = pg_backend_pid() AND l.granted
            AND c.relnamespace = $1::regnamespace",
    )
    .bind(scratch)
    .fetch_all(&mut *conn)
    .await?
    {
        if let Some(mode) = LockMode::from_pg(r.try_get("mode")?) {
            s.locks.insert((r.try_get("name")?, mode));
        }
    }
    Ok(s)
}

fn compare(before: &State, after: &State) -> Observed {
    let existed = |name: &str| before.relations.contains_key(name);
    let is_index = |name: &str| before.relations.get(name).is_some_and(|(k, ..)| k == "i" || k == "I");
    let mut held_before: BTreeMap<String, BTreeSet<LockMode>> = BTreeMap::new();
    for (rel, mode) in &before.locks {
        held_before.entry(rel.clone()).or_default().insert(*mode);
    }
    let new_locks =
        after.locks.difference(&before.locks).filter(|(rel, _)| existed(rel) && !is_index(rel)).cloned().collect();
    let mut rewritten = Vec::new();
    let mut scanned = Vec::new();
    for (name, (kind, node, scans)) in &after.relations {
        let Some((_, node0, scans0)) = before.relations.get(name) else { continue };
        if !matches!(kind.as_str(), "r" | "m" | "p") {
            continue;
        }
        if node != node0 {
            rewritten.push(name.clone());
        } else if scans > scans0 {
            scanned.push(name.clone());
        }
    }
    Observed {
        new_locks,
        held_before,
        rewritten,
        scanned,
        created: after.relations.keys().filter(|n| !existed(n)).cloned().collect(),
        dropped: before.relations.keys().filter(|n| !after.relations.contains_key(*n)).cloned().collect(),
        index_tables: before.index_tables.clone(),
    }
}

async fn live_size(
    conn: &mut PgConnection,
    schema: &str,
    relation: &str,
) -> std::result::Result<Option<Size>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT CASE WHEN c.reltuples >= 0 THEN c.reltuples::float8 END AS rows,
                pg_total_relation_size(c.oid)::int8 AS bytes
           FROM pg_class AS c WHERE c.oid = to_regclass(format('%I.%I', $1::text, $2::text))",
    )
    .bind(schema)
    .bind(relation)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| Ok(Size { relation: relation.to_string(), rows: r.try_get("rows")?, bytes: r.try_get("bytes")? }))
        .transpose()
}

/// Sessions holding (or queued for) a lock on the live `relation` that conflicts with `mode`.
async fn holders(
    conn: &mut PgConnection,
    schema: &str,
    relation: &str,
    mode: LockMode,
) -> std::result::Result<Vec<Session>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT a.pid, coalesce(a.application_name, '') AS app, coalesce(a.state, '') AS state,
                coalesce(extract(epoch FROM now() - a.xact_start), 0)::float8 AS age, l.mode, l.granted
           FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
          WHERE l.locktype = 'relation' AND l.relation = to_regclass(format('%I.%I', $1::text, $2::text))
            AND l.pid <> pg_backend_pid()
          ORDER BY a.xact_start NULLS LAST, a.pid",
    )
    .bind(schema)
    .bind(relation)
    .fetch_all(&mut *conn)
    .await?;
    let mut out: Vec<Session> = Vec::new();
    for r in rows {
        let Some(held) = LockMode::from_pg(r.try_get("mode")?) else { continue };
        let pid: i32 = r.try_get("pid")?;
        if !held.conflicts(mode) || out.iter().any(|s| s.pid == pid) {
            continue;
        }
        let verb = if r.try_get("granted")? { "holds" } else { "is queued for" };
        out.push(Session {
            pid,
            application_name: r.try_get("app")?,
            state: r.try_get("state")?,
            xact_age_s: r.try_get("age")?,
            why: format!("{verb} {} on {relation}", held.name()),
        });
    }
    Ok(out)
}

/// Transactions of this database a CONCURRENTLY statement waits out: those with a snapshot
/// (backend_xmin) or a transaction id (writers) when it starts (WaitForOlderSnapshots, WaitForLockers).
async fn old_snapshots(conn: &mut PgConnection) -> std::result::Result<Vec<Session>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT a.pid, coalesce(a.application_name, '') AS app, coalesce(a.state, '') AS state,
                coalesce(extract(epoch FROM now() - a.xact_start), 0)::float8 AS age,
                a.backend_xmin IS NOT NULL AS snapshot
           FROM pg_stat_activity AS a
          WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
            AND (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL)
          ORDER BY a.xact_start NULLS LAST, a.pid",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            let snapshot: bool = r.try_get("snapshot")?;
            Ok(Session {
                pid: r.try_get("pid")?,
                application_name: r.try_get("app")?,
                state: r.try_get("state")?,
                xact_age_s: r.try_get("age")?,
                why: if snapshot {
                    "its snapshot is older than the build: the build waits for its transaction to end".into()
                } else {
                    "its transaction has written: the build waits for it to end".into()
                },
            })
        })
        .collect()
}

/// The readable table `plan --output text` prints, from the plan's JSON.
pub fn render_text(report: &serde_json::Value) -> String {
    let mut out = String::new();
    let pending = report["pending"].as_array().cloned().unwrap_or_default();
    let version = report["schema_version"].as_i64().map_or("none".to_string(), |v| format!("{v:03}"));
    if pending.is_empty() {
        out.push_str(&format!("schema version {version}: nothing pending\n"));
        return out;
    }
    out.push_str(&format!("schema version {version}: {} pending migration(s)\n", pending.len()));
    let speeds = &report["plan_speeds"];
    if let (Some(per_s), Some(source)) =
        (speeds["index_build_rows_per_s"].as_f64(), speeds["index_build_source"].as_str())
    {
        out.push_str(&format!("estimates: index builds at {per_s:.0} rows/s ({source})\n"));
    }
    for m in pending {
        let label = format!("{:03}_{}", m["version"].as_i64().unwrap_or(0), m["name"].as_str().unwrap_or(""));
        out.push_str(&format!("\n{label} ({}, {} statements)\n", m["mode"].as_str().unwrap_or(""), m["statements"]));
        let Ok(impact) = serde_json::from_value::<MigrationImpact>(m["impact"].clone()) else {
            out.push_str("  (no impact derived)\n");
            continue;
        };
        out.push_str(&format!("  risk: {}\n", impact.risk));
        if let Some(why) = &impact.not_derived {
            out.push_str(&format!("  not derived: {why}\n"));
        }
        let mut rows = vec![[
            "LINE".to_string(),
            "LOCK".into(),
            "BLOCKS".into(),
            "EFFECT".into(),
            "ROWS".into(),
            "SIZE".into(),
            "EST".into(),
            "STATEMENT".into(),
        ]];
        let mut notes = Vec::new();
        for s in &impact.statements {
            let locks: Vec<String> = s
                .locks
                .iter()
                .map(|l| {
                    let kind = if l.source == BY_KIND { "*" } else { "" };
                    format!("{}{kind} on {}", l.mode.name(), l.relation)
                })
                .collect();
            let blocks = s.locks.iter().max_by_key(|l| l.mode).map_or("-".to_string(), |l| l.blocks.clone());
            let rows_n: f64 = s.size.iter().map(|z| z.rows.unwrap_or(0.0)).fold(0.0, f64::max);
            let bytes: i64 = s.size.iter().map(|z| z.bytes).max().unwrap_or(0);
            let effect = if s.effect_on.is_empty() {
                s.effect.clone()
            } else {
                format!("{} {}", s.effect, s.effect_on.join(","))
            };
            rows.push([
                s.line.to_string(),
                if locks.is_empty() { "-".into() } else { locks.join(", ") },
                blocks,
                effect,
                if s.size.is_empty() { "-".into() } else { format!("{rows_n:.0}") },
                if s.size.is_empty() { "-".into() } else { human_bytes(bytes) },
                format!("{:.1} s", s.estimated_s),
                s.statement.clone(),
            ]);
            for b in s.blocked_by.iter().chain(&s.waits_for) {
                notes.push(format!(
                    "  line {}: held up by pid {} ({}, {}, transaction {:.0} s old): {}",
                    s.line,
                    b.pid,
                    if b.application_name.is_empty() { "-" } else { &b.application_name },
                    b.state,
                    b.xact_age_s,
                    b.why
                ));
            }
        }
        let widths: Vec<usize> = (0..8).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
        for r in &rows {
            let line: Vec<String> =
                r.iter().enumerate().map(|(c, v)| format!("{v:<w$}", w = if c == 7 { 0 } else { widths[c] })).collect();
            out.push_str(&format!("  {}\n", line.join("  ").trim_end()));
        }
        for n in notes {
            out.push_str(&format!("{n}\n"));
        }
    }
    out.push_str(
        "\n* by statement kind: derivation cannot see this lock (CONCURRENTLY, or a mode the scratch already held)\n",
    );
    out
}

fn human_bytes(b: i64) -> String {
    let b = b as f64;
    match b {
        b if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.0} kB", b / 1e3),
        b => format!("{b:.0} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conflict_matrix_is_postgresqls() {
        let all = [
            AccessShare,
            RowShare,
            RowExclusive,
            ShareUpdateExclusive,
            Share,
            ShareRowExclusive,
            Exclusive,
            AccessExclusive,
        ];
        for a in all {
            for b in all {
                assert_eq!(a.conflicts(b), b.conflicts(a), "the matrix is symmetric: {a:?} {b:?}");
            }
        }
        assert!(!Share.conflicts(Share) && ShareUpdateExclusive.conflicts(ShareUpdateExclusive));
        assert_eq!(AccessExclusive.blocks(), "reads and writes");
        assert_eq!(Share.blocks(), "writes");
        assert_eq!(ShareRowExclusive.blocks(), "writes");
        assert_eq!(ShareUpdateExclusive.blocks(), "neither");
        assert_eq!(LockMode::from_pg("ShareRowExclusiveLock"), Some(ShareRowExclusive));
        assert_eq!(serde_json::to_string(&AccessExclusive).unwrap(), "\"ACCESS EXCLUSIVE\"");
    }

    fn kind(sql: &str) -> KindLocks {
        by_kind(sql, &|i| (i == "idx_a").then(|| "jobs".to_string())).unwrap()
    }

    #[test]
    fn statement_kinds_name_the_manuals_locks() {
        assert_eq!(
            kind("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON ONLY public.jobs (a)").locks,
            [("jobs".into(), ShareUpdateExclusive)]
        );
        assert_eq!(kind("create unique index i on \"Jobs\"(a)").locks, [("Jobs".into(), Share)]);
        assert_eq!(
            kind("DROP INDEX CONCURRENTLY IF EXISTS idx_a").locks,
            [("idx_a".into(), ShareUpdateExclusive), ("jobs".into(), ShareUpdateExclusive)]
        );
        assert_eq!(kind("ALTER TABLE jobs VALIDATE CONSTRAINT fk").locks, [("jobs".into(), ShareUpdateExclusive)]);
        assert_eq!(
            kind("ALTER TABLE o ADD CONSTRAINT fk FOREIGN KEY (j) REFERENCES jobs (job_id) NOT VALID").locks,
            [("o".into(), ShareRowExclusive), ("jobs".into(), ShareRowExclusive)]
        );
        assert_eq!(kind("ALTER TABLE IF EXISTS ONLY jobs ADD COLUMN x int").locks, [("jobs".into(), AccessExclusive)]);
        assert_eq!(kind("CREATE OR REPLACE VIEW v AS SELECT 1").locks, [("v".into(), AccessExclusive)]);
        assert!(kind("REFRESH MATERIALIZED VIEW CONCURRENTLY m").concurrently);
        assert!(by_kind("CREATE OR REPLACE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql", &|_| None).is_none());
        assert!(by_kind("GRANT SELECT ON jobs TO PUBLIC", &|_| None).is_none());
    }

    #[test]
    fn a_masked_mode_comes_from_the_kind_and_an_unseen_unmasked_one_does_not() {
        let mut seen = Observed::default();
        seen.held_before.insert("jobs".into(), [AccessExclusive].into());
        let l = locks_of("ALTER TABLE jobs ADD COLUMN x int", &seen);
        assert_eq!((l[0].mode, l[0].source.as_str()), (AccessExclusive, BY_KIND));
        seen.held_before.insert("jobs".into(), [AccessShare].into());
        assert!(locks_of("ALTER TABLE jobs ADD COLUMN x int", &seen).is_empty(), "derivation wins");
        seen.new_locks = vec![("jobs".into(), ShareUpdateExclusive), ("jobs".into(), AccessShare)];
        let l = locks_of("ALTER TABLE jobs VALIDATE CONSTRAINT c", &seen);
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].mode, l[0].source.as_str()), (ShareUpdateExclusive, DERIVED));
    }

    #[test]
    fn a_statement_is_read_from_the_scratch_before_and_after_it() {
        let rel = |k: &str, node: i64, scans: i64| (k.to_string(), node, scans);
        let mut before = State::default();
        before.relations.insert("jobs".into(), rel("r", 10, 1));
        before.relations.insert("objs".into(), rel("r", 20, 0));
        before.relations.insert("idx".into(), rel("i", 30, 0));
        before.index_tables.insert("idx".into(), "objs".into());
        before.locks.insert(("jobs".into(), AccessExclusive));
        let mut after = State::default();
        after.relations.insert("jobs".into(), rel("r", 11, 2));
        after.relations.insert("objs".into(), rel("r", 20, 1));
        after.relations.insert("fresh".into(), rel("r", 40, 0));
        after.locks = before.locks.clone();
        after.locks.insert(("objs".into(), ShareUpdateExclusive));
        after.locks.insert(("fresh".into(), AccessExclusive));
        let seen = compare(&before, &after);
        assert_eq!(seen.rewritten, ["jobs"], "relfilenode changed");
        assert_eq!(seen.scanned, ["objs"], "seq_scan moved, not rewritten");
        assert_eq!(seen.created, ["fresh"]);
        assert_eq!(seen.dropped, ["idx"]);
        assert_eq!(seen.new_locks, [("objs".to_string(), ShareUpdateExclusive)], "only relations that existed");
        let locks = locks_of("SELECT 1", &seen);
        let got: Vec<(&str, LockMode)> = locks.iter().map(|l| (l.relation.as_str(), l.mode)).collect();
        // The rewrite and the drop (the index's table too) mean ACCESS EXCLUSIVE, whatever pg_locks could show.
        assert_eq!(got, [("idx", AccessExclusive), ("jobs", AccessExclusive), ("objs", AccessExclusive)]);
        assert_eq!(relation_name("public.\"Odd\"\"Name\"(a)"), "Odd\"Name");
        assert_eq!(relation_name("Public.Jobs"), "jobs");
    }

    #[test]
    fn risk_names_the_worst_and_the_blockers() {
        let s = |effect: &str, mode: LockMode| StatementImpact {
            line: 3,
            statement: "x".into(),
            locks: vec![Lock { relation: "jobs".into(), mode, blocks: mode.blocks().into(), source: DERIVED.into() }],
            effect: effect.into(),
            effect_on: if effect == "catalog" { vec![] } else { vec!["jobs".into()] },
            creates: vec![],
            size: vec![],
            estimated_s: 2.0,
            blocked_by: vec![],
            waits_for: vec![],
        };
        assert!(
            risk(&[s("rewrite", AccessExclusive)]).starts_with("high: line 3: rewrites jobs under ACCESS EXCLUSIVE")
        );
        assert!(risk(&[s("catalog", AccessExclusive)]).starts_with("medium: line 3: ACCESS EXCLUSIVE on jobs"));
        assert!(risk(&[s("scan", ShareUpdateExclusive)]).starts_with("low:"));
        let mut held = s("catalog", AccessShare);
        held.blocked_by.push(Session {
            pid: 42,
            application_name: "a".into(),
            state: "idle".into(),
            xact_age_s: 1.0,
            why: "w".into(),
        });
        assert!(risk(&[held]).ends_with("held up now by pid 42"));
    }
}
