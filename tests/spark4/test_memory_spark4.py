"""Apache Spark 4: a batch whose worker-built Arrow is over the 128 MiB gRPC message limit (the
Python client's and Spark's server default) loads exactly once, in one commit; its Parquet files
are read back with pyarrow.

The server gets its own JVM with a 3 GiB driver: Spark holds a batch's local rows in the driver
several times over (rows, then task copies), and 145 MiB of Arrow ran the tier's shared 1 GiB
driver out of heap (measured). Production drivers that take large worker-read batches need that
headroom too (docs/memory.md)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from tests.integration.memory_support import big_batch
from tests.spark4.conftest import _java
from tests.spark4.support import Spark4Env, Spark4Server, running_server, spark4_env
from tests.tiers import unavailable
from worker.localstack import Stack

pytestmark = pytest.mark.spark4


@pytest.fixture(scope="module")
def big_driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spark4Server]:
    if _java() is None:
        unavailable("no Java on this machine: the Spark 4 tier needs a JVM (Java 17)")
    with running_server(tmp_path_factory.mktemp("spark4-big"), driver_memory="3g") as server:
        yield server


@pytest.fixture
def big_env(stack: Stack, big_driver: Spark4Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spark4Env]:
    with spark4_env(stack, big_driver, tmp_path_factory.mktemp("s4big")) as e:
        yield e


def test_a_batch_over_the_grpc_message_limit_loads_exactly_once(big_env: Spark4Env) -> None:
    env = big_env
    env.migrate()
    expected = big_batch(env)
    env.start_worker(
        ICEFEED_BATCH_MAX_WAIT_S="5",
        ICEFEED_BATCH_MAX_FILES=str(len(expected)),
        ICEFEED_MEMORY_BUDGET_BYTES=str(1024**3),  # every file decoded by the worker, none handed over
    )
    loaded = env.wait_files(len(expected), timeout=240)
    assert {(f["status"], f["rows_loaded"]) for f in loaded} == {("LOADED", n) for n in set(expected.values())}
    assert env.sql("SELECT status, files FROM batches") == [{"status": "COMMITTED", "files": len(expected)}]
    assert "file_handed_to_engine" not in env.worker_logs()
    rows = env.arrow("events").select(["_source_file", "id"])
    assert Counter(rows.column("_source_file").to_pylist()) == expected
    assert len(set(rows.column("id").to_pylist())) == sum(expected.values())  # each row once
