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

output "security_group_id" {
  description = "The functions' security group (the database security group admits it on the database port)."
  value       = aws_security_group.lambda.id
}

output "log_group_names" {
  description = "The functions' log groups, by handler."
  value = {
    migrate = aws_cloudwatch_log_group.migrate.name
    refresh = aws_cloudwatch_log_group.refresh.name
  }
}

output "refresh_dead_letter_queue_url" {
  description = "SQS queue receiving refresh invocations the scheduler could not deliver. Alarm on its depth."
  value       = aws_sqs_queue.refresh_dlq.url
}

output "invoke_command" {
  description = "How to run a command by hand (status, plan, verify, migrate, rollback with a target)."
  value       = "aws lambda invoke --function-name ${aws_lambda_function.migrate.function_name} --cli-binary-format raw-in-base64-out --cli-read-timeout 900 --payload '{\"command\":\"status\"}' /dev/stdout"
}
