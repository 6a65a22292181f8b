# EventBridge Scheduler invokes refresh asynchronously on var.refresh_schedule_expression. A delivery that
# fails (throttled, function unavailable) is retried by the scheduler, then sent to the dead-letter queue.
# Lambda itself does not retry (lambda.tf: maximum_retry_attempts = 0): the next scheduled run is the retry.

locals {
  # Known before the schedule exists, for the scheduler role's trust policy (iam.tf).
  schedule_group = "default"
  schedule_name  = "${var.name_prefix}-refresh"
  # The migrate function's own one-time schedule (src/continuation.rs): one name, so one chain at a time.
  # The function creates it when work remains and the Scheduler deletes it after it fires; Terraform never
  # manages it.
  continuation_schedule_name = "${var.name_prefix}-migrate-continue"
}

resource "aws_sqs_queue" "refresh_dlq" {
  name                      = "${var.name_prefix}-refresh-dlq"
  message_retention_seconds = 1209600 # 14 days, the SQS maximum: time to notice and look.
  # Null, not false, with a customer key: the provider refuses both arguments set, even to false.
  sqs_managed_sse_enabled = var.dlq_kms_key_arn == null ? true : null
  kms_master_key_id       = var.dlq_kms_key_arn
  tags                    = local.tags
}

resource "aws_scheduler_schedule" "refresh" {
  #checkov:skip=CKV_AWS_297:the schedule's input holds no data (the scheduler's own time, execution id and attempt number); a customer key would only add a KMS dependency.
  name                         = local.schedule_name
  description                  = "scanner-migrator: refresh the job_progress materialized view"
  group_name                   = local.schedule_group
  schedule_expression          = var.refresh_schedule_expression
  schedule_expression_timezone = "UTC"
  state                        = var.refresh_enabled ? "ENABLED" : "DISABLED"

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_lambda_function.refresh.arn
    role_arn = aws_iam_role.scheduler.arn

    # The refresh handler logs these (src/handlers.rs parse_refresh_event accepts exactly these keys).
    input = jsonencode({
      scheduled_time = "<aws.scheduler.scheduled-time>"
      execution_id   = "<aws.scheduler.execution-id>"
      attempt_number = "<aws.scheduler.attempt-number>"
    })

    retry_policy {
      maximum_retry_attempts       = var.refresh_retry_attempts
      maximum_event_age_in_seconds = var.refresh_max_event_age_s
    }

    dead_letter_config {
      arn = aws_sqs_queue.refresh_dlq.arn
    }
  }

  # The role's policy must exist before the scheduler first assumes it, and job_progress before the first
  # refresh: on a new database, only the migration creates it.
  depends_on = [aws_iam_role_policy.scheduler, aws_lambda_invocation.migrate]
}
