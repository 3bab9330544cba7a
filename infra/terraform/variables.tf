################################################################################
# Naming and tagging
################################################################################

variable "name" {
  description = "Base name: the SQS queue is named after it, the DLQ gets a `-dlq` suffix, and the KMS alias and IAM roles are derived from it."
  type        = string

  validation {
    # 48 leaves room for the longest derived name ("<name>-keda-scaler", an IAM role name is at most 64 characters).
    condition     = can(regex("^[A-Za-z0-9_-]{1,48}$", var.name))
    error_message = "The name must be 1-48 characters of letters, digits, '-' or '_'."
  }
}

variable "tags" {
  description = "Tags added to every resource that supports them."
  type        = map(string)
  default     = {}
}

################################################################################
# Routes: which objects of which buckets notify the queue
################################################################################

variable "routes" {
  description = "Routes per source bucket: a map keyed by S3 bucket name; each value is the list of routes (name, prefix, suffix) whose s3:ObjectCreated:* events are sent to the queue. An empty prefix or suffix matches every key. Route names must be unique and should equal the `[[ingestion]]` names of the worker's routes.toml. The module owns each listed bucket's WHOLE notification configuration (S3 keeps one per bucket)."
  type = map(list(object({
    name   = string
    prefix = optional(string, "")
    suffix = optional(string, "")
  })))

  validation {
    condition     = length(var.routes) > 0 && alltrue([for bucket, routes in var.routes : length(routes) > 0])
    error_message = "Give at least one bucket, and at least one route for every bucket."
  }

  validation {
    condition     = alltrue([for bucket in keys(var.routes) : can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", bucket))])
    error_message = "Every key of routes must be a valid S3 bucket name (3-63 characters: lower-case letters, digits, '.', '-')."
  }

  validation {
    # Same rule as the worker's routes.toml `name` (worker/routes.py), so the two can be kept equal.
    condition     = alltrue(flatten([for bucket, routes in var.routes : [for r in routes : can(regex("^[a-z][a-z0-9_]{0,62}$", r.name))]]))
    error_message = "Route names must match ^[a-z][a-z0-9_]{0,62}$ (the worker's ingestion name rule)."
  }

  validation {
    condition     = length(distinct(flatten([for bucket, routes in var.routes : [for r in routes : r.name]]))) == length(flatten([for bucket, routes in var.routes : [for r in routes : r.name]]))
    error_message = "Route names must be unique across all buckets."
  }

  validation {
    # The filters are also turned into IAM resource ARNs and s3:prefix conditions, where '*' and '?'
    # are wildcards: a literal one would silently widen the grant.
    condition     = alltrue(flatten([for bucket, routes in var.routes : [for r in routes : !can(regex("[*?]", "${r.prefix}${r.suffix}")) && !startswith(r.prefix, "/")]]))
    error_message = "Route prefixes and suffixes must not contain '*' or '?', and a prefix must not start with '/' (S3 keys have no leading slash)."
  }
}

variable "create_bucket_notifications" {
  description = "Create the aws_s3_bucket_notification of every bucket in routes. Set to false when another stack owns a bucket's notification configuration; merge the `bucket_notification_queue_configurations` output into it instead (a second aws_s3_bucket_notification on a bucket overwrites the first)."
  type        = bool
  default     = true
}

variable "source_account_id" {
  description = "Account that owns the source buckets, used in the aws:SourceAccount conditions of the queue and key policies. Null means the account Terraform runs in."
  type        = string
  default     = null

  validation {
    condition     = var.source_account_id == null || can(regex("^[0-9]{12}$", var.source_account_id))
    error_message = "source_account_id must be a 12-digit AWS account ID or null."
  }
}

variable "source_bucket_kms_key_arns" {
  description = "ARNs of the KMS keys that encrypt objects in the source buckets (SSE-KMS). The worker role gets kms:Decrypt on them, only through S3 (kms:ViaService). Empty when the buckets use SSE-S3."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.source_bucket_kms_key_arns : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", arn))])
    error_message = "source_bucket_kms_key_arns must hold KMS key ARNs (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

################################################################################
# Queue and dead-letter queue
################################################################################

variable "visibility_timeout_seconds" {
  description = "Visibility timeout of the queue. It must exceed the time a worker holds a message before acking it (batch wait + Spark commit); the worker's ICEFEED_SQS_VISIBILITY_TIMEOUT_S should be the same value."
  type        = number
  default     = 300

  validation {
    condition     = var.visibility_timeout_seconds >= 0 && var.visibility_timeout_seconds <= 43200 && floor(var.visibility_timeout_seconds) == var.visibility_timeout_seconds
    error_message = "visibility_timeout_seconds must be a whole number of seconds from 0 to 43200 (12 hours)."
  }
}

variable "message_retention_seconds" {
  description = "Message retention of the source queue. Default 4 days."
  type        = number
  default     = 345600

  validation {
    condition     = var.message_retention_seconds >= 60 && var.message_retention_seconds <= 1209600 && floor(var.message_retention_seconds) == var.message_retention_seconds
    error_message = "message_retention_seconds must be a whole number of seconds from 60 to 1209600 (14 days)."
  }
}

variable "dlq_message_retention_seconds" {
  description = "Message retention of the DLQ. Must be longer than message_retention_seconds: a dead-lettered message keeps its original enqueue time, so an equal retention would expire it as soon as it arrives. Default 14 days (the SQS maximum)."
  type        = number
  default     = 1209600

  validation {
    condition     = var.dlq_message_retention_seconds >= 60 && var.dlq_message_retention_seconds <= 1209600 && floor(var.dlq_message_retention_seconds) == var.dlq_message_retention_seconds
    error_message = "dlq_message_retention_seconds must be a whole number of seconds from 60 to 1209600 (14 days)."
  }
}

variable "max_receive_count" {
  description = "Receives after which SQS moves a message to the DLQ (redrive policy maxReceiveCount). Each receive that ends without a delete counts, including redeliveries after a worker crash."
  type        = number
  default     = 5

  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 1000 && floor(var.max_receive_count) == var.max_receive_count
    error_message = "max_receive_count must be a whole number from 1 to 1000."
  }
}

variable "receive_wait_time_seconds" {
  description = "Default long-poll wait of ReceiveMessage. 20 s (the maximum) keeps idle workers from paying for empty receives."
  type        = number
  default     = 20

  validation {
    condition     = var.receive_wait_time_seconds >= 0 && var.receive_wait_time_seconds <= 20 && floor(var.receive_wait_time_seconds) == var.receive_wait_time_seconds
    error_message = "receive_wait_time_seconds must be a whole number from 0 to 20."
  }
}

variable "kms_data_key_reuse_period_seconds" {
  description = "How long SQS may reuse a data key before calling KMS again (60-86400). Longer means fewer KMS calls, and KMS cost scales with this."
  type        = number
  default     = 300

  validation {
    condition     = var.kms_data_key_reuse_period_seconds >= 60 && var.kms_data_key_reuse_period_seconds <= 86400 && floor(var.kms_data_key_reuse_period_seconds) == var.kms_data_key_reuse_period_seconds
    error_message = "kms_data_key_reuse_period_seconds must be a whole number from 60 to 86400."
  }
}

variable "kms_key_user_arns" {
  description = "IAM principals (operators, break-glass roles) allowed kms:Decrypt and kms:GenerateDataKey on the queue key, to read the DLQ and redrive it with StartMessageMoveTask. The key policy does not delegate key use to the account, so nobody else can read the messages."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.kms_key_user_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:.+$", arn))])
    error_message = "kms_key_user_arns must hold IAM principal ARNs."
  }
}

variable "kms_deletion_window_in_days" {
  description = "Waiting period before a deleted KMS key is destroyed (7-30 days). Messages still in the queues are unreadable once the key is gone."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_in_days >= 7 && var.kms_deletion_window_in_days <= 30 && floor(var.kms_deletion_window_in_days) == var.kms_deletion_window_in_days
    error_message = "kms_deletion_window_in_days must be a whole number from 7 to 30."
  }
}

################################################################################
# Worker identity (IRSA)
################################################################################

variable "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC identity provider (IRSA), e.g. arn:aws:iam::111122223333:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/.+$", var.oidc_provider_arn))
    error_message = "oidc_provider_arn must look like arn:aws:iam::ACCOUNT:oidc-provider/ISSUER."
  }
}

variable "oidc_provider_url" {
  description = "Issuer URL of the cluster's OIDC provider, with or without the https:// scheme, e.g. oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE. It prefixes the :sub and :aud condition keys of the trust policies."
  type        = string

  validation {
    condition     = can(regex("^(https://)?[^/\\s]+(/[^\\s]*)?$", var.oidc_provider_url)) && !endswith(var.oidc_provider_url, "/")
    error_message = "oidc_provider_url must be an issuer host/path such as oidc.eks.REGION.amazonaws.com/id/ID, without a trailing slash."
  }
}

variable "namespace" {
  description = "Kubernetes namespace the workers run in."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a DNS-1123 label."
  }
}

variable "service_account" {
  description = "Name of the workers' Kubernetes ServiceAccount (annotated with the worker role ARN)."
  type        = string
  default     = "icefeed"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", var.service_account))
    error_message = "service_account must be a DNS-1123 subdomain."
  }
}

variable "worker_role_permissions_boundary" {
  description = "ARN of a permissions boundary policy for the IAM roles this module creates, or null."
  type        = string
  default     = null
}

################################################################################
# KEDA scaler identity
################################################################################

variable "create_keda_scaler_role" {
  description = "Create a role that only allows sqs:GetQueueAttributes on the queue, for the KEDA TriggerAuthentication `podIdentity: {provider: aws, roleArn: ...}`. The KEDA operator assumes it with its own IRSA web identity."
  type        = bool
  default     = true
}

variable "keda_namespace" {
  description = "Namespace of the KEDA operator (used in the scaler role's trust policy)."
  type        = string
  default     = "keda"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.keda_namespace))
    error_message = "keda_namespace must be a DNS-1123 label."
  }
}

variable "keda_service_account" {
  description = "ServiceAccount of the KEDA operator (used in the scaler role's trust policy)."
  type        = string
  default     = "keda-operator"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", var.keda_service_account))
    error_message = "keda_service_account must be a DNS-1123 subdomain."
  }
}

################################################################################
# Table maintenance: the Iceberg tables the workers maintain through the Glue catalog
################################################################################

variable "maintained_tables" {
  description = "Iceberg tables the workers maintain (snapshot expiry, compaction, orphan removal) from the worker itself, through the Glue catalog with pyiceberg: a list of { database, table, location }, where location is the table's location as the catalog records it (s3://bucket/path; its metadata/ and data/ live under it). The worker role gets Glue read and UpdateTable on these tables and S3 read, write, delete and list under these locations only. Empty (the default): no maintenance permission at all."
  type = list(object({
    database = string
    table    = string
    location = string
  }))
  default = []

  validation {
    # Glue keeps names in lower case, and they end up in the Glue resource ARNs: a name with upper
    # case or with '*' or '?' would match nothing, or too much.
    condition     = alltrue([for t in var.maintained_tables : can(regex("^[a-z_][a-z0-9_]{0,127}$", t.database)) && can(regex("^[a-z_][a-z0-9_]{0,127}$", t.table))])
    error_message = "maintained_tables: database and table must match ^[a-z_][a-z0-9_]{0,127}$ (Glue names are lower case; no wildcards)."
  }

  validation {
    # The location becomes an object ARN (<location>/*) and an s3:prefix condition, where '*', '?'
    # and '$' (IAM policy variables) are special: only plain key characters are accepted, so the
    # grant is exactly the table's location. At least one path segment: a table at the bucket root would open the
    # whole bucket.
    condition     = alltrue([for t in var.maintained_tables : can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9._=@-]+)+/?$", t.location))])
    error_message = "maintained_tables: location must be s3://BUCKET/PATH (a valid bucket name and at least one path segment, no '*', '?', '$', spaces or empty segments; s3a:// and other schemes are not accepted)."
  }

  validation {
    condition     = length(distinct([for t in var.maintained_tables : "${t.database}.${t.table}"])) == length(var.maintained_tables)
    error_message = "maintained_tables: each database.table may be listed once."
  }
}

variable "glue_catalog_id" {
  description = "Account ID of the Glue Data Catalog that holds maintained_tables (pyiceberg's glue.id). Null means the account Terraform runs in."
  type        = string
  default     = null

  validation {
    condition     = var.glue_catalog_id == null || can(regex("^[0-9]{12}$", var.glue_catalog_id))
    error_message = "glue_catalog_id must be a 12-digit AWS account ID or null."
  }
}

variable "glue_region" {
  description = "Region of the Glue Data Catalog that holds maintained_tables (pyiceberg's glue.region). Null means the provider's region."
  type        = string
  default     = null

  validation {
    condition     = var.glue_region == null || can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.glue_region))
    error_message = "glue_region must be an AWS region name such as eu-west-1, or null."
  }
}

variable "warehouse_kms_key_arns" {
  description = "ARNs of the KMS keys that encrypt the maintained tables' objects (SSE-KMS on the warehouse buckets). The worker role gets kms:Decrypt and kms:GenerateDataKey on them, only through S3 (kms:ViaService), and only when maintained_tables is set. Empty when the warehouse uses SSE-S3."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.warehouse_kms_key_arns : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", arn))])
    error_message = "warehouse_kms_key_arns must hold KMS key ARNs (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

################################################################################
# Bad records: where quarantining routes keep the records they set aside
################################################################################

variable "bad_records_locations" {
  description = "The bad_records_location (s3://bucket/path) of every route with bad_records = \"quarantine\" in the worker's routes.toml. The worker role gets s3:PutObject and s3:GetObject under each: it writes one object per file version that left records out and reads it back when it recovers a batch. Empty (the default): no such permission, and a quarantining route's files wait (AccessDenied) until it is given."
  type        = list(string)
  default     = []

  validation {
    # The location becomes an object ARN (<location>/*): only plain key characters, and at least
    # one path segment (a location at the bucket root would open the whole bucket).
    condition     = alltrue([for l in var.bad_records_locations : can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9._=@-]+)+/?$", l))])
    error_message = "bad_records_locations: each must be s3://BUCKET/PATH (a valid bucket name and at least one path segment, no '*', '?', '$', spaces or empty segments)."
  }
}
