"""The write fence in the real PostgreSQL ledger (docs/guarantees.md): the writer slot, lease
fencing, a lock whose connection is killed, version serialization, replace ordering, the audit.

Each test gets its own ledger schema on the stack's PostgreSQL; no engine is involved."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import asyncpg
import pytest

from worker.adapters.pg_ledger import PgLedger, connect_pool, migrate
from worker.domain.batching import FileWork
from worker.domain.events import FileEvent
from worker.domain.outcomes import LOADED, PENDING, FileResult
from worker.localstack import Stack
from worker.ports import Registration
from worker.settings import REPO_ROOT, PgSettings

TABLE = "glue.db.t"


@pytest.fixture
async def ledger(stack: Stack) -> AsyncIterator[tuple[PgLedger, asyncpg.Pool, str]]:
    schema = f"fence_{uuid.uuid4().hex[:10]}"
    settings = PgSettings(dsn=stack.pg_dsn, ledger_schema=schema, pool_max=3)
    await migrate(settings, REPO_ROOT / "migrations")
    pool = await connect_pool(settings)
    try:
        yield PgLedger(pool, lock_check_s=0.05), pool, schema
    finally:
        await pool.close()
        conn = await asyncpg.connect(stack.pg_dsn)
        try:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await conn.close()


async def register(
    led: PgLedger, key: str, etag: str, *, sequencer: str | None = None, at: datetime | None = None
) -> FileWork:
    event = FileEvent("b", key, 10, etag, sequencer, None, at, "ObjectCreated:Put", "s3")
    (state,) = await led.register([Registration("ing", event, etag, 10)])
    return FileWork(state.file_id, "ing", "b", key, etag, 10, at)


async def open_batch(led: PgLedger, files: list[FileWork], owner: str = "w1") -> UUID:
    batch = uuid4()
    claimed = await led.claim(batch, "ing", TABLE, files, owner, 60)
    assert [f.file_id for f in claimed] == sorted(f.file_id for f in files)
    return batch


async def test_the_writer_slot_keeps_a_second_append_out_until_the_first_batch_is_settled(ledger) -> None:
    led, _, _ = ledger
    a = await open_batch(led, [await register(led, "a.json", "e1")])
    b = await open_batch(led, [await register(led, "b.json", "e2")], owner="w2")
    async with led.table_lock(TABLE, 5) as lock:
        assert (await lock.fence(a, "w1", TABLE, "session-a", 60)).ok
    assert await led.engine_work(a) is not None and (await led.engine_work(a)).session_id == "session-a"
    async with led.table_lock(TABLE, 5) as lock:
        busy = await lock.fence(b, "w2", TABLE, "session-b", 60)
    assert (busy.ok, busy.reason, busy.blocking) == (False, "writer_busy", a)
    # a's append is settled (released here): the slot passes to b
    await led.abort(a, "w1", "Boom", "failed", [FileResult(f.file_id, PENDING) for f in await led.batch_files(a)])
    async with led.table_lock(TABLE, 5) as lock:
        assert (await lock.fence(b, "w2", TABLE, "session-b", 60)).ok
    assert (await led.engine_work(b)).session_id == "session-b"


async def test_a_batch_taken_over_cannot_be_fenced_by_its_old_owner(ledger) -> None:
    led, pool, _ = ledger
    a = await open_batch(led, [await register(led, "a.json", "e1")])
    await pool.execute("UPDATE batches SET lease_expires_at = now() - interval '1 hour' WHERE id = $1", a)
    taken = await led.take_expired("sweeper", 60, 0, 10)
    assert [t.batch_id for t in taken] == [a]
    async with led.table_lock(TABLE, 5) as lock:
        fence = await lock.fence(a, "w1", TABLE, "s", 60)
    assert (fence.ok, fence.reason) == (False, "lease_lost")
    assert (await led.engine_work(a)).session_id is None  # never fenced: nothing can have been written
    assert await led.extend([a], "w1", 60) == set()  # the heartbeat learns it
    assert await led.extend([a], "sweeper", 60) == {a}


async def test_a_killed_lock_connection_is_noticed_and_the_slot_still_keeps_the_next_writer_out(ledger) -> None:
    led, pool, _ = ledger
    a = await open_batch(led, [await register(led, "a.json", "e1")])
    b = await open_batch(led, [await register(led, "b.json", "e2")], owner="w2")
    async with led.table_lock(TABLE, 5) as lock:
        assert (await lock.fence(a, "w1", TABLE, "session-a", 60)).ok
        pid = await lock._conn.fetchval("SELECT pg_backend_pid()")
        await pool.execute("SELECT pg_terminate_backend($1)", pid)
        await asyncio.wait_for(lock.lost.wait(), 10)
        assert not await lock.held()
        # the advisory lock went with the connection: another worker takes it at once ...
        async with led.table_lock(TABLE, 2) as other:
            fence = await other.fence(b, "w2", TABLE, "session-b", 60)
        # ... but may not append while a's append may still be running
        assert (fence.ok, fence.reason, fence.blocking) == (False, "writer_busy", a)


async def test_a_waiter_for_a_busy_lock_does_not_sit_on_a_pool_connection(ledger) -> None:
    led, pool, _ = ledger  # pool of 3: one holds the lock, two would wait
    async with led.table_lock(TABLE, 5):
        waiters = [asyncio.ensure_future(_hold(led)) for _ in range(2)]
        for _ in range(20):  # finalize and heartbeat still get connections meanwhile
            assert await asyncio.wait_for(pool.fetchval("SELECT 1"), 2) == 1
        assert not any(w.done() for w in waiters)
    assert await asyncio.wait_for(asyncio.gather(*waiters), 10) == [True, True]


async def _hold(led: PgLedger) -> bool:
    async with led.table_lock(TABLE, 10):
        return True


async def test_two_versions_of_one_key_are_never_in_two_open_batches(ledger) -> None:
    led, _, _ = ledger
    v1 = await register(led, "k.json", "e1")
    v2 = await register(led, "k.json", "e2")
    a = await open_batch(led, [v1])
    assert await led.claim(uuid4(), "ing", TABLE, [v2], "w2", 60) == []  # waits for v1's batch
    await led.finalize(a, "w1", [FileResult(v1.file_id, LOADED, 3)])
    assert [f.file_id for f in await led.claim(uuid4(), "ing", TABLE, [v2], "w2", 60)] == [v2.file_id]


async def test_replace_plan_orders_versions_by_sequencer_then_event_time(ledger) -> None:
    led, _, _ = ledger
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    old = await register(led, "k.json", "e1", sequencer="0055B", at=t0)
    new = await register(led, "k.json", "e2", sequencer="0055B0001", at=t0 - timedelta(hours=1))
    a = await open_batch(led, [old])
    await led.finalize(a, "w1", [FileResult(old.file_id, LOADED, 1)])
    # the sequencer says new is newer (even though its event time is older): it replaces old
    assert await led.replace_plan([new.file_id]) == ({new.file_id}, set())
    b = await open_batch(led, [new])
    await led.finalize(b, "w1", [FileResult(new.file_id, LOADED, 1)], replaced=[new.file_id])
    # old comes back (a redelivery, released to PENDING by hand here): superseded, never replacing
    assert await led.replace_plan([old.file_id]) == (set(), {old.file_id})
    # without sequencers: event time decides
    x1 = await register(led, "x.json", "e1", at=t0)
    x2 = await register(led, "x.json", "e2", at=t0 + timedelta(seconds=1))
    c = await open_batch(led, [x2])
    await led.finalize(c, "w1", [FileResult(x2.file_id, LOADED, 1)])
    assert await led.replace_plan([x1.file_id]) == (set(), {x1.file_id})


async def test_the_audit_takes_each_released_appended_batch_once_and_again_after_a_failed_audit(ledger) -> None:
    led, _, _ = ledger
    f = await register(led, "a.json", "e1")
    a = await open_batch(led, [f])
    never = await open_batch(led, [await register(led, "b.json", "e2")])
    async with led.table_lock(TABLE, 5) as lock:
        assert (await lock.fence(a, "w1", TABLE, "s", 60)).ok
    await led.abort(a, "w1", "Recovered", "x", [FileResult(f.file_id, PENDING)])
    await led.abort(never, "w1", "Recovered", "x", [])
    assert await led.audit_candidates(3600, 10) == []  # too recent: a detached append may still land
    (only,) = await led.audit_candidates(0, 10)
    assert (only.batch_id, only.table) == (a, TABLE)  # never-fenced batches need no audit
    assert await led.audit_candidates(0, 10) == []  # taken
    await led.mark_audited(a, None)  # the audit could not run: it comes back
    assert [c.batch_id for c in await led.audit_candidates(0, 10)] == [a]
    await led.mark_audited(a, 7)
    assert await led.audit_candidates(0, 10) == []


async def test_maintenance_sees_a_fenced_append_until_its_batch_is_settled(ledger) -> None:
    """writer_busy (what table maintenance checks under the lock) follows the writer slot."""
    led, _, _ = ledger
    async with led.table_lock(TABLE, 5) as lock:
        assert not await lock.writer_busy(TABLE)  # no writer yet
    a = await open_batch(led, [await register(led, "a.json", "e1")])
    async with led.table_lock(TABLE, 5) as lock:
        assert not await lock.writer_busy(TABLE)  # claimed, not fenced: no append can have started
        assert (await lock.fence(a, "w1", TABLE, "session-a", 60)).ok
    async with led.table_lock(TABLE, 5) as lock:
        assert await lock.writer_busy(TABLE)  # its lock is gone, its append may still run
        assert not await lock.writer_busy("glue.db.other")
    await led.abort(a, "w1", "Boom", "failed", [FileResult(f.file_id, PENDING) for f in await led.batch_files(a)])
    async with led.table_lock(TABLE, 5) as lock:
        assert not await lock.writer_busy(TABLE)


async def test_the_maintenance_lease_is_one_workers_until_it_lapses(ledger) -> None:
    led, pool, _ = ledger
    first = await led.maintenance_take(TABLE, "w1", 60, 300)
    assert first is not None and first.orphans_checked_s_ago is None
    assert await led.maintenance_take(TABLE, "w2", 60, 0) is None  # held by w1
    assert await led.maintenance_extend(TABLE, "w1", 60) and not await led.maintenance_extend(TABLE, "w2", 60)
    await led.maintenance_finish(
        TABLE, "w1", "done", None, {"snapshots": 3}, True, [{"step": "expire", "outcome": "done"}]
    )
    assert await led.maintenance_take(TABLE, "w2", 60, 300) is None  # free, but not due for 300 s
    again = await led.maintenance_take(TABLE, "w2", 60, 0)
    assert again is not None and again.orphans_checked_s_ago is not None and again.orphans_checked_s_ago < 60
    await pool.execute("UPDATE table_maintenance SET lease_expires_at = now() - interval '1 s'")
    assert await led.maintenance_take(TABLE, "w3", 60, 0) is not None  # w2 died: its lease lapsed
    row = await pool.fetchrow("SELECT lease_owner, outcome, stats, steps FROM table_maintenance")
    assert row["lease_owner"] == "w3" and row["outcome"] == "done" and '"snapshots": 3' in row["stats"]
