"""Every line of ``icefeed cost``'s model as an operator reads it — component, item, quantity,
unit, price and formula — for three fleets, kept in tests/unit/snapshots/cost.json. The figures
themselves are worked out by hand in test_cost.py; this pins the rest of the report (labels,
units, formulas, notes, which bound set the batch size), so a change there is deliberate.

    python -m tests.unit.cost_snapshot     # rewrite the snapshot after a deliberate change
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tests.unit.snapshot_check import write
from worker.domain import cost
from worker.domain.maintenance import MaintenancePolicy

SNAPSHOT = Path(__file__).resolve().parent / "snapshots" / "cost.json"

PRICES = cost.Prices(
    sqs_usd_per_million=0.40,
    s3_get_usd_per_1000=0.0004,
    s3_put_usd_per_1000=0.005,
    catalog_usd_per_million=1.00,
    engine_usd_per_hour=0.72,
    pg_usd_per_month=50.0,
    worker_usd_per_hour=0.05,
)
MECH = cost.Mechanics(
    catalog_calls_per_commit=3, metadata_reads_per_commit=2, metadata_writes_per_commit=3, engine_reads_per_file=3
)
SMALL = cost.Fleet(1, 1, 1, 20.0, 10, 200, 1.0, 1)
BUSY = cost.Fleet(4, 2, 3, 20.0, 10, 500, 5.0, 2, MaintenancePolicy())


def cases() -> dict[str, cost.Estimate]:
    quiet = cost.Workload(3000, 1, 2.0, 0.1, 2, poll_interval_s=60.0)
    busy = cost.Workload(
        2_000_000,
        3,
        1.5,
        0.02,
        8,
        avg_file_bytes=40_000,
        rows_per_file=120,
        engine_read_fraction=0.25,
        retry_fraction=0.01,
        backfill_files_per_month=50_000,
        poll_interval_s=30.0,
        poll_prefixes=4,
    )
    measured = dataclasses.replace(busy, files_per_commit=400.0)
    overloaded = dataclasses.replace(busy, files_per_day=60_000_000, engine_s_per_file=0.5, tables=2)
    capped = dataclasses.replace(busy, files_per_day=1_728_000, tables=1, engine_s_per_file=0.001)
    slow_commits = dataclasses.replace(quiet, files_per_day=200_000, engine_s_per_commit=3.0, messages_per_receive=3)
    one = dataclasses.replace(SMALL, wait_time_s=1.0)  # a long poll of 1 s
    edges = {
        # engine time per file × rate between 1 and 2: the lock bound is gone, the loop cannot keep up
        "lock saturated": cost.Workload(259_200, 1, 0.1, 0.5, 2),
        "lock bound between 1 and 2 files": cost.Workload(64_800, 1, 2.0, 0.0, 2),
        "wait bound between 1 and 2 files": cost.Workload(129_600, 1, 0.1, 0.0, 2),
        "two files a commit, two a receive": cost.Workload(3000, 1, 2.0, 0.1, 2, files_per_commit=2.0),
        "a full listing page per poll": cost.Workload(86_400, 1, 1.0, 0.01, 2, poll_interval_s=1000.0),
    }
    return {
        **{name: cost.estimate(w, one, MECH, PRICES) for name, w in edges.items()},
        "quiet, one worker": cost.estimate(quiet, SMALL, MECH, PRICES),
        "busy, maintained fleet": cost.estimate(busy, BUSY, MECH, PRICES),
        "busy, measured batches": cost.estimate(measured, BUSY, MECH, PRICES, measured_batches=True),
        "busy, given batch size": cost.estimate(measured, BUSY, MECH, PRICES),
        "one table overloaded": cost.estimate(overloaded, BUSY, MECH, PRICES),
        "capped by max files": cost.estimate(
            capped, dataclasses.replace(BUSY, batch_max_files=50, workers=1), MECH, PRICES
        ),
        "slow commits, long waits": cost.estimate(
            slow_commits, dataclasses.replace(SMALL, wait_time_s=0), MECH, PRICES
        ),
    }


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def snapshot() -> dict[str, Any]:
    out = {}
    for name, est in cases().items():
        out[name] = _rounded(
            {
                "batching": dataclasses.asdict(est.batching),
                "engine_s_per_commit_total": est.engine_s_per_commit_total,
                "notes": est.notes,
                "scenarios": [
                    {
                        "name": s.name,
                        "files_per_month": s.files_per_month,
                        "commits_per_month": s.commits_per_month,
                        "total_usd": s.total_usd,
                        "notes": s.notes,
                        "lines": [dataclasses.asdict(line) for line in s.lines],
                    }
                    for s in est.scenarios
                ],
            }
        )
    return out


if __name__ == "__main__":
    write(SNAPSHOT, snapshot())
