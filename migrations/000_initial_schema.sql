-- Migration: 000_initial_schema
-- Purpose: the base tables that init_database.sh used to create: one row per scan job,
--          one row per S3 object of a job.
-- verify: column jobs.job_id jobs.bucket jobs.prefix jobs.created_at jobs.updated_at
-- verify: column job_objects.job_id job_objects.bucket job_objects.key job_objects.status job_objects.updated_at
-- verify: index jobs_pkey job_objects_pkey

CREATE TABLE IF NOT EXISTS jobs (
    job_id     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    bucket     text NOT NULL,
    prefix     text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The scanner upserts on (job_id, bucket, key): ON CONFLICT ... DO UPDATE SET status = ...
CREATE TABLE IF NOT EXISTS job_objects (
    job_id     uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    bucket     text NOT NULL,
    key        text NOT NULL,
    etag       text,
    size_bytes bigint CHECK (size_bytes >= 0),
    status     text NOT NULL DEFAULT 'queued'
               CHECK (status IN ('queued', 'processing', 'succeeded', 'failed')),
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, bucket, key)
);
