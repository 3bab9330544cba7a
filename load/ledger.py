"""Read-only views of icefeed's ledger (asyncpg on a private event loop, called synchronously).

The statements are the named blocks of ``load/sql/ledger.sql``, read with the worker's block
parser; dropping the schema uses the worker's own ``drop_schema_statement``."""

from __future__ import annotations

import asyncio
from functools import cache
from pathlib import Path
from typing import Any

import asyncpg

from worker.sql import parse_blocks, queries

OPEN = ("PENDING", "CLAIMED")
SQL_FILE = Path(__file__).resolve().parent / "sql" / "ledger.sql"


@cache
def load_queries() -> dict[str, str]:
    return parse_blocks(SQL_FILE.read_text(encoding="utf-8"))


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
        rows = self._run(self._fetch(load_queries()["progress"], prefix, list(OPEN)))
        return int(rows[0]["total"]), int(rows[0]["final"])

    def files(self, prefix: str) -> list[dict[str, Any]]:
        rows = self._run(self._fetch(load_queries()["files"], prefix))
        return [dict(r) for r in rows]

    def batches(self, prefix: str) -> list[dict[str, Any]]:
        """Every batch that held (last) a file under ``prefix``, with its files and timings."""
        rows = self._run(self._fetch(load_queries()["batches"], prefix))
        return [dict(r) for r in rows]

    def drop_schema(self) -> None:
        async def go() -> None:
            conn = await self._connection()
            stmt = await conn.fetchval(queries("operator.sql")["drop_schema_statement"], self.schema)
            await conn.execute(stmt)

        self._run(go())
