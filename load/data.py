"""The files the harness uploads: deterministic JSON lines with globally unique row ids, and the
uploader (a thread pool of boto3 clients) that stages a backlog or paces uploads at a rate.

Every uploaded object gets a :class:`StagedFile` recording what the table must end up holding
for it; ``put_at`` is the wall-clock time its PUT returned (the object existed from then on)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import orjson

GOOD, DRIFT, BAD = "good", "drift", "bad"


@dataclass
class StagedFile:
    phase: str
    bucket: str
    key: str
    index: int  # global file number: row ids are index * rows_per_file + j
    rows: int  # rows of the file (valid lines only, for a bad file)
    kind: str = GOOD
    put_at: float = 0.0
    rows_per_file: int = 0

    @property
    def source_file(self) -> str:
        """icefeed's ``_source_file`` lineage value (the decoded S3 URI)."""
        return f"s3://{self.bucket}/{self.key}"

    @property
    def first_id(self) -> int:
        return self.index * self.rows_per_file


class Generator:
    """Hands out file descriptions; ``render`` turns one into bytes (pure, thread-safe)."""

    def __init__(self, rows_per_file: int, drift_pct: float, bad_pct: float, seed: int) -> None:
        self.rows_per_file = rows_per_file
        self.drift_pct = drift_pct
        self.bad_pct = bad_pct
        self._rng = random.Random(seed)
        self._next = 0
        self._lock = threading.Lock()

    def make(self, phase: str, bucket: str, prefix: str, clean: bool = False, name: str | None = None) -> StagedFile:
        with self._lock:
            index = self._next
            self._next += 1
            roll = self._rng.random() * 100
        kind = GOOD
        if not clean and roll < self.bad_pct:
            kind = BAD
        elif not clean and roll < self.bad_pct + self.drift_pct:
            kind = DRIFT
        rows = self.rows_per_file - 1 if kind == BAD else self.rows_per_file
        key = f"{prefix}{name or f'{index:08d}'}.json"
        return StagedFile(phase, bucket, key, index, rows, kind, rows_per_file=self.rows_per_file)

    def render(self, f: StagedFile) -> bytes:
        lines: list[bytes] = []
        broken_at = self.rows_per_file // 2
        for j in range(self.rows_per_file):
            row_id = f.first_id + j
            if f.kind == BAD and j == broken_at:
                lines.append(b'{"id": ' + str(row_id).encode() + b', "user_id": "u')  # truncated line
                continue
            row: dict[str, Any] = {
                "id": row_id,
                "file_no": f.index,
                "event_ts": f"2026-11-{1 + row_id % 28:02d}T{row_id % 24:02d}:{row_id % 60:02d}:00Z",
                "user_id": f"u{row_id % 997}",
                "amount": (row_id % 100000) / 100 + 0.25,
                "ok": row_id % 3 != 0,
                "note": "load-harness-row-" + str(row_id % 1000).zfill(4),
            }
            if f.kind == DRIFT:
                row[f"drift_{f.index % 3}"] = f"new column {f.index % 3}"
            lines.append(orjson.dumps(row))
        return b"\n".join(lines) + b"\n"


# Columns of a clean file and their Spark types (the naive loop's table).
CLEAN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "BIGINT"),
    ("file_no", "BIGINT"),
    ("event_ts", "STRING"),
    ("user_id", "STRING"),
    ("amount", "DOUBLE"),
    ("ok", "BOOLEAN"),
    ("note", "STRING"),
)


class Uploader:
    """PUTs objects from a pool of threads, one boto3 client per thread."""

    def __init__(self, client_factory: Callable[[], Any], generator: Generator, threads: int) -> None:
        self._factory = client_factory
        self._gen = generator
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="upload")

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._factory()
        return client

    def put(self, f: StagedFile) -> StagedFile:
        self._client().put_object(Bucket=f.bucket, Key=f.key, Body=self._gen.render(f))
        f.put_at = time.time()
        return f

    def backlog(self, files: list[StagedFile], timeout_s: float, progress: Callable[[str], None]) -> float:
        """Upload every file as fast as the pool goes; returns the seconds it took."""
        start = time.monotonic()
        deadline = start + timeout_s
        futures = [self._pool.submit(self.put, f) for f in files]
        pending: set[Future[StagedFile]] = set(futures)
        last_note = start
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"staging {len(files)} files took longer than {timeout_s:.0f} s")
            done, pending = wait(pending, timeout=min(5.0, remaining))
            for fut in done:
                fut.result()  # raise upload errors at once
            if time.monotonic() - last_note >= 5 and pending:
                last_note = time.monotonic()
                uploaded = len(files) - len(pending)
                progress(f"uploaded {uploaded}/{len(files)} ({uploaded / (last_note - start):.0f} files/s)")
        return time.monotonic() - start

    def paced(
        self,
        files: Iterable[StagedFile],
        count: int,
        rate: float,
        timeout_s: float,
        progress: Callable[[str], None],
    ) -> tuple[list[StagedFile], float]:
        """Submit ``count`` uploads at ``rate`` per second (a fixed schedule; late ones go at once).
        Returns the files and the upload rate achieved."""
        start = time.monotonic()
        deadline = start + timeout_s
        futures: list[Future[StagedFile]] = []
        last_note = start
        for i, f in enumerate(files):
            if i >= count or time.monotonic() > deadline:
                break
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(self._pool.submit(self.put, f))
            if time.monotonic() - last_note >= 10:
                last_note = time.monotonic()
                progress(f"paced uploads: {i + 1}/{count} submitted at {rate:.1f} files/s")
        _, pending = wait(futures, timeout=max(1.0, deadline - time.monotonic()))
        if pending:
            raise TimeoutError(f"{len(pending)} paced uploads did not finish in time")
        staged = [fut.result() for fut in futures]
        span = max(f.put_at for f in staged) - min(f.put_at for f in staged) if len(staged) > 1 else 0.0
        achieved = (len(staged) - 1) / span if span > 0 else float(len(staged))
        return staged, achieved
