"""Bad records of a quarantining route (bad_records = "quarantine"): the good records decode, each
bad one is kept with its line, byte offset, error and text, and a file with too many bad records
fails as a whole; the route's encoding is decoded first."""

from __future__ import annotations

import gzip

import pytest

from worker.adapters import local_csv
from worker.adapters.local_read import DEFAULT_LIMITS, LocalDecoder
from worker.adapters.spark_sink import with_causes
from worker.domain.casts import cast_error
from worker.domain.errors import DataError, classify_engine_error
from worker.domain.reading import BAD_RECORD_TEXT_MAX, BadRecord, CsvShape, TextRule, too_many_bad
from worker.domain.schema import parse_type, type_string
from worker.routes import parse_routes

QUARANTINE = TextRule(quarantine=True, max_bad_fraction=0.5)


def decode(body: bytes, rule: TextRule, key: str = "k.json") -> object:
    return LocalDecoder(DEFAULT_LIMITS).open(body, key).parse(False, rule)


def test_good_records_load_and_each_bad_one_is_kept_with_where_and_why() -> None:
    body = b'{"id": 1}\n{"id": \n\n{"id": 2}\r\n"text"\n{"id": "\xff"}\n{"id": 3}\n'
    d = decode(body, QUARANTINE)
    assert d.rows == 3 and d.columns["id"].to_pylist() == [1, 2, 3]  # type: ignore[attr-defined]
    bad = d.bad  # type: ignore[attr-defined]
    assert [(b.line, b.offset) for b in bad] == [(2, 10), (5, 30), (6, 37)]
    assert [b.text for b in bad] == ['{"id": ', '"text"', '{"id": "\\xff"}']
    assert "parse error at line 2" in bad[0].error and "got str" in bad[1].error and "UTF-8" in bad[2].error
    assert all(body[b.offset :].startswith(b.text.encode()[:5]) for b in bad[:2])  # offsets point at the line


def test_without_quarantine_the_first_bad_line_fails_the_file() -> None:
    with pytest.raises(DataError) as caught:
        decode(b'{"id": 1}\n{"id": \n', TextRule())
    assert caught.value.error_class == "ParseError" and "line 2" in str(caught.value)


def test_a_file_over_the_bad_fraction_fails_as_a_whole() -> None:
    with pytest.raises(DataError) as caught:
        decode(b'{"id": 1}\nxx\nyy\n', QUARANTINE)  # 2 of 3 bad > 0.5
    assert caught.value.error_class == "TooManyBadRecords"
    assert "2 of 3 records are bad" in str(caught.value) and "first: line 2" in str(caught.value)
    assert decode(b'{"id": 1}\nxx\n', QUARANTINE).rows == 1  # type: ignore[attr-defined]  # 1 of 2: at the limit
    binary = gzip.compress(bytes(range(256)) * 64)[:4000]  # not even gzip once cut: undecodable bytes
    with pytest.raises(DataError):
        decode(binary, QUARANTINE, key="x.bin")


def test_the_fraction_rule() -> None:
    assert too_many_bad(0, 0, 0.0) is None and too_many_bad(1, 9, 0.1) is None
    assert too_many_bad(2, 8, 0.1) is not None and too_many_bad(4000, 1, 0.99) is not None


def test_a_bad_records_text_is_bounded() -> None:
    record = BadRecord.of(1, 0, "why", b"x" * (BAD_RECORD_TEXT_MAX + 10))
    assert len(record.text) == BAD_RECORD_TEXT_MAX and record.truncated


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("latin-1", '{"name": "café"}\n'.encode("latin-1")),
        ("utf-16", '{"name": "café"}\n'.encode("utf-16")),  # with its BOM
        ("utf-8", '\ufeff{"name": "café"}\n'.encode()),
    ],
)
def test_text_in_the_routes_encoding_decodes_to_the_right_characters(encoding: str, body: bytes) -> None:
    d = decode(body, TextRule(encoding=encoding))
    assert d.columns["name"].to_pylist() == ["café"]  # type: ignore[attr-defined]


def test_text_not_valid_in_its_encoding_fails_the_file() -> None:
    with pytest.raises(DataError) as caught:
        decode('{"a": 1}\n'.encode("utf-16") + b"\x00", TextRule(encoding="utf-16"))  # an odd byte
    assert caught.value.error_class == "ParseError" and "not valid utf-16" in str(caught.value)


ROUTE = """
[[ingestion]]
name = "events"
bucket = "bucket-a"
format = "{fmt}"
table = "glue.db.events"
location = "s3://w/db/events"
{extra}
"""


def test_routes_validate_the_bad_records_settings() -> None:
    ok = parse_routes(
        ROUTE.format(fmt="json", extra='bad_records = "quarantine"\nbad_records_location = "s3://bad/events/"')
    )
    (ing,) = ok.ingestion
    assert ing.bad_records_location == "s3://bad/events" and ing.worker_decodes
    assert ing.text_rule == TextRule("utf-8", True, 0.1, {})
    assert parse_routes(ROUTE.format(fmt="json", extra='encoding = "latin-1"')).ingestion[0].text_rule.encoding == (
        "iso8859-1"
    )
    for fmt, extra, needle in [
        ("json", 'bad_records = "quarantine"', "needs bad_records_location"),
        ("parquet", 'bad_records = "quarantine"\nbad_records_location = "s3://bad/x"', "not parquet"),
        (
            "json",
            'bad_records = "quarantine"\nbad_records_location = "s3://bad/x"\noptions = { multiline = true }',
            "not",
        ),
        ("csv", 'encoding = "latin-1"\noptions = { multiline = true }', "one record per line"),
        ("json", 'bad_records = "quarantine"\nbad_records_location = "/tmp/x"', "S3 URL"),
        ("json", "max_bad_fraction = 1.5", "less than or equal to 1"),
        ("json", 'encoding = "klingon"', "unknown encoding"),
        ("parquet", 'encoding = "latin-1"', "JSON and CSV"),
    ]:
        with pytest.raises(Exception, match=needle):
            parse_routes(ROUTE.format(fmt=fmt, extra=extra))


@pytest.mark.parametrize(
    ("value", "hint", "castable"),
    [
        ("1.50", "decimal(10,2)", True),
        (2, "decimal(10,2)", True),
        (99999999.994, "decimal(10,2)", True),  # rounds to 99999999.99
        (99999999.996, "decimal(10,2)", False),  # rounds past 8 integer digits
        ("abc", "decimal(10,2)", False),
        ("NaN", "decimal(10,2)", False),
        ("12", "bigint", True),
        ("1.5", "int", False),
        (2**40, "int", False),
        ("1e5", "double", True),
        ("x", "double", False),
        ("yes", "boolean", True),
        ("maybe", "boolean", False),
        ("2026-11-01", "date", True),
        ("2026-13-01", "date", False),
        ("2026-11-01T10:00:00Z", "timestamp", True),
        ("2026-11-01 10:00:00", "timestamp", True),
        ("now", "timestamp", False),
        (None, "decimal(10,2)", True),
        ({"a": 1}, "string", True),
    ],
)
def test_which_values_take_a_hinted_type(value: object, hint: str, castable: bool) -> None:
    assert (cast_error(value, parse_type(hint)) is None) is castable


def test_a_value_that_cannot_take_its_hinted_type_sets_its_record_aside() -> None:
    rule = TextRule(quarantine=True, max_bad_fraction=0.5, hints={"price": parse_type("decimal(10,2)")})
    d = decode(b'{"id": 1, "price": "1.50"}\n[{"id": 2, "price": "abc"}, {"id": 3}]\n{"id": 4, "price": 2}\n', rule)
    assert d.columns["id"].to_pylist() == [1, 3, 4]  # type: ignore[attr-defined]
    (bad,) = d.bad  # type: ignore[attr-defined]
    assert (bad.line, bad.offset) == (2, 27) and "column price: 'abc' cannot be cast to decimal(10,2)" in bad.error
    with pytest.raises(DataError):  # without quarantine the engine's cast decides, as before
        decode(b'{"id": 1, "price": "abc"}\n{"id": \n', TextRule(hints=rule.hints))


CSV = TextRule(quarantine=True, max_bad_fraction=0.6, csv=CsvShape(), hints={"price": parse_type("decimal(10,2)")})


def test_a_csv_files_ragged_rows_and_bad_casts_are_set_aside() -> None:
    body = b"id,price,day\n1,1.50,2026-01-02\n2,3\n3,abc,2026-01-03\n4,2,2026-01-04,extra\n\n5,,2026-01-05\r\n"
    d = decode(body, CSV, key="k.csv")
    assert d.rows == 2 and d.columns["id"].to_pylist() == [1, 5]  # type: ignore[attr-defined]
    price = d.columns["price"].to_pylist()  # type: ignore[attr-defined]
    assert type_string(d.schema.field("price").type) == "string" and price == ["1.50", None]  # type: ignore[attr-defined]  # the engine casts the text
    assert [(b.line, b.offset) for b in d.bad] == [(3, 31), (4, 35), (5, 52)]  # type: ignore[attr-defined]
    errors = [b.error for b in d.bad]  # type: ignore[attr-defined]
    assert "2 field(s), the header has 3" in errors[0] and "column price: 'abc' cannot be cast" in errors[1]
    assert "4 field(s)" in errors[2]
    with pytest.raises(DataError) as caught:  # without quarantine, the first ragged row fails the file
        decode(body, TextRule(csv=CsvShape()), key="k.csv")
    assert caught.value.error_class == "ParseError" and "CSV line 3" in str(caught.value)


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (["1", "2"], "int"),
        (["1", "3000000000"], "bigint"),
        (["1", "2.5"], "double"),
        (["12345678901234567890", "1"], "decimal(20,0)"),
        (["2026-01-02", None], "date"),
        (["2026-01-02", "2026-01-02 10:00:00"], "timestamp"),
        (["true", "FALSE"], "boolean"),
        (["1", "x"], "string"),
        (["1", "true"], "string"),
        ([None, None], "string"),
    ],
)
def test_csv_columns_are_typed_as_apache_spark_infers_them(values: list[str | None], kind: str) -> None:
    assert type_string(local_csv.infer(values)) == kind


def test_an_engine_error_is_classified_by_the_cause_after_its_stack_trace() -> None:
    trace = "\n".join(f"\tat org.apache.spark.Frame{i}(Frame.scala:{i})" for i in range(200))
    message = (
        "[FAILED_READ_FILE.NO_HINT] Encountered error while reading file file:/x/a.csv.  SQLSTATE: KD001\n"
        + trace
        + "\nCaused by: org.apache.spark.SparkException: [MALFORMED_RECORD_IN_PARSING.WITHOUT_SUGGESTION] "
        "Malformed records are detected in record parsing: [3,null].\n" + trace
    )
    text = with_causes(message)
    assert len(text) < 2500 and text.endswith("Malformed records are detected in record parsing: [3,null].")
    assert classify_engine_error("SparkException", text).error_class == "ParseError"
    assert classify_engine_error("SparkException", message[:2000]).error_class != "ParseError"  # as it was
    assert with_causes("short") == "short"
