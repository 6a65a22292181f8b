-- Rollback of 002_optimize_for_scale: the guide's rollback, plus the refresh function, which
-- would otherwise be left pointing at a view that no longer exists.
-- migrate:no-transaction
-- Dropping these objects is the point of a rollback; the scanner's API must be on a version without them.
-- squawk-ignore-file ban-drop-function, ban-drop-view
DROP FUNCTION IF EXISTS refresh_job_progress();
DROP MATERIALIZED VIEW IF EXISTS job_progress CASCADE;
DROP VIEW IF EXISTS active_jobs_progress;
DROP VIEW IF EXISTS job_statistics;
DROP INDEX CONCURRENTLY IF EXISTS idx_job_objects_job_status;
DROP INDEX CONCURRENTLY IF EXISTS idx_job_objects_job_updated_at;
