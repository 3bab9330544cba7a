"""The worker's memory budget: bytes of worker-read data held at once, across batches in flight.

Worker-read files (JSON the worker GETs and decodes itself, see ``adapters/local_read.py``) are
held in memory from their GET until their batch's write has ended: the bodies, then the decoded
Arrow columns. ``ICEFEED_MEMORY_BUDGET_BYTES`` bounds the sum over every batch of the worker.

- A batch reserves before it holds: its bodies' sizes before the GETs, a file's estimated decode
  cost before decoding it; after decoding, the reservation shrinks to what stays held (the Arrow
  columns) until the batch ends.
- A reservation waits until it fits (FIFO: a large request is not overtaken by smaller ones), or
  until nothing else is held: one item larger than the whole budget runs alone.
- One batch decodes at a time (:attr:`MemoryBudget.decoding`). Only the decoding batch grows a
  reservation it already holds; every other holder has finished decoding and frees its share when
  its write ends, so waiting can never deadlock.

Costs are estimates from measured peaks (docs/memory.md), not allocator truth: Python objects of
parsed JSON weigh far more than its text (10 M lines of ``{}`` = 30 MB of text, 2+ GB of dicts),
so the cost counts JSON values as well as bytes.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field

#: Peak bytes while parsing, per byte of JSON text: the text, its lines and the parsed values'
#: strings (measured 4.9 for rows of one 2 KB string, the worst bytes-heavy shape).
DECODE_BYTES_FACTOR = 5
#: Peak bytes per JSON value (object, array, or member): the Python dict/list/int/str of each
#: (measured 70-110 for flat rows, nested rows and ``{}`` lines).
DECODE_VALUE_BYTES = 110
#: Bytes per row of the lineage column a decoded file carries to the engine (offset + a list slot
#: while it is built), on top of the ``_source_file`` text itself.
LINEAGE_ROW_BYTES = 12


def decode_cost(text_bytes: int, values: int) -> int:
    """Estimated peak bytes to parse ``text_bytes`` of JSON holding about ``values`` values."""
    return DECODE_BYTES_FACTOR * text_bytes + DECODE_VALUE_BYTES * values


def held_cost(arrow_bytes: int, rows: int, source_bytes: int) -> int:
    """Bytes a decoded file holds until its batch's write ends: its Arrow columns twice (the
    columns, then the copy serialized to the engine) and its lineage column."""
    return 2 * arrow_bytes + rows * (source_bytes + LINEAGE_ROW_BYTES)


@dataclass(eq=False)
class Hold:
    """One batch's share of the budget."""

    budget: MemoryBudget
    size: int = 0
    payload: dict[int, object] = field(default_factory=dict)  # what it pays for (cleared on release)

    async def grow(self, n: int) -> None:
        """Hold ``n`` more bytes, once they fit (or once nothing else is held)."""
        await self.budget._grow(self, n)

    def fits_alone(self, n: int) -> bool:
        """Whether this hold, grown by ``n``, would still be within the whole budget."""
        return self.size + n <= self.budget.limit

    def shrink_to(self, n: int) -> None:
        """Hold only ``n`` bytes (never more than now)."""
        self.budget._set(self, min(self.size, max(0, n)))

    def release(self) -> None:
        self.payload.clear()
        self.budget._set(self, 0)


class MemoryBudget:
    """Bytes of worker-read data held by one worker, bounded by ``limit`` (see the module doc)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self.decoding = asyncio.Lock()  # one batch decodes (and grows its hold) at a time
        self._waiters: collections.deque[tuple[Hold, int, asyncio.Future[None]]] = collections.deque()

    def hold(self) -> Hold:
        return Hold(self)

    def _admissible(self, hold: Hold, n: int) -> bool:
        return self.used + n <= self.limit or self.used == hold.size  # fits, or runs alone

    async def _grow(self, hold: Hold, n: int) -> None:
        if n <= 0:
            return
        if not self._waiters and self._admissible(hold, n):
            self._take(hold, n)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (hold, n, future)
        self._waiters.append(entry)
        try:
            await future
        except BaseException:
            if entry in self._waiters:
                self._waiters.remove(entry)
            elif future.done() and not future.cancelled():  # granted, then cancelled: give it back
                self._set(hold, hold.size - n)
            raise

    def _take(self, hold: Hold, n: int) -> None:
        hold.size += n
        self.used += n
        self.peak = max(self.peak, self.used)

    def _set(self, hold: Hold, size: int) -> None:
        self.used += size - hold.size
        hold.size = size
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            hold, n, future = self._waiters[0]
            if future.done():  # its waiter was cancelled
                self._waiters.popleft()
                continue
            if not self._admissible(hold, n):
                return  # FIFO: nobody overtakes the head
            self._waiters.popleft()
            self._take(hold, n)
            future.set_result(None)
