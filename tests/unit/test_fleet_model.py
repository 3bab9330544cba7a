"""The fleet model (load/model.py): formulas on hand-computed examples, the single-table bound, the
queueLength ≥ in-flight invariant, and the CLI's report handling (python -m load model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from load.__main__ import main as load_main
from load.model import (
    Inputs,
    ModelError,
    in_flight,
    plan,
    queue_length,
    recommended_batch,
    replicas,
    resolve,
    single_table_ceiling,
    tables_needed,
)

# r = 50 files/s, h = 0.5 s, measured 100 files per commit, T = 60 s, headroom 0.7, max batch 5000.
HAND = Inputs(per_replica=50, hold_s=0.5, batch_files=100)

REPORT = {
    "files_per_s_1": 57.0,
    "k": 3,
    "files_per_s_k": None,
    "commits_per_1000_files": 3.0,
    "phases": {"drain1": {"files_per_batch_mean": 333.3, "batch_seconds_p50": 3.83, "batch_seconds_max": 14.2}},
    "settings": {"effective": {"batch": {"max_files": 400}, "sqs": {"max_in_flight": 800}}},
}


def test_hand_example_1k() -> None:
    p = plan(1000, HAND)
    assert p.replicas == 29  # ceil(1000 / (50 x 0.7)) = ceil(28.57)
    assert p.files_per_commit_needed == pytest.approx(500)  # 1000 x 0.5
    assert p.batch_files == 750  # max(100, ceil(500 x 1.5))
    assert p.in_flight == 1500  # 2 batches
    assert p.queue_length == 3000  # max(50 x 60, 1500)
    assert p.tables == 1
    assert p.commits_per_s_per_table == pytest.approx(1000 / 750)
    assert p.lock_busy == pytest.approx(1000 / 750 * 0.5)
    assert p.burst_drain_s == pytest.approx(60)
    assert p.tables_if_hold_per_file == 5  # ceiling 100 / 0.5 = 200 files/s per table
    assert p.bound == "ok"


def test_hand_example_10k_is_capped_but_fits_one_table() -> None:
    p = plan(10_000, HAND)
    assert p.replicas == 286  # ceil(285.71)
    assert p.files_per_commit_needed == pytest.approx(5000)
    assert (p.batch_files, p.in_flight, p.queue_length) == (5000, 10_000, 10_000)
    assert p.tables == 1
    assert p.lock_busy == pytest.approx(1.0)
    assert p.bound == "near"
    assert p.burst_drain_s == pytest.approx(200)  # queueLength 10000 / r 50: in-flight outgrew r x T


def test_single_table_bound_at_100k_with_default_caps() -> None:
    assert HAND.max_batch_files == 5000
    bounds = {rate: plan(rate, HAND).bound for rate in (1000, 10_000, 100_000)}
    assert bounds == {1000: "ok", 10_000: "near", 100_000: "table"}
    p = plan(100_000, HAND)
    assert p.replicas == 2858
    assert p.files_per_commit_needed == pytest.approx(50_000)
    assert p.tables == 10  # ceil(50000 / 5000)
    assert p.batch_files == 5000
    assert p.commits_per_s_per_table == pytest.approx(2.0)  # 10000 files/s per table / 5000
    assert "10 tables" in p.note and "batch size / max wait" in p.note


def test_small_formulas() -> None:
    assert replicas(35, 50, 0.7) == 1  # exactly r x headroom: no float-noise extra replica
    assert replicas(36, 50, 0.7) == 2
    assert replicas(0.001, 50, 0.7) == 1
    assert recommended_batch(10, measured=333.3, max_batch=5000) == 334  # the measured batch wins
    assert recommended_batch(4000, measured=333.3, max_batch=5000) == 5000  # capped
    assert tables_needed(5000, 5000) == 1
    assert tables_needed(5001, 5000) == 2
    assert queue_length(57, 60, 800) == 3420
    assert queue_length(57, 60, 10_000) == 10_000


def test_float_noise_does_not_add_a_table_or_files() -> None:
    # 100000 x 1.1 = 110000.00000000001 in floats: exactly 22 tables of 5000, a batch of 165 at 100 files/s
    p = plan(100_000, Inputs(per_replica=50, hold_s=1.1, batch_files=100))
    assert p.tables == 22
    assert plan(100, Inputs(per_replica=50, hold_s=1.1, batch_files=100)).batch_files == 165


def test_in_flight_window() -> None:
    assert in_flight(750) == 1500
    assert in_flight(60_000) == 100_000  # ICEFEED_SQS_MAX_IN_FLIGHT's upper bound
    assert in_flight(100_000) == 100_000  # still holds one whole batch


def test_single_table_ceiling() -> None:
    c = single_table_ceiling(batch_files=100, hold_s=0.5, per_replica=50)
    assert c.commits_per_s == pytest.approx(2)
    assert c.files_per_s == pytest.approx(200)
    assert c.replicas_useful == 4
    assert single_table_ceiling(333.3, 3.83, 57).replicas_useful == 2  # 87 files/s: a 2nd replica still adds


@given(
    r=st.floats(0.1, 10_000),
    h=st.floats(0.001, 600),
    measured=st.floats(1, 100_000),
    drain=st.floats(1, 3600),
    headroom=st.floats(0.05, 1),
    max_batch=st.integers(1, 100_000),
    rate=st.floats(0.01, 10_000_000),
)
def test_invariants(
    r: float, h: float, measured: float, drain: float, headroom: float, max_batch: int, rate: float
) -> None:
    p = plan(rate, Inputs(r, h, measured, drain, headroom, max_batch))
    assert p.queue_length >= p.in_flight >= p.batch_files >= 1, "KEDA counts in-flight; a batch fits in flight"
    assert p.in_flight <= 100_000, "ICEFEED_SQS_MAX_IN_FLIGHT's upper bound"
    assert p.batch_files <= max_batch
    assert p.replicas * r * headroom >= rate * (1 - 1e-9)
    assert p.lock_busy <= 1 + 1e-9, "each table's lock keeps up"
    assert (p.bound == "table") == (p.tables > 1)


def test_resolve_from_report_falls_back_to_batch_seconds() -> None:
    inp, sources = resolve(REPORT, Path("r.json"), {})
    assert (inp.per_replica, inp.hold_s, inp.batch_files) == (57.0, 3.83, 333.3)
    assert (inp.drain_s, inp.headroom, inp.max_batch_files) == (60.0, 0.7, 5000)
    assert sources["per_replica"] == "report files_per_s_1"
    assert sources["hold_s"].startswith("report phases.drain1.batch_seconds_p50") and "upper bound" in sources["hold_s"]
    assert sources["drain_s"] == "default"


def test_resolve_prefers_the_measured_lock_hold() -> None:
    report = json.loads(json.dumps(REPORT))
    report["phases"]["drain1"]["commit_hold_s_p50"] = 0.9
    inp, sources = resolve(report, Path("r.json"), {})
    assert inp.hold_s == 0.9
    assert sources["hold_s"] == "report phases.drain1.commit_hold_s_p50"


def test_overrides_beat_report_values() -> None:
    overrides = {"per_replica": 50.0, "hold_s": 0.5, "batch_files": 100.0, "drain_s": 30.0, "headroom": 0.5}
    inp, sources = resolve(REPORT, Path("r.json"), {**overrides, "max_batch_files": 2000})
    assert inp == Inputs(50.0, 0.5, 100.0, 30.0, 0.5, 2000)
    assert sources["per_replica"] == "--per-replica" and sources["hold_s"] == "--hold-s"
    assert sources["max_batch_files"] == "--max-batch-files"


def test_batch_files_from_commits_per_1000() -> None:
    report = json.loads(json.dumps(REPORT))
    del report["phases"]["drain1"]["files_per_batch_mean"]
    inp, sources = resolve(report, Path("r.json"), {})
    assert inp.batch_files == pytest.approx(1000 / 3)
    assert "commits_per_1000_files" in sources["batch_files"]


def test_invalid_inputs_are_refused() -> None:
    with pytest.raises(ModelError, match="headroom"):
        resolve(REPORT, Path("r.json"), {"headroom": 1.5})
    with pytest.raises(ModelError, match="hold_s"):
        resolve(REPORT, Path("r.json"), {"hold_s": 0.0})


# -- the CLI (python -m load model) ---------------------------------------------------------------


def _write(tmp_path: Path, report: object) -> Path:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report), encoding="utf-8")
    return path


def test_cli_missing_report_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.json"
    assert load_main(["model", "--report", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"report {missing} not found" in err and "--per-replica" in err


def test_cli_report_without_rate_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = {k: v for k, v in REPORT.items() if k != "files_per_s_1"}
    path = _write(tmp_path, report)
    assert load_main(["model", "--report", str(path)]) == 2
    assert "lacks files_per_s_1; pass --per-replica" in capsys.readouterr().err
    assert load_main(["model", "--report", str(path), "--per-replica", "40"]) == 0


def test_cli_overrides_alone_need_no_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["model", "--report", str(tmp_path / "nope.json"), "--per-replica", "50", "--hold-s", "0.5"]
    assert load_main([*argv, "--batch-files", "100", "--targets", "1000", "--json"]) == 0
    (p,) = json.loads(capsys.readouterr().out)["plans"]
    assert (p["replicas"], p["batch_files"], p["in_flight"], p["queue_length"]) == (29, 750, 1500, 3000)


def test_cli_bad_json_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "report.json"
    path.write_text("{not json", encoding="utf-8")
    assert load_main(["model", "--report", str(path)]) == 2
    assert f"report {path}" in capsys.readouterr().err


def test_cli_table_names_inputs_sources_and_caveat(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, REPORT)
    assert load_main(["model", "--report", str(path), "--hold-s", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "report files_per_s_1" in out and "--hold-s" in out
    assert "moto" in out and "real AWS" in out
    row = next(line.split() for line in out.splitlines() if line.strip().startswith("100,000"))
    # 100k files/s at r=57, h=0.5: 2507 replicas, 50000 files/commit needed > 5000 -> 10 tables
    assert row[1] == "2507" and row[8] == "10"
    assert "split the stream over 10 tables" in out


def test_cli_json_matches_the_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, REPORT)
    assert load_main(["model", "--report", str(path), "--json", "--targets", "1000,100000"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [p["target"] for p in result["plans"]] == [1000, 100_000]
    assert result["inputs"]["per_replica"] == {"value": 57.0, "source": "report files_per_s_1"}
    ceiling = result["single_table_ceiling"]
    assert ceiling["files_per_s"] == pytest.approx(333.3 / 3.83)
    assert result["plans"][1]["tables"] == 77  # ceil(100000 x 3.83 / 5000)
    assert result["context"]["settings.effective.batch.max_files"] == 400
