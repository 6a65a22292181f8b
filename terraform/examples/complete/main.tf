# A whole stack from nothing: a VPC with private subnets only, an encrypted PostgreSQL 15 instance that is not
# public, forces TLS and keeps its master password in Secrets Manager, and scanner-migrator, which migrates it
# during `terraform apply` and refreshes job_progress every five minutes.

# The zones are named, not discovered, so the subnets never move when AWS adds a zone.
data "aws_availability_zones" "chosen" {
  state = "available"

  filter {
    name   = "zone-name"
    values = var.availability_zones
  }

  lifecycle {
    postcondition {
      condition     = length(self.names) == length(var.availability_zones)
      error_message = "Not every zone in availability_zones is available in ${var.region}: ${join(", ", var.availability_zones)}."
    }
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  azs             = data.aws_availability_zones.chosen.names
  lambda_zip_path = coalesce(var.lambda_zip_path, "${path.root}/../../../target/lambda/scanner-migrator/bootstrap.zip")
  account_id      = data.aws_caller_identity.current.account_id
  partition       = data.aws_partition.current.partition
  region          = data.aws_region.current.id
}

# --- Encryption: one customer key for the database, its secret, and the log groups ----

resource "aws_kms_key" "this" {
  description             = "${var.name}: RDS storage, the master user secret, Performance Insights, log groups"
  enable_key_rotation     = true
  deletion_window_in_days = 30

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministers"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsEncryptsThisAccountsGroups"
        Effect    = "Allow"
        Principal = { Service = "logs.${local.region}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = { "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*" }
        }
      },
    ]
  })
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.this.key_id
}

# --- Network: private subnets only; the functions reach AWS APIs through the module's endpoints ----

resource "aws_vpc" "this" {
  cidr_block = var.vpc_cidr
  # Both on: interface endpoints with private DNS need them.
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = { Name = var.name }
}

# The default security group admits nothing.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
}

resource "aws_subnet" "private" {
  count = length(var.availability_zones)

  vpc_id            = aws_vpc.this.id
  cidr_block        = cidrsubnet(var.vpc_cidr, 8, count.index)
  availability_zone = local.azs[count.index]
  tags              = { Name = "${var.name}-private-${local.azs[count.index]}" }
}

resource "aws_route_table" "private" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = "${var.name}-private" }
}

resource "aws_route_table_association" "private" {
  count = length(var.availability_zones)

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private.id
}

resource "aws_cloudwatch_log_group" "flow_logs" {
  name              = "/vpc/${var.name}/flow-logs"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn
}

data "aws_iam_policy_document" "flow_logs_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "flow_logs" {
  name               = "${var.name}-flow-logs"
  assume_role_policy = data.aws_iam_policy_document.flow_logs_assume.json
}

data "aws_iam_policy_document" "flow_logs" {
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.flow_logs.arn}:*"]
  }
}

resource "aws_iam_role_policy" "flow_logs" {
  name   = "flow-logs"
  role   = aws_iam_role.flow_logs.id
  policy = data.aws_iam_policy_document.flow_logs.json
}

resource "aws_flow_log" "this" {
  vpc_id          = aws_vpc.this.id
  traffic_type    = "ALL"
  iam_role_arn    = aws_iam_role.flow_logs.arn
  log_destination = aws_cloudwatch_log_group.flow_logs.arn
}

# --- The database ----

resource "aws_security_group" "db" {
  name_prefix = "${var.name}-db-"
  description = "PostgreSQL: ingress rules are added by their clients (scanner-migrator adds its own)"
  vpc_id      = aws_vpc.this.id
  tags        = { Name = "${var.name}-db" }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_db_subnet_group" "this" {
  name       = var.name
  subnet_ids = aws_subnet.private[*].id
}

resource "aws_db_parameter_group" "this" {
  name_prefix = "${var.name}-pg${var.db_engine_version}-"
  family      = "postgres${var.db_engine_version}"
  description = "${var.name}: TLS only, DDL and slow statements logged"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  # Every migration statement lands in the database log as well as in the function's.
  parameter {
    name  = "log_statement"
    value = "ddl"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }

  parameter {
    name  = "log_lock_waits"
    value = "1"
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_db_instance" "this" {
  #checkov:skip=CKV_AWS_118:enhanced monitoring needs its own IAM role and costs per instance; Performance Insights and the exported logs cover this example. Turn it on with monitoring_interval in production.
  identifier     = var.name
  engine         = "postgres"
  engine_version = var.db_engine_version
  instance_class = var.db_instance_class

  allocated_storage = var.db_allocated_storage_gb
  storage_type      = "gp3"
  storage_encrypted = true
  kms_key_id        = aws_kms_key.this.arn

  db_name  = "scanner_db"
  username = "scanner_admin"
  # RDS keeps the password in Secrets Manager and rotates it; scanner-migrator reads it there.
  manage_master_user_password   = true
  master_user_secret_kms_key_id = aws_kms_key.this.arn

  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [aws_security_group.db.id]
  parameter_group_name   = aws_db_parameter_group.this.name
  publicly_accessible    = false
  multi_az               = var.db_multi_az

  iam_database_authentication_enabled = true
  auto_minor_version_upgrade          = true
  backup_retention_period             = 7
  copy_tags_to_snapshot               = true
  deletion_protection                 = var.db_deletion_protection
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "${var.name}-final"
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]

  performance_insights_enabled    = true
  performance_insights_kms_key_id = aws_kms_key.this.arn
}

# --- scanner-migrator ----

module "scanner_migrator" {
  source = "../.."

  name_prefix = "${var.name}-migrator"
  vpc_id      = aws_vpc.this.id
  subnet_ids  = aws_subnet.private[*].id
  # The VPC is this example's own and has no NAT: the module's endpoints are its only way to the AWS APIs.
  # They admit the whole VPC on 443, since private DNS sends every client in it there.
  create_vpc_endpoints       = true
  vpc_endpoint_allowed_cidrs = [var.vpc_cidr]

  # The database is created in this same apply: nothing to look up at plan time, everything given.
  look_up_database       = false
  db_instance_identifier = aws_db_instance.this.identifier
  db_security_group_id   = aws_security_group.db.id
  db_port                = aws_db_instance.this.port
  db_name                = aws_db_instance.this.db_name
  db_secret_arn          = aws_db_instance.this.master_user_secret[0].secret_arn
  db_secret_kms_key_arn  = aws_kms_key.this.arn
  # IAM authentication is on (above): the refresh function logs in as scanner_refresh_<name_prefix> with an IAM token
  # (refresh_db_auth = "iam", the default) and reads no secret; rds-db:connect names this resource id.
  db_resource_id = aws_db_instance.this.resource_id

  lambda_zip_path             = local.lambda_zip_path
  snapshot_before_migrate     = var.snapshot_before_migrate
  refresh_schedule_expression = var.refresh_schedule_expression
  log_retention_days          = var.log_retention_days
  log_kms_key_arn             = aws_kms_key.this.arn
  reserved_concurrency        = 1
}
