# One role per function, each allowed exactly what its code calls (src/credentials.rs AWS_ACTIONS;
# tests/terraform.rs checks the two agree) plus what Lambda itself needs: network interfaces in the
# VPC, its log group, X-Ray.

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    sid     = "LambdaAssumesRole"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

# What migrate needs to open its connection: the master login (its secret, or an IAM token for
# db_iam_username) and the endpoint lookup; with a refresh password, that secret too (it sets the password).
data "aws_iam_policy_document" "db_access" {
  lifecycle {
    precondition {
      condition     = local.db_secret_arn != null
      error_message = "No database secret: set db_secret_arn, or let the database manage its master password (manage_master_user_password) and keep look_up_database = true so the module can look it up."
    }
  }

  statement {
    sid       = "ReadDatabaseSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.refresh_iam ? [local.db_secret_arn] : [local.db_secret_arn, local.refresh_secret_arn]
  }

  dynamic "statement" {
    for_each = var.db_secret_kms_key_arn == null ? [] : [var.db_secret_kms_key_arn]
    content {
      sid       = "DecryptDatabaseSecretViaSecretsManager"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["secretsmanager.${local.region}.${local.dns_suffix}"]
      }
    }
  }

  statement {
    sid       = "LookUpDatabaseEndpoint"
    actions   = local.is_cluster ? ["rds:DescribeDBClusters"] : ["rds:DescribeDBInstances"]
    resources = [local.db_arn]
  }

  dynamic "statement" {
    for_each = var.db_auth == "iam" ? [1] : []
    content {
      sid       = "ConnectWithIamToken"
      actions   = ["rds-db:connect"]
      resources = ["arn:${local.partition}:rds-db:${local.region}:${local.account_id}:dbuser:${local.db_resource_id}/${var.db_iam_username}"]
    }
  }
}

# What refresh needs: its own login only. With IAM: rds-db:connect as refresh_db_user on this database and
# no secret at all; with a password: its own secret, never the master's.
data "aws_iam_policy_document" "refresh_db_access" {
  dynamic "statement" {
    for_each = local.refresh_iam ? [1] : []
    content {
      sid       = "ConnectAsRefreshUser"
      actions   = ["rds-db:connect"]
      resources = ["arn:${local.partition}:rds-db:${local.region}:${local.account_id}:dbuser:${local.db_resource_id}/${local.refresh_db_user}"]
    }
  }

  dynamic "statement" {
    for_each = local.refresh_iam ? [] : [1]
    content {
      sid       = "ReadRefreshLoginSecret"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [local.refresh_secret_arn]
    }
  }

  dynamic "statement" {
    for_each = !local.refresh_iam && var.db_secret_kms_key_arn != null ? [var.db_secret_kms_key_arn] : []
    content {
      sid       = "DecryptRefreshLoginSecretViaSecretsManager"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["secretsmanager.${local.region}.${local.dns_suffix}"]
      }
    }
  }

  statement {
    sid       = "LookUpDatabaseEndpoint"
    actions   = local.is_cluster ? ["rds:DescribeDBClusters"] : ["rds:DescribeDBInstances"]
    resources = [local.db_arn]
  }
}

# What Lambda needs to run a function in the VPC and trace it. The Describe actions
# support no resource-level permissions; the ones that change something are held to
# this account and region.
data "aws_iam_policy_document" "lambda_runtime" {
  statement {
    sid       = "DescribeNetworkInterfaces"
    actions   = ["ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"]
    resources = ["*"]
  }

  statement {
    sid = "ManageNetworkInterfaces"
    actions = [
      "ec2:CreateNetworkInterface",
      "ec2:DeleteNetworkInterface",
      "ec2:AssignPrivateIpAddresses",
      "ec2:UnassignPrivateIpAddresses",
    ]
    resources = ["arn:${local.partition}:ec2:${local.region}:${local.account_id}:*"]
  }

  statement {
    sid       = "XRayTracing"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }
}

# --- migrate --------------------------------------------------------------------

resource "aws_iam_role" "migrate" {
  name                 = "${var.name_prefix}-migrate"
  description          = "scanner-migrator migrate function"
  assume_role_policy   = data.aws_iam_policy_document.lambda_assume.json
  max_session_duration = 3600
  tags                 = local.tags
}

data "aws_iam_policy_document" "migrate" {
  source_policy_documents = [
    data.aws_iam_policy_document.db_access.json,
    data.aws_iam_policy_document.lambda_runtime.json,
  ]

  statement {
    sid       = "WriteOwnLogGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.migrate.arn}:*"]
  }

  # The snapshot before migrating: of this database only, named as the binary names them.
  dynamic "statement" {
    for_each = var.snapshot_before_migrate ? [1] : []
    content {
      sid       = "SnapshotBeforeMigrating"
      actions   = local.is_cluster ? ["rds:CreateDBClusterSnapshot", "rds:DescribeDBClusterSnapshots"] : ["rds:CreateDBSnapshot", "rds:DescribeDBSnapshots"]
      resources = [local.db_arn, local.snapshot_arn]
    }
  }

  # The continuation (src/continuation.rs): its own one-time schedule only, and the scheduler role only to
  # the Scheduler.
  dynamic "statement" {
    for_each = var.continue_long_work ? [1] : []
    content {
      sid       = "ScheduleOwnContinuation"
      actions   = ["scheduler:CreateSchedule", "scheduler:UpdateSchedule", "scheduler:DeleteSchedule"]
      resources = [local.continuation_schedule_arn]
    }
  }

  dynamic "statement" {
    for_each = var.continue_long_work ? [1] : []
    content {
      sid       = "PassSchedulerRoleToScheduler"
      actions   = ["iam:PassRole"]
      resources = [aws_iam_role.scheduler.arn]

      condition {
        test     = "StringEquals"
        variable = "iam:PassedToService"
        values   = ["scheduler.amazonaws.com"]
      }
    }
  }

  # CreateDB*Snapshot with tags also needs AddTagsToResource, on the new snapshot only.
  dynamic "statement" {
    for_each = var.snapshot_before_migrate ? [1] : []
    content {
      sid       = "TagOwnSnapshots"
      actions   = ["rds:AddTagsToResource"]
      resources = [local.snapshot_arn]
    }
  }
}

resource "aws_iam_role_policy" "migrate" {
  name   = "scanner-migrator-migrate"
  role   = aws_iam_role.migrate.id
  policy = data.aws_iam_policy_document.migrate.json
}

# --- refresh --------------------------------------------------------------------

resource "aws_iam_role" "refresh" {
  name                 = "${var.name_prefix}-refresh"
  description          = "scanner-migrator refresh function"
  assume_role_policy   = data.aws_iam_policy_document.lambda_assume.json
  max_session_duration = 3600
  tags                 = local.tags
}

data "aws_iam_policy_document" "refresh" {
  source_policy_documents = [
    data.aws_iam_policy_document.refresh_db_access.json,
    data.aws_iam_policy_document.lambda_runtime.json,
  ]

  statement {
    sid       = "WriteOwnLogGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.refresh.arn}:*"]
  }
}

resource "aws_iam_role_policy" "refresh" {
  name   = "scanner-migrator-refresh"
  role   = aws_iam_role.refresh.id
  policy = data.aws_iam_policy_document.refresh.json
}

# --- the schedule ----------------------------------------------------------------

data "aws_iam_policy_document" "scheduler_assume" {
  statement {
    sid     = "SchedulerAssumesRole"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }

    # Only this account's refresh schedule may use the role (the confused-deputy guard the Scheduler docs
    # give). The Scheduler documents aws:SourceArn as the schedule group's ARN; the schedule's own ARN is
    # admitted too, so the condition holds whichever of the two the service sends.
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values = [
        "arn:${local.partition}:scheduler:${local.region}:${local.account_id}:schedule-group/${local.schedule_group}",
        "arn:${local.partition}:scheduler:${local.region}:${local.account_id}:schedule/${local.schedule_group}/${local.schedule_name}",
        local.continuation_schedule_arn,
      ]
    }
  }
}

locals {
  continuation_schedule_arn = "arn:${local.partition}:scheduler:${local.region}:${local.account_id}:schedule/${local.schedule_group}/${local.continuation_schedule_name}"
}

resource "aws_iam_role" "scheduler" {
  name                 = "${var.name_prefix}-scheduler"
  description          = "EventBridge Scheduler: invokes the scanner-migrator refresh function, and migrate to continue its work"
  assume_role_policy   = data.aws_iam_policy_document.scheduler_assume.json
  max_session_duration = 3600
  tags                 = local.tags
}

data "aws_iam_policy_document" "scheduler" {
  statement {
    sid       = "InvokeRefreshOnly"
    actions   = ["lambda:InvokeFunction"]
    resources = [aws_lambda_function.refresh.arn]
  }

  # The migrate function's continuation (its own one-time schedule).
  dynamic "statement" {
    for_each = var.continue_long_work ? [1] : []
    content {
      sid       = "InvokeMigrateToContinue"
      actions   = ["lambda:InvokeFunction"]
      resources = [aws_lambda_function.migrate.arn]
    }
  }

  statement {
    sid       = "DeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.refresh_dlq.arn]
  }

  # An SQS queue under a customer key: SendMessage needs the key too, or dead letters are lost exactly
  # when they matter. (The key's policy must also allow this role, or the account, to use it.)
  dynamic "statement" {
    for_each = var.dlq_kms_key_arn == null ? [] : [var.dlq_kms_key_arn]
    content {
      sid       = "DeadLettersEncrypted"
      actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
      resources = [statement.value]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["sqs.${local.region}.${local.dns_suffix}"]
      }
    }
  }
}

resource "aws_iam_role_policy" "scheduler" {
  name   = "scanner-migrator-scheduler"
  role   = aws_iam_role.scheduler.id
  policy = data.aws_iam_policy_document.scheduler.json
}
