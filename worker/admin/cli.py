"""Argparse wiring of the operator commands, and how their results reach the terminal.

Exit status: 0 all is well, 1 something the operator must look at (the result's ``attention``
list, or an unreachable cluster / database / AWS), 2 bad usage or configuration. Errors print
one line on stderr (and, with ``--json``, a JSON object on stdout), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.observability.logging import Redactor

COMMANDS = frozenset({"status", "files", "file", "retry", "backfill", "dlq", "preview", "maintain", "cost"})
STATUS_HELP = "pending, claimed, loaded, failed, gone, skipped, quarantined, rejected, replaced, open; comma-separated"


def add_commands(sub: Any) -> None:
    """Register the operator sub-commands on ``icefeed``'s sub-parsers."""
    parsers = []
    status = sub.add_parser("status", help="files by status, last load, oldest pending, queue and DLQ depth")
    status.add_argument("--ingestion", help="only this ingestion (route name)")
    status.add_argument("--stuck-after", default="1h", help="a PENDING file silent this long is stuck (default 1h)")
    parsers.append(status)

    files = sub.add_parser("files", help="list ledger files by status, time, key prefix, ingestion")
    files.add_argument("--status", help=STATUS_HELP)
    files.add_argument("--since", help="latest activity at or after: an ISO time or a duration back (1h, 2d)")
    files.add_argument("--key-prefix", help="a key prefix, or s3://bucket/prefix")
    files.add_argument("--ingestion")
    files.add_argument("--limit", type=int, default=50, help="newest N (default 50)")
    files.add_argument(
        "--with-bad-records",
        action="store_true",
        help="only files that left bad records out",
    )
    parsers.append(files)

    one = sub.add_parser("file", help="the whole history of one object: every version, batch, error, proposal")
    one.add_argument("uri", help="s3://bucket/key (decoded, as in _source_file)")
    parsers.append(one)

    retry = sub.add_parser("retry", help="re-queue FAILED files (and PENDING ones whose message is gone)")
    retry.add_argument("uri", nargs="?", help="s3://bucket/key: this object's FAILED / PENDING versions")
    retry.add_argument("--failed", action="store_true", help="every FAILED file, and every stuck PENDING one")
    retry.add_argument("--ingestion", help="with --failed: only this ingestion")
    retry.add_argument("--stuck-after", default="1h", help="with --failed: PENDING silent this long (default 1h)")
    retry.add_argument("--limit", type=int, help="with --failed: at most N files")
    parsers.append(retry)

    backfill = sub.add_parser("backfill", help="enqueue the routed objects under a prefix the ledger has not seen")
    backfill.add_argument("uri", help="s3://bucket/prefix")
    backfill.add_argument("--since", help="only objects modified at or after: an ISO time or a duration (2d)")
    backfill.add_argument("--dry-run", action="store_true", help="list and count, send nothing")
    parsers.append(backfill)

    dlq = sub.add_parser("dlq", help="the dead-letter queue: show (peek) or redrive its messages")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    show = dlq_sub.add_parser("show", help="peek at messages (they stay in the DLQ) with their files' ledger state")
    show.add_argument("--max", type=int, default=10, help="at most N messages (default 10)")
    redrive = dlq_sub.add_parser("redrive", help="move messages back to their queue (final files: just deleted)")
    redrive.add_argument("--max", type=int, help="at most N messages (default: all)")
    parsers += [show, redrive]

    preview = sub.add_parser("preview", help="schema, sample rows, diff and policy decision for a file; writes nothing")
    preview.add_argument("uri", help="s3://bucket/key")
    preview.add_argument("--ingestion", help="read it as this ingestion (default: the route that matches)")
    preview.add_argument("--rows", type=int, default=10, help="sample rows, at most 10 (default 10)")
    parsers.append(preview)

    maintain = sub.add_parser(
        "maintain", help="table maintenance once, now: expire snapshots, compact small files, remove orphans"
    )
    maintain.add_argument("--table", help="only this table (catalog.database.table), even if its maintenance is off")
    maintain.add_argument("--dry-run", action="store_true", help="show each table's figures and plan; change nothing")
    parsers.append(maintain)
    parsers.append(_cost_parser(sub))

    for p in parsers:
        p.add_argument("--json", action="store_true", help="machine-readable output")


def _cost_parser(sub: Any) -> argparse.ArgumentParser:
    cost: argparse.ArgumentParser = sub.add_parser(
        "cost",
        help="monthly cost of ingestion by component (a volume, or the ledger's), beside a per-file loop and polling",
    )
    volume = cost.add_argument_group("volume (or measured by --from-ledger; a flag wins over the ledger)")
    volume.add_argument("--files-per-day", type=float, metavar="N", help="files arriving per day")
    volume.add_argument("--avg-file-bytes", type=float, metavar="B", help="average file size, bytes")
    volume.add_argument("--rows-per-file", type=float, metavar="R", help="average rows per file (shown)")
    volume.add_argument("--tables", type=int, metavar="T", help="destination tables (default: the routes file's)")
    volume.add_argument("--format", dest="file_format", choices=["json", "csv", "parquet"], help="the files' format")
    volume.add_argument("--from-ledger", action="store_true", help="measure the volume and engine time in the ledger")
    volume.add_argument("--days", type=int, default=7, help="with --from-ledger: the last N days (default 7)")
    model = cost.add_argument_group("model")
    model.add_argument("--workers", type=int, metavar="W", help="worker replicas (default 1)")
    model.add_argument("--messages-per-receive", type=float, metavar="M", help="1 to 10 (default 1: a steady flow)")
    model.add_argument("--files-per-commit", type=float, metavar="F", help="default: measured, or predicted")
    model.add_argument("--engine-s-per-commit", type=float, metavar="S", help="engine seconds per commit, fixed part")
    model.add_argument("--engine-s-per-file", type=float, metavar="S", help="engine seconds per file in a commit")
    model.add_argument("--retry-pct", type=float, metavar="P", help="extra attempts per 100 files (default 0)")
    model.add_argument("--backfill-files", type=float, default=0.0, metavar="N", help="objects backfilled a month")
    model.add_argument("--poll-interval-s", type=float, default=60.0, help="polling comparison: seconds (default 60)")
    model.add_argument("--poll-prefixes", type=int, help="polling comparison: prefixes listed (default: tables)")
    return cost


def cost_options(args: argparse.Namespace) -> Any:
    """The ``icefeed cost`` flags as ``CostOptions`` (checked by ``CostOptions.check``)."""
    from worker.admin.cost import CostOptions

    return CostOptions(
        files_per_day=args.files_per_day,
        avg_file_bytes=args.avg_file_bytes,
        rows_per_file=args.rows_per_file,
        tables=args.tables,
        from_ledger=args.from_ledger,
        days=args.days,
        workers=args.workers,
        messages_per_receive=args.messages_per_receive,
        files_per_commit=args.files_per_commit,
        engine_s_per_commit=args.engine_s_per_commit,
        engine_s_per_file=args.engine_s_per_file,
        file_format=args.file_format,
        retry_pct=args.retry_pct,
        backfill_files=args.backfill_files,
        poll_interval_s=args.poll_interval_s,
        poll_prefixes=args.poll_prefixes,
    )


def run(args: argparse.Namespace, settings: Any, redactor: Redactor) -> int:
    """Run one operator command; ``redactor`` (registered with every secret at start) masks
    them in what is printed: errors, and results (ledger texts, sample rows, queue bodies)."""
    from worker.admin.common import dumps, friendly
    from worker.domain.errors import ConfigError, IcefeedError

    try:
        result, render = _dispatch(args, settings)
    except (IcefeedError, KeyboardInterrupt) as error:
        if isinstance(error, KeyboardInterrupt):
            message, error_class, code = "interrupted", "Interrupted", 130
        else:
            message, error_class = redactor.scrub(friendly(error)), error.error_class
            code = 2 if isinstance(error, ConfigError) else 1
        print(f"icefeed {args.command}: {message}", file=sys.stderr)
        if getattr(args, "json", False):
            print(dumps({"error": message, "error_class": error_class}))
        return code
    code = 1 if result.get("attention") else 0
    result = redactor.redact(result)
    try:
        print(dumps(result) if args.json else render(result), flush=True)
    except BrokenPipeError:  # piped into head: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return code


def _dispatch(args: argparse.Namespace, settings: Any) -> tuple[dict[str, Any], Any]:
    from worker.admin import render
    from worker.admin.common import parse_duration, parse_since, parse_statuses
    from worker.domain.errors import ConfigError

    cmd = args.command
    if cmd == "status":
        from worker.admin.views import status

        stuck = parse_duration(args.stuck_after).total_seconds()
        return asyncio.run(status(settings, args.ingestion, stuck)), render.status
    if cmd == "files":
        from worker.admin.views import files

        if not 1 <= args.limit <= 100_000:
            raise ConfigError("--limit must be between 1 and 100000")
        statuses = parse_statuses(args.status) if args.status else None
        since = parse_since(args.since) if args.since else None
        result = asyncio.run(
            files(settings, statuses, since, args.key_prefix, args.ingestion, args.limit, args.with_bad_records)
        )
        return result, render.files
    if cmd == "file":
        from worker.admin.views import file

        return asyncio.run(file(settings, _routes(settings, required=False), args.uri)), render.file
    if cmd == "retry":
        from worker.admin.requeue import retry

        if args.uri and (args.failed or args.ingestion or args.limit is not None):
            raise ConfigError("give an S3 URI, or --failed [--ingestion] [--limit]; not both")
        if args.limit is not None and args.limit < 1:
            raise ConfigError("--limit must be at least 1")
        stuck = parse_duration(args.stuck_after).total_seconds()
        result = asyncio.run(
            retry(
                settings, args.uri, failed=args.failed, ingestion=args.ingestion, stuck_after_s=stuck, limit=args.limit
            )
        )
        return result, render.retry
    if cmd == "backfill":
        from worker.admin.requeue import backfill

        since = parse_since(args.since) if args.since else None
        routes = _routes(settings, required=True)
        progress = _Progress()
        try:
            result = asyncio.run(
                backfill(settings, routes, args.uri, since=since, dry_run=args.dry_run, progress=progress)
            )
        finally:
            progress.done()
        return result, render.backfill
    if cmd == "dlq":
        from worker.admin import dlq

        routes = _routes(settings, required=False)
        if args.max is not None and args.max < 1:
            raise ConfigError("--max must be at least 1")
        if args.dlq_command == "show":
            return asyncio.run(dlq.show(settings, routes, args.max)), render.dlq_show
        return asyncio.run(dlq.redrive(settings, routes, args.max)), render.dlq_redrive
    return _dispatch_more(args, settings)


def _dispatch_more(args: argparse.Namespace, settings: Any) -> tuple[dict[str, Any], Any]:
    from worker.admin import render
    from worker.domain.errors import ConfigError

    cmd = args.command
    if cmd == "preview":
        from worker.admin.preview import preview

        if not 0 <= args.rows <= 10:
            raise ConfigError("--rows must be between 0 and 10")
        routes = _routes(settings, required=True)
        return asyncio.run(preview(settings, routes, args.uri, args.ingestion, args.rows)), render.preview
    if cmd == "maintain":
        from worker.admin.maintain import maintain

        routes = _routes(settings, required=True)
        return asyncio.run(maintain(settings, routes, args.table, args.dry_run)), render.maintain
    if cmd == "cost":
        from worker.admin.cost import cost

        return asyncio.run(cost(settings, _routes(settings, required=False), cost_options(args))), render.cost
    raise ConfigError(f"unknown command {cmd!r}")


def _routes(settings: Any, *, required: bool) -> Any:
    from worker.routes import load_routes

    if not required and not settings.routes_file.exists():
        return None
    return load_routes(settings.routes_file)


class _Progress:
    """One progress line on stderr (rewritten in place on a terminal)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.shown = False

    def __call__(self, stats: dict[str, Any]) -> None:
        known = sum(stats["already_known"].values())
        line = (
            f"backfill: listed {stats['listed']}, routed {stats['routed']}, "
            f"sent {stats['sent']}, already in the ledger {known}"
        )
        print(f"\r{line}" if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)
        self.shown = True

    def done(self) -> None:
        if self.shown and self.tty:
            print(file=sys.stderr)
