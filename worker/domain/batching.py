"""Grouping claimed files into batches per destination table (pure: time is passed in)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class FileWork:
    """A registered, PENDING file waiting for a batch."""

    file_id: int
    ingestion: str
    bucket: str
    key: str
    etag: str
    size: int
    event_time: datetime | None = None

    @property
    def source_file(self) -> str:
        """The value of the ``_source_file`` lineage column: the decoded S3 URI."""
        return source_uri(self.bucket, self.key)


def source_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_files: int
    max_bytes: int
    max_wait_s: float


@dataclass
class BatchBuffer:
    """Files waiting for one table. A batch is ready when it is full (files or bytes) or when the
    oldest file has waited ``max_wait_s``. Duplicate file ids (two events, one file) are merged."""

    limits: BatchLimits
    _items: dict[int, FileWork] = field(default_factory=dict)
    _bytes: int = 0
    _since: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, work: FileWork, now: float) -> None:
        if work.file_id in self._items:
            return
        self._items[work.file_id] = work
        self._bytes += work.size
        if self._since is None:
            self._since = now

    def full(self) -> bool:
        return len(self._items) >= self.limits.max_files or self._bytes >= self.limits.max_bytes

    def deadline(self) -> float | None:
        return None if self._since is None else self._since + self.limits.max_wait_s

    def ready(self, now: float) -> bool:
        deadline = self.deadline()
        return bool(self._items) and (self.full() or (deadline is not None and now >= deadline))

    def take(self, now: float) -> list[FileWork]:
        """Remove and return one batch (oldest first, within the limits). Two versions of one key
        never share a batch: rows are attributed to files by ``_source_file``."""
        batch: list[FileWork] = []
        sources: set[str] = set()
        size = 0
        for file_id in list(self._items):
            work = self._items[file_id]
            if batch and (len(batch) >= self.limits.max_files or size + work.size > self.limits.max_bytes):
                break
            if work.source_file in sources:
                continue
            sources.add(work.source_file)
            batch.append(work)
            size += work.size
            del self._items[file_id]
        self._bytes -= size
        self._since = now if self._items else None
        return batch

    def drain(self) -> list[FileWork]:
        items = list(self._items.values())
        self._items.clear()
        self._bytes = 0
        self._since = None
        return items


def halves(files: list[FileWork]) -> tuple[list[FileWork], list[FileWork]]:
    """Split a failed batch in two to isolate the bad file(s)."""
    middle = len(files) // 2
    return files[:middle], files[middle:]


def upload_order(f: FileWork) -> tuple[float, int]:
    """Files of a batch are decided (schema evolution, quarantine) in the order they were uploaded
    (S3 event time), not in the order their notifications happened to arrive; ties by file id."""
    return (f.event_time.timestamp() if f.event_time is not None else float("inf"), f.file_id)


def newest_per_key(files: list[FileWork]) -> tuple[list[FileWork], list[FileWork]]:
    """(the newest offered version of each key, in the given order; the older ones). Two versions
    of one key never share a batch: the older waits until the newer is settled, and is then loaded
    (``on_overwrite = append``) or found superseded (``replace``)."""
    newest: dict[tuple[str, str], FileWork] = {}
    for f in files:
        best = newest.get((f.bucket, f.key))
        if best is None or upload_order(f) > upload_order(best):
            newest[(f.bucket, f.key)] = f
    chosen = {id(f) for f in newest.values()}
    return [f for f in files if id(f) in chosen], [f for f in files if id(f) not in chosen]
