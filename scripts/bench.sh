#!/usr/bin/env bash
# make bench: the guide's claims measured side by side on a throwaway PostgreSQL (examples/bench.rs).
#   scripts/bench.sh           the full run (BENCH_ROWS objects in the measured job, default 1,000,000);
#                              prints the table and writes bench/RESULTS.md and its plots (bench/*.svg)
#   scripts/bench.sh --smoke   tiny sizes, so the code cannot rot (make test); fails if any case fails;
#                              writes nothing into the repository (its table and plots go to a temporary directory)
# BENCH_ROWS=10000000 for 10M objects; BENCH_CASES=7 (or 1,3,...) runs only those cases; BENCH_OUT=FILE
# writes the table there instead of bench/RESULTS.md, and the plots beside it; the other knobs are described at the top of examples/bench.rs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

smoke=0
case "${1:-}" in
  --smoke) smoke=1 ;;
  "") ;;
  *) echo "usage: scripts/bench.sh [--smoke]" >&2; exit 2 ;;
esac

work=$(mktemp -d)
chmod 755 "$work"
cleanup() {
  scripts/pg.sh stop "$work/pg" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cargo build --quiet --bin scanner-migrator --examples
admin_url=$(scripts/pg.sh start "$work/pg")

if [ "$smoke" = 1 ]; then
  started=$SECONDS
  # The smoke run's table goes to the temporary directory (and the log), never over bench/RESULTS.md.
  if ! DATABASE_URL="$admin_url" target/debug/examples/bench --smoke --out "$work/RESULTS.md" >"$work/bench.out" 2>"$work/bench.log"; then
    cat "$work/bench.log" >&2
    echo "bench smoke run: FAILED" >&2
    exit 1
  fi
  echo "bench smoke run: every case ran ($((SECONDS - started)) s)"
else
  DATABASE_URL="$admin_url" target/debug/examples/bench --out "${BENCH_OUT:-bench/RESULTS.md}"
fi
