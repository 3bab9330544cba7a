"""The ledger in PostgreSQL (asyncpg): file identities, claims, batches, migrations."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import orjson
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from worker.adapters.pg_errors import TIMEOUT_ERRORS, timeout_error
from worker.domain.batching import FileWork
from worker.domain.errors import ConfigError, TransientError
from worker.domain.outcomes import FileResult
from worker.ports import (
    AuditBatch,
    EngineWork,
    ExpiredBatch,
    Fence,
    FileState,
    MaintenanceTurn,
    Message,
    Quarantine,
    Registration,
    SchemaVersion,
)
from worker.settings import IDENTIFIER, PgSettings, milliseconds
from worker.sql import queries

T = TypeVar("T")
LOCK_CHECK_TIMEOUT_S = 10.0  # a lock connection that does not answer a round trip within this is lost
MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

# Connection-level failures: the statement may be retried on a fresh connection.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,  # a connection terminated mid-operation (pg_terminate_backend)
    asyncpg.exceptions.PostgresConnectionError,
)
# A lock check that gets no answer in time, and a pool that cannot hand out a connection: as lost.
_LOCK_CHECK_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, TimeoutError)
_TAKE_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, TransientError)


async def connect_pool(settings: PgSettings) -> asyncpg.Pool:
    if not IDENTIFIER.match(settings.ledger_schema):
        raise ConfigError("ICEFEED_PG_LEDGER_SCHEMA: invalid identifier")
    try:
        pool = await asyncpg.create_pool(
            settings.dsn.get_secret_value(),
            min_size=settings.pool_min,
            max_size=settings.pool_max,
            timeout=settings.connect_timeout_s,
            command_timeout=settings.command_timeout_s or None,
            server_settings=settings.server_settings("icefeed"),
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise TransientError(
            f"PostgreSQL unreachable: {type(exc).__name__}: {exc}", error_class="PgUnavailable"
        ) from None
    assert pool is not None
    return pool


class PgTableLock:
    """A held table lock: its connection, a watchdog, and the fence (docs/guarantees.md)."""

    def __init__(self, conn: asyncpg.pool.PoolConnectionProxy, q: dict[str, str], check_s: float) -> None:
        self._conn = conn
        self._q = q
        self._use = asyncio.Lock()  # one statement at a time on the connection
        self.lost = asyncio.Event()
        conn.add_termination_listener(self._terminated)
        self._watch = asyncio.ensure_future(self._watchdog(check_s))

    def _terminated(self, _conn: object) -> None:
        self.lost.set()

    async def _watchdog(self, check_s: float) -> None:
        while not self.lost.is_set():
            await asyncio.sleep(check_s)
            await self.held()

    async def close(self) -> None:
        self._watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watch
        with contextlib.suppress(*CONNECTION_ERRORS):  # a terminated connection is already gone
            self._conn.remove_termination_listener(self._terminated)

    async def held(self) -> bool:
        """A round trip on the lock's connection: a session advisory lock lives as long as its
        session, so an answer means the lock is still ours."""
        if self.lost.is_set():
            return False
        try:
            async with self._use:
                await asyncio.wait_for(self._conn.fetchval(self._q["lock_alive"]), timeout=LOCK_CHECK_TIMEOUT_S)
            return True
        except _LOCK_CHECK_ERRORS:
            self.lost.set()
            return False

    async def fence(self, batch_id: UUID, owner: str, table: str, session_id: str, ttl_s: int) -> Fence:
        """The point of no return, in one transaction on the lock's connection: the batch is still
        WRITING and ``owner``'s, and the table's previous writer is no longer WRITING; then the
        writer slot is this batch's, its lease renewed and its engine session recorded."""
        try:
            async with self._use, self._conn.transaction():
                if await self._conn.fetchval(self._q["fence_batch_row"], batch_id, owner) is None:
                    return Fence(False, "lease_lost")
                slot = await self._conn.fetchrow(self._q["fence_slot"], table, batch_id)
                if slot is not None and slot["batch_id"] != batch_id and slot["busy"]:
                    return Fence(False, "writer_busy", slot["batch_id"])
                if await self._conn.fetchval(self._q["fence_take"], batch_id, owner, ttl_s, table, session_id) is None:
                    return Fence(False, "lease_lost")
                return Fence(True)
        except TIMEOUT_ERRORS as exc:  # a limit fired: nothing of the fence took effect
            error = timeout_error(exc)
            assert error is not None
            raise error from None
        except CONNECTION_ERRORS as exc:
            self.lost.set()
            raise TransientError(f"PostgreSQL: lock connection lost: {exc}", error_class="PgConnectionLost") from None

    async def writer_busy(self, table: str) -> bool:
        """Whether the batch holding ``table``'s writer slot may still be appending (read on the
        lock's connection, so the answer holds while the lock does)."""
        try:
            async with self._use:
                return bool(await self._conn.fetchval(self._q["table_writer_busy"], table))
        except CONNECTION_ERRORS as exc:
            self.lost.set()
            raise TransientError(f"PostgreSQL: lock connection lost: {exc}", error_class="PgConnectionLost") from None


def _unchanged(text: str) -> str:
    return text


class _TimedPool:
    """The pool, with every wait for a connection bounded (``ICEFEED_PG_ACQUIRE_TIMEOUT_S``): a
    worker whose connections are all busy reports it (PgAcquireTimeout) instead of hanging."""

    def __init__(self, pool: asyncpg.Pool, acquire_s: float) -> None:
        self._pool = pool
        self.acquire_s = acquire_s

    async def take(self, timeout_s: float | None = None) -> asyncpg.pool.PoolConnectionProxy:
        try:
            return await self._pool.acquire(timeout=timeout_s or self.acquire_s)
        except TimeoutError as exc:
            error = timeout_error(exc, acquiring=True)
            assert error is not None
            raise error from None

    async def release(self, conn: asyncpg.pool.PoolConnectionProxy) -> None:
        await self._pool.release(conn)

    async def _with(self, method: str, query: str, *args: Any) -> Any:
        conn = await self.take()
        try:
            return await getattr(conn, method)(query, *args)
        finally:
            await self._pool.release(conn)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._with("fetch", query, *args)
        return rows

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._with("fetchrow", query, *args)
        return row

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._with("fetchval", query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        status: str = await self._with("execute", query, *args)
        return status


class PgLedger:
    def __init__(
        self,
        pool: asyncpg.Pool,
        attempts: int = 5,
        scrub: Callable[[str], str] = _unchanged,
        lock_check_s: float = 5.0,
        acquire_timeout_s: float = 10.0,
    ) -> None:
        """``scrub`` masks secrets in every text the ledger stores (error messages, rejected
        messages): errors can echo a URL or a property that holds one. ``lock_check_s``: how often a
        held table lock's connection is checked. ``acquire_timeout_s``: how long any call waits for
        a pooled connection (``ICEFEED_PG_ACQUIRE_TIMEOUT_S``)."""
        self._pool = _TimedPool(pool, acquire_timeout_s)
        self._q = queries("ledger.sql")
        self._attempts = attempts
        self._scrub = scrub
        self._lock_check_s = lock_check_s

    async def _retry(self, op: Callable[[], Awaitable[T]]) -> T:
        try:
            async for attempt in AsyncRetrying(
                # a time limit that fired is not a lost connection: it is reported, not retried
                retry=retry_if_exception_type(CONNECTION_ERRORS) & retry_if_not_exception_type(TIMEOUT_ERRORS),
                stop=stop_after_attempt(self._attempts),
                wait=wait_exponential(multiplier=0.1, max=3),
                reraise=True,
            ):
                with attempt:
                    return await op()
        except TIMEOUT_ERRORS as exc:
            error = timeout_error(exc)
            assert error is not None
            raise error from None
        except CONNECTION_ERRORS as exc:
            raise TransientError(f"PostgreSQL: {type(exc).__name__}: {exc}", error_class="PgConnectionLost") from None
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy]:
        conn = await self._pool.take()
        try:
            async with conn.transaction():
                yield conn
        finally:
            await self._pool.release(conn)

    @asynccontextmanager
    async def table_lock(self, table: str, timeout_s: float) -> AsyncIterator[PgTableLock]:
        """Hold the fleet-wide commit lock of ``table``; TransientError if busy past ``timeout_s``.

        Catalogs differ in how safely they resolve concurrent commits (with Sail on a Glue
        catalog, concurrent appends were seen to overwrite each other), so icefeed never lets two
        of its writers commit to one table at once. The lock is a mutex that avoids contention;
        what makes overlapping appends impossible is the writer slot taken by ``fence`` (it
        survives the lock's connection). A dying connection sets ``lost``."""
        conn = await self._take_table_lock(table, asyncio.get_running_loop().time() + timeout_s)
        lock = PgTableLock(conn, self._q, self._lock_check_s)
        try:
            yield lock
        finally:
            await lock.close()
            with contextlib.suppress(*CONNECTION_ERRORS):
                if not lock.lost.is_set():
                    await conn.fetchval(self._q["table_unlock"], table)
            with contextlib.suppress(*CONNECTION_ERRORS):
                await self._pool.release(conn)

    async def _take_table_lock(self, table: str, deadline: float) -> asyncpg.pool.PoolConnectionProxy:
        """Wait for the lock, trying on a pooled connection that is given back between tries (a
        waiter never sits on a connection that finalize or the heartbeat need)."""
        loop = asyncio.get_running_loop()
        delay = 0.02
        while True:
            try:
                conn = await self._pool.take(min(self._pool.acquire_s, max(0.1, deadline - loop.time())))
            except _TAKE_ERRORS as exc:
                if loop.time() >= deadline:
                    reason = str(exc) or type(exc).__name__
                    raise TransientError(f"PostgreSQL: {reason}", error_class="PgConnectionLost") from None
                await asyncio.sleep(delay)
                continue
            try:
                if await conn.fetchval(self._q["try_table_lock"], table):
                    return conn
            except CONNECTION_ERRORS as exc:
                with contextlib.suppress(*CONNECTION_ERRORS):
                    await self._pool.release(conn)
                if loop.time() >= deadline:
                    raise TransientError(f"PostgreSQL: {exc}", error_class="PgConnectionLost") from None
                continue
            except BaseException:
                with contextlib.suppress(*CONNECTION_ERRORS):
                    await self._pool.release(conn)
                raise
            with contextlib.suppress(*CONNECTION_ERRORS):
                await self._pool.release(conn)
            if loop.time() >= deadline:
                raise TransientError(
                    f"table {table} is busy: another writer holds its commit lock", error_class="TableBusy"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def register(self, items: list[Registration]) -> list[FileState]:
        if not items:
            return []
        unique: dict[tuple[str, str, str], Registration] = {}
        seen: Counter[tuple[str, str, str]] = Counter()
        for item in items:  # one row may not be upserted twice in one statement
            ident = (item.event.bucket, item.event.key, item.etag)
            unique.setdefault(ident, item)
            seen[ident] += 1
        cols: list[list[Any]] = [[] for _ in range(9)]
        for ident, item in unique.items():
            ev = item.event
            for col, value in zip(
                cols,
                (
                    item.ingestion,
                    ev.bucket,
                    ev.key,
                    item.etag,
                    ev.version_id,
                    ev.sequencer,
                    item.size,
                    ev.event_time,
                    seen[ident],
                ),
                strict=True,
            ):
                col.append(value)

        async def op() -> list[FileState]:
            rows = await self._pool.fetch(self._q["register_files"], *cols)
            return [_state(r) for r in rows]

        return await self._retry(op)

    async def record_terminal(self, file_ids: list[int], status: str, error_class: str, message: str) -> int:
        """Returns how many of the files this call moved (from PENDING)."""
        if not file_ids:
            return 0
        rows = await self._retry(
            lambda: self._pool.fetch(self._q["record_terminal"], file_ids, status, error_class, self._scrub(message))
        )
        return len(rows)

    async def claim(
        self, batch_id: UUID, ingestion: str, table: str, files: list[FileWork], owner: str, ttl_s: int
    ) -> list[FileWork]:
        by_id = {f.file_id: f for f in files}
        keys = sorted({f"{f.bucket}/{f.key}" for f in files})

        async def op() -> list[FileWork]:
            async with self._tx() as conn:
                await conn.fetchval(self._q["lock_keys"], keys)
                rows = await conn.fetch(self._q["claim_files"], list(by_id), batch_id)
                if not rows:
                    return []
                claimed = [by_id[r["id"]] for r in rows]
                size = sum(f.size for f in claimed)
                await conn.execute(self._q["open_batch"], batch_id, ingestion, table, owner, ttl_s, len(claimed), size)
                return sorted(claimed, key=lambda f: f.file_id)

        return await self._retry(op)

    async def finalize(
        self,
        batch_id: UUID,
        owner: str,
        results: list[FileResult],
        quarantines: list[Quarantine] | None = None,
        version: SchemaVersion | None = None,
        replaced: list[int] | None = None,
    ) -> bool:
        """One transaction: batch COMMITTED, files final, quarantined files attached to their
        proposals, and the table's new schema version recorded."""
        rows = sum(r.rows or 0 for r in results)

        async def op() -> bool:
            async with self._tx() as conn:
                won = await conn.fetchval(self._q["commit_batch"], batch_id, owner, rows)
                if won is None:
                    return False
                await conn.execute(self._q["finish_files"], batch_id, *_columns(results, self._scrub, with_rows=True))
                for q in quarantines or []:
                    proposal = await conn.fetchval(
                        self._q["open_proposal"],
                        q.table,
                        q.ingestion,
                        q.policy,
                        q.signature,
                        _json(q.table_schema),
                        _json(q.incoming_schema),
                        _json(q.changes),
                    )
                    await conn.execute(self._q["quarantine_file"], q.file_id, proposal)
                if replaced:
                    await conn.execute(self._q["mark_replaced"], replaced)
                if version is not None:
                    await conn.fetchval(
                        self._q["record_schema_version"],
                        version.table,
                        _json(version.schema),
                        _json(version.changes),
                        version.ingestion,
                        version.first_file,
                        version.batch_id,
                    )
                return True

        return await self._retry(op)

    async def approved_signatures(self, table: str) -> dict[str, str]:
        rows = await self._retry(lambda: self._pool.fetch(self._q["approved_signatures"], table))
        return {r["signature"]: r["resolution"] for r in rows}

    async def table_hints(self, table: str) -> dict[str, str]:
        rows = await self._retry(lambda: self._pool.fetch(self._q["table_hints"], table))
        return {r["column_name"]: r["type"] for r in rows}

    async def replace_plan(self, file_ids: list[int]) -> tuple[set[int], set[int]]:
        """(files whose key has an older loaded version, files whose key has a newer one)."""
        if not file_ids:
            return set(), set()
        rows = await self._retry(lambda: self._pool.fetch(self._q["replace_plan"], file_ids))
        return {r["id"] for r in rows if r["replaces"]}, {r["id"] for r in rows if r["superseded"]}

    async def key_sequencers(self, keys: list[tuple[str, str]]) -> list[tuple[str, str, str, str]]:
        if not keys:
            return []
        buckets, names = [k[0] for k in keys], [k[1] for k in keys]
        rows = await self._retry(lambda: self._pool.fetch(self._q["key_sequencers"], buckets, names))
        return [(r["bucket"], r["key"], r["etag"], r["sequencer"]) for r in rows]

    async def note_dead_letter(self, file_ids: list[int], receives: int) -> None:
        if file_ids:
            await self._retry(lambda: self._pool.execute(self._q["note_dead_letter"], file_ids, str(receives)))

    async def latest_schema(self, table: str) -> dict[str, Any] | None:
        text = await self._retry(lambda: self._pool.fetchval(self._q["latest_schema"], table))
        if text is None:
            return None
        value: dict[str, Any] = orjson.loads(text)
        return value

    async def abort(
        self, batch_id: UUID, owner: str, error_class: str, message: str, results: list[FileResult]
    ) -> bool:
        async def op() -> bool:
            async with self._tx() as conn:
                won = await conn.fetchval(self._q["abort_batch"], batch_id, owner, error_class, self._scrub(message))
                if won is None:
                    return False
                await conn.execute(self._q["release_files"], batch_id, *_columns(results, self._scrub, with_rows=False))
                return True

        return await self._retry(op)

    async def states(self, file_ids: list[int]) -> list[FileState]:
        if not file_ids:
            return []
        rows = await self._retry(lambda: self._pool.fetch(self._q["file_states"], file_ids))
        return [
            FileState(
                r["id"],
                "",
                "",
                "",
                r["status"],
                r["batch_id"],
                r["error_message"],
                _seconds(r["lease_left_s"] if r["version_lease_left_s"] is None else r["version_lease_left_s"]),
                blocked=r["version_lease_left_s"] is not None,
                error_class=r["error_class"],
                attempts=r["attempts"],
            )
            for r in rows
        ]

    async def extend(self, batch_ids: list[UUID], owner: str, ttl_s: int) -> set[UUID]:
        """Renew the leases; returns the batches still ``owner``'s."""
        if not batch_ids:
            return set()
        rows = await self._retry(lambda: self._pool.fetch(self._q["extend_batches"], batch_ids, owner, ttl_s))
        return {r["id"] for r in rows}

    async def engine_work(self, batch_id: UUID) -> EngineWork:
        row = await self._retry(lambda: self._pool.fetchrow(self._q["engine_work"], batch_id))
        if row is None or row["engine_session"] is None:
            return EngineWork(None, None)
        return EngineWork(row["engine_session"], _seconds(row["started_s_ago"]))

    async def audit_candidates(self, delay_s: float, limit: int) -> list[AuditBatch]:
        rows = await self._retry(lambda: self._pool.fetch(self._q["audit_candidates"], delay_s, limit))
        return [AuditBatch(r["id"], r["table_name"]) for r in rows]

    async def mark_audited(self, batch_id: UUID, rows_removed: int | None) -> None:
        await self._retry(lambda: self._pool.execute(self._q["mark_audited"], batch_id, rows_removed))

    async def expire(self, batch_ids: list[UUID], owner: str, grace_s: int) -> None:
        if batch_ids:
            await self._retry(lambda: self._pool.execute(self._q["expire_batches"], batch_ids, owner, grace_s))

    async def take_expired(
        self, owner: str, ttl_s: int, grace_s: int, limit: int, exclude: list[UUID] | None = None
    ) -> list[ExpiredBatch]:
        rows = await self._retry(
            lambda: self._pool.fetch(self._q["take_expired_batches"], owner, ttl_s, grace_s, limit, exclude or [])
        )
        return [ExpiredBatch(r["id"], r["ingestion"], r["table_name"]) for r in rows]

    async def batch_files(self, batch_id: UUID) -> list[FileWork]:
        rows = await self._retry(lambda: self._pool.fetch(self._q["batch_files"], batch_id))
        return [
            FileWork(r["id"], r["ingestion"], r["bucket"], r["key"], r["etag"], r["size_bytes"] or 0, r["event_time"])
            for r in rows
        ]

    # -- table maintenance (worker/maintenance.py) ---------------------------------------------------

    async def maintenance_take(self, table: str, owner: str, ttl_s: int, due_s: float) -> MaintenanceTurn | None:
        """The table's maintenance lease if it is free (or expired) and the table is due."""

        async def op() -> MaintenanceTurn | None:
            async with self._tx() as conn:
                await conn.execute(self._q["maintenance_row"], table)
                row = await conn.fetchrow(self._q["maintenance_take"], table, owner, ttl_s, due_s)
            return None if row is None else MaintenanceTurn(_seconds(row["orphans_checked_s_ago"]))

        return await self._retry(op)

    async def maintenance_extend(self, table: str, owner: str, ttl_s: int) -> bool:
        return (
            await self._retry(lambda: self._pool.fetchval(self._q["maintenance_extend"], table, owner, ttl_s))
            is not None
        )

    async def maintenance_finish(
        self,
        table: str,
        owner: str,
        outcome: str,
        error: str | None,
        stats: dict[str, Any] | None,
        orphans_checked: bool,
        steps: list[dict[str, Any]],
    ) -> None:
        await self._retry(
            lambda: self._pool.execute(
                self._q["maintenance_finish"],
                table,
                owner,
                outcome,
                None if error is None else self._scrub(error),
                _json(stats),
                orphans_checked,
                _json([{k: (self._scrub(v) if isinstance(v, str) else v) for k, v in s.items()} for s in steps]),
            )
        )

    async def engine_state(
        self, engine: str, worker_id: str, state: str, failing_s: float | None, last_error: str
    ) -> None:
        await self._retry(
            lambda: self._pool.execute(
                self._q["engine_state"], engine, worker_id, state, failing_s, self._scrub(last_error)[:2000]
            )
        )

    async def reject_message(self, message: Message, reason: str) -> None:
        await self._retry(
            lambda: self._pool.execute(
                self._q["reject_message"],
                message.queue_url,
                message.message_id,
                message.receive_count,
                self._scrub(reason),
                self._scrub(message.body),
            )
        )


def _json(value: object) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _state(r: asyncpg.Record) -> FileState:
    return FileState(
        r["id"],
        r["bucket"],
        r["key"],
        r["etag"],
        r["status"],
        r["batch_id"],
        r["error_message"],
        _seconds(r["lease_left_s"]),
    )


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)


def _columns(results: list[FileResult], scrub: Callable[[str], str], *, with_rows: bool) -> list[list[Any]]:
    ids = [r.file_id for r in results]
    statuses = [r.status for r in results]
    classes = [r.error_class for r in results]
    messages = [None if r.error_message is None else scrub(r.error_message) for r in results]
    if with_rows:
        rejected = [r.rows_rejected for r in results]
        return [ids, statuses, [r.rows for r in results], classes, messages, rejected, [r.bad_records for r in results]]
    return [ids, statuses, classes, messages]


# --- migrations -------------------------------------------------------------------------------


def discover_migrations(directory: Path) -> list[tuple[int, str, str]]:
    """(version, name, sql) for every NNNN_name.sql, in order; gaps and duplicates are errors."""
    if not directory.is_dir():
        raise ConfigError(f"migrations directory not found: {directory} (set ICEFEED_MIGRATIONS_DIR)")
    found: list[tuple[int, str, str]] = []
    for path in sorted(directory.iterdir()):
        match = MIGRATION_FILE.match(path.name)
        if match:
            found.append((int(match.group(1)), path.stem, path.read_text(encoding="utf-8")))
        elif path.suffix == ".sql":
            raise ConfigError(f"migration file name must be NNNN_verb_noun.sql: {path.name}")
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise ConfigError(f"migration versions must be 1..N without gaps, found {versions}")
    return found


def checksum(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


async def migrate(settings: PgSettings, directory: Path) -> list[str]:
    """Apply pending migrations under an advisory lock (safe when replicas start together).
    Returns the names applied now; an edited, already-applied migration is an error."""
    migrations = discover_migrations(directory)
    q = queries("migrate.sql")
    schema = settings.ledger_schema
    if not IDENTIFIER.match(schema):
        raise ConfigError("ICEFEED_PG_LEDGER_SCHEMA: invalid identifier")
    try:
        # A migration may run long (statement timeout off), but it never queues behind a long
        # transaction for its locks: every request it queues blocks the fleet's statements on that
        # table behind it. Each migration's transaction sets lock_timeout itself (below), so the
        # wait for another replica's migration lock stays unbounded.
        conn = await asyncpg.connect(
            settings.dsn.get_secret_value(),
            timeout=settings.connect_timeout_s,
            server_settings={
                **settings.server_settings("icefeed-migrate"),
                "statement_timeout": "0",
                "lock_timeout": "0",
                "idle_in_transaction_session_timeout": "0",
            },
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise TransientError(
            f"PostgreSQL unreachable: {type(exc).__name__}: {exc}", error_class="PgUnavailable"
        ) from None
    applied_now: list[str] = []
    try:
        await conn.fetchval(q["lock"], schema)
        try:
            await conn.execute(await conn.fetchval(q["schema_create_statement"], schema))
            await conn.execute(q["create_history"])
            done = {r["version"]: (r["name"], r["checksum"]) for r in await conn.fetch(q["applied"])}
            for version, name, sql in migrations:
                if version in done:
                    if done[version][1] != checksum(sql):
                        raise ConfigError(
                            f"migration {name} was changed after it was applied; migrations are "
                            "forward-only: add a new one instead"
                        )
                    continue
                try:
                    async with conn.transaction():
                        await conn.fetchval(q["local_lock_timeout"], milliseconds(settings.lock_timeout_s))
                        await conn.execute(sql)
                        await conn.execute(q["record"], version, name, checksum(sql))
                except asyncpg.exceptions.LockNotAvailableError as exc:
                    raise TransientError(
                        f"migration {name} waited more than {settings.lock_timeout_s:g} s for a lock"
                        f" (ICEFEED_PG_LOCK_TIMEOUT_S): a long transaction holds a table it changes;"
                        f" nothing of it was applied, run icefeed migrate again ({exc})",
                        error_class="PgLockTimeout",
                    ) from None
                applied_now.append(name)
        finally:
            await conn.fetchval(q["unlock"], schema)
    finally:
        await conn.close()
    return applied_now
