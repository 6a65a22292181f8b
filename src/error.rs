//! The one error type. Every variant has a stable name (`kind`) that Lambda reports as
//! `errorType` and the CLI prints, and a message that carries the whole cause chain.

use serde::Serialize;

/// Where and why a migration failed.
#[derive(Debug)]
pub struct MigrationFailure {
    /// The migration's version.
    pub version: i64,
    /// Its name (with " rollback" for a down script).
    pub name: String,
    /// Line in the file where the failing statement (or the error position) is.
    pub line: usize,
    /// The statement, on one line, shortened.
    pub statement: String,
    /// PostgreSQL's error code.
    pub sqlstate: Option<String>,
    /// Character position of the error within the statement, as PostgreSQL reports it.
    pub position: Option<usize>,
    /// PostgreSQL's message.
    pub message: String,
    /// PostgreSQL's detail and hint.
    pub detail: Option<String>,
    /// Migrations this run applied before the failure (they stay applied).
    pub applied_before: Vec<String>,
    /// What the history now says, when that is not obvious (a rollback stopped part-way).
    pub note: Option<String>,
}

impl std::fmt::Display for MigrationFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "migration {:03} ({}) failed at line {}", self.version, self.name, self.line)?;
        if let Some(s) = &self.sqlstate {
            write!(f, " with SQLSTATE {s}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        write!(f, "\n  statement: {}", self.statement)?;
        if !self.applied_before.is_empty() {
            write!(f, "\n  applied before the failure: {}", self.applied_before.join(", "))?;
        }
        if let Some(note) = &self.note {
            write!(f, "\n  {note}")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong, named for what failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request (payload, command line, argument) is not one we accept.
    #[error("bad request: {0}")]
    BadRequest(String),

    /// A setting from the environment or the command line is missing or malformed.
    #[error("configuration: {var}: {problem}")]
    Config { var: String, problem: String },

    /// A migration file is malformed (name, directive, pairing of up and down).
    #[error("invalid migration file {file}: {problem}")]
    InvalidMigration { file: String, problem: String },

    /// An applied migration's file was edited after it was applied.
    #[error(
        "checksum mismatch for migration {version:03} ({name}): applied with checksum {applied}, \
         but the file embedded now has checksum {embedded}; never edit an applied migration, add a new one"
    )]
    ChecksumMismatch { version: i64, name: String, applied: String, embedded: String },

    /// The database could not be reached or refused the TLS handshake.
    #[error("cannot connect to {target}: {cause}")]
    ConnectFailed { target: String, cause: String },

    /// The database rejected the credentials (after re-reading the secret once).
    #[error("authentication failed for user {user} at {target}: {cause}")]
    AuthFailed { user: String, target: String, cause: String },

    /// Another migrator held the advisory lock for longer than we were willing to wait.
    #[error("{0}")]
    LockTimeout(String),

    /// A statement of a migration failed; the migration was rolled back (or, for a
    /// no-transaction file, stopped at that statement and is safe to re-run).
    #[error("{0}")]
    MigrationFailed(Box<MigrationFailure>),

    /// A check after applying (or on `verify`) found the schema not as the migrations leave it.
    #[error("verification failed: {}", .0.join("; "))]
    VerifyFailed(Vec<String>),

    /// The invocation's deadline came (or too little was left to start the next step): work
    /// stopped cleanly between steps, or PostgreSQL cancelled the running statement.
    #[error(
        "stopped at the invocation's deadline {during} ({remaining_ms} ms were left); finished this run: [{}]; \
         left to do: [{}]; nothing is half-applied: invoke again to continue",
        .done.join(", "), .left.join(", ")
    )]
    DeadlineReached { during: String, remaining_ms: u64, done: Vec<String>, left: Vec<String> },

    /// A step cannot finish within the invocation's time however often it is retried.
    #[error("{0}")]
    DeadlineTooShort(String),

    /// An existing object stands where a migration creates one, and cannot be converged.
    #[error("adopting the existing schema: {0}")]
    AdoptionFailed(String),

    /// The migrate function was asked to roll back but is not configured to allow it.
    #[error("rollback not allowed: {0}")]
    RollbackNotAllowed(String),

    /// A query outside a migration failed (history, locks, verification, refresh).
    #[error("{context}: {cause}")]
    Database { context: String, cause: String },

    /// The database secret is not of a shape we understand. Never carries the secret's value.
    #[error("secret {secret}: {problem}")]
    SecretFormat { secret: String, problem: String },

    /// Secrets Manager could not be asked (network, permissions, missing secret).
    #[error("cannot read secret {secret}: {cause}")]
    SecretUnavailable { secret: String, cause: String },

    /// The RDS API failed (endpoint lookup, IAM token, snapshot).
    #[error("RDS API: {0}")]
    RdsApi(String),

    /// The snapshot before migrating failed or did not become available in time.
    #[error("snapshot {snapshot}: {cause}")]
    SnapshotFailed { snapshot: String, cause: String },
}

impl Error {
    /// The stable name of the variant, reported as Lambda's `errorType`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "BadRequest",
            Error::Config { .. } => "ConfigError",
            Error::InvalidMigration { .. } => "InvalidMigration",
            Error::ChecksumMismatch { .. } => "ChecksumMismatch",
            Error::ConnectFailed { .. } => "ConnectFailed",
            Error::AuthFailed { .. } => "AuthFailed",
            Error::LockTimeout(_) => "LockTimeout",
            Error::MigrationFailed(_) => "MigrationFailed",
            Error::VerifyFailed(_) => "VerifyFailed",
            Error::DeadlineReached { .. } => "DeadlineReached",
            Error::DeadlineTooShort(_) => "DeadlineTooShort",
            Error::RollbackNotAllowed(_) => "RollbackNotAllowed",
            Error::AdoptionFailed(_) => "AdoptionFailed",
            Error::Database { .. } => "DatabaseError",
            Error::SecretFormat { .. } => "SecretFormat",
            Error::SecretUnavailable { .. } => "SecretUnavailable",
            Error::RdsApi(_) => "RdsApiError",
            Error::SnapshotFailed { .. } => "SnapshotFailed",
        }
    }

    /// The error as the JSON document the CLI prints and Lambda returns.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(ErrorDoc { error_type: self.kind(), error_message: self.to_string() }).unwrap_or_default()
    }

    /// A database error outside a migration, with what we were doing.
    pub fn db(context: impl Into<String>, err: sqlx::Error) -> Self {
        Error::Database { context: context.into(), cause: cause_chain(&err) }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorDoc {
    error_type: &'static str,
    error_message: String,
}

/// `err: source: source...` on one line, so nothing of the cause is lost.
pub fn cause_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The whole cause chain of an AWS SDK error (service code, message, transport cause).
pub fn sdk_cause<E: std::error::Error>(err: &E) -> String {
    aws_sdk_rds::error::DisplayErrorContext(err).to_string()
}
