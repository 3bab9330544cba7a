"""The fleet simulator under pytest: a fixed budget of seeds (``ICEFEED_SIM_SEEDS``, default 500)
with every fault kind; ``make sim`` / ``make sim-long`` run more (docs/simulation.md)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from tests.sim.world import FENCED, World, simulate

BUDGET = int(os.environ.get("ICEFEED_SIM_SEEDS", "500"))


def failures(seeds: range, **kwargs: object) -> list[str]:
    out = []
    for seed in seeds:
        result = simulate(seed, **kwargs)  # type: ignore[arg-type]
        if not result.ok:
            out.append(result.report(last=120))
    return out


@pytest.mark.xfail(not FENCED, strict=True, reason="the code before the fence breaks exactly-once (issue 11)")
def test_every_seed_keeps_the_invariants() -> None:
    """Every fault kind, ``BUDGET`` seeds."""
    failed = failures(range(BUDGET))
    assert not failed, f"{len(failed)} of {BUDGET} seeds failed; the first:\n" + "\n\n".join(failed[:2])


def test_without_faults_or_overwrites_every_file_loads_once() -> None:
    """The simulator itself: plain uploads and no faults pass on any version of the protocol."""
    failed = failures(range(60), kinds=(), overwrites=False)
    assert not failed, failed[0]


def test_one_seed_is_one_schedule() -> None:
    first, again = simulate(20), simulate(20)
    assert first.trace == again.trace
    assert first.fingerprint == again.fingerprint
    assert simulate(21).trace != first.trace


def _duplicate_a_row(world: World) -> None:
    table = world.engine.tables["cat.db.events"]
    table.rows.append(dict(table.rows[0]))


def _forget_a_file(world: World) -> None:
    first = next(iter(world.ledger.files.values()))
    first.status = "PENDING"


def _orphan_rows(world: World) -> None:
    batch = next(b for b in world.ledger.batches.values() if b.status == "COMMITTED" and b.rows)
    batch.status = "ABORTED"


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (_duplicate_a_row, "table holds"),
        (_forget_a_file, "not final"),
        (_orphan_rows, "(ABORTED)"),
    ],
)
def test_the_checks_see_a_broken_outcome(tamper: Callable[[World], None], expected: str) -> None:
    result = simulate(1, kinds=(), tamper=tamper)
    assert any(expected in v for v in result.violations), result.violations
