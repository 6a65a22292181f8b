-- Rollback of 002_optimize_for_scale: the guide's rollback, plus the refresh function, which
-- would otherwise be left pointing at a view that no longer exists. No CASCADE: a view of the
-- user's over job_progress stops the rollback, before anything is dropped, with its name.
-- migrate:no-transaction
-- Dropping these objects is the point of a rollback; the scanner's API must be on a version without them.
-- squawk-ignore-file ban-drop-function, ban-drop-view
DO $$
DECLARE
    dependents text;
BEGIN
    SELECT string_agg(DISTINCT v.oid::regclass::text, ', ') INTO dependents
      FROM pg_depend AS d
      JOIN pg_rewrite AS r ON r.oid = d.objid
      JOIN pg_class AS v ON v.oid = r.ev_class
     WHERE d.classid = 'pg_rewrite'::regclass
       AND d.refobjid = to_regclass('job_progress')
       AND v.oid <> to_regclass('job_progress')
       AND v.oid NOT IN (coalesce(to_regclass('active_jobs_progress'), 0), coalesce(to_regclass('job_statistics'), 0));
    IF dependents IS NOT NULL THEN
        RAISE EXCEPTION 'cannot roll back 002: % depends on job_progress, which the rollback drops', dependents
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'drop or change that view first; a rollback never drops objects it did not create';
    END IF;
END
$$;
DROP VIEW IF EXISTS active_jobs_progress;
DROP VIEW IF EXISTS job_statistics;
DROP FUNCTION IF EXISTS refresh_job_progress();
DROP MATERIALIZED VIEW IF EXISTS job_progress;
DROP INDEX CONCURRENTLY IF EXISTS idx_job_objects_job_status;
DROP INDEX CONCURRENTLY IF EXISTS idx_job_objects_job_updated_at;
