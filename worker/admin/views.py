"""``icefeed status``, ``icefeed files``, ``icefeed file``: what the ledger and the queues say."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from worker.admin.common import (
    DEFAULT_STUCK_AFTER_S,
    FINAL,
    aws,
    depth,
    friendly,
    jsonable,
    ledger,
    parse_s3_uri,
    row,
    s3_uri,
)
from worker.domain.errors import IcefeedError
from worker.domain.routing import match_route
from worker.observability.metrics import queue_name
from worker.routes import Routes
from worker.settings import Settings

# -- status ---------------------------------------------------------------------------------


async def status(
    settings: Settings, ingestion: str | None = None, stuck_after_s: float = DEFAULT_STUCK_AFTER_S
) -> dict[str, Any]:
    async with ledger(settings) as db:
        found = await db.status(ingestion, stuck_after_s)
    clock = found["clock"]
    per: dict[str, dict[str, Any]] = {}
    for g in found["groups"]:
        entry = per.setdefault(
            g["ingestion"],
            {
                "ingestion": g["ingestion"],
                "files": 0,
                "by_status": {},
                "rows_loaded": 0,
                "loaded_today": 0,
                "rows_today": 0,
                "last_loaded_at": None,
            },
        )
        entry["files"] += g["files"]
        entry["by_status"][g["status"]] = g["files"]
        entry["rows_loaded"] += g["rows"]
        entry["loaded_today"] += g["loaded_today"]
        entry["rows_today"] += g["rows_today"]
        if g["last_loaded_at"] is not None:
            entry["last_loaded_at"] = jsonable(g["last_loaded_at"])
    ingestions = list(per.values())
    totals: dict[str, Any] = {"files": 0, "by_status": {}, "rows_loaded": 0, "loaded_today": 0, "rows_today": 0}
    for entry in ingestions:
        for key in ("files", "rows_loaded", "loaded_today", "rows_today"):
            totals[key] += entry[key]
        for st, n in entry["by_status"].items():
            totals["by_status"][st] = totals["by_status"].get(st, 0) + n
    lasts = [e["last_loaded_at"] for e in ingestions if e["last_loaded_at"]]
    totals["last_loaded_at"] = max(lasts) if lasts else None
    result: dict[str, Any] = {
        "now": jsonable(clock["now"]),
        "ledger_schema": settings.pg.ledger_schema,
        "ingestion": ingestion,
        "ingestions": ingestions,
        "totals": totals,
        "oldest_open": _oldest(found["oldest"]) if found["oldest"] else None,
        "stuck_pending": found["stuck"],
        "stuck_after_s": stuck_after_s,
        "batches": row(found["batches"]),
        "open_proposals": found["proposals"],
        "rejected_messages_last_day": found["rejected"],
        "tables": [_health(t) for t in found["tables"]],
        "engines": [
            {
                "engine": e["engine"],
                "state": e["state"],
                "failing_since": jsonable(e["failing_since"]),
                "last_error": e["last_error"],
                "workers": e["workers"],
                "updated_at": jsonable(e["updated_at"]),
            }
            for e in found["engines"]
        ],
        "queues": await queue_status(settings),
    }
    result["attention"] = _status_attention(result)
    return result


def _health(r: Any) -> dict[str, Any]:
    return {
        "table": r["table_name"],
        "stats": orjson.loads(r["stats"]) if isinstance(r["stats"], str) else r["stats"],
        "maintenance": r["outcome"],
        "error": r["error"],
        "maintained_at": jsonable(r["finished_at"]),
        "running": bool(r["running"]),
    }


def _oldest(r: Any) -> dict[str, Any]:
    out = row(r)
    out["uri"] = s3_uri(r["bucket"], r["key"])
    return out


async def queue_status(settings: Settings) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if not settings.sqs.queue_urls:
        return out
    async with aws(settings) as (sqs, _):
        for url in settings.sqs.queue_urls:
            entry: dict[str, Any] = {"url": url, "name": queue_name(url)}
            try:
                attrs = await sqs.attributes(url)
                entry.update(depth(attrs))
                found = await sqs.dead_letter_queue(url, attrs)
                if found is None:
                    entry["dlq"] = None
                else:
                    dlq_url, max_receives = found
                    dlq_depth = depth(await sqs.attributes(dlq_url))
                    entry["dlq"] = {
                        "url": dlq_url,
                        "name": queue_name(dlq_url),
                        "max_receive_count": max_receives,
                        "messages": dlq_depth["visible"] + dlq_depth["in_flight"] + dlq_depth["delayed"],
                    }
            except IcefeedError as error:
                entry["error"] = friendly(error)
            out.append(entry)
    return out


def _status_attention(s: dict[str, Any]) -> list[str]:
    out: list[str] = []
    counts = s["totals"]["by_status"]
    only = f" --ingestion {s['ingestion']}" if s["ingestion"] else ""
    if counts.get("FAILED"):
        out.append(f"{counts['FAILED']} FAILED file(s): icefeed files --status failed{only}")
    if counts.get("QUARANTINED"):
        out.append(
            f"{counts['QUARANTINED']} QUARANTINED file(s) in {s['open_proposals']} open proposal(s): "
            "icefeed schema pending"
        )
    if s["stuck_pending"]:
        out.append(
            f"{s['stuck_pending']} PENDING file(s) without a live message (dead-lettered or silent for "
            f"{int(s['stuck_after_s'])} s): icefeed retry --failed{only}"
        )
    for e in s.get("engines", []):
        if e["state"] != "closed":
            out.append(f"engine {e['engine']} is {e['state']} (failing since {e['failing_since']}): {e['last_error']}")
    for t in s.get("tables", []):
        if t["maintenance"] == "failed":
            out.append(
                f"table {t['table']}: last maintenance failed: {t['error']} (icefeed maintain --table {t['table']})"
            )
    for qs in s["queues"]:
        if "error" in qs:
            out.append(f"queue {qs['name']}: {qs['error']}")
        elif qs["dlq"] is None:
            out.append(f"queue {qs['name']} has no dead-letter queue: a poison message would loop forever")
        elif qs["dlq"]["messages"]:
            out.append(
                f"{qs['dlq']['messages']} message(s) in the dead-letter queue {qs['dlq']['name']}: icefeed dlq show"
            )
    return out


# -- files ----------------------------------------------------------------------------------


async def files(
    settings: Settings,
    statuses: list[str] | None = None,
    since: datetime | None = None,
    key_prefix: str | None = None,
    ingestion: str | None = None,
    limit: int = 50,
    with_bad_records: bool = False,
) -> dict[str, Any]:
    bucket = None
    if key_prefix and key_prefix.startswith("s3://"):
        bucket, key_prefix = parse_s3_uri(key_prefix, key_required=False)
    async with ledger(settings) as db:
        rows = await db.list_files(statuses, ingestion, bucket, key_prefix or None, since, limit, with_bad_records)
    listed = []
    for r in rows:
        item = row(r)
        item.pop("total")
        item["uri"] = s3_uri(r["bucket"], r["key"])
        listed.append(item)
    return {
        "filter": {
            "status": statuses,
            "since": jsonable(since),
            "bucket": bucket,
            "key_prefix": key_prefix,
            "ingestion": ingestion,
            "limit": limit,
            "with_bad_records": with_bad_records,
        },
        "total": rows[0]["total"] if rows else 0,
        "files": listed,
        "attention": [],
    }


# -- file -----------------------------------------------------------------------------------


async def file(settings: Settings, routes: Routes | None, uri: str) -> dict[str, Any]:
    bucket, key = parse_s3_uri(uri)
    async with ledger(settings) as db:
        rows = await db.file_history(bucket, key)
    obj: dict[str, Any]
    try:
        async with aws(settings) as (_, s3):
            info = await s3.head(bucket, key)
        obj = {"exists": info is not None, "etag": info.etag if info else None, "size": info.size if info else None}
    except IcefeedError as error:
        obj = {"exists": None, "error": friendly(error)}
    route = None
    if routes is not None:
        rule = match_route(routes.rules, bucket, key)
        if rule is not None:
            ing = routes.by_name(rule.name)
            route = {"ingestion": ing.name, "table": ing.table, "format": ing.format}
    versions = []
    for r in rows:
        v = row(r)
        v["current"] = obj.get("etag") == r["etag"]
        versions.append(v)
    for v in versions:  # a few of each version's bad records, read back from where they are kept
        if v.get("bad_records"):
            v["bad_record_samples"] = await _bad_samples(settings, v["bad_records"])
    result: dict[str, Any] = {"uri": s3_uri(bucket, key), "bucket": bucket, "key": key, "route": route}
    result.update(object=obj, versions=versions)
    result["attention"] = _file_attention(result, routes is not None)
    return result


#: Bad records ``icefeed file`` shows per version.
BAD_SAMPLES = 3


async def _bad_samples(settings: Settings, uri: str) -> list[dict[str, Any]] | str:
    """The first :data:`BAD_SAMPLES` bad records of the object at ``uri``, or why they cannot be read."""
    bucket, key = parse_s3_uri(uri)
    try:
        async with aws(settings) as (_, s3):
            info = await s3.head(bucket, key)
            body = await s3.get(bucket, key, info.etag) if info is not None else None
    except IcefeedError as error:
        return f"cannot read {uri}: {friendly(error)}"
    if body is None:
        return f"{uri} no longer exists"
    out = []
    for line in body.splitlines()[:BAD_SAMPLES]:
        record = orjson.loads(line)
        out.append({k: record.get(k) for k in ("line", "offset", "error", "text", "truncated", "batch_id")})
    return out


def _file_attention(f: dict[str, Any], know_routes: bool) -> list[str]:
    out: list[str] = []
    obj, versions, uri = f["object"], f["versions"], f["uri"]
    if not versions:
        if obj.get("exists") is False:
            out.append("not in the ledger and not in S3")
        elif know_routes and f["route"] is None:
            out.append("no route matches this key: icefeed ignores it")
        else:
            out.append(f"never seen by icefeed (its event was lost?): icefeed backfill {uri}")
        return out
    if obj.get("exists") and not any(v["current"] for v in versions) and (not know_routes or f["route"]):
        out.append(f"the object's current version (etag {obj['etag']}) was never seen: icefeed backfill {uri}")
    latest = versions[-1]
    if latest["status"] == "FAILED":
        out.append(f"FAILED ({latest['error_class']}): fix the cause, then icefeed retry {uri}")
    elif latest["status"] == "QUARANTINED":
        out.append(f"QUARANTINED by proposal #{latest['proposal_id']}: icefeed schema pending")
    elif latest["status"] == "PENDING" and latest["error_class"] == "DeadLettered":
        out.append(f"its message went to the dead-letter queue: icefeed dlq redrive, or icefeed retry {uri}")
    elif latest["status"] not in FINAL | {"PENDING", "CLAIMED"}:
        out.append(f"unexpected status {latest['status']}")
    return out
