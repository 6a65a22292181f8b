//! The refresh function's own database role (`REFRESH_ROLE`), brought to what it needs in this
//! database after every `migrate`: it exists and may log in, it may connect to this database and run
//! `refresh_job_progress()`, and it is a member of `rds_iam` exactly when it logs in with an IAM
//! token (on RDS a member of `rds_iam` cannot log in with a password).
//!
//! A convergence step rather than a migration: the role's name and its login mode are settings of
//! the deployment (two databases on one server each have their own role; a deployment may move from
//! a password to IAM), and a migration runs once, while this runs on every `migrate` and follows the
//! settings as they are now. Roles belong to the whole server, grants to one database: each stack
//! grants its own role in its own database and never touches another stack's role.

use sqlx::PgConnection;

use crate::{
    config::{Auth, DEFAULT_REFRESH_ROLE},
    error::{Error, Result},
    privileges::quote,
};

/// What the catalog says about the refresh role in the connected database.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    /// The connected database.
    pub database: String,
    /// Whether the role exists on the server.
    pub exists: bool,
    /// Whether it may log in.
    pub login: bool,
    /// `refresh_job_progress()` runs with its owner's rights (migration 004 on): it needs a caller role.
    pub function_ready: bool,
    /// The role holds EXECUTE on `refresh_job_progress()`.
    pub may_execute: bool,
    /// The role holds CONNECT on this database by a grant of its own (not only through PUBLIC).
    pub connect_granted: bool,
    /// The migrator may grant CONNECT on this database (it owns it, or holds the grant option).
    pub may_grant_connect: bool,
    /// The role `rds_iam` exists (RDS, or a test emulating it).
    pub rds_iam_exists: bool,
    /// The role is a member of `rds_iam`.
    pub rds_iam_member: bool,
    /// The schema the migrations live in (the session's, `DB_SCHEMA`).
    pub schema: String,
    /// The role may look names up in that schema (by its own grant, or PUBLIC's as in `public`).
    pub schema_usage: bool,
    /// `scanner_refresh`, when it is not the configured role, still holds EXECUTE here (what 004 granted
    /// before the role was configurable).
    pub legacy_may_execute: bool,
}

/// One statement of the convergence and why it runs (logged, and returned to the report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The SQL.
    pub sql: String,
    /// What it changes, in words.
    pub why: String,
}

/// The statements that bring `role` to what it needs here, given `state`; none when it already has it.
pub fn steps(role: &str, auth: Auth, state: &State) -> Vec<Step> {
    let mut steps = Vec::new();
    if !state.function_ready {
        return steps;
    }
    let r = quote(role);
    let mut step = |sql: String, why: String| steps.push(Step { sql, why });
    if !state.exists {
        step(format!("CREATE ROLE {r} LOGIN"), format!("created {role}, the refresh function's login"));
    } else if !state.login {
        step(format!("ALTER ROLE {r} LOGIN"), format!("{role} may log in"));
    }
    if !state.may_execute {
        step(
            format!("GRANT EXECUTE ON FUNCTION refresh_job_progress() TO {r}"),
            format!("{role} may run refresh_job_progress()"),
        );
    }
    // Calling the fold by name needs USAGE on its schema: PUBLIC has it on `public`, not on one of the
    // user's (DB_SCHEMA).
    if !state.schema_usage {
        step(
            format!("GRANT USAGE ON SCHEMA {} TO {r}", quote(&state.schema)),
            format!("{role} may call the fold in schema {}", state.schema),
        );
    }
    // PUBLIC holds CONNECT by default; the role's own grant keeps it working where PUBLIC's is revoked.
    if !state.connect_granted && state.may_grant_connect {
        step(
            format!("GRANT CONNECT ON DATABASE {} TO {r}", quote(&state.database)),
            format!("{role} may connect to {}", state.database),
        );
    }
    if state.rds_iam_exists {
        match (auth, state.rds_iam_member) {
            (Auth::Iam, false) => {
                step(format!("GRANT rds_iam TO {r}"), format!("{role} logs in with an IAM token (rds_iam)"))
            }
            (Auth::Password, true) => step(
                format!("REVOKE rds_iam FROM {r}"),
                format!("{role} logs in with a password, which RDS refuses to a member of rds_iam"),
            ),
            _ => {}
        }
    }
    // A database that moved off scanner_refresh: that role (perhaps another database's) keeps nothing here.
    if state.legacy_may_execute && role != DEFAULT_REFRESH_ROLE {
        step(
            format!("REVOKE ALL ON FUNCTION refresh_job_progress() FROM {DEFAULT_REFRESH_ROLE}"),
            format!(
                "{DEFAULT_REFRESH_ROLE} may no longer run this database's refresh (its refresh role is {role} now); \
                 once no database uses {DEFAULT_REFRESH_ROLE}: DROP ROLE {DEFAULT_REFRESH_ROLE};"
            ),
        );
    }
    steps
}

/// Reads the state, runs the steps in one transaction, and checks the result; returns what changed.
pub async fn converge(conn: &mut PgConnection, role: &str, auth: Auth) -> Result<Vec<Step>> {
    let context = || format!("bringing the refresh role {role} to what it needs");
    // Roles belong to the server: a migrate of another database may create or grant the same role at
    // the same moment (tests do, on one server). Its change then wins, and a fresh look decides again.
    let mut attempt = 0;
    let (before, steps) = loop {
        attempt += 1;
        let before = crate::db::refresh_role_state(conn, role, DEFAULT_REFRESH_ROLE).await?;
        let steps = steps(role, auth, &before);
        let sql: Vec<&str> = steps.iter().map(|s| s.sql.as_str()).collect();
        if sql.is_empty() {
            break (before, steps);
        }
        match crate::db::exec_in_transaction(conn, &sql).await {
            Ok(()) => break (before, steps),
            Err(e) if attempt < 3 && is_concurrent_change(&e) => {
                tracing::info!(
                    step = "refresh-role",
                    role,
                    "another session changed the role at the same moment; looking again"
                );
            }
            Err(e) => return Err(Error::db(context(), e)),
        }
    };
    if !before.connect_granted && !before.may_grant_connect && before.function_ready {
        tracing::warn!(step = "refresh-role", role, database = %before.database,
            "{role} connects through PUBLIC's CONNECT: this user may not grant CONNECT on the database (its owner may: GRANT CONNECT ON DATABASE {} TO {};)",
            quote(&before.database), quote(role));
    }
    if steps.is_empty() {
        return Ok(steps);
    }
    let after = crate::db::refresh_role_state(conn, role, DEFAULT_REFRESH_ROLE).await?;
    if auth == Auth::Password && after.rds_iam_member {
        // PostgreSQL 16+ revokes only the grants this user made; another grantor's stays.
        return Err(Error::Database {
            context: format!("revoking rds_iam from {role}"),
            cause: format!(
                "{role} is still a member of rds_iam (granted by another role), so on RDS it cannot log in with \
                 its password; as the master user: REVOKE rds_iam FROM {} GRANTED BY <the grantor>;",
                quote(role)
            ),
        });
    }
    for s in &steps {
        tracing::info!(step = "refresh-role", role, "{}", s.why);
    }
    Ok(steps)
}

/// duplicate_object, unique_violation, or a catalog row another session updated first.
fn is_concurrent_change(e: &sqlx::Error) -> bool {
    match crate::db::sqlstate(e).as_deref() {
        Some("42710" | "23505" | "40001") => true,
        Some("XX000") => e.to_string().contains("tuple concurrently updated"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> State {
        State {
            database: "scanner_prod".into(),
            exists: true,
            login: true,
            function_ready: true,
            may_execute: true,
            connect_granted: true,
            may_grant_connect: true,
            rds_iam_exists: true,
            rds_iam_member: true,
            legacy_may_execute: false,
            schema: "public".into(),
            schema_usage: true,
        }
    }

    #[test]
    fn a_schema_of_the_users_is_granted_usage_on() {
        let state = State { schema: "Scanner".into(), schema_usage: false, ..ready() };
        assert_eq!(sql(steps("r", Auth::Iam, &state)), ["GRANT USAGE ON SCHEMA \"Scanner\" TO r"]);
    }

    fn sql(steps: Vec<Step>) -> Vec<String> {
        steps.into_iter().map(|s| s.sql).collect()
    }

    #[test]
    fn a_role_that_has_what_it_needs_gets_nothing() {
        assert!(steps("prod_refresh", Auth::Iam, &ready()).is_empty());
        let no_iam = State { rds_iam_member: false, ..ready() };
        assert!(steps("prod_refresh", Auth::Password, &no_iam).is_empty());
        assert!(
            steps("prod_refresh", Auth::Iam, &State { rds_iam_exists: false, rds_iam_member: false, ..ready() })
                .is_empty()
        );
    }

    #[test]
    fn a_new_role_is_created_and_granted_in_this_database_only() {
        let new = State {
            exists: false,
            login: false,
            may_execute: false,
            connect_granted: false,
            rds_iam_member: false,
            ..ready()
        };
        assert_eq!(
            sql(steps("prod_refresh", Auth::Iam, &new)),
            [
                "CREATE ROLE prod_refresh LOGIN",
                "GRANT EXECUTE ON FUNCTION refresh_job_progress() TO prod_refresh",
                "GRANT CONNECT ON DATABASE scanner_prod TO prod_refresh",
                "GRANT rds_iam TO prod_refresh",
            ]
        );
        // Before 004 the function runs as its caller: no role yet.
        assert!(steps("prod_refresh", Auth::Iam, &State { function_ready: false, ..new }).is_empty());
    }

    #[test]
    fn password_auth_takes_rds_iam_away_and_iam_gives_it() {
        assert_eq!(sql(steps("r", Auth::Password, &ready())), ["REVOKE rds_iam FROM r"]);
        assert_eq!(sql(steps("r", Auth::Iam, &State { rds_iam_member: false, ..ready() })), ["GRANT rds_iam TO r"]);
    }

    #[test]
    fn moving_off_scanner_refresh_takes_its_execute_here_and_says_how_to_drop_it() {
        let moved = State { legacy_may_execute: true, ..ready() };
        let s = steps("prod_refresh", Auth::Iam, &moved);
        assert_eq!(sql(s.clone()), ["REVOKE ALL ON FUNCTION refresh_job_progress() FROM scanner_refresh"]);
        assert!(s[0].why.contains("DROP ROLE scanner_refresh;"), "{}", s[0].why);
        assert!(steps("scanner_refresh", Auth::Iam, &moved).is_empty(), "its own role is never revoked");
    }

    #[test]
    fn connect_is_granted_only_when_this_user_may() {
        let theirs = State { connect_granted: false, may_grant_connect: false, ..ready() };
        assert!(steps("r", Auth::Iam, &theirs).is_empty());
        let quoted = State { database: "Scanner-Prod".into(), connect_granted: false, ..ready() };
        assert_eq!(sql(steps("r", Auth::Iam, &quoted)), ["GRANT CONNECT ON DATABASE \"Scanner-Prod\" TO r"]);
    }
}
