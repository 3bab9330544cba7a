"""The ceiling: the least work any loader must do per file, on the same stack. ``concurrency``
loops in one asyncio process each receive 10 messages, GET every object's bytes once, and
delete the messages in one batch call. No ledger, no engine, no table. The backlog is staged
before the run, so receives are short polls (an empty answer means the queue is drained)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import aioboto3
from botocore.config import Config

from worker.localstack import ACCESS_KEY, REGION, SECRET_KEY


@dataclass
class CeilingRun:
    concurrency: int
    files: int = 0
    messages: int = 0
    receives: int = 0
    bytes_read: int = 0
    started: float = 0.0
    finished: float = 0.0
    completions: list[float] = field(default_factory=list)  # epoch time of each file done

    @property
    def seconds(self) -> float:
        return max(1e-9, self.finished - self.started)

    @property
    def msgs_per_s(self) -> float:
        return self.files / self.seconds


def _records(body: str) -> list[tuple[str, str]]:
    try:
        doc = json.loads(body)
    except ValueError:
        return []
    out = []
    for rec in doc.get("Records", []) if isinstance(doc, dict) else []:
        s3 = rec.get("s3", {})
        bucket = s3.get("bucket", {}).get("name")
        key = s3.get("object", {}).get("key")
        if bucket and key:
            out.append((bucket, unquote_plus(key)))
    return out


async def _consume(moto_url: str, queues: list[str], target: int, concurrency: int, timeout_s: float) -> CeilingRun:
    run = CeilingRun(concurrency)
    session = aioboto3.Session()
    cfg = Config(region_name=REGION, max_pool_connections=max(20, concurrency * 12), retries={"max_attempts": 3})
    kwargs: dict[str, Any] = {
        "endpoint_url": moto_url,
        "region_name": REGION,
        "aws_access_key_id": ACCESS_KEY,
        "aws_secret_access_key": SECRET_KEY,
        "config": cfg,
    }
    deadline = time.monotonic() + timeout_s
    async with session.client("sqs", **kwargs) as sqs, session.client("s3", **kwargs) as s3:

        async def get(bucket: str, key: str) -> int:
            response = await s3.get_object(Bucket=bucket, Key=key)
            async with response["Body"] as stream:
                return len(await stream.read())

        reserved = 0  # messages asked for or taken: the loops never take more than ``target``

        drained: set[str] = set()  # nothing arrives during a run: an empty answer means done
        taken = [0]  # messages received and not yet deleted

        def pick(loop_no: int, turn: int) -> str | None:
            """Loop i polls its own queues (i, i + concurrency, …) round-robin, so loops never
            trail each other over queues just emptied; with its own drained it helps the rest."""
            live = [q for q in queues if q not in drained]
            if not live:
                return None
            mine = [q for k, q in enumerate(queues) if k % concurrency == loop_no % concurrency and q not in drained]
            pool = mine or live
            return pool[(loop_no + turn) % len(pool)]

        async def loop(loop_no: int) -> None:
            nonlocal reserved
            for turn in range(1_000_000):
                queue_url = pick(loop_no, turn)
                if queue_url is None or time.monotonic() > deadline or run.messages + taken[0] >= target:
                    break
                want = min(10, target - reserved)
                if want <= 0:  # other loops' receives are out: they may come back short
                    await asyncio.sleep(0.005)
                    continue
                reserved += want
                # A short poll: the backlog is staged before the run, so an empty answer means
                # drained (a long poll would hold its reservation for a whole second).
                response = await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=want, WaitTimeSeconds=0)
                run.receives += 1
                messages = response.get("Messages", [])
                reserved -= want - len(messages)
                taken[0] += len(messages)
                if not messages:
                    drained.add(queue_url)
                    continue
                objects = [r for m in messages for r in _records(m.get("Body", ""))]
                sizes = await asyncio.gather(*(get(b, k) for b, k in objects))
                entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
                await sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
                now = time.time()
                run.files += len(objects)
                run.messages += len(messages)
                taken[0] -= len(messages)
                run.bytes_read += sum(sizes)
                run.completions.extend([now] * len(objects))

        run.started = time.time()
        await asyncio.gather(*(loop(i) for i in range(concurrency)))
        run.finished = max(run.completions) if run.completions else time.time()
    return run


def consume(moto_url: str, queues: list[str], target: int, concurrency: int, timeout_s: float) -> CeilingRun:
    """Consume ``target`` messages from ``queues`` (never more: receives ask for what is left)."""
    return asyncio.run(_consume(moto_url, queues, target, concurrency, timeout_s))
