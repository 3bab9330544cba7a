"""The fence, interleaving by interleaving (docs/guarantees.md), on the shared in-memory fakes:
the real ``Pipeline`` of two workers, an engine whose appends are held at a gate the test opens,
a ledger whose lock connections the test kills. Each test ends by checking that every source
file's rows are in the table exactly once and that no released (ABORTED) batch left rows behind.

The same interleavings run, among thousands of others, in the simulator (tests/sim); here each one
is forced on purpose and named."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from tests.fakes import (
    ABORTED,
    COMMITTED,
    ROUTES,
    WRITING,
    FakeEngine,
    FakeLedger,
    FakeStore,
    WriteFault,
    body_of,
    interleaving_settings,
)
from worker.adapters.local_read import LocalDecoder
from worker.domain.batching import FileWork
from worker.domain.errors import TransientError
from worker.domain.events import FileEvent
from worker.pipeline import Pipeline
from worker.ports import Registration

EVENTS, LATEST = "cat.db.events", "cat.db.latest"
T0 = datetime(2026, 11, 27, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _clean_env() -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("ICEFEED_")}
    for k in saved:
        del os.environ[k]
    yield
    os.environ.update(saved)


class Client:
    """A worker's engine client: the engine itself, except that a crashed worker calls nothing
    (its ``finally`` blocks never run, so it cannot stop its own session)."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.crashed = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.engine, name)

    async def stop(self, session_id: str, table: str = "") -> bool:
        return False if self.crashed else await self.engine.stop(session_id)


class Fleet:
    """Two workers' pipelines over one ledger, one object store and one engine."""

    def __init__(self) -> None:
        self.ledger = FakeLedger()
        self.store = FakeStore()
        self.engine = FakeEngine(self.store)
        self.gate = asyncio.Event()
        self.engine.gates["before_commit"] = self.gate
        self.clients: dict[str, Client] = {}
        self.w1, self.w2 = self.pipeline("w1"), self.pipeline("w2")
        self.uploaded: dict[str, tuple[str, int]] = {}  # label → (source file, rows)

    def pipeline(self, name: str) -> Pipeline:
        settings = interleaving_settings(name)
        self.clients[name] = Client(self.engine)
        decoder = LocalDecoder.for_settings(settings.spark)
        return Pipeline(settings, ROUTES, self.ledger, self.store, self.clients[name], decoder)  # type: ignore[arg-type]

    async def crash(self, name: str, task: asyncio.Future[None]) -> None:
        """kill -9: the worker's task ends where it is, its client detaches, the engine goes on."""
        self.clients[name].crashed = True
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        self.engine.detach("")

    async def upload(self, key: str, version: str, rows: int, at: datetime = T0) -> FileWork:
        body = body_of(key, version, rows)
        etag = self.store.put("landing", key, body)
        event = FileEvent("landing", key, len(body), etag, None, None, at, "ObjectCreated:Put", "s3")
        ingestion = "rp" if key.startswith("rp/") else "ev"
        (state,) = await self.ledger.register([Registration(ingestion, event, etag, len(body))])
        self.uploaded[f"{key}#{version}"] = (f"s3://landing/{key}", rows)
        return FileWork(state.file_id, ingestion, "landing", key, etag, len(body), at)

    def writing(self) -> UUID:
        (batch,) = [b for b, row in self.ledger.batches.items() if row.status == WRITING]
        return batch

    async def appending(self) -> None:
        """Until an append is held at the gate (started, not committed)."""
        for _ in range(2000):
            if any(op.appending_since is not None and not op.committed for op in self.engine.ops):
                return
            await asyncio.sleep(0.001)
        raise AssertionError("no append started")

    def expire(self, batch: UUID) -> None:
        self.ledger.batches[batch].expires = self.ledger.clock() - 60

    def rows(self, table: str) -> Counter[str]:
        return Counter(f"{r['k']}#{r['v']}" for r in self.engine.table(table).rows)

    def check(self, table: str, present: dict[str, int]) -> None:
        """Exactly these versions' rows, each once; no released batch holds rows."""
        rows = self.rows(table)
        assert dict(rows) == present, rows
        for row in self.engine.table(table).rows:
            assert self.ledger.batches[UUID(row["_batch_id"])].status == COMMITTED, row


async def test_a_released_batch_cannot_commit_afterwards_zombie_append(caplog: pytest.LogCaptureFixture) -> None:
    """w1 dies mid-append; the engine keeps the append running. w2's recovery must stop w1's
    session before it probes and releases; the append held at the gate then never lands."""
    fleet = Fleet()
    a = await fleet.upload("ev/a.json", "1", 3)
    w1 = asyncio.ensure_future(fleet.w1.run_batch(EVENTS, [a]))
    await fleet.appending()
    batch = fleet.writing()
    await fleet.crash("w1", w1)  # the engine goes on with the append
    fleet.expire(batch)
    assert [t.batch_id for t in await fleet.ledger.take_expired("w2", 30, 0, 10)] == [batch]
    await fleet.w2.recover(batch, EVENTS)
    assert fleet.ledger.batches[batch].status == ABORTED
    fleet.gate.set()  # the engine would now commit the append: it was stopped
    await asyncio.sleep(0)
    await fleet.w2.run_batch(EVENTS, [a])
    fleet.check(EVENTS, {"ev/a.json#1": 3})
    assert await fleet.w2.audit() == 0


async def test_a_writer_whose_lease_was_taken_over_stops_and_never_decides() -> None:
    fleet = Fleet()
    a = await fleet.upload("ev/a.json", "1", 2)
    w1 = asyncio.ensure_future(fleet.w1.run_batch(EVENTS, [a]))
    await fleet.appending()
    batch = fleet.writing()
    fleet.expire(batch)  # w1 froze past its lease (its heartbeat too)
    await fleet.ledger.take_expired("w2", 30, 0, 10)
    assert await fleet.ledger.extend([batch], "w1", 30) == set()  # w1's heartbeat learns it ...
    await fleet.w1.leases_lost({batch})  # ... and stops its own write
    await asyncio.wait_for(w1, 10)  # its append failed (session stopped): it neither finalized nor released
    assert fleet.ledger.batches[batch].status == WRITING
    await fleet.w2.recover(batch, EVENTS)  # the new owner decides
    assert fleet.ledger.batches[batch].status == ABORTED
    fleet.gate.set()
    await fleet.w2.run_batch(EVENTS, [a])
    fleet.check(EVENTS, {"ev/a.json#1": 2})


async def test_a_killed_lock_connection_lets_the_next_writer_in_only_after_the_slot_is_free() -> None:
    fleet = Fleet()
    a = await fleet.upload("ev/a.json", "1", 2)
    b = await fleet.upload("ev/b.json", "1", 3)
    w1 = asyncio.ensure_future(fleet.w1.run_batch(EVENTS, [a]))
    await fleet.appending()
    first = fleet.writing()
    fleet.ledger.kill_connection(fleet.ledger.locks[EVENTS])  # failover / pg_terminate_backend
    w2 = asyncio.ensure_future(fleet.w2.run_batch(EVENTS, [b]))
    for _ in range(50):  # w2 gets the lock at once, but not the writer slot: it waits
        await asyncio.sleep(0.01)
    assert [op.request.batch_id for op in fleet.engine.ops] == [first]  # no second append started
    fleet.gate.set()
    await asyncio.wait_for(asyncio.gather(w1, w2), 30)
    assert fleet.engine.overlaps == []
    fleet.check(EVENTS, {"ev/a.json#1": 2, "ev/b.json#1": 3})


async def test_replace_v2_arriving_while_v1_is_being_written_waits_then_replaces() -> None:
    fleet = Fleet()
    v1 = await fleet.upload("rp/k.json", "1", 2, T0)
    w1 = asyncio.ensure_future(fleet.w1.run_batch(LATEST, [v1]))
    await fleet.appending()
    v2 = await fleet.upload("rp/k.json", "2", 3, T0 + timedelta(seconds=1))
    await fleet.w2.run_batch(LATEST, [v2])  # not claimed: v1's batch is open
    assert fleet.ledger.files[v2.file_id].status == "PENDING"
    fleet.gate.set()
    await w1
    # v1's own batch checks the object after its append (the engine read it by path): the object is
    # v2 now, so v1's rows are removed and v1 SKIPPED; v2 loads from its own event.
    await fleet.w2.run_batch(LATEST, [v2])
    assert fleet.ledger.files[v2.file_id].status == "LOADED"
    assert fleet.ledger.files[v1.file_id].status in ("SKIPPED", "REPLACED")
    fleet.check(LATEST, {"rp/k.json#2": 3})


async def test_replace_v1_loaded_then_v2_replaces_it_and_a_late_v1_event_is_superseded() -> None:
    fleet = Fleet()
    fleet.gate.set()
    v1 = await fleet.upload("rp/k.json", "1", 2, T0)
    await fleet.w1.run_batch(LATEST, [v1])
    v2 = await fleet.upload("rp/k.json", "2", 3, T0 + timedelta(seconds=1))
    await fleet.w2.run_batch(LATEST, [v2])
    assert (fleet.ledger.files[v1.file_id].status, fleet.ledger.files[v2.file_id].status) == ("REPLACED", "LOADED")
    fleet.check(LATEST, {"rp/k.json#2": 3})
    # the other order: an older version's file comes back to PENDING (a retry, a redelivery)
    fleet.ledger.files[v1.file_id].status = "PENDING"
    await fleet.w1.run_batch(LATEST, [v1])
    assert fleet.ledger.files[v1.file_id].status == "SKIPPED"
    fleet.check(LATEST, {"rp/k.json#2": 3})


async def test_replace_v2_failing_leaves_v1_whole_and_loaded() -> None:
    fleet = Fleet()
    fleet.gate.set()
    v1 = await fleet.upload("rp/k.json", "1", 2, T0)
    await fleet.w1.run_batch(LATEST, [v1])
    v2 = await fleet.upload("rp/k.json", "2", 3, T0 + timedelta(seconds=1))
    fleet.engine.faults[fleet.engine.writes + 1] = WriteFault(fail="before")  # v2's append fails
    await fleet.w2.run_batch(LATEST, [v2])
    assert (fleet.ledger.files[v1.file_id].status, fleet.ledger.files[v2.file_id].status) == ("LOADED", "PENDING")
    fleet.check(LATEST, {"rp/k.json#1": 2})  # nothing of v1 was deleted before v2's rows landed


async def test_replace_interrupted_between_append_and_delete_is_completed_by_recovery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fleet = Fleet()
    fleet.gate.set()
    v1 = await fleet.upload("rp/k.json", "1", 2, T0)
    await fleet.w1.run_batch(LATEST, [v1])
    v2 = await fleet.upload("rp/k.json", "2", 3, T0 + timedelta(seconds=1))
    delete = fleet.engine.delete_replaced

    async def unreachable(*args: object) -> None:
        raise TransientError("Spark Connect unavailable", error_class="SparkUnavailable")

    monkeypatch.setattr(fleet.engine, "delete_replaced", unreachable)
    await fleet.w2.run_batch(LATEST, [v2])  # appended, then the delete failed: outcome left to recovery
    batch = fleet.writing()
    assert fleet.rows(LATEST) == Counter({"rp/k.json#1": 2, "rp/k.json#2": 3})  # both, for now
    monkeypatch.setattr(fleet.engine, "delete_replaced", delete)
    await fleet.ledger.take_expired("w1", 30, 0, 10)  # handed over at once (expired lease)
    await fleet.w1.recover(batch, LATEST)
    assert fleet.ledger.batches[batch].status == COMMITTED
    assert (fleet.ledger.files[v1.file_id].status, fleet.ledger.files[v2.file_id].status) == ("REPLACED", "LOADED")
    fleet.check(LATEST, {"rp/k.json#2": 3})


async def test_rows_of_a_released_batch_that_landed_anyway_are_removed_by_the_audit() -> None:
    """An engine that confirms a stop but lets the commit land (Spark's interrupt is asynchronous):
    the last line removes the rows and counts them."""
    fleet = Fleet()
    a = await fleet.upload("ev/a.json", "1", 4)
    w1 = asyncio.ensure_future(fleet.w1.run_batch(EVENTS, [a]))
    await fleet.appending()
    batch = fleet.writing()
    await fleet.crash("w1", w1)
    fleet.expire(batch)
    await fleet.ledger.take_expired("w2", 30, 0, 10)

    async def confirms_but_lets_it_land(session_id: str, table: str = "") -> bool:
        return True  # the commit was already under way in the driver

    fleet.clients["w2"].stop = confirms_but_lets_it_land  # type: ignore[method-assign]
    await fleet.w2.recover(batch, EVENTS)
    fleet.gate.set()
    for _ in range(100):
        await asyncio.sleep(0)
    assert fleet.rows(EVENTS) == Counter({"ev/a.json#1": 4})  # the zombie's rows, under an ABORTED batch
    del fleet.clients["w2"].stop
    await fleet.w2.run_batch(EVENTS, [a])
    assert fleet.rows(EVENTS) == Counter({"ev/a.json#1": 8})  # visible twice until the audit
    assert await fleet.w2.audit() == 4
    fleet.check(EVENTS, {"ev/a.json#1": 4})
