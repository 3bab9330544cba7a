"""The write fence on the real stack (docs/guarantees.md): the interleavings a timed protocol got
wrong, forced with fault points, SIGSTOP and pg_terminate_backend, each checked exactly (rows with
pyiceberg, ledger, queue and DLQ) and recorded in the chaos report.

- the table-lock holder's PostgreSQL backend is terminated mid-append while a second worker waits
  for that lock: the second worker gets the lock but not the writer slot, so it waits;
- a worker frozen (SIGSTOP) right after its fence, whose lock is lost and whose batch is released
  and loaded by another worker, wakes up: its stale append must not duplicate anything;
- an object read by the engine (by path) is overwritten between claim and append: the claimed
  version's rows or none, never the newer version's under the older identity;
- replace races: versions of the same keys uploaded back to back with two workers.
"""

from __future__ import annotations

import json
import os
import random
import signal
from collections import Counter
from typing import Any

import pytest

from tests.chaos.support import (
    DOOMED,
    NOTES,
    REPORT,
    SEED,
    Expected,
    finish,
    settle,
    start,
    stop_all,
    terminate_backends,
)
from tests.harness import Env, poll

#: Released batches are audited soon after their release in these runs (production: minutes).
AUDIT = {"ICEFEED_LEASE_AUDIT_DELAY_S": "2"}


def _events(env: Env, *names: str) -> list[dict[str, Any]]:
    """The workers' JSON log lines with these event names."""
    found = []
    for line in env.worker_logs().splitlines():
        if line.startswith("{"):
            doc = json.loads(line)
            if doc.get("event") in names:
                found.append(doc)
    return found


def test_lock_holder_backend_terminated_mid_append_with_a_waiter(env: Env) -> None:
    rng = random.Random(f"{SEED}:fence-lock")
    env.migrate()
    exp = Expected(env.bucket)
    gate = env.tmp / "gate"
    # max in flight 10 = one receive's worth: while it holds messages the holder receives no more
    holder = start(env, "holder", ICEFEED_FAULTS=f"after_write_start=hold:{gate}", ICEFEED_SQS_MAX_IN_FLIGHT="10")
    for i in range(4):
        exp.upload(env, f"events/lock/a{i:02}.json", rng.randint(1, 5))
    poll(lambda: (gate / "after_write_start.reached").exists(), 60, "the holder's append in flight")
    start(env, "waiter")
    for i in range(6):
        exp.upload(env, f"events/lock/b{i:02}.json", rng.randint(1, 5))
    writing = "SELECT id FROM batches WHERE status = 'WRITING'"
    poll(lambda: len(env.sql(writing)) >= 2, 30, "a second batch waiting for the table")
    killed = terminate_backends(env, [holder.pid])  # the advisory lock goes with its connection
    assert killed >= 1, "no backend of the holder was terminated"
    poll(lambda: _events(env, "batch_waiting_for_writer"), 30, "the waiter to find the writer slot taken")
    (gate / "after_write_start.release").touch()
    stats = finish(env, exp, "lock holder's PG backend killed mid-append, waiter", timeout=120)
    waits = len(_events(env, "batch_waiting_for_writer"))
    lost = len(_events(env, "table_lock_lost"))
    NOTES.append(
        f"lock holder killed: {killed} backend(s) terminated; the waiter waited {waits}× on the writer slot; "
        f"table_lock_lost logged {lost}×; {stats.loaded} files loaded"
    )
    assert stop_all(env) == [0, 0]


@pytest.mark.parametrize("point", ["after_fence", "before_append"])
def test_worker_frozen_after_its_fence_wakes_after_its_batch_was_released(env: Env, point: str) -> None:
    """Frozen right after its fence (the pre-append lock check catches it), or after that check
    too (only the stopped engine session can refuse its append)."""
    rng = random.Random(f"{SEED}:fence-frozen-{point}")
    env.migrate()
    exp = Expected(env.bucket)
    gate = env.tmp / "gate"
    frozen = start(env, "frozen", ICEFEED_FAULTS=f"{point}=hold:{gate}", **DOOMED, **AUDIT)
    for i in range(5):
        exp.upload(env, f"events/frozen/a{i:02}.json", rng.randint(1, 5))
    poll(lambda: (gate / f"{point}.reached").exists(), 60, "a fenced batch about to append")
    (stale,) = env.sql("SELECT id FROM batches WHERE status = 'WRITING' AND write_started_at IS NOT NULL")
    os.kill(frozen.pid, signal.SIGSTOP)  # the whole process: heartbeat, lock connection, all
    try:
        killed = terminate_backends(env, [frozen.pid])  # an idle reaper / failover: its lock is gone
        start(env, "helper", **AUDIT)
        for i in range(5):
            exp.upload(env, f"events/frozen/b{i:02}.json", rng.randint(1, 5))
        released = "SELECT status FROM batches WHERE id = $1"
        poll(lambda: env.sql(released, stale["id"])[0]["status"] == "ABORTED", 90, "the stale batch to be released")
        mine = "SELECT count(*) AS n FROM files WHERE batch_id <> $1 AND status = 'LOADED' AND key LIKE '%/a%'"
        poll(lambda: env.sql(mine, stale["id"])[0]["n"] == 5, 90, "its files loaded by the helper")
    finally:
        (gate / f"{point}.release").touch()
        os.kill(frozen.pid, signal.SIGCONT)
    stats = finish(env, exp, f"worker frozen at {point}, batch released, then woken", timeout=120)
    stale_rows = env.sql("SELECT status, zombie_rows FROM batches WHERE id = $1", stale["id"])[0]
    how = [
        f"{e['event']}({e.get('during', '')})"
        for e in _events(env, "table_lock_lost", "zombie_rows_removed", "batch_finalize_lost", "batch_failed")
    ]
    NOTES.append(
        f"frozen at {point}: {killed} backend(s) killed, stale batch {stale_rows['status']} "
        f"(zombie rows removed: {stale_rows['zombie_rows'] or 0}); the woken worker: {Counter(how)}; "
        f"{stats.loaded} files loaded"
    )
    assert stale_rows["status"] == "ABORTED"
    assert stop_all(env) == [0, 0]


def test_engine_read_object_overwritten_between_claim_and_append(env: Env) -> None:
    rng = random.Random(f"{SEED}:fence-overwrite")
    env.migrate()
    exp = Expected(env.bucket)
    gate = env.tmp / "gate"
    # every JSON file is read by the engine, by path (the worker fetches nothing itself)
    by_path = {"ICEFEED_SPARK_WORKER_READ_MAX_BYTES": "0"}
    start(env, "reader", ICEFEED_FAULTS=f"after_claim=hold:{gate}", **by_path)
    keys = [f"events/over/f{i:02}.json" for i in range(6)]
    for key in keys:
        exp.upload(env, key, rng.randint(1, 5))
    poll(lambda: (gate / "after_claim.reached").exists(), 60, "a claimed batch")
    claimed = {f["key"] for f in env.files() if f["status"] == "CLAIMED"}
    assert claimed, "nothing claimed"
    overwritten = sorted(claimed)[: max(1, len(claimed) // 2)]
    for key in overwritten:  # a newer version lands while the older one's batch is open
        exp.upload(env, key, rng.randint(1, 5))
    (gate / "after_claim.release").touch()
    stats = finish(env, exp, "engine-read object overwritten between claim and append", timeout=120)
    changed = len(_events(env, "file_version_changed"))
    NOTES.append(
        f"overwrite mid-batch: {len(overwritten)} object(s) overwritten after their claim; "
        f"{changed} caught after the append (rows removed); {stats.loaded} files loaded"
    )
    assert stop_all(env) == [0]


def test_replace_versions_race_with_two_workers(env: Env) -> None:
    """on_overwrite = replace: several versions of each key uploaded back to back while two
    workers load them. Exactly the newest version's rows remain; every older version ends
    REPLACED or SKIPPED; no row of an older version survives."""
    rng = random.Random(f"{SEED}:fence-replace")
    env.migrate()
    start(env, "r1", **AUDIT)
    start(env, "r2", **AUDIT)
    newest: dict[str, tuple[str, list[int]]] = {}
    older: list[tuple[str, str]] = []
    next_id = 1
    keys = [f"snap/k{i}.json" for i in range(6)]

    def upload(key: str) -> None:
        nonlocal next_id
        ids = list(range(next_id, next_id + rng.randint(1, 4)))
        next_id += len(ids)
        body = "".join(json.dumps({"id": i, "key": key}) + "\n" for i in ids).encode()
        etag = env.put(key, body)
        if key in newest:
            older.append((key, newest[key][0]))
        newest[key] = (etag, ids)

    for key in keys:  # round 1: every key loaded once, so later versions replace loaded rows
        upload(key)
    loaded = "SELECT count(*) AS n FROM files WHERE status = 'LOADED'"
    poll(lambda: env.sql(loaded)[0]["n"] == len(keys), 120, "the first versions loaded", 0.25)
    for _ in range(2):  # rounds 2 and 3 back to back, in random key order
        for key in rng.sample(keys, len(keys)):
            upload(key)

    def done() -> bool:
        files = {(f["key"], f["etag"]): f["status"] for f in env.files()}
        return len(files) == len(newest) + len(older) and all(s not in ("PENDING", "CLAIMED") for s in files.values())

    poll(done, 120, "every version to be settled", 0.25)
    settle_env = Expected(env.bucket)  # no events/ files: settles on queue and ledger alone
    settle(env, settle_env, 60)
    files = {(f["key"], f["etag"]): f for f in env.files()}
    rows = env.table_rows("snapshots")
    got = Counter(r["id"] for r in rows)
    want = Counter(i for _, ids in newest.values() for i in ids)
    duplicated = sum(max(0, n - want[i]) for i, n in got.items() if i in want)
    stale = sum(n for i, n in got.items() if i not in want)
    missing = sum(max(0, n - got[i]) for i, n in want.items())
    problems = [
        f"{k} newest version is {files[(k, e)]['status']}"
        for k, (e, _) in newest.items()
        if files[(k, e)]["status"] != "LOADED"
    ]
    problems += [
        f"{k} older version is {files[(k, e)]['status']}"
        for k, e in older
        if files[(k, e)]["status"] not in ("REPLACED", "SKIPPED")
    ]
    REPORT.append(
        {
            "scenario": "replace: 3 versions of 6 keys (2 back to back), 2 workers",
            "files": len(newest),
            "loaded": sum(files[(k, e)]["status"] == "LOADED" for k, (e, _) in newest.items()),
            "quarantined": 0,
            "failed": 0,
            "lost": missing,
            "duplicated_rows": duplicated + stale,
        }
    )
    statuses = Counter(files[(k, e)]["status"] for k, e in older)
    NOTES.append(f"replace race: older versions ended {dict(statuses)}; rows of older versions left: {stale}")
    assert (duplicated, stale, missing) == (0, 0, 0), (duplicated, stale, missing, problems)
    assert not problems, problems
    assert env.queue_depth(env.prov.dlq_url) == 0
    assert stop_all(env) == [0, 0]
