# scanner-migrator: two Lambda functions from one zip, for an existing VPC and PostgreSQL database.
#   migrate  - applies the migrations; invoked by `terraform apply` (invocation.tf) and by hand.
#   refresh  - refreshes job_progress on an EventBridge Scheduler schedule (schedule.tf).

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

# Values not given are looked up from the database itself, at plan time, when var.look_up_database says so.
# Whether to look up is decided by inputs known at plan time only: a database created in the same apply has
# an unknown secret ARN until then, and `count` cannot depend on that.
locals {
  lookup_instance = var.look_up_database && var.db_instance_identifier != null
  lookup_cluster  = var.look_up_database && var.db_cluster_identifier != null
}

data "aws_db_instance" "this" {
  count                  = local.lookup_instance ? 1 : 0
  db_instance_identifier = var.db_instance_identifier
}

data "aws_rds_cluster" "this" {
  count              = local.lookup_cluster ? 1 : 0
  cluster_identifier = var.db_cluster_identifier
}

locals {
  looked_up_secret_arn = try(
    one(data.aws_db_instance.this[0].master_user_secret).secret_arn,
    one(data.aws_rds_cluster.this[0].master_user_secret).secret_arn,
    null,
  )
  looked_up_security_groups = try(
    tolist(data.aws_db_instance.this[0].vpc_security_groups),
    tolist(data.aws_rds_cluster.this[0].vpc_security_group_ids),
    [],
  )
  looked_up_resource_id = try(data.aws_db_instance.this[0].resource_id, data.aws_rds_cluster.this[0].cluster_resource_id, null)
  db_secret_arn         = var.db_secret_arn != null ? var.db_secret_arn : local.looked_up_secret_arn
  db_resource_id        = var.db_resource_id != null ? var.db_resource_id : local.looked_up_resource_id
  db_security_group_id  = var.db_security_group_id != null ? var.db_security_group_id : length(local.looked_up_security_groups) == 1 ? local.looked_up_security_groups[0] : null
}

locals {
  partition = data.aws_partition.current.partition
  # `id` is the region's name in both provider majors: `name` is deprecated in 6.x, `region` absent in 5.x.
  region     = data.aws_region.current.id
  account_id = data.aws_caller_identity.current.account_id
  dns_suffix = data.aws_partition.current.dns_suffix

  is_cluster = var.db_cluster_identifier != null
  db_id      = local.is_cluster ? var.db_cluster_identifier : var.db_instance_identifier
  db_arn     = "arn:${local.partition}:rds:${local.region}:${local.account_id}:${local.is_cluster ? "cluster" : "db"}:${local.db_id}"
  # The binary names its snapshots scanner-migrator-before-<migration>-<time> (src/snapshot.rs).
  snapshot_arn = "arn:${local.partition}:rds:${local.region}:${local.account_id}:${local.is_cluster ? "cluster-snapshot" : "snapshot"}:scanner-migrator-before-*"

  code_hash      = filebase64sha256(var.lambda_zip_path)
  migrations_dir = coalesce(var.migrations_dir, "${path.module}/../migrations")
  # One hash over every migration file (names and contents), so adding, editing or removing one re-invokes migrate.
  migrations_hash = sha256(join("\n", [
    for f in sort(fileset(local.migrations_dir, "*.sql")) : "${f} ${filesha256("${local.migrations_dir}/${f}")}"
  ]))

  endpoint_subnet_ids = coalesce(var.vpc_endpoint_subnet_ids, var.subnet_ids)

  # The environment both functions share: where the database is and how to verify it. Only variables the
  # binary reads (src/config.rs ENV_VARS; tests/it/terraform.rs checks it) and nothing secret: credentials
  # stay in Secrets Manager (or are IAM tokens). Who logs in differs: lambda.tf.
  common_environment = merge(
    {
      DB_PORT = tostring(var.db_port)
      # Against the RDS CA bundle built into the binary (DB_CA_BUNDLE would override it).
      DB_SSLMODE = "verify-full"
    },
    var.db_name == null ? {} : { DB_NAME = var.db_name },
    # The same schema for migrate and refresh: the refresh calls the fold where migrate made it.
    var.db_schema == null ? {} : { DB_SCHEMA = var.db_schema },
    local.is_cluster ? { DB_CLUSTER_IDENTIFIER = var.db_cluster_identifier } : { DB_INSTANCE_IDENTIFIER = var.db_instance_identifier },
  )

  # The user's tags win over the module's default.
  tags = merge({ "app" = "scanner-migrator" }, var.tags)
}
