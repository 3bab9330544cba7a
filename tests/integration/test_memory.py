"""Bounded memory on the real stack (moto + Sail + PostgreSQL): a gzip bomb gets a defined outcome
and the worker's RSS stays under its budget; a batch whose worker-built Arrow is over the 128 MiB
gRPC message limit loads exactly once (rows counted with pyiceberg)."""

from __future__ import annotations

import gzip
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import pytest
from pyiceberg.expressions import EqualTo

from tests.harness import Env, poll
from tests.integration.memory_support import MiB, big_batch

pytestmark = pytest.mark.integration

BUDGET = 128 * MiB  # tighter than the default, so that "under the budget" means something


@contextmanager
def rss_sampler(pid: int) -> Iterator[list[int]]:
    """Samples the RSS of process ``pid`` every 20 ms while the block runs."""
    samples: list[int] = []
    done = threading.Event()
    proc = psutil.Process(pid)

    def run() -> None:
        while not done.is_set():
            try:
                samples.append(proc.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            done.wait(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        done.set()
        thread.join()


def warm_worker(env: Env, **extra: str) -> tuple[int, int]:
    """Start a worker and bring it to its steady state (one small file loaded: pyspark imported,
    its Spark session open, pyarrow loaded); return (pid, its RSS then)."""
    proc = env.start_worker(**extra)
    env.put("events/warm.json", b'{"id": 0}\n')
    env.wait_files(1, timeout=60)
    return proc.pid, psutil.Process(proc.pid).memory_info().rss


def test_gzip_bombs_get_a_defined_outcome_and_the_worker_stays_under_its_budget(env: Env) -> None:
    env.migrate()
    pid, idle = warm_worker(
        env, ICEFEED_MEMORY_BUDGET_BYTES=str(BUDGET), ICEFEED_SPARK_WORKER_DECODE_MAX_BYTES=str(32 * MiB)
    )
    lines = gzip.compress(b"{}\n" * 10_000_000, 9)  # 29 KB → 30 MB, 20 M values: the file
    document = gzip.compress(b"[" + b"{}," * 20_000_000 + b"{}]", 9)  # whole-file JSON: 60 MB inflated
    assert len(lines) < 64 * 1024 and len(document) < 128 * 1024
    with rss_sampler(pid) as samples:
        env.put("events/bomb.json.gz", lines)
        env.put("docs/bomb.json", document)  # gzip inside: decoded by its magic bytes
        env.put("events/ok.json", b'{"id": 1}\n{"id": 2}\n')
        files = {f["key"]: f for f in env.wait_files(4, timeout=120)}
        poll(lambda: env.queue_depth() == 0, 60, "every message acked")
    peak = max(samples)
    print(f"worker RSS: warm {idle / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB, budget {BUDGET / MiB:.0f} MiB")
    assert peak - idle < BUDGET, (idle, peak)
    # JSON lines: the engine reads it by path (10 M rows of no columns); the worker never parsed it.
    assert (files["events/bomb.json.gz"]["status"], files["events/bomb.json.gz"]["rows_loaded"]) == (
        "LOADED",
        10_000_000,
    )
    # Whole-file JSON on Sail (its reader knows JSON lines only): nobody can read it; FAILED for good.
    assert (files["docs/bomb.json"]["status"], files["docs/bomb.json"]["error_class"]) == (
        "FAILED",
        "DecompressionLimit",
    )
    assert files["events/ok.json"]["status"] == "LOADED"
    assert "file_handed_to_engine" in env.worker_logs()
    assert env.queue_depth(env.prov.dlq_url) == 0
    table = env.table("events")
    bomb = f"s3://{env.bucket}/events/bomb.json.gz"
    assert table.scan(row_filter=EqualTo("_source_file", bomb), selected_fields=("_source_file",)).count() == (
        10_000_000
    )


def test_a_batch_over_the_grpc_message_limit_loads_exactly_once(env: Env) -> None:
    env.migrate()
    expected = big_batch(env)
    env.start_worker(
        ICEFEED_BATCH_MAX_WAIT_S="5",
        ICEFEED_BATCH_MAX_FILES=str(len(expected)),
        ICEFEED_MEMORY_BUDGET_BYTES=str(1024 * MiB),  # every file decoded by the worker, none handed over
    )
    loaded = env.wait_files(len(expected), timeout=180)
    assert {(f["status"], f["rows_loaded"]) for f in loaded} == {("LOADED", n) for n in set(expected.values())}
    assert env.sql("SELECT status, files FROM batches") == [{"status": "COMMITTED", "files": len(expected)}]
    assert "file_handed_to_engine" not in env.worker_logs()
    table = env.table("events")
    rows = table.scan(selected_fields=("_source_file", "id")).to_arrow()
    assert Counter(rows.column("_source_file").to_pylist()) == expected  # pyiceberg: each file's rows once
    assert len(set(rows.column("id").to_pylist())) == sum(expected.values())
    assert len(table.snapshots()) == 1  # one commit
