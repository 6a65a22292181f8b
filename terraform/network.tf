# The functions reach two things: PostgreSQL on db_port, and the AWS APIs (Secrets Manager, RDS, and for
# migrate's continuation EventBridge Scheduler) on 443.
# Nothing reaches them. How the AWS APIs are reached is the user's choice (variables.tf, "Network"):
#   - create_vpc_endpoints = true: the module's own interface endpoints, private DNS on. Private DNS changes
#     what secretsmanager.<region>.amazonaws.com and rds.<region>.amazonaws.com resolve to for EVERY workload
#     in the VPC, so the endpoints admit the whole VPC (its primary CIDR, or vpc_endpoint_allowed_cidrs) on 443,
#     not only the functions: nothing else in the VPC loses its path to those APIs.
#   - otherwise (the default, for a VPC the module did not make): no endpoint is created; the functions may
#     reach 443 in the VPC's primary CIDR block (the VPC's existing endpoints) and, with allow_https_to_internet,
#     anywhere (a NAT gateway).

# The VPC's primary CIDR block: where its existing endpoints live, and who our endpoints admit by default.
# (Counts below depend on inputs only, never on this look-up: the VPC may be created in the same apply.)
data "aws_vpc" "this" {
  id = var.vpc_id
}

locals {
  endpoint_allowed_cidrs = coalesce(var.vpc_endpoint_allowed_cidrs, [data.aws_vpc.this.cidr_block])
}

resource "aws_security_group" "lambda" {
  name_prefix = "${var.name_prefix}-lambda-"
  description = "scanner-migrator functions: egress to the database and the AWS APIs on 443 only"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name_prefix}-lambda" })

  # No inline rules: Terraform removes the default allow-all egress rule, and the rules below are all there is.
  lifecycle {
    create_before_destroy = true

    # Checked here, once: every rule to and from the database depends on this group.
    precondition {
      condition     = local.db_security_group_id != null
      error_message = var.look_up_database ? "Set db_security_group_id: the database does not have exactly one security group to look it up from (it has ${length(local.looked_up_security_groups)})." : "Set db_security_group_id: with look_up_database = false nothing is looked up."
    }
  }
}

resource "aws_vpc_security_group_egress_rule" "lambda_to_db" {
  security_group_id            = aws_security_group.lambda.id
  description                  = "PostgreSQL"
  referenced_security_group_id = local.db_security_group_id
  ip_protocol                  = "tcp"
  from_port                    = var.db_port
  to_port                      = var.db_port
  tags                         = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "db_from_lambda" {
  security_group_id            = local.db_security_group_id
  description                  = "PostgreSQL from ${var.name_prefix} (scanner-migrator)"
  referenced_security_group_id = aws_security_group.lambda.id
  ip_protocol                  = "tcp"
  from_port                    = var.db_port
  to_port                      = var.db_port
  tags                         = local.tags
}

resource "aws_vpc_security_group_egress_rule" "lambda_to_endpoints" {
  count = var.create_vpc_endpoints ? 1 : 0

  security_group_id            = aws_security_group.lambda.id
  description                  = "HTTPS to the Secrets Manager and RDS API endpoints"
  referenced_security_group_id = aws_security_group.endpoints[0].id
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  tags                         = local.tags
}

# Without our own endpoints, the VPC's existing ones are somewhere in its (primary) CIDR block.
resource "aws_vpc_security_group_egress_rule" "lambda_to_vpc_https" {
  count = var.create_vpc_endpoints ? 0 : 1

  security_group_id = aws_security_group.lambda.id
  description       = "HTTPS to the VPC's existing interface endpoints"
  cidr_ipv4         = data.aws_vpc.this.cidr_block
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  tags              = local.tags
}

# A VPC that reaches the AWS APIs through a NAT gateway.
resource "aws_vpc_security_group_egress_rule" "lambda_to_internet_https" {
  count = var.allow_https_to_internet ? 1 : 0

  security_group_id = aws_security_group.lambda.id
  description       = "HTTPS to the AWS APIs through the VPC's NAT gateway"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  tags              = local.tags
}

resource "aws_security_group" "endpoints" {
  count = var.create_vpc_endpoints ? 1 : 0

  name_prefix = "${var.name_prefix}-endpoints-"
  description = "scanner-migrator VPC endpoints (private DNS): HTTPS from the VPC"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name_prefix}-endpoints" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_from_lambda" {
  count = var.create_vpc_endpoints ? 1 : 0

  security_group_id            = aws_security_group.endpoints[0].id
  description                  = "HTTPS from the scanner-migrator functions"
  referenced_security_group_id = aws_security_group.lambda.id
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  tags                         = local.tags
}

# Private DNS sends every client in the VPC here: admit them all, not only the functions.
resource "aws_vpc_security_group_ingress_rule" "endpoints_from_vpc" {
  count = var.create_vpc_endpoints ? (var.vpc_endpoint_allowed_cidrs == null ? 1 : length(var.vpc_endpoint_allowed_cidrs)) : 0

  security_group_id = aws_security_group.endpoints[0].id
  description       = "HTTPS from the VPC: private DNS resolves these services here for every workload in it"
  cidr_ipv4         = local.endpoint_allowed_cidrs[count.index]
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  tags              = local.tags
}

# Secrets Manager: the credentials, read on every invocation. RDS API: the endpoint lookup
# (DB_INSTANCE_IDENTIFIER / DB_CLUSTER_IDENTIFIER are always set) and the snapshots. EventBridge
# Scheduler: the migrate function's continuation (continue_long_work).
resource "aws_vpc_endpoint" "this" {
  for_each = var.create_vpc_endpoints ? toset(concat(["secretsmanager", "rds"], var.continue_long_work ? ["scheduler"] : [])) : toset([])

  vpc_id              = var.vpc_id
  service_name        = "com.amazonaws.${local.region}.${each.key}"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = local.endpoint_subnet_ids
  security_group_ids  = [aws_security_group.endpoints[0].id]
  private_dns_enabled = true
  tags                = merge(local.tags, { Name = "${var.name_prefix}-${each.key}" })
}
