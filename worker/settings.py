"""Worker settings: environment variables with the ICEFEED_ prefix, nested one level.

``ICEFEED_PG_DSN`` sets ``pg.dsn``, ``ICEFEED_SQS_QUEUE_URLS`` sets ``sqs.queue_urls``; the part
after the first underscore names the field. Settings are built once in ``__main__`` and passed down.
"""

from __future__ import annotations

import os
import re
import socket
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


class SparkSettings(_Section):
    # sc://host:port/;token=…;use_ssl=true;user_id=… — may carry a token: a secret.
    url: SecretStr = SecretStr("sc://127.0.0.1:15002")
    concurrency: int = Field(2, ge=1, le=64, description="Spark jobs in flight per worker")
    session_timezone: str = "UTC"
    client_retries: int = Field(6, ge=0, le=30, description="gRPC retries before a call fails")
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

    @field_validator("url")
    @classmethod
    def _sc(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith("sc://"):
            raise ValueError("must start with sc:// (a Spark Connect URL)")
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
    dsn: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/postgres")
    ledger_schema: str = "icefeed"
    pool_min: int = Field(1, ge=0, le=100)
    pool_max: int = Field(8, ge=1, le=100)
    connect_timeout_s: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _pool(self) -> PgSettings:
        if self.pool_min > self.pool_max:
            raise ValueError(
                f"ICEFEED_PG_POOL_MIN ({self.pool_min}) is greater than ICEFEED_PG_POOL_MAX ({self.pool_max})"
            )
        return self

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


class HttpSettings(_Section):
    """The operations endpoint: /metrics, /healthz, /readyz (port 0 turns it off)."""

    port: int = Field(9108, ge=0, le=65535, description="0 disables the endpoint")
    host: str = "0.0.0.0"  # noqa: S104 - scraped and probed from outside the pod
    ready_cache_s: float = Field(5.0, ge=0, le=300, description="how long a /readyz answer is reused")
    probe_timeout_s: float = Field(1.5, gt=0, le=60, description="per dependency, for /readyz")
    stats_interval_s: float = Field(15.0, gt=0, le=3600, description="queue depths and quarantine count refresh")


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
