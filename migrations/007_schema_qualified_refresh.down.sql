-- Rollback of 007_schema_qualified_refresh: refresh_job_progress() as 005 made it (its tables
-- qualified by public, whatever schema it lives in), and scanner_refresh's own USAGE on this schema
-- revoked where one was granted to it directly (in public it keeps the USAGE everyone has).
CREATE OR REPLACE FUNCTION refresh_job_progress() RETURNS jsonb
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
            DELETE FROM public.job_progress_deltas RETURNING *
        ), kept AS (
            SELECT t.*
              FROM taken AS t
              LEFT JOIN public.job_progress_counts AS c ON c.job_id = t.job_id
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
            INSERT INTO public.job_progress_counts AS c (job_id, total_objects, queued_count, processing_count,
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
        DELETE FROM public.job_progress_counts AS c
         WHERE c.job_id = ANY (emptied) AND c.total_objects = 0 AND c.queued_count = 0
           AND c.processing_count = 0 AND c.succeeded_count = 0 AND c.failed_count = 0;
        SELECT count(*) INTO n_pending FROM public.job_progress_deltas;
        SELECT count(*) INTO n_known FROM public.jobs;
        RETURN jsonb_build_object(
            'delta_rows', n_rows,
            'jobs_touched', n_jobs,
            'fold_ms', round((extract(epoch FROM clock_timestamp() - started) * 1000)::numeric, 3),
            'pending_after', n_pending,
            'jobs', n_known,
            'staleness_s', 0
        );
    END;
    $fold$;
DO $down$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_namespace AS n, aclexplode(n.nspacl) AS a
                WHERE n.nspname = current_schema() AND a.privilege_type = 'USAGE'
                  AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = 'scanner_refresh')) THEN
        EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM scanner_refresh', current_schema());
    END IF;
END
$down$;
