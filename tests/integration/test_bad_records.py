"""Bad records on the real stack (moto, Sail, PostgreSQL): a route with bad_records = "quarantine"
loads a file's good records and keeps each bad one, once, with its line number, in S3; a file
over max_bad_fraction fails; a worker killed mid-batch leaves each bad record stored once; a route
with encoding = "latin-1" loads the right characters. Tables are read back with pyiceberg, bad
records from S3, the ledger with SQL, and through the operator commands."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ROUTES, Env, make_env
from worker.localstack import Stack

pytestmark = pytest.mark.integration

BAD_ROUTES = (
    ROUTES
    + """
[[ingestion]]
name = "lines"
bucket = "{bucket}"
prefix = "lines/"
suffix = ".json"
format = "json"
table = "glue.{db}.lines"
location = "s3://{warehouse}/{db}/lines"
bad_records = "quarantine"
max_bad_fraction = 0.5
bad_records_location = "s3://{bucket}/_bad"
schema_hints = {{ price = "decimal(10,2)" }}

[[ingestion]]
name = "sheets"
bucket = "{bucket}"
prefix = "sheets/"
suffix = ".csv"
format = "csv"
table = "glue.{db}.sheets"
location = "s3://{warehouse}/{db}/sheets"
bad_records = "quarantine"
bad_records_location = "s3://{bucket}/_bad"
schema_hints = {{ zip = "string", amount = "decimal(10,2)" }}
encoding = "latin-1"
max_bad_fraction = 0.6

[[ingestion]]
name = "latin"
bucket = "{bucket}"
prefix = "latin/"
suffix = ".json"
format = "json"
table = "glue.{db}.latin"
location = "s3://{warehouse}/{db}/latin"
encoding = "latin-1"
"""
)

GOOD = 10
#: (line number, text) of the bad lines of HALF_GOOD
BAD_LINES = {3: b'{"id": 1000, "name": ', 7: b'"just a string"', 12: b'{"id": 1001, "name": "\xff\xfe"}'}


def half_good() -> bytes:
    good = iter(json.dumps({"id": i, "name": f"n{i}"}).encode() for i in range(GOOD))
    lines = [BAD_LINES.get(n) or next(good) for n in range(1, GOOD + len(BAD_LINES) + 1)]
    return b"\n".join(lines) + b"\n"


@pytest.fixture
def bad_env(stack: Stack, tmp_path: Path) -> Iterator[Env]:
    e = make_env(stack, tmp_path, uuid.uuid4().hex[:10], routes=BAD_ROUTES)
    try:
        yield e
    finally:
        e.close()


def stored(env: Env, uri: str) -> list[dict[str, Any]]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    body = env.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return [json.loads(line) for line in body.splitlines()]


def bad_objects(env: Env) -> list[str]:
    listed = env.s3.list_objects_v2(Bucket=env.bucket, Prefix="_bad/").get("Contents", [])
    return [o["Key"] for o in listed]


def run_json(env: Env, *args: str, code: int = 0) -> dict[str, Any]:
    result = env.cli(*args, "--json")
    assert result.returncode == code, (args, result.stdout[-2000:], result.stderr[-2000:])
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_good_records_load_and_each_bad_one_is_kept_once_with_its_line(bad_env: Env) -> None:
    env = bad_env
    env.migrate()
    env.start_worker()
    body = half_good()
    env.put("lines/half.json", body)
    garbage = b"\n".join(os.urandom(200) for _ in range(20))  # 20 lines of binary
    env.put("lines/garbage.json", garbage + b'\n{"id": 1}\n')
    env.put("latin/cafe.json", '{"id": 1, "name": "café", "city": "Zürich"}\n'.encode("latin-1"))
    prices = [{"id": 100, "price": "1.50"}, {"id": 101, "price": "abc"}, {"id": 102, "price": 2}, {"id": 103}]
    env.put("lines/prices.json", b"\n".join(json.dumps(p).encode() for p in prices) + b"\n")
    preview = run_json(env, "preview", f"s3://{env.bucket}/lines/half.json")  # says what the load will do
    assert preview["bad_records"]["rows_rejected"] == len(BAD_LINES) and preview["decision"]["action"] == "load"
    assert [b["line"] for b in preview["bad_records"]["samples"]] == sorted(BAD_LINES)
    files = {f["key"]: f for f in env.wait_files(4)}

    half = files["lines/half.json"]
    assert (half["status"], half["rows_loaded"], half["rows_rejected"]) == ("LOADED", GOOD, len(BAD_LINES))
    rows = [r for r in env.table_rows("lines") if r["_source_file"].endswith("/half.json")]
    assert sorted(r["id"] for r in rows) == list(range(GOOD))  # the good rows, exactly once
    records = stored(env, half["bad_records"])
    assert [(r["line"], r["text"].encode("utf-8", "backslashreplace")[:10]) for r in records] == [
        (n, text[:10].decode("utf-8", "backslashreplace").encode("utf-8", "backslashreplace")[:10])
        for n, text in sorted(BAD_LINES.items())
    ]
    for r in records:
        assert body[r["offset"] :].startswith(BAD_LINES[r["line"]][:5]), r  # the byte offset of its line
        assert r["batch_id"] == str(half["batch_id"]) and r["etag"] == half["etag"]
        assert r["source_file"] == f"s3://{env.bucket}/lines/half.json" and r["error"]
    priced = files["lines/prices.json"]  # a value that cannot take its hinted type: that record only
    assert (priced["status"], priced["rows_loaded"], priced["rows_rejected"]) == ("LOADED", 3, 1)
    (cast,) = stored(env, priced["bad_records"])
    assert cast["line"] == 2 and "column price: 'abc' cannot be cast to decimal(10,2)" in cast["error"]
    loaded = {r["id"]: r["price"] for r in env.table_rows("lines") if r["_source_file"].endswith("/prices.json")}
    assert {k: str(v) if v is not None else None for k, v in loaded.items()} == {100: "1.50", 102: "2.00", 103: None}
    assert sorted(bad_objects(env)) == sorted(f["bad_records"].split("/", 3)[3] for f in (half, priced))

    failed = files["lines/garbage.json"]  # one good record and many bad: not a file to load
    assert (failed["status"], failed["error_class"]) == ("FAILED", "TooManyBadRecords")
    assert "over max_bad_fraction=0.5" in failed["error_message"]

    cafe = files["latin/cafe.json"]
    assert cafe["status"] == "LOADED" and cafe["rows_rejected"] is None
    assert [(r["name"], r["city"]) for r in env.table_rows("latin")] == [("café", "Zürich")]

    listed = run_json(env, "files", "--status", "loaded", "--with-bad-records")
    assert sorted((f["key"], f["rows_rejected"]) for f in listed["files"]) == [
        ("lines/half.json", len(BAD_LINES)),
        ("lines/prices.json", 1),
    ]
    shown = run_json(env, "file", f"s3://{env.bucket}/lines/half.json")
    (version,) = shown["versions"]
    assert version["rows_rejected"] == len(BAD_LINES) and version["bad_records"] == half["bad_records"]
    assert [s["line"] for s in version["bad_record_samples"]] == sorted(BAD_LINES)
    text = env.cli("file", f"s3://{env.bucket}/lines/half.json").stdout
    assert f"{len(BAD_LINES)} bad record(s) left out, kept in {half['bad_records']}" in text and "line 3" in text
    assert env.stop_workers() == [0]


@pytest.mark.parametrize("point", ["after_write_start", "after_commit"])
def test_a_worker_killed_mid_batch_leaves_each_bad_record_stored_once(bad_env: Env, point: str) -> None:
    env = bad_env
    env.migrate()
    doomed = env.start_worker("doomed", ICEFEED_FAULTS=f"{point}=exit")
    env.put("lines/half.json", half_good())
    assert doomed.wait(timeout=120) == 137  # died in the middle of the batch
    env.start_worker("rescuer")
    (f,) = env.wait_files(1, {"LOADED"}, timeout=120)
    assert (f["rows_loaded"], f["rows_rejected"]) == (GOOD, len(BAD_LINES))
    assert sorted(r["id"] for r in env.table_rows("lines")) == list(range(GOOD))
    records = stored(env, f["bad_records"])
    assert sorted(r["line"] for r in records) == sorted(BAD_LINES)  # each once
    assert {r["batch_id"] for r in records} == {str(f["batch_id"])}  # written by the batch that committed
    assert len(bad_objects(env)) == 1
    assert env.stop_workers() == [137, 0]


def test_ragged_csv_rows_and_cast_failures_are_set_aside_and_the_rest_loads(bad_env: Env) -> None:
    env = bad_env
    env.migrate()
    env.start_worker()
    body = (
        "id,city,zip,amount,joined\n"
        "1,Zürich,08001,12.50,2026-01-02\n"
        "2,Köln\n"  # ragged: 2 fields
        "3,Genève,01200,abc,2026-01-03\n"  # amount cannot be decimal(10,2)
        "4,Paris,75001,7,2026-01-04,extra\n"  # ragged: 6 fields
        "5,Nice,06000,,2026-01-05\n"
        "6,Lyon,69001,123456789012.5,2026-01-06\n"  # over decimal(10,2)
        "7,Metz,57000,1.005,2026-01-07\n"
    ).encode("latin-1")
    env.put("sheets/a.csv", body)
    (f,) = env.wait_files(1)
    assert (f["status"], f["rows_loaded"], f["rows_rejected"]) == ("LOADED", 3, 4), f["error_message"]
    rows = sorted(env.table_rows("sheets"), key=lambda r: r["id"])
    assert [(r["id"], r["city"], r["zip"], None if r["amount"] is None else str(r["amount"])) for r in rows] == [
        (1, "Zürich", "08001", "12.50"),  # latin-1 decoded; the hinted zip keeps its zeros
        (5, "Nice", "06000", None),
        (7, "Metz", "57000", "1.01"),
    ]
    records = stored(env, f["bad_records"])
    assert [r["line"] for r in records] == [3, 4, 5, 7]
    assert "2 field(s), the header has 5" in records[0]["error"] and "column amount: 'abc'" in records[1]["error"]
    assert records[0]["text"] == "2,Köln"
    assert env.stop_workers() == [0]
