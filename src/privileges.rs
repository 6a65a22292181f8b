//! What the migrator's own database user must be allowed to do, checked before anything is
//! applied, so that a user without a privilege meets one clear `InsufficientPrivilege` naming
//! the privilege, what needs it and the one-line fix, never a raw 42501 half-way through a run.
//!
//! Two sources, both derived rather than kept by hand per migration:
//! - the catalog (`db::role_facts`): CREATE on the database (verification's scratch schema) and
//!   on the schema, and what setting the refresh role's password needs;
//! - the migrations themselves: the pending ones are replayed in the rolled-back scratch schema
//!   first (as verification does), and a statement PostgreSQL refuses there with SQLSTATE 42501
//!   is reported through [`denied`] before the real schema is touched.

use crate::{
    config::Auth,
    error::{Error, Result},
};

/// What the catalog says about the migrator's user, read in one query (`db::role_facts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// `current_user`.
    pub user: String,
    /// The database connected to.
    pub database: String,
    /// The schema the migrations create their objects in.
    pub schema: String,
    /// `rolsuper`.
    pub superuser: bool,
    /// `rolcreaterole`.
    pub createrole: bool,
    /// CREATE on the database: verification derives the expected schema in a scratch schema.
    pub create_on_database: bool,
    /// CREATE on the schema the migrations create their objects in.
    pub create_on_schema: bool,
    /// `server_version_num`.
    pub server_version_num: i32,
    /// The refresh role (`REFRESH_ROLE`).
    pub refresh_role: String,
    /// Whether the refresh role exists already.
    pub refresh_role_exists: bool,
    /// Whether the role `rds_iam` exists (RDS).
    pub rds_iam_exists: bool,
    /// Whether the refresh role is a member of `rds_iam`.
    pub refresh_role_in_rds_iam: bool,
    /// Whether the user holds ADMIN OPTION on `rds_iam` (RDS: through `rds_superuser`).
    pub rds_iam_admin: bool,
    /// Whether the user holds ADMIN OPTION on the refresh role (what PostgreSQL 16+ requires, with
    /// CREATEROLE, to change another role's password).
    pub refresh_role_admin: bool,
}

/// Before a `migrate` with pending migrations: what the catalog alone shows is missing.
pub fn before_migrate(f: &Facts) -> Result<()> {
    if f.superuser {
        return Ok(());
    }
    if !f.create_on_database {
        return Err(Error::InsufficientPrivilege {
            user: f.user.clone(),
            missing: format!("CREATE on database {}", f.database),
            needed_for: "verification, which derives what the migrations produce in a scratch schema of its own \
                         (created and dropped inside one rolled-back transaction)"
                .into(),
            fix: format!("GRANT CREATE ON DATABASE {} TO {};", quote(&f.database), quote(&f.user)),
        });
    }
    if !f.create_on_schema {
        return Err(Error::InsufficientPrivilege {
            user: f.user.clone(),
            missing: format!("CREATE on schema {}", f.schema),
            needed_for: "the migrations, which create the scanner's tables, views and functions there".into(),
            fix: format!(
                "GRANT CREATE ON SCHEMA {} TO {}; (or ALTER SCHEMA {} OWNER TO {};)",
                quote(&f.schema),
                quote(&f.user),
                quote(&f.schema),
                quote(&f.user)
            ),
        });
    }
    Ok(())
}

/// Before a `migrate`: what bringing the refresh role to what it needs afterwards takes (`refresh_role`):
/// creating it, granting or revoking `rds_iam` as `auth` says, and with `sets_password` setting its
/// password. Refused before anything is applied, so a migrate never stops half-way for want of it.
pub fn before_converging_refresh_role(f: &Facts, auth: Auth, sets_password: bool) -> Result<()> {
    if f.superuser {
        return Ok(());
    }
    let role = f.refresh_role.as_str();
    let user = quote(&f.user);
    if !f.refresh_role_exists && !f.createrole {
        return Err(Error::InsufficientPrivilege {
            user: f.user.clone(),
            missing: "the CREATEROLE attribute".into(),
            needed_for: format!("creating {role} (REFRESH_ROLE), the refresh function's own login, after migrating"),
            fix: format!(
                "ALTER ROLE {user} CREATEROLE; (as the master user), or have a user with CREATEROLE create the role \
                 once by hand (CREATE ROLE {} LOGIN;)",
                quote(role)
            ),
        });
    }
    // Before PostgreSQL 16 CREATEROLE may grant any role that is not a superuser; from 16 on it takes ADMIN OPTION.
    let may_grant_rds_iam = f.rds_iam_admin || (f.createrole && f.server_version_num < 160_000);
    let change = match (auth, f.refresh_role_in_rds_iam) {
        (Auth::Iam, false) => Some(("GRANT", "TO", "logs in with an IAM token (IAM database authentication)")),
        (Auth::Password, true) => {
            Some(("REVOKE", "FROM", "logs in with a password, which RDS refuses to a member of rds_iam"))
        }
        _ => None,
    };
    if let (true, false, Some((verb, to, why))) = (f.rds_iam_exists, may_grant_rds_iam, change) {
        return Err(Error::InsufficientPrivilege {
            user: f.user.clone(),
            missing: "ADMIN OPTION on the role rds_iam".into(),
            needed_for: format!("{verb} rds_iam {to} {role} after migrating: it {why}"),
            fix: format!(
                "GRANT rds_iam TO {user} WITH ADMIN OPTION; (as the master user), or have the master user make the \
                 change once by hand ({verb} rds_iam {to} {};)",
                quote(role)
            ),
        });
    }
    if sets_password { before_setting_refresh_password(f) } else { Ok(()) }
}

/// Before a `migrate` that will give the refresh role its password (`REFRESH_SECRET_ARN`): what
/// `ALTER ROLE <role> PASSWORD` needs. PostgreSQL 16 and later also require ADMIN OPTION
/// on the role, which its creator holds (release notes of 16, "CREATEROLE").
pub fn before_setting_refresh_password(f: &Facts) -> Result<()> {
    if f.superuser {
        return Ok(());
    }
    let role = quote(&f.refresh_role);
    let needs_admin = f.server_version_num >= 160_000 && f.refresh_role_exists && !f.refresh_role_admin;
    if f.createrole && !needs_admin {
        return Ok(());
    }
    let (missing, fix) = if !f.createrole {
        (
            "the CREATEROLE attribute".to_string(),
            format!(
                "ALTER ROLE {user} CREATEROLE; (as the master user), or set {role}'s password yourself and \
                 leave REFRESH_SECRET_ARN unset (refresh_db_auth = \"iam\" needs no password at all)",
                user = quote(&f.user)
            ),
        )
    } else {
        (
            format!("ADMIN OPTION on the role {role} (PostgreSQL 16+: CREATEROLE alone no longer suffices)"),
            format!("GRANT {role} TO {} WITH ADMIN OPTION; (as the role's creator or a superuser)", quote(&f.user)),
        )
    };
    Err(Error::InsufficientPrivilege {
        user: f.user.clone(),
        missing,
        needed_for: format!(
            "giving {role} the password of REFRESH_SECRET_ARN after migrating (the refresh function's own login)"
        ),
        fix,
    })
}

/// A statement of `migration` (at `line`) refused with SQLSTATE 42501 while the pending migrations
/// were replayed in the scratch schema: the privilege PostgreSQL names, and the fix for the
/// refusals a migration meets in practice (creating a role, granting one, altering what another
/// role owns).
pub fn denied(user: &str, migration: &str, migration_sql: &str, line: usize, message: &str) -> Error {
    let lower = message.to_ascii_lowercase();
    let roles = roles_created(migration_sql);
    let (missing, fix) = if lower.contains("permission denied to create role") {
        let by_hand = if roles.is_empty() {
            String::new()
        } else {
            let creates: Vec<String> = roles.iter().map(|r| format!("CREATE ROLE {r} LOGIN;")).collect();
            format!(", or have a user with CREATEROLE create the role once by hand ({})", creates.join(" "))
        };
        (
            "the CREATEROLE attribute".to_string(),
            format!("ALTER ROLE {} CREATEROLE; (as the master user){by_hand}", quote(user)),
        )
    } else if let Some(role) = between(message, "must have admin option on role \"", "\"")
        // PostgreSQL 16+ words it so.
        .or_else(|| between(message, "permission denied to grant role \"", "\""))
    {
        let by_hand: Vec<String> =
            grants_of(migration_sql, role).iter().map(|to| format!("GRANT {} TO {to};", quote(role))).collect();
        let by_hand = if by_hand.is_empty() {
            String::new()
        } else {
            format!(", or have the master user make the grant once by hand ({})", by_hand.join(" "))
        };
        (
            format!("ADMIN OPTION on the role {role}"),
            format!("GRANT {} TO {} WITH ADMIN OPTION; (as the master user){by_hand}", quote(role), quote(user)),
        )
    } else if let Some(object) = message.strip_prefix("must be owner of ") {
        (
            format!("ownership of the {object}"),
            format!(
                "run the migrator as the {object}'s owner, or make {user} its owner (ALTER … OWNER TO {};)",
                quote(user)
            ),
        )
    } else {
        (
            "a privilege PostgreSQL names in the message".to_string(),
            format!("grant it to {}, or run the migrator as a role that has it (the RDS master user)", quote(user)),
        )
    };
    Error::InsufficientPrivilege {
        user: user.to_string(),
        missing,
        needed_for: format!("migration {migration} (line {line}: {message})"),
        fix,
    }
}

/// The roles a migration's text creates (`CREATE ROLE name`, also inside `DO` bodies), for the
/// "create it once by hand" fix.
pub fn roles_created(sql: &str) -> Vec<String> {
    let lower = sql.to_ascii_lowercase();
    let mut roles: Vec<String> = Vec::new();
    let mut rest = lower.as_str();
    while let Some(i) = rest.find("create role") {
        let before_ok = i == 0 || !rest[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_');
        rest = &rest[i + "create role".len()..];
        let name: String = rest.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let after_ok = rest.starts_with(char::is_whitespace);
        if before_ok && after_ok && !name.is_empty() && name != "if" && !roles.contains(&name) {
            roles.push(name);
        }
    }
    roles
}

/// The grantees of `GRANT role TO grantee` in a migration's text, for the "grant it once by hand" fix.
fn grants_of(sql: &str, role: &str) -> Vec<String> {
    let lower = sql.to_ascii_lowercase();
    let pattern = format!("grant {} to ", role.to_ascii_lowercase());
    let mut grantees: Vec<String> = Vec::new();
    for (i, _) in lower.match_indices(&pattern) {
        let name: String =
            lower[i + pattern.len()..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if !name.is_empty() && !grantees.contains(&name) {
            grantees.push(name);
        }
    }
    grantees
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// An identifier as SQL needs it: bare when it is lower-case letters, digits and `_`.
pub fn quote(ident: &str) -> String {
    let plain = ident.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && ident.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain { ident.to_string() } else { format!("\"{}\"", ident.replace('"', "\"\"")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            user: "app_owner".into(),
            database: "scanner".into(),
            schema: "public".into(),
            superuser: false,
            createrole: true,
            create_on_database: true,
            create_on_schema: true,
            server_version_num: 160_004,
            refresh_role: "scanner_refresh".into(),
            refresh_role_exists: false,
            rds_iam_exists: true,
            refresh_role_in_rds_iam: false,
            rds_iam_admin: true,
            refresh_role_admin: false,
        }
    }

    fn message(e: Error) -> (String, String) {
        (e.kind().to_string(), e.to_string())
    }

    #[test]
    fn an_rds_shaped_master_passes_and_a_superuser_always_does() {
        assert!(before_migrate(&facts()).is_ok());
        assert!(before_setting_refresh_password(&facts()).is_ok());
        let nothing =
            Facts { createrole: false, create_on_database: false, create_on_schema: false, superuser: true, ..facts() };
        assert!(before_migrate(&nothing).is_ok());
        assert!(before_setting_refresh_password(&nothing).is_ok());
    }

    #[test]
    fn missing_create_privileges_are_named_with_their_grant() {
        let (kind, msg) = message(before_migrate(&Facts { create_on_database: false, ..facts() }).unwrap_err());
        assert_eq!(kind, "InsufficientPrivilege");
        assert!(
            msg.contains("CREATE on database scanner")
                && msg.contains("GRANT CREATE ON DATABASE scanner TO app_owner;"),
            "{msg}"
        );
        let (_, msg) = message(
            before_migrate(&Facts { create_on_schema: false, schema: "Scanner".into(), ..facts() }).unwrap_err(),
        );
        assert!(msg.contains("GRANT CREATE ON SCHEMA \"Scanner\" TO app_owner;"), "{msg}");
    }

    #[test]
    fn the_refresh_password_needs_createrole_and_on_16_admin_on_an_existing_role() {
        let (_, msg) = message(before_setting_refresh_password(&Facts { createrole: false, ..facts() }).unwrap_err());
        assert!(msg.contains("CREATEROLE") && msg.contains("ALTER ROLE app_owner CREATEROLE;"), "{msg}");
        // A role someone else created: 16+ needs ADMIN OPTION, 15 does not.
        let theirs = Facts { refresh_role_exists: true, ..facts() };
        let (_, msg) = message(before_setting_refresh_password(&theirs).unwrap_err());
        assert!(msg.contains("GRANT scanner_refresh TO app_owner WITH ADMIN OPTION;"), "{msg}");
        assert!(before_setting_refresh_password(&Facts { server_version_num: 150_008, ..theirs.clone() }).is_ok());
        assert!(before_setting_refresh_password(&Facts { refresh_role_admin: true, ..theirs }).is_ok());
    }

    #[test]
    fn converging_the_refresh_role_names_what_is_missing_and_the_change_to_make_by_hand() {
        let f = Facts { refresh_role: "prod_refresh".into(), ..facts() };
        assert!(before_converging_refresh_role(&f, Auth::Iam, false).is_ok());
        let (kind, msg) = message(
            before_converging_refresh_role(&Facts { createrole: false, ..f.clone() }, Auth::Iam, false).unwrap_err(),
        );
        assert_eq!(kind, "InsufficientPrivilege");
        assert!(msg.contains("creating prod_refresh") && msg.contains("CREATE ROLE prod_refresh LOGIN;"), "{msg}");
        // A role made by hand: then only rds_iam matters, and only where it must change.
        let by_hand = Facts { createrole: false, refresh_role_exists: true, rds_iam_admin: false, ..f.clone() };
        let (_, msg) = message(before_converging_refresh_role(&by_hand, Auth::Iam, false).unwrap_err());
        assert!(
            msg.contains("ADMIN OPTION on the role rds_iam") && msg.contains("(GRANT rds_iam TO prod_refresh;)"),
            "{msg}"
        );
        assert!(before_converging_refresh_role(&by_hand, Auth::Password, false).is_ok());
        let member = Facts { refresh_role_in_rds_iam: true, ..by_hand.clone() };
        let (_, msg) = message(before_converging_refresh_role(&member, Auth::Password, false).unwrap_err());
        assert!(msg.contains("(REVOKE rds_iam FROM prod_refresh;)") && msg.contains("password"), "{msg}");
        assert!(before_converging_refresh_role(&Facts { rds_iam_exists: false, ..by_hand }, Auth::Iam, false).is_ok());
    }

    #[test]
    fn a_refused_create_role_names_createrole_and_the_role_to_create_by_hand() {
        let sql = "DO $$ BEGIN IF NOT EXISTS (SELECT 1) THEN\n  CREATE ROLE scanner_refresh LOGIN;\nEND IF; END $$;";
        let (kind, msg) = message(denied("app_owner", "004_refresh_role", sql, 10, "permission denied to create role"));
        assert_eq!(kind, "InsufficientPrivilege");
        assert!(msg.contains("ALTER ROLE app_owner CREATEROLE;"), "{msg}");
        assert!(msg.contains("CREATE ROLE scanner_refresh LOGIN;"), "{msg}");
        assert!(msg.contains("004_refresh_role (line 10"), "{msg}");
    }

    #[test]
    fn other_refusals_name_what_postgresql_names() {
        let sql =
            "IF NOT pg_has_role('scanner_refresh', 'rds_iam', 'MEMBER') THEN GRANT rds_iam TO scanner_refresh; END IF;";
        let (_, msg) = message(denied("u", "009_x", sql, 3, "must have admin option on role \"rds_iam\""));
        assert!(msg.contains("GRANT rds_iam TO u WITH ADMIN OPTION;"), "{msg}");
        assert!(msg.contains("by hand (GRANT rds_iam TO scanner_refresh;)"), "{msg}");
        let (_, sixteen) = message(denied("u", "009_x", sql, 3, "permission denied to grant role \"rds_iam\""));
        assert_eq!(sixteen, msg.replace("must have admin option on role", "permission denied to grant role"));
        let (_, msg) = message(denied("u", "009_x", "", 3, "must be owner of table jobs"));
        assert!(msg.contains("ownership of the table jobs"), "{msg}");
        let (_, msg) = message(denied("u", "009_x", "", 3, "permission denied for schema s"));
        assert!(msg.contains("permission denied for schema s"), "{msg}");
    }

    #[test]
    fn roles_created_are_found_in_do_bodies_and_not_in_other_words() {
        assert_eq!(roles_created("do $$ begin CREATE ROLE a LOGIN; create role b; end $$"), ["a", "b"]);
        assert!(roles_created("CREATE ROLEX y; precreate role z").is_empty());
    }
}
