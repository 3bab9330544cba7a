"""Iceberg tables written through Spark Connect: one job and one commit per batch.

pyspark calls block, so they run in worker threads (``asyncio.to_thread``) behind a semaphore.
One Spark Connect session serves the whole worker and is recreated after the server loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import urllib.parse
from functools import reduce
from typing import Any
from uuid import UUID

from worker.domain.errors import IcefeedError, classify_engine_error
from worker.ports import WriteRequest
from worker.routes import LOCATION, PART
from worker.settings import SparkSettings
from worker.sql import queries

LINEAGE_COLUMNS = ("_source_file", "_batch_id", "_ingested_at")


def read_path(bucket: str, key: str) -> str:
    """The URI to hand the engine for one object. Engines interpret paths (globs, `?`, `%`), so
    the decoded key is percent-encoded, never concatenated raw."""
    return f"s3://{bucket}/{urllib.parse.quote(key, safe='/')}"


def quote_table(table: str) -> str:
    parts = table.split(".")
    if len(parts) != 3 or not all(PART.match(p) for p in parts):
        raise ValueError(f"invalid table name {table!r}")
    return ".".join(f"`{p}`" for p in parts)


def batch_tag(batch_id: UUID) -> str:
    return f"icefeed-batch-{batch_id}"


def to_icefeed_error(exc: BaseException) -> IcefeedError:
    if isinstance(exc, IcefeedError):
        return exc
    grpc_code = None
    code = getattr(exc, "getGrpcStatusCode", None) or getattr(exc, "code", None)
    if callable(code):
        try:
            value = code()
            grpc_code = getattr(value, "name", None) or (str(value) if value is not None else None)
        except Exception:  # noqa: BLE001 - best effort; the message still classifies
            grpc_code = None
    message = str(getattr(exc, "getMessage", lambda: str(exc))() or exc)
    return classify_engine_error(type(exc).__name__, message.strip()[:2000], grpc_code)


class SparkSink:
    def __init__(self, settings: SparkSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._session: Any = None
        self._tables: set[str] = set()
        self._limit = asyncio.Semaphore(settings.concurrency)
        self._sql = queries("spark.sql")

    # -- session -----------------------------------------------------------------------------

    def _spark(self) -> Any:
        with self._lock:
            if self._session is None:
                from pyspark.sql import SparkSession
                from pyspark.sql.connect.client.retries import DefaultPolicy

                session = (
                    SparkSession.builder.remote(self._settings.url.get_secret_value())
                    .config("spark.sql.session.timeZone", self._settings.session_timezone)
                    .create()
                )
                session.client.set_retry_policies(
                    [DefaultPolicy(max_retries=self._settings.client_retries, max_backoff=5000)]
                )
                self._session = session
            return self._session

    def _forget_session(self) -> None:
        with self._lock:
            session, self._session = self._session, None
            self._tables.clear()
        if session is not None:
            with contextlib.suppress(Exception):  # the server may already be gone
                session.stop()

    def close(self) -> None:
        self._forget_session()

    async def _run(self, fn: Any, *args: Any) -> Any:
        async with self._limit:
            try:
                return await asyncio.to_thread(fn, *args)
            except Exception as exc:
                error = to_icefeed_error(exc)
                if error.error_class in ("SparkUnavailable", "SparkSessionLost"):
                    self._forget_session()
                raise error from exc

    # -- blocking work (worker threads) ------------------------------------------------------

    def _ensure_table(self, spark: Any, table: str, location: str) -> None:
        if table in self._tables:
            return
        if not LOCATION.match(location):
            raise ValueError(f"invalid table location {location!r}")
        spark.sql(self._sql["create_table"].format(table=quote_table(table), location=location))
        self._tables.add(table)

    def _write(self, req: WriteRequest) -> dict[str, int]:
        from pyspark.sql import functions as F  # noqa: N812

        spark = self._spark()
        self._ensure_table(spark, req.table, req.location)
        frames = [
            spark.read.format(req.readers[f.ingestion].format)
            .options(**req.readers[f.ingestion].options)
            .load(read_path(f.bucket, f.key))
            .withColumn("_source_file", F.lit(f.source_file))
            for f in req.files
        ]
        union = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
        out = (
            union.withColumn("_batch_id", F.lit(str(req.batch_id)))
            .withColumn("_ingested_at", F.current_timestamp())
            .coalesce(req.output_files)
        )
        tag = batch_tag(req.batch_id)
        spark.addTag(tag)
        try:
            out.writeTo(req.table).option("mergeSchema", "true").append()
        finally:
            spark.removeTag(tag)
        return self._counts(spark, req.table, req.batch_id)

    def _counts(self, spark: Any, table: str, batch_id: UUID) -> dict[str, int]:
        from pyspark.sql import functions as F  # noqa: N812

        rows = (
            spark.table(table)
            .where(F.col("_batch_id") == F.lit(str(batch_id)))
            .groupBy("_source_file")
            .count()
            .collect()
        )
        return {r["_source_file"]: int(r["count"]) for r in rows}

    def _probe(self, table: str, batch_id: UUID) -> dict[str, int]:
        spark = self._spark()
        if not spark.catalog.tableExists(table):
            return {}
        return self._counts(spark, table, batch_id)

    def _interrupt(self, batch_id: UUID) -> None:
        with self._lock:
            session = self._session
        if session is not None:
            session.interruptTag(batch_tag(batch_id))

    # -- async API -------------------------------------------------------------------------

    async def write(self, request: WriteRequest) -> dict[str, int]:
        """Append the batch in ONE commit; returns rows per ``_source_file`` read back from the
        table (files that produced no rows are absent)."""
        result: dict[str, int] = await self._run(self._write, request)
        return result

    async def batch_counts(self, table: str, batch_id: UUID) -> dict[str, int]:
        """Rows per ``_source_file`` carrying ``_batch_id``: empty means the batch never committed."""
        result: dict[str, int] = await self._run(self._probe, table, batch_id)
        return result

    async def interrupt(self, batch_id: UUID) -> None:
        with contextlib.suppress(Exception):  # best effort during shutdown
            await asyncio.to_thread(self._interrupt, batch_id)

    async def ping(self) -> str:
        """Round-trip to the server; returns its Spark version."""
        result: str = await self._run(lambda: self._spark().version)
        return result
