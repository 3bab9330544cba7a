"""PostgreSQL hygiene on the real stack: every wait on the ledger is bounded (lock, statement,
client command, idle transaction, migration locks) and surfaces as a TransientError naming its
limit; operator re-queues (retry, backfill, schema approve) hold no row lock while they talk to
SQS, and every interleaving with a worker claiming the same files, or with the operator stopping
between steps, ends with each file loaded once.

SQS calls go through a gate that stops the operator inside its send until the test lets it go
(or cancels it there: the operator process dies at that point)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import asyncpg
import pytest

from tests.harness import Env, poll
from worker.adapters.aws import AwsClients
from worker.adapters.pg_errors import timeouts_as_transient
from worker.adapters.pg_ledger import PgLedger, connect_pool, migrate
from worker.admin.requeue import backfill, retry
from worker.admin.schema import approve
from worker.domain.batching import FileWork
from worker.domain.errors import TransientError
from worker.domain.events import FileEvent, parse_message
from worker.ports import Registration
from worker.routes import load_routes
from worker.settings import REPO_ROOT, Settings, load_settings
from worker.sql import queries

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0


def settings_for(env: Env, monkeypatch: pytest.MonkeyPatch, **extra: str) -> Settings:
    for name, value in env.worker_env(**extra).items():
        monkeypatch.setenv(name, value)
    return load_settings()


@asynccontextmanager
async def raw(env: Env) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection outside icefeed's pool (no time limits): the other party in a test."""
    conn = await asyncpg.connect(env.stack.pg_dsn, server_settings={"search_path": env.schema})
    try:
        yield conn
    finally:
        await conn.close()


async def until(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Poll ``check`` until it returns something truthy, up to a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while loop.time() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# --------------------------------------------------------------------------- time limits


async def test_a_statement_stuck_behind_a_lock_ends_at_lock_timeout(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.migrate()
    settings = settings_for(env, monkeypatch, ICEFEED_PG_LOCK_TIMEOUT_S="0.3", ICEFEED_PG_STATEMENT_TIMEOUT_S="20")
    pool = await connect_pool(settings.pg)
    batch = uuid4()
    ledger = PgLedger(pool)
    q = queries("ledger.sql")
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW lock_timeout") == "300ms"
            assert await conn.fetchval("SHOW statement_timeout") == "20s"
            assert await conn.fetchval("SHOW idle_in_transaction_session_timeout") == "1min"
            assert await conn.fetchval("SHOW tcp_keepalives_idle") == "30"  # a TCP connection
        await pool.execute(q["open_batch"], batch, "events", "events", "w-1", 60, 0, 0)
        async with raw(env) as holder, holder.transaction():
            # Another session holds the batch row (say a sweeper's long transaction).
            await holder.fetch("SELECT id FROM batches WHERE id = $1 FOR UPDATE", batch)
            started = asyncio.get_running_loop().time()
            with pytest.raises(TransientError) as info, timeouts_as_transient():
                await asyncio.wait_for(ledger.extend([batch], "w-1", 60), DEADLINE_S)  # the heartbeat's statement
            waited = asyncio.get_running_loop().time() - started
        assert info.value.error_class == "PgLockTimeout"
        assert "ICEFEED_PG_LOCK_TIMEOUT_S" in str(info.value)
        assert waited < 10  # bounded by the limit, not by the holder (which never let go)
        assert await pool.fetchval("SELECT 1") == 1  # the pool's connection is fine afterwards
    finally:
        await pool.close()


async def test_a_slow_statement_ends_at_statement_timeout(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(env, monkeypatch, ICEFEED_PG_STATEMENT_TIMEOUT_S="0.3", ICEFEED_PG_LOCK_TIMEOUT_S="0.1")
    pool = await connect_pool(settings.pg)
    try:
        with pytest.raises(TransientError) as info, timeouts_as_transient():
            await pool.fetchval("SELECT pg_sleep(60)")
        assert info.value.error_class == "PgStatementTimeout"
    finally:
        await pool.close()


async def test_a_stalled_answer_ends_at_command_timeout_and_the_server_stops_too(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server-side limit off: only the client's limit can end the wait.
    settings = settings_for(env, monkeypatch, ICEFEED_PG_STATEMENT_TIMEOUT_S="0", ICEFEED_PG_COMMAND_TIMEOUT_S="0.3")
    pool = await connect_pool(settings.pg)
    stalled = "SELECT pg_sleep(61.5)"  # a statement no other test runs
    try:
        with pytest.raises(TransientError) as info, timeouts_as_transient():
            await pool.fetchval(stalled)
        assert info.value.error_class == "PgCommandTimeout"
        async with raw(env) as observer:

            async def gone() -> bool:
                rows = await observer.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query = $1", stalled
                )
                return not rows

            await until(gone, "the abandoned statement canceled on the server")
    finally:
        await pool.close()


async def test_a_transaction_left_idle_is_ended_by_the_server(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.migrate()
    settings = settings_for(env, monkeypatch, ICEFEED_PG_IDLE_IN_TRANSACTION_TIMEOUT_S="0.3")
    pool = await connect_pool(settings.pg)
    batch = uuid4()
    try:
        await pool.execute(queries("ledger.sql")["open_batch"], batch, "events", "events", "w-1", 60, 0, 0)
        conn = await pool.acquire()
        tx = conn.transaction()
        await tx.start()
        await conn.fetch("SELECT id FROM batches WHERE id = $1 FOR UPDATE", batch)
        pid = conn.get_server_pid()
        async with raw(env) as observer:

            async def ended() -> bool:
                return not await observer.fetch("SELECT 1 FROM pg_stat_activity WHERE pid = $1", pid)

            await until(ended, "the idle transaction's backend ended by the server")
            # Its row lock went with it: another session takes the row at once.
            async with observer.transaction():
                got = await observer.fetch("SELECT id FROM batches WHERE id = $1 FOR UPDATE NOWAIT", batch)
            assert len(got) == 1
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await conn.fetchval("SELECT 1")
    finally:
        pool.terminate()  # (a connection is still out)


async def test_a_migration_never_queues_behind_a_long_transaction(
    env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env.migrate()
    settings = settings_for(env, monkeypatch, ICEFEED_PG_LOCK_TIMEOUT_S="0.3")
    directory = tmp_path / "migrations"
    shutil.copytree(REPO_ROOT / "migrations", directory)
    version = len(list(directory.glob("*.sql"))) + 1
    name = f"{version:04d}_add_probe_column"
    (directory / f"{name}.sql").write_text("ALTER TABLE files ADD COLUMN probe integer;\n")
    async with raw(env) as reader:
        long_tx = reader.transaction()
        await long_tx.start()
        await reader.fetch("SELECT count(*) FROM files")  # a long reader holds ACCESS SHARE
        attempt = asyncio.create_task(migrate(settings.pg, directory))
        done, _ = await asyncio.wait({attempt}, timeout=DEADLINE_S)
        await long_tx.rollback()  # (lets a migration that queued behind it finish)
        assert done, "the migration queued behind the long transaction"
        with pytest.raises(TransientError) as info:
            attempt.result()
        assert info.value.error_class == "PgLockTimeout"
        assert name in str(info.value) and "nothing of it was applied" in str(info.value)
        assert await reader.fetchval("SELECT max(version) FROM schema_migrations") == version - 1
        assert await migrate(settings.pg, directory) == [name]
        assert (
            await reader.fetchval(
                "SELECT count(*) FROM information_schema.columns WHERE table_schema = $1 AND column_name = 'probe'",
                env.schema,
            )
            == 1
        )


# --------------------------------------------------------------------------- operator re-queues


class Gate:
    """Stands in for the SQS client: each send_message_batch waits until ``release`` is set,
    then fails (``fail``) or sends for real; with ``after_send`` the caller then hangs (until the
    test cancels it: the operator dies right after its send)."""

    def __init__(self, *, fail: bool = False, after_send: bool = False, released: bool = False) -> None:
        self.real: Any = None
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        if released:
            self.release.set()
        self.fail = fail
        self.after_send = after_send
        self.sent = asyncio.Event()

    async def send_message_batch(self, **kwargs: Any) -> Any:
        self.entered.set()
        await self.release.wait()
        if self.fail:
            raise OSError("SQS unreachable (test)")
        result = await self.real.send_message_batch(**kwargs)
        self.sent.set()
        if self.after_send:
            await asyncio.Event().wait()
        return result


@dataclass
class Scene:
    """A migrated ledger; a pool for the worker's side, a plain connection to look with, and the
    gates the operator's SQS calls go through (while ``gates`` holds one)."""

    env: Env
    settings: Settings
    pool: asyncpg.Pool
    conn: asyncpg.Connection
    gates: list[Gate]

    def uri(self, key: str = "") -> str:
        return f"s3://{self.env.bucket}/{key}"

    async def gated(self, command: Awaitable[dict[str, Any]], gate: Gate) -> asyncio.Task[dict[str, Any]]:
        """Start an operator command and return once it is inside its first SQS send."""
        self.gates.append(gate)
        task = asyncio.ensure_future(command)
        await asyncio.wait_for(gate.entered.wait(), DEADLINE_S)
        return task

    async def file(self, file_id: int) -> dict[str, Any]:
        return dict(await self.conn.fetchrow("SELECT * FROM files WHERE id = $1", file_id))

    async def insert_file(self, key: str, status: str, **cols: Any) -> int:
        file_id: int = await self.conn.fetchval(
            "INSERT INTO files (ingestion, bucket, key, etag, size_bytes, status, error_class, error_message,"
            " finished_at, proposal_id) VALUES ('events', $1, $2, $3, 10, $4, $5, $6, now(), $7) RETURNING id",
            self.env.bucket,
            key,
            "e-" + key.replace("/", "-"),
            status,
            cols.get("error_class"),
            cols.get("error_message"),
            cols.get("proposal_id"),
        )
        return file_id

    async def stuck(self) -> int:
        count: int = await self.conn.fetchval(queries("operator.sql")["stuck_count"], None, 3600.0)
        return count

    async def claim(self, file_id: int) -> bool:
        """A worker's claim of one file (the ledger's own claim)."""
        row = await self.file(file_id)
        work = FileWork(file_id, "events", row["bucket"], row["key"], row["etag"], row["size_bytes"] or 0)
        return bool(await PgLedger(self.pool).claim(uuid4(), "events", "events", [work], "claimer", 60))

    def drain(self) -> list[FileEvent]:
        """Every notification in the queue (deleted), parsed as the worker parses them."""
        env, events = self.env, []
        while True:
            got = env.sqs.receive_message(QueueUrl=env.prov.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            if not got.get("Messages"):
                return events
            for m in got["Messages"]:
                events += [r for r in parse_message(m["Body"]) if isinstance(r, FileEvent)]
                env.sqs.delete_message(QueueUrl=env.prov.queue_url, ReceiptHandle=m["ReceiptHandle"])

    async def intake(self, events: list[FileEvent]) -> list[int]:
        """What a worker does with notifications: register them, claim what is PENDING.
        Returns the ids it claimed."""
        ledger = PgLedger(self.pool)
        states = await ledger.register([Registration("events", e, e.etag or "", e.size) for e in events])
        work = [FileWork(s.file_id, "events", s.bucket, s.key, s.etag, 0) for s in states if s.status == "PENDING"]
        return [f.file_id for f in await ledger.claim(uuid4(), "events", "events", work, "worker", 60)]

    def put_unnotified(self, keys: list[str]) -> None:
        """Objects whose notifications were lost (the queue purged after they arrived)."""
        for key in keys:
            self.env.put(key, b'{"id": 1}\n')
        poll(lambda: self.env.queue_depth() >= len(keys), DEADLINE_S, "the objects' notifications")
        self.env.sqs.purge_queue(QueueUrl=self.env.prov.queue_url)


@pytest.fixture
async def scene(env: Env, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Scene]:
    env.migrate()
    settings = settings_for(env, monkeypatch)
    gates: list[Gate] = []

    @asynccontextmanager
    async def clients(aws_settings: Any) -> AsyncIterator[Any]:
        async with AwsClients(aws_settings) as aws:
            if gates:
                gates[0].real = aws.sqs
                yield SimpleNamespace(sqs=gates[0], s3=aws.s3)
            else:
                yield aws

    monkeypatch.setattr("worker.admin.common.AwsClients", clients)  # every operator command's AWS clients
    pool = await connect_pool(settings.pg)
    try:
        async with raw(env) as conn:
            yield Scene(env, settings, pool, conn, gates)
    finally:
        await pool.close()


async def test_retry_holds_no_row_lock_while_it_sends_and_a_worker_claims_meanwhile(scene: Scene) -> None:
    fid = await scene.insert_file("events/big.json", "FAILED", error_class="FileTooLarge")
    op = await scene.gated(retry(scene.settings, scene.uri("events/big.json")), Gate())
    # The operator is inside its SQS call: the file is already PENDING (committed) and no lock
    # is held on it; a worker that sees it now claims it.
    marked = await scene.file(fid)
    assert (marked["status"], marked["error_class"]) == ("PENDING", "Requeuing")
    async with scene.conn.transaction():
        assert await scene.conn.fetch("SELECT id FROM files WHERE id = $1 FOR UPDATE NOWAIT", fid)
    assert await scene.claim(fid)
    scene.gates[0].release.set()
    result = await asyncio.wait_for(op, DEADLINE_S)
    assert [r["id"] for r in result["requeued"]] == [fid]
    # The record step left the worker's claim alone.
    after = await scene.file(fid)
    assert (after["status"], after["error_class"], after["attempts"]) == ("CLAIMED", None, 1)
    # The notification it sent finds the file claimed: nothing is claimed twice.
    events = scene.drain()
    assert [e.key for e in events] == ["events/big.json"]
    assert await scene.intake(events) == []
    assert (await scene.file(fid))["events_seen"] == 2


async def test_retry_stopped_between_mark_and_send_is_finished_by_retry_failed(scene: Scene) -> None:
    fid = await scene.insert_file("events/a.json", "FAILED", error_class="ParseError", error_message="x")
    scene.gates.append(Gate(fail=True, released=True))
    with pytest.raises(TransientError) as info:
        await retry(scene.settings, scene.uri("events/a.json"))
    assert "icefeed retry --failed" in str(info.value) and info.value.error_class == "AwsUnavailable"
    row = await scene.file(fid)
    assert (row["status"], row["error_class"]) == ("PENDING", "Requeuing")
    assert scene.drain() == []  # nothing was sent
    assert await scene.stuck() == 1

    scene.gates.clear()  # SQS is back
    result = await retry(scene.settings, failed=True)
    assert [(r["id"], r["was"], r["was_error_class"]) for r in result["requeued"]] == [(fid, "PENDING", "Requeuing")]
    row = await scene.file(fid)
    assert (row["status"], row["error_class"]) == ("PENDING", "Retried")
    assert "was FAILED (ParseError: x)" in row["error_message"]
    assert await scene.stuck() == 0
    assert await scene.intake(scene.drain()) == [fid]
    assert (await retry(scene.settings, failed=True))["requeued"] == []


async def test_retry_dying_after_its_send_leaves_a_file_that_loads_once(scene: Scene) -> None:
    fid = await scene.insert_file("events/b.json", "FAILED", error_class="ParseError")
    gate = Gate(after_send=True, released=True)
    op = await scene.gated(retry(scene.settings, scene.uri("events/b.json")), gate)
    await asyncio.wait_for(gate.sent.wait(), DEADLINE_S)
    op.cancel()  # the operator dies after sending, before recording
    with pytest.raises(asyncio.CancelledError):
        await op
    row = await scene.file(fid)
    assert (row["status"], row["error_class"]) == ("PENDING", "Requeuing")
    # A second retry sends again: two notifications for one version, claimed once.
    scene.gates.clear()
    assert [r["id"] for r in (await retry(scene.settings, failed=True))["requeued"]] == [fid]
    events = scene.drain()
    assert [e.key for e in events] == ["events/b.json", "events/b.json"]
    assert await scene.intake(events) == [fid]
    assert await scene.intake(events) == []


async def test_backfill_holds_no_row_lock_while_it_sends_and_a_worker_claims_meanwhile(scene: Scene) -> None:
    routes = load_routes(scene.env.routes_file)
    keys = ["events/lost-1.json", "events/lost-2.json"]
    scene.put_unnotified(keys)
    op = await scene.gated(backfill(scene.settings, routes, scene.uri("events/")), Gate())
    rows = await scene.conn.fetch("SELECT id, key, status, events_seen, error_class FROM files ORDER BY key")
    assert [(r["key"], r["status"], r["events_seen"], r["error_class"]) for r in rows] == [
        (k, "PENDING", 0, "Requeuing") for k in keys
    ]
    assert await scene.claim(rows[0]["id"])  # a late S3 event reached a worker meanwhile
    scene.gates[0].release.set()
    result = await asyncio.wait_for(op, DEADLINE_S)
    assert (result["sent"], sorted(result["sent_keys"])) == (2, keys)
    after = {r["key"]: r for r in await scene.conn.fetch("SELECT * FROM files")}
    assert (after[keys[0]]["status"], after[keys[0]]["error_class"]) == ("CLAIMED", None)
    assert (after[keys[1]]["status"], after[keys[1]]["error_class"]) == ("PENDING", None)
    events = scene.drain()
    assert sorted(e.key for e in events) == keys
    assert await scene.intake(events) == [after[keys[1]]["id"]]
    again = await backfill(scene.settings, routes, scene.uri("events/"))
    assert (again["sent"], again["already_known"]) == (0, {"CLAIMED": 2})


async def test_backfill_killed_before_its_send_is_finished_by_the_next_backfill(scene: Scene) -> None:
    routes = load_routes(scene.env.routes_file)
    keys = ["events/k-1.json", "events/k-2.json"]
    scene.put_unnotified(keys)
    op = await scene.gated(backfill(scene.settings, routes, scene.uri("events/")), Gate())
    op.cancel()  # the operator dies before anything is sent
    with pytest.raises(asyncio.CancelledError):
        await op
    assert scene.drain() == []
    assert await scene.stuck() == 2
    scene.gates.clear()
    second = await backfill(scene.settings, routes, scene.uri("events/"))
    assert (second["sent"], sorted(second["sent_keys"]), second["already_known"]) == (2, keys, {})
    third = await backfill(scene.settings, routes, scene.uri("events/"))
    assert (third["sent"], third["already_known"]) == (0, {"PENDING": 2})
    events = scene.drain()
    assert sorted(e.key for e in events) == keys
    assert len(await scene.intake(events)) == 2
    statuses = await scene.conn.fetch("SELECT status, events_seen, attempts FROM files")
    assert sorted(tuple(r) for r in statuses) == [("CLAIMED", 1, 1)] * 2


async def test_schema_approve_commits_before_it_sends(scene: Scene) -> None:
    proposal = await scene.conn.fetchval(
        "INSERT INTO schema_proposals (table_name, ingestion, policy, signature, incoming_schema, changes)"
        " VALUES ('db.events', 'events', 'quarantine', 'sig', '{}', '[]') RETURNING id"
    )
    fid = await scene.insert_file("events/q.json", "QUARANTINED", proposal_id=proposal)
    op = await scene.gated(approve(scene.settings, proposal, "merge"), Gate())
    async with scene.conn.transaction():  # neither the proposal nor the file is locked
        assert await scene.conn.fetch("SELECT id FROM schema_proposals WHERE id = $1 FOR UPDATE NOWAIT", proposal)
        assert await scene.conn.fetch("SELECT id FROM files WHERE id = $1 FOR UPDATE NOWAIT", fid)
    assert await scene.conn.fetchval("SELECT status FROM schema_proposals WHERE id = $1", proposal) == "APPROVED"
    assert (await scene.file(fid))["error_class"] == "Requeuing"
    scene.gates[0].release.set()
    result = await asyncio.wait_for(op, DEADLINE_S)
    assert (result["files"], result["keys"]) == (1, ["events/q.json"])
    row = await scene.file(fid)
    assert (row["status"], row["error_class"], row["error_message"]) == ("PENDING", None, None)
    assert await scene.intake(scene.drain()) == [fid]
