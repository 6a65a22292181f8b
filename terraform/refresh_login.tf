# The refresh function's own database login, refresh_db_user (migrate creates the role and grants it in this
# database only; it may only run the refresh). Never the master credentials: with refresh_db_auth = "iam" it
# needs no secret at all; with "password" it gets a secret of its own, made here.

locals {
  # One role per stack: roles belong to the whole server, and two stacks' databases may share one.
  refresh_db_user = coalesce(var.refresh_db_user, "scanner_refresh_${replace(lower(var.name_prefix), "-", "_")}")
  refresh_iam     = var.refresh_db_auth == "iam"
  # Set with refresh_db_auth = "password" only.
  refresh_secret_arn = one(aws_secretsmanager_secret.refresh[*].arn)
}

resource "aws_secretsmanager_secret" "refresh" {
  #checkov:skip=CKV2_AWS_57:rotated by bumping refresh_password_version (the next apply stores a new password and migrate sets it); a rotation Lambda would have to hold the master credentials.
  count = local.refresh_iam ? 0 : 1

  # The secret holds the user name, written once per version: another user is another secret (the name of
  # scanner_refresh's stays what it was).
  name_prefix = local.refresh_db_user == "scanner_refresh" ? "${var.name_prefix}-refresh-login-" : "${var.name_prefix}-refresh-login-${local.refresh_db_user}-"
  description = "scanner-migrator: the ${local.refresh_db_user} database login of the refresh function (its password is set by the migrate function)"
  # The key the master secret is under, when it is a customer key (both functions may already use it).
  kms_key_id = var.db_secret_kms_key_arn
  tags       = local.tags
}

resource "aws_secretsmanager_secret_version" "refresh" {
  count = local.refresh_iam ? 0 : 1

  secret_id = aws_secretsmanager_secret.refresh[0].id
  # Write-only (Terraform >= 1.11, versions.tf): the value is sent once, at this version, and is never in the
  # plan or the state. The password is two of Terraform's uuid()s (go-uuid, crypto/rand: 244 random bits),
  # not an ephemeral aws_secretsmanager_random_password: `terraform test`'s mock providers refuse ephemeral
  # resources, and the module's plan is tested with one (examples/complete/tests). A new uuid() on every
  # plan changes nothing: the provider sends the value only when secret_string_wo_version changes.
  secret_string_wo = jsonencode({
    username = local.refresh_db_user
    password = replace("${uuid()}${uuid()}", "-", "")
  })
  secret_string_wo_version = var.refresh_password_version
}
