# One dashboard for both functions: the migrations, the refresh, the functions as Lambda sees them, the
# dead-letter queue and the alarms. Every ScannerMigrator metric drawn here is one the binary emits, with the
# dimension and unit it emits it with (src/metrics.rs EMITTED; tests/it/terraform.rs checks it). Each graph
# draws one unit, named on its axis. Metrics are written out in full (no "." shorthand) so the test can read them.

locals {
  # The console's host by partition (the dashboard_url output).
  console_host = lookup({
    aws        = "console.aws.amazon.com"
    aws-cn     = "console.amazonaws.cn"
    aws-us-gov = "console.amazonaws-us-gov.com"
  }, local.partition, "console.aws.amazon.com")
}

resource "aws_cloudwatch_dashboard" "this" {
  count = var.create_dashboard ? 1 : 0

  dashboard_name = var.name_prefix
  dashboard_body = jsonencode({
    widgets = concat([
      {
        type = "text", width = 24, height = 2,
        properties = {
          markdown = "## scanner-migrator: ${aws_lambda_function.migrate.function_name} and ${aws_lambda_function.refresh.function_name}\nMigrate metrics are one point per migrate run (status, plan, verify and rollback emit none); refresh metrics one per scheduled run. Errors are in the log groups ${aws_cloudwatch_log_group.migrate.name} and ${aws_cloudwatch_log_group.refresh.name} (errorType, errorMessage)."
        }
      },
      {
        type = "metric", width = 8, height = 6,
        properties = {
          title = "Migrations applied and pending", view = "timeSeries", region = local.region, period = 300,
          yAxis = { left = { label = "Count", min = 0 } },
          metrics = [
            ["ScannerMigrator", "MigrationsApplied", "FunctionName", aws_lambda_function.migrate.function_name, { stat = "Sum", label = "applied" }],
            ["ScannerMigrator", "MigrationsPending", "FunctionName", aws_lambda_function.migrate.function_name, { stat = "Maximum", label = "pending after the run" }],
          ]
        }
      },
      {
        type = "metric", width = 8, height = 6,
        properties = {
          title = "Migrate run duration", view = "timeSeries", region = local.region, period = 300,
          yAxis = { left = { label = "Milliseconds", min = 0 } },
          metrics = [
            ["ScannerMigrator", "MigrationDuration", "FunctionName", aws_lambda_function.migrate.function_name, { stat = "Maximum", label = "longest run" }],
          ]
        }
      },
      {
        type = "metric", width = 8, height = 6,
        properties = {
          title = "Batched data change: done", view = "timeSeries", region = local.region, period = 60,
          yAxis = { left = { label = "Percent", min = 0, max = 100 } },
          metrics = [
            ["ScannerMigrator", "BatchPercentDone", "FunctionName", aws_lambda_function.migrate.function_name, { stat = "Maximum", label = "percent done (where the migration counts what is left)" }],
          ]
        }
      },
      {
        type = "metric", width = 8, height = 6,
        properties = {
          title = "Batched data change: speed", view = "timeSeries", region = local.region, period = 60,
          yAxis = { left = { label = "Count/Second", min = 0 } },
          metrics = [
            ["ScannerMigrator", "BatchRowsPerSecond", "FunctionName", aws_lambda_function.migrate.function_name, { stat = "Average", label = "rows per second" }],
          ]
        }
      },
      {
        type = "metric", width = 8, height = 6,
        properties = {
          title = "Failed runs (migrate, refresh)", view = "timeSeries", region = local.region, period = 300,
          yAxis = { left = { label = "Count", min = 0 } },
          metrics = [
            ["ScannerMigrator", "MigrateFailed", "FunctionName", aws_lambda_function.migrate.function_name, { stat = "Sum", label = "migrate failed" }],
            ["ScannerMigrator", "RefreshFailed", "FunctionName", aws_lambda_function.refresh.function_name, { stat = "Sum", label = "refresh failed" }],
          ]
        }
      },
      {
        type = "metric", width = 8, height = 6,
        properties = {
          title = "Detached index build: share of the current phase done", view = "timeSeries", region = local.region, period = 60,
          yAxis = { left = { label = "Percent", min = 0, max = 100 } },
          metrics = [
            ["ScannerMigrator", "BuildPercentDone", "FunctionName", aws_lambda_function.migrate.function_name, { stat = "Maximum", label = "percent done" }],
          ]
        }
      },
      {
        type = "metric", width = 8, height = 6,
        properties = {
          title = "Detached index build: rows per second", view = "timeSeries", region = local.region, period = 60,
          yAxis = { left = { label = "Count/Second", min = 0 } },
          metrics = [
            ["ScannerMigrator", "BuildRowsPerSecond", "FunctionName", aws_lambda_function.migrate.function_name, { stat = "Average", label = "rows/s so far" }],
          ]
        }
      },
      {
        type = "metric", width = 8, height = 6,
        properties = {
          title = "Refresh duration", view = "timeSeries", region = local.region, period = 300,
          yAxis = { left = { label = "Milliseconds", min = 0 } },
          metrics = [
            ["ScannerMigrator", "RefreshDuration", "FunctionName", aws_lambda_function.refresh.function_name, { stat = "Maximum", label = "longest" }],
            ["ScannerMigrator", "RefreshDuration", "FunctionName", aws_lambda_function.refresh.function_name, { stat = "Average", label = "average" }],
          ]
        }
      },
      {
        type = "metric", width = 8, height = 6,
        properties = {
          title = "Refresh: delta rows folded, skipped runs", view = "timeSeries", region = local.region, period = 300,
          yAxis = { left = { label = "Count", min = 0 } },
          metrics = [
            ["ScannerMigrator", "DeltaRowsFolded", "FunctionName", aws_lambda_function.refresh.function_name, { stat = "Sum", label = "delta rows folded" }],
            ["ScannerMigrator", "Skipped", "FunctionName", aws_lambda_function.refresh.function_name, { stat = "Sum", label = "skipped runs" }],
          ]
        }
      },
      {
        type = "metric", width = 8, height = 6,
        properties = {
          title = "job_progress staleness after each refresh", view = "timeSeries", region = local.region, period = 300,
          yAxis = { left = { label = "Seconds", min = 0 } },
          metrics = [
            ["ScannerMigrator", "Staleness", "FunctionName", aws_lambda_function.refresh.function_name, { stat = "Maximum", label = "staleness" }],
          ]
        }
      },
      {
        type = "metric", width = 8, height = 6,
        properties = {
          title = "Function errors and throttles (Lambda)", view = "timeSeries", region = local.region, period = 300,
          yAxis = { left = { label = "Count", min = 0 } },
          metrics = [
            ["AWS/Lambda", "Errors", "FunctionName", aws_lambda_function.migrate.function_name, { stat = "Sum", label = "migrate errors" }],
            ["AWS/Lambda", "Errors", "FunctionName", aws_lambda_function.refresh.function_name, { stat = "Sum", label = "refresh errors" }],
            ["AWS/Lambda", "Throttles", "FunctionName", aws_lambda_function.migrate.function_name, { stat = "Sum", label = "migrate throttles" }],
            ["AWS/Lambda", "Throttles", "FunctionName", aws_lambda_function.refresh.function_name, { stat = "Sum", label = "refresh throttles" }],
          ]
        }
      },
      {
        type = "metric", width = 8, height = 6,
        properties = {
          title = "Function duration (Lambda)", view = "timeSeries", region = local.region, period = 300,
          yAxis = { left = { label = "Milliseconds", min = 0 } },
          metrics = [
            ["AWS/Lambda", "Duration", "FunctionName", aws_lambda_function.migrate.function_name, { stat = "Maximum", label = "migrate" }],
            ["AWS/Lambda", "Duration", "FunctionName", aws_lambda_function.refresh.function_name, { stat = "Maximum", label = "refresh" }],
          ]
        }
      },
      {
        type = "metric", width = 8, height = 6,
        properties = {
          title = "Refresh dead-letter queue depth", view = "timeSeries", region = local.region, period = 300,
          yAxis = { left = { label = "Count", min = 0 } },
          metrics = [
            ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", aws_sqs_queue.refresh_dlq.name, { stat = "Maximum", label = "undelivered refresh invocations" }],
          ]
        }
      },
      ],
      # The alarms exist only with create_alarms.
      var.create_alarms ? [
        {
          type = "alarm", width = 24, height = 2,
          properties = {
            title  = "Alarms"
            alarms = concat(aws_cloudwatch_metric_alarm.refresh_errors[*].arn, aws_cloudwatch_metric_alarm.refresh_dlq[*].arn, aws_cloudwatch_metric_alarm.migrate_failed[*].arn)
          }
        },
    ] : [])
  })
}
