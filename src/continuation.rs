//! Work that outlasts one invocation finishes by itself: when a migrate answers that work remains
//! (the deadline stopped it between steps, a snapshot is still being made, a long statement runs
//! on in the database), the migrate function arranges its own next invocation as an EventBridge
//! Scheduler one-time schedule (`at(…)`, deleted by the Scheduler after it fires). The engine that
//! carries the chain is AWS's, not a loop in the function: a killed or timed-out function cannot
//! break it. One schedule name per function, so there is one chain at a time; the chain ends when
//! a continued run finishes (its schedule is deleted), on an error (which the module's alarm
//! sees), or after `CONTINUATION_MAX_STEPS` links.

use std::time::Duration;

use aws_sdk_scheduler::types::{
    ActionAfterCompletion, DeadLetterConfig, FlexibleTimeWindow, FlexibleTimeWindowMode, RetryPolicy, Target,
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{deadline::Deadline, error::Error};

/// The longest an AWS call of the continuation may take: an unreachable Scheduler endpoint must
/// never cost the invocation its answer.
const CALL_LIMIT: Duration = Duration::from_secs(3);

/// The part of the invocation's time the migrate work leaves for arranging the continuation.
pub const RESERVE: Duration = Duration::from_millis(1500);

/// How the migrate function continues itself (the module sets these; without
/// `CONTINUATION_ROLE_ARN` nothing is arranged and the answer says to invoke again by hand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `CONTINUATION_ROLE_ARN`: the role the Scheduler assumes to invoke this function.
    pub role_arn: String,
    /// `CONTINUATION_SCHEDULE`: the one schedule's name (one chain at a time).
    pub schedule_name: String,
    /// `CONTINUATION_SCHEDULE_GROUP` (default `default`).
    pub group: String,
    /// `CONTINUATION_DLQ_ARN`: where the Scheduler sends an invocation it could not deliver.
    pub dead_letter_arn: Option<String>,
    /// `CONTINUATION_DELAY_S` (default 60): how long after this answer the next invocation starts.
    pub delay: Duration,
    /// `CONTINUATION_MAX_STEPS` (default 96): links after which the chain stops and says so.
    pub max_steps: u32,
}

/// What a continued invocation carries in its payload (`"continuation": {…}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// 1 for the first continued invocation, then 2, 3, …
    pub step: u32,
    /// When the chain's first invocation answered (RFC 3339), for the logs and the answer.
    pub chain_started: String,
}

/// What became of the continuation, reported in the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "continuation", rename_all = "snake_case")]
pub enum Arranged {
    /// The next invocation is scheduled.
    Scheduled {
        /// The schedule's name.
        schedule: String,
        /// When it fires (UTC).
        at: String,
        /// Which link of the chain it is.
        step: u32,
    },
    /// It could not be arranged; `how` says how to go on by hand.
    Failed {
        /// What went wrong (the AWS error, or the time limit).
        cause: String,
        /// How to go on.
        how: String,
    },
    /// The chain is as long as it may be: nothing was scheduled.
    Stopped {
        /// The links so far.
        steps: u32,
    },
}

impl Arranged {
    /// One sentence for an error message or a log line.
    pub fn sentence(&self) -> String {
        match self {
            Arranged::Scheduled { schedule, at, step } => format!(
                "this continues by itself: EventBridge Scheduler invokes the function again at {at} (schedule \
                 {schedule}, continuation {step}); nobody needs to invoke it"
            ),
            Arranged::Failed { cause, how } => format!("the continuation could not be arranged ({cause}); {how}"),
            Arranged::Stopped { steps } => format!(
                "the chain of continuations stopped after {steps} links (CONTINUATION_MAX_STEPS); look at the log \
                 lines of the last invocations, then invoke again by hand to go on"
            ),
        }
    }
}

/// `at(…)` for `when`, in the Scheduler's format (UTC, to the second, no zone suffix).
pub fn schedule_expression(when: DateTime<Utc>) -> String {
    format!("at({})", when.format("%Y-%m-%dT%H:%M:%S"))
}

/// The payload of the next invocation: the same command and target, and the next link.
pub fn next_payload(target: Option<i64>, link: Option<&Link>, now: DateTime<Utc>) -> (Value, u32) {
    let step = link.map_or(1, |l| l.step.saturating_add(1));
    let chain_started =
        link.map_or_else(|| now.to_rfc3339_opts(SecondsFormat::Secs, true), |l| l.chain_started.clone());
    let mut payload = json!({"command": "migrate", "continuation": Link { step, chain_started }});
    if let Some(t) = target {
        payload["target"] = json!(t);
    }
    (payload, step)
}

/// Schedules the next invocation of `function_arn` with `payload`, replacing a schedule of the
/// same name that has not fired yet (one chain at a time). Bounded by [`CALL_LIMIT`] and the
/// invocation's deadline, never an error: the answer says what became of it.
pub async fn arrange(
    client: &aws_sdk_scheduler::Client,
    settings: &Settings,
    function_arn: &str,
    payload: &Value,
    step: u32,
    deadline: Deadline,
) -> Arranged {
    if step > settings.max_steps {
        return Arranged::Stopped { steps: step - 1 };
    }
    let how = "invoke the function again by hand to go on (make invoke CMD=migrate)".to_string();
    let when = Utc::now() + chrono::Duration::from_std(settings.delay).unwrap_or(chrono::Duration::seconds(60));
    let expression = schedule_expression(when);
    let target = |_: ()| -> Result<Target, String> {
        let mut t = Target::builder()
            .arn(function_arn)
            .role_arn(&settings.role_arn)
            .input(payload.to_string())
            // One retry of a delivery; what still fails goes to the dead-letter queue.
            .retry_policy(RetryPolicy::builder().maximum_retry_attempts(1).maximum_event_age_in_seconds(3600).build());
        if let Some(dlq) = &settings.dead_letter_arn {
            t = t.dead_letter_config(DeadLetterConfig::builder().arn(dlq).build());
        }
        t.build().map_err(|e| e.to_string())
    };
    let window = FlexibleTimeWindow::builder().mode(FlexibleTimeWindowMode::Off).build();
    let description = format!("scanner-migrator: continuation {step} of a migrate that had work left");
    let call = async {
        let (target, window) = (target(())?, window.map_err(|e| e.to_string())?);
        let created = client
            .create_schedule()
            .name(&settings.schedule_name)
            .group_name(&settings.group)
            .schedule_expression(&expression)
            .schedule_expression_timezone("UTC")
            .flexible_time_window(window.clone())
            .action_after_completion(ActionAfterCompletion::Delete)
            .description(&description)
            .target(target.clone())
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conflict_exception()) => client
                .update_schedule()
                .name(&settings.schedule_name)
                .group_name(&settings.group)
                .schedule_expression(&expression)
                .schedule_expression_timezone("UTC")
                .flexible_time_window(window)
                .action_after_completion(ActionAfterCompletion::Delete)
                .description(&description)
                .target(target)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| crate::error::sdk_cause(&e)),
            Err(e) => Err(crate::error::sdk_cause(&e)),
        }
    };
    match deadline.within(Some(CALL_LIMIT), call).await {
        Ok(Ok(())) => Arranged::Scheduled {
            schedule: format!("{}/{}", settings.group, settings.schedule_name),
            at: when.to_rfc3339_opts(SecondsFormat::Secs, true),
            step,
        },
        Ok(Err(cause)) => Arranged::Failed { cause: format!("EventBridge Scheduler: {cause}"), how },
        Err(cut) => Arranged::Failed { cause: format!("EventBridge Scheduler gave no answer {cut}"), how },
    }
}

/// Deletes the chain's schedule once a continued run has finished (the Scheduler deletes a fired
/// one-time schedule itself; this removes one that a run outside the chain left waiting). A
/// schedule already gone is fine; any other failure is logged, never the answer's.
pub async fn end(client: &aws_sdk_scheduler::Client, settings: &Settings, deadline: Deadline) {
    let call = client.delete_schedule().name(&settings.schedule_name).group_name(&settings.group).send();
    match deadline.within(Some(CALL_LIMIT), call).await {
        Ok(Ok(_)) => {
            tracing::info!(step = "continuation", schedule = %settings.schedule_name, "chain ended: schedule deleted")
        }
        Ok(Err(e)) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
            tracing::info!(step = "continuation", schedule = %settings.schedule_name, "chain ended")
        }
        Ok(Err(e)) => tracing::warn!(
            step = "continuation",
            schedule = %settings.schedule_name,
            cause = %crate::error::sdk_cause(&e),
            "chain ended, but its schedule could not be deleted (it fires once more, finds nothing to do, and is gone)"
        ),
        Err(cut) => tracing::warn!(step = "continuation", "chain ended; deleting its schedule gave no answer {cut}"),
    }
}

/// Whether an error means work remains that another invocation carries on (rather than a failure
/// that needs a person).
pub fn work_remains(err: &Error) -> bool {
    match err {
        Error::DeadlineReached { left, .. } => !left.is_empty(),
        Error::SnapshotPending { .. } => true,
        Error::AfterApplied { cause, .. } => work_remains(cause),
        _ => false,
    }
}

/// Reads the continuation settings through `get`; `None` without `CONTINUATION_ROLE_ARN`.
pub fn settings(get: &impl Fn(&str) -> Option<String>, function_name: &str) -> Result<Option<Settings>, Error> {
    let Some(role_arn) = get("CONTINUATION_ROLE_ARN") else { return Ok(None) };
    let number = |var: &str, default: u64| -> Result<u64, Error> {
        get(var).map_or(Ok(default), |v| {
            v.parse().map_err(|_| Error::Config { var: var.into(), problem: format!("`{v}` is not a whole number") })
        })
    };
    let schedule_name = get("CONTINUATION_SCHEDULE").unwrap_or_else(|| format!("{function_name}-continue"));
    if schedule_name.is_empty()
        || schedule_name.len() > 64
        || !schedule_name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::Config {
            var: "CONTINUATION_SCHEDULE".into(),
            problem: format!(
                "`{schedule_name}` is not a schedule name (1-64 of letters, digits, '-', '_', '.'); set it explicitly"
            ),
        });
    }
    Ok(Some(Settings {
        role_arn,
        schedule_name,
        group: get("CONTINUATION_SCHEDULE_GROUP").unwrap_or_else(|| "default".into()),
        dead_letter_arn: get("CONTINUATION_DLQ_ARN"),
        delay: Duration::from_secs(number("CONTINUATION_DELAY_S", 60)?.max(1)),
        max_steps: u32::try_from(number("CONTINUATION_MAX_STEPS", 96)?).unwrap_or(u32::MAX),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_expression_is_the_schedulers_at_format_in_utc() {
        let when = Utc.with_ymd_and_hms(2026, 12, 4, 21, 5, 9).unwrap();
        assert_eq!(schedule_expression(when), "at(2026-12-04T21:05:09)");
    }

    #[test]
    fn each_link_carries_the_chains_start_and_the_next_step() {
        let now = Utc.with_ymd_and_hms(2026, 12, 4, 21, 0, 0).unwrap();
        let (first, step) = next_payload(Some(4), None, now);
        assert_eq!(step, 1);
        assert_eq!(
            first,
            json!({"command": "migrate", "continuation": {"step": 1, "chain_started": "2026-12-04T21:00:00Z"}, "target": 4})
        );
        let link: Link = serde_json::from_value(first["continuation"].clone()).unwrap();
        let later = Utc.with_ymd_and_hms(2026, 12, 4, 22, 0, 0).unwrap();
        let (second, step) = next_payload(None, Some(&link), later);
        assert_eq!(step, 2);
        assert_eq!(second["continuation"]["chain_started"], "2026-12-04T21:00:00Z");
        assert!(second.get("target").is_none());
    }

    #[test]
    fn settings_need_the_role_and_refuse_bad_values() {
        assert_eq!(settings(&env(&[]), "f").unwrap(), None);
        let s = settings(&env(&[("CONTINUATION_ROLE_ARN", "arn:role")]), "scanner-migrator-migrate").unwrap().unwrap();
        assert_eq!(s.schedule_name, "scanner-migrator-migrate-continue");
        assert_eq!((s.group.as_str(), s.delay, s.max_steps), ("default", Duration::from_secs(60), 96));
        let err = settings(&env(&[("CONTINUATION_ROLE_ARN", "r"), ("CONTINUATION_DELAY_S", "soon")]), "f").unwrap_err();
        assert!(err.to_string().contains("CONTINUATION_DELAY_S") && err.to_string().contains("soon"), "{err}");
        let err = settings(&env(&[("CONTINUATION_ROLE_ARN", "r"), ("CONTINUATION_SCHEDULE", "a b")]), "f").unwrap_err();
        assert!(err.to_string().contains("`a b` is not a schedule name"), "{err}");
    }

    #[test]
    fn only_work_left_over_is_continued() {
        let deadline =
            |left: Vec<String>| Error::DeadlineReached { during: "x".into(), remaining_ms: 0, done: vec![], left };
        assert!(work_remains(&deadline(vec!["003".into()])));
        assert!(!work_remains(&deadline(vec![])));
        assert!(work_remains(&Error::SnapshotPending {
            snapshot: "s".into(),
            status: "creating".into(),
            waited_s: 1.0
        }));
        assert!(!work_remains(&Error::VerifyFailed(vec!["drift".into()])));
        let after = Error::AfterApplied { applied: vec!["001".into()], cause: Box::new(deadline(vec!["002".into()])) };
        assert!(work_remains(&after));
    }
}
