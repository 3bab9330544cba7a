"""The SQS gateway of the operator side, the gauges and the probes: queue attributes and depth,
the dead-letter queue behind a queue (from its RedrivePolicy) and its maxReceiveCount, batch
sends, and the receive / visibility / delete calls of the DLQ tools.

Every call goes through ``aws_call``: failures surface as icefeed errors (NotFound, AwsDenied,
AwsUnavailable), never as botocore exceptions. Batch calls go in tens (the SQS limit). The worker's
own receive/delete path is ``SqsSource`` (worker.adapters.aws)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from worker.adapters.aws_errors import aws_call
from worker.domain.errors import ConfigError, TransientError
from worker.observability.metrics import queue_name

SQS_BATCH = 10


def redrive_policy(name: str, policy: str | None) -> tuple[str, str, int] | None:
    """(DLQ name, DLQ account, maxReceiveCount) from a queue's RedrivePolicy, or None without one."""
    if not policy:
        return None
    parsed = orjson.loads(policy)
    arn = str(parsed["deadLetterTargetArn"])  # arn:aws:sqs:region:account:name
    parts = arn.split(":")
    if len(parts) < 6:
        raise ConfigError(f"queue {name}: unexpected deadLetterTargetArn {arn!r}")
    return parts[5], parts[4], int(parsed.get("maxReceiveCount", 0))


class SqsAdmin:
    """SQS calls on an aioboto3 client (owned by the caller, e.g. ``AwsClients``)."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs
        self._dlq_urls: dict[tuple[str, str], str] = {}

    async def attributes(self, url: str, names: Sequence[str] = ("All",)) -> dict[str, str]:
        async def op() -> dict[str, str]:
            response = await self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(names))
            attrs: dict[str, str] = response.get("Attributes", {})
            return attrs

        return await aws_call(op, f"SQS GetQueueAttributes {queue_name(url)}")

    async def queue_arn(self, url: str) -> str:
        return (await self.attributes(url, ["QueueArn"]))["QueueArn"]

    async def max_receive_count(self, url: str) -> int | None:
        """The queue's redrive maxReceiveCount, or None without a DLQ."""
        found = redrive_policy(queue_name(url), (await self.attributes(url, ["RedrivePolicy"])).get("RedrivePolicy"))
        return None if found is None else found[2]

    async def dead_letter_queue(self, url: str, attrs: dict[str, str] | None = None) -> tuple[str, int] | None:
        """(DLQ URL, maxReceiveCount) from the queue's RedrivePolicy (``attrs`` if already read),
        or None without one. The DLQ's URL is looked up once per gateway."""
        attrs = attrs if attrs is not None else await self.attributes(url, ["RedrivePolicy"])
        found = redrive_policy(queue_name(url), attrs.get("RedrivePolicy"))
        if found is None:
            return None
        name, account, max_receives = found
        if (name, account) not in self._dlq_urls:

            async def op() -> str:
                response = await self._sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)
                return str(response["QueueUrl"])

            self._dlq_urls[(name, account)] = await aws_call(op, f"SQS GetQueueUrl {name}")
        return self._dlq_urls[(name, account)], max_receives

    async def send_bodies(self, url: str, bodies: Sequence[str], delay_s: int = 0) -> None:
        """SendMessageBatch in tens; any entry SQS refuses is an error (nothing is silently lost)."""
        for i in range(0, len(bodies), SQS_BATCH):
            entries = [
                {"Id": str(n), "MessageBody": body, "DelaySeconds": delay_s}
                for n, body in enumerate(bodies[i : i + SQS_BATCH])
            ]

            async def op(e: list[dict[str, Any]] = entries) -> dict[str, Any]:
                result: dict[str, Any] = await self._sqs.send_message_batch(QueueUrl=url, Entries=e)
                return result

            response = await aws_call(op, f"SQS SendMessageBatch {queue_name(url)}")
            if response.get("Failed"):
                raise TransientError(
                    f"SQS refused {len(response['Failed'])} message(s): {response['Failed'][0]}",
                    error_class="AwsUnavailable",
                )

    async def receive(self, url: str, count: int, visibility_s: int, wait_s: int = 1) -> list[dict[str, Any]]:
        """Up to ``count`` (at most ten) raw messages with all their system attributes."""

        async def op() -> list[dict[str, Any]]:
            response = await self._sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=max(1, min(SQS_BATCH, count)),
                WaitTimeSeconds=wait_s,
                VisibilityTimeout=visibility_s,
                MessageSystemAttributeNames=["All"],
            )
            messages: list[dict[str, Any]] = response.get("Messages", [])
            return messages

        return await aws_call(op, f"SQS ReceiveMessage {queue_name(url)}")

    async def change_visibility(self, url: str, receipt_handles: Sequence[str], timeout_s: int) -> int:
        """ChangeMessageVisibilityBatch; returns how many entries failed."""
        entries = [{"ReceiptHandle": h, "VisibilityTimeout": timeout_s} for h in receipt_handles]
        return await self._batch(url, "change_message_visibility_batch", entries)

    async def delete(self, url: str, receipt_handles: Sequence[str]) -> int:
        """DeleteMessageBatch; returns how many entries failed."""
        return await self._batch(url, "delete_message_batch", [{"ReceiptHandle": h} for h in receipt_handles])

    async def _batch(self, url: str, method: str, entries: list[dict[str, Any]]) -> int:
        failed = 0
        for i in range(0, len(entries), SQS_BATCH):
            chunk = [{"Id": str(n), **e} for n, e in enumerate(entries[i : i + SQS_BATCH])]

            async def op(c: list[dict[str, Any]] = chunk) -> dict[str, Any]:
                result: dict[str, Any] = await getattr(self._sqs, method)(QueueUrl=url, Entries=c)
                return result

            failed += len((await aws_call(op, f"SQS {method} {queue_name(url)}")).get("Failed", []))
        return failed
