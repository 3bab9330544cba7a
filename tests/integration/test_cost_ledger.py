"""``icefeed cost --from-ledger`` on a real PostgreSQL ledger: the named blocks of operator.sql
(cost_files, cost_batches, cost_ledger_size) and what ``summarize`` makes of their rows.

The test writes the rows itself (files LOADED at known times, committed batches with known
engine times), so every figure is known in advance; no engine, queue or bucket is involved."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from worker.adapters.pg_ledger import migrate
from worker.adapters.pg_operator import operator_ledger
from worker.admin.cost import summarize
from worker.localstack import Stack
from worker.settings import REPO_ROOT, PgSettings

# (ingestion, files, size_bytes, attempts, days ago) of the LOADED files written below
FILES = [("orders", 30, 1_000, 1, 1), ("orders", 10, 20_000_000, 2, 2), ("orders", 5, 1_000, 1, 9)]
# (files, engine seconds) of the COMMITTED batches in the window: seconds = 0.5 + 0.1 × files
BATCHES = [(10, 1.5), (20, 2.5), (30, 3.5)]


@pytest.fixture
async def pg(stack: Stack) -> AsyncIterator[PgSettings]:
    settings = PgSettings(dsn=stack.pg_dsn, ledger_schema=f"cost_{uuid.uuid4().hex[:10]}", pool_max=2)
    await migrate(settings, REPO_ROOT / "migrations")
    try:
        yield settings
    finally:
        conn = await asyncpg.connect(stack.pg_dsn)
        try:
            await conn.execute(f'DROP SCHEMA "{settings.ledger_schema}" CASCADE')
        finally:
            await conn.close()


async def fill(settings: PgSettings) -> None:
    conn = await asyncpg.connect(
        settings.dsn.get_secret_value(), server_settings={"search_path": settings.ledger_schema}
    )
    try:
        n = 0
        for ingestion, count, size, attempts, days_ago in FILES:
            for _ in range(count):
                n += 1
                await conn.execute(
                    "INSERT INTO files (ingestion, bucket, key, etag, size_bytes, status, attempts, rows_loaded,"
                    " finished_at) VALUES ($1, 'b', $2, 'e', $3, 'LOADED', $4, 10,"
                    " now() - make_interval(days => $5))",
                    ingestion,
                    f"k{n}",
                    size,
                    attempts,
                    days_ago,
                )
        await conn.execute(  # a failed file and an aborted batch count for nothing
            "INSERT INTO files (ingestion, bucket, key, etag, status, finished_at) VALUES ('orders', 'b', 'bad', 'e',"
            " 'FAILED', now())"
        )
        for files, seconds in [*BATCHES, (99, 60.0)]:
            status = "COMMITTED" if files != 99 else "ABORTED"
            await conn.execute(
                "INSERT INTO batches (id, ingestion, table_name, status, lease_owner, files, write_started_at,"
                " finished_at) VALUES ($1, 'orders', 'glue.db.orders', $2, 'w1', $3,"
                " now() - make_interval(secs => $4), now())",
                uuid.uuid4(),
                status,
                files,
                seconds,
            )
        await conn.execute("ANALYZE files")
    finally:
        await conn.close()


async def test_cost_figures_from_the_ledger(pg: PgSettings) -> None:
    await fill(pg)
    async with operator_ledger(pg) as db:
        raw = await db.cost_figures(7, 8 * 1024 * 1024)
    m = summarize(raw, None, 7)
    # In the window (7 days): 30 + 10 files; the 5 loaded 9 days ago and the FAILED one are out.
    assert m["files"] == 40
    # The oldest load in the window is 2 days old: 40 files over 2 days.
    assert m["observed_days"] == pytest.approx(2, rel=0.01)
    assert m["files_per_day"] == pytest.approx(20, rel=0.01)
    assert m["avg_file_bytes"] == pytest.approx((30 * 1_000 + 10 * 20_000_000) / 40)
    # The 10 files over 8 MiB are read by the engine; each of them was attempted twice.
    assert m["engine_read_fraction"] == pytest.approx(10 / 40)
    assert m["retry_fraction"] == pytest.approx(10 / 40)
    # 3 commits (the aborted batch is not one): 40 / 3 files per commit; the fit recovers
    # seconds = 0.5 + 0.1 × files.
    assert m["commits"] == 3 and m["tables"] == 1 and m["lease_owners"] == 1
    assert m["files_per_commit"] == pytest.approx(40 / 3)
    assert m["engine_s_mean"] == pytest.approx(2.5, abs=0.05)
    assert m["engine_s_per_commit"] == pytest.approx(0.5, abs=0.05)
    assert m["engine_s_per_file"] == pytest.approx(0.1, abs=0.005)
    assert m["ledger_bytes_per_file"] > 0
