"""In-memory fakes of the ports (worker/ports.py), with the semantics of the real servers that
matter to the exactly-once protocol: PostgreSQL (claims, leases, advisory locks held by a
connection, the writer slot), SQS (visibility, receive counts, redrive to a DLQ), S3 (versions
with etags, If-Match reads) and a Spark Connect engine (atomic appends that may outlive their
client, sessions that can be stopped).

Every fake is single-threaded asyncio code: a method that does not await is one atomic
transaction. Time is the running loop's clock (``loop.time()``), so the same fakes serve the
hand-written interleaving tests (real loop) and the deterministic simulator (virtual loop).
Blocking hooks for interleaving tests: ``FakeEngine.gates["before_commit"]`` (an
``asyncio.Event`` the test sets) holds every append just before it commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from worker.adapters.local_read import decode_json
from worker.domain.batching import FileWork, source_uri
from worker.domain.errors import BatchError, DataError, IcefeedError, TransientError
from worker.domain.events import sequencer_newer
from worker.domain.outcomes import CLAIMED, LOADED, PENDING, FileResult
from worker.domain.policy import BatchPlan
from worker.domain.schema import Struct
from worker.ports import (
    ExpiredBatch,
    FileState,
    Inference,
    MaintenanceTurn,
    Message,
    ObjectInfo,
    Quarantine,
    Registration,
    SchemaVersion,
    WriteRequest,
)
from worker.routes import parse_routes
from worker.settings import Settings, load_settings

try:  # the fence's port types (worker/ports.py after the fence); shapes per the fence design
    from worker.ports import AuditBatch, EngineWork, Fence
except ImportError:  # pragma: no cover - code before the fence

    @dataclass(frozen=True, slots=True)
    class Fence:  # type: ignore[no-redef]
        ok: bool
        reason: str = ""
        blocking: UUID | None = None

    @dataclass(frozen=True, slots=True)
    class EngineWork:  # type: ignore[no-redef]
        session_id: str | None
        started_s_ago: float | None

    @dataclass(frozen=True, slots=True)
    class AuditBatch:  # type: ignore[no-redef]
        batch_id: UUID
        table: str


#: Two routes over the fakes: ``ev/`` appends to cat.db.events, ``rp/`` replaces in cat.db.latest
#: (the simulator's scenario and the hand-written interleaving tests).
ROUTES = parse_routes(
    """
[[ingestion]]
name = "ev"
bucket = "landing"
prefix = "ev/"
suffix = ".json"
format = "json"
table = "cat.db.events"
location = "s3://wh/events"

[[ingestion]]
name = "rp"
bucket = "landing"
prefix = "rp/"
suffix = ".json"
format = "json"
table = "cat.db.latest"
location = "s3://wh/latest"
on_overwrite = "replace"
"""
)

REPLACED = "REPLACED"
#: The ports of the fence (worker/ports.py): ``write`` no longer deletes replaced rows (the pipeline
#: calls ``delete_replaced`` after the append).
FENCED_PORTS = "session_id" in WriteRequest.__dataclass_fields__
WRITING, COMMITTED, ABORTED = "WRITING", "COMMITTED", "ABORTED"


def loop_clock() -> float:
    return asyncio.get_running_loop().time()


# --- PostgreSQL ---------------------------------------------------------------------------------


@dataclass
class FileRow:
    id: int
    ingestion: str
    bucket: str
    key: str
    etag: str
    sequencer: str | None
    size: int | None
    event_time: datetime | None
    status: str = PENDING
    batch_id: UUID | None = None
    rows: int | None = None
    error_class: str | None = None
    error_message: str | None = None
    attempts: int = 0
    events_seen: int = 1
    replaced_by: int | None = None
    proposal: int | None = None
    rows_rejected: int | None = None
    bad_records: str | None = None


@dataclass
class BatchRow:
    id: UUID
    ingestion: str
    table: str
    status: str
    owner: str | None
    expires: float | None
    files: int
    rows: int | None = None
    error_class: str | None = None
    error_message: str | None = None
    recovered_by: str | None = None
    engine_session: str | None = None
    write_started_at: float | None = None
    finished_at: float | None = None
    audited: bool = False
    rows_removed: int | None = None


@dataclass(eq=False)
class FakeConnection:
    """A PostgreSQL connection: killing it (failover, idle reaper, a dead worker) drops its
    session advisory locks."""

    label: str
    alive: bool = True


class FakeTableLock:
    """The table's advisory lock, held by one connection; ``lost`` is set when it dies."""

    def __init__(self, ledger: FakeLedger, table: str, conn: FakeConnection) -> None:
        self.ledger = ledger
        self.table = table
        self.conn = conn
        self.lost = asyncio.Event()

    def _check(self) -> None:
        if not self.conn.alive:
            self.lost.set()
            raise TransientError("PostgreSQL: lock connection lost", error_class="PgConnectionLost")

    async def fence(self, batch_id: UUID, owner: str, table: str, session_id: str, ttl_s: int) -> Fence:
        self._check()
        return self.ledger.fence_now(batch_id, owner, table, session_id, ttl_s)

    async def held(self) -> bool:
        """A round trip on the lock's connection (False, and ``lost`` set, if it died)."""
        if not self.conn.alive:
            self.lost.set()
            return False
        return self.ledger.locks.get(self.table) is self

    async def writer_busy(self, table: str) -> bool:
        self._check()
        holder = self.ledger.writers.get(table)
        b = self.ledger.batches.get(holder) if holder is not None else None
        return b is not None and b.status == WRITING and b.write_started_at is not None


@dataclass
class FakeLedger:
    """The ledger with PostgreSQL semantics. ``serialize_keys``: claim skips a file whose key has
    another CLAIMED version (the fenced claim); False mirrors the claim before the fence."""

    clock: Callable[[], float] = loop_clock
    serialize_keys: bool = True
    lost_notice_s: float = 0.0  # how long until a lock's holder notices its connection died
    files: dict[int, FileRow] = field(default_factory=dict)
    batches: dict[UUID, BatchRow] = field(default_factory=dict)
    identities: dict[tuple[str, str, str], int] = field(default_factory=dict)
    locks: dict[str, FakeTableLock] = field(default_factory=dict)
    writers: dict[str, UUID] = field(default_factory=dict)
    rejected: list[tuple[str, str, str]] = field(default_factory=list)
    schema_versions: list[SchemaVersion] = field(default_factory=list)
    proposals: dict[str, int] = field(default_factory=dict)
    on_change: Callable[[str, Any], None] | None = None  # (what, detail): tracing hook
    # table maintenance: table → {"owner", "expires", "started", "orphans_at", "finished": [...]}
    maintenance: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _note(self, what: str, detail: Any) -> None:
        if self.on_change is not None:
            self.on_change(what, detail)

    # -- files --------------------------------------------------------------------------------

    def _lease_left(self, row: FileRow) -> float | None:
        b = self.batches.get(row.batch_id) if row.batch_id else None
        if b is None or b.status != WRITING or b.expires is None:
            return None
        return b.expires - self.clock()

    def _state(self, row: FileRow) -> FileState:
        lease_left, blocked = self._lease_left(row), False
        if row.status == PENDING:  # another version of its key in an open batch: it waits for that one
            others = [
                self._lease_left(r)
                for r in self.files.values()
                if r.bucket == row.bucket and r.key == row.key and r.id != row.id and r.status == CLAIMED
            ]
            open_leases = [left for left in others if left is not None]
            if open_leases:
                lease_left, blocked = max(open_leases), True
        return FileState(
            row.id,
            row.bucket,
            row.key,
            row.etag,
            row.status,
            row.batch_id,
            row.error_message,
            lease_left,
            blocked,
            row.error_class,
            row.attempts,
        )

    async def register(self, items: list[Registration]) -> list[FileState]:
        out: list[FileState] = []
        seen: set[int] = set()
        for item in items:
            ev = item.event
            ident = (ev.bucket, ev.key, item.etag)
            file_id = self.identities.get(ident)
            if file_id is None:
                file_id = len(self.files) + 1
                self.identities[ident] = file_id
                self.files[file_id] = FileRow(
                    file_id, item.ingestion, ev.bucket, ev.key, item.etag, ev.sequencer, item.size, ev.event_time
                )
                self._note("registered", self.files[file_id])
            elif file_id not in seen:
                self.files[file_id].events_seen += 1
            if file_id not in seen:
                seen.add(file_id)
                out.append(self._state(self.files[file_id]))
        return out

    async def record_terminal(self, file_ids: list[int], status: str, error_class: str, message: str) -> int:
        moved = 0
        for file_id in file_ids:
            row = self.files.get(file_id)
            if row is not None and row.status == PENDING:
                row.status, row.error_class, row.error_message = status, error_class, message
                moved += 1
                self._note("terminal", row)
        return moved

    async def states(self, file_ids: list[int]) -> list[FileState]:
        return [self._state(self.files[i]) for i in dict.fromkeys(file_ids) if i in self.files]

    async def key_sequencers(self, keys: list[tuple[str, str]]) -> list[tuple[str, str, str, str]]:
        wanted = set(keys)
        return [
            (r.bucket, r.key, r.etag, r.sequencer)
            for r in self.files.values()
            if (r.bucket, r.key) in wanted and r.sequencer
        ]

    async def note_dead_letter(self, file_ids: list[int], receives: int) -> None:
        for file_id in file_ids:
            row = self.files.get(file_id)
            if row is not None and row.status in (PENDING, CLAIMED):
                row.error_class = "DeadLettered"
                row.error_message = f"message moved to the dead-letter queue after {receives} receives"

    async def reject_message(self, message: Message, reason: str) -> None:
        self.rejected.append((message.queue_url, message.message_id, reason))

    # -- batches --------------------------------------------------------------------------------

    def _other_version_claimed(self, row: FileRow) -> bool:
        return any(
            r.bucket == row.bucket and r.key == row.key and r.id != row.id and r.status == CLAIMED
            for r in self.files.values()
        )

    async def claim(
        self, batch_id: UUID, ingestion: str, table: str, files: list[FileWork], owner: str, ttl_s: int
    ) -> list[FileWork]:
        claimed: list[FileWork] = []
        for f in sorted(files, key=lambda f: f.file_id):
            row = self.files.get(f.file_id)
            if row is None or row.status != PENDING:
                continue
            if self.serialize_keys and self._other_version_claimed(row):
                continue
            row.status, row.batch_id, row.attempts = CLAIMED, batch_id, row.attempts + 1
            row.error_class = row.error_message = None
            claimed.append(f)
        if claimed:
            self.batches[batch_id] = BatchRow(
                batch_id, ingestion, table, WRITING, owner, self.clock() + ttl_s, len(claimed)
            )
            self._note("claimed", (batch_id, owner, [f.file_id for f in claimed]))
        return claimed

    def _owned(self, batch_id: UUID, owner: str) -> BatchRow | None:
        b = self.batches.get(batch_id)
        return b if b is not None and b.status == WRITING and b.owner == owner else None

    def _finish_files(self, batch_id: UUID, results: list[FileResult], with_rows: bool) -> None:
        for r in results:
            row = self.files.get(r.file_id)
            if row is None or row.batch_id != batch_id or row.status != CLAIMED:
                continue
            row.status, row.error_class, row.error_message = r.status, r.error_class, r.error_message
            if with_rows:
                row.rows, row.rows_rejected, row.bad_records = r.rows, r.rows_rejected, r.bad_records

    async def finalize(
        self,
        batch_id: UUID,
        owner: str,
        results: list[FileResult],
        quarantines: list[Quarantine] | None = None,
        version: SchemaVersion | None = None,
        replaced: list[int] | None = None,
    ) -> bool:
        b = self._owned(batch_id, owner)
        if b is None:
            return False
        b.status, b.rows, b.finished_at = COMMITTED, sum(r.rows or 0 for r in results), self.clock()
        b.owner = b.expires = None
        self._finish_files(batch_id, results, with_rows=True)
        for q in quarantines or []:
            self.files[q.file_id].proposal = self.proposals.setdefault(q.signature, len(self.proposals) + 1)
        for file_id in replaced or []:
            new = self.files[file_id]
            for old in self.files.values():
                if old.bucket == new.bucket and old.key == new.key and old.id != new.id and old.status == LOADED:
                    old.status, old.replaced_by, old.error_class = REPLACED, new.id, "Replaced"
        if version is not None:
            self.schema_versions.append(version)
        self._note("committed", (batch_id, owner, results))
        return True

    async def abort(
        self, batch_id: UUID, owner: str, error_class: str, message: str, results: list[FileResult]
    ) -> bool:
        b = self._owned(batch_id, owner)
        if b is None:
            return False
        b.status, b.error_class, b.error_message, b.finished_at = ABORTED, error_class, message, self.clock()
        b.owner = b.expires = None
        self._finish_files(batch_id, results, with_rows=False)
        self._note("aborted", (batch_id, owner, error_class))
        return True

    async def extend(self, batch_ids: list[UUID], owner: str, ttl_s: int) -> set[UUID]:
        kept: set[UUID] = set()
        for batch_id in batch_ids:
            b = self._owned(batch_id, owner)
            if b is not None:
                b.expires = self.clock() + ttl_s
                if b.write_started_at is not None:  # the writer vouches for its append (ledger.sql)
                    b.write_started_at = self.clock()
                kept.add(batch_id)
        return kept

    async def expire(self, batch_ids: list[UUID], owner: str, grace_s: int) -> None:
        for batch_id in batch_ids:
            b = self._owned(batch_id, owner)
            if b is not None:
                b.expires = self.clock() - grace_s

    async def take_expired(
        self, owner: str, ttl_s: int, grace_s: int, limit: int, exclude: list[UUID] | None = None
    ) -> list[ExpiredBatch]:
        now = self.clock()
        skip = set(exclude or ())
        due = [
            b
            for b in self.batches.values()
            if b.status == WRITING and b.expires is not None and b.expires < now - grace_s and b.id not in skip
        ]
        due.sort(key=lambda b: (b.expires or 0.0, b.id.int))
        out = []
        for b in due[:limit]:
            self._note("taken_over", (b.id, b.owner, owner))
            b.owner, b.expires, b.recovered_by = owner, now + ttl_s, owner
            out.append(ExpiredBatch(b.id, b.ingestion, b.table))
        return out

    async def batch_files(self, batch_id: UUID) -> list[FileWork]:
        rows = sorted((r for r in self.files.values() if r.batch_id == batch_id and r.status == CLAIMED), key=_id)
        return [FileWork(r.id, r.ingestion, r.bucket, r.key, r.etag, r.size or 0, r.event_time) for r in rows]

    # -- schema (minimal) ---------------------------------------------------------------------

    async def approved_signatures(self, table: str) -> dict[str, str]:
        return {}

    async def table_hints(self, table: str) -> dict[str, str]:
        return {}

    async def latest_schema(self, table: str) -> dict[str, Any] | None:
        found = [v.schema for v in self.schema_versions if v.table == table]
        return found[-1] if found else None

    # -- replace --------------------------------------------------------------------------------

    async def replaced_candidates(self, file_ids: list[int]) -> set[int]:
        return {
            i
            for i in file_ids
            if any(
                p.bucket == self.files[i].bucket and p.key == self.files[i].key and p.id != i and p.status == LOADED
                for p in self.files.values()
            )
        }

    @staticmethod
    def newer(a: FileRow, b: FileRow) -> bool:
        """Whether version ``a`` of a key is newer than ``b``: S3 sequencer when both have one,
        else event time, else file id."""
        if a.sequencer and b.sequencer:
            return sequencer_newer(a.sequencer, b.sequencer)
        if a.event_time is not None and b.event_time is not None and a.event_time != b.event_time:
            return a.event_time > b.event_time
        return a.id > b.id

    async def replace_plan(self, file_ids: list[int]) -> tuple[set[int], set[int]]:
        """(files whose key has an OLDER loaded version, files whose key has a NEWER loaded or
        replaced version)."""
        replace: set[int] = set()
        superseded: set[int] = set()
        for i in file_ids:
            f = self.files[i]
            for p in self.files.values():
                if p.bucket != f.bucket or p.key != f.key or p.id == i:
                    continue
                newer = self.newer(p, f)
                if p.status == LOADED and not newer:
                    replace.add(i)
                if p.status in (LOADED, REPLACED) and newer:
                    superseded.add(i)
        return replace, superseded

    # -- table maintenance's lease ----------------------------------------------------------------

    async def maintenance_take(self, table: str, owner: str, ttl_s: int, due_s: float) -> MaintenanceTurn | None:
        now = self.clock()
        row = self.maintenance.setdefault(table, {"owner": None, "expires": 0.0, "started": None, "orphans_at": None})
        free = row["owner"] in (None, owner) or row["expires"] < now
        due = row["started"] is None or row["started"] <= now - due_s
        if not (free and due):
            return None
        row.update(owner=owner, expires=now + ttl_s, started=now)
        self._note("maintenance_taken", (table, owner))
        return MaintenanceTurn(None if row["orphans_at"] is None else now - row["orphans_at"])

    async def maintenance_extend(self, table: str, owner: str, ttl_s: int) -> bool:
        row = self.maintenance.get(table)
        if row is None or row["owner"] != owner:
            self._note("maintenance_lease_lost", (table, owner))
            return False
        row["expires"] = self.clock() + ttl_s
        return True

    async def maintenance_finish(
        self,
        table: str,
        owner: str,
        outcome: str,
        error: str | None,
        stats: dict[str, Any] | None,
        orphans_checked: bool,
        steps: list[dict[str, Any]],
    ) -> None:
        row = self.maintenance.get(table)
        if row is None or row["owner"] != owner:
            return
        row.update(owner=None, expires=0.0, outcome=outcome, error=error, stats=stats, steps=steps)
        if orphans_checked:
            row["orphans_at"] = self.clock()

    # -- the table lock and the fence -------------------------------------------------------------

    @asynccontextmanager
    async def table_lock(self, table: str, timeout_s: float) -> AsyncIterator[FakeTableLock]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        delay = 0.02
        while table in self.locks:
            if loop.time() >= deadline:
                raise TransientError(
                    f"table {table} is busy: another writer holds its commit lock", error_class="TableBusy"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
        lock = FakeTableLock(self, table, FakeConnection(f"lock:{table}"))
        self.locks[table] = lock
        self._note("lock_taken", table)
        try:
            yield lock
        finally:
            if self.locks.get(table) is lock and lock.conn.alive:
                del self.locks[table]
                self._note("lock_released", table)

    def kill_connection(self, lock: FakeTableLock) -> None:
        """The lock's backend is gone (pg_terminate_backend, failover): the lock is free at once;
        its holder notices (``lost``) after ``lost_notice_s``, or at its next round trip on it."""
        lock.conn.alive = False
        if self.locks.get(lock.table) is lock:
            del self.locks[lock.table]
        if self.lost_notice_s <= 0:
            lock.lost.set()
        else:
            asyncio.get_running_loop().call_later(self.lost_notice_s, lock.lost.set)
        self._note("lock_lost", lock.table)

    def fence_now(self, batch_id: UUID, owner: str, table: str, session_id: str, ttl_s: int) -> Fence:
        b = self._owned(batch_id, owner)
        if b is None:
            return Fence(False, "lease_lost")
        previous = self.writers.get(table)
        if previous is not None and previous != batch_id:
            p = self.batches[previous]
            if p.status == WRITING and p.write_started_at is not None:  # its append may be running
                return Fence(False, "writer_busy", previous)
        self.writers[table] = batch_id
        now = self.clock()
        b.expires, b.engine_session, b.write_started_at = now + ttl_s, session_id, now
        self._note("fenced", (batch_id, owner, session_id))
        return Fence(True)

    async def engine_work(self, batch_id: UUID) -> EngineWork:
        b = self.batches[batch_id]
        if b.write_started_at is None:
            return EngineWork(None, None)
        return EngineWork(b.engine_session, self.clock() - b.write_started_at)

    async def audit_candidates(self, delay_s: float, limit: int) -> list[AuditBatch]:
        now = self.clock()
        due = [
            b
            for b in self.batches.values()
            if b.status == ABORTED
            and b.write_started_at is not None
            and not b.audited
            and b.finished_at is not None
            and b.finished_at < now - delay_s
        ]
        due.sort(key=lambda b: (b.finished_at or 0.0, b.id.int))
        for b in due[:limit]:  # claimed for this sweeper
            b.audited = True
        return [AuditBatch(b.id, b.table) for b in due[:limit]]

    async def mark_audited(self, batch_id: UUID, rows_removed: int | None) -> None:
        """``rows_removed`` None: the audit could not run; a later sweep tries again."""
        b = self.batches[batch_id]
        b.rows_removed = (b.rows_removed or 0) + (rows_removed or 0)
        if rows_removed is None:
            b.audited = False


def _id(row: FileRow) -> int:
    return row.id


# --- SQS ----------------------------------------------------------------------------------------


@dataclass(eq=False)
class QueuedMessage:
    message_id: str
    body: str
    sent_at: float
    visible_at: float
    receive_count: int = 0
    handle: str = ""
    deleted: bool = False


class FakeQueue:
    """SQS standard queues: visibility timeouts, receive counts, redrive to a DLQ after
    ``max_receives`` receives, at-least-once (``redeliver``) and unordered delivery (``rng``)."""

    def __init__(
        self,
        clock: Callable[[], float] = loop_clock,
        rng: random.Random | None = None,
        max_receives: int | None = 5,
        epoch: datetime | None = None,
    ) -> None:
        self.clock = clock
        self.rng = rng
        self.max_receives = max_receives
        self.epoch = epoch or datetime(2026, 1, 1, tzinfo=UTC)
        self.queues: dict[str, dict[str, QueuedMessage]] = {}
        self.dlq: dict[str, list[QueuedMessage]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._count = 0
        self.calls: Counter[str] = Counter()  # the port's API-call counts: not counted here
        self.on_delete: Callable[[str, QueuedMessage], None] | None = None
        self.on_resend: Callable[[str, str], None] | None = None
        self.on_dead_letter: Callable[[str, QueuedMessage], None] | None = None

    def send(self, queue_url: str, body: str, delay_s: float = 0.0) -> str:
        self._count += 1
        message_id = f"m{self._count}"
        now = self.clock()
        self.queues.setdefault(queue_url, {})[message_id] = QueuedMessage(message_id, body, now, now + delay_s)
        self._wake()
        return message_id

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def resend(self, message: Message, delay_s: int) -> None:
        """SendMessage of the same body (a fresh message); ``on_resend(old_id, new_id)`` is told."""
        new_id = self.send(message.queue_url, message.body, float(min(delay_s, 900)))
        if self.on_resend is not None:
            self.on_resend(message.message_id, new_id)

    def redeliver(self, queue_url: str, message_id: str) -> None:
        """At-least-once: a message in flight becomes visible again (a second delivery)."""
        m = self.queues.get(queue_url, {}).get(message_id)
        if m is not None and not m.deleted:
            m.visible_at = self.clock()
            self._wake()

    def pending(self, queue_url: str) -> list[QueuedMessage]:
        return [m for m in self.queues.get(queue_url, {}).values() if not m.deleted]

    def _visible(self, queue_url: str) -> list[QueuedMessage]:
        now = self.clock()
        return [m for m in self.pending(queue_url) if m.visible_at <= now]

    async def receive(self, queue_url: str, max_messages: int, wait_s: int, visibility_s: int) -> list[Message]:
        loop = asyncio.get_running_loop()
        deadline = self.clock() + wait_s
        while True:
            visible = self._visible(queue_url)
            if self.rng is not None:
                self.rng.shuffle(visible)
            out = []
            for m in visible:
                if len(out) >= max_messages:
                    break
                m.receive_count += 1
                if self.max_receives is not None and m.receive_count > self.max_receives:
                    m.deleted = True
                    self.dlq.setdefault(queue_url, []).append(m)
                    if self.on_dead_letter is not None:
                        self.on_dead_letter(queue_url, m)
                    continue
                m.handle = f"{m.message_id}#{m.receive_count}"
                m.visible_at = self.clock() + visibility_s
                sent = self.epoch.timestamp() + m.sent_at
                out.append(
                    Message(
                        queue_url,
                        m.message_id,
                        m.handle,
                        m.body,
                        m.receive_count,
                        datetime.fromtimestamp(sent, tz=UTC),
                    )
                )
            now = self.clock()
            if out or now >= deadline:
                return out
            upcoming = [m.visible_at for m in self.pending(queue_url) if m.visible_at > now]
            timeout = min([deadline, *upcoming]) - now
            waiter = loop.create_future()
            self._waiters.append(waiter)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, timeout)

    def _current(self, message: Message) -> QueuedMessage | None:
        m = self.queues.get(message.queue_url, {}).get(message.message_id)
        if m is None or m.deleted or m.handle != message.receipt_handle:
            return None
        return m

    async def delete(self, messages: list[Message]) -> list[Message]:
        failed = []
        for message in messages:
            m = self._current(message)
            if m is None:
                failed.append(message)
                continue
            m.deleted = True
            if self.on_delete is not None:
                self.on_delete(message.queue_url, m)
        return failed

    async def change_visibility(self, entries: list[tuple[Message, int]]) -> list[Message]:
        failed = []
        for message, delay in entries:
            m = self._current(message)
            if m is None:
                failed.append(message)
                continue
            m.visible_at = self.clock() + delay
        self._wake()
        return failed

    async def max_receive_count(self, queue_url: str) -> int | None:
        return self.max_receives


# --- S3 -----------------------------------------------------------------------------------------


class FakeStore:
    """Objects with versions: ``put`` overwrites (a new etag), ``delete`` removes; ``get`` is an
    If-Match read of one version."""

    def __init__(self) -> None:
        self.current: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.versions: dict[tuple[str, str, str], bytes] = {}
        self._count = 0

    def put(self, bucket: str, key: str, body: bytes) -> str:
        self._count += 1
        etag = hashlib.md5(body + str(self._count).encode(), usedforsecurity=False).hexdigest()[:12]
        self.current[(bucket, key)] = (etag, body)
        self.versions[(bucket, key, etag)] = body
        return etag

    def delete(self, bucket: str, key: str) -> None:
        self.current.pop((bucket, key), None)

    async def write(self, bucket: str, key: str, body: bytes) -> None:
        self.put(bucket, key, body)

    def read(self, bucket: str, key: str) -> bytes | None:
        """What an engine reading by path sees: the CURRENT version, whatever was claimed."""
        found = self.current.get((bucket, key))
        return None if found is None else found[1]

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        found = self.current.get((bucket, key))
        return None if found is None else ObjectInfo(len(found[1]), found[0])

    async def get(self, bucket: str, key: str, etag: str) -> bytes | None:
        found = self.current.get((bucket, key))
        return found[1] if found is not None and found[0] == etag else None


# --- the engine -----------------------------------------------------------------------------------


@dataclass
class FakeTable:
    schema: Struct | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    version: int = 0


@dataclass(eq=False)
class EngineOp:
    """One write on the engine side: it runs on even when its client is gone."""

    request: WriteRequest
    session: str
    client: str
    started: float
    number: int
    fault: WriteFault
    plan: BatchPlan
    read: FakeRead
    appending_since: float | None = None
    committed: bool = False
    killed: str = ""
    detached_at: float | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class FakeRead:
    """What ``FakeEngine.infer`` read of one batch: rows per file, kept for its append."""

    rows: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    local: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class WriteFault:
    """What happens to one write (by its number): ``fail`` "before" (nothing written), "after"
    (committed, the answer lost) or "stream" (the client's call fails 0.3 s in, the engine goes
    on); ``slow_s`` extra seconds in the append; ``ignore_stop``: a stop of its session is
    confirmed but the append goes on (a lost interrupt); ``unconfirmed``: the engine cannot
    confirm a stop of its session (``stop`` returns False, the append goes on)."""

    fail: str = ""
    slow_s: float = 0.0
    ignore_stop: bool = False
    unconfirmed: bool = False


class FakeEngine:
    """A Spark Connect engine over Iceberg tables. An append's rows appear at one instant. A
    write continues on the engine when its client goes away (``detach``) until the engine's
    detached-execution limit; ``stop(session)`` interrupts a session's operations (True) unless
    the engine is unreachable. Two appends to one table that overlap are recorded in
    ``overlaps``; the later commit is based on its own start snapshot (``overlap="overwrite"``,
    the lost update seen with Sail on Glue) or fails (``"conflict"``)."""

    def __init__(
        self,
        store: FakeStore,
        clock: Callable[[], float] = loop_clock,
        client: Callable[[], str] = lambda: "",
        overlap: str = "overwrite",
    ) -> None:
        self.store = store
        self.clock = clock
        self.client = client
        self.overlap = overlap
        self.tables: dict[str, FakeTable] = {}
        self.sessions: dict[str, str] = {}
        self.ops: list[EngineOp] = []
        self.writes = 0
        self.faults: dict[int, WriteFault] = {}
        self.append_s = 0.0
        self.detached_limit_s: float | None = None  # None: detached work runs to its end
        self.unreachable_until = -1.0
        self.gates: dict[str, asyncio.Event] = {}
        self.overlaps: list[tuple[str, UUID, UUID]] = []
        self.reads: dict[UUID, FakeRead] = {}  # inferred batches, not appended yet
        self.on_append: Callable[[UUID], None] | None = None  # as SparkSink(on_append=…): an append starts
        self.on_change: Callable[[str, Any], None] | None = None

    def _note(self, what: str, detail: Any) -> None:
        if self.on_change is not None:
            self.on_change(what, detail)

    def _reach(self) -> None:
        if self.clock() < self.unreachable_until:
            raise TransientError("Spark Connect unavailable: connection refused", error_class="SparkUnavailable")

    def table(self, name: str) -> FakeTable:
        return self.tables.setdefault(name, FakeTable())

    # -- sessions -----------------------------------------------------------------------------------

    async def open_session(self, session_id: str, table: str = "") -> None:
        self._reach()
        self.sessions[session_id] = "open"

    async def stop(self, session_id: str, table: str = "") -> bool:
        if self.clock() < self.unreachable_until:
            return False
        running = [op for op in self.ops if op.session == session_id and not op.committed and not op.killed]
        if any(op.fault.unconfirmed for op in running):
            return False
        self.sessions[session_id] = "stopped"
        for op in self.ops:
            if op.session == session_id and not op.committed and not op.fault.ignore_stop:
                self._kill(op, "session stopped")
        return True

    async def interrupt(self, batch_id: UUID) -> None:
        with contextlib.suppress(TransientError):
            self._reach()
            for op in self.ops:
                if op.request.batch_id == batch_id and not op.committed and not op.fault.ignore_stop:
                    self._kill(op, "interrupted")

    def _kill(self, op: EngineOp, why: str) -> None:
        if not op.killed:
            op.killed = why
            op.wake.set()
            self._note("op_killed", (op.request.batch_id, why))

    def detach(self, client: str) -> None:
        """The client died: its operations run on, up to the engine's detached limit."""
        now = self.clock()
        for op in self.ops:
            if op.client == client and not op.committed and not op.killed and op.detached_at is None:
                op.detached_at = now
                if self.detached_limit_s is not None:
                    asyncio.get_running_loop().call_at(
                        now + self.detached_limit_s, self._kill, op, "detached limit reached"
                    )

    async def ping(self) -> str:
        self._reach()
        return "fake"

    # -- reads ------------------------------------------------------------------------------------

    def counts(self, table: str, batch_id: UUID) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.tables.get(table, FakeTable()).rows:
            if row["_batch_id"] == str(batch_id):
                out[row["_source_file"]] = out.get(row["_source_file"], 0) + 1
        return out

    async def batch_counts(self, table: str, batch_id: UUID) -> dict[str, int]:
        self._reach()
        return self.counts(table, batch_id)

    async def table_schema(self, table: str) -> Struct | None:
        self._reach()
        return self.tables[table].schema if table in self.tables else None

    # -- deletes ------------------------------------------------------------------------------------

    def _commit(self, table: str, rows: list[dict[str, Any]], what: str) -> None:
        t = self.table(table)
        t.rows = rows
        t.version += 1
        self._note(what, (table, t.version))

    async def delete_batch_rows(self, table: str, batch_id: UUID, sources: list[str] | None = None) -> int:
        """Rows of one batch (only those of ``sources`` if given): the audit's repair."""
        self._reach()
        t = self.table(table)
        only = None if sources is None else set(sources)
        kept = [
            r for r in t.rows if not (r["_batch_id"] == str(batch_id) and (only is None or r["_source_file"] in only))
        ]
        removed = len(t.rows) - len(kept)
        if removed:
            self._commit(table, kept, "batch_rows_deleted")
        return removed

    async def delete_replaced(self, table: str, sources: list[str], keep_batch: UUID) -> None:
        self._reach()
        t = self.table(table)
        gone = set(sources)
        kept = [r for r in t.rows if not (r["_source_file"] in gone and r["_batch_id"] != str(keep_batch))]
        if len(kept) != len(t.rows):
            self._commit(table, kept, "replaced_rows_deleted")

    # -- the write ------------------------------------------------------------------------------

    def _session_open(self, request: WriteRequest) -> str:
        session = getattr(request, "session_id", "")
        if session and self.sessions.get(session) != "open":
            raise TransientError(f"session {session}: session_not_found", error_class="SparkSessionLost")
        return session

    async def infer(self, request: WriteRequest) -> Inference:
        """Each file's schema: worker-decoded, or read by path now (whatever version is there)."""
        self._reach()
        self._session_open(request)
        schemas: dict[int, Struct] = {}
        read = FakeRead()
        unreadable: dict[int, IcefeedError] = {}
        for f in request.files:
            decoded = request.decoded.get(f.file_id)
            try:
                if isinstance(decoded, IcefeedError):
                    raise decoded
                if decoded is not None:
                    read.local.add(f.file_id)
                    schemas[f.file_id] = decoded.schema
                    read.rows[f.file_id] = (
                        decoded.table("_source_file", f.source_file).drop(["_source_file"]).to_pylist()
                    )
                    continue
                body = self.store.read(f.bucket, f.key)  # by path: whatever version is there now
                if body is None:
                    raise BatchError(f"[PATH_NOT_FOUND] Path does not exist: {f.source_file}", error_class="Unknown")
                parsed = decode_json(body, whole_file=False, compressed=False)  # JSON lines, as Spark reads them
                schemas[f.file_id] = parsed.schema
                read.rows[f.file_id] = parsed.table("_source_file", f.source_file).drop(["_source_file"]).to_pylist()
            except DataError as error:
                unreadable[f.file_id] = error
        self.reads[request.batch_id] = read
        table = self.tables[request.table].schema if request.table in self.tables else None
        return Inference(table, schemas, unreadable, frozenset(read.local))

    async def append(self, request: WriteRequest, plan: BatchPlan) -> dict[str, int]:
        self._reach()
        session = self._session_open(request)
        read = self.reads.pop(request.batch_id, FakeRead())
        self.writes += 1
        fault = self.faults.get(self.writes, WriteFault())
        if fault.fail == "before":
            raise TransientError("Spark Connect unavailable: socket closed", error_class="SparkUnavailable")
        op = EngineOp(request, session, self.client(), self.clock(), self.writes, fault, plan, read)
        self.ops.append(op)
        task = asyncio.get_running_loop().create_task(self._run(op, fault))
        if fault.fail == "stream":  # the client's stream breaks; the operation runs on
            await asyncio.wait({task}, timeout=0.3)
            if not task.done():
                raise TransientError("Spark Connect unavailable: socket closed", error_class="SparkUnavailable")
        result = await asyncio.shield(task)
        if fault.fail == "after":
            raise TransientError("Spark Connect unavailable: deadline exceeded", error_class="SparkUnavailable")
        return result

    async def _pause(self, op: EngineOp, seconds: float) -> None:
        if seconds > 0 and not op.killed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(op.wake.wait(), seconds)

    async def _run(self, op: EngineOp, fault: WriteFault) -> dict[str, int]:
        req, plan, rows, local = op.request, op.plan, op.read.rows, op.read.local
        t = self.table(req.table)
        if not plan.loaded:
            return {}
        existed = t.schema is not None
        t.schema = plan.target
        replaced = {f.source_file for f in req.files if f.file_id in req.replace and f.file_id in plan.loaded}
        if replaced and existed and not FENCED_PORTS:  # before the fence: a commit of its own, before the append
            await self.delete_replaced(req.table, sorted(replaced), req.batch_id)
        new = [
            {**r, "_source_file": f.source_file, "_batch_id": str(req.batch_id)}
            for f in req.files
            if f.file_id in plan.loaded
            for r in rows[f.file_id]
        ]
        may_append = getattr(req, "may_append", None)
        if may_append is not None and not may_append():  # checked by the sink right before the append
            raise TransientError("the batch's lease was not renewed in time", error_class="FenceExpired")
        base, base_version = list(t.rows), t.version
        op.appending_since = self.clock()
        for other in self.ops:
            running = other.appending_since is not None and not other.committed and not other.killed
            if other is not op and other.request.table == req.table and running:
                self.overlaps.append((req.table, other.request.batch_id, req.batch_id))
        if self.on_append is not None:
            self.on_append(req.batch_id)
        self._note("append_started", (req.table, req.batch_id, op.client, op.number))
        await self._pause(op, self.append_s + fault.slow_s)
        gate = self.gates.get("before_commit")
        if gate is not None and not op.killed:
            waiter = asyncio.ensure_future(gate.wait())
            killed = asyncio.ensure_future(op.wake.wait())
            await asyncio.wait({waiter, killed}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            killed.cancel()
        try:
            if op.killed:
                raise TransientError(f"operation {op.killed}: operation not found", error_class="SparkSessionLost")
            if t.version != base_version and self.overlap == "conflict":
                raise TransientError("CommitFailedException: concurrent update", error_class="CommitConflict")
            self._commit(req.table, base + new, "appended")
            op.committed = True
            self._note("op_committed", op)
        finally:
            op.appending_since = None
        if any(f.file_id not in local for f in req.files if f.file_id in plan.loaded):
            return self.counts(req.table, req.batch_id)  # read back from the table
        counts: dict[str, int] = {}
        for r in new:
            counts[r["_source_file"]] = counts.get(r["_source_file"], 0) + 1
        return counts


def body_of(key: str, version: str, rows: int) -> bytes:
    """A JSON-lines object whose rows say which key and version they came from."""
    return b"".join(json.dumps({"k": key, "v": version, "i": i}).encode() + b"\n" for i in range(rows))


__all__ = [
    "ROUTES",
    "FakeEngine",
    "FakeLedger",
    "FakeQueue",
    "FakeStore",
    "FakeTableLock",
    "WriteFault",
    "body_of",
    "source_uri",
]


def interleaving_settings(worker_id: str) -> Settings:
    """Settings of a worker in the hand-written interleaving tests on these fakes: Sail's dialect,
    the engine reads every file, a 30 s lease that is swept at once, a short recovery lock wait."""
    return load_settings(
        worker_id=worker_id,
        sqs={"queue_urls": ["https://sqs.local/q"]},
        spark={"dialect": "sail", "worker_read_max_bytes": 0, "detached_limit_s": 600},
        lease={"ttl_s": 30, "orphan_grace_s": 0, "recovery_lock_wait_s": 0.5, "audit_delay_s": 0},
    )
