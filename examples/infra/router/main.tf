# The router of production's blue-green releases (envpipe bluegreen production):
# applied by envpipe from the released version's definition, with its own state
# (production-router), after the new instance passed its tests. It sends traffic to
# the live instance; here terraform_data only records where it would send it, so the
# demo needs no cloud. README "Blue-green releases" shows the same router for AWS
# (a Route 53 alias record, or an ALB listener rule).

variable "envpipe_live_color" {
  type        = string
  description = "Set by envpipe: blue or green, the instance that goes live."
}

variable "envpipe_live_environment" {
  type        = string
  description = "Set by envpipe: the live instance's name (production-blue, production-green)."
}

variable "envpipe_live_outputs" {
  type        = string
  description = "Set by envpipe: the live instance's non-sensitive outputs, as a JSON object."
}

locals {
  live = jsondecode(var.envpipe_live_outputs)
}

resource "terraform_data" "route" {
  input = {
    color    = var.envpipe_live_color
    instance = var.envpipe_live_environment
    endpoint = local.live["endpoint"]
  }
}

output "live_color" {
  value = terraform_data.route.output.color
}

output "live_endpoint" {
  value = terraform_data.route.output.endpoint
}
