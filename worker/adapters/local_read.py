"""Small JSON files decoded by the worker itself and handed to the engine as Arrow.

The worker fetches a small file with ONE GET (If-Match on the event's etag, which also tells a
gone or overwritten object apart), decodes it here, and the batch reaches the engine as a few
Arrow relations instead of one engine read per file. An engine read of a small object costs
several object-store requests (Sail: two HEADs and a GET, twice when the schema is inferred
first); this path costs one.

Types follow Spark's JSON inference so that a route's small (worker-read) and large
(engine-read) files agree: integers → bigint (beyond 64 bits: an exact decimal(digits,0), up
to 38 digits, as Apache Spark infers), other numbers → double, integer + double → double,
strings stay strings (no timestamp guessing), objects → structs merged by name, arrays →
arrays of the merged element type, and any other mix → string holding the value's JSON text.
A column that held only nulls has no type (void) and creates nothing; nulls nested in structs
and arrays become strings, as in Spark. As Apache Spark's reader does, a JSON line holding an
array of objects gives one row per object (``[]`` none), and a UTF-8 byte order mark is skipped;
any other line that is not an object fails the file. Where this differs from the engines'
readers: docs/bad-input.md (checked by tests/reading_corpus.py on Sail and Apache Spark 4).
"""

from __future__ import annotations

import decimal
import json
import re
import zlib
from dataclasses import dataclass, replace
from typing import Any

import orjson
import pyarrow as pa

from worker.adapters import local_csv
from worker.domain.casts import cast_error
from worker.domain.errors import DataError, DecodeLimit
from worker.domain.policy import fold
from worker.domain.reading import TOO_MANY_BAD_RECORDS, BadRecord, CsvShape, TextRule, too_many_bad
from worker.domain.schema import (
    BOOLEAN,
    DOUBLE,
    LONG,
    MAX_DECIMAL_PRECISION,
    STRING,
    VOID,
    Array,
    DataType,
    Field,
    Struct,
)
from worker.domain.schema import Decimal as DecimalType
from worker.settings import SparkSettings

MAX_DEPTH = 32  # nesting deeper than this is refused (engines and clients choke on it)
_INT64 = (-(2**63), 2**63 - 1)
LONG_AS_DECIMAL = DecimalType(20, 0)  # a bigint widened to a decimal (Apache Spark's DecimalType.forType)
GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"


__all__ = ["DecodeLimit"]  # re-exported: defined in the domain, raised here


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    max_bytes: int  # decompressed bytes of one file
    max_values: int  # JSON values of one file (estimated by :func:`json_values`)


#: Used where no settings are at hand (operator preview, tests): the settings' defaults.
DEFAULT_LIMITS = DecodeLimits(
    SparkSettings.model_fields["worker_decode_max_bytes"].default,
    SparkSettings.model_fields["worker_decode_max_values"].default,
)


def limits_for(settings: SparkSettings) -> DecodeLimits:
    return DecodeLimits(settings.worker_decode_max_bytes, settings.worker_decode_max_values)


@dataclass(frozen=True, slots=True)
class Text:
    """A file's JSON text, decompressed and checked against the limits, before it is parsed."""

    data: bytes
    values: int

    @property
    def size(self) -> int:
        return len(self.data)

    def parse(self, whole_file: bool, rule: TextRule | None = None) -> Decoded:
        return parse_text(self, whole_file, rule)


@dataclass(frozen=True, slots=True)
class Decoded:
    """One file as Arrow columns, with its schema in icefeed's types (no engine round trip)."""

    columns: dict[str, pa.Array]
    rows: int
    schema: Struct
    bad: tuple[BadRecord, ...] = ()  # records a quarantining route leaves out (TextRule)

    @property
    def nbytes(self) -> int:
        """Bytes of the Arrow columns."""
        return sum(a.nbytes for a in self.columns.values())

    def table(self, source_column: str, source_file: str) -> pa.Table:
        """The rows with the lineage column ``source_column`` = ``source_file`` (rows of ``{}`` objects
        have no columns but count). A file with a column named like it, in any case, is quarantined
        before it gets here (policy RESERVED_NAME); should one arrive anyway, it is left out rather
        than sent beside the lineage column, where Spark could not tell the two apart."""
        data = {k: v for k, v in self.columns.items() if fold(k) != fold(source_column)}
        return pa.Table.from_pydict({**data, source_column: pa.array([source_file] * self.rows, type=pa.string())})


def decode_json(payload: bytes, whole_file: bool, compressed: bool, limits: DecodeLimits = DEFAULT_LIMITS) -> Decoded:
    """A JSON-lines file (``whole_file`` False) or one JSON document (an array of objects, or one
    object) as a :class:`Decoded`. Anything that is not valid JSON objects raises
    ``DataError(ParseError)`` naming the line; nesting over :data:`MAX_DEPTH` raises
    ``DataError(NestingTooDeep)``; text or values over ``limits`` raise :class:`DecodeLimit`."""
    return parse_text(open_text(payload, compressed, limits), whole_file)


class LocalDecoder:
    """The pipeline's ``FileDecoder`` port: opens (inflates, checks limits) and parses the files
    the worker reads itself, within ``limits``."""

    def __init__(self, limits: DecodeLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits

    @classmethod
    def for_settings(cls, settings: SparkSettings) -> LocalDecoder:
        return cls(limits_for(settings))

    def inflate_room(self, payload: bytes, key: str) -> int:
        """Bytes opening this file may take beyond its body: the inflate limit when it is gzip."""
        return self.limits.max_bytes if is_gzip(payload, key.endswith(".gz")) else 0

    def open(self, payload: bytes, key: str) -> Text:
        """The file's text, or :class:`DecodeLimit` / ``DataError`` before anything is parsed."""
        return open_text(payload, is_gzip(payload, key.endswith(".gz")), self.limits)


def is_gzip(payload: bytes, compressed: bool) -> bool:
    return compressed or payload[:2] == GZIP_MAGIC


def open_text(payload: bytes, compressed: bool, limits: DecodeLimits) -> Text:
    """The file's text (gzip inflated as a stream, never past ``limits.max_bytes``) and an upper
    estimate of its JSON values, or :class:`DecodeLimit` before anything is parsed."""
    data = inflate(payload, limits.max_bytes) if is_gzip(payload, compressed) else payload
    if len(data) > limits.max_bytes:
        raise DecodeLimit(f"{len(data)} bytes of JSON: over ICEFEED_SPARK_WORKER_DECODE_MAX_BYTES={limits.max_bytes}")
    values = json_values(data)
    if values > limits.max_values:
        raise DecodeLimit(
            f"about {values} JSON values in {len(data)} bytes: over "
            f"ICEFEED_SPARK_WORKER_DECODE_MAX_VALUES={limits.max_values}"
        )
    return Text(data, values)


def parse_text(text: Text, whole_file: bool, rule: TextRule | None = None) -> Decoded:
    """The text's rows as Arrow. With ``rule``: decoded from its character set first, and, when it
    quarantines, each JSON line that is not an object (or an array of objects) is set aside as a
    :class:`BadRecord` instead of failing the file, unless more than its ``max_bad_fraction`` of
    the records are bad (``DataError(TooManyBadRecords)``)."""
    rule = rule or TextRule()
    data = transcode(text.data, rule.encoding)
    data = data[len(UTF8_BOM) :] if data.startswith(UTF8_BOM) else data  # as Apache Spark does
    if rule.csv is not None:
        return _csv_decoded(data, rule, rule.csv)
    if whole_file:
        return rows_to_arrow(_document_rows(data))
    rows, places, bad = _line_rows(data, rule.quarantine)
    if rule.quarantine and rule.hints:
        rows, bad = _castable_rows(rows, places, bad, rule.hints)
    if bad:
        why = too_many_bad(len(bad), len(rows), rule.max_bad_fraction)
        if why is not None:
            first = bad[0]
            raise DataError(f"{why}; first: line {first.line}: {first.error}", error_class=TOO_MANY_BAD_RECORDS)
    decoded = rows_to_arrow(rows)
    return replace(decoded, bad=tuple(bad)) if bad else decoded


def _csv_decoded(data: bytes, rule: TextRule, shape: CsvShape) -> Decoded:
    """A CSV text's good records as Arrow (worker/adapters/local_csv.py), its bad ones set aside
    (``rule.quarantine``) or failing the file."""
    names, good, bad = local_csv.records(data, shape)
    if not rule.quarantine and bad:
        raise DataError(bad[0].error, error_class="ParseError")
    rows: list[list[str]] = []
    for number, start, line, fields in good:
        values = dict(zip(names, fields, strict=True))
        error = next(
            (f"column {c}: {e}" for c, t in rule.hints.items() if values.get(c) and (e := cast_error(values[c], t))),
            None,
        )
        if error is not None and rule.quarantine:
            bad.append(BadRecord.of(number, start, f"CSV line {number}: {error}", line))
        else:
            rows.append(fields)
    bad.sort(key=lambda b: (b.line, b.offset))
    why = too_many_bad(len(bad), len(rows), rule.max_bad_fraction) if bad else None
    if why is not None:
        first = bad[0]
        raise DataError(f"{why}; first: line {first.line}: {first.error}", error_class=TOO_MANY_BAD_RECORDS)
    typed = local_csv.typed(names, rows, shape.infer_schema, set(rule.hints))
    schema = Struct(tuple(Field(name, t) for name, (t, _) in typed.items()))
    return Decoded({name: array for name, (_, array) in typed.items()}, len(rows), schema, tuple(bad))


def transcode(data: bytes, encoding: str) -> bytes:
    """``data`` in ``encoding`` as UTF-8 (a UTF-16/32 BOM is consumed by the codec); text that is
    not valid in its encoding fails the file (ParseError)."""
    if encoding == "utf-8":
        return data
    try:
        return data.decode(encoding).encode("utf-8")
    except UnicodeError as exc:
        raise DataError(f"not valid {encoding} text: {exc}", error_class="ParseError") from None


def json_values(data: bytes) -> int:
    """An upper estimate of the JSON values (objects, arrays, members, rows) in ``data``: what
    parsing costs in Python objects, which bytes alone do not tell (``{}`` is 3 bytes a row)."""
    return data.count(b"\n") + data.count(b",") + data.count(b"{") + data.count(b"[") + 1


def inflate(payload: bytes, max_bytes: int) -> bytes:
    """Decompress gzip (every member, as ``gzip.decompress`` does) without ever holding more than
    ``max_bytes + 1`` bytes of output: a small bomb stops at the limit, not at its full size."""
    chunks: list[bytes] = []
    size = 0
    rest = payload
    try:
        while rest:
            stream = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            data = rest
            while True:
                chunk = stream.decompress(data, max_bytes + 1 - size)  # never 0 (= unbounded)
                chunks.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    raise DecodeLimit(
                        f"gzip inflates past {max_bytes} bytes: over ICEFEED_SPARK_WORKER_DECODE_MAX_BYTES={max_bytes}"
                    )
                data = stream.unconsumed_tail
                if not data:
                    break
            if not stream.eof:
                raise DataError("gzip decode error: compressed data ended early", error_class="ParseError")
            rest = stream.unused_data.lstrip(b"\x00")  # members may be followed by zero padding
    except zlib.error as exc:
        raise DataError(f"gzip decode error: {exc}", error_class="ParseError") from None
    return b"".join(chunks)


#: 19 digits in a row: maybe an integer beyond 64 bits, which orjson would turn into a float.
_LONG_DIGITS = re.compile(rb"\d{19}")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads(data: bytes) -> Any:
    """JSON text as Python values (orjson; Python's own parser when the text may hold an integer
    beyond 64 bits, which it keeps exact, as Apache Spark does: it infers it a decimal)."""
    if _LONG_DIGITS.search(data) is None:
        return orjson.loads(data)
    return json.loads(data.decode("utf-8"), parse_constant=_no_constant)


def _document_rows(data: bytes) -> list[dict[str, Any]]:
    try:
        document = _loads(data) if data.strip() else []
    except ValueError as exc:  # orjson's JSONDecodeError, json's, or a UnicodeDecodeError
        raise DataError(f"whole-file JSON parse error: {exc}", error_class="ParseError") from None
    rows = document if isinstance(document, list) else [document]
    if not all(isinstance(r, dict) for r in rows):
        raise DataError(
            "whole-file JSON parse error: expected an object or an array of objects", error_class="ParseError"
        )
    return rows


Place = tuple[int, int, bytes]  # (line number, byte offset of the line, the line)


def _line_rows(data: bytes, quarantine: bool = False) -> tuple[list[dict[str, Any]], list[Place], list[BadRecord]]:
    """The rows of JSON lines, where each came from, and (``quarantine``) the bad lines set aside."""
    rows: list[dict[str, Any]] = []
    places: list[Place] = []
    bad: list[BadRecord] = []
    offset = 0
    for number, line in enumerate(data.split(b"\n"), start=1):
        start, offset = offset, offset + len(line) + 1
        if not line.strip():
            continue
        try:
            row = _loads(line)
        except ValueError as exc:  # orjson's JSONDecodeError, json's, or a UnicodeDecodeError
            error = f"JSON parse error at line {number}: {exc}"
            if not quarantine:
                raise DataError(error, error_class="ParseError") from None
            bad.append(BadRecord.of(number, start, error, line.rstrip(b"\r")))
            continue
        if isinstance(row, list) and all(isinstance(r, dict) for r in row):
            rows.extend(row)  # Apache Spark reads a line holding an array of objects as one row each
            places.extend([(number, start, line)] * len(row))
            continue
        if not isinstance(row, dict):
            what = "an array holding non-objects" if isinstance(row, list) else type(row).__name__
            error = f"JSON line {number}: expected an object or an array of objects, got {what}"
            if not quarantine:
                raise DataError(error, error_class="ParseError")
            bad.append(BadRecord.of(number, start, error, line.rstrip(b"\r")))
            continue
        rows.append(row)
        places.append((number, start, line))
    return rows, places, bad


def _castable_rows(
    rows: list[dict[str, Any]], places: list[Place], bad: list[BadRecord], hints: dict[str, DataType]
) -> tuple[list[dict[str, Any]], list[BadRecord]]:
    """Rows whose hinted values can all take their hinted types; the others join ``bad`` (in line
    order), each with the first value that cannot."""
    kept: list[dict[str, Any]] = []
    more: list[BadRecord] = []
    for row, (number, start, line) in zip(rows, places, strict=True):
        error = next((f"column {c}: {e}" for c, t in hints.items() if c in row and (e := cast_error(row[c], t))), None)
        if error is None:
            kept.append(row)
        else:
            more.append(BadRecord.of(number, start, f"line {number}: {error}", line.rstrip(b"\r")))
    return kept, sorted(bad + more, key=lambda b: (b.line, b.offset)) if more else bad


# -- inference ---------------------------------------------------------------------------------


def _value_type(value: Any, depth: int) -> DataType:
    if depth > MAX_DEPTH:
        raise DataError(f"values nested too deep (over {MAX_DEPTH} levels)", error_class="NestingTooDeep")
    if value is None:
        return VOID
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            return LONG
        digits = len(str(abs(value)))  # Apache Spark: an integer beyond 64 bits is a decimal, or a double
        return DecimalType(digits, 0) if digits <= MAX_DECIMAL_PRECISION else DOUBLE
    if isinstance(value, float):
        return DOUBLE
    if isinstance(value, str):
        return STRING
    if isinstance(value, dict):
        fields: dict[str, DataType] = {}
        for k, v in value.items():
            t = _value_type(v, depth + 1)
            fields[k] = _unify(fields[k], t) if k in fields else t
        return Struct(tuple(Field(k, t) for k, t in fields.items()))
    if isinstance(value, list):
        element: DataType = VOID
        for v in value:
            element = _unify(element, _value_type(v, depth + 1))
        return Array(element)
    return STRING  # orjson yields nothing else


def _unify(a: DataType, b: DataType) -> DataType:
    if a == b:
        return a
    if a is VOID:
        return b
    if b is VOID:
        return a
    if {a, b} == {LONG, DOUBLE}:
        return DOUBLE
    if isinstance(a, DecimalType) or isinstance(b, DecimalType):  # Apache Spark's compatibleType
        if DOUBLE in (a, b):
            return DOUBLE
        wide = [LONG_AS_DECIMAL if t is LONG else t for t in (a, b)]
        if all(isinstance(t, DecimalType) and t.scale == 0 for t in wide):
            return DecimalType(max(t.precision for t in wide if isinstance(t, DecimalType)), 0)
    if isinstance(a, Struct) and isinstance(b, Struct):
        merged: dict[str, DataType] = {f.name: f.type for f in a.fields}
        for f in b.fields:
            merged[f.name] = _unify(merged[f.name], f.type) if f.name in merged else f.type
        return Struct(tuple(Field(k, t) for k, t in merged.items()))
    if isinstance(a, Array) and isinstance(b, Array):
        return Array(_unify(a.element, b.element))
    return STRING


def _settle(t: DataType) -> DataType:
    """Nested nulls become strings; an empty struct (only ``{}`` seen) becomes a string."""
    if t is VOID:
        return STRING
    if isinstance(t, Struct):
        return Struct(tuple(Field(f.name, _settle(f.type)) for f in t.fields)) if t.fields else STRING
    if isinstance(t, Array):
        return Array(_settle(t.element))
    return t


def _column_type(t: DataType) -> DataType:
    return t if t is VOID else _settle(t)


# -- conversion ------------------------------------------------------------------------------


def _arrow_type(t: DataType) -> pa.DataType:
    if t is VOID:
        return pa.null()
    if t is BOOLEAN:
        return pa.bool_()
    if t is LONG:
        return pa.int64()
    if t is DOUBLE:
        return pa.float64()
    if t is STRING:
        return pa.string()
    if isinstance(t, DecimalType):
        return pa.decimal128(t.precision, t.scale)
    if isinstance(t, Struct):
        return pa.struct([pa.field(f.name, _arrow_type(f.type)) for f in t.fields])
    if isinstance(t, Array):
        return pa.list_(_arrow_type(t.element))
    raise TypeError(f"no Arrow type for {t!r}")  # inference yields nothing else


def _convert(value: Any, t: DataType) -> Any:
    if value is None:
        return None
    if t is STRING:
        return value if isinstance(value, str) else _dumps(value)
    if t is DOUBLE:
        return float(value)
    if isinstance(t, DecimalType):
        return decimal.Decimal(value)
    if isinstance(t, Struct):
        return {f.name: _convert(value.get(f.name), f.type) for f in t.fields}
    if isinstance(t, Array):
        return [_convert(v, t.element) for v in value]
    return value


def _dumps(value: Any) -> str:
    """A value's compact JSON text (Python's encoder for integers beyond 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def rows_to_arrow(rows: list[dict[str, Any]]) -> Decoded:
    """Rows (parsed JSON objects) as an Arrow table with Spark-like inferred column types."""
    columns: dict[str, DataType] = {}
    for row in rows:
        for k, v in row.items():
            t = _value_type(v, 1)
            columns[k] = _unify(columns[k], t) if k in columns else t
    types = {k: _column_type(t) for k, t in columns.items()}
    arrays = {k: pa.array([_convert(r.get(k), t) for r in rows], type=_arrow_type(t)) for k, t in types.items()}
    return Decoded(arrays, len(rows), Struct(tuple(Field(k, t) for k, t in types.items())))
