"""One outcome per file whatever reads it: a corpus of file shapes, read through each path the load
uses (the worker's own decoding, and the engine reading the file by path), compared.

Both paths run through the load's own code: ``decode_file`` (the worker) and the sink's ``infer``
then ``read_and_plan`` and ``sample`` (the frame the append would write, conformed to the plan's
target). An outcome is the file's schema, its rows (JSON-able), or the error class that fails it.
Used by the Sail tier (tests/integration) and the Apache Spark 4 tier (tests/spark4)."""

from __future__ import annotations

import asyncio
import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

from worker.adapters.local_read import DEFAULT_LIMITS, LocalDecoder
from worker.adapters.spark_sink import SparkSink
from worker.admin.common import jsonable
from worker.domain.batching import FileWork
from worker.domain.errors import DataError
from worker.domain.policy import Policy
from worker.domain.reading import CsvShape, TextRule
from worker.domain.schema import Array, Field, Map, Struct, type_string
from worker.pipeline import decode_file, read_and_plan
from worker.ports import Reader, WriteRequest
from worker.settings import SparkSettings

BUCKET = "corpus"


def _lines(*rows: Any) -> bytes:
    return ("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n").encode()


#: name -> (body, whole-file JSON, key suffix). Each is a shape a route may meet.
CORPUS: dict[str, tuple[bytes, bool, str]] = {
    "flat": (_lines({"id": 1, "name": "a", "ok": True}, {"id": 2, "name": "b", "ok": False}), False, ".json"),
    "nested": (_lines({"id": 1, "o": {"x": 1, "l": [1, 2]}}, {"id": 2, "o": {"y": "z", "l": []}}), False, ".json"),
    "mixed_kinds": (_lines({"v": 1}, {"v": "one"}, {"v": {"k": [1]}}, {"v": True}), False, ".json"),
    "int_and_double": (_lines({"n": 1}, {"n": 2.5}), False, ".json"),
    "nulls": (_lines({"id": 1, "n": None, "o": {"q": None}}, {"id": 2, "n": None, "o": None}), False, ".json"),
    "decimals_as_text": (_lines({"d": 1.10}, {"d": 2.25}), False, ".json"),
    "big_ints": (b'{"n": 12345678901234567890}\n{"n": 1}\n', False, ".json"),
    "huge_ints": (b'{"n": 123456789012345678901234567890}\n{"n": -5}\n', False, ".json"),
    "big_int_and_double": (b'{"n": 12345678901234567890}\n{"n": 1.5}\n', False, ".json"),
    "beyond_decimal": (b'{"n": ' + b"9" * 45 + b"}\n", False, ".json"),
    "empty_lines": (b'{"id": 1}\n\n   \n{"id": 2}\n', False, ".json"),
    "array_of_objects_line": (b'[{"id": 1}, {"id": 2}]\n{"id": 3}\n[]\n', False, ".json"),
    "array_of_numbers_line": (b'{"id": 1}\n[1, 2]\n', False, ".json"),
    "scalar_line": (b'{"id": 1}\n"text"\n', False, ".json"),
    "truncated_line": (b'{"id": 1}\n{"id": \n', False, ".json"),
    "bom": (b'\xef\xbb\xbf{"id": 1}\n{"id": 2}\n', False, ".json"),
    "crlf": (b'{"id": 1}\r\n{"id": 2}\r\n', False, ".json"),
    "gzip": (gzip.compress(_lines({"id": 1}, {"id": 2})), False, ".json.gz"),
    "document": (json.dumps([{"id": 1, "o": {"x": 1}}, {"id": 2, "o": {"y": "z"}}], indent=2).encode(), True, ".json"),
    "document_object": (json.dumps({"id": 1, "tags": ["a"]}).encode(), True, ".json"),
    # CSV, header and inferSchema on: what a CSV route the worker decodes (bad_records, encoding) meets
    "csv_types": (
        b"id,age,price,joined,ts,ok,name\n"
        b"1,36,1.5,2026-01-02,2026-01-02 10:00:00,true,ada\n"
        b"2,41,2.25,2025-12-31,2026-01-03 11:30:00,false,alan\n",
        False,
        ".csv",
    ),
    "csv_widening": (b"a,b,c,d\n1,x,2026-01-01,1\n2.5,3,2026-01-02 10:00:00,3000000000\n", False, ".csv"),
    "csv_big_ints": (b"n\n12345678901234567890\n1\n", False, ".csv"),
    "csv_nulls": (b"a,b\n1,\n,x\n", False, ".csv"),
    "csv_quoted": (b'a,b\n"x, y",2\n"say ""hi""",3\n', False, ".csv"),
    "csv_crlf": (b"a,b\r\n1,2\r\n3,4\r\n", False, ".csv"),
    "csv_ragged": (b"a,b\n1,2\n3\n4,5,6\n", False, ".csv"),
    "csv_bom": (b"\xef\xbb\xbfa,b\n1,2\n", False, ".csv"),
}
CSV_OPTIONS = {"header": "true", "sep": ",", "quote": '"', "escape": "\\", "inferSchema": "true", "multiLine": "false"}


@dataclass(frozen=True)
class Outcome:
    """What reading one file gives: its schema and rows, or the error class that fails it."""

    schema: str | None = None
    rows: tuple[str, ...] = ()
    error_class: str | None = None


def _key(name: str) -> str:
    return f"corpus/{name}{CORPUS[name][2]}"


def write_corpus(root: Path) -> None:
    """The corpus as files under ``root`` (an engine's ``ICEFEED_SPARK_SOURCE_ROOT``)."""
    for name, (body, _, _) in CORPUS.items():
        path = root / BUCKET / _key(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


async def _read(sink: SparkSink, table: str, name: str, worker: bool) -> Outcome:
    body, whole_file, suffix = CORPUS[name]
    key = _key(name)
    work = FileWork(1, "corpus", BUCKET, key, "etag", len(body))
    reader = Reader("json", {"multiLine": str(whole_file).lower()})
    rule = TextRule()
    if suffix == ".csv":
        reader, rule = Reader("csv", CSV_OPTIONS), TextRule(csv=CsvShape())
    decoded: dict[int, Any] = {}
    if worker:
        decoded[1] = decode_file(LocalDecoder(DEFAULT_LIMITS), body, key, whole_file, False, rule)
    request = WriteRequest(uuid4(), table, "file:///none", {"corpus": reader}, [work], 1, decoded=decoded)
    inference, plan = await read_and_plan(sink, request, Policy.EVOLVE, {})
    if 1 in inference.unreadable:
        await sink.sample(request, plan, 0)  # lets the kept read go
        return Outcome(error_class=inference.unreadable[1].error_class)
    try:  # an engine may find a bad record only as it reads the rows (Apache Spark: a ragged CSV row)
        rows = await sink.sample(request, plan, 1000)
    except DataError as error:
        return Outcome(error_class=error.error_class)
    schema = ", ".join(f"{f.name} {type_string(_by_name(f.type))}" for f in _by_name(inference.schemas[1]).fields)
    return Outcome(schema, tuple(sorted(json.dumps(jsonable(r), sort_keys=True) for r in rows)))


def _by_name(t: Any) -> Any:
    """``t`` with struct fields in name order at every level: Apache Spark's JSON inference sorts
    them, Sail and the worker keep first-seen order; files are matched to tables by name, never by
    position, so the order is not part of an outcome."""
    if isinstance(t, Struct):
        fields = sorted(t.fields, key=lambda f: f.name)
        return Struct(tuple(Field(f.name, _by_name(f.type), f.nullable) for f in fields))
    if isinstance(t, Array):
        return Array(_by_name(t.element), t.contains_null)
    if isinstance(t, Map):
        return Map(t.key, _by_name(t.value), t.value_contains_null)
    return t


def outcomes(sink: SparkSink, table: str, names: list[str] | None = None) -> dict[str, tuple[Outcome, Outcome]]:
    """name -> (the worker's outcome, the engine's outcome) for every corpus file; ``table``: a
    table name the engine accepts (it need not exist: nothing is written)."""

    async def go() -> dict[str, tuple[Outcome, Outcome]]:
        out = {}
        for name in names or list(CORPUS):
            out[name] = (await _read(sink, table, name, True), await _read(sink, table, name, False))
        return out

    return asyncio.run(go())


def read_corpus(root: Path, settings: SparkSettings, table: str) -> dict[str, tuple[Outcome, Outcome]]:
    """Write the corpus under ``root`` (``settings.source_root`` points there) and read it through
    both paths on the engine of ``settings``."""
    write_corpus(root)
    sink = SparkSink(settings)
    try:
        return outcomes(sink, table)
    finally:
        sink.close()


def differing(seen: dict[str, tuple[Outcome, Outcome]]) -> tuple[set[str], str]:
    """The shapes whose two outcomes differ, and a description of them for an assertion message."""
    differ = {name: pair for name, pair in seen.items() if pair[0] != pair[1]}
    return set(differ), "\n".join(f"{n}:\n  worker {w}\n  engine {e}" for n, (w, e) in differ.items())
