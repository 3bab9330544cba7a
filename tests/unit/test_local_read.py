"""Worker-side decoding of small JSON files: Spark-like inference, exact values, defined errors."""

from __future__ import annotations

import gzip
import tracemalloc
from decimal import Decimal

import pytest

from worker.adapters.local_read import (
    MAX_DEPTH,
    DecodeLimit,
    DecodeLimits,
    decode_json,
    inflate,
    json_values,
    open_text,
)
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


def test_integers_beyond_64_bits_are_exact_decimals_as_in_apache_spark() -> None:
    d = decode_json(lines('{"n": 18446744073709551615}', '{"n": 1}'), False, False)
    assert d.schema == parse_ddl("n decimal(20,0)")
    assert [int(v) for v in d.columns["n"].to_pylist()] == [18446744073709551615, 1]
    huge = decode_json(lines('{"n": 123456789012345678901234567890}'), False, False)
    assert huge.columns["n"].to_pylist() == [Decimal("123456789012345678901234567890")]  # not a rounded float
    assert decode_json(lines('{"n": 18446744073709551615}', '{"n": 1.5}'), False, False).schema == parse_ddl("n double")
    assert decode_json(lines('{"n": ' + "9" * 45 + "}"), False, False).schema == parse_ddl("n double")


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


# -- decode limits: streaming inflate with a cap, values counted before parsing ----------------


def test_inflate_stops_at_the_limit_without_holding_the_whole_bomb() -> None:
    bomb = gzip.compress(b"{}\n" * 10_000_000, 9)  # 29 KB → 30 MB
    tracemalloc.start()
    try:
        with pytest.raises(DecodeLimit) as caught:
            inflate(bomb, 1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.error_class == "DecompressionLimit"
    assert "ICEFEED_SPARK_WORKER_DECODE_MAX_BYTES" in str(caught.value)
    assert peak < 4 * 1024 * 1024  # the limit (1 MiB) and change, never the 30 MB


def test_inflate_reads_every_member_like_gzip_does() -> None:
    payload = gzip.compress(b'{"a": 1}\n') + gzip.compress(b'{"a": 2}\n') + b"\x00" * 8
    assert inflate(payload, 1000) == gzip.decompress(payload[:-8]) == b'{"a": 1}\n{"a": 2}\n'
    assert inflate(payload, 18) == b'{"a": 1}\n{"a": 2}\n'  # exactly at the limit is fine
    with pytest.raises(DecodeLimit):
        inflate(payload, 17)


@pytest.mark.parametrize("payload", [gzip.compress(b'{"a": 1}\n')[:-12], b"\x1f\x8bnot gzip at all"])
def test_a_truncated_or_corrupt_gzip_is_a_parse_error(payload: bytes) -> None:
    with pytest.raises(DataError) as caught:
        decode_json(payload, whole_file=False, compressed=True)
    assert caught.value.error_class == "ParseError" and not isinstance(caught.value, DecodeLimit)


def test_values_are_bounded_before_anything_is_parsed() -> None:
    data = b"{}\n" * 1000
    assert json_values(data) >= 2000
    limits = DecodeLimits(max_bytes=10**6, max_values=1500)
    with pytest.raises(DecodeLimit) as caught:
        decode_json(data, whole_file=False, compressed=False, limits=limits)
    assert "ICEFEED_SPARK_WORKER_DECODE_MAX_VALUES=1500" in str(caught.value)
    assert decode_json(data, False, False, DecodeLimits(10**6, 2001)).rows == 1000


def test_plain_text_over_the_byte_limit_is_refused() -> None:
    data = b'{"a": 1}\n' * 100
    with pytest.raises(DecodeLimit):
        open_text(data, False, DecodeLimits(max_bytes=899, max_values=10**6))
    assert open_text(data, False, DecodeLimits(max_bytes=900, max_values=10**6)).data == data


def test_values_estimate_covers_the_parsed_values() -> None:
    doc = b'[{"a": [1, 2, {"b": null}], "c": {}}, {"d": "x,y"}]'
    # objects 4, arrays 2, members a b c d + array items 3 + rows: the estimate is an upper bound
    assert json_values(doc) >= 4 + 2 + 4
