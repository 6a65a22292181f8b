//! From settings to one open, dedicated connection.

use sqlx::{PgConnection, postgres::PgConnectOptions};

use crate::{
    config::{Auth, DbSource, Settings},
    credentials::{self, Aws},
    db::{self, Target},
    deadline::Deadline,
    error::{Error, Result},
};

/// Opens the connection the command runs on. With a secret: on an authentication failure
/// the secret is read once more (it may have rotated since it was read) and the connect retried.
/// The target says which TLS the session negotiated, not only which mode was configured. The
/// session works in one schema only (`db::pin_schema`). Every
/// network wait (the AWS calls, the connect, the retry) is cut to the time `deadline` leaves.
pub async fn open(
    settings: &Settings,
    aws: Option<&Aws>,
    application_name: &str,
    deadline: Deadline,
) -> Result<(PgConnection, Target)> {
    open_with_options(settings, aws, application_name, deadline).await.map(|(conn, target, _)| (conn, target))
}

/// As [`open`], with the options it connected with (for a second session to the same database:
/// the detached build). They hold the password: never print them.
pub async fn open_with_options(
    settings: &Settings,
    aws: Option<&Aws>,
    application_name: &str,
    deadline: Deadline,
) -> Result<(PgConnection, Target, PgConnectOptions)> {
    let (mut conn, mut target, opts) = connect(settings, aws, application_name, deadline).await?;
    target.tls = Some(negotiated_tls(&mut conn).await?);
    db::pin_schema(&mut conn, settings.schema.as_deref()).await?;
    tracing::info!(step = "connect", target = %target, tls = target.tls.as_deref().unwrap_or(""), "connected");
    Ok((conn, target, opts))
}

/// The session's TLS as the server sees it: protocol and cipher, or `none` for plaintext.
pub async fn negotiated_tls(conn: &mut PgConnection) -> Result<String> {
    let row: Option<(bool, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT ssl, version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_optional(conn)
            .await
            .map_err(|e| Error::db("reading the session's TLS state (pg_stat_ssl)", e))?;
    Ok(match row {
        Some((true, version, cipher)) => {
            format!("{} {}", version.unwrap_or_default(), cipher.unwrap_or_default()).trim().to_string()
        }
        _ => "none".to_string(),
    })
}

async fn connect(
    settings: &Settings,
    aws: Option<&Aws>,
    application_name: &str,
    deadline: Deadline,
) -> Result<(PgConnection, Target, PgConnectOptions)> {
    tracing::info!(step = "resolve", "resolving the database connection");
    match &settings.db {
        DbSource::Url(opts) => {
            let opts = opts.as_ref().clone().application_name(application_name);
            let conn = db::connect(&opts, settings.connect_timeout, deadline).await?;
            Ok((conn, Target::of(&opts), opts))
        }
        DbSource::Secret(s) => {
            let aws = aws.ok_or_else(|| Error::Config {
                var: "DB_SECRET_ARN".into(),
                problem: "AWS clients are not configured".into(),
            })?;
            let opts = credentials::resolve(s, aws, application_name, deadline).await?;
            let target = Target::of(&opts);
            tracing::info!(step = "connect", target = %target, "connecting");
            match db::connect(&opts, settings.connect_timeout, deadline).await {
                Err(Error::AuthFailed { .. }) if s.auth == Auth::Password => {
                    tracing::warn!(
                        step = "connect",
                        "authentication failed; re-reading the secret once in case it was just rotated"
                    );
                    let opts = credentials::resolve(s, aws, application_name, deadline).await?;
                    let conn = db::connect(&opts, settings.connect_timeout, deadline).await?;
                    Ok((conn, Target::of(&opts), opts))
                }
                Err(e) => Err(e),
                Ok(conn) => Ok((conn, target, opts)),
            }
        }
    }
}
