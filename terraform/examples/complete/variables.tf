variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Name prefix of everything created (VPC, database, functions)."
  type        = string
  default     = "scanner"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,29}$", var.name))
    error_message = "name must start with a lowercase letter and hold only lowercase letters, digits and hyphens (at most 30)."
  }
}

variable "tags" {
  description = "Tags on every resource (provider default_tags)."
  type        = map(string)
  default     = { project = "s3-scanner" }
}

variable "vpc_cidr" {
  description = "CIDR of the new VPC; the private subnets are its first /24s."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr))
    error_message = "vpc_cidr must be an IPv4 CIDR block such as 10.42.0.0/16."
  }
}

variable "availability_zones" {
  description = "Availability zones of the private subnets, one /24 each (RDS needs two). They must be in var.region."
  type        = list(string)
  default     = ["eu-west-1a", "eu-west-1b"]

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 6
    error_message = "availability_zones must name between 2 and 6 zones."
  }
}

variable "db_instance_class" {
  description = "RDS instance class (Graviton classes are cheapest)."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_allocated_storage_gb" {
  description = "Allocated storage of the database, in GiB (gp3)."
  type        = number
  default     = 50

  validation {
    condition     = var.db_allocated_storage_gb >= 20
    error_message = "db_allocated_storage_gb must be at least 20."
  }
}

variable "db_engine_version" {
  description = "PostgreSQL major version (the migrations are tested on 15)."
  type        = string
  default     = "15"
}

variable "db_multi_az" {
  description = "Run the database Multi-AZ (a standby in a second zone)."
  type        = bool
  default     = true
}

variable "db_deletion_protection" {
  description = "Refuse to delete the database. Set false, apply, then destroy, to tear the example down."
  type        = bool
  default     = true
}

variable "lambda_zip_path" {
  description = "The zip `make build` writes. Default: target/lambda/scanner-migrator/bootstrap.zip in this repository."
  type        = string
  default     = null
}

variable "snapshot_before_migrate" {
  description = "Snapshot the database before applying pending migrations."
  type        = bool
  default     = true
}

variable "refresh_schedule_expression" {
  description = "When job_progress is refreshed."
  type        = string
  default     = "rate(5 minutes)"
}

variable "log_retention_days" {
  description = "Retention of every log group, in days."
  type        = number
  default     = 365
}
