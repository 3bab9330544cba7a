"""The batch protocol of ``Pipeline`` (docs/guarantees.md) on the shared in-memory fakes
(tests/fakes.py): one commit for many files, bisection of a failing batch down to its bad file,
the failed-write path (stop the session, ask the table, release), recovery of an expired batch
and finalize's per-file outcomes. No servers, no sleeps: the engine's append is held at a gate
where a test needs a worker to die in the middle of it."""

from __future__ import annotations

import asyncio
import os
from collections import Counter, defaultdict
from datetime import UTC, datetime
from uuid import UUID, uuid4

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
from worker.domain.errors import DataError
from worker.domain.events import FileEvent
from worker.pipeline import Pipeline
from worker.ports import Inference, Registration, WriteRequest
from worker.settings import load_settings

EVENTS = "cat.db.events"
T0 = datetime(2026, 11, 27, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_icefeed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("ICEFEED_")]:
        monkeypatch.delenv(name)


class PoisonEngine(FakeEngine):
    """An engine whose whole write fails with a data error while the batch holds a poisoned key
    (what a file the engine cannot read does to a Spark job): the pipeline must bisect."""

    poisoned: frozenset[str] = frozenset()
    attempts: list[list[str]]

    async def infer(self, request: WriteRequest) -> Inference:
        self.attempts.append(sorted(f.key for f in request.files))
        bad = sorted(f.key for f in request.files if f.key in self.poisoned)
        if bad:
            raise DataError(f"cannot read {bad[0]}", error_class="MalformedFile")
        return await super().infer(request)


class World:
    """Workers' pipelines over one ledger, one object store and one engine."""

    def __init__(self, engine: type[FakeEngine] = FakeEngine) -> None:
        self.ledger = FakeLedger()
        self.store = FakeStore()
        self.engine = engine(self.store)
        self.gate = asyncio.Event()  # appends commit only once it is set
        self.engine.gates["before_commit"] = self.gate
        self.gate.set()
        self.seen: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)  # engine events
        self.engine.on_change = lambda what, _detail: self.seen[what].set()

    def pipeline(self, name: str) -> Pipeline:
        settings = interleaving_settings(name)
        return Pipeline(
            settings, ROUTES, self.ledger, self.store, self.engine, LocalDecoder.for_settings(settings.spark)
        )

    async def kill(self, worker: Pipeline, task: asyncio.Future[None]) -> None:
        """kill -9: the worker's task ends where it is and the engine goes on with its append. A
        dead process runs no ``finally`` block, so its engine client stops nothing on the way."""
        engine = self.engine

        class DeadClient:
            def __getattr__(self, name: str) -> object:
                return getattr(engine, name)

            async def stop(self, session_id: str, table: str = "") -> bool:
                return False

        worker.sink = DeadClient()  # type: ignore[assignment]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def upload(self, key: str, rows: int, body: bytes | None = None) -> FileWork:
        body = body_of(key, "1", rows) if body is None else body
        etag = self.store.put("landing", key, body)
        event = FileEvent("landing", key, len(body), etag, None, None, T0, "ObjectCreated:Put", "s3")
        (state,) = await self.ledger.register([Registration("ev", event, etag, len(body))])
        return FileWork(state.file_id, "ev", "landing", key, etag, len(body), T0)

    def status(self, f: FileWork) -> str:
        return self.ledger.files[f.file_id].status

    def rows(self) -> Counter[str]:
        return Counter(r["k"] for r in self.engine.table(EVENTS).rows)

    def batches(self, status: str) -> list[UUID]:
        return [b for b, row in self.ledger.batches.items() if row.status == status]

    async def held_append(self, files: list[FileWork]) -> tuple[Pipeline, asyncio.Task[None], UUID]:
        """w1 runs a batch of ``files`` whose append is held at the gate (started, not committed)."""
        self.gate.clear()
        w1 = self.pipeline("w1")
        task = asyncio.ensure_future(w1.run_batch(EVENTS, files))
        await asyncio.wait_for(self.seen["append_started"].wait(), 10)
        (batch,) = self.batches(WRITING)
        return w1, task, batch

    def expire(self, batch: UUID) -> None:
        self.ledger.batches[batch].expires = self.ledger.clock() - 60


# -- run_batch ---------------------------------------------------------------------------------


async def test_many_files_go_in_one_commit_and_are_finalized_with_their_row_counts() -> None:
    world = World()
    files = [await world.upload(f"ev/{i}.json", i + 1) for i in range(5)]
    await world.pipeline("w1").run_batch(EVENTS, files)
    assert world.engine.writes == 1 and world.engine.table(EVENTS).version == 1  # one append, one commit
    (batch,) = world.batches(COMMITTED)
    assert world.batches(WRITING) == [] and world.batches(ABORTED) == []
    assert world.ledger.batches[batch].files == 5 and world.ledger.batches[batch].rows == 15
    assert [(world.status(f), world.ledger.files[f.file_id].rows) for f in files] == [
        ("LOADED", i + 1) for i in range(5)
    ]
    assert {r["_batch_id"] for r in world.engine.table(EVENTS).rows} == {str(batch)}
    assert world.rows() == Counter({f"ev/{i}.json": i + 1 for i in range(5)})


async def test_a_data_error_is_bisected_down_to_the_bad_file_and_the_rest_is_loaded() -> None:
    world = World(PoisonEngine)
    assert isinstance(world.engine, PoisonEngine)
    world.engine.poisoned, world.engine.attempts = frozenset({"ev/2.json"}), []
    files = [await world.upload(f"ev/{i}.json", 2) for i in range(4)]
    await world.pipeline("w1").run_batch(EVENTS, files)
    assert world.engine.attempts == [
        ["ev/0.json", "ev/1.json", "ev/2.json", "ev/3.json"],
        ["ev/0.json", "ev/1.json"],
        ["ev/2.json", "ev/3.json"],
        ["ev/2.json"],
        ["ev/3.json"],
    ]
    assert [world.status(f) for f in files] == ["LOADED", "LOADED", "FAILED", "LOADED"]
    bad = world.ledger.files[files[2].file_id]
    assert (bad.error_class, bad.error_message) == ("MalformedFile", "cannot read ev/2.json")
    assert world.rows() == Counter({"ev/0.json": 2, "ev/1.json": 2, "ev/3.json": 2})
    assert len(world.batches(COMMITTED)) == 2 and len(world.batches(ABORTED)) == 3
    assert world.batches(WRITING) == []
    # each released batch's engine session was stopped before its files were released
    assert Counter(world.engine.sessions.values())["stopped"] == 3


async def test_a_transient_append_failure_stops_the_session_releases_the_batch_and_leaves_files_pending() -> None:
    world = World()
    files = [await world.upload(f"ev/{i}.json", 1) for i in range(3)]
    world.engine.faults[1] = WriteFault(fail="before")  # the append's call fails: nothing written
    await world.pipeline("w1").run_batch(EVENTS, files)
    (batch,) = world.batches(ABORTED)
    assert world.ledger.batches[batch].error_class == "SparkUnavailable"
    assert world.ledger.batches[batch].owner is None and world.ledger.batches[batch].expires is None
    assert list(world.engine.sessions.values()) == ["stopped"]  # stopped before the table was asked
    assert [world.status(f) for f in files] == ["PENDING"] * 3  # retried as they are, not bisected
    assert world.engine.writes == 1 and world.rows() == Counter()
    await world.pipeline("w1").run_batch(EVENTS, files)  # the retry loads them
    assert [world.status(f) for f in files] == ["LOADED"] * 3


async def test_an_append_that_committed_but_whose_answer_was_lost_is_finalized_not_released() -> None:
    world = World()
    files = [await world.upload(f"ev/{i}.json", 2) for i in range(2)]
    world.engine.faults[1] = WriteFault(fail="after")  # committed; the client got an error
    await world.pipeline("w1").run_batch(EVENTS, files)
    assert len(world.batches(COMMITTED)) == 1 and world.batches(ABORTED) == [] and world.engine.writes == 1
    assert [(world.status(f), world.ledger.files[f.file_id].rows) for f in files] == [("LOADED", 2)] * 2
    assert world.rows() == Counter({"ev/0.json": 2, "ev/1.json": 2})


# -- recover ---------------------------------------------------------------------------------------


async def test_recover_releases_an_expired_batch_that_was_never_fenced() -> None:
    world = World()
    files = [await world.upload(f"ev/{i}.json", 1) for i in range(2)]
    batch = uuid4()
    claimed = await world.ledger.claim(batch, "ev", EVENTS, files, "w1", 30)  # w1 died right after
    assert len(claimed) == 2 and world.ledger.batches[batch].status == WRITING
    world.expire(batch)
    assert [t.batch_id for t in await world.ledger.take_expired("w2", 30, 0, 10)] == [batch]
    await world.pipeline("w2").recover(batch, EVENTS)
    assert world.ledger.batches[batch].status == ABORTED
    assert [(world.status(f), world.ledger.files[f.file_id].error_class) for f in files] == [
        ("PENDING", "Recovered")
    ] * 2
    assert world.engine.ops == [] and world.rows() == Counter()


async def test_recover_finalizes_a_fenced_batch_whose_rows_are_in_the_table() -> None:
    world = World()
    files = [await world.upload(f"ev/{i}.json", 3) for i in range(2)]
    w1, task, batch = await world.held_append(files)
    await world.kill(w1, task)  # during the append: the engine goes on with it
    world.gate.set()
    await asyncio.wait_for(world.seen["op_committed"].wait(), 10)  # the ledger still says WRITING
    assert world.ledger.batches[batch].status == WRITING and world.rows() == Counter({"ev/0.json": 3, "ev/1.json": 3})
    world.expire(batch)
    await world.ledger.take_expired("w2", 30, 0, 10)
    await world.pipeline("w2").recover(batch, EVENTS)
    assert world.ledger.batches[batch].status == COMMITTED and world.ledger.batches[batch].rows == 6
    assert [(world.status(f), world.ledger.files[f.file_id].rows) for f in files] == [("LOADED", 3)] * 2
    assert world.rows() == Counter({"ev/0.json": 3, "ev/1.json": 3})  # nothing written twice


async def test_recover_releases_a_fenced_batch_whose_append_never_landed() -> None:
    world = World()
    files = [await world.upload("ev/a.json", 2)]
    w1, task, batch = await world.held_append(files)
    await world.kill(w1, task)
    world.expire(batch)
    await world.ledger.take_expired("w2", 30, 0, 10)
    await world.pipeline("w2").recover(batch, EVENTS)  # stops the session first, then asks the table
    assert world.ledger.batches[batch].status == ABORTED and world.status(files[0]) == "PENDING"
    (op,) = world.engine.ops
    assert op.killed == "session stopped" and not op.committed
    world.gate.set()
    await asyncio.wait_for(world.seen["op_killed"].wait(), 10)
    assert not world.seen["op_committed"].is_set() and world.rows() == Counter()  # it never lands


# -- finalize ------------------------------------------------------------------------------------


async def test_finalize_records_each_files_outcome_in_the_one_commit() -> None:
    """One batch: files with rows are LOADED with their counts, an unreadable one FAILED, an
    empty one LOADED with 0 rows; the batch's first schema is recorded with it."""
    world = World()
    good = await world.upload("ev/good.json", 4)
    bad = await world.upload("ev/bad.json", 0, body=b"{not json\n")
    empty = await world.upload("ev/empty.json", 0)
    await world.pipeline("w1").run_batch(EVENTS, [good, bad, empty])
    (batch,) = world.batches(COMMITTED)
    assert world.engine.writes == 1 and world.ledger.batches[batch].rows == 4
    outcome = {f.key: (world.status(f), world.ledger.files[f.file_id].rows) for f in (good, bad, empty)}
    assert outcome == {"ev/good.json": ("LOADED", 4), "ev/bad.json": ("FAILED", None), "ev/empty.json": ("LOADED", 0)}
    assert world.ledger.files[bad.file_id].error_class is not None
    assert [v.table for v in world.ledger.schema_versions] == [EVENTS]
    assert world.rows() == Counter({"ev/good.json": 4})


async def test_a_batch_taken_over_before_its_finalize_is_settled_by_the_new_owner_only() -> None:
    """The writer's finalize is fenced by the lease: once a sweeper took the batch, the writer
    neither finalizes nor releases it; the new owner's recovery finalizes it once."""
    world = World()
    files = [await world.upload("ev/a.json", 2)]
    _w1, task, batch = await world.held_append(files)
    world.expire(batch)
    await world.ledger.take_expired("w2", 30, 0, 10)  # w1 froze past its lease
    world.gate.set()
    await task  # w1's append committed, but the batch is no longer its own: it leaves it
    assert world.ledger.batches[batch].status == WRITING and world.ledger.batches[batch].owner == "w2"
    await world.pipeline("w2").recover(batch, EVENTS)
    assert world.ledger.batches[batch].status == COMMITTED and world.status(files[0]) == "LOADED"
    assert world.rows() == Counter({"ev/a.json": 2})


async def test_a_released_batch_keeps_what_its_gets_settled_for_good() -> None:
    """Seen in the bad-input suite under load: a worker-read file whose GET found it deleted (or
    overwritten) was released PENDING with the rest of its batch when the batch could not write
    (table busy, engine down), claimed again and only then recorded GONE. It is GONE at once."""
    world = World()
    gone, overwritten, kept = [await world.upload(f"ev/{name}.json", 2) for name in ("gone", "new", "kept")]
    world.store.delete("landing", gone.key)
    world.store.put("landing", overwritten.key, body_of(overwritten.key, "2", 3))
    world.engine.unreachable_until = world.ledger.clock() + 3600  # every engine call is refused
    settings = load_settings(
        worker_id="w1",
        sqs={"queue_urls": ["https://sqs.local/q"]},
        spark={"dialect": "sail", "worker_read_max_bytes": 1_000_000, "detached_limit_s": 600},
        lease={"ttl_s": 30, "orphan_grace_s": 0},
    )
    w1 = Pipeline(settings, ROUTES, world.ledger, world.store, world.engine, LocalDecoder.for_settings(settings.spark))
    await w1.run_batch(EVENTS, [gone, overwritten, kept])
    (batch,) = world.batches(ABORTED)
    assert world.ledger.batches[batch].error_class == "SparkUnavailable"
    assert [(world.status(f), world.ledger.files[f.file_id].error_class) for f in (gone, overwritten, kept)] == [
        ("GONE", "ObjectGone"),
        ("SKIPPED", "Superseded"),
        ("PENDING", "SparkUnavailable"),
    ]
    assert world.engine.table(EVENTS).rows == []
