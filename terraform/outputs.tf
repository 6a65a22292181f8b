output "migration_result" {
  description = "What the migrate function reported in this apply: status (applied, up_to_date), schema_version, the migrations applied with their durations and lock retries, and the verification results."
  value       = jsondecode(aws_lambda_invocation.migrate.result)
}

output "migrate_function_name" {
  description = "Name of the migrate function, for `aws lambda invoke` and `make invoke FUNCTION=...`."
  value       = aws_lambda_function.migrate.function_name
}

output "migrate_function_arn" {
  description = "ARN of the migrate function."
  value       = aws_lambda_function.migrate.arn
}

output "refresh_function_name" {
  description = "Name of the refresh function."
  value       = aws_lambda_function.refresh.function_name
}

output "refresh_function_arn" {
  description = "ARN of the refresh function."
  value       = aws_lambda_function.refresh.arn
}

output "role_arns" {
  description = "The IAM roles, by who assumes them: migrate and refresh (the functions), scheduler (EventBridge Scheduler, to invoke refresh). For key policies and permission boundaries."
  value = {
    migrate   = aws_iam_role.migrate.arn
    refresh   = aws_iam_role.refresh.arn
    scheduler = aws_iam_role.scheduler.arn
  }
}

output "refresh_login" {
  description = "How the refresh function logs in: the database user (refresh_db_user: scanner_refresh_<name_prefix> unless set), the auth (iam or password), and with password the ARN of its own secret (null with iam)."
  value = {
    user       = local.refresh_db_user
    auth       = var.refresh_db_auth
    secret_arn = local.refresh_secret_arn
  }
}

output "security_group_id" {
  description = "The functions' security group (the database security group admits it on the database port)."
  value       = aws_security_group.lambda.id
}

output "log_group_names" {
  description = "The functions' log groups, by handler (`aws logs tail NAME`, `make logs`)."
  value = {
    migrate = aws_cloudwatch_log_group.migrate.name
    refresh = aws_cloudwatch_log_group.refresh.name
  }
}

output "log_group_arns" {
  description = "The functions' log groups' ARNs, by handler (subscriptions, metric filters)."
  value = {
    migrate = aws_cloudwatch_log_group.migrate.arn
    refresh = aws_cloudwatch_log_group.refresh.arn
  }
}

output "refresh_schedule_arn" {
  description = "The EventBridge Scheduler schedule that invokes refresh."
  value       = aws_scheduler_schedule.refresh.arn
}

output "refresh_dead_letter_queue_url" {
  description = "SQS queue receiving refresh invocations the scheduler could not deliver (the refresh_dlq alarm watches its depth)."
  value       = aws_sqs_queue.refresh_dlq.url
}

output "refresh_dead_letter_queue_arn" {
  description = "ARN of the refresh dead-letter queue."
  value       = aws_sqs_queue.refresh_dlq.arn
}

output "alarm_arns" {
  description = "The CloudWatch alarms (refresh errors, dead-letter queue depth, failed migrates); empty with create_alarms = false."
  value = {
    for name, alarm in {
      refresh_errors = one(aws_cloudwatch_metric_alarm.refresh_errors[*].arn)
      refresh_dlq    = one(aws_cloudwatch_metric_alarm.refresh_dlq[*].arn)
      migrate_failed = one(aws_cloudwatch_metric_alarm.migrate_failed[*].arn)
    } : name => alarm if alarm != null
  }
}

output "dashboard_url" {
  description = "The CloudWatch dashboard in the console; null with create_dashboard = false."
  value       = var.create_dashboard ? "https://${local.console_host}/cloudwatch/home?region=${local.region}#dashboards/dashboard/${aws_cloudwatch_dashboard.this[0].dashboard_name}" : null
}

output "invoke_command" {
  description = "How to run a command by hand (status, plan, verify, migrate, rollback with a target), with AWS CLI v1 or v2: the payload is read from stdin as raw bytes (fileb://), which both take as given. AWS_MAX_ATTEMPTS=1 and the 900 s read timeout keep the CLI from invoking a long migration a second time."
  value       = "echo '{\"command\":\"status\"}' | AWS_MAX_ATTEMPTS=1 aws lambda invoke --function-name ${aws_lambda_function.migrate.function_name} --cli-read-timeout 900 --cli-connect-timeout 10 --payload fileb:///dev/stdin /dev/stdout"
}
