"""Who reads a file, and which files are too large to load: pure rules over settings values.

A file is read either by the worker (one GET, decoded in the process: see
``worker/adapters/local_read.py``) or by the engine (by path). These rules decide which, and
which files are refused before they are claimed (``FileTooLarge``); the pipeline and ``icefeed
preview`` both ask them, so a preview says what a batch would do. No I/O, no settings objects:
callers pass the values.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from uuid import UUID

from worker.domain.schema import DataType

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


def worker_reads(
    engine: str,
    fmt: str,
    whole_file_json: bool,
    size: int | None,
    worker_read_max_bytes: int,
    worker_decodes: bool = False,
) -> bool:
    """Whether the worker fetches and decodes a file itself: JSON up to
    ``ICEFEED_SPARK_WORKER_READ_MAX_BYTES``, whole-file JSON on an engine whose reader lacks it
    (Sail; capped at admission by ``ICEFEED_SPARK_LOCAL_PARSE_MAX_BYTES``), and every file of a
    route the worker decodes whatever the size (``worker_decodes``: bad records quarantined, or
    text that is not UTF-8; capped by the decode limits)."""
    if parses_locally(engine, whole_file_json) or worker_decodes:
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


#: Characters of a bad record's text kept with it (the rest is cut, and said so).
BAD_RECORD_TEXT_MAX = 4096
TOO_MANY_BAD_RECORDS = "TooManyBadRecords"


@dataclass(frozen=True, slots=True)
class CsvShape:
    """How a CSV route's text splits into records and fields (its reader options)."""

    header: bool = True
    delimiter: str = ","
    quote: str = '"'
    escape: str = "\\"
    infer_schema: bool = True


@dataclass(frozen=True, slots=True)
class TextRule:
    """How a route's text is decoded: its character set, and whether bad records are quarantined
    (``max_bad_fraction``: over it, the file fails as a whole) or fail the file."""

    encoding: str = "utf-8"
    quarantine: bool = False
    max_bad_fraction: float = 0.0
    hints: dict[str, DataType] = field(default_factory=dict)  # checked per record when quarantining
    csv: CsvShape | None = None  # a CSV route's text (decoded by worker/adapters/local_csv.py)


@dataclass(frozen=True, slots=True)
class BadRecord:
    """One record a quarantining route left out of the load: where it was (1-based line, byte
    offset of the line's start in the decompressed file), why, and its text (cut at
    :data:`BAD_RECORD_TEXT_MAX` characters, ``truncated`` then)."""

    line: int
    offset: int
    error: str
    text: str
    truncated: bool = False

    @classmethod
    def of(cls, line: int, offset: int, error: str, raw: bytes) -> BadRecord:
        text = raw.decode("utf-8", "backslashreplace")
        return cls(line, offset, error, text[:BAD_RECORD_TEXT_MAX], len(text) > BAD_RECORD_TEXT_MAX)


def too_many_bad(bad: int, good: int, max_fraction: float) -> str | None:
    """Why a file with ``bad`` bad and ``good`` good records fails as a whole, or None: more than
    ``max_fraction`` of its records are bad (a binary file is not one good record and 4000 bad)."""
    total = bad + good
    if bad and bad / total > max_fraction:
        return f"{bad} of {total} records are bad ({bad / total:.0%}), over max_bad_fraction={max_fraction:g}"
    return None


def bad_records_object(location: str, table: str, file_id: int) -> tuple[str, str]:
    """(bucket, key) of the object holding one file's bad records: one per file version (the
    ledger's file id), so a retried or recovered batch overwrites it, never adds a second copy."""
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    return bucket, "/".join(p for p in (prefix, table, f"file-{file_id}.jsonl") if p)


def bad_records_body(records: tuple[BadRecord, ...], batch_id: UUID, source_file: str, etag: str) -> bytes:
    """The object's JSON lines: each bad record with its file, the file's eTag and the batch that
    wrote it (the batch id, as on the rows)."""
    head = {"source_file": source_file, "etag": etag, "batch_id": str(batch_id)}
    return b"".join(json.dumps({**head, **asdict(r)}, ensure_ascii=False).encode() + b"\n" for r in records)


def bad_records_of(body: bytes, batch_id: UUID) -> int | None:
    """How many bad records ``body`` (a bad-records object) holds for batch ``batch_id``, or None
    when another batch wrote it (recovery finalizes a committed batch from it)."""
    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
    if lines and all(line.get("batch_id") == str(batch_id) for line in lines):
        return len(lines)
    return None
