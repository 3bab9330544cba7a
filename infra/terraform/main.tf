data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_region" "current" {}

locals {
  account_id        = data.aws_caller_identity.current.account_id
  partition         = data.aws_partition.current.partition
  region            = data.aws_region.current.name
  source_account_id = coalesce(var.source_account_id, local.account_id)

  bucket_arns = { for bucket in keys(var.routes) : bucket => "arn:${local.partition}:s3:::${bucket}" }

  # Everything under each bad_records_location (s3://bucket/path[/] → arn:…:bucket/path/*): the
  # '/' before the only wildcard keeps s3://b/bad from covering s3://b/bad_v2.
  bad_records_object_arns = distinct([
    for l in var.bad_records_locations : "arn:${local.partition}:s3:::${join("/", regex("^s3://([^/]+)/(.+?)/?$", l))}/*"
  ])

  # ObjectCreated:* covers Put, Post, Copy and CompleteMultipartUpload: a filter listing only
  # ObjectCreated:Put would silently miss every multipart (large) upload.
  notification_events = ["s3:ObjectCreated:*"]

  # Pairs of routes on one bucket whose filters overlap: one prefix is a prefix of the other AND
  # one suffix is a suffix of the other (an empty filter matches every key), so some key would
  # match both. S3 rejects such a configuration for the same event type, and the worker could not
  # tell which route a file belongs to. Checked by the precondition of aws_s3_bucket_notification.
  route_overlaps = {
    for bucket, routes in var.routes : bucket => flatten([
      for i, a in routes : [
        for j, b in routes : "${a.name} (prefix \"${a.prefix}\", suffix \"${a.suffix}\") and ${b.name} (prefix \"${b.prefix}\", suffix \"${b.suffix}\")"
        if i < j && (startswith(a.prefix, b.prefix) || startswith(b.prefix, a.prefix)) && (endswith(a.suffix, b.suffix) || endswith(b.suffix, a.suffix))
      ]
    ])
  }

  # One S3 queue configuration per route; also exported for callers that keep the bucket's
  # notification configuration in another stack (create_bucket_notifications = false).
  queue_configurations = {
    for bucket, routes in var.routes : bucket => [
      for r in routes : {
        id            = r.name
        queue_arn     = aws_sqs_queue.this.arn
        events        = local.notification_events
        filter_prefix = r.prefix
        filter_suffix = r.suffix
      }
    ]
  }
}

################################################################################
# Queue and dead-letter queue
################################################################################

resource "aws_sqs_queue" "dlq" {
  name = "${var.name}-dlq"

  message_retention_seconds         = var.dlq_message_retention_seconds
  receive_wait_time_seconds         = var.receive_wait_time_seconds
  kms_master_key_id                 = aws_kms_key.this.arn
  kms_data_key_reuse_period_seconds = var.kms_data_key_reuse_period_seconds

  tags = var.tags

  lifecycle {
    precondition {
      # A dead-lettered message keeps its original enqueue timestamp: with a retention no longer
      # than the source queue's, it could expire the moment it lands in the DLQ.
      condition     = var.dlq_message_retention_seconds > var.message_retention_seconds
      error_message = "dlq_message_retention_seconds (${var.dlq_message_retention_seconds}) must be greater than message_retention_seconds (${var.message_retention_seconds})."
    }
  }
}

resource "aws_sqs_queue" "this" {
  name = var.name

  visibility_timeout_seconds        = var.visibility_timeout_seconds
  message_retention_seconds         = var.message_retention_seconds
  receive_wait_time_seconds         = var.receive_wait_time_seconds
  kms_master_key_id                 = aws_kms_key.this.arn
  kms_data_key_reuse_period_seconds = var.kms_data_key_reuse_period_seconds

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq.arn
    maxReceiveCount     = var.max_receive_count
  })

  tags = var.tags
}

# A separate resource (not the DLQ's inline argument) because it references the source queue,
# whose redrive_policy already references the DLQ: inline, the two queues would form a cycle.
resource "aws_sqs_queue_redrive_allow_policy" "dlq" {
  queue_url = aws_sqs_queue.dlq.id

  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.this.arn]
  })
}

data "aws_iam_policy_document" "queue" {
  statement {
    sid     = "AllowS3BucketNotifications"
    effect  = "Allow"
    actions = ["sqs:SendMessage"]
    # Resource policies take the queue's own ARN.
    resources = [aws_sqs_queue.this.arn]

    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = values(local.bucket_arns)
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.source_account_id]
    }
  }

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [aws_sqs_queue.this.arn]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sqs_queue_policy" "this" {
  queue_url = aws_sqs_queue.this.id
  policy    = data.aws_iam_policy_document.queue.json
}

data "aws_iam_policy_document" "dlq" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [aws_sqs_queue.dlq.arn]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sqs_queue_policy" "dlq" {
  queue_url = aws_sqs_queue.dlq.id
  policy    = data.aws_iam_policy_document.dlq.json
}

################################################################################
# Bucket notifications: exactly one resource per bucket, one queue block per route
################################################################################

resource "aws_s3_bucket_notification" "this" {
  for_each = var.create_bucket_notifications ? var.routes : {}

  bucket = each.key

  dynamic "queue" {
    for_each = local.queue_configurations[each.key]

    content {
      id            = queue.value.id
      queue_arn     = queue.value.queue_arn
      events        = ["s3:ObjectCreated:*"]
      filter_prefix = queue.value.filter_prefix != "" ? queue.value.filter_prefix : null
      filter_suffix = queue.value.filter_suffix != "" ? queue.value.filter_suffix : null
    }
  }

  lifecycle {
    precondition {
      condition     = length(local.route_overlaps[each.key]) == 0
      error_message = "Routes on bucket ${each.key} have overlapping prefix/suffix filters (one prefix is a prefix of the other and one suffix a suffix of the other): ${join("; ", local.route_overlaps[each.key])}. S3 rejects overlapping filters for the same event type; make the prefixes or suffixes disjoint."
    }
  }

  # S3 validates the destination when the configuration is written (it sends an s3:TestEvent):
  # the queue policy and the key policy must already allow it.
  depends_on = [
    aws_sqs_queue_policy.this,
    aws_kms_key.this,
  ]
}
