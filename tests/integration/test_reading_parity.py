"""The same bytes, the same outcome, on Sail: every file of the corpus (tests/reading_corpus.py)
read by the worker's own decoding and by Sail's reader (as the load reads it) gives the same schema
and rows, or fails with the same error class, except where Sail's reader differs from Apache
Spark's, which the worker follows (listed here and in docs/bad-input.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.reading_corpus import Outcome, differing, read_corpus
from worker.localstack import Stack
from worker.settings import SparkSettings

pytestmark = pytest.mark.integration

#: Shapes Sail's JSON reader refuses (the whole file fails) and Apache Spark reads: the worker
#: reads them as Apache Spark does (docs/bad-input.md).
SAIL_FAILS = {
    "mixed_kinds": "a column holding numbers, strings and objects (Spark: a string column of JSON texts)",
    "array_of_objects_line": "a line holding an array of objects (Spark: one row per object)",
    "bom": "a UTF-8 byte order mark (Spark skips it)",
}
SAIL_OTHER = {
    "nulls": "a nested field holding only nulls: void on Sail, string on Spark and the worker",
    "big_ints": "an integer beyond 64 bits: double on Sail, decimal(20,0) on Spark and the worker",
    "huge_ints": "an integer of 30 digits: double on Sail, decimal(30,0) on Spark and the worker",
}
#: CSV read by the worker (a route with bad_records or encoding) types columns as Apache Spark's
#: CSV inference does; Sail's reader gives the same values with other types: bigint for int,
#: timestamp_ntz for timestamp, string for integers beyond 64 bits (decimal on Spark).
SAIL_CSV_TYPES = {"csv_types", "csv_widening", "csv_big_ints", "csv_nulls", "csv_quoted", "csv_crlf", "csv_bom"}
#: Whole-file JSON is never read by Sail (its reader knows JSON lines only): the worker parses it.
#: (A document that is one object on one line reads alike either way.)
WORKER_ONLY = {"document"}


def test_the_worker_and_sail_read_every_shape_alike(stack: Stack, tmp_path: Path) -> None:
    settings = SparkSettings(url=SecretStr(stack.spark_url), dialect="sail", source_root=f"file://{tmp_path}")
    seen = read_corpus(tmp_path, settings, "glue.corpus_db.none")
    differ, shown = differing(seen)
    assert differ == set(SAIL_FAILS) | set(SAIL_OTHER) | set(WORKER_ONLY) | SAIL_CSV_TYPES, shown
    for name in SAIL_CSV_TYPES:
        worker, engine = seen[name]
        assert worker.rows == engine.rows and worker.schema != engine.schema, name
    for name in SAIL_FAILS:  # Sail's reader fails the file; Apache Spark and the worker load it
        worker, engine = seen[name]
        assert engine == Outcome(error_class="ParseError") and worker.error_class is None and worker.rows, name
    worker, engine = seen["nulls"]  # a nested null-only field: Sail void, Spark and the worker string
    assert "o struct<q:void>" in (engine.schema or "") and "o struct<q:string>" in (worker.schema or "")
    for name in ("big_ints", "huge_ints"):
        worker, engine = seen[name]
        assert engine.schema == "n double" and (worker.schema or "").startswith("n decimal("), name
