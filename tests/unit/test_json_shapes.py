"""The worker reads JSON shapes as Apache Spark's JSON reader does (measured on Apache Spark 4.0.1:
tests/spark4/test_reading_parity.py): a line holding an array of objects is one row per object,
a UTF-8 byte order mark is skipped, any other non-object line fails the file."""

from __future__ import annotations

import pytest

from worker.adapters.local_read import decode_json
from worker.domain.errors import DataError
from worker.domain.schema import parse_ddl


def test_a_line_holding_an_array_of_objects_is_one_row_per_object() -> None:
    d = decode_json(b'[{"id": 1}, {"id": 2, "x": "a"}]\n{"id": 3}\n[]\n', whole_file=False, compressed=False)
    assert d.rows == 3
    assert d.schema == parse_ddl("id bigint, x string")
    assert d.columns["id"].to_pylist() == [1, 2, 3] and d.columns["x"].to_pylist() == [None, "a", None]


@pytest.mark.parametrize("whole_file", [False, True])
def test_a_utf8_byte_order_mark_is_skipped(whole_file: bool) -> None:
    body = b'\xef\xbb\xbf[{"id": 1}]' if whole_file else b'\xef\xbb\xbf{"id": 1}\n{"id": 2}\n'
    d = decode_json(body, whole_file=whole_file, compressed=False)
    assert d.columns["id"].to_pylist() == ([1] if whole_file else [1, 2])


@pytest.mark.parametrize(
    ("line", "what"),
    [
        (b"[1, 2]", "an array holding non-objects"),
        (b'[{"id": 1}, 2]', "an array holding non-objects"),
        (b'"text"', "got str"),
        (b"null", "got NoneType"),
        (b"5", "got int"),
    ],
)
def test_any_other_line_that_is_not_an_object_fails_the_file(line: bytes, what: str) -> None:
    with pytest.raises(DataError) as caught:
        decode_json(b'{"id": 1}\n' + line + b"\n", whole_file=False, compressed=False)
    assert caught.value.error_class == "ParseError"
    assert "JSON line 2: expected an object or an array of objects" in str(caught.value) and what in str(caught.value)
