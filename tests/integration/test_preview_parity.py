"""``icefeed preview`` tells what the load does: for every format (JSON lines decoded by the
worker, JSON lines read by the engine, whole-file JSON, CSV) and every kind of schema hint (none,
decimal, timestamp, string over a nested or numeric value), preview's file schema, decision and
sample rows equal what a worker then loads (the table read back with pyiceberg, the ledger)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Env, make_env
from worker.admin.common import jsonable
from worker.localstack import Stack

pytestmark = pytest.mark.integration

#: Worker-read JSON up to this many bytes; the "big" JSON-lines files are larger (engine-read).
WORKER_READ_MAX = "400"

HINTS = {
    "none": "{{}}",
    "broken": "{{}}",  # the route of the format's broken file (its own table)
    "decimal": '{{ price = "decimal(10,2)" }}',
    "timestamp": '{{ ts = "timestamp" }}',
    "string": '{{ meta = "string" }}',
}


def _rows(n: int) -> list[dict[str, Any]]:
    return [
        {"id": i, "price": 1.25 + i, "ts": f"2026-11-0{1 + i % 9}T10:00:00Z", "meta": {"k": i, "tag": "x"}}
        for i in range(n)
    ]


def _csv(n: int) -> bytes:
    lines = ["id,price,ts,meta"] + [f"{i},{1.25 + i},2026-11-0{1 + i % 9} 10:00:00,{100 + i}" for i in range(n)]
    return ("\n".join(lines) + "\n").encode()


def _jsonl(n: int) -> bytes:
    return ("\n".join(json.dumps(r) for r in _rows(n)) + "\n").encode()


#: format name -> (route format, suffix, options, good body, broken body)
FORMATS: dict[str, tuple[str, str, str, bytes, bytes]] = {
    "jsonl_worker": ("json", ".json", "", _jsonl(2), b'{"id": 1}\n{"id": \n'),
    "jsonl_engine": ("json", ".json", "", _jsonl(8), _jsonl(8) + b'{"id": \n'),
    "document": ("json", ".json", "options = {{ multiline = true }}", json.dumps(_rows(3)).encode(), b'[{"id": 1},'),
    "csv": ("csv", ".csv", "", _csv(3), b'id,price\n1,"unterminated\n'),
}


def _routes() -> str:
    out = []
    for fmt, (kind, suffix, options, _, _) in FORMATS.items():
        for hint, hints in HINTS.items():
            name = f"{fmt}_{hint}"
            out.append(
                f"""
[[ingestion]]
name = "{name}"
bucket = "{{bucket}}"
prefix = "{name}/"
suffix = "{suffix}"
format = "{kind}"
table = "glue.{{db}}.{name}"
location = "s3://{{warehouse}}/{{db}}/{name}"
schema_hints = {hints}
{options}
"""
            )
    return "".join(out)


@pytest.fixture
def parity_env(stack: Stack, tmp_path: Path) -> Any:
    e = make_env(stack, tmp_path, uuid.uuid4().hex[:10], routes=_routes())
    try:
        yield e
    finally:
        e.close()


def _preview(env: Env, key: str) -> dict[str, Any]:
    result = env.cli(
        "preview", f"s3://{env.bucket}/{key}", "--json", ICEFEED_SPARK_WORKER_READ_MAX_BYTES=WORKER_READ_MAX
    )
    assert "Traceback" not in result.stderr and "AssertionError" not in result.stderr, result.stderr
    assert result.returncode in (0, 1), (key, result.returncode, result.stderr[-2000:])
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_preview_reads_types_and_decides_as_the_load_does(parity_env: Env) -> None:
    env = parity_env
    env.migrate()
    keys: dict[str, str] = {}
    for fmt, (_, suffix, _, good, broken) in FORMATS.items():
        if fmt == "jsonl_engine":
            assert len(good) > int(WORKER_READ_MAX)  # read by the engine
        elif fmt == "jsonl_worker":
            assert len(good) <= int(WORKER_READ_MAX)  # read by the worker
        for hint in HINTS:
            name = f"{fmt}_{hint}"
            key = f"{name}/{hint}{suffix}"
            keys[key] = name
            env.put(key, broken if hint == "broken" else good)
    previews = {key: _preview(env, key) for key in keys}
    # Preview before anything loads: every table is new. Then one worker loads every file.
    env.start_worker(ICEFEED_SPARK_WORKER_READ_MAX_BYTES=WORKER_READ_MAX)
    files = {f["key"]: f for f in env.wait_files(len(previews), timeout=180)}
    assert env.stop_workers() == [0]

    for key, seen in previews.items():
        f = files[key]
        decision = seen["decision"]
        if decision["action"] == "fail":
            assert (f["status"], f["error_class"]) == ("FAILED", decision["error_class"]), (key, f, decision)
            continue
        assert decision["action"] == "load", (key, decision)
        assert f["status"] == "LOADED", (key, f["status"], f["error_message"])
        table = env.table(keys[key])
        loaded = [c.name for c in table.schema().fields if not c.name.startswith("_")]
        assert [c["name"] for c in seen["file_schema"]] == loaded, key
        typed = {c.name: str(c.field_type) for c in table.schema().fields}
        for column in seen["file_schema"]:
            assert _same_type(column["type"], typed[column["name"]]), (key, column, typed)
        rows = sorted(
            ({k: v for k, v in jsonable(r).items() if not k.startswith("_")} for r in env.table_rows(keys[key])),
            key=lambda r: r["id"],
        )
        assert f["rows_loaded"] == len(rows)
        assert sorted(seen["sample"], key=lambda r: r["id"]) == rows, key
    broken = {k: v["decision"]["action"] for k, v in previews.items() if "/broken" in k}
    assert broken == {
        "jsonl_worker_broken/broken.json": "fail",
        "jsonl_engine_broken/broken.json": "fail",
        "document_broken/broken.json": "fail",
        "csv_broken/broken.csv": "load",  # an unterminated quote runs to the end of the file
    }


#: Spark type names (preview) and the Iceberg types pyiceberg reports for them.
ICEBERG = {
    "bigint": "long",
    "int": "int",
    "double": "double",
    "string": "string",
    "boolean": "boolean",
    "timestamp": "timestamptz",
    "timestamp_ntz": "timestamp",
    "date": "date",
}


def _same_type(spark: str, iceberg: str) -> bool:
    if spark.startswith("decimal"):
        return spark == iceberg.replace(" ", "")
    if spark.startswith("struct<"):
        return iceberg.startswith("struct<")
    return ICEBERG.get(spark) == iceberg
