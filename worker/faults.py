"""Test-only fault points: make a worker die or pause at a named point of the batch protocol.

``ICEFEED_FAULTS="after_commit=exit"`` hard-exits (status 137, like kill -9) the first time the
point is reached (``after_write_start``: 0.1 s after the append call began, so the engine is
working on the commit when the worker dies); ``point=hold:/dir`` writes ``/dir/<point>.reached``
and waits until ``/dir/<point>.release`` exists. Points: after_claim, after_fence (the batch
holds the table's writer slot, its append not yet started), before_append (its last lock check
passed: the append is the next call), after_write_start, after_commit, after_finalize. Without
the variable every ``hit`` is a dictionary lookup on an empty dict.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

POINTS = frozenset(
    {"after_claim", "after_fence", "before_append", "after_write_start", "after_commit", "after_finalize"}
)


class Faults:
    def __init__(self, spec: str = "") -> None:
        self._actions: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            point, _, action = item.partition("=")
            if point not in POINTS or not (action == "exit" or action.startswith("hold:")):
                raise ValueError(f"ICEFEED_FAULTS: bad entry {item!r} (points: {', '.join(sorted(POINTS))})")
            self._actions[point] = action

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
