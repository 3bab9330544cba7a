"""``icefeed retry`` and ``icefeed backfill``: send files' S3 notifications to the queue again.

Both re-queue in three steps and hold no row lock while they talk to SQS:
1. mark: one short transaction makes the files PENDING with error_class 'Requeuing' and commits;
2. send their notifications;
3. record: files still PENDING and 'Requeuing' lose the mark (a file a worker claimed meanwhile is
   left alone).
Every interleaving is safe: a worker that receives a notification finds the file PENDING and
claims it; a notification sent twice (a concurrent re-queue, a resend after a crash) is absorbed
by the ledger (the file loads once); an operator stopped between 1 and 3 leaves files PENDING and
'Requeuing', which ``icefeed status`` reports as stuck and ``icefeed retry --failed`` (or the same
backfill again) sends. See docs/postgresql.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from worker.adapters.aws import normalize_etag
from worker.adapters.pg_operator import OperatorLedger
from worker.adapters.sqs_admin import SqsAdmin
from worker.admin.common import DEFAULT_STUCK_AFTER_S, aws, jsonable, ledger, parse_s3_uri, s3_uri, send_marked
from worker.domain.errors import ConfigError
from worker.domain.routing import match_route
from worker.routes import Routes
from worker.settings import Settings, require_queues

CHUNK = 500  # files per transaction
BACKFILL_CHUNK = 100
SHOWN_KEYS = 100  # keys listed in a backfill result

Progress = Callable[[dict[str, Any]], None]


async def _requeue(
    db: OperatorLedger,
    sqs: SqsAdmin,
    queue: str,
    ids: list[int] | None,
    ingestion: str | None,
    stuck_after_s: float,
    limit: int | None,
    after: int,
) -> list[Any]:
    rows = await db.requeue_files(ids, ingestion, stuck_after_s, limit, after)  # mark, commit
    await send_marked(db, sqs, queue, rows, "Retried")
    return rows


def _why_not(r: Any) -> str:
    status = r["status"]
    if status == "LOADED":
        return f"LOADED ({r['rows_loaded']} rows, batch {r['batch_id']}): a loaded file is never re-queued"
    if status == "REPLACED":
        return "REPLACED: a newer version of the object replaced its rows; never re-queued"
    if status == "CLAIMED":
        return "CLAIMED: a batch is loading it right now"
    if status == "QUARANTINED":
        return f"QUARANTINED: resolve proposal #{r['proposal_id']} (icefeed schema approve / reject)"
    if status == "REJECTED":
        return f"REJECTED by an operator (proposal #{r['proposal_id']})"
    if status == "GONE":
        return "GONE: the object was deleted before it was read"
    if status == "SKIPPED":
        return f"SKIPPED: {r['error_message'] or 'superseded'} (the newer version has its own row)"
    return f"{status}: not retryable"


def _requeued(r: Any) -> dict[str, Any]:
    out = {"id": r["id"], "uri": s3_uri(r["bucket"], r["key"]), "etag": r["etag"], "ingestion": r["ingestion"]}
    out.update({"was": r["was"], "was_error_class": r["was_class"], "was_error": r["was_message"]})
    return out


async def retry(
    settings: Settings,
    uri: str | None = None,
    *,
    failed: bool = False,
    ingestion: str | None = None,
    stuck_after_s: float = DEFAULT_STUCK_AFTER_S,
    limit: int | None = None,
) -> dict[str, Any]:
    """Re-queue one object's FAILED or PENDING versions, or (``failed``) every FAILED file and
    every PENDING one whose message is gone. LOADED files are never re-queued."""
    if (uri is None) == (not failed):
        raise ConfigError("give either an S3 URI or --failed")
    require_queues(settings)
    queue = settings.sqs.queue_urls[0]
    requeued: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    attention: list[str] = []
    async with ledger(settings) as db, aws(settings) as (sqs, _):
        if uri is not None:
            bucket, key = parse_s3_uri(uri)
            versions = await db.file_history(bucket, key)
            wanted = [r["id"] for r in versions if r["status"] in ("FAILED", "PENDING")]
            for r in versions:
                if r["id"] not in wanted:
                    refused.append({"uri": s3_uri(bucket, key), "etag": r["etag"], "status": r["status"]})
                    refused[-1]["reason"] = _why_not(r)
            if wanted:
                got = await _requeue(db, sqs, queue, wanted, None, 0.0, None, 0)
                requeued += [_requeued(r) for r in got]
                for r in versions:
                    if r["id"] in set(wanted) - {g["id"] for g in got}:
                        refused.append(
                            {
                                "uri": s3_uri(bucket, key),
                                "etag": r["etag"],
                                "status": r["status"],
                                "reason": "changed meanwhile (a worker holds it): look again with icefeed file",
                            }
                        )
            if not versions:
                attention.append(f"{s3_uri(bucket, key)} is not in the ledger: icefeed backfill {s3_uri(bucket, key)}")
            elif not requeued:
                attention += [f"not re-queued: {r['uri']} (etag {r['etag']}) is {r['reason']}" for r in refused]
        else:
            after = 0
            while limit is None or len(requeued) < limit:
                chunk = CHUNK if limit is None else min(CHUNK, limit - len(requeued))
                got = await _requeue(db, sqs, queue, None, ingestion, stuck_after_s, chunk, after)
                requeued += [_requeued(r) for r in got]
                if len(got) < chunk:
                    break
                after = max(r["id"] for r in got)
    return {
        "target": uri if uri is not None else "failed",
        "ingestion": ingestion,
        "queue": queue,
        "requeued": requeued,
        "refused": refused,
        "attention": attention,
    }


# -- backfill -------------------------------------------------------------------------------


async def backfill(
    settings: Settings,
    routes: Routes,
    uri: str,
    *,
    since: datetime | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """List ``s3://bucket/prefix`` and send a notification for every routed object version the
    ledger has not seen. Each version is registered PENDING (events_seen 0) before it is sent, so
    a second backfill never sends it again; one whose earlier send was never confirmed (an
    interrupted backfill or retry) is sent again."""
    bucket, prefix = parse_s3_uri(uri, key_required=False)
    rules = [r for r in routes.rules if r.bucket == bucket]
    if not rules:
        raise ConfigError(f"no route reads bucket {bucket!r} (routes file {settings.routes_file})")
    if not any(r.prefix.startswith(prefix) or prefix.startswith(r.prefix) for r in rules):
        raise ConfigError(
            f"no route reads keys under {uri} (route prefixes: {', '.join(sorted({r.prefix for r in rules}))})"
        )
    if not dry_run:
        require_queues(settings)
    queue = settings.sqs.queue_urls[0] if settings.sqs.queue_urls else None
    stats: dict[str, Any] = {
        "listed": 0,
        "before_since": 0,
        "unrouted": 0,
        "routed": 0,
        "already_known": Counter(),
        "sent": 0,
    }
    sent_keys: list[str] = []
    async with ledger(settings) as db, aws(settings) as (sqs, s3):
        async for page in s3.list_pages(bucket, prefix):
            candidates = []
            for obj in page:
                stats["listed"] += 1
                if since is not None and obj["LastModified"] < since:
                    stats["before_since"] += 1
                    continue
                rule = match_route(rules, bucket, obj["Key"])
                if rule is None:
                    stats["unrouted"] += 1
                    continue
                stats["routed"] += 1
                candidates.append((rule.name, obj))
            for i in range(0, len(candidates), BACKFILL_CHUNK):
                sent = await _backfill_chunk(db, sqs, queue, bucket, candidates[i : i + BACKFILL_CHUNK], stats, dry_run)
                sent_keys += sent[: max(0, SHOWN_KEYS - len(sent_keys))]
            if progress is not None:
                progress(stats)
    return {
        "uri": uri,
        "bucket": bucket,
        "prefix": prefix,
        "since": jsonable(since),
        "dry_run": dry_run,
        "queue": queue,
        **{k: v for k, v in stats.items() if k != "already_known"},
        "already_known": dict(sorted(stats["already_known"].items())),
        "sent_keys": sent_keys,
        "sent_keys_truncated": stats["sent"] > len(sent_keys),
        "attention": [],
    }


async def _backfill_chunk(
    db: OperatorLedger,
    sqs: SqsAdmin,
    queue: str | None,
    bucket: str,
    candidates: list[tuple[str, dict[str, Any]]],
    stats: dict[str, Any],
    dry_run: bool,
) -> list[str]:
    items = [(name, obj["Key"], normalize_etag(obj["ETag"]), obj) for name, obj in candidates]
    known_rows = await db.known_files(bucket, [k for _, k, _, _ in items], [e for _, _, e, _ in items])
    known = {(r["key"], r["etag"]): r for r in known_rows}
    fresh = []
    unsent: list[int] = []  # registered earlier, notification never confirmed: send again
    for name, key, etag, obj in items:
        seen = known.get((key, etag))
        if seen is None:
            fresh.append((name, key, etag, obj))
        elif seen["status"] == "PENDING" and seen["error_class"] == "Requeuing":
            unsent.append(seen["id"])
        else:
            stats["already_known"][seen["status"]] += 1
    if dry_run:
        stats["sent"] += len(fresh) + len(unsent)
        return [key for _, key, _, _ in fresh] + [r["key"] for r in known_rows if r["id"] in unsent]
    if not fresh and not unsent:
        return []
    assert queue is not None
    inserted = await db.register_backfill(  # mark, commit
        [name for name, _, _, _ in fresh],
        bucket,
        [key for _, key, _, _ in fresh],
        [etag for _, _, etag, _ in fresh],
        [int(obj["Size"]) for _, _, _, obj in fresh],
        [obj["LastModified"] for _, _, _, obj in fresh],
    )
    await send_marked(db, sqs, queue, inserted, None)
    if len(inserted) < len(fresh):  # registered meanwhile (an event, another backfill)
        stats["already_known"]["PENDING"] += len(fresh) - len(inserted)
    resent = await _requeue(db, sqs, queue, unsent, None, 0.0, None, 0) if unsent else []
    stats["sent"] += len(inserted) + len(resent)
    return [r["key"] for r in inserted] + [r["key"] for r in resent]
