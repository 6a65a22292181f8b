-- Migration: 005_definer_search_path
-- Purpose: refresh_job_progress() runs with its owner's rights (004), so nobody allowed only to
--          call it may choose what its names mean. 004 pinned `search_path = pg_catalog, public`:
--   * pg_temp not named is searched FIRST for tables, so scanner_refresh could create a temporary
--     job_progress_deltas, fill it with forged deltas, and have the fold (as the owner) write them
--     into job_progress_counts;
--   * public in the path: where others may CREATE in it (PUBLIC may, by default, before PostgreSQL
--     15), an operator planted there with a closer type match (`*`(numeric, integer), used for
--     fold_ms) runs with the owner's rights inside the fold.
-- PostgreSQL, CREATE FUNCTION, "Writing SECURITY DEFINER Functions Safely"
-- (https://www.postgresql.org/docs/current/sql-createfunction.html#SQL-CREATEFUNCTION-SECURITY):
-- search_path should exclude any schema writable by untrusted users; the temporary-table schema
-- "is searched first by default, and is normally writable by anyone. A secure arrangement can be
-- obtained by forcing the temporary schema to be searched last. To do this, write pg_temp as the
-- last entry in search_path." pg_temp is never searched for functions or operators.
-- So: search_path = pg_catalog, pg_temp, and the fold names its tables as public.<table> (where
-- 004's path already looked for them). Functions, operators and types resolve in pg_catalog only;
-- a table name cannot be taken over in public (ours exist) nor in pg_temp (searched last). The body
-- is 003's with only those names qualified (and fold_ms cast to numeric, so it runs on 13, where
-- extract() returns double precision); CREATE OR REPLACE keeps the owner and the grants.
-- It is the only SECURITY DEFINER function the migrations own: 003's capture trigger functions run
-- with the writer's rights, and its backfill procedure is dropped when 003 ends.
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
