"""The routes file: which S3 prefixes feed which Iceberg tables, and how to read the files.

A TOML file with one ``[[ingestion]]`` table per route; see README "Configuration".
"""

from __future__ import annotations

import codecs
import functools
import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from worker.domain.errors import ConfigError
from worker.domain.keys import unsafe_key
from worker.domain.maintenance import MaintenancePolicy
from worker.domain.policy import reserved_name
from worker.domain.reading import CsvShape, TextRule
from worker.domain.routing import RouteRule, overlapping_pairs
from worker.domain.schema import DataType, SchemaError, parse_type

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
# Table locations end up inside a SQL string literal: allow only plain URL characters.
LOCATION = re.compile(r"^(s3|s3a|gs|abfss|file)://[A-Za-z0-9._\-/=@]+$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JsonOptions(_Model):
    multiline: bool = Field(False, description="whole-file JSON (array or pretty-printed) instead of JSON lines")


class CsvOptions(_Model):
    header: bool = True
    delimiter: Annotated[str, Field(min_length=1, max_length=1)] = ","
    quote: Annotated[str, Field(min_length=1, max_length=1)] = '"'
    escape: Annotated[str, Field(min_length=1, max_length=1)] = "\\"
    infer_schema: bool = True
    multiline: bool = False


class ParquetOptions(_Model):
    pass


ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
HEADER = re.compile(r"^[a-z0-9][a-z0-9\-]{0,62}$")
#: URL parameters an engine block sets through its own keys (never in the url).
ENGINE_OWN_PARAMS = {"token": "token_file or token_env", "user_id": "user_id", "session_id": "(icefeed's own)"}


class Engine(_Model):
    """A Spark Connect cluster (``[[engine]]``); routes name it with ``engine = "<name>"``. The
    fleet's default engine is ``ICEFEED_SPARK_URL`` (name ``default``)."""

    name: str
    url: str  # sc://host:port[/;param=value…] without a token: it comes from token_file / token_env
    token_file: Path | None = None  # re-read before every new session (a mounted, rotated secret)
    token_env: str | None = None
    user_id: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)  # sent as gRPC metadata (gateways)
    dialect: Literal["spark", "sail"] | None = None  # default: ICEFEED_SPARK_DIALECT
    max_batches_in_flight: Annotated[int, Field(ge=1, le=64)] = 2

    @field_validator("name")
    @classmethod
    def _engine_name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("must match [a-z][a-z0-9_]* (lower case, at most 63 characters)")
        if value == "default":
            raise ValueError("'default' is the engine of ICEFEED_SPARK_URL; give this one another name")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith("sc://") or not value.removeprefix("sc://").split("/", 1)[0]:
            raise ValueError("must be a Spark Connect URL: sc://host:port[/;param=value…]")
        params = value.partition("/;")[2]
        for part in filter(None, params.split(";")):
            name = part.partition("=")[0].strip().lower()
            if name in ENGINE_OWN_PARAMS:
                raise ValueError(f"must not set {name!r}: use the engine's {ENGINE_OWN_PARAMS[name]} key")
        return value

    @field_validator("token_env")
    @classmethod
    def _token_env(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME.match(value):
            raise ValueError("must be an environment variable name ([A-Z_][A-Z0-9_]*)")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not HEADER.match(name) or name in ENGINE_OWN_PARAMS or name in ("authorization", "use_ssl"):
                raise ValueError(f"{name!r}: not a header icefeed may send (lower-case letters, digits and '-')")
            if ";" in text or "\n" in text:
                raise ValueError(f"{name!r}: a header value cannot hold ';' or a line break")
        return value

    @model_validator(mode="after")
    def _one_token_source(self) -> Engine:
        if self.token_file is not None and self.token_env is not None:
            raise ValueError("give the token in token_file or in token_env, not both")
        return self


class _IngestionBase(_Model):
    name: str
    bucket: str
    prefix: str = ""
    suffix: str = ""
    table: str
    location: str
    schema_policy: Literal["evolve", "rescue", "strict"] = "evolve"
    on_overwrite: Literal["append", "replace"] = "append"
    schema_hints: dict[str, str] = Field(default_factory=dict)
    engine: str = "default"  # an [[engine]] name; "default": ICEFEED_SPARK_URL
    # "fail": one bad record fails the file. "quarantine": the good records load and each bad one
    # is written, with where it was and why, under bad_records_location (docs/bad-input.md); a file
    # with more than max_bad_fraction of its records bad fails as a whole.
    bad_records: Literal["fail", "quarantine"] = "fail"
    max_bad_fraction: Annotated[float, Field(ge=0, le=1)] = 0.1
    bad_records_location: str | None = None  # s3://bucket/prefix (required with "quarantine")
    # The text's character set for JSON and CSV (decoded by the worker): any Python codec name
    # ("utf-8", "latin-1", "utf-16" with its BOM, ...).
    encoding: str = "utf-8"
    if TYPE_CHECKING:  # declared by each format's subclass (a Literal and that format's options)
        format: str
        options: JsonOptions | CsvOptions | ParquetOptions

    @field_validator("schema_hints")
    @classmethod
    def _hints(cls, value: dict[str, str]) -> dict[str, str]:
        for column, text in value.items():
            if not column or reserved_name(column) is not None:
                raise ValueError(f"cannot hint the reserved column {column!r} (names compare ignoring case)")
            try:
                parse_type(text)
            except SchemaError as exc:
                raise ValueError(f"{column}: {exc}") from None
        return value

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        try:
            return codecs.lookup(value).name
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None

    @field_validator("bad_records_location")
    @classmethod
    def _bad_location(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("s3://") or not LOCATION.match(value):
            raise ValueError("must be an S3 URL like s3://bucket/prefix (letters, digits, . _ - / = @ only)")
        if unsafe_key(value.rstrip("/")[len("s3://") :]) is not None:
            raise ValueError("must not contain '//', '.' or '..' path segments")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _quarantine_needs(self) -> _IngestionBase:
        if self.bad_records == "quarantine":
            if self.bad_records_location is None:
                raise ValueError('bad_records = "quarantine" needs bad_records_location = "s3://bucket/prefix"')
            if self.format == "parquet" or self.whole_file_json:
                raise ValueError('bad_records = "quarantine" is for JSON lines and CSV (not parquet, not multiline)')
        if self.encoding != "utf-8" and self.format == "parquet":
            raise ValueError("encoding is for JSON and CSV (text the worker decodes)")
        if self.worker_decodes and isinstance(self.options, CsvOptions) and self.options.multiline:
            raise ValueError("a CSV route the worker decodes (bad_records, encoding) reads one record per line")
        return self

    @property
    def text_rule(self) -> TextRule:
        """How the worker decodes this route's text: its encoding, its bad-records mode and, for
        CSV, its reader options."""
        csv = None
        if isinstance(self.options, CsvOptions):
            o = self.options
            csv = CsvShape(o.header, o.delimiter, o.quote, o.escape, o.infer_schema)
        quarantine = self.bad_records == "quarantine"
        return TextRule(self.encoding, quarantine, self.max_bad_fraction, self.hint_types(), csv)

    @property
    def worker_decodes(self) -> bool:
        """Whether every file of this route is decoded by the worker, whatever its size (up to
        the decode limits): its bad records are quarantined or its text is not UTF-8."""
        return self.bad_records == "quarantine" or self.encoding != "utf-8"

    @property
    def whole_file_json(self) -> bool:
        return self.format == "json" and isinstance(self.options, JsonOptions) and self.options.multiline

    def hint_types(self) -> dict[str, DataType]:
        return {column: parse_type(text) for column, text in self.schema_hints.items()}

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("must match [a-z][a-z0-9_]* (lower case, at most 63 characters)")
        return value

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not BUCKET.match(value):
            raise ValueError("not a valid S3 bucket name")
        return value

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) != 3 or not all(PART.match(p) for p in parts):
            raise ValueError("must be catalog.database.table, each part [A-Za-z_][A-Za-z0-9_]*")
        return value

    @field_validator("location")
    @classmethod
    def _location(cls, value: str) -> str:
        if not LOCATION.match(value):
            raise ValueError("must be a URL like s3://bucket/path (letters, digits, . _ - / = @ only)")
        scheme, rest = value.rstrip("/").split("://", 1)
        if unsafe_key(rest[1:] if scheme == "file" else rest) is not None:
            raise ValueError("must not contain '//', '.' or '..' path segments (engines rewrite such paths)")
        return value.rstrip("/")

    @property
    def rule(self) -> RouteRule:
        return RouteRule(self.name, self.bucket, self.prefix, self.suffix)

    @property
    def database(self) -> str:
        return self.table.split(".")[1]

    def reader_options(self) -> dict[str, str]:
        """Spark DataFrameReader options for this format (gzip is detected from a .gz suffix)."""
        opts = self.options
        if isinstance(opts, JsonOptions):
            return {"multiLine": str(opts.multiline).lower()}
        if isinstance(opts, CsvOptions):
            return {
                "header": str(opts.header).lower(),
                "sep": opts.delimiter,
                "quote": opts.quote,
                "escape": opts.escape,
                "inferSchema": str(opts.infer_schema).lower(),
                "multiLine": str(opts.multiline).lower(),
            }
        return {}


class JsonIngestion(_IngestionBase):
    format: Literal["json"]
    options: JsonOptions = JsonOptions()


class CsvIngestion(_IngestionBase):
    format: Literal["csv"]
    options: CsvOptions = CsvOptions()


class ParquetIngestion(_IngestionBase):
    format: Literal["parquet"]
    options: ParquetOptions = ParquetOptions()


class MaintenanceOverrides(_Model):
    """One table's maintenance settings; a key left out takes the ``[maintenance]`` default."""

    enabled: bool | None = None
    check_interval_s: Annotated[int, Field(ge=1, le=7 * 86400)] | None = None
    min_snapshots_to_keep: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    max_snapshot_age_s: Annotated[int, Field(ge=0)] | None = None
    target_file_size_mb: Annotated[int, Field(ge=1, le=4096)] | None = None
    compact_min_files: Annotated[int, Field(ge=2, le=1_000_000)] | None = None
    # The safety age is what keeps an in-flight write's files (written before its commit refers to
    # them) from being taken for orphans: far longer than any write can last.
    orphan_min_age_s: Annotated[int, Field(ge=600)] | None = None
    orphan_interval_s: Annotated[int, Field(ge=60)] | None = None
    metadata_previous_versions: Annotated[int, Field(ge=1, le=10_000)] | None = None
    max_lock_wait_s: Annotated[float, Field(gt=0, le=600)] | None = None

    def values(self) -> dict[str, object]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class Maintenance(MaintenanceOverrides):
    """The ``[maintenance]`` block: defaults for every table, ``tables."c.db.t"`` overrides."""

    tables: dict[str, MaintenanceOverrides] = Field(default_factory=dict)

    def policy(self, table: str) -> MaintenancePolicy:
        base = MaintenancePolicy(**self.values())  # type: ignore[arg-type]
        extra = self.tables.get(table)
        return replace(base, **extra.values()) if extra is not None else base  # type: ignore[arg-type]

    def values(self) -> dict[str, object]:
        return {k: v for k, v in self.model_dump(exclude={"tables"}).items() if v is not None}


AnyIngestion = JsonIngestion | CsvIngestion | ParquetIngestion
Ingestion = Annotated[JsonIngestion | CsvIngestion | ParquetIngestion, Field(discriminator="format")]


class Routes(_Model):
    ingestion: list[Ingestion] = Field(min_length=1)
    engine: list[Engine] = Field(default_factory=list)
    maintenance: Maintenance = Maintenance()

    @model_validator(mode="after")
    def _unique(self) -> Routes:
        names = [i.name for i in self.ingestion]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate ingestion names: {', '.join(dupes)}")
        locations: dict[str, str] = {}
        policies: dict[str, str] = {}
        spellings: dict[str, str] = {}
        for ing in self.ingestion:
            if spellings.setdefault(ing.table.lower(), ing.table) != ing.table:
                raise ValueError(
                    f"tables {spellings[ing.table.lower()]} and {ing.table} differ only in case: catalogs treat "
                    "them as one table; spell it one way"
                )
            if locations.setdefault(ing.table, ing.location) != ing.location:
                raise ValueError(f"table {ing.table} is given two locations: {locations[ing.table]} and {ing.location}")
            if policies.setdefault(ing.table, ing.schema_policy) != ing.schema_policy:
                raise ValueError(
                    f"table {ing.table} is given two schema policies: {policies[ing.table]} and {ing.schema_policy}"
                )
        self._check_engines()
        unknown = sorted(set(self.maintenance.tables) - set(spellings.values()))
        if unknown:
            raise ValueError(
                f"maintenance.tables: {', '.join(unknown)} is not a table of any ingestion "
                f"(tables: {', '.join(sorted(set(spellings.values())))})"
            )
        clashes = overlapping_pairs([i.rule for i in self.ingestion])
        if clashes:
            a, b = clashes[0]
            raise ValueError(
                f"ingestions {a.name!r} and {b.name!r} overlap on bucket {a.bucket!r}: a key could "
                "match both prefix/suffix filters (S3 rejects overlapping notification filters)"
            )
        return self

    def _check_engines(self) -> None:
        names = [e.name for e in self.engine]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate engine names: {', '.join(dupes)}")
        known = {"default", *names}
        engines: dict[str, str] = {}
        for ing in self.ingestion:
            if ing.engine not in known:
                raise ValueError(
                    f"ingestion {ing.name!r}: engine {ing.engine!r} is not defined "
                    f"(engines: {', '.join(sorted(known))}; add an [[engine]] block)"
                )
            if engines.setdefault(ing.table, ing.engine) != ing.engine:
                raise ValueError(
                    f"table {ing.table} is written by two engines: {engines[ing.table]} and {ing.engine} "
                    "(one table, one engine: its commits are serialized on one cluster)"
                )

    def engine_of(self, table: str) -> str:
        """The engine that writes ``table`` ("default" for ICEFEED_SPARK_URL)."""
        return self._engines[table]

    def by_name(self, name: str) -> AnyIngestion:
        return self._by_name[name]

    def dialect_of(self, table: str, default: str) -> str:
        """The dialect of the engine writing ``table``: its block's ``dialect``, else ``default``
        (ICEFEED_SPARK_DIALECT); ``default`` for a table no route names."""
        block = self._engine_blocks.get(self._engines.get(table, ""))
        return block.dialect if block is not None and block.dialect is not None else default

    def dialects(self, default: str) -> set[str]:
        """Every dialect the routes' tables are written with."""
        return {self.dialect_of(t, default) for t in self._engines}

    @functools.cached_property
    def _engine_blocks(self) -> dict[str, Engine]:
        return {e.name: e for e in self.engine}

    @functools.cached_property
    def _engines(self) -> dict[str, str]:
        return {ing.table: ing.engine for ing in self.ingestion}

    @functools.cached_property
    def _by_name(self) -> dict[str, AnyIngestion]:
        return {ing.name: ing for ing in self.ingestion}

    @property
    def rules(self) -> list[RouteRule]:
        return [i.rule for i in self.ingestion]

    @property
    def tables(self) -> list[str]:
        """Every table the routes write, once, in the order first named."""
        return list(dict.fromkeys(i.table for i in self.ingestion))


def _where(loc: tuple[int | str, ...], raw: dict[str, object]) -> str:
    parts: list[str] = []
    items = raw.get("ingestion")
    for i, part in enumerate(loc):
        if isinstance(part, int) and i > 0 and loc[i - 1] == "ingestion":
            label = f"ingestion[{part}]"
            if isinstance(items, list) and part < len(items) and isinstance(items[part], dict):
                name = items[part].get("name")
                if name:
                    label += f" ({name})"
            parts[-1] = label
        elif i > 0 and isinstance(loc[i - 1], int) and part in ("json", "csv", "parquet"):
            continue
        else:
            parts.append(str(part))
    return ".".join(parts) or "(top level)"


def parse_routes(text: str, source: str = "routes") -> Routes:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        return Routes.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{_where(err['loc'], raw)}: {err['msg']}" for err in exc.errors()]
        raise ConfigError(f"{source}: invalid routes:\n  " + "\n  ".join(lines)) from None


def load_routes(path: Path) -> Routes:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"routes file {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"routes file {path}: cannot read it ({exc.strerror}); set ICEFEED_ROUTES_FILE") from None
    return parse_routes(text, str(path))
