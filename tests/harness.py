"""Helpers for integration tests: per-test resources on the shared stack, worker processes,
polling to deadlines, and independent checks of Iceberg tables through pyiceberg."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from worker.domain.events import s3_notification_record
from worker.localstack import Provisioned, Stack, iceberg_catalog
from worker.routes import Routes, parse_routes

T = TypeVar("T")

ROUTES = """
[[ingestion]]
name = "events"
bucket = "{bucket}"
prefix = "events/"
suffix = ".json"
format = "json"
table = "glue.{db}.events"
location = "s3://{warehouse}/{db}/events"

[[ingestion]]
name = "events_gz"
bucket = "{bucket}"
prefix = "events/"
suffix = ".json.gz"
format = "json"
table = "glue.{db}.events"
location = "s3://{warehouse}/{db}/events"

[[ingestion]]
name = "typed"
bucket = "{bucket}"
prefix = "typed/"
suffix = ".parquet"
format = "parquet"
table = "glue.{db}.typed"
location = "s3://{warehouse}/{db}/typed"

[[ingestion]]
name = "rescued"
bucket = "{bucket}"
prefix = "rescue/"
suffix = ".json"
format = "json"
table = "glue.{db}.rescued"
location = "s3://{warehouse}/{db}/rescued"
schema_policy = "rescue"

[[ingestion]]
name = "strict"
bucket = "{bucket}"
prefix = "strict/"
suffix = ".json"
format = "json"
table = "glue.{db}.strict"
location = "s3://{warehouse}/{db}/strict"
schema_policy = "strict"

[[ingestion]]
name = "hinted"
bucket = "{bucket}"
prefix = "hinted/"
suffix = ".json"
format = "json"
table = "glue.{db}.hinted"
location = "s3://{warehouse}/{db}/hinted"
schema_hints = {{ amount = "decimal(18,2)", ts = "timestamp" }}

[[ingestion]]
name = "snapshots"
bucket = "{bucket}"
prefix = "snap/"
suffix = ".json"
format = "json"
table = "glue.{db}.snapshots"
location = "s3://{warehouse}/{db}/snapshots"
on_overwrite = "replace"

[[ingestion]]
name = "documents"
bucket = "{bucket}"
prefix = "docs/"
suffix = ".json"
format = "json"
table = "glue.{db}.documents"
location = "s3://{warehouse}/{db}/documents"
options = {{ multiline = true }}

[[ingestion]]
name = "people"
bucket = "{bucket}"
prefix = "people/"
suffix = ".csv"
format = "csv"
table = "glue.{db}.people"
location = "s3://{warehouse}/{db}/people"
"""


#: The event time of every crafted notification (fixed: tests never read it).
CRAFTED_TIME = datetime(2026, 11, 22, tzinfo=UTC)


def s3_record(
    bucket: str,
    key: str,
    etag: str,
    size: int,
    name: str = "ObjectCreated:Put",
    version: str = "2.1",
    sequencer: str | None = None,
) -> dict[str, Any]:
    """One S3 notification record as AWS sends it: the key form-encoded, "/" left alone."""
    return s3_notification_record(
        bucket,
        key,
        etag,
        size,
        event_name=name,
        event_version=version,
        sequencer=sequencer,
        event_time=CRAFTED_TIME,
        region="us-east-1",
        configuration_id="crafted",
    )


def s3_event(
    bucket: str,
    key: str,
    etag: str,
    size: int,
    name: str = "ObjectCreated:Put",
    version: str = "2.1",
    sequencer: str | None = None,
) -> str:
    """A crafted SQS body holding one S3 notification record."""
    return json.dumps({"Records": [s3_record(bucket, key, etag, size, name, version, sequencer)]})


def poll(fn: Callable[[], T | None], timeout: float = 60.0, what: str = "condition", interval: float = 0.1) -> T:
    """Call ``fn`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


@dataclass
class Env:
    stack: Stack
    tmp: Path
    tag: str
    bucket: str
    warehouse: str
    db: str
    schema: str
    routes_file: Path
    routes: Routes
    prov: Provisioned
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: list[Any] = field(default_factory=list)
    s3: Any = None
    sqs: Any = None

    # -- worker processes ------------------------------------------------------------------

    def worker_env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, **self.stack.worker_env(self.prov.queue_url, self.routes_file, self.schema)}
        env.update(
            {
                "ICEFEED_LOG_FORMAT": "json",
                "ICEFEED_LOG_LEVEL": "DEBUG",
                "ICEFEED_SQS_WAIT_TIME_S": "1",
                "ICEFEED_SQS_VISIBILITY_TIMEOUT_S": "30",
                "ICEFEED_SQS_BACKOFF_BASE_S": "1",
                "ICEFEED_SQS_BACKOFF_MAX_S": "2",
                "ICEFEED_BATCH_MAX_WAIT_S": "0.5",
                "ICEFEED_LEASE_TTL_S": "10",
                "ICEFEED_LEASE_SWEEP_INTERVAL_S": "1",
                "ICEFEED_LEASE_ORPHAN_GRACE_S": "2",
                "ICEFEED_SHUTDOWN_GRACE_S": "20",
                # Several workers share this machine: no endpoint unless a test asks for one.
                "ICEFEED_HTTP_PORT": "0",
            }
        )
        env.update(extra)
        return env

    def cli(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker", *args],
            env=self.worker_env(**extra),
            capture_output=True,
            text=True,
            timeout=120,
        )

    def migrate(self) -> None:
        result = self.cli("migrate")
        assert result.returncode == 0, result.stderr

    def start_worker(self, name: str = "w", **extra: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"worker-{name}-{len(self.workers)}.log", "wb")  # noqa: SIM115
        self._logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "run"],
            env=self.worker_env(ICEFEED_WORKER_ID=f"{name}-{len(self.workers)}", **extra),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers.append(proc)
        return proc

    def worker_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("worker-*.log")))

    def stop_workers(self, timeout: float = 60) -> list[int]:
        codes = []
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            codes.append(proc.wait(timeout=timeout))
        self.workers.clear()
        return codes

    def close(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in self._logs:
            log.close()
        asyncio.run(self._drop_schema())

    async def _drop_schema(self) -> None:
        conn = await asyncpg.connect(self.stack.pg_dsn)
        try:
            stmt = await conn.fetchval("SELECT format('DROP SCHEMA IF EXISTS %I CASCADE', $1::text)", self.schema)
            await conn.execute(stmt)
        finally:
            await conn.close()

    # -- data --------------------------------------------------------------------------------

    def put(self, key: str, body: bytes) -> str:
        return str(self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)["ETag"]).strip('"')

    def send_raw(self, body: str) -> None:
        self.sqs.send_message(QueueUrl=self.prov.queue_url, MessageBody=body)

    def sql(self, query: str, *args: Any) -> list[dict[str, Any]]:
        async def go() -> list[dict[str, Any]]:
            conn = await asyncpg.connect(self.stack.pg_dsn, server_settings={"search_path": self.schema})
            try:
                return [dict(r) for r in await conn.fetch(query, *args)]
            finally:
                await conn.close()

        return asyncio.run(go())

    def files(self) -> list[dict[str, Any]]:
        return self.sql("SELECT * FROM files ORDER BY id")

    def wait_files(self, n: int, statuses: set[str] | None = None, timeout: float = 90) -> list[dict[str, Any]]:
        """Wait until the ledger holds ``n`` files, all in a final state (or in ``statuses``)."""
        final = statuses or {"LOADED", "FAILED", "GONE", "SKIPPED", "QUARANTINED", "REJECTED"}

        def check() -> list[dict[str, Any]] | None:
            rows = self.files()
            if len(rows) >= n and all(r["status"] in final for r in rows):
                return rows
            return None

        return poll(check, timeout, f"{n} files in {sorted(final)}")

    def queue_depth(self, url: str | None = None) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url or self.prov.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def table_rows(self, table: str = "events") -> list[dict[str, Any]]:
        """Rows of an Iceberg table, read with pyiceberg (independent of the engine that wrote it)."""
        catalog = iceberg_catalog(self.stack.moto_url)
        tbl = catalog.load_table(f"{self.db}.{table}")
        rows: list[dict[str, Any]] = tbl.scan().to_arrow().to_pylist()
        return rows

    def table(self, table: str = "events") -> Any:
        return iceberg_catalog(self.stack.moto_url).load_table(f"{self.db}.{table}")


E = TypeVar("E", bound="Env")


def make_env(
    stack: Stack,
    tmp: Path,
    tag: str,
    *,
    routes: str = ROUTES,
    warehouse: str | None = None,
    env_class: type[E] = Env,  # type: ignore[assignment]
    **more: Any,
) -> E:
    """A fresh env on ``stack``: bucket, queue (maxReceiveCount 4), database and ledger schema named
    after ``tag``, and the routes file its workers read (``routes`` formatted with the bucket,
    warehouse and database). ``env_class`` and ``more`` let a suite extend ``Env``."""
    bucket, db = f"land-{tag}", f"db_{tag}"
    warehouse = f"wh-{tag}" if warehouse is None else warehouse
    text = routes.format(bucket=bucket, warehouse=warehouse, db=db)
    routes_file = tmp / "routes.toml"
    routes_file.write_text(text)
    parsed = parse_routes(text)
    prov = stack.provision(parsed, queue_name=f"q-{tag}", max_receive_count=4)
    env = env_class(stack, tmp, tag, bucket, warehouse, db, f"ledger_{tag}", routes_file, parsed, prov, **more)
    env.s3 = stack.client("s3")
    env.sqs = stack.client("sqs")
    # Configuring notifications sends an s3:TestEvent: part of the real flow, left in the queue.
    return env
