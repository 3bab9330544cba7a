"""The runner's side tasks (heartbeat, sweeper, HTTP endpoint, gauges) are monitored: one that
dies stops the worker through the normal drain and makes ``run`` fail; on a normal stop they are
cancelled after the drain. Fakes only: this is orchestration."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from worker.domain.errors import IcefeedError
from worker.observability.metrics import Metrics
from worker.ports import Message
from worker.runner import Runner
from worker.settings import load_settings


@dataclass
class IdleSource:
    """A queue that stays empty: each long poll lasts until the worker stops."""

    stop: asyncio.Event
    polls: int = 0

    async def receive(self, queue_url: str, max_messages: int, wait_s: int, visibility_s: int) -> list[Message]:
        self.polls += 1
        await self.stop.wait()
        return []

    async def delete(self, messages: list[Message]) -> list[Message]:
        return []

    async def change_visibility(self, entries: list[tuple[Message, int]]) -> list[Message]:
        return []

    async def resend(self, message: Message, delay_s: int) -> None:
        return None

    async def max_receive_count(self, queue_url: str) -> int | None:
        return None

    @property
    def calls(self) -> dict[str, int]:
        return {}


class IdleLedger:
    async def extend(self, *args: Any) -> set[Any]:
        return set()

    async def take_expired(self, *args: Any) -> list[Any]:
        return []

    async def expire(self, *args: Any) -> None:
        return None


@dataclass
class FakePipeline:
    owner: str = "w-1"
    active_batches: set[Any] = field(default_factory=set)
    ledger: IdleLedger = field(default_factory=IdleLedger)
    sink: Any = None
    metrics: Metrics = field(default_factory=lambda: Metrics(CollectorRegistry()))

    async def stop_all(self) -> None:
        return None

    def tables(self) -> int:
        return 1

    def leases_renewed(self, batch_ids: set[Any], at: float) -> None:
        return None

    @property
    def batches_in_flight(self) -> int:
        return len(self.active_batches)

    async def renew_leases(self) -> None:
        self.leases_renewed(await self.ledger.extend(list(self.active_batches), self.owner), 0.0)

    async def expired_batches(self, limit: int) -> list[Any]:
        return await self.ledger.take_expired(self.owner, limit)

    async def abandon(self) -> None:
        await self.stop_all()
        if self.active_batches:
            await self.ledger.expire(list(self.active_batches), self.owner)

    async def warm_up(self) -> None:
        if self.sink is not None:
            await self.sink.ping()

    async def audit(self) -> int:
        return 0


@pytest.fixture
def runner_parts(monkeypatch: pytest.MonkeyPatch) -> tuple[Runner, asyncio.Event, IdleSource]:
    for name in list(os.environ):
        if name.upper().startswith("ICEFEED_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ICEFEED_SQS_QUEUE_URLS", "https://sqs.local/1/q")
    stop = asyncio.Event()
    source = IdleSource(stop)
    runner = Runner(load_settings(), FakePipeline(), source)  # type: ignore[arg-type]
    return runner, stop, source


async def test_a_dying_side_task_stops_the_worker_and_fails_the_run(
    runner_parts: tuple[Runner, asyncio.Event, IdleSource],
) -> None:
    runner, stop, _ = runner_parts

    async def boom() -> None:
        raise RuntimeError("port exploded")

    with pytest.raises(IcefeedError) as info:
        await asyncio.wait_for(runner.run(stop, [("http", boom)]), 10)
    assert info.value.error_class == "SideTaskDied"
    assert "http" in str(info.value) and "port exploded" in str(info.value)
    assert stop.is_set()
    assert all(t.done() for t in runner.receivers) and runner.receivers


async def test_a_side_task_that_returns_also_stops_the_worker(
    runner_parts: tuple[Runner, asyncio.Event, IdleSource],
) -> None:
    runner, stop, _ = runner_parts

    async def quits() -> None:
        return None

    with pytest.raises(IcefeedError, match="side task gauges died: returned"):
        await asyncio.wait_for(runner.run(stop, [("gauges", quits)]), 10)


async def test_on_a_normal_stop_side_tasks_run_through_the_drain_and_are_then_cancelled(
    runner_parts: tuple[Runner, asyncio.Event, IdleSource],
) -> None:
    runner, stop, source = runner_parts
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def serve() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    run = asyncio.create_task(runner.run(stop, [("http", serve)]))
    await asyncio.wait_for(started.wait(), 10)
    assert not cancelled.is_set()
    stop.set()
    await asyncio.wait_for(run, 10)  # no exception: a cancelled side task is not a death
    assert cancelled.is_set()
    assert runner.failure is None
    assert source.polls >= 1


async def test_a_table_lane_runs_up_to_in_flight_batches_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next batch of a table is prepared while the current one commits, never more than
    ICEFEED_BATCH_IN_FLIGHT at once, and every batch still runs."""
    from worker.domain.batching import FileWork

    for name in list(os.environ):
        if name.upper().startswith("ICEFEED_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ICEFEED_SQS_QUEUE_URLS", "https://sqs.local/1/q")
    monkeypatch.setenv("ICEFEED_BATCH_MAX_FILES", "1")
    monkeypatch.setenv("ICEFEED_BATCH_MAX_WAIT_S", "0")
    monkeypatch.setenv("ICEFEED_BATCH_IN_FLIGHT", "2")
    release, two_running, all_done = asyncio.Event(), asyncio.Event(), asyncio.Event()
    running: list[int] = []
    peak, done = 0, []

    class LanePipeline(FakePipeline):
        def table_of(self, ingestion: str) -> str:
            return "glue.db.events"

        def engine_of(self, table: str) -> str:
            return "default"

        async def run_batch(self, table: str, files: list[FileWork]) -> None:
            nonlocal peak
            running.append(files[0].file_id)
            peak = max(peak, len(running))
            if len(running) == 2:
                two_running.set()
            await release.wait()
            running.remove(files[0].file_id)
            done.append(files[0].file_id)
            if len(done) == 5:
                all_done.set()

    runner = Runner(load_settings(), LanePipeline(), IdleSource(asyncio.Event()))  # type: ignore[arg-type]
    async with asyncio.TaskGroup() as group:
        runner._committers = group
        for i in range(5):
            work = FileWork(i, "events", "b", f"k{i}.json", "e", 1)
            runner._enqueue(runner._lane(work), i, work)
        await asyncio.wait_for(two_running.wait(), 5)
        for _ in range(50):  # let the committer try to start more while two are held
            await asyncio.sleep(0)
        assert sorted(running) == [0, 1] and peak == 2
        release.set()
        await asyncio.wait_for(all_done.wait(), 5)
        for task in list(runner._committer_tasks):
            task.cancel()
    assert peak == 2 and sorted(done) == [0, 1, 2, 3, 4]
