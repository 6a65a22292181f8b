# `terraform test` with a mocked AWS provider: offline, no credentials. Run by tests/it/tf_apply.rs (in a copy
# of the repository's terraform/ and migrations/, with -var lambda_zip_path=<a zip>).
#   1. the complete example planned from nothing: no look-up may depend on what only the apply knows;
#   2. the module wires what the binary needs;
#   3. the module on its own in an existing VPC, with the defaults: no endpoint, no change to the VPC's DNS;
#   4. a migrate result the postcondition rejects.

mock_provider "aws" {
  # Data sources the example's own postconditions read.
  mock_data "aws_availability_zones" {
    defaults = { names = ["eu-west-1a", "eu-west-1b"] }
  }
  mock_data "aws_vpc" {
    defaults = { cidr_block = "10.0.0.0/16" }
  }
  # ARNs the provider validates when one resource is given another's (the apply run below).
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
  }
  mock_resource "aws_lambda_function" {
    defaults = { arn = "arn:aws:lambda:eu-west-1:123456789012:function:mock" }
  }
  mock_resource "aws_sqs_queue" {
    defaults = { arn = "arn:aws:sqs:eu-west-1:123456789012:mock", name = "mock" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:eu-west-1:123456789012:log-group:mock" }
  }
  # The provider validates policies it is given as JSON; the mock's random strings are not.
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
}

variables {
  name                   = "scanner"
  availability_zones     = ["eu-west-1a", "eu-west-1b"]
  db_deletion_protection = false
}

run "complete_example_plans_from_nothing" {
  # The whole point: this plan used to fail with "Invalid count argument" (look-ups counted on values the
  # apply only knows). Assertions here can read the example's outputs only; the module's wiring is below.
  command = plan

  assert {
    condition     = output.migrate_function_name == "scanner-migrator-migrate" && output.refresh_function_name == "scanner-migrator-refresh"
    error_message = "the example names its functions after var.name"
  }

  assert {
    condition     = endswith(output.dashboard_url, "#dashboards/dashboard/scanner-migrator")
    error_message = "the example links to the module's dashboard"
  }
}

run "module_wires_what_the_binary_needs" {
  # The module as the example calls it, in a VPC of its own.
  command = plan

  module {
    source = "../.."
  }

  variables {
    name_prefix                = "scanner-migrator"
    vpc_id                     = "vpc-0123456789abcdef0"
    subnet_ids                 = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
    create_vpc_endpoints       = true
    vpc_endpoint_allowed_cidrs = ["10.42.0.0/16"]
    look_up_database           = false
    db_instance_identifier     = "scanner"
    db_security_group_id       = "sg-0123456789abcdef0"
    db_name                    = "scanner_db"
    db_secret_arn              = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:scanner-db-AbCdEf"
    snapshot_before_migrate    = true
    db_resource_id             = "db-ABCDEFGHIJKLMNOPQRSTUVWXY0"
  }

  assert {
    condition     = aws_lambda_function.migrate.handler == "migrate" && aws_lambda_function.refresh.handler == "refresh"
    error_message = "the handler names are the ones the binary dispatches on"
  }

  assert {
    condition = alltrue([for f in [aws_lambda_function.migrate, aws_lambda_function.refresh] :
      f.runtime == "provided.al2023" && f.architectures == tolist(["arm64"]) && f.filename == var.lambda_zip_path
    ])
    error_message = "both functions run the arm64 zip on provided.al2023"
  }

  assert {
    condition = alltrue([for f in [aws_lambda_function.migrate, aws_lambda_function.refresh] :
      f.environment[0].variables["DB_INSTANCE_IDENTIFIER"] == "scanner" &&
      f.environment[0].variables["DB_NAME"] == "scanner_db" &&
      f.environment[0].variables["DB_SSLMODE"] == "verify-full" &&
      !contains(keys(f.environment[0].variables), "DB_CA_BUNDLE")
    ]) && aws_lambda_function.migrate.environment[0].variables["DB_AUTH"] == "password"
    error_message = "the environment names the example's database and verifies its certificate"
  }

  assert {
    condition     = aws_lambda_function.migrate.environment[0].variables["SNAPSHOT_BEFORE_MIGRATE"] == "true" && aws_lambda_function.refresh.environment[0].variables["REFRESH_MIN_INTERVAL_S"] == "60"
    error_message = "each function gets its own settings"
  }

  assert {
    condition     = jsondecode(aws_lambda_invocation.migrate.input) == { command = "migrate" } && aws_lambda_invocation.migrate.lifecycle_scope == "CRUD" && aws_lambda_invocation.migrate.terraform_key == "tf"
    error_message = "terraform apply migrates, and tells the function create/update/delete"
  }

  assert {
    condition     = aws_lambda_invocation.migrate.triggers["code"] == filebase64sha256(var.lambda_zip_path) && length(aws_lambda_invocation.migrate.triggers["migrations"]) == 64
    error_message = "a new zip or changed migrations re-invoke migrate"
  }

  assert {
    condition     = toset(keys(aws_vpc_endpoint.this)) == toset(["secretsmanager", "rds", "scheduler"]) && alltrue([for e in aws_vpc_endpoint.this : e.private_dns_enabled])
    error_message = "the example's own VPC gets the Secrets Manager, RDS and Scheduler (the continuation) endpoints"
  }

  assert {
    condition     = aws_lambda_function.migrate.environment[0].variables["CONTINUATION_SCHEDULE"] == "scanner-migrator-migrate-continue" && contains(keys(aws_lambda_function.migrate.environment[0].variables), "CONTINUATION_ROLE_ARN") && contains(keys(aws_lambda_function.migrate.environment[0].variables), "CONTINUATION_DLQ_ARN") && !contains(keys(aws_lambda_function.refresh.environment[0].variables), "CONTINUATION_ROLE_ARN")
    error_message = "migrate continues work left at its deadline with its own schedule; refresh does not"
  }

  assert {
    condition     = [for r in aws_vpc_security_group_ingress_rule.endpoints_from_vpc : r.cidr_ipv4] == ["10.42.0.0/16"]
    error_message = "the endpoints admit the whole VPC: private DNS sends every client in it there"
  }

  assert {
    condition     = aws_scheduler_schedule.refresh.target[0].retry_policy[0].maximum_retry_attempts == 2 && aws_lambda_function_event_invoke_config.refresh.maximum_retry_attempts == 0 && aws_lambda_function_event_invoke_config.migrate.maximum_retry_attempts == 0
    error_message = "the scheduler retries delivery; Lambda retries neither function"
  }

  assert {
    condition     = length(aws_cloudwatch_metric_alarm.refresh_errors) == 1 && length(aws_cloudwatch_metric_alarm.refresh_dlq) == 1 && length(aws_cloudwatch_metric_alarm.migrate_failed) == 1
    error_message = "refresh failures and failed migrates (a chain of continuations ending in an error among them) raise alarms"
  }

  # Its body holds the alarms' ARNs, known only after the apply: what it draws is checked by
  # tests/it/terraform.rs (against the binary) and the apply against moto (tests/it/tf_apply.rs).
  assert {
    condition     = length(aws_cloudwatch_dashboard.this) == 1 && aws_cloudwatch_dashboard.this[0].dashboard_name == "scanner-migrator"
    error_message = "the module makes a dashboard by default, named name_prefix"
  }

  assert {
    condition     = aws_iam_role.migrate.tags["app"] == "scanner-migrator"
    error_message = "the module tags what it creates"
  }

  assert {
    condition     = aws_lambda_function.migrate.environment[0].variables["DB_SECRET_ARN"] == var.db_secret_arn
    error_message = "migrate reads the master secret by ARN (never its value)"
  }

  assert {
    condition     = !contains(keys(aws_lambda_function.refresh.environment[0].variables), "DB_SECRET_ARN") && aws_lambda_function.refresh.environment[0].variables["DB_AUTH"] == "iam" && aws_lambda_function.refresh.environment[0].variables["DB_USER"] == "scanner_refresh_scanner_migrator"
    error_message = "refresh logs in as its stack's own role (scanner_refresh_<name_prefix>) with an IAM token and reads no secret"
  }

  assert {
    condition     = aws_lambda_function.migrate.environment[0].variables["REFRESH_ROLE"] == aws_lambda_function.refresh.environment[0].variables["DB_USER"] && aws_lambda_function.migrate.environment[0].variables["REFRESH_DB_AUTH"] == "iam"
    error_message = "migrate grants the role refresh logs in as, a member of rds_iam for IAM auth"
  }

  assert {
    condition     = !contains(flatten([for s in data.aws_iam_policy_document.refresh_db_access.statement : s.actions]), "secretsmanager:GetSecretValue") && contains(one([for s in data.aws_iam_policy_document.refresh_db_access.statement : s.resources if contains(s.actions, "rds-db:connect")]), "arn:${data.aws_partition.current.partition}:rds-db:${data.aws_region.current.id}:${data.aws_caller_identity.current.account_id}:dbuser:db-ABCDEFGHIJKLMNOPQRSTUVWXY0/scanner_refresh_scanner_migrator")
    error_message = "the refresh role may connect as its database user on this database and read no secret"
  }

  assert {
    condition     = length(aws_secretsmanager_secret.refresh) == 0 && !contains(keys(aws_lambda_function.migrate.environment[0].variables), "REFRESH_SECRET_ARN")
    error_message = "with IAM, no refresh secret exists"
  }
}

run "module_in_an_existing_vpc_changes_nothing_else_in_it" {
  command = plan

  module {
    source = "../.."
  }

  variables {
    name_prefix            = "scanner-migrator"
    vpc_id                 = "vpc-0123456789abcdef0"
    subnet_ids             = ["subnet-0123456789abcdef0"]
    db_instance_identifier = "scanner-db"
    db_security_group_id   = "sg-0123456789abcdef0"
    db_secret_arn          = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:scanner-db-AbCdEf"
    dlq_kms_key_arn        = "arn:aws:kms:eu-west-1:123456789012:key/0a0a0a0a-0000-4000-8000-000000000000"
    tags                   = { app = "s3-scanner", team = "storage" }
  }

  assert {
    condition     = length(aws_vpc_endpoint.this) == 0 && length(aws_security_group.endpoints) == 0
    error_message = "no endpoint (and so no private DNS change) in a VPC the module did not make"
  }

  assert {
    condition     = length(aws_vpc_security_group_egress_rule.lambda_to_vpc_https) == 1 && length(aws_vpc_security_group_egress_rule.lambda_to_internet_https) == 0
    error_message = "by default the functions reach the VPC's own endpoints, not the internet"
  }

  assert {
    condition     = contains(one([for s in data.aws_iam_policy_document.scheduler.statement : s.resources if contains(s.actions, "kms:GenerateDataKey")]), var.dlq_kms_key_arn)
    error_message = "the scheduler may use the dead-letter queue's key"
  }

  assert {
    condition     = aws_iam_role.migrate.tags["app"] == "s3-scanner" && aws_iam_role.migrate.tags["team"] == "storage"
    error_message = "the user's tags win over the module's defaults"
  }
}

run "refresh_login_with_a_password_of_its_own" {
  command = plan

  module {
    source = "../.."
  }

  variables {
    name_prefix            = "scanner-migrator"
    vpc_id                 = "vpc-0123456789abcdef0"
    subnet_ids             = ["subnet-0123456789abcdef0"]
    db_instance_identifier = "scanner-db"
    db_security_group_id   = "sg-0123456789abcdef0"
    db_secret_arn          = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:scanner-db-AbCdEf"
    refresh_db_auth        = "password"
  }

  assert {
    condition     = length(aws_secretsmanager_secret.refresh) == 1 && aws_secretsmanager_secret_version.refresh[0].secret_string_wo_version == 1
    error_message = "a database without IAM auth gets a secret for the refresh role, its password written write-only"
  }

  assert {
    condition     = aws_lambda_function.migrate.environment[0].variables["REFRESH_DB_AUTH"] == "password" && aws_lambda_function.migrate.environment[0].variables["REFRESH_ROLE"] == "scanner_refresh_scanner_migrator"
    error_message = "with a password, migrate keeps the refresh role out of rds_iam"
  }

  assert {
    condition     = contains(keys(aws_lambda_function.migrate.environment[0].variables), "REFRESH_SECRET_ARN") && aws_lambda_function.refresh.environment[0].variables["DB_AUTH"] == "password" && contains(keys(aws_lambda_function.refresh.environment[0].variables), "DB_SECRET_ARN")
    error_message = "migrate sets the refresh login's password; refresh reads its own secret"
  }

  assert {
    condition     = !contains(flatten([for s in data.aws_iam_policy_document.refresh_db_access.statement : s.actions]), "rds-db:connect")
    error_message = "with a password, the refresh role gets no rds-db:connect"
  }
}

run "module_behind_a_nat_gateway" {
  command = plan

  module {
    source = "../.."
  }

  variables {
    name_prefix             = "scanner-migrator"
    vpc_id                  = "vpc-0123456789abcdef0"
    subnet_ids              = ["subnet-0123456789abcdef0"]
    db_instance_identifier  = "scanner-db"
    db_security_group_id    = "sg-0123456789abcdef0"
    db_secret_arn           = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:scanner-db-AbCdEf"
    allow_https_to_internet = true
  }

  assert {
    condition     = aws_vpc_security_group_egress_rule.lambda_to_internet_https[0].cidr_ipv4 == "0.0.0.0/0" && aws_vpc_security_group_egress_rule.lambda_to_internet_https[0].from_port == 443
    error_message = "behind a NAT gateway, the functions reach 443 anywhere"
  }
}

run "a_migrate_result_that_is_not_finished_is_rejected" {
  # The result is made known at plan time so the postcondition is evaluated there: a provisioner error (the
  # taint that makes the next apply invoke again) cannot be an expected failure in `terraform test`, so the
  # apply half is proven with a real apply in tests/it/tf_apply.rs.
  command = plan

  module {
    source = "../.."
  }

  variables {
    name_prefix            = "scanner-migrator"
    vpc_id                 = "vpc-0123456789abcdef0"
    subnet_ids             = ["subnet-0123456789abcdef0"]
    db_instance_identifier = "scanner-db"
    db_security_group_id   = "sg-0123456789abcdef0"
    db_secret_arn          = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:scanner-db-AbCdEf"
  }

  override_resource {
    target          = aws_lambda_invocation.migrate
    values          = { result = "{\"status\":\"pending\"}" }
    override_during = plan
  }

  expect_failures = [aws_lambda_invocation.migrate]
}
