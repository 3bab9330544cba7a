"""Seeds the simulator failed on, kept as regression tests (replay one with
``python -m tests.sim --seed N``). Each entry says what the seed's schedule does.

``FIXED``: found on the code before the fence, pass since. ``OPEN``: findings on the fenced code,
reported, not fixed yet (strict xfail: a fix makes them pass, and then they move to ``FIXED``).
"""

from __future__ import annotations

import pytest

from tests.sim.world import FENCED, simulate

FIXED = {
    3: "frozen-worker duplicate: w1 freezes 20 s between claim and append; w2 takes its batch over, "
    "releases and loads the file; w1 wakes and appends anyway: rows twice, one copy under an ABORTED batch",
    20: "lost-lock overlap: the lock connection of w3's append dies; w1 takes the lock and appends to the same "
    "table at once; the later commit, based on an older snapshot, drops rows the ledger says are LOADED",
    7: "replace race: rp/k3#3 is written while #2's batch is still open, so #2's rows are not replaced: "
    "two versions of one key stay in the table",
}

OPEN = {
    307: "an engine-read file is overwritten while the engine reads it, then deleted before the version check: "
    "the check (HEAD) finds no object and keeps the rows, so #2 is LOADED with #3's rows (pipeline._changed)",
    340: "as 307 (replace route)",
    455: "as 307 (replace route)",
    313: "intake acks a message on a stale state: a duplicate event's admission registers #1 as PENDING, "
    "another worker claims it, record_terminal then moves nothing, yet the message is deleted while the file "
    "is CLAIMED (pipeline._register)",
    1549: "a worker's own sweeper takes over its batch (the lease owner is the worker id, so the owner does not "
    "change): recovery reads engine_work before the writer's fence, releases the batch as never fenced, "
    "and the writer, whose fence passed as the same owner, appends: rows of an ABORTED batch (until the audit)",
    5430: "as 1549, the other way round: the writer finalizes its batch (same owner), then its own sweeper's "
    "recovery, already past take_expired, deletes the batch's rows as 'object changed' (recovery does not "
    "know the file was worker-read and pinned): LOADED in the ledger, no rows in the table",
    923: "a worker freezes 60 s holding a table lock: recovery of its batch is deferred (table busy) while the "
    "file's message is retried every few seconds into the DLQ; the batch is released afterwards and the file "
    "stays PENDING with no message left",
}


@pytest.mark.xfail(not FENCED, strict=True, reason="found on the code before the fence (issue 11)")
@pytest.mark.parametrize("seed", sorted(FIXED))
def test_fixed(seed: int) -> None:
    result = simulate(seed)
    assert result.ok, result.report()


@pytest.mark.skipif(not FENCED, reason="findings on the fenced code")
@pytest.mark.xfail(strict=True, reason="open finding on the fenced code, reported to the lead")
@pytest.mark.parametrize("seed", sorted(OPEN))
def test_open(seed: int) -> None:
    result = simulate(seed)
    assert result.ok, result.report()
