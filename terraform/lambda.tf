# Two functions from one zip; the handler name picks what the binary does (src/handlers.rs HANDLER_NAMES).

resource "aws_cloudwatch_log_group" "migrate" {
  #checkov:skip=CKV_AWS_158:KMS is opt-in through var.log_kms_key_arn (the complete example sets it); CloudWatch Logs encrypts at rest without it, and the binary logs no credentials.
  name              = "/aws/lambda/${var.name_prefix}-migrate"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = local.tags
}

resource "aws_cloudwatch_log_group" "refresh" {
  #checkov:skip=CKV_AWS_158:KMS is opt-in through var.log_kms_key_arn (the complete example sets it); CloudWatch Logs encrypts at rest without it, and the binary logs no credentials.
  name              = "/aws/lambda/${var.name_prefix}-refresh"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = local.tags
}

resource "aws_lambda_function" "migrate" {
  #checkov:skip=CKV_AWS_115:reserved concurrency is var.reserved_concurrency, null by default because small accounts cannot reserve any; concurrent invocations serialise on the advisory lock.
  #checkov:skip=CKV_AWS_116:invoked synchronously (terraform apply, aws lambda invoke): the caller gets the error, a dead-letter queue would never receive anything.
  #checkov:skip=CKV_AWS_173:the environment holds no secret (a secret ARN, host settings, flags); the credentials stay in Secrets Manager. Lambda encrypts it at rest with its own key.
  #checkov:skip=CKV_AWS_272:the zip is built and deployed by the same pipeline (make build, terraform apply); code signing needs an AWS Signer profile this module does not assume.
  function_name    = "${var.name_prefix}-migrate"
  description      = "scanner-migrator: applies the PostgreSQL migrations (payload {\"command\": \"migrate|status|plan|verify|rollback\", \"target\": N})"
  role             = aws_iam_role.migrate.arn
  filename         = var.lambda_zip_path
  source_code_hash = local.code_hash
  runtime          = "provided.al2023"
  handler          = "migrate"
  architectures    = ["arm64"]
  memory_size      = var.migrate_memory_mb
  timeout          = var.migrate_timeout_s

  reserved_concurrent_executions = coalesce(var.reserved_concurrency, -1)

  environment {
    # The master login (it owns the schema); the refresh role it creates and grants after migrating, how that
    # role logs in, and with a refresh password the secret whose password it sets.
    variables = merge(
      local.common_environment,
      {
        DB_SECRET_ARN           = local.db_secret_arn
        DB_AUTH                 = var.db_auth
        SNAPSHOT_BEFORE_MIGRATE = tostring(var.snapshot_before_migrate)
        INDEX_BUILD_ROWS_PER_S  = tostring(var.index_build_rows_per_s)
        REFRESH_ROLE            = local.refresh_db_user
        REFRESH_DB_AUTH         = var.refresh_db_auth
      },
      local.refresh_iam ? {} : { REFRESH_SECRET_ARN = local.refresh_secret_arn },
      # Work left at the deadline continues by itself (src/continuation.rs, README "Long work").
      var.continue_long_work ? {
        CONTINUATION_ROLE_ARN       = aws_iam_role.scheduler.arn
        CONTINUATION_SCHEDULE       = local.continuation_schedule_name
        CONTINUATION_SCHEDULE_GROUP = local.schedule_group
        CONTINUATION_DLQ_ARN        = aws_sqs_queue.refresh_dlq.arn
        CONTINUATION_DELAY_S        = tostring(var.continuation_delay_s)
      } : {},
    )
  }

  vpc_config {
    subnet_ids         = var.subnet_ids
    security_group_ids = [aws_security_group.lambda.id]
  }

  logging_config {
    log_format = "JSON"
    log_group  = aws_cloudwatch_log_group.migrate.name
  }

  tracing_config {
    mode = "Active"
  }

  tags = local.tags

  # Lambda checks at creation that the role may create network interfaces, and the first
  # invocation logs to the group: both must exist first.
  depends_on = [aws_iam_role_policy.migrate, aws_cloudwatch_log_group.migrate]

  lifecycle {
    precondition {
      condition     = (var.db_instance_identifier == null) != (var.db_cluster_identifier == null)
      error_message = "Set exactly one of db_instance_identifier and db_cluster_identifier."
    }
    precondition {
      condition     = var.db_auth != "iam" || (local.db_resource_id != null && var.db_iam_username != null)
      error_message = "db_auth = \"iam\" needs db_iam_username, and db_resource_id (given, or looked up with look_up_database): rds-db:connect is granted for that user on that database only."
    }
  }
}

resource "aws_lambda_function" "refresh" {
  #checkov:skip=CKV_AWS_115:reserved concurrency is var.reserved_concurrency, null by default because small accounts cannot reserve any; overlapping refreshes skip on the advisory lock.
  #checkov:skip=CKV_AWS_116:a failed refresh is superseded by the next scheduled one (the handler is idempotent, the schedule is the retry); undeliverable invocations go to the scheduler's dead-letter queue.
  #checkov:skip=CKV_AWS_173:the environment holds no secret (a secret ARN, host settings, flags); the credentials stay in Secrets Manager. Lambda encrypts it at rest with its own key.
  #checkov:skip=CKV_AWS_272:the zip is built and deployed by the same pipeline (make build, terraform apply); code signing needs an AWS Signer profile this module does not assume.
  function_name    = "${var.name_prefix}-refresh"
  description      = "scanner-migrator: refreshes the job_progress materialized view on a schedule"
  role             = aws_iam_role.refresh.arn
  filename         = var.lambda_zip_path
  source_code_hash = local.code_hash
  runtime          = "provided.al2023"
  handler          = "refresh"
  architectures    = ["arm64"]
  memory_size      = var.refresh_memory_mb
  timeout          = var.refresh_timeout_s

  reserved_concurrent_executions = coalesce(var.reserved_concurrency, -1)

  environment {
    # Its own least-privileged login (refresh_login.tf), never the master's.
    variables = merge(
      local.common_environment,
      { REFRESH_MIN_INTERVAL_S = tostring(var.refresh_min_interval_s) },
      local.refresh_iam ? { DB_AUTH = "iam", DB_USER = local.refresh_db_user } : { DB_AUTH = "password", DB_SECRET_ARN = local.refresh_secret_arn },
    )
  }

  vpc_config {
    subnet_ids         = var.subnet_ids
    security_group_ids = [aws_security_group.lambda.id]
  }

  logging_config {
    log_format = "JSON"
    log_group  = aws_cloudwatch_log_group.refresh.name
  }

  tracing_config {
    mode = "Active"
  }

  tags = local.tags

  depends_on = [aws_iam_role_policy.refresh, aws_cloudwatch_log_group.refresh]

  lifecycle {
    precondition {
      condition     = var.refresh_db_auth != "iam" || local.db_resource_id != null
      error_message = "refresh_db_auth = \"iam\" needs db_resource_id (given, or looked up with look_up_database): rds-db:connect is granted for ${local.refresh_db_user} on that database only. Set refresh_db_auth = \"password\" for a database without IAM authentication."
    }
    precondition {
      condition     = !(var.refresh_db_auth == "iam" && local.lookup_cluster && try(data.aws_rds_cluster.this[0].iam_database_authentication_enabled, true) == false)
      error_message = "The cluster ${coalesce(var.db_cluster_identifier, "-")} does not have IAM database authentication enabled: set refresh_db_auth = \"password\" (or enable it)."
    }
  }
}

# The scheduler invokes asynchronously. No Lambda-level retries: the refresh is idempotent and the
# next scheduled run is the retry; a failed delivery is the scheduler's to retry (schedule.tf).
resource "aws_lambda_function_event_invoke_config" "refresh" {
  function_name                = aws_lambda_function.refresh.function_name
  maximum_retry_attempts       = 0
  maximum_event_age_in_seconds = var.refresh_max_event_age_s
}

# Migrate is invoked synchronously (terraform apply, aws lambda invoke) and, to continue work left at a
# deadline, asynchronously by its own one-time schedule. Lambda must not run a migration again on its own:
# no retries (the chain's next link, or the alarm on MigrateFailed, is what follows a failure).
resource "aws_lambda_function_event_invoke_config" "migrate" {
  function_name          = aws_lambda_function.migrate.function_name
  maximum_retry_attempts = 0
}
