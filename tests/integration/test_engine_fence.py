"""The engine side of the fence, on Sail (the real server of the local stack): a write's session is
stopped from another client by its id while its append runs, and the append never commits; the
audit repair and replace deletes on a real Iceberg table, counted with pyiceberg."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import UUID

import pytest

from tests.harness import Env
from tests.integration.engine_fence_support import WriterProcess, one_file_request, write_once
from worker.adapters.spark_sink import SparkSink, quiet, session_closed, session_url
from worker.domain.errors import IcefeedError
from worker.settings import SparkSettings

pytestmark = pytest.mark.integration


def sink_for(env: Env) -> SparkSink:
    return SparkSink(SparkSettings(url=env.stack.spark_url, dialect="sail"))  # type: ignore[arg-type]


@pytest.fixture
def sink(env: Env) -> Iterator[SparkSink]:
    s = sink_for(env)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def writer(env: Env, sink: SparkSink) -> Iterator[Callable[..., tuple[WriterProcess, str]]]:
    """Start a writer process appending ``rows`` slow rows to a new table in a session of its own."""
    started: list[WriterProcess] = []

    def start(name: str, rows: int, delay_s: float, marker: str = "") -> tuple[WriterProcess, str]:
        table = create_table(sink, env, name, "id BIGINT, h STRING")
        session_id = str(uuid.uuid4())
        argv = [env.stack.spark_url, "sail", "iceberg", session_id, table, str(rows), str(delay_s)]
        started.append(WriterProcess([*argv, marker] if marker else argv).start())
        return started[-1], session_id

    try:
        yield start
    finally:
        for w in started:
            w.kill()


def create_table(sink: SparkSink, env: Env, name: str, columns: str) -> str:
    table = f"glue.{env.db}.{name}"
    sink.run_sql_blocking(
        f"CREATE TABLE {table} ({columns}) USING iceberg LOCATION 's3://{env.warehouse}/{env.db}/{name}'"
    )
    return table


def snapshot_rows(env: Env, name: str) -> int:
    """Rows in the table's current snapshot, read with pyiceberg (0 when nothing ever committed)."""
    return len(env.table(name).scan().to_arrow())


async def test_a_session_stopped_from_another_client_never_commits_its_running_append(
    env: Env, sink: SparkSink, writer: Callable[..., tuple[WriterProcess, str]], tmp_path: Path
) -> None:
    running = tmp_path / "running"
    w, session_id = writer("fenced", 8, 1, str(running))  # 8 rows at 1 s in 2 partitions: ~4 s if nobody stops it
    w.expect("opened")
    w.expect("appending")
    # Stop it once the engine runs it (its first row is being computed). A stop that lands while
    # the request is still being accepted can find no operation to interrupt: seen once on a
    # loaded machine, Sail confirmed the stop and the append then committed. The fence does not
    # rely on that window (docs/engines.md): a released batch's append was sent at least ttl/2
    # before its recovery's stop.
    deadline = time.monotonic() + 60
    while not running.exists():
        assert time.monotonic() < deadline, f"the append never started running; writer saw {w.seen}"
        await asyncio.sleep(0.05)
    assert await sink_for(env).stop(session_id) is True  # another client, as another worker would
    outcome = w.expect("failed")
    # The append was cut off ("operation not found", "job runner is stopped") or refused ("session …
    # is not running"): either way icefeed sees a lost session, and so does the writer's next request.
    assert outcome.split()[1] == "SparkSessionLost", outcome
    assert w.rest() == ["followup SparkSessionLost"]
    assert snapshot_rows(env, "fenced") == 0
    # The engine refuses the stopped id for good: stopping it again is confirmed at once.
    assert await sink.stop(session_id) is True


async def test_the_same_append_commits_when_nobody_stops_it(
    env: Env, writer: Callable[[str, int, float], tuple[WriterProcess, str]]
) -> None:
    w, _ = writer("unfenced", 8, 0.1)
    w.expect("committed")
    assert w.rest() == ["followup ok"]
    assert snapshot_rows(env, "unfenced") == 8


def refused(env: Env, session_id: str) -> bool:
    """Whether the engine refuses requests in session ``session_id`` (it was released)."""
    from pyspark.sql import SparkSession

    # Keep the SparkSession referenced: the client reads its errors through the active session.
    spark = quiet(SparkSession.builder.remote(session_url(env.stack.spark_url, session_id)).create())
    try:
        spark.client.interrupt_all()
    except Exception as exc:  # noqa: BLE001 - the refusal is what is looked for
        return session_closed(exc)
    finally:
        spark.client._channel.close()
    return False


@pytest.mark.parametrize("location", ["ok", "bad"])
async def test_a_write_runs_in_its_own_session_and_releases_it_whatever_the_outcome(
    env: Env, sink: SparkSink, location: str
) -> None:
    session_id, batch = str(uuid.uuid4()), uuid.uuid4()
    await sink.open_session(session_id)
    assert not refused(env, session_id)  # the server knows the session before the write
    where = f"s3://{env.warehouse}/{env.db}/own" if location == "ok" else "s3://wh/it's bad"
    request = one_file_request(f"glue.{env.db}.own", where, session_id, batch, [1, 2])
    f = request.files[0]
    if location == "ok":
        result = await write_once(sink, request)
        assert result.counts == {f.source_file: 2}
        rows = env.table("own").scan().to_arrow().to_pylist()
        assert sorted((r["id"], r["_batch_id"]) for r in rows) == [(1, str(batch)), (2, str(batch))]
    else:
        with pytest.raises(IcefeedError, match="invalid table location"):
            await write_once(sink, request)
    assert refused(env, session_id)  # released: a frozen writer waking up cannot use it
    assert await sink.batch_counts(f"glue.{env.db}.own", batch) == ({f.source_file: 2} if location == "ok" else {})


async def test_a_writer_frozen_after_opening_its_session_cannot_write_once_it_is_stopped(
    env: Env, sink: SparkSink
) -> None:
    """The pipeline opens the session, fences, then writes: a worker frozen in between, whose batch
    was stopped and released meanwhile, wakes up to a session the engine refuses."""
    session_id, batch = str(uuid.uuid4()), uuid.uuid4()
    await sink.open_session(session_id)
    assert await sink_for(env).stop(session_id) is True  # another worker, while this one is frozen
    request = one_file_request(f"glue.{env.db}.frozen", f"s3://{env.warehouse}/{env.db}/frozen", session_id, batch, [1])
    with pytest.raises(IcefeedError) as info:
        await write_once(sink, request)
    assert info.value.error_class == "SparkSessionLost"
    assert await sink.batch_counts(request.table, batch) == {}  # not even the table was created


async def test_delete_batch_rows_removes_exactly_that_batch_and_counts_it(env: Env, sink: SparkSink) -> None:
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


async def test_delete_replaced_removes_older_versions_of_the_sources_only(env: Env, sink: SparkSink) -> None:
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
