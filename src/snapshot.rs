//! The RDS snapshot taken before applying pending migrations.

use std::time::Instant;

use crate::{
    config::SecretSettings,
    credentials::Aws,
    deadline::Deadline,
    error::{Error, Result},
};

/// A snapshot identifier that names the database and what it precedes (`001_add_execution_arn`,
/// `rollback-of-002_optimize_for_scale`), e.g.
/// `scanner-migrator-scanner-db-before-001-add-execution-arn-20261125t070000z`. Snapshot identifiers
/// are unique per account and region, so two databases migrated in the same second need the
/// database's name in them.
pub fn snapshot_id(db: &str, next: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let raw = format!("scanner-migrator-{db}-before-{next}-{}", now.format("%Y%m%dt%H%M%Sz"));
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

/// The tag every snapshot of ours carries.
pub const CREATED_BY: (&str, &str) = ("created-by", "scanner-migrator");
/// The tag naming what the snapshot precedes (`001_add_execution_arn`).
pub const BEFORE: &str = "before-migration";
/// The tag set when a snapshot has let a change through: it is never reused after that (after a
/// rollback and a new migrate, the old snapshot would be the wrong restore point).
pub const USED: &str = "scanner-migrator-used";

/// What the RDS API says about one snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// Its identifier.
    pub id: String,
    /// Its ARN, for tagging.
    pub arn: Option<String>,
    /// `creating`, `available`, `failed`, `incompatible-restore`, ...
    pub status: String,
    /// When it was started (None while RDS has not said).
    pub created: Option<aws_sdk_rds::primitives::DateTime>,
    /// Its tags.
    pub tags: Vec<(String, String)>,
}

impl Found {
    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Ours, for `next`, and not yet used to let a change through.
    pub fn is_reusable_for(&self, next: &str) -> bool {
        self.tag(CREATED_BY.0) == Some(CREATED_BY.1)
            && self.tag(BEFORE) == Some(next)
            && self.tag(USED).is_none()
            && !matches!(self.status.as_str(), "deleting" | "deleted")
    }
}

/// The snapshot to reuse for `next` among `found`: the newest one that is ours, for `next` and unused.
pub fn pick<'a>(found: &'a [Found], next: &str) -> Option<&'a Found> {
    found.iter().filter(|f| f.is_reusable_for(next)).max_by(|a, b| {
        // One still being created has no time yet: it is the newest.
        let t = |f: &Found| f.created.map_or(f64::MAX, |d| d.as_secs_f64());
        t(a).total_cmp(&t(b))
    })
}

/// The database a snapshot is of.
enum Source<'a> {
    Instance(&'a str),
    Cluster(&'a str),
}

impl Source<'_> {
    fn name(&self) -> &str {
        match self {
            Source::Instance(n) | Source::Cluster(n) => n,
        }
    }

    fn of(db: &SecretSettings) -> Result<Source<'_>> {
        match (&db.instance_id, &db.cluster_id) {
            (Some(i), _) => Ok(Source::Instance(i)),
            (None, Some(c)) => Ok(Source::Cluster(c)),
            (None, None) => Err(Error::Config {
                var: "SNAPSHOT_BEFORE_MIGRATE".into(),
                problem: "needs DB_INSTANCE_IDENTIFIER or DB_CLUSTER_IDENTIFIER to know what to snapshot".into(),
            }),
        }
    }
}

fn tags(list: &[aws_sdk_rds::types::Tag]) -> Vec<(String, String)> {
    list.iter().map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string())).collect()
}

/// Our manual snapshots of the database.
async fn list(aws: &Aws, source: &Source<'_>, deadline: Deadline) -> Result<Vec<Found>> {
    let api = |what: &str, cause: String| Error::RdsApi(format!("{what}: {cause}"));
    match source {
        Source::Instance(id) => {
            let what = format!("DescribeDBSnapshots of {id}");
            let pages = aws
                .rds
                .describe_db_snapshots()
                .db_instance_identifier(*id)
                .snapshot_type("manual")
                .into_paginator()
                .items()
                .send()
                .collect::<std::result::Result<Vec<_>, _>>();
            let items = deadline
                .within(None, pages)
                .await
                .map_err(|cut| api(&what, format!("no answer {cut}")))?
                .map_err(|e| api(&what, crate::error::sdk_cause(&e)))?;
            Ok(items
                .iter()
                .map(|s| Found {
                    id: s.db_snapshot_identifier().unwrap_or_default().to_string(),
                    arn: s.db_snapshot_arn().map(str::to_string),
                    status: s.status().unwrap_or("unknown").to_string(),
                    created: s.snapshot_create_time().copied(),
                    tags: tags(s.tag_list()),
                })
                .collect())
        }
        Source::Cluster(id) => {
            let what = format!("DescribeDBClusterSnapshots of {id}");
            let pages = aws
                .rds
                .describe_db_cluster_snapshots()
                .db_cluster_identifier(*id)
                .snapshot_type("manual")
                .into_paginator()
                .items()
                .send()
                .collect::<std::result::Result<Vec<_>, _>>();
            let items = deadline
                .within(None, pages)
                .await
                .map_err(|cut| api(&what, format!("no answer {cut}")))?
                .map_err(|e| api(&what, crate::error::sdk_cause(&e)))?;
            Ok(items
                .iter()
                .map(|s| Found {
                    id: s.db_cluster_snapshot_identifier().unwrap_or_default().to_string(),
                    arn: s.db_cluster_snapshot_arn().map(str::to_string),
                    status: s.status().unwrap_or("unknown").to_string(),
                    created: s.snapshot_create_time().copied(),
                    tags: tags(s.tag_list()),
                })
                .collect())
        }
    }
}

/// A snapshot ready to migrate behind.
#[derive(Debug, Clone)]
pub struct Taken {
    /// Its identifier.
    pub id: String,
    /// Its ARN, for tagging it as used.
    pub arn: Option<String>,
}

/// The snapshot that makes it safe to change the schema before `next`: the one an earlier
/// invocation started for `next` (found by its tags), or a new one. Waits for it with the SDK's
/// waiter until `deadline`; still not available then: [`Error::SnapshotPending`] with its id, and
/// the next invocation picks it up. A failed or `incompatible-*` one is an error naming it.
/// Not yet tagged as used: that waits until a change has gone through ([`mark_used`]).
pub async fn ensure(aws: &Aws, db: &SecretSettings, next: &str, deadline: Instant) -> Result<Taken> {
    let source = Source::of(db)?;
    let bound = Deadline::at(deadline);
    let found = list(aws, &source, bound).await?;
    let (id, arn, status) = match pick(&found, next) {
        Some(f) => {
            tracing::info!(step = "snapshot", snapshot = %f.id, status = %f.status, "reusing the snapshot taken for {next}");
            (f.id.clone(), f.arn.clone(), f.status.clone())
        }
        None => {
            let id = snapshot_id(source.name(), next, chrono::Utc::now());
            let arn = start(aws, &source, &id, next, bound).await?;
            (id, arn, "creating".to_string())
        }
    };
    if status == "failed" || status.starts_with("incompatible") {
        return Err(unusable(&id, &status));
    }
    if status != "available" {
        wait(aws, &source, &id, &status, deadline).await?;
    }
    tracing::info!(step = "snapshot", snapshot = %id, "snapshot available");
    let arn = match arn {
        Some(arn) => Some(arn),
        None => list(aws, &source, bound).await?.into_iter().find(|f| f.id == id).and_then(|f| f.arn),
    };
    Ok(Taken { id, arn })
}

fn unusable(id: &str, status: &str) -> Error {
    Error::SnapshotFailed {
        snapshot: id.to_string(),
        cause: format!(
            "is {status}; nothing was migrated. Delete it (aws rds delete-db-snapshot / delete-db-cluster-snapshot) \
             so the next invocation takes a new one, or migrate with SNAPSHOT_BEFORE_MIGRATE=false"
        ),
    }
}

/// Starts a snapshot tagged for `next`; returns its ARN.
async fn start(aws: &Aws, source: &Source<'_>, id: &str, next: &str, deadline: Deadline) -> Result<Option<String>> {
    let failed = |cause: String| Error::SnapshotFailed { snapshot: id.to_string(), cause };
    let tag = |k: &str, v: &str| aws_sdk_rds::types::Tag::builder().key(k).value(v).build();
    let tags = vec![tag(CREATED_BY.0, CREATED_BY.1), tag(BEFORE, next)];
    tracing::info!(step = "snapshot", snapshot = %id, "creating a snapshot before {next}");
    // Cut short, the request may still have been taken: the next invocation finds it by its tags.
    let request = async {
        match source {
            Source::Instance(instance) => aws
                .rds
                .create_db_snapshot()
                .db_instance_identifier(*instance)
                .db_snapshot_identifier(id)
                .set_tags(Some(tags))
                .send()
                .await
                .map(|o| o.db_snapshot().and_then(|s| s.db_snapshot_arn()).map(str::to_string))
                .or_else(|e| match e.as_service_error() {
                    // Our own request, retried by the SDK after a lost answer: it is there (the
                    // identifier names this database and the second, and the migration lock is held).
                    Some(s) if s.is_db_snapshot_already_exists_fault() => Ok(None),
                    _ => Err(failed(format!("CreateDBSnapshot of {instance}: {}", crate::error::sdk_cause(&e)))),
                }),
            Source::Cluster(cluster) => aws
                .rds
                .create_db_cluster_snapshot()
                .db_cluster_identifier(*cluster)
                .db_cluster_snapshot_identifier(id)
                .set_tags(Some(tags))
                .send()
                .await
                .map(|o| o.db_cluster_snapshot().and_then(|s| s.db_cluster_snapshot_arn()).map(str::to_string))
                .or_else(|e| match e.as_service_error() {
                    Some(s) if s.is_db_cluster_snapshot_already_exists_fault() => Ok(None),
                    _ => Err(failed(format!("CreateDBClusterSnapshot of {cluster}: {}", crate::error::sdk_cause(&e)))),
                }),
        }
    };
    deadline.within(None, request).await.map_err(|cut| failed(format!("the RDS API gave no answer {cut}")))?
}

/// The SDK's waiter, for as long as the deadline allows.
async fn wait(aws: &Aws, source: &Source<'_>, id: &str, status: &str, deadline: Instant) -> Result<()> {
    use aws_sdk_rds::client::Waiters;
    let started = Instant::now();
    let max_wait = deadline.saturating_duration_since(started);
    let pending = |status: &str| Error::SnapshotPending {
        snapshot: id.to_string(),
        status: status.to_string(),
        waited_s: started.elapsed().as_secs_f64(),
    };
    if max_wait.is_zero() {
        return Err(pending(status));
    }
    tracing::info!(step = "snapshot", snapshot = %id, status, max_wait_s = max_wait.as_secs_f64(), "waiting for the snapshot");
    // Err((status of the final poll, other cause)); (None, None) is the time running out.
    let result: std::result::Result<(), (Option<String>, Option<String>)> = match source {
        Source::Instance(_) => {
            use aws_sdk_rds::waiters::db_snapshot_available::WaitUntilDbSnapshotAvailableError as E;
            match aws.rds.wait_until_db_snapshot_available().db_snapshot_identifier(id).wait(max_wait).await {
                Ok(_) => Ok(()),
                Err(E::ExceededMaxWait(_)) => Err((None, None)),
                Err(E::FailureState(f)) => Err((
                    f.final_poll()
                        .as_result()
                        .ok()
                        .and_then(|o| o.db_snapshots().first()?.status().map(str::to_string)),
                    Some("the waiter stopped on a failure state".into()),
                )),
                Err(other) => Err((None, Some(crate::error::sdk_cause(&other)))),
            }
        }
        Source::Cluster(_) => {
            use aws_sdk_rds::waiters::db_cluster_snapshot_available::WaitUntilDbClusterSnapshotAvailableError as E;
            let waiter = aws.rds.wait_until_db_cluster_snapshot_available().db_cluster_snapshot_identifier(id);
            match waiter.wait(max_wait).await {
                Ok(_) => Ok(()),
                Err(E::ExceededMaxWait(_)) => Err((None, None)),
                Err(E::FailureState(f)) => Err((
                    f.final_poll()
                        .as_result()
                        .ok()
                        .and_then(|o| o.db_cluster_snapshots().first()?.status().map(str::to_string)),
                    Some("the waiter stopped on a failure state".into()),
                )),
                Err(other) => Err((None, Some(crate::error::sdk_cause(&other)))),
            }
        }
    };
    match result {
        Ok(()) => Ok(()),
        Err((Some(status), _)) => Err(unusable(id, &status)),
        Err((None, Some(cause))) if started.elapsed() >= max_wait => {
            tracing::warn!(step = "snapshot", snapshot = %id, cause, "the last poll failed as the time ran out");
            Err(pending(status))
        }
        Err((None, Some(cause))) => Err(Error::SnapshotFailed { snapshot: id.to_string(), cause }),
        Err((None, None)) => Err(pending(status)),
    }
}

/// Tags the snapshot as having let a change through. Best effort: a failure costs a new snapshot
/// next time, nothing else.
pub async fn mark_used(aws: &Aws, taken: &Taken, deadline: Deadline) {
    let id = &taken.id;
    let Some(arn) = taken.arn.as_deref() else {
        tracing::warn!(step = "snapshot", snapshot = %id, "no ARN to tag the snapshot as used");
        return;
    };
    let tag = aws_sdk_rds::types::Tag::builder().key(USED).value(chrono::Utc::now().to_rfc3339()).build();
    let error = match deadline.within(None, aws.rds.add_tags_to_resource().resource_name(arn).tags(tag).send()).await {
        Ok(Ok(_)) => return,
        Ok(Err(e)) => crate::error::sdk_cause(&e),
        Err(cut) => format!("no answer {cut}"),
    };
    tracing::warn!(step = "snapshot", snapshot = %id, %error, "could not tag the snapshot as used");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::Migrations;

    fn found(id: &str, status: &str, secs: Option<f64>, tags: &[(&str, &str)]) -> Found {
        Found {
            id: id.into(),
            arn: None,
            status: status.into(),
            created: secs.map(aws_sdk_rds::primitives::DateTime::from_secs_f64),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn the_snapshot_picked_is_ours_for_this_migration_unused_and_newest() {
        let ours = [CREATED_BY, (BEFORE, "001_a")];
        let list = [
            found("old", "available", Some(1.0), &ours),
            found("newer", "available", Some(2.0), &ours),
            found("used", "available", Some(3.0), &[CREATED_BY, (BEFORE, "001_a"), (USED, "t")]),
            found("other-migration", "available", Some(4.0), &[CREATED_BY, (BEFORE, "002_b")]),
            found("someone-elses", "available", Some(5.0), &[(BEFORE, "001_a")]),
            found("going", "deleting", Some(6.0), &ours),
        ];
        assert_eq!(pick(&list, "001_a").map(|f| f.id.as_str()), Some("newer"));
        assert_eq!(pick(&list, "003_c"), None);
        let creating = [found("done", "available", Some(1.0), &ours), found("starting", "creating", None, &ours)];
        assert_eq!(
            pick(&creating, "001_a").map(|f| f.id.as_str()),
            Some("starting"),
            "one being created is the newest"
        );
        let failed = [found("broken", "failed", Some(1.0), &ours)];
        assert_eq!(pick(&failed, "001_a").map(|f| f.id.as_str()), Some("broken"), "picked, so that it is reported");
    }

    #[test]
    fn snapshot_ids_are_valid_rds_identifiers() {
        let m = Migrations::embedded().unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-25T07:00:00Z").unwrap().with_timezone(&chrono::Utc);
        let id = snapshot_id("Scanner_DB", &m.get(1).unwrap().label(), now);
        assert_eq!(id, "scanner-migrator-scanner-db-before-001-add-execution-arn-20261125t070000z");
        assert!(id.chars().next().unwrap().is_ascii_alphabetic() && !id.contains("--"));
    }
}
