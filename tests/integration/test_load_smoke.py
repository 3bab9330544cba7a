"""The load harness end to end on its smallest preset: it starts its own stack, runs every phase
(ceiling, naive loop, 1-worker and K-worker drains, latency) and checks the table with pyiceberg.
This asserts correctness and the report's shape, never speed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from load.report import REPORT_KEYS
from tests.integration.load_support import run_load

pytestmark = pytest.mark.integration

TIMEOUT_S = 600


def test_load_smoke_run_is_correct_and_complete(tmp_path: Path) -> None:
    out, chart = tmp_path / "r.json", tmp_path / "r.png"
    code, log = run_load(["run", "--smoke", "--out", str(out), "--chart", str(chart)], TIMEOUT_S)

    assert code == 0, log[-4000:]
    report = json.loads(out.read_text())
    missing = [key for key in REPORT_KEYS if key not in report]
    assert not missing, f"report lacks {missing}"
    assert report["lost_files"] == 0, report["correctness"]
    assert report["duplicated_rows"] == 0, report["correctness"]
    assert report["correctness"]["staged_files"] > 0
    assert report["ok"] is True and report["errors"] == []
    for key in ("ceiling_msgs_per_s", "naive_files_per_s", "files_per_s_1", "files_per_s_k", "p50_latency_s"):
        assert isinstance(report[key], int | float) and report[key] > 0, (key, report[key])
    assert report["k"] == 2
    assert report["machine"]["cpu_count"] >= 1
    assert chart.exists() and chart.stat().st_size > 0
    assert "RESULT: OK" in log
