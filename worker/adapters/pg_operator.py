"""The operator side of the ledger (asyncpg): what ``icefeed status / files / file / retry /
backfill / dlq / preview / schema`` read and write, and the one-shot connections of ``icefeed
check`` and ``icefeed demo``.

Statements are the named blocks of ``worker/sql/operator.sql`` (plus ``record_schema_version`` of
ledger.sql, shared with the worker's finalize). Rows come back as asyncpg records (mappings).
Inside ``operator_ledger``: a PostgreSQL time limit that fires is raised as its TransientError
(PgStatementTimeout, PgLockTimeout, …), an unmigrated ledger as a ConfigError, any other
PostgreSQL or driver failure as a TransientError ``PgConnectionLost`` — no asyncpg exception
leaves this module."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from worker.adapters.pg_errors import timeouts_as_transient
from worker.adapters.pg_ledger import PgLedger, PgTableLock, connect_pool
from worker.domain.errors import ConfigError, IcefeedError, TransientError
from worker.settings import PgSettings
from worker.sql import queries

Row = Any  # an asyncpg.Record: row["column"], dict(row)


def ledger_error(exc: BaseException, ledger_schema: str) -> IcefeedError:
    """An asyncpg failure of an operator command as an icefeed error."""
    if isinstance(exc, asyncpg.UndefinedTableError):
        return ConfigError(
            f"the ledger schema {ledger_schema!r} has no ledger tables: run `icefeed migrate` first ({exc})"
        )
    return TransientError(f"PostgreSQL: {type(exc).__name__}: {exc}", error_class="PgConnectionLost")


@asynccontextmanager
async def operator_ledger(settings: PgSettings) -> AsyncIterator[OperatorLedger]:
    """A small pool on the ledger for one command, closed on exit; errors as described above."""
    pool = await connect_pool(settings)
    try:
        try:
            with timeouts_as_transient():
                yield OperatorLedger(pool, pool)
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ledger_error(exc, settings.ledger_schema) from None
    finally:
        await pool.close()


class OperatorLedger:
    """The operator's statements, on the pool or (inside ``transaction``) on one connection."""

    def __init__(
        self, pool: asyncpg.Pool, db: asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
    ) -> None:
        self._pool = pool
        self._db = db
        self._q = queries("operator.sql")
        self._ledger_q = queries("ledger.sql")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[OperatorLedger]:
        """One transaction: the statements of the yielded ledger commit together."""
        async with self._pool.acquire() as conn, conn.transaction():
            yield OperatorLedger(self._pool, conn)

    def worker_ledger(self, scrub: Callable[[str], str] | None = None) -> PgLedger:
        """The worker's ledger on the same pool (table hints, approvals, the table lock,
        maintenance); ``scrub`` masks secrets in the texts it stores."""
        return PgLedger(self._pool) if scrub is None else PgLedger(self._pool, scrub=scrub)

    @asynccontextmanager
    async def table_lock(self, table: str, timeout_s: float) -> AsyncIterator[PgTableLock]:
        async with self.worker_ledger().table_lock(table, timeout_s=timeout_s) as lock:
            yield lock

    # -- status -------------------------------------------------------------------------------

    async def status(self, ingestion: str | None, stuck_after_s: float) -> dict[str, Any]:
        """The raw pieces of ``icefeed status``: clock, groups, oldest, stuck, batches,
        proposals, rejected."""
        clock = await self._db.fetchrow(self._q["clock"])
        assert clock is not None  # SELECT now(): always one row
        return {
            "clock": clock,
            "groups": await self._db.fetch(self._q["status_by_ingestion"], ingestion, clock["today"]),
            "oldest": await self._db.fetchrow(self._q["oldest_open"], ingestion),
            "stuck": await self._db.fetchval(self._q["stuck_count"], ingestion, stuck_after_s),
            "batches": await self._db.fetchrow(self._q["batch_summary"], ingestion),
            "proposals": await self._db.fetchval(self._q["open_proposals"], ingestion),
            "rejected": await self._db.fetchval(self._q["rejected_recently"]),
            "tables": await self._db.fetch(self._q["table_health"]) if ingestion is None else [],
            "engines": await self._db.fetch(self._q["engine_health"]),
        }

    async def cost_figures(self, days: int, worker_read_max_bytes: int) -> dict[str, Any]:
        """The raw pieces of ``icefeed cost --from-ledger``: files per ingestion, commits and their
        engine time, the files table's size (last ``days`` days)."""
        return {
            "files": list(await self._db.fetch(self._q["cost_files"], days, worker_read_max_bytes)),
            "batches": await self._db.fetchrow(self._q["cost_batches"], days),
            "size": await self._db.fetchrow(self._q["cost_ledger_size"]),
        }

    async def list_files(
        self,
        statuses: list[str] | None,
        ingestion: str | None,
        bucket: str | None,
        key_prefix: str | None,
        since: datetime | None,
        limit: int,
        with_bad_records: bool = False,
    ) -> list[Row]:
        return list(
            await self._db.fetch(
                self._q["list_files"], statuses, ingestion, bucket, key_prefix, since, limit, with_bad_records
            )
        )

    async def file_history(self, bucket: str, key: str) -> list[Row]:
        return list(await self._db.fetch(self._q["file_history"], bucket, key))

    async def key_states(self, keys: Sequence[tuple[str, str]]) -> list[Row]:
        return list(await self._db.fetch(self._q["key_states"], [b for b, _ in keys], [k for _, k in keys]))

    async def open_proposal_for(self, table: str, signature: str) -> int | None:
        found: int | None = await self._db.fetchval(self._q["open_proposal_for"], table, signature)
        return found

    # -- re-queue -----------------------------------------------------------------------------

    async def requeue_files(
        self, ids: list[int] | None, ingestion: str | None, stuck_after_s: float, limit: int | None, after: int
    ) -> list[Row]:
        """Step 1 of a re-queue (mark, commit): the files, PENDING and 'Requeuing'."""
        return list(await self._db.fetch(self._q["requeue_files"], ids, ingestion, stuck_after_s, limit, after))

    async def requeue_sent(self, file_ids: list[int], then: str | None) -> None:
        """Step 3 of a re-queue: the send is recorded (error_class ``then``; None clears it)."""
        await self._db.execute(self._q["requeue_sent"], file_ids, then)

    async def known_files(self, bucket: str, keys: list[str], etags: list[str]) -> list[Row]:
        return list(await self._db.fetch(self._q["known_files"], [bucket] * len(keys), keys, etags))

    async def register_backfill(
        self,
        ingestions: list[str],
        bucket: str,
        keys: list[str],
        etags: list[str],
        sizes: list[int],
        modified: list[datetime],
    ) -> list[Row]:
        """Register object versions PENDING (events_seen 0) and marked 'Requeuing'; returns the
        rows inserted now (a version registered meanwhile is left out)."""
        return list(
            await self._db.fetch(
                self._q["register_backfill"],
                ingestions,
                [bucket] * len(keys),
                keys,
                etags,
                sizes,
                modified,
                [0] * len(keys),
            )
        )

    # -- schema registry ----------------------------------------------------------------------

    async def proposals(self, status: str | None, proposal_id: int | None = None) -> list[Row]:
        return list(await self._db.fetch(self._q["proposals"], status, proposal_id))

    async def schema_history(self, table: str) -> list[Row]:
        return list(await self._db.fetch(self._q["schema_history"], table))

    async def resolve_proposal(self, proposal_id: int, status: str, resolution: str) -> None:
        await self._db.fetchval(self._q["resolve_proposal"], proposal_id, status, resolution)

    async def pin_column(self, table: str, column: str, type_name: str, proposal_id: int) -> None:
        await self._db.execute(self._q["pin_column"], table, column, type_name, proposal_id)

    async def record_schema_version(self, table: str, schema: str, changes: str, ingestion: str) -> None:
        """A new schema version of ``table`` (JSON texts), recorded by an operator (no batch)."""
        await self._db.fetchval(self._ledger_q["record_schema_version"], table, schema, changes, ingestion, None, None)

    async def reject_proposal_files(self, proposal_id: int) -> list[Row]:
        return list(await self._db.fetch(self._q["reject_proposal_files"], proposal_id))

    async def requeue_proposal_files(self, proposal_id: int) -> list[Row]:
        return list(await self._db.fetch(self._q["requeue_proposal_files"], proposal_id))


# -- one-shot connections (icefeed check, icefeed demo) -------------------------------------------


@asynccontextmanager
async def one_connection(settings: PgSettings, application_name: str) -> AsyncIterator[asyncpg.Connection]:
    """One plain connection on the ledger schema; unreachable → TransientError PgUnavailable."""
    try:
        conn = await asyncpg.connect(
            settings.dsn.get_secret_value(),
            timeout=settings.connect_timeout_s,
            server_settings={"search_path": settings.ledger_schema, "application_name": application_name},
        )
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise TransientError(f"{type(exc).__name__}: {exc}", error_class="PgUnavailable") from None
    try:
        yield conn
    finally:
        await conn.close()


async def fetchval_once(settings: PgSettings, sql: str, application_name: str = "icefeed-check") -> Any:
    """The value of one statement (a named block's text) on a connection of its own."""
    async with one_connection(settings, application_name) as conn:
        return await conn.fetchval(sql)


async def applied_migrations(settings: PgSettings, application_name: str = "icefeed-check") -> set[str] | None:
    """The names of the migrations applied to the ledger schema, or None when it has no
    migration history (never migrated)."""
    async with one_connection(settings, application_name) as conn:
        try:
            rows = await conn.fetch(queries("migrate.sql")["applied"])
        except asyncpg.UndefinedTableError:
            return None
    return {r["name"] for r in rows}


async def fetch_once(settings: PgSettings, block: str, *args: Any, application_name: str = "icefeed") -> list[Row]:
    """The rows of one named block of ``operator.sql`` on a connection of its own."""
    async with one_connection(settings, application_name) as conn:
        return list(await conn.fetch(queries("operator.sql")[block], *args))


async def drop_ledger_schema(settings: PgSettings, application_name: str = "icefeed") -> None:
    """DROP SCHEMA … CASCADE of ``settings.ledger_schema`` (the name quoted by PostgreSQL)."""
    async with one_connection(settings.model_copy(update={"ledger_schema": "public"}), application_name) as conn:
        await conn.execute(
            await conn.fetchval(queries("operator.sql")["drop_schema_statement"], settings.ledger_schema)
        )
