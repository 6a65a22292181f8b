#!/usr/bin/env bash
# The offline Terraform checks of `make test`: formatting, and checkov's static analysis of the module and
# the complete example with no failed check. Every skipped check is skipped inline, next to the resource,
# with its reason (`#checkov:skip=ID:reason`). `terraform validate` needs the provider, which cannot be
# downloaded here; tests/terraform.rs checks the HCL against the binary instead.
set -euo pipefail
cd "$(dirname "$0")/.."

# checkov lives in its own virtualenv: it pins a python-hcl2 fork that clobbers the upstream package.
CHECKOV_VERSION=3.3.30
venv=.venv-checkov
if [ "$("$venv/bin/checkov" --version 2>/dev/null)" != "$CHECKOV_VERSION" ]; then
  echo "tf-check: installing checkov $CHECKOV_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
fi

command -v terraform >/dev/null || {
  echo "tf-check: the terraform CLI (>= 1.5) is not on PATH; it is needed for 'terraform fmt -check'" >&2
  exit 1
}
# No ~/.terraformrc on a fresh machine: an empty config keeps terraform from warning about it.
TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -recursive -diff terraform

# Offline: no Bridgecrew platform, no version check, no external modules.
export BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false
"$venv/bin/checkov" --quiet --compact --framework terraform --skip-download --download-external-modules false \
  --directory terraform
