"""Alerts (PrometheusRule) and the Grafana dashboard against the metrics the workers expose."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlparse

import pytest
from conftest import K8S, one

COUNTERS = {
    "icefeed_messages_received_total",
    "icefeed_messages_acked_total",
    "icefeed_messages_requeued_total",
    "icefeed_files_total",
    "icefeed_rows_loaded_total",
    "icefeed_bytes_loaded_total",
    "icefeed_messages_dead_lettered_total",
    "icefeed_messages_rejected_total",
    "icefeed_messages_deferred_total",
    "icefeed_commit_conflicts_total",
    "icefeed_spark_reconnects_total",
    "icefeed_table_locks_lost_total",
    "icefeed_batch_leases_lost_total",
    "icefeed_zombie_rows_removed_total",
    "icefeed_maintenance_runs_total",
    "icefeed_records_rejected_total",
}
HISTOGRAMS = {
    "icefeed_batch_files",
    "icefeed_commit_duration_seconds",
    "icefeed_upload_to_loaded_seconds",
    "icefeed_stage_duration_seconds",
    "icefeed_maintenance_lock_hold_seconds",
}
# Per-table gauges: set by the one worker that maintains the table at a time (another worker may
# still export an older value), so every query reads them as max by (table), never sum.
TABLE_GAUGES = {
    "icefeed_table_snapshots",
    "icefeed_table_data_files",
    "icefeed_table_small_files",
    "icefeed_table_data_bytes",
    "icefeed_table_metadata_bytes",
    "icefeed_maintenance_last_success_timestamp_seconds",
}
GAUGES = {
    "icefeed_inflight_files",
    "icefeed_queue_messages",
    "icefeed_queue_oldest_message_age_seconds",
    "icefeed_quarantined_files",
    "icefeed_event_loop_lag_seconds",
    "icefeed_engine_circuit_open",
} | TABLE_GAUGES
MAINTENANCE_STEPS = {"expire", "compact", "orphans", "properties"}
# Series names a query may use: histograms are queried through their _bucket/_sum/_count series.
SERIES = COUNTERS | GAUGES | {f"{h}{s}" for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
LABEL_VALUES = {
    ("icefeed_files_total", "outcome"): {"loaded", "failed", "quarantined", "gone", "ignored", "skipped"},
    ("icefeed_queue_messages", "kind"): {"visible", "inflight", "delayed"},
    ("icefeed_stage_duration_seconds", "stage"): {"receive", "claim", "infer+write", "finalize"},
    ("icefeed_maintenance_runs_total", "step"): MAINTENANCE_STEPS | {"inspect"},  # inspect: reading the table failed
    ("icefeed_maintenance_runs_total", "outcome"): {"done", "skipped", "failed"},
    ("icefeed_maintenance_lock_hold_seconds_bucket", "step"): MAINTENANCE_STEPS,
}
PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}
REQUIRED_ALERTS = {
    "IcefeedDLQNotEmpty",
    "IcefeedOldestMessageOverSLO",
    "IcefeedHighErrorRatio",
    "IcefeedQuarantinedFilesWaiting",
    "IcefeedNoProgress",
    "IcefeedReplicasAtMax",
    "IcefeedZombieRowsRemoved",
    "IcefeedTableMaintenanceFailing",
    "IcefeedSmallFilesHigh",
    "IcefeedBadRecordsRising",
}
# Grafana's own variables; every other $variable a query uses must be defined in `templating`.
GRAFANA_VARIABLES = {"__rate_interval", "__interval", "__range"}
GRID_COLUMNS = 24  # a Grafana dashboard is 24 columns wide


def metric_names(expr: str) -> set[str]:
    """Metric names used by a PromQL expression (a small lexer, enough for these queries)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values, $variables)
    text = re.sub(r"\{[^{}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\b\d+(\.\d+)?([eE][-+]?\d+)?\b", " ", text)  # numbers
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        name = match.group(0)
        after = text[match.end() :].lstrip()
        if after.startswith("(") or name.lower() in PROMQL_KEYWORDS:
            continue  # a function or aggregation, or an operator keyword
        names.add(name)
    return names


def label_matchers(expr: str) -> list[tuple[str, str, str, str]]:
    """(metric, label, operator, value) of every equality matcher written as metric{label="v"}."""
    found = []
    for selector in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\{([^{}]*)\}", expr):
        for m in re.finditer(r'(\w+)\s*(=~|!=|!~|=)\s*"([^"]*)"', selector.group(2)):
            found.append((selector.group(1), m.group(1), m.group(2), m.group(3)))
    return found


def enclosing_aggregations(expr: str, name: str) -> list[tuple[str, set[str]]]:
    """For each use of metric `name` in `expr`, the aggregation written right around it as
    `op by (labels) (name...)`: (op, labels), or ("", set()) when there is none."""
    found = []
    for use in re.finditer(rf"(?<![\w:]){re.escape(name)}(?![\w:])", expr):
        agg = re.search(r"(\w+)\s+by\s*\(([^)]*)\)\s*\(\s*$", expr[: use.start()])
        found.append((agg.group(1), {label.strip() for label in agg.group(2).split(",")}) if agg else ("", set()))
    return found


def base_name(series: str) -> str:
    """The metric a series belongs to (a histogram's _bucket/_sum/_count → the histogram)."""
    base = re.sub(r"_(bucket|sum|count)$", "", series)
    return base if base in HISTOGRAMS else series


def github_anchors(markdown: str) -> set[str]:
    anchors = set(re.findall(r'<a\s+(?:id|name)="([^"]+)"', markdown))
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


@pytest.fixture(scope="module")
def alerts(by_kind) -> list[dict[str, Any]]:
    rule = one(by_kind, "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads((K8S / "dashboard.json").read_text(encoding="utf-8"))


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # collapsed rows
    return found


def _row(dashboard: dict[str, Any], title: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The row titled `title` and its panels: its own `panels` when collapsed, else the panels
    that follow it up to the next row."""
    top = dashboard["panels"]
    rows = [i for i, p in enumerate(top) if p["type"] == "row" and p["title"] == title]
    assert len(rows) == 1, f"expected one row {title!r}, found {len(rows)}"
    row = top[rows[0]]
    if row.get("collapsed"):
        return row, row["panels"]
    panels = []
    for panel in top[rows[0] + 1 :]:
        if panel["type"] == "row":
            break
        panels.append(panel)
    return row, panels


def _queries(dashboard: dict[str, Any], alerts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(panel title or alert name, PromQL) of every dashboard target and alert."""
    found = [(p["title"], t["expr"]) for p in _panels(dashboard) for t in p.get("targets", [])]
    return found + [(a["alert"], a["expr"]) for a in alerts]


# --- the lexer itself ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (le) (rate(a_bucket{x="y"}[5m]))', {"a_bucket"}),
        ("histogram_quantile(0.95, sum by (le) (rate(b_bucket[$__rate_interval])))", {"b_bucket"}),
        ("(x > 0) unless on (namespace) (sum(increase(y[15m])) > 0)", {"x", "y"}),
        ("absent(z) or vector(0)", {"z"}),
        ("a / clamp_min(b, 1e-9) > 0.05", {"a", "b"}),
        ('time() - max by (t) (g{n=~"$n"}) < 6 * 3600', {"g"}),
    ],
)
def test_metric_name_lexer(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


@pytest.mark.parametrize(
    ("expr", "found"),
    [
        ('max by (t) (g{x="y"}) / (max by (n, t) (h) > 0)', [("max", {"t"})]),
        ("sum(g) + max by (t) (g)", [("", set()), ("max", {"t"})]),
        ("sum by (t) (rate(g[5m]))", [("", set())]),
        ("max by (t) (g_other)", []),
    ],
)
def test_enclosing_aggregations(expr: str, found: list[tuple[str, set[str]]]) -> None:
    assert enclosing_aggregations(expr, "g") == found


# --- alerts --------------------------------------------------------------------------------------


def test_required_alerts_exist(alerts) -> None:
    names = {a["alert"] for a in alerts}
    assert names >= REQUIRED_ALERTS, f"missing {REQUIRED_ALERTS - names}"
    assert len(names) == len(alerts), "alert names are unique"


def test_every_alert_links_a_runbook_section_that_exists(alerts) -> None:
    anchors = github_anchors((K8S / "README.md").read_text(encoding="utf-8"))
    for alert in alerts:
        url = alert["annotations"].get("runbook_url", "")
        parsed = urlparse(url)
        assert parsed.path.endswith("infra/k8s/README.md"), f"{alert['alert']}: {url}"
        assert parsed.fragment in anchors, f"{alert['alert']}: no README anchor #{parsed.fragment}"
        assert parsed.fragment == alert["alert"].lower(), "one runbook section per alert, named after it"


def test_every_alert_is_actionable(alerts) -> None:
    for alert in alerts:
        assert alert["labels"]["severity"] in {"warning", "critical"}, alert["alert"]
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        assert re.fullmatch(r"\d+[smh]", alert["for"]), "a pending period avoids flapping pages"


def test_alerts_use_only_known_icefeed_metrics(alerts) -> None:
    for alert in alerts:
        names = metric_names(alert["expr"])
        assert names, alert["alert"]
        for name in names:
            if name.startswith("icefeed_"):
                assert name in SERIES, f"{alert['alert']}: unknown metric {name}"
            else:
                assert name.startswith("kube_horizontalpodautoscaler_"), f"{alert['alert']}: {name}"


def test_table_gauges_are_read_as_max_by_table(dashboard, alerts) -> None:
    seen = set()
    for where, expr in _queries(dashboard, alerts):
        for name in TABLE_GAUGES & metric_names(expr):
            for op, labels in enclosing_aggregations(expr, name):
                assert op == "max" and "table" in labels, (
                    f"{where}: {name} read as {op or 'no'} aggregation by {labels}"
                )
            seen.add(name)
    assert seen == TABLE_GAUGES, f"never queried: {TABLE_GAUGES - seen}"


def test_maintenance_failing_alert_does_not_need_a_success_to_fire(alerts) -> None:
    # A table that never succeeded (or not since its worker started) has no success gauge: the
    # failures must alert on their own, with the recent success only as an `unless` exception.
    expr = next(a["expr"] for a in alerts if a["alert"] == "IcefeedTableMaintenanceFailing")
    parts = re.split(r"\bunless\b", expr, maxsplit=1)
    assert len(parts) == 2, "the success gauge is an exception (unless), not a condition (and)"
    failures, exception = parts
    assert metric_names(failures) == {"icefeed_maintenance_runs_total"}
    assert ("icefeed_maintenance_runs_total", "outcome", "=", "failed") in label_matchers(failures)
    assert metric_names(exception) == {"icefeed_maintenance_last_success_timestamp_seconds"}


def test_table_health_alerts_point_at_the_operators_tools(alerts) -> None:
    description = {a["alert"]: a["annotations"]["description"] for a in alerts}
    failing = description["IcefeedTableMaintenanceFailing"]
    assert "icefeed maintain --table" in failing and "--dry-run" in failing and "maintenance_step" in failing
    assert "[maintenance] enabled = false" in description["IcefeedSmallFilesHigh"]


def test_dlq_alert_documents_the_cloudwatch_alternative() -> None:
    text = (K8S / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert "aws_sqs_approximate_number_of_messages_visible_average" in text


# --- dashboard -------------------------------------------------------------------------------------


def test_dashboard_is_valid_grafana_json(dashboard) -> None:
    assert dashboard["uid"] and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in _panels(dashboard):
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])


def test_every_dashboard_query_uses_only_the_workers_metrics(dashboard) -> None:
    queries = 0
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            names = metric_names(target["expr"])
            assert names, f"{panel['title']}: no metric in {target['expr']}"
            assert names <= SERIES, f"{panel['title']}: unknown {names - SERIES}"
            queries += 1
    assert queries >= 10


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_label_values_are_the_documented_ones(dashboard, alerts, source: str) -> None:
    exprs = (
        [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]
        if source == "dashboard"
        else [a["expr"] for a in alerts]
    )
    for expr in exprs:
        for metric, label, op, value in label_matchers(expr):
            allowed = LABEL_VALUES.get((metric, label))
            if allowed and op == "=":
                assert value in allowed, f"{metric}{{{label}={value!r}}}"


def test_dashboard_covers_the_main_signals(dashboard) -> None:
    used = set()
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            used |= metric_names(target["expr"])
    base = {base_name(n) for n in used}
    assert base >= (COUNTERS | GAUGES | HISTOGRAMS), f"not on the dashboard: {(COUNTERS | GAUGES | HISTOGRAMS) - base}"


def test_table_health_row_shows_every_maintenance_metric(dashboard) -> None:
    row, panels = _row(dashboard, "Table health")
    maintenance = TABLE_GAUGES | {n for n in COUNTERS | HISTOGRAMS if n.startswith("icefeed_maintenance_")}
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    used = {base_name(n) for e in exprs for n in metric_names(e)}
    assert used >= maintenance, f"not in the row: {maintenance - used}"
    assert any(re.search(r"icefeed_table_data_bytes\b.*/.*\bicefeed_table_data_files\b", e) for e in exprs), (
        "average file size: data bytes / data files"
    )
    below = row["gridPos"]["y"] + row["gridPos"]["h"]
    assert all(p["gridPos"]["y"] >= below for p in panels), "the row's panels are under it"


def test_dashboard_panels_do_not_overlap(dashboard) -> None:
    placed: list[tuple[str, dict[str, int]]] = []
    for panel in dashboard["panels"]:  # a collapsed row's panels are laid out when it opens
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= GRID_COLUMNS and g["y"] >= 0, panel["title"]
        for title, o in placed:
            apart = (
                g["x"] + g["w"] <= o["x"]
                or o["x"] + o["w"] <= g["x"]
                or g["y"] + g["h"] <= o["y"]
                or o["y"] + o["h"] <= g["y"]
            )
            assert apart, f"{panel['title']!r} overlaps {title!r}"
        placed.append((panel["title"], g))


def test_every_variable_a_panel_uses_is_defined(dashboard) -> None:
    variables = dashboard["templating"]["list"]
    defined = {v["name"] for v in variables} | GRAFANA_VARIABLES
    for item in [*_panels(dashboard), *variables]:
        used = set(re.findall(r"\$\{?(\w+)", json.dumps(item)))
        assert used <= defined, f"{item.get('title') or item['name']}: undefined {used - defined}"
