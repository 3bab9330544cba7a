"""The simulated fleet: several real workers (``Pipeline`` + ``Runner``) against one set of fakes,
on the virtual loop, with seeded uploads and seeded faults. ``simulate(seed)`` runs one
schedule and returns its result (violations + a readable trace).

Every call a worker makes to a port goes through its ``gate``: a scheduling point (a seeded
latency), where faults strike — crash (the worker never runs again: its PostgreSQL connections
drop, its engine client detaches, the engine may keep its append running), freeze (nothing it
does reaches the outside world for a while, heartbeat included), an object overwritten or
deleted. Other faults are timed: a lock connection dropped while held, engine failures and
slowness, unreachable engine, at-least-once redelivery, a sweep at any moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import inspect
import json
import random
import types
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import structlog

import worker.pipeline
import worker.runner
from tests.fakes import (
    COMMITTED,
    REPLACED,
    ROUTES,
    WRITING,
    FakeEngine,
    FakeLedger,
    FakeQueue,
    FakeStore,
    FakeTableLock,
    QueuedMessage,
    WriteFault,
    body_of,
    source_uri,
)
from tests.harness import s3_record
from tests.sim.loop import VirtualClock, VirtualLoop
from worker.adapters.local_read import LocalDecoder
from worker.domain.outcomes import TERMINAL
from worker.pipeline import Pipeline
from worker.runner import Runner
from worker.settings import Settings, load_settings

WORKER: contextvars.ContextVar[str] = contextvars.ContextVar("sim_worker", default="sim")
QUEUE = "https://sqs.sim/queue"
BUCKET = "landing"
FINAL = frozenset(TERMINAL) | {REPLACED}
FENCED = hasattr(worker.pipeline, "Fence") or "fence" in inspect.getsource(worker.pipeline)
FAULT_KINDS = (
    "crash",
    "freeze",
    "lock_drop",
    "engine_fail",
    "engine_slow",
    "engine_unreachable",
    "redeliver",
    "duplicate",
    "overwrite",
    "delete",
    "sweep",
    "zombie",
    "stuck_stop",
)


class Dead(BaseException):
    """Raised into a crashed worker's calls at teardown."""


# --- trace ----------------------------------------------------------------------------------------


@dataclass
class Trace:
    clock: VirtualClock
    lines: list[tuple[float, str, str]] = field(default_factory=list)

    def add(self, text: str, who: str | None = None) -> None:
        self.lines.append((self.clock.now, who or WORKER.get(), text))

    def render(self, last: int | None = None) -> str:
        lines = self.lines if last is None else self.lines[-last:]
        return "\n".join(f"{t:9.3f}  {who:<6} {text}" for t, who, text in lines)


_KEEP = ("batch_id", "table", "files", "offered", "outcome", "error_class", "error", "reason", "status", "key")
_QUIET = frozenset({"message_requeued", "record_ignored", "message_acked", "file_unrouted"})
CURRENT: list[Trace] = []


def _capture(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    if CURRENT and event.get("event") not in _QUIET:
        parts = []
        for k in _KEEP:
            if k in event:
                v = event[k]
                parts.append(f"{k}={str(v)[:8] if k == 'batch_id' else str(v)[:80]}")
        CURRENT[-1].add(f"{event.get('event')} {' '.join(parts)}".rstrip())
    raise structlog.DropEvent


# --- scenario ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    kind: str
    slot: int = 0  # which worker (gate faults)
    step: int = 0  # at that worker's n-th port call (gate faults) / n-th write or lock (engine, lock)
    at: float = 0.0  # virtual time (timed faults)
    seconds: float = 0.0
    mode: str = ""

    def describe(self) -> str:
        bits = {
            "crash": f"crash w{self.slot} at its call #{self.step} ({self.mode} the call)",
            "freeze": f"freeze w{self.slot} at its call #{self.step} for {self.seconds:g} s",
            "lock_drop": f"drop the connection of table lock #{self.step} {self.seconds:g} s after it is taken",
            "engine_fail": f"engine write #{self.step} fails {self.mode} its commit"
            if self.mode != "stream"
            else f"engine write #{self.step}: its client's stream breaks 0.3 s in, the append goes on",
            "engine_slow": f"engine write #{self.step} is {self.seconds:g} s slower",
            "engine_unreachable": f"engine unreachable at t={self.at:g} for {self.seconds:g} s",
            "redeliver": f"a message in flight is delivered again at t={self.at:g}",
            "duplicate": "every notification is sent twice",
            "overwrite": f"an object is overwritten at w{self.slot}'s call #{self.step}",
            "delete": f"an object is deleted at w{self.slot}'s call #{self.step}",
            "sweep": f"a sweep runs at t={self.at:g}",
            "stuck_stop": f"engine write #{self.step} is 10 s slower, its worker dies 0.5 s into the append and "
            "the engine cannot confirm a stop of its session (the append runs on within the engine's limit)",
            "zombie": f"engine write #{self.step} is 10 s slower, its worker dies 0.5 s into the append, and the "
            "engine confirms the stop of its session but lets it commit (a lost interrupt; concurrent commits "
            "to one table fail, as in an Iceberg catalog)",
        }
        return bits[self.kind]


@dataclass(frozen=True)
class Upload:
    at: float
    key: str
    rows: int
    bad: bool = False
    delete: bool = False


@dataclass
class Scenario:
    seed: int
    workers: int
    uploads: list[Upload]
    faults: list[Fault]
    append_s: float
    detached_limit_s: float | None
    in_flight: int
    max_files: int
    lost_notice_s: float = 0.0

    @property
    def detached_setting_s(self) -> int:
        """ICEFEED_SPARK_DETACHED_LIMIT_S as measured for this engine: at least as long as it
        keeps a detached append running (without a limit: as long as the slowest append)."""
        if self.detached_limit_s is None:
            return int(self.append_s + 31)
        return int(self.detached_limit_s) + 1

    def describe(self) -> str:
        up = ", ".join(
            f"{u.key}{'(bad)' if u.bad else ''}{'(delete)' if u.delete else ''}@{u.at:g}" for u in self.uploads
        )
        faults = "; ".join(f.describe() for f in self.faults) or "none"
        limit = "none" if self.detached_limit_s is None else f"{self.detached_limit_s:g} s"
        return (
            f"seed {self.seed}: {self.workers} workers, append {self.append_s:g} s, detached limit {limit}, "
            f"in_flight {self.in_flight}, max_files {self.max_files}\n  uploads: {up}\n  faults: {faults}"
        )


def scenario(seed: int, kinds: tuple[str, ...] = FAULT_KINDS, overwrites: bool = True) -> Scenario:
    """The uploads and faults of one seed. ``overwrites`` False: every key is uploaded once."""
    rng = random.Random(seed)
    uploads: list[Upload] = []
    for n in range(rng.randint(3, 8)):
        key = f"{rng.choice(['ev', 'rp'])}/k{n}.json"
        at = round(rng.uniform(0, 8), 3)
        uploads.append(Upload(at, key, rng.randint(1, 4), bad=rng.random() < 0.05))
        for _ in range(rng.choice([0, 0, 1, 1, 2]) if overwrites else 0):
            at = round(at + rng.choice([0.05, 0.3, 1.0, 4.0, 12.0]) * rng.random(), 3)
            uploads.append(Upload(at, key, rng.randint(1, 4)))
        if rng.random() < 0.08 and overwrites:
            uploads.append(Upload(round(at + rng.uniform(0, 10), 3), key, 0, delete=True))
    uploads.sort(key=lambda u: u.at)
    workers = rng.choice([2, 3])
    faults: list[Fault] = []
    for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 4]) if kinds else 0):
        kind = rng.choice(kinds)
        slot = rng.randint(1, workers)
        step = rng.randint(1, 150)
        if kind == "crash":
            faults.append(Fault(kind, slot, step, mode=rng.choice(["before", "after"])))
        elif kind == "freeze":
            faults.append(Fault(kind, slot, step, seconds=rng.choice([1.0, 4.0, 9.0, 20.0, 60.0])))
        elif kind == "lock_drop":
            faults.append(Fault(kind, step=rng.randint(1, 8), seconds=round(rng.uniform(0, 1.5), 3)))
        elif kind == "engine_fail":
            faults.append(Fault(kind, step=rng.randint(1, 8), mode=rng.choice(["before", "after", "stream"])))
        elif kind == "engine_slow":
            faults.append(Fault(kind, step=rng.randint(1, 8), seconds=rng.choice([3.0, 10.0, 30.0])))
        elif kind == "engine_unreachable":
            faults.append(Fault(kind, at=round(rng.uniform(0, 30), 3), seconds=rng.choice([1.0, 5.0, 20.0])))
        elif kind in ("redeliver", "sweep"):
            faults.append(Fault(kind, at=round(rng.uniform(0, 30), 3)))
        elif kind == "duplicate":
            faults.append(Fault(kind))
        elif kind in ("zombie", "stuck_stop"):
            faults.append(Fault(kind, step=rng.randint(1, 6)))
        else:  # overwrite, delete
            faults.append(Fault(kind, slot, step))
    return Scenario(
        seed=seed,
        workers=workers,
        uploads=uploads,
        faults=faults,
        append_s=rng.choice([0.05, 0.5, 2.0]),
        detached_limit_s=rng.choice([None, 0.0, 15.0, 60.0]),
        in_flight=rng.choice([1, 2]),
        max_files=rng.choice([1, 3, 6]),
        lost_notice_s=rng.choice([0.0, 1.0, 5.0]),
    )


# --- settings -------------------------------------------------------------------------------------


def sim_settings(worker_id: str, sc: Scenario) -> Settings:
    spark: dict[str, Any] = {"dialect": "spark", "worker_read_max_bytes": 100}
    lease: dict[str, Any] = {"ttl_s": 5, "sweep_interval_s": 1.0, "orphan_grace_s": 1}
    from worker.settings import LeaseSettings, SparkSettings

    if "detached_limit_s" in SparkSettings.model_fields:  # the fence: release waits out the engine's limit
        spark["detached_limit_s"] = sc.detached_setting_s
    for name, value in (("audit_delay_s", sc.detached_setting_s + 5), ("lock_check_s", 1.0)):
        if name in LeaseSettings.model_fields:
            lease[name] = value
    if "recovery_lock_wait_s" in LeaseSettings.model_fields:
        lease["recovery_lock_wait_s"] = 2.0
    return load_settings(
        worker_id=worker_id,
        sqs={
            "queue_urls": [QUEUE],
            "receivers": 1,
            "wait_time_s": 2,
            "visibility_timeout_s": 10,
            "backoff_base_s": 1,
            "backoff_max_s": 8,
            "max_in_flight": 40,
        },
        spark=spark,
        batch={"max_files": sc.max_files, "max_wait_s": 0.3, "in_flight": sc.in_flight},
        lease=lease,
        shutdown_grace_s=5.0,
        http={"port": 0},
    )


# --- a worker and its ports -------------------------------------------------------------------------


class SimWorker:
    def __init__(self, world: World, slot: int, generation: int) -> None:
        self.world = world
        self.slot = slot
        self.name = f"w{slot}" + ("" if generation == 0 else f"r{generation}")
        self.steps = 0
        self.crashed = False
        self.crash_after = False
        self.frozen_until = 0.0
        self.locks: list[FakeTableLock] = []
        self.settings = sim_settings(self.name, world.sc)
        self.pipeline = Pipeline(
            self.settings,
            ROUTES,
            Port(self, "ledger", world.ledger),  # type: ignore[arg-type]
            Port(self, "store", world.store),  # type: ignore[arg-type]
            Port(self, "sink", world.engine),  # type: ignore[arg-type]
            LocalDecoder.for_settings(self.settings.spark),
        )
        self.runner = Runner(self.settings, self.pipeline, Port(self, "queue", world.queue))  # type: ignore[arg-type]
        self.stop = asyncio.Event()
        self.context = contextvars.copy_context()
        self.context.run(WORKER.set, self.name)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), context=self.context)

    async def _run(self) -> None:
        try:
            await self.runner.run(self.stop)
        except Exception as error:  # noqa: BLE001 - recorded: a worker must not die on its own
            self.world.violation(f"{self.name} stopped with {type(error).__name__}: {error}")

    def spawn(self, coro: Any) -> None:
        asyncio.get_running_loop().create_task(coro, context=self.context)

    async def _hang(self) -> None:
        for lock in list(self.locks):
            if lock.conn.alive:
                self.world.ledger.kill_connection(lock)
        await self.world.never

    def crash(self) -> None:
        if self.crashed:
            return
        self.crashed = True
        self.world.trace.add("FAULT crash: the process dies", self.name)
        for lock in list(self.locks):
            if lock.conn.alive:
                self.world.ledger.kill_connection(lock)
        self.world.engine.detach(self.name)
        self.world.restart_later(self.slot)

    async def gate(self, what: str) -> None:
        w = self.world
        if w.over:
            raise Dead
        self.steps += 1
        for fault in w.gate_faults.pop((self.slot, self.name, self.steps), []):
            await w.strike(fault, self, what)
        if self.crashed:
            await self._hang()
        delay = w.rng.random()
        if delay < 0.25:
            await asyncio.sleep(w.rng.choice((0.001, 0.01, 0.05)))
        else:
            await asyncio.sleep(0)
        await self._after_gate()

    async def _after_gate(self) -> None:
        w = self.world
        if w.over:
            raise Dead
        while self.frozen_until > w.clock.now and not self.crashed:
            await asyncio.sleep(self.frozen_until - w.clock.now)
        if self.crashed:
            await self._hang()

    async def returned(self, what: str) -> None:
        if self.crash_after:
            self.crash_after = False
            self.crash()
        await self._after_gate()


class Port:
    """A worker's view of one fake: every call passes the worker's gate before and after."""

    def __init__(self, worker: SimWorker, name: str, target: Any) -> None:
        self._w = worker
        self._name = name
        self._target = target

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._target, attr)
        if not inspect.iscoroutinefunction(value):
            return value
        w, what = self._w, f"{self._name}.{attr}"

        async def call(*args: Any, **kwargs: Any) -> Any:
            await w.gate(what)
            result = await value(*args, **kwargs)
            await w.returned(what)
            return result

        return call

    def table_lock(self, table: str, timeout_s: float) -> Any:
        return self._table_lock(table, timeout_s)

    @asynccontextmanager
    async def _table_lock(self, table: str, timeout_s: float) -> AsyncIterator[Any]:
        w = self._w
        await w.gate("ledger.table_lock")
        async with self._target.table_lock(table, timeout_s) as lock:
            w.locks.append(lock)
            w.world.lock_taken(lock)
            try:
                await w.returned("ledger.table_lock")
                yield Port(w, "lock", lock)
            finally:
                w.locks.remove(lock)

    @property
    def lost(self) -> asyncio.Event:
        ev: asyncio.Event = self._target.lost
        return ev


# --- the world ------------------------------------------------------------------------------------


@dataclass
class Version:
    key: str
    etag: str
    label: str
    rows: int
    bad: bool
    sequencer: str
    at: float


@dataclass
class Result:
    seed: int
    violations: list[str]
    trace: str
    description: str
    end: float
    fingerprint: str
    fault_kinds: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def report(self, last: int = 400) -> str:
        head = f"{self.description}\n  end: t={self.end:.1f}"
        if self.ok:
            return head + "\n  ok"
        return head + "\n  VIOLATIONS:\n    " + "\n    ".join(self.violations) + "\n  trace:\n" + self.trace


class World:
    def __init__(self, sc: Scenario, clock: VirtualClock) -> None:
        self.sc = sc
        self.clock = clock
        self.rng = random.Random(sc.seed * 7919 + 1)
        self.trace = Trace(clock)
        self.over = False
        self.never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ledger = FakeLedger(clock, serialize_keys=FENCED, lost_notice_s=sc.lost_notice_s)
        self.queue = FakeQueue(clock, rng=self.rng, max_receives=8)
        self.store = FakeStore()
        self.engine = FakeEngine(self.store, clock, client=WORKER.get)
        self.engine.append_s = sc.append_s
        self.engine.detached_limit_s = sc.detached_limit_s
        if any(f.kind == "zombie" for f in sc.faults):  # only the audit can repair it: no lost updates
            self.engine.overlap = "conflict"
        self.versions: dict[str, Version] = {}  # by etag
        self.events: dict[str, list[tuple[str, str]]] = {}  # message id -> (key, etag)
        self.renewed: set[str] = set()  # message ids a worker sent again before deleting them
        self.violations: list[str] = []
        self.workers: dict[int, SimWorker] = {}
        self.generations: dict[int, int] = {}
        self.gate_faults: dict[tuple[int, str, int], list[Fault]] = {}
        self.locks_taken = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.sequencer = 0
        self.queue.on_delete = self._on_delete
        self.queue.on_resend = self._on_resend
        self.queue.on_dead_letter = lambda q, m: self.trace.add(f"message {m.message_id} moved to the DLQ", "sqs")
        self.engine.on_change = self._engine_change
        self.ledger.on_change = self._ledger_change
        for f in sc.faults:
            if f.kind in ("crash", "freeze", "overwrite", "delete"):
                self.gate_faults.setdefault((f.slot, f"w{f.slot}", f.step), []).append(f)
            elif f.kind in ("engine_fail", "engine_slow", "zombie", "stuck_stop"):
                was = self.engine.faults.get(f.step, WriteFault())
                fail = f.mode if f.kind == "engine_fail" else was.fail
                slow = f.seconds if f.kind == "engine_slow" else 10.0 if f.kind != "engine_fail" else was.slow_s
                self.engine.faults[f.step] = WriteFault(
                    fail, slow, was.ignore_stop or f.kind == "zombie", was.unconfirmed or f.kind == "stuck_stop"
                )

    # -- tracing hooks -------------------------------------------------------------------------

    def _engine_change(self, what: str, detail: Any) -> None:
        if what == "append_started":
            table, batch_id, client, number = detail
            self.trace.add(f"engine: append #{number} (batch {str(batch_id)[:8]}) to {table} started")
            if any(f.kind in ("zombie", "stuck_stop") and f.step == number for f in self.sc.faults):
                asyncio.get_running_loop().call_later(0.5, self._kill_client, client)
        elif what == "op_committed":
            b = self.ledger.batches.get(detail.request.batch_id)
            self.trace.add(f"engine: append #{detail.number} (batch {str(detail.request.batch_id)[:8]}) committed")
            if b is not None and b.status != WRITING and not detail.fault.ignore_stop:
                self.violation(
                    f"batch {str(b.id)[:8]} committed rows after it was {b.status}, though the engine kept its "
                    "promises (stops honoured, detached appends within the limit)"
                )
        elif what == "op_killed":
            self.trace.add(f"engine: the operation of batch {str(detail[0])[:8]} ended: {detail[1]}")
        else:
            self.trace.add(f"engine: {what} {detail[0]} (table version {detail[1]})")

    def _ledger_change(self, what: str, detail: Any) -> None:
        if what in ("registered", "terminal"):
            return
        if what == "claimed":
            self.trace.add(f"ledger: batch {str(detail[0])[:8]} claimed: {', '.join(map(self.label, detail[2]))}")
        elif what == "committed":
            results = ", ".join(f"{self.label(r.file_id)} {r.status}" for r in detail[2])
            self.trace.add(f"ledger: batch {str(detail[0])[:8]} COMMITTED [{results}]")
        elif what == "aborted":
            self.trace.add(f"ledger: batch {str(detail[0])[:8]} ABORTED ({detail[2]})")
        elif what == "taken_over":
            self.trace.add(f"ledger: batch {str(detail[0])[:8]} of {detail[1]} taken over")
        elif what == "fenced":
            self.trace.add(f"ledger: batch {str(detail[0])[:8]} fenced (writer slot taken)")
        else:
            self.trace.add(f"ledger: {what} {detail}")

    def _kill_client(self, client: str) -> None:
        for w in self.workers.values():
            if w.name == client and not w.crashed:
                w.crash()

    def label(self, file_id: int) -> str:
        row = self.ledger.files.get(file_id)
        v = self.versions.get(row.etag) if row is not None else None
        return v.label if v is not None else f"file {file_id}"

    def violation(self, text: str) -> None:
        if text not in self.violations:
            self.violations.append(text)
            self.trace.add(f"VIOLATION {text}", "check")

    # -- uploads --------------------------------------------------------------------------------

    def upload(self, u: Upload) -> None:
        if u.delete:
            self.store.delete(BUCKET, u.key)
            self.trace.add(f"S3: {u.key} deleted", "s3")
            self.notify(u.key, "", 0, "ObjectRemoved:Delete")
            return
        label = f"{u.key}#{len([v for v in self.versions.values() if v.key == u.key]) + 1}"
        body = b"{not json\n" if u.bad else body_of(u.key, label, u.rows)
        etag = self.store.put(BUCKET, u.key, body)
        self.sequencer += 1
        seq = f"{self.sequencer:016X}"
        self.versions[etag] = Version(u.key, etag, label, u.rows, u.bad, seq, self.clock.now)
        what = "bad" if u.bad else f"{u.rows} rows"
        self.trace.add(f"S3: {label} uploaded ({what}, {len(body)} bytes, etag {etag})", "s3")
        self.notify(u.key, etag, len(body), "ObjectCreated:Put", seq)

    def notify(self, key: str, etag: str, size: int, name: str, sequencer: str | None = None) -> None:
        record = s3_record(BUCKET, key, etag, size, name, sequencer=sequencer)
        when = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.clock.now)
        record["eventTime"] = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        body = json.dumps({"Records": [record]})
        copies = 2 if any(f.kind == "duplicate" for f in self.sc.faults) else 1
        for _ in range(copies):
            message_id = self.queue.send(QUEUE, body, delay_s=round(self.rng.uniform(0, 0.3), 3))
            self.events[message_id] = [(key, etag)] if etag else []

    def overwrite_or_delete(self, kind: str) -> None:
        keys = sorted({v.key for v in self.versions.values()})
        if not keys:
            return
        key = self.rng.choice(keys)
        delete = kind == "delete"
        self.upload(Upload(self.clock.now, key, 0 if delete else self.rng.randint(1, 4), delete=delete))

    # -- faults -----------------------------------------------------------------------------------

    async def strike(self, fault: Fault, w: SimWorker, what: str) -> None:
        self.trace.add(f"FAULT {fault.describe()} (before {what})", w.name)
        if fault.kind == "crash":
            if fault.mode == "before":
                w.crash()
            else:
                w.crash_after = True
        elif fault.kind == "freeze":
            w.frozen_until = max(w.frozen_until, self.clock.now + fault.seconds)
        else:
            self.overwrite_or_delete(fault.kind)

    def lock_taken(self, lock: FakeTableLock) -> None:
        self.locks_taken += 1
        for f in self.sc.faults:
            if f.kind == "lock_drop" and f.step == self.locks_taken:
                asyncio.get_running_loop().call_later(f.seconds, self._drop, lock, f)

    def _drop(self, lock: FakeTableLock, fault: Fault) -> None:
        if lock.conn.alive:
            self.trace.add(f"FAULT {fault.describe()}: lock of {lock.table} lost", "pg")
            self.ledger.kill_connection(lock)

    async def timed(self, fault: Fault) -> None:
        await asyncio.sleep(fault.at)
        if fault.kind == "engine_unreachable":
            self.trace.add(f"FAULT {fault.describe()}", "engine")
            self.engine.unreachable_until = self.clock.now + fault.seconds
        elif fault.kind == "redeliver":
            flying = [m for m in self.queue.pending(QUEUE) if m.visible_at > self.clock.now and m.receive_count]
            if flying:
                m = self.rng.choice(flying)
                self.trace.add(f"FAULT {fault.describe()}: {m.message_id}", "sqs")
                self.queue.redeliver(QUEUE, m.message_id)
        elif fault.kind == "sweep":
            live = [w for w in self.workers.values() if not w.crashed]
            if live:
                w = self.rng.choice(live)
                self.trace.add(f"FAULT {fault.describe()}", w.name)
                w.spawn(w.runner.sweep())

    def restart_later(self, slot: int) -> None:
        delay = self.rng.choice((1.0, 5.0, 20.0))
        asyncio.get_running_loop().call_later(delay, self._restart, slot)

    def _restart(self, slot: int) -> None:
        if self.over:
            return
        self.generations[slot] = self.generations.get(slot, 0) + 1
        w = SimWorker(self, slot, self.generations[slot])
        self.workers[slot] = w
        self.trace.add("worker restarted", w.name)
        w.start()

    # -- checks -----------------------------------------------------------------------------------

    def _files_of(self, m: QueuedMessage) -> list[tuple[str, str]]:
        return self.events.get(m.message_id, [])

    def _on_resend(self, old_id: str, new_id: str) -> None:
        """A worker sent a message again (its file still in flight): the copy carries its events."""
        self.events[new_id] = list(self.events.get(old_id, []))
        self.renewed.add(old_id)

    def _on_delete(self, queue: str, m: QueuedMessage) -> None:
        if m.message_id in self.renewed:  # a fresh copy carries its events on
            return
        for key, etag in self._files_of(m):
            file_id = self.ledger.identities.get((BUCKET, key, etag))
            status = self.ledger.files[file_id].status if file_id else "unregistered"
            if status not in FINAL:
                self.violation(f"message {m.message_id} deleted while {self.versions[etag].label} is {status}")

    def quiescent(self) -> bool:
        if any(self.queue.pending(QUEUE)):
            return False
        if any(f.status not in FINAL for f in self.ledger.files.values()):
            return False
        if any(b.status == WRITING for b in self.ledger.batches.values()):
            return False
        return all(op.committed or op.killed or op.appending_since is None for op in self.engine.ops)

    def check(self) -> None:
        """Every end-of-run invariant, each violation reported: rows, files, replaces, overlaps, DLQ."""
        rows_by_label = self._check_rows()
        for v in self.versions.values():
            self._check_version(v, rows_by_label)
        for key in sorted({v.key for v in self.versions.values() if v.key.startswith("rp/")}):
            self._check_replace(key, rows_by_label)
        for table, first, second in self.engine.overlaps if self.engine.overlap == "overwrite" else []:
            self.violation(f"{table}: appends of batches {str(first)[:8]} and {str(second)[:8]} overlapped")
        self._check_dlq()

    def _check_rows(self) -> dict[str, list[dict[str, Any]]]:
        """Every table row carries a COMMITTED batch; return the rows grouped by version label."""
        rows_by_label: dict[str, list[dict[str, Any]]] = {}
        for name, t in self.engine.tables.items():
            for row in t.rows:
                rows_by_label.setdefault(row["v"], []).append(row)
                b = self.ledger.batches.get(UUID(row["_batch_id"]))
                if b is None or b.status != COMMITTED:
                    status = "unknown" if b is None else b.status
                    self.violation(f"{name}: a row of {row['v']} carries batch {row['_batch_id'][:8]} ({status})")
        return rows_by_label

    def _check_version(self, v: Version, rows_by_label: dict[str, list[dict[str, Any]]]) -> None:
        """One uploaded version: registered, final, and its rows in the table iff LOADED, under its name."""
        file_id = self.ledger.identities.get((BUCKET, v.key, v.etag))
        if file_id is None:
            self.violation(f"{v.label} was never registered")
            return
        f = self.ledger.files[file_id]
        rows = rows_by_label.get(v.label, [])
        if f.status not in FINAL:
            self.violation(f"{v.label} ends {f.status}, not final")
        if f.status == "LOADED":
            mine = [r for r in rows if r["_batch_id"] == str(f.batch_id)]
            if len(rows) != v.rows or len(mine) != v.rows:
                self.violation(
                    f"{v.label} LOADED: table holds {len(rows)} of its rows ({len(mine)} under its batch), "
                    f"expected {v.rows}"
                )
            if f.rows != len(mine):
                self.violation(f"{v.label}: the ledger says {f.rows} rows, the table {len(mine)}")
        elif rows:
            self.violation(f"{v.label} is {f.status} but the table holds {len(rows)} of its rows")
        wrong = [r for r in rows if r["_source_file"] != source_uri(BUCKET, v.key)]
        if wrong:
            self.violation(f"{v.label}: rows under another file's name")

    def _check_dlq(self) -> None:
        """A dead-lettered message only ever names files that reached a final status."""
        for m in self.queue.dlq.get(QUEUE, []):
            for key, etag in self._files_of(m):
                file_id = self.ledger.identities.get((BUCKET, key, etag))
                status = self.ledger.files[file_id].status if file_id else "unregistered"
                if status not in FINAL:
                    self.violation(f"DLQ holds {m.message_id} of {self.versions[etag].label}, which is {status}")

    def _check_replace(self, key: str, rows_by_label: dict[str, list[dict[str, Any]]]) -> None:
        versions = [v for v in self.versions.values() if v.key == key]
        states = {}
        for v in versions:
            file_id = self.ledger.identities.get((BUCKET, v.key, v.etag))
            states[v.label] = self.ledger.files[file_id] if file_id else None
        present = [v for v in versions if rows_by_label.get(v.label)]
        if len(present) > 1:
            self.violation(f"replace {key}: rows of {len(present)} versions ({', '.join(v.label for v in present)})")
        status = {label: (row.status if row is not None else "unregistered") for label, row in states.items()}
        settled = [v for v in versions if status[v.label] in ("LOADED", REPLACED)]
        loaded = [v for v in settled if status[v.label] == "LOADED"]
        newest_settled = max((v.sequencer for v in settled), default="")
        dropped_newer = any(
            status[v.label] in ("GONE", "SKIPPED") and v.sequencer > newest_settled for v in versions
        )  # the key's current object was found changed or gone: it decides (docs/guarantees.md)
        if settled and not loaded and not dropped_newer:
            self.violation(f"replace {key}: versions were replaced but no version is LOADED")
        if loaded and settled and max(settled, key=lambda v: v.sequencer) not in loaded:
            newest = max(settled, key=lambda v: v.sequencer)
            self.violation(f"replace {key}: {newest.label} is {status[newest.label]} but older rows stay")

    def fingerprint(self) -> str:
        files = [(f.id, f.key, f.status, f.rows) for f in self.ledger.files.values()]
        rows = sum(len(t.rows) for t in self.engine.tables.values())
        return hashlib.sha256(repr((len(self.trace.lines), rows, files)).encode()).hexdigest()[:16]


# --- running one seed ------------------------------------------------------------------------------

DEADLINE_S = 1500.0


def _patch_time(clock: VirtualClock) -> Callable[[], None]:
    fake = types.SimpleNamespace(monotonic=clock, time=clock, perf_counter=clock)
    saved = (worker.runner.time, worker.pipeline.time, worker.pipeline.uuid4)
    worker.runner.time = fake  # type: ignore[assignment]
    worker.pipeline.time = fake  # type: ignore[assignment]

    def restore() -> None:
        worker.runner.time, worker.pipeline.time, worker.pipeline.uuid4 = saved  # type: ignore[assignment]

    return restore


@contextlib.contextmanager
def _captured_logs(trace: Trace) -> Any:
    saved = structlog.get_config()
    structlog.configure(
        processors=[_capture],
        wrapper_class=structlog.make_filtering_bound_logger(20),
        cache_logger_on_first_use=False,
    )
    CURRENT.append(trace)
    try:
        yield
    finally:
        CURRENT.pop()
        structlog.configure(**saved)


async def _main(world: World, tamper: Callable[[World], None] | None = None) -> None:
    sc = world.sc
    rng = random.Random(sc.seed * 31 + 7)
    worker.pipeline.uuid4 = lambda: UUID(int=rng.getrandbits(128), version=4)  # type: ignore[assignment]
    loop = asyncio.get_running_loop()
    for u in sc.uploads:
        loop.call_later(u.at, world.upload, u)
    world.tasks = [
        loop.create_task(world.timed(f)) for f in sc.faults if f.kind in ("engine_unreachable", "redeliver", "sweep")
    ]
    for slot in range(1, sc.workers + 1):
        world.generations[slot] = 0
        w = SimWorker(world, slot, 0)
        world.workers[slot] = w
        w.start()
    last_upload = max((u.at for u in sc.uploads), default=0.0)
    settle = None
    window = 20.0 + (sc.detached_setting_s + 10 if FENCED else 0)  # the audit's repair window
    while world.clock.now < DEADLINE_S:
        await asyncio.sleep(1.0)
        if world.clock.now < last_upload + 1:
            continue
        if world.quiescent():
            if settle is None:
                settle = world.clock.now
            elif world.clock.now >= settle + window:
                break
        else:
            settle = None
    if tamper is not None:  # tests of the checks themselves
        tamper(world)
    world.trace.add("checking invariants", "check")
    world.check()


def simulate(
    seed: int,
    kinds: tuple[str, ...] = FAULT_KINDS,
    overwrites: bool = True,
    tamper: Callable[[World], None] | None = None,
) -> Result:
    """Run one seed: the same seed always gives the same schedule, faults and trace. ``tamper``
    changes the world just before the final checks (to test the checks)."""
    sc = scenario(seed, kinds, overwrites)
    clock = VirtualClock()
    loop = VirtualLoop(clock)
    loop.set_exception_handler(lambda _loop, _ctx: None)
    restore = _patch_time(clock)
    trace_holder: list[World] = []
    try:
        asyncio.set_event_loop(loop)

        async def run() -> None:
            world = World(sc, clock)
            trace_holder.append(world)
            with _captured_logs(world.trace):
                await _main(world, tamper)

        loop.run_until_complete(run())
    finally:
        world = trace_holder[0] if trace_holder else None
        if world is not None:
            world.over = True
        _teardown(loop)
        asyncio.set_event_loop(None)
        restore()
    assert world is not None
    kinds = [f.kind for f in sc.faults]
    return Result(seed, world.violations, world.trace.render(), sc.describe(), clock.now, world.fingerprint(), kinds)


def _teardown(loop: VirtualLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    for _ in range(50):
        tasks = [t for t in tasks if not t.done()]
        if not tasks:
            break
        with contextlib.suppress(BaseException):
            loop.run_until_complete(asyncio.sleep(0))
    loop.close()
