"""Schema drift on the real stack: evolve / rescue / strict, quarantine and approval, hints.
Table contents and schemas are checked with pyiceberg."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.harness import Env

pytestmark = pytest.mark.integration


def jsonl(*rows: dict) -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


def parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def field_types(env: Env, table: str) -> dict[str, str]:
    return {f.name: str(f.field_type) for f in env.table(table).schema().fields}


def load_one(env: Env, key: str, body: bytes, n: int) -> dict:
    env.put(key, body)
    files = env.wait_files(n)
    return next(f for f in files if f["key"] == key)


def test_a_stream_of_compatible_changes_evolves_the_table_in_place(env: Env) -> None:
    env.migrate()
    worker = env.start_worker()
    c_a = pa.struct([("a", pa.int64())])
    c_ab = pa.struct([("a", pa.int64()), ("b", pa.string())])
    steps = [
        ("typed/1.parquet", pa.table({"id": pa.array([1, 2], pa.int32()), "c": pa.array([{"a": 1}, {"a": 2}], c_a)})),
        (
            "typed/2.parquet",
            pa.table({"id": pa.array([3], pa.int32()), "c": pa.array([{"a": 3}], c_a), "extra": ["x"]}),
        ),
        ("typed/3.parquet", pa.table({"id": pa.array([4], pa.int32()), "c": pa.array([{"a": 4, "b": "y"}], c_ab)})),
        ("typed/4.parquet", pa.table({"id": pa.array([5_000_000_000], pa.int64()), "c": pa.array([{"a": 5}], c_a)})),
    ]
    for n, (key, data) in enumerate(steps, start=1):
        row = load_one(env, key, parquet(data), n)
        assert (row["status"], row["rows_loaded"]) == ("LOADED", data.num_rows), row
    assert worker.poll() is None  # the same worker, no restart
    types = field_types(env, "typed")
    assert types["id"] == "long"
    assert types["extra"] == "string"
    assert "b: optional string" in types["c"]
    rows = {r["id"]: r for r in env.table_rows("typed")}
    assert rows[1]["extra"] is None and rows[1]["c"] == {"a": 1, "b": None}
    assert rows[3]["extra"] == "x" and rows[4]["c"] == {"a": 4, "b": "y"}
    assert rows[5_000_000_000]["c"]["a"] == 5
    history = env.cli("schema", "show", "typed", "--json")
    assert history.returncode == 0, history.stderr
    versions = json.loads(history.stdout)["versions"]
    assert [v["version"] for v in versions] == [1, 2, 3, 4]
    kinds = [sorted(c["kind"] for c in v["changes"]) for v in versions[1:]]
    assert kinds == [["column_added"], ["nested_field_added"], ["type_widened"]]
    assert env.stop_workers() == [0]


def test_a_type_conflict_quarantines_only_that_file_and_approval_loads_it_once(env: Env) -> None:
    env.migrate()
    env.start_worker()
    load_one(env, "events/a.json", jsonl({"id": 1, "price": 1.5}), 1)
    bad = load_one(env, "events/b.json", jsonl({"id": 2, "price": {"amount": 2.5, "currency": "EUR"}}), 2)
    assert bad["status"] == "QUARANTINED" and bad["error_class"] == "SchemaConflict"
    assert (
        "type conflict at price: double (table) vs struct<amount:double,currency:string> (file)"
        in (bad["error_message"])
    )
    later = load_one(env, "events/c.json", jsonl({"id": 3, "price": 3.5}), 3)
    assert later["status"] == "LOADED"
    pending = env.cli("schema", "pending", "--json")
    assert pending.returncode == 0, pending.stderr
    (proposal,) = json.loads(pending.stdout)["proposals"]
    assert proposal["keys"] == ["events/b.json"] and proposal["files"] == 1
    text = env.cli("schema", "pending").stdout
    assert f"#{proposal['id']}" in text and "type conflict at price" in text and "events/b.json" in text

    approved = env.cli("schema", "approve", str(proposal["id"]), "--rescue")
    assert approved.returncode == 0, approved.stderr
    assert "re-queued: events/b.json" in approved.stdout
    files = env.wait_files(3)
    assert {f["key"]: f["status"] for f in files}["events/b.json"] == "LOADED"
    rows = sorted(env.table_rows("events"), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == [1, 2, 3]  # b.json exactly once
    assert rows[1]["price"] is None
    assert json.loads(rows[1]["_rescued_data"]) == {"price": {"amount": 2.5, "currency": "EUR"}}
    assert field_types(env, "events")["price"] == "double"  # the table kept its type
    again = env.cli("schema", "approve", str(proposal["id"]))
    assert again.returncode == 2 and "already APPROVED" in again.stderr
    assert env.stop_workers() == [0]


def test_approve_as_string_changes_the_column_in_place_and_loads_the_file_once(env: Env) -> None:
    env.migrate()
    env.start_worker()
    load_one(env, "events/a.json", jsonl({"id": 1, "price": 1.5}), 1)
    bad = load_one(env, "events/b.json", jsonl({"id": 2, "price": {"amount": 2.5, "currency": "EUR"}}), 2)
    assert bad["status"] == "QUARANTINED"
    (proposal,) = json.loads(env.cli("schema", "pending", "--json").stdout)["proposals"]
    approved = env.cli("schema", "approve", str(proposal["id"]), "--as", "string")
    assert approved.returncode == 0, approved.stderr
    assert "approved (as_string)" in approved.stdout and "re-queued: events/b.json" in approved.stdout
    assert field_types(env, "events")["price"] == "string"
    files = env.wait_files(2)
    assert {f["key"]: f["status"] for f in files} == {"events/a.json": "LOADED", "events/b.json": "LOADED"}
    load_one(env, "events/c.json", jsonl({"id": 3, "price": 3.5}), 3)  # later numbers: text too
    rows = {r["id"]: r["price"] for r in env.table_rows("events")}
    assert rows == {1: "1.5", 2: '{"amount":2.5,"currency":"EUR"}', 3: "3.5"}
    versions = json.loads(env.cli("schema", "show", "events", "--json").stdout)["versions"]
    assert versions[-1]["changes"][0]["text"].startswith("type changed at price: double → string")
    assert env.stop_workers() == [0]


def test_rejecting_a_proposal_marks_its_files_rejected(env: Env) -> None:
    env.migrate()
    env.start_worker()
    load_one(env, "events/a.json", jsonl({"id": 1, "price": 1.5}), 1)
    load_one(env, "events/b.json", jsonl({"id": 2, "price": "cheap"}), 2)
    (proposal,) = json.loads(env.cli("schema", "pending", "--json").stdout)["proposals"]
    result = env.cli("schema", "reject", str(proposal["id"]), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["keys"] == ["events/b.json"]
    status = {f["key"]: f["status"] for f in env.files()}
    assert status == {"events/a.json": "LOADED", "events/b.json": "REJECTED"}
    assert json.loads(env.cli("schema", "pending", "--json").stdout)["proposals"] == []
    assert env.stop_workers() == [0]


def test_rescue_keeps_the_table_schema_and_every_value(env: Env) -> None:
    env.migrate()
    env.start_worker()
    load_one(env, "rescue/1.json", jsonl({"id": 1, "name": "a"}, {"id": 2, "name": "b"}), 1)
    drifted = {
        "rescue/2.json": jsonl({"id": 3, "name": "c", "color": "red"}, {"id": 4, "name": "d"}),
        "rescue/3.json": jsonl({"id": "five", "name": "e"}),
        "rescue/4.json": jsonl({"id": 6, "name": {"first": "f"}}),
    }
    for key, body in drifted.items():
        env.put(key, body)
    files = {f["key"]: f for f in env.wait_files(4)}
    assert {k: (f["status"], f["rows_loaded"]) for k, f in files.items()} == {
        "rescue/1.json": ("LOADED", 2),
        "rescue/2.json": ("LOADED", 2),
        "rescue/3.json": ("LOADED", 1),
        "rescue/4.json": ("LOADED", 1),
    }
    columns = set(field_types(env, "rescued"))
    assert columns == {"id", "name", "_source_file", "_batch_id", "_ingested_at", "_rescued_data"}
    by_file: dict[str, list[dict]] = {}
    for r in env.table_rows("rescued"):
        by_file.setdefault(r["_source_file"].rsplit("/", 1)[1], []).append(r)
    assert sorted((r["id"], r["name"], r["_rescued_data"]) for r in by_file["1.json"]) == [
        (1, "a", None),
        (2, "b", None),
    ]
    # A new column travels in _rescued_data; the known columns load as usual.
    assert sorted((r["id"], r["name"], r["_rescued_data"]) for r in by_file["2.json"]) == [
        (3, "c", '{"color":"red"}'),
        (4, "d", None),
    ]
    # A column whose type does not fit the table: null in the table, original value rescued.
    (five,) = by_file["3.json"]
    assert (five["id"], five["name"], json.loads(five["_rescued_data"])) == (None, "e", {"id": "five"})
    (six,) = by_file["4.json"]
    assert (six["id"], six["name"], json.loads(six["_rescued_data"])) == (6, None, {"name": {"first": "f"}})
    assert env.stop_workers() == [0]


def test_strict_quarantines_the_first_change_and_merge_approval_evolves(env: Env) -> None:
    env.migrate()
    env.start_worker()
    load_one(env, "strict/1.json", jsonl({"id": 1}), 1)
    row = load_one(env, "strict/2.json", jsonl({"id": 2, "added": True}), 2)
    assert row["status"] == "QUARANTINED" and row["error_class"] == "SchemaChange"
    assert "column added" in row["error_message"].lower() or "added" in row["error_message"]
    same = load_one(env, "strict/3.json", jsonl({"id": 3}), 3)
    assert same["status"] == "LOADED"
    assert set(field_types(env, "strict")) == {"id", "_source_file", "_batch_id", "_ingested_at"}
    (proposal,) = json.loads(env.cli("schema", "pending", "--json").stdout)["proposals"]
    assert env.cli("schema", "approve", str(proposal["id"]), "--merge").returncode == 0
    files = env.wait_files(3)
    assert {f["key"]: f["status"] for f in files}["strict/2.json"] == "LOADED"
    assert field_types(env, "strict")["added"] == "boolean"
    assert sorted(r["id"] for r in env.table_rows("strict")) == [1, 2, 3]
    assert env.stop_workers() == [0]


def test_schema_hints_win_over_inference(env: Env) -> None:
    env.migrate()
    env.start_worker()
    row = load_one(env, "hinted/1.json", jsonl({"amount": 12.5, "ts": "2026-11-20T10:00:00Z", "n": 1}), 1)
    assert row["status"] == "LOADED"
    types = field_types(env, "hinted")
    assert types["amount"] == "decimal(18, 2)" and types["ts"].startswith("timestamp") and types["n"] == "long"
    (r,) = env.table_rows("hinted")
    assert r["amount"] == Decimal("12.50")
    assert r["ts"].isoformat().startswith("2026-11-20T10:00:00")
    assert env.stop_workers() == [0]


def test_whole_file_json_arrays_and_csv_are_inferred(env: Env) -> None:
    env.migrate()
    env.put("docs/array.json", json.dumps([{"id": 1, "tags": ["a", "b"]}, {"id": 2, "tags": []}], indent=2).encode())
    env.put("docs/pretty.json", json.dumps({"id": 3, "tags": ["c"]}, indent=4).encode())
    env.put("docs/sparse.json", json.dumps([{"id": 4}, {"id": 5, "late": {"k": 1}}]).encode())
    env.put("docs/empty.json", b"[]")
    env.put("people/p.csv", b"name,age,joined\nada,36,2026-01-02\nalan,41,2025-12-31\n")
    env.start_worker()
    files = {f["key"]: (f["status"], f["rows_loaded"]) for f in env.wait_files(5)}
    assert files == {
        "docs/array.json": ("LOADED", 2),
        "docs/pretty.json": ("LOADED", 1),
        "docs/sparse.json": ("LOADED", 2),
        "docs/empty.json": ("LOADED", 0),
        "people/p.csv": ("LOADED", 2),
    }
    rows = sorted((r["id"], r["tags"], r["late"]) for r in env.table_rows("documents"))
    assert rows == [(1, ["a", "b"], None), (2, [], None), (3, ["c"], None), (4, None, None), (5, None, {"k": 1})]
    types = field_types(env, "people")
    assert (types["name"], types["age"]) == ("string", "int") or (types["name"], types["age"]) == ("string", "long")
    assert types["joined"] == "date"
    assert env.stop_workers() == [0]


def test_one_batch_with_mixed_schemas_merges_and_splits_out_the_conflict(env: Env) -> None:
    env.migrate()
    env.put("events/m1.json", jsonl({"id": 1, "c": {"a": 1}}))
    env.put("events/m2.json", jsonl({"id": 2, "c": {"a": 2, "b": "x"}, "extra": True}))
    env.put("events/m3.json", jsonl({"id": 3, "c": "not a struct"}))
    env.put("events/m4.json", jsonl({"id": 4}))
    env.start_worker(ICEFEED_BATCH_MAX_WAIT_S="3")
    files = {f["key"]: f for f in env.wait_files(4)}
    assert {k: f["status"] for k, f in files.items()} == {
        "events/m1.json": "LOADED",
        "events/m2.json": "LOADED",
        "events/m3.json": "QUARANTINED",
        "events/m4.json": "LOADED",
    }
    batches = {f["batch_id"] for f in files.values()}
    assert len(batches) == 1  # one batch, one commit, the conflicting file split out of it
    rows = {r["id"]: r for r in env.table_rows("events")}
    assert set(rows) == {1, 2, 4}
    assert rows[1]["c"] == {"a": 1, "b": None} and rows[2]["extra"] is True and rows[4]["c"] is None
    assert env.stop_workers() == [0]
