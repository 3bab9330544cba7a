"""The engine side of the fence on Apache Spark 4.0 Connect: a writer killed with SIGKILL in the
middle of its append leaves an execution that Spark keeps running (and would commit); stopping its
session by id from another client cancels it, and nothing commits. And, opt-in
(``ICEFEED_SPARK4_MEASURE_DETACHED=1``, ~8 minutes), how long Spark keeps such an execution when
nobody stops it (docs/engines.md).

The server's own log is the witness of what happens to the execution (created, job started,
job cancelled, abandoned execution removed); the table's Parquet files are checked with pyarrow."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.harness import poll
from tests.integration.engine_fence_support import WriterProcess, one_file_request, write_once
from tests.spark4.support import Spark4Server
from worker.adapters.spark_sink import SparkSink
from worker.settings import DETACHED_LIMIT_S, SparkSettings

pytestmark = pytest.mark.spark4


def parquet_table(spark4: Spark4Server, tmp_path: Path) -> tuple[str, Path]:
    db = f"db_fence_{uuid.uuid4().hex[:8]}"
    location = tmp_path / "t"
    spark4.session.sql(f"CREATE DATABASE {db}")
    spark4.session.sql(
        f"CREATE TABLE spark_catalog.{db}.t (id BIGINT, h STRING) USING parquet LOCATION 'file://{location}'"
    )
    return f"spark_catalog.{db}.t", location


def committed_files(location: Path) -> list[Path]:
    """Data files of the table (a write in progress keeps its files under ``_temporary``)."""
    return [
        p
        for p in location.rglob("*.parquet")
        if not any(s.startswith(("_", ".")) for s in p.relative_to(location).parts)
    ]


def start_killed_writer(spark4: Spark4Server, table: str, rows: int) -> str:
    """A writer appending ``rows`` rows at 1 s each (2 partitions), killed with SIGKILL once Spark
    runs its job. Returns the session id."""
    session_id = str(uuid.uuid4())
    writer = WriterProcess([spark4.url, "spark", "parquet", session_id, table, str(rows), "1"]).start()
    try:
        writer.expect("appending")
        poll(lambda: spark4.log_lines("Got job", f'session_id: "{session_id}"'), 120, "the append's job started")
    finally:
        writer.kill()
    return session_id


async def test_stop_cancels_the_append_of_a_killed_writer_and_nothing_commits(
    spark4: Spark4Server, tmp_path: Path
) -> None:
    table, location = parquet_table(spark4, tmp_path)
    session_id = start_killed_writer(spark4, table, rows=120)  # about 60 s of work if left alone
    sink = SparkSink(SparkSettings(url=SecretStr(spark4.url), dialect="spark", table_format="parquet"))
    try:
        assert await sink.stop(session_id) is True
        tag = f"Session_{session_id}_"
        poll(lambda: spark4.log_lines("SPARK_JOB_CANCELLED", tag), 60, "the append's job cancelled")
        poll(lambda: spark4.log_lines("ExecuteHolder", f",{session_id},", "is removed"), 60, "the execution removed")
        assert committed_files(location) == []
        assert spark4.session.table(table).count() == 0
        assert await sink.stop(session_id) is True  # the id stays refused: confirmed again at once
    finally:
        sink.close()


@pytest.mark.skipif(
    os.environ.get("ICEFEED_SPARK4_MEASURE_DETACHED") != "1",
    reason="a measurement of ~8 minutes: set ICEFEED_SPARK4_MEASURE_DETACHED=1",
)
def test_measure_how_long_spark_keeps_a_killed_writers_execution(spark4: Spark4Server, tmp_path: Path) -> None:
    """Without a stop, the execution of a SIGKILLed client lives on. Measured (docs/engines.md): an
    append of ~500 s removed without committing 440 s after the kill (stream deadline 2 min +
    detached timeout 5 min + check); an ad-hoc run of a ~600 s append saw no removal at all and
    committed at 597 s. Only the session's idle expiry (60 min by default) surely ends it:
    ICEFEED_SPARK_DETACHED_LIMIT_S's default must cover what is seen here."""
    table, location = parquet_table(spark4, tmp_path)
    session_id = start_killed_writer(spark4, table, rows=1000)  # about 500 s of work if left alone
    killed = time.monotonic()
    limit = DETACHED_LIMIT_S["spark"]  # fails here if the execution outlives the default limit
    ended = poll(
        lambda: committed_files(location) or spark4.log_lines("ExecuteHolder", f",{session_id},", "is removed"),
        limit,
        "the killed writer's execution committed or removed",
    )
    lifetime = time.monotonic() - killed
    outcome = "committed" if isinstance(ended[0], Path) else "removed without committing"
    detached = spark4.log_lines("Found execution", f'session_id: "{session_id}"')
    expired = spark4.log_lines("Closing session", session_id)
    print(
        f"\nSIGKILLed writer's append: {outcome} {lifetime:.0f} s after the kill "
        f"(abandoned-execution removal: {bool(detached)}, session expiry: {bool(expired)})"
    )


async def test_a_writer_frozen_after_opening_its_session_cannot_write_once_it_is_stopped(
    spark4: Spark4Server, tmp_path: Path
) -> None:
    from worker.domain.errors import IcefeedError

    settings = SparkSettings(url=SecretStr(spark4.url), dialect="spark", table_format="parquet")
    sink, other = SparkSink(settings), SparkSink(settings)
    db = f"db_frozen_{uuid.uuid4().hex[:8]}"
    spark4.session.sql(f"CREATE DATABASE {db}")
    try:
        session_id = str(uuid.uuid4())
        await sink.open_session(session_id)
        assert await other.stop(session_id) is True  # another worker, while this one is frozen
        request = one_file_request(f"spark_catalog.{db}.t", f"file://{tmp_path}/t", session_id, uuid.uuid4(), [1])
        with pytest.raises(IcefeedError) as info:
            await write_once(sink, request)
        assert info.value.error_class == "SparkSessionLost"
        assert "SESSION_CLOSED" in str(info.value)
        assert not spark4.session.catalog.tableExists(request.table)
    finally:
        sink.close()
        other.close()
