-- Migration: 004_refresh_role
-- Purpose: the scheduled refresh logs in as its own role, which can do one thing: run
--          refresh_job_progress(). The function runs with its owner's rights and a fixed
--          search_path, so that role needs no privilege on any table. Works whatever
--          refresh_job_progress() returns (void at 002, jsonb at 003).
-- The role itself is not made here: it belongs to the whole server, while its name (REFRESH_ROLE,
-- one per database, so that two databases on one server never share a login) and its login mode
-- (IAM token or password) are the deployment's settings. After every migrate the migrator brings
-- the configured role to what it needs in this database (src/refresh_role.rs): it exists, may
-- connect here and run this function, is a member of rds_iam exactly when it logs in with an IAM
-- token, and with REFRESH_SECRET_ARN has that secret's password.
-- The first text of this file created scanner_refresh here, granted it EXECUTE, and granted it
-- rds_iam wherever rds_iam exists, whatever its login mode (on RDS a member of rds_iam cannot log
-- in with a password). A database that applied it keeps what it did; the migrator's convergence
-- then corrects it to the settings (revoking rds_iam for password auth, moving the grant to another
-- REFRESH_ROLE) and says what it changed. The function itself is left as the first text left it:
-- migrate:replaces-checksum 73c06392c91216bd26f8717221625430183886e7ba12a3fc2ed6f6cb979a4a08
ALTER FUNCTION refresh_job_progress() SECURITY DEFINER;
ALTER FUNCTION refresh_job_progress() SET search_path = pg_catalog, public;
REVOKE EXECUTE ON FUNCTION refresh_job_progress() FROM PUBLIC;
