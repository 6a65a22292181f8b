#!/usr/bin/env bash
# A throwaway PostgreSQL for tests, the demo and the benchmarks.
#   scripts/pg.sh start DIR [CERT KEY]  -> initdb in DIR, start on a free 127.0.0.1 port, print the superuser URL
#   scripts/pg.sh stop DIR              -> stop it (immediate) and remove DIR
# PG_BINDIR=<dir with initdb, pg_ctl, postgres> runs that server instead of the newest installed one.
# Password authentication (scram) is on, so a wrong password is refused as in RDS.
# With CERT and KEY, TLS is on as well.
set -euo pipefail
cmd=${1:?usage: pg.sh start|stop DIR [CERT KEY]}
dir=${2:?usage: pg.sh start|stop DIR [CERT KEY]}

# PG_BINDIR picks the server (e.g. one of scripts/pg-majors.sh's); by default the newest Debian one.
bindir=${PG_BINDIR:-}
if [ -n "$bindir" ] && [ ! -x "$bindir/initdb" ]; then
  echo "pg.sh: PG_BINDIR=$bindir has no initdb" >&2; exit 1
fi
[ -n "$bindir" ] || for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
  if [ -x "$d/initdb" ]; then bindir=$d; break; fi
done
if [ -z "$bindir" ] && command -v initdb >/dev/null; then bindir=$(dirname "$(command -v initdb)"); fi
if [ -z "$bindir" ]; then
  echo "pg.sh: no PostgreSQL server found; install it with: apt-get update && apt-get install -y postgresql" >&2
  exit 1
fi

# PostgreSQL refuses to run as root; run it as the postgres user then.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$dir"; then
    echo "pg.sh: $dir is not reachable by the postgres user (make its parents world-searchable, e.g. chmod 755)" >&2; exit 1
  fi
  [ "$(id -u)" = 0 ] && chown postgres: "$dir" && chmod 755 "$dir"
  pw=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 20)
  as_pg sh -c "umask 077; printf '%s\n' '$pw' > '$dir/pwfile'"
  as_pg "$bindir/initdb" -D "$dir/data" -U postgres --auth=scram-sha-256 --pwfile="$dir/pwfile" -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  opts="-c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
  if [ $# -ge 4 ]; then
    install -m 600 "$3" "$dir/server.crt"; install -m 600 "$4" "$dir/server.key"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir/server.crt" "$dir/server.key"
    opts="$opts -c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key"
  fi
  # A free port: bind to 0, read it back, retry if someone takes it first.
  for _ in 1 2 3 4 5; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    if as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 -o "$opts -c port=$port" start >/dev/null 2>&1; then
      echo "$port" > "$dir/port"
      echo "postgres://postgres:$pw@127.0.0.1:$port/postgres"
      exit 0
    fi
  done
  echo "pg.sh: PostgreSQL did not start; its log:" >&2; cat "$dir/server.log" >&2; exit 1
  ;;
stop)
  if [ -d "$dir/data" ]; then as_pg "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true; fi
  rm -rf "$dir"
  ;;
*) echo "usage: pg.sh start|stop DIR [CERT KEY]" >&2; exit 2 ;;
esac
