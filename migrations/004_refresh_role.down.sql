-- Rollback of 004_refresh_role: refresh_job_progress() runs with its caller's rights again and
-- anyone may call it, as at 002/003. The refresh role (the session's scanner_migrator.refresh_role,
-- which the migrator sets from REFRESH_ROLE; scanner_refresh, what the first text of 004 created,
-- when unset) loses what the migrator granted it in this database, and goes too unless another
-- database on the same server still grants it something (then it stays, and a notice says so).
-- scanner_refresh, if it is not that role, loses its EXECUTE here as well (the first 004 granted it).
DO $$
DECLARE
    configured text := coalesce(nullif(current_setting('scanner_migrator.refresh_role', true), ''), 'scanner_refresh');
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY[configured, 'scanner_refresh'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION refresh_job_progress() FROM %I', r);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = configured) THEN
        EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM %I', current_database(), configured);
        BEGIN
            EXECUTE format('DROP ROLE %I', configured);
        EXCEPTION WHEN dependent_objects_still_exist THEN
            RAISE NOTICE '% is kept: another database on this server still grants it privileges', configured;
        END;
    END IF;
END
$$;
GRANT EXECUTE ON FUNCTION refresh_job_progress() TO PUBLIC;
ALTER FUNCTION refresh_job_progress() RESET search_path;
ALTER FUNCTION refresh_job_progress() SECURITY INVOKER;
