-- Migration: 004_refresh_role
-- Purpose: the scheduled refresh logs in as its own role, scanner_refresh, which can do one thing:
--          run refresh_job_progress(). The function runs with its owner's rights and a fixed
--          search_path, so the role needs no privilege on any table. On RDS with IAM database
--          authentication the role logs in with a token (rds_iam); otherwise the migrate function
--          gives it a password from REFRESH_SECRET_ARN after migrating (a SCRAM verifier, never the
--          plaintext). Works whatever refresh_job_progress() returns (void at 002, jsonb at 003).
-- Roles belong to the whole server: created only when missing, tolerating a migration of another
-- database on the same server that creates it at the same moment.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'scanner_refresh') THEN
        BEGIN
            CREATE ROLE scanner_refresh LOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    -- rds_iam exists only on RDS (and where tests emulate it).
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_iam')
       AND NOT pg_has_role('scanner_refresh', 'rds_iam', 'MEMBER') THEN
        BEGIN
            GRANT rds_iam TO scanner_refresh;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;

ALTER FUNCTION refresh_job_progress() SECURITY DEFINER;
ALTER FUNCTION refresh_job_progress() SET search_path = pg_catalog, public;
REVOKE EXECUTE ON FUNCTION refresh_job_progress() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION refresh_job_progress() TO scanner_refresh;
