"""``icefeed cost``: the pure model (worker/domain/cost.py) against figures worked out by hand, the
ledger summary, and the command's parsing and output."""

from __future__ import annotations

import argparse
import io
import json
import math
from contextlib import redirect_stdout
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.unit.cost_snapshot import MECH, PRICES
from worker.__main__ import _parser
from worker.admin import cost as admin_cost
from worker.admin.cli import cost_options, run
from worker.domain import cost
from worker.domain.errors import ConfigError
from worker.domain.maintenance import MaintenancePolicy
from worker.observability.logging import Redactor
from worker.routes import parse_routes
from worker.settings import Settings

# 3000 files a day reach the one poller at λ = 3000 / 86400 per second. The long-poll wait is
# chosen so that λ·W = ln 2: then e^(λW) − 1 = 1 and empty receives per second = λ exactly.
RATE = 3000 / 86400
W = math.log(2) / RATE  # 19.96 s
FLEET = cost.Fleet(
    workers=1,
    queues=1,
    receivers_per_queue=1,
    wait_time_s=W,
    max_messages=10,
    batch_max_files=200,
    batch_max_wait_s=1.0,
    output_files=1,
    maintenance=None,
)
WORK = cost.Workload(
    files_per_day=3000,
    tables=1,
    engine_s_per_commit=2.0,
    engine_s_per_file=0.1,
    messages_per_receive=2,
    files_per_commit=30,
    poll_interval_s=W,
)


def by_item(s: cost.Scenario) -> dict[str, float]:
    return {line.item: line.quantity for line in s.lines}


# --------------------------------------------------------------------------- the small scenario


def test_icefeed_month_worked_out_by_hand() -> None:
    est = cost.estimate(WORK, FLEET, MECH, PRICES)
    s = est.scenario("icefeed")
    q = by_item(s)
    # 3000 files a day × 30 days = 90,000 files; 30 per commit → 3,000 commits.
    assert s.files_per_month == 90_000
    assert s.commits_per_month == pytest.approx(3_000)
    assert s.commits_per_1000_files == pytest.approx(1000 / 30)
    # SQS: 90,000 ÷ 2 messages per receive = 45,000 receives; empty polls: λ per second (see W)
    # × 2,592,000 s = 90,000; deletes: ⌈30 / 10⌉ = 3 per commit × 3,000 = 9,000; no retries.
    assert q["ReceiveMessage"] == pytest.approx(45_000)
    assert q["ReceiveMessage (empty)"] == pytest.approx(90_000)
    assert q["DeleteMessageBatch"] == pytest.approx(9_000)
    assert q["ChangeMessageVisibilityBatch"] == 0
    assert s.quantity("SQS") == pytest.approx(144_000)
    assert s.component_usd("SQS") == pytest.approx(144_000 * 0.40 / 1e6)  # $0.0576
    # S3 reads: one GET per file by the worker (small JSON), 2 metadata GETs per commit:
    # 90,000 + 6,000 = 96,000 × $0.0004 / 1000 = $0.0384.
    assert q["GetObject by the worker"] == pytest.approx(90_000)
    assert s.quantity("S3 reads") == pytest.approx(96_000)
    assert s.component_usd("S3 reads") == pytest.approx(0.0384)
    # S3 writes: 1 data file + 3 metadata objects per commit = 12,000 × $0.005 / 1000 = $0.06.
    assert s.quantity("S3 writes") == pytest.approx(12_000)
    assert s.component_usd("S3 writes") == pytest.approx(0.06)
    # Catalog: 3 calls per commit = 9,000 × $1 / 1e6 = $0.009.
    assert s.quantity("catalog") == pytest.approx(9_000)
    assert s.component_usd("catalog") == pytest.approx(0.009)
    # Engine: 3,000 commits × 2 s + 90,000 files × 0.1 s = 15,000 s = 4.1667 h × $0.72 = $3.00.
    assert s.component_usd("engine") == pytest.approx(3.00)
    # PostgreSQL: $50 a month; workers: 1 × 730 h × $0.05 = $36.50.
    assert s.component_usd("PostgreSQL") == pytest.approx(50.0)
    assert s.component_usd("workers") == pytest.approx(36.50)
    # Total: 0.0576 + 0.0384 + 0.06 + 0.009 + 3.00 + 50 + 36.50 = $89.665.
    assert s.total_usd == pytest.approx(89.665)
    assert s.per_file("SQS") == pytest.approx(144_000 / 90_000)


def test_per_file_loop_month_worked_out_by_hand() -> None:
    s = cost.estimate(WORK, FLEET, MECH, PRICES).scenario("per-file loop")
    q = by_item(s)
    # One commit per file: 90,000 commits. SQS: the same 45,000 + 90,000 receives, and one
    # DeleteMessage per file: 225,000 × $0.40 / 1e6 = $0.09.
    assert s.commits_per_month == 90_000
    assert q["DeleteMessage"] == 90_000
    assert s.component_usd("SQS") == pytest.approx(0.09)
    # S3 reads: the engine reads every file (3 requests) and each commit reads 2 metadata objects:
    # 270,000 + 180,000 = 450,000 × $0.0004 / 1000 = $0.18.
    assert s.quantity("S3 reads") == pytest.approx(450_000)
    assert s.component_usd("S3 reads") == pytest.approx(0.18)
    # S3 writes: (1 + 3) × 90,000 = 360,000 → $1.80; catalog 3 × 90,000 = 270,000 → $0.27.
    assert s.component_usd("S3 writes") == pytest.approx(1.80)
    assert s.component_usd("catalog") == pytest.approx(0.27)
    # Engine: 90,000 × (2 + 0.1) s = 189,000 s = 52.5 h × $0.72 = $37.80. No ledger.
    assert s.component_usd("engine") == pytest.approx(37.80)
    assert s.component_usd("PostgreSQL") == 0
    # 0.09 + 0.18 + 1.80 + 0.27 + 37.80 + 36.50 = $76.64.
    assert s.total_usd == pytest.approx(76.64)
    assert not any("cannot keep up" in n for n in s.notes)  # 0.035 commits/s × 2.1 s < 1


def test_polling_month_worked_out_by_hand() -> None:
    s = cost.estimate(WORK, FLEET, MECH, PRICES).scenario(f"polling {W:.4g} s")
    q = by_item(s)
    # A poll every W s: 2,592,000 / W = 90,000 / ln 2 polls, each finding ln 2 files on average
    # (one page each); Poisson arrivals: a poll finds a file with probability 1 − e^(−ln 2) = 1/2.
    polls = 90_000 / math.log(2)
    commits = polls / 2
    assert q["ListObjectsV2"] == pytest.approx(polls)
    assert s.commits_per_month == pytest.approx(commits)
    # GET: 90,000 files + 2 metadata reads per commit; PUT: LIST + (1 + 3) per commit.
    assert s.quantity("S3 reads") == pytest.approx(90_000 + 2 * commits)
    assert s.quantity("S3 writes") == pytest.approx(polls + 4 * commits)
    assert s.quantity("SQS") == 0
    # Engine: commits × 2 s + 90,000 × 0.1 s.
    assert s.component_usd("engine") == pytest.approx((commits * 2 + 9_000) / 3600 * 0.72)
    assert s.component_usd("PostgreSQL") == 0


def test_maintenance_requests_worked_out_by_hand() -> None:
    with_m = cost.estimate(WORK, replace(FLEET, maintenance=MaintenancePolicy()), MECH, PRICES).scenario("icefeed")
    without = cost.estimate(WORK, FLEET, MECH, PRICES).scenario("icefeed")
    # Default policy: a run every 300 s → 2,592,000 / 300 = 8,640 runs; 3,000 commits (1 data file
    # each) ÷ 50 = 60 compactions (fewer than the runs); orphans daily: 30 runs. Live manifests
    # L = max(50, 3,000 / 8,640) = 50.
    # GET: runs 8,640 × (4 + 2 × 50) = 898,560; compactions 3,000 × 2 + 60 × (3 + 100) = 12,180;
    # orphan scans 30 × (1 + 50) = 1,530.
    assert with_m.quantity("S3 reads") - without.quantity("S3 reads") == pytest.approx(898_560 + 12_180 + 1_530)
    # PUT: 8,640 expiry commits + 60 × 5 + 30 × 2 LIST = 9,000.
    assert with_m.quantity("S3 writes") - without.quantity("S3 writes") == pytest.approx(9_000)
    # Catalog: 8,640 × 4 + 60 × 4 + 30 = 34,830.
    assert with_m.quantity("catalog") - without.quantity("catalog") == pytest.approx(34_830)


# --------------------------------------------------------------------------- the pieces


def test_empty_receives_per_poller() -> None:
    assert cost.empty_receives_per_s(0.0, 20) == pytest.approx(1 / 20)  # idle: 3 a minute
    assert cost.empty_receives_per_s(RATE, W) == pytest.approx(RATE)  # λW = ln 2
    assert cost.empty_receives_per_s(10.0, 20) < 1e-80  # busy: next to none
    assert cost.empty_receives_per_s(100.0, 20) == 0.0  # e^2000 would overflow
    assert cost.empty_receives_per_s(1.0, 0) == 1.0  # short polling


def test_delete_calls_per_batch() -> None:
    assert cost.delete_calls_per_batch(30, 1, 1) == 3  # one queue: ⌈30 / 10⌉
    assert cost.delete_calls_per_batch(31, 1, 1) == 4
    # Two queues, receives of 10: g = 2 groups, K ~ Binomial(2, 1/2) from one queue:
    # P(0) = 1/4 → 0 calls, P(1) = 1/2 → 1, P(2) = 1/4 → ⌈20/10⌉ = 2; E = 1 per queue, 2 in all.
    assert cost.delete_calls_per_batch(20, 2, 10) == pytest.approx(2)
    # Two queues, one message per receive: g = 2, a queue holds 0, 1 or 2 messages: each
    # non-empty share is one call; E = 2 × (1/2 × 1 + 1/4 × 1) = 1.5.
    assert cost.delete_calls_per_batch(2, 2, 1) == pytest.approx(1.5)
    # A batch that is not a whole number of receives: 25 messages in receives of 10 from two
    # queues are 2 full receives and one of 5. A queue holds 0, 1 or 2 full ones (P 1/4, 1/2,
    # 1/4) and the 5 with P 1/2: ⌈0⌉,⌈5⌉ → 0,1; ⌈10⌉,⌈15⌉ → 1,2; ⌈20⌉,⌈25⌉ → 2,3; per queue
    # E = 1/4 × 1/2 + 1/2 × 3/2 + 1/4 × 5/2 = 1.5, so 3 in all (not 2 receives of 12.5 each).
    assert cost.delete_calls_per_batch(25, 2, 10) == pytest.approx(3)


def test_batching_bounds() -> None:
    ten_per_s = replace(WORK, files_per_day=10 * 86400, files_per_commit=None)
    # Wait bound: 10 files/s ÷ 2 workers × 1 s = 5; lock bound 10 × 0.05 ÷ (1 − 10 × 0.01) = 0.556.
    b = cost.batching(replace(ten_per_s, engine_s_per_commit=0.05, engine_s_per_file=0.01), replace(FLEET, workers=2))
    assert (b.files_per_commit, b.bound) == (pytest.approx(5), "wait")
    # Lock bound: 10 × 1 ÷ (1 − 10 × 0.02) = 12.5 > 5.
    b = cost.batching(replace(ten_per_s, engine_s_per_commit=1.0, engine_s_per_file=0.02), replace(FLEET, workers=2))
    assert (b.files_per_commit, b.bound) == (pytest.approx(12.5), "lock")
    # 100 files/s × 0.02 s per file ≥ 1: no batch size keeps up.
    hundred = replace(ten_per_s, files_per_day=100 * 86400, engine_s_per_commit=1.0, engine_s_per_file=0.02)
    b = cost.batching(hundred, FLEET)
    assert (b.files_per_commit, b.bound) == (200, "overloaded")
    assert any("cannot absorb" in n for n in cost.estimate(hundred, FLEET, MECH, PRICES).scenario("icefeed").notes)
    # 1000 files/s on one worker waits for 1000 files in 1 s, more than the 200 a batch takes;
    # 1000 × 0.01 s = 10 ≤ 200: the table keeps up at 200.
    fast = replace(ten_per_s, files_per_day=1000 * 86400, engine_s_per_commit=0.01, engine_s_per_file=0.0)
    assert cost.batching(fast, FLEET).bound == "max_files"
    assert cost.batching(WORK, FLEET).bound == "input"
    assert cost.batching(WORK, FLEET, measured=True).bound == "measured"


def test_engine_fit() -> None:
    # 100 files a commit in 3 s on average, intercept 1 s: 1 s fixed + 2 s / 100 files.
    fit = cost.engine_fit(100, 3.0, 1.0)
    assert (fit.per_commit_s, fit.per_file_s) == (pytest.approx(1.0), pytest.approx(0.02))
    assert cost.engine_fit(100, 3.0, None).per_commit_s == 3.0  # no fit: all fixed (upper bound)
    assert cost.engine_fit(100, 3.0, -0.5).per_commit_s == 0.0  # clamped
    assert cost.engine_fit(100, 3.0, 5.0).per_file_s == 0.0
    with pytest.raises(ConfigError):
        cost.engine_fit(0, 3.0, None)


@pytest.mark.parametrize(
    "change",
    [
        {"files_per_day": 0},
        {"messages_per_receive": 11},
        {"engine_read_fraction": 1.5},
        {"files_per_commit": 0.5},
        {"engine_s_per_commit": -1},
        {"poll_interval_s": 0},
    ],
)
def test_bad_workloads_are_refused(change: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        replace(WORK, **change)


# --------------------------------------------------------------------------- the ledger summary


def test_ledger_summary_worked_out_by_hand() -> None:
    routes = parse_routes(
        """
[[ingestion]]
name = "orders"
bucket = "land"
prefix = "orders/"
format = "json"
table = "glue.db.orders"
location = "s3://wh/db/orders"

[[ingestion]]
name = "returns"
bucket = "land"
prefix = "returns/"
format = "csv"
table = "glue.db.returns"
location = "s3://wh/db/returns"
"""
    )
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    row = {"now": now, "first_finished_at": now - timedelta(days=2)}  # a ledger two days old
    raw = {
        "files": [
            {**row, "ingestion": "orders", "files": 900, "bytes": 9_000_000, "rows": 9_000, "small_files": 890,
             "retries": 9},
            {**row, "ingestion": "returns", "files": 100, "bytes": 1_000_000, "rows": 1_000, "small_files": 100,
             "retries": 1},
        ],
        "batches": {"commits": 40, "tables": 2, "owners": 3, "files": 1000, "timed": 40, "engine_s_mean": 3.0,
                    "timed_files_mean": 25.0, "engine_s_intercept": 0.5, "engine_s_slope": 0.1},
        "size": {"files_bytes": 500_000, "files_rows": 1000},
    }  # fmt: skip
    m = admin_cost.summarize(raw, routes, 7)
    # 1000 files over 2 days observed (the window is 7, the ledger younger): 500 a day.
    assert m["observed_days"] == pytest.approx(2)
    assert m["files_per_day"] == pytest.approx(500)
    assert m["avg_file_bytes"] == pytest.approx(10_000)
    assert m["rows_per_file"] == pytest.approx(10)
    # Engine-read: the 10 big JSON files of orders + all 100 CSV files = 110 of 1000.
    assert m["engine_read_fraction"] == pytest.approx(0.11)
    assert m["retry_fraction"] == pytest.approx(0.01)
    assert m["files_per_commit"] == pytest.approx(25)
    # Fit: 0.5 s fixed, (3.0 − 0.5) / 25 = 0.1 s per file.
    assert (m["engine_s_per_commit"], m["engine_s_per_file"]) == (pytest.approx(0.5), pytest.approx(0.1))
    assert m["ledger_bytes_per_file"] == pytest.approx(500)
    assert admin_cost.summarize({"files": [], "batches": None, "size": None}, None, 7) == {"days": 7, "files": 0}


def test_measured_figures_feed_the_estimate_and_flags_win(tmp_path: Path) -> None:
    settings = Settings(routes_file=tmp_path / "none.toml")
    measured = {"days": 7, "files": 1000, "observed_days": 2.0, "files_per_day": 500.0, "avg_file_bytes": 10_000.0,
                "rows_per_file": 10.0, "engine_read_fraction": 0.11, "retry_fraction": 0.01, "commits": 40,
                "tables": 2, "lease_owners": 3, "files_per_commit": 25.0, "timed_commits": 40,
                "engine_s_mean": 3.0, "engine_s_per_commit": 0.5, "engine_s_per_file": 0.1,
                "engine_fit": "least squares"}  # fmt: skip
    r = admin_cost.build(settings, None, admin_cost.CostOptions(from_ledger=True), measured)
    sources = {i["name"]: i["source"] for i in r["inputs"]}
    values = {i["name"]: i["value"] for i in r["inputs"]}
    assert values["files_per_day"] == 500 and sources["files_per_day"].startswith("ledger")
    assert values["files_per_commit"] == 25 and r["batching"]["bound"] == "measured"
    assert values["engine_s_per_commit"] == 0.5
    # A projected volume keeps the measured engine time but predicts its own batches.
    r = admin_cost.build(settings, None, admin_cost.CostOptions(from_ledger=True, files_per_day=1e6), measured)
    values = {i["name"]: i["value"] for i in r["inputs"]}
    assert values["files_per_day"] == 1e6 and values["engine_s_per_file"] == 0.1
    assert r["batching"]["bound"] in ("wait", "lock")


# --------------------------------------------------------------------------- the command


def parse(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(["cost", *argv])


def test_cost_flags_parse_into_options() -> None:
    options = cost_options(
        parse("--files-per-day", "1e6", "--avg-file-bytes", "20000", "--tables", "3", "--workers", "2",
              "--messages-per-receive", "4", "--format", "csv", "--retry-pct", "2", "--poll-interval-s", "30")
    )  # fmt: skip
    assert options == admin_cost.CostOptions(
        files_per_day=1e6,
        avg_file_bytes=20000,
        tables=3,
        workers=2,
        messages_per_receive=4,
        file_format="csv",
        retry_pct=2,
        poll_interval_s=30,
    )
    assert cost_options(parse("--from-ledger", "--days", "3")).from_ledger
    with pytest.raises(SystemExit):
        parse("--format", "xml")


@pytest.mark.parametrize(
    "argv",
    [(), ("--files-per-day", "10", "--days", "0"), ("--files-per-day", "10", "--tables", "0")],
)
def test_cost_refuses_what_it_cannot_price(argv: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError):
        cost_options(parse(*argv)).check()


def test_cost_command_prints_the_model_in_json_and_text(tmp_path: Path) -> None:
    settings = Settings(routes_file=tmp_path / "none.toml")
    args = parse("--files-per-day", "3000", "--files-per-commit", "30", "--json")
    out = io.StringIO()
    with redirect_stdout(out):
        assert run(args, settings, Redactor()) == 0
    result = json.loads(out.getvalue())
    names = [s["name"] for s in result["scenarios"]]
    assert names == ["icefeed", "per-file loop", "polling 60 s"]
    expected = admin_cost.build(settings, None, cost_options(args), None)["scenarios"][0]["total_usd"]
    assert result["scenarios"][0]["total_usd"] == pytest.approx(expected)
    assert {c for s in result["scenarios"] for c in s["components_usd"]} == set(cost.COMPONENTS)
    text = io.StringIO()
    with redirect_stdout(text):
        assert run(parse("--files-per-day", "3000"), settings, Redactor()) == 0
    shown = text.getvalue()
    for heading in ("monthly cost, USD", "per file", "icefeed, line by line:", "DeleteMessageBatch", "total"):
        assert heading in shown


def test_cost_without_a_volume_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(parse(), Settings(routes_file=tmp_path / "none.toml"), Redactor()) == 2
    assert "--files-per-day" in capsys.readouterr().err


# --------------------------------------------------------------------------- the whole report


def test_every_line_of_the_report_matches_its_snapshot() -> None:
    """Labels, units, formulas, notes and figures of a dozen fleets (tests/unit/cost_snapshot.py);
    after a deliberate change: ``python -m tests.unit.cost_snapshot``."""
    from tests.unit.cost_snapshot import SNAPSHOT, snapshot
    from tests.unit.snapshot_check import assert_matches

    assert_matches(SNAPSHOT, snapshot())


# --------------------------------------------------------------------------- refusals and edges


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"files_per_day": 0}, "files per day must be positive, got 0"),
        ({"tables": 0}, "tables and poll prefixes must be at least 1"),
        ({"poll_prefixes": 0}, "tables and poll prefixes must be at least 1"),
        ({"messages_per_receive": 11}, "messages per receive must be between 1 and 10, got 11"),
        ({"messages_per_receive": 0.5}, "messages per receive must be between 1 and 10, got 0.5"),
        ({"engine_read_fraction": 1.5}, "engine read fraction must be between 0 and 1, got 1.5"),
        ({"files_per_commit": 0.5}, "files per commit must be at least 1, got 0.5"),
        ({"engine_s_per_file": -1}, "engine_s_per_file must be 0 or more, got -1"),
        ({"poll_interval_s": 0}, "poll interval must be positive, got 0"),
    ],
)
def test_a_bad_workload_is_refused_by_name(change: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        replace(WORK, **change)
    assert str(info.value) == message


def test_the_edges_of_a_workload_and_a_fleet_are_accepted() -> None:
    edges = {"files_per_day": 0.5, "messages_per_receive": 1, "engine_read_fraction": 1, "files_per_commit": 1}
    edges |= {"engine_s_per_commit": 0, "retry_fraction": 0, "poll_interval_s": 0.5, "tables": 1}
    assert replace(WORK, **edges).files_per_day == 0.5
    assert replace(FLEET, wait_time_s=0, batch_max_wait_s=0, workers=1).pollers == 1
    assert cost.Prices(*([0.0] * 7)).pg_usd_per_month == 0.0
    assert cost.Mechanics(0, 0, 0, 0).engine_reads_per_file == 0


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: replace(FLEET, queues=0), "queues must be at least 1, got 0"),
        (lambda: replace(FLEET, wait_time_s=-1), "wait times must be 0 or more"),
        (lambda: replace(FLEET, batch_max_wait_s=-0.5), "wait times must be 0 or more"),
        (lambda: replace(PRICES, engine_usd_per_hour=-1), "price engine_usd_per_hour must be 0 or more, got -1"),
        (lambda: replace(MECH, engine_reads_per_file=-2), "engine_reads_per_file must be 0 or more, got -2"),
        (lambda: cost.engine_fit(0, 3.0, None), "engine fit needs commits with files and a non-negative time"),
        (lambda: cost.engine_fit(5, -0.1, None), "engine fit needs commits with files and a non-negative time"),
    ],
)
def test_other_refusals_name_the_value(build: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert str(info.value) == message


def test_engine_fit_says_how_it_split_the_time() -> None:
    assert cost.engine_fit(0.5, 0.0, None) == cost.EngineFit(
        0.0, 0.0, "mean per commit (no fit: the commits all had the same number of files)"
    )
    assert cost.engine_fit(100, 3.0, math.inf).how.startswith("mean per commit")
    assert cost.engine_fit(100, 3.0, 1.0).how == "least squares over the commits, clamped"


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (0, "0"),
        (1234567, "1,234,567"),
        (99.99, "99.99"),
        (100, "100"),
        (100.25, "100.2"),
        (0.123456, "0.1235"),
        (2.0000000001, "2"),
        (1e15 - 1, "999,999,999,999,999"),
        (100.04, "100.0"),
        (99.04, "99.04"),
        (1e6 + 1e-4, "1,000,000"),
        (1e15, "1,000,000,000,000,000.0"),
    ],
)
def test_numbers_in_formulas(x: float, text: str) -> None:
    assert cost._n(x) == text
