#!/usr/bin/env bash
# make test-pg-matrix: the tests that run the migrations, once per PostgreSQL major RDS serves (13-18),
# each against its own server from scripts/pg-majors.sh (PG_BINDIR reaches scripts/pg.sh through the
# test helpers); then, on PostgreSQL 12, the test that an older server is refused before anything changes.
# One line per major; exits non-zero if any major failed. PG_MATRIX_MAJORS="13 16" runs only those.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# Why these: they apply, verify, roll back and re-apply the migrations, run job_progress' triggers and
# fold, the refresh, adoption and the engine's lock and deadline handling, all of which is SQL the
# server runs. The rest (Lambda, Terraform, secrets, CLI flags) does not depend on the server's major.
# definer:: and privileges:: run what differs between majors in roles (CREATEROLE and ADMIN OPTION from 16)
# and in the SECURITY DEFINER fold. schemas:: runs the core in another schema (007, the catalog readers).
filters=(engine:: job_progress:: verify:: adoption:: refresh:: deadline:: majors:: definer:: privileges:: schemas:: plan:: refresh_role:: detached::)
supported=${PG_MATRIX_MAJORS:-13 14 15 16 17 18}
unsupported=12
logs=$root/.tmp/pg-matrix
mkdir -p "$logs"

scripts/pg-majors.sh install $supported $unsupported >/dev/null
cargo test --quiet --test it --no-run

summary=()
failed=0
run_major() {
  local major=$1 expect=$2 log=$logs/$1.log start rc=0 version counts
  shift 2
  start=$(date +%s)
  PG_BINDIR=$(scripts/pg-majors.sh bindir "$major") cargo test --quiet --test it -- "$@" >"$log" 2>&1 || rc=$?
  version=$("$(scripts/pg-majors.sh bindir "$major")/postgres" --version | awk '{ print $NF }')
  counts=$(grep -Eo '[0-9]+ passed; [0-9]+ failed' "$log" | tail -1 || true)
  if [ "$rc" = 0 ] && [ -n "$counts" ] && ! grep -qE '^0 passed' <<<"$counts"; then
    summary+=("PostgreSQL $version ($expect): ok, ${counts:-no test ran} in $(($(date +%s) - start)) s")
  else
    failed=1
    summary+=("PostgreSQL $version ($expect): FAILED, ${counts:-no test ran} in $(($(date +%s) - start)) s; log: $log")
    grep -E '^(failures:|    [a-z_]+::)|panicked at' "$log" | head -40 >&2 || true
  fi
}
for major in $supported; do
  echo "== PostgreSQL $major" >&2
  run_major "$major" supported "${filters[@]}"
done
echo "== PostgreSQL $unsupported (refused)" >&2
run_major "$unsupported" "refused" --ignored majors::a_server_older_than_13

printf '%s\n' "${summary[@]}"
exit "$failed"
