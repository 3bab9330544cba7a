"""Fair shares of a worker's in-flight window (``ICEFEED_SQS_MAX_IN_FLIGHT`` messages).

Two levels, both pure:

- **Receive lanes, one per queue.** A queue's receivers poll only while the queue holds less
  than its share: the window split equally among the queues that hold messages or are waiting
  for room. One queue alone gets the whole window; a flood on one queue cannot keep another
  queue's receivers waiting for room.
- **Table lanes, by engine then by table.** Inside the window, a table whose lane holds its
  share while another lane holds work has its newly received files deferred (their messages come
  back later, without being spent). The share is the window split equally among the engines with
  work, then among that engine's tables with work. A lone lane is never deferred below the window
  less ``reserve``: that much room stays free for the receivers to find other routes' files
  behind a flood.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

#: A table lane: (engine, table).
LaneKey = tuple[str, str]


def queue_share(window: int, held: Mapping[str, int], waiting: Collection[str], queue: str) -> int:
    """The messages ``queue`` may hold: the window split among the queues that hold some or
    wait for room (``queue`` counted in)."""
    active = {q for q, n in held.items() if n > 0} | set(waiting) | {queue}
    return max(1, window // len(active))


def lane_share(window: int, held: Mapping[LaneKey, int], lane: LaneKey) -> int:
    """The files ``lane`` may hold: the window split among the engines with work, then among
    that engine's lanes with work (``lane`` counted in)."""
    active = {k for k, n in held.items() if n > 0} | {lane}
    engines = {engine for engine, _ in active}
    tables = [k for k in active if k[0] == lane[0]]
    return max(1, window // len(engines) // len(tables))


def defer(window: int, reserve: int, floor: int, held: Mapping[LaneKey, int], lane: LaneKey) -> bool:
    """Whether one more file for ``lane`` should wait (its message deferred) rather than be
    admitted. ``floor``: a lane's share never drops below this many files (one receive's worth),
    so many lanes still make progress."""
    mine = held.get(lane, 0)
    contended = any(n > 0 for k, n in held.items() if k != lane)
    if not contended:
        # Nobody to be fair to: without a reserve to keep, the receive window alone bounds it.
        return reserve > 0 and mine >= max(floor, window - reserve)
    return mine >= max(floor, lane_share(window, held, lane))
