"""The long-history scenario (``python -m load history``) on its smallest preset: it starts its
own stack and, for each maintenance mode (off, then on, each on its own table), makes 6 commits
of 2 files, samples the table every 2 commits, and writes one report and one plot. This asserts
the report's shape and that its numbers are sane (one commit per round, every row exactly once,
metadata grows without maintenance, maintenance steps logged and parsed with it), never speed.

Mode on needs a worker that knows the routes' ``[maintenance]`` block. A worker that does not
must refuse it: then the harness reports mode on as failed (exit 1) and still measures mode off."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from load.bench import percentile, rnd
from load.history import (
    MAINTENANCE_OFF,
    REPORT_KEYS,
    RUN_KEYS,
    SAMPLE_KEYS,
    WINDOW_FIGURES,
    maintenance_toml,
    worker_knows_maintenance,
)
from tests.integration.load_support import run_load

pytestmark = pytest.mark.integration

TIMEOUT_S = 420
COMMITS, FILES, WINDOW = 6, 2, 3  # the smoke preset


def test_history_smoke_report_is_complete_and_sane(tmp_path: Path) -> None:
    out, plot = tmp_path / "h.json", tmp_path / "h.png"
    code, log = run_load(["history", "--smoke", "--out", str(out), "--chart", str(plot)], TIMEOUT_S)

    report = json.loads(out.read_text())
    assert not [k for k in REPORT_KEYS if k not in report], report.keys()
    assert report["kind"] == "history" and report["maintenance"] == ["off", "on"]
    assert report["code"]["git_head"]
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["python"]
    sc = report["settings"]["scenario"]
    assert (sc["commits"], sc["files_per_commit"], sc["sample_every"], sc["window"]) == (COMMITS, FILES, 2, WINDOW)
    assert plot.exists() and plot.stat().st_size > 0
    tables = report["settings"]["tables"]
    assert tables["off"] != tables["on"] and tables["off"].endswith(".events_off")

    knows = worker_knows_maintenance()
    check_run(report["runs"]["off"], tables["off"])
    check_off(report["runs"]["off"], report, knows)
    if knows:
        assert code == 0, log[-4000:]
        assert report["ok"] is True and report["errors"] == [], report["errors"]
        check_run(report["runs"]["on"], tables["on"])
        check_on(report["runs"]["on"], report)
        assert "RESULT: OK" in log
    else:  # a worker without table maintenance refuses mode on's block: said, off still measured
        assert code == 1, log[-4000:]
        assert list(report["runs"]) == ["off"]
        assert len(report["errors"]) == 1 and report["errors"][0].startswith("on: "), report["errors"]
        assert "[maintenance]" in report["errors"][0]
        assert "RESULT: FAILED" in log


def check_run(run: dict[str, Any], table: str) -> None:
    """What every mode's run must show: exactly the commits asked, each of exactly F files, every
    row once, the samples and the summary's window computed from them."""
    assert not [k for k in RUN_KEYS if k not in run], run.keys()
    assert run["table"] == table
    assert run["commits"] == COMMITS
    assert run["batches_committed"] == COMMITS and run["batches_exact"] == COMMITS
    assert len(run["holds_s"]) == COMMITS and all(h > 0 for h in run["holds_s"])
    c = run["correctness"]
    assert (c["staged_files"], c["lost_files"], c["duplicated_rows"], c["ledger_mismatches"]) == (
        COMMITS * FILES,
        0,
        0,
        0,
    )
    samples = run["samples"]
    assert [s["commit"] for s in samples] == [1, 2, 4, 6]
    for s in samples:
        assert not [k for k in SAMPLE_KEYS if k not in s], s.keys()
        assert s["manifests"] >= 1 and s["data_files"] >= 1 and s["plan_ms"] > 0
        assert len(s["plan_ms_runs"]) == 3
    summary = run["summary"]
    assert [row["commit"] for row in summary["checkpoints"]] == [COMMITS]
    window = summary["window"]
    # The window starts at the first sample at or after a quarter of this short run.
    first = next(s for s in samples if s["commit"] >= COMMITS / 4)
    assert (window["from_commit"], window["to_commit"]) == (first["commit"], COMMITS)
    assert set(window["figures"]) == set(WINDOW_FIGURES)
    for key in ("metadata_json_bytes", "data_files", "plan_ms"):
        fig = window["figures"][key]
        assert (fig["first"], fig["last"]) == (first[key], samples[-1][key])
        assert fig["ratio"] == round(fig["last"] / fig["first"], 3)
    p95 = window["figures"]["hold_s_p95"]
    assert p95["last"] == rnd(percentile(run["holds_s"][COMMITS - WINDOW :], 95), 4)
    assert summary["maintenance"] == run["maintenance_stats"]


def check_off(run: dict[str, Any], report: dict[str, Any], knows: bool) -> None:
    """No maintenance: every snapshot kept, metadata.json grows, no verdict."""
    block = maintenance_toml(MAINTENANCE_OFF) if knows else None
    assert report["settings"]["maintenance_blocks"]["off"] == block
    assert run["maintenance_block"] == (MAINTENANCE_OFF if knows else None)
    assert run["snapshots"] == COMMITS and run["append_snapshots"] == COMMITS
    samples = run["samples"]
    assert all(s["snapshots"] == s["commit"] for s in samples)
    sizes = [s["metadata_json_bytes"] for s in samples]
    assert all(a < b for a, b in itertools.pairwise(sizes)), sizes
    assert samples[-1]["data_files"] >= samples[0]["data_files"]
    assert samples[-1]["metadata_objects"] > samples[0]["metadata_objects"]
    assert not [s for s in run["maintenance_steps"] if s.get("outcome") == "done"], run["maintenance_steps"]
    assert run["summary"]["window"]["flat"] is None


def check_on(run: dict[str, Any], report: dict[str, Any]) -> None:
    """Maintenance on: the block written as asked, its steps logged after the last commit,
    parsed and counted, none failed, and a flatness verdict per figure."""
    block = report["settings"]["scenario"]["maintenance_on"]
    assert block["enabled"] is True
    assert run["maintenance_block"] == block
    assert report["settings"]["maintenance_blocks"]["on"] == maintenance_toml(block)
    assert run["settle_s"] is not None  # a step followed the last commit
    steps = run["maintenance_steps"]
    stats = run["maintenance_stats"]
    assert stats["steps"] == len(steps) >= 1
    assert all(s["table"].endswith("events_on") for s in steps), steps
    assert sum(n for by in stats["counts"].values() for n in by.values()) == len(steps)
    assert not [by for by in stats["counts"].values() if by.get("failed")], stats
    held = [float(s["held_s"]) for s in steps if float(s.get("held_s") or 0) > 0]
    assert stats["held_s_max"] == (rnd(max(held), 4) if held else 0.0)
    assert 0 <= stats["held_s_p95"] <= stats["held_s_max"]
    assert all(0 <= s["after_commit"] <= COMMITS for s in steps)
    assert run["append_snapshots"] <= COMMITS
    if stats["expired"]:
        assert run["snapshots"] < COMMITS + stats["counts"].get("compact", {}).get("done", 0)
    flat = run["summary"]["window"]["flat"]
    assert set(flat) == {"hold_s_p95", "metadata_json_bytes", "data_files", "plan_ms", "all"}
    assert all(isinstance(v, bool) for v in flat.values())
    files = run["summary"]["window"]["figures"]["data_files"]
    assert files["bound"] >= block["compact_min_files"]
    start = run["summary"]["window"]["from_commit"]
    assert files["max"] == max(s["data_files"] for s in run["samples"] if s["commit"] >= start)
