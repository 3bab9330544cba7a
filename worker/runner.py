"""The long-running worker: receivers, per-table committers, heartbeats, sweeper, shutdown.

Only this module turns outcomes into SQS calls. Lifetimes: the caller owns the clients; ``run``
owns the tasks, and returns once everything it held is finished or released.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from worker.domain.batching import BatchBuffer, BatchLimits, FileWork
from worker.domain.errors import IcefeedError
from worker.domain.fairness import LaneKey, defer, queue_share
from worker.domain.outcomes import Ack, Outcome, Retry, combine, outcome_for, retry
from worker.observability.metrics import Metrics
from worker.pipeline import Pipeline, retry_policy
from worker.ports import Message, MessageSource
from worker.settings import Settings

log = structlog.get_logger("icefeed.runner")
SQS_MAX_VISIBILITY_S = 43200
#: Extra side tasks run next to the heartbeat and the sweeper (the HTTP endpoint, gauges).
SideTask = tuple[str, Callable[[], Awaitable[None]]]


@dataclass(eq=False)
class Tracked:
    message: Message
    received_at: float
    visible_until: float
    waiting: set[int] = field(default_factory=set)
    files: set[int] = field(default_factory=set)
    outcomes: list[Outcome] = field(default_factory=list)


@dataclass(eq=False)
class TableLane:
    """Files waiting for one destination table, and the committer that drains them."""

    table: str
    engine: str
    buffer: BatchBuffer
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    held: set[int] = field(default_factory=set)  # files admitted to this lane, not settled yet
    running: int = 0  # batches of this lane in flight (their commits still take the table lock in turn)
    settling: int = 0  # finished batches whose messages are still being acked or requeued

    @property
    def busy(self) -> bool:
        return self.running > 0 or self.settling > 0


class Runner:
    def __init__(
        self, settings: Settings, pipeline: Pipeline, source: MessageSource, metrics: Metrics | None = None
    ) -> None:
        self.s = settings
        self.pipeline = pipeline
        self.source = source
        self.retries = retry_policy(settings)
        self.metrics = metrics or pipeline.metrics
        self.metrics.watch_inflight(lambda: len(self._waiters))
        self.receivers: list[asyncio.Task[None]] = []
        self.heartbeat_at = time.monotonic()
        self.failure: IcefeedError | None = None
        self._tracked: dict[tuple[str, str], Tracked] = {}  # by (queue, receipt handle): one entry per delivery
        self._waiters: dict[int, list[Tracked]] = {}
        self._lanes: dict[str, TableLane] = {}
        self._lane_of: dict[int, TableLane] = {}  # file id -> the lane holding it
        self._room = asyncio.Condition()
        self._waiting_room: dict[str, int] = {}  # queue -> its receivers waiting for room
        # Room kept free for receivers to find other tables' files behind one table's flood
        # (only where the routes write more than one table).
        self._lane_reserve = settings.sqs.max_messages * settings.sqs.receivers if pipeline.tables() > 1 else 0
        self._draining = False
        self._idle = asyncio.Event()
        self._committer_tasks: list[asyncio.Task[None]] = []
        self._max_receives: dict[str, int | None] = {}
        self.stats = {"received": 0, "acked": 0, "requeued": 0, "empty_receives": 0}

    # -- capacity (backpressure) ---------------------------------------------------------------

    def _has_room(self, queue_url: str) -> bool:
        """Room for one more receive on ``queue_url``: in the window, and within the queue's
        share of it (docs/engines.md, "Fairness")."""
        sqs = self.s.sqs
        if len(self._tracked) + sqs.max_messages > sqs.max_in_flight:
            return False
        if len(sqs.queue_urls) == 1:
            return True
        held: dict[str, int] = {}
        for t in self._tracked.values():
            held[t.message.queue_url] = held.get(t.message.queue_url, 0) + 1
        waiting = [q for q, n in self._waiting_room.items() if n > 0]
        share = queue_share(sqs.max_in_flight, held, waiting, queue_url)
        return held.get(queue_url, 0) + sqs.max_messages <= max(share, sqs.max_messages)

    async def _wait_for_room(self, queue_url: str, stop: asyncio.Event) -> None:
        async with self._room:
            if stop.is_set() or self._has_room(queue_url):
                return
            self._waiting_room[queue_url] = self._waiting_room.get(queue_url, 0) + 1
            self._room.notify_all()  # the other queues' shares just shrank
            try:
                await self._room.wait_for(lambda: stop.is_set() or self._has_room(queue_url))
            finally:
                self._waiting_room[queue_url] -= 1

    async def _notify_room(self) -> None:
        async with self._room:
            self._room.notify_all()

    # -- receiving -----------------------------------------------------------------------------

    async def _receive_loop(self, queue_url: str, stop: asyncio.Event) -> None:
        sqs = self.s.sqs
        failures = 0
        stop_wait = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                await self._wait_for_room(queue_url, stop)
                if stop.is_set():
                    break
                polled = time.monotonic()
                receive = asyncio.ensure_future(
                    self.source.receive(queue_url, sqs.max_messages, sqs.wait_time_s, sqs.visibility_timeout_s)
                )
                # A long poll is never abandoned mid-flight (its messages would stay invisible):
                # on stop we let it return and hand its messages straight back.
                await asyncio.wait({receive, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                try:
                    messages = await receive
                    failures = 0
                    self.metrics.stage_duration.labels("receive").observe(time.monotonic() - polled)
                except IcefeedError as error:
                    failures += 1
                    delay = min(30.0, 0.5 * 2**failures)
                    log.warning("receive_failed", queue=queue_url, error=str(error), retry_in_s=delay)
                    await _wait(stop, delay)
                    continue
                if not messages:
                    self.stats["empty_receives"] += 1
                    continue
                self.stats["received"] += len(messages)
                self.metrics.received(queue_url, [m.sent_at for m in messages])
                if stop.is_set():
                    await self._release(messages)
                    break
                if await self._admit(messages) == len(messages):
                    # Every file of this receive waits for its lane's share: give the lanes time
                    # to settle a batch before polling again (no receive/defer churn).
                    await _wait(stop, max(1.0, self.s.batch.max_wait_s))
        finally:
            stop_wait.cancel()

    async def _admit(self, messages: list[Message]) -> int:
        """Admit received messages: their files join their tables' lanes. Returns how many
        messages were deferred whole (every file's lane holding its share)."""
        now = time.monotonic()
        for m in messages:
            self._tracked[_key(m)] = Tracked(m, now, now + self.s.sqs.visibility_timeout_s)
        try:
            admissions = await self.pipeline.admit(messages)
        except Exception as error:  # a poison message must not stop the worker
            log.exception("admit_failed", error=str(error), messages=len(messages))
            await self._finish(
                [(self._tracked[_key(m)], [retry(self.retries, m.receive_count, str(error), error)]) for m in messages]
            )
            return 0
        ready: list[tuple[Tracked, list[Outcome]]] = []
        deferred = 0
        for adm in admissions:
            tracked = self._tracked[_key(adm.message)]
            tracked.outcomes.extend(adm.outcomes)
            admitted = 0
            for file_id, work in adm.waiting.items():
                lane = self._lane(work)
                if file_id not in lane.held and self._over_share(lane):
                    tracked.outcomes.append(self._deferral(lane))
                    continue
                admitted += 1
                tracked.waiting.add(file_id)
                tracked.files.add(file_id)
                self._waiters.setdefault(file_id, []).append(tracked)
                self._enqueue(lane, file_id, work)
            if not admitted:
                ready.append((tracked, []))
                deferred += bool(adm.waiting)
        await self._finish(ready)
        return deferred

    # -- fairness --------------------------------------------------------------------------------

    def _over_share(self, lane: TableLane) -> bool:
        held: dict[LaneKey, int] = {(x.engine, x.table): len(x.held) for x in self._lanes.values()}
        window = self.s.sqs.max_in_flight
        return defer(window, self._lane_reserve, self.s.sqs.max_messages, held, (lane.engine, lane.table))

    def _deferral(self, lane: TableLane) -> Retry:
        """A file whose lane holds its share comes back later; the wait is not the file's
        fault, so its message is not spent on it."""
        self.metrics.messages_deferred.labels(lane.engine).inc()
        log.debug("file_deferred", table=lane.table, engine=lane.engine, held=len(lane.held))
        return Retry(
            max(1, self.s.sqs.backoff_base_s),
            f"deferred: table {lane.table} holds its share of the worker's in-flight files",
            in_flight=True,
        )

    # -- batching ------------------------------------------------------------------------------

    def _lane(self, work: FileWork) -> TableLane:
        table = self.pipeline.table_of(work.ingestion)
        lane = self._lanes.get(table)
        if lane is None:
            b = self.s.batch
            limits = BatchLimits(b.max_files, b.max_bytes, b.max_wait_s)
            lane = TableLane(table, self.pipeline.engine_of(table), BatchBuffer(limits))
            self._lanes[table] = lane
            self._committer_tasks.append(self._committers.create_task(self._committer(lane)))
        return lane

    def _enqueue(self, lane: TableLane, file_id: int, work: FileWork) -> None:
        lane.held.add(file_id)
        self._lane_of[file_id] = lane
        lane.buffer.add(work, time.monotonic())
        self._idle.clear()
        lane.wake.set()

    async def _committer(self, lane: TableLane) -> None:
        """Starts the lane's batches, up to ``ICEFEED_BATCH_IN_FLIGHT`` at once: the next batch is
        claimed and fetched while the current one commits."""
        while True:
            now = time.monotonic()
            if lane.running < self.s.batch.in_flight and (
                lane.buffer.ready(now) or (self._draining and len(lane.buffer))
            ):
                files = lane.buffer.take(now)
                lane.running += 1
                task = self._committers.create_task(self._batch(lane, files))
                self._committer_tasks.append(task)
                task.add_done_callback(self._committer_tasks.remove)
                continue
            self._check_idle()
            # A full lane waits for a batch to finish (it sets ``wake``), not for the buffer's deadline:
            # an overdue file cannot start anyway, and a zero timeout would spin.
            deadline = lane.buffer.deadline() if lane.running < self.s.batch.in_flight else None
            lane.wake.clear()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lane.wake.wait(), timeout)

    async def _batch(self, lane: TableLane, files: list[FileWork]) -> None:
        try:
            await self.pipeline.run_batch(lane.table, files)
        except IcefeedError as error:
            log.warning("batch_aborted", table=lane.table, error=str(error), files=len(files))
        except Exception as error:  # the lease runs out; a sweeper settles it
            log.exception("batch_crashed", table=lane.table, error=str(error), files=len(files))
        finally:
            lane.running -= 1
            lane.settling += 1  # the lane is not idle (a drain must not release these messages) ...
            lane.wake.set()
        try:
            await self._settle_files([f.file_id for f in files])
        finally:
            lane.settling -= 1  # ... until they are acked or requeued
        self._check_idle()

    def _check_idle(self) -> None:
        if all(not lane.busy and not len(lane.buffer) for lane in self._lanes.values()):
            self._idle.set()

    async def _settle_files(self, file_ids: list[int]) -> None:
        affected: dict[int, Tracked] = {}
        for file_id in file_ids:
            lane = self._lane_of.pop(file_id, None)
            if lane is not None:
                lane.held.discard(file_id)
            for tracked in self._waiters.pop(file_id, []):
                affected[id(tracked)] = tracked
        if not affected:
            return
        ready: list[tuple[Tracked, list[Outcome]]] = []
        unreachable: IcefeedError | None = None
        try:
            states = await self.pipeline.file_states(file_ids)
        except IcefeedError as error:
            log.warning("settle_failed", error=str(error))
            states, unreachable = {}, error
        for tracked in affected.values():
            done = tracked.waiting & set(file_ids)
            tracked.waiting -= done
            for file_id in done:
                state = states.get(file_id)
                receives = tracked.message.receive_count
                tracked.outcomes.append(
                    outcome_for(self.retries, receives, state)
                    if state
                    else retry(self.retries, receives, "ledger unreachable", unreachable)
                )
            if not tracked.waiting:
                ready.append((tracked, []))
        await self._finish(ready)

    # -- turning outcomes into SQS calls ---------------------------------------------------------

    async def _finish(self, items: list[tuple[Tracked, list[Outcome]]]) -> None:
        deletes: list[Message] = []
        delays: list[tuple[Message, int]] = []
        doomed: list[Tracked] = []
        renew: list[tuple[Message, int]] = []
        for tracked, extra in items:
            outcome = combine(tracked.outcomes + extra)
            m = tracked.message
            mlog = log.bind(message_id=m.message_id)
            limit = self._max_receives.get(m.queue_url)
            if isinstance(outcome, Ack):
                deletes.append(m)
            elif outcome.in_flight and limit is not None and m.receive_count >= limit - 1:
                # Its file is in a batch not settled yet (say one waiting for a frozen lock holder, or
                # for its engine's detached limit): never spend the message on that wait. It is sent
                # again as a fresh message (receive count 0) and this delivery deleted.
                renew.append((m, outcome.delay_s))
                mlog.warning(
                    "message_renewed", delay_s=outcome.delay_s, reason=outcome.reason, receive_count=m.receive_count
                )
            else:
                delays.append((m, outcome.delay_s))
                mlog.info(
                    "message_requeued", delay_s=outcome.delay_s, reason=outcome.reason, receive_count=m.receive_count
                )
                if limit is not None and m.receive_count >= limit:
                    doomed.append(tracked)
                    mlog.warning("message_dead_lettered", receive_count=m.receive_count, reason=outcome.reason)
            self._tracked.pop(_key(m), None)
        try:
            if deletes:
                failed = await self.source.delete(deletes)
                self.stats["acked"] += len(deletes) - len(failed)
                self.metrics.messages_acked.inc(len(deletes) - len(failed))
                lost = {id(m) for m in failed}
                for m in deletes:
                    if id(m) in lost:
                        log.warning("message_delete_failed", message_id=m.message_id, hint="it comes back; acked then")
                    else:
                        log.debug("message_acked", message_id=m.message_id)
            if delays:
                _requeue_failed(await self.source.change_visibility(delays))
                self.stats["requeued"] += len(delays)
                self.metrics.messages_requeued.inc(len(delays))
        except IcefeedError as error:
            # The messages come back when their visibility runs out; the ledger makes that safe.
            log.warning("sqs_settle_failed", error=str(error), deletes=len(deletes), requeues=len(delays))
        for m, delay in renew:
            await self._renew(m, delay)
        if doomed:
            self.metrics.messages_dead_lettered.inc(len(doomed))
            # Its next receive moves it to the DLQ (the queue's redrive policy): say so in the ledger.
            for tracked in doomed:
                try:
                    await self.pipeline.note_dead_letter(sorted(tracked.files), tracked.message.receive_count)
                except IcefeedError as error:
                    log.warning("dead_letter_note_failed", error=str(error))
        if items:
            await self._notify_room()

    async def _renew(self, m: Message, delay_s: int) -> None:
        """Send a message again, then delete this delivery (a crash in between leaves two: the
        ledger absorbs the duplicate). If the send fails, keep this delivery invisible for as long
        as settling a batch can take instead."""
        try:
            await self.source.resend(m, delay_s)
        except IcefeedError as error:
            held = min(self._settle_bound_s, SQS_MAX_VISIBILITY_S - 60)
            log.warning("message_renew_failed", message_id=m.message_id, error=str(error), held_s=held)
            with contextlib.suppress(IcefeedError):
                await self.source.change_visibility([(m, held)])
            return
        self.metrics.messages_requeued.inc()
        with contextlib.suppress(IcefeedError):
            await self.source.delete([m])

    async def _release(self, messages: list[Message]) -> None:
        """Hand messages straight back to the queue (visibility 0)."""
        if not messages:
            return
        try:
            await self.source.change_visibility([(m, 0) for m in messages])
        except IcefeedError as error:
            log.warning("release_failed", error=str(error), messages=len(messages))
        for m in messages:
            self._tracked.pop(_key(m), None)
        log.info("messages_released", count=len(messages))

    # -- side tasks ------------------------------------------------------------------------------

    @property
    def _settle_bound_s(self) -> int:
        """How long an unsettled batch can take to be settled by a sweeper: its lease, the orphan
        grace, a wait for the engine's detached limit, and two sweeps."""
        lease = self.s.lease
        return int(self.pipeline.detached_limit_s() + lease.ttl_s + lease.orphan_grace_s + 2 * lease.sweep_interval_s)

    @property
    def heartbeat_interval(self) -> float:
        return max(1.0, min(self.s.sqs.visibility_timeout_s, self.s.lease.ttl_s) / 3)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            await self.heartbeat()
            self.heartbeat_at = time.monotonic()

    async def heartbeat(self) -> None:
        try:
            await self.pipeline.renew_leases()
        except IcefeedError as error:
            log.warning("lease_extend_failed", error=str(error))
        vis = self.s.sqs.visibility_timeout_s
        now = time.monotonic()
        due = [
            t
            for t in self._tracked.values()
            if t.visible_until - now < vis / 2 and (now - t.received_at) + vis < SQS_MAX_VISIBILITY_S - 60
        ]
        if not due:
            return
        try:
            failed = {id(m) for m in await self.source.change_visibility([(t.message, vis) for t in due])}
        except IcefeedError as error:
            log.warning("visibility_extend_failed", error=str(error))
            return
        for t in due:
            if id(t.message) not in failed:
                t.visible_until = now + vis

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.s.lease.sweep_interval_s)
            await self.sweep()

    async def sweep(self) -> int:
        """Settle batches whose owner vanished, then audit released ones (docs/guarantees.md)."""
        settled = await self._recover_expired()
        try:
            await self.pipeline.audit()
        except IcefeedError as error:
            log.warning("audit_failed", error=str(error))
        return settled

    async def _recover_expired(self) -> int:
        try:
            expired = await self.pipeline.expired_batches(20)
        except IcefeedError as error:
            log.warning("sweep_failed", error=str(error))
            return 0
        for batch in expired:
            try:
                await self.pipeline.recover_expired(batch)
            except IcefeedError as error:
                log.warning("batch_recovery_failed", batch_id=str(batch.batch_id), error=str(error))
        return len(expired)

    # -- lifetime --------------------------------------------------------------------------

    async def _load_redrive_limits(self) -> None:
        for queue in self.s.sqs.queue_urls:
            try:
                self._max_receives[queue] = await self.source.max_receive_count(queue)
            except IcefeedError as error:
                log.warning("redrive_policy_unknown", queue=queue, error=str(error))
            if self._max_receives.get(queue) is None:
                log.warning("queue_without_dlq", queue=queue, hint="set a RedrivePolicy: poison messages loop forever")

    async def _monitor(self, name: str, fn: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
        """A side task that ends (returns or raises) stops the worker: drain, release, exit non-zero."""
        try:
            await fn()
            error = "returned"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.exception("side_task_died", task=name, error=error)
        else:
            log.error("side_task_died", task=name, error=error)
        self.failure = self.failure or IcefeedError(f"side task {name} died: {error}", error_class="SideTaskDied")
        stop.set()

    async def _warm_up(self) -> None:
        """Open the Spark Connect session while the first messages arrive, not inside the first
        batch. Best effort: a failure here shows up again, classified, in the batch."""
        with contextlib.suppress(Exception):
            await self.pipeline.warm_up()

    def _held(self, queue_url: str) -> list[datetime | None]:
        return [t.message.sent_at for t in self._tracked.values() if t.message.queue_url == queue_url]

    async def run(self, stop: asyncio.Event, side_tasks: Sequence[SideTask] = ()) -> None:
        await self._load_redrive_limits()
        for queue in self.s.sqs.queue_urls:
            self.metrics.watch_oldest(queue, functools.partial(self._held, queue))
        log.info("worker_started", worker_id=self.s.worker_id, queues=len(self.s.sqs.queue_urls))
        async with asyncio.TaskGroup() as side, asyncio.TaskGroup() as committers:
            self._committers = committers
            heartbeat = side.create_task(self._monitor("heartbeat", self._heartbeat_loop, stop))
            sweeper = side.create_task(self._monitor("sweeper", self._sweep_loop, stop))
            extras = [side.create_task(self._monitor(name, fn, stop)) for name, fn in side_tasks]
            extras.append(side.create_task(self._warm_up()))
            receivers = self.receivers = [
                side.create_task(self._receive_loop(q, stop))
                for q in self.s.sqs.queue_urls
                for _ in range(self.s.sqs.receivers)
            ]
            await stop.wait()
            log.info("worker_stopping", grace_s=self.s.shutdown_grace_s, in_flight=len(self._tracked))
            async with self._room:
                self._room.notify_all()
            await asyncio.gather(*receivers)
            self._draining = True
            for lane in self._lanes.values():
                lane.wake.set()
            self._check_idle()
            try:
                await asyncio.wait_for(self._idle.wait(), self.s.shutdown_grace_s)
                log.info("worker_drained")
            except TimeoutError:
                log.warning("drain_timed_out", batches=self.pipeline.batches_in_flight)
            await self._abandon()
            sweeper.cancel()
            heartbeat.cancel()
            for task in [*extras, *self._committer_tasks]:
                task.cancel()
        log.info("worker_stopped", **self.stats, sqs_calls=dict(self.source.calls))
        if self.failure is not None:
            raise self.failure

    async def _abandon(self) -> None:
        """After the grace: stop Spark work, hand batches to the sweepers, release messages."""
        try:
            await self.pipeline.abandon()
        except IcefeedError as error:
            log.warning("lease_release_failed", error=str(error))
        for lane in self._lanes.values():
            lane.buffer.drain()
        await self._release([t.message for t in list(self._tracked.values())])


def _requeue_failed(unchanged: list[Message]) -> None:
    for m in unchanged:  # it comes back when the visibility of its receive runs out
        log.warning("message_requeue_failed", message_id=m.message_id, hint="back after its visibility timeout")


def _key(message: Message) -> tuple[str, str]:
    """A delivery, not a message: SQS may hand out the same message again (a new receipt handle)
    while this worker still holds an earlier delivery of it."""
    return (message.queue_url, message.receipt_handle)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
