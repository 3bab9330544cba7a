"""The seams between the pipeline and the outside world (SQS, S3, PostgreSQL, Spark).

The pipeline and the runner know these Protocols and the domain, never an adapter: every call
they make on the outside world is declared here (implemented in ``worker/adapters`` and, in
memory, in ``tests/fakes.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from worker.domain.batching import FileWork
from worker.domain.errors import IcefeedError
from worker.domain.events import FileEvent
from worker.domain.maintenance import DataFile, MaintenancePolicy, Snapshot, StoredFile
from worker.domain.outcomes import FileResult
from worker.domain.outcomes import FileState as FileState  # re-exported: adapters and fakes build it here
from worker.domain.policy import BatchPlan
from worker.domain.reading import BadRecord, TextRule
from worker.domain.schema import Change, DataType, Struct


@dataclass(frozen=True, slots=True)
class Message:
    queue_url: str
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    size: int
    etag: str


@dataclass(frozen=True, slots=True)
class Registration:
    ingestion: str
    event: FileEvent
    etag: str
    size: int | None


@dataclass(frozen=True, slots=True)
class ExpiredBatch:
    batch_id: UUID
    ingestion: str
    table: str


@dataclass(frozen=True, slots=True)
class Fence:
    """The answer to "may this batch start its append now?" (docs/guarantees.md)."""

    ok: bool
    reason: str = ""  # "lease_lost": the batch is no longer ours; "writer_busy": see ``blocking``
    blocking: UUID | None = None  # writer_busy: the batch whose append may still be running


@dataclass(frozen=True, slots=True)
class EngineWork:
    """What a batch may have running on the engine."""

    session_id: str | None  # None: never fenced, so no append of it can have started
    started_s_ago: float | None  # seconds since its fence


@dataclass(frozen=True, slots=True)
class MaintenanceTurn:
    """A table's maintenance lease, taken."""

    orphans_checked_s_ago: float | None  # None: orphans were never checked


@dataclass(frozen=True, slots=True)
class AuditBatch:
    batch_id: UUID
    table: str


class TableLock(Protocol):
    """The fleet-wide commit lock of one table, held on one database connection."""

    lost: asyncio.Event  # set once the lock's connection is found dead

    async def fence(self, batch_id: UUID, owner: str, table: str, session_id: str, ttl_s: int) -> Fence: ...
    async def held(self) -> bool: ...
    async def writer_busy(self, table: str) -> bool: ...  # a fenced append of the table may still run


class MessageSource(Protocol):
    async def receive(self, queue_url: str, max_messages: int, wait_s: int, visibility_s: int) -> list[Message]: ...
    async def delete(self, messages: list[Message]) -> list[Message]: ...
    async def change_visibility(self, entries: list[tuple[Message, int]]) -> list[Message]: ...
    async def resend(self, message: Message, delay_s: int) -> None: ...
    async def max_receive_count(self, queue_url: str) -> int | None: ...  # the DLQ's, None without one

    @property
    def calls(self) -> Mapping[str, int]: ...  # API requests by operation, for the stop log


class ObjectStore(Protocol):
    async def head(self, bucket: str, key: str) -> ObjectInfo | None: ...
    async def get(self, bucket: str, key: str, etag: str) -> bytes | None: ...
    async def write(self, bucket: str, key: str, body: bytes) -> None: ...  # PUT (overwrites)


class Ledger(Protocol):
    async def register(self, items: list[Registration]) -> list[FileState]: ...
    async def record_terminal(self, file_ids: list[int], status: str, error_class: str, message: str) -> int: ...
    async def claim(
        self, batch_id: UUID, ingestion: str, table: str, files: list[FileWork], owner: str, ttl_s: int
    ) -> list[FileWork]: ...
    async def finalize(
        self,
        batch_id: UUID,
        owner: str,
        results: list[FileResult],
        quarantines: list[Quarantine] = ...,
        version: SchemaVersion | None = None,
        replaced: list[int] = ...,
    ) -> bool: ...
    async def approved_signatures(self, table: str) -> dict[str, str]: ...
    async def replace_plan(self, file_ids: list[int]) -> tuple[set[int], set[int]]: ...
    async def table_hints(self, table: str) -> dict[str, str]: ...
    async def key_sequencers(self, keys: list[tuple[str, str]]) -> list[tuple[str, str, str, str]]: ...
    async def note_dead_letter(self, file_ids: list[int], receives: int) -> None: ...
    async def latest_schema(self, table: str) -> dict[str, Any] | None: ...
    async def abort(
        self, batch_id: UUID, owner: str, error_class: str, message: str, results: list[FileResult]
    ) -> bool: ...
    async def states(self, file_ids: list[int]) -> list[FileState]: ...
    async def extend(self, batch_ids: list[UUID], owner: str, ttl_s: int) -> set[UUID]: ...
    async def expire(self, batch_ids: list[UUID], owner: str, grace_s: int) -> None: ...
    async def take_expired(
        self, owner: str, ttl_s: int, grace_s: int, limit: int, exclude: list[UUID] = ...
    ) -> list[ExpiredBatch]: ...
    async def batch_files(self, batch_id: UUID) -> list[FileWork]: ...
    async def reject_message(self, message: Message, reason: str) -> None: ...
    def table_lock(self, table: str, timeout_s: float) -> AbstractAsyncContextManager[TableLock]: ...
    async def engine_work(self, batch_id: UUID) -> EngineWork: ...
    async def audit_candidates(self, delay_s: float, limit: int) -> list[AuditBatch]: ...
    async def mark_audited(self, batch_id: UUID, rows_removed: int | None) -> None: ...


@dataclass(frozen=True, slots=True)
class Reader:
    """How to read a file of one ingestion: Spark data source format, options, type hints."""

    format: str
    options: dict[str, str]
    hints: dict[str, DataType] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WriteRequest:
    batch_id: UUID
    table: str
    location: str
    readers: dict[str, Reader]  # by ingestion name
    files: list[FileWork]
    output_files: int
    replace: frozenset[int] = frozenset()  # file ids whose key's older rows are deleted after the append
    # Files the worker fetched and decoded itself (adapters/local_read.py): a Decoded, or the
    # DataError decoding raised. The engine reads the others.
    decoded: dict[int, Any] = field(default_factory=dict)
    session_id: str = ""  # the engine session opened for this write ("" = the sink's shared one)
    # Asked (from the writing thread) right before the append is sent: False when this worker has
    # not vouched for its lease recently (it was paused): the append must not start.
    may_append: Callable[[], bool] | None = None


@dataclass(frozen=True, slots=True)
class Inference:
    """What reading a batch's files told (``TableSink.infer``): the table's data columns before
    the batch (None: no table yet), each readable file's schema, and the files that could not be
    parsed (their error, permanent)."""

    table: Struct | None
    schemas: dict[int, Struct]
    unreadable: dict[int, IcefeedError] = field(default_factory=dict)
    local: frozenset[int] = frozenset()  # files the worker read (so they existed): no HEAD for zero rows


@dataclass(frozen=True, slots=True)
class Quarantine:
    """A file parked by its schema, and the proposal it opens or joins."""

    file_id: int
    table: str
    ingestion: str
    policy: str
    signature: str
    table_schema: dict[str, Any] | None
    incoming_schema: dict[str, Any]
    changes: list[dict[str, Any]]
    reason: str


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    table: str
    schema: dict[str, Any]
    changes: list[dict[str, Any]]
    ingestion: str
    first_file: str
    batch_id: UUID


def change_json(change: Change) -> dict[str, Any]:
    return {
        "kind": str(change.kind),
        "path": change.path,
        "table_type": change.table_type,
        "incoming_type": change.incoming_type,
        "breaking": change.breaking,
        "requires_table_change": change.requires_table_change,
        "text": str(change),
    }


class OpenedFile(Protocol):
    """A worker-read file's text, inflated and within the decode limits, not parsed yet."""

    @property
    def size(self) -> int: ...  # bytes of text
    @property
    def values(self) -> int: ...  # an upper estimate of its JSON values
    # DataError if it is not valid JSON objects (with a quarantining rule: too many bad records)
    def parse(self, whole_file: bool, rule: TextRule | None = None) -> DecodedFile: ...


class DecodedFile(Protocol):
    """A worker-read file decoded (what ``WriteRequest.decoded`` carries to the sink)."""

    @property
    def rows(self) -> int: ...
    @property
    def nbytes(self) -> int: ...  # bytes its decoded columns hold
    @property
    def bad(self) -> tuple[BadRecord, ...]: ...  # records left out (a quarantining route's)


class FileDecoder(Protocol):
    """Decoding of the files the worker reads itself (``worker/adapters/local_read.py``). Calls
    block (the pipeline runs them in threads); limits raise ``DecodeLimit``, bad data ``DataError``."""

    def inflate_room(self, payload: bytes, key: str) -> int: ...
    def open(self, payload: bytes, key: str) -> OpenedFile: ...


class TableSink(Protocol):
    async def ping(self) -> str: ...  # a round trip to the engine (opens its session); its version
    async def open_session(self, session_id: str, table: str) -> None: ...  # the session of one write to table
    async def stop(
        self, session_id: str, table: str
    ) -> bool: ...  # True: the engine confirmed the session's work stopped
    # A write: infer, then the caller plans (plan_batch), then append, always (it releases the session).
    async def infer(self, request: WriteRequest) -> Inference: ...
    async def append(self, request: WriteRequest, plan: BatchPlan) -> dict[str, int]: ...  # rows per _source_file
    async def delete_batch_rows(self, table: str, batch_id: UUID, sources: list[str] | None = None) -> int: ...
    async def delete_replaced(self, table: str, sources: list[str], keep_batch: UUID) -> None: ...
    async def batch_counts(self, table: str, batch_id: UUID) -> dict[str, int]: ...
    async def table_schema(self, table: str) -> Struct | None: ...


# -- table maintenance (worker/maintenance.py) ---------------------------------------------------


@dataclass
class TableState:
    table: str
    location: str
    snapshots: list[Snapshot]
    keep: set[int]  # current snapshot, branch and tag heads
    files: list[DataFile]  # live data files without delete files (those are never compacted here)
    other_files: int  # live data files never compacted here: with delete files, or of a partitioned table
    manifests: int
    metadata_bytes: int
    properties: dict[str, str]
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # path → pyiceberg DataFile


@dataclass(frozen=True)
class Staged:
    """A compacted file written next to the table's data, not yet referenced by any snapshot."""

    path: str
    records: int
    size_bytes: int
    data_file: Any = field(repr=False)


class MaintenanceLedger(Protocol):
    async def maintenance_take(self, table: str, owner: str, ttl_s: int, due_s: float) -> MaintenanceTurn | None: ...
    async def maintenance_extend(self, table: str, owner: str, ttl_s: int) -> bool: ...
    async def maintenance_finish(
        self,
        table: str,
        owner: str,
        outcome: str,
        error: str | None,
        stats: dict[str, Any] | None,
        orphans_checked: bool,
        steps: list[dict[str, Any]],
    ) -> None: ...
    def table_lock(self, table: str, timeout_s: float) -> AbstractAsyncContextManager[TableLock]: ...


class TableMaintenance(Protocol):
    """Blocking calls (run them in a thread); the commits are made under the table's commit lock."""

    def state(self, table: str) -> TableState: ...
    def set_properties(self, table: str, properties: dict[str, str]) -> None: ...
    def expire(self, table: str, policy: MaintenancePolicy, now_ms: int) -> int: ...
    def stage(self, state: TableState, paths: list[str], policy: MaintenancePolicy) -> Staged: ...
    def replace(self, state: TableState, paths: list[str], staged: Staged) -> bool: ...
    def listing(self, table: str) -> list[StoredFile]: ...
    def referenced(self, table: str, cancelled: Callable[[], bool] = ...) -> set[str]: ...
    def delete(self, table: str, paths: list[str]) -> int: ...
