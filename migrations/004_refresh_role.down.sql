-- Rollback of 004_refresh_role: refresh_job_progress() runs with its caller's rights again and
-- anyone may call it, as at 002/003. The role goes too, unless another database on the same
-- server still grants it something (then it stays, and a notice says so).
REVOKE EXECUTE ON FUNCTION refresh_job_progress() FROM scanner_refresh;
GRANT EXECUTE ON FUNCTION refresh_job_progress() TO PUBLIC;
ALTER FUNCTION refresh_job_progress() RESET search_path;
ALTER FUNCTION refresh_job_progress() SECURITY INVOKER;
DO $$
BEGIN
    DROP ROLE IF EXISTS scanner_refresh;
EXCEPTION WHEN dependent_objects_still_exist THEN
    RAISE NOTICE 'scanner_refresh is kept: another database on this server still grants it privileges';
END
$$;
