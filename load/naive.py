"""The naive loader: the seed design's per-file loop. One message → one Spark read of that file →
one Iceberg append (one commit) → delete the message. Same stack, same engine, same lineage
columns as icefeed; no ledger, no batching."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote_plus

from load.data import CLEAN_COLUMNS


@dataclass
class NaiveRun:
    files: int = 0
    started: float = 0.0
    finished: float = 0.0
    completions: list[float] = field(default_factory=list)
    read_s: float = 0.0
    append_s: float = 0.0
    sqs_s: float = 0.0
    session_s: float = 0.0

    @property
    def files_per_s(self) -> float:
        return self.files / max(1e-9, self.finished - self.started)


def read_path(bucket: str, key: str) -> str:
    """Engines interpret paths (globs, ``?``, ``%``): percent-encode the decoded key."""
    return f"s3://{bucket}/{quote(key, safe='/')}"


def run_naive(
    spark_url: str, sqs: Any, queue_url: str, table: str, location: str, target: int, timeout_s: float
) -> NaiveRun:
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F  # noqa: N812

    result = NaiveRun()
    t = time.monotonic()
    spark = SparkSession.builder.remote(spark_url).config("spark.sql.session.timeZone", "UTC").create()
    try:
        columns = ", ".join(f"`{name}` {kind}" for name, kind in CLEAN_COLUMNS)
        spark.sql(
            f"CREATE TABLE IF NOT EXISTS {table} ({columns}, _source_file STRING, _batch_id STRING, "
            f"_ingested_at TIMESTAMP) USING iceberg LOCATION '{location}'"
        )
        result.session_s = time.monotonic() - t
        deadline = time.monotonic() + timeout_s
        result.started = time.time()
        empty = 0
        while result.files < target and time.monotonic() < deadline and empty < 5:
            t = time.monotonic()
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []
            )
            result.sqs_s += time.monotonic() - t
            if not messages:
                empty += 1
                continue
            empty = 0
            for m in messages:
                try:
                    records = json.loads(m["Body"]).get("Records", [])
                except ValueError:
                    records = []
                for rec in records:
                    bucket = rec["s3"]["bucket"]["name"]
                    key = unquote_plus(rec["s3"]["object"]["key"])
                    t = time.monotonic()
                    df = spark.read.json(read_path(bucket, key))
                    out = df.select(*(F.col(f"`{name}`").cast(kind).alias(name) for name, kind in CLEAN_COLUMNS))
                    out = (
                        out.withColumn("_source_file", F.lit(f"s3://{bucket}/{key}"))
                        .withColumn("_batch_id", F.lit(str(uuid.uuid4())))
                        .withColumn("_ingested_at", F.current_timestamp())
                    )
                    result.read_s += time.monotonic() - t
                    t = time.monotonic()
                    out.writeTo(table).append()
                    result.append_s += time.monotonic() - t
                    result.files += 1
                    result.completions.append(time.time())
                t = time.monotonic()
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
                result.sqs_s += time.monotonic() - t
        result.finished = result.completions[-1] if result.completions else time.time()
    finally:
        spark.stop()
    return result
