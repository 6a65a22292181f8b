terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.100: data.aws_region's `region` attribute (`name` is deprecated in 6.x);
      # lambda logging_config, aws_lambda_invocation lifecycle_scope and the
      # aws_vpc_security_group_*_rule resources are all older than that.
      version = ">= 5.100"
    }
  }
}
