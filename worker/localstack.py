"""The local stack for the demo and the tests: moto (S3 + SQS + Glue), Sail (Spark Connect,
Iceberg on moto S3 with a Glue catalog) and PostgreSQL (the one at ICEFEED_PG_DSN or
127.0.0.1:5432 when reachable, else an embedded pgserver, on a TCP port of 127.0.0.1).

``provision`` creates on moto exactly what infra/terraform creates on AWS: landing bucket(s),
queue + DLQ with a redrive policy, a queue policy for S3, ONE notification configuration per
bucket (ObjectCreated:* with each route's prefix/suffix), the warehouse bucket(s), Glue databases.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from worker.routes import Routes

REGION = "us-east-1"
ACCESS_KEY = "icefeed-local"
SECRET_KEY = "icefeed-local-secret"  # noqa: S105 - moto accepts any credentials
ACCOUNT = "123456789012"
GLUE_CATALOG = "glue"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: install the dev extras (pip install -e '.[dev]')")
    return found


def _wait_for(check: Any, what: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} while starting")
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not become ready within {timeout:.0f} s ({last})")


def _tcp_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
    }


async def _pg_reachable(dsn: str) -> bool:
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


@dataclass
class Stack:
    workdir: Path
    moto_url: str = ""
    spark_url: str = ""
    pg_dsn: str = ""
    pg_embedded: bool = False
    _procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    _pgserver: Any = None
    _pgdata_parent: Path | None = None
    _logs: list[Any] = field(default_factory=list)

    # -- start / stop ----------------------------------------------------------------------

    def start(self, pg_dsn: str | None = None) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_moto()
            self._start_sail()
            self._start_pg(pg_dsn)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        proc = subprocess.Popen(  # noqa: S603 - fixed argv
            argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True
        )
        self._procs.append((name, proc))
        return proc

    def _start_moto(self) -> None:
        port = free_port()
        proc = self._spawn("moto", [_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)], {})
        self.moto_url = f"http://127.0.0.1:{port}"
        url = self.moto_url + "/moto-api/"
        _wait_for(lambda: urllib.request.urlopen(url, timeout=1).status == 200, "moto", proc=proc)  # noqa: S310

    def sail_env(self) -> dict[str, str]:
        return {
            **aws_env(self.moto_url),
            "AWS_ALLOW_HTTP": "true",
            "SAIL_CATALOG__LIST": (
                f'[{{type="glue", name="{GLUE_CATALOG}", region="{REGION}", endpoint_url="{self.moto_url}"}}]'
            ),
        }

    def _start_sail(self) -> None:
        port = free_port()
        argv = [_bin("sail"), "spark", "server", "--ip", "127.0.0.1", "--port", str(port)]
        proc = self._spawn("sail", argv, self.sail_env())
        self.spark_url = f"sc://127.0.0.1:{port}"
        _wait_for(lambda: _tcp_open(port), "Sail Spark Connect server", proc=proc)

    def restart_sail(self) -> None:
        """Kill -9 the Sail server and start a new one on the same port (chaos tests)."""
        for name, proc in list(self._procs):
            if name == "sail":
                proc.kill()
                proc.wait()
                self._procs.remove((name, proc))
        port = int(self.spark_url.rsplit(":", 1)[1])
        argv = [_bin("sail"), "spark", "server", "--ip", "127.0.0.1", "--port", str(port)]
        proc = self._spawn("sail", argv, self.sail_env())
        _wait_for(lambda: _tcp_open(port), "Sail Spark Connect server", proc=proc)

    def _start_pg(self, pg_dsn: str | None) -> None:
        candidate = pg_dsn or os.environ.get("ICEFEED_PG_DSN") or "postgresql://postgres@127.0.0.1:5432/postgres"
        if asyncio.run(_pg_reachable(candidate)):
            self.pg_dsn = candidate
            return
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (a root shell, CI) and falls back to
            # /tmp/runtime-<uid>: harmless here, and an error under the tests' filterwarnings.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            from pgserver._commands import POSTGRES_BIN_PATH
            from pgserver.postgres_server import get_server  # embedded PostgreSQL for machines without a server

            # Not under workdir: the embedded server runs as its own user, which needs access to every
            # parent directory, and a concurrent pytest session resets its basetemp to mode 0700.
            self._pgdata_parent = Path(tempfile.mkdtemp(prefix="icefeed-pg-"))
            pgdata = self._pgdata_parent / "pgdata"
            self._pgserver = get_server(str(pgdata), cleanup_mode="stop")
        self.pg_embedded = True
        # pgserver listens on a unix socket only; restart it on a TCP port of 127.0.0.1 as well, so
        # that everything that needs host:port (a proxy in front of PostgreSQL, a DSN with a
        # password) works the same as against a server at 127.0.0.1:5432.
        port = free_port()
        socket_dir = self._pgserver.get_postmaster_info().socket_dir
        options = f"-h 127.0.0.1 -p {port}" + (f" -k {socket_dir}" if socket_dir else "")
        argv = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-w", "-o", options, "-l", str(pgdata / "log")]
        with open(self.workdir / "pg_ctl.log", "wb") as out:  # a file, not a pipe: the server inherits it
            subprocess.run(  # noqa: S603 - fixed argv
                [*argv, "restart"],
                stdout=out,
                stderr=subprocess.STDOUT,
                user=self._pgserver.system_user,
                timeout=30,
                check=True,
            )
        self._pgserver.ensure_postgres_running()  # takes the restarted postmaster's pid: cleanup() stops it
        self.pg_dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        _wait_for(lambda: asyncio.run(_pg_reachable(self.pg_dsn)), "embedded PostgreSQL on TCP")

    def stop(self) -> None:
        for _name, proc in reversed(self._procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _name, proc in reversed(self._procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._procs.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
        if self._pgserver is not None:
            self._pgserver.cleanup()
            self._pgserver = None
        if self._pgdata_parent is not None:
            shutil.rmtree(self._pgdata_parent, ignore_errors=True)
            self._pgdata_parent = None

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients -------------------------------------------------------------------------------

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.moto_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def worker_env(self, queue_url: str, routes_file: Path, ledger_schema: str = "icefeed") -> dict[str, str]:
        """The environment a worker needs to run against this stack."""
        return {
            **aws_env(self.moto_url),
            "ICEFEED_AWS_REGION": REGION,
            "ICEFEED_AWS_ENDPOINT_URL": self.moto_url,
            "ICEFEED_SQS_QUEUE_URLS": queue_url,
            "ICEFEED_SPARK_URL": self.spark_url,
            "ICEFEED_SPARK_DIALECT": "sail",
            "ICEFEED_PG_DSN": self.pg_dsn,
            "ICEFEED_PG_LEDGER_SCHEMA": ledger_schema,
            "ICEFEED_ROUTES_FILE": str(routes_file),
            "ICEFEED_ICEBERG_CATALOG": json.dumps(
                {
                    "type": "glue",
                    "glue.endpoint": self.moto_url,
                    "glue.region": REGION,
                    "s3.endpoint": self.moto_url,
                    "s3.region": REGION,
                }
            ),
        }

    # -- provisioning --------------------------------------------------------------------------

    def provision(self, routes: Routes, queue_name: str = "icefeed-events", max_receive_count: int = 5) -> Provisioned:
        s3, sqs, glue = self.client("s3"), self.client("sqs"), self.client("glue")
        dlq_url = sqs.create_queue(
            QueueName=f"{queue_name}-dlq", Attributes={"MessageRetentionPeriod": str(14 * 86400)}
        )["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue_url = sqs.create_queue(
            QueueName=queue_name,
            Attributes={
                "MessageRetentionPeriod": str(4 * 86400),
                "VisibilityTimeout": "300",
                "ReceiveMessageWaitTimeSeconds": "20",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count}),
            },
        )["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        buckets = sorted({i.bucket for i in routes.ingestion})
        sqs.set_queue_attributes(
            QueueUrl=queue_url, Attributes={"Policy": json.dumps(_queue_policy(queue_arn, buckets))}
        )
        warehouses = sorted({urlparse(i.location).netloc for i in routes.ingestion if i.location.startswith("s3")})
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        for bucket in sorted(set(buckets) | set(warehouses)):
            if bucket not in existing:
                s3.create_bucket(Bucket=bucket)
        for bucket in buckets:
            configs = [
                {
                    "Id": f"icefeed-{i.name}",
                    "QueueArn": queue_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {
                        "Key": {
                            "FilterRules": [
                                {"Name": "prefix", "Value": i.prefix},
                                {"Name": "suffix", "Value": i.suffix},
                            ]
                        }
                    },
                }
                for i in routes.ingestion
                if i.bucket == bucket
            ]
            s3.put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration={"QueueConfigurations": configs}
            )
        for database in sorted({i.database for i in routes.ingestion}):
            with contextlib.suppress(glue.exceptions.AlreadyExistsException):
                glue.create_database(DatabaseInput={"Name": database})
        return Provisioned(queue_url=queue_url, dlq_url=dlq_url, buckets=buckets, warehouses=warehouses)


@dataclass(frozen=True)
class Provisioned:
    queue_url: str
    dlq_url: str
    buckets: list[str]
    warehouses: list[str]


def _queue_policy(queue_arn: str, buckets: list[str]) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowS3Notifications",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {
                    "ArnLike": {"aws:SourceArn": [f"arn:aws:s3:::{b}" for b in buckets]},
                    "StringEquals": {"aws:SourceAccount": ACCOUNT},
                },
            }
        ],
    }


def iceberg_catalog(moto_url: str) -> Any:
    """A pyiceberg Glue catalog on moto: the independent reader used to check tables."""
    from pyiceberg.catalog import load_catalog

    return load_catalog(
        "check",
        **{
            "type": "glue",
            "glue.endpoint": moto_url,
            "glue.region": REGION,
            "glue.access-key-id": ACCESS_KEY,
            "glue.secret-access-key": SECRET_KEY,
            "s3.endpoint": moto_url,
            "s3.region": REGION,
            "s3.access-key-id": ACCESS_KEY,
            "s3.secret-access-key": SECRET_KEY,
        },
    )
