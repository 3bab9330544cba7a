"""A deterministic asyncio event loop with virtual time.

``time()`` is a virtual clock that jumps to the next timer whenever nothing is ready, so a run
of the simulated fleet takes no wall-clock waiting; callbacks run in FIFO order, so one seed
gives one schedule. ``asyncio.to_thread`` work runs inline (no threads)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import selectors
from collections.abc import Callable
from typing import Any


class Stalled(RuntimeError):
    """Nothing is ready and no timer is pending: every task waits on something that never comes."""


class VirtualClock:
    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class _Selector(selectors.SelectSelector):
    """Never blocks: waiting ``timeout`` seconds is moving the clock forward."""

    def __init__(self, clock: VirtualClock, tick: float) -> None:
        super().__init__()
        self.clock = clock
        self.tick = tick

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise Stalled("no task can make progress and no timer is pending")
        # Running callbacks takes time too: without it a task that polls with a zero timeout
        # (it happens: runner._committer while its lane is full) would stop the clock for good.
        self.clock.now += max(timeout, self.tick)
        return []


class InlineExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs submitted work at once on the calling thread."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            future.set_exception(exc)
        return future


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock, tick: float = 0.001) -> None:
        self.clock = clock
        super().__init__(selector=_Selector(clock, tick))
        self.set_default_executor(InlineExecutor(max_workers=1))

    def time(self) -> float:
        return self.clock.now

    def _write_to_self(self) -> None:  # single-threaded: nothing to wake
        pass
