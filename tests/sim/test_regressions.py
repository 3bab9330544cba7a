"""Seeds the simulator failed on, kept as regression tests (replay one with
``python -m tests.sim --seed N``). Each entry says what the seed's schedule does.

``FIXED``: found on the code before the fence, pass since. ``FIXED_AFTER_FENCE``: found on the
fenced code, fixed since (``FIXED_FREEZE_ONLY``: seeds drawn with freezes as the only fault kind).
A new finding that cannot be fixed at once goes in as a strict xfail.
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

#: Found on the fenced code and fixed since (they must pass).
FIXED_AFTER_FENCE = {
    307: "an engine-read file is overwritten while the engine reads it, then deleted before the version check: "
    "a missing object was taken as unchanged (now: its rows are removed, the file GONE)",
    340: "as 307 (replace route)",
    455: "as 307 (replace route)",
    313: "intake acked a message on a stale state: another worker claimed the file between register and "
    "record_terminal (now: acked only if the file is final, else retried as in flight)",
    923: "a worker freezes 60 s holding a table lock: recovery is deferred while the file's message was retried "
    "into the DLQ (now: a message whose file is in flight is sent again fresh at its last receive)",
    961: "a worker frozen past its lease woke and removed rows of its batch that a sweeper then found empty and "
    "released (now: a writer checks its lease before changing anything for a committed batch)",
    4810: "the engine is unreachable for ~40 s, longer than the receive budget (backoff 1-8 s x maxReceiveCount 8): "
    "a PENDING file's message went to the DLQ (now: a file left PENDING by an outage waits without spending "
    "its message, up to ICEFEED_SQS_OUTAGE_MAX_ATTEMPTS claims)",
    18166: "as 4810",
    40984: "as 4810",
    43514: "as 4810",
    55038: "as 4810",
    64470: "as 4810",
    94435: "as 4810",
}


@pytest.mark.xfail(not FENCED, strict=True, reason="found on the code before the fence (issue 11)")
@pytest.mark.parametrize("seed", sorted(FIXED))
def test_fixed(seed: int) -> None:
    result = simulate(seed)
    assert result.ok, result.report()


@pytest.mark.skipif(not FENCED, reason="findings on the fenced code")
@pytest.mark.parametrize("seed", sorted(FIXED_AFTER_FENCE))
def test_fixed_after_fence(seed: int) -> None:
    result = simulate(seed)
    assert result.ok, result.report()


#: Found on the fenced code after those fixes (main at 9ea509d), with freezes only, fixed since.
FIXED_FREEZE_ONLY = {
    1664: "a worker's own sweeper took over its batch (the lease owner is the worker id, so it did not change): "
    "recovery released it as never fenced, then the writer fenced (same owner) and appended "
    "(now: a sweeper never adopts a batch its own process is writing)",
    134: "replace + version check: #2's append commits and its replace deletes #1's rows, then its writer "
    "freezes before finalize; #3 is uploaded and deleted; recovery found #2's object gone and removed #2's rows, "
    "leaving #1 LOADED with no rows (now: in recovery a changed replace file takes its older versions with it: "
    "REPLACED)",
    480: "a worker freezes 60 s holding a table lock: other workers' batches failed TableBusy again and again, "
    "each a retry of a PENDING file, until the message was in the DLQ (now: a file released for a busy table "
    "waits as in flight, its message renewed instead of spent)",
}
#: As 480 with every fault kind (a table blocked by a batch whose recovery waits).
FIXED_ALL_KINDS = {
    2347: FIXED_FREEZE_ONLY[480],
    70718: "a writer paused between its fence and its append, the engine unable to confirm a stop: recovery "
    "waited out the limit counted from the fence and released, then the append started and overlapped another "
    "(now: an append starts only while its lease is vouched for; the wait counts from the last vouching)",
    69949: "as 134 (a freeze; the object deleted while the replace batch waited)",
    67963: "as 134 (a crash and a lost interrupt; the object changed during recovery)",
}


@pytest.mark.skipif(not FENCED, reason="findings on the fenced code")
@pytest.mark.parametrize("seed", sorted(FIXED_FREEZE_ONLY))
def test_fixed_freeze_only(seed: int) -> None:
    result = simulate(seed, kinds=("freeze",))
    assert result.ok, result.report()


@pytest.mark.skipif(not FENCED, reason="findings on the fenced code")
@pytest.mark.parametrize("seed", sorted(FIXED_ALL_KINDS))
def test_fixed_all_kinds(seed: int) -> None:
    result = simulate(seed)
    assert result.ok, result.report()
