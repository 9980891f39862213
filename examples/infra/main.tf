# A stack that needs no cloud account and no provider download: terraform_data is
# built into Terraform. It shows what a real stack gets from envpipe: the
# environment and version, each environment's `vars`, and outputs for the tests.

variable "envpipe_environment" {
  type        = string
  description = "Set by envpipe (TF_VAR_envpipe_environment)."
}

variable "envpipe_version" {
  type        = string
  description = "Set by envpipe (TF_VAR_envpipe_version)."
}

variable "instance_count" {
  type    = number
  default = 1
}

variable "instance_size" {
  type    = string
  default = "small"
}

resource "terraform_data" "service" {
  input = {
    name      = "our-project-${var.envpipe_environment}"
    version   = var.envpipe_version
    instances = var.instance_count
    size      = var.instance_size
  }
}

output "environment" {
  value = var.envpipe_environment
}

output "version" {
  value = terraform_data.service.output.version
}

output "instance_count" {
  value = terraform_data.service.output.instances
}

output "endpoint" {
  value = "https://${terraform_data.service.output.name}.example.com"
}

# Never recorded, never handed to the tests.
output "admin_token" {
  value     = sha256("${terraform_data.service.id}-${var.envpipe_environment}")
  sensitive = true
}
