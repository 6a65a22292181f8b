//! Adopting a database that another tool (the old `migrate_database.sh`) migrated: before a
//! migration runs, every object it creates that already exists is compared with what the
//! migration would make. Same shape: adopted as-is. A derived object (index, view, materialized
//! view, function, trigger) of another shape: converged online, built beside the old one and
//! swapped in one short transaction, so readers never see it missing or empty. Tables are the
//! user's data: never rewritten (verification reports compatible differences as accepted).

use serde::Serialize;
use sqlx::{PgConnection, Row};

use crate::{
    error::{Error, Result},
    verify::{self, Catalog, Object},
};

/// What adoption did with one object.
#[derive(Debug, Clone, Serialize)]
pub struct Adoption {
    /// The object (`materialized view job_progress`).
    pub object: String,
    /// `adopted` (already in the migrations' shape) or `converged` (rebuilt into it).
    pub action: &'static str,
    /// For a converged object, how it differed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub was: Option<String>,
    /// What an interrupted attempt had left and was cleaned up before the retry.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cleaned_up: Vec<String>,
}

/// SQL run to converge one object: statements in one transaction, or one by one.
#[derive(Debug, Clone)]
pub struct Step {
    /// For logs and errors.
    pub what: String,
    /// The statements.
    pub statements: Vec<String>,
    /// All in one transaction (the swap), or each on its own (concurrent index builds).
    pub in_transaction: bool,
    /// Run when the step fails: removes what the object's steps built so far (the `__scm_new`
    /// relation or index), so a failure leaves nothing behind and the next run starts clean.
    pub undo: Vec<String>,
}

/// What to do about one object that the next migration creates.
pub enum Decision {
    /// It does not exist: the migration creates it.
    Absent,
    /// It exists in the migration's shape.
    Adopt(Adoption),
    /// It exists as a table or constraint of another shape: left to verification.
    Leave,
    /// It exists in another shape: run these steps, then it is converged.
    Converge(Adoption, Vec<Step>),
}

/// A name for a temporary object beside `name`, within PostgreSQL's 63 bytes.
fn beside(name: &str, suffix: &str) -> String {
    let keep = 63 - suffix.len();
    let mut base: String = name.chars().take(keep).collect();
    while base.len() > keep {
        base.pop();
    }
    format!("{base}{suffix}")
}

/// A name quoted as an identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Decides about `key` (an object in `after`, the catalog with the next migration applied),
/// given the live catalog; reads what a swap needs (dependents, privileges) from `conn`.
pub async fn decide(conn: &mut PgConnection, key: &str, after: &Catalog, live: &Catalog) -> Result<Decision> {
    let expected = &after.objects[key];
    let Some(found) = live.objects.get(key) else { return Ok(Decision::Absent) };
    let object = after.describe(key);
    let differences = verify::diff_object(key, expected, Some(found));
    if differences.is_empty() {
        return Ok(Decision::Adopt(Adoption { object, action: "adopted", was: None, cleaned_up: Vec::new() }));
    }
    if expected.is_derived() && matches!(found, Object::Table { .. }) {
        return Err(Error::AdoptionFailed(format!(
            "{object}: a table of that name exists where the migrations make a {}; a table holds data, so the \
             migrator never drops or rewrites it. Rename or drop it yourself (keeping what you need), then migrate again",
            expected.kind()
        )));
    }
    let invalid_only = matches!(found, Object::Index { valid: false, .. }) && differences.len() == 1;
    if !expected.is_derived() || !found.is_derived() || invalid_only || differences.iter().all(|d| d.accepted) {
        // Tables and constraints are the user's; an INVALID index is rebuilt by the statement that builds it.
        return Ok(Decision::Leave);
    }
    let was = Some(differences.iter().map(|d| d.problem.clone()).collect::<Vec<_>>().join("; "));
    let adoption = Adoption { object: object.clone(), action: "converged", was, cleaned_up: Vec::new() };
    let name = verify::key_name(key);
    let steps = match expected {
        Object::Index { table, unique, using, .. } => {
            // An earlier run built the new index beside the old one (detached, past its deadline) and
            // it is valid and of the wanted shape: only the swap is left.
            let built = matches!(live.objects.get(&format!("index {}", beside(name, "__scm_new"))),
                Some(Object::Index { table: t, unique: u, using: us, valid: true, .. })
                    if t == table && u == unique && us == using);
            index_steps(name, table, *unique, using, built)
        }
        Object::View { .. } => relation_steps(conn, name, expected, found, after).await?,
        Object::Function { .. } => function_steps(conn, name, expected, found).await?,
        Object::Trigger { table, definition } => vec![Step {
            what: format!("replacing {object}"),
            statements: vec![
                format!("DROP TRIGGER {} ON {}", ident(name.split(" on ").next().unwrap_or(name)), ident(table)),
                definition.clone(),
            ],
            in_transaction: true,
            undo: Vec::new(),
        }],
        Object::Table { .. } => unreachable!("tables are not derived"),
    };
    Ok(Decision::Converge(adoption, steps))
}

fn index_steps(name: &str, table: &str, unique: bool, using: &str, built: bool) -> Vec<Step> {
    let tmp = beside(name, "__scm_new");
    let unique = if unique { "UNIQUE " } else { "" };
    let undo = vec![format!("DROP INDEX CONCURRENTLY IF EXISTS {}", ident(&tmp))];
    let build = (!built).then(|| Step {
        what: format!("building index {name} in the migrations' shape beside the old one"),
        statements: vec![
            format!("DROP INDEX CONCURRENTLY IF EXISTS {}", ident(&tmp)),
            format!("CREATE {unique}INDEX CONCURRENTLY {} ON {} USING {using}", ident(&tmp), ident(table)),
        ],
        in_transaction: false,
        undo: undo.clone(),
    });
    build
        .into_iter()
        .chain([Step {
            what: format!("swapping index {name} for the rebuilt one"),
            statements: vec![
                format!("DROP INDEX {}", ident(name)),
                format!("ALTER INDEX {} RENAME TO {}", ident(&tmp), ident(name)),
            ],
            in_transaction: true,
            undo,
        }])
        .collect()
}

/// A view or materialized view: the new one is built beside the old (a materialized view with
/// its data and indexes), then one transaction drops the dependent views, swaps the names, drops
/// the old relation, restores the privileges and recreates the dependents (ours in the
/// migrations' shape, the user's as they were: options, owner, comments, grants and a
/// materialized view's indexes; if one no longer fits, nothing is changed). Column grants, `WITH
/// GRANT OPTION` and comments are carried; what cannot be (an index of the user's on the relation,
/// a trigger or rule, a grant or comment on a column the new shape lacks) refuses before the build.
async fn relation_steps(
    conn: &mut PgConnection,
    name: &str,
    expected: &Object,
    found: &Object,
    after: &Catalog,
) -> Result<Vec<Step>> {
    let Object::View { materialized, definition, .. } = expected else { unreachable!("a relation") };
    let kind = |o: &Object| match o {
        Object::View { materialized: true, .. } => "MATERIALIZED VIEW",
        _ => "VIEW",
    };
    let tmp = beside(name, "__scm_new");
    let old = beside(name, "__scm_old");
    let with_data = if *materialized { " WITH DATA" } else { "" };
    let mut build = vec![
        format!("DROP {} IF EXISTS {}", kind(expected), ident(&tmp)),
        format!("CREATE {} {} AS {}{with_data}", kind(expected), ident(&tmp), definition.trim_end_matches(';')),
    ];
    let mut renames = Vec::new();
    for key in &after.order {
        if let Some(Object::Index { table, unique, using, .. }) = after.objects.get(key)
            && table == name
        {
            let index = verify::key_name(key);
            let tmp_index = beside(index, "__scm_new");
            let unique = if *unique { "UNIQUE " } else { "" };
            // The new relation is not read by anyone yet: no need for CONCURRENTLY.
            build.push(format!("CREATE {unique}INDEX {} ON {} USING {using}", ident(&tmp_index), ident(&tmp)));
            renames.push(format!("ALTER INDEX {} RENAME TO {}", ident(&tmp_index), ident(index)));
        }
    }
    let ctx = |e: sqlx::Error| Error::db(format!("reading what depends on {name}"), e);
    // Views that depend on the old relation, directly or not, deepest last, with what recreating
    // them must carry: options (security_barrier, check_option), owner, a materialized view's indexes.
    let dependents = sqlx::query(
        "WITH RECURSIVE dep(oid, depth) AS (
             SELECT to_regclass($1)::oid, 0
             UNION
             SELECT r.ev_class, dep.depth + 1
               FROM dep JOIN pg_depend AS d ON d.refobjid = dep.oid AND d.classid = 'pg_rewrite'::regclass
               JOIN pg_rewrite AS r ON r.oid = d.objid
              WHERE r.ev_class <> dep.oid AND dep.depth < 50)
         SELECT c.relname::text AS name, c.relkind::text AS kind, pg_get_viewdef(c.oid, true) AS def, max(depth) AS depth,
                coalesce(array_to_string(c.reloptions, ', '), '') AS options,
                CASE WHEN c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user) THEN ''
                     ELSE quote_ident(pg_get_userbyid(c.relowner)) END AS owner,
                coalesce((SELECT array_agg(pg_get_indexdef(i.indexrelid) ORDER BY i.indexrelid)
                            FROM pg_index AS i WHERE i.indrelid = c.oid), '{}') AS indexes
           FROM dep JOIN pg_class AS c ON c.oid = dep.oid
          WHERE dep.depth > 0
          GROUP BY c.oid, c.relname, c.relkind, c.reloptions, c.relowner
          ORDER BY max(depth)",
    )
    .bind(ident(name))
    .fetch_all(&mut *conn)
    .await
    .map_err(ctx)?;
    let Object::View { columns: new_columns, .. } = expected else { unreachable!("a relation") };
    let keep: Vec<String> = new_columns.iter().map(|c| c.name.clone()).collect();
    let ours: Vec<(bool, String)> = after
        .objects
        .values()
        .filter_map(|o| match o {
            Object::Index { table, unique, using, .. } if table == name => Some((*unique, using.clone())),
            _ => None,
        })
        .collect();
    let dep_names: Vec<String> = dependents.iter().map(|d| d.get("name")).collect();
    let lost = lost_in_swap(conn, name, &ours, &keep, &dep_names).await?;
    if !lost.is_empty() {
        return Err(Error::AdoptionFailed(format!(
            "{name}: rebuilding it in the migrations' shape would lose {}. Nothing was changed: drop {} (and \
             create {} again after the migration, where {} still applies), then migrate again",
            lost.join(", "),
            if lost.len() == 1 { "it" } else { "them" },
            if lost.len() == 1 { "it" } else { "them" },
            if lost.len() == 1 { "it" } else { "each" },
        )));
    }
    let grants = relation_grants(conn, name, Some(&keep)).await?;
    let comments = relation_comments(conn, name, kind(expected), Some(&keep)).await?;
    let mut swap = Vec::new();
    for dep in dependents.iter().rev() {
        let kind = if dep.get::<String, _>("kind") == "m" { "MATERIALIZED VIEW" } else { "VIEW" };
        swap.push(format!("DROP {kind} {}", ident(&dep.get::<String, _>("name"))));
    }
    swap.push(format!("ALTER {} {} RENAME TO {}", kind(found), ident(name), ident(&old)));
    swap.push(format!("ALTER {} {} RENAME TO {}", kind(expected), ident(&tmp), ident(name)));
    swap.push(format!("DROP {} {}", kind(found), ident(&old)));
    swap.extend(renames);
    swap.extend([grants, comments].into_iter().filter(|s| !s.is_empty()));
    for dep in &dependents {
        let dep_name: String = dep.get("name");
        let (materialized, definition) = match after.objects.get(&verify::relation_key(&dep_name)) {
            Some(Object::View { materialized, definition, .. }) => (*materialized, definition.clone()),
            _ => (dep.get::<String, _>("kind") == "m", dep.get::<String, _>("def")),
        };
        let kind = if materialized { "MATERIALIZED VIEW" } else { "VIEW" };
        let options: String = dep.get("options");
        let with = if options.is_empty() { String::new() } else { format!(" WITH ({options})") };
        swap.push(format!("CREATE {kind} {}{with} AS {}", ident(&dep_name), definition.trim_end_matches(';')));
        if materialized {
            swap.extend(dep.get::<Vec<String>, _>("indexes"));
        }
        let owner: String = dep.get("owner");
        if !owner.is_empty() {
            swap.push(format!("ALTER {kind} {} OWNER TO {owner}", ident(&dep_name)));
        }
        let grants = relation_grants(conn, &dep_name, None).await?;
        let comments = relation_comments(conn, &dep_name, kind, None).await?;
        swap.extend([grants, comments].into_iter().filter(|s| !s.is_empty()));
    }
    // The new relation's indexes go with it.
    let undo = vec![format!("DROP {} IF EXISTS {}", kind(expected), ident(&tmp))];
    Ok(vec![
        Step {
            what: format!("building {name} in the migrations' shape beside the old one"),
            statements: build,
            in_transaction: false,
            undo: undo.clone(),
        },
        Step {
            what: format!("swapping {name} for the rebuilt one (and recreating the views over it)"),
            statements: swap,
            in_transaction: true,
            undo,
        },
    ])
}

/// What rebuilding `name` cannot carry, each named: an index of the user's on it that none of
/// the migrations' indexes replaces (`ours`: unique, `USING ...`), a column grant or comment on a
/// column the new shape lacks (`keep`: its columns), a trigger or rule on it or on a view over it.
async fn lost_in_swap(
    conn: &mut PgConnection,
    name: &str,
    ours: &[(bool, String)],
    keep: &[String],
    dependents: &[String],
) -> Result<Vec<String>> {
    let ctx = |e: sqlx::Error| Error::db(format!("reading what rebuilding {name} would lose"), e);
    let indexes = sqlx::query(
        "SELECT c.relname::text AS name, i.indisunique AS is_unique,
                substring(pg_get_indexdef(i.indexrelid) FROM ' USING (.*)$') AS using_clause
           FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
          WHERE i.indrelid = to_regclass($1)
          ORDER BY c.relname",
    )
    .bind(ident(name))
    .fetch_all(&mut *conn)
    .await
    .map_err(ctx)?;
    let mut lost: Vec<String> = indexes
        .iter()
        .filter(|i| {
            let shape = (i.get::<bool, _>("is_unique"), i.get::<Option<String>, _>("using_clause").unwrap_or_default());
            !ours.contains(&shape)
        })
        .map(|i| format!("index {} on {name}", i.get::<String, _>("name")))
        .collect();
    let mut relations = vec![ident(name)];
    relations.extend(dependents.iter().map(|d| ident(d)));
    let others: Vec<String> = sqlx::query_scalar(
        "SELECT what FROM (
             SELECT format('grant %s (%I) on %s to %s', a.privilege_type, att.attname, c.relname,
                           CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END) AS what
               FROM pg_class AS c JOIN pg_attribute AS att ON att.attrelid = c.oid AND att.attnum > 0
                    AND NOT att.attisdropped, aclexplode(att.attacl) AS a
              WHERE c.oid = to_regclass($1) AND NOT att.attname::text = ANY ($2)
             UNION ALL
             SELECT format('comment on column %s.%I', c.relname, att.attname)
               FROM pg_description AS d JOIN pg_class AS c ON c.oid = d.objoid
               JOIN pg_attribute AS att ON att.attrelid = c.oid AND att.attnum = d.objsubid
              WHERE d.classoid = 'pg_class'::regclass AND c.oid = to_regclass($1) AND NOT att.attname::text = ANY ($2)
             UNION ALL
             SELECT format('trigger %I on %s', t.tgname, c.relname)
               FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
              WHERE NOT t.tgisinternal AND c.oid IN (SELECT to_regclass(r) FROM unnest($3::text[]) AS r)
             UNION ALL
             SELECT format('rule %I on %s', r.rulename, c.relname)
               FROM pg_rewrite AS r JOIN pg_class AS c ON c.oid = r.ev_class
              WHERE r.rulename <> '_RETURN' AND c.oid IN (SELECT to_regclass(r) FROM unnest($3::text[]) AS r)
         ) AS lost ORDER BY what",
    )
    .bind(ident(name))
    .bind(keep)
    .bind(&relations)
    .fetch_all(&mut *conn)
    .await
    .map_err(ctx)?;
    lost.extend(others);
    Ok(lost)
}

/// `GRANT ...` statements that give a relation, once rebuilt, the privileges it has now: on the
/// relation and on its columns (only those in `keep`, when given), `WITH GRANT OPTION` kept.
async fn relation_grants(conn: &mut PgConnection, name: &str, keep: Option<&[String]>) -> Result<String> {
    sqlx::query_scalar(
        "SELECT coalesce(string_agg(format('GRANT %s%s ON %I TO %s%s', a.privilege_type,
                 CASE WHEN o.attname IS NULL THEN '' ELSE format(' (%I)', o.attname) END, c.relname,
                 CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                 CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END), '; '), '')
           FROM pg_class AS c
           CROSS JOIN LATERAL (SELECT NULL::name AS attname, c.relacl AS acl
                               UNION ALL
                               SELECT att.attname, att.attacl FROM pg_attribute AS att
                                WHERE att.attrelid = c.oid AND att.attnum > 0 AND NOT att.attisdropped) AS o
           CROSS JOIN LATERAL aclexplode(o.acl) AS a
          WHERE c.oid = to_regclass($1) AND (o.attname IS NULL OR $2::text[] IS NULL OR o.attname::text = ANY ($2))",
    )
    .bind(ident(name))
    .bind(keep)
    .fetch_one(conn)
    .await
    .map_err(|e| Error::db(format!("reading the privileges on {name}"), e))
}

/// `COMMENT ON ...` statements that give a relation, once rebuilt as a `kind` (`VIEW`,
/// `MATERIALIZED VIEW`), the comments it and its columns (only those in `keep`, when given) have now.
async fn relation_comments(conn: &mut PgConnection, name: &str, kind: &str, keep: Option<&[String]>) -> Result<String> {
    sqlx::query_scalar(
        "SELECT coalesce(string_agg(CASE WHEN d.objsubid = 0 THEN format('COMMENT ON %s %I IS %L', $2::text, c.relname, d.description)
                 ELSE format('COMMENT ON COLUMN %I.%I IS %L', c.relname, att.attname, d.description) END, '; '), '')
           FROM pg_description AS d JOIN pg_class AS c ON c.oid = d.objoid
           LEFT JOIN pg_attribute AS att ON att.attrelid = c.oid AND att.attnum = d.objsubid
          WHERE d.classoid = 'pg_class'::regclass AND c.oid = to_regclass($1)
            AND (d.objsubid = 0 OR $3::text[] IS NULL OR att.attname::text = ANY ($3))",
    )
    .bind(ident(name))
    .bind(kind)
    .bind(keep)
    .fetch_one(conn)
    .await
    .map_err(|e| Error::db(format!("reading the comments on {name}"), e))
}

/// A function: `CREATE OR REPLACE` when the result type is the same; otherwise drop and create
/// in one transaction, keeping its privileges.
async fn function_steps(
    conn: &mut PgConnection,
    signature: &str,
    expected: &Object,
    found: &Object,
) -> Result<Vec<Step>> {
    let Object::Function { ddl, .. } = expected else { unreachable!("a function") };
    // PostgreSQL refuses CREATE OR REPLACE that changes the result type: compare what the
    // migration makes with what is there, and drop first when they differ.
    let same_result = matches!(
        (expected, found),
        (Object::Function { result: want, .. }, Object::Function { result: have, .. }) if want == have
    );
    let mut statements = Vec::new();
    let (fname, _) = signature.split_once('(').unwrap_or((signature, ""));
    let grants: String = sqlx::query_scalar(
        "SELECT coalesce(string_agg(format('GRANT EXECUTE ON FUNCTION %s TO %s', $2::text,
                 CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END), '; '), '')
           FROM pg_proc AS p, aclexplode(p.proacl) AS a WHERE p.oid = to_regprocedure($1) AND a.privilege_type = 'EXECUTE'",
    )
    .bind(signature)
    .bind(format!("{}({}", ident(fname), signature.split_once('(').map_or("", |(_, a)| a)))
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| Error::db(format!("reading the privileges of {signature}"), e))?;
    if !same_result {
        statements.push(format!(
            "DROP FUNCTION {}({}",
            ident(fname),
            signature.split_once('(').map_or(")", |(_, a)| a)
        ));
    }
    statements.push(ddl.to_string());
    if !same_result && !grants.is_empty() {
        statements.push(grants);
    }
    Ok(vec![Step {
        what: format!("replacing function {signature}"),
        statements,
        in_transaction: true,
        undo: Vec::new(),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_beside_fit_in_63_bytes() {
        assert_eq!(beside("job_progress", "__scm_new"), "job_progress__scm_new");
        let long = "x".repeat(70);
        assert_eq!(beside(&long, "__scm_new").len(), 63);
    }

    #[test]
    fn an_index_is_rebuilt_beside_and_swapped_in_one_transaction() {
        let steps = index_steps("idx_a", "job_objects", false, "btree (job_id, status)", false);
        assert!(!steps[0].in_transaction && steps[1].in_transaction);
        assert_eq!(
            steps[0].statements[1],
            "CREATE INDEX CONCURRENTLY \"idx_a__scm_new\" ON \"job_objects\" USING btree (job_id, status)"
        );
        assert_eq!(
            steps[1].statements,
            vec!["DROP INDEX \"idx_a\"", "ALTER INDEX \"idx_a__scm_new\" RENAME TO \"idx_a\""]
        );
        let swap_only = index_steps("idx_a", "job_objects", false, "btree (job_id, status)", true);
        assert_eq!(swap_only.len(), 1, "built beside by an earlier run: only the swap is left");
        assert_eq!(swap_only[0].statements, steps[1].statements);
    }
}
