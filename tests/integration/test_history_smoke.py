"""The long-history scenario (``python -m load history``) on its smallest preset: it starts its
own stack, makes 6 commits of 2 files on one table, samples the table every 2 commits and
writes the report and the plot. This asserts the report's shape and that its numbers are sane
(one commit per round, metadata grows, every row exactly once), never speed."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from load.history import REPORT_KEYS, RUN_KEYS, SAMPLE_KEYS
from tests.integration.load_support import run_load

pytestmark = pytest.mark.integration

TIMEOUT_S = 300


def test_history_smoke_report_is_complete_and_sane(tmp_path: Path) -> None:
    out, plot = tmp_path / "h.json", tmp_path / "h.png"
    code, log = run_load(["history", "--smoke", "--out", str(out), "--chart", str(plot)], TIMEOUT_S)

    assert code == 0, log[-4000:]
    report = json.loads(out.read_text())
    assert not [k for k in REPORT_KEYS if k not in report], report.keys()
    assert report["ok"] is True and report["errors"] == []
    assert report["kind"] == "history" and report["maintenance"] == "off"
    assert report["code"]["git_head"]
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["python"]
    sc = report["settings"]["scenario"]
    assert (sc["commits"], sc["files_per_commit"], sc["sample_every"]) == (6, 2, 2)

    run = report["runs"]["off"]
    assert not [k for k in RUN_KEYS if k not in run], run.keys()
    # Exactly the commits asked, each of exactly F files: one table snapshot per commit.
    assert run["commits"] == 6
    assert run["batches_committed"] == 6 and run["batches_exact"] == 6
    assert run["snapshots"] == 6 and run["append_snapshots"] == 6
    assert len(run["holds_s"]) == 6 and all(h > 0 for h in run["holds_s"])
    c = run["correctness"]
    assert (c["staged_files"], c["lost_files"], c["duplicated_rows"], c["ledger_mismatches"]) == (12, 0, 0, 0)

    samples = run["samples"]
    assert [s["commit"] for s in samples] == [1, 2, 4, 6]
    for s in samples:
        assert not [k for k in SAMPLE_KEYS if k not in s], s.keys()
        assert s["manifests"] >= 1 and s["data_files"] >= 1 and s["plan_ms"] > 0
        assert len(s["plan_ms_runs"]) == 3
        assert s["snapshots"] == s["commit"]  # no maintenance: every snapshot is kept
    sizes = [s["metadata_json_bytes"] for s in samples]
    assert all(a < b for a, b in itertools.pairwise(sizes)), sizes  # metadata.json grows
    assert samples[-1]["data_files"] >= samples[0]["data_files"]
    assert samples[-1]["metadata_objects"] > samples[0]["metadata_objects"]
    assert [row["commit"] for row in run["summary"]] == [6]
    assert plot.exists() and plot.stat().st_size > 0
    assert "RESULT: OK" in log
