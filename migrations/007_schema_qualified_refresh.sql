-- Migration: 007_schema_qualified_refresh
-- Purpose: the scanner's tables may live in a schema other than public (DB_SCHEMA, README "The
--          schema"). 005 hardened refresh_job_progress() (search_path = pg_catalog, pg_temp, every
--          table schema-qualified) with the qualifier `public.` written out, and 004 let
--          scanner_refresh rely on public's USAGE for everyone: in another schema the fold looks for
--          public.job_progress_deltas, which is not there (or is someone else's), and the role
--          cannot reach the schema. This re-creates the fold with its tables qualified by the schema
--          it is created in (current_schema(), which the migrator pins to the configured schema),
--          the body otherwise 005's character for character (in public it is 005's exactly), and
--          gives scanner_refresh USAGE on that schema where it has none (in public it has it through
--          PUBLIC, so nothing is granted there).
-- Applied migrations are immutable, so 004 and 005 stay as they were; CREATE OR REPLACE keeps the
-- owner, SECURITY DEFINER's grants and the EXECUTE grant to scanner_refresh.
DO $migrate$
DECLARE
    nsp text := format('%I', current_schema());
BEGIN
    EXECUTE format($ddl$CREATE OR REPLACE FUNCTION %1$s.refresh_job_progress() RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fold$
    DECLARE
        started   timestamptz := clock_timestamp();
        n_rows    bigint;
        n_jobs    bigint;
        emptied   uuid[];
        n_pending bigint;
        n_known   bigint;
    BEGIN
        -- One fold at a time, and never in the middle of a job's backfill.
        PERFORM pg_advisory_xact_lock(7355608003);
        WITH taken AS (
            DELETE FROM %1$s.job_progress_deltas RETURNING *
        ), kept AS (
            SELECT t.*
              FROM taken AS t
              LEFT JOIN %1$s.job_progress_counts AS c ON c.job_id = t.job_id
             WHERE c.backfill_snapshot IS NULL OR NOT pg_visible_in_snapshot(t.xid, c.backfill_snapshot)
        ), per_job AS (
            SELECT t.job_id,
                   coalesce(sum(k.total_objects), 0)    AS total_objects,
                   coalesce(sum(k.queued_count), 0)     AS queued_count,
                   coalesce(sum(k.processing_count), 0) AS processing_count,
                   coalesce(sum(k.succeeded_count), 0)  AS succeeded_count,
                   coalesce(sum(k.failed_count), 0)     AS failed_count
              FROM (SELECT DISTINCT job_id FROM taken) AS t
              LEFT JOIN kept AS k ON k.job_id = t.job_id
             GROUP BY t.job_id
        ), upserted AS (
            INSERT INTO %1$s.job_progress_counts AS c (job_id, total_objects, queued_count, processing_count,
                                                  succeeded_count, failed_count)
            SELECT job_id, total_objects, queued_count, processing_count, succeeded_count, failed_count
              FROM per_job
            ON CONFLICT (job_id) DO UPDATE
               SET total_objects     = c.total_objects + excluded.total_objects,
                   queued_count      = c.queued_count + excluded.queued_count,
                   processing_count  = c.processing_count + excluded.processing_count,
                   succeeded_count   = c.succeeded_count + excluded.succeeded_count,
                   failed_count      = c.failed_count + excluded.failed_count,
                   -- every delta this job's backfill already counted was committed before it, so this
                   -- fold has seen (and dropped) them all
                   backfill_snapshot = NULL,
                   folded_at         = now()
            RETURNING c.job_id, c.total_objects = 0 AND c.queued_count = 0 AND c.processing_count = 0
                      AND c.succeeded_count = 0 AND c.failed_count = 0 AS empty
        )
        SELECT (SELECT count(*) FROM taken), (SELECT count(*) FROM upserted),
               (SELECT array_agg(u.job_id) FROM upserted AS u WHERE u.empty)
          INTO n_rows, n_jobs, emptied;
        -- A row of zeros says what no row says; dropping it keeps deleted jobs from piling up.
        DELETE FROM %1$s.job_progress_counts AS c
         WHERE c.job_id = ANY (emptied) AND c.total_objects = 0 AND c.queued_count = 0
           AND c.processing_count = 0 AND c.succeeded_count = 0 AND c.failed_count = 0;
        SELECT count(*) INTO n_pending FROM %1$s.job_progress_deltas;
        SELECT count(*) INTO n_known FROM %1$s.jobs;
        RETURN jsonb_build_object(
            'delta_rows', n_rows,
            'jobs_touched', n_jobs,
            'fold_ms', round((extract(epoch FROM clock_timestamp() - started) * 1000)::numeric, 3),
            'pending_after', n_pending,
            'jobs', n_known,
            'staleness_s', 0
        );
    END;
    $fold$
$ddl$, nsp);
    -- Only where 004 made the role (a deployment whose refresh role is made elsewhere grants it there).
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'scanner_refresh')
       AND NOT has_schema_privilege('scanner_refresh', current_schema(), 'USAGE') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %s TO scanner_refresh', nsp);
    END IF;
END
$migrate$;
