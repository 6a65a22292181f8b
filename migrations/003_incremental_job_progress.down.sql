-- Rollback of 003_incremental_job_progress: job_progress becomes 002's materialized view again,
-- populated, with its unique index, its dependent views and the VOID refresh_job_progress();
-- every object 003 added is removed.
-- The materialized view is built and populated under another name first (the long part, which
-- blocks nobody), then swapped in by one short transaction, so the status API never sees
-- job_progress missing or empty. Its counts are as of that build: 002's refresh schedule keeps it.
-- migrate:no-transaction
-- Dropping these objects is the point of a rollback; each is replaced in the same transaction or
-- was added by 003.
-- squawk-ignore-file ban-drop-function, ban-drop-view, ban-drop-table

-- First, before anything changes: a view of the user's over job_progress would stop the swap below
-- (no CASCADE), so it stops the migration here, naming it.
DO $check$
DECLARE
    dependents text;
    lost       text;
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
        RAISE EXCEPTION 'cannot replace job_progress: % depends on it', dependents
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'drop that view first and create it again afterwards; a migration never drops objects it did not create';
    END IF;
    -- What the swap cannot carry over stops it here, named: an index, trigger or rule of the user's
    -- on a replaced relation, and job_progress's own options (a view and a materialized view take
    -- different ones). The migration's own unique index is rebuilt by it.
    SELECT string_agg(what, ', ') INTO lost FROM (
        SELECT format('index %s on %s', i.indexrelid::regclass, i.indrelid::regclass) AS what
          FROM pg_index AS i
         WHERE i.indrelid = to_regclass('job_progress')
           AND i.indexrelid <> coalesce(to_regclass('job_progress_job_id_key'), 0)
        UNION ALL
        SELECT format('trigger %I on %s', t.tgname, t.tgrelid::regclass)
          FROM pg_trigger AS t
         WHERE t.tgrelid IN (coalesce(to_regclass('job_progress'), 0), coalesce(to_regclass('active_jobs_progress'), 0),
                              coalesce(to_regclass('job_statistics'), 0)) AND NOT t.tgisinternal
        UNION ALL
        SELECT format('rule %I on %s', r.rulename, r.ev_class::regclass)
          FROM pg_rewrite AS r
         WHERE r.ev_class IN (coalesce(to_regclass('job_progress'), 0), coalesce(to_regclass('active_jobs_progress'), 0),
                              coalesce(to_regclass('job_statistics'), 0)) AND r.rulename <> '_RETURN'
        UNION ALL
        SELECT format('options (%s) on %s', array_to_string(c.reloptions, ', '), c.oid::regclass)
          FROM pg_class AS c
         WHERE c.oid = to_regclass('job_progress') AND c.reloptions IS NOT NULL AND c.relkind = 'v') AS objects;
    IF lost IS NOT NULL THEN
        RAISE EXCEPTION 'cannot replace job_progress: % would be lost', lost
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'drop it (ALTER VIEW job_progress RESET (...) for options) and roll back again; job_progress becomes a materialized view again, which has no view options, triggers or rules; a migration never drops objects it did not create';
    END IF;
END;
$check$;

CREATE MATERIALIZED VIEW IF NOT EXISTS job_progress_002 AS
SELECT
    j.job_id,
    j.bucket,
    j.prefix,
    j.execution_arn,
    count(o.key)                                         AS total_objects,
    count(o.key) FILTER (WHERE o.status = 'queued')      AS queued_count,
    count(o.key) FILTER (WHERE o.status = 'processing')  AS processing_count,
    count(o.key) FILTER (WHERE o.status = 'succeeded')   AS succeeded_count,
    count(o.key) FILTER (WHERE o.status = 'failed')      AS failed_count,
    max(o.updated_at)                                    AS last_object_update,
    now()                                                AS refreshed_at
FROM jobs AS j
LEFT JOIN job_objects AS o ON o.job_id = j.job_id
GROUP BY j.job_id, j.bucket, j.prefix, j.execution_arn;

-- A new materialized view nobody reads yet, one row per job.
-- squawk-ignore require-concurrent-index-creation
CREATE UNIQUE INDEX IF NOT EXISTS job_progress_002_job_id_key ON job_progress_002 (job_id);

-- The swap, as one statement and so one transaction, keeping the privileges granted on what it
-- replaces; no CASCADE (a view of the user's over job_progress stops it with its name). squawk
-- does not look inside DO.
DO $swap$
DECLARE
    dependents text;
    lost       text;
    grants     text[];
    comments   text[];
    options    text[];
    grant_sql  text;
BEGIN
    -- No CASCADE: a view of the user's over job_progress stops the swap, before anything changes, with its name.
    SELECT string_agg(DISTINCT v.oid::regclass::text, ', ') INTO dependents
      FROM pg_depend AS d
      JOIN pg_rewrite AS r ON r.oid = d.objid
      JOIN pg_class AS v ON v.oid = r.ev_class
     WHERE d.classid = 'pg_rewrite'::regclass
       AND d.refobjid = to_regclass('job_progress')
       AND v.oid <> to_regclass('job_progress')
       AND v.oid NOT IN (coalesce(to_regclass('active_jobs_progress'), 0), coalesce(to_regclass('job_statistics'), 0));
    IF dependents IS NOT NULL THEN
        RAISE EXCEPTION 'cannot replace job_progress: % depends on it', dependents
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'drop that view first and create it again afterwards; a migration never drops objects it did not create';
    END IF;
    -- What the swap cannot carry over stops it here, named: an index, trigger or rule of the user's
    -- on a replaced relation, and job_progress's own options (a view and a materialized view take
    -- different ones). The migration's own unique index is rebuilt by it.
    SELECT string_agg(what, ', ') INTO lost FROM (
        SELECT format('index %s on %s', i.indexrelid::regclass, i.indrelid::regclass) AS what
          FROM pg_index AS i
         WHERE i.indrelid = to_regclass('job_progress')
           AND i.indexrelid <> coalesce(to_regclass('job_progress_job_id_key'), 0)
        UNION ALL
        SELECT format('trigger %I on %s', t.tgname, t.tgrelid::regclass)
          FROM pg_trigger AS t
         WHERE t.tgrelid IN (coalesce(to_regclass('job_progress'), 0), coalesce(to_regclass('active_jobs_progress'), 0),
                              coalesce(to_regclass('job_statistics'), 0)) AND NOT t.tgisinternal
        UNION ALL
        SELECT format('rule %I on %s', r.rulename, r.ev_class::regclass)
          FROM pg_rewrite AS r
         WHERE r.ev_class IN (coalesce(to_regclass('job_progress'), 0), coalesce(to_regclass('active_jobs_progress'), 0),
                              coalesce(to_regclass('job_statistics'), 0)) AND r.rulename <> '_RETURN'
        UNION ALL
        SELECT format('options (%s) on %s', array_to_string(c.reloptions, ', '), c.oid::regclass)
          FROM pg_class AS c
         WHERE c.oid = to_regclass('job_progress') AND c.reloptions IS NOT NULL AND c.relkind = 'v') AS objects;
    IF lost IS NOT NULL THEN
        RAISE EXCEPTION 'cannot replace job_progress: % would be lost', lost
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'drop it (ALTER VIEW job_progress RESET (...) for options) and roll back again; job_progress becomes a materialized view again, which has no view options, triggers or rules; a migration never drops objects it did not create';
    END IF;
    -- The privileges on what is replaced (the status API's role reads job_progress), granted again
    -- below: on the relation and on single columns (GRANT SELECT (job_id, ...)), WITH GRANT OPTION
    -- kept. The grantor becomes the migrator, who owns the new objects.
    SELECT coalesce(array_agg(g), '{}') INTO grants FROM (
        SELECT format('GRANT %s%s ON %I TO %s%s', a.privilege_type,
                      CASE WHEN o.attname IS NULL THEN '' ELSE format(' (%I)', o.attname) END, c.relname,
                      CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                      CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) AS g
          FROM pg_class AS c
          CROSS JOIN LATERAL (SELECT NULL::name AS attname, c.relacl AS acl
                              UNION ALL
                              SELECT att.attname, att.attacl
                                FROM pg_attribute AS att
                               WHERE att.attrelid = c.oid AND att.attnum > 0 AND NOT att.attisdropped) AS o
          CROSS JOIN LATERAL aclexplode(o.acl) AS a
         WHERE c.oid IN (coalesce(to_regclass('job_progress'), 0), coalesce(to_regclass('active_jobs_progress'), 0),
                         coalesce(to_regclass('job_statistics'), 0))
        UNION ALL
        SELECT format('GRANT EXECUTE ON FUNCTION refresh_job_progress() TO %s%s',
                      CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                      CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
          FROM pg_proc AS p, aclexplode(p.proacl) AS a
         WHERE p.oid = to_regprocedure('refresh_job_progress()') AND a.privilege_type = 'EXECUTE') AS privileges;
    -- Their comments, and the dependent views' options (security_barrier, check_option, ...), set again below.
    SELECT coalesce(array_agg(statement), '{}') INTO comments FROM (
        SELECT CASE WHEN d.objsubid = 0
                    THEN format('COMMENT ON %s %I IS %L',
                                CASE WHEN c.relname = 'job_progress' THEN 'MATERIALIZED VIEW' ELSE 'VIEW' END, c.relname, d.description)
                    ELSE format('COMMENT ON COLUMN %I.%I IS %L', c.relname, att.attname, d.description) END AS statement
          FROM pg_description AS d
          JOIN pg_class AS c ON c.oid = d.objoid
          LEFT JOIN pg_attribute AS att ON att.attrelid = c.oid AND att.attnum = d.objsubid
         WHERE d.classoid = 'pg_class'::regclass
           AND c.oid IN (coalesce(to_regclass('job_progress'), 0), coalesce(to_regclass('active_jobs_progress'), 0),
                         coalesce(to_regclass('job_statistics'), 0))
        UNION ALL
        SELECT format('COMMENT ON FUNCTION refresh_job_progress() IS %L', d.description)
          FROM pg_description AS d
         WHERE d.classoid = 'pg_proc'::regclass AND d.objoid = to_regprocedure('refresh_job_progress()')) AS described;
    SELECT coalesce(array_agg(format('ALTER VIEW %I SET (%s)', c.relname, array_to_string(c.reloptions, ', '))), '{}')
      INTO options
      FROM pg_class AS c
     WHERE c.oid IN (coalesce(to_regclass('active_jobs_progress'), 0), coalesce(to_regclass('job_statistics'), 0))
       AND c.reloptions IS NOT NULL;
    IF (SELECT c.relkind FROM pg_class AS c WHERE c.oid = to_regclass('job_progress')) = 'v' THEN
        DROP VIEW IF EXISTS active_jobs_progress;
        DROP VIEW IF EXISTS job_statistics;
        DROP VIEW job_progress;
    END IF;
    IF to_regclass('job_progress') IS NULL THEN
        ALTER MATERIALIZED VIEW job_progress_002 RENAME TO job_progress;
        ALTER INDEX job_progress_002_job_id_key RENAME TO job_progress_job_id_key;
    END IF;

    CREATE OR REPLACE VIEW active_jobs_progress AS
    SELECT
        job_id,
        bucket,
        prefix,
        execution_arn,
        total_objects,
        queued_count,
        processing_count,
        succeeded_count,
        failed_count,
        round(100.0 * (succeeded_count + failed_count) / nullif(total_objects, 0), 2) AS percent_complete,
        last_object_update,
        refreshed_at
    FROM job_progress
    WHERE queued_count + processing_count > 0;

    CREATE OR REPLACE VIEW job_statistics AS
    SELECT
        count(*)                                          AS total_jobs,
        count(*) FILTER (WHERE queued_count + processing_count > 0) AS active_jobs,
        coalesce(sum(total_objects), 0)::bigint           AS total_objects,
        coalesce(sum(queued_count), 0)::bigint            AS queued_count,
        coalesce(sum(processing_count), 0)::bigint        AS processing_count,
        coalesce(sum(succeeded_count), 0)::bigint         AS succeeded_count,
        coalesce(sum(failed_count), 0)::bigint            AS failed_count,
        max(refreshed_at)                                 AS refreshed_at
    FROM job_progress;

    IF (SELECT p.prorettype FROM pg_proc AS p WHERE p.oid = to_regprocedure('refresh_job_progress()'))
       IS DISTINCT FROM 'void'::regtype THEN
        DROP FUNCTION IF EXISTS refresh_job_progress();
    END IF;

    -- 002's function, its body byte for byte as 002 created it.
    CREATE OR REPLACE FUNCTION refresh_job_progress() RETURNS VOID
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF (SELECT c.relispopulated FROM pg_class AS c WHERE c.oid = 'job_progress'::regclass) THEN
        REFRESH MATERIALIZED VIEW CONCURRENTLY job_progress;
    ELSE
        REFRESH MATERIALIZED VIEW job_progress;
    END IF;
END;
$$;

    FOREACH grant_sql IN ARRAY grants || comments || options LOOP
        EXECUTE grant_sql;
    END LOOP;
END;
$swap$;

-- A leftover of an interrupted rollback that found job_progress already swapped.
DROP MATERIALIZED VIEW IF EXISTS job_progress_002;

-- The capture stops in the same transaction that discards what it fed (the deltas and the folded
-- counts): an interruption anywhere leaves either all of them, still exact and kept up by the
-- triggers, or none of them, so a re-apply counts every job afresh. Dropped apart, a re-apply
-- would trust counts that missed the writes made while the triggers were gone. One short
-- transaction: SHARE ROW EXCLUSIVE on job_objects for the four triggers, under lock_timeout.
DO $stop_capture$
BEGIN
    DROP TRIGGER IF EXISTS job_progress_capture_insert ON job_objects;
    DROP TRIGGER IF EXISTS job_progress_capture_update ON job_objects;
    DROP TRIGGER IF EXISTS job_progress_capture_delete ON job_objects;
    DROP TRIGGER IF EXISTS job_progress_capture_truncate ON job_objects;
    DROP TABLE IF EXISTS job_progress_deltas;
    DROP TABLE IF EXISTS job_progress_counts;
END;
$stop_capture$;

DROP FUNCTION IF EXISTS job_progress_capture_insert();
DROP FUNCTION IF EXISTS job_progress_capture_update();
DROP FUNCTION IF EXISTS job_progress_capture_delete();
DROP FUNCTION IF EXISTS job_progress_capture_truncate();
DROP PROCEDURE IF EXISTS job_progress_backfill();
