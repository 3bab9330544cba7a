"""Adapters: the only modules that talk to SQS, S3, PostgreSQL and Spark."""
