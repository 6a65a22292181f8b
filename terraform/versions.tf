terraform {
  # 1.11: write-only arguments, so the refresh login's generated password is never in the plan or the
  # state (refresh_login.tf).
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.x is kept working, deliberately: `make test` validates the module, plans it in `terraform test`
      # and applies it end to end with provider 5.100.0 (the one on the test machines), so 5.100 is what is
      # proven. 5.100 is the floor because aws_lambda_invocation's lifecycle_scope, Lambda logging_config
      # and the aws_vpc_security_group_*_rule resources are all in it. 6.x is allowed because nothing used
      # here changed in it: the region is read as data.aws_region.current.id, the one attribute both majors
      # have (`region` exists only from 6.0, `name` is deprecated there); nothing in 6.x is checked here.
      version = ">= 5.100, < 7.0"
    }
  }
}
