//! CloudWatch embedded metric format (EMF) lines, so alarms need no log parsing.

use serde_json::{Map, Value, json};

/// The namespace every metric is published under.
pub const NAMESPACE: &str = "ScannerMigrator";

/// The dimensions every metric is published with: the function's name, so each deployment has its own.
pub const DIMENSIONS: &[&str] = &["FunctionName"];

/// One metric the binary emits: its name, its CloudWatch unit, and the handler whose function emits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// The metric's name in [`NAMESPACE`].
    pub name: &'static str,
    /// Its CloudWatch unit (`Milliseconds`, `Seconds`, `Count`).
    pub unit: &'static str,
    /// The handler (`migrate` or `refresh`, as in `HANDLER_NAMES`) that emits it.
    pub handler: &'static str,
}

/// How long a migrate run took, in milliseconds.
pub const MIGRATION_DURATION: Metric = Metric { name: "MigrationDuration", unit: "Milliseconds", handler: "migrate" };
/// How many migrations a migrate run applied.
pub const MIGRATIONS_APPLIED: Metric = Metric { name: "MigrationsApplied", unit: "Count", handler: "migrate" };
/// How many migrations were still pending after a migrate run.
pub const MIGRATIONS_PENDING: Metric = Metric { name: "MigrationsPending", unit: "Count", handler: "migrate" };
/// 1 for a migrate run that failed, 0 for one that finished.
pub const MIGRATE_FAILED: Metric = Metric { name: "MigrateFailed", unit: "Count", handler: "migrate" };
/// How far a detached build's current phase is, 0-100 (a migrate or status run that found it running).
pub const BUILD_PERCENT_DONE: Metric = Metric { name: "BuildPercentDone", unit: "Percent", handler: "migrate" };
/// A detached build's rows per second so far.
pub const BUILD_ROWS_PER_SECOND: Metric =
    Metric { name: "BuildRowsPerSecond", unit: "Count/Second", handler: "migrate" };
/// Rows per second a batched data change (`-- migrate:batch`) manages, one point per batch.
pub const BATCH_ROWS_PER_SECOND: Metric =
    Metric { name: "BatchRowsPerSecond", unit: "Count/Second", handler: "migrate" };
/// How far a batched data change is, in percent, where its migration counts the rows left.
pub const BATCH_PERCENT_DONE: Metric = Metric { name: "BatchPercentDone", unit: "Percent", handler: "migrate" };
/// How long a refresh took, in milliseconds (not emitted for a skipped one).
pub const REFRESH_DURATION: Metric = Metric { name: "RefreshDuration", unit: "Milliseconds", handler: "refresh" };
/// How old job_progress's data is after a refresh, in seconds.
pub const STALENESS: Metric = Metric { name: "Staleness", unit: "Seconds", handler: "refresh" };
/// How many delta rows a refresh folded into job_progress (from migration 003 on).
pub const DELTA_ROWS_FOLDED: Metric = Metric { name: "DeltaRowsFolded", unit: "Count", handler: "refresh" };
/// 1 for a refresh skipped (too soon after the last one, or another one running), else 0.
pub const SKIPPED: Metric = Metric { name: "Skipped", unit: "Count", handler: "refresh" };
/// 1 for a refresh that failed, 0 for one that finished.
pub const REFRESH_FAILED: Metric = Metric { name: "RefreshFailed", unit: "Count", handler: "refresh" };

/// Every metric the binary emits; the module's dashboard draws these and no other of [`NAMESPACE`]
/// (tests/it/terraform.rs holds it to this list).
pub const EMITTED: &[Metric] = &[
    MIGRATION_DURATION,
    MIGRATIONS_APPLIED,
    MIGRATIONS_PENDING,
    MIGRATE_FAILED,
    BUILD_PERCENT_DONE,
    BUILD_ROWS_PER_SECOND,
    BATCH_ROWS_PER_SECOND,
    BATCH_PERCENT_DONE,
    REFRESH_DURATION,
    STALENESS,
    DELTA_ROWS_FOLDED,
    SKIPPED,
    REFRESH_FAILED,
];

/// One EMF document of `function`'s metrics with their values; `None` values are left out.
pub fn emf(function: &str, timestamp_ms: i64, metrics: &[(Metric, Option<f64>)]) -> Value {
    let present: Vec<(Metric, f64)> = metrics.iter().filter_map(|(m, v)| Some((*m, (*v)?))).collect();
    let mut doc = Map::new();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [DIMENSIONS],
                "Metrics": present.iter().map(|(m, _)| json!({"Name": m.name, "Unit": m.unit})).collect::<Vec<_>>(),
            }],
        }),
    );
    doc.insert(DIMENSIONS[0].into(), json!(function));
    for (metric, value) in present {
        doc.insert(metric.name.into(), json!(value));
    }
    Value::Object(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_lists_each_present_metric_once_with_its_value() {
        let doc = emf("f", 1, &[(REFRESH_DURATION, Some(12.0)), (STALENESS, None), (SKIPPED, Some(0.0))]);
        let defs = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(defs["Namespace"], NAMESPACE);
        assert_eq!(defs["Dimensions"], json!([["FunctionName"]]));
        let names: Vec<&str> =
            defs["Metrics"].as_array().unwrap().iter().map(|m| m["Name"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["RefreshDuration", "Skipped"]);
        assert_eq!(defs["Metrics"][0]["Unit"], "Milliseconds");
        assert_eq!(doc["RefreshDuration"], 12.0);
        assert!(doc.get("Staleness").is_none());
        assert_eq!(doc["FunctionName"], "f");
    }

    #[test]
    fn emitted_names_are_unique_and_each_from_a_handler() {
        let mut names: Vec<&str> = EMITTED.iter().map(|m| m.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), EMITTED.len(), "a metric listed twice");
        for m in EMITTED {
            assert!(crate::handlers::HANDLER_NAMES.contains(&m.handler), "{m:?}");
            // CloudWatch's own unit names.
            assert!(["Milliseconds", "Seconds", "Count", "Count/Second", "Percent"].contains(&m.unit), "{m:?}");
        }
    }
}
