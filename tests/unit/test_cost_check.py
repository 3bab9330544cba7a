"""``python -m load cost-check``: the model's requests per file against a load report's counts.

The reports here are built from the model's own prediction, scaled: within the tolerance the
check passes, beyond it the figure fails, and a report that lacks a drain is refused."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from load.config import parser
from load.costcheck import CheckError, calibration, compare, main, predicted

FILES = 5000
SKELETON: dict[str, Any] = {
    "landing_queues": 20,
    "data_files_per_commit": 1.0,
    "settings": {
        "effective": {
            "sqs": {"receivers": 2, "wait_time_s": 20, "max_messages": 10},
            "batch": {"max_files": 200, "max_wait_s": 1.0, "output_files": 1},
        }
    },
    "phases": {
        "drain1": {
            "files": FILES,
            "workers": 1,
            "seconds": 90.0,
            "committed_batches": 32,
            "batch_seconds_max": 6.0,
            "commit_hold_s_p50": 0.5,
            "sqs_calls": {},
            "empty_receives": 0,
            "moto_requests_per_file": {},
        }
    },
}


def report_scaled(factor: float, **only: float) -> dict[str, Any]:
    """A report whose counts are the model's prediction × ``factor`` (× ``only[key]`` for one
    figure instead)."""
    report = copy.deepcopy(SKELETON)
    p = predicted(report, "drain1")

    def f(key: str) -> float:
        return p[key] * only.get(key, factor if not only else 1.0)

    phase = report["phases"]["drain1"]
    receives = f("receive_full_per_file") + p["receive_empty_per_file"]
    phase["sqs_calls"] = {
        "ReceiveMessage": receives * FILES,
        "DeleteMessageBatch": f("delete_per_file") * FILES,
        "ChangeMessageVisibilityBatch": 0,
    }
    phase["empty_receives"] = p["receive_empty_per_file"] * FILES
    sqs = receives + f("delete_per_file")
    phase["moto_requests_per_file"] = {
        "S3 GET landing": f("landing_reads_per_file"),
        "S3 PUT warehouse": f("warehouse_writes_per_file"),
        "S3 GET warehouse": f("warehouse_reads_per_file"),
        "POST / (SQS, Glue)": sqs + f("catalog_per_file"),
    }
    return report


def test_the_model_for_a_drain_counts_receives_deletes_and_commits() -> None:
    p = predicted(copy.deepcopy(SKELETON), "drain1")
    # Receives of 10: 0.1 per file, plus the tail: 1 worker × 20 queues × 2 receivers = 40 pollers,
    # each polling in vain once, plus 6 s of the longest batch ÷ 20 s: 40 × 1.3 / 5000.
    assert p["receive_per_file"] == pytest.approx(0.1 + 40 * 1.3 / FILES)
    assert (p["receive_full_per_file"], p["receive_empty_per_file"]) == pytest.approx((0.1, 40 * 1.3 / FILES))
    # 32 commits of 5000 / 32 = 156.25 files; deletes are at least a tenth of the messages.
    assert p["delete_per_file"] >= 0.1
    assert p["commits_per_1000_files"] == pytest.approx(32 / FILES * 1000)
    # Per commit: 1 data file + 3 metadata objects written, 2 read, 3 catalog calls.
    assert p["warehouse_writes_per_file"] == pytest.approx(4 * 32 / FILES)
    assert p["warehouse_reads_per_file"] == pytest.approx(2 * 32 / FILES)
    assert p["landing_reads_per_file"] == pytest.approx(1.0)


def test_counts_within_the_tolerance_pass() -> None:
    checks = compare(report_scaled(1.05))
    assert all(c.ok for c in checks if c.gating)
    assert {c.figure for c in checks if not c.gating} == {
        "SQS calls per file (all)",
        "empty long polls per file",
        "S3 PUT per file, warehouse (ICEFEED_COST_*)",
        "S3 GET+HEAD per file, warehouse (ICEFEED_COST_*)",
        "catalog calls per file",
        "commits per 1000 files (settings alone)",
    }


def test_the_empty_polls_of_a_drains_tail_are_shown_not_judged() -> None:
    report = report_scaled(1.0)
    phase = report["phases"]["drain1"]
    phase["empty_receives"] *= 3  # the tail lasted longer than the longest batch
    phase["sqs_calls"]["ReceiveMessage"] += 2 * phase["empty_receives"] / 3
    checks = {c.figure: c for c in compare(report)}
    assert checks["ReceiveMessage with messages per file"].ok
    assert checks["empty long polls per file"].ok is None and checks["empty long polls per file"].deviation == 2


def test_the_engines_warehouse_requests_per_commit_are_checked_across_drains() -> None:
    """Measured on one drain, predicted for the other from its commits: the same engine gives
    the same requests per commit whatever the fleet; the ICEFEED_COST_* figure is shown."""
    report = report_scaled(1.0, warehouse_writes_per_file=1.5)  # an engine writing 6 per commit, not 4
    drain_k = copy.deepcopy(report["phases"]["drain1"])
    drain_k.update(workers=3, committed_batches=64)  # twice the commits ...
    drain_k["moto_requests_per_file"]["S3 PUT warehouse"] *= 2  # ... twice the PUTs
    report["phases"]["drain_k"] = drain_k
    checks = {(c.phase, c.figure): c for c in compare(report)}
    assert checks[("drain_k", "S3 PUT per file, warehouse")].ok
    assert checks[("drain1", "S3 PUT per file, warehouse")].ok
    assert checks[("drain1", "S3 PUT per file, warehouse (ICEFEED_COST_*)")].deviation == pytest.approx(0.5)
    drain_k["moto_requests_per_file"]["S3 PUT warehouse"] *= 1.3  # not so many per commit here
    checks = {(c.phase, c.figure): c for c in compare(report)}
    assert checks[("drain_k", "S3 PUT per file, warehouse")].ok is False


@pytest.mark.parametrize("key", ["receive_full_per_file", "delete_per_file", "warehouse_writes_per_file"])
def test_a_count_off_by_more_than_the_tolerance_fails(key: str) -> None:
    checks = compare(report_scaled(1.0, **{key: 1.25}))
    failed = {c.figure for c in checks if c.ok is False}
    assert failed and all(c.gating for c in checks if c.ok is False)
    assert len(failed) <= 2  # the figure itself (and the SQS total it is part of)


def test_a_report_without_the_empty_receive_count_is_refused() -> None:
    report = report_scaled(1.0)
    del report["phases"]["drain1"]["empty_receives"]
    with pytest.raises(CheckError, match="empty_receives"):
        compare(report)


def test_calibration_recovers_the_per_commit_counts() -> None:
    calib = calibration(report_scaled(1.0))["drain1"]
    assert calib["metadata_reads_per_commit"] == pytest.approx(2)
    assert calib["metadata_writes_per_commit"] == pytest.approx(3)
    assert calib["catalog_calls_per_commit (approximate)"] == pytest.approx(3)


def test_exit_status_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def run(report: dict[str, Any] | None, *extra: str) -> int:
        path = tmp_path / "report.json"
        if report is not None:
            path.write_text(json.dumps(report))
        args: argparse.Namespace = parser().parse_args(["cost-check", "--report", str(path), *extra])
        return main(args)

    assert run(report_scaled(1.02)) == 0
    assert "RESULT: OK" in capsys.readouterr().out
    assert run(report_scaled(1.0, delete_per_file=1.5)) == 1
    assert "FAIL" in capsys.readouterr().out
    assert run(report_scaled(1.0), "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["checks"] and set(doc["calibration"]) == {"drain1"}
    (tmp_path / "report.json").unlink()
    assert run(None) == 2


def test_a_report_without_drains_is_refused() -> None:
    with pytest.raises(CheckError):
        compare({"phases": {}})
