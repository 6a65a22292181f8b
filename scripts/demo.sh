#!/usr/bin/env bash
# make demo: a throwaway PostgreSQL (TLS), moto's Secrets Manager holding its credentials, and the real
# binary under a local Lambda Runtime API: migrate twice, status, then a scheduled refresh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
work=$(mktemp -d)
chmod 755 "$work"
moto_pid=""
cleanup() {
  [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null || true
  scripts/pg.sh stop "$work/pg" || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "a CA and a certificate for localhost, so the function can use TLS verify-full as it does against RDS"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=scanner-migrator-demo-ca \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -days 1 \
  -extfile <(printf 'subjectAltName=DNS:localhost') -out "$work/server.crt" 2>/dev/null

say "a throwaway PostgreSQL"
admin_url=$(scripts/pg.sh start "$work/pg" "$work/server.crt" "$work/server.key")
port=$(cat "$work/pg/port")
db_url="${admin_url%/postgres}/scanner_db"
app_password=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 20)
# The database's user is shaped like the RDS master (scripts/rds-shaped-master.sql): not a superuser, with
# CREATEROLE and CREATEDB, a member of rds_superuser. It creates and owns the database, as on RDS.
sed -e "s/{master}/scanner_admin/g" -e "s/{password}/$app_password/g" scripts/rds-shaped-master.sql \
  | psql -q -v ON_ERROR_STOP=1 "$admin_url" >/dev/null
PGPASSWORD="$app_password" psql -q -v ON_ERROR_STOP=1 "postgres://scanner_admin@127.0.0.1:$port/postgres" \
  -c "CREATE DATABASE scanner_db"
echo "PostgreSQL $(psql -tA "$admin_url" -c 'SHOW server_version') on localhost:$port, database scanner_db"
echo "its user scanner_admin: $(psql -tA "$admin_url" -c "SELECT format('superuser=%s createrole=%s createdb=%s member of %s', rolsuper, rolcreaterole, rolcreatedb, (SELECT string_agg(b.rolname, ',') FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid WHERE m.member = r.oid)) FROM pg_roles r WHERE rolname = 'scanner_admin'")"

say "moto's AWS API server, holding the database secret"
moto_port=$(free_port)
.venv/bin/moto_server -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$moto_port") 2>/dev/null && break; sleep 0.1; done
export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo
# Two secrets, as the module makes them with refresh_db_auth = "password": the master's (the rotation shape)
# for migrate, and the refresh role's own (username and password only; the refresh function never sees the
# master's), whose password migrate gives the role after migrating. The role is the stack's own, as the
# module names it (scanner_refresh_<name_prefix>): roles belong to the whole server.
export REFRESH_ROLE=scanner_refresh_demo
read -r DB_SECRET_ARN REFRESH_SECRET_ARN < <(PORT="$port" PW="$app_password" .venv/bin/python - <<'PY'
import json, os, secrets, boto3
sm = boto3.client("secretsmanager", region_name=os.environ["AWS_REGION"])
master = {"engine": "postgres", "host": "localhost", "port": os.environ["PORT"], "dbname": "scanner_db",
          "username": "scanner_admin", "password": os.environ["PW"]}
refresh = {"username": os.environ["REFRESH_ROLE"], "password": secrets.token_urlsafe(24)}
print(sm.create_secret(Name="scanner/db", SecretString=json.dumps(master))["ARN"],
      sm.create_secret(Name="scanner/refresh", SecretString=json.dumps(refresh))["ARN"])
PY
)
export DB_CA_BUNDLE="$work/ca.pem" DB_HOST=localhost DB_PORT="$port" DB_NAME=scanner_db
echo "DB_SECRET_ARN=$DB_SECRET_ARN (migrate; read on every invocation; the password is never printed)"
echo "REFRESH_SECRET_ARN=$REFRESH_SECRET_ARN ($REFRESH_ROLE's own login)"

say "the migrate function: {} twice (applied, then up_to_date), then status"
DB_SECRET_ARN="$DB_SECRET_ARN" REFRESH_SECRET_ARN="$REFRESH_SECRET_ARN" REFRESH_DB_AUTH=password \
  target/debug/examples/local_lambda --handler migrate '{}' '{}' '{"command":"status"}' 2>"$work/migrate.log"

say "the scanner writes some progress"
psql -q "$db_url" <<'SQL'
INSERT INTO jobs (bucket, prefix) VALUES ('demo-bucket', 'incoming/');
INSERT INTO job_objects (job_id, bucket, key, size_bytes, status)
SELECT job_id, 'demo-bucket', 'incoming/object-' || g, g * 1024,
       (ARRAY['queued', 'processing', 'succeeded', 'succeeded', 'failed'])[1 + g % 5]
  FROM jobs, generate_series(1, 5000) AS g;
SQL
echo "5000 objects in one job"

say "the refresh function, logged in as $REFRESH_ROLE with its own secret, invoked as EventBridge Scheduler does"
DB_AUTH=password DB_SECRET_ARN="$REFRESH_SECRET_ARN" target/debug/examples/local_lambda --handler refresh \
  '{"scheduled_time":"2026-11-25T07:00:00Z","execution_id":"demo-1","attempt_number":"1"}' 2>"$work/refresh.log"

say "what the status API reads now"
psql "$db_url" -c "SELECT bucket, total_objects, queued_count, processing_count, succeeded_count, failed_count FROM job_progress"

# The proof that production's path was taken: the refresh connected as its own role, not as the master.
grep -o -m 1 "\"target\":\"$REFRESH_ROLE@[^\"]*\"" "$work/refresh.log" \
  || { echo "the refresh did not log in as $REFRESH_ROLE:" >&2; cat "$work/refresh.log" >&2; exit 1; }

say "the function's JSON log lines (the first few)"
# (awk, not grep | head: under pipefail a head that stops reading fails the demo with SIGPIPE)
awk '!/^---/ && shown++ < 8' "$work/migrate.log"
