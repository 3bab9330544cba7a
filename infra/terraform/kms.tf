################################################################################
# Customer managed key for SSE of both queues
################################################################################

locals {
  # Key administration without key use: the account root principal gets these, which lets IAM
  # policies in the account delegate them (Terraform itself needs DescribeKey, GetKeyPolicy,
  # PutKeyPolicy, GetKeyRotationStatus, EnableKeyRotation, ListResourceTags, TagResource,
  # ScheduleKeyDeletion...). Listed one by one: no kms:* and no Verb* wildcards.
  kms_admin_actions = [
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListKeyRotations",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:RevokeGrant",
    "kms:RotateKeyOnDemand",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
  ]
}

data "aws_iam_policy_document" "kms" {
  # In a KEY policy, "Resource": "*" means "this key" and is the only accepted form: AWS requires
  # it. The statements below are scoped by principal (and, for S3, by source conditions).
  statement {
    sid       = "KeyAdministrationByAccount"
    effect    = "Allow"
    actions   = local.kms_admin_actions
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  statement {
    sid       = "S3NotificationsToEncryptedQueue"
    effect    = "Allow"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = ["*"]

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
    # Decrypt to receive; GenerateDataKey to send: a file that waits (an outage, a batch not yet
    # settled) has its message sent again fresh at its last allowed receive instead of being
    # dead-lettered (docs/guarantees.md).
    sid       = "WorkersReadEncryptedMessages"
    effect    = "Allow"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.worker.arn]
    }
  }

  dynamic "statement" {
    for_each = length(var.kms_key_user_arns) > 0 ? [1] : []

    content {
      sid = "OperatorsInspectAndRedrive"
      # Decrypt to read (DLQ inspection), GenerateDataKey to write (StartMessageMoveTask redrive).
      effect    = "Allow"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = ["*"]

      principals {
        type        = "AWS"
        identifiers = var.kms_key_user_arns
      }
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "SSE for the ${var.name} SQS queue and its DLQ (S3 notifications for icefeed)"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_in_days
  policy                  = data.aws_iam_policy_document.kms.json

  tags = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}-sqs"
  target_key_id = aws_kms_key.this.key_id
}
