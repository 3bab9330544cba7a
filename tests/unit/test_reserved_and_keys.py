"""Reserved column names (compared ignoring case, before anything reaches the catalog) and object
keys no engine reads as written: the pure rules, and where the worker applies them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.adapters.local_read import decode_json
from worker.domain.errors import ConfigError, DataError, TransientError, classify_engine_error
from worker.domain.keys import UNSAFE_KEY, unsafe_key
from worker.domain.policy import (
    RESCUED_COLUMN,
    Policy,
    data_columns,
    plan_batch,
    reserved_name,
    reserved_names,
    table_collisions,
)
from worker.domain.schema import LONG, STRING, ChangeKind, Field, Struct
from worker.probes import catalog_probe
from worker.routes import parse_routes

PROPERTY = settings(max_examples=300, deadline=None, database=None)


def S(*fields: Field) -> Struct:
    return Struct(fields)


# -- reserved names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "means"),
    [
        ("_source_file", "_source_file"),
        ("_SOURCE_FILE", "_source_file"),
        ("_Batch_Id", "_batch_id"),
        ("_INGESTED_at", "_ingested_at"),
        ("_Rescued_Data", RESCUED_COLUMN),
        ("_ſource_file", "_source_file"),  # U+017F: Java's equalsIgnoreCase matches it with "s"
        ("source_file", None),
        ("_batch_id2", None),
        ("_batch", None),
    ],
)
def test_reserved_names_compare_ignoring_case(name: str, means: str | None) -> None:
    assert reserved_name(name) == means


def test_a_file_with_a_lineage_column_in_any_case_is_quarantined_and_the_table_stays_clean() -> None:
    clean = S(Field("label", STRING), Field("n", LONG))
    bad = S(Field("label", STRING), Field("_SOURCE_FILE", STRING), Field("_Batch_Id", STRING))
    for table in (None, clean):  # creating the table (the first file is the bad one), or evolving it
        plan = plan_batch(Policy.EVOLVE, table, [(1, bad), (2, clean)])
        assert plan.target == clean  # never gains _SOURCE_FILE / _Batch_Id
        assert (plan.decisions[1].load, plan.decisions[2].load) == (False, True)
        kinds = [(c.kind, c.path, c.table_path) for c in plan.decisions[1].changes]
        assert kinds == [
            (ChangeKind.RESERVED_NAME, "_SOURCE_FILE", "_source_file"),
            (ChangeKind.RESERVED_NAME, "_Batch_Id", "_batch_id"),
        ]
        assert plan.decisions[1].signature  # a proposal an operator can see (and reject)
        reason = plan.decisions[1].reason
        assert "icefeed writes its own column _source_file" in reason and "rename the column" in reason


@pytest.mark.parametrize("policy", list(Policy))
@pytest.mark.parametrize("column", ["_source_file", "_batch_id", "_ingested_at", RESCUED_COLUMN, "_Ingested_At"])
def test_every_policy_quarantines_every_reserved_name_even_when_approved(policy: Policy, column: str) -> None:
    table = S(Field("a", LONG))
    incoming = S(Field("a", LONG), Field(column, STRING))
    first = plan_batch(policy, table, [(1, incoming)])
    assert not first.decisions[1].load and first.target == table
    # An approval of that proposal cannot make the column a data column (nor drop its values).
    approved = {first.decisions[1].signature: resolution for resolution in ("merge",)}
    again = plan_batch(policy, table, [(1, incoming)], approved)
    assert not again.decisions[1].load and again.target == table
    assert not plan_batch(policy, None, [(1, incoming)]).creates_table


def test_a_table_schema_read_back_loses_icefeeds_columns_in_any_case() -> None:
    table = S(Field("a", LONG), Field("_source_file", STRING), Field("_Batch_Id", STRING), Field("_batch_id", STRING))
    assert data_columns(table) == S(Field("a", LONG))
    assert reserved_names(S(Field("a", LONG), Field("s", S(Field("_source_file", STRING))))) == []  # nested: fine


def test_two_columns_differing_only_in_case_are_quarantined_too() -> None:
    plan = plan_batch(Policy.RESCUE, S(Field("a", LONG)), [(1, S(Field("a", LONG), Field("A", LONG)))])
    assert not plan.decisions[1].load
    assert [c.kind for c in plan.decisions[1].changes] == [ChangeKind.DUPLICATE_NAME]


def test_table_collisions_name_what_makes_a_table_ambiguous() -> None:
    lineage = ["_source_file", "_batch_id", "_ingested_at"]
    assert table_collisions(["a", "b", *lineage, RESCUED_COLUMN]) == []
    assert table_collisions(["label", "_SOURCE_FILE", "_Batch_Id", *lineage]) == [
        ("_SOURCE_FILE", "column _SOURCE_FILE collides with icefeed's column _source_file"),
        ("_Batch_Id", "column _Batch_Id collides with icefeed's column _batch_id"),
    ]
    assert table_collisions(["Price", "price", *lineage]) == [("price", "columns Price and price differ only in case")]


def test_a_worker_decoded_file_never_carries_a_second_lineage_column() -> None:
    d = decode_json(b'{"_SOURCE_FILE": "mine", "a": 1}\n', False, False)
    table = d.table("_source_file", "s3://b/k")
    assert table.column_names == ["a", "_source_file"]
    assert table.column("_source_file").to_pylist() == ["s3://b/k"]


@pytest.mark.parametrize("column", ["_source_file", "_Batch_ID", "_RESCUED_DATA"])
def test_a_route_cannot_hint_a_reserved_column_in_any_case(column: str) -> None:
    text = f"""
[[ingestion]]
name = "orders"
bucket = "landing-bucket"
format = "json"
table = "glue.sales.orders"
location = "s3://warehouse/sales/orders"
schema_hints = {{ {column} = "string" }}
"""
    with pytest.raises(ConfigError, match="cannot hint the reserved column"):
        parse_routes(text)


def test_icefeed_check_reports_a_table_with_ambiguous_columns_and_the_repair(tmp_path: Any) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(
        '[[ingestion]]\nname = "a"\nbucket = "landing-bucket"\nprefix = "a/"\nformat = "json"\ntable = "glue.db.a"\n'
        'location = "s3://wh/a"\n'
        '[[ingestion]]\nname = "b"\nbucket = "landing-bucket"\nprefix = "b/"\nformat = "json"\n'
        'table = "glue.db.b"\nlocation = "s3://wh/b"\n'
    )

    class Settings:
        routes_file = routes

    columns = {"glue.db.a": ["x", "_Batch_Id", "_source_file", "_batch_id", "_ingested_at"], "glue.db.b": None}

    async def status(table: str) -> str:
        return "exists" if columns[table] else "database reachable"

    async def table_columns(table: str) -> list[str] | None:
        return columns[table]

    probe = catalog_probe(Settings(), status, table_columns)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"glue\.db\.a: column _Batch_Id collides") as raised:
        asyncio.run(probe.check())
    assert "rename_column('_Batch_Id', '_Batch_Id_data')" in str(raised.value)
    columns["glue.db.a"] = ["x", "_source_file", "_batch_id", "_ingested_at"]
    assert asyncio.run(probe.check()) == "glue.db.a: exists; glue.db.b: database reachable"


# -- unsafe keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "part"),
    [
        ("csv/x/sub/../target.csv", "'..' path segment"),
        ("csv/x/./single.csv", "'.' path segment"),
        ("../up.csv", "'..' path segment"),
        ("a/./b/../c.csv", "'.' and '..' path segment"),
        ("csv/x//double.csv", "empty path segment ('//')"),
        ("/leading.csv", "empty path segment (a leading '/')"),
        ("csv/x/", "empty path segment (a trailing '/')"),
    ],
)
def test_keys_engines_rewrite_are_unsafe(key: str, part: str) -> None:
    reason = unsafe_key(key)
    assert reason is not None and part in reason


@pytest.mark.parametrize(
    "key",
    ["csv/x/target.csv", "a/..b.csv", "a/b../c.csv", "a/.hidden.csv", "a/...csv", "a b/+%20/*?[x]{y}.json", "x"],
)
def test_other_keys_are_safe(key: str) -> None:
    assert unsafe_key(key) is None


@PROPERTY
@given(st.lists(st.text(alphabet="ab./ %", min_size=0, max_size=4), min_size=1, max_size=5))
def test_prop_a_key_is_safe_exactly_when_every_segment_means_itself(segments: list[str]) -> None:
    key = "/".join(segments)
    parts = key.split("/")
    assert (unsafe_key(key) is None) == all(p not in ("", ".", "..") for p in parts)


@pytest.mark.parametrize(
    "message",
    [
        'Encountered object with invalid path: Path "/csv/x//double.csv" contained empty path segment',
        # The key is part of the message: a word in it must not make the error look transient.
        'Encountered object with invalid path: Path "/unavailable//socket closed.csv" contained empty path segment',
        "java.lang.IllegalArgumentException: java.net.URISyntaxException: Relative path in absolute URI: a:b.json",
        "Can not create a Path from an empty string",
    ],
)
def test_an_invalid_path_is_a_permanent_error(message: str) -> None:
    error = classify_engine_error("QueryExecutionException", message, None)
    assert isinstance(error, DataError) and error.error_class == "InvalidPath"


def test_an_unavailable_server_stays_transient_even_when_a_path_is_named() -> None:
    error = classify_engine_error("SparkConnectGrpcException", "invalid path", "UNAVAILABLE")
    assert isinstance(error, TransientError)


def test_a_table_location_with_rewritten_segments_is_refused() -> None:
    base = '[[ingestion]]\nname = "o"\nbucket = "landing-bucket"\nformat = "json"\ntable = "glue.s.o"\n'
    for location in ("s3://wh//o", "s3://wh/a/../o", "s3://wh/./o", "file:///tmp//o"):
        with pytest.raises(ConfigError, match="must not contain"):
            parse_routes(base + f'location = "{location}"\n')
    for location in ("s3://wh/o", "file:///tmp/wh/o", "s3://wh/o/"):
        assert parse_routes(base + f'location = "{location}"\n').ingestion[0].location == location.rstrip("/")


def test_unsafe_key_error_class_is_named() -> None:
    assert UNSAFE_KEY == "UnsafeKey"


def test_a_proposal_for_a_reserved_or_doubled_name_cannot_be_approved() -> None:
    from worker.admin.schema import unapprovable
    from worker.ports import change_json

    plan = plan_batch(Policy.EVOLVE, None, [(1, S(Field("a", LONG), Field("_Batch_Id", STRING)))])
    changes = [change_json(c) for c in plan.decisions[1].changes]
    refusal = unapprovable(7, changes)
    assert refusal is not None and "icefeed schema reject 7" in refusal and "icefeed's own columns" in refusal
    assert unapprovable(7, json.dumps(changes)) == refusal  # as the ledger returns it (JSON text)
    doubled = plan_batch(Policy.EVOLVE, None, [(1, S(Field("a", LONG), Field("A", LONG)))])
    assert "spelled twice" in (unapprovable(8, [change_json(c) for c in doubled.decisions[1].changes]) or "")
    conflict = plan_batch(Policy.EVOLVE, S(Field("a", LONG)), [(1, S(Field("a", STRING)))])
    assert unapprovable(9, [change_json(c) for c in conflict.decisions[1].changes]) is None


def test_apache_spark_refusing_two_columns_differing_in_case_is_permanent() -> None:
    # Spark 4.0.1 reading {"a": 1, "A": 2} as JSON or Parquet (measured): never retried into the DLQ.
    message = (
        "[COLUMN_ALREADY_EXISTS] The column `a` already exists. Choose another name or rename the existing column."
        " SQLSTATE: 42711"
    )
    error = classify_engine_error("AnalysisException", message, None)
    assert isinstance(error, DataError) and error.error_class == "DuplicateName"


def test_an_unsafe_key_is_explained_in_full() -> None:
    assert unsafe_key("a/../b/./c.csv") == (
        "the key has a '.' and '..' path segment: engines resolve such segments (Sail read another object "
        "or nothing), so the engine cannot read it as written; copy the object to a key without them"
    )
    assert unsafe_key("a//b.csv") == (
        "the key has an empty path segment ('//'): engines reject it (Sail: 'contained empty path "
        "segment') or collapse it (Hadoop reads another object); copy the object to a key without it"
    )
    assert "(a leading '/')" in (unsafe_key("/a.csv") or "") and "(a trailing '/')" in (unsafe_key("a/") or "")
