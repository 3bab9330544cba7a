"""Fairness: a flood on one table or engine does not starve the others. The shares are pure
(worker/domain/fairness.py); the runner test forces the starving order with fakes: one engine's
batch is held (slow engine) while its files fill the worker's window, then another engine's
files arrive behind them in the same queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from tests.unit.conftest import icefeed_env
from tests.unit.test_runner_side_tasks import FakePipeline
from worker.domain.batching import FileWork
from worker.domain.fairness import defer, lane_share, queue_share
from worker.domain.outcomes import LOADED, PENDING, Ack, FileState
from worker.observability.metrics import Metrics
from worker.pipeline import Admission
from worker.ports import Message
from worker.runner import Runner, Tracked
from worker.settings import load_settings

# -- the shares ----------------------------------------------------------------------------------


def test_a_lone_queue_gets_the_whole_window_and_active_queues_split_it() -> None:
    assert queue_share(400, {}, [], "q1") == 400
    assert queue_share(400, {"q1": 390, "q2": 0}, [], "q1") == 400  # q2 idle: no claim on the window
    assert queue_share(400, {"q1": 390}, ["q2"], "q1") == 200  # q2's receiver waits for room
    assert queue_share(400, {"q1": 5, "q2": 1, "q3": 0}, [], "q3") == 133


def test_lane_shares_split_by_engine_first_then_by_table() -> None:
    held = {("a", "t1"): 100, ("b", "t2"): 50, ("b", "t3"): 10}
    assert lane_share(400, held, ("a", "t1")) == 200
    assert lane_share(400, held, ("b", "t2")) == 100
    assert lane_share(400, held, ("c", "t4")) == 133  # a newcomer engine counts itself in
    assert lane_share(400, {}, ("a", "t1")) == 400


def test_a_lane_is_deferred_only_at_its_share_and_never_below_the_floor() -> None:
    # Alone, a lane may use the window less the reserve.
    assert not defer(400, 20, 10, {("a", "t1"): 379}, ("a", "t1"))
    assert defer(400, 20, 10, {("a", "t1"): 380}, ("a", "t1"))
    # With one table in the routes (no reserve) a lone lane is never deferred, even when the
    # receivers overshoot the window (each checks for room before its poll).
    assert not defer(400, 0, 10, {("a", "t1"): 470}, ("a", "t1"))
    # Contended: the share.
    held = {("a", "t1"): 200, ("b", "t2"): 1}
    assert defer(400, 20, 10, held, ("a", "t1"))
    assert not defer(400, 20, 10, held, ("b", "t2"))
    assert not defer(400, 20, 10, {**held, ("a", "t1"): 199}, ("a", "t1"))
    # Many lanes: one receive's worth each at least.
    many = {("e", f"t{i}"): 9 for i in range(100)}
    assert not defer(400, 20, 10, many, ("e", "t0"))
    assert defer(400, 20, 10, {**many, ("e", "t0"): 10}, ("e", "t0"))


# -- the runner ----------------------------------------------------------------------------------

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass
class ListSource:
    """A queue as a list: a receive takes the oldest visible messages; a message handed back
    (change_visibility) goes to the back; on an empty queue a long poll waits for a send, at most
    a tick (so a stopping worker's receivers return)."""

    visible: deque[Message] = field(default_factory=deque)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    deleted: list[str] = field(default_factory=list)
    handed_back: list[tuple[str, int, int]] = field(default_factory=list)  # (body, delay, receive count)
    resent: int = 0

    def send(self, body: str) -> None:
        self.visible.append(Message("https://sqs.local/1/q", body, f"h-{body}-0", body, 0, T0))
        self.arrived.set()

    async def receive(self, queue_url: str, max_messages: int, wait_s: int, visibility_s: int) -> list[Message]:
        if not self.visible:
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), 0.05)
        out: list[Message] = []
        while self.visible and len(out) < max_messages:
            m = self.visible.popleft()
            n = m.receive_count + 1
            out.append(Message(m.queue_url, m.message_id, f"h-{m.body}-{n}", m.body, n, m.sent_at))
        return out

    async def delete(self, messages: list[Message]) -> list[Message]:
        self.deleted += [m.body for m in messages]
        return []

    async def change_visibility(self, entries: list[tuple[Message, int]]) -> list[Message]:
        for m, delay in entries:
            self.handed_back.append((m.body, delay, m.receive_count))
            self.visible.append(m)
        self.arrived.set()
        return []

    async def resend(self, message: Message, delay_s: int) -> None:
        self.resent += 1
        self.visible.append(Message(message.queue_url, message.message_id, "r", message.body, 0, T0))

    async def max_receive_count(self, queue_url: str) -> int | None:
        return 5

    @property
    def calls(self) -> dict[str, int]:
        return {}


@dataclass
class TwoEnginePipeline(FakePipeline):
    """Message bodies are "<table>:<n>"; table ``slow`` is written by engine ``team_a``, whose
    batches wait for ``release``; table ``fast`` by ``team_b``."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)
    loaded: dict[int, str] = field(default_factory=dict)
    loads: list[int] = field(default_factory=list)
    fast_done: asyncio.Event = field(default_factory=asyncio.Event)
    metrics: Metrics = field(default_factory=lambda: Metrics(CollectorRegistry()))

    def tables(self) -> int:
        return 2

    def table_of(self, ingestion: str) -> str:
        return ingestion

    def engine_of(self, table: str) -> str:
        return {"slow": "team_a", "fast": "team_b"}[table]

    @staticmethod
    def file_id(body: str) -> int:
        table, n = body.split(":")
        return (1000 if table == "fast" else 0) + int(n)

    async def admit(self, messages: list[Message]) -> list[Admission]:
        out = []
        for m in messages:
            adm = Admission(m)
            file_id = self.file_id(m.body)
            if file_id in self.loaded:
                adm.outcomes.append(Ack("loaded"))
            else:
                table = m.body.split(":")[0]
                adm.waiting[file_id] = FileWork(file_id, table, "b", m.body, "e", 1)
            out.append(adm)
        return out

    async def run_batch(self, table: str, files: list[FileWork]) -> None:
        if table == "slow":
            self.slow_started.set()
            await self.release.wait()
        for f in files:
            self.loads.append(f.file_id)
            self.loaded[f.file_id] = table
        if sum(1 for t in self.loaded.values() if t == "fast") == 3:
            self.fast_done.set()

    async def file_states(self, file_ids: list[int]) -> dict[int, FileState]:
        return {
            i: FileState(i, "b", str(i), "e", LOADED if i in self.loaded else PENDING, None, None) for i in file_ids
        }

    async def audit(self) -> None:
        return None

    async def note_dead_letter(self, file_ids: list[int], receives: int) -> None:
        return None


@pytest.fixture
def fair_env(monkeypatch: pytest.MonkeyPatch) -> None:
    icefeed_env(
        monkeypatch,
        sqs_queue_urls="https://sqs.local/1/q",
        sqs_max_in_flight="40",
        sqs_receivers="1",
        batch_max_files="10",
        batch_max_wait_s="0",
        batch_in_flight="1",
    )


async def _until(event: asyncio.Event, what: str, timeout_s: float = 20) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@pytest.mark.usefixtures("fair_env")
async def test_a_slow_engines_flood_does_not_starve_another_engines_route() -> None:
    source, pipeline = ListSource(), TwoEnginePipeline()
    for n in range(60):  # team a's flood first in the queue ...
        source.send(f"slow:{n}")
    for n in range(3):  # ... then team b's three files behind it
        source.send(f"fast:{n}")
    runner = Runner(load_settings(), pipeline, source)  # type: ignore[arg-type]
    stop = asyncio.Event()
    run = asyncio.create_task(runner.run(stop))
    await _until(pipeline.slow_started, "team a's first batch")
    # Team a's engine holds its batch; its files fill the window up to the reserve, the rest are
    # handed back; team b's files behind them load while team a's batch is still held.
    await _until(pipeline.fast_done, "team b's files to load while team a's engine is stuck")
    assert not pipeline.release.is_set()
    held_slow = len(runner._lanes["slow"].held)
    assert held_slow == 30, held_slow  # window 40 less one receive's worth (10) of reserve
    deferred = [(body, delay) for body, delay, _ in source.handed_back if body.startswith("slow:")]
    assert deferred and all(delay == 10 for _, delay in deferred)  # ICEFEED_SQS_BACKOFF_BASE_S
    counter = runner.metrics.messages_deferred.labels("team_a")._value.get()
    assert counter == len(deferred)
    assert runner.metrics.messages_deferred.labels("team_b")._value.get() == 0
    # Then team a's engine recovers: its whole flood loads, every file once, no message spent.
    pipeline.release.set()
    done = asyncio.Event()

    async def watch() -> None:
        while len(pipeline.loaded) < 63:
            await asyncio.sleep(0.01)
        done.set()

    watcher = asyncio.create_task(watch())
    await _until(done, "the whole flood to load")
    stop.set()
    await asyncio.wait_for(run, 20)
    watcher.cancel()
    assert sorted(pipeline.loads) == sorted(set(pipeline.loads)) and len(pipeline.loads) == 63
    # A deferral never spends a message: none reached its last receive as a plain requeue.
    assert runner.metrics.messages_dead_lettered._value.get() == 0


@pytest.mark.usefixtures("fair_env")
async def test_a_lone_table_is_never_deferred_below_its_window() -> None:
    """With one table in the routes there is nobody to be fair to: no reserve, no deferral."""

    class OneTable(TwoEnginePipeline):
        def tables(self) -> int:
            return 1

    source, pipeline = ListSource(), OneTable()
    for n in range(60):
        source.send(f"slow:{n}")
    runner = Runner(load_settings(), pipeline, source)  # type: ignore[arg-type]
    stop = asyncio.Event()
    run = asyncio.create_task(runner.run(stop))
    await _until(pipeline.slow_started, "the first batch")
    room = asyncio.Event()

    async def watch() -> None:
        while len(runner._tracked) < 40:
            await asyncio.sleep(0.01)
        room.set()

    watcher = asyncio.create_task(watch())
    await _until(room, "the window to fill")
    assert runner.metrics.messages_deferred.labels("team_a")._value.get() == 0
    assert source.handed_back == []
    pipeline.release.set()
    stop.set()
    await asyncio.wait_for(run, 20)
    watcher.cancel()


def test_a_queue_holding_its_share_waits_while_another_queue_waits_for_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    icefeed_env(
        monkeypatch, sqs_queue_urls='["https://sqs.local/1/q1", "https://sqs.local/1/q2"]', sqs_max_in_flight="40"
    )
    runner = Runner(load_settings(), TwoEnginePipeline(), ListSource())  # type: ignore[arg-type]
    q1, q2 = "https://sqs.local/1/q1", "https://sqs.local/1/q2"
    for n in range(25):
        m = Message(q1, str(n), f"h{n}", "slow:1", 1, T0)
        runner._tracked[(q1, m.receipt_handle)] = Tracked(m, 0.0, 0.0)
    assert runner._has_room(q1)  # q2 idle: q1 may use the whole window
    runner._waiting_room[q2] = 1  # q2's receiver now waits for room
    assert not runner._has_room(q1)  # q1 holds 25 > its share 20 - one receive
    assert runner._has_room(q2)
