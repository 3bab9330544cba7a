"""The work itself, free of queues and timers: admit messages, write batches, recover batches.

``admit`` turns received messages into outcomes or files to batch; ``run_batch`` carries one
batch through the exactly-once protocol (claim + batch row → one Iceberg commit → finalize);
``recover`` settles a batch whose owner vanished; ``settle`` maps ledger states to outcomes.

It sees the outside world through the ports only (worker/ports.py; an import contract forbids
``worker.adapters``): the sink reads a batch (``infer``), the schema decision is made here
(``plan_batch``), the sink appends (``append``). The runner asks it for lease renewal, sweeps
and shutdown (``renew_leases``, ``expired_batches``/``recover_expired``, ``abandon``) instead of
reaching into its ledger. Test-only fault points wrap the ports (worker/faults.py), not this code.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple
from uuid import UUID, uuid4

import structlog
from prometheus_client import CollectorRegistry

from worker.domain.batching import FileWork, halves, newest_per_key, upload_order
from worker.domain.errors import DataError, DecodeLimit, IcefeedError, TransientError
from worker.domain.events import FileEvent, Ignored, Malformed, parse_message, sequencer_newer
from worker.domain.keys import UNSAFE_KEY, unsafe_key
from worker.domain.outcomes import (
    FAILED,
    GONE,
    LOADED,
    PENDING,
    QUARANTINED,
    SKIPPED,
    TERMINAL,
    Ack,
    FileResult,
    Outcome,
    RetryPolicy,
    outcome_for,
    retry,
)
from worker.domain.policy import BatchPlan, Policy, plan_batch
from worker.domain.reading import (
    FILE_TOO_LARGE,
    TextRule,
    bad_records_body,
    bad_records_object,
    bad_records_of,
    deletes_rows,
    too_large,
)
from worker.domain.reading import parses_locally as _parses_locally
from worker.domain.reading import worker_reads as _worker_reads
from worker.domain.routing import match_route
from worker.domain.schema import Struct, diff, from_spark_json, parse_type, to_spark_json
from worker.memory import Hold, MemoryBudget, decode_cost, held_cost
from worker.observability.metrics import Metrics
from worker.ports import (
    ExpiredBatch,
    FileDecoder,
    FileState,
    Inference,
    Ledger,
    Message,
    ObjectInfo,
    ObjectStore,
    Quarantine,
    Reader,
    Registration,
    SchemaVersion,
    TableLock,
    TableSink,
    WriteRequest,
    change_json,
)
from worker.routes import AnyIngestion, Routes
from worker.settings import Settings, detached_limit_for

log = structlog.get_logger("icefeed.pipeline")
#: A batch waiting for the table's previous writer to be settled checks again after this (doubling,
#: so that the sweeper settling that writer is not crowded out of the table lock).
WRITER_POLL_S = (0.25, 4.0)


def retry_policy(settings: Settings) -> RetryPolicy:
    """The settings values :func:`worker.domain.outcomes.retry` and ``outcome_for`` need."""
    s, lease = settings.sqs, settings.lease
    return RetryPolicy(
        s.backoff_base_s, s.backoff_max_s, s.outage_max_attempts, lease.orphan_grace_s, lease.sweep_interval_s
    )


@dataclass(frozen=True, slots=True)
class _SchemaRule:
    """How a batch's schema is decided: its route's policy and the table's approved proposals
    (signature → resolution)."""

    policy: Policy
    approved: dict[str, str]


@dataclass(frozen=True, slots=True)
class WriteResult:
    """A batch's write: rows per ``_source_file`` (as sent, or read back from the table), the
    plan it was appended under, and what inference found."""

    counts: dict[str, int]
    plan: BatchPlan
    file_schemas: dict[int, Struct]
    request_replace: frozenset[int] = frozenset()
    unreadable: dict[int, IcefeedError] = field(default_factory=dict)  # files the engine could not parse
    local: frozenset[int] = frozenset()  # files the worker read (so they existed): no HEAD for zero rows
    # Files of quarantining routes: (bad records left out, the object holding them or None).
    rejected: dict[int, tuple[int, str | None]] = field(default_factory=dict)


def reader_for(ing: AnyIngestion, pinned: dict[str, str]) -> Reader:
    """How a file of ``ing`` is read: its format, options and schema hints, with the columns an
    operator pinned on its table (``schema approve --as string``, ``pinned``) on top. The load and
    ``icefeed preview`` both read through it."""
    return Reader(
        ing.format, ing.reader_options(), {**ing.hint_types(), **{c: parse_type(t) for c, t in pinned.items()}}
    )


async def read_and_plan(
    sink: TableSink, request: WriteRequest, policy: Policy, approved: dict[str, str]
) -> tuple[Inference, BatchPlan]:
    """Read the request's files (``infer``: the sink keeps the read for its ``append``) and decide
    the batch under the table's policy and its approved proposals (``plan_batch``). The load and
    ``icefeed preview`` both decide through it."""
    inference = await sink.infer(request)
    readable = [(f.file_id, inference.schemas[f.file_id]) for f in request.files if f.file_id in inference.schemas]
    return inference, plan_batch(policy, inference.table, readable, approved)


def engine_can_read(local_parse: bool, key: str) -> bool:
    """Whether a file the worker would decode may be handed to the engine instead (read by path):
    not whole-file JSON the engine cannot read (``local_parse``), and a key the engine reads as
    written (no ``.``/``..``/empty segments)."""
    return not local_parse and unsafe_key(key) is None


def decode_file(
    decoder: FileDecoder, body: bytes, key: str, whole_file: bool, engine_reads: bool, rule: TextRule | None = None
) -> Any:
    """One worker-read file decoded at once (``icefeed preview``; a batch decodes the same way in
    steps, within its memory budget): the decoded file, the ``DataError`` it raised, or None when
    it is over the decode limits and the engine reads it instead (``engine_reads``)."""
    try:
        return decoder.open(body, key).parse(whole_file, rule)
    except DecodeLimit as error:
        return None if engine_reads else error
    except DataError as error:
        return error


class _OverBudget(Exception):
    """A worker-read file that does not fit the memory budget next to its batch's other files."""


@dataclass
class Admission:
    """What became of one message at intake."""

    message: Message
    outcomes: list[Outcome] = field(default_factory=list)
    waiting: dict[int, FileWork] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, eq=False)
class _Candidate:
    """A routed file event of an admitted message (compares by identity)."""

    admission: Admission
    event: FileEvent
    ingestion: AnyIngestion


class _Verdict(NamedTuple):
    """A file recorded final at intake: its status, error class and message."""

    status: str
    error_class: str
    message: str


@dataclass(slots=True)
class _Registered:
    """One candidate registered in the ledger, and its verdict (None: it waits for a batch)."""

    candidate: _Candidate
    registration: Registration
    verdict: _Verdict | None


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        routes: Routes,
        ledger: Ledger,
        store: ObjectStore,
        sink: TableSink,
        decoder: FileDecoder,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.routes = routes
        self.ledger = ledger
        self.store = store
        self.sink = sink
        self.decoder = decoder
        self.retries = retry_policy(settings)
        self.metrics = metrics or Metrics(CollectorRegistry())  # default: a registry nobody scrapes
        self.owner = settings.worker_id
        self.active_batches: set[UUID] = set()
        self._sessions: dict[UUID, tuple[str, str]] = {}  # batch → (engine session, table) of its append
        self._lease_lost: set[UUID] = set()  # batches a sweeper took over while this worker wrote them
        # batch → monotonic time until which its append may start: ttl/2 after this worker last
        # confirmed its lease (the fence, then each heartbeat). A worker paused longer cannot start
        # an append its lease no longer covers; recovery's wait-out counts on that.
        self._vouched: dict[UUID, float] = {}
        self._heads = asyncio.Semaphore(32)
        self.memory = MemoryBudget(settings.memory.budget_bytes)
        self._holds: dict[UUID, Hold] = {}

    # -- intake ------------------------------------------------------------------------------

    async def admit(self, messages: list[Message]) -> list[Admission]:
        admissions = [Admission(m) for m in messages]
        candidates: list[_Candidate] = []
        for adm in admissions:
            mlog = log.bind(message_id=adm.message.message_id)
            results = parse_message(adm.message.body)
            malformed = [r for r in results if isinstance(r, Malformed)]
            if malformed:
                reason = "; ".join(r.reason for r in malformed)
                await self.ledger.reject_message(adm.message, reason)
                self.metrics.messages_rejected.inc()
                mlog.warning("message_rejected", reason=reason)
                adm.outcomes.append(Ack(f"malformed: {reason}"))
            for r in results:
                if isinstance(r, Ignored):
                    mlog.info("record_ignored", reason=r.reason)
                    self.metrics.file_outcome("ignored")
                    adm.outcomes.append(Ack(r.reason))
                elif isinstance(r, FileEvent):
                    rule = match_route(self.routes.rules, r.bucket, r.key)
                    if rule is None:
                        mlog.info("file_unrouted", bucket=r.bucket, key=r.key)
                        self.metrics.file_outcome("ignored")
                        adm.outcomes.append(Ack("unrouted"))
                    else:
                        candidates.append(_Candidate(adm, r, self.routes.by_name(rule.name)))
        if candidates:
            await self._register(candidates)
        return admissions

    async def _head(self, bucket: str, key: str) -> ObjectInfo | None:
        async with self._heads:
            return await self.store.head(bucket, key)

    def _needs_head(self, cand: _Candidate) -> bool:
        """A file the worker will GET itself (If-Match on the event's etag) needs no HEAD now: the
        GET tells a gone or overwritten object apart. Others are checked before they are claimed."""
        ev = cand.event
        return not (ev.etag and ev.size is not None and self.worker_reads(cand.ingestion.name, ev.size))

    def _unreadable_key(self, cand: _Candidate) -> str | None:
        """Why the engine would not read this key as written (``.``/``..``/empty segments), or None.
        A file the worker reads itself is fetched by its literal key, so any key is fine there."""
        reason = unsafe_key(cand.event.key)
        if reason is None or self.worker_reads(cand.ingestion.name, cand.event.size):
            return None
        return reason

    async def _register(self, candidates: list[_Candidate]) -> None:
        checked = [c for c in candidates if self._needs_head(c) and self._unreadable_key(c) is None]
        found = await asyncio.gather(
            *(self._head(c.event.bucket, c.event.key) for c in checked), return_exceptions=True
        )
        heads = dict(zip(checked, found, strict=True))  # candidates compare by identity
        kept: list[_Registered] = []
        for cand in candidates:
            ev = cand.event
            head = heads.get(cand)
            if isinstance(head, BaseException):
                error = head if isinstance(head, IcefeedError) else TransientError(str(head))
                log.warning("head_failed", bucket=ev.bucket, key=ev.key, error=str(error))
                cand.admission.outcomes.append(self.retry(cand.admission.message, f"HEAD failed: {error}", error))
                continue
            etag = ev.etag or (head.etag if head else "") or "unknown"
            size = ev.size if ev.size is not None else (head.size if head else None)
            registration = Registration(cand.ingestion.name, ev, etag, size)
            kept.append(_Registered(cand, registration, self._verdict(cand, cand in heads, head, size)))
        states = await self.ledger.register([r.registration for r in kept])
        by_identity = {(s.bucket, s.key, s.etag): s for s in states}
        await self._older_sequencers(kept)
        terminal: dict[_Verdict, list[int]] = {}
        decided: list[tuple[_Candidate, int, _Verdict]] = []
        for reg in kept:
            cand, verdict = reg.candidate, reg.verdict
            state = by_identity[(cand.event.bucket, cand.event.key, reg.registration.etag)]
            flog = log.bind(message_id=cand.admission.message.message_id, bucket=state.bucket, key=state.key)
            if state.status == PENDING and verdict is not None:
                terminal.setdefault(verdict, []).append(state.file_id)
                decided.append((cand, state.file_id, verdict))
                flog.warning("file_not_loadable", status=verdict.status, reason=verdict.message)
            elif state.status == PENDING:
                cand.admission.waiting[state.file_id] = FileWork(
                    state.file_id,
                    cand.ingestion.name,
                    state.bucket,
                    state.key,
                    state.etag,
                    reg.registration.size or 0,
                    cand.event.event_time,
                )
                flog.debug("file_registered", file_id=state.file_id)
            else:
                outcome = self.outcome_for(cand.admission.message, state)
                flog.info("file_already_known", status=state.status, outcome=type(outcome).__name__)
                cand.admission.outcomes.append(outcome)
        for (status, error_class, message), ids in terminal.items():
            recorded = await self.ledger.record_terminal(ids, status, error_class, message)
            self.metrics.file_outcome(status, recorded)
        if decided:
            # Ack only what is final now: another worker may have claimed a file between its
            # registration and record_terminal (which then moved nothing).
            now = {s.file_id: s for s in await self.ledger.states([file_id for _, file_id, _ in decided])}
            for cand, file_id, verdict in decided:
                final = now.get(file_id)
                if final is not None and final.status in TERMINAL:
                    cand.admission.outcomes.append(Ack(f"{final.status.lower()}: {verdict.message}"))
                elif final is not None:
                    cand.admission.outcomes.append(self.outcome_for(cand.admission.message, final))
                else:
                    cand.admission.outcomes.append(self.retry(cand.admission.message, "file state unknown"))

    def _verdict(self, cand: _Candidate, checked: bool, head: ObjectInfo | None, size: int | None) -> _Verdict | None:
        """Why a file is recorded final at intake (never claimed), or None. ``checked``: a HEAD was
        asked (``head`` its answer); unchecked, the worker's GET settles existence and etag."""
        ev = cand.event
        unsafe = self._unreadable_key(cand)
        if unsafe is not None:
            return _Verdict(FAILED, UNSAFE_KEY, unsafe)
        if checked and head is None:
            return _Verdict(GONE, "ObjectGone", "object no longer exists (deleted before it was loaded)")
        if checked and head is not None and ev.etag and head.etag != ev.etag:
            return _Verdict(SKIPPED, "Superseded", f"object was overwritten: its etag is now {head.etag}")
        oversize = self.too_large(cand.ingestion.name, size)
        if oversize is not None:
            return _Verdict(FAILED, FILE_TOO_LARGE, oversize)
        return None

    async def _older_sequencers(self, kept: list[_Registered]) -> None:
        """An event older (by S3 sequencer, same key) than one already seen is stale: skip it."""
        keys = sorted({(r.candidate.event.bucket, r.candidate.event.key) for r in kept if r.candidate.event.sequencer})
        if not keys:
            return
        newest: dict[tuple[str, str], tuple[str, str]] = {}
        for bucket, key, etag, seq in await self.ledger.key_sequencers(keys):
            best = newest.get((bucket, key))
            if best is None or sequencer_newer(seq, best[0]):
                newest[(bucket, key)] = (seq, etag)
        for reg in kept:
            ev = reg.candidate.event
            best = newest.get((ev.bucket, ev.key))
            event_seq = ev.sequencer
            if (
                reg.verdict is None
                and event_seq
                and best
                and best[1] != reg.registration.etag
                and sequencer_newer(best[0], event_seq)
            ):
                reg.verdict = _Verdict(SKIPPED, "Superseded", f"a newer event for this key was seen (etag {best[1]})")

    # -- outcomes ------------------------------------------------------------------------------

    def retry(self, message: Message, reason: str, error: BaseException | None = None) -> Outcome:
        return retry(self.retries, message.receive_count, reason, error)

    def outcome_for(self, message: Message, state: FileState) -> Outcome:
        return outcome_for(self.retries, message.receive_count, state)

    async def settle(self, message: Message, file_ids: list[int]) -> list[Outcome]:
        states = await self.ledger.states(file_ids)
        return [self.outcome_for(message, s) for s in states]

    # -- batches -------------------------------------------------------------------------------

    async def run_batch(self, table: str, files: list[FileWork]) -> None:
        """Claim, write once, finalize. Failing batches are bisected to isolate bad files.

        A batch holds files of one destination table, possibly from several ingestions (say
        ``.json`` and ``.json.gz`` routes into one table): each file is read with its own route's
        format, options and schema hints, and the whole batch is one commit. The append starts
        only once the batch is fenced (docs/guarantees.md): under the table's commit lock, the
        batch is still ours and the table's previous writer is settled; it runs in an engine
        session of its own, which whoever releases the batch stops first."""
        batch_id = uuid4()
        names = ",".join(sorted({f.ingestion for f in files}))
        blog = log.bind(batch_id=str(batch_id), ingestion=names, table=table, engine=self.engine_of(table))
        offered, later = newest_per_key(files)
        if later:
            blog.info("batch_versions_deferred", files=len(later), reason="an older version waits for the newer one")
        # Active from before its claim: the heartbeat renews its lease, and a shutdown hands it to
        # the sweepers, from the moment the claim returns (a ledger wrapper may pause there).
        self.active_batches.add(batch_id)
        try:
            with self.metrics.stage("claim"):
                claimed = await self.ledger.claim(
                    batch_id, names, table, offered, self.owner, self.settings.lease.ttl_s
                )
        except BaseException:
            self.active_batches.discard(batch_id)
            raise
        if not claimed:
            self.active_batches.discard(batch_id)
            blog.info("batch_empty", offered=len(files))
            return
        claimed = sorted(claimed, key=upload_order)
        self.metrics.batch_files.labels(self.engine_of(table)).observe(len(claimed))
        session_id = str(uuid4())
        write: asyncio.Future[WriteResult] | None = None
        opened = False
        halves_left: list[list[FileWork]] = []
        settled: dict[int, FileResult] = {}
        try:
            blog.info("batch_claimed", files=len(claimed), offered=len(files))
            try:
                with self.metrics.stage("fetch"):
                    decoded, settled = await self._fetch(claimed, batch_id)
                base = WriteRequest(
                    batch_id=batch_id,
                    table=table,
                    location=self.routes.by_name(claimed[0].ingestion).location,
                    readers=await self._readers(table, claimed),
                    files=claimed,
                    output_files=self.settings.batch.output_files,
                    decoded=decoded,
                    session_id=session_id,
                )
                schema = _SchemaRule(
                    Policy(self.routes.by_name(claimed[0].ingestion).schema_policy),
                    await self.ledger.approved_signatures(table),
                )
                opened = True  # (a failed open may still have created it on the server)
                await self.sink.open_session(session_id, table)
                waiting = time.monotonic()
                deadline = waiting + self.settings.lease.ttl_s
                poll_s = WRITER_POLL_S[0]
                while True:
                    async with self.ledger.table_lock(table, max(0.0, deadline - time.monotonic())) as lock:
                        fence = await lock.fence(batch_id, self.owner, table, session_id, self.settings.lease.ttl_s)
                        if fence.ok:
                            self._sessions[batch_id] = (session_id, table)
                            self._vouched[batch_id] = time.monotonic() + self.settings.lease.ttl_s / 2
                            started = time.monotonic()
                            timing = {"lock_wait_s": round(started - waiting, 3)}
                            write, halves_left = await self._locked_write(
                                lock, base, schema, settled, blog, timing, started
                            )
                            break
                    if fence.reason == "lease_lost":
                        blog.warning("batch_fence_lost", reason="the batch was taken over before its append")
                        return
                    if time.monotonic() >= deadline:
                        raise TransientError(
                            f"table {table} is busy: batch {fence.blocking} may still be appending",
                            error_class="TableBusy",
                        )
                    blog.info("batch_waiting_for_writer", blocking=str(fence.blocking))
                    await asyncio.sleep(poll_s)
                    poll_s = min(poll_s * 2, WRITER_POLL_S[1])
            except IcefeedError as error:
                if write is not None:  # after the append started: its own path decided already
                    raise
                halves_left = await self._release_unwritten(table, batch_id, claimed, error, blog, settled)
        except Exception:
            # Unexpected (a bug, or an error the adapters did not classify): hand the batch to the
            # sweepers now; they stop its engine session before they release anything.
            with contextlib.suppress(Exception):
                await self.ledger.expire([batch_id], self.owner, self.settings.lease.orphan_grace_s + 1)
            raise
        finally:
            if opened and write is None:  # no append was started in it: give the engine session back
                await self.sink.stop(session_id, table)
            self.active_batches.discard(batch_id)
            self._free(batch_id)
            self._sessions.pop(batch_id, None)
            self._vouched.pop(batch_id, None)
            self._lease_lost.discard(batch_id)
        for half in halves_left:
            await self.run_batch(table, half)

    async def _locked_write(
        self,
        lock: TableLock,
        base: WriteRequest,
        schema: _SchemaRule,
        settled: dict[int, FileResult],
        blog: structlog.typing.FilteringBoundLogger,
        timing: dict[str, float],
        started: float,
    ) -> tuple[asyncio.Future[WriteResult] | None, list[list[FileWork]]]:
        """The fenced part, under the table lock: decide replacements, append, settle. Returns the
        append (None if it was not started) and the halves of a failed batch to retry."""
        settled = dict(settled)
        table, batch_id, claimed = base.table, base.batch_id, base.files
        replacing, superseded = await self._replace_plan(claimed, settled)
        for file_id in superseded:
            settled[file_id] = FileResult(
                file_id, SKIPPED, None, "Superseded", "a newer version of this object is already loaded"
            )
        if not await lock.held():  # narrows the window: a worker frozen after its fence wakes up here
            self.metrics.table_locks_lost.inc()
            blog.warning("table_lock_lost", during="before the append")
            await self._hand_over(batch_id, blog)
            return None, []
        request = replace(
            base,
            files=[f for f in claimed if f.file_id not in settled],
            replace=frozenset(replacing - superseded),
            may_append=lambda: time.monotonic() < self._vouched.get(batch_id, 0.0),
        )
        write = asyncio.ensure_future(self._write(request, schema))
        try:
            result = await write
        except IcefeedError as error:
            return write, await self._after_failed_write(lock, table, batch_id, claimed, error, blog)
        self.metrics.stage_duration.labels("infer+write").observe(time.monotonic() - started)
        if lock.lost.is_set():  # safe to go on: the writer slot kept every other append out
            self.metrics.table_locks_lost.inc()
            blog.warning("table_lock_lost", during="append", hint="the writer slot kept other writers out")
        if not await self._still_mine(batch_id, blog):
            return write, []
        try:
            with self.metrics.stage("finalize"):
                won = await self._complete(
                    table, batch_id, claimed, result.counts, result, settled, blog, timing, started
                )
        except IcefeedError as error:  # committed; cleaning up or the ledger failed: recovery finishes it
            blog.warning("batch_finalize_failed", error=str(error))
            await self._hand_over(batch_id, blog)
            return write, []
        if won:
            self.metrics.commit_duration.labels(self.engine_of(table)).observe(time.monotonic() - started)
        return write, []

    async def _write(self, request: WriteRequest, schema: _SchemaRule) -> WriteResult:
        """The sink reads the files (``infer``), the schema decision is made here (``plan_batch``
        under the table's policy and its approved proposals), then the sink creates or evolves
        the table and appends what the plan loads in ONE commit (``append``, called even when
        nothing loads: it releases the write's session)."""
        inference, plan = await read_and_plan(self.sink, request, schema.policy, schema.approved)
        rejected = await self._keep_bad_records(request, plan)
        counts = await self.sink.append(request, plan)
        return WriteResult(
            counts, plan, inference.schemas, request.replace, inference.unreadable, inference.local, rejected
        )

    async def _keep_bad_records(self, request: WriteRequest, plan: BatchPlan) -> dict[int, tuple[int, str | None]]:
        """Before the append, in the fenced write: the bad records of each file the plan loads from
        a quarantining route, written to one object per file version (overwritten by any retry of
        it, so never twice), carrying this batch's id. (count, object URI) per such file. A failed
        PUT fails the write before anything is appended (the session is stopped on that path)."""
        out: dict[int, tuple[int, str | None]] = {}
        loads = set(plan.loaded)
        for f in request.files:
            ing = self.routes.by_name(f.ingestion)
            if f.file_id not in loads or ing.bad_records_location is None:
                continue
            bad = getattr(request.decoded.get(f.file_id), "bad", ())
            if not bad:
                out[f.file_id] = (0, None)
                continue
            if request.may_append is not None and not request.may_append():  # as before the append itself
                raise TransientError(
                    "the batch's lease was not renewed in time before writing its bad records (the worker was paused)",
                    error_class="FenceExpired",
                )
            bucket, key = bad_records_object(ing.bad_records_location, ing.table, f.file_id)
            await self.store.write(bucket, key, bad_records_body(bad, request.batch_id, f.source_file, f.etag))
            out[f.file_id] = (len(bad), f"s3://{bucket}/{key}")
        return out

    async def _recovered_bad_records(self, f: FileWork, batch_id: UUID) -> tuple[int | None, str | None]:
        """Recovery of a committed batch: the bad records its writer kept for ``f`` (written
        before the append, carrying the batch id), read back from their object."""
        ing = self.routes.by_name(f.ingestion)
        if ing.bad_records_location is None:
            return None, None
        bucket, key = bad_records_object(ing.bad_records_location, ing.table, f.file_id)
        head = await self._head(bucket, key)
        body = await self.store.get(bucket, key, head.etag) if head is not None else None
        count = bad_records_of(body, batch_id) if body is not None else None
        return (count, f"s3://{bucket}/{key}") if count else (0, None)

    async def _still_mine(self, batch_id: UUID, blog: structlog.typing.FilteringBoundLogger) -> bool:
        """Before changing anything for a committed batch (removing rows, finalizing): is its lease
        still ours (renewed by the same statement)? A writer that was frozen past its lease leaves
        the batch to the sweeper that took it over."""
        try:
            mine = batch_id in await self.ledger.extend([batch_id], self.owner, self.settings.lease.ttl_s)
        except IcefeedError as error:
            blog.warning("batch_finalize_failed", error=str(error))
            await self._hand_over(batch_id, blog)
            return False
        if not mine:
            blog.warning("batch_finalize_lost", reason="lease taken over; the sweeper settles it")
        return mine

    async def _hand_over(self, batch_id: UUID, blog: structlog.typing.FilteringBoundLogger) -> None:
        """The outcome of this batch is unknown to its writer: let a sweeper decide it now (it
        stops the batch's engine session, then probes the table, under the table lock)."""
        blog.warning("batch_outcome_unknown", hint="a sweeper settles it")
        with contextlib.suppress(IcefeedError):
            await self.ledger.expire([batch_id], self.owner, self.settings.lease.orphan_grace_s + 1)

    def leases_renewed(self, batch_ids: set[UUID], at: float) -> None:
        """The heartbeat renewed these leases (``at``: monotonic time of the call): their appends
        may start for another ttl/2."""
        for batch_id in batch_ids:
            if batch_id in self._vouched:
                self._vouched[batch_id] = at + self.settings.lease.ttl_s / 2

    async def leases_lost(self, batch_ids: set[UUID]) -> None:
        """The heartbeat found these batches taken over by a sweeper: stop their engine work (the
        new owner decides their outcome; this worker never finalizes or releases them)."""
        for batch_id in batch_ids:
            held = self._sessions.get(batch_id)
            if held is None or batch_id in self._lease_lost:
                continue
            self._lease_lost.add(batch_id)
            self.metrics.batch_leases_lost.inc()
            log.warning("batch_lease_lost", batch_id=str(batch_id), action="stopping its engine session")
            await self.sink.stop(*held)

    async def stop_all(self) -> None:
        """Shutdown past the grace: stop the engine work of every batch still writing."""
        for session, table in list(self._sessions.values()):
            await self.sink.stop(session, table)

    # -- what the runner asks ----------------------------------------------------------------

    @property
    def batches_in_flight(self) -> int:
        """Batches this worker writes or recovers now."""
        return len(self.active_batches)

    def table_of(self, ingestion: str) -> str:
        return self.routes.by_name(ingestion).table

    def engine_of(self, table: str) -> str:
        """The engine writing ``table`` (its label in logs and metrics); "default" for a table no
        route names any more (a batch recovered after the routes changed)."""
        try:
            return self.routes.engine_of(table)
        except KeyError:
            return "default"

    def tables(self) -> int:
        """How many tables the routes write."""
        return len({i.table for i in self.routes.ingestion})

    async def file_states(self, file_ids: list[int]) -> dict[int, FileState]:
        return {s.file_id: s for s in await self.ledger.states(file_ids)}

    async def note_dead_letter(self, file_ids: list[int], receives: int) -> None:
        """The message of these files goes to the DLQ on its next receive: say so in the ledger."""
        await self.ledger.note_dead_letter(file_ids, receives)

    async def renew_leases(self) -> None:
        """The heartbeat: renew the leases of this worker's batches; stop the engine work of those
        a sweeper took over. Raises IcefeedError when the ledger cannot be asked."""
        active = list(self.active_batches)
        asked = time.monotonic()
        still = await self.ledger.extend(active, self.owner, self.settings.lease.ttl_s)
        self.leases_renewed(still, asked)
        # A batch missing from the answer was taken over (or has just been settled: the
        # pipeline only acts on batches whose append is still running).
        lost = {b for b in active if b not in still and b in self.active_batches}
        if lost:
            await self.leases_lost(lost)

    async def expired_batches(self, limit: int) -> list[ExpiredBatch]:
        """Take over up to ``limit`` batches whose owner stopped renewing their lease."""
        lease = self.settings.lease
        return await self.ledger.take_expired(
            self.owner,
            lease.ttl_s,
            lease.orphan_grace_s,
            limit,
            list(self.active_batches),  # its own writers are alive: never adopt those
        )

    async def recover_expired(self, batch: ExpiredBatch) -> None:
        """Settle one batch taken over by :meth:`expired_batches` (see :meth:`recover`)."""
        self.active_batches.add(batch.batch_id)
        try:
            await self.recover(batch.batch_id, batch.table)
        finally:
            self.active_batches.discard(batch.batch_id)

    async def abandon(self) -> None:
        """After the shutdown grace: stop the engine work of every batch still writing and hand
        those batches to the sweepers. Raises IcefeedError when the leases cannot be released."""
        batches: list[UUID] = list(self.active_batches)
        await self.stop_all()
        if batches:
            lease = self.settings.lease
            await self.ledger.expire(batches, self.owner, lease.ttl_s + lease.orphan_grace_s)

    async def warm_up(self) -> None:
        """Open the engine's session (a round trip) before the first batch needs it."""
        await self.sink.ping()

    def _dialect(self, ingestion: AnyIngestion) -> str:
        """The dialect of the engine writing the ingestion's table."""
        return self.routes.dialect_of(ingestion.table, self.settings.spark.dialect)

    def detached_limit_s(self, table: str | None = None) -> int:
        """How long ``table``'s engine may keep a detached write running (``None``: the longest of
        the routes' engines)."""
        spark = self.settings.spark
        if table is None:
            return max(detached_limit_for(spark, d) for d in self.routes.dialects(spark.dialect) | {spark.dialect})
        return detached_limit_for(spark, self.routes.dialect_of(table, spark.dialect))

    def parses_locally(self, ingestion: str) -> bool:
        """Whole-file JSON on an engine whose reader knows only JSON lines (Sail)."""
        ing = self.routes.by_name(ingestion)
        return _parses_locally(self._dialect(ing), ing.whole_file_json)

    def worker_reads(self, ingestion: str, size: int | None) -> bool:
        ing, spark = self.routes.by_name(ingestion), self.settings.spark
        return _worker_reads(
            self._dialect(ing), ing.format, ing.whole_file_json, size, spark.worker_read_max_bytes, ing.worker_decodes
        )

    def too_large(self, ingestion: str, size: int | None) -> str | None:
        """Why a file is refused before it is claimed (FileTooLarge), or None."""
        s = self.settings
        return too_large(size, self.parses_locally(ingestion), s.spark.local_parse_max_bytes, s.batch.max_file_bytes)

    async def _fetch(self, files: list[FileWork], batch_id: UUID) -> tuple[dict[int, Any], dict[int, FileResult]]:
        """GET and decode the files the worker reads itself, within the memory budget (the batch's
        hold is freed by :meth:`_free`). Returns the decoded files (or the DataError each raised)
        and the results of files settled before the write (gone, replaced, deferred). A file over
        the decode limits or the budget is left to the engine when it can read it."""
        mine = [f for f in files if self.worker_reads(f.ingestion, f.size)]
        if not mine:
            return {}, {}
        hold = self._holds[batch_id] = self.memory.hold()
        async with self.memory.decoding:  # one batch decodes at a time (see worker/memory.py)
            await hold.grow(sum(f.size for f in mine))
            bodies = await asyncio.gather(*(self._get(f) for f in mine))
            missing = [f for f, body in zip(mine, bodies, strict=True) if body is None]
            settled = {r.file_id: r for r in await asyncio.gather(*(self._vanished(f) for f in missing))}
            present = [(f, body) for f, body in zip(mine, bodies, strict=True) if body is not None]
            del bodies
            await self._decode_all(present, hold, settled)
        return hold.payload, settled

    def _free(self, batch_id: UUID) -> None:
        """The batch's write is over: drop its decoded files and give their bytes back."""
        hold = self._holds.pop(batch_id, None)
        if hold is not None:
            hold.release()

    async def _get(self, f: FileWork) -> bytes | None:
        async with self._heads:
            return await self.store.get(f.bucket, f.key, f.etag)

    async def _decode_all(
        self, files: list[tuple[FileWork, bytes]], hold: Hold, settled: dict[int, FileResult]
    ) -> None:
        """Decode one file after the other into ``hold.payload``, the hold always covering what is
        held: bodies not yet decoded + decoded files + the file in progress (its inflate room, then
        its parse cost). The first file may run alone over the budget; a later one that cannot fit
        even alone goes to the engine (or, if the engine cannot read it, waits for a later batch)."""
        out: dict[int, object] = hold.payload
        kept = 0  # bytes the decoded files hold until the write ends
        left = sum(len(body) for _, body in files)  # bodies not decoded yet
        hold.shrink_to(left)
        for i in range(len(files)):
            f, body = files[i]
            files[i] = (f, b"")  # the list no longer keeps the body alive: freed once decoded
            engine_reads = self._engine_can_read(f)
            try:
                room = self.decoder.inflate_room(body, f.key)
                if not await self._reserve(hold, kept + left + room, first=kept == 0):
                    raise _OverBudget  # handled below: not the file's fault
                text = await asyncio.to_thread(self.decoder.open, body, f.key)
                cost = decode_cost(text.size, text.values)
                if not await self._reserve(hold, kept + left + cost, first=kept == 0):
                    raise _OverBudget
                ing = self.routes.by_name(f.ingestion)
                decoded = await asyncio.to_thread(text.parse, ing.whole_file_json, ing.text_rule)
                del text
                out[f.file_id] = decoded
                kept += held_cost(decoded.nbytes, decoded.rows, len(f.source_file))
            except DecodeLimit as error:
                if not engine_reads:
                    out[f.file_id] = error
                else:
                    log.info("file_handed_to_engine", bucket=f.bucket, key=f.key, reason=error.message)
            except _OverBudget:
                reason = f"over ICEFEED_MEMORY_BUDGET_BYTES={self.memory.limit} with this batch's other files"
                if engine_reads:
                    log.info("file_handed_to_engine", bucket=f.bucket, key=f.key, reason=reason)
                else:
                    settled[f.file_id] = FileResult(f.file_id, PENDING, None, "MemoryBudget", f"{reason}: load again")
            except DataError as error:
                out[f.file_id] = error
            left -= len(body)
            del body
            hold.shrink_to(kept + left)

    def _engine_can_read(self, f: FileWork) -> bool:
        """Whether a worker-read file may be handed to the engine instead (read by path): its
        format is one the engine reads (not whole-file JSON on Sail). A key the engine would not
        read as written (``.``/``..``/empty segments: issue 11, item 10) must stay with the worker."""
        only_worker = self.parses_locally(f.ingestion) or self.routes.by_name(f.ingestion).worker_decodes
        return engine_can_read(only_worker, f.key)

    @staticmethod
    async def _reserve(hold: Hold, target: int, first: bool) -> bool:
        """Make ``hold`` cover ``target`` bytes (waiting for room); False when it cannot fit even
        alone and it is not the batch's first file (one item may exceed the budget, not a batch)."""
        extra = target - hold.size
        if extra <= 0:
            return True
        if not first and not hold.fits_alone(extra):
            return False
        await hold.grow(extra)
        return True

    async def _vanished(self, f: FileWork) -> FileResult:
        """A file whose GET (If-Match) found nothing: gone, replaced, or (a race) back to pending."""
        head = await self._head(f.bucket, f.key)
        if head is None:
            result = FileResult(
                f.file_id, GONE, None, "ObjectGone", "object no longer exists (deleted before it was loaded)"
            )
        elif head.etag != f.etag:
            message = f"object was overwritten: its etag is now {head.etag}"
            result = FileResult(f.file_id, SKIPPED, None, "Superseded", message)
        else:
            result = FileResult(f.file_id, PENDING, None, "ReadRace", "object changed while it was read: load again")
        log.warning("file_not_loadable", bucket=f.bucket, key=f.key, status=result.status, reason=result.error_message)
        return result

    async def _replace_plan(self, files: list[FileWork], settled: dict[int, FileResult]) -> tuple[set[int], set[int]]:
        """``on_overwrite = replace`` files: (those whose key's older loaded rows they replace,
        those a newer loaded version supersedes). Decided under the table lock."""
        ids = [
            f.file_id
            for f in files
            if f.file_id not in settled and self.routes.by_name(f.ingestion).on_overwrite == "replace"
        ]
        return await self.ledger.replace_plan(ids)

    async def _readers(self, table: str, files: list[FileWork]) -> dict[str, Reader]:
        """How to read each ingestion's files: its format, options and hints, with the columns an
        operator pinned on the table (``schema approve --as string``) on top."""
        pinned = await self.ledger.table_hints(table)
        return {name: reader_for(self.routes.by_name(name), pinned) for name in sorted({f.ingestion for f in files})}

    async def _after_failed_write(
        self,
        lock: TableLock,
        table: str,
        batch_id: UUID,
        files: list[FileWork],
        error: IcefeedError,
        blog: structlog.typing.FilteringBoundLogger,
    ) -> list[list[FileWork]]:
        """The append failed, still under the table lock. The engine may go on with it (a lost
        stream), so: stop its session (confirmed), then ask the table, then release. Whatever
        cannot be made certain is left to a sweeper. Returns the halves to retry."""
        if error.error_class == "CommitConflict":
            self.metrics.commit_conflicts.inc()
        if not await lock.held():
            self.metrics.table_locks_lost.inc()
            blog.warning("table_lock_lost", during="failed append", error=str(error))
            await self._hand_over(batch_id, blog)
            return []
        session = self._sessions.get(batch_id, ("", table))[0]
        if batch_id in self._lease_lost:
            blog.warning("batch_failed_after_takeover", error=str(error))
            return []
        if not await self.sink.stop(session, table):
            blog.warning("batch_stop_unconfirmed", error=str(error))
            await self._hand_over(batch_id, blog)
            return []
        try:  # the commit may have landed even though the call failed (a lost response)
            counts = await self.sink.batch_counts(table, batch_id)
        except IcefeedError as probe_error:
            blog.warning("batch_unresolved", error=str(error), probe_error=str(probe_error))
            await self._hand_over(batch_id, blog)
            return []
        if counts:
            blog.warning("batch_committed_despite_error", error=str(error))
            if not await self._still_mine(batch_id, blog):
                return []
            try:
                await self._complete(table, batch_id, files, counts, None, {}, blog)
            except IcefeedError as finish_error:
                blog.warning("batch_finalize_failed", error=str(finish_error))
                await self._hand_over(batch_id, blog)
            return []
        return await self._release_unwritten(table, batch_id, files, error, blog)

    async def _release_unwritten(
        self,
        table: str,
        batch_id: UUID,
        files: list[FileWork],
        error: IcefeedError,
        blog: structlog.typing.FilteringBoundLogger,
        settled: dict[int, FileResult] | None = None,
    ) -> list[list[FileWork]]:
        """Release a batch that certainly has no rows and no running append: retry, fail a lone
        bad file, or split the batch in two to find the culprit(s) (returns the halves). Files
        whose GET already settled them for good (GONE, SKIPPED) keep that outcome: they are not
        claimed again."""
        blog.warning("batch_failed", error_class=error.error_class, error=str(error), files=len(files))
        final = {i: r for i, r in (settled or {}).items() if r.status in (GONE, SKIPPED)}
        open_files = [f for f in files if f.file_id not in final]
        done = list(final.values())
        if not open_files:
            await self._abort_counted(batch_id, error, done)
            return []
        if isinstance(error, TransientError) or len(open_files) == 1:
            status = FAILED if isinstance(error, DataError) else PENDING
            results = [FileResult(f.file_id, status, None, error.error_class, error.message) for f in open_files]
            won = await self._abort_counted(batch_id, error, done + results)
            if status == FAILED and won:
                log.warning(
                    "file_failed", bucket=open_files[0].bucket, key=open_files[0].key, error_class=error.error_class
                )
            return []
        results = [
            FileResult(f.file_id, PENDING, None, error.error_class, "batch split to isolate a bad file")
            for f in open_files
        ]
        if await self._abort_counted(batch_id, error, done + results):
            return list(halves(open_files))
        return []

    async def _abort_counted(self, batch_id: UUID, error: IcefeedError, results: list[FileResult]) -> bool:
        """Abort the batch with these per-file results; count the final ones if it was ours."""
        won = await self.ledger.abort(batch_id, self.owner, error.error_class, error.message, results)
        if won:
            for status, count in Counter(r.status for r in results if r.status != PENDING).items():
                self.metrics.file_outcome(status, count)
        return won

    async def _changed(self, files: list[FileWork]) -> dict[int, FileResult]:
        """Engine-read files whose object is no longer the claimed version: the engine may have
        read another version (overwritten, or overwritten and then deleted: a deleted object's
        rows cannot be told apart either). Their outcome, once their rows are removed."""
        heads = await asyncio.gather(*(self._head(f.bucket, f.key) for f in files))
        out: dict[int, FileResult] = {}
        for f, h in zip(files, heads, strict=True):
            if h is None:
                why = "object was deleted while its batch was open: its rows could not be verified and were removed"
                out[f.file_id] = FileResult(f.file_id, GONE, None, "ObjectGone", why)
            elif h.etag != f.etag:
                why = "object was overwritten while it was read: its rows were removed, the newer version loads"
                out[f.file_id] = FileResult(f.file_id, SKIPPED, None, "Superseded", why)
        return out

    async def _complete(
        self,
        table: str,
        batch_id: UUID,
        files: list[FileWork],
        counts: dict[str, int],
        result: WriteResult | None,
        settled: dict[int, FileResult],
        blog: structlog.typing.FilteringBoundLogger,
        timing: dict[str, float] | None = None,
        held_since: float | None = None,
    ) -> bool:
        """A committed batch, under the table lock: (1) rows of a file whose object changed while
        the engine read it by path are removed (they may be the newer version's; that version
        loads from its own event); (2) ``replace``: the older versions' rows are deleted, after
        the append, so a failure in between leaves both and a retry converges; (3) finalize.
        Idempotent, so recovery runs the same steps."""
        settled = dict(settled)
        also_replaced: list[int] = []
        local = result.local if result is not None else frozenset()
        by_path = [
            f for f in files if counts.get(f.source_file) and f.file_id not in settled and f.file_id not in local
        ]
        changed = await self._changed(by_path) if by_path else {}
        if changed and not deletes_rows(self.settings.spark.table_format):
            for f in by_path:  # a format without DELETE (the test-only parquet tables) keeps them
                if f.file_id in changed:
                    log.error("file_version_changed", bucket=f.bucket, key=f.key, table=table, rows_removed=0)
            changed = {}
        if changed:
            sources = {f.source_file for f in by_path if f.file_id in changed}
            removed = await self.sink.delete_batch_rows(table, batch_id, sorted(sources))
            counts = {k: v for k, v in counts.items() if k not in sources}
            settled.update(changed)
            if result is None:
                # Recovery: an earlier attempt may have deleted the older versions' rows already
                # (replace), so they go too, and are recorded REPLACED; the object's current
                # version decides what the key holds (it loads from its own event, or is gone).
                dropped = [
                    f
                    for f in by_path
                    if f.file_id in changed and self.routes.by_name(f.ingestion).on_overwrite == "replace"
                ]
                if dropped:
                    await self.sink.delete_replaced(table, sorted({f.source_file for f in dropped}), batch_id)
                    also_replaced = [f.file_id for f in dropped]
            for f in by_path:
                if f.file_id in changed:
                    log.warning(
                        "file_version_changed",
                        bucket=f.bucket,
                        key=f.key,
                        table=table,
                        status=changed[f.file_id].status,
                        rows_removed=removed,
                    )
        if result is not None:
            replacing = set(result.request_replace) & set(result.plan.loaded)
        else:
            replacing, _ = await self._replace_plan([f for f in files if counts.get(f.source_file)], settled)
        replacing -= set(settled)
        if replacing:
            await self.sink.delete_replaced(
                table, sorted({f.source_file for f in files if f.file_id in replacing}), batch_id
            )
        return await self._finalize(
            batch_id, table, files, counts, blog, result, settled, timing, held_since, sorted(replacing), also_replaced
        )

    async def _results(
        self,
        files: list[FileWork],
        counts: dict[str, int],
        result: WriteResult | None,
        settled: dict[int, FileResult] | None = None,
        batch_id: UUID | None = None,
    ) -> list[FileResult]:
        """Per-file outcome of a committed batch. Without the write's plan (recovery), a file
        that left no rows is released to load again: it may have been empty, quarantined or
        gone, and loading it again cannot duplicate anything. ``settled``: files decided before
        the write (found gone or replaced when fetched)."""
        settled = settled or {}

        async def one(f: FileWork) -> FileResult:
            if f.file_id in settled:
                return settled[f.file_id]
            rows = counts.get(f.source_file, 0)
            if result is not None and f.file_id in result.unreadable:
                error = result.unreadable[f.file_id]
                log.warning("file_failed", bucket=f.bucket, key=f.key, error_class=error.error_class)
                return FileResult(f.file_id, FAILED, None, error.error_class, error.message)
            if result is not None:
                decision = result.plan.decisions.get(f.file_id)
                if decision is not None and not decision.load:
                    return FileResult(f.file_id, QUARANTINED, 0, decision.error_class, decision.reason)
            elif rows == 0:
                return FileResult(f.file_id, PENDING, None, "Recovered", "committed batch left no rows: load again")
            read = result is not None and f.file_id in result.local  # the worker's GET found it
            if rows == 0 and not read and await self._head(f.bucket, f.key) is None:
                return FileResult(f.file_id, GONE, 0, "ObjectGone", "object disappeared before it was read")
            if result is not None:
                rejected, where = result.rejected.get(f.file_id, (None, None))
            elif batch_id is not None:
                rejected, where = await self._recovered_bad_records(f, batch_id)
            else:
                rejected, where = None, None
            return FileResult(f.file_id, LOADED, rows, rows_rejected=rejected, bad_records=where)

        return list(await asyncio.gather(*(one(f) for f in files)))

    async def _finalize(
        self,
        batch_id: UUID,
        table: str,
        files: list[FileWork],
        counts: dict[str, int],
        blog: structlog.typing.FilteringBoundLogger,
        result: WriteResult | None,
        settled: dict[int, FileResult] | None = None,
        timing: dict[str, float] | None = None,
        held_since: float | None = None,
        replacing: list[int] | None = None,
        also_replaced: list[int] | None = None,
    ) -> bool:
        """Record the committed batch in the ledger; False if another worker's sweeper settled it.
        ``timing`` and ``held_since`` (when the table lock was taken) go into the log line;
        ``replacing``: files whose older versions' rows were deleted (marked REPLACED)."""
        known = {f.source_file for f in files}
        strangers = set(counts) - known
        if strangers:
            blog.error("batch_lineage_mismatch", unexpected=sorted(strangers)[:5])
        results = await self._results(files, counts, result, settled, batch_id)
        quarantines = self._quarantines(table, files, result) if result else []
        version = await self._schema_version(batch_id, table, files, result, results)
        replaced = [r.file_id for r in results if r.status == LOADED and r.file_id in set(replacing or ())]
        replaced += also_replaced or []  # their older versions' rows were deleted, then their own
        if await self.ledger.finalize(batch_id, self.owner, results, quarantines, version, replaced):
            self.metrics.files_finalized(results, files, self.engine_of(table))
            if held_since is not None:  # the table lock's hold: bounds one table's commit rate
                timing = {**(timing or {}), "held_s": round(time.monotonic() - held_since, 3)}
            blog.info(
                "batch_committed",
                files=len(files),
                rows=sum(r.rows or 0 for r in results),
                quarantined=len(quarantines),
                schema_version=bool(version),
                **(timing or {}),
            )
            for q in quarantines:
                f = next(f for f in files if f.file_id == q.file_id)
                log.warning("file_quarantined", bucket=f.bucket, key=f.key, table=table, diff=q.reason)
            return True
        blog.warning("batch_finalize_lost", reason="lease taken over; the sweeper settles it")
        return False

    def _quarantines(self, table: str, files: list[FileWork], result: WriteResult) -> list[Quarantine]:
        plan = result.plan
        out = []
        for decision in plan.quarantined:
            f = next(f for f in files if f.file_id == decision.file_id)
            out.append(
                Quarantine(
                    file_id=decision.file_id,
                    table=table,
                    ingestion=f.ingestion,
                    policy=plan.policy.value,
                    signature=decision.signature,
                    table_schema=to_spark_json(plan.table) if plan.table is not None else None,
                    incoming_schema=to_spark_json(result.file_schemas[decision.file_id]),
                    changes=[change_json(c) for c in decision.changes],
                    reason=decision.reason,
                )
            )
        return out

    async def _schema_version(
        self,
        batch_id: UUID,
        table: str,
        files: list[FileWork],
        result: WriteResult | None,
        results: list[FileResult],
    ) -> SchemaVersion | None:
        """A new registry entry when the table's schema differs from the last one recorded."""
        loaded = [r.file_id for r in results if r.status == LOADED]
        if not loaded:
            return None
        current = result.plan.target if result is not None else await self.sink.table_schema(table)
        if current is None:
            return None
        latest = await self.ledger.latest_schema(table)
        before = from_spark_json(latest) if latest is not None else Struct(())
        if latest is not None and before == current:
            return None
        first = next(f for f in files if f.file_id == loaded[0])
        changes = [c for c in diff(before, current) if c.requires_table_change]
        return SchemaVersion(
            table=table,
            schema=to_spark_json(current),
            changes=[change_json(c) for c in changes],
            ingestion=first.ingestion,
            first_file=first.source_file,
            batch_id=batch_id,
        )

    # -- recovery --------------------------------------------------------------------------

    async def recover(self, batch_id: UUID, table: str) -> None:
        """A batch whose owner stopped renewing its lease. Never fenced → it cannot have written:
        release. Fenced → under the table lock, stop its engine session (or, if the engine cannot
        confirm, wait until its detached-execution limit has passed), then ask the table: rows →
        complete it; none → release."""
        blog = log.bind(batch_id=str(batch_id), table=table, engine=self.engine_of(table))
        files = await self.ledger.batch_files(batch_id)
        work = await self.ledger.engine_work(batch_id)
        if work.session_id is None:
            await self._release_recovered(batch_id, files, "owner vanished before its append")
            blog.info("batch_recovered", outcome="released", files=len(files), appended=False)
            return
        try:
            async with self.ledger.table_lock(table, self.settings.lease.recovery_lock_wait_s):
                if not await self.sink.stop(work.session_id, table):
                    # an append starts at most ttl/2 after its writer last vouched (write_started_at)
                    limit = self.detached_limit_s(table) + self.settings.lease.ttl_s / 2
                    if (work.started_s_ago or 0.0) < limit:
                        blog.warning(
                            "batch_recovery_deferred",
                            reason="the engine did not confirm the batch's session stopped",
                            wait_s=round(limit - (work.started_s_ago or 0.0)),
                        )
                        return
                    blog.warning("batch_stop_unconfirmed", waited_out_s=limit)
                counts = await self.sink.batch_counts(table, batch_id)
                if counts:
                    await self._complete(table, batch_id, files, counts, None, {}, blog)
                    blog.info("batch_recovered", outcome="committed", files=len(files))
                else:
                    await self._release_recovered(batch_id, files, "owner vanished before its commit")
                    blog.info("batch_recovered", outcome="released", files=len(files), appended=True)
        except IcefeedError as error:
            blog.warning("batch_recovery_deferred", error=str(error))

    async def _release_recovered(self, batch_id: UUID, files: list[FileWork], why: str) -> None:
        results = [FileResult(f.file_id, PENDING, None, "Recovered", f"batch {why}") for f in files]
        await self.ledger.abort(batch_id, self.owner, "Recovered", why, results)

    async def audit(self, limit: int = 10) -> int:
        """The last line: released batches whose append started are probed once their engine's
        detached-execution window has passed; rows found there (an append that landed after all)
        are deleted under the table lock. Returns the rows removed."""
        removed = 0
        for batch in await self.ledger.audit_candidates(self.settings.lease.audit_delay_s, limit):
            blog = log.bind(batch_id=str(batch.batch_id), table=batch.table, engine=self.engine_of(batch.table))
            try:
                async with self.ledger.table_lock(batch.table, self.settings.lease.recovery_lock_wait_s):
                    counts = await self.sink.batch_counts(batch.table, batch.batch_id)
                    if counts and not deletes_rows(self.settings.spark.table_format):
                        # a format without DELETE (the test-only parquet tables): found, not removable
                        blog.error("zombie_rows_found", rows=sum(counts.values()), files=len(counts))
                        counts = {}
                    rows = await self.sink.delete_batch_rows(batch.table, batch.batch_id) if counts else 0
            except IcefeedError as error:
                blog.warning("batch_audit_deferred", error=str(error))
                with contextlib.suppress(IcefeedError):
                    await self.ledger.mark_audited(batch.batch_id, None)
                continue
            if rows:
                removed += rows
                self.metrics.zombie_rows_removed.inc(rows)
                blog.error("zombie_rows_removed", rows=rows, files=len(counts))
            await self.ledger.mark_audited(batch.batch_id, rows)
        return removed
