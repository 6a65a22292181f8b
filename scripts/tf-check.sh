#!/usr/bin/env bash
# The offline Terraform checks of `make lint` / `make test`:
#   1. formatting (terraform fmt -check);
#   2. `terraform validate` of the module and of examples/complete against the real hashicorp/aws provider,
#      when a local copy of it is on this machine (a plugin directory holding
#      registry.terraform.io/hashicorp/aws; TF_PLUGIN_DIR names it, else it is searched for). Nothing is
#      downloaded: the registry is not reachable here. Without it the check is skipped with a loud warning;
#   3. checkov's static analysis with no failed check. Every skipped check is skipped inline, next to the
#      resource, with its reason (`#checkov:skip=ID:reason`).
# The plan (`terraform test`) and the real apply against moto run in `cargo test` (tests/it/tf_apply.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v terraform >/dev/null || {
  echo "tf-check: the terraform CLI (>= 1.11) is not on PATH; it is needed for 'terraform fmt -check'" >&2
  exit 1
}
# No ~/.terraformrc on a fresh machine: an empty config keeps terraform from warning about it.
export TF_CLI_CONFIG_FILE=/dev/null
terraform fmt -check -recursive -diff terraform

plugin_dir=$(scripts/tf-plugin-dir.sh || true)
if [ -n "$plugin_dir" ]; then
  # On a copy: no .terraform/ or lock file lands in the tree.
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cp -r terraform "$work/"
  for dir in "$work/terraform" "$work/terraform/examples/complete"; do
    terraform -chdir="$dir" init -backend=false -input=false -plugin-dir="$plugin_dir" >/dev/null
    printf 'tf-check: terraform validate %s: ' "${dir#"$work"/}"
    terraform -chdir="$dir" validate -no-color
  done
else
  cat >&2 <<'WARN'
########################################################################################################
# tf-check: WARNING: no local copy of the hashicorp/aws provider (a directory holding                  #
# registry.terraform.io/hashicorp/aws; set TF_PLUGIN_DIR): `terraform validate` is SKIPPED, and so are  #
# the terraform test and apply tests in cargo test. Only fmt and checkov check the Terraform.            #
########################################################################################################
WARN
fi

# checkov lives in its own virtualenv: it pins a python-hcl2 fork that clobbers the upstream package.
CHECKOV_VERSION=3.3.30
venv=.venv-checkov
if [ "$("$venv/bin/checkov" --version 2>/dev/null)" != "$CHECKOV_VERSION" ]; then
  echo "tf-check: installing checkov $CHECKOV_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
fi

# Offline: no Bridgecrew platform, no version check, no external modules.
export BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false
"$venv/bin/checkov" --quiet --compact --framework terraform --skip-download --download-external-modules false \
  --directory terraform
