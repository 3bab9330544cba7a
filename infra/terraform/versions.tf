terraform {
  # >= 1.5: optional() object attributes with defaults, startswith()/endswith() in the route
  # overlap precondition, and error messages that interpolate the offending values.
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}
