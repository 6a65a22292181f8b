//! Database credentials and endpoint: the Secrets Manager secret, the RDS API, IAM tokens.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;

use crate::{
    config::{Auth, SecretSettings},
    deadline::Deadline,
    error::{Error, Result},
};

/// The AWS API actions this binary can call; the Terraform policies grant these (and the
/// infrastructure ones) and nothing else.
pub const AWS_ACTIONS: &[&str] = &[
    "secretsmanager:GetSecretValue",
    "rds:DescribeDBInstances",
    "rds:DescribeDBClusters",
    "rds:CreateDBSnapshot",
    "rds:CreateDBClusterSnapshot",
    "rds:DescribeDBSnapshots",
    "rds:DescribeDBClusterSnapshots",
    "rds:AddTagsToResource",
    "rds-db:connect",
    // The migrate function's continuation (src/continuation.rs); creating or updating a schedule
    // passes the scheduler role to the Scheduler.
    "scheduler:CreateSchedule",
    "scheduler:UpdateSchedule",
    "scheduler:DeleteSchedule",
    "iam:PassRole",
];

/// The AWS clients, built once per process (in Lambda: at cold start).
#[derive(Debug, Clone)]
pub struct Aws {
    /// The shared SDK configuration (region, credentials, endpoint, timeouts).
    pub sdk: aws_config::SdkConfig,
    /// Secrets Manager.
    pub secrets: aws_sdk_secretsmanager::Client,
    /// RDS control plane.
    pub rds: aws_sdk_rds::Client,
    /// EventBridge Scheduler: the migrate function's continuation (src/continuation.rs).
    pub scheduler: aws_sdk_scheduler::Client,
}

impl Aws {
    /// Loads the default configuration; `AWS_ENDPOINT_URL` points it at a local server in tests.
    /// Every call is bounded so an unreachable endpoint fails in seconds, not at the Lambda timeout.
    pub async fn load() -> Self {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(Duration::from_secs(5))
            .operation_timeout(Duration::from_secs(12))
            .build();
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(timeouts)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
            .load()
            .await;
        Aws {
            secrets: aws_sdk_secretsmanager::Client::new(&sdk),
            rds: aws_sdk_rds::Client::new(&sdk),
            scheduler: aws_sdk_scheduler::Client::new(&sdk),
            sdk,
        }
    }
}

/// The fields we use from the secret. The password is never printed.
#[derive(Debug, Clone)]
pub struct DbSecret {
    /// Database user.
    pub username: String,
    /// Database password (RDS rotates it).
    pub password: SecretString,
    /// Host, in the rotation-secret shape.
    pub host: Option<String>,
    /// Port, number or string in the rotation-secret shape.
    pub port: Option<u16>,
    /// Database name, in the rotation-secret shape.
    pub dbname: Option<String>,
}

/// Reads the RDS-managed (`username`, `password`) or rotation (`engine`, `host`, `port`,
/// `dbname`, `username`, `password`) secret. Errors name the key, never a value.
pub fn parse_secret(secret_id: &str, text: &str) -> Result<DbSecret> {
    let bad = |problem: String| Error::SecretFormat { secret: secret_id.to_string(), problem };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        bad(format!(
            "is not JSON (at line {}, column {}); expected an object with username and password",
            e.line(),
            e.column()
        ))
    })?;
    let obj =
        value.as_object().ok_or_else(|| bad("is not a JSON object; expected one with username and password".into()))?;
    let string = |key: &str, required: bool| -> Result<Option<String>> {
        match obj.get(key) {
            None | Some(serde_json::Value::Null) if !required => Ok(None),
            None | Some(serde_json::Value::Null) => Err(bad(format!("has no `{key}` key"))),
            Some(serde_json::Value::String(s)) if s.is_empty() && required => Err(bad(format!("`{key}` is empty"))),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(format!("`{key}` is not a string"))),
        }
    };
    let username = string("username", true)?.unwrap_or_default();
    let password = SecretString::from(string("password", true)?.unwrap_or_default());
    let port = match obj.get("port") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => Some(
            n.as_u64().and_then(|p| u16::try_from(p).ok()).ok_or_else(|| bad("`port` is not a port number".into()))?,
        ),
        Some(serde_json::Value::String(s)) => {
            Some(s.trim().parse().map_err(|_| bad("`port` is not a port number".into()))?)
        }
        Some(_) => return Err(bad("`port` is not a number or a string".into())),
    };
    if let Some(engine) = string("engine", false)?
        && !engine.starts_with("postgres")
        && engine != "aurora-postgresql"
    {
        return Err(bad(format!("`engine` is {engine}, not postgres")));
    }
    Ok(DbSecret { username, password, host: string("host", false)?, port, dbname: string("dbname", false)? })
}

/// Fetches and parses the secret (on every invocation: RDS rotates it).
pub async fn fetch_secret(aws: &Aws, secret_id: &str, deadline: Deadline) -> Result<DbSecret> {
    let unavailable = |cause: String| Error::SecretUnavailable { secret: secret_id.to_string(), cause };
    let out = deadline
        .within(None, aws.secrets.get_secret_value().secret_id(secret_id).send())
        .await
        .map_err(|cut| unavailable(format!("Secrets Manager gave no answer {cut}")))?
        .map_err(|e| unavailable(crate::error::sdk_cause(&e)))?;
    match out.secret_string() {
        Some(text) => parse_secret(secret_id, text),
        None if out.secret_binary().is_some() => Err(Error::SecretFormat {
            secret: secret_id.to_string(),
            problem: "is a binary secret; expected a JSON SecretString with username and password".into(),
        }),
        None => Err(Error::SecretFormat { secret: secret_id.to_string(), problem: "has no SecretString".into() }),
    }
}

/// Endpoint from the RDS API: (host, port, database name).
async fn describe_endpoint(aws: &Aws, s: &SecretSettings, deadline: Deadline) -> Result<(String, u16, Option<String>)> {
    let rds_err = |what: &str, cause: String| Error::RdsApi(format!("{what}: {cause}"));
    let no_answer = |what: &str, cut| Error::RdsApi(format!("{what}: no answer {cut}"));
    if let Some(id) = &s.instance_id {
        let what = format!("DescribeDBInstances {id}");
        let out = deadline
            .within(None, aws.rds.describe_db_instances().db_instance_identifier(id).send())
            .await
            .map_err(|cut| no_answer(&what, cut))?
            .map_err(|e| rds_err(&what, crate::error::sdk_cause(&e)))?;
        let db = out.db_instances().first().ok_or_else(|| Error::RdsApi(format!("DB instance {id} not found")))?;
        let ep = db.endpoint().ok_or_else(|| {
            Error::RdsApi(format!(
                "DB instance {id} has no endpoint yet (status {})",
                db.db_instance_status().unwrap_or("unknown")
            ))
        })?;
        let host = ep.address().ok_or_else(|| Error::RdsApi(format!("DB instance {id} has no endpoint address")))?;
        let port = ep.port().and_then(|p| u16::try_from(p).ok()).unwrap_or(5432);
        Ok((host.to_string(), port, db.db_name().map(str::to_string)))
    } else if let Some(id) = &s.cluster_id {
        let what = format!("DescribeDBClusters {id}");
        let out = deadline
            .within(None, aws.rds.describe_db_clusters().db_cluster_identifier(id).send())
            .await
            .map_err(|cut| no_answer(&what, cut))?
            .map_err(|e| rds_err(&what, crate::error::sdk_cause(&e)))?;
        let c = out.db_clusters().first().ok_or_else(|| Error::RdsApi(format!("DB cluster {id} not found")))?;
        let host = c.endpoint().ok_or_else(|| Error::RdsApi(format!("DB cluster {id} has no writer endpoint")))?;
        let port = c.port().and_then(|p| u16::try_from(p).ok()).unwrap_or(5432);
        Ok((host.to_string(), port, c.database_name().map(str::to_string)))
    } else {
        Err(Error::Config {
            var: "DB_HOST".into(),
            problem: "the secret has no host; set DB_HOST, DB_INSTANCE_IDENTIFIER or DB_CLUSTER_IDENTIFIER".into(),
        })
    }
}

/// Builds the connection options: overrides, then the secret, then the RDS API; TLS; password
/// or IAM token. Reads the secret afresh every time it is called. In IAM mode with `DB_USER`
/// and no `DB_SECRET_ARN`, no secret is read at all.
pub async fn resolve(
    s: &SecretSettings,
    aws: &Aws,
    application_name: &str,
    deadline: Deadline,
) -> Result<PgConnectOptions> {
    let secret = match &s.secret_id {
        Some(id) => Some(fetch_secret(aws, id, deadline).await?),
        None => None,
    };
    let from_secret = |f: fn(&DbSecret) -> Option<String>| secret.as_ref().and_then(f);
    let mut host = s.host.clone().or_else(|| from_secret(|x| x.host.clone()));
    let mut port = s.port.or(secret.as_ref().and_then(|x| x.port));
    let mut dbname = s.dbname.clone().or_else(|| from_secret(|x| x.dbname.clone()));
    // Ask the RDS API only for what the overrides and the secret left open (and always when
    // there is no host: then describe_endpoint explains which settings would give one).
    let incomplete = host.is_none() || port.is_none() || dbname.is_none();
    if incomplete && (host.is_none() || s.instance_id.is_some() || s.cluster_id.is_some()) {
        let (h, p, d) = describe_endpoint(aws, s, deadline).await?;
        host = host.or(Some(h));
        port = port.or(Some(p));
        dbname = dbname.or(d);
    }
    let host = host.unwrap_or_default();
    let port = port.unwrap_or(5432);
    let dbname = dbname.unwrap_or_else(|| "postgres".into());
    // In IAM mode the user is configuration (DB_USER); the secret's is the fallback.
    let user = match (s.auth, &s.user, &secret) {
        (Auth::Iam, Some(user), _) => user.clone(),
        (_, _, Some(secret)) => secret.username.clone(),
        (_, Some(user), None) => user.clone(),
        (_, None, None) => {
            return Err(Error::Config {
                var: "DB_USER".into(),
                problem: "not set and no secret to take it from".into(),
            });
        }
    };
    let password = match (s.auth, &secret) {
        (Auth::Password, Some(secret)) => secret.password.clone(),
        (Auth::Password, None) => {
            return Err(Error::Config {
                var: "DB_SECRET_ARN".into(),
                problem: "not set: password authentication needs the secret".into(),
            });
        }
        (Auth::Iam, _) => iam_token(aws, &host, port, &user, deadline).await?,
    };
    let opts = PgConnectOptions::new_without_pgpass()
        .host(&host)
        .port(port)
        .database(&dbname)
        .username(&user)
        .password(password.expose_secret())
        .application_name(application_name);
    Ok(s.tls.apply(opts))
}

/// A 15-minute IAM database authentication token for `user`, signed with the function's role.
async fn iam_token(aws: &Aws, host: &str, port: u16, user: &str, deadline: Deadline) -> Result<SecretString> {
    let config = aws_sdk_rds::auth_token::Config::builder()
        .hostname(host)
        .port(u64::from(port))
        .username(user)
        .build()
        .map_err(|e| Error::RdsApi(format!("IAM auth token config: {e}")))?;
    // Signing is local, but the role's credentials may have to be fetched first.
    let token = deadline
        .within(None, aws_sdk_rds::auth_token::AuthTokenGenerator::new(config).auth_token(&aws.sdk))
        .await
        .map_err(|cut| Error::RdsApi(format!("generating the IAM auth token: the credentials gave no answer {cut}")))?
        .map_err(|e| Error::RdsApi(format!("generating the IAM auth token: {e}")))?;
    Ok(SecretString::from(token.as_str().to_string()))
}

/// PostgreSQL's SCRAM-SHA-256 verifier of `password` (RFC 5802/7677, as `CREATE ROLE ... PASSWORD`
/// stores it): `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`. Sent instead of the
/// password, so the plaintext never reaches the server or its statement log.
pub fn scram_sha256_verifier(password: &str, salt: &[u8], iterations: u32) -> String {
    use base64::prelude::{BASE64_STANDARD, Engine as _};
    use hmac::{KeyInit, Mac};
    use sha2::Digest;
    type HmacSha256 = hmac::Hmac<sha2::Sha256>;
    let hmac = |key: &[u8], data: &[&[u8]]| {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
        for d in data {
            mac.update(d);
        }
        mac.finalize().into_bytes()
    };
    // PostgreSQL normalises with SASLprep when it can, and uses the bytes as they are otherwise.
    let prepared = stringprep::saslprep(password).map(|p| p.into_owned()).unwrap_or_else(|_| password.to_string());
    // PBKDF2-HMAC-SHA-256 with one output block (Hi() in RFC 5802).
    let mut u = hmac(prepared.as_bytes(), &[salt, &1u32.to_be_bytes()]);
    let mut salted = u;
    for _ in 1..iterations {
        u = hmac(prepared.as_bytes(), &[&u]);
        for (s, x) in salted.iter_mut().zip(u.iter()) {
            *s ^= x;
        }
    }
    let client_key = hmac(&salted, &[b"Client Key"]);
    let stored_key = sha2::Sha256::digest(client_key);
    let server_key = hmac(&salted, &[b"Server Key"]);
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        BASE64_STANDARD.encode(salt),
        BASE64_STANDARD.encode(stored_key),
        BASE64_STANDARD.encode(server_key)
    )
}

/// After a migrate, without IAM database authentication: gives the refresh role `role` the password of
/// the secret `secret_id` (`REFRESH_SECRET_ARN`), as a SCRAM verifier. Refuses a secret for any
/// other user, so the migrator can never be pointed at another role's password. Returns whether
/// the role existed (it does once migration 004 is applied and the role converged).
pub async fn set_refresh_password(
    conn: &mut sqlx::PgConnection,
    aws: &Aws,
    secret_id: &str,
    role: &str,
    deadline: Deadline,
) -> Result<bool> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(role)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| Error::db(format!("looking up the role {role}"), e))?;
    if !exists {
        tracing::info!(step = "refresh-role", "no {role} role yet (migration 004); its password waits for it");
        return Ok(false);
    }
    let secret = fetch_secret(aws, secret_id, deadline).await?;
    if secret.username != role {
        return Err(Error::SecretFormat {
            secret: secret_id.to_string(),
            problem: format!(
                "`username` is `{}`; REFRESH_SECRET_ARN must hold the credentials of the {role} role (REFRESH_ROLE)",
                secret.username
            ),
        });
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| Error::Config {
        var: "REFRESH_SECRET_ARN".into(),
        problem: format!("no random salt for the password verifier: {e}"),
    })?;
    let verifier = scram_sha256_verifier(secret.password.expose_secret(), &salt, 4096);
    // A verifier holds only base64, digits, `$` and `:`; quoted all the same.
    let sql = format!("ALTER ROLE {} PASSWORD '{}'", crate::privileges::quote(role), verifier.replace('\'', "''"));
    crate::db::exec(conn, &sql)
        .await
        .map_err(|e| Error::db(format!("setting the password of {role} from {secret_id}"), e))?;
    tracing::info!(step = "refresh-role", secret = secret_id, "{role}'s password set from the secret");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_secret_shapes_are_read() {
        let managed = parse_secret("s", r#"{"username":"admin","password":"pw"}"#).unwrap();
        assert_eq!(managed.username, "admin");
        assert_eq!(managed.password.expose_secret(), "pw");
        assert!(managed.host.is_none() && managed.port.is_none());
        let rotation = parse_secret(
            "s",
            r#"{"engine":"postgres","host":"h","port":"6432","dbname":"d","username":"u","password":"p"}"#,
        )
        .unwrap();
        assert_eq!(
            (rotation.host.as_deref(), rotation.port, rotation.dbname.as_deref()),
            (Some("h"), Some(6432), Some("d"))
        );
        assert_eq!(parse_secret("s", r#"{"username":"u","password":"p","port":5433}"#).unwrap().port, Some(5433));
    }

    #[test]
    fn malformed_secrets_name_the_key_not_the_value() {
        let cases = [
            (r#"{"username":"u"}"#, "`password`"),
            (r#"{"password":"topsecret"}"#, "`username`"),
            (r#"{"username":"u","password":"topsecret","port":"eighty"}"#, "`port`"),
            (r#"{"username":"u","password":"topsecret","port":70000}"#, "`port`"),
            (r#"{"username":"u","password":"topsecret","engine":"mysql"}"#, "`engine`"),
            (r#"["topsecret"]"#, "not a JSON object"),
            ("topsecret", "not JSON"),
        ];
        for (text, expected) in cases {
            let err = parse_secret("arn:secret", text).unwrap_err();
            let msg = err.to_string();
            assert_eq!(err.kind(), "SecretFormat");
            assert!(msg.contains(expected) && msg.contains("arn:secret"), "{msg}");
            assert!(!msg.contains("topsecret"), "secret value leaked: {msg}");
        }
    }

    #[test]
    fn the_scram_verifier_is_postgresqls() {
        // RFC 7677's test vector: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096.
        use base64::prelude::{BASE64_STANDARD, Engine as _};
        let salt = BASE64_STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = scram_sha256_verifier("pencil", &salt, 4096);
        assert_eq!(
            v,
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:\
             wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
        assert!(!v.contains("pencil"));
    }

    #[test]
    fn debug_output_hides_the_password() {
        let s = parse_secret("s", r#"{"username":"u","password":"hunter2"}"#).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
