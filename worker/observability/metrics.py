"""Prometheus metrics of one worker, on a registry the caller injects (never the global one).

Names are ``icefeed_<noun>_<unit>`` with ``_total`` on counters and ``_seconds`` on durations.
``infra/k8s/dashboard.json`` and ``infra/k8s/prometheusrule.yaml`` query exactly these names.

Counters count what THIS worker did: a file outcome is counted by the worker whose ledger
transaction recorded it, so the fleet's sum equals the ledger (``files`` by status, rows, bytes).
Gauges about shared state (queue depths, quarantined files) are the same on every worker: read
them with ``max``, not ``sum``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

log = structlog.get_logger("icefeed.metrics")

#: Values of ``icefeed_files_total{outcome}``: the ledger's terminal statuses (lower case), and
#: ``ignored`` for records that name no file to load (s3:TestEvent, ObjectRemoved, unrouted keys).
OUTCOMES = ("loaded", "failed", "quarantined", "gone", "ignored", "skipped")
#: Values of ``icefeed_stage_duration_seconds{stage}``.
STAGES = ("receive", "claim", "infer+write", "finalize")
#: ``icefeed_queue_messages{kind}`` → the SQS attribute it reports.
QUEUE_KINDS = {
    "visible": "ApproximateNumberOfMessages",
    "inflight": "ApproximateNumberOfMessagesNotVisible",
    "delayed": "ApproximateNumberOfMessagesDelayed",
}
#: How long the age of a message at receipt keeps counting towards the oldest-message gauge
#: (two scrape intervals: a message received old and loaded at once is still seen).
RECENT_WINDOW_S = 60.0

SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
COMMIT_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300)
FRESHNESS_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
BATCH_FILES_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def queue_name(queue_url: str) -> str:
    """The ``queue`` label of a queue: the last part of its URL (or ARN)."""
    return queue_url.rstrip("/").replace(":", "/").rsplit("/", 1)[-1]


class Metrics:
    def __init__(self, registry: CollectorRegistry, clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self._clock = clock
        self._recent: dict[str, deque[tuple[float, float]]] = {}
        r = registry
        self.messages_received = Counter(
            "icefeed_messages_received_total", "SQS messages received (redeliveries included)", registry=r
        )
        self.messages_acked = Counter(
            "icefeed_messages_acked_total", "SQS messages deleted: their files are done", registry=r
        )
        self.messages_requeued = Counter(
            "icefeed_messages_requeued_total", "SQS messages handed back with a retry delay", registry=r
        )
        self.messages_dead_lettered = Counter(
            "icefeed_messages_dead_lettered_total",
            "SQS messages requeued at their last receive: the redrive policy moves them to the DLQ",
            registry=r,
        )
        self.messages_deferred = Counter(
            "icefeed_messages_deferred_total",
            "Files whose message was handed back because their table held its fair share of the worker",
            ["engine"],
            registry=r,
        )
        self.messages_rejected = Counter(
            "icefeed_messages_rejected_total",
            "SQS messages whose body is not a known event (kept in the ledger's rejected_messages)",
            registry=r,
        )
        self.files = Counter(
            "icefeed_files_total", "File outcomes recorded in the ledger by this worker", ["outcome"], registry=r
        )
        for outcome in OUTCOMES:
            self.files.labels(outcome)
        self.rows_loaded = Counter("icefeed_rows_loaded_total", "Rows appended to Iceberg tables", registry=r)
        self.bytes_loaded = Counter("icefeed_bytes_loaded_total", "Bytes of source files loaded", registry=r)
        self.records_rejected = Counter(
            "icefeed_records_rejected_total",
            "Bad records a quarantining route left out of the load (kept under its bad_records_location)",
            ["ingestion"],
            registry=r,
        )
        self.batch_files = Histogram(
            "icefeed_batch_files",
            "Files per claimed batch (one Iceberg commit)",
            ["engine"],
            buckets=BATCH_FILES_BUCKETS,
            registry=r,
        )
        self.commit_duration = Histogram(
            "icefeed_commit_duration_seconds",
            "Committed batches: from the start of the Spark write to the ledger finalize",
            ["engine"],
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        self.upload_to_loaded = Histogram(
            "icefeed_upload_to_loaded_seconds",
            "Loaded files: from the S3 event time to the ledger finalize",
            ["engine"],
            buckets=FRESHNESS_BUCKETS,
            registry=r,
        )
        self.stage_duration = Histogram(
            "icefeed_stage_duration_seconds",
            "Time per pipeline stage (receive is one SQS long poll)",
            ["stage"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        for stage in STAGES:
            self.stage_duration.labels(stage)
        self.spark_reconnects = Counter(
            "icefeed_spark_reconnects_total", "Spark Connect sessions re-created after a lost one", registry=r
        )
        self.table_locks_lost = Counter(
            "icefeed_table_locks_lost_total", "Table commit locks whose connection died while held", registry=r
        )
        self.batch_leases_lost = Counter(
            "icefeed_batch_leases_lost_total", "Batches a sweeper took over while this worker wrote them", registry=r
        )
        self.zombie_rows_removed = Counter(
            "icefeed_zombie_rows_removed_total",
            "Rows of released batches that landed after all, found and deleted by the audit",
            registry=r,
        )
        self.commit_conflicts = Counter(
            "icefeed_commit_conflicts_total", "Iceberg commits refused by a concurrent commit", registry=r
        )
        self.inflight_files = Gauge(
            "icefeed_inflight_files", "Files this worker holds: admitted, not yet settled", registry=r
        )
        self.queue_messages = Gauge(
            "icefeed_queue_messages", "Approximate messages in the queue and its DLQ", ["queue", "kind"], registry=r
        )
        self.oldest_message_age = Gauge(
            "icefeed_queue_oldest_message_age_seconds",
            "Age (since SentTimestamp) of the oldest message this worker holds or received in the last minute",
            ["queue"],
            registry=r,
        )
        self.quarantined_files = Gauge(
            "icefeed_quarantined_files", "Files QUARANTINED in the ledger (waiting for a decision)", registry=r
        )
        self.event_loop_lag = Gauge(
            "icefeed_event_loop_lag_seconds", "How late the last one-second timer of the event loop fired", registry=r
        )
        # Table health: set by the worker that maintains the table (one at a time; max by table).
        self.table_figures = {
            name: Gauge(f"icefeed_table_{name}", text, ["table"], registry=r)
            for name, text in (
                ("snapshots", "Snapshots in the table's current metadata"),
                ("data_files", "Live data files of the current snapshot"),
                ("small_files", "Live data files below the compaction threshold (75 % of the target size)"),
                ("data_bytes", "Bytes of live data files"),
                ("metadata_bytes", "Size of the current metadata.json"),
            )
        }
        self.maintenance_runs = Counter(
            "icefeed_maintenance_runs_total",
            "Table maintenance steps by outcome (done, skipped, failed)",
            ["table", "step", "outcome"],
            registry=r,
        )
        self.maintenance_lock_hold = Histogram(
            "icefeed_maintenance_lock_hold_seconds",
            "How long a maintenance step held the table's commit lock (the longest an append waited for it)",
            ["step"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.engine_circuit_open = Gauge(
            "icefeed_engine_circuit_open",
            "1 while this worker's circuit breaker for the engine is open or half-open, else 0",
            ["engine"],
            registry=r,
        )
        self.maintenance_last_success = Gauge(
            "icefeed_maintenance_last_success_timestamp_seconds",
            "Unix time of the table's last maintenance run without a failed step",
            ["table"],
            registry=r,
        )

    # -- recording -----------------------------------------------------------------------------

    def engine_state(self, engine: str, breaker: Any) -> None:
        self.engine_circuit_open.labels(engine).set(0 if breaker.state == "closed" else 1)

    def table_stats(self, table: str, stats: dict[str, int]) -> None:
        for name, gauge in self.table_figures.items():
            if name in stats:
                gauge.labels(table).set(stats[name])

    def stage(self, name: str) -> Any:
        """``with metrics.stage("claim"): …`` times one stage."""
        return self.stage_duration.labels(name).time()

    def file_outcome(self, status: str, count: int = 1) -> None:
        """Count files that reached ledger status ``status`` (PENDING and CLAIMED are not outcomes)."""
        outcome = status.lower()
        if count > 0 and outcome in OUTCOMES:
            self.files.labels(outcome).inc(count)

    def files_finalized(self, results: Iterable[Any], files: Iterable[Any], engine: str = "default") -> None:
        """A batch's finalize won: count each file's outcome, and rows, bytes and freshness of
        the loaded ones. ``results`` are FileResults, ``files`` the batch's FileWork, ``engine``
        the engine that wrote them."""
        by_id = {f.file_id: f for f in files}
        now = self._clock()
        for result in results:
            self.file_outcome(result.status)
            if result.status != "LOADED":
                continue
            self.rows_loaded.inc(result.rows or 0)
            work = by_id.get(result.file_id)
            if work is None:
                continue
            if getattr(result, "rows_rejected", None):
                self.records_rejected.labels(work.ingestion).inc(result.rows_rejected)
            self.bytes_loaded.inc(work.size or 0)
            event_time: datetime | None = getattr(work, "event_time", None)
            if event_time is not None:
                self.upload_to_loaded.labels(engine).observe(max(0.0, now - event_time.timestamp()))

    def received(self, queue_url: str, sent: Sequence[datetime | None]) -> None:
        """Messages received from ``queue_url`` (their SentTimestamps)."""
        self.messages_received.inc(len(sent))
        now = self._clock()
        ages = [now - s.timestamp() for s in sent if s is not None]
        if ages:
            recent = self._recent.setdefault(queue_name(queue_url), deque())
            self._trim(recent, now)  # bounded even when nobody scrapes
            recent.append((now, max(ages)))

    # -- gauges read at scrape time ----------------------------------------------------------

    def watch_inflight(self, count: Callable[[], int]) -> None:
        self.inflight_files.set_function(count)

    def watch_oldest(self, queue_url: str, held: Callable[[], Iterable[datetime | None]]) -> None:
        """The oldest-message gauge of ``queue_url``: the oldest of the messages this worker holds
        (``held``: their SentTimestamps) and of those it received in the last RECENT_WINDOW_S.

        SQS has no attribute for it (CloudWatch's ApproximateAgeOfOldestMessage is the AWS-side
        equivalent); while a backlog exists the receivers take the head of the queue, so across
        the fleet ``max`` of this gauge tracks how late files land. 0 when the worker holds
        nothing and received nothing recently."""
        name = queue_name(queue_url)
        self.oldest_message_age.labels(name).set_function(lambda: self.oldest_age(name, held()))

    def oldest_age(self, queue: str, held: Iterable[datetime | None]) -> float:
        now = self._clock()
        recent = self._recent.get(queue)
        if recent is not None:
            self._trim(recent, now)
        ages = [age for _, age in recent or ()]
        ages += [now - s.timestamp() for s in held if s is not None]
        return max([0.0, *ages])

    @staticmethod
    def _trim(recent: deque[tuple[float, float]], now: float) -> None:
        while recent and recent[0][0] < now - RECENT_WINDOW_S:
            recent.popleft()

    # -- gauges refreshed from the queue and the ledger ------------------------------------------

    def set_queue_depths(self, depths: dict[str, dict[str, int]]) -> None:
        """``{queue name: {kind: count}}`` as read from GetQueueAttributes."""
        for queue, kinds in depths.items():
            for kind, value in kinds.items():
                self.queue_messages.labels(queue, kind).set(value)

    async def refresh(
        self,
        queue_urls: Sequence[str],
        depths: Callable[[str], Awaitable[dict[str, dict[str, int]]]],
        quarantined: Callable[[], Awaitable[int]],
    ) -> bool:
        """One refresh of the shared-state gauges; a failing source keeps its last values."""
        ok = True
        for url in queue_urls:
            try:
                self.set_queue_depths(await depths(url))
            except Exception as error:  # noqa: BLE001 - a metrics refresh never stops the worker
                ok = False
                log.warning("queue_stats_failed", queue=queue_name(url), error=str(error))
        try:
            self.quarantined_files.set(await quarantined())
        except Exception as error:  # noqa: BLE001 - same
            ok = False
            log.warning("quarantine_count_failed", error=str(error))
        return ok

    async def refresh_loop(
        self,
        queue_urls: Sequence[str],
        depths: Callable[[str], Awaitable[dict[str, dict[str, int]]]],
        quarantined: Callable[[], Awaitable[int]],
        interval_s: float,
    ) -> None:
        while True:
            await self.refresh(queue_urls, depths, quarantined)
            await asyncio.sleep(interval_s)
