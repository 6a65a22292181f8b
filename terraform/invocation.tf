# `terraform apply` migrates: after the functions, the network path and the permissions exist, the migrate
# function is invoked synchronously. A FunctionError (a failed migration, a checksum mismatch, a held lock)
# fails the create with the migrator's JSON error, and nothing is recorded in state: the next apply invokes
# again. Any other result that is not a finished migration fails the apply too (the check below).
#
# What the function receives: the provider adds {"tf": {"action": ..., "prev_input": ...}} to the input.
#   - first apply:                      action "create"                    -> migrate
#   - a trigger changes (the zip, any migration file, the function's environment): the resource is
#     REPLACED, destroy first: action "delete" (a no-op in the handler), then "create" -> migrate
#   - `input` itself changes (only by editing this file): action "update"  -> migrate
#   - terraform destroy, or removing this resource: action "delete" -> no-op: the schema is never rolled back.

locals {
  migrate_finished_statuses = ["applied", "up_to_date"]
}

resource "aws_lambda_invocation" "migrate" {
  function_name = aws_lambda_function.migrate.function_name
  input         = jsonencode({ command = "migrate" })

  lifecycle_scope = "CRUD"
  terraform_key   = "tf"

  triggers = {
    code       = local.code_hash
    migrations = local.migrations_hash
    # A changed target database or setting is a new migration run as well.
    environment = sha256(jsonencode(aws_lambda_function.migrate.environment))
    # A new refresh password (refresh_login.tf) is set by migrate.
    refresh_password = local.refresh_iam ? "iam" : tostring(var.refresh_password_version)
  }

  depends_on = [
    aws_vpc_security_group_ingress_rule.db_from_lambda,
    aws_vpc_security_group_egress_rule.lambda_to_db,
    aws_vpc_security_group_egress_rule.lambda_to_endpoints,
    aws_vpc_security_group_egress_rule.lambda_to_vpc_https,
    aws_vpc_security_group_egress_rule.lambda_to_internet_https,
    aws_vpc_security_group_ingress_rule.endpoints_from_lambda,
    aws_vpc_security_group_ingress_rule.endpoints_from_vpc,
    aws_vpc_endpoint.this,
    aws_iam_role_policy.migrate,
    aws_secretsmanager_secret_version.refresh,
  ]

  # A result that is not a finished migration (the function answered, but not "applied"/"up_to_date")
  # must fail the apply AND leave nothing that blocks the next one. The postcondition alone cannot: Terraform
  # keeps the object in state untainted and evaluates the postcondition again on every later plan, which
  # then fails until someone runs `-replace`. The same check in a creation-time provisioner taints the object
  # when it fails: this apply fails (with the postcondition's message), and the next plan replaces it
  # (delete, a no-op; create, a new migrate run), its result unknown until then. `exit 0` / `exit 1` behave
  # alike under /bin/sh and cmd.exe; the decision is made in HCL, not in a shell.
  # (tests/it/tf_apply.rs proves both halves with a real apply.)
  provisioner "local-exec" {
    command = contains(local.migrate_finished_statuses, try(jsondecode(self.result).status, "unreadable")) ? "exit 0" : "exit 1"
  }

  lifecycle {
    postcondition {
      # in_progress: a build runs detached in the database; its own words say what runs, how far, and what next.
      condition     = contains(local.migrate_finished_statuses, try(jsondecode(self.result).status, "unreadable"))
      error_message = try(jsondecode(self.result).status, "") == "in_progress" ? "The migrate function started a statement that outlasts its invocation; the database finishes it by itself: ${try(jsondecode(self.result).in_progress.message, self.result)}. Run terraform apply again: it waits for the build (within the function's timeout), then finishes the migration and passes." : "The migrate function did not finish the migration: ${self.result}"
    }
  }
}
