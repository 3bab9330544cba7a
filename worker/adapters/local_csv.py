"""CSV files of a quarantining route (bad_records = "quarantine"), decoded by the worker.

A record is one line (the route's ``multiline = false``). A record with another number of fields
than the header, bytes that are not valid UTF-8 (after the route's ``encoding``) or a value that
cannot take its hinted type is a :class:`BadRecord`; the others become Arrow columns typed as
Apache Spark's CSV inference types them (``inferSchema``, measured on Apache Spark 4.0.1 by
tests/spark4/test_reading_parity.py): each value tries int, then bigint, then an integer
decimal, then double, then date (``yyyy-MM-dd``), then timestamp, then boolean, else string; a
column takes the widest of its values' types (int + bigint → bigint, numbers → double, date +
timestamp → timestamp, anything else → string). Empty fields are nulls. Without ``inferSchema``
every column is a string. Hinted columns stay text here: the engine casts them from the text, as
it does for the CSV files it reads (a hinted zip code keeps its zeros).
"""

from __future__ import annotations

import csv
import decimal
import re
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa

from worker.domain.reading import BadRecord, CsvShape
from worker.domain.schema import (
    BOOLEAN,
    DATE,
    DOUBLE,
    INT,
    LONG,
    MAX_DECIMAL_PRECISION,
    STRING,
    TIMESTAMP,
    DataType,
)
from worker.domain.schema import Decimal as DecimalType

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_INTEGER = re.compile(r"^[+-]?\d+$")
_DOUBLE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?[dDfF]?$|^[+-]?(NaN|Infinity|Inf)$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?(Z|[+-]\d{2}:?\d{2})?$")
#: The order a value tries types in (Apache Spark's CSVInferSchema).
_ORDER: list[DataType] = [INT, LONG, DecimalType(MAX_DECIMAL_PRECISION, 0), DOUBLE, DATE, TIMESTAMP, BOOLEAN]


def records(data: bytes, shape: CsvShape) -> tuple[list[str], list[tuple[int, int, bytes, list[str]]], list[BadRecord]]:
    """(column names, good records as (line, byte offset, line bytes, fields), bad records): one
    record per line; an empty line is no record."""
    offset = 0
    names: list[str] | None = None
    good: list[tuple[int, int, bytes, list[str]]] = []
    bad: list[BadRecord] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        start, offset = offset, offset + len(raw) + 1
        line = raw.rstrip(b"\r")
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad.append(BadRecord.of(number, start, f"CSV line {number}: not valid UTF-8 ({exc.reason})", line))
            continue
        fields = _split(text, shape)
        if names is None:
            names = fields if shape.header else [f"_c{i}" for i in range(len(fields))]
            if shape.header:
                continue
        if len(fields) != len(names):
            error = f"CSV line {number}: {len(fields)} field(s), the header has {len(names)}"
            bad.append(BadRecord.of(number, start, error, line))
            continue
        good.append((number, start, line, fields))
    return names or [], good, bad


def _split(text: str, shape: CsvShape) -> list[str]:
    reader = csv.reader([text], delimiter=shape.delimiter, quotechar=shape.quote, escapechar=shape.escape)
    return next(reader, [])


def infer(values: list[str | None]) -> DataType:
    """A column's type from its values (None: empty), as Apache Spark's CSV inference gives it:
    each value's first type in :data:`_ORDER`, widened across the column."""
    merged: DataType | None = None
    for value in values:
        if value is None:
            continue
        kind = next((t for t in _ORDER if _is(value, t)), STRING)
        if isinstance(kind, DecimalType):  # an integer beyond 64 bits: its own digits
            kind = DecimalType(max(1, len(str(abs(int(value))))), 0)
        merged = kind if merged is None else _wider(merged, kind)
        if merged is STRING:
            return STRING
    return STRING if merged is None else merged


def _is(value: str, t: DataType) -> bool:
    if t is INT or t is LONG:
        low, high = _INT32 if t is INT else _INT64
        return bool(_INTEGER.match(value)) and low <= int(value) <= high
    if isinstance(t, DecimalType):
        return bool(_INTEGER.match(value)) and len(value.lstrip("+-")) <= MAX_DECIMAL_PRECISION
    if t is DOUBLE:
        return bool(_DOUBLE.match(value))
    if t is DATE:
        return bool(_DATE.match(value)) and _valid_date(value)
    if t is TIMESTAMP:
        return bool(_TIMESTAMP.match(value)) and _valid_date(value[:10])
    if t is BOOLEAN:
        return value.lower() in ("true", "false")
    return True


def _valid_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _wider(a: DataType, b: DataType) -> DataType:
    if a == b:
        return a
    numeric = (INT, LONG, DOUBLE)
    if a in numeric and b in numeric:
        return DOUBLE if DOUBLE in (a, b) else LONG
    if isinstance(a, DecimalType) or isinstance(b, DecimalType):
        if DOUBLE in (a, b):
            return DOUBLE
        if all(t in (INT, LONG) or isinstance(t, DecimalType) for t in (a, b)):
            width = max(t.precision if isinstance(t, DecimalType) else 20 for t in (a, b))
            return DecimalType(width, 0)
    if {a, b} == {DATE, TIMESTAMP}:
        return TIMESTAMP
    return STRING


def arrow(values: list[str | None], t: DataType) -> pa.Array:
    """A column's values as Arrow of type ``t`` (values that :func:`infer` gave that type)."""
    if t is INT or t is LONG:
        return pa.array([None if v is None else int(v) for v in values], type=pa.int32() if t is INT else pa.int64())
    if isinstance(t, DecimalType):
        return pa.array([None if v is None else decimal.Decimal(v) for v in values], type=pa.decimal128(t.precision, 0))
    if t is DOUBLE:
        return pa.array([None if v is None else _double(v) for v in values], type=pa.float64())
    if t is DATE:
        return pa.array([None if v is None else date.fromisoformat(v) for v in values], type=pa.date32())
    if t is TIMESTAMP:
        return pa.array([None if v is None else _timestamp(v) for v in values], type=pa.timestamp("us", tz="UTC"))
    if t is BOOLEAN:
        return pa.array([None if v is None else v.lower() == "true" for v in values], type=pa.bool_())
    return pa.array(values, type=pa.string())


def _double(value: str) -> float:
    text = value.rstrip("dDfF")
    return float(text.replace("Infinity", "inf").replace("Inf", "inf"))


def _timestamp(value: str) -> datetime:
    text = value.replace(" ", "T", 1)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    stamp = datetime.fromisoformat(text)
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)  # session zone: UTC


def typed(names: list[str], rows: list[list[str]], infer_schema: bool, text_columns: set[str]) -> dict[str, Any]:
    """Columns by name: (type, Arrow array) for each, inferred unless ``infer_schema`` is off or the
    column is in ``text_columns`` (hinted: cast by the engine from the text)."""
    out: dict[str, Any] = {}
    for i, name in enumerate(names):
        values = [row[i] if row[i] != "" else None for row in rows]
        t = infer(values) if infer_schema and name not in text_columns else STRING
        out[name] = (t, arrow(values, t))
    return out
