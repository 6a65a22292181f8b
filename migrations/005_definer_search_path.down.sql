-- Rollback of 005_definer_search_path: 004's search_path again (without pg_temp: verify reports
-- refresh_job_progress() as unsafe until 005 is applied again).
ALTER FUNCTION refresh_job_progress() SET search_path = pg_catalog, public;
