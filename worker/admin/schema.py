"""``icefeed schema …``: the schema registry and the resolution of quarantined files.

Every command returns a JSON-able dict; ``__main__`` prints it as text or, with ``--json``, as
JSON. Approving re-queues the affected files by sending their S3 notifications again; rejecting
marks them REJECTED."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson

from worker.adapters.aws_errors import NotFound
from worker.adapters.pg_operator import OperatorLedger
from worker.adapters.table_admin import TableAdmin
from worker.admin.common import aws, ledger, row, send_marked
from worker.domain import events
from worker.domain.errors import ConfigError
from worker.domain.schema import to_spark_json
from worker.engines import engine_of_table, engine_sink
from worker.routes import Routes, load_routes
from worker.settings import Settings

RESOLUTIONS = ("merge", "rescue", "as_string")
#: Columns of the schema registry that hold JSON.
JSON_COLUMNS = ("changes", "schema", "table_schema", "incoming_schema")


def _row(record: Any) -> dict[str, Any]:
    return row(record, JSON_COLUMNS)


async def pending(settings: Settings, status: str | None = "PENDING") -> dict[str, Any]:
    async with ledger(settings) as db:
        rows = await db.proposals(status)
    return {"proposals": [_row(r) for r in rows]}


async def show(settings: Settings, routes: Routes | None, name: str) -> dict[str, Any]:
    table = name
    if routes is not None and "." not in name:
        try:
            table = routes.by_name(name).table
        except KeyError:
            raise NotFound(f"no ingestion named {name!r} in the routes file") from None
    async with ledger(settings) as db:
        versions = await db.schema_history(table)
        proposals = await db.proposals(None)
    return {
        "table": table,
        "versions": [_row(v) for v in versions],
        "proposals": [_row(p) for p in proposals if p["table_name"] == table],
    }


def s3_notification(bucket: str, key: str, etag: str, size: int | None) -> str:
    """The S3 event notification a PUT of this object produces (used to re-queue files)."""
    return events.s3_notification(
        bucket,
        key,
        etag,
        size or 0,
        event_time=datetime.now(UTC),
        principal_id="icefeed",
        configuration_id="icefeed-requeue",
    )


# Conflicts no approval can load: Spark could not tell the columns apart in the table.
UNAPPROVABLE = {
    "reserved_name": "a column named like one of icefeed's own columns (ignoring case)",
    "duplicate_name": "a field spelled twice, differing only in case",
}


def unapprovable(proposal_id: int, changes: Any) -> str | None:
    """Why a proposal cannot be approved, or None."""
    listed = orjson.loads(changes) if isinstance(changes, str | bytes) else changes or []
    kinds = sorted({c.get("kind") for c in listed} & set(UNAPPROVABLE))
    if not kinds:
        return None
    what = " and ".join(UNAPPROVABLE[k] for k in kinds)
    return (
        f"proposal #{proposal_id}: its files have {what}, which no approval can load; rename the column in "
        "the file and upload it again (the new version loads), then close this one: "
        f"icefeed schema reject {proposal_id}"
    )


async def _proposal(db: OperatorLedger, proposal_id: int, approving: bool = False) -> Any:
    found = await db.proposals(None, proposal_id)
    if not found:
        raise NotFound(f"no schema proposal #{proposal_id}")
    if found[0]["status"] != "PENDING":
        raise ConfigError(f"proposal #{proposal_id} is already {found[0]['status']}")
    refusal = unapprovable(proposal_id, found[0]["changes"]) if approving else None
    if refusal:
        raise ConfigError(refusal)
    return found[0]


async def _resolve(
    settings: Settings, proposal_id: int, status: str, resolution: str, pinned: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One short transaction resolves the proposal and moves its files (REJECTED, or PENDING
    marked 'Requeuing'); approved files are sent to the queue only after it commits, and the
    send is then recorded (see worker/admin/requeue.py: no row lock is held across SQS calls)."""
    if status == "APPROVED" and not settings.sqs.queue_urls:
        raise ConfigError("ICEFEED_SQS_QUEUE_URLS is needed to re-queue the approved files")
    async with ledger(settings) as db:
        async with db.transaction() as tx:
            found = [await _proposal(tx, proposal_id, approving=status == "APPROVED")]
            await tx.resolve_proposal(proposal_id, status, resolution)
            if pinned is not None:
                table = found[0]["table_name"]
                for column in pinned["columns"]:
                    await tx.pin_column(table, column, "string", proposal_id)
                await tx.record_schema_version(
                    table,
                    orjson.dumps(pinned["schema"]).decode(),
                    orjson.dumps(pinned["changes"]).decode(),
                    found[0]["ingestion"],
                )
            if status == "REJECTED":
                files = await tx.reject_proposal_files(proposal_id)
                keys = [k for k in found[0]["keys"]]
            else:
                files = await tx.requeue_proposal_files(proposal_id)
                keys = [f["key"] for f in files]
        if status == "APPROVED" and files:
            async with aws(settings) as (sqs, _):
                await send_marked(db, sqs, settings.sqs.queue_urls[0], files, None)
    return {
        "proposal": proposal_id,
        "table": found[0]["table_name"],
        "status": status,
        "resolution": resolution,
        "files": len(files),
        "keys": keys,
    }


async def approve(settings: Settings, proposal_id: int, resolution: str) -> dict[str, Any]:
    if resolution not in RESOLUTIONS:
        raise ConfigError(f"unknown resolution {resolution!r} (choose from {', '.join(RESOLUTIONS)})")
    if resolution == "as_string":
        return await _approve_as_string(settings, proposal_id)
    return await _resolve(settings, proposal_id, "APPROVED", resolution)


def _routes_or_none(settings: Settings) -> Routes | None:
    """The routes, to find a table's engine; None when they cannot be read (the default engine)."""
    try:
        return load_routes(settings.routes_file)
    except ConfigError:
        return None


async def _approve_as_string(settings: Settings, proposal_id: int) -> dict[str, Any]:
    """Turn the conflicting top-level columns into string columns (in place, see TableAdmin),
    pin them as string for every later file, then approve and re-queue like any approval."""
    async with ledger(settings) as db:
        proposal = await _proposal(db, proposal_id, approving=True)
        changes = orjson.loads(proposal["changes"]) if isinstance(proposal["changes"], str) else proposal["changes"]
        conflicts = [c for c in changes if c["kind"] == "type_conflict"]
        if not conflicts:
            raise ConfigError(f"proposal #{proposal_id} has no type conflict to settle as string; use --merge")
        columns = sorted({c["path"] for c in conflicts})
        nested = [p for p in columns if "." in p or "`" in p]
        if nested:
            raise ConfigError(f"--as string handles top-level columns only, not {', '.join(nested)}; use --rescue")
        admin = TableAdmin(settings.iceberg)
        table = proposal["table_name"]
        sink = engine_sink(settings.spark, engine_of_table(_routes_or_none(settings), table))
        try:
            async with db.table_lock(table, timeout_s=600):
                for column in columns:
                    await asyncio.to_thread(admin.widen_to_string, table, column, sink.run_sql_blocking)
                schema = await sink.table_schema(table)
        finally:
            await asyncio.to_thread(sink.close)
    assert schema is not None
    pinned = {
        "columns": columns,
        "schema": to_spark_json(schema),
        "changes": [
            {
                "kind": "type_changed",
                "path": c["path"],
                "table_type": c["table_type"],
                "incoming_type": "string",
                "breaking": False,
                "requires_table_change": True,
                "text": f"type changed at {c['path']}: {c['table_type']} → string (approved proposal #{proposal_id})",
            }
            for c in conflicts
        ],
    }
    return await _resolve(settings, proposal_id, "APPROVED", "as_string", pinned)


async def reject(settings: Settings, proposal_id: int) -> dict[str, Any]:
    return await _resolve(settings, proposal_id, "REJECTED", "rejected")


# -- human output ------------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    lines: list[str] = []
    if "versions" in result:
        lines.append(f"schema history of {result['table']}:")
        if not result["versions"]:
            lines.append("  (no versions recorded yet: nothing loaded)")
        for v in result["versions"]:
            lines.append(f"  v{v['version']}  {v['created_at'][:19]}  first file {v['first_file']}")
            for c in v["changes"] or []:
                lines.append(f"      {c['text']}")
            if not v["changes"]:
                lines.append("      (initial schema)")
        if result["proposals"]:
            lines.append("proposals:")
            lines += _proposals(result["proposals"])
        return "\n".join(lines)
    if "proposals" in result:
        if not result["proposals"]:
            return "no pending schema proposals"
        return "\n".join(_proposals(result["proposals"]))
    verb = "approved" if result["status"] == "APPROVED" else "rejected"
    head = f"proposal #{result['proposal']} on {result['table']} {verb} ({result['resolution']})"
    lines.append(f"{head}: {result['files']} file(s)")
    action = "re-queued" if verb == "approved" else "marked REJECTED"
    lines += [f"  {action}: {k}" for k in result["keys"]]
    return "\n".join(lines)


def _proposals(proposals: list[dict[str, Any]]) -> list[str]:
    lines = []
    for p in proposals:
        lines.append(
            f"#{p['id']}  {p['table_name']}  policy={p['policy']}  {p['status']}"
            f"{' (' + p['resolution'] + ')' if p.get('resolution') else ''}  {p['files']} file(s)"
            f"  since {p['created_at'][:19]}"
        )
        offending = [c for c in p["changes"] if c.get("breaking") or c.get("requires_table_change")]
        lines += [f"    {c['text']}" for c in offending]
        lines += [f"    file: {k}" for k in p["keys"][:10]]
        if len(p["keys"]) > 10:
            lines.append(f"    … and {len(p['keys']) - 10} more")
    return lines
