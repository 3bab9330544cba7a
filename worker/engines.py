"""Many engines per fleet: each route's table is written through its own Spark Connect cluster.

``EngineRouter`` is a ``TableSink`` that sends every call to the sink of the table's engine, behind
a circuit breaker per engine (worker/domain/circuit.py): an engine that is down, slow to answer
or rejecting its token fails its own calls fast (an outage: the files wait, their messages are not
spent) while the other engines' routes go on. ``stop`` is never refused by the breaker: recovery
must be able to try it, and it reports "not confirmed" by itself when the engine is away."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import structlog
from pydantic import SecretStr

from worker.domain.circuit import Breaker
from worker.domain.errors import ConfigError, IcefeedError, TransientError, is_outage
from worker.domain.policy import BatchPlan
from worker.domain.schema import Struct
from worker.ports import Inference, TableSink, WriteRequest
from worker.routes import Engine, Routes
from worker.settings import SparkSettings, detached_limit_for

if TYPE_CHECKING:
    from worker.adapters.spark_sink import SparkSink

log = structlog.get_logger("icefeed.engines")

DEFAULT = "default"


def token_source(token_file: Path | None, token_env: str | None) -> Callable[[], str | None] | None:
    """Where an engine's token comes from, read again before every new session: a mounted
    Kubernetes secret is rotated by rewriting its file."""
    if token_file is not None:
        path = token_file

        def from_file() -> str | None:
            try:
                text = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise TransientError(
                    f"engine token file {path}: cannot read it ({exc.strerror})", error_class="SparkUnauthenticated"
                ) from None
            return text or None

        return from_file
    if token_env is not None:
        name = token_env
        return lambda: os.environ.get(name) or None
    return None


class EngineRouter:
    """A TableSink over several engines' sinks, chosen by the table's engine."""

    def __init__(
        self,
        sinks: Mapping[str, TableSink],
        engine_of: Callable[[str], str],
        clock: Callable[[], float] = time.monotonic,
        breaker: Callable[[], Breaker] = Breaker,
        on_state: Callable[[str, Breaker], None] | None = None,
    ) -> None:
        self.sinks = dict(sinks)
        self.engine_of = engine_of
        self.clock = clock
        self.breakers = {name: breaker() for name in self.sinks}
        self.on_state = on_state
        self._dirty = asyncio.Event()

    def _engine(self, table: str) -> str:
        name = self.engine_of(table)
        if name not in self.sinks:
            raise KeyError(f"no engine {name!r} for table {table}")
        return name

    async def _through(self, engine: str, call: Callable[[TableSink], Any]) -> Any:
        breaker = self.breakers[engine]
        now = self.clock()
        if not breaker.allow(now):
            raise TransientError(
                f"engine {engine} is failing ({breaker.last_error}); next try in {breaker.retry_in(now):.0f} s",
                error_class="SparkUnavailable",
            )
        try:
            result = await call(self.sinks[engine])
        except IcefeedError as error:
            if is_outage(error.error_class):
                if breaker.failed(self.clock(), f"{error.error_class}: {error}"):
                    log.warning("engine_circuit_opened", engine=engine, error_class=error.error_class, error=str(error))
                    self._changed(engine)
            elif breaker.succeeded():  # the engine answered (with a data error): it is up
                self._closed(engine)
            raise
        except BaseException:
            breaker.released()
            raise
        if breaker.succeeded():
            self._closed(engine)
        return result

    def _closed(self, engine: str) -> None:
        log.info("engine_circuit_closed", engine=engine)
        self._changed(engine)

    def _changed(self, engine: str) -> None:
        self._dirty.set()
        if self.on_state is not None:
            self.on_state(engine, self.breakers[engine])

    # -- TableSink ---------------------------------------------------------------------------------

    async def ping(self) -> str:
        """Every engine's version; raises only when no engine answers (one engine down leaves the
        worker ready: the other engines' routes load)."""
        versions, failures = [], []
        for name in self.sinks:
            try:
                versions.append(f"{name}: {await self._through(name, lambda s: s.ping())}")
            except IcefeedError as error:
                failures.append(error)
                versions.append(f"{name}: {error.error_class}")
        if len(failures) == len(self.sinks):
            raise failures[0]
        return "; ".join(versions)

    async def open_session(self, session_id: str, table: str) -> None:
        await self._through(self._engine(table), lambda s: s.open_session(session_id, table))

    async def stop(self, session_id: str, table: str) -> bool:
        confirmed: bool = await self.sinks[self._engine(table)].stop(session_id, table)
        return confirmed

    async def infer(self, request: WriteRequest) -> Inference:
        result: Inference = await self._through(self._engine(request.table), lambda s: s.infer(request))
        return result

    async def append(self, request: WriteRequest, plan: BatchPlan) -> dict[str, int]:
        result: dict[str, int] = await self._through(self._engine(request.table), lambda s: s.append(request, plan))
        return result

    async def delete_batch_rows(self, table: str, batch_id: UUID, sources: list[str] | None = None) -> int:
        result: int = await self._through(self._engine(table), lambda s: s.delete_batch_rows(table, batch_id, sources))
        return result

    async def delete_replaced(self, table: str, sources: list[str], keep_batch: UUID) -> None:
        await self._through(self._engine(table), lambda s: s.delete_replaced(table, sources, keep_batch))

    async def batch_counts(self, table: str, batch_id: UUID) -> dict[str, int]:
        result: dict[str, int] = await self._through(self._engine(table), lambda s: s.batch_counts(table, batch_id))
        return result

    async def table_schema(self, table: str) -> Struct | None:
        result: Struct | None = await self._through(self._engine(table), lambda s: s.table_schema(table))
        return result

    async def report_loop(
        self,
        write: Callable[[str, str, float | None, str], Awaitable[None]],
        every_s: float = 60.0,
        idle_close_s: float = 0.0,
    ) -> None:
        """Write every engine's breaker state now and then (``icefeed status`` reads the recent
        ones), and at once when one changes; close the sessions of engines idle for
        ``idle_close_s`` (0: never)."""
        tick = min(every_s, idle_close_s / 2) if idle_close_s > 0 else every_s
        while True:
            for name in self.sinks:
                await self._report(write, name)
            if idle_close_s > 0:
                await self.close_idle(idle_close_s)
            self._dirty.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), tick)

    async def close_idle(self, idle_s: float) -> list[str]:
        """Close the shared session of every engine unused for ``idle_s`` seconds; their names."""
        closed = []
        for name, sink in self.sinks.items():
            close = getattr(sink, "close_idle", None)
            if close is not None and await asyncio.to_thread(close, idle_s):
                log.info("engine_session_closed_idle", engine=name, idle_s=idle_s)
                closed.append(name)
        return closed

    async def _report(self, write: Callable[[str, str, float | None, str], Awaitable[None]], name: str) -> None:
        b = self.breakers[name]
        failing = None if b.failing_since is None else max(0.0, self.clock() - b.failing_since)
        try:
            await write(name, b.state, failing, b.last_error)
        except IcefeedError as error:  # the ledger is away: the next round writes it
            log.warning("engine_state_not_recorded", engine=name, error=str(error))

    def close(self) -> None:
        for sink in self.sinks.values():
            close = getattr(sink, "close", None)
            if close is not None:
                close()


def engine_of_table(routes: Routes | None, table: str) -> Engine | None:
    """The ``[[engine]]`` block writing ``table``; None for the default engine (ICEFEED_SPARK_URL),
    also when no routes are given or no route names the table."""
    if routes is None:
        return None
    try:
        name = routes.engine_of(table)
    except KeyError:
        return None
    return next((e for e in routes.engine if e.name == name), None)


def engine_sink(
    spark: SparkSettings, engine: Engine | None, on_secret: Callable[[str], None] | None = None, **kwargs: Any
) -> SparkSink:
    """A SparkSink for ``engine`` (None: the default engine), with its token source; ``kwargs``
    go to SparkSink (``fail_fast``, ``on_reconnect``, ``on_append``)."""
    from worker.adapters.spark_sink import SparkSink  # the wiring's choice of adapter

    if engine is None:
        return SparkSink(spark, **kwargs)
    token = token_source(engine.token_file, engine.token_env)
    return SparkSink(engine_settings(spark, engine), token=token, on_secret=on_secret, **kwargs)


def engine_secrets(routes: Routes) -> list[str]:
    """The engines' tokens as they read now and their header values: registered with a
    command's redactor at start (a token read later is registered as it is read)."""
    from worker.observability.logging import spark_url_secrets

    found: list[str] = []
    for engine in routes.engine:
        read = token_source(engine.token_file, engine.token_env)
        with contextlib.suppress(IcefeedError):
            token = read() if read is not None else None
            if token:
                found.append(token)
        found += spark_url_secrets(engine_settings_url(engine))
    return found


def engine_settings_url(engine: Engine) -> str:
    """An engine's URL with its user id and headers as parameters (no token)."""
    extra = ([f"user_id={engine.user_id}"] if engine.user_id else []) + [f"{k}={v}" for k, v in engine.headers.items()]
    url = engine.url
    if extra:
        base_url, _, params = url.partition("/;")
        url = base_url.rstrip("/") + "/;" + ";".join([*filter(None, params.split(";")), *extra])
    return url


def engine_settings(base: SparkSettings, engine: Engine) -> SparkSettings:
    """The Spark settings of one ``[[engine]]``: its URL (with its user id and headers as URL
    parameters, which the Spark Connect client sends as gRPC metadata) and its in-flight bound;
    everything else is the fleet's."""
    update: dict[str, Any] = {
        "url": SecretStr(engine_settings_url(engine)),
        "concurrency": engine.max_batches_in_flight,
    }
    if engine.dialect is not None and engine.dialect != base.dialect:
        if base.table_format == "parquet" and engine.dialect != "spark":
            raise ConfigError(
                f"engine {engine.name}: dialect {engine.dialect!r} cannot write "
                "ICEFEED_SPARK_TABLE_FORMAT=parquet tables (Sail writes Iceberg)"
            )
        update |= {"dialect": engine.dialect, "detached_limit_s": detached_limit_for(base, engine.dialect)}
    return base.model_copy(update=update)
