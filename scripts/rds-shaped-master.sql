-- An RDS-shaped master user on a plain PostgreSQL server, for the tests and `make demo` (run as the real
-- superuser, once per server; `{master}` and `{password}` are substituted by the caller).
--
-- What RDS gives its master user, from "Understanding the rds_superuser role" (Amazon RDS User Guide):
--   CREATE ROLE postgres WITH LOGIN NOSUPERUSER INHERIT CREATEDB CREATEROLE NOREPLICATION VALID UNTIL 'infinity'
-- plus membership in rds_superuser, which lets it see every session in pg_stat_activity, stop them
-- (pg_signal_backend), read statistics, and grant rds_iam / rds_replication / rds_password to others.
-- Emulated here: the attributes exactly; rds_superuser with pg_monitor (pg_read_all_stats,
-- pg_read_all_settings, pg_stat_scan_tables) and pg_signal_backend, and ADMIN OPTION on rds_iam,
-- rds_replication and rds_password (NOLOGIN stand-ins). Not emulated: what RDS's extension allow-list
-- and its hooks add (creating trusted extensions, rds.* parameters), which the migrations do not use.
-- The master owns the databases it migrates (RDS: it created them).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_superuser') THEN
        CREATE ROLE rds_superuser NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_iam') THEN
        CREATE ROLE rds_iam NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_replication') THEN
        CREATE ROLE rds_replication NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_password') THEN
        CREATE ROLE rds_password NOLOGIN;
    END IF;
END
$$;
GRANT pg_monitor, pg_signal_backend TO rds_superuser;
GRANT rds_iam, rds_replication, rds_password TO rds_superuser WITH ADMIN OPTION;
CREATE ROLE {master} WITH LOGIN NOSUPERUSER INHERIT CREATEDB CREATEROLE NOREPLICATION PASSWORD '{password}';
GRANT rds_superuser TO {master};
