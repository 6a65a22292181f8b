# --- Naming -------------------------------------------------------------------

variable "name_prefix" {
  description = "Prefix of every name this module creates: the functions are <prefix>-migrate and <prefix>-refresh, their log groups /aws/lambda/<prefix>-migrate and /aws/lambda/<prefix>-refresh."
  type        = string

  validation {
    # Lambda function and IAM role names allow 64 characters; "-scheduler" is the longest suffix added.
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9-]{0,39}$", var.name_prefix))
    error_message = "name_prefix must start with a letter, hold only letters, digits and hyphens, and be at most 40 characters long."
  }
}

variable "tags" {
  description = "Tags added to every resource this module creates."
  type        = map(string)
  default     = {}
}

# --- Network ------------------------------------------------------------------

variable "vpc_id" {
  description = "The VPC the database lives in; the functions run in it."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123456789abcdef0."
  }
}

variable "subnet_ids" {
  description = "Private subnets (no route to the internet needed) for the functions' network interfaces, preferably in two or more availability zones. They must be able to reach the database."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0 && alltrue([for s in var.subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "subnet_ids must hold at least one id like subnet-0123456789abcdef0."
  }
}

variable "create_vpc_endpoints" {
  description = "Create interface VPC endpoints for Secrets Manager, the RDS API and (with continue_long_work) EventBridge Scheduler, with private DNS. Private DNS changes what those services' names resolve to for EVERY workload in the VPC, so the endpoints admit vpc_endpoint_allowed_cidrs (default: the VPC's CIDR) on 443, and a VPC can hold only one private-DNS endpoint per service: leave this false (the default) in a VPC the module did not make, which already has endpoints or a NAT gateway. The complete example, whose VPC is its own, sets it true."
  type        = bool
  default     = false
}

variable "continue_long_work" {
  description = "When a migrate stops at its deadline with work left (or a snapshot still being made), the function schedules its own next invocation with a one-time EventBridge Scheduler schedule (<name_prefix>-migrate-continue, deleted after it fires), until the work is done or fails (the migrate_failed alarm). Needs the functions to reach the Scheduler API (an interface endpoint, create_vpc_endpoints, or a NAT gateway). False: such a migrate only says to invoke again."
  type        = bool
  default     = true
}

variable "continuation_delay_s" {
  description = "With continue_long_work: seconds between a migrate's answer and the next invocation it schedules."
  type        = number
  default     = 60

  validation {
    condition     = var.continuation_delay_s >= 1 && var.continuation_delay_s <= 3600
    error_message = "continuation_delay_s must be between 1 and 3600 seconds."
  }
}

variable "vpc_endpoint_allowed_cidrs" {
  description = "With create_vpc_endpoints: the IPv4 CIDR blocks the endpoints admit on 443. Every client of Secrets Manager or RDS in the VPC must be inside them, as private DNS sends them all to the endpoints. Null: the VPC's primary CIDR block."
  type        = list(string)
  default     = null

  validation {
    condition     = var.vpc_endpoint_allowed_cidrs == null ? true : alltrue([for c in var.vpc_endpoint_allowed_cidrs : can(cidrnetmask(c))])
    error_message = "vpc_endpoint_allowed_cidrs must hold IPv4 CIDR blocks such as 10.0.0.0/16."
  }
}

variable "allow_https_to_internet" {
  description = "Let the functions reach 443 anywhere (0.0.0.0/0), for a VPC that reaches the AWS APIs through a NAT gateway rather than interface endpoints. Without it (and without create_vpc_endpoints) they reach 443 in the VPC's primary CIDR only, where its existing endpoints are."
  type        = bool
  default     = false
}

variable "vpc_endpoint_subnet_ids" {
  description = "Subnets for the interface endpoints, at most one per availability zone. Default: subnet_ids."
  type        = list(string)
  default     = null

  validation {
    condition     = var.vpc_endpoint_subnet_ids == null ? true : length(var.vpc_endpoint_subnet_ids) > 0 && alltrue([for s in var.vpc_endpoint_subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "vpc_endpoint_subnet_ids must hold ids like subnet-0123456789abcdef0."
  }
}

# --- Database -----------------------------------------------------------------

variable "look_up_database" {
  description = "Read the database with the RDS API at plan time (it must exist before this module is planned) to fill in what is not given: db_secret_arn (its RDS-managed master secret), db_security_group_id (its only security group), db_resource_id. Set false when the database is created in the same configuration, and give those inputs."
  type        = bool
  default     = true
}

variable "db_instance_identifier" {
  description = "The RDS instance to migrate: its endpoint is looked up with the RDS API and it is what snapshot_before_migrate snapshots. Set this or db_cluster_identifier, not both."
  type        = string
  default     = null

  validation {
    condition     = var.db_instance_identifier == null ? true : can(regex("^[a-zA-Z][a-zA-Z0-9-]{0,62}$", var.db_instance_identifier))
    error_message = "db_instance_identifier must be an RDS identifier: a letter, then letters, digits and hyphens, at most 63 characters."
  }
}

variable "db_cluster_identifier" {
  description = "The Aurora PostgreSQL cluster to migrate (its writer endpoint). Set this or db_instance_identifier, not both."
  type        = string
  default     = null

  validation {
    condition     = var.db_cluster_identifier == null ? true : can(regex("^[a-zA-Z][a-zA-Z0-9-]{0,62}$", var.db_cluster_identifier))
    error_message = "db_cluster_identifier must be an RDS identifier: a letter, then letters, digits and hyphens, at most 63 characters."
  }
}

variable "db_security_group_id" {
  description = "The database's security group; the module adds one ingress rule to it, from the functions' security group on db_port. Null: looked up from the database (look_up_database), which must then have exactly one."
  type        = string
  default     = null

  validation {
    condition     = var.db_security_group_id == null ? true : can(regex("^sg-[0-9a-f]+$", var.db_security_group_id))
    error_message = "db_security_group_id must look like sg-0123456789abcdef0."
  }
}

variable "db_port" {
  description = "The database port: the security-group rules open it and the functions connect to it (DB_PORT)."
  type        = number
  default     = 5432

  validation {
    condition     = var.db_port >= 1 && var.db_port <= 65535 && floor(var.db_port) == var.db_port
    error_message = "db_port must be a port number (1-65535)."
  }
}

variable "db_name" {
  description = "The database to migrate (DB_NAME). Default: the name the secret or the RDS API gives, else postgres."
  type        = string
  default     = null
}

variable "db_schema" {
  description = "The schema both functions work in (DB_SCHEMA): its name as stored, case-sensitive and unquoted (\"Scanner\" is the mixed-case schema). It must exist before the first migrate. Default: the login's current_schema(), normally public."
  type        = string
  default     = null

  validation {
    condition     = var.db_schema == null ? true : (length(var.db_schema) > 0 && length(var.db_schema) <= 63 && !startswith(var.db_schema, "pg_"))
    error_message = "db_schema must be 1-63 characters and must not start with pg_ (PostgreSQL's own schemas)."
  }
}

variable "db_secret_arn" {
  description = "ARN of the Secrets Manager secret with the database username and password: the RDS-managed master secret (aws_db_instance.master_user_secret[0].secret_arn) or a rotation secret. Null: the database's RDS-managed master secret, looked up (look_up_database). Only the ARN is passed to the functions; they read the secret on every invocation."
  type        = string
  default     = null

  validation {
    condition     = var.db_secret_arn == null ? true : can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", var.db_secret_arn))
    error_message = "db_secret_arn must be a Secrets Manager secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-XXXXXX)."
  }
}

variable "db_secret_kms_key_arn" {
  description = "ARN of the customer-managed KMS key the secret is encrypted with, if any. The functions then get kms:Decrypt on it, through Secrets Manager only. Leave null for the AWS-managed key."
  type        = string
  default     = null

  validation {
    condition     = var.db_secret_kms_key_arn == null ? true : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.db_secret_kms_key_arn))
    error_message = "db_secret_kms_key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID), not an alias."
  }
}

variable "db_auth" {
  description = "How the functions authenticate to PostgreSQL: password (from the secret) or iam (an IAM auth token; needs iam_database_authentication_enabled, a user granted rds_iam, db_resource_id and db_iam_username)."
  type        = string
  default     = "password"

  validation {
    condition     = contains(["password", "iam"], var.db_auth)
    error_message = "db_auth must be password or iam."
  }
}

variable "db_resource_id" {
  description = "With db_auth = iam: the instance's DbiResourceId (aws_db_instance.resource_id, db-...) or the cluster's resource id (aws_rds_cluster.cluster_resource_id, cluster-...), for the rds-db:connect permission. Null: looked up (look_up_database)."
  type        = string
  default     = null

  validation {
    condition     = var.db_resource_id == null ? true : can(regex("^(db|cluster)-[A-Z0-9]+$", var.db_resource_id))
    error_message = "db_resource_id must look like db-ABCDEFGHIJKL0123456789 or cluster-ABCDEFGHIJKL0123456789."
  }
}

variable "db_iam_username" {
  description = "With db_auth = iam: the database user the secret names, granted rds_iam; rds-db:connect is allowed for this user only."
  type        = string
  default     = null
}

# --- The functions ------------------------------------------------------------

variable "lambda_zip_path" {
  description = "Path of the zip `make build` writes (target/lambda/scanner-migrator/bootstrap.zip in the repository), holding bootstrap (the RDS CA bundle is built into it). Both functions are made from it."
  type        = string

  validation {
    condition     = endswith(var.lambda_zip_path, ".zip")
    error_message = "lambda_zip_path must name the .zip file `make build` writes."
  }
}

variable "migrations_dir" {
  description = "Directory of the migration files: a change to any of them re-invokes migrate on the next apply. Default: the migrations/ directory beside this module."
  type        = string
  default     = null
}

variable "migrate_memory_mb" {
  description = "Memory of the migrate function, in MB (CPU grows with it)."
  type        = number
  default     = 256

  validation {
    condition     = var.migrate_memory_mb >= 128 && var.migrate_memory_mb <= 10240
    error_message = "migrate_memory_mb must be between 128 and 10240."
  }
}

variable "index_build_rows_per_s" {
  description = "The speed assumed (rows per second) to decide, from a table's row estimate, whether an index build, a REINDEX CONCURRENTLY or a VALIDATE CONSTRAINT fits the invocation's time; one that does not runs detached in the database and migrate answers in_progress (INDEX_BUILD_ROWS_PER_S)."
  type        = number
  default     = 250000

  validation {
    condition     = var.index_build_rows_per_s >= 1
    error_message = "index_build_rows_per_s must be at least 1."
  }
}

variable "migrate_timeout_s" {
  description = "Timeout of the migrate function, in seconds. statement_timeout is derived from it, so PostgreSQL cancels a statement before Lambda stops the process."
  type        = number
  default     = 900

  validation {
    condition     = var.migrate_timeout_s >= 30 && var.migrate_timeout_s <= 900
    error_message = "migrate_timeout_s must be between 30 and 900 (the Lambda maximum)."
  }
}

variable "refresh_memory_mb" {
  description = "Memory of the refresh function, in MB."
  type        = number
  default     = 128

  validation {
    condition     = var.refresh_memory_mb >= 128 && var.refresh_memory_mb <= 10240
    error_message = "refresh_memory_mb must be between 128 and 10240."
  }
}

variable "refresh_timeout_s" {
  description = "Timeout of the refresh function, in seconds."
  type        = number
  default     = 120

  validation {
    condition     = var.refresh_timeout_s >= 10 && var.refresh_timeout_s <= 900
    error_message = "refresh_timeout_s must be between 10 and 900."
  }
}

variable "reserved_concurrency" {
  description = "Reserved concurrency of each function (1 is enough: migrations serialise on a lock anyway). Null reserves nothing, for accounts whose unreserved pool cannot spare it."
  type        = number
  default     = null

  validation {
    condition     = var.reserved_concurrency == null ? true : var.reserved_concurrency >= 1 && floor(var.reserved_concurrency) == var.reserved_concurrency
    error_message = "reserved_concurrency must be null or at least 1 (0 would stop the functions)."
  }
}

variable "snapshot_before_migrate" {
  description = "Take an RDS snapshot (scanner-migrator-before-<migration>-<time>) before applying pending migrations, and wait for it. Grants the migrate function CreateDBSnapshot on this database only."
  type        = bool
  default     = false
}

variable "log_retention_days" {
  description = "Retention of the functions' log groups, in days (0: never expire)."
  type        = number
  default     = 365

  validation {
    condition     = contains([0, 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be one CloudWatch Logs accepts: 0, 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653."
  }
}

variable "log_kms_key_arn" {
  description = "KMS key ARN to encrypt the log groups with (its key policy must allow logs.<region>.amazonaws.com). Null: CloudWatch Logs' own encryption."
  type        = string
  default     = null

  validation {
    condition     = var.log_kms_key_arn == null ? true : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.log_kms_key_arn))
    error_message = "log_kms_key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

# --- The refresh schedule -----------------------------------------------------

variable "refresh_schedule_expression" {
  description = "When EventBridge Scheduler refreshes job_progress: rate(...), cron(...) or at(...), in UTC."
  type        = string
  default     = "rate(5 minutes)"

  validation {
    condition     = can(regex("^(rate|cron|at)\\(.+\\)$", var.refresh_schedule_expression))
    error_message = "refresh_schedule_expression must be rate(...), cron(...) or at(...)."
  }
}

variable "refresh_min_interval_s" {
  description = "The refresh skips when job_progress is younger than this many seconds (REFRESH_MIN_INTERVAL_S), so duplicate deliveries cost nothing."
  type        = number
  default     = 60

  validation {
    condition     = var.refresh_min_interval_s >= 0
    error_message = "refresh_min_interval_s must not be negative."
  }
}

variable "refresh_retry_attempts" {
  description = "How often the scheduler retries delivering one refresh (throttling, the function unavailable) before sending it to the dead-letter queue."
  type        = number
  default     = 2

  validation {
    condition     = var.refresh_retry_attempts >= 0 && var.refresh_retry_attempts <= 185
    error_message = "refresh_retry_attempts must be between 0 and 185."
  }
}

variable "refresh_max_event_age_s" {
  description = "How long one refresh may wait for delivery before it is dropped (to the dead-letter queue); past that the next scheduled one is as good."
  type        = number
  default     = 240

  validation {
    condition     = var.refresh_max_event_age_s >= 60 && var.refresh_max_event_age_s <= 21600
    error_message = "refresh_max_event_age_s must be between 60 and 21600 (the smaller of the Scheduler and Lambda limits)."
  }
}

variable "refresh_enabled" {
  description = "Whether the refresh schedule runs. Turn it off while investigating the database without removing the schedule."
  type        = bool
  default     = true
}

variable "dlq_kms_key_arn" {
  description = "KMS key ARN for the refresh dead-letter queue. Null: SQS-managed encryption (SSE-SQS)."
  type        = string
  default     = null

  validation {
    condition     = var.dlq_kms_key_arn == null ? true : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.dlq_kms_key_arn))
    error_message = "dlq_kms_key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

# --- Alarms -------------------------------------------------------------------

variable "create_alarms" {
  description = "Create the CloudWatch alarms on the refresh function's errors, on the dead-letter queue's depth, and on a failed migrate (MigrateFailed: a failure, or a chain of continuations that ended in one)."
  type        = bool
  default     = true
}

variable "create_dashboard" {
  description = "Create a CloudWatch dashboard named name_prefix: migrations (applied, pending, duration, failures), the refresh (duration, delta rows folded, skips, failures, staleness), both functions' Lambda errors, throttles and durations, the dead-letter queue's depth and the alarms' states. Its address is the dashboard_url output."
  type        = bool
  default     = true
}

variable "alarm_sns_topic_arn" {
  description = "SNS topic the alarms notify, on alarm and on recovery. Null: the alarms only change state (visible in the console and to anything watching them)."
  type        = string
  default     = null

  validation {
    condition     = var.alarm_sns_topic_arn == null ? true : can(regex("^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:.+$", var.alarm_sns_topic_arn))
    error_message = "alarm_sns_topic_arn must be an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)."
  }
}

variable "refresh_error_alarm_periods" {
  description = "The refresh-errors alarm fires when the refresh failed in this many consecutive 5-minute periods."
  type        = number
  default     = 3

  validation {
    condition     = var.refresh_error_alarm_periods >= 1 && var.refresh_error_alarm_periods <= 288 && floor(var.refresh_error_alarm_periods) == var.refresh_error_alarm_periods
    error_message = "refresh_error_alarm_periods must be a whole number between 1 and 288 (a day)."
  }
}

# --- The refresh login ---------------------------------------------------------

variable "refresh_db_user" {
  description = "The refresh function's own database role, which migrate creates and grants in this database only (CONNECT on it, EXECUTE on refresh_job_progress(); REFRESH_ROLE). Null: scanner_refresh_<name_prefix> (lower case, - as _), so two stacks on one server (staging and production databases on one instance) never share a login. A deployment made before this setting used scanner_refresh: left null, its next apply moves it to the new role (migrate grants it, takes scanner_refresh's grant in this database, and reports the DROP ROLE to run once no database uses scanner_refresh); set \"scanner_refresh\" to keep that role."
  type        = string
  default     = null

  validation {
    condition     = var.refresh_db_user == null ? true : can(regex("^[a-z_][a-z0-9_]{0,62}$", var.refresh_db_user)) && !startswith(var.refresh_db_user, "pg_") && !startswith(var.refresh_db_user, "rds_")
    error_message = "refresh_db_user must be a role name of lower-case letters, digits and _ (at most 63, starting with a letter or _), not pg_* or rds_*."
  }
}

variable "refresh_db_auth" {
  description = "How the refresh function logs in, as its least-privileged database role refresh_db_user (migrate creates it; it may only run the refresh): iam (the default) with an IAM auth token, so the refresh function reads no secret at all and its role has rds-db:connect on that one user and no secretsmanager:GetSecretValue; needs IAM database authentication enabled on the database. password: for a database without IAM authentication, the module creates a secret for that role (password generated by Terraform and written write-only: never in Terraform's state or plan), the refresh function reads that one, and migrate sets the role's password from it (REFRESH_SECRET_ARN). Migrate makes the role a member of rds_iam with iam and never with password (RDS refuses a password to a member of rds_iam), revoking an earlier grant (REFRESH_DB_AUTH). Never the master credentials."
  type        = string
  default     = "iam"

  validation {
    condition     = contains(["iam", "password"], var.refresh_db_auth)
    error_message = "refresh_db_auth must be iam or password."
  }
}

variable "refresh_password_version" {
  description = "With refresh_db_auth = password: bump to give the refresh role a new generated password (the secret's write-only version; the next apply stores it and migrate sets it)."
  type        = number
  default     = 1

  validation {
    condition     = var.refresh_password_version >= 1 && floor(var.refresh_password_version) == var.refresh_password_version
    error_message = "refresh_password_version must be a whole number of at least 1."
  }
}
