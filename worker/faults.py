"""Test-only fault points: make a worker die or pause at a named point of the batch protocol.

``ICEFEED_FAULTS="after_commit=exit"`` hard-exits (status 137, like kill -9) the first time the
point is reached (``after_write_start``: 0.1 s after the append call began, so the engine is
working on the commit when the worker dies); ``point=hold:/dir`` writes ``/dir/<point>.reached``
and waits until ``/dir/<point>.release`` exists.

The points sit at the port boundaries, in wrappers that ``run_worker`` installs around the
ledger and the sink only when the variable is set (:func:`install`); the batch code knows
nothing of them:

- ``after_claim``: the ledger's ``claim`` returned files (the batch is this worker's);
- ``after_fence``: the batch's fence let it append (it holds the table's writer slot), reached
  when the pipeline next asks whether it still holds the table lock (its pre-append check);
- ``before_append``: that check passed: the sink is about to read the files and append;
- ``after_write_start``: 0.1 s after the engine began the append (the sink's ``on_append`` hook);
- ``after_commit``: the sink's ``append`` returned (committed);
- ``after_finalize``: the ledger's ``finalize`` or ``abort`` of a batch this worker claimed
  returned (its outcome is recorded);
- ``maintain_staged``: table maintenance wrote a compacted file, not yet swapped in;
- ``maintain_committed``: table maintenance swapped a compacted file in (committed).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

from worker.domain.batching import FileWork
from worker.domain.maintenance import MaintenancePolicy
from worker.domain.policy import BatchPlan
from worker.ports import (
    Fence,
    Inference,
    Ledger,
    Staged,
    TableLock,
    TableMaintenance,
    TableSink,
    TableState,
    WriteRequest,
)

POINTS = frozenset(
    {
        "after_claim",
        "after_fence",
        "before_append",
        "after_write_start",
        "after_commit",
        "after_finalize",
        "maintain_staged",
        "maintain_committed",
    }
)


class Faults:
    def __init__(self, spec: str = "") -> None:
        self._actions: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            point, _, action = item.partition("=")
            if point not in POINTS or not (action == "exit" or action.startswith("hold:")):
                raise ValueError(f"ICEFEED_FAULTS: bad entry {item!r} (points: {', '.join(sorted(POINTS))})")
            self._actions[point] = action
        self._appending: dict[UUID, tuple[asyncio.AbstractEventLoop, asyncio.Event]] = {}

    def __bool__(self) -> bool:
        return bool(self._actions)

    async def hit(self, point: str) -> None:
        action = self._actions.get(point)
        if action is None:
            return
        if action == "exit":
            if point == "after_write_start":
                # The append was handed to the engine's client a moment ago; give the request
                # time to reach the server, so the engine is mid-commit when the worker dies.
                await asyncio.sleep(0.1)
            os._exit(137)
        folder = Path(action.removeprefix("hold:"))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{point}.reached").touch()
        release = folder / f"{point}.release"
        while not release.exists():
            await asyncio.sleep(0.05)

    def hit_blocking(self, point: str) -> None:
        """:meth:`hit` for a point reached in a worker thread (table maintenance's calls)."""
        action = self._actions.get(point)
        if action == "exit":
            os._exit(137)
        if action is not None:
            folder = Path(action.removeprefix("hold:"))
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{point}.reached").touch()
            while not (folder / f"{point}.release").exists():
                time.sleep(0.05)

    def append_started(self, batch_id: UUID) -> None:
        """The sink's ``on_append`` hook (called from its writing thread as the append starts)."""
        waiting = self._appending.get(batch_id)
        if waiting is not None:
            loop, event = waiting
            loop.call_soon_threadsafe(event.set)

    def _watch(self, batch_id: UUID) -> asyncio.Event:
        event = asyncio.Event()
        self._appending[batch_id] = (asyncio.get_running_loop(), event)
        return event

    def _unwatch(self, batch_id: UUID) -> None:
        self._appending.pop(batch_id, None)


class FaultyLock:
    """A table lock whose first pre-append check after an ok fence reaches ``after_fence``."""

    def __init__(self, inner: TableLock, faults: Faults) -> None:
        self._inner = inner
        self._faults = faults
        self._fenced = False

    @property
    def lost(self) -> asyncio.Event:
        return self._inner.lost

    async def fence(self, batch_id: UUID, owner: str, table: str, session_id: str, ttl_s: int) -> Fence:
        fence = await self._inner.fence(batch_id, owner, table, session_id, ttl_s)
        self._fenced = self._fenced or fence.ok
        return fence

    async def held(self) -> bool:
        if self._fenced:
            self._fenced = False
            await self._faults.hit("after_fence")
        return await self._inner.held()

    async def writer_busy(self, table: str) -> bool:
        return await self._inner.writer_busy(table)


class FaultyLedger:
    """The ledger with ``after_claim``, ``after_fence`` (through its locks) and ``after_finalize``;
    every other call passes through."""

    def __init__(self, inner: Ledger, faults: Faults) -> None:
        self._inner = inner
        self._faults = faults
        self._claimed: set[UUID] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def claim(
        self, batch_id: UUID, ingestion: str, table: str, files: list[FileWork], owner: str, ttl_s: int
    ) -> list[FileWork]:
        claimed = await self._inner.claim(batch_id, ingestion, table, files, owner, ttl_s)
        if claimed:
            self._claimed.add(batch_id)
            await self._faults.hit("after_claim")
        return claimed

    async def finalize(self, batch_id: UUID, *args: Any, **kwargs: Any) -> bool:
        won = await self._inner.finalize(batch_id, *args, **kwargs)
        await self._settled(batch_id)
        return won

    async def abort(self, batch_id: UUID, *args: Any, **kwargs: Any) -> bool:
        won = await self._inner.abort(batch_id, *args, **kwargs)
        await self._settled(batch_id)
        return won

    async def _settled(self, batch_id: UUID) -> None:
        if batch_id in self._claimed:  # not a batch this worker recovers for another
            self._claimed.discard(batch_id)
            await self._faults.hit("after_finalize")

    @asynccontextmanager
    async def table_lock(self, table: str, timeout_s: float) -> AsyncIterator[FaultyLock]:
        async with self._inner.table_lock(table, timeout_s) as lock:
            yield FaultyLock(lock, self._faults)


class FaultySink:
    """The sink with ``before_append``, ``after_write_start`` and ``after_commit``; every other
    call passes through. ``after_write_start`` needs the inner sink to call
    :meth:`Faults.append_started` as the append starts (``SparkSink(on_append=…)``)."""

    def __init__(self, inner: TableSink, faults: Faults) -> None:
        self._inner = inner
        self._faults = faults

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def infer(self, request: WriteRequest) -> Inference:
        await self._faults.hit("before_append")
        return await self._inner.infer(request)

    async def append(self, request: WriteRequest, plan: BatchPlan) -> dict[str, int]:
        appending = self._faults._watch(request.batch_id)
        try:
            write = asyncio.ensure_future(self._inner.append(request, plan))
            waiter = asyncio.ensure_future(appending.wait())
            await asyncio.wait({write, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if appending.is_set():  # die (or pause) while the append is on its way to the engine
                await self._faults.hit("after_write_start")
            counts = await write
        finally:
            self._faults._unwatch(request.batch_id)
        await self._faults.hit("after_commit")
        return counts


class FaultyTables:
    """Table maintenance with ``maintain_staged`` and ``maintain_committed``."""

    def __init__(self, inner: TableMaintenance, faults: Faults) -> None:
        self._inner = inner
        self._faults = faults

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def stage(self, state: TableState, paths: list[str], policy: MaintenancePolicy) -> Staged:
        staged = self._inner.stage(state, paths, policy)
        self._faults.hit_blocking("maintain_staged")
        return staged

    def replace(self, state: TableState, paths: list[str], staged: Staged) -> bool:
        swapped = self._inner.replace(state, paths, staged)
        if swapped:
            self._faults.hit_blocking("maintain_committed")
        return swapped


def install_tables(tables: TableMaintenance, faults: Faults) -> TableMaintenance:
    return FaultyTables(tables, faults) if faults else tables


def install(ledger: Ledger, sink: TableSink, faults: Faults) -> tuple[Ledger, TableSink]:
    """The ledger and the sink with the fault points, or as they are when none is set."""
    if not faults:
        return ledger, sink
    return FaultyLedger(ledger, faults), FaultySink(sink, faults)  # type: ignore[return-value]
