"""The engine side of the fence, on Sail (the real server of the local stack): a write's session is
stopped from another client by its id while its append runs, and the append never commits; the
audit repair and replace deletes on a real Iceberg table, counted with pyiceberg."""

from __future__ import annotations

import uuid
from uuid import UUID

import pytest

from tests.harness import Env
from tests.integration.engine_fence_support import WriterProcess
from worker.adapters.spark_sink import SparkSink
from worker.settings import SparkSettings

pytestmark = pytest.mark.integration


def sink_for(env: Env) -> SparkSink:
    return SparkSink(SparkSettings(url=env.stack.spark_url, dialect="sail"))  # type: ignore[arg-type]


def create_table(sink: SparkSink, env: Env, name: str, columns: str) -> str:
    table = f"glue.{env.db}.{name}"
    sink.run_sql_blocking(
        f"CREATE TABLE {table} ({columns}) USING iceberg LOCATION 's3://{env.warehouse}/{env.db}/{name}'"
    )
    return table


def snapshot_rows(env: Env, name: str) -> int:
    """Rows in the table's current snapshot, read with pyiceberg (0 when nothing ever committed)."""
    return len(env.table(name).scan().to_arrow())


async def test_a_session_stopped_from_another_client_never_commits_its_running_append(env: Env) -> None:
    sink = sink_for(env)
    try:
        table = create_table(sink, env, "fenced", "id BIGINT, h STRING")
        session_id = str(uuid.uuid4())
        # 8 rows at 1 s each in 2 partitions: about 4 s if nobody stops it.
        writer = WriterProcess([env.stack.spark_url, "sail", "iceberg", session_id, table, "8", "1"]).start()
        try:
            writer.expect("opened")
            writer.expect("appending")
            assert await sink_for(env).stop(session_id) is True  # another client, another "worker"
            outcome = writer.expect("failed")
            # The append was cut off ("operation not found") or refused ("session … is not running"):
            # either way icefeed sees a lost session, and so does the writer's next request.
            assert outcome.split()[1] == "SparkSessionLost", outcome
            assert writer.rest() == ["followup SparkSessionLost"]
        finally:
            writer.kill()
        assert snapshot_rows(env, "fenced") == 0
        # The engine refuses the stopped id for good; stopping it again is confirmed at once.
        assert await sink.stop(session_id) is True
    finally:
        sink.close()


async def test_a_write_session_is_released_after_the_append(env: Env) -> None:
    sink = sink_for(env)
    try:
        table = create_table(sink, env, "released", "id BIGINT, h STRING")
        session_id = str(uuid.uuid4())
        writer = WriterProcess([env.stack.spark_url, "sail", "iceberg", session_id, table, "2", "0"]).start()
        try:
            writer.expect("committed")
            assert writer.rest() == ["followup ok"]
        finally:
            writer.kill()
        assert snapshot_rows(env, "released") == 2
    finally:
        sink.close()


async def test_delete_batch_rows_removes_exactly_that_batch_and_counts_it(env: Env) -> None:
    sink = sink_for(env)
    try:
        table = create_table(sink, env, "audited", "id BIGINT, _source_file STRING, _batch_id STRING")
        zombie, kept = uuid.uuid4(), uuid.uuid4()
        sink.run_sql_blocking(
            f"INSERT INTO {table} VALUES (1, 's3://b/a', '{zombie}'), (2, 's3://b/b', '{zombie}'), "
            f"(3, 's3://b/c', '{kept}')"
        )
        assert await sink.delete_batch_rows(table, zombie) == 2
        rows = env.table("audited").scan().to_arrow().to_pylist()
        assert [(r["id"], r["_batch_id"]) for r in rows] == [(3, str(kept))]
        assert await sink.delete_batch_rows(table, zombie) == 0  # idempotent: nothing left to remove
        assert await sink.delete_batch_rows(f"glue.{env.db}.missing", zombie) == 0
    finally:
        sink.close()


async def test_delete_replaced_removes_older_versions_of_the_sources_only(env: Env) -> None:
    sink = sink_for(env)
    try:
        table = create_table(sink, env, "replaced", "sku STRING, _source_file STRING, _batch_id STRING")
        v1, v2, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        nasty = "s3://b/it's a 'key'); DROP TABLE x; --.json"
        rows = [
            ("a1", "s3://b/store.json", v1),
            ("a2", "s3://b/store.json", v2),
            ("n1", nasty, v1),
            ("z1", "s3://b/other.json", other),
        ]
        values = ", ".join(
            f"('{sku}', decode(unhex('{src.encode().hex()}'), 'UTF-8'), '{batch}')" for sku, src, batch in rows
        )
        sink.run_sql_blocking(f"INSERT INTO {table} VALUES {values}")

        def skus() -> list[tuple[str, UUID]]:
            got = env.table("replaced").scan().to_arrow().to_pylist()
            return sorted((r["sku"], UUID(r["_batch_id"])) for r in got)

        await sink.delete_replaced(table, ["s3://b/store.json", nasty], keep_batch=v2)
        assert skus() == [("a2", v2), ("z1", other)]
        await sink.delete_replaced(table, ["s3://b/store.json", nasty], keep_batch=v2)  # idempotent
        assert skus() == [("a2", v2), ("z1", other)]
        await sink.delete_replaced(table, [], keep_batch=v2)  # nothing to do
        assert skus() == [("a2", v2), ("z1", other)]
    finally:
        sink.close()
