"""Worker settings: environment variables with the ICEFEED_ prefix, nested one level.

``ICEFEED_PG_DSN`` sets ``pg.dsn``, ``ICEFEED_SQS_QUEUE_URLS`` sets ``sqs.queue_urls``; the part
after the first underscore names the field. Settings are built once in ``__main__`` and passed down.
"""

from __future__ import annotations

import os
import re
import socket
import urllib.parse
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from worker.domain.errors import ConfigError

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
REPO_ROOT = Path(__file__).resolve().parent.parent


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AwsSettings(_Section):
    region: str = "us-east-1"
    # Endpoint override for S3/SQS/Glue emulators (moto); empty on AWS. Credentials come from the
    # standard AWS chain (environment, IRSA web identity, instance profile), never from here.
    endpoint_url: str | None = None


class SqsSettings(_Section):
    queue_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    receivers: int = Field(2, ge=1, le=64, description="long-poll loops per queue")
    wait_time_s: int = Field(20, ge=0, le=20)
    max_messages: int = Field(10, ge=1, le=10)
    visibility_timeout_s: int = Field(300, ge=10, le=43200)
    backoff_base_s: int = Field(10, ge=0, le=43200)
    backoff_max_s: int = Field(900, ge=0, le=43200)
    outage_max_attempts: int = Field(
        50,
        ge=0,
        le=100000,
        description="claims of one file that may fail for an outage (engine, PostgreSQL, AWS down) "
        "without spending its message's receives; later outage failures count towards maxReceiveCount",
    )
    max_in_flight: int = Field(400, ge=10, le=100000, description="messages held at once")

    @field_validator("queue_urls", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("queue_urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not re.match(r"^https?://[^\s]+$", url):
                raise ValueError(f"not a queue URL: {url!r}")
        return value


# ICEFEED_SPARK_DETACHED_LIMIT_S defaults, per dialect (measured: docs/engines.md).
DETACHED_LIMIT_S = {"spark": 3900, "sail": 3600}


def detached_limit_for(spark: SparkSettings, dialect: str) -> int:
    """The detached-execution limit of an engine of ``dialect`` in a fleet whose
    ICEFEED_SPARK_* settings are ``spark``: that setting, or, for an engine of another dialect, the
    longer of it and that dialect's default (waiting longer is safe; shorter is not)."""
    if dialect == spark.dialect:
        return spark.detached_limit_s
    return max(spark.detached_limit_s, DETACHED_LIMIT_S.get(dialect, DETACHED_LIMIT_S["spark"]))


def spark_url_params(url: str) -> dict[str, str]:
    """The ``;key=value`` parameters of a Spark Connect URL (``sc://host:port/;k=v;…``), read the
    way the pyspark client reads them."""
    parsed = urllib.parse.urlparse("http" + url[2:])
    params = {}
    for part in parsed.params.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            params[key] = urllib.parse.unquote(value)
    return params


class SparkSettings(_Section):
    # sc://host:port/;token=…;use_ssl=true;user_id=… — may carry a token: a secret.
    url: SecretStr = SecretStr("sc://127.0.0.1:15002")
    concurrency: int = Field(2, ge=1, le=64, description="Spark jobs in flight per worker")
    session_timezone: str = "UTC"
    client_retries: int = Field(6, ge=0, le=30, description="gRPC retries before a call fails")
    # With [[engine]] blocks: an engine's shared session unused this long is closed (the next
    # call opens one). 0: never.
    idle_close_s: float = Field(600, ge=0, le=86400)
    # What the engine can do: "spark" (Apache Spark) or "sail". Sail's JSON reader knows only JSON
    # lines, so whole-file JSON (multiline = true) is parsed by the worker for it, up to
    # local_parse_max_bytes per file.
    dialect: Literal["spark", "sail"] = "spark"
    local_parse_max_bytes: int = Field(64 * 1024 * 1024, ge=1)
    # JSON / JSON-lines files up to this size are fetched by the worker (one GET) and handed to the
    # engine as Arrow, a batch at a time; larger ones are read by the engine. 0: the engine reads all.
    worker_read_max_bytes: int = Field(8 * 1024 * 1024, ge=0)
    # What the worker decodes of ONE such file, checked before parsing (gzip is inflated as a
    # stream and stops at the limit): its decompressed bytes, and its JSON values (objects, arrays,
    # members: what parsing costs in memory; 10 M lines of {} are 30 MB but 20 M values). Over
    # either, the engine reads the file by path; where it cannot (whole-file JSON on Sail) the
    # file is FAILED with DecompressionLimit. See docs/memory.md.
    worker_decode_max_bytes: int = Field(64 * 1024 * 1024, ge=1024, le=96 * 1024 * 1024)
    worker_decode_max_values: int = Field(3_000_000, ge=1)
    # The tables' format: "iceberg", or "parquet" (plain Spark tables: for testing against Apache
    # Spark without an Iceberg runtime; only new top-level columns, no on_overwrite = replace).
    # Engine and format differences live in worker/adapters/dialects.py.
    table_format: Literal["iceberg", "parquet"] = "iceberg"
    # Test-only: read source objects from <source_root>/<bucket>/<key> (a file:// mirror) instead
    # of s3://<bucket>/<key>, for an engine without S3 access (tests/spark4). Empty in production.
    source_root: str = ""
    # How long the engine may keep running a write after its client is gone (killed, frozen,
    # disconnected), in seconds: a batch whose engine session could not be stopped for certain is
    # released only after this. 0 (or unset): the dialect's default, from measurements
    # (docs/engines.md). On both engines a SIGKILLed client's append ran on and committed. Apache
    # Spark 4: 597 s after the kill (its detached-execution timeout not applied); what surely ends it
    # is the expiry of its idle session (spark.connect.session.manager.defaultSessionTimeout, 60 min,
    # + a 30 s check) -> 3900. Sail: every such append ran to its natural end, even past a 20 s
    # session timeout -> no engine bound; one hour, which must exceed the longest append you run.
    detached_limit_s: int = Field(0, ge=0, le=86400)

    @model_validator(mode="before")
    @classmethod
    def _detached_default(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("detached_limit_s") in (None, 0, "0", ""):
            dialect = data.get("dialect", "spark")
            return {**data, "detached_limit_s": DETACHED_LIMIT_S.get(str(dialect), DETACHED_LIMIT_S["spark"])}
        return data

    @field_validator("url")
    @classmethod
    def _sc(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith("sc://"):
            raise ValueError("must start with sc:// (a Spark Connect URL)")
        if "session_id" in spark_url_params(value.get_secret_value()):
            raise ValueError(
                "must not carry session_id: icefeed opens one Spark Connect session per write (and one shared one)"
            )
        return value

    @field_validator("source_root")
    @classmethod
    def _root(cls, value: str) -> str:
        if value and not re.match(r"^file:///[^\s]*$", value):
            raise ValueError("must be empty or a file:/// URL (test-only: a local mirror of the buckets)")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _format(self) -> SparkSettings:
        if self.table_format == "parquet" and self.dialect != "spark":
            raise ValueError(
                "ICEFEED_SPARK_TABLE_FORMAT=parquet needs ICEFEED_SPARK_DIALECT=spark (Sail writes Iceberg)"
            )
        return self


class PgSettings(_Section):
    """The ledger's connection pool and the time limits of every statement on it.

    Server-side limits (statement, lock, idle in transaction, TCP keepalives) are sent as
    session settings on every connection; 0 turns one off (PostgreSQL's own meaning). The
    client-side limits (command, acquire) bound a wait the server cannot see: a dead network,
    a pool with no free connection. See docs/postgresql.md."""

    dsn: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/postgres")
    ledger_schema: str = "icefeed"
    pool_min: int = Field(1, ge=0, le=100)
    pool_max: int = Field(8, ge=1, le=100)
    connect_timeout_s: float = Field(10.0, gt=0, le=600)
    # Client side: a statement whose answer has not come back after this long is abandoned
    # (asyncpg cancels it). Above statement_timeout_s, so the server's cleaner error comes first.
    command_timeout_s: float = Field(30.0, ge=0, le=3600, description="0: no client-side limit")
    # Server side (session settings on every pooled connection).
    statement_timeout_s: float = Field(15.0, ge=0, le=3600, description="0: off")
    lock_timeout_s: float = Field(5.0, ge=0, le=3600, description="0: off")
    idle_in_transaction_timeout_s: float = Field(60.0, ge=0, le=86400, description="0: off")
    # Waiting for a free pooled connection (PgLedger passes it to every acquire).
    acquire_timeout_s: float = Field(10.0, gt=0, le=3600)
    # The server probes an idle client connection: a worker whose host vanished loses its
    # backend (and the session advisory locks it held) after about idle + interval × count
    # seconds instead of the operating system's default of over two hours. 0: the OS default.
    keepalive_idle_s: int = Field(30, ge=0, le=7200)
    keepalive_interval_s: int = Field(10, ge=0, le=600)
    keepalive_count: int = Field(3, ge=0, le=100)

    @model_validator(mode="after")
    def _pool(self) -> PgSettings:
        if self.pool_min > self.pool_max:
            raise ValueError(
                f"ICEFEED_PG_POOL_MIN ({self.pool_min}) is greater than ICEFEED_PG_POOL_MAX ({self.pool_max})"
            )
        return self

    @model_validator(mode="after")
    def _timeouts(self) -> PgSettings:
        statement, lock, command = self.statement_timeout_s, self.lock_timeout_s, self.command_timeout_s
        if statement and lock and lock >= statement:
            raise ValueError(
                f"ICEFEED_PG_LOCK_TIMEOUT_S ({lock:g}) must be below ICEFEED_PG_STATEMENT_TIMEOUT_S ({statement:g}):"
                " a lock wait is part of its statement"
            )
        if command and statement and command <= statement:
            raise ValueError(
                f"ICEFEED_PG_COMMAND_TIMEOUT_S ({command:g}) must be above ICEFEED_PG_STATEMENT_TIMEOUT_S"
                f" ({statement:g}): the server ends a slow statement first, with a clear error"
            )
        return self

    def server_settings(self, application_name: str) -> dict[str, str]:
        """Session settings for every connection (values in milliseconds / seconds, as text)."""
        return {
            "search_path": self.ledger_schema,
            "application_name": application_name,
            "statement_timeout": milliseconds(self.statement_timeout_s),
            "lock_timeout": milliseconds(self.lock_timeout_s),
            "idle_in_transaction_session_timeout": milliseconds(self.idle_in_transaction_timeout_s),
            "tcp_keepalives_idle": str(self.keepalive_idle_s),
            "tcp_keepalives_interval": str(self.keepalive_interval_s),
            "tcp_keepalives_count": str(self.keepalive_count),
        }

    @field_validator("ledger_schema")
    @classmethod
    def _ident(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError("must match [A-Za-z_][A-Za-z0-9_]* (at most 63 characters)")
        return value


class BatchSettings(_Section):
    max_files: int = Field(200, ge=1, le=100000)
    max_bytes: int = Field(512 * 1024 * 1024, ge=1)
    max_wait_s: float = Field(1.0, ge=0, le=3600)
    in_flight: int = Field(2, ge=1, le=16, description="batches per table prepared at once by one worker")
    output_files: int = Field(1, ge=1, le=1000, description="data files written per commit")
    max_file_bytes: int = Field(5 * 1024**3, ge=1, description="larger files are FAILED")


class MemorySettings(_Section):
    # Bytes of worker-read data (bodies, then decoded Arrow until the write ends) held at once by
    # one worker, across all its batches in flight: a batch's fetch waits for room, and one item
    # larger than the budget runs alone. The default leaves room in the Deployment's 1 GiB limit
    # for the process itself (~250 MB) and the copies sent to the engine. See docs/memory.md.
    budget_bytes: int = Field(384 * 1024 * 1024, ge=1024 * 1024)


class IcebergSettings(_Section):
    # pyiceberg catalog properties for operations the SQL engine cannot do (changing a column's
    # type on operator approval), e.g. {"type": "glue", "glue.region": "eu-west-1"}. Credentials
    # come from the standard AWS chain. Empty: those operations are refused with an explanation.
    catalog: dict[str, str] = Field(default_factory=dict)


class LeaseSettings(_Section):
    ttl_s: int = Field(120, ge=5, le=86400)
    sweep_interval_s: float = Field(15.0, gt=0)
    orphan_grace_s: int = Field(
        30, ge=0, le=86400, description="extra wait after a lease expires before its batch is probed"
    )
    lock_check_s: float = Field(5.0, gt=0, le=300, description="how often a held table lock's connection is checked")
    maintenance_ttl_s: int = Field(
        600, ge=10, le=86400, description="table maintenance lease: a dead maintainer's tables come back after it"
    )
    recovery_lock_wait_s: float = Field(
        10.0, gt=0, le=3600, description="how long recovery and the audit wait for a table lock before deferring"
    )
    audit_delay_s: int = Field(
        360,
        ge=0,
        le=86400,
        description="a released batch is audited for rows that landed after all this long after its release "
        "(longer than the engine keeps a detached append running)",
    )


class HttpSettings(_Section):
    """The operations endpoint: /metrics, /healthz, /readyz (port 0 turns it off)."""

    port: int = Field(9108, ge=0, le=65535, description="0 disables the endpoint")
    host: str = "0.0.0.0"  # noqa: S104 - scraped and probed from outside the pod
    ready_cache_s: float = Field(5.0, ge=0, le=300, description="how long a /readyz answer is reused")
    probe_timeout_s: float = Field(1.5, gt=0, le=60, description="per dependency, for /readyz")
    stats_interval_s: float = Field(15.0, gt=0, le=3600, description="queue depths and quarantine count refresh")


class CostSettings(_Section):
    """Unit prices and per-commit request counts for ``icefeed cost`` (docs/cost.md).

    Defaults: AWS list prices in us-east-1 as looked up in 2026-11 (on-demand, before free tiers);
    the engine and worker prices are examples. Override them with your own prices."""

    sqs_usd_per_million: float = Field(0.40, ge=0, description="SQS standard requests (a 64 KB chunk is one)")
    s3_get_usd_per_1000: float = Field(0.0004, ge=0, description="S3 Standard GET, HEAD and other reads")
    s3_put_usd_per_1000: float = Field(0.005, ge=0, description="S3 Standard PUT, COPY, POST, LIST")
    catalog_usd_per_million: float = Field(1.00, ge=0, description="Glue Data Catalog requests")
    # Example: three m5.xlarge on Amazon EMR, (EC2 0.192 + EMR 0.048) × 3 per hour.
    engine_usd_per_hour: float = Field(0.72, ge=0, description="one hour of the Spark Connect cluster")
    # db.t4g.medium RDS for PostgreSQL, Single-AZ: 0.065 × 730 h = 47.45, + 20 GB gp3 × 0.115 = 2.30.
    pg_usd_per_month: float = Field(49.75, ge=0, description="the ledger's PostgreSQL, a month")
    # Example: a Fargate pod of 1 vCPU (0.04048) and 1 GB (0.004445), the Deployment's limits.
    worker_usd_per_hour: float = Field(0.044925, ge=0, description="one worker pod, an hour")
    catalog_calls_per_commit: float = Field(3.0, ge=0, description="GetTable to plan, GetTable + UpdateTable")
    metadata_reads_per_commit: float = Field(2.0, ge=0, description="S3 GETs of metadata.json and manifest list")
    metadata_writes_per_commit: float = Field(3.0, ge=0, description="manifest, manifest list, metadata.json")
    engine_reads_per_file: float = Field(3.0, ge=0, description="S3 requests the engine makes to read a file")


def milliseconds(seconds: float) -> str:
    """Seconds as a PostgreSQL duration in whole milliseconds (0 stays 0: off; never rounded to 0)."""
    return "0" if seconds == 0 else str(max(1, round(seconds * 1000)))


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ICEFEED_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="ignore",
        frozen=True,
    )

    aws: AwsSettings = AwsSettings()
    sqs: SqsSettings = SqsSettings()
    spark: SparkSettings = SparkSettings()
    pg: PgSettings = PgSettings()
    batch: BatchSettings = BatchSettings()
    memory: MemorySettings = MemorySettings()
    lease: LeaseSettings = LeaseSettings()
    iceberg: IcebergSettings = IcebergSettings()
    http: HttpSettings = HttpSettings()
    cost: CostSettings = CostSettings()
    routes_file: Path = Path("routes.toml")
    migrations_dir: Path = REPO_ROOT / "migrations"
    worker_id: str = Field(default_factory=_default_worker_id)
    shutdown_grace_s: float = Field(30.0, ge=0, le=3600)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    faults: str = Field("", description="test-only fault points, see worker/faults.py")


def env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable that sets the field at ``loc``."""
    return "ICEFEED_" + "_".join(str(part) for part in loc if isinstance(part, str)).upper()


def load_settings(**overrides: object) -> Settings:
    """Build the settings or raise ConfigError naming every bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [f"{env_name(err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise ConfigError("invalid settings:\n  " + "\n  ".join(lines)) from None
    except SettingsError as exc:  # e.g. ICEFEED_SQS='{bad' (a whole section as malformed JSON)
        match = re.search(r'field "(\w+)"', str(exc))
        name = f"ICEFEED_{match.group(1).upper()}" if match else "ICEFEED_*"
        raise ConfigError(f"invalid settings:\n  {name}: not valid JSON ({exc})") from None


def require_queues(settings: Settings) -> None:
    if not settings.sqs.queue_urls:
        raise ConfigError("invalid settings:\n  ICEFEED_SQS_QUEUE_URLS: at least one queue URL is required")
