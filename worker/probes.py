"""Readiness probes: can this process reach each dependency right now?

One set of probes serves the worker's ``/readyz`` (through the worker's own pool, Spark session
and SQS client) and ``icefeed check`` (which opens its own connections, once). A probe returns a
short detail when it passes and raises when it fails; ``ProbeRunner`` bounds each one by a
timeout, never runs the same probe twice at once (a hung dependency cannot pile up calls), and
may reuse its last answer for a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from worker.domain.errors import ConfigError, IcefeedError
from worker.domain.policy import table_collisions
from worker.observability.metrics import queue_name
from worker.observability.probe_result import ProbeResult
from worker.settings import Settings
from worker.sql import queries

if TYPE_CHECKING:
    from worker.adapters.aws import S3Store
    from worker.adapters.sqs_admin import SqsAdmin

PG_HINT = "check ICEFEED_PG_DSN (host, port, database, credentials) and that PostgreSQL accepts connections from here"
LEDGER_HINT = "run `icefeed migrate` against this ICEFEED_PG_DSN and ICEFEED_PG_LEDGER_SCHEMA"
SPARK_HINT = "check ICEFEED_SPARK_URL (sc://host:port/;use_ssl=…;token=…) and that the Spark Connect server is up"
SQS_HINT = (
    "check ICEFEED_SQS_QUEUE_URLS, ICEFEED_AWS_REGION / ICEFEED_AWS_ENDPOINT_URL, the AWS credentials and the "
    "role's sqs:GetQueueAttributes permission"
)
SQS_PROBE_ATTRIBUTES = ("ApproximateNumberOfMessages", "RedrivePolicy")
ROUTES_HINT = "fix ICEFEED_ROUTES_FILE (see README: Routes file)"


@dataclass(frozen=True, slots=True)
class Probe:
    name: str
    check: Callable[[], Awaitable[str]]
    hint: str


def describe(error: BaseException) -> str:
    if isinstance(error, IcefeedError):
        return f"{error.error_class}: {error}"
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class ProbeRunner:
    """Runs probes concurrently, each bounded by ``timeout_s``; answers within ``cache_s`` of the
    previous run reuse it. A probe still running from an earlier call is awaited, not restarted."""

    def __init__(
        self,
        probes: Sequence[Probe],
        timeout_s: float,
        cache_s: float = 0.0,
        scrub: Callable[[str], str] = lambda text: text,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.probes = list(probes)
        self._timeout = timeout_s
        self._cache_s = cache_s
        self._scrub = scrub
        self._clock = clock
        self._running: dict[str, asyncio.Task[str]] = {}
        self._last: tuple[float, list[ProbeResult]] | None = None
        self._lock = asyncio.Lock()

    async def run(self) -> list[ProbeResult]:
        async with self._lock:
            if self._last is not None and self._clock() - self._last[0] < self._cache_s:
                return self._last[1]
            results = list(await asyncio.gather(*(self._one(p) for p in self.probes)))
            self._last = (self._clock(), results)
            return results

    async def _one(self, probe: Probe) -> ProbeResult:
        started = time.monotonic()
        task = self._running.get(probe.name)
        if task is None:  # else: the call an earlier run gave up waiting for (done or not)
            task = asyncio.ensure_future(probe.check())
            self._running[probe.name] = task
        done, _ = await asyncio.wait({task}, timeout=self._timeout)
        seconds = time.monotonic() - started
        if not done:
            detail = f"no answer within {self._timeout:g} s"
            return ProbeResult(probe.name, False, detail, probe.hint, seconds)
        self._running.pop(probe.name, None)
        if task.cancelled():
            return ProbeResult(probe.name, False, "cancelled", probe.hint, seconds)
        error = task.exception()
        if error is not None:
            return ProbeResult(probe.name, False, self._scrub(describe(error)), probe.hint, seconds)
        return ProbeResult(probe.name, True, self._scrub(task.result()), probe.hint, seconds)

    async def close(self) -> None:
        """Cancel probes still waiting for an answer (a Spark call in a thread finishes alone)."""
        tasks = [t for t in self._running.values() if not t.done()]
        self._running.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


# -- the probes ----------------------------------------------------------------------------------


def _ms(started: float) -> str:
    return f"{(time.monotonic() - started) * 1000:.0f} ms"


def postgres_probe(fetchval: Callable[[str], Awaitable[Any]]) -> Probe:
    async def check() -> str:
        started = time.monotonic()
        await fetchval(queries("operations.sql")["ping"])
        return f"SELECT 1 in {_ms(started)}"

    return Probe("postgres", check, PG_HINT)


def spark_probe(ping: Callable[[], Awaitable[str]], engine: str = "") -> Probe:
    """The default engine (``spark``) or one ``[[engine]]`` of the routes (``spark:<name>``)."""

    async def check() -> str:
        started = time.monotonic()
        version = await ping()
        return f"Spark Connect answers (Spark {version}) in {_ms(started)}"

    return Probe(f"spark:{engine}" if engine else "spark", check, SPARK_HINT)


def sqs_probe(get_attributes: Callable[[str], Awaitable[dict[str, str]]], queue_urls: Sequence[str]) -> Probe:
    async def check() -> str:
        if not queue_urls:
            raise ConfigError("ICEFEED_SQS_QUEUE_URLS is empty")
        parts = []
        for url in queue_urls:
            attrs = await get_attributes(url)
            visible = attrs.get("ApproximateNumberOfMessages", "?")
            dlq = "with a DLQ" if attrs.get("RedrivePolicy") else "NO DLQ (RedrivePolicy missing)"
            parts.append(f"{queue_name(url)}: {visible} visible, {dlq}")
        return "; ".join(parts)

    return Probe("sqs", check, SQS_HINT)


def sqs_attributes(sqs: SqsAdmin) -> Callable[[str], Awaitable[dict[str, str]]]:
    """The attributes the SQS probe reads, through the SQS gateway (errors as IcefeedErrors)."""
    return partial(sqs.attributes, names=SQS_PROBE_ATTRIBUTES)


def worker_probes(pool: Any, sink: Any, sqs: SqsAdmin, queue_urls: Sequence[str]) -> list[Probe]:
    """The probes of a running worker, through its own pool, Spark session and SQS client."""
    return [
        postgres_probe(pool.fetchval),
        spark_probe(sink.ping),
        sqs_probe(sqs_attributes(sqs), queue_urls),
    ]


# -- `icefeed check` -------------------------------------------------------------------------------


def routes_probe(settings: Settings) -> Probe:
    async def check() -> str:
        from worker.routes import load_routes

        routes = load_routes(settings.routes_file)
        tables = {i.table for i in routes.ingestion}
        return f"{settings.routes_file}: {len(routes.ingestion)} ingestion(s) into {len(tables)} table(s)"

    return Probe("routes", check, ROUTES_HINT)


def ledger_probe(applied_migrations: Callable[[], Awaitable[set[str] | None]], settings: Settings) -> Probe:
    async def check() -> str:
        from worker.adapters.pg_ledger import discover_migrations

        wanted = [name for _, name, _ in discover_migrations(settings.migrations_dir)]
        applied = await applied_migrations()
        if applied is None:
            raise ConfigError(f"schema {settings.pg.ledger_schema} has no ledger (not migrated)")
        pending = [name for name in wanted if name not in applied]
        if pending:
            raise ConfigError(f"{len(pending)} migration(s) pending in {settings.pg.ledger_schema}: {pending[0]} …")
        return f"schema {settings.pg.ledger_schema}: {len(applied)} migration(s) applied, none pending"

    return Probe("ledger", check, LEDGER_HINT)


CATALOG_HINT = (
    "create the database in the catalog, or fix the routes' table names and the cluster's catalog config; "
    "a table with ambiguous columns: apply the repair named in the detail (docs/bad-input.md)"
)
NOTIFY_HINT = (
    "add an s3:ObjectCreated:* notification to the queue for each route's prefix/suffix (infra/terraform does); "
    "deliveries through SNS or EventBridge are not checked here"
)


def catalog_probe(
    settings: Settings,
    table_status: Callable[[str], Awaitable[str]],
    table_columns: Callable[[str], Awaitable[list[str] | None]] | None = None,
) -> Probe:
    """Each destination table exists, or its database is listable (the table is created on first
    load), and no existing table holds a column that Spark cannot tell apart from icefeed's own
    (or from another column). Read-only: no dry create, no repair."""

    async def check() -> str:
        from worker.routes import load_routes

        tables = sorted({i.table for i in load_routes(settings.routes_file).ingestion})
        details, broken = [], []
        for t in tables:
            details.append(f"{t}: {await table_status(t)}")
            columns = await table_columns(t) if table_columns is not None else None
            broken += [
                f"{t}: {problem}; repair: {column_repair(column)}"
                for column, problem in table_collisions(columns or [])
            ]
        if broken:
            raise ConfigError(
                "table(s) with ambiguous columns, where every append and recovery probe fails: " + " | ".join(broken)
            )
        return "; ".join(details)

    return Probe("catalog", check, CATALOG_HINT)


def column_repair(column: str) -> str:
    """How an operator renames a column aside through the Iceberg catalog (pyiceberg), keeping its
    values; the batches stuck on the table then settle on the next sweep."""
    return (
        f"rename it, e.g. with pyiceberg: `with table.update_schema() as u: u.rename_column({column!r}, "
        f"{column + '_data'!r})` (or `u.delete_column({column!r})` if it holds no values)"
    )


def notifications_probe(settings: Settings, s3: S3Store, sqs: SqsAdmin) -> Probe:
    """Every route's bucket notifies one of the worker's queues of ObjectCreated events with a
    filter that covers the route's prefix and suffix."""

    async def check() -> str:
        from worker.routes import load_routes

        arns = {await sqs.queue_arn(url) for url in settings.sqs.queue_urls}
        missing = []
        routes = load_routes(settings.routes_file).ingestion
        configs: dict[str, list[dict[str, Any]]] = {}
        for ing in routes:
            if ing.bucket not in configs:
                configs[ing.bucket] = await s3.queue_notifications(ing.bucket)
            if not any(_covers(c, arns, ing.prefix, ing.suffix) for c in configs[ing.bucket]):
                missing.append(f"{ing.name} (s3://{ing.bucket}/{ing.prefix}*{ing.suffix})")
        if missing:
            raise ConfigError(f"no ObjectCreated notification to the queue for: {', '.join(missing)}")
        return f"{len(routes)} route(s) on {len(configs)} bucket(s) notify the queue"

    return Probe("notifications", check, NOTIFY_HINT)


BAD_RECORDS_HINT = (
    "create the bucket of bad_records_location, and let the workers put and get objects under it "
    "(Terraform: bad_records_locations); until then the route's files wait"
)


def bad_records_probe(settings: Settings, s3: S3Store) -> Probe:
    """Every quarantining route can write where its bad records go: a small marker object
    (``.icefeed-check``) under each table's prefix of its bad_records_location."""

    async def check() -> str:
        from worker.domain.reading import bad_records_object
        from worker.routes import load_routes

        routes = [
            (i, i.bad_records_location) for i in load_routes(settings.routes_file).ingestion if i.bad_records_location
        ]
        failed = []
        for ing, location in routes:
            bucket, key = bad_records_object(location, ing.table, 0)
            key = key.rsplit("/", 1)[0] + "/.icefeed-check"
            try:
                await s3.write(bucket, key, b"written by icefeed check: the workers can keep bad records here\n")
            except IcefeedError as error:
                failed.append(f"{ing.name} (s3://{bucket}/{key}): {error}")
        if failed:
            raise ConfigError("cannot write bad records for: " + "; ".join(failed))
        if not routes:
            return "no route quarantines bad records"
        return f"{len(routes)} quarantining route(s) can write their bad records"

    return Probe("bad-records", check, BAD_RECORDS_HINT)


def _covers(config: dict[str, Any], arns: set[str], prefix: str, suffix: str) -> bool:
    events = config.get("Events", [])
    if config.get("QueueArn") not in arns or not any(e in ("s3:ObjectCreated:*", "s3:*") for e in events):
        return False
    rules = {r["Name"].lower(): r["Value"] for r in config.get("Filter", {}).get("Key", {}).get("FilterRules", [])}
    return prefix.startswith(rules.get("prefix", "")) and suffix.endswith(rules.get("suffix", ""))


@contextlib.asynccontextmanager
async def cli_probes(settings: Settings, on_secret: Callable[[str], None] | None = None) -> AsyncIterator[list[Probe]]:
    """Every check ``icefeed check`` runs, on connections of its own, closed on exit;
    ``on_secret`` is told every engine token read (the command's redactor)."""
    from worker.adapters.aws import AwsClients, S3Store
    from worker.adapters.pg_operator import applied_migrations, fetchval_once
    from worker.adapters.spark_sink import SparkSink
    from worker.adapters.sqs_admin import SqsAdmin
    from worker.engines import engine_sink

    # A check answers quickly: few client-side retries against an unreachable server.
    quick = settings.spark.model_copy(update={"client_retries": min(2, settings.spark.client_retries)})
    sink = SparkSink(quick)
    engines = [(engine.name, engine_sink(quick, engine, on_secret=on_secret)) for engine in _engines(settings)]
    try:
        async with AwsClients(settings.aws) as aws:
            sqs = SqsAdmin(aws.sqs)
            yield [
                routes_probe(settings),
                postgres_probe(partial(fetchval_once, settings.pg)),
                ledger_probe(partial(applied_migrations, settings.pg), settings),
                spark_probe(sink.ping),
                *(spark_probe(other.ping, name) for name, other in engines),
                catalog_probe(settings, sink.table_status, sink.table_columns),
                sqs_probe(sqs_attributes(sqs), settings.sqs.queue_urls),
                notifications_probe(settings, S3Store(aws), sqs),
                bad_records_probe(settings, S3Store(aws)),
            ]
    finally:
        for s in [sink, *(e for _, e in engines)]:
            await asyncio.to_thread(s.close)


def _engines(settings: Settings) -> list[Any]:
    """The routes' [[engine]] blocks (none when the routes are unreadable: the routes check
    reports that)."""
    from worker.routes import load_routes

    try:
        routes = load_routes(settings.routes_file)
    except ConfigError:
        return []
    return list(routes.engine)


async def check_once(
    settings: Settings,
    timeout_s: float,
    scrub: Callable[[str], str],
    on_secret: Callable[[str], None] | None = None,
) -> list[ProbeResult]:
    async with cli_probes(settings, on_secret) as probes:
        runner = ProbeRunner(probes, timeout_s, scrub=scrub)
        try:
            return await runner.run()
        finally:
            await runner.close()


def render(results: Sequence[ProbeResult]) -> list[str]:
    """One line per probe: ``PASS name  detail`` or ``FAIL name  detail — fix: hint``."""
    width = max((len(r.name) for r in results), default=0)
    lines = []
    for r in results:
        line = f"{'PASS' if r.ok else 'FAIL'}  {r.name:<{width}}  {r.detail}"
        if not r.ok:
            line += f" — fix: {r.hint}"
        lines.append(line)
    return lines


def summary(results: Sequence[ProbeResult]) -> str:
    failed = [r.name for r in results if not r.ok]
    if not failed:
        return f"all {len(results)} checks passed"
    return f"{len(failed)} of {len(results)} checks failed: {', '.join(failed)}"
