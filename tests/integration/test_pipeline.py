"""End to end on the real local stack: S3 upload → notification → SQS → ledger → Sail → Iceberg."""

from __future__ import annotations

import gzip
from collections import Counter

import pytest

from tests.harness import Env

pytestmark = pytest.mark.integration


def lines(*objs: str) -> bytes:
    return ("\n".join(objs) + "\n").encode()


def test_uploaded_files_load_exactly_once_with_lineage(env: Env) -> None:
    env.migrate()
    worker = env.start_worker()
    expected: Counter[tuple[int, str]] = Counter()
    keys = []
    for i in range(6):
        key = f"events/2026/11/file {i}+x.json"
        body = lines(*(f'{{"id": {i * 100 + j}, "kind": "click", "v": {j}}}' for j in range(i + 1)))
        env.put(key, body)
        keys.append(key)
        expected.update((i * 100 + j, f"s3://{env.bucket}/{key}") for j in range(i + 1))
    gz_key = "events/2026/11/batch.json.gz"
    env.put(
        gz_key, gzip.compress(lines('{"id": 9001, "kind": "view", "v": 1}', '{"id": 9002, "kind": "view", "v": 2}'))
    )
    expected.update([(9001, f"s3://{env.bucket}/{gz_key}"), (9002, f"s3://{env.bucket}/{gz_key}")])
    env.put("people/p.csv", b"name,age\nada,36\nalan,41\n")

    files = env.wait_files(8)
    assert [f["status"] for f in files] == ["LOADED"] * 8, files
    per_file = {f["key"]: f["rows_loaded"] for f in files}
    assert per_file[keys[5]] == 6 and per_file[gz_key] == 2 and per_file["people/p.csv"] == 2

    rows = env.table_rows("events")
    assert Counter((r["id"], r["_source_file"]) for r in rows) == expected
    assert all(r["_batch_id"] and r["_ingested_at"] for r in rows)
    people = env.table_rows("people")
    assert sorted((r["name"], r["age"]) for r in people) == [("ada", 36), ("alan", 41)]

    assert env.stop_workers() == [0]
    assert worker.returncode == 0
    assert env.queue_depth() == 0
