"""The long-history scenario's figures and options (load/history.py), on made-up runs: the
maintenance modes and the ``[maintenance]`` block each writes, the maintenance steps' counts and
lock holds, and the window from commit 500 to the last with its flatness verdicts."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from load.bench import percentile, rnd
from load.config import parser
from load.fleet import events_from
from load.history import (
    FLAT_TOLERANCE,
    MAINTENANCE_OFF,
    MAINTENANCE_ON,
    MODES,
    SMOKE_MAINTENANCE_ON,
    WINDOW_START,
    HistoryScenario,
    data_files_bound,
    flatness,
    maintenance_stats,
    maintenance_toml,
    scenario_from_args,
)


def scenario(*argv: str) -> HistoryScenario:
    return scenario_from_args(parser().parse_args(["history", *argv]))


def test_a_plain_run_measures_every_mode_each_on_its_own_block() -> None:
    sc = scenario()
    assert sc.maintenance == MODES == ("off", "on")
    assert sc.maintenance_block("on") == MAINTENANCE_ON and sc.maintenance_block("off") == MAINTENANCE_OFF
    assert scenario("--maintenance", "on").maintenance == ("on",)
    assert scenario("--maintenance", " on , off ").maintenance == ("on", "off")


@pytest.mark.parametrize("modes", ["", "off,off", "off,sometimes", "both"])
def test_unknown_or_repeated_modes_are_refused(modes: str) -> None:
    with pytest.raises(ValueError, match="--maintenance"):
        scenario("--maintenance", modes)


def test_maintenance_set_overrides_one_key_of_mode_on_in_toml() -> None:
    sc = scenario("--maintenance-set", "check_interval_s=7", "--maintenance-set", "enabled = false")
    assert sc.maintenance_on == {**MAINTENANCE_ON, "check_interval_s": 7, "enabled": False}
    assert sc.maintenance_block("off") == MAINTENANCE_OFF
    with pytest.raises(ValueError, match="known keys"):
        scenario("--maintenance-set", "check_every_s=7")
    with pytest.raises(ValueError, match="not TOML"):
        scenario("--maintenance-set", "check_interval_s=")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        scenario("--maintenance-set", "check_interval_s")


def test_the_smoke_preset_lets_every_step_act_within_its_few_commits() -> None:
    sc = scenario("--smoke")
    assert sc.maintenance == MODES and sc.maintenance_on == SMOKE_MAINTENANCE_ON
    assert sc.maintenance_on["compact_min_files"] < sc.commits
    assert sc.maintenance_on["min_snapshots_to_keep"] < sc.commits


@pytest.mark.parametrize("block", [MAINTENANCE_ON, MAINTENANCE_OFF, SMOKE_MAINTENANCE_ON])
def test_the_block_written_is_the_block_read(block: dict[str, Any]) -> None:
    assert tomllib.loads(maintenance_toml(block)) == {"maintenance": block}


def step(name: str, outcome: str, held: float = 0.0, **details: Any) -> dict[str, Any]:
    return {"table": "glue.db.events_on", "step": name, "outcome": outcome, "held_s": held, **details}


def test_steps_are_counted_by_step_and_outcome_with_the_locks_they_held() -> None:
    steps = [
        step("compact", "done", 1.5, files_in=20, files_out=1),
        step("expire", "done", 0.2, expired=3),
        step("expire", "skipped"),
        step("orphans", "done", 0.0, deleted=4),  # took no lock
        step("expire", "done", 0.4, expired=2, lock_wait_s=0.7),
        step("properties", "failed", 0.1, error="denied"),
    ]
    stats = maintenance_stats(steps)
    assert stats["counts"] == {
        "expire": {"done": 2, "skipped": 1},
        "compact": {"done": 1},
        "orphans": {"done": 1},
        "properties": {"failed": 1},
    }
    assert list(stats["counts"]) == ["expire", "compact", "orphans", "properties"]
    held = [1.5, 0.2, 0.4, 0.1]
    assert (stats["steps"], stats["held_steps"]) == (len(steps), len(held))
    assert stats["held_s_max"] == max(held)
    assert stats["held_s_p95"] == rnd(percentile(held, 95), 4)
    assert stats["lock_wait_s_max"] == 0.7
    assert (stats["expired"], stats["files_in"], stats["files_out"], stats["deleted"]) == (5, 20, 1, 4)
    assert stats["errors"] == ["properties: denied"]


def test_no_steps_no_hold() -> None:
    stats = maintenance_stats([])
    assert (stats["steps"], stats["held_s_max"], stats["held_s_p95"], stats["counts"]) == (0, 0.0, 0.0, {})


def made_run(
    commits: int,
    every: int,
    block: dict[str, Any] | None = MAINTENANCE_ON,
    metadata: Callable[[int], int] = lambda c: 40_000,
    files: Callable[[int], int] = lambda c: 10 + c % 7,
    plan: Callable[[int], float] = lambda c: 80.0,
    hold: Callable[[int], float] = lambda c: 0.2,
    commits_per_s: float = 1.0,
) -> dict[str, Any]:
    points = [1, *range(every, commits + 1, every)]
    return {
        "commits": commits,
        "seconds": commits / commits_per_s,
        "files_per_commit": 5,
        "holds_s": [hold(c) for c in range(1, commits + 1)],
        "maintenance_block": block,
        "samples": [
            {
                "commit": c,
                "t": c / commits_per_s,
                "metadata_json_bytes": metadata(c),
                "data_files": files(c),
                "plan_ms": plan(c),
            }
            for c in points
        ],
    }


def test_the_window_runs_from_commit_500_or_a_quarter_of_a_shorter_run() -> None:
    assert flatness(made_run(3000, 100), 50)["from_commit"] == WINDOW_START
    assert flatness(made_run(3000, 100), 50)["to_commit"] == 3000
    assert flatness(made_run(2000, 10), 50)["from_commit"] == WINDOW_START
    assert flatness(made_run(1000, 100), 50)["from_commit"] == 300  # first sample at or after 250
    assert flatness(made_run(6, 2), 3)["from_commit"] == 2  # first sample at or after 1.5


def test_flat_figures_are_flat_and_growing_ones_are_not() -> None:
    flat = flatness(made_run(3000, 100), 50)
    assert flat["flat"] == {
        "hold_s_p95": True,
        "metadata_json_bytes": True,
        "plan_ms": True,
        "data_files": True,
        "all": True,
    }
    growing = flatness(made_run(3000, 100, metadata=lambda c: 700 * c, plan=lambda c: 10.0 * c), 50)
    assert growing["figures"]["metadata_json_bytes"]["ratio"] == round(3000 / 500, 3)
    assert growing["flat"]["metadata_json_bytes"] is False and growing["flat"]["plan_ms"] is False
    assert growing["flat"]["hold_s_p95"] is True and growing["flat"]["all"] is False


def test_the_tolerance_is_plus_or_minus_a_quarter_of_the_start() -> None:
    def hold_after(factor: float) -> Callable[[int], float]:
        return lambda c: 0.2 if c <= WINDOW_START else 0.2 * factor

    inside, above, below = 1 + FLAT_TOLERANCE * 0.9, 1 + FLAT_TOLERANCE * 1.1, 1 - FLAT_TOLERANCE * 1.1
    assert flatness(made_run(3000, 100, hold=hold_after(inside)), 50)["flat"]["hold_s_p95"] is True
    assert flatness(made_run(3000, 100, hold=hold_after(above)), 50)["flat"]["hold_s_p95"] is False
    assert flatness(made_run(3000, 100, hold=hold_after(below)), 50)["flat"]["hold_s_p95"] is False


def test_the_hold_p95_of_each_end_is_over_the_window_of_commits_ending_there() -> None:
    run = made_run(3000, 100, hold=lambda c: c / 1000)
    fig = flatness(run, 50)["figures"]["hold_s_p95"]
    assert fig["first"] == rnd(percentile(run["holds_s"][450:500], 95), 4)
    assert fig["last"] == rnd(percentile(run["holds_s"][2950:3000], 95), 4)


def test_data_files_are_bounded_by_compaction_not_by_their_start() -> None:
    # A sawtooth: compaction brings the small files back down before compact_min_files + margin.
    saw = made_run(3000, 100, files=lambda c: 1 + 2 * (((c - WINDOW_START) // 100) % 10))
    result = flatness(saw, 50)
    assert result["figures"]["data_files"]["first"] == 1  # the window starts right after a compaction
    assert result["figures"]["data_files"]["max"] > 2 * result["figures"]["data_files"]["first"]
    assert result["flat"]["data_files"] is True
    unbounded = flatness(made_run(3000, 100, files=lambda c: c), 50)
    assert unbounded["figures"]["data_files"]["max"] > unbounded["figures"]["data_files"]["bound"]
    assert unbounded["flat"]["data_files"] is False


def test_the_data_files_bound_is_two_check_intervals_of_commits_at_the_window_rate() -> None:
    block = {**MAINTENANCE_ON, "check_interval_s": 5, "compact_min_files": 20}
    run = made_run(3000, 100, block=block, commits_per_s=2.0)
    first, last = run["samples"][5], run["samples"][-1]
    commits_between_two_checks = math.ceil(2 * 5 * 2.0)
    assert data_files_bound(block, run, first, last) == 20 + commits_between_two_checks * run["files_per_commit"]
    # One sample in the window: the run's own rate.
    assert data_files_bound(block, run, last, last) == 20 + commits_between_two_checks * run["files_per_commit"]


def test_without_maintenance_there_are_ratios_and_no_verdict() -> None:
    off = flatness(made_run(3000, 100, block=MAINTENANCE_OFF, metadata=lambda c: 700 * c), 50)
    assert off["flat"] is None
    assert off["figures"]["metadata_json_bytes"]["ratio"] == round(3000 / 500, 3)
    assert "bound" not in off["figures"]["data_files"]
    assert flatness(made_run(3000, 100, block=None), 50)["flat"] is None


def test_a_growing_log_is_read_on_from_where_it_was_left_whole_lines_only(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text('{"event": "batch_committed", "held_s": 0.1}\nnot json\n{"event": "maintenance_st')
    lines, offset = events_from(log, 0)
    assert [e["event"] for e in lines] == ["batch_committed"]
    assert events_from(log, offset) == ([], offset)
    with log.open("a") as f:
        f.write('ep", "step": "expire"}\n')
    lines, offset = events_from(log, offset)
    assert lines == [{"event": "maintenance_step", "step": "expire"}]
    assert offset == log.stat().st_size
