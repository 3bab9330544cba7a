# Complete example: one landing bucket, two routes, the workers in namespace "icefeed" of an EKS
# cluster with IRSA. The bucket already exists (managed elsewhere); this module takes over its
# notification configuration, which S3 keeps as ONE document per bucket.

terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

provider "aws" {
  region = "eu-west-1"
}

module "icefeed" {
  source = "../.."

  name = "icefeed-landing"

  # Two routes on one bucket. Their filters are disjoint: neither prefix is a prefix of the other,
  # so no key can match both (the module's precondition fails the plan otherwise). The names are
  # the [[ingestion]] names of the worker's routes.toml (infra/k8s/configmap.yaml).
  routes = {
    "acme-landing-zone" = [
      { name = "orders", prefix = "incoming/orders/", suffix = ".json" },
      { name = "clicks", prefix = "incoming/clicks/", suffix = ".csv.gz" },
    ]
  }

  visibility_timeout_seconds    = 300
  message_retention_seconds     = 345600  # 4 days
  dlq_message_retention_seconds = 1209600 # 14 days: longer than the source, see README
  max_receive_count             = 5

  oidc_provider_arn = "arn:aws:iam::111122223333:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
  oidc_provider_url = "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
  namespace         = "icefeed"
  service_account   = "icefeed"

  kms_key_user_arns = ["arn:aws:iam::111122223333:role/icefeed-operators"]

  # The Iceberg tables the workers maintain (snapshot expiry, compaction, orphan removal) through
  # the Glue catalog of this account and region: the `table` and `location` of each [[ingestion]]
  # in routes.toml. Leave it out and the worker role gets no Glue or warehouse permission.
  maintained_tables = [
    { database = "sales", table = "orders", location = "s3://acme-lakehouse/sales/orders" },
    { database = "web", table = "clicks", location = "s3://acme-lakehouse/web/clicks" },
  ]
  # SSE-KMS on the warehouse bucket: its key(s) here.
  # warehouse_kms_key_arns = ["arn:aws:kms:eu-west-1:111122223333:key/..."]

  # Routes with bad_records = "quarantine": their bad_records_location, written by the workers.
  # bad_records_locations = ["s3://acme-bad-records/clicks"]

  tags = {
    service = "icefeed"
    env     = "example"
  }
}

output "queue_url" {
  description = "Set ICEFEED_SQS_QUEUE_URLS and the ScaledObject queueURL to this."
  value       = module.icefeed.queue_url
}

output "dlq_url" {
  description = "Dead-letter queue URL (runbook: DLQ not empty)."
  value       = module.icefeed.dlq_url
}

output "worker_role_arn" {
  description = "Annotate the icefeed ServiceAccount with eks.amazonaws.com/role-arn set to this."
  value       = module.icefeed.worker_role_arn
}

output "keda_scaler_role_arn" {
  description = "Set the TriggerAuthentication spec.podIdentity.roleArn to this."
  value       = module.icefeed.keda_scaler_role_arn
}

output "iceberg_catalog_properties" {
  description = "Set ICEFEED_ICEBERG_CATALOG (infra/k8s/configmap.yaml) to this."
  value       = module.icefeed.iceberg_catalog_properties
}
