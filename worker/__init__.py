"""icefeed worker: loads S3 files announced over SQS into Apache Iceberg tables."""
