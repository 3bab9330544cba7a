"""Shared state the workers report as gauges: SQS queue depths (the queue and its DLQ, found
through the queue's RedrivePolicy, see ``SqsAdmin``) and the number of quarantined files in the
ledger."""

from __future__ import annotations

import asyncpg

from worker.adapters.aws import AwsClients
from worker.adapters.sqs_admin import SqsAdmin
from worker.observability.metrics import QUEUE_KINDS, queue_name
from worker.sql import queries


class SqsStats:
    def __init__(self, clients: AwsClients) -> None:
        self._sqs = SqsAdmin(clients.sqs)

    async def depths(self, queue_url: str) -> dict[str, dict[str, int]]:
        """``{queue name: {kind: messages}}`` for the queue and its DLQ."""
        attrs = await self._sqs.attributes(queue_url, [*QUEUE_KINDS.values(), "RedrivePolicy"])
        out = {queue_name(queue_url): {k: int(attrs.get(a, 0)) for k, a in QUEUE_KINDS.items()}}
        found = await self._sqs.dead_letter_queue(queue_url, attrs)
        if found is not None:
            dlq_attrs = await self._sqs.attributes(found[0], list(QUEUE_KINDS.values()))
            out[queue_name(found[0])] = {k: int(dlq_attrs.get(a, 0)) for k, a in QUEUE_KINDS.items()}
        return out


class LedgerStats:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._q = queries("operations.sql")

    async def quarantined(self) -> int:
        return int(await self._pool.fetchval(self._q["count_quarantined"]))
