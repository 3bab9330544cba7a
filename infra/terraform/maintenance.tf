################################################################################
# Table maintenance: what the worker role may touch in the Glue catalog and the warehouse
################################################################################

# The workers maintain the tables they write (snapshot expiry, compaction, orphan removal) through
# the Iceberg catalog with pyiceberg: the Glue catalog loads a table (GetTable) and commits by
# UpdateTable with the table's VersionId; the table's objects are read, written and deleted under
# its location. The statements built from these locals are in iam.tf; without maintained_tables
# there are none.
locals {
  maintenance_enabled = length(var.maintained_tables) > 0

  glue_region     = coalesce(var.glue_region, local.region)
  glue_catalog_id = coalesce(var.glue_catalog_id, local.account_id)
  glue_arn_prefix = "arn:${local.partition}:glue:${local.glue_region}:${local.glue_catalog_id}"

  # s3://bucket/path[/] split into bucket and path (no trailing slash). The variable's validation
  # guarantees the shape, so the regex always matches.
  maintained_tables = [
    for t in var.maintained_tables : merge(t, zipmap(["bucket", "path"], regex("^s3://([^/]+)/(.+?)/?$", t.location)))
  ]

  maintained_glue_catalog_arn   = "${local.glue_arn_prefix}:catalog"
  maintained_glue_database_arns = distinct([for t in local.maintained_tables : "${local.glue_arn_prefix}:database/${t.database}"])
  maintained_glue_table_arns    = [for t in local.maintained_tables : "${local.glue_arn_prefix}:table/${t.database}/${t.table}"]

  # Everything under each table location (metadata/, data/). The '/' before the only wildcard
  # keeps s3://b/sales/orders from covering s3://b/sales/orders_v2.
  maintained_object_arns = distinct([for t in local.maintained_tables : "arn:${local.partition}:s3:::${t.bucket}/${t.path}/*"])

  # Per warehouse bucket, the s3:prefix values a worker may list: orphan removal lists
  # <location>/data/ and <location>/metadata/.
  maintained_buckets = sort(distinct([for t in local.maintained_tables : t.bucket]))

  # ICEFEED_ICEBERG_CATALOG for the workers: no credentials, the worker role supplies them.
  iceberg_catalog_properties = merge(
    { "type" = "glue", "glue.region" = local.glue_region },
    var.glue_catalog_id == null ? {} : { "glue.id" = var.glue_catalog_id },
  )
}
