"""Iceberg tables written through Spark Connect: one job and one commit per batch.

pyspark calls block, so they run in worker threads (``asyncio.to_thread``) behind a semaphore.
One Spark Connect session serves the whole worker and is recreated after the server loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any
from uuid import UUID

from worker.adapters.dialects import dialect_for
from worker.adapters.dialects import read_path as read_path  # re-exported
from worker.adapters.local_read import Decoded
from worker.domain.batching import FileWork
from worker.domain.errors import ConfigError, DataError, IcefeedError, classify_engine_error
from worker.domain.policy import RESCUED_COLUMN, Policy, data_columns, plan_batch
from worker.domain.schema import STRING, Array, DataType, Field, Map, Struct, from_spark_json, to_ddl, type_string
from worker.ports import Reader, WriteRequest, WriteResult
from worker.routes import LOCATION, PART
from worker.settings import SparkSettings
from worker.sql import queries


def quote_table(table: str) -> str:
    parts = table.split(".")
    if len(parts) != 3 or not all(PART.match(p) for p in parts):
        raise ValueError(f"invalid table name {table!r}")
    return ".".join(f"`{p}`" for p in parts)


def balanced_union(frames: list[Any]) -> Any:
    """Union many frames as a balanced tree: a left-deep chain of a few hundred unions overflowed
    the client's recursion limit at 500 files and crashed Sail from ~280 (measured)."""
    while len(frames) > 1:
        paired = [a.unionByName(b) for a, b in zip(frames[0::2], frames[1::2], strict=False)]
        frames = paired + (frames[-1:] if len(frames) % 2 else [])
    return frames[0]


def hex_literal(value: str) -> str:
    """A Spark SQL expression for a string, safe for any content (engines lack bound parameters)."""
    return f"decode(unhex('{value.encode().hex().upper()}'), 'UTF-8')"


def hinted(column: Any, have: str, want: DataType | None) -> Any:
    """A column cast to its hinted type; nested values hinted as string become their JSON text."""
    from pyspark.sql import functions as F  # noqa: N812

    if want is None:
        return column
    if want == STRING and have.startswith(("struct<", "array<", "map<")):
        return F.to_json(column)
    return column.cast(type_string(want))


def quote_column(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def conform(expr: Any, have: DataType, want: DataType) -> Any:
    """An expression turning a value of type ``have`` into type ``want`` field by field, by NAME.

    Engines cast structs by position when the field counts match (observed on Sail), which
    would silently swap same-typed fields; so structs are rebuilt by name, arrays and maps
    element-wise, and only primitives are cast."""
    from pyspark.sql import functions as F  # noqa: N812

    if have == want:
        return expr
    if isinstance(want, Struct):
        fields = []
        for wf in want.fields:
            hf = have.field(wf.name) if isinstance(have, Struct) else None
            if hf is None:
                fields.append(F.lit(None).cast(type_string(wf.type)).alias(wf.name))
            else:
                fields.append(conform(expr.getField(wf.name), hf.type, wf.type).alias(wf.name))
        return F.when(expr.isNull(), F.lit(None).cast(type_string(want))).otherwise(F.struct(*fields))
    if isinstance(want, Array) and isinstance(have, Array):
        return F.transform(expr, lambda x: conform(x, have.element, want.element))
    if isinstance(want, Map) and isinstance(have, Map):
        return F.transform_values(expr, lambda _k, v: conform(v, have.value, want.value))
    return expr.cast(type_string(want))


def conform_frame(
    df: Any, have: Struct, want: Struct, rescued: tuple[str, ...], with_rescue: bool, keep: tuple[str, ...] = ()
) -> Any:
    """Select ``want``'s columns from ``df`` (missing ones as nulls); with ``with_rescue`` the
    columns in ``rescued`` go, with their original values, into one JSON column. Columns in
    ``keep`` follow unchanged."""
    from pyspark.sql import functions as F  # noqa: N812

    columns = []
    for wf in want.fields:
        hf = have.field(wf.name)
        if hf is None or wf.name in rescued:
            columns.append(F.lit(None).cast(type_string(wf.type)).alias(wf.name))
        else:
            columns.append(conform(F.col(quote_column(wf.name)), hf.type, wf.type).alias(wf.name))
    if with_rescue:
        if rescued:
            text = F.to_json(F.struct(*(F.col(quote_column(c)).alias(c) for c in rescued)))
            payload = F.when(text == F.lit("{}"), F.lit(None).cast("string")).otherwise(text)  # all null: none
        else:
            payload = F.lit(None).cast("string")
        columns.append(payload.alias(RESCUED_COLUMN))
    return df.select(*columns, *(F.col(quote_column(c)) for c in keep))


def with_hints(schema: Struct, hints: dict[str, DataType]) -> Struct:
    """A file's schema once its hinted columns are cast (what :func:`hinted` produces)."""
    return Struct(tuple(Field(f.name, hints.get(f.name, f.type), f.nullable) for f in schema.fields))


def batch_tag(batch_id: UUID) -> str:
    return f"icefeed-batch-{batch_id}"


def to_icefeed_error(exc: BaseException) -> IcefeedError:
    if isinstance(exc, IcefeedError):
        return exc
    if type(exc).__name__ == "RetriesExceeded":  # the client gave up retrying: what it last saw decides
        if exc.__cause__ is not None:
            return to_icefeed_error(exc.__cause__)
        return classify_engine_error(type(exc).__name__, str(exc), "UNAVAILABLE")
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


#: Arrow bytes one write sends inside its plan (the append's own gRPC message, limited to 128 MiB
#: by the Python client and by Apache Spark's server): beyond it, rows go ahead in pieces.
INLINE_BYTES = 32 * 1024 * 1024
#: Arrow bytes per piece: one message each, well under the limit with the protocol's overhead.
PIECE_BYTES = 32 * 1024 * 1024


class Staging:
    """Worker-decoded rows of ONE write, on their way to the engine.

    A plan carries local rows inline (a LocalRelation inside the append's request), and a gRPC
    request is limited to 128 MiB: 360 MB of Arrow failed with RESOURCE_EXHAUSTED. Apache Spark's
    client caches a large relation as an artifact (CachedLocalRelation, over
    ``spark.sql.session.localRelationCacheThreshold``), but Sail 0.7 answers that threshold with
    2^31-1 and fails the artifact-status call, and several smaller relations in one plan still add
    up. So, on every engine: up to :data:`INLINE_BYTES` per write travel inline; the rest is sent
    ahead in pieces of :data:`PIECE_BYTES`, each registered as a temporary view of this session
    (one request per piece), and the append's plan only names the views. The append is still one
    job and ONE commit; :meth:`drop` removes the views after it."""

    def __init__(self, spark: Any, batch_id: UUID, inline_bytes: int = INLINE_BYTES, piece_bytes: int = PIECE_BYTES):
        self._spark = spark
        self._prefix = f"icefeed_stage_{batch_id.hex}_"
        self._inline_left = inline_bytes
        self._piece_bytes = piece_bytes
        self.views: list[str] = []

    def frame(self, table: Any) -> Any:
        if table.nbytes <= self._inline_left:
            self._inline_left -= table.nbytes
            return self._spark.createDataFrame(table)
        rows = max(1, table.num_rows * self._piece_bytes // max(1, table.nbytes))
        frames = []
        for offset in range(0, table.num_rows, rows):
            name = f"{self._prefix}{len(self.views)}"
            self._spark.createDataFrame(table.slice(offset, rows)).createOrReplaceTempView(name)
            self.views.append(name)
            frames.append(self._spark.table(name))
        return balanced_union(frames)

    def drop(self) -> None:
        """Free the pieces on the engine (best effort: they also end with the session)."""
        for name in self.views:
            with contextlib.suppress(Exception):
                self._spark.catalog.dropTempView(name)
        self.views.clear()


class SparkSink:
    def __init__(self, settings: SparkSettings, on_reconnect: Callable[[], None] | None = None) -> None:
        self._settings = settings
        self._on_reconnect = on_reconnect
        self._sessions = 0
        self._lock = threading.Lock()
        self._session: Any = None
        self._limit = asyncio.Semaphore(settings.concurrency)
        self._sql = queries("spark.sql")
        self._dialect = dialect_for(settings)  # Sail / Apache Spark, Iceberg / Parquet differences

    # -- session -----------------------------------------------------------------------------

    def _spark(self) -> Any:
        with self._lock:
            if self._session is None:
                from pyspark.sql import SparkSession
                from pyspark.sql.connect.client.retries import DefaultPolicy

                # create() makes no call; the retry policy must be in place before the first one
                # (the client's default retries for ~10 minutes against an unreachable server).
                session = SparkSession.builder.remote(self._settings.url.get_secret_value()).create()
                session.client.set_retry_policies(
                    [DefaultPolicy(max_retries=self._settings.client_retries, max_backoff=5000)]
                )
                session.conf.set("spark.sql.session.timeZone", self._settings.session_timezone)
                self._session = session
                if self._sessions and self._on_reconnect is not None:
                    self._on_reconnect()  # a session after a lost one
                self._sessions += 1
            return self._session

    def _forget_session(self) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):  # the server may already be gone
                session.stop()

    def close(self) -> None:
        self._forget_session()

    async def _run(self, fn: Any, *args: Any) -> Any:
        async with self._limit:
            return await self._call(fn, *args)

    async def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except Exception as exc:
            error = to_icefeed_error(exc)
            if error.error_class in ("SparkUnavailable", "SparkSessionLost"):
                # Stopping a session talks to the server (with retries): never on the event loop.
                await asyncio.to_thread(self._forget_session)
            raise error from exc

    # -- blocking work (worker threads) ------------------------------------------------------

    def _table_schema(self, spark: Any, table: str) -> Struct | None:
        if not spark.catalog.tableExists(table):
            return None
        self._dialect.refresh(spark, table)
        return data_columns(from_spark_json(spark.table(table).schema.json()))

    def _create_table(self, spark: Any, req: WriteRequest, target: Struct) -> None:
        if not LOCATION.match(req.location):
            raise ValueError(f"invalid table location {req.location!r}")
        columns = to_ddl(target)
        extra = f", `{RESCUED_COLUMN}` STRING" if req.policy is Policy.RESCUE else ""
        spark.sql(
            self._sql[self._dialect.create_block].format(
                table=quote_table(req.table),
                columns=(columns + ", ") if columns else "",
                extra=extra,
                location=req.location,
            )
        )

    def _read(self, spark: Any, reader: Reader, f: FileWork) -> Any:
        from pyspark.sql import functions as F  # noqa: N812

        path = self._dialect.source_path(f.bucket, f.key)
        options = self._dialect.read_options(reader.format, reader.options)
        df = spark.read.format(reader.format).options(**options).load(path)
        if not reader.hints:
            return df
        if reader.format == "csv":
            # Cast from the text, not from an inferred type (a hinted zip code keeps its zeros).
            inferred = {c: t for c, t in df.dtypes}
            raw = spark.read.format("csv").options(**{**options, "inferSchema": "false"}).load(path)
            return raw.select(
                *(
                    F.col(quote_column(c))
                    .cast(type_string(reader.hints[c]) if c in reader.hints else inferred[c])
                    .alias(c)
                    for c in raw.columns
                )
            )
        kinds = dict(df.dtypes)
        return df.select(*(hinted(F.col(quote_column(c)), kinds[c], reader.hints.get(c)).alias(c) for c in df.columns))

    def _delete_rows(self, spark: Any, req: WriteRequest, sources: list[str]) -> None:
        """on_overwrite = replace: remove the rows of older versions of these keys (every batch
        but this one, so a retried batch never deletes its own rows). Values travel hex-encoded:
        no key can break out of the statement."""
        if not self._dialect.supports_delete:  # routes asking for it are refused at start
            raise ConfigError(f"{req.table}: on_overwrite = replace needs a table format that can DELETE")
        statement = self._sql["delete_sources"].format(
            table=quote_table(req.table),
            sources=", ".join(hex_literal(s) for s in sources),
            batch=hex_literal(str(req.batch_id)),
        )
        spark.sql(statement)

    def _write(self, req: WriteRequest) -> WriteResult:
        from pyspark.sql import functions as F  # noqa: N812

        spark = self._spark()
        table = self._table_schema(spark, req.table)
        frames: dict[int, Any] = {}
        schemas: dict[int, Struct] = {}
        unreadable: dict[int, IcefeedError] = {}
        local: dict[int, Decoded] = {}
        for f in req.files:
            # Inference reads the file: a file that cannot be parsed is singled out here, by name,
            # instead of failing (and bisecting) the whole batch.
            decoded = req.decoded.get(f.file_id)
            try:
                if isinstance(decoded, IcefeedError):
                    raise decoded
                if decoded is not None:  # decoded by the worker: its schema is known, no round trip
                    local[f.file_id] = decoded
                    hints = req.readers[f.ingestion].hints
                    schemas[f.file_id] = data_columns(with_hints(decoded.schema, hints))
                    continue
                df = self._read(spark, req.readers[f.ingestion], f)
                schemas[f.file_id] = data_columns(from_spark_json(df.schema.json()))
                frames[f.file_id] = df
            except Exception as exc:  # classified below; what is not the file's fault re-raises
                error = to_icefeed_error(exc)
                if not isinstance(error, DataError):
                    raise
                unreadable[f.file_id] = error
        readable = [(f.file_id, schemas[f.file_id]) for f in req.files if f.file_id in schemas]
        plan = plan_batch(req.policy, table, readable, req.approved)
        if not plan.loaded:
            return WriteResult({}, plan, schemas, req.replace, unreadable, frozenset(local))
        if table is None:
            self._create_table(spark, req, plan.target)
        replaced = [f.source_file for f in req.files if f.file_id in req.replace and f.file_id in plan.loaded]
        for statement in self._dialect.evolution_statements(quote_table(req.table), plan):  # existing table
            spark.sql(statement)
        if replaced and table is not None:
            self._delete_rows(spark, req, replaced)
        aligned = []
        groups: dict[tuple[str, Struct, tuple[str, ...]], list[FileWork]] = {}
        for f in req.files:
            decision = plan.decisions.get(f.file_id)
            if decision is None or not decision.load:
                continue
            if f.file_id in local:  # worker-read files of one shape travel as ONE Arrow relation
                groups.setdefault((f.ingestion, local[f.file_id].schema, decision.rescued), []).append(f)
                continue
            df = conform_frame(frames[f.file_id], schemas[f.file_id], plan.target, decision.rescued, plan.rescues)
            aligned.append(df.withColumn("_source_file", F.lit(f.source_file)))
        staging = Staging(spark, req.batch_id)  # large worker-read rows go ahead in pieces
        for (ingestion, schema, rescued), members in groups.items():
            df = self._local_frame(
                spark, [(f, local[f.file_id]) for f in members], req.readers[ingestion], schema, staging
            )
            if df is not None:
                have = data_columns(with_hints(schema, req.readers[ingestion].hints))
                aligned.append(conform_frame(df, have, plan.target, rescued, plan.rescues, keep=("_source_file",)))
        if not aligned:  # only empty files: nothing to append
            return WriteResult({}, plan, schemas, req.replace, unreadable, frozenset(local))
        union = balanced_union(aligned)
        out = (
            union.withColumn("_batch_id", F.lit(str(req.batch_id)))
            .withColumn("_ingested_at", F.current_timestamp())
            .coalesce(req.output_files)
        )
        tag = batch_tag(req.batch_id)
        spark.addTag(tag)
        if req.on_append is not None:
            req.on_append()
        try:
            self._dialect.append(out, req.table)
        finally:
            spark.removeTag(tag)
            staging.drop()
        loaded = set(plan.loaded)
        if any(f.file_id in frames for f in req.files if f.file_id in loaded):
            counts = self._counts(spark, req.table, req.batch_id)  # the engine read some: ask the table
        else:
            # Only worker-decoded files: the commit holds exactly the Arrow rows sent. Reading them
            # back would scan every manifest of the table (one more per commit: measured to make each
            # commit slower as the table's history grows).
            counts = {}
            for f in req.files:
                if f.file_id in loaded and f.file_id in local and local[f.file_id].rows:
                    counts[f.source_file] = counts.get(f.source_file, 0) + local[f.file_id].rows
        return WriteResult(counts, plan, schemas, req.replace, unreadable, frozenset(local))

    def _local_frame(
        self,
        spark: Any,
        files: list[tuple[FileWork, Decoded]],
        reader: Reader,
        schema: Struct,
        staging: Staging | None = None,
    ) -> Any:
        """One DataFrame over worker-decoded files of one shape, with ``_source_file`` and the
        route's hints applied; None when they hold no rows. With ``staging`` (one per write), rows
        beyond what one plan can carry reach the engine in pieces under the gRPC message limit."""
        import pyarrow as pa
        from pyspark.sql import functions as F  # noqa: N812

        tables = [d.table("_source_file", f.source_file) for f, d in files if d.rows]
        if not tables:
            return None
        table = pa.concat_tables(tables)
        del tables
        df = staging.frame(table) if staging is not None else spark.createDataFrame(table)
        if not reader.hints:
            return df
        return df.select(
            *(
                hinted(F.col(quote_column(c.name)), type_string(c.type), reader.hints.get(c.name)).alias(c.name)
                for c in schema.fields
            ),
            F.col("_source_file"),
        )

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
        self._dialect.refresh(spark, table)  # another session (a dead worker's) may have committed
        return self._counts(spark, table, batch_id)

    def _current_schema(self, table: str) -> Struct | None:
        return self._table_schema(self._spark(), table)

    def _interrupt(self, batch_id: UUID) -> None:
        with self._lock:
            session = self._session
        if session is not None:
            session.interruptTag(batch_tag(batch_id))

    # -- async API -------------------------------------------------------------------------

    async def write(self, request: WriteRequest) -> WriteResult:
        """Infer each file's schema, plan the batch under the table's schema policy, create or
        evolve the table, and append the loadable files in ONE commit. Returns the plan and the
        rows per ``_source_file`` read back from the table (files with no rows are absent)."""
        result: WriteResult = await self._run(self._write, request)
        return result

    async def batch_counts(self, table: str, batch_id: UUID) -> dict[str, int]:
        """Rows per ``_source_file`` carrying ``_batch_id``: empty means the batch never committed."""
        result: dict[str, int] = await self._run(self._probe, table, batch_id)
        return result

    async def run_sql(self, statement: str) -> None:
        """One statement on the shared session (operator commands)."""
        await self._run(lambda: self._spark().sql(statement).collect())

    def run_sql_blocking(self, statement: str) -> None:
        self._spark().sql(statement).collect()

    def _table_status(self, table: str) -> str:
        spark = self._spark()
        if spark.catalog.tableExists(table):
            columns = len(spark.table(table).columns)
            return f"exists ({columns} columns)"
        catalog, database, _ = table.split(".")
        spark.sql(f"SHOW TABLES IN `{catalog}`.`{database}`").collect()  # parts validated by the routes
        return "database reachable; the table is created on the first load"

    async def table_status(self, table: str) -> str:
        """For `icefeed check`: the table exists, or its database answers (read-only)."""
        result: str = await self._run(self._table_status, table)
        return result

    async def table_schema(self, table: str) -> Struct | None:
        """The table's data columns (without icefeed's own), or None if it does not exist."""
        result: Struct | None = await self._run(self._current_schema, table)
        return result

    async def interrupt(self, batch_id: UUID) -> None:
        with contextlib.suppress(Exception):  # best effort during shutdown
            await asyncio.to_thread(self._interrupt, batch_id)

    async def ping(self) -> str:
        """Round-trip to the server; returns its Spark version. Not behind the jobs' semaphore: a
        busy worker still answers its readiness probe."""
        result: str = await self._call(self._ping)
        return result

    def _ping(self) -> str:
        spark = self._spark()
        spark.conf.get("spark.sql.session.timeZone")  # a round-trip: ``version`` is cached client-side
        return str(spark.version)
