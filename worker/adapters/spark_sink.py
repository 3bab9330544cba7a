"""Iceberg tables written through Spark Connect: one job and one commit per batch.

pyspark calls block, so they run in worker threads (``asyncio.to_thread``) behind a semaphore.
One shared Spark Connect session serves probes, schema reads and operator statements, and is
recreated after the server loses it. A fenced write runs in a session of its own, opened by
:meth:`SparkSink.open_session` under an id the ledger records, and released after the write; any
worker can :meth:`SparkSink.stop` that session by its id (docs/engines.md).

A write is two calls with the schema decision in between, made by the caller: :meth:`SparkSink.infer`
reads each file's schema (and the table's), the caller plans the batch (``plan_batch``), and
:meth:`SparkSink.append` creates or evolves the table and appends the loadable files in ONE
commit, then releases the write's session. :meth:`SparkSink.sample` shows an inferred file's first
rows (``icefeed preview``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID

from worker.adapters.dialects import dialect_for
from worker.adapters.dialects import read_path as read_path  # re-exported
from worker.adapters.local_read import Decoded
from worker.domain.batching import FileWork
from worker.domain.errors import ConfigError, DataError, IcefeedError, TransientError, classify_engine_error
from worker.domain.policy import RESCUED_COLUMN, BatchPlan, Policy, data_columns
from worker.domain.schema import STRING, Array, DataType, Field, Map, Struct, from_spark_json, to_ddl, type_string
from worker.ports import Inference, Reader, WriteRequest
from worker.routes import LOCATION, PART
from worker.settings import SparkSettings, spark_url_params
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


def session_url(url: str, session_id: str) -> str:
    """The Spark Connect URL of session ``session_id`` on the server of ``url``
    (``sc://host:port`` with or without ``/;key=value`` parameters)."""
    if "session_id" in spark_url_params(url):  # refused by the settings too
        raise ValueError("the Spark Connect URL already names a session")
    str(UUID(session_id))  # the client and Apache Spark accept UUIDs only
    base, _, params = url.partition("/;")
    parts = [p for p in params.split(";") if p]
    return base.rstrip("/") + "/;" + ";".join([*parts, f"session_id={session_id}"])


# The engine's answer to a request in a session it has released: Apache Spark
# (INVALID_HANDLE.SESSION_CLOSED) and Sail ("session … is not running").
_SESSION_CLOSED = ("session_closed", "is not running")


def session_closed(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(n in text for n in _SESSION_CLOSED)


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
    message = str(getattr(exc, "getMessage", lambda: str(exc))() or exc).strip()
    return classify_engine_error(type(exc).__name__, with_causes(message), grpc_code)


def with_causes(message: str, limit: int = 2000) -> str:
    """An engine message cut to ``limit`` characters, followed by the JVM's ``Caused by:`` lines
    that the cut left out: Apache Spark names the root cause there, after a long stack trace (a
    ragged CSV row: "[FAILED_READ_FILE.NO_HINT] …" first, "Malformed records are detected" as the
    cause), and the cause is what classifies the error."""
    head = message[:limit]
    causes = [line.strip() for line in message[limit:].splitlines() if line.strip().startswith("Caused by:")]
    return head if not causes else head + "\n…\n" + "\n".join(c[:300] for c in causes[:5])


DEFAULT_SPARK_CONNECT_PORT = 15002


def reachable(url: str, timeout_s: float = 5.0) -> None:
    """Connect to the Spark Connect port once: a refused or unroutable address is reported at
    once as SparkUnavailable."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or DEFAULT_SPARK_CONNECT_PORT
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise TransientError(
            f"Spark Connect unavailable: cannot connect to {host}:{port} ({reason})", error_class="SparkUnavailable"
        ) from None


@dataclass(eq=False)
class _Read:
    """What :meth:`SparkSink.infer` read for one batch, kept for its append (or sample)."""

    spark: Any
    frames: dict[int, Any] = field(default_factory=dict)  # engine-read files
    local: dict[int, Decoded] = field(default_factory=dict)  # worker-decoded files
    schemas: dict[int, Struct] = field(default_factory=dict)


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
    """``fail_fast``: check that the server's port answers before opening the shared session
    (operator commands report "cluster unreachable" in seconds, not after the client's retries).
    ``on_append(batch_id)``: told from the writing thread as an append is handed to the engine
    (the test-only fault point ``after_write_start``, worker/faults.py)."""

    def __init__(
        self,
        settings: SparkSettings,
        on_reconnect: Callable[[], None] | None = None,
        fail_fast: bool = False,
        on_append: Callable[[UUID], None] | None = None,
        token: Callable[[], str | None] | None = None,
        on_secret: Callable[[str], None] | None = None,
    ) -> None:
        """``token``: where the bearer token comes from when it is not in the URL (an engine's
        token file or variable), asked again before every new session; ``on_secret`` is told each
        token read (the redactor masks it from then on)."""
        self._token = token
        self._on_secret = on_secret
        self._settings = settings
        self._on_reconnect = on_reconnect
        self._on_append = on_append  # called (from the writing thread) as a batch's append starts
        self._fail_fast = fail_fast
        self._reads: dict[UUID, _Read] = {}  # by batch: inferred, not appended yet
        self._sessions = 0
        self._lock = threading.Lock()
        self._session: Any = None
        self._writes: dict[str, Any] = {}  # session id -> the session of one fenced write
        self._limit = asyncio.Semaphore(settings.concurrency)
        self._busy = 0  # calls under way (the shared session is not idle while one runs)
        self._last_used = time.monotonic()
        self._sql = queries("spark.sql")
        self._dialect = dialect_for(settings)  # Sail / Apache Spark, Iceberg / Parquet differences

    # -- session -----------------------------------------------------------------------------

    def _connect(self, session_id: str = "") -> Any:
        """A new client (no call made yet): the shared session, or session ``session_id``."""
        from pyspark.sql import SparkSession
        from pyspark.sql.connect.client.retries import DefaultPolicy

        url = self._url()
        if self._fail_fast:
            reachable(url)
        if session_id:
            # Not builder.create(): that makes the new session pyspark's process-wide default and
            # active one, whose client pyspark then uses for its own calls after this session's
            # channel is closed ("Cannot invoke RPC on closed channel").
            from pyspark.sql.connect.session import SparkSession as ConnectSession

            session = ConnectSession(connection=session_url(url, session_id))
        else:
            session = SparkSession.builder.remote(url).create()
        quiet(session)
        # create() makes no call; the retry policy must be in place before the first one
        # (the client's default retries for ~10 minutes against an unreachable server).
        session.client.set_retry_policies([DefaultPolicy(max_retries=self._settings.client_retries, max_backoff=5000)])
        return session

    def _url(self) -> str:
        url = self._settings.url.get_secret_value()
        token = self._token() if self._token is not None else None
        if not token:
            return url
        if self._on_secret is not None:
            self._on_secret(token)
        base, _, params = url.partition("/;")
        parts = [p for p in params.split(";") if p]
        return base.rstrip("/") + "/;" + ";".join([*parts, f"token={token}"])

    def _spark(self) -> Any:
        with self._lock:
            if self._session is None:
                session = self._connect()
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

    @contextlib.contextmanager
    def _using(self) -> Iterator[None]:
        with self._lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1
                self._last_used = time.monotonic()

    def close_idle(self, idle_s: float, now: float | None = None) -> bool:
        """Close the shared session when nothing has used this engine for ``idle_s`` seconds and
        no write is open; the next call opens a new one (not counted as a reconnect). True when
        a session was closed."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._session is None or self._busy or self._writes or self._reads or now - self._last_used < idle_s:
                return False
            session, self._session = self._session, None
            self._sessions = 0
        with contextlib.suppress(Exception):  # the server may already be gone
            session.stop()
        return True

    def close(self) -> None:
        with self._lock:
            writes, self._writes = list(self._writes.values()), {}
            self._reads.clear()
        for session in writes:
            _release(session)
        self._forget_session()

    # -- one session per fenced write ------------------------------------------------------

    def _open_session(self, session_id: str) -> None:
        # pyspark's client-side helpers (DDL parsing, its debugging switch) use the process's active
        # session: the shared one is that, and is kept alive while write sessions come and go.
        self._spark()
        session = self._connect(session_id)
        try:
            # A round trip: the server creates the session now, and the client learns the server's
            # own id for it (Apache Spark then refuses the id once released, even if re-created).
            session.conf.set("spark.sql.session.timeZone", self._settings.session_timezone)
        except BaseException:
            _close_channel(session)
            raise
        with self._lock:
            self._writes[session_id] = session

    def _write_session(self, session_id: str) -> Any:
        with self._lock:
            session = self._writes.get(session_id)
        if session is None:  # not opened first (or already released): open it now
            self._open_session(session_id)
            with self._lock:
                session = self._writes[session_id]
        return session

    def _release_write(self, session_id: str) -> None:
        with self._lock:
            session = self._writes.pop(session_id, None)
        if session is not None:
            _release(session)

    def _stop(self, session_id: str) -> bool:
        """Interrupt every operation of session ``session_id`` and release it, from a client of
        its own. True only when the engine confirmed: after the release, the session id is refused
        (Apache Spark and Sail keep closed session ids and reject their reuse)."""
        session = self._connect(session_id)
        try:
            try:
                session.client.interrupt_all()
            except Exception as exc:
                if session_closed(exc):
                    return True  # released before: its operations were removed with it
                raise
            with contextlib.suppress(Exception):  # Spark 4.0 may fail a release racing the interrupt
                session.client.release_session()  # (IllegalStateException) and still close the session
            try:
                session.client.interrupt_all()
            except Exception as exc:  # noqa: BLE001 - the refusal is the confirmation
                return session_closed(exc)
            # The engine took the id again as a new session: it does not fence released ids.
            with contextlib.suppress(Exception):
                session.client.release_session()
            return False
        finally:
            _close_channel(session)

    async def _run(self, fn: Any, *args: Any) -> Any:
        async with self._limit:
            with self._using():
                return await self._call(fn, *args)

    async def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except Exception as exc:
            error = to_icefeed_error(exc)
            if error.error_class == "SparkUnauthenticated" and self._token is not None:
                # The token may have been rotated since the session was made: a new session with
                # the token read again, once, before the error counts (a refused call did nothing).
                await asyncio.to_thread(self._forget_session)
                try:
                    return await asyncio.to_thread(fn, *args)
                except Exception as again:
                    raise to_icefeed_error(again) from again
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

    def _create_table(self, spark: Any, req: WriteRequest, plan: BatchPlan) -> None:
        if not LOCATION.match(req.location):
            raise ValueError(f"invalid table location {req.location!r}")
        columns = to_ddl(plan.target)
        extra = f", `{RESCUED_COLUMN}` STRING" if plan.policy is Policy.RESCUE else ""
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

    def _delete_replaced(self, table: str, sources: list[str], keep_batch: UUID) -> None:
        """on_overwrite = replace, after the append: remove the rows of these keys written by any
        batch but ``keep_batch`` (so it never deletes the new version; idempotent). Values travel
        hex-encoded: no key can break out of the statement."""
        if not sources:
            return
        spark = self._deleting(table, "on_overwrite = replace")
        if spark is None:
            return
        statement = self._sql["delete_sources"].format(
            table=quote_table(table),
            sources=", ".join(hex_literal(s) for s in sources),
            batch=hex_literal(str(keep_batch)),
        )
        spark.sql(statement).collect()

    def _delete_batch_rows(self, table: str, batch_id: UUID, sources: list[str] | None) -> int:
        """Remove the rows carrying ``_batch_id`` (a released batch's late commit), or only those
        of ``sources`` (files whose object changed while the engine read them); the count."""
        spark = self._deleting(table, "removing a batch's rows")
        if spark is None:
            return 0
        values = {"table": quote_table(table), "batch": hex_literal(str(batch_id))}
        count, delete = "count_batch_rows", "delete_batch_rows"
        if sources is not None:
            if not sources:
                return 0
            values["sources"] = ", ".join(hex_literal(s) for s in sources)
            count, delete = "count_batch_source_rows", "delete_batch_source_rows"
        rows = int(spark.sql(self._sql[count].format(**values)).collect()[0][0])
        if rows:
            spark.sql(self._sql[delete].format(**values)).collect()
        return rows

    def _deleting(self, table: str, what: str) -> Any:
        """The shared session, ready to DELETE from ``table``; None when the table does not exist."""
        if not self._dialect.supports_delete:  # replace routes are refused at start
            raise ConfigError(f"{table}: {what} needs a table format that can DELETE (iceberg)")
        spark = self._spark()
        if not spark.catalog.tableExists(table):
            return None
        self._dialect.refresh(spark, table)  # another session's commit must be visible
        return spark

    def _session_for(self, req: WriteRequest) -> Any:
        return self._write_session(req.session_id) if req.session_id else self._spark()

    def _infer(self, req: WriteRequest) -> Inference:
        """Read each file's schema (the engine infers it; a worker-decoded file's is known) and
        the table's. A file that cannot be parsed is singled out here, by name, instead of failing
        (and bisecting) the whole batch. On failure the write's session is released."""
        try:
            spark = self._session_for(req)
            table = self._table_schema(spark, req.table)
            read = _Read(spark)
            unreadable: dict[int, IcefeedError] = {}
            for f in req.files:
                decoded = req.decoded.get(f.file_id)
                try:
                    if isinstance(decoded, IcefeedError):
                        raise decoded
                    if decoded is not None:  # decoded by the worker: its schema is known, no round trip
                        read.local[f.file_id] = decoded
                        hints = req.readers[f.ingestion].hints
                        read.schemas[f.file_id] = with_hints(decoded.schema, hints)  # as read: the plan judges names
                        continue
                    df = self._read(spark, req.readers[f.ingestion], f)
                    read.schemas[f.file_id] = from_spark_json(df.schema.json())
                    read.frames[f.file_id] = df
                except Exception as exc:  # classified below; what is not the file's fault re-raises
                    error = to_icefeed_error(exc)
                    if not isinstance(error, DataError):
                        raise
                    unreadable[f.file_id] = error
        except BaseException:
            if req.session_id:
                self._release_write(req.session_id)
            raise
        with self._lock:
            self._reads[req.batch_id] = read
        return Inference(table, dict(read.schemas), unreadable, frozenset(read.local))

    def _take_read(self, batch_id: UUID) -> _Read:
        with self._lock:
            read = self._reads.pop(batch_id, None)
        if read is None:
            raise TransientError(f"batch {batch_id}: append without inference", error_class="Unknown")
        return read

    def _append(self, req: WriteRequest, plan: BatchPlan) -> dict[str, int]:
        """Create or evolve the table as ``plan`` says and append its loadable files in ONE commit;
        the rows per ``_source_file``. The write's session is released afterwards, whatever the
        outcome."""
        try:
            return self._append_in(self._take_read(req.batch_id), req, plan)
        finally:
            if req.session_id:
                self._release_write(req.session_id)

    def _frame(self, read: _Read, req: WriteRequest, plan: BatchPlan, staging: Staging | None = None) -> Any:
        """The rows the plan loads, as the append writes them (conformed to the target schema,
        hints applied, ``_source_file`` added), before the batch's own columns; None when no file
        holds rows. :meth:`_append_in` writes it; :meth:`_sample` shows it (``icefeed preview``)."""
        from pyspark.sql import functions as F  # noqa: N812

        frames, local, schemas = read.frames, read.local, read.schemas
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
        for (ingestion, schema, rescued), members in groups.items():
            df = self._local_frame(
                read.spark, [(f, local[f.file_id]) for f in members], req.readers[ingestion], schema, staging
            )
            if df is not None:
                have = data_columns(with_hints(schema, req.readers[ingestion].hints))
                aligned.append(conform_frame(df, have, plan.target, rescued, plan.rescues, keep=("_source_file",)))
        return balanced_union(aligned) if aligned else None

    def _append_in(self, read: _Read, req: WriteRequest, plan: BatchPlan) -> dict[str, int]:
        from pyspark.sql import functions as F  # noqa: N812

        spark, frames, local = read.spark, read.frames, read.local
        if not plan.loaded:
            return {}
        if plan.table is None:
            self._create_table(spark, req, plan)
        for statement in self._dialect.evolution_statements(quote_table(req.table), plan):  # existing table
            spark.sql(statement)
        staging = Staging(spark, req.batch_id)  # large worker-read rows go ahead in pieces
        union = self._frame(read, req, plan, staging)
        if union is None:  # only empty files: nothing to append
            return {}
        out = (
            union.withColumn("_batch_id", F.lit(str(req.batch_id)))
            .withColumn("_ingested_at", F.current_timestamp())
            .coalesce(req.output_files)
        )
        if req.may_append is not None and not req.may_append():
            raise TransientError(
                "the batch's lease was not renewed in time before its append (the worker was paused)",
                error_class="FenceExpired",
            )
        tag = batch_tag(req.batch_id)
        spark.addTag(tag)
        if self._on_append is not None:
            self._on_append(req.batch_id)
        try:
            self._dialect.append(out, req.table)
        finally:
            spark.removeTag(tag)
            staging.drop()
        loaded = set(plan.loaded)
        if any(f.file_id in frames for f in req.files if f.file_id in loaded):
            return self._counts(spark, req.table, req.batch_id)  # the engine read some: ask the table
        # Only worker-decoded files: the commit holds exactly the Arrow rows sent. Reading them
        # back would scan every manifest of the table (one more per commit: measured to make each
        # commit slower as the table's history grows).
        counts: dict[str, int] = {}
        for f in req.files:
            if f.file_id in loaded and f.file_id in local and local[f.file_id].rows:
                counts[f.source_file] = counts.get(f.source_file, 0) + local[f.file_id].rows
        return counts

    def _sample(self, req: WriteRequest, plan: BatchPlan, rows: int) -> list[dict[str, Any]]:
        """The first ``rows`` rows of the request's first file as the append would write them
        under ``plan`` (:meth:`_frame`: hints applied, conformed to the target schema), or, when
        the plan does not load it, as read (hints applied); the read :meth:`_infer` kept is let go."""
        read = self._take_read(req.batch_id)
        f = req.files[0]
        decision = plan.decisions.get(f.file_id)
        if decision is not None and decision.load:
            df = self._frame(read, replace(req, files=[f]), plan)
        elif f.file_id in read.local:
            decoded = read.local[f.file_id]
            df = self._local_frame(read.spark, [(f, decoded)], req.readers[f.ingestion], decoded.schema)
        else:
            df = read.frames.get(f.file_id)
        if df is None or not rows:
            return []
        if "_source_file" in df.columns:
            df = df.drop("_source_file")
        return [r.asDict(recursive=True) for r in df.limit(rows).collect()]

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
            sessions = [s for s in (self._session, *self._writes.values()) if s is not None]
        for session in sessions:
            with contextlib.suppress(Exception):
                session.interruptTag(batch_tag(batch_id))

    # -- async API -------------------------------------------------------------------------

    async def infer(self, request: WriteRequest) -> Inference:
        """Read each file's schema (worker-decoded files: already known) and the table's; files
        the engine cannot parse are reported, not raised. The read is kept for :meth:`append`
        (or :meth:`sample`). With ``request.session_id`` it runs in that session (see
        :meth:`open_session`), which is released if inference fails."""
        if not request.session_id:
            result: Inference = await self._run(self._infer, request)
            return result
        inferred: Inference = await self._in_write_session(self._infer, request)
        return inferred

    async def append(self, request: WriteRequest, plan: BatchPlan) -> dict[str, int]:
        """Create or evolve the table and append the files ``plan`` loads in ONE commit, in the
        session :meth:`infer` used; rows per ``_source_file`` (files with no rows are absent).
        Called after every :meth:`infer` (even when nothing loads): it releases the session."""
        if not request.session_id:
            counts: dict[str, int] = await self._run(self._append, request, plan)
            return counts
        appended: dict[str, int] = await self._in_write_session(self._append, request, plan)
        return appended

    async def sample(self, request: WriteRequest, plan: BatchPlan, rows: int) -> list[dict[str, Any]]:
        """The first ``rows`` rows of the request's (first) file as the append would write them
        under ``plan``, after :meth:`infer` (``icefeed preview``)."""
        result: list[dict[str, Any]] = await self._run(self._sample, request, plan, rows)
        return result

    async def _in_write_session(self, fn: Any, *args: Any) -> Any:
        async with self._limit:
            with self._using():
                try:
                    return await asyncio.to_thread(fn, *args)
                except Exception as exc:  # the shared session is not concerned: keep it
                    raise to_icefeed_error(exc) from exc

    async def open_session(self, session_id: str, table: str = "") -> None:
        """Open the Spark Connect session ``session_id`` (a UUID) for one write: the server knows
        it when this returns. :meth:`write` with ``request.session_id`` runs in it and releases it."""
        try:
            with self._using():
                await asyncio.to_thread(self._open_session, session_id)
        except Exception as exc:
            raise to_icefeed_error(exc) from exc

    async def stop(self, session_id: str, table: str = "") -> bool:
        """Stop every operation of session ``session_id`` (this worker's or another's) and release
        the session so that no later request can use it. True when the engine confirmed; False when
        it could not be reached or did not confirm (then the engine's detached-execution limit,
        ``ICEFEED_SPARK_DETACHED_LIMIT_S``, is the bound). Never raises."""
        with self._lock:  # a read kept for an append in that session is let go
            for batch_id in [b for b, r in self._reads.items() if self._writes.get(session_id) is r.spark]:
                del self._reads[batch_id]
        try:
            return bool(await asyncio.to_thread(self._stop, session_id))
        except Exception:  # noqa: BLE001 - unreachable or refused: not confirmed
            return False

    async def delete_batch_rows(self, table: str, batch_id: UUID, sources: list[str] | None = None) -> int:
        """Delete the rows of batch ``batch_id`` (audit repair), or only those of ``sources``;
        how many there were."""
        result: int = await self._run(self._delete_batch_rows, table, batch_id, sources)
        return result

    async def delete_replaced(self, table: str, sources: list[str], keep_batch: UUID) -> None:
        """Delete the rows of ``sources`` (``_source_file`` values) that any batch but
        ``keep_batch`` wrote: the older versions a replace-batch superseded. Idempotent."""
        await self._run(self._delete_replaced, table, sources, keep_batch)

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

    def _table_columns(self, table: str) -> list[str] | None:
        spark = self._spark()
        if not spark.catalog.tableExists(table):
            return None
        self._dialect.refresh(spark, table)
        return [str(c) for c in spark.table(table).columns]

    async def table_columns(self, table: str) -> list[str] | None:
        """For `icefeed check`: the table's column names (icefeed's own included), None if absent."""
        result: list[str] | None = await self._run(self._table_columns, table)
        return result

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


_QUIET: dict[type, type] = {}


def quiet(session: Any) -> Any:
    """Make a Spark Connect session close nothing when it is garbage-collected. pyspark's
    ``SparkSession.__del__`` calls ``client.close()``, which shuts down a process-wide thread pool
    with ``wait=True``; when the collector runs inside that pool's own ``submit`` (it allocates a
    thread), the shutdown waits for a lock its own thread holds: a worker thread deadlocked for
    good (seen in a test run). icefeed closes its sessions itself (``_release``, ``stop()``)."""
    cls = type(session)
    if cls not in _QUIET:
        _QUIET[cls] = type(f"Quiet{cls.__name__}", (cls,), {"__del__": lambda self: None})
    session.__class__ = _QUIET[cls]
    return session


def _close_channel(session: Any) -> None:
    """Close one session's gRPC channel. Not ``client.close()``: that also shuts down the pyspark
    process-wide pool that releases other sessions' finished operations."""
    with contextlib.suppress(Exception):
        session.client._channel.close()


def _release(session: Any) -> None:
    """Release a write's session on the server (its operations end with it), then its channel.
    One attempt: a server that is gone drops the session itself (idle timeout)."""
    from pyspark.sql.connect.client.retries import DefaultPolicy

    with contextlib.suppress(Exception):  # the server may be gone, or the session stopped already
        session.client.set_retry_policies([DefaultPolicy(max_retries=0)])
        session.client.release_session()
    _close_channel(session)
