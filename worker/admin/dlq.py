"""``icefeed dlq show`` and ``icefeed dlq redrive``: the dead-letter queue behind each queue.

``show`` peeks: it receives with a short visibility, describes each message (its files and their
ledger state) and makes every message visible again at once. ``redrive`` moves messages back to
their source queue, sending before deleting (a crash in between leaves a duplicate event, which
the ledger absorbs); a message whose files are all final is only deleted (nothing to do).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from worker.adapters.pg_operator import OperatorLedger
from worker.adapters.sqs_admin import SQS_BATCH, SqsAdmin
from worker.admin.common import FINAL, aws, depth, ledger, s3_uri
from worker.domain.errors import ConfigError
from worker.domain.events import FileEvent, Ignored, parse_message
from worker.domain.routing import match_route
from worker.observability.metrics import queue_name
from worker.routes import Routes
from worker.settings import Settings, require_queues

PEEK_VISIBILITY_S = 30
REDRIVE_VISIBILITY_S = 120


async def _dead_letter_queues(sqs: SqsAdmin, settings: Settings) -> list[tuple[str, str]]:
    """(DLQ URL, source queue URL) for every configured queue with a redrive policy."""
    require_queues(settings)
    pairs: dict[str, str] = {}
    for url in settings.sqs.queue_urls:
        found = await sqs.dead_letter_queue(url)
        if found is not None:
            pairs.setdefault(found[0], url)
    if not pairs:
        raise ConfigError("no queue in ICEFEED_SQS_QUEUE_URLS has a dead-letter queue (RedrivePolicy)")
    return list(pairs.items())


async def _key_states(db: OperatorLedger, messages: list[dict[str, Any]]) -> dict[tuple[str, str], list[Any]]:
    keys = sorted(
        {(r.bucket, r.key) for m in messages for r in parse_message(m.get("Body", "")) if isinstance(r, FileEvent)}
    )
    states: dict[tuple[str, str], list[Any]] = {}
    if keys:
        for r in await db.key_states(keys):
            states.setdefault((r["bucket"], r["key"]), []).append(r)
    return states


def _ms(value: str | None) -> str | None:
    return datetime.fromtimestamp(int(value) / 1000, UTC).isoformat() if value else None


def describe(
    message: dict[str, Any], routes: Routes | None, states: dict[tuple[str, str], list[Any]]
) -> dict[str, Any]:
    """A DLQ message's files with their ledger state, and what redrive does with it: ``delete``
    when every file is final (or the message names none that icefeed would load), else ``send``."""
    attrs = message.get("Attributes", {})
    files: list[dict[str, Any]] = []
    notes: list[str] = []
    malformed = False
    for r in parse_message(message.get("Body", "")):
        if isinstance(r, FileEvent):
            entry: dict[str, Any] = {"uri": s3_uri(r.bucket, r.key), "etag": r.etag, "size": r.size}
            rule = match_route(routes.rules, r.bucket, r.key) if routes is not None else None
            entry["ingestion"] = rule.name if rule else None
            rows = [x for x in states.get((r.bucket, r.key), []) if x["etag"] == r.etag]
            if routes is not None and rule is None:
                entry.update(state="unrouted (icefeed ignores it)", status=None, final=True)
            elif not r.etag:
                entry.update(state="no etag in the event: the worker decides", status=None, final=False)
            elif not rows:
                entry.update(state="not in the ledger", status=None, final=False)
            else:
                latest = rows[-1]
                entry.update(status=latest["status"], final=latest["status"] in FINAL)
                entry["state"] = _state_text(latest)
            files.append(entry)
        elif isinstance(r, Ignored):
            notes.append(f"ignored: {r.reason}")
        else:
            malformed = True
            notes.append(f"malformed: {r.reason}")
    action = "send" if malformed or any(not f["final"] for f in files) else "delete"
    return {
        "message_id": message["MessageId"],
        "sent_at": _ms(attrs.get("SentTimestamp")),
        "first_received_at": _ms(attrs.get("ApproximateFirstReceiveTimestamp")),
        "receive_count": int(attrs.get("ApproximateReceiveCount", 0)),
        "files": files,
        "notes": notes,
        "action": action,
        "body": message.get("Body", ""),
    }


def _state_text(r: Any) -> str:
    status = str(r["status"])
    if status == "LOADED":
        return f"LOADED ({r['rows_loaded']} rows)"
    if status == "FAILED":
        return f"FAILED ({r['error_class']}): redrive cannot help; fix it, then icefeed retry"
    if r["error_class"]:
        return f"{status} ({r['error_class']}: {(r['error_message'] or '')[:120]})"
    return status


async def show(settings: Settings, routes: Routes | None, max_messages: int = 10) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    async with ledger(settings) as db, aws(settings) as (sqs, _):
        for dlq, source in await _dead_letter_queues(sqs, settings):
            received: dict[str, dict[str, Any]] = {}
            try:
                while len(received) < max_messages:
                    batch = await sqs.receive(dlq, max_messages - len(received), PEEK_VISIBILITY_S)
                    fresh = [m for m in batch if m["MessageId"] not in received]
                    if not fresh:
                        break
                    received.update({m["MessageId"]: m for m in fresh})
            finally:  # visible again at once, whatever happened
                await sqs.change_visibility(dlq, [m["ReceiptHandle"] for m in received.values()], 0)
            messages = list(received.values())
            states = await _key_states(db, messages)
            d = depth(await sqs.attributes(dlq))
            out.append(
                {
                    "url": dlq,
                    "name": queue_name(dlq),
                    "source": source,
                    "approximate_messages": d["visible"] + d["in_flight"] + d["delayed"],
                    "messages": [describe(m, routes, states) for m in messages],
                }
            )
    attention = [
        f"{max(len(q['messages']), q['approximate_messages'])} message(s) in {q['name']}: icefeed dlq redrive"
        for q in out
        if q["messages"]
    ]
    return {"dlqs": out, "attention": attention}


async def redrive(settings: Settings, routes: Routes | None, max_messages: int | None = None) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    async with ledger(settings) as db, aws(settings) as (sqs, _):
        for dlq, source in await _dead_letter_queues(sqs, settings):
            report: dict[str, Any] = {
                "url": dlq,
                "name": queue_name(dlq),
                "source": source,
                "source_name": queue_name(source),
                "sent": 0,
                "dropped": 0,
                "deleted": 0,
                "delete_failed": 0,
                "messages": [],
            }
            seen: set[str] = set()
            while max_messages is None or len(seen) < max_messages:
                want = SQS_BATCH if max_messages is None else max_messages - len(seen)
                batch = [m for m in await sqs.receive(dlq, want, REDRIVE_VISIBILITY_S) if m["MessageId"] not in seen]
                if not batch:
                    break
                seen.update(m["MessageId"] for m in batch)
                states = await _key_states(db, batch)
                described = [describe(m, routes, states) for m in batch]
                bodies = [d["body"] for d in described if d["action"] == "send"]
                await sqs.send_bodies(source, bodies)  # first: a crash now only duplicates events
                report["sent"] += len(bodies)
                report["dropped"] += len(described) - len(bodies)
                failed = await sqs.delete(dlq, [m["ReceiptHandle"] for m in batch])
                report["deleted"] += len(batch) - failed
                report["delete_failed"] += failed
                report["messages"] += [{k: v for k, v in d.items() if k != "body"} for d in described]
            out.append(report)
    attention = [
        f"{q['delete_failed']} message(s) could not be deleted from {q['name']} (they come back; redrive again)"
        for q in out
        if q["delete_failed"]
    ]
    return {"dlqs": out, "attention": attention}
