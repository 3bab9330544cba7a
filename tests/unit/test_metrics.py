"""Unit tests for worker.observability.metrics: names and labels on an injected registry, what
the recording helpers count, and that every metric the dashboard and alerts query exists."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from worker.domain.batching import FileWork
from worker.domain.outcomes import FileResult
from worker.observability.metrics import OUTCOMES, QUEUE_KINDS, RECENT_WINDOW_S, STAGES, Metrics, queue_name

K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"
T0 = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)

COUNTERS = {
    "icefeed_messages_received_total",
    "icefeed_messages_acked_total",
    "icefeed_messages_requeued_total",
    "icefeed_messages_dead_lettered_total",
    "icefeed_messages_rejected_total",
    "icefeed_messages_deferred_total",
    "icefeed_files_total",
    "icefeed_rows_loaded_total",
    "icefeed_bytes_loaded_total",
    "icefeed_spark_reconnects_total",
    "icefeed_commit_conflicts_total",
    "icefeed_table_locks_lost_total",
    "icefeed_batch_leases_lost_total",
    "icefeed_maintenance_runs_total",
    "icefeed_zombie_rows_removed_total",
    "icefeed_records_rejected_total",
}
HISTOGRAMS = {
    "icefeed_batch_files",
    "icefeed_commit_duration_seconds",
    "icefeed_upload_to_loaded_seconds",
    "icefeed_stage_duration_seconds",
    "icefeed_maintenance_lock_hold_seconds",
}
GAUGES = {
    "icefeed_inflight_files",
    "icefeed_queue_messages",
    "icefeed_queue_oldest_message_age_seconds",
    "icefeed_quarantined_files",
    "icefeed_event_loop_lag_seconds",
    "icefeed_table_snapshots",
    "icefeed_table_data_files",
    "icefeed_table_small_files",
    "icefeed_table_data_bytes",
    "icefeed_table_metadata_bytes",
    "icefeed_maintenance_last_success_timestamp_seconds",
    "icefeed_engine_circuit_open",
}


class Clock:
    def __init__(self, at: datetime = T0) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now


def families(registry: CollectorRegistry) -> dict[str, str]:
    """Exposed series names (counters with _total, histograms by base name) → type."""
    out = {}
    for family in registry.collect():
        name = family.name + "_total" if family.type == "counter" else family.name
        out[name] = family.type
    return out


def queryable(registry: CollectorRegistry) -> set[str]:
    names = set()
    for name, kind in families(registry).items():
        names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
    return names


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics(clock: Clock) -> Metrics:
    return Metrics(CollectorRegistry(), clock=clock)


def test_every_metric_has_its_documented_name_and_type(metrics: Metrics) -> None:
    exposed = families(metrics.registry)
    assert {n for n, t in exposed.items() if t == "counter"} == COUNTERS
    assert {n for n, t in exposed.items() if t == "histogram"} == HISTOGRAMS
    assert {n for n, t in exposed.items() if t == "gauge"} == GAUGES
    for name in exposed:
        assert re.fullmatch(r"icefeed_[a-z]+(_[a-z]+)*", name), name
        if {"duration", "age", "lag"} & set(name.split("_")):
            assert name.endswith("_seconds"), name


def test_metrics_live_on_the_injected_registry_only() -> None:
    one, two = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())  # no "duplicated timeseries"
    one.rows_loaded.inc(5)
    assert sample(one.registry, "icefeed_rows_loaded_total") == 5
    assert sample(two.registry, "icefeed_rows_loaded_total") == 0
    assert not [f for f in REGISTRY.collect() if f.name.startswith("icefeed_")]


def test_label_sets_exist_from_the_start(metrics: Metrics) -> None:
    reg = metrics.registry
    for outcome in OUTCOMES:
        assert sample(reg, "icefeed_files_total", outcome=outcome) == 0
    for stage in STAGES:
        assert sample(reg, "icefeed_stage_duration_seconds_count", stage=stage) == 0
    assert set(OUTCOMES) == {"loaded", "failed", "quarantined", "gone", "ignored", "skipped"}
    assert set(STAGES) == {"receive", "claim", "infer+write", "finalize"}
    assert set(QUEUE_KINDS) == {"visible", "inflight", "delayed"}
    metrics.set_queue_depths({"q": {"visible": 3, "inflight": 1, "delayed": 0}, "q-dlq": {"visible": 2}})
    assert sample(reg, "icefeed_queue_messages", queue="q", kind="inflight") == 1
    assert sample(reg, "icefeed_queue_messages", queue="q-dlq", kind="visible") == 2


def _exprs() -> list[str]:
    dashboard = json.loads((K8S / "dashboard.json").read_text(encoding="utf-8"))
    panels = [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])]]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    rules = (K8S / "prometheusrule.yaml").read_text(encoding="utf-8")
    exprs += re.findall(r"icefeed_[a-z_]+(?:\{[^}]*\})?", rules)
    return exprs


def test_every_metric_the_dashboard_and_alerts_query_is_exposed(metrics: Metrics) -> None:
    exposed = queryable(metrics.registry)
    used = {name for expr in _exprs() for name in re.findall(r"\bicefeed_[a-z_]+", expr)}
    assert len(used) >= 10
    assert used <= exposed, f"queried but not exposed: {sorted(used - exposed)}"


def test_label_values_the_dashboard_and_alerts_use_are_the_ones_the_worker_writes() -> None:
    allowed = {("icefeed_files_total", "outcome"): set(OUTCOMES), ("icefeed_queue_messages", "kind"): set(QUEUE_KINDS)}
    seen = 0
    for expr in _exprs():
        for metric, matchers in re.findall(r"(icefeed_[a-z_]+)\{([^}]*)\}", expr):
            for label, value in re.findall(r'(\w+)\s*=\s*"([^"$]*)"', matchers):
                if (metric, label) in allowed:
                    seen += 1
                    assert value in allowed[(metric, label)], f"{metric}{{{label}={value!r}}}"
    assert seen >= 3


def test_a_finalized_batch_counts_outcomes_rows_bytes_and_freshness(metrics: Metrics, clock: Clock) -> None:
    clock.now = (T0 + timedelta(seconds=42)).timestamp()
    files = [
        FileWork(1, "events", "b", "k1", "e", 100, T0),
        FileWork(2, "events", "b", "k2", "e", 50, T0 + timedelta(seconds=40)),
        FileWork(3, "events", "b", "k3", "e", 999, T0),
        FileWork(4, "events", "b", "k4", "e", 7, None),
    ]
    results = [
        FileResult(1, "LOADED", 10),
        FileResult(2, "LOADED", 0),
        FileResult(3, "QUARANTINED", 0, "SchemaConflict", "x"),
        FileResult(4, "PENDING", None, "Recovered", "again"),
    ]
    metrics.files_finalized(results, files)
    reg = metrics.registry
    assert sample(reg, "icefeed_files_total", outcome="loaded") == 2
    assert sample(reg, "icefeed_files_total", outcome="quarantined") == 1
    assert sum(sample(reg, "icefeed_files_total", outcome=o) or 0 for o in OUTCOMES) == 3  # PENDING is no outcome
    assert sample(reg, "icefeed_rows_loaded_total") == 10
    assert sample(reg, "icefeed_bytes_loaded_total") == 150
    assert sample(reg, "icefeed_upload_to_loaded_seconds_count", engine="default") == 2
    assert sample(reg, "icefeed_upload_to_loaded_seconds_sum", engine="default") == pytest.approx(42 + 2)
    assert sample(reg, "icefeed_records_rejected_total", ingestion="events") is None  # none rejected
    metrics.files_finalized([FileResult(1, "LOADED", 3, rows_rejected=2, bad_records="s3://x/y")], files[:1])
    assert sample(reg, "icefeed_records_rejected_total", ingestion="events") == 2


def test_file_outcome_maps_ledger_statuses(metrics: Metrics) -> None:
    metrics.file_outcome("GONE", 2)
    metrics.file_outcome("SKIPPED")
    metrics.file_outcome("FAILED", 0)
    metrics.file_outcome("CLAIMED", 5)
    reg = metrics.registry
    assert sample(reg, "icefeed_files_total", outcome="gone") == 2
    assert sample(reg, "icefeed_files_total", outcome="skipped") == 1
    assert sample(reg, "icefeed_files_total", outcome="failed") == 0
    assert 'outcome="claimed"' not in generate_latest(reg).decode()


def test_oldest_message_age_covers_held_and_recently_received_messages(metrics: Metrics, clock: Clock) -> None:
    url = "https://sqs.eu-west-1.amazonaws.com/111122223333/landing"
    held: list[datetime | None] = []
    metrics.watch_oldest(url, lambda: held)
    reg = metrics.registry

    def age() -> float | None:
        return sample(reg, "icefeed_queue_oldest_message_age_seconds", queue="landing")

    assert age() == 0  # nothing held, nothing received
    clock.now = (T0 + timedelta(seconds=300)).timestamp()
    metrics.received(url, [T0, T0 + timedelta(seconds=200), None])  # received 300 s and 100 s old
    assert sample(reg, "icefeed_messages_received_total") == 3
    assert age() == pytest.approx(300)
    clock.now += RECENT_WINDOW_S + 1  # acked at once, and the window has passed
    assert age() == 0
    held.append(T0 + timedelta(seconds=100))  # a message held since then keeps ageing
    assert age() == pytest.approx(300 + RECENT_WINDOW_S + 1 - 100)


def test_queue_names_come_from_urls_and_arns() -> None:
    assert queue_name("https://sqs.eu-west-1.amazonaws.com/111122223333/icefeed-landing") == "icefeed-landing"
    assert queue_name("http://127.0.0.1:5000/123456789012/q-abc/") == "q-abc"
    assert queue_name("arn:aws:sqs:eu-west-1:111122223333:icefeed-landing-dlq") == "icefeed-landing-dlq"


async def test_a_refresh_sets_the_shared_gauges_and_a_failing_source_keeps_the_last_value(metrics: Metrics) -> None:
    depth = {"q": {"visible": 4, "inflight": 2, "delayed": 1}, "q-dlq": {"visible": 1, "inflight": 0, "delayed": 0}}
    broken = False

    async def depths(url: str) -> dict[str, dict[str, int]]:
        if broken:
            raise RuntimeError("SQS unreachable")
        return depth

    async def quarantined() -> int:
        if broken:
            raise RuntimeError("PostgreSQL unreachable")
        return 3

    reg = metrics.registry
    assert await metrics.refresh(["https://sqs.local/q"], depths, quarantined)
    assert sample(reg, "icefeed_queue_messages", queue="q", kind="visible") == 4
    assert sample(reg, "icefeed_queue_messages", queue="q-dlq", kind="visible") == 1
    assert sample(reg, "icefeed_quarantined_files") == 3
    broken = True
    assert not await metrics.refresh(["https://sqs.local/q"], depths, quarantined)
    assert sample(reg, "icefeed_queue_messages", queue="q", kind="visible") == 4
    assert sample(reg, "icefeed_quarantined_files") == 3


def test_inflight_files_is_read_at_scrape_time(metrics: Metrics) -> None:
    held = {1: "a", 2: "b"}
    metrics.watch_inflight(lambda: len(held))
    assert sample(metrics.registry, "icefeed_inflight_files") == 2
    held.clear()
    assert sample(metrics.registry, "icefeed_inflight_files") == 0


def test_stage_timer_observes_once(metrics: Metrics) -> None:
    with metrics.stage("claim"):
        pass
    assert sample(metrics.registry, "icefeed_stage_duration_seconds_count", stage="claim") == 1
    assert sample(metrics.registry, "icefeed_stage_duration_seconds_count", stage="finalize") == 0


def test_the_recent_receipts_stay_bounded_without_scrapes(metrics: Metrics, clock: Clock) -> None:
    url = "https://sqs.local/1/q"
    for _ in range(1000):
        clock.now += 1
        metrics.received(url, [datetime.fromtimestamp(clock.now - 5, UTC)])
    assert len(metrics._recent["q"]) <= RECENT_WINDOW_S + 1
