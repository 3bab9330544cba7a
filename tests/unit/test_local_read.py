"""Worker-side decoding of small JSON files: Spark-like inference, exact values, defined errors."""

from __future__ import annotations

import gzip

import pytest

from worker.adapters.local_read import MAX_DEPTH, decode_json
from worker.domain.errors import DataError
from worker.domain.schema import parse_ddl


def lines(*rows: str) -> bytes:
    return "\n".join(rows).encode()


def test_types_follow_spark_json_inference() -> None:
    d = decode_json(
        lines(
            '{"i": 1, "f": 1.5, "m": 1, "s": "2026-01-01T00:00:00Z", "b": true, "o": {"x": 1}, "a": [1, 2]}',
            '{"i": 2, "f": 2, "m": 2.5, "s": "x", "b": false, "o": {"y": "z"}, "a": []}',
        ),
        whole_file=False,
        compressed=False,
    )
    assert d.rows == 2
    assert d.schema == parse_ddl(
        "i bigint, f double, m double, s string, b boolean, o struct<x:bigint,y:string>, a array<bigint>"
    )
    assert d.columns["m"].to_pylist() == [1.0, 2.5]
    assert d.columns["o"].to_pylist() == [{"x": 1, "y": None}, {"x": None, "y": "z"}]
    assert d.columns["s"].to_pylist() == ["2026-01-01T00:00:00Z", "x"]  # no timestamp guessing


def test_mixed_kinds_become_the_values_json_text() -> None:
    d = decode_json(lines('{"v": 1}', '{"v": "one"}', '{"v": {"k": [1]}}', '{"v": true}'), False, False)
    assert d.schema == parse_ddl("v string")
    assert d.columns["v"].to_pylist() == ["1", "one", '{"k":[1]}', "true"]


def test_only_nulls_is_void_at_top_level_and_string_when_nested() -> None:
    d = decode_json(lines('{"n": null, "o": {"q": null}, "a": [null], "e": []}'), False, False)
    assert d.schema == parse_ddl("n void, o struct<q:string>, a array<string>, e array<string>")
    assert d.columns["n"].null_count == 1


def test_missing_keys_are_nulls_and_columns_keep_first_seen_order() -> None:
    d = decode_json(lines('{"b": 1}', "", '{"a": "x"}', "   "), False, False)
    assert d.schema.names == ("b", "a") and d.rows == 2
    assert d.columns["b"].to_pylist() == [1, None] and d.columns["a"].to_pylist() == [None, "x"]


def test_whole_file_documents_and_gzip() -> None:
    doc = b'[{"a": 1}, {"a": 2}]'
    assert decode_json(doc, whole_file=True, compressed=False).rows == 2
    assert decode_json(b'{"a": 1}', whole_file=True, compressed=False).rows == 1
    assert decode_json(b"[]", whole_file=True, compressed=False).rows == 0
    assert decode_json(gzip.compress(lines('{"a": 1}', '{"a": 2}')), False, compressed=True).rows == 2
    assert decode_json(b"", whole_file=False, compressed=False).rows == 0


def test_objects_without_keys_still_count_as_rows() -> None:
    d = decode_json(lines("{}", "{}"), False, False)
    assert d.rows == 2 and d.schema.fields == ()
    assert d.table("_source_file", "s3://b/k").column("_source_file").to_pylist() == ["s3://b/k"] * 2


def test_a_data_column_named_like_the_lineage_column_is_replaced() -> None:
    d = decode_json(lines('{"_source_file": "mine", "a": 1}'), False, False)
    table = d.table("_source_file", "s3://b/k")
    assert table.column_names == ["a", "_source_file"] and table.column("_source_file").to_pylist() == ["s3://b/k"]


def test_integers_beyond_64_bits_are_doubles() -> None:
    d = decode_json(lines('{"n": 18446744073709551615}', '{"n": 1}'), False, False)
    assert d.schema == parse_ddl("n double")


@pytest.mark.parametrize(
    ("body", "whole", "compressed", "error_class", "needle"),
    [
        (lines('{"a": 1}', '{"a": '), False, False, "ParseError", "parse error at line 2"),
        (lines('{"a": 1}', "[1, 2]"), False, False, "ParseError", "expected an object"),
        ('{"s": "café"}'.encode("latin-1"), False, False, "ParseError", "line 1"),
        (gzip.compress(b'{"a": 1}')[:-6], False, True, "ParseError", "gzip decode error"),
        (b"not gzip", False, True, "ParseError", "gzip decode error"),
        (b"[1, 2]", True, False, "ParseError", "array of objects"),
        (b"{", True, False, "ParseError", "whole-file JSON parse error"),
        (
            b"".join([b'{"a": '] * (MAX_DEPTH + 2)) + b"1" + b"}" * (MAX_DEPTH + 2),
            False,
            False,
            "NestingTooDeep",
            "nested too deep",
        ),
    ],
)
def test_bad_input_raises_a_data_error_naming_the_problem(
    body: bytes, whole: bool, compressed: bool, error_class: str, needle: str
) -> None:
    with pytest.raises(DataError) as caught:
        decode_json(body, whole_file=whole, compressed=compressed)
    assert caught.value.error_class == error_class and needle in str(caught.value)
