output "migration_result" {
  description = "The migrate function's result in this apply."
  value       = module.scanner_migrator.migration_result
}

output "migrate_function_name" {
  description = "For `make invoke FUNCTION=...` and `aws lambda invoke`."
  value       = module.scanner_migrator.migrate_function_name
}

output "refresh_function_name" {
  description = "For `make logs FUNCTION=...`."
  value       = module.scanner_migrator.refresh_function_name
}

output "db_endpoint" {
  description = "The database endpoint (reachable from inside the VPC only)."
  value       = aws_db_instance.this.endpoint
}

output "db_secret_arn" {
  description = "The RDS-managed master user secret the functions read."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "refresh_dead_letter_queue_url" {
  description = "Refresh invocations the scheduler could not deliver."
  value       = module.scanner_migrator.refresh_dead_letter_queue_url
}

output "dashboard_url" {
  description = "The module's CloudWatch dashboard in the console."
  value       = module.scanner_migrator.dashboard_url
}
