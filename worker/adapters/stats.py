"""Shared state the workers report as gauges: SQS queue depths (the queue and its DLQ, found
through the queue's RedrivePolicy) and the number of quarantined files in the ledger."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from worker.adapters.aws import AwsClients
from worker.observability.metrics import QUEUE_KINDS, queue_name
from worker.sql import queries


class SqsStats:
    def __init__(self, clients: AwsClients) -> None:
        self._c = clients
        self._dlq: dict[str, str | None] = {}

    async def _attributes(self, queue_url: str, names: list[str]) -> dict[str, str]:
        response: dict[str, Any] = await self._c.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)
        attrs: dict[str, str] = response.get("Attributes", {})
        return attrs

    async def dlq_url(self, queue_url: str, redrive_policy: str | None) -> str | None:
        """The URL of the queue's dead-letter queue (looked up once), or None without one."""
        if queue_url not in self._dlq:
            url = None
            if redrive_policy:
                arn = json.loads(redrive_policy)["deadLetterTargetArn"]
                parts = arn.split(":")  # arn:aws:sqs:<region>:<account>:<name>
                response = await self._c.sqs.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])
                url = str(response["QueueUrl"])
            self._dlq[queue_url] = url
        return self._dlq[queue_url]

    async def depths(self, queue_url: str) -> dict[str, dict[str, int]]:
        """``{queue name: {kind: messages}}`` for the queue and its DLQ."""
        attrs = await self._attributes(queue_url, [*QUEUE_KINDS.values(), "RedrivePolicy"])
        out = {queue_name(queue_url): {k: int(attrs.get(a, 0)) for k, a in QUEUE_KINDS.items()}}
        dlq = await self.dlq_url(queue_url, attrs.get("RedrivePolicy"))
        if dlq is not None:
            dlq_attrs = await self._attributes(dlq, list(QUEUE_KINDS.values()))
            out[queue_name(dlq)] = {k: int(dlq_attrs.get(a, 0)) for k, a in QUEUE_KINDS.items()}
        return out


class LedgerStats:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._q = queries("operations.sql")

    async def quarantined(self) -> int:
        return int(await self._pool.fetchval(self._q["count_quarantined"]))
