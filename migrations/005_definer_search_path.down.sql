-- Rollback of 005_definer_search_path: 003's body of refresh_job_progress(), verbatim (on PostgreSQL 13
-- with the cast 003 makes there: extract() returns double precision before 14), with 004's attributes
-- (SECURITY DEFINER, search_path = pg_catalog, public). verify names it unsafe until 005 is applied again.
DO $down$
DECLARE
    fold_body text;
BEGIN
    fold_body := $fold$
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
            DELETE FROM job_progress_deltas RETURNING *
        ), kept AS (
            SELECT t.*
              FROM taken AS t
              LEFT JOIN job_progress_counts AS c ON c.job_id = t.job_id
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
            INSERT INTO job_progress_counts AS c (job_id, total_objects, queued_count, processing_count,
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
        DELETE FROM job_progress_counts AS c
         WHERE c.job_id = ANY (emptied) AND c.total_objects = 0 AND c.queued_count = 0
           AND c.processing_count = 0 AND c.succeeded_count = 0 AND c.failed_count = 0;
        SELECT count(*) INTO n_pending FROM job_progress_deltas;
        SELECT count(*) INTO n_known FROM jobs;
        RETURN jsonb_build_object(
            'delta_rows', n_rows,
            'jobs_touched', n_jobs,
            'fold_ms', round(extract(epoch FROM clock_timestamp() - started) * 1000, 3),
            'pending_after', n_pending,
            'jobs', n_known,
            'staleness_s', 0
        );
    END;
    $fold$;
    IF current_setting('server_version_num')::int < 140000 THEN
        fold_body := replace(fold_body, 'extract(epoch FROM clock_timestamp() - started) * 1000',
                             'extract(epoch FROM clock_timestamp() - started)::numeric * 1000');
    END IF;
    EXECUTE format('CREATE OR REPLACE FUNCTION refresh_job_progress() RETURNS jsonb LANGUAGE plpgsql '
                   'SECURITY DEFINER SET search_path = pg_catalog, public AS %L', fold_body);
END;
$down$;
