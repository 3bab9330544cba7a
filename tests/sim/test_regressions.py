"""Seeds the simulator once failed on, kept as regression tests (replay one with
``python -m tests.sim --seed N``). Each entry says what the seed's schedule does."""

from __future__ import annotations

import pytest

from tests.sim.world import FENCED, simulate

BEFORE_FENCE = pytest.mark.xfail(not FENCED, strict=True, reason="found on the code before the fence (issue 11)")

SEEDS = {
    3: "frozen-worker duplicate: w1 freezes 20 s between claim and append; w2 takes its batch over, "
    "releases and loads the file; w1 wakes, appends anyway: rows twice, one copy under an ABORTED batch",
    20: "lost-lock overlap: the lock connection of w3's append dies; w1 takes the lock and appends to the same "
    "table at once; the later commit, based on an older snapshot, drops rows the ledger says are LOADED",
    7: "replace race: rp/k3#3 is written while #2's batch is still open, so its rows are not replaced: "
    "two versions of one key stay in the table",
}


@BEFORE_FENCE
@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_seed(seed: int) -> None:
    result = simulate(seed)
    assert result.ok, result.report()
