"""Read-only views of icefeed's ledger (asyncpg on a private event loop, called synchronously)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

OPEN = ("PENDING", "CLAIMED")


class LedgerReader:
    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn = dsn
        self.schema = schema
        self._loop = asyncio.new_event_loop()
        self._conn: asyncpg.Connection | None = None

    def _run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.dsn, timeout=10, server_settings={"search_path": self.schema})
        return self._conn

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await self._connection()
        return list(await conn.fetch(query, *args, timeout=60))

    def close(self) -> None:
        if self._conn is not None:
            self._run(self._conn.close())
        self._loop.close()

    def progress(self, prefix: str) -> tuple[int, int]:
        """(files registered, files in a final state) under ``prefix`` of the landing keys."""
        rows = self._run(
            self._fetch(
                "SELECT count(*) AS total, count(*) FILTER (WHERE status <> ALL($2::text[])) AS final "
                "FROM files WHERE starts_with(key, $1)",
                prefix,
                list(OPEN),
            )
        )
        return int(rows[0]["total"]), int(rows[0]["final"])

    def files(self, prefix: str) -> list[dict[str, Any]]:
        rows = self._run(
            self._fetch(
                "SELECT id, key, status, rows_loaded, batch_id, attempts, events_seen, error_class,"
                " extract(epoch FROM finished_at)::float8 AS finished_at,"
                " extract(epoch FROM first_seen_at)::float8 AS first_seen_at,"
                " extract(epoch FROM event_time)::float8 AS event_time "
                "FROM files WHERE starts_with(key, $1) ORDER BY id",
                prefix,
            )
        )
        return [dict(r) for r in rows]

    def batches(self, prefix: str) -> list[dict[str, Any]]:
        """Every batch that held (last) a file under ``prefix``, with its files and timings."""
        rows = self._run(
            self._fetch(
                "SELECT b.id, b.status, b.files, b.rows_loaded, b.lease_owner,"
                " extract(epoch FROM b.created_at)::float8 AS created_at,"
                " extract(epoch FROM b.finished_at)::float8 AS finished_at "
                "FROM batches b WHERE b.id IN (SELECT DISTINCT batch_id FROM files "
                "WHERE starts_with(key, $1) AND batch_id IS NOT NULL) ORDER BY b.created_at",
                prefix,
            )
        )
        return [dict(r) for r in rows]

    def batches_between(self, start: float, end: float) -> list[dict[str, Any]]:
        """Batches created in a time window (also the aborted ones: bisection, failures)."""
        rows = self._run(
            self._fetch(
                "SELECT id, status, files, rows_loaded,"
                " extract(epoch FROM created_at)::float8 AS created_at,"
                " extract(epoch FROM finished_at)::float8 AS finished_at "
                "FROM batches WHERE created_at >= to_timestamp($1) AND created_at <= to_timestamp($2) "
                "ORDER BY created_at",
                start,
                end,
            )
        )
        return [dict(r) for r in rows]

    def drop_schema(self) -> None:
        async def go() -> None:
            conn = await self._connection()
            stmt = await conn.fetchval("SELECT format('DROP SCHEMA IF EXISTS %I CASCADE', $1::text)", self.schema)
            await conn.execute(stmt)

        self._run(go())
