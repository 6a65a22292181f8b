//! The RDS snapshot taken before applying pending migrations.

use std::time::{Duration, Instant};

use crate::{
    config::SecretSettings,
    credentials::Aws,
    error::{Error, Result},
};

/// A snapshot identifier that says what it precedes (`001_add_execution_arn`,
/// `rollback-of-002_optimize_for_scale`), e.g.
/// `scanner-migrator-before-001-add-execution-arn-20261125t070000z`.
pub fn snapshot_id(next: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let raw = format!("scanner-migrator-before-{next}-{}", now.format("%Y%m%dt%H%M%Sz"));
    // RDS identifiers: letters, digits and single hyphens, at most 255 characters.
    let mut id = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' };
        if !(c == '-' && id.ends_with('-')) {
            id.push(c);
        }
    }
    id.truncate(255);
    id.trim_end_matches('-').to_string()
}

/// Creates the snapshot and waits until it is available or `deadline` passes.
pub async fn create(aws: &Aws, db: &SecretSettings, next: &str, deadline: Instant) -> Result<String> {
    let id = snapshot_id(next, chrono::Utc::now());
    let failed = |cause: String| Error::SnapshotFailed { snapshot: id.clone(), cause };
    let tag = |k: &str, v: &str| aws_sdk_rds::types::Tag::builder().key(k).value(v).build();
    let tags = [tag("created-by", "scanner-migrator"), tag("before-migration", next)];
    tracing::info!(step = "snapshot", snapshot = %id, "creating snapshot before migrating");
    if let Some(instance) = &db.instance_id {
        aws.rds
            .create_db_snapshot()
            .db_instance_identifier(instance)
            .db_snapshot_identifier(&id)
            .set_tags(Some(tags.to_vec()))
            .send()
            .await
            .map_err(|e| failed(format!("CreateDBSnapshot of {instance}: {}", crate::error::sdk_cause(&e))))?;
    } else if let Some(cluster) = &db.cluster_id {
        aws.rds
            .create_db_cluster_snapshot()
            .db_cluster_identifier(cluster)
            .db_cluster_snapshot_identifier(&id)
            .set_tags(Some(tags.to_vec()))
            .send()
            .await
            .map_err(|e| failed(format!("CreateDBClusterSnapshot of {cluster}: {}", crate::error::sdk_cause(&e))))?;
    } else {
        return Err(Error::Config {
            var: "SNAPSHOT_BEFORE_MIGRATE".into(),
            problem: "needs DB_INSTANCE_IDENTIFIER or DB_CLUSTER_IDENTIFIER to know what to snapshot".into(),
        });
    }
    let mut pause = Duration::from_secs(1);
    loop {
        let status = if db.instance_id.is_some() {
            let out = aws
                .rds
                .describe_db_snapshots()
                .db_snapshot_identifier(&id)
                .send()
                .await
                .map_err(|e| failed(format!("DescribeDBSnapshots: {}", crate::error::sdk_cause(&e))))?;
            out.db_snapshots().first().and_then(|s| s.status()).unwrap_or("unknown").to_string()
        } else {
            let out = aws
                .rds
                .describe_db_cluster_snapshots()
                .db_cluster_snapshot_identifier(&id)
                .send()
                .await
                .map_err(|e| failed(format!("DescribeDBClusterSnapshots: {}", crate::error::sdk_cause(&e))))?;
            out.db_cluster_snapshots().first().and_then(|s| s.status()).unwrap_or("unknown").to_string()
        };
        match status.as_str() {
            "available" => {
                tracing::info!(step = "snapshot", snapshot = %id, "snapshot available");
                return Ok(id);
            }
            "failed" | "deleted" | "deleting" => return Err(failed(format!("status {status}; nothing was migrated"))),
            _ => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(failed(format!(
                "still {status} when the time ran out; nothing was migrated. Invoke again once it is available, \
                 or migrate with SNAPSHOT_BEFORE_MIGRATE=false"
            )));
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::Migrations;

    #[test]
    fn snapshot_ids_are_valid_rds_identifiers() {
        let m = Migrations::embedded().unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-25T07:00:00Z").unwrap().with_timezone(&chrono::Utc);
        let id = snapshot_id(&m.get(1).unwrap().label(), now);
        assert_eq!(id, "scanner-migrator-before-001-add-execution-arn-20261125t070000z");
        assert!(id.chars().next().unwrap().is_ascii_alphabetic() && !id.contains("--"));
    }
}
