//! CloudWatch embedded metric format (EMF) lines, so alarms need no log parsing.

use serde_json::{Map, Value, json};

/// The namespace every metric is published under.
pub const NAMESPACE: &str = "ScannerMigrator";

/// One EMF document: `metrics` are (name, unit, value); `None` values are left out.
pub fn emf(function: &str, timestamp_ms: i64, metrics: &[(&str, &str, Option<f64>)]) -> Value {
    let present: Vec<&(&str, &str, Option<f64>)> = metrics.iter().filter(|m| m.2.is_some()).collect();
    let mut doc = Map::new();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["FunctionName"]],
                "Metrics": present.iter().map(|(name, unit, _)| json!({"Name": name, "Unit": unit})).collect::<Vec<_>>(),
            }],
        }),
    );
    doc.insert("FunctionName".into(), json!(function));
    for (name, _, value) in present {
        doc.insert((*name).into(), json!(value));
    }
    Value::Object(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_lists_each_present_metric_once_with_its_value() {
        let doc = emf(
            "f",
            1,
            &[
                ("RefreshDuration", "Milliseconds", Some(12.0)),
                ("Staleness", "Seconds", None),
                ("Skipped", "Count", Some(0.0)),
            ],
        );
        let defs = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(defs["Namespace"], NAMESPACE);
        let names: Vec<&str> =
            defs["Metrics"].as_array().unwrap().iter().map(|m| m["Name"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["RefreshDuration", "Skipped"]);
        assert_eq!(doc["RefreshDuration"], 12.0);
        assert!(doc.get("Staleness").is_none());
        assert_eq!(doc["FunctionName"], "f");
    }
}
