-- Migration: 002_optimize_for_scale
-- Purpose: status queries on millions of objects: composite indexes, the job_progress
--          materialized view with pre-computed counts, helper views, and its refresh function.
-- Each statement runs on its own: the indexes on job_objects are built CONCURRENTLY so the
-- scanner's writes never stall, and every statement is idempotent so a run interrupted
-- part-way is completed by the next one.
-- migrate:no-transaction
-- verify: index idx_job_objects_job_status idx_job_objects_job_updated_at job_progress_job_id_key
-- verify: view job_progress(job_id, bucket, prefix, execution_arn, total_objects, queued_count, processing_count, succeeded_count, failed_count, last_object_update, refreshed_at)
-- verify: view active_jobs_progress(job_id, bucket, prefix, execution_arn, total_objects, queued_count, processing_count, succeeded_count, failed_count, percent_complete, last_object_update, refreshed_at)
-- verify: view job_statistics(total_jobs, active_jobs, total_objects, queued_count, processing_count, succeeded_count, failed_count, refreshed_at)
-- verify: function refresh_job_progress()

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_job_objects_job_status
    ON job_objects (job_id, status);

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_job_objects_job_updated_at
    ON job_objects (job_id, updated_at);

-- One row per job. Reading it costs a primary-key lookup instead of a COUNT over the job's objects.
CREATE MATERIALIZED VIEW IF NOT EXISTS job_progress AS
SELECT
    j.job_id,
    j.bucket,
    j.prefix,
    j.execution_arn,
    count(o.key)                                         AS total_objects,
    count(o.key) FILTER (WHERE o.status = 'queued')      AS queued_count,
    count(o.key) FILTER (WHERE o.status = 'processing')  AS processing_count,
    count(o.key) FILTER (WHERE o.status = 'succeeded')   AS succeeded_count,
    count(o.key) FILTER (WHERE o.status = 'failed')      AS failed_count,
    max(o.updated_at)                                    AS last_object_update,
    now()                                                AS refreshed_at
FROM jobs AS j
LEFT JOIN job_objects AS o ON o.job_id = j.job_id
GROUP BY j.job_id, j.bucket, j.prefix, j.execution_arn;

-- REFRESH MATERIALIZED VIEW CONCURRENTLY needs a unique index on the view. The view is
-- new (and empty or small) here, so it is not worth a concurrent build.
-- squawk-ignore require-concurrent-index-creation
CREATE UNIQUE INDEX IF NOT EXISTS job_progress_job_id_key ON job_progress (job_id);

CREATE OR REPLACE VIEW active_jobs_progress AS
SELECT
    job_id,
    bucket,
    prefix,
    execution_arn,
    total_objects,
    queued_count,
    processing_count,
    succeeded_count,
    failed_count,
    round(100.0 * (succeeded_count + failed_count) / nullif(total_objects, 0), 2) AS percent_complete,
    last_object_update,
    refreshed_at
FROM job_progress
WHERE queued_count + processing_count > 0;

CREATE OR REPLACE VIEW job_statistics AS
SELECT
    count(*)                                          AS total_jobs,
    count(*) FILTER (WHERE queued_count + processing_count > 0) AS active_jobs,
    coalesce(sum(total_objects), 0)::bigint           AS total_objects,
    coalesce(sum(queued_count), 0)::bigint            AS queued_count,
    coalesce(sum(processing_count), 0)::bigint        AS processing_count,
    coalesce(sum(succeeded_count), 0)::bigint         AS succeeded_count,
    coalesce(sum(failed_count), 0)::bigint            AS failed_count,
    max(refreshed_at)                                 AS refreshed_at
FROM job_progress;

-- Readers are never blocked: CONCURRENTLY, except the first time, when the view has never
-- been populated and CONCURRENTLY is not allowed.
CREATE OR REPLACE FUNCTION refresh_job_progress() RETURNS VOID
LANGUAGE plpgsql
AS $$
BEGIN
    IF (SELECT c.relispopulated FROM pg_class AS c WHERE c.oid = 'job_progress'::regclass) THEN
        REFRESH MATERIALIZED VIEW CONCURRENTLY job_progress;
    ELSE
        REFRESH MATERIALIZED VIEW job_progress;
    END IF;
END;
$$;
