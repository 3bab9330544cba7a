"""Who reads a file, and which files are too large to load: pure rules over settings values.

A file is read either by the worker (one GET, decoded in the process: see
``worker/adapters/local_read.py``) or by the engine (by path). These rules decide which, and
which files are refused before they are claimed (``FileTooLarge``); the pipeline and ``icefeed
preview`` both ask them, so a preview says what a batch would do. No I/O, no settings objects:
callers pass the values.
"""

from __future__ import annotations

FILE_TOO_LARGE = "FileTooLarge"


def worker_parses_whole_file_json(engine: str) -> bool:
    """Whether whole-file JSON (multiLine) must be fetched and parsed by the worker: Sail's
    reader knows only JSON lines."""
    return engine == "sail"


def deletes_rows(table_format: str) -> bool:
    """Whether the table format can DELETE rows (Iceberg; not the test-only parquet tables)."""
    return table_format == "iceberg"


def parses_locally(engine: str, whole_file_json: bool) -> bool:
    """Whole-file JSON on an engine whose reader knows only JSON lines (Sail)."""
    return worker_parses_whole_file_json(engine) and whole_file_json


def worker_reads(engine: str, fmt: str, whole_file_json: bool, size: int | None, worker_read_max_bytes: int) -> bool:
    """Whether the worker fetches and decodes a file itself: JSON up to
    ``ICEFEED_SPARK_WORKER_READ_MAX_BYTES``, and whole-file JSON on an engine whose reader lacks it
    (Sail; capped at admission by ``ICEFEED_SPARK_LOCAL_PARSE_MAX_BYTES``)."""
    if parses_locally(engine, whole_file_json):
        return True
    return fmt == "json" and size is not None and size <= worker_read_max_bytes


def too_large(size: int | None, local_parse: bool, local_parse_max_bytes: int, max_file_bytes: int) -> str | None:
    """Why a file of ``size`` bytes is refused (``FileTooLarge``), or None. ``local_parse``: the
    worker would parse it as whole-file JSON itself (:func:`parses_locally`)."""
    if local_parse and (size or 0) > local_parse_max_bytes:
        return (
            f"whole-file JSON of {size} bytes: this engine reads JSON lines only, and the worker parses "
            f"such files itself up to ICEFEED_SPARK_LOCAL_PARSE_MAX_BYTES={local_parse_max_bytes}"
        )
    if (size or 0) > max_file_bytes:
        return f"{size} bytes is over ICEFEED_BATCH_MAX_FILE_BYTES={max_file_bytes}"
    return None
