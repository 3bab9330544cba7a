output "queue_url" {
  description = "URL of the queue the bucket notifications go to (ICEFEED_SQS_QUEUE_URLS, KEDA queueURL)."
  value       = aws_sqs_queue.this.url
}

output "queue_arn" {
  description = "ARN of the queue."
  value       = aws_sqs_queue.this.arn
}

output "queue_name" {
  description = "Name of the queue (the `queue` label of icefeed_queue_* metrics)."
  value       = aws_sqs_queue.this.name
}

output "dlq_url" {
  description = "URL of the dead-letter queue."
  value       = aws_sqs_queue.dlq.url
}

output "dlq_arn" {
  description = "ARN of the dead-letter queue."
  value       = aws_sqs_queue.dlq.arn
}

output "kms_key_arn" {
  description = "ARN of the customer managed key encrypting both queues."
  value       = aws_kms_key.this.arn
}

output "kms_key_alias" {
  description = "Alias of the queue key."
  value       = aws_kms_alias.this.name
}

output "worker_role_arn" {
  description = "ARN of the workers' IRSA role: annotate the ServiceAccount with eks.amazonaws.com/role-arn set to it."
  value       = aws_iam_role.worker.arn
}

output "worker_role_name" {
  description = "Name of the workers' IRSA role."
  value       = aws_iam_role.worker.name
}

output "keda_scaler_role_arn" {
  description = "ARN of the KEDA scaler role (TriggerAuthentication spec.podIdentity.roleArn), or null when create_keda_scaler_role is false."
  value       = try(aws_iam_role.keda_scaler[0].arn, null)
}

output "bucket_notification_queue_configurations" {
  description = "Per bucket, the S3 queue configurations (id, queue_arn, events, filter_prefix, filter_suffix) the module applies, or that another stack must merge into the bucket's single notification configuration when create_bucket_notifications is false."
  value       = local.queue_configurations
}

output "iceberg_catalog_properties" {
  description = "ICEFEED_ICEBERG_CATALOG for the workers (pyiceberg catalog properties as JSON: the Glue catalog of maintained_tables; no credentials, the worker role supplies them), or null when maintained_tables is empty."
  value       = local.maintenance_enabled ? jsonencode(local.iceberg_catalog_properties) : null
}
