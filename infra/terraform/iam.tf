################################################################################
# Worker role (IRSA): least privilege on the queue, the routed objects and the key
################################################################################

locals {
  oidc_issuer = trimprefix(var.oidc_provider_url, "https://")

  # One object ARN pattern per route: bucket/<prefix>*<suffix>. The variable validation rejects
  # '*' and '?' inside prefixes and suffixes, so the only wildcard is the one placed here.
  routed_object_arns = distinct(flatten([
    for bucket, routes in var.routes : [
      for r in routes : "${local.bucket_arns[bucket]}/${r.prefix}*${r.suffix}"
    ]
  ]))

  # Prefixes a worker may list (backfill / reconcile listings), per bucket.
  list_prefixes = {
    for bucket, routes in var.routes : bucket => distinct([for r in routes : r.prefix])
  }
}

data "aws_iam_policy_document" "worker_assume" {
  statement {
    sid     = "IrsaWorkerServiceAccount"
    effect  = "Allow"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${var.service_account}"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "worker" {
  name                 = "${var.name}-worker"
  description          = "icefeed workers (IRSA ${var.namespace}/${var.service_account}): consume ${var.name}, read routed S3 objects"
  assume_role_policy   = data.aws_iam_policy_document.worker_assume.json
  permissions_boundary = var.worker_role_permissions_boundary

  tags = var.tags
}

data "aws_iam_policy_document" "worker" {
  statement {
    # SendMessage: a message whose file waits (an outage, a batch not yet settled) is sent again
    # fresh at its last allowed receive, then the old delivery deleted, so a wait never spends it
    # into the DLQ (docs/guarantees.md). Only to this queue.
    sid    = "ConsumeQueue"
    effect = "Allow"
    actions = [
      "sqs:ChangeMessageVisibility",
      "sqs:DeleteMessage",
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
      "sqs:ReceiveMessage",
      "sqs:SendMessage",
    ]
    resources = [aws_sqs_queue.this.arn]
  }

  statement {
    # Read-only access for the operator tools shipped with the worker (DLQ depth, peek).
    # No DeleteMessage and no StartMessageMoveTask: redriving the DLQ is a human decision.
    sid    = "InspectDeadLetterQueue"
    effect = "Allow"
    actions = [
      "sqs:GetQueueAttributes",
      "sqs:ReceiveMessage",
    ]
    resources = [aws_sqs_queue.dlq.arn]
  }

  statement {
    # s3:GetObject also authorises HeadObject: IAM has no separate s3:HeadObject action.
    sid       = "ReadRoutedObjects"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = local.routed_object_arns
  }

  dynamic "statement" {
    # A list (not the map) so that statement.key is an index: Sids must be alphanumeric and
    # unique, and bucket names are neither.
    for_each = [for bucket in sort(keys(local.list_prefixes)) : { bucket = bucket, prefixes = local.list_prefixes[bucket] }]

    content {
      sid       = "ListRoutedPrefixes${statement.key}"
      effect    = "Allow"
      actions   = ["s3:ListBucket"]
      resources = [local.bucket_arns[statement.value.bucket]]

      # Limited to the routed prefixes. A bucket with an empty-prefix route is routed as a whole,
      # so there is nothing to restrict. Note: without an unconditional s3:ListBucket, S3 answers
      # HeadObject on a MISSING key with 403 instead of 404 (it will not reveal whether a key
      # exists to a principal that may not list it); the worker must treat that 403 as "gone or
      # denied", not as a transient error.
      dynamic "condition" {
        for_each = contains(statement.value.prefixes, "") ? [] : [statement.value.prefixes]

        content {
          test     = "StringLike"
          variable = "s3:prefix"
          values   = [for p in condition.value : "${p}*"]
        }
      }
    }
  }

  statement {
    # Decrypt to receive, GenerateDataKey to send a waiting message again (ConsumeQueue).
    sid       = "DecryptQueueMessages"
    effect    = "Allow"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.this.arn]
  }

  dynamic "statement" {
    # Quarantined records: one object per file version under each quarantining route's
    # bad_records_location, written inside the batch's fenced write and read back when a sweeper
    # recovers the batch (docs/bad-input.md). Only under those locations.
    for_each = length(var.bad_records_locations) > 0 ? [1] : []

    content {
      sid       = "KeepBadRecords"
      effect    = "Allow"
      actions   = ["s3:GetObject", "s3:PutObject"]
      resources = local.bad_records_object_arns
    }
  }

  dynamic "statement" {
    for_each = length(var.source_bucket_kms_key_arns) > 0 ? [var.source_bucket_kms_key_arns] : []

    content {
      sid       = "DecryptSourceObjectsThroughS3"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = statement.value

      condition {
        test     = "StringLike"
        variable = "kms:ViaService"
        values   = ["s3.*.amazonaws.com"]
      }
    }
  }

  # --- table maintenance (maintenance.tf): only with maintained_tables --------------------------

  dynamic "statement" {
    # pyiceberg's Glue catalog reads the database when it resolves a namespace.
    for_each = local.maintenance_enabled ? [1] : []

    content {
      sid     = "ReadMaintainedDatabases"
      effect  = "Allow"
      actions = ["glue:GetDatabase"]
      resources = concat(
        [local.maintained_glue_catalog_arn],
        local.maintained_glue_database_arns,
      )
    }
  }

  dynamic "statement" {
    # Load a table (GetTable) and commit to it (UpdateTable with the VersionId GetTable returned:
    # the catalog's optimistic check). No CreateTable, DeleteTable or GetTables.
    for_each = local.maintenance_enabled ? [1] : []

    content {
      sid    = "CommitMaintainedTables"
      effect = "Allow"
      actions = [
        "glue:GetTable",
        "glue:UpdateTable",
      ]
      resources = concat(
        [local.maintained_glue_catalog_arn],
        local.maintained_glue_database_arns,
        local.maintained_glue_table_arns,
      )
    }
  }

  dynamic "statement" {
    # Read metadata, manifests and data files; write compacted data files, manifests and the new
    # metadata.json; delete orphans (only files nothing references, older than their safety age)
    # and old metadata.json files. Only under the maintained tables' locations.
    for_each = local.maintenance_enabled ? [1] : []

    content {
      sid    = "MaintainTableObjects"
      effect = "Allow"
      actions = [
        "s3:DeleteObject",
        "s3:GetObject",
        "s3:PutObject",
      ]
      resources = local.maintained_object_arns
    }
  }

  dynamic "statement" {
    # One statement per warehouse bucket (Sids: an index, as for the routed buckets). Orphan
    # removal lists <location>/data/ and <location>/metadata/. Deliberately NOT limited by
    # s3:prefix: pyiceberg checks that a new metadata.json's key is free (HeadObject) before it
    # writes it, and S3 answers a HeadObject on a missing key with 404 only to a principal that
    # may list the bucket; otherwise 403, and every maintenance commit would fail. A prefix
    # condition most likely does not count for that check (it carries no prefix; not testable
    # here). The grant lets the role list key names in the warehouse bucket, not read them.
    for_each = [for bucket in local.maintained_buckets : { bucket = bucket }]

    content {
      sid       = "ListMaintainedTables${statement.key}"
      effect    = "Allow"
      actions   = ["s3:ListBucket"]
      resources = ["arn:${local.partition}:s3:::${statement.value.bucket}"]
    }
  }

  dynamic "statement" {
    # SSE-KMS warehouse: S3 decrypts what the worker reads and asks for a data key for what it
    # writes. Only through S3, as for the source buckets.
    for_each = local.maintenance_enabled && length(var.warehouse_kms_key_arns) > 0 ? [var.warehouse_kms_key_arns] : []

    content {
      sid    = "UseWarehouseKeysThroughS3"
      effect = "Allow"
      actions = [
        "kms:Decrypt",
        "kms:GenerateDataKey",
      ]
      resources = statement.value

      condition {
        test     = "StringLike"
        variable = "kms:ViaService"
        values   = ["s3.*.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "worker" {
  name   = "${var.name}-worker"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.worker.json
}

################################################################################
# KEDA scaler role: read the queue depth, nothing else
################################################################################

data "aws_iam_policy_document" "keda_scaler_assume" {
  count = var.create_keda_scaler_role ? 1 : 0

  statement {
    # KEDA (podIdentity provider aws + roleArn) first calls AssumeRoleWithWebIdentity with the
    # operator's own IRSA token, so the trust goes to the operator's ServiceAccount.
    sid     = "IrsaKedaOperator"
    effect  = "Allow"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.keda_namespace}:${var.keda_service_account}"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "keda_scaler" {
  count = var.create_keda_scaler_role ? 1 : 0

  name                 = "${var.name}-keda-scaler"
  description          = "KEDA aws-sqs-queue scaler for ${var.name}: GetQueueAttributes only"
  assume_role_policy   = data.aws_iam_policy_document.keda_scaler_assume[0].json
  permissions_boundary = var.worker_role_permissions_boundary

  tags = var.tags
}

data "aws_iam_policy_document" "keda_scaler" {
  count = var.create_keda_scaler_role ? 1 : 0

  statement {
    # The scaler reads ApproximateNumberOfMessages(+NotVisible, +Delayed); attribute reads need no
    # KMS permission even on an encrypted queue.
    sid       = "ReadQueueDepth"
    effect    = "Allow"
    actions   = ["sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.this.arn]
  }
}

resource "aws_iam_role_policy" "keda_scaler" {
  count = var.create_keda_scaler_role ? 1 : 0

  name   = "${var.name}-keda-scaler"
  role   = aws_iam_role.keda_scaler[0].id
  policy = data.aws_iam_policy_document.keda_scaler[0].json
}
