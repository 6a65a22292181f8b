#!/usr/bin/env bash
# Prints the local Terraform plugin directory holding the hashicorp/aws provider (the directory that
# contains registry.terraform.io/), or nothing and status 1. TF_PLUGIN_DIR wins when it holds one.
set -euo pipefail
if [ -n "${TF_PLUGIN_DIR:-}" ] && [ -d "$TF_PLUGIN_DIR/registry.terraform.io/hashicorp/aws" ]; then
  echo "$TF_PLUGIN_DIR"
  exit 0
fi
for d in /opt/tf-plugins /usr/share/terraform/plugins "$HOME/.terraform.d/plugins"; do
  if [ -d "$d/registry.terraform.io/hashicorp/aws" ]; then echo "$d"; exit 0; fi
done
found=$(find / -xdev -type d -path '*/registry.terraform.io/hashicorp/aws' -not -path '*/.terraform/*' \
  -not -path '/proc/*' 2>/dev/null | head -n1 || true)
[ -n "$found" ] || exit 1
echo "${found%/registry.terraform.io/hashicorp/aws}"
