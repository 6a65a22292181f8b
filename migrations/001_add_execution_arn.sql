-- Migration: 001_add_execution_arn
-- Purpose: track the Step Functions execution of each job.
-- The index is built CONCURRENTLY so the scanner keeps writing to jobs meanwhile,
-- and that cannot run inside a transaction block.
-- migrate:no-transaction
-- verify: column jobs.execution_arn
-- verify: index idx_jobs_execution_arn

ALTER TABLE jobs ADD COLUMN IF NOT EXISTS execution_arn text;

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_jobs_execution_arn ON jobs (execution_arn);
