//! The two Lambda handlers: parse the event, run it through the shared [`App`], report.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    app::App,
    command::{COMMANDS, Command, TargetArg},
    config::{DbSource, Settings},
    continuation,
    deadline::Deadline,
    error::{Error, Result},
    metrics,
    migrations::Migrations,
};

/// The handler names the binary dispatches on (`_HANDLER`, Terraform's `handler`).
pub const HANDLER_NAMES: [&str; 2] = ["migrate", "refresh"];

/// Which handler this process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// Applies migrations (and status, plan, verify, rollback).
    Migrate,
    /// Refreshes `job_progress`.
    Refresh,
}

impl Handler {
    /// Parses `_HANDLER`; an unknown name is refused with the valid ones.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "migrate" => Ok(Handler::Migrate),
            "refresh" => Ok(Handler::Refresh),
            other => Err(Error::Config {
                var: "_HANDLER".into(),
                problem: format!("unknown handler `{other}`; valid handlers: {}", HANDLER_NAMES.join(", ")),
            }),
        }
    }
}

/// What the migrate handler was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrateRequest {
    /// Run a command.
    Run(Command),
    /// Terraform's delete of the invocation resource: never touches the schema.
    TerraformDelete,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MigratePayload {
    command: Option<String>,
    target: Option<i64>,
    /// `verify` only: compare job_progress with a direct count too.
    data: Option<bool>,
    tf: Option<TfEnvelope>,
    /// Set by the function itself on the invocation it schedules (src/continuation.rs).
    continuation: Option<continuation::Link>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TfEnvelope {
    action: String,
    #[allow(dead_code)]
    prev_input: Option<Value>,
}

/// `accepted: {...}`, derived from the command table so it can never disagree with the parser.
fn migrate_accepts() -> String {
    let commands: Vec<&str> = COMMANDS.iter().filter(|c| c.in_migrate_payload).map(|c| c.name).collect();
    let with_target: Vec<&str> =
        COMMANDS.iter().filter(|c| c.in_migrate_payload && c.target != TargetArg::None).map(|c| c.name).collect();
    format!(
        r#"accepted: {{"command": "{}", "target": <version, for {}>, "data": true (verify: the counts too), "tf": {{"action": "create|update|delete", "prev_input": ...}}}}, all optional; {{}} migrates"#,
        commands.join("|"),
        with_target.join(", ")
    )
}

/// Parses the migrate handler's payload. `{}` (or no payload) means migrate.
pub fn parse_migrate_event(event: &Value) -> Result<MigrateRequest> {
    parse_migrate_payload(event).map(|(request, _)| request)
}

/// The request and, for an invocation the function scheduled itself, the chain's link.
pub fn parse_migrate_payload(event: &Value) -> Result<(MigrateRequest, Option<continuation::Link>)> {
    let bad = |problem: String| Error::BadRequest(format!("{problem}; {}", migrate_accepts()));
    let event = if event.is_null() { json!({}) } else { event.clone() };
    let payload: MigratePayload = serde_json::from_value(event).map_err(|e| bad(e.to_string()))?;
    if let Some(tf) = &payload.tf {
        match tf.action.as_str() {
            "delete" => return Ok((MigrateRequest::TerraformDelete, None)),
            "create" | "update" => {}
            other => return Err(bad(format!("unknown tf.action `{other}`"))),
        }
    }
    let name = payload.command.as_deref().unwrap_or("migrate");
    if COMMANDS.iter().any(|c| c.name == name && !c.in_migrate_payload) {
        return Err(bad(format!("`{name}` is not run by the migrate function (it has its own handler)")));
    }
    let command =
        Command::parse(name, payload.target).and_then(|c| c.with_data(payload.data.unwrap_or(false))).map_err(bad)?;
    if payload.continuation.is_some() && !matches!(command, Command::Migrate { .. }) {
        return Err(bad(format!("`continuation` belongs to `migrate` only, not `{name}`")));
    }
    Ok((MigrateRequest::Run(command), payload.continuation))
}

/// What the refresh handler was invoked by (for the logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshRequest {
    /// The schedule's time for this run, when the scheduler sent it.
    pub scheduled_time: Option<String>,
    /// The scheduler's attempt number (retries count up).
    pub attempt: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SchedulerPayload {
    scheduled_time: Option<String>,
    execution_id: Option<String>,
    attempt_number: Option<Value>,
}

const REFRESH_ACCEPTS: &str = r#"accepted: {} (manual), the EventBridge Scheduler input {"scheduled_time", "execution_id", "attempt_number"}, or an EventBridge "Scheduled Event""#;

/// Parses the refresh handler's event.
pub fn parse_refresh_event(event: &Value) -> Result<RefreshRequest> {
    let bad = |problem: String| Error::BadRequest(format!("{problem}; {REFRESH_ACCEPTS}"));
    match event {
        Value::Null => Ok(RefreshRequest::default()),
        Value::Object(obj) if obj.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event") => {
            Ok(RefreshRequest {
                scheduled_time: obj.get("time").and_then(Value::as_str).map(str::to_string),
                attempt: None,
            })
        }
        Value::Object(_) => {
            let p: SchedulerPayload = serde_json::from_value(event.clone()).map_err(|e| bad(e.to_string()))?;
            let _ = p.execution_id;
            let attempt = match p.attempt_number {
                None => None,
                Some(Value::String(s)) => Some(s),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(_) => return Err(bad("attempt_number is not a number or string".into())),
            };
            Ok(RefreshRequest { scheduled_time: p.scheduled_time, attempt })
        }
        _ => Err(bad("the event is not a JSON object".into())),
    }
}

/// How this invocation may continue itself: the chain's settings and this function's ARN.
pub struct Continue<'a> {
    /// From the environment (`CONTINUATION_*`).
    pub settings: &'a continuation::Settings,
    /// The function to invoke next (the invoked function's ARN, from the invocation's context).
    pub function_arn: &'a str,
}

impl Continue<'_> {
    /// Schedules the chain's next link (the same `migrate` and target) and logs what became of it.
    async fn next(
        &self,
        scheduler: &aws_sdk_scheduler::Client,
        target: Option<i64>,
        link: Option<&continuation::Link>,
        deadline: Deadline,
        why: &str,
    ) -> continuation::Arranged {
        let (payload, step) = continuation::next_payload(target, link, chrono::Utc::now());
        let arranged =
            continuation::arrange(scheduler, self.settings, self.function_arn, &payload, step, deadline).await;
        tracing::info!(step = "continuation", result = %arranged.sentence(), "{why}");
        arranged
    }
}

/// One invocation of the migrate handler.
pub async fn handle_migrate(
    app: &App,
    event: &Value,
    request_id: &str,
    deadline: Deadline,
    function: &str,
    chain: Option<Continue<'_>>,
) -> Result<Value> {
    let (request, link) = parse_migrate_payload(event)?;
    let command = match request {
        MigrateRequest::TerraformDelete => {
            tracing::info!(step = "noop", "terraform delete: the schema is left as it is");
            return Ok(json!({
                "status": "noop",
                "command": "delete",
                "reason": "Terraform is deleting the invocation resource; the schema is never dropped by a destroy",
            }));
        }
        MigrateRequest::Run(command) => command,
    };
    if matches!(command, Command::Rollback { .. }) && !app.settings.allow_rollback {
        return Err(Error::RollbackNotAllowed(
            "rollback runs the .down.sql scripts, which drop what the migrations added (columns with their data \
             among them); this function is not configured to allow it. Set ALLOW_ROLLBACK=true on the function \
             (the module's `allow_rollback` input), or run `scanner-migrator rollback` from the command line"
                .into(),
        ));
    }
    match &link {
        Some(l) => tracing::info!(
            step = "start",
            command = command.name(),
            continuation = l.step,
            chain_started = %l.chain_started,
            "invocation (scheduled by the function itself)"
        ),
        None => tracing::info!(step = "start", command = command.name(), "invocation"),
    }
    let target = match command {
        Command::Migrate { target } => Some(target),
        _ => None,
    };
    // The continuation's call to the Scheduler needs time after the work has stopped.
    let work_deadline = if chain.is_some() { deadline.keep_back(continuation::RESERVE) } else { deadline };
    let report = match app.migrate(command, request_id, work_deadline).await {
        Ok(report) => report,
        Err(err) => {
            // Work left over is carried on by a scheduled invocation of this function; anything
            // else ends the chain and needs a person.
            let continued = match (target, &chain, app.aws.as_ref()) {
                (Some(target), Some(c), Some(aws)) if continuation::work_remains(&err) => {
                    Some(c.next(&aws.scheduler, target, link.as_ref(), deadline, "work remains").await)
                }
                _ => None,
            };
            // A failed migrate shows in the metrics as well as in the logs, so the dashboard and an
            // alarm can count it; one that continues by itself is not a failure.
            if target.is_some() {
                let failed = !matches!(continued, Some(continuation::Arranged::Scheduled { .. }));
                println!(
                    "{}",
                    metrics::emf(
                        function,
                        now_ms(),
                        &[(metrics::MIGRATE_FAILED, Some(if failed { 1.0 } else { 0.0 }))]
                    )
                );
            }
            return Err(match continued {
                Some(arranged) => Error::Continuing { cause: Box::new(err), note: arranged.sentence() },
                None => err,
            });
        }
    };
    // A detached build's progress, each time a run finds it (migrate or status).
    if let Some(p) = &report.in_progress {
        println!(
            "{}",
            metrics::emf(
                function,
                now_ms(),
                &[(metrics::BUILD_PERCENT_DONE, p.percent), (metrics::BUILD_ROWS_PER_SECOND, p.rows_per_s)]
            )
        );
    }
    // A build that goes on in the database: the next invocation, scheduled now, waits for it and
    // finishes the migration.
    let mut arranged = None;
    if let (Some(target), Some(c), Some(aws)) = (target, &chain, app.aws.as_ref()) {
        if report.status == "in_progress" {
            let why = "a build continues in the database";
            arranged = Some(c.next(&aws.scheduler, target, link.as_ref(), deadline, why).await);
        } else if link.is_some() {
            continuation::end(&aws.scheduler, c.settings, deadline).await;
        }
    }
    if target.is_some() {
        let applied = report.applied.len() as f64;
        // As for work left at the deadline: a build going on in the database with no next invocation
        // arranged finishes, but nothing will finish its migration by itself; the alarm says so.
        let stranded =
            report.status == "in_progress" && !matches!(arranged, Some(continuation::Arranged::Scheduled { .. }));
        println!(
            "{}",
            metrics::emf(
                function,
                now_ms(),
                &[
                    (metrics::MIGRATION_DURATION, Some(report.duration_ms as f64)),
                    (metrics::MIGRATIONS_APPLIED, Some(applied)),
                    (metrics::MIGRATIONS_PENDING, Some(report.pending.len() as f64)),
                    (metrics::MIGRATE_FAILED, Some(if stranded { 1.0 } else { 0.0 })),
                ]
            )
        );
    }
    let mut value =
        serde_json::to_value(&report).map_err(|e| Error::BadRequest(format!("serialising the result: {e}")))?;
    if let Some(a) = arranged {
        // Terraform's failed apply prints in_progress.message: it says what became of the continuation too.
        if let Some(Value::String(message)) = value.pointer_mut("/in_progress/message") {
            message.push_str("; ");
            message.push_str(&a.sentence());
        }
        value["continuation"] = serde_json::to_value(&a).unwrap_or(Value::Null);
    }
    Ok(value)
}

/// One invocation of the refresh handler.
pub async fn handle_refresh(
    app: &App,
    event: &Value,
    request_id: &str,
    deadline: Deadline,
    function: &str,
) -> Result<Value> {
    let request = parse_refresh_event(event)?;
    tracing::info!(
        step = "start",
        scheduled_time = request.scheduled_time.as_deref().unwrap_or("manual"),
        attempt = request.attempt.as_deref().unwrap_or("1"),
        "refresh invocation"
    );
    let report = match app.refresh(request_id, deadline).await {
        Ok(report) => report,
        Err(err) => {
            // A failing refresh shows in the metrics as well as in the logs, so an alarm can count it.
            println!("{}", metrics::emf(function, now_ms(), &[(metrics::REFRESH_FAILED, Some(1.0))]));
            return Err(err);
        }
    };
    let skipped = report.status == "skipped";
    println!(
        "{}",
        metrics::emf(
            function,
            now_ms(),
            &[
                (metrics::REFRESH_DURATION, (!skipped).then_some(report.refresh_ms as f64)),
                (metrics::STALENESS, report.staleness_after_s),
                (metrics::DELTA_ROWS_FOLDED, report.delta_rows.map(|n| n as f64)),
                (metrics::SKIPPED, Some(if skipped { 1.0 } else { 0.0 })),
                (metrics::REFRESH_FAILED, Some(0.0)),
            ]
        )
    );
    serde_json::to_value(&report).map_err(|e| Error::BadRequest(format!("serialising the result: {e}")))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl From<Error> for lambda_runtime::Diagnostic {
    fn from(err: Error) -> Self {
        lambda_runtime::Diagnostic { error_type: err.kind().to_string(), error_message: err.message() }
    }
}

/// Serves Lambda invocations until the runtime stops us.
pub async fn run_lambda() -> std::result::Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let handler_name = std::env::var("_HANDLER").unwrap_or_default();
    let function =
        std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| format!("scanner-migrator-{handler_name}"));
    let start = async {
        let handler = Handler::from_name(&handler_name)?;
        let env = |k: &str| std::env::var(k).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        // Only migrate continues itself; refresh has its own schedule.
        let chain = match handler {
            Handler::Migrate => continuation::settings(&env, &function)?,
            Handler::Refresh => None,
        };
        let settings = Settings::from_lookup(|k| std::env::var(k).ok())?;
        if matches!(settings.db, DbSource::Url(_)) {
            return Err(Error::Config {
                var: "DATABASE_URL".into(),
                problem: "is for the command line; the Lambda reads DB_SECRET_ARN".into(),
            });
        }
        let migrations = Migrations::embedded()?;
        Ok::<_, Error>((handler, chain, App::new(settings, migrations).await))
    };
    let (handler, chain, app) = match start.await {
        Ok(ready) => ready,
        Err(err) => {
            tracing::error!(error_type = err.kind(), error = %err.message(), "start-up failed");
            report_init_error(&err).await;
            return Err(format!("{}: {}", err.kind(), err.message()).into());
        }
    };
    let chain = &chain;
    let app = &app;
    let function = function.as_str();
    lambda_runtime::run(lambda_runtime::service_fn(move |event: lambda_runtime::LambdaEvent<Value>| async move {
        let deadline = Deadline::from_lambda_epoch_ms(event.context.deadline);
        let id = event.context.request_id.clone();
        let work = async {
            match handler {
                Handler::Migrate => {
                    let chain = chain
                        .as_ref()
                        .map(|settings| Continue { settings, function_arn: &event.context.invoked_function_arn });
                    handle_migrate(app, &event.payload, &id, deadline, function, chain).await
                }
                Handler::Refresh => handle_refresh(app, &event.payload, &id, deadline, function).await,
            }
        };
        let result = within_deadline(deadline, work).await;
        if let Err(err) = &result {
            tracing::error!(error_type = err.kind(), error = %err.message(), "invocation failed");
        }
        result.map_err(lambda_runtime::Diagnostic::from)
    }))
    .await
}

/// Every statement is cut to the deadline, so work normally ends by itself in time. Should
/// something else hang (a DNS lookup, a TLS handshake), the answer still reaches the Runtime API
/// before Lambda's own deadline: the work is dropped (its connection closed, so PostgreSQL
/// cancels whatever ran on it) half a second into the answer's margin.
async fn within_deadline(deadline: Deadline, work: impl std::future::Future<Output = Result<Value>>) -> Result<Value> {
    let Some(left) = deadline.remaining() else { return work.await };
    match tokio::time::timeout(left + std::time::Duration::from_millis(500), work).await {
        Ok(result) => result,
        Err(_) => Err(Error::DeadlineReached {
            during: "with the work still running; its connection was closed, so PostgreSQL cancels it".into(),
            remaining_ms: 0,
            done: Vec::new(),
            left: vec!["the whole command (see the log lines before this one for how far it got)".into()],
        }),
    }
}

/// Tells the Runtime API why start-up failed, so `aws lambda invoke` shows the variable at fault.
async fn report_init_error(err: &Error) {
    let body = serde_json::json!({"errorType": err.kind(), "errorMessage": err.message()});
    let sent = async {
        let client = lambda_runtime_api_client::Client::builder().build()?;
        let req = lambda_runtime_api_client::build_request()
            .method(http::Method::POST)
            .uri("/2018-06-01/runtime/init/error")
            .header("lambda-runtime-function-error-type", err.kind())
            .body(lambda_runtime_api_client::body::Body::from(body.to_string()))?;
        client.call(req).await.map(|_| ())
    };
    if let Err(e) = sent.await {
        tracing::error!(error = %e, "could not report the start-up error to the Runtime API");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_continuation_is_read_from_the_payload_and_only_for_migrate() {
        let link = json!({"step": 3, "chain_started": "2026-12-04T21:00:00Z"});
        let (request, got) = parse_migrate_payload(&json!({"target": 2, "continuation": link})).unwrap();
        assert_eq!(request, MigrateRequest::Run(Command::Migrate { target: Some(2) }));
        assert_eq!(got.map(|l| l.step), Some(3));
        let err = parse_migrate_payload(&json!({"command": "status", "continuation": link})).unwrap_err();
        assert!(err.to_string().contains("`continuation` belongs to `migrate` only"), "{err}");
        assert!(parse_migrate_payload(&json!({"continuation": {"step": "x"}})).is_err());
    }

    #[test]
    fn empty_payloads_migrate() {
        for event in [json!({}), Value::Null, json!({"command": "migrate"})] {
            assert_eq!(parse_migrate_event(&event).unwrap(), MigrateRequest::Run(Command::Migrate { target: None }));
        }
    }

    #[test]
    fn terraform_envelope() {
        let create = json!({"command": "migrate", "tf": {"action": "create", "prev_input": null}});
        assert_eq!(parse_migrate_event(&create).unwrap(), MigrateRequest::Run(Command::Migrate { target: None }));
        let update = json!({"tf": {"action": "update", "prev_input": {"command": "migrate"}}});
        assert!(matches!(parse_migrate_event(&update).unwrap(), MigrateRequest::Run(_)));
        let delete = json!({"command": "migrate", "tf": {"action": "delete", "prev_input": {"command": "migrate"}}});
        assert_eq!(parse_migrate_event(&delete).unwrap(), MigrateRequest::TerraformDelete);
        assert!(parse_migrate_event(&json!({"tf": {"action": "explode"}})).is_err());
    }

    #[test]
    fn commands_and_targets() {
        let p = |v: Value| parse_migrate_event(&v);
        assert_eq!(
            p(json!({"command": "rollback", "target": 1})).unwrap(),
            MigrateRequest::Run(Command::Rollback { to: 1 })
        );
        assert_eq!(
            p(json!({"command": "plan", "target": 2})).unwrap(),
            MigrateRequest::Run(Command::Plan { target: Some(2) })
        );
        assert_eq!(p(json!({"command": "status"})).unwrap(), MigrateRequest::Run(Command::Status));
        assert_eq!(
            p(json!({"command": "verify", "data": true})).unwrap(),
            MigrateRequest::Run(Command::Verify { data: true })
        );
        assert!(p(json!({"command": "migrate", "data": true})).is_err());
        for bad in [
            json!({"command": "rollback"}),
            json!({"command": "drop"}),
            json!({"command": "status", "target": 1}),
            json!({"target": -1}),
            json!({"comand": "migrate"}),
            json!({"target": "one"}),
            json!([1]),
        ] {
            let err = p(bad.clone()).unwrap_err();
            assert_eq!(err.kind(), "BadRequest", "{bad}");
            assert!(err.to_string().contains("accepted:"), "{err}");
        }
        let err = p(json!({"comand": "migrate"})).unwrap_err().to_string();
        assert!(err.contains("comand"), "{err}");
    }

    #[test]
    fn refresh_events() {
        assert_eq!(parse_refresh_event(&json!({})).unwrap(), RefreshRequest::default());
        let sched = json!({"scheduled_time": "2026-11-25T07:00:00Z", "execution_id": "x", "attempt_number": "2"});
        assert_eq!(parse_refresh_event(&sched).unwrap().attempt.as_deref(), Some("2"));
        let rule = json!({"version": "0", "detail-type": "Scheduled Event", "source": "aws.events", "time": "t", "detail": {}});
        assert_eq!(parse_refresh_event(&rule).unwrap().scheduled_time.as_deref(), Some("t"));
        for bad in [json!({"command": "migrate"}), json!("refresh"), json!({"attempt_number": [1]})] {
            assert_eq!(parse_refresh_event(&bad).unwrap_err().kind(), "BadRequest", "{bad}");
        }
    }

    #[test]
    fn unknown_handler_lists_the_valid_ones() {
        let err = Handler::from_name("migrat").unwrap_err().to_string();
        assert!(err.contains("migrat") && err.contains("migrate, refresh"), "{err}");
    }

    #[tokio::test]
    async fn work_that_hangs_past_the_deadline_is_answered_in_time() {
        let started = std::time::Instant::now();
        let hang = async {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            Ok(json!({}))
        };
        let err = within_deadline(Deadline::after(std::time::Duration::from_millis(200)), hang).await.unwrap_err();
        assert_eq!(err.kind(), "DeadlineReached");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn errors_become_diagnostics_with_stable_types() {
        let d = lambda_runtime::Diagnostic::from(Error::LockTimeout("held".into()));
        assert_eq!(d.error_type, "LockTimeout");
        assert_eq!(d.error_message, "held");
    }
}
