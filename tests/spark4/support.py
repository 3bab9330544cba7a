"""The Apache Spark 4 tier's machinery: a real Spark 4.0 Connect server started from the installed
pyspark package's own jars (Java 17), and a test environment whose workers write Parquet tables
through it.

Source objects: the Spark JVM has no S3 client here (hadoop-aws is on Maven only), so every
object the tests upload to moto is also written to a local mirror, and the workers run with
``ICEFEED_SPARK_SOURCE_ROOT=file://<mirror>`` (test-only). The engine then reads each file with its
own reader, exactly as it reads ``s3://`` in production: same path encoding, options, inference.
Notifications, HEAD, the ledger and the queue are the real local stack (moto + PostgreSQL).

Table contents are checked by reading the tables' Parquet files with pyarrow (an independent
reader), and cross-checked through Spark.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tests.harness import Env, make_env
from worker.adapters.spark_sink import quiet
from worker.localstack import Stack, free_port

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"

ROUTES = """
[[ingestion]]
name = "events"
bucket = "{bucket}"
prefix = "events/"
suffix = ".json"
format = "json"
table = "spark_catalog.{db}.events"
location = "file://{warehouse}/events"

[[ingestion]]
name = "people"
bucket = "{bucket}"
prefix = "people/"
suffix = ".csv"
format = "csv"
table = "spark_catalog.{db}.people"
location = "file://{warehouse}/people"

[[ingestion]]
name = "documents"
bucket = "{bucket}"
prefix = "docs/"
suffix = ".json"
format = "json"
table = "spark_catalog.{db}.documents"
location = "file://{warehouse}/documents"
options = {{ multiline = true }}
"""


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def connect_jar(home: Path) -> Path:
    jars = sorted((home / "jars").glob("spark-connect_2.13-*.jar"))
    if len(jars) != 1:
        raise RuntimeError(f"expected one spark-connect_2.13-*.jar in {home / 'jars'}, found {jars}")
    return jars[0]


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Spark4Server:
    """A Spark 4 Connect server in its own process group, logging to ``log``."""

    workdir: Path
    port: int = 0
    # Spark 4's own pre-shared token (spark.connect.authenticate.token): clients must send it as a
    # bearer token, which pyspark does for sc://localhost:PORT/;token=… (no TLS on localhost only).
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=Path)
    ready_s: float = 0.0
    session: Any = None
    driver_memory: str = ""  # e.g. "3g"; default: spark-submit's (1g)

    @property
    def url(self) -> str:
        return f"sc://localhost:{self.port}/;token={self.token}"

    def start(self, timeout: float = 180.0) -> Spark4Server:
        home = spark_home()
        self.port = free_port()
        self.log = self.workdir / "spark4-server.log"
        argv = [
            str(home / "bin" / "spark-submit"),
            "--master",
            "local[2]",
            "--class",
            SERVER_CLASS,
            *(["--driver-memory", self.driver_memory] if self.driver_memory else []),
            "--conf",
            "spark.connect.grpc.binding.address=127.0.0.1",
            "--conf",
            f"spark.connect.grpc.binding.port={self.port}",
            "--conf",
            "spark.ui.enabled=false",
            "--conf",
            f"spark.sql.warehouse.dir=file://{self.workdir}/spark-warehouse",
            str(connect_jar(home)),
        ]
        env = {
            **os.environ,
            "SPARK_HOME": str(home),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_LOCAL_DIRS": str(self.workdir / "local"),
            "SPARK_CONNECT_AUTHENTICATE_TOKEN": self.token,  # not on the command line (ps shows it)
            "PYSPARK_PYTHON": sys.executable,  # Python UDFs (tests/spark4/test_engine_fence.py)
        }
        started = time.monotonic()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.workdir, start_new_session=True
            )
        deadline = started + timeout
        while not _listening(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"Spark 4 Connect server exited with {self.proc.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Spark 4 Connect server not listening after {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.1)
        from pyspark.sql import SparkSession

        self.session = quiet(SparkSession.builder.remote(self.url).create())
        assert self.session.version.startswith("4."), self.session.version
        self.ready_s = time.monotonic() - started
        return self

    def log_lines(self, *needles: str) -> list[str]:
        """The server log's lines that contain every one of ``needles``."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if all(n in line for n in needles)]

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.session is not None:
            with contextlib.suppress(Exception):  # the server may already be gone
                self.session.stop()
            self.session = None
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@dataclass
class Spark4Env(Env):
    """An ``Env`` whose workers write Parquet tables through Apache Spark 4."""

    server: Spark4Server | None = None
    mirror: Path = field(default_factory=Path)
    warehouse_dir: Path = field(default_factory=Path)

    def worker_env(self, **extra: str) -> dict[str, str]:
        assert self.server is not None
        spark4 = {
            "ICEFEED_SPARK_URL": self.server.url,
            "ICEFEED_SPARK_DIALECT": "spark",
            "ICEFEED_SPARK_TABLE_FORMAT": "parquet",
            "ICEFEED_SPARK_SOURCE_ROOT": f"file://{self.mirror}",
        }
        return super().worker_env(**{**spark4, **extra})

    def put(self, key: str, body: bytes) -> str:
        """Upload to moto (the notification, HEAD and eTag) after writing the engine's copy."""
        path = self.mirror / self.bucket / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        return super().put(key, body)

    # -- independent reads of the tables: their Parquet files, through pyarrow ------------------

    def data_files(self, table: str) -> list[Path]:
        root = self.warehouse_dir / table
        return sorted(
            p
            for p in root.rglob("*.parquet")
            if not any(part.startswith(("_", ".")) for part in p.relative_to(root).parts)
        )

    def arrow(self, table: str) -> pa.Table:
        """Every data file of the table, columns unified by name (older files lack newer columns)."""
        return pa.concat_tables([pq.read_table(p) for p in self.data_files(table)], promote_options="default")

    def table_rows(self, table: str = "events") -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.arrow(table).to_pylist()
        return rows

    # -- the same table through the engine ----------------------------------------------------------

    def spark_table(self, table: str) -> Any:
        assert self.server is not None
        name = f"spark_catalog.{self.db}.{table}"
        self.server.session.catalog.refreshTable(name)
        return self.server.session.table(name)


@contextlib.contextmanager
def running_server(workdir: Path, driver_memory: str = "") -> Iterator[Spark4Server]:
    """A started Spark 4 Connect server, stopped on exit."""
    server = Spark4Server(workdir, driver_memory=driver_memory).start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def spark4_env(stack: Stack, server: Spark4Server, tmp: Path) -> Iterator[Spark4Env]:
    """A fresh env (bucket, queue, database, ledger schema) on ``server``, cleaned up on exit."""
    env = make_spark4_env(stack, server, tmp, uuid.uuid4().hex[:10])
    try:
        yield env
    finally:
        env.close()


def make_spark4_env(stack: Stack, server: Spark4Server, tmp: Path, tag: str) -> Spark4Env:
    warehouse_dir = tmp / "warehouse" / f"db_{tag}"
    env = make_env(
        stack,
        tmp,
        tag,
        routes=ROUTES,
        warehouse=str(warehouse_dir),
        env_class=Spark4Env,
        server=server,
        mirror=tmp / "mirror",
        warehouse_dir=warehouse_dir,
    )
    server.session.sql(f"CREATE DATABASE IF NOT EXISTS spark_catalog.{env.db}")  # what provisioning does on Glue
    return env
