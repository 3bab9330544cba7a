"""``icefeed dlq show`` and ``icefeed dlq redrive``: the dead-letter queue behind each queue.

``show`` peeks: it receives with a short visibility, describes each message (its files and their
ledger state) and makes every message visible again at once. ``redrive`` moves messages back to
their source queue, sending before deleting (a crash in between leaves a duplicate event, which
the ledger absorbs); a message whose files are all final is only deleted (nothing to do).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from worker.adapters.aws import AwsClients
from worker.admin.common import (
    FINAL,
    SQS_BATCH,
    aws_call,
    dead_letter_queue,
    depth,
    ledger,
    queue_attributes,
    queue_name,
    s3_uri,
    send_bodies,
)
from worker.domain.errors import ConfigError
from worker.domain.events import FileEvent, Ignored, parse_message
from worker.domain.routing import match_route
from worker.routes import Routes
from worker.settings import Settings, require_queues
from worker.sql import queries

PEEK_VISIBILITY_S = 30
REDRIVE_VISIBILITY_S = 120


async def _dead_letter_queues(sqs: Any, settings: Settings) -> list[tuple[str, str]]:
    """(DLQ URL, source queue URL) for every configured queue with a redrive policy."""
    require_queues(settings)
    pairs: dict[str, str] = {}
    for url in settings.sqs.queue_urls:
        found = await dead_letter_queue(sqs, url)
        if found is not None:
            pairs.setdefault(found[0], url)
    if not pairs:
        raise ConfigError("no queue in ICEFEED_SQS_QUEUE_URLS has a dead-letter queue (RedrivePolicy)")
    return list(pairs.items())


async def _receive(sqs: Any, url: str, count: int, visibility_s: int) -> list[dict[str, Any]]:
    async def op() -> list[dict[str, Any]]:
        response = await sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=max(1, min(SQS_BATCH, count)),
            WaitTimeSeconds=1,
            VisibilityTimeout=visibility_s,
            MessageSystemAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    return await aws_call(op, f"SQS ReceiveMessage {queue_name(url)}")


async def _sqs_batch(sqs: Any, url: str, method: str, entries: list[dict[str, Any]]) -> int:
    """A *Batch call in tens; returns how many entries failed."""
    failed = 0
    for i in range(0, len(entries), SQS_BATCH):
        chunk = [{"Id": str(n), **e} for n, e in enumerate(entries[i : i + SQS_BATCH])]

        async def op(c: list[dict[str, Any]] = chunk) -> dict[str, Any]:
            result: dict[str, Any] = await getattr(sqs, method)(QueueUrl=url, Entries=c)
            return result

        failed += len((await aws_call(op, f"SQS {method} {queue_name(url)}")).get("Failed", []))
    return failed


async def _key_states(pool: asyncpg.Pool, messages: list[dict[str, Any]]) -> dict[tuple[str, str], list[Any]]:
    keys = sorted(
        {(r.bucket, r.key) for m in messages for r in parse_message(m.get("Body", "")) if isinstance(r, FileEvent)}
    )
    states: dict[tuple[str, str], list[Any]] = {}
    if keys:
        rows = await pool.fetch(queries("operator.sql")["key_states"], [b for b, _ in keys], [k for _, k in keys])
        for r in rows:
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
    async with ledger(settings) as pool, AwsClients(settings.aws) as aws:
        for dlq, source in await _dead_letter_queues(aws.sqs, settings):
            received: dict[str, dict[str, Any]] = {}
            try:
                while len(received) < max_messages:
                    batch = await _receive(aws.sqs, dlq, max_messages - len(received), PEEK_VISIBILITY_S)
                    fresh = [m for m in batch if m["MessageId"] not in received]
                    if not fresh:
                        break
                    received.update({m["MessageId"]: m for m in fresh})
            finally:  # visible again at once, whatever happened
                entries = [{"ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0} for m in received.values()]
                await _sqs_batch(aws.sqs, dlq, "change_message_visibility_batch", entries)
            messages = list(received.values())
            states = await _key_states(pool, messages)
            d = depth(await queue_attributes(aws.sqs, dlq))
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
    async with ledger(settings) as pool, AwsClients(settings.aws) as aws:
        for dlq, source in await _dead_letter_queues(aws.sqs, settings):
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
                batch = [
                    m for m in await _receive(aws.sqs, dlq, want, REDRIVE_VISIBILITY_S) if m["MessageId"] not in seen
                ]
                if not batch:
                    break
                seen.update(m["MessageId"] for m in batch)
                states = await _key_states(pool, batch)
                described = [describe(m, routes, states) for m in batch]
                bodies = [d["body"] for d in described if d["action"] == "send"]
                await send_bodies(aws.sqs, source, bodies)  # first: a crash now only duplicates events
                report["sent"] += len(bodies)
                report["dropped"] += len(described) - len(bodies)
                failed = await _sqs_batch(
                    aws.sqs, dlq, "delete_message_batch", [{"ReceiptHandle": m["ReceiptHandle"]} for m in batch]
                )
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
