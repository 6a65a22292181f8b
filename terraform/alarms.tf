# Refresh failures must be seen, not only logged: the scheduler invokes asynchronously, so nobody waits on
# the result. Two alarms, each notifying alarm_sns_topic_arn when it is set (on alarm and on recovery):
#   - the refresh function's errors: one in each of refresh_error_alarm_periods consecutive 5-minute periods
#     (a single failure is superseded by the next scheduled run; a run of them is not);
#   - the dead-letter queue holding anything: invocations the scheduler could not deliver at all.

resource "aws_cloudwatch_metric_alarm" "refresh_errors" {
  count = var.create_alarms ? 1 : 0

  alarm_name          = "${var.name_prefix}-refresh-errors"
  alarm_description   = "scanner-migrator: the refresh of job_progress failed in ${var.refresh_error_alarm_periods} consecutive 5-minute periods. Its log group ${aws_cloudwatch_log_group.refresh.name} has the error (errorType, errorMessage)."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.refresh.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = var.refresh_error_alarm_periods
  datapoints_to_alarm = var.refresh_error_alarm_periods
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  # No invocation in a period is no error (the schedule may be disabled).
  treat_missing_data = "notBreaching"
  alarm_actions      = var.alarm_sns_topic_arn == null ? [] : [var.alarm_sns_topic_arn]
  ok_actions         = var.alarm_sns_topic_arn == null ? [] : [var.alarm_sns_topic_arn]
  tags               = local.tags
}

resource "aws_cloudwatch_metric_alarm" "refresh_dlq" {
  count = var.create_alarms ? 1 : 0

  alarm_name          = "${var.name_prefix}-refresh-dlq"
  alarm_description   = "scanner-migrator: refresh invocations the scheduler could not deliver are in ${aws_sqs_queue.refresh_dlq.name}. Each message says why (its attributes carry the error)."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.refresh_dlq.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_sns_topic_arn == null ? [] : [var.alarm_sns_topic_arn]
  ok_actions          = var.alarm_sns_topic_arn == null ? [] : [var.alarm_sns_topic_arn]
  tags                = local.tags
}

# A migrate that failed, and one whose chain of continuations ended in an error or stopped: nobody waits on
# a continued run, so its failure must be seen. A run that stopped at its deadline and scheduled its
# continuation is not a failure (MigrateFailed 0). Terraform's own invocations fail the apply as well.
resource "aws_cloudwatch_metric_alarm" "migrate_failed" {
  count = var.create_alarms ? 1 : 0

  alarm_name          = "${var.name_prefix}-migrate-failed"
  alarm_description   = "scanner-migrator: a migrate failed (or its continuation could not go on). Its log group ${aws_cloudwatch_log_group.migrate.name} has the error (errorType, errorMessage); make invoke CMD=status shows where the schema stands."
  namespace           = "ScannerMigrator"
  metric_name         = "MigrateFailed"
  dimensions          = { FunctionName = aws_lambda_function.migrate.function_name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_sns_topic_arn == null ? [] : [var.alarm_sns_topic_arn]
  ok_actions          = var.alarm_sns_topic_arn == null ? [] : [var.alarm_sns_topic_arn]
  tags                = local.tags
}
