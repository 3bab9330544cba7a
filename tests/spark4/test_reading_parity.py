"""The same bytes, the same outcome, on Apache Spark 4: every file of the corpus
(tests/reading_corpus.py) read by the worker's own decoding and by Apache Spark's JSON reader (as the
load reads it: FAILFAST) gives the same schema and rows, or fails with the same error class.
Apache Spark's semantics are the reference the worker path follows (docs/bad-input.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.reading_corpus import CORPUS, Outcome, differing, read_corpus
from tests.spark4.support import Spark4Server
from worker.settings import SparkSettings

pytestmark = pytest.mark.spark4

#: Where the worker's decoding still differs from Apache Spark's reader (docs/bad-input.md).
KNOWN = {
    "nulls": "a top-level column holding only nulls: Apache Spark makes it a string column, the worker none",
    "mixed_kinds": "a value of a mixed-kind column kept as JSON text: Apache Spark keeps its own spacing",
    "csv_quoted": 'a doubled quote in a quoted CSV field ("say ""hi"""): Apache Spark (escape \\) keeps the raw '
    "text, quotes and all; the worker reads one quote",
}


def test_the_worker_reads_every_shape_as_apache_spark_does(spark4: Spark4Server, tmp_path: Path) -> None:
    settings = SparkSettings(
        url=SecretStr(spark4.url), dialect="spark", table_format="parquet", source_root=f"file://{tmp_path}"
    )
    seen = read_corpus(tmp_path, settings, "spark_catalog.corpus_db.none")
    differ, shown = differing(seen)
    assert differ == set(KNOWN), shown
    worker, engine = seen["nulls"]  # a column holding only nulls: a string column on Spark, none from the worker
    assert "n string" in (engine.schema or "") and "n void" in (worker.schema or "")
    worker, engine = seen["mixed_kinds"]  # the same value, as JSON text written compactly vs as written
    assert '{"v": "{\\"k\\":[1]}"}' in worker.rows and '{"v": "{\\"k\\": [1]}"}' in engine.rows
    # What the corpus pins down (measured on Apache Spark 4.0): a line holding an array of objects
    # is one row per object, an empty array none; a UTF-8 BOM is skipped; anything else that is
    # not an object fails the file (FAILFAST).
    assert seen["array_of_objects_line"][0].rows == ('{"id": 1}', '{"id": 2}', '{"id": 3}')
    assert seen["bom"][0].rows == ('{"id": 1}', '{"id": 2}')
    for bad in ("array_of_numbers_line", "scalar_line", "truncated_line"):
        assert seen[bad][0] == Outcome(error_class="ParseError"), bad
    assert len(seen) == len(CORPUS)
