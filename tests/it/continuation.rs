//! Work that outlasts an invocation continues by itself: the migrate function schedules its own
//! next invocation in EventBridge Scheduler (moto's), with the target, payload, role and
//! dead-letter queue the module gives it, one chain at a time, and the chain ends with the work.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    lambda::{Fixture, T, function},
    support::moto,
};

/// The function ARN the Runtime API stand-in gives every invocation (tests/it/support/runtime.rs).
const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:scanner-migrator";
const ROLE: &str = "arn:aws:iam::123456789012:role/scanner-migrator-scheduler";
const DLQ: &str = "arn:aws:sqs:us-east-1:123456789012:scanner-migrator-dlq";
/// Under the 2 s a migration needs to start (after the answer's margin and the continuation's
/// reserve): the first invocation stops with every migration left.
const SHORT: Duration = Duration::from_secs(4);

async fn scheduler() -> aws_sdk_scheduler::Client {
    aws_sdk_scheduler::Client::new(&moto::sdk().await)
}

/// The fixture's environment with the continuation configured under a schedule name of its own
/// (moto is shared by the whole suite).
fn env(fx: &Fixture, extra: &[(&str, &str)]) -> (Vec<(String, String)>, String) {
    let name = format!("cont-{}", fx.db.name);
    let mut vars =
        vec![("CONTINUATION_ROLE_ARN", ROLE), ("CONTINUATION_DLQ_ARN", DLQ), ("CONTINUATION_SCHEDULE", &name)];
    vars.extend_from_slice(extra);
    (fx.env_with(&vars), name)
}

/// The schedule's input, parsed, or `None` when no schedule of that name exists.
async fn schedule(name: &str) -> Option<(aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput, Value)> {
    match scheduler().await.get_schedule().name(name).send().await {
        Ok(out) => {
            let input = out.target().and_then(|t| t.input()).map(|i| serde_json::from_str(i).unwrap()).unwrap();
            Some((out, input))
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => None,
        Err(e) => panic!("get_schedule: {e:?}"),
    }
}

/// The `MigrateFailed` values of a function's EMF log lines, in order.
pub(crate) fn migrate_failed(logs: &str) -> Vec<f64> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|l| l.get("MigrateFailed").and_then(Value::as_f64))
        .collect()
}

#[tokio::test]
async fn work_left_at_the_deadline_is_scheduled_to_continue_and_the_schedule_goes_with_the_chain() {
    let fx = Fixture::rotation().await;
    let (env, name) = env(&fx, &[]);
    let (api, f) = function("migrate", &env).await;

    let (kind, msg) = api.invoke(json!({"target": 4}), SHORT).await.err();
    assert_eq!(kind, "DeadlineReached", "{msg}");
    assert!(msg.contains("this continues by itself") && msg.contains(&format!("default/{name}")), "{msg}");
    assert!(fx.db.history().await.is_empty(), "nothing half-applied");

    let (out, input) = schedule(&name).await.expect("the continuation schedule exists");
    let target = out.target().unwrap();
    assert_eq!(target.arn(), FUNCTION_ARN);
    assert_eq!(target.role_arn(), ROLE);
    assert_eq!(target.dead_letter_config().and_then(|d| d.arn()), Some(DLQ));
    assert!(out.schedule_expression().unwrap().starts_with("at(20"), "{:?}", out.schedule_expression());
    assert_eq!(out.action_after_completion().map(|a| a.as_str()), Some("DELETE"), "gone after it fires");
    assert_eq!(out.flexible_time_window().map(|w| w.mode().as_str()), Some("OFF"));
    assert_eq!(input["command"], "migrate");
    assert_eq!(input["target"], 4, "the chain keeps the target it was asked for");
    assert_eq!(input["continuation"]["step"], 1);

    // The Scheduler fires: the function with the schedule's input, and time enough.
    let done = api.invoke(input, T).await;
    assert_eq!(done.ok()["status"], "applied", "{:?}", done);
    assert_eq!(fx.db.history().await.len(), 5, "000 to 004 applied");
    assert!(schedule(&name).await.is_none(), "no schedule remains once the migration is applied");

    let logs = f.stop().await;
    assert_eq!(migrate_failed(&logs), [0.0, 0.0], "a run that continues by itself is not a failure: {logs}");
    assert!(logs.contains("scheduled by the function itself"), "{logs}");
}

#[tokio::test]
async fn one_chain_at_a_time_and_each_link_counts() {
    let fx = Fixture::rotation().await;
    let (env, name) = env(&fx, &[("CONTINUATION_MAX_STEPS", "2")]);
    let (api, f) = function("migrate", &env).await;

    api.invoke(json!({}), SHORT).await.err();
    let (_, first) = schedule(&name).await.unwrap();
    // A second invocation by hand while the first schedule waits: still one schedule, moved on.
    api.invoke(json!({}), SHORT).await.err();
    let (_, again) = schedule(&name).await.unwrap();
    assert_eq!(again["continuation"]["step"], 1);
    let listed = scheduler().await.list_schedules().name_prefix(&name).send().await.unwrap();
    assert_eq!(listed.schedules().len(), 1, "one chain at a time");

    // The scheduled link runs out of time too: the next link is 2, from the same chain.
    let (_, msg) = api.invoke(first.clone(), SHORT).await.err();
    assert!(msg.contains("continuation 2"), "{msg}");
    let (_, second) = schedule(&name).await.unwrap();
    assert_eq!(second["continuation"]["step"], 2);
    assert_eq!(second["continuation"]["chain_started"], first["continuation"]["chain_started"]);

    // CONTINUATION_MAX_STEPS=2: a third link is not made, and the answer says so.
    let (kind, msg) = api.invoke(second, SHORT).await.err();
    assert_eq!(kind, "DeadlineReached");
    assert!(msg.contains("stopped after 2 links") && msg.contains("invoke again by hand"), "{msg}");
    let logs = f.stop().await;
    assert_eq!(migrate_failed(&logs).last(), Some(&1.0), "a chain that stops needs a person: {logs}");
}

#[tokio::test]
async fn an_unreachable_scheduler_costs_no_more_than_its_limit_and_the_answer_says_how_to_go_on() {
    // A Scheduler endpoint that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            held.push(sock);
        }
    });
    let fx = Fixture::rotation().await;
    let (env, name) = env(&fx, &[("AWS_ENDPOINT_URL_SCHEDULER", &endpoint)]);
    let (api, f) = function("migrate", &env).await;

    let started = std::time::Instant::now();
    let (kind, msg) = api.invoke(json!({}), SHORT).await.err();
    assert!(started.elapsed() < SHORT, "answered before the deadline: {:?}", started.elapsed());
    assert_eq!(kind, "DeadlineReached", "{msg}");
    assert!(msg.contains("could not be arranged (EventBridge Scheduler gave no answer within"), "{msg}");
    assert!(msg.contains("invoke the function again by hand"), "{msg}");
    assert!(schedule(&name).await.is_none());
    let logs = f.stop().await;
    assert_eq!(migrate_failed(&logs), [1.0], "{logs}");
    hold.abort();
}
