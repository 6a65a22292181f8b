# `terraform apply` migrates: after the functions, the network path and the permissions exist, the migrate
# function is invoked synchronously. A FunctionError (a failed migration, a checksum mismatch, a held lock)
# fails the apply with the migrator's JSON error; the postcondition also fails it on any result that is not
# a finished migration. Re-invoked whenever the code or any migration file changes.

resource "aws_lambda_invocation" "migrate" {
  function_name = aws_lambda_function.migrate.function_name
  input         = jsonencode({ command = "migrate" })

  # CRUD: the provider adds {"tf": {"action": "create|update|delete", "prev_input": ...}} to the input.
  # create and update migrate; delete (terraform destroy, or removing this resource) is a no-op in the
  # handler: destroying the migrator never rolls the schema back.
  lifecycle_scope = "CRUD"
  terraform_key   = "tf"

  triggers = {
    code       = local.code_hash
    migrations = local.migrations_hash
    # A changed target database or setting is a new migration run as well.
    environment = sha256(jsonencode(aws_lambda_function.migrate.environment))
  }

  depends_on = [
    aws_vpc_security_group_ingress_rule.db_from_lambda,
    aws_vpc_security_group_egress_rule.lambda_to_db,
    aws_vpc_security_group_egress_rule.lambda_to_endpoints,
    aws_vpc_security_group_egress_rule.lambda_to_vpc_https,
    aws_vpc_security_group_ingress_rule.endpoints_from_lambda,
    aws_vpc_endpoint.this,
    aws_iam_role_policy.migrate,
  ]

  lifecycle {
    postcondition {
      condition     = contains(["applied", "up_to_date", "noop"], try(jsondecode(self.result).status, "unreadable"))
      error_message = "The migrate function did not finish the migration: ${self.result}"
    }
  }
}
