"""The ``icefeed`` command line: the only place that wires adapters together."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from collections.abc import Sequence
from contextlib import AsyncExitStack
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import structlog

from worker.admin import cli as operator_cli
from worker.domain.errors import ConfigError, IcefeedError
from worker.observability.logging import Redactor, configure, settings_secrets
from worker.settings import Settings, load_settings, require_queues

log = structlog.get_logger("icefeed")


async def run_worker(settings: Settings, redactor: Redactor) -> None:
    from functools import partial

    from prometheus_client import CollectorRegistry

    from worker.adapters.aws import AwsClients, S3Store, SqsSource
    from worker.adapters.dialects import dialect_for
    from worker.adapters.local_read import LocalDecoder
    from worker.adapters.pg_ledger import PgLedger, connect_pool
    from worker.engines import EngineRouter
    from worker.faults import Faults, install
    from worker.observability.metrics import Metrics
    from worker.pipeline import Pipeline
    from worker.routes import load_routes
    from worker.runner import Runner

    require_queues(settings)
    routes = load_routes(settings.routes_file)
    dialect_for(settings.spark).check_routes(routes)  # e.g. replace on a parquet table: refused here
    faults = Faults(settings.faults)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics = Metrics(CollectorRegistry())
    pool = await connect_pool(settings.pg)
    on_append = faults.append_started if faults else None  # the after_write_start fault point
    sink = _sink(settings, routes, redactor, metrics, on_append)
    try:
        async with (
            AwsClients(settings.aws, max_pool=max(50, 4 * settings.sqs.receivers)) as aws,
            AsyncExitStack() as operations,
        ):
            ledger = PgLedger(
                pool,
                scrub=redactor.scrub,
                lock_check_s=settings.lease.lock_check_s,
                acquire_timeout_s=settings.pg.acquire_timeout_s,
            )
            # Test-only fault points (ICEFEED_FAULTS) wrap the ledger and the sink; unset: nothing.
            faulty_ledger, faulty_sink = install(ledger, sink, faults)
            pipeline = Pipeline(
                settings,
                routes,
                faulty_ledger,
                S3Store(aws),
                faulty_sink,
                LocalDecoder.for_settings(settings.spark),
                metrics,
            )
            runner = Runner(settings, pipeline, SqsSource(aws), metrics)
            side = await _operations(operations, settings, redactor, metrics, runner, pool, sink, aws, stop)
            side += _maintenance(settings, routes, ledger, faults, metrics)
            if isinstance(sink, EngineRouter):
                write = partial(_engine_state, ledger, settings.worker_id)
                reports = partial(sink.report_loop, write, idle_close_s=settings.spark.idle_close_s)
                side.append(("engines", reports))
            await runner.run(stop, side)
    finally:
        await asyncio.to_thread(sink.close)
        await pool.close()


async def _operations(
    stack: AsyncExitStack,
    settings: Settings,
    redactor: Redactor,
    metrics: Any,
    runner: Any,
    pool: Any,
    sink: Any,
    aws: Any,
    stop: Any,
) -> list[Any]:
    """The HTTP endpoint (/metrics, /healthz, /readyz) and the gauge refresher, as side tasks of
    the runner; nothing when ICEFEED_HTTP_PORT is 0. The port is bound here, before any receive."""
    if not settings.http.port:
        return []
    from functools import partial

    from worker.adapters.sqs_admin import SqsAdmin
    from worker.adapters.stats import LedgerStats, SqsStats
    from worker.observability.health import HealthServer, runner_liveness
    from worker.probes import ProbeRunner, worker_probes

    h = settings.http
    probes = ProbeRunner(
        worker_probes(pool, sink, SqsAdmin(aws.sqs), settings.sqs.queue_urls),
        h.probe_timeout_s,
        h.ready_cache_s,
        redactor.scrub,
    )
    stack.push_async_callback(probes.close)
    server = HealthServer(metrics, probes.run, runner_liveness(runner, stop.is_set), h.host, h.port, redactor)
    try:
        await stack.enter_async_context(server)
    except OSError as error:
        raise ConfigError(f"ICEFEED_HTTP_PORT: cannot listen on {h.host}:{h.port}: {error.strerror or error}") from None
    refresh = partial(
        metrics.refresh_loop,
        settings.sqs.queue_urls,
        SqsStats(aws).depths,
        LedgerStats(pool).quarantined,
        h.stats_interval_s,
    )
    return [("http", server.serve), ("gauges", refresh)]


async def _engine_state(ledger: Any, worker_id: str, engine: str, state: str, failing_s: Any, error: str) -> None:
    await ledger.engine_state(engine, worker_id, state, failing_s, error)


def _engine_secrets(settings: Settings) -> list[str]:
    """The routes' engines' tokens and secret headers, for the redactor (none when the routes
    file cannot be read: the command reports that itself)."""
    from worker.engines import engine_secrets
    from worker.routes import load_routes

    try:
        return engine_secrets(load_routes(settings.routes_file))
    except ConfigError:
        return []


def _sink(settings: Settings, routes: Any, redactor: Redactor, metrics: Any, on_append: Any) -> Any:
    """One SparkSink, or, with ``[[engine]]`` blocks, one per engine behind an EngineRouter."""
    from worker.engines import DEFAULT, EngineRouter, engine_sink

    hooks = {"on_reconnect": metrics.spark_reconnects.inc, "on_append": on_append}
    default = engine_sink(settings.spark, None, **hooks)
    if not routes.engine:
        return default
    sinks: dict[str, Any] = {DEFAULT: default}
    for engine in routes.engine:
        sinks[engine.name] = engine_sink(settings.spark, engine, on_secret=redactor.add, **hooks)
    log.info("engines_configured", engines=sorted(sinks), tables={t: routes.engine_of(t) for t in routes.tables})
    router = EngineRouter(sinks, routes.engine_of, on_state=metrics.engine_state)
    for name, breaker in router.breakers.items():
        metrics.engine_state(name, breaker)
    return router


def _maintenance(settings: Settings, routes: Any, ledger: Any, faults: Any, metrics: Any) -> list[Any]:
    """Table maintenance as a side task, when a table has it enabled and the catalog is known."""
    from functools import partial

    from worker.adapters.iceberg_maintenance import IcebergMaintainer
    from worker.faults import install_tables
    from worker.maintenance import Maintainer

    tables = [t for t in routes.tables if routes.maintenance.policy(t).enabled]
    if not tables:
        log.info("maintenance_disabled", reason="[maintenance] enabled = false in the routes file")
        return []
    if not settings.iceberg.catalog:
        log.warning(
            "maintenance_disabled",
            reason="ICEFEED_ICEBERG_CATALOG is not set: table maintenance needs the Iceberg catalog",
            tables=tables,
        )
        return []
    iceberg = install_tables(IcebergMaintainer(settings.iceberg), faults)
    maintainer = Maintainer(ledger, iceberg, settings.worker_id, metrics, lease_ttl_s=settings.lease.maintenance_ttl_s)
    return [("maintenance", partial(maintainer.loop, tables, routes.maintenance.policy))]


async def run_migrate(settings: Settings) -> list[str]:
    from worker.adapters.pg_ledger import migrate

    return await migrate(settings.pg, settings.migrations_dir)


def cmd_stack_up(args: argparse.Namespace) -> int:
    from worker.localstack import Stack
    from worker.routes import load_routes

    routes = load_routes(Path(args.routes))
    stack = Stack(Path(args.workdir)).start()
    try:
        prov = stack.provision(routes)
        env = stack.worker_env(prov.queue_url, Path(args.routes).resolve())
        env_file = Path(args.workdir) / "stack.env"
        env_file.write_text("".join(f"export {k}='{v}'\n" for k, v in env.items()))
        print("icefeed local stack is up (Ctrl-C stops it)")
        print(f"  moto (S3, SQS, Glue): {stack.moto_url}")
        print(f"  Spark Connect (Sail): {stack.spark_url}")
        print(f"  PostgreSQL:           {'embedded ' if stack.pg_embedded else ''}{stack.pg_dsn}")
        print(f"  queue:                {prov.queue_url}")
        print(f"  dead-letter queue:    {prov.dlq_url}")
        print(f"  landing bucket(s):    {', '.join(prov.buckets)}")
        print(f"\nIn another shell:\n  source {env_file}\n  icefeed migrate && icefeed run\n")
        sys.stdout.flush()
        stopped = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopped.set())
        stopped.wait()
    finally:
        print("stopping the local stack …")
        stack.stop()
    return 0


def cmd_schema(args: argparse.Namespace, settings: Settings, redactor: Redactor) -> int:
    import orjson

    from worker.admin import schema as schema_admin
    from worker.routes import load_routes

    if args.schema_command == "pending":
        result = asyncio.run(schema_admin.pending(settings, None if args.all else "PENDING"))
    elif args.schema_command == "show":
        routes = load_routes(settings.routes_file) if settings.routes_file.exists() else None
        result = asyncio.run(schema_admin.show(settings, routes, args.name))
    elif args.schema_command == "approve":
        resolution = "as_string" if args.resolution == "string" else (args.resolution or "merge")
        result = asyncio.run(schema_admin.approve(settings, args.proposal, resolution))
    else:
        result = asyncio.run(schema_admin.reject(settings, args.proposal))
    result = redactor.redact(result)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() if args.json else schema_admin.render(result))
    return 0


def cmd_check(args: argparse.Namespace, settings: Settings, redactor: Redactor) -> int:
    import orjson

    from worker.probes import check_once, render, summary

    results = asyncio.run(check_once(settings, args.timeout, redactor.scrub, redactor.add))
    if args.json:
        document = {"ok": all(r.ok for r in results), "checks": [r.as_dict() for r in results]}
        print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    else:
        print("\n".join(render(results)))
    if all(r.ok for r in results):
        return 0
    print(f"icefeed check: {summary(results)}", file=sys.stderr)
    return 1


def _version() -> str:
    """The installed distribution's version (what the image and pip report)."""
    try:
        return version("icefeed")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="icefeed", description="S3 files into Iceberg tables, exactly once.")
    parser.add_argument("--version", action="version", version=f"icefeed {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run a worker (configured by ICEFEED_* variables)")
    sub.add_parser("migrate", help="apply pending ledger migrations (idempotent, safe to run concurrently)")
    check = sub.add_parser(
        "check", help="probe PostgreSQL, the ledger, Spark Connect and SQS once; exit 1 on a failure"
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument("--timeout", type=float, default=30.0, help="seconds per check (default 30)")
    stack = sub.add_parser("stack", help="the local stack (moto + Sail + PostgreSQL)")
    stack_sub = stack.add_subparsers(dest="stack_command", required=True)
    up = stack_sub.add_parser("up", help="start it in the foreground and print the environment to use")
    up.add_argument("--routes", default=os.environ.get("ICEFEED_ROUTES_FILE", "routes.toml"))
    up.add_argument("--workdir", default=".icefeed/stack")
    schema = sub.add_parser("schema", help="schema registry: history, quarantined files, approvals")
    schema_sub = schema.add_subparsers(dest="schema_command", required=True)
    pend = schema_sub.add_parser("pending", help="proposals opened by quarantined files")
    pend.add_argument("--all", action="store_true", help="also approved and rejected ones")
    show = schema_sub.add_parser("show", help="schema versions of a table (by ingestion or catalog.db.table)")
    show.add_argument("name")
    appr = schema_sub.add_parser("approve", help="accept a proposal and re-queue its files (they load once)")
    appr.add_argument("proposal", type=int)
    how = appr.add_mutually_exclusive_group()
    how.add_argument(
        "--merge", dest="resolution", action="store_const", const="merge", help="evolve the table (default)"
    )
    how.add_argument(
        "--rescue", dest="resolution", action="store_const", const="rescue", help="offending columns → _rescued_data"
    )
    how.add_argument(
        "--as",
        dest="resolution",
        choices=["string"],
        help="change the conflicting column(s) to string in place; later files' values become text",
    )
    rej = schema_sub.add_parser("reject", help="mark the proposal's files REJECTED")
    rej.add_argument("proposal", type=int)
    for p in (pend, show, appr, rej):
        p.add_argument("--json", action="store_true", help="machine-readable output")
    demo = sub.add_parser("demo", help="load the sample files end to end on the local stack and show the result")
    demo.add_argument("--workdir", default=".icefeed/demo")
    operator_cli.add_commands(sub)  # status, files, file, retry, backfill, dlq, preview, maintain, cost
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as error:  # no secret is known yet: mask what looks like one
        print(f"icefeed: {Redactor().scrub(str(error))}", file=sys.stderr)
        return 2
    # Every secret is registered here, once; the same redactor masks logs, output and the ledger.
    redactor = configure(settings.log_format, settings.log_level, settings_secrets(settings))
    redactor.add(*_engine_secrets(settings))
    try:
        if args.command == "run":
            asyncio.run(run_worker(settings, redactor))
            _exit_abandoning_threads()
        elif args.command == "migrate":
            applied = asyncio.run(run_migrate(settings))
            print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
        elif args.command == "check":
            return cmd_check(args, settings, redactor)
        elif args.command == "stack":
            return cmd_stack_up(args)
        elif args.command == "schema":
            return cmd_schema(args, settings, redactor)
        elif args.command == "demo":
            from worker.demo import run_demo

            return run_demo(Path(args.workdir))
        elif args.command in operator_cli.COMMANDS:
            return operator_cli.run(args, settings, redactor)
    except ConfigError as error:
        print(f"icefeed: {redactor.scrub(str(error))}", file=sys.stderr)
        return 2
    except IcefeedError as error:
        print(f"icefeed: {error.error_class}: {redactor.scrub(str(error))}", file=sys.stderr)
        return 1
    except Exception as error:  # anything else: one scrubbed line, and a scrubbed traceback in the log
        log.error("command_failed", command=args.command, error_class=type(error).__name__, exc_info=True)
        print(f"icefeed: {type(error).__name__}: {redactor.scrub(str(error))}", file=sys.stderr)
        return 1
    return 0


def _exit_abandoning_threads() -> None:
    """A Spark call that outlived the shutdown grace must not hold the process open."""
    stuck = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if stuck:
        log.warning("threads_abandoned", count=len(stuck))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
