-- Rollback of 001_add_execution_arn (the guide's rollback; its index goes with the column).
-- squawk-ignore ban-drop-column
ALTER TABLE jobs DROP COLUMN IF EXISTS execution_arn;
